//! The credential lifecycle through the real `skillbox` binary: rotation schedules
//! (`cred add --rotate-every`, `cred update`, `cred due` and its exit code), generated values
//! (`cred rotate --generate`), the one-step compromise response (`cred compromised`), and the
//! audit actor being the operating-system account, not `$USER`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const KEY: &str = "7a7b7c7d7e7f70717273747576777879707172737475767778797a7b7c7d7e7f";
/// What `cred due` exits with when something is overdue or needs re-authorization.
const ATTENTION: i32 = 5;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env { dir: tempfile::tempdir().unwrap() };
        env.ok(&["vault", "init"], None);
        env
    }

    fn vault(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .args(args)
            .env("SKILLBOX_VAULT", self.vault())
            .env("SKILLBOX_MASTER_KEY", KEY)
            .env("SKILLBOX_CACHE_DIR", self.dir.path().join("cache"))
            // A spoofed $USER must not become the audit actor.
            .env("USER", "spoofed-user")
            .env("LOGNAME", "spoofed-user")
            .env_remove("SKILLBOX_KEY_FILE")
            .env_remove("SKILLBOX_PASSPHRASE")
            .env_remove("SKILLBOX_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            // A command that fails before reading its input closes the pipe; its exit status
            // and stderr say why, which the caller checks.
            let _ = input.write_all(text.as_bytes());
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args, None);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }

    fn add_hmac(&self, name: &str, key: &str, extra: &[&str]) {
        let mut args = vec!["cred", "add", name, "--type", "hmac_key", "--service", "webhooks", "--value-stdin"];
        args.extend_from_slice(extra);
        self.ok(&args, Some(key));
    }

    fn sign(&self, payload: &str, timestamp: u64) -> Output {
        let input = json!({ "payload": payload, "timestamp": timestamp }).to_string();
        self.run(&["run", skillbox_tests::WEBHOOK_SIGNER, "--input", &input], None)
    }

    /// Moves a credential's creation time back (it is not MACed: it only places the first
    /// rotation due date), as if it had been added `secs` ago.
    fn age(&self, name: &str, secs: i64) {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        rusqlite::Connection::open(self.vault())
            .unwrap()
            .execute(
                "UPDATE credentials SET created_at = ?1 WHERE name = ?2",
                rusqlite::params![now_ms - secs * 1000, name],
            )
            .unwrap();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// HMAC-SHA256 (RFC 2104), hex.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    hex::encode(Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize())
}

