//! Lifecycle alerts through the real `skillbox` binary: `cred due` (rotation-due, expiry-due)
//! and `cred compromised` (compromise), with `[alerts]` in a `skillbox.toml` given by
//! `SKILLBOX_CONFIG`, delivered to a webhook receiver on loopback that verifies each signature
//! and the contents, and finds no secret value in them (`skillbox_tests::webhook`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use skillbox_tests::webhook::{Receiver, assert_no_secret};

const KEY: &str = "5c5d5e5f505152535455565758595a5b5c5d5e5f505152535455565758595a5b";
/// What `cred due` exits with when something is overdue.
const ATTENTION: i32 = 5;

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    /// A vault, and a `skillbox.toml` whose webhook is `receiver`.
    fn new(receiver: &Receiver) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = receiver.write_config(dir.path(), "");
        let env = Env { dir, config };
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
            .env("SKILLBOX_CONFIG", &self.config)
            .env_remove("SKILLBOX_KEY_FILE")
            .env_remove("SKILLBOX_PASSPHRASE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            let _ = input.write_all(text.as_bytes());
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn add_hmac(&self, name: &str, key: &str, extra: &[&str]) {
        let mut args = vec!["cred", "add", name, "--type", "hmac_key", "--service", "webhooks", "--value-stdin"];
        args.extend_from_slice(extra);
        self.ok(&args, Some(key));
    }

    /// Moves a credential's creation time back `secs` (it only places the first rotation due
    /// date, and is not MACed).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cred_due_raises_rotation_and_expiry_alerts_at_the_webhook() {
    let receiver = Receiver::start().await;
    let env = Env::new(&receiver);
    let (overdue_key, expiring_key, later_key) =
        ("overdue-rotation-hmac-key-01", "expiring-soon-hmac-key-0001", "not-due-for-ages-hmac-key-01");
    env.add_hmac("overdue", overdue_key, &["--rotate-every", "1h"]);
    env.age("overdue", 2 * 3600);
    env.add_hmac("expiring", expiring_key, &["--expires", "3d"]);
    env.add_hmac("later", later_key, &["--rotate-every", "90d"]);

    let out = env.run(&["cred", "due", "--within", "14d"], None);
    assert_eq!(out.status.code(), Some(ATTENTION), "{}", String::from_utf8_lossy(&out.stderr));
    // The command waits for its deliveries: they are there when it exits.
    let alerts = receiver.alerts();
    assert_eq!(
        alerts.len(),
        2,
        "one alert per due credential: {:?}",
        alerts.iter().map(|a| &a.body).collect::<Vec<_>>()
    );

    let rotation = receiver.alert_of("rotation-due").await;
    let body = &rotation.body;
    assert_eq!(body["severity"], "info", "{body}");
    assert_eq!(body["subject"]["credential"], "overdue", "{body}");
    assert_eq!(body["subject"]["user"], "default");
    assert_eq!(body["subject"]["environment"], "dev");
    assert_eq!(body["detail"]["reason"], "rotation");
    assert_eq!(body["detail"]["overdue"], true);
    assert!(body["detail"]["due_at"].is_string(), "{body}");
    assert!(body["message"].as_str().unwrap().contains("skillbox cred rotate overdue"), "{body}");

    let expiry = receiver.alert_of("expiry-due").await;
    let body = &expiry.body;
    assert_eq!(body["severity"], "warning", "{body}");
    assert_eq!(body["subject"]["credential"], "expiring", "{body}");
    assert_eq!(body["detail"]["reason"], "expiry");
    assert_eq!(body["detail"]["overdue"], false);

    for alert in receiver.alerts() {
        for secret in [overdue_key, expiring_key, later_key] {
            assert_no_secret(&alert.request, secret);
        }
        assert_ne!(alert.body["subject"]["credential"], "later");
    }
    // Each alert is also an audit row (and holds no secret either).
    let rows = env.ok(&["audit", "list", "--action", "alert", "--json"], None);
    let parsed: Value = serde_json::from_str(&rows).unwrap();
    assert_eq!(parsed.as_array().map(Vec::len), Some(2), "{rows}");
    assert!(rows.contains("rotation-due") && rows.contains("expiry-due"), "{rows}");
    for secret in [overdue_key, expiring_key, later_key] {
        assert!(!rows.contains(secret));
    }

    // Run again (from cron, say): alerted again while it is still overdue...
    let out = env.run(&["cred", "due", "--within", "1m"], None);
    assert_eq!(out.status.code(), Some(ATTENTION));
    assert_eq!(receiver.alerts_of("rotation-due").len(), 2);
    assert_eq!(receiver.alerts().len(), 3, "the expiry is not within a minute");
    // ...and not once it is rotated.
    env.ok(&["cred", "rotate", "overdue", "--generate"], None);
    let out = env.run(&["cred", "due", "--within", "1m"], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(receiver.alerts().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cred_compromised_raises_the_compromise_alert_at_the_webhook() {
    let receiver = Receiver::start().await;
    let env = Env::new(&receiver);
    let leaked = "leaked-webhook-hmac-key-0001";
    env.add_hmac("webhook-key", leaked, &[]);
    env.ok(&["grant", "webhook-signer", "webhook-key"], None);
    let input = r#"{"payload":"p","timestamp":1}"#;
    env.ok(&["run", skillbox_tests::WEBHOOK_SIGNER, "--input", input], None);

    let reason = "key found in a public repository";
    let out = env.run(&["cred", "compromised", "webhook-key", "--reason", reason, "--json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Delivered before the command exited.
    let alerts = receiver.alerts_of("compromise");
    assert_eq!(alerts.len(), 1, "{:?}", receiver.alerts().iter().map(|a| &a.body).collect::<Vec<_>>());
    let body = &alerts[0].body;
    assert_eq!(body["severity"], "critical", "{body}");
    assert_eq!(body["subject"]["credential"], "webhook-key", "{body}");
    assert_eq!(body["subject"]["user"], "default");
    assert_eq!(body["subject"]["environment"], "dev");
    assert_eq!(body["detail"]["reason"], reason);
    assert_eq!(body["detail"]["versions_revoked"], 1);
    assert_eq!(body["detail"]["grants_suspended"], 1);
    assert_eq!(body["detail"]["actor"], report["actor"], "the operator who declared it");
    assert!(body["message"].as_str().unwrap().contains(reason), "{body}");
    assert_no_secret(&alerts[0].request, leaked);
    let rows = env.ok(&["audit", "list", "--action", "alert", "--json"], None);
    assert!(rows.contains("compromise") && !rows.contains(leaked), "the alert is an audit row too: {rows}");
}
