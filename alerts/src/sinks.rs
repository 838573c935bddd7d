//! Delivering one alert to one sink: a signed webhook POST (with retries) or a command.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use serde::Serialize;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use crate::config::{CommandConfig, KeySource, WebhookConfig};
use crate::{Alert, Error, Severity};

/// Header carrying the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Skillbox-Timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>`.
pub const SIGNATURE_HEADER: &str = "X-Skillbox-Signature";
/// Header carrying the alert's id (the same on every retry).
pub const ID_HEADER: &str = "X-Skillbox-Alert-Id";
/// Shortest HMAC key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest a retry waits.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The signature header's value for `body` sent at `timestamp` (Unix seconds, as text).
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header against `body` and `timestamp` in constant time (what a receiver
/// written in Rust does; `docs/alerts.md` has the same in Python and shell).
pub fn verify(key: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_mac) = signature.strip_prefix("sha256=") else { return false };
    let Ok(given) = hex::decode(hex_mac) else { return false };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Reads a webhook key from its source: a file (one trailing newline dropped) or an
/// environment variable. At least [`MIN_KEY_BYTES`].
pub(crate) fn load_key(source: &KeySource) -> Result<Zeroizing<Vec<u8>>, Error> {
    let (what, mut key) = match source {
        KeySource::File(path) => {
            let what = format!("secret_file {}", path.display());
            let bytes = std::fs::read(path).map_err(|e| Error::Key { what: what.clone(), reason: e.to_string() })?;
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "{what} can be read by other users (mode {:o}); `chmod 600` it",
                        meta.permissions().mode() & 0o777
                    );
                }
            }
            (what, Zeroizing::new(bytes))
        }
        KeySource::Env(name) => {
            let what = format!("secret_env {name}");
            let value = std::env::var_os(name)
                .ok_or_else(|| Error::Key { what: what.clone(), reason: "the variable is not set".into() })?;
            (what, Zeroizing::new(value.into_encoded_bytes()))
        }
    };
    for ending in [&b"\r\n"[..], b"\n"] {
        if key.ends_with(ending) {
            let len = key.len() - ending.len();
            key.truncate(len);
            break;
        }
    }
    if key.len() < MIN_KEY_BYTES {
        return Err(Error::Key {
            what,
            reason: format!(
                "the key is {} bytes; use at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                key.len()
            ),
        });
    }
    Ok(key)
}

/// A webhook URL for logs and reports: its origin, and `/…` for a path, which may hold a
/// token of its own (chat webhooks put one there).
pub(crate) fn describe_url(url: &url::Url) -> String {
    let origin = url.origin().ascii_serialization();
    if url.path() == "/" && url.query().is_none() { origin } else { format!("{origin}/…") }
}

/// A configured sink, ready to deliver.
pub(crate) enum Sink {
    Webhook { config: WebhookConfig, key: Zeroizing<Vec<u8>>, name: String },
    Command { config: CommandConfig, name: String },
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Sink {
    pub(crate) fn webhook(config: WebhookConfig) -> Result<Sink, Error> {
        let key = load_key(&config.key)?;
        let name = format!("webhook {}", describe_url(&config.url));
        Ok(Sink::Webhook { config, key, name })
    }

    pub(crate) fn command(config: CommandConfig) -> Result<Sink, Error> {
        let Some(program) = config.argv.first().filter(|p| !p.is_empty()) else {
            return Err(Error::Config("[[alerts.command]] argv must name a program".into()));
        };
        let name = format!("command {program}");
        Ok(Sink::Command { config, name })
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Sink::Webhook { name, .. } | Sink::Command { name, .. } => name,
        }
    }

    pub(crate) fn wants(&self, severity: Severity) -> bool {
        let min = match self {
            Sink::Webhook { config, .. } => config.min_severity,
            Sink::Command { config, .. } => config.min_severity,
        };
        severity >= min
    }

    pub(crate) async fn deliver(&self, client: &reqwest::Client, alert: &Alert, body: &[u8]) -> DeliveryReport {
        let started = Instant::now();
        let mut report = match self {
            Sink::Webhook { config, key, .. } => post(client, config, key, alert, body).await,
            Sink::Command { config, .. } => run(config, alert, body).await,
        };
        report.sink = self.name().to_owned();
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        report
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryReport {
    /// Which sink (`webhook https://host/…`, `command /path`, `log`).
    pub sink: String,
    /// Delivered.
    pub ok: bool,
    /// Attempts made (webhooks retry).
    pub attempts: u32,
    /// The last HTTP status (webhooks) or exit code (commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, retries included.
    pub elapsed_ms: u64,
}

impl std::fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tries = if self.attempts == 1 { "1 attempt".to_owned() } else { format!("{} attempts", self.attempts) };
        let status = self.status.map(|s| format!(" ({s})")).unwrap_or_default();
        match (&self.error, self.ok) {
            (_, true) if self.sink == "log" => write!(f, "log: written"),
            (_, true) => write!(f, "{}: delivered{status} after {tries} in {} ms", self.sink, self.elapsed_ms),
            (Some(e), false) => write!(f, "{}: FAILED after {tries} in {} ms: {e}", self.sink, self.elapsed_ms),
            (None, false) => write!(f, "{}: FAILED{status} after {tries}", self.sink),
        }
    }
}

