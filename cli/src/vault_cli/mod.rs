//! Vault subcommands: `vault`, `cred`, `grant`, `ungrant`, `grants`, `audit`, `key`, `apikey`.
//!
//! Thin glue over `skillbox-vault`: this module finds the vault file and the
//! master key, reads secrets from a prompt, stdin or a file (never argv), and
//! formats output as text or `--json`. All policy lives in the library.

mod actor;
mod credtest;
mod input;
mod lifecycle;
mod print;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Args, Subcommand};
use secrecy::ExposeSecret;
use secrecy::SecretString;
use skillbox_vault::{
    AccessLevel, ApiKeyInfo, AuditAction, AuditQuery, CredentialKind, CredentialRef, Environment, GrantFilter,
    GrantStatus, InitOptions, ListFilter, Location, MasterKeySource, NewApiKey, NewCredential, NewGrant, ResponseMode,
    Status, Vault,
};

use crate::GlobalOpts;
use crate::exit::{self, with_code};
use skillbox_runtime::display::escape;

/// Vault-related subcommands, flattened into the top level.
#[derive(Debug, Subcommand)]
pub enum VaultCommands {
    /// Create or back up the credential vault file.
    #[command(subcommand)]
    Vault(Box<VaultCmd>),
    /// Add, list, show, update, rotate, revoke and delete credentials; what is due; compromise.
    #[command(subcommand)]
    Cred(Box<CredCmd>),
    /// Let a skill use a credential (default is deny).
    Grant(Box<GrantArgs>),
    /// Withdraw a skill's grant.
    Ungrant(Box<UngrantArgs>),
    /// List grants.
    Grants(GrantsArgs),
    /// Query and verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(Box<AuditCmd>),
    /// Manage the master key.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Create, list and revoke the API keys clients of `skillbox serve` authenticate with.
    #[command(subcommand)]
    Apikey(Box<ApikeyCmd>),
}

