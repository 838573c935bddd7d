//! Alerts delivered to a real webhook receiver on loopback (axum) and to a real command.
//!
//! The receiver checks what an operator's would: the signature, with the same key, over the
//! timestamp and the exact body; the JSON; and that no secret value is in it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use skillbox_alerts::{
    Alert, AlertKind, Alerts, AlertsConfig, CommandConfig, KeySource, SIGNATURE_HEADER, Severity, Subject,
    TIMESTAMP_HEADER, WebhookConfig, verify,
};
use tokio::sync::{Notify, mpsc};

const KEY: &str = "test-webhook-key-0123456789abcdef";

#[derive(Debug, Clone)]
struct Delivery {
    headers: HeaderMap,
    body: Bytes,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// Checks the signature as a receiver does, with the same key.
    fn verified(&self) -> bool {
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        verify(KEY.as_bytes(), header(TIMESTAMP_HEADER), &self.body, header(SIGNATURE_HEADER))
    }
}

#[derive(Debug, Default)]
struct Receiver {
    received: Mutex<Vec<Delivery>>,
    /// Statuses to answer, in order; 200 once they run out.
    script: Mutex<VecDeque<u16>>,
    /// When set, every request waits for `release` before it is answered.
    stall: AtomicBool,
    release: Notify,
    answered: AtomicBool,
    arrived: Mutex<Option<mpsc::UnboundedSender<()>>>,
}

async fn hook(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.received.lock().unwrap().push(Delivery { headers, body });
    if let Some(tx) = &*rx.arrived.lock().unwrap() {
        let _ = tx.send(());
    }
    if rx.stall.load(Ordering::SeqCst) {
        rx.release.notified().await;
    }
    rx.answered.store(true, Ordering::SeqCst);
    let status = rx.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// A receiver on 127.0.0.1; returns it and its URL.
async fn receiver() -> (Arc<Receiver>, url::Url) {
    let state = Arc::new(Receiver::default());
    let app = Router::new().route("/hook", axum::routing::post(hook)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap()).parse().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, url)
}