fn unix_now() -> String {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0).to_string()
}

/// The wait before retry number `retry` (1-based): `base * 2^(retry-1)`, capped, with jitter
/// (a random point in its upper half), so many senders do not retry in step.
pub(crate) fn backoff(base: Duration, retry: u32) -> Duration {
    let full = base.saturating_mul(1u32 << retry.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(rand::rng().random_range(0.0..=1.0))
}

fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429
}

async fn post(
    client: &reqwest::Client,
    config: &WebhookConfig,
    key: &[u8],
    alert: &Alert,
    body: &[u8],
) -> DeliveryReport {
    let mut report = DeliveryReport::default();
    for attempt in 1..=config.retries.saturating_add(1) {
        if attempt > 1 {
            tokio::time::sleep(backoff(config.backoff, attempt - 1)).await;
        }
        report.attempts = attempt;
        // Signed afresh each time: receivers may refuse old timestamps.
        let timestamp = unix_now();
        let request = client
            .post(config.url.clone())
            .timeout(config.timeout)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, sign(key, &timestamp, body))
            .header(ID_HEADER, &alert.id)
            .body(body.to_vec());
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                report.status = Some(status.as_u16() as i32);
                if status.is_success() {
                    report.ok = true;
                    report.error = None;
                    return report;
                }
                report.error = Some(format!("the receiver answered {status}"));
                if !retryable(status) {
                    return report;
                }
            }
            // Without the URL: its path may hold a token.
            Err(e) => report.error = Some(error_chain(&e.without_url())),
        }
    }
    report
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

/// Environment variables a command keeps; everything else (a master key in
/// `SKILLBOX_MASTER_KEY`, say) is cleared.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

async fn run(config: &CommandConfig, alert: &Alert, body: &[u8]) -> DeliveryReport {
    let mut report = DeliveryReport { attempts: 1, ..DeliveryReport::default() };
    let mut command = tokio::process::Command::new(&config.argv[0]);
    command
        .args(&config.argv[1..])
        .env_clear()
        .envs(KEPT_ENV.iter().filter_map(|k| std::env::var_os(k).map(|v| (k, v))))
        .env("SKILLBOX_ALERT_ID", &alert.id)
        .env("SKILLBOX_ALERT_KIND", alert.kind.as_str())
        .env("SKILLBOX_ALERT_SEVERITY", alert.severity.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            report.error = Some(format!("cannot start it: {e}"));
            return report;
        }
    };
    let mut stdin = child.stdin.take();
    let body = body.to_vec();
    let outcome = tokio::time::timeout(config.timeout, async move {
        if let Some(stdin) = &mut stdin {
            // A program that does not read its input may close it early: not an error.
            let _ = stdin.write_all(&body).await;
            let _ = stdin.shutdown().await;
        }
        drop(stdin);
        child.wait_with_output().await
    })
    .await;
    match outcome {
        Err(_) => report.error = Some(format!("still running after {:?}: killed", config.timeout)),
        Ok(Err(e)) => report.error = Some(format!("waiting for it: {e}")),
        Ok(Ok(output)) => {
            report.status = output.status.code();
            if output.status.success() {
                report.ok = true;
            } else {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let stderr = stderr.trim();
                let stderr: String = stderr.chars().take(500).collect();
                report.error = Some(if stderr.is_empty() {
                    format!("it exited with {}", output.status)
                } else {
                    format!("it exited with {}: {stderr}", output.status)
                });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_same_key_only() {
        let key = b"0123456789abcdef0123";
        let sig = sign(key, "1700000000", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(key, "1700000000", b"{\"a\":1}", &sig));
        assert!(!verify(key, "1700000001", b"{\"a\":1}", &sig));
        assert!(!verify(key, "1700000000", b"{\"a\":2}", &sig));
        assert!(!verify(b"another key, long enough", "1700000000", b"{\"a\":1}", &sig));
    }

    #[test]
    fn keys_come_from_files_or_the_environment_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        assert_eq!(&**load_key(&KeySource::File(path.clone())).unwrap(), b"0123456789abcdef");
        std::fs::write(&path, "short\n").unwrap();
        let err = load_key(&KeySource::File(path)).unwrap_err().to_string();
        assert!(err.contains("5 bytes"), "{err}");
        let err = load_key(&KeySource::File(dir.path().join("missing"))).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        let err = load_key(&KeySource::Env("SKILLBOX_ALERTS_TEST_UNSET_VARIABLE".into())).unwrap_err().to_string();
        assert!(err.contains("not set"), "{err}");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for retry in 1..=4 {
            let full = base * (1 << (retry - 1));
            let d = backoff(base, retry);
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
        assert!(backoff(base, 40) <= MAX_BACKOFF);
    }

    #[test]
    fn urls_are_shown_without_their_path() {
        let url: url::Url = "https://hooks.example.com/services/T0/B0/secretpart".parse().unwrap();
        assert_eq!(describe_url(&url), "https://hooks.example.com/…");
        let url: url::Url = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(describe_url(&url), "http://127.0.0.1:8080");
    }
}
