//! A webhook receiver on loopback for alert tests: accepts every `POST`, and checks what
//! arrived as `docs/alerts.md` tells a receiver to (the `X-Skillbox-Signature` HMAC over
//! `timestamp.body` with the shared key), plus that no secret value is in it.
//!
//! ```no_run
//! # async fn demo() {
//! use skillbox_tests::webhook::Receiver;
//! let receiver = Receiver::start().await;
//! let dir = tempfile::tempdir().unwrap();
//! let config = receiver.write_config(dir.path(), ""); // skillbox.toml with [[alerts.webhook]]
//! // ... run something with SKILLBOX_CONFIG=config that raises an alert ...
//! let alert = receiver.alert_of("compromise").await; // signature verified, body parsed
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::server::{Received, Reply, TestServer};

/// The HMAC key the receiver shares with skillbox (written to `webhook.key` by
/// [`Receiver::write_config`]).
pub const KEY: &str = "integration-test-webhook-key-5f3a9c";

/// A running receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// The HTTP server: every request it got.
    pub server: TestServer,
}

/// One alert as the receiver got it: the request, and its body as JSON.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The request (headers, raw body).
    pub request: Received,
    /// The alert.
    pub body: Value,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 that answers every request `200`.
    pub async fn start() -> Receiver {
        let server = TestServer::start("127.0.0.1", |_req: &Received| Reply::json(200, json!({ "ok": true }))).await;
        Receiver { server }
    }

    /// `http://127.0.0.1:PORT/alerts`: where the webhook points.
    pub fn url(&self) -> String {
        format!("{}/alerts", self.server.base_url())
    }

    /// Writes into `dir` a `skillbox.toml` holding `extra` (other settings, written first) and
    /// a webhook to this receiver whose key is in `webhook.key` beside it; returns its path.
    pub fn write_config(&self, dir: &Path, extra: &str) -> PathBuf {
        std::fs::write(dir.join("webhook.key"), format!("{KEY}\n")).expect("write webhook.key");
        let text = format!(
            "{extra}\n[[alerts.webhook]]\nurl = \"{}\"\nsecret_file = \"webhook.key\"\nretries = 2\nbackoff = \"50ms\"\n",
            self.url()
        );
        let file = dir.join("skillbox.toml");
        std::fs::write(&file, text).expect("write skillbox.toml");
        file
    }

    /// Every alert received so far, in order, each checked: a `POST` to `/alerts` whose
    /// signature verifies with [`KEY`], whose `X-Skillbox-Alert-Id` is the body's `id`, and
    /// whose body is JSON.
    pub fn alerts(&self) -> Vec<Delivered> {
        self.server
            .received()
            .into_iter()
            .map(|request| {
                assert_eq!((request.method.as_str(), request.target.as_str()), ("POST", "/alerts"));
                assert!(verified(&request), "the signature verifies with the shared key: {:?}", request.headers);
                let body: Value = serde_json::from_slice(&request.body).expect("the alert is JSON");
                assert_eq!(request.header("x-skillbox-alert-id"), body["id"].as_str(), "{body}");
                Delivered { request, body }
            })
            .collect()
    }

    /// The alerts of `kind` received so far.
    pub fn alerts_of(&self, kind: &str) -> Vec<Delivered> {
        self.alerts().into_iter().filter(|a| a.body["kind"] == kind).collect()
    }

    /// Waits (up to 20 s) for an alert of `kind`, checked as in [`Receiver::alerts`].
    pub async fn alert_of(&self, kind: &str) -> Delivered {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = self.alerts_of(kind).into_iter().next() {
                return found;
            }
            assert!(Instant::now() < until, "no `{kind}` alert arrived; got {:?}", self.server.received());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The receiver's check, as `docs/alerts.md` describes it: `X-Skillbox-Signature` is
/// `sha256=` and the hex HMAC-SHA256, under [`KEY`], of `X-Skillbox-Timestamp`, `.` and the raw
/// body; and the timestamp is recent.
pub fn verified(req: &Received) -> bool {
    let (Some(timestamp), Some(signature)) = (req.header("x-skillbox-timestamp"), req.header("x-skillbox-signature"))
    else {
        return false;
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if timestamp.parse::<u64>().map_or(true, |ts| ts.abs_diff(now) > 300) {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&req.body);
    signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Panics if `secret` (as is, hex-encoded or reversed) is anywhere in the request's body or
/// headers.
pub fn assert_no_secret(req: &Received, secret: &str) {
    let forms = [secret.to_owned(), hex::encode(secret), secret.chars().rev().collect()];
    let headers: String = req.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
    let body = String::from_utf8_lossy(&req.body);
    for form in forms {
        assert!(!body.contains(&form), "a secret is in the alert body: {body}");
        assert!(!headers.contains(&form), "a secret is in the alert headers");
    }
}