/// Where the master key may come from besides the environment.
#[derive(Debug, Clone, Args)]
pub struct KeyOpts {
    /// A file holding the 32-byte master key (64 hex chars); must be mode 0600 and not a symlink.
    #[arg(long, env = "SKILLBOX_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// `skillbox vault ...`
#[derive(Debug, Subcommand)]
pub enum VaultCmd {
    /// Create a new vault. The key comes from SKILLBOX_MASTER_KEY, --key-file,
    /// a new key file (--generate-key-file), or a passphrase (--passphrase).
    Init {
        /// Use a passphrase (SKILLBOX_PASSPHRASE, or prompted twice) stretched with PBKDF2 (600,000 iterations).
        #[arg(long, conflicts_with = "generate_key_file")]
        passphrase: bool,
        /// Write a new random key to PATH (mode 0600) and use it.
        #[arg(long, value_name = "PATH")]
        generate_key_file: Option<PathBuf>,
        /// Versions kept per credential.
        #[arg(long, default_value_t = skillbox_vault::DEFAULT_HISTORY_DEPTH, value_name = "N")]
        history_depth: u32,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Write a consistent, still-encrypted copy of the vault to FILE.
    Backup {
        /// The new file (must not exist).
        file: PathBuf,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Copy the whole vault to another store (SQLite file <-> PostgreSQL), under the same
    /// master key. The audit chain is verified before and after; a target that already
    /// holds a vault is refused. Point --store / SKILLBOX_STORE at the target afterwards.
    Migrate {
        /// The target: postgres://USER@HOST/DB, sqlite:PATH or a new file's path. Give a
        /// password in PGPASSWORD, not here.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Where the vault is kept and what it holds: store, schema version, row counts, audit
    /// head, and for PostgreSQL the server version and whether the connection uses TLS.
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
}

/// Identity options shared by credential commands.
#[derive(Debug, Clone, Args)]
pub struct IdOpts {
    /// Environment: dev, staging or production.
    #[arg(long = "env", default_value = "dev", value_name = "ENV")]
    pub env: String,
    /// Owner (user or tenant namespace).
    #[arg(long, default_value = skillbox_vault::DEFAULT_OWNER, value_name = "OWNER")]
    pub owner: String,
}

/// How a secret value is supplied: prompt, stdin or file. Never argv.
#[derive(Debug, Clone, Args)]
pub struct ValueOpts {
    /// Read the value from stdin (a JSON object, or the raw secret for single-secret types).
    #[arg(long, conflicts_with = "value_file")]
    pub value_stdin: bool,
    /// Read the value from FILE (a JSON object, or the raw secret for single-secret types).
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
    /// Store a secret shorter than 8 bytes anyway. The leak scanner cannot search free text for
    /// a secret that short without false alarms, so it will be matched only as a whole value.
    #[arg(long)]
    pub allow_short_secret: bool,
    /// PostgreSQL only: store the credential knowing its role is privileged (superuser, or
    /// able to run server programs or read/write server files). Such a role is otherwise
    /// refused at connect; with this flag it is allowed and every use is audited as such.
    #[arg(long)]
    pub allow_privileged_role: bool,
    // Secrets on the command line are refused: these exist only to explain why.
    #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
    pub value: Option<Option<String>>,
    #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
    pub secret: Option<Option<String>>,
    #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
    pub password: Option<Option<String>>,
    #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
    pub token: Option<Option<String>>,
}

/// `skillbox cred ...`
#[derive(Debug, Subcommand)]
pub enum CredCmd {
    /// Add a credential. The value is prompted (hidden), or read with --value-stdin / --value-file.
    Add {
        /// Credential name.
        name: String,
        /// Type: api_key, bearer, oauth2, basic, database, hmac_key, custom.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// The service it is for (stripe, github, ...).
        #[arg(long)]
        service: String,
        #[command(flatten)]
        id: IdOpts,
        /// Free-text description.
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated scopes.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Expiry: an RFC 3339 time or a duration like 30d.
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// Rotation schedule: a duration like 90d, 12h or 30m (`skillbox cred due` lists it when due).
        #[arg(long, value_name = "DURATION")]
        rotate_every: Option<String>,
        /// The URL `skillbox cred test` sends one request to (http or https; no user or password in it).
        #[arg(long, value_name = "URL")]
        test_url: Option<String>,
        #[command(flatten)]
        value: ValueOpts,
        /// Print the new credential's metadata as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// List credentials (metadata only, never values).
    List {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only this type.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Only this environment.
        #[arg(long = "env", value_name = "ENV")]
        env: Option<String>,
        /// Only this status: active, rotated, revoked.
        #[arg(long)]
        status: Option<String>,
        /// Only this owner.
        #[arg(long)]
        owner: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Show a credential's metadata, versions (with partial fingerprints) and grants.
    Show {
        /// Credential name.
        name: String,
        #[command(flatten)]
        id: IdOpts,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Store a new value as the next version (the old one is kept as `rotated`).
    Rotate {
        /// Credential name.
        name: String,
        #[command(flatten)]
        id: IdOpts,
        /// New expiry: an RFC 3339 time or a duration like 30d.
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        #[command(flatten)]
        value: ValueOpts,
        #[command(flatten)]
        generate: lifecycle::GenerateOpts,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Change a credential's rotation schedule, test URL or description (never its value).
    Update(Box<lifecycle::UpdateArgs>),
    /// List what needs attention: rotations due or overdue, expiries near, re-authorization
    /// needed. Exits 5 when something is overdue or needs re-authorization (for cron).
    Due(lifecycle::DueArgs),
    /// Shut off a leaked credential in one step: revoke every version, suspend every grant,
    /// record it, and show who used it in the last 30 days.
    Compromised(Box<lifecycle::CompromisedArgs>),
    /// Check that a credential works, without showing it: a database credential connects and
    /// runs SELECT 1; an HTTP credential sends one GET to its test URL (`--test-url`) through
    /// the egress pipeline skills use and reports the status; an oauth2 credential first proves
    /// it can refresh. Audited as a `use`. Exits 0 when it works, 6 when it does not, 4 when
    /// skillbox's rules refuse the test (a host the credential may not go to).
    Test(Box<credtest::TestArgs>),
    /// Revoke a credential now (kept, but never handed out).
    Revoke {
        /// Credential name.
        name: String,
        #[command(flatten)]
        id: IdOpts,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Delete a credential, all its versions and grants, for good.
    Delete {
        /// Credential name.
        name: String,
        #[command(flatten)]
        id: IdOpts,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
}

/// `skillbox grant SKILL CRED`
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Skill name, or a skill directory / skill.toml (then its component's digest is pinned now).
    pub skill: String,
    /// Credential name.
    pub credential: String,
    #[command(flatten)]
    pub id: IdOpts,
    /// Grant expiry: an RFC 3339 time or a duration like 30d.
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
    /// Why (recorded).
    #[arg(long)]
    pub reason: Option<String>,
    /// Access level: read, use or admin.
    #[arg(long, default_value = "use")]
    pub access: String,
    /// The name the skill declares for the credential (default: the credential's name).
    #[arg(long = "as", value_name = "DECLARED_NAME")]
    pub alias: Option<String>,
    /// Hosts the credential may be sent to (overrides the skill's manifest), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Option<Vec<String>>,
    /// Do not pin the skill's component digest.
    #[arg(long)]
    pub any_digest: bool,
    /// Hand the skill only the status code (`status`), or status and headers (`headers`), of
    /// responses to requests made with this credential; narrows the manifest's `response`.
    #[arg(long, value_name = "full|headers|status")]
    pub response: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: KeyOpts,
}

/// `skillbox ungrant SKILL CRED`
#[derive(Debug, Args)]
pub struct UngrantArgs {
    /// Skill name (or skill directory / skill.toml).
    pub skill: String,
    /// Credential name.
    pub credential: String,
    #[command(flatten)]
    pub id: IdOpts,
    /// The declared name the grant was made under (default: the credential's name).
    #[arg(long = "as", value_name = "DECLARED_NAME")]
    pub alias: Option<String>,
    #[command(flatten)]
    pub key: KeyOpts,
}

/// `skillbox grants`
#[derive(Debug, Args)]
pub struct GrantsArgs {
    /// Only grants to this skill.
    #[arg(long)]
    pub skill: Option<String>,
    /// Only grants with this status: active, suspended, expired.
    #[arg(long)]
    pub status: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: KeyOpts,
}

/// `skillbox apikey ...`
#[derive(Debug, Subcommand)]
pub enum ApikeyCmd {
    /// Create an API key and print it, once, alone on stdout: the vault keeps only a keyed hash
    /// of it. Every call made with the key runs as --user in --env.
    Create {
        /// Its name, for `apikey list` and `apikey revoke` (never reused, even after revocation).
        name: String,
        /// The user (tenant) every call made with the key runs as: its credentials, its grants.
        #[arg(long, default_value = skillbox_vault::DEFAULT_OWNER, value_name = "USER")]
        user: String,
        /// The environment every call made with the key runs in: dev, staging or production.
        #[arg(long = "env", default_value = "dev", value_name = "ENV")]
        env: String,
        /// Only these skills may be called with the key, comma-separated (default: every skill).
        #[arg(long, value_delimiter = ',', value_name = "SKILL,...")]
        skills: Option<Vec<String>>,
        /// Expiry: an RFC 3339 time or a duration like 90d (default: never).
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// Print a JSON object instead: the key in its `key` field, with the key's details.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// List API keys: name, fingerprint, user, environment, skills, dates, status (never a key).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Revoke an API key now: every request made with it is refused from then on.
    Revoke {
        /// The key's name (see `skillbox apikey list`).
        name: String,
        #[command(flatten)]
        key: KeyOpts,
    },
}

/// Filters for audit queries.
#[derive(Debug, Clone, Args)]
pub struct AuditFilter {
    /// Credential name or id.
    #[arg(long)]
    pub credential: Option<String>,
    /// Skill.
    #[arg(long)]
    pub skill: Option<String>,
    /// Action: create, read, use, rotate, revoke, delete, grant, ungrant, key-rotate, denied, pin, backup,
    /// tripwire, suspend, leak, resume, repair, anchor, apikey-create, apikey-revoke.
    #[arg(long)]
    pub action: Option<String>,
    /// From: an RFC 3339 time or a duration ago like 24h.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Until: an RFC 3339 time or a duration ago.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// At most N rows (the most recent).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `skillbox audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit rows.
    List {
        #[command(flatten)]
        filter: AuditFilter,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Check the hash chain and MACs; exits 1 naming the first edited, inserted or deleted row.
    Verify {
        /// Also prove the log still extends this anchor (from `skillbox audit anchor`): catches
        /// truncation and the vault file being replaced by an older copy.
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Rebuild a damaged audit head from the rows that remain, so the vault can record (and resolve)
    /// again; writes a `repair` row saying how many rows the repaired chain holds. Run
    /// `skillbox audit verify` first: what was lost stays lost.
    Repair {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Export the signed head of the audit log (row count, last hash, MAC) as JSON, to keep
    /// outside the vault and check later with `skillbox audit verify --anchor FILE`.
    Anchor {
        /// Write the anchor to FILE (atomically) instead of stdout.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["auto", "no_auto"])]
        out: Option<PathBuf>,
        /// Keep FILE (outside the vault's directory) rewritten with the anchor on every append.
        #[arg(long, value_name = "FILE", conflicts_with = "no_auto")]
        auto: Option<PathBuf>,
        /// Stop rewriting the automatic anchor file.
        #[arg(long)]
        no_auto: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Counts by action, skill and credential.
    Summary {
        #[command(flatten)]
        filter: AuditFilter,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyOpts,
    },
    /// Export rows as JSON lines to FILE (default stdout).
    Export {
        /// Output file (must not exist); stdout when absent.
        file: Option<PathBuf>,
        #[command(flatten)]
        filter: AuditFilter,
        #[command(flatten)]
        key: KeyOpts,
    },
}

/// `skillbox key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Re-wrap the vault's keys under a new master key (no credential is re-encrypted).
    /// The new key comes from --new-key-file, SKILLBOX_NEW_MASTER_KEY, or a prompted new passphrase.
    Rotate {
        /// File holding the new key (64 hex chars, mode 0600).
        #[arg(long, value_name = "PATH")]
        new_key_file: Option<PathBuf>,
        #[command(flatten)]
        key: KeyOpts,
    },
}

/// Runs a vault subcommand.
pub fn run(cmd: VaultCommands, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    match cmd {
        VaultCommands::Vault(cmd) => match *cmd {
            VaultCmd::Init { passphrase, generate_key_file, history_depth, key } => {
                init(global, passphrase, generate_key_file, history_depth, &key)
            }
            VaultCmd::Backup { file, key } => {
                let vault = open_vault_with(global, key.key_file.as_deref())?;
                vault.backup(&file, &actor()).map_err(vault_err)?;
                eprintln!("backup written to {} (encrypted; opens with the same master key)", file.display());
                Ok(ExitCode::SUCCESS)
            }
            VaultCmd::Migrate { to, json, key } => {
                let target = Location::parse(&to);
                if target.has_password() {
                    return Err(usage(anyhow::anyhow!(
                        "--to {} holds a password, and anyone on this machine can read a command line: put the \
                         password in PGPASSWORD instead",
                        target.display()
                    )));
                }
                let vault = open_vault_with(global, key.key_file.as_deref())?;
                let report = vault.migrate_to(&target, &actor()).map_err(vault_err)?;
                if json {
                    return crate::skills::print_stdout(&serde_json::to_string_pretty(&report)?);
                }
                let counts: Vec<String> = report.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
                eprintln!(
                    "copied the vault to {} ({}); its audit chain verifies ({} rows). Use it with --store / \
                     SKILLBOX_STORE; the source is unchanged but for its `migrate` audit row",
                    report.target,
                    counts.join(", "),
                    report.audit_rows
                );
                Ok(ExitCode::SUCCESS)
            }
            VaultCmd::Status { json, key } => {
                let vault = open_vault_with(global, key.key_file.as_deref())?;
                let status = vault.status().map_err(vault_err)?;
                if json {
                    return crate::skills::print_stdout(&serde_json::to_string_pretty(&status)?);
                }
                let mut out = format!(
                    "vault     {}\nstore     {} {}\n",
                    status.vault_id, status.store.backend, status.store.location
                );
                if let Some(v) = &status.store.server_version {
                    out += &format!("server    {v}\n");
                }
                if let Some(tls) = status.store.tls {
                    out += &format!("tls       {}\n", if tls { "yes" } else { "no" });
                }
                out += &format!("schema    {}\n", status.schema_version);
                for (table, n) in &status.rows {
                    out += &format!("{table:<9} {n}\n");
                }
                out += &format!(
                    "audit head {} rows, newest row {}\ngeneration {}",
                    status.audit_rows, status.audit_last_id, status.generation
                );
                crate::skills::print_stdout(&out)
            }
        },
        VaultCommands::Cred(cmd) => cred(*cmd, global),
        VaultCommands::Grant(a) => grant(*a, global),
        VaultCommands::Ungrant(a) => {
            let vault = open_vault_with(global, a.key.key_file.as_deref())?;
            let (env, owner) = id_opts(&a.id)?;
            let skill = skill_name(&a.skill)?.0;
            let alias = a.alias.unwrap_or(a.credential);
            vault.ungrant(&skill, &alias, env, &owner, &actor()).map_err(vault_err)?;
            eprintln!("removed grant of '{alias}' to skill '{skill}' in {env}");
            Ok(ExitCode::SUCCESS)
        }
        VaultCommands::Grants(a) => {
            let status = a.status.map(|s| s.parse::<GrantStatus>()).transpose().map_err(usage)?;
            let vault = open_vault_with(global, a.key.key_file.as_deref())?;
            let grants =
                vault.grants(&GrantFilter { skill: a.skill, status, ..Default::default() }).map_err(vault_err)?;
            if a.json {
                print::json(&grants)
            } else {
                print::grants(&grants)
            }
            Ok(ExitCode::SUCCESS)
        }
        VaultCommands::Audit(cmd) => audit(*cmd, global),
        VaultCommands::Key(KeyCmd::Rotate { new_key_file, key }) => {
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let new = new_master_key_source(new_key_file)?;
            vault.rotate_master_key(&new, &actor()).map_err(vault_err)?;
            eprintln!("master key rotated: use the new key from now on (no credential was re-encrypted)");
            Ok(ExitCode::SUCCESS)
        }
        VaultCommands::Apikey(cmd) => apikey(*cmd, global),
    }
}

/// Maps a vault error to an exit code: refusals → denied (4); integrity,
/// audit and I/O failures → failed (1); everything else → usage (2).
pub fn vault_err(e: skillbox_vault::Error) -> anyhow::Error {
    use skillbox_vault::Error as E;
    let code = match &e {
        e if e.is_denied() => exit::DENIED,
        E::Corrupt { .. }
        | E::Audit { .. }
        | E::Database(_)
        | E::Io { .. }
        | E::Random(_)
        | E::KdfWeakened { .. }
        | E::AuditHeadDamaged { .. }
        | E::Tampered { .. } => exit::SKILL_FAILED,
        _ => exit::USAGE,
    };
    with_code(code, e)
}

/// The user recorded as actor in audit rows: the operating-system account of the process's
/// uid (`uid:<n>` without a password-database entry), never the spoofable `$USER`.
pub fn actor() -> String {
    actor::os_account()
}

/// Where the vault is: `--store` / `SKILLBOX_STORE` (a path, `sqlite:PATH` or a PostgreSQL
/// URL), else `--vault` / `SKILLBOX_VAULT`, else `$XDG_DATA_HOME/skillbox/vault.db`. A
/// password in a `--store` URL on the command line is refused: others can read argv.
pub fn vault_location(global: &GlobalOpts) -> anyhow::Result<Location> {
    if let Some(store) = &global.store {
        let location = Location::parse(store);
        let from_env = std::env::var("SKILLBOX_STORE").is_ok_and(|e| &e == store);
        if !from_env && location.has_password() {
            return Err(usage(anyhow::anyhow!(
                "--store {} holds a password, and anyone on this machine can read a command line: put the URL \
                 in SKILLBOX_STORE, or the password in PGPASSWORD",
                location.display()
            )));
        }
        return Ok(location);
    }
    Ok(Location::Sqlite(vault_path(global)?))
}

/// Whether there is a vault to open at `location` (a SQLite file that exists; a PostgreSQL
/// store is always tried, and says so if it holds no vault).
pub fn vault_exists(location: &Location) -> bool {
    match location {
        Location::Sqlite(p) => p.exists(),
        Location::Postgres(_) => true,
    }
}

/// The vault file: `--vault` / `SKILLBOX_VAULT`, else `$XDG_DATA_HOME/skillbox/vault.db`.
fn vault_path(global: &GlobalOpts) -> anyhow::Result<PathBuf> {
    if let Some(p) = &global.vault {
        return Ok(p.clone());
    }
    let base = dirs::data_dir().ok_or_else(|| {
        with_code(
            exit::USAGE,
            anyhow::anyhow!("no data directory is known for this user: pass --vault PATH or set SKILLBOX_VAULT"),
        )
    })?;
    Ok(base.join("skillbox").join("vault.db"))
}

const KEY_SOURCES_HELP: &str = "give the master key in one of three ways: SKILLBOX_MASTER_KEY=<64 hex chars>, \
     --key-file PATH (or SKILLBOX_KEY_FILE; mode 0600), or SKILLBOX_PASSPHRASE (or run on a terminal to be prompted)";

/// The master key source, in order: `SKILLBOX_MASTER_KEY`, `key_file`
/// (`--key-file` / `SKILLBOX_KEY_FILE`), `SKILLBOX_PASSPHRASE`, else a
/// no-echo prompt on a terminal, else an error listing the three ways.
pub fn master_key_source(key_file: Option<&Path>) -> anyhow::Result<MasterKeySource> {
    if let Ok(hex) = std::env::var("SKILLBOX_MASTER_KEY") {
        return Ok(MasterKeySource::Hex(SecretString::from(hex)));
    }
    if let Some(p) = key_file {
        return Ok(MasterKeySource::KeyFile(p.to_path_buf()));
    }
    if let Some(p) = std::env::var_os("SKILLBOX_KEY_FILE") {
        return Ok(MasterKeySource::KeyFile(PathBuf::from(p)));
    }
    if let Ok(p) = std::env::var("SKILLBOX_PASSPHRASE") {
        return Ok(MasterKeySource::Passphrase(SecretString::from(p)));
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("Vault passphrase: ").context("reading the passphrase")?;
        return Ok(MasterKeySource::Passphrase(SecretString::from(p)));
    }
    Err(with_code(exit::USAGE, anyhow::anyhow!("no master key: {KEY_SOURCES_HELP}")))
}

/// Opens the vault named by `global` with the master key from the environment
/// (see [`master_key_source`]). For `skillbox run` and other commands.
pub fn open_vault(global: &GlobalOpts) -> anyhow::Result<Vault> {
    open_vault_with(global, None)
}

/// [`open_vault`] with an explicit `--key-file`.
pub fn open_vault_with(global: &GlobalOpts, key_file: Option<&Path>) -> anyhow::Result<Vault> {
    let location = vault_location(global)?;
    let source = master_key_source(key_file)?;
    Vault::open_at(&location, &source).map_err(vault_err)
}

fn init(
    global: &GlobalOpts,
    passphrase: bool,
    generate: Option<PathBuf>,
    history_depth: u32,
    key: &KeyOpts,
) -> anyhow::Result<ExitCode> {
    let location = vault_location(global)?;
    if let Location::Sqlite(path) = &location
        && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let source = if let Some(kf) = generate {
        skillbox_vault::generate_key_file(&kf).map_err(vault_err)?;
        eprintln!(
            "wrote a new master key to {} (mode 0600): keep it safe; without it the vault cannot be opened",
            kf.display()
        );
        MasterKeySource::KeyFile(kf)
    } else if passphrase {
        match std::env::var("SKILLBOX_PASSPHRASE") {
            Ok(p) => {
                input::check_new_passphrase(&p)?;
                MasterKeySource::Passphrase(SecretString::from(p))
            }
            Err(_) => MasterKeySource::Passphrase(input::new_passphrase("vault")?),
        }
    } else {
        master_key_source(key.key_file.as_deref())?
    };
    let options = InitOptions::default().with_history_depth(history_depth);
    let vault = Vault::init_at(&location, &source, &options).map_err(vault_err)?;
    eprintln!("created vault {location} (id {})", vault.vault_id());
    Ok(ExitCode::SUCCESS)
}

fn new_master_key_source(new_key_file: Option<PathBuf>) -> anyhow::Result<MasterKeySource> {
    if let Some(p) = new_key_file {
        return Ok(MasterKeySource::KeyFile(p));
    }
    if let Ok(h) = std::env::var("SKILLBOX_NEW_MASTER_KEY") {
        return Ok(MasterKeySource::Hex(SecretString::from(h)));
    }
    if std::io::stdin().is_terminal() {
        return Ok(MasterKeySource::Passphrase(input::new_passphrase("new vault")?));
    }
    Err(with_code(
        exit::USAGE,
        anyhow::anyhow!(
            "no new master key: pass --new-key-file PATH, set SKILLBOX_NEW_MASTER_KEY=<64 hex chars>, \
             or run on a terminal to be prompted for a new passphrase"
        ),
    ))
}

fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    with_code(exit::USAGE, e)
}

fn id_opts(id: &IdOpts) -> anyhow::Result<(Environment, String)> {
    Ok((id.env.parse::<Environment>().map_err(usage)?, id.owner.clone()))
}

fn cref(name: &str, id: &IdOpts) -> anyhow::Result<CredentialRef> {
    let (env, owner) = id_opts(id)?;
    Ok(CredentialRef::new(name).env(env).owner(owner))
}

/// A time given as RFC 3339 or as a duration (`30d`) from now (`forward`) or ago.
fn parse_when(s: &str, forward: bool) -> anyhow::Result<SystemTime> {
    if let Ok(d) = humantime::parse_duration(s) {
        let now = SystemTime::now();
        return Ok(if forward { now + d } else { now - d });
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        usage(anyhow::anyhow!("'{s}' is neither an RFC 3339 time (2030-01-31T12:00:00Z) nor a duration (30d, 12h)"))
    })
}

fn cred(cmd: CredCmd, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    match cmd {
        CredCmd::Add {
            name,
            kind,
            service,
            id,
            description,
            scopes,
            expires,
            rotate_every,
            test_url,
            value,
            json,
            key,
        } => {
            input::refuse_argv_secrets(&value)?;
            if let Some(url) = &test_url {
                credtest::check_test_url(url)?;
            }
            let kind: CredentialKind = kind.parse().map_err(usage)?;
            let r = cref(&name, &id)?;
            let expires_at = expires.as_deref().map(|e| parse_when(e, true)).transpose()?;
            let rotate_every =
                rotate_every.as_deref().map(|d| lifecycle::parse_duration("--rotate-every", d)).transpose()?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let secret = input::read_value(kind, &name, &value)?;
            let mut new = NewCredential::new(r, kind, service);
            new.description = description;
            new.scopes = scopes;
            new.expires_at = expires_at;
            new.rotate_every = rotate_every;
            let mut info = vault.add(&new, &secret, &actor()).map_err(vault_err)?;
            if let Some(url) = &test_url {
                info = vault.set_test_url(&info.reference(), Some(url), &actor()).map_err(vault_err)?;
            }
            if json {
                print::json(&info);
            } else {
                eprintln!(
                    "added {} '{}' in {} for owner '{}' (version 1, fingerprint {})",
                    info.kind, info.name, info.environment, info.owner, info.fingerprint
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CredCmd::List { service, kind, env, status, owner, json, key } => {
            let filter = ListFilter {
                service,
                kind: kind.map(|k| k.parse::<CredentialKind>()).transpose().map_err(usage)?,
                environment: env.map(|e| e.parse::<Environment>()).transpose().map_err(usage)?,
                status: status.map(|s| s.parse::<Status>()).transpose().map_err(usage)?,
                owner,
            };
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let list = vault.list(&filter).map_err(vault_err)?;
            Ok(print::json_or(json, &list[..], print::cred_list))
        }
        CredCmd::Show { name, id, json, key } => {
            let r = cref(&name, &id)?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let d = vault.show(&r).map_err(vault_err)?;
            Ok(print::json_or(json, &d, print::cred_show))
        }
        CredCmd::Rotate { name, id, expires, value, generate, key } if generate.generate => {
            lifecycle::rotate_generated(global, &name, &id, expires, &value, &generate, &key)
        }
        CredCmd::Rotate { name, id, expires, value, generate, key } => {
            input::refuse_argv_secrets(&value)?;
            generate.refuse_without_generate()?;
            let r = cref(&name, &id)?;
            let expires_at = expires.as_deref().map(|e| parse_when(e, true)).transpose()?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let kind = vault.show(&r).map_err(vault_err)?.info.kind;
            let secret = input::read_value(kind, &name, &value)?;
            let info = vault.rotate_with(&r, &secret, expires_at, &actor()).map_err(vault_err)?;
            eprintln!(
                "rotated '{}' in {}: now version {} (fingerprint {})",
                info.name, info.environment, info.version, info.fingerprint
            );
            Ok(ExitCode::SUCCESS)
        }
        CredCmd::Revoke { name, id, reason, key } => {
            let r = cref(&name, &id)?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            vault.revoke(&r, &reason, &actor()).map_err(vault_err)?;
            eprintln!("revoked '{name}' in {}: no skill can use it until it is rotated", r.environment);
            Ok(ExitCode::SUCCESS)
        }
        CredCmd::Delete { name, id, yes, key } => {
            let r = cref(&name, &id)?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(usage(anyhow::anyhow!(
                        "deleting '{name}' cannot be undone: pass --yes to confirm when not on a terminal"
                    )));
                }
                if !input::confirm(&format!(
                    "Delete '{name}' in {} and all its versions and grants for good?",
                    r.environment
                ))? {
                    eprintln!("not deleted");
                    return Ok(ExitCode::from(exit::SKILL_FAILED));
                }
            }
            vault.delete(&r, &actor()).map_err(vault_err)?;
            eprintln!("deleted '{name}' in {}", r.environment);
            Ok(ExitCode::SUCCESS)
        }
        CredCmd::Update(a) => lifecycle::update(global, *a),
        CredCmd::Due(a) => lifecycle::due(global, a),
        CredCmd::Compromised(a) => lifecycle::compromised(global, *a),
        CredCmd::Test(a) => credtest::test(global, *a),
    }
}

fn apikey(cmd: ApikeyCmd, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    match cmd {
        ApikeyCmd::Create { name, user, env, skills, expires, json, key } => {
            let environment = env.parse::<Environment>().map_err(usage)?;
            let expires_at = expires.as_deref().map(|e| parse_when(e, true)).transpose()?;
            if expires_at.is_some_and(|t| t <= SystemTime::now()) {
                return Err(usage(anyhow::anyhow!(
                    "--expires {} is in the past: give a later time or a duration like 90d",
                    escape(expires.as_deref().unwrap_or_default())
                )));
            }
            let new = NewApiKey { name, owner: user, environment, skills, expires_at };
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let (info, secret) = vault.apikey_create(&new, &actor()).map_err(vault_err)?;
            if json {
                #[derive(serde::Serialize)]
                struct Created<'a> {
                    key: &'a str,
                    #[serde(flatten)]
                    info: &'a ApiKeyInfo,
                }
                let text = zeroize::Zeroizing::new(
                    serde_json::to_string_pretty(&Created { key: secret.expose_secret(), info: &info })
                        .expect("an API key serializes"),
                );
                println!("{}", text.as_str());
            } else {
                println!("{}", secret.expose_secret());
            }
            let skills = match &info.skills {
                Some(list) => format!("skills {}", escape(&list.join(", "))),
                None => "every skill".to_string(),
            };
            let expiry = match info.expires_at {
                Some(t) => format!("expires {}", humantime::format_rfc3339_seconds(t)),
                None => "never expires".to_string(),
            };
            eprintln!(
                "created API key '{}' ({}) for user '{}' in {}, {skills}, {expiry}. This is the only time the key \
                 is shown: store it now (the vault keeps only a hash of it). Revoke it with \
                 `skillbox apikey revoke {}`",
                escape(&info.name),
                info.fingerprint,
                escape(&info.owner),
                info.environment,
                escape(&info.name)
            );
            Ok(ExitCode::SUCCESS)
        }
        ApikeyCmd::List { json, key } => {
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let list = vault.apikey_list().map_err(vault_err)?;
            Ok(print::json_or(json, &list[..], print::apikeys))
        }
        ApikeyCmd::Revoke { name, key } => {
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            vault.apikey_revoke(&name, &actor()).map_err(vault_err)?;
            eprintln!("revoked API key '{}': every request made with it is refused from now on", escape(&name));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A skill name, or a skill directory / skill.toml → (name, Some(component sha256)).
fn skill_name(arg: &str) -> anyhow::Result<(String, Option<String>)> {
    skill_arg(arg).map(|(name, digest, _)| (name, digest))
}

/// [`skill_name`], plus the manifest's policy when `arg` is a skill directory / skill.toml.
fn skill_arg(arg: &str) -> anyhow::Result<(String, Option<String>, Option<skillbox_runtime::SkillPolicy>)> {
    let p = Path::new(arg);
    let looks_like_path = arg.contains('/') || arg.ends_with(".toml") || p.is_dir();
    if !looks_like_path {
        return Ok((arg.to_string(), None, None));
    }
    let manifest = skillbox_runtime::Manifest::load(p).map_err(usage)?;
    let component = manifest.component_path();
    let bytes = std::fs::read(&component).with_context(|| {
        format!(
            "reading the component {} to pin its digest (build the skill first: `skillbox build {arg}`)",
            component.display()
        )
    })?;
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let policy = manifest.policy().map_err(|m| usage(anyhow::anyhow!(m)))?;
    Ok((manifest.skill.name.clone(), Some(digest), Some(policy)))
}

fn grant(a: GrantArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let (skill, digest, policy) = skill_arg(&a.skill)?;
    let r = cref(&a.credential, &a.id)?;
    let mut g = NewGrant::new(skill, r);
    g.alias = a.alias;
    // From a skill directory, the policy the operator is looking at is pinned now.
    if let Some(policy) = &policy {
        let declared = g.alias.as_deref().unwrap_or(&g.credential.name);
        g.policy = Some(policy.pinned(declared).ok_or_else(|| {
            usage(anyhow::anyhow!(
                "skill '{}' ({}) does not declare a credential named '{}': add a [[credentials]] entry with \
                 that name to its skill.toml, or pass the name it declares with `--as NAME`",
                escape(&g.skill),
                escape(&a.skill),
                escape(declared)
            ))
        })?);
    }
    g.access = a.access.parse::<AccessLevel>().map_err(usage)?;
    g.expires_at = a.expires.as_deref().map(|e| parse_when(e, true)).transpose()?;
    g.reason = a.reason;
    g.skill_digest = if a.any_digest { None } else { digest };
    g.any_digest = a.any_digest;
    g.hosts = a.hosts;
    g.response = a.response.map(|m| m.parse::<ResponseMode>()).transpose().map_err(usage)?;
    let vault = open_vault_with(global, a.key.key_file.as_deref())?;
    // Granting again re-enables a suspended grant: say so.
    let alias = g.alias.as_deref().unwrap_or(&g.credential.name);
    let was_suspended = vault
        .grants(&GrantFilter {
            skill: Some(g.skill.clone()),
            environment: Some(g.credential.environment),
            owner: Some(g.credential.owner.clone()),
            status: Some(GrantStatus::Suspended),
        })
        .map_err(vault_err)?
        .into_iter()
        .find(|x| x.alias == alias);
    let info = vault.grant(&g, &actor()).map_err(vault_err)?;
    if let Some(old) = &was_suspended {
        eprintln!(
            "re-enabled the suspended grant of '{}' to skill '{}' as '{}' in {} (it was suspended: {})",
            old.credential_name,
            old.skill,
            old.alias,
            old.environment,
            old.suspended_reason.as_deref().unwrap_or("no reason recorded")
        );
    }
    if a.json {
        print::json(&info);
    } else {
        let pin = match (&info.skill_digest, info.any_digest) {
            (_, true) => "any component digest".to_string(),
            (Some(d), _) => format!("pinned to component sha256 {}", &d[..16]),
            (None, _) => "digest pinned on first use".to_string(),
        };
        let response = match info.response {
            Some(m) => format!("; responses narrowed to {m}"),
            None => String::new(),
        };
        let policy = match (info.policy_digest(), info.pinned_hosts()) {
            (Some(d), Some(hosts)) if !hosts.is_empty() => {
                format!("; policy sha256 {} pinned, hosts {}", &d[..16], escape(&hosts.join(", ")))
            }
            (Some(d), _) => format!("; policy sha256 {} pinned", &d[..16]),
            (None, _) => "; policy pinned on first use".to_string(),
        };
        eprintln!(
            "granted '{}' ({}) to skill '{}' as '{}' in {} ({}; {pin}{policy}{response})",
            escape(&info.credential_name),
            info.access,
            escape(&info.skill),
            escape(&info.alias),
            info.environment,
            escape(&info.owner)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_query(f: AuditFilter) -> anyhow::Result<AuditQuery> {
    Ok(AuditQuery {
        credential: f.credential,
        skill: f.skill,
        action: f.action.map(|a| a.parse::<AuditAction>()).transpose().map_err(usage)?,
        since: f.since.as_deref().map(|s| parse_when(s, false)).transpose()?,
        until: f.until.as_deref().map(|s| parse_when(s, false)).transpose()?,
        limit: f.limit,
    })
}

fn audit(cmd: AuditCmd, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::List { filter, json, key } => {
            let q = audit_query(filter)?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let rows = vault.audit_list(&q).map_err(vault_err)?;
            Ok(print::json_or(json, &rows[..], print::audit_rows))
        }
        AuditCmd::Verify { anchor, json, key } => {
            let anchor = anchor
                .map(|p| {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading the audit anchor {}", p.display()))
                        .map_err(usage)?;
                    skillbox_vault::AuditAnchor::from_json(&text).map_err(vault_err)
                })
                .transpose()?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let report = match &anchor {
                Some(a) => vault.audit_verify_anchor(a),
                None => vault.audit_verify(),
            }
            .map_err(vault_err)?;
            if json {
                print::json(&report);
            }
            match &report.problem {
                None => {
                    if !json {
                        println!("audit log intact: {} rows, chain and MACs verified", report.rows);
                        if let Some(a) = &anchor {
                            println!("it extends the anchor ({} rows up to row {})", a.count, a.last_id);
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(p) if p.kind == skillbox_vault::TamperKind::RecordForged => Err(with_code(
                    exit::SKILL_FAILED,
                    anyhow::anyhow!("vault tampered: {} (restore it from a backup you trust)", p.message),
                )),
                Some(p) => Err(with_code(exit::SKILL_FAILED, anyhow::anyhow!("audit log tampered: {}", p.message))),
            }
        }
        AuditCmd::Repair { json, key } => {
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let r = vault.audit_repair(&actor()).map_err(vault_err)?;
            if json {
                print::json(&r);
            } else if r.repaired {
                println!(
                    "audit head rebuilt: the chain holds {} rows ({} verify from the first); a `repair` row records it",
                    r.rows, r.verified_rows
                );
                if let Some(p) = &r.row_problem {
                    println!("still wrong in the rows themselves (`skillbox audit verify` keeps reporting it): {p}");
                }
            } else {
                println!("the audit head is intact: nothing to repair ({} rows)", r.rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Anchor { out, auto, no_auto, key } => {
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            if no_auto {
                vault.set_audit_anchor_file(None, &actor()).map_err(vault_err)?;
                eprintln!("the audit anchor is no longer rewritten on every append");
            } else if let Some(path) = auto {
                vault.set_audit_anchor_file(Some(&path), &actor()).map_err(vault_err)?;
                eprintln!("the audit anchor in {} is now rewritten on every append", path.display());
            } else {
                let text = vault.audit_anchor().map_err(vault_err)?.to_json();
                match out {
                    Some(path) => {
                        write_file_atomically(&path, text.as_bytes())?;
                        eprintln!(
                            "audit anchor written to {}: keep it outside the vault's directory and check it with \
                             `skillbox audit verify --anchor {}`",
                            path.display(),
                            path.display()
                        );
                    }
                    None => print!("{text}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Summary { filter, json, key } => {
            let q = audit_query(filter)?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let s = vault.audit_summary(&q).map_err(vault_err)?;
            Ok(print::json_or(json, &s, print::summary))
        }
        AuditCmd::Export { file, filter, key } => {
            let q = audit_query(filter)?;
            let vault = open_vault_with(global, key.key_file.as_deref())?;
            let n = match file {
                Some(path) => {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .with_context(|| format!("creating {}", path.display()))
                        .map_err(usage)?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = vault.audit_export(&q, &mut w).map_err(vault_err)?;
                    eprintln!("exported {n} audit rows to {}", path.display());
                    n
                }
                None => vault.audit_export(&q, &mut std::io::stdout().lock()).map_err(vault_err)?,
            };
            let _ = n;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename.
fn write_file_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let name = path.file_name().ok_or_else(|| usage(anyhow::anyhow!("{} names no file", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}