/// The operating-system account of this process's uid, as `id -un` prints it.
fn os_account() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn rotation_schedules_update_and_due_with_its_exit_code() {
    let env = Env::new();
    env.add_hmac("quarterly", "quarterly-hmac-key-0001", &["--rotate-every", "90d"]);
    let info = env.json(&["cred", "show", "quarterly", "--json"]);
    assert_eq!(info["rotate_every"], 90 * 86_400);
    assert!(info["rotation_due_at"].is_string(), "{info}");

    // Nothing due within 14 days: exit 0, an empty JSON list.
    let out = env.run(&["cred", "due", "--json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(serde_json::from_str::<Value>(&stdout(&out)).unwrap(), json!([]));

    // Due within the window but not overdue: listed, still exit 0.
    env.add_hmac("soon", "soon-hmac-key-000000001", &["--rotate-every", "12h"]);
    let out = env.run(&["cred", "due"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("soon") && table.contains("rotation") && !table.contains("quarterly"), "{table}");
    assert!(table.contains("skillbox cred rotate soon --generate"), "{table}");

    // Overdue: exit 5, for cron.
    env.age("soon", 13 * 3600);
    let out = env.run(&["cred", "due", "--json", "--within", "1d"], None);
    assert_eq!(out.status.code(), Some(ATTENTION), "{}", stderr(&out));
    let items: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
    assert_eq!(items[0]["credential"]["name"], "soon");
    assert_eq!(items[0]["reason"], "rotation");
    assert_eq!(items[0]["overdue"], true);
    let out = env.run(&["cred", "due"], None);
    assert_eq!(out.status.code(), Some(ATTENTION));
    assert!(stdout(&out).contains("OVERDUE"), "{}", stdout(&out));

    // A wider window also lists the quarterly one (not overdue).
    let items = env.run(&["cred", "due", "--within", "100d", "--json"], None);
    let items: Value = serde_json::from_str(&stdout(&items)).unwrap();
    let names: Vec<&str> =
        items.as_array().unwrap().iter().map(|i| i["credential"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["soon", "quarterly"]);

    // cred update: stop the schedule, set a test URL; nothing is due any more.
    let info =
        env.json(&["cred", "update", "soon", "--no-rotate", "--test-url", "https://api.example.com/me", "--json"]);
    assert_eq!(info["rotate_every"], Value::Null);
    assert_eq!(info["test_url"], "https://api.example.com/me");
    let out = env.run(&["cred", "due", "--json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.ok(&["cred", "update", "soon", "--rotate-every", "30m", "--description", "rotated by cron"], None);
    assert_eq!(env.json(&["cred", "show", "soon", "--json"])["rotate_every"], 1800);

    // Bad input: a clear message naming the fix, exit 2.
    for (args, says) in [
        (vec!["cred", "update", "soon", "--rotate-every", "90x"], "like 90d, 12h or 30m"),
        (vec!["cred", "update", "soon", "--rotate-every", "5s"], "between 1 minute and 100 years"),
        (vec!["cred", "update", "soon", "--test-url", "https://user:pw@api.example.com/"], "user name or password"),
        (vec!["cred", "update", "soon"], "nothing to change"),
        (vec!["cred", "due", "--within", "soon"], "like 90d"),
        (vec!["cred", "rotate", "soon", "--show-once", "--value-stdin"], "only with --generate"),
    ] {
        let out = env.run(&args, Some("x"));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }

    // Every change is an `update` row.
    let rows = env.json(&["audit", "list", "--action", "update", "--json"]);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    assert_eq!(rows[0]["detail"]["rotate_every_secs"], Value::Null);
}

#[test]
fn rotate_generate_makes_a_working_key_shown_only_when_asked() {
    let env = Env::new();
    env.add_hmac("webhook-key", "initial-webhook-key-0001", &[]);
    env.ok(&["grant", "webhook-signer", "webhook-key"], None);
    let out = env.sign("hello", 1_700_000_000);
    assert!(out.status.success(), "{}", stderr(&out));

    // Without --show-once, nothing on stdout.
    let out = env.run(&["cred", "rotate", "webhook-key", "--generate"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("not shown"), "{}", stderr(&out));
    assert_eq!(env.json(&["cred", "show", "webhook-key", "--json"])["version"], 2);

    // With --show-once: the value alone on stdout, once, a warning on stderr.
    let out = env.run(
        &["cred", "rotate", "webhook-key", "--generate", "--length", "48", "--charset", "hex", "--show-once"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim_end_matches('\n').to_owned();
    assert_eq!(key.len(), 48, "{key}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    assert!(stderr(&out).contains("will not be shown again"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&key));

    // The skill signs with the generated key.
    let out = env.sign("hello", 1_700_000_000);
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(result["signature"], hmac_sha256_hex(key.as_bytes(), b"1700000000.hello"));

    // Nowhere else: not in listings, not in the audit log.
    let show = env.ok(&["cred", "show", "webhook-key", "--json"], None);
    let audit = env.ok(&["audit", "export"], None);
    assert!(!show.contains(&key) && !audit.contains(&key));
    let rotate = env.json(&["audit", "list", "--action", "rotate", "--json"]);
    assert_eq!(rotate[1]["detail"]["generated"], json!({ "field": "key", "length": 48, "charset": "hex" }));

    // Kinds the operator does not own are refused with what to do instead.
    env.ok(
        &["cred", "add", "tok", "--type", "oauth2", "--service", "s", "--value-stdin"],
        Some("oauth-access-token-01"),
    );
    let out = env.run(&["cred", "rotate", "tok", "--generate"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("skillbox oauth login tok"), "{}", stderr(&out));
    let out = env.run(&["cred", "rotate", "webhook-key", "--generate", "--charset", "emoji"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("alnum, hex, base64url, printable"), "{}", stderr(&out));
}

#[test]
fn compromised_shuts_a_credential_off_and_shows_who_used_it() {
    let env = Env::new();
    env.add_hmac("webhook-key", "leaked-webhook-key-00001", &[]);
    env.ok(&["grant", "webhook-signer", "webhook-key"], None);
    for ts in [1, 2, 3] {
        let out = env.sign("payload", ts);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let out = env.run(&["cred", "compromised", "webhook-key", "--reason", "key found in a public repository"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("declared compromised"), "{text}");
    assert!(text.contains("grants suspended: 1"), "{text}");
    assert!(text.contains("webhook-signer"), "{text}");
    assert!(text.contains("skillbox grant webhook-signer webhook-key"), "{text}");
    // The usage row: the skill, its digest, who ran it (the OS account), 3 opens and 3 uses.
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(skillbox_tests::WEBHOOK_SIGNER_COMPONENT).unwrap()))
    };
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("webhook-signer") && l.contains(&digest[..12]))
        .unwrap_or_else(|| panic!("no usage line with the digest: {text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[2..7], [os_account().as_str(), "-", "3", "3", "0"], "{line}");

    // A grant that worked now fails: exit 4, naming the suspension.
    let out = env.sign("payload", 4);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    // Audit: the compromise row, by the OS account, with the reason and no secret.
    let rows = env.json(&["audit", "list", "--action", "compromise", "--json"]);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["detail"]["reason"], "key found in a public repository");
    assert_eq!(rows[0]["detail"]["versions_revoked"], 1);
    assert_eq!(rows[0]["actor"], os_account());
    assert!(!env.ok(&["audit", "export"], None).contains("leaked-webhook-key"));
    let cred = env.json(&["cred", "show", "webhook-key", "--json"]);
    assert_eq!(cred["status"], "revoked");
    assert_eq!(cred["grants"][0]["status"], "suspended");

    // --json: the whole report.
    env.add_hmac("other", "other-webhook-key-000001", &[]);
    env.ok(&["grant", "webhook-signer", "other", "--as", "webhook-key", "--env", "dev"], None);
    let report = env.json(&["cred", "compromised", "other", "--reason", "rotating everything", "--json"]);
    assert_eq!(report["credential"]["name"], "other");
    assert_eq!(report["grants_suspended"][0]["skill"], "webhook-signer");
    assert_eq!(report["usage"], json!([]));
    assert_eq!(report["actor"], os_account());

    // Back in service: a new value, then grant again.
    env.ok(&["cred", "rotate", "webhook-key", "--generate"], None);
    let out = env.sign("payload", 5);
    assert_eq!(out.status.code(), Some(4), "still suspended: {}", stderr(&out));
    env.ok(&["ungrant", "webhook-signer", "other", "--as", "webhook-key"], None);
    env.ok(&["grant", "webhook-signer", "webhook-key"], None);
    let out = env.sign("payload", 6);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["cred", "compromised", "nope", "--reason", "x"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_audit_actor_is_the_os_account_not_user() {
    let env = Env::new();
    env.add_hmac("k", "actor-test-hmac-key-001", &[]);
    env.ok(&["cred", "update", "k", "--rotate-every", "30d"], None);
    let rows = env.json(&["audit", "list", "--json"]);
    let me = os_account();
    assert!(!me.is_empty() && me != "spoofed-user");
    for r in rows.as_array().unwrap() {
        assert_eq!(r["actor"], me.as_str(), "{r}");
    }
}

#[test]
fn running_a_skill_with_a_credential_overdue_for_rotation_warns() {
    let env = Env::new();
    env.add_hmac("webhook-key", "overdue-webhook-key-0001", &["--rotate-every", "1h"]);
    env.ok(&["grant", "webhook-signer", "webhook-key"], None);
    let out = env.sign("p", 1);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("overdue"), "{}", stderr(&out));
    env.age("webhook-key", 2 * 3600);
    let out = env.sign("p", 2);
    assert!(out.status.success(), "the warning does not stop the run: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("overdue for rotation") && err.contains("skillbox cred rotate webhook-key"), "{err}");
    // After a rotation it is quiet again.
    env.ok(&["cred", "rotate", "webhook-key", "--generate"], None);
    let out = env.sign("p", 3);
    assert!(out.status.success() && !stderr(&out).contains("overdue"), "{}", stderr(&out));
}
