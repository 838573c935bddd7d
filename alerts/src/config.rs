//! Where alerts go, as the operator configured it (`[alerts]` in `skillbox.toml`; the runtime
//! parses the file and builds an [`AlertsConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::Severity;

/// The alert settings. The default has no sinks but the log (and the audit trail, when a
/// vault is given).
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Webhooks (`[[alerts.webhook]]`).
    pub webhooks: Vec<WebhookConfig>,
    /// Commands (`[[alerts.command]]`).
    pub commands: Vec<CommandConfig>,
    /// What counts as a burst of denials (`[alerts] burst`).
    pub burst: BurstConfig,
    /// Raise `first-use` alerts (`[alerts] first_use`, default true).
    pub first_use: bool,
    /// Most alerts waiting for delivery (`[alerts] queue`); more are dropped and counted.
    pub queue: usize,
    /// How long a process that is finishing waits for deliveries still in flight
    /// (`[alerts] drain`).
    pub drain: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhooks: Vec::new(),
            commands: Vec::new(),
            burst: BurstConfig::default(),
            first_use: true,
            queue: 1024,
            drain: Duration::from_secs(5),
        }
    }
}

/// `count` denials within `window` (per skill, and per user) is a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstConfig {
    /// Denials (at least 1).
    pub count: u32,
    /// Within this long.
    pub window: Duration,
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig { count: 10, window: Duration::from_secs(5 * 60) }
    }
}

/// Where a webhook's HMAC key comes from: never the config text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding the key (one trailing newline is ignored).
    File(PathBuf),
    /// An environment variable holding the key.
    Env(String),
}

/// One webhook: alerts are POSTed to `url` as JSON, signed with the key.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `https://...` (or `http://` for a receiver on the same machine).
    pub url: url::Url,
    /// The HMAC-SHA256 key's source.
    pub key: KeySource,
    /// Retries after the first attempt on a network error, a timeout, 408, 429 or 5xx.
    pub retries: u32,
    /// The limit on one attempt (connecting, sending, reading the answer).
    pub timeout: Duration,
    /// The delay before the first retry; it doubles each time (up to a minute), with jitter.
    pub backoff: Duration,
    /// Only alerts at least this severe.
    pub min_severity: Severity,
}

impl WebhookConfig {
    /// Default retries.
    pub const DEFAULT_RETRIES: u32 = 5;
    /// Most retries allowed.
    pub const MAX_RETRIES: u32 = 20;
    /// Default attempt timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default first backoff.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

    /// A webhook to `url` with the defaults (5 retries, 10 s, 1 s backoff, every severity).
    pub fn new(url: url::Url, key: KeySource) -> WebhookConfig {
        WebhookConfig {
            url,
            key,
            retries: Self::DEFAULT_RETRIES,
            timeout: Self::DEFAULT_TIMEOUT,
            backoff: Self::DEFAULT_BACKOFF,
            min_severity: Severity::Info,
        }
    }
}

/// One command: run with the alert's JSON on stdin, no shell.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// The program (an absolute path, or a name looked up in `PATH`) and its arguments.
    pub argv: Vec<String>,
    /// Killed after this long.
    pub timeout: Duration,
    /// Only alerts at least this severe.
    pub min_severity: Severity,
}

impl CommandConfig {
    /// Default timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A command with the defaults (10 s, every severity).
    pub fn new(argv: Vec<String>) -> CommandConfig {
        CommandConfig { argv, timeout: Self::DEFAULT_TIMEOUT, min_severity: Severity::Info }
    }
}
