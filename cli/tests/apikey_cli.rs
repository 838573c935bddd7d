//! End-to-end tests of `skillbox apikey create|list|revoke`, run against the real binary.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use skillbox_vault::{ApiKeyStatus, Environment, Error, MasterKeySource, Vault};

const KEY: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";

struct Env {
    _dir: tempfile::TempDir,
    vault: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let env = Env { vault: dir.path().join("data/vault.db"), _dir: dir };
        env.ok(&["vault", "init"]);
        env
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .args(args)
            .env_remove("SKILLBOX_KEY_FILE")
            .env_remove("SKILLBOX_PASSPHRASE")
            .env("SKILLBOX_VAULT", &self.vault)
            .env("SKILLBOX_MASTER_KEY", KEY)
            .env("USER", "tester")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    }

    fn vault(&self) -> Vault {
        Vault::open(&self.vault, &MasterKeySource::Hex(KEY.to_string().into())).unwrap()
    }
}

#[test]
fn create_prints_only_the_key_and_the_scanner_recognises_it() {
    let env = Env::new();
    let (stdout, stderr) =
        env.ok(&["apikey", "create", "ci", "--user", "tenant-a", "--env", "staging", "--skills", "report,deploy"]);
    assert_eq!(stdout.lines().count(), 1, "the key alone on stdout: {stdout:?}");
    let key = stdout.trim_end_matches('\n');
    assert!(key.starts_with("sbx_") && key.len() > 40, "{key}");
    assert!(!stderr.contains(key), "the key goes to stdout only: {stderr}");
    assert!(stderr.contains("only time") && stderr.contains("skillbox apikey revoke ci"), "{stderr}");
    assert!(
        stderr.contains("'tenant-a'") && stderr.contains("staging") && stderr.contains("deploy, report"),
        "{stderr}"
    );

    // The leak scanner's built-in rule finds the whole key, and not the fingerprint.
    let rules = skillbox_runtime::ScanConfig::default().rules;
    let found = rules.find(format!("leaked: {key}.").as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((&*found[0].rule, found[0].end - found[0].start), ("skillbox-api-key", key.len()));

    // The key works, as the user, environment and skills it was made for.
    let info = env.vault().apikey_verify(key).unwrap();
    assert_eq!((info.owner.as_str(), info.environment), ("tenant-a", Environment::Staging));
    assert_eq!(info.skills, Some(vec!["deploy".to_string(), "report".to_string()]));
    assert!(rules.find(info.fingerprint.as_bytes()).is_empty(), "{}", info.fingerprint);
}

#[test]
fn json_output_holds_the_key_in_its_key_field() {
    let env = Env::new();
    let (stdout, _) = env.ok(&["apikey", "create", "bot", "--expires", "90d", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let key = v["key"].as_str().expect("a key field");
    assert!(key.starts_with("sbx_"), "{key}");
    assert_eq!((v["name"].as_str(), v["owner"].as_str()), (Some("bot"), Some("default")));
    assert_eq!((v["environment"].as_str(), v["status"].as_str()), (Some("dev"), Some("active")));
    assert!(v["skills"].is_null() && v["expires_at"].is_string(), "{v}");
    assert!(v["fingerprint"].as_str().unwrap().starts_with("sbx_…"), "{v}");
    assert_eq!(env.vault().apikey_verify(key).unwrap().name, "bot");
}

#[test]
fn list_shows_the_fingerprint_never_the_key_and_revoke_shows_revoked() {
    let env = Env::new();
    let (key, _) = env.ok(&["apikey", "create", "ci"]);
    let key = key.trim();
    let fingerprint = env.vault().apikey_list().unwrap()[0].fingerprint.clone();

    let (table, _) = env.ok(&["apikey", "list"]);
    for column in ["NAME", "FINGERPRINT", "USER", "ENV", "SKILLS", "CREATED", "EXPIRES", "LAST-USED", "STATUS"] {
        assert!(table.contains(column), "{column}: {table}");
    }
    assert!(table.contains(&fingerprint) && table.contains("active") && table.contains("(all)"), "{table}");
    assert!(!table.contains(&key[4..]), "the key is never listed");
    let (json, _) = env.ok(&["apikey", "list", "--json"]);
    assert!(!json.contains(&key[4..]), "{json}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(listed[0].get("key").is_none() && listed[0]["fingerprint"] == fingerprint.as_str(), "{listed}");

    let (_, stderr) = env.ok(&["apikey", "revoke", "ci"]);
    assert!(stderr.contains("revoked API key 'ci'"), "{stderr}");
    let (table, _) = env.ok(&["apikey", "list"]);
    let row = table.lines().find(|l| l.starts_with("ci ")).unwrap();
    assert!(row.trim_end().ends_with("revoked"), "{table}");
    let e = env.vault().apikey_verify(key).unwrap_err();
    assert!(matches!(e, Error::ApiKeyRefused), "{e}");
    assert_eq!(env.vault().apikey_list().unwrap()[0].status, ApiKeyStatus::Revoked);

    // Both are audited, without the key; an unknown name names the list.
    let (audit, _) = env.ok(&["audit", "export"]);
    assert!(audit.contains("\"apikey-create\"") && audit.contains("\"apikey-revoke\""), "{audit}");
    assert!(audit.contains(&fingerprint) && !audit.contains(&key[4..]));
    let out = env.run(&["apikey", "revoke", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("skillbox apikey list"));
}

#[test]
fn bad_arguments_are_usage_errors_and_create_nothing() {
    let env = Env::new();
    for args in [
        &["apikey", "create", "x", "--env", "prod"][..],
        &["apikey", "create", "x", "--expires", "2001-01-01T00:00:00Z"],
        &["apikey", "create", "x", "--expires", "soon"],
        &["apikey", "create", "bad name"],
        &["apikey", "create", "x", "--skills", "ok,not ok"],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    env.ok(&["apikey", "create", "x"]);
    let out = env.run(&["apikey", "create", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty() && String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(env.vault().apikey_list().unwrap().len(), 1);
}
