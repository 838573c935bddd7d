//! Alerts end to end: the runtime reads `[alerts]` from a real `skillbox.toml`, the hostile
//! `exfiltrate` skill trips the wire (or keeps being denied), and a webhook receiver on
//! loopback gets a signed alert that it verifies with the same key and that holds no secret.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use skillbox_runtime::vault::{AuditAction, AuditQuery};
use skillbox_runtime::{Error, Runtime, RuntimeConfig};
use skillbox_tests::TestVault;
use skillbox_tests::server::{Received, Reply, TestServer};

const KEY: &str = "integration-test-webhook-key-5f3a9c";

/// A receiver that accepts every POST.
async fn receiver() -> TestServer {
    TestServer::start("127.0.0.1", |_req: &Received| Reply::json(200, json!({ "ok": true }))).await
}

/// Writes `skillbox.toml` (a webhook to `server`, its key in a file beside it) into `dir` and
/// returns a runtime on `vault` configured from it.
fn runtime(dir: &tempfile::TempDir, server: &TestServer, vault: &TestVault, extra: &str) -> Runtime {
    std::fs::write(dir.path().join("webhook.key"), format!("{KEY}\n")).unwrap();
    let config_file = dir.path().join("skillbox.toml");
    let text = format!(
        "{extra}\n[[alerts.webhook]]\nurl = \"{}/alerts\"\nsecret_file = \"webhook.key\"\nretries = 2\nbackoff = \"50ms\"\n",
        server.base_url()
    );
    std::fs::write(&config_file, text).unwrap();
    let mut config = RuntimeConfig { cache_dir: Some(dir.path().join("cache")), ..RuntimeConfig::default() };
    config = config.apply_file(&config_file).expect("the config file is valid");
    config.egress.allow_http_loopback = true;
    Runtime::with_vault(config, vault.vault.clone(), std::sync::Arc::new(skillbox_runtime::DenyAll)).unwrap()
}

/// Waits (up to 20 s) until `server` has received an alert of `kind`; returns it.
async fn alert_of(server: &TestServer, kind: &str) -> Received {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let found = server
            .received()
            .into_iter()
            .find(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|body| body["kind"] == kind));
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < until, "no `{kind}` alert arrived; got {:?}", server.received());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The receiver's check, as `docs/alerts.md` describes it.
fn verified(req: &Received) -> bool {
    let (Some(timestamp), Some(signature)) = (req.header("x-skillbox-timestamp"), req.header("x-skillbox-signature"))
    else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&req.body);
    signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn assert_no_secret(req: &Received, secret: &str) {
    let forms = [secret.to_owned(), hex::encode(secret), secret.chars().rev().collect()];
    let headers: String = req.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
    for form in forms {
        assert!(!String::from_utf8_lossy(&req.body).contains(&form), "secret in the alert body");
        assert!(!headers.contains(&form), "secret in the alert headers");
    }
}

#[tokio::test]
async fn a_tripwire_reaches_the_webhook_signed_and_without_the_secret() {
    let server = receiver().await;
    let vault = TestVault::new();
    let secret = "tok_alerts_6d1f0c9e8b7a_integration_secret";
    vault.add("token", "bearer", secret);
    vault.grant("exfiltrate", "token", Some(&["127.0.0.1"]));
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(&dir, &server, &vault, "");
    let skill = runtime.load(skillbox_tests::EXFILTRATE).unwrap();

    let input = json!({ "mode": "log-known", "known_secret": secret });
    let err = skill.invoke(&input.to_string()).await.unwrap_err();
    assert!(matches!(err, Error::Tripwire { .. }), "expected a tripwire, got {err:?}");

    let req = alert_of(&server, "tripwire").await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/alerts");
    assert!(verified(&req), "the signature verifies with the shared key: {:?}", req.headers);
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["subject"]["skill"], "exfiltrate");
    assert_eq!(body["subject"]["credential"], "token");
    assert_eq!(body["subject"]["user"], "default");
    assert_eq!(body["detail"]["channel"], "log");
    assert_eq!(req.header("x-skillbox-alert-id"), body["id"].as_str());
    assert_no_secret(&req, secret);

    // Two more tripwires reach the threshold (3 by default): the grant is suspended, and that
    // is an alert of its own.
    for _ in 0..2 {
        let _ = skill.invoke(&input.to_string()).await.unwrap_err();
    }
    let req = alert_of(&server, "suspension").await;
    assert!(verified(&req));
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["detail"]["grants"], json!(["token"]));
    assert!(body["detail"]["regrant"][0].as_str().unwrap().starts_with("skillbox grant exfiltrate token"));
    assert_no_secret(&req, secret);
    for req in server.received() {
        assert!(verified(&req));
        assert_no_secret(&req, secret);
    }

    // Each alert is an audit row too: kind and subject, no secret.
    let query = AuditQuery { action: Some(AuditAction::Alert), ..AuditQuery::default() };
    let until = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = vault.vault.audit_list(&query).unwrap();
        if rows.iter().any(|r| r.detail["kind"] == "suspension") || Instant::now() > until {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r.detail["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "tripwire").count(), 3, "{kinds:?}");
    assert!(kinds.contains(&"suspension"), "{kinds:?}");
    let row = rows.iter().find(|r| r.detail["kind"] == "tripwire").unwrap();
    assert_eq!(row.detail["subject"]["skill"], "exfiltrate");
    assert_eq!(row.detail["subject"]["credential"], "token");
    assert!(!serde_json::to_string(&rows).unwrap().contains(secret));
}

#[tokio::test]
async fn repeated_denials_raise_one_denial_burst() {
    let server = receiver().await;
    let vault = TestVault::new();
    // The credential exists but is not granted: every open is denied.
    vault.add("token", "bearer", "tok_never_granted_0123456789");
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(&dir, &server, &vault, "[alerts]\nburst = { count = 3, window = \"5m\" }\n");
    let skill = runtime.load(skillbox_tests::EXFILTRATE).unwrap();
    for _ in 0..6 {
        let err = skill.invoke(r#"{"mode":"open-handle"}"#).await.unwrap_err();
        assert!(matches!(err, Error::Denied { .. }), "expected a denial, got {err:?}");
    }
    let req = alert_of(&server, "denial-burst").await;
    assert!(verified(&req));
    // One burst per skill and one per user, not one per denial.
    let bursts = || -> Vec<Value> {
        server
            .received()
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
            .filter(|b| b["kind"] == "denial-burst")
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(20);
    while bursts().len() < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bursts = bursts();
    assert_eq!(bursts.len(), 2, "{bursts:?}");
    let scopes: Vec<&str> = bursts.iter().map(|b| b["detail"]["scope"].as_str().unwrap()).collect();
    assert!(scopes.contains(&"skill") && scopes.contains(&"user"), "{scopes:?}");
}