/// A config with one webhook to `url`, its key in a file in `dir`, fast retries.
fn webhook_config(dir: &tempfile::TempDir, url: url::Url) -> AlertsConfig {
    let key_file = dir.path().join("webhook.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut hook = WebhookConfig::new(url, KeySource::File(key_file));
    hook.backoff = Duration::from_millis(10);
    hook.timeout = Duration::from_secs(5);
    AlertsConfig { webhooks: vec![hook], ..AlertsConfig::default() }
}

#[tokio::test]
async fn a_signed_alert_reaches_the_webhook_without_the_secret() {
    let (rx, url) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let alerts = Alerts::new(webhook_config(&dir, url), None).unwrap();
    // A credential whose secret the test knows; the alert names it, and must not carry it.
    let secret = "ghp_0123456789abcdefSECRETVALUE";
    let subject = Subject {
        skill: Some("github-issues".into()),
        credential: Some("github".into()),
        user: Some("default".into()),
        environment: Some("dev".into()),
        host: Some("api.github.com".into()),
    };
    alerts.raise(
        Alert::new(AlertKind::Compromise, subject.clone(), "credential `github` declared compromised")
            .detail(json!({ "reason": "leaked in a paste", "grants_suspended": 2 })),
    );
    assert!(alerts.flush(Duration::from_secs(10)).await, "delivered in time");
    let received = rx.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let delivery = &received[0];
    assert!(delivery.verified(), "the signature verifies with the shared key");
    assert_eq!(delivery.headers["content-type"], "application/json");
    let body = delivery.json();
    assert_eq!(body["kind"], "compromise");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["subject"], serde_json::to_value(&subject).unwrap());
    assert_eq!(body["detail"]["grants_suspended"], 2);
    assert_eq!(delivery.headers["x-skillbox-alert-id"], body["id"].as_str().unwrap());
    assert!(!String::from_utf8_lossy(&delivery.body).contains(secret));
    for (name, value) in &delivery.headers {
        assert!(!value.to_str().unwrap_or_default().contains(secret), "{name}");
    }
    // A tampered body or another key does not verify.
    let mut tampered = delivery.clone();
    tampered.body = Bytes::from(String::from_utf8_lossy(&delivery.body).replace("critical", "info"));
    assert!(!tampered.verified());
    assert_eq!(alerts.stats().delivered, 1);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_answers() {
    let (rx, url) = receiver().await;
    rx.script.lock().unwrap().extend([500, 500]);
    let dir = tempfile::tempdir().unwrap();
    let alerts = Alerts::new(webhook_config(&dir, url), None).unwrap();
    alerts.raise(Alert::new(AlertKind::Tripwire, Subject::skill("exfiltrate"), "tripwire"));
    assert!(alerts.flush(Duration::from_secs(10)).await);
    let received = rx.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3, "two 500s, then the 200");
    let ids: Vec<Value> = received.iter().map(|d| d.json()["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one alert, retried (same id): {ids:?}");
    assert!(received.iter().all(Delivery::verified), "each attempt is signed");
    let stats = alerts.stats();
    assert_eq!((stats.delivered, stats.failed), (1, 0), "delivered once");
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_counts_as_failed() {
    let (rx, url) = receiver().await;
    rx.script.lock().unwrap().extend([401]);
    let dir = tempfile::tempdir().unwrap();
    let alerts = Alerts::new(webhook_config(&dir, url), None).unwrap();
    let reports = alerts.deliver_now(&Alert::new(AlertKind::Test, Subject::default(), "test")).await;
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0].sink, "log");
    let hook = &reports[1];
    assert!(!hook.ok && hook.attempts == 1 && hook.status == Some(401), "{hook:?}");
    assert!(hook.to_string().contains("FAILED"), "{hook}");
    assert_eq!(rx.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stalled_receiver_never_blocks_raise() {
    let (rx, url) = receiver().await;
    rx.stall.store(true, Ordering::SeqCst);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    *rx.arrived.lock().unwrap() = Some(arrived_tx);
    let dir = tempfile::tempdir().unwrap();
    let mut config = webhook_config(&dir, url);
    config.queue = 8;
    let alerts = Alerts::new(config, None).unwrap();
    // Far more alerts than the queue holds, all while the receiver sits on the first.
    for i in 0..200 {
        alerts.raise(Alert::new(AlertKind::DenialBurst, Subject::skill(format!("s{i}")), "burst"));
    }
    // Every raise returned, and the receiver has answered nothing yet.
    assert!(!rx.answered.load(Ordering::SeqCst), "raise returned only after the receiver answered");
    // The delivery is under way all the same: the first request has arrived (and waits).
    tokio::time::timeout(Duration::from_secs(10), arrived.recv()).await.expect("a request arrives").unwrap();
    assert!(!rx.answered.load(Ordering::SeqCst));
    let stats = alerts.stats();
    assert_eq!(stats.raised, 200);
    assert!(stats.dropped > 0, "a full queue drops alerts: {stats:?}");
    rx.stall.store(false, Ordering::SeqCst);
    rx.release.notify_waiters();
    assert!(alerts.flush(Duration::from_secs(20)).await);
    let stats = alerts.stats();
    assert_eq!(stats.delivered + stats.dropped, 200, "{stats:?}");
}

#[tokio::test]
async fn a_command_gets_the_alert_on_stdin_without_the_callers_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert.json");
    let env_out = dir.path().join("env.txt");
    let script = dir.path().join("on-alert.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncat > '{}'\nenv > '{}'\n", out.display(), env_out.display())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // SAFETY: set before any thread of this test reads the environment; other tests in this
    // binary do not read this variable.
    unsafe { std::env::set_var("SKILLBOX_MASTER_KEY_TEST_ONLY", "must-not-reach-the-command") };
    let config = AlertsConfig {
        commands: vec![CommandConfig::new(vec![script.display().to_string()])],
        ..AlertsConfig::default()
    };
    let alerts = Alerts::new(config, None).unwrap();
    alerts.raise(Alert::new(AlertKind::NeedsReauth, Subject::credential("google"), "log in again"));
    assert!(alerts.flush(Duration::from_secs(10)).await);
    let alert: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(alert["kind"], "needs-reauth");
    assert_eq!(alert["subject"]["credential"], "google");
    let env = std::fs::read_to_string(&env_out).unwrap();
    assert!(env.contains("SKILLBOX_ALERT_KIND=needs-reauth"), "{env}");
    assert!(!env.contains("must-not-reach-the-command"), "{env}");
    assert_eq!(alerts.stats().delivered, 1);

    // A command that fails or hangs is reported, and killed at its timeout.
    let mut hang = CommandConfig::new(vec!["/bin/sh".into(), "-c".into(), "sleep 30".into()]);
    hang.timeout = Duration::from_millis(200);
    let fail = CommandConfig::new(vec!["/bin/sh".into(), "-c".into(), "echo nope >&2; exit 3".into()]);
    let alerts = Alerts::new(AlertsConfig { commands: vec![hang, fail], ..AlertsConfig::default() }, None).unwrap();
    let reports = alerts.deliver_now(&Alert::new(AlertKind::Test, Subject::default(), "test")).await;
    assert!(!reports[1].ok && reports[1].error.as_deref().unwrap().contains("killed"), "{:?}", reports[1]);
    assert!(!reports[2].ok && reports[2].status == Some(3), "{:?}", reports[2]);
    assert!(reports[2].error.as_deref().unwrap().contains("nope"), "{:?}", reports[2]);
}

#[tokio::test]
async fn sinks_take_only_alerts_at_their_severity() {
    let (rx, url) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = webhook_config(&dir, url);
    config.webhooks[0].min_severity = Severity::Warning;
    let alerts = Alerts::new(config, None).unwrap();
    alerts.raise(Alert::new(AlertKind::FirstUse, Subject::credential("c"), "first use"));
    alerts.raise(Alert::new(AlertKind::Suspension, Subject::skill("s"), "suspended"));
    assert!(alerts.flush(Duration::from_secs(10)).await);
    let kinds: Vec<Value> = rx.received.lock().unwrap().iter().map(|d| d.json()["kind"].clone()).collect();
    assert_eq!(kinds, vec![json!("suspension")]);
}

#[tokio::test]
async fn denial_bursts_and_first_uses_become_alerts() {
    let (rx, url) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = webhook_config(&dir, url);
    config.burst.count = 3;
    let alerts = Alerts::new(config, None).unwrap();
    for _ in 0..5 {
        alerts.note_denial("prober", "mallory");
    }
    let credential = skillbox_alerts::detect::CredentialKey {
        owner: "default".into(),
        environment: "dev".into(),
        name: "github".into(),
    };
    let used = |host: &str| skillbox_alerts::detect::UseRecord {
        skill: Some("issues".into()),
        host: Some(host.into()),
        user: Some("ada".into()),
    };
    let now = std::time::SystemTime::now();
    alerts.note_use(credential.clone(), used("api.github.com"), now);
    alerts.note_use(credential.clone(), used("api.github.com"), now);
    alerts.note_use(credential, used("evil.example"), now);
    assert!(alerts.flush(Duration::from_secs(10)).await);
    let bodies: Vec<Value> = rx.received.lock().unwrap().iter().map(Delivery::json).collect();
    let of = |kind: &str| bodies.iter().filter(|b| b["kind"] == kind).cloned().collect::<Vec<_>>();
    let bursts = of("denial-burst");
    assert_eq!(bursts.len(), 2, "one per skill and one per user: {bursts:?}");
    let firsts = of("first-use");
    assert_eq!(firsts.len(), 2, "the first use, and the first by a new host: {firsts:?}");
    let evil = firsts.iter().find(|b| b["subject"]["host"] == "evil.example").expect("the new host's alert");
    assert_eq!(evil["detail"]["new"], json!([{ "scope": "host", "name": "evil.example" }]));
}
