//! Alerts end to end: the runtime reads `[alerts]` from a real `skillbox.toml`, the hostile
//! `exfiltrate` skill trips the wire (or keeps being denied), and a webhook receiver on
//! loopback gets a signed alert that it verifies with the same key and that holds no secret.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skillbox_runtime::vault::{AuditAction, AuditQuery};
use skillbox_runtime::{Error, Runtime, RuntimeConfig};
use skillbox_tests::TestVault;
use skillbox_tests::server::Received;
use skillbox_tests::webhook::{Receiver, assert_no_secret, verified};

/// A runtime on `vault` configured from a `skillbox.toml` in `dir` that sends alerts to
/// `receiver` (`extra`: more of the file).
fn runtime(dir: &tempfile::TempDir, receiver: &Receiver, vault: &TestVault, extra: &str) -> Runtime {
    let config_file = receiver.write_config(dir.path(), extra);
    let mut config = RuntimeConfig { cache_dir: Some(dir.path().join("cache")), ..RuntimeConfig::default() };
    config = config.apply_file(&config_file).expect("the config file is valid");
    config.egress.allow_http_loopback = true;
    Runtime::with_vault(config, vault.vault.clone(), std::sync::Arc::new(skillbox_runtime::DenyAll)).unwrap()
}

/// Waits (up to 20 s) until `receiver` has an alert of `kind`; returns its request (the
/// signature already verified).
async fn alert_of(receiver: &Receiver, kind: &str) -> Received {
    receiver.alert_of(kind).await.request
}

#[tokio::test]
async fn a_tripwire_reaches_the_webhook_signed_and_without_the_secret() {
    let server = Receiver::start().await;
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
    for req in server.server.received() {
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
    let server = Receiver::start().await;
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
    let bursts = || -> Vec<Value> { server.alerts_of("denial-burst").into_iter().map(|a| a.body).collect() };
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

#[tokio::test]
async fn a_refused_refresh_raises_needs_reauth_signed_and_without_a_token() {
    use skillbox_tests::oauth::{CLIENT_ID, CLIENT_SECRET, OAuthServer};
    let receiver = Receiver::start().await;
    let (oauth, refresh_token) = OAuthServer::start(Duration::from_secs(3600)).await;
    oauth.state.lock().unwrap().invalid_grant = true;
    let vault = TestVault::new();
    let expired_access = "at_expired_before_the_alert_test_began";
    let value = json!({
        "access_token": expired_access,
        "expires_at": 1,
        "refresh_token": refresh_token,
        "token_url": oauth.token_url(),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    });
    vault.add("github", "oauth2", &value.to_string());
    vault.grant("github-issues", "github", None);
    let (_skill_dir, manifest) = skillbox_tests::temp_skill(&format!(
        "[skill]\nname = \"github-issues\"\nversion = \"0.1.0\"\ncomponent = \"{{component:github-issues}}\"\n\
         [[credentials]]\nname = \"github\"\nkind = \"oauth2\"\nhosts = [\"{}\"]\n",
        oauth.server.host()
    ));
    let dir = tempfile::tempdir().unwrap();
    let skill = runtime(&dir, &receiver, &vault, "").load(&manifest).unwrap();

    let input = json!({ "owner": "o", "repo": "r", "base_url": oauth.server.base_url() }).to_string();
    let error = skill.invoke(&input).await.unwrap_err().to_string();
    assert!(error.contains("skillbox oauth login github"), "{error}");

    let alert = receiver.alert_of("needs-reauth").await;
    let body = &alert.body;
    assert_eq!(body["severity"], "warning", "{body}");
    assert_eq!(body["subject"]["credential"], "github", "{body}");
    assert_eq!(body["subject"]["skill"], "github-issues", "{body}");
    assert_eq!(body["subject"]["user"], "default", "{body}");
    assert_eq!(body["subject"]["environment"], "dev", "{body}");
    assert!(body["message"].as_str().unwrap().contains("invalid_grant"), "{body}");
    for secret in [refresh_token.as_str(), CLIENT_SECRET, expired_access] {
        assert_no_secret(&alert.request, secret);
    }
    // One refusal, one alert: no `refresh-failed` besides it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.alerts().len(), 1, "{:?}", receiver.alerts());

    // The alert is an audit row too, and no audit row holds a token.
    let query = AuditQuery { action: Some(AuditAction::Alert), ..AuditQuery::default() };
    let until = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = vault.vault.audit_list(&query).unwrap();
        if !rows.is_empty() || Instant::now() > until {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["kind"], "needs-reauth");
    let all = serde_json::to_string(&vault.vault.audit_list(&AuditQuery::default()).unwrap()).unwrap();
    for secret in [refresh_token.as_str(), CLIENT_SECRET, expired_access] {
        assert!(!all.contains(secret), "a token in the audit log");
    }
}
