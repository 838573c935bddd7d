//! Shared pieces for skillbox's integration tests: the sample skills' paths
//! (built by `build.rs`) and small helpers to set up runtimes and manifests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use skillbox_runtime::{Runtime, RuntimeConfig};

include!(concat!(env!("OUT_DIR"), "/skills.rs"));

pub mod oauth;
pub mod pg;
pub mod reflect;
pub mod server;
pub mod webhook;

/// A compile cache shared by one test process, in a temporary directory.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir for the compile cache")).path()
}

/// A runtime with a per-process compile cache (so tests never touch the user's).
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir().to_owned()), ..RuntimeConfig::default() })
        .expect("runtime starts")
}

/// Writes `text` as `skill.toml` into a fresh temporary directory.
///
/// `{component:NAME}` in the text is replaced with the absolute path of that
/// sample skill's component, so a test can reuse a real component under a
/// manifest of its own.
pub fn temp_skill(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = text.to_owned();
    for (name, path) in COMPONENTS {
        text = text.replace(&format!("{{component:{name}}}"), path);
    }
    let manifest = dir.path().join("skill.toml");
    std::fs::write(&manifest, text).expect("write skill.toml");
    (dir, manifest)
}

/// Parses JSON text, panicking with the text on failure.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A vault in a temporary directory, opened with a random hex master key,
/// plus shortcuts to add credentials, grant them and build runtimes on it.
#[derive(Debug)]
pub struct TestVault {
    /// The directory holding `vault.db`.
    pub dir: tempfile::TempDir,
    /// The open vault.
    pub vault: std::sync::Arc<skillbox_vault::Vault>,
    /// The master key, as the 64 hex characters `SKILLBOX_MASTER_KEY` takes.
    pub master_key_hex: String,
    /// Where the vault is kept: `vault.db` in `dir`, or a PostgreSQL schema of its own.
    pub location: skillbox_vault::Location,
    /// The PostgreSQL schema, dropped with the vault.
    _schema: Option<pg::PgSchema>,
}

impl Default for TestVault {
    fn default() -> Self {
        Self::new()
    }
}

impl TestVault {
    /// A fresh, empty vault in a SQLite file.
    pub fn new() -> TestVault {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = skillbox_vault::Location::Sqlite(dir.path().join("vault.db"));
        Self::at(dir, location, None)
    }

    /// A fresh, empty vault in a PostgreSQL schema of its own, or `None` (after saying
    /// `test` is skipped) without `SKILLBOX_TEST_POSTGRES_URL`.
    pub fn postgres(test: &str) -> Option<TestVault> {
        let schema = pg::PgSchema::create(test)?;
        let location = skillbox_vault::Location::Postgres(schema.url().to_owned());
        Some(Self::at(tempfile::tempdir().expect("temp dir"), location, Some(schema)))
    }

    fn at(dir: tempfile::TempDir, location: skillbox_vault::Location, schema: Option<pg::PgSchema>) -> TestVault {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let master_key_hex = hex::encode(key);
        let source = skillbox_vault::MasterKeySource::Hex(master_key_hex.clone().into());
        let vault = skillbox_vault::Vault::init_at(&location, &source, &Default::default()).expect("vault init");
        TestVault { dir, vault: std::sync::Arc::new(vault), master_key_hex, location, _schema: schema }
    }

    /// Opens the same vault again: another handle with its own connection(s), as another
    /// process or host has.
    pub fn open_again(&self) -> skillbox_vault::Vault {
        let source = skillbox_vault::MasterKeySource::Hex(self.master_key_hex.clone().into());
        skillbox_vault::Vault::open_at(&self.location, &source).expect("vault open")
    }

    /// The vault file's path (a SQLite vault's).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }

    /// Adds credential `name` (owner `default`, environment `dev`) of `kind`,
    /// its value given as the JSON object `value` (or a bare secret for
    /// single-secret kinds).
    pub fn add(&self, name: &str, kind: &str, value: &str) -> skillbox_vault::CredentialInfo {
        self.add_to(skillbox_vault::CredentialRef::new(name), kind, value)
    }

    /// Like [`TestVault::add`], for any owner and environment.
    pub fn add_to(&self, id: skillbox_vault::CredentialRef, kind: &str, value: &str) -> skillbox_vault::CredentialInfo {
        let kind: skillbox_vault::CredentialKind = kind.parse().expect("credential kind");
        let value = if value.trim_start().starts_with('{') {
            skillbox_vault::SecretValue::from_json(kind, value)
        } else {
            skillbox_vault::SecretValue::from_single(kind, value)
        }
        .expect("credential value");
        let new = skillbox_vault::NewCredential::new(id, kind, "test-service");
        self.vault.add(&new, &value, "test").expect("add credential")
    }

    /// Grants credential `credential` (owner `default`, `dev`) to `skill`,
    /// sending it to `hosts` when given (the operator's `--hosts`).
    pub fn grant(&self, skill: &str, credential: &str, hosts: Option<&[&str]>) -> skillbox_vault::GrantInfo {
        let mut grant = skillbox_vault::NewGrant::new(skill, skillbox_vault::CredentialRef::new(credential));
        grant.hosts = hosts.map(|h| h.iter().map(|s| s.to_string()).collect());
        self.vault.grant(&grant, "test").expect("grant")
    }

    /// A runtime on this vault that denies every approval and allows plain
    /// http to loopback (the test servers live there).
    pub fn runtime(&self) -> Runtime {
        self.runtime_with(std::sync::Arc::new(skillbox_runtime::DenyAll))
    }

    /// A runtime on this vault with `approver`, plain http to loopback allowed.
    pub fn runtime_with(&self, approver: std::sync::Arc<dyn skillbox_runtime::Approver>) -> Runtime {
        let mut config = RuntimeConfig { cache_dir: Some(cache_dir().to_owned()), ..RuntimeConfig::default() };
        config.egress.allow_http_loopback = true;
        Runtime::with_vault(config, self.vault.clone(), approver).expect("runtime with vault")
    }
}

/// The PostgreSQL URL from `SKILLBOX_TEST_POSTGRES_URL`, or `None` after
/// printing that the calling test is skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("SKILLBOX_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED {test}: set SKILLBOX_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
            );
            None
        }
    }
}
