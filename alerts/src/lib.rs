//! Raises operator alerts (tripwires, suspensions, denial bursts, first uses, refresh and
//! rotation trouble, compromise) to signed webhooks, commands, the log and the audit trail,
//! without ever blocking or failing the skill call that raised them.
//!
//! [`Alerts`] is built once from an [`AlertsConfig`] (the `[alerts]` table of
//! `skillbox.toml`) and shared (`Clone` is an `Arc` clone). [`Alerts::raise`] writes the log
//! line at once and queues the rest; a background thread with its own tokio runtime delivers
//! each alert to every sink that wants it (webhooks retried with backoff and jitter, commands
//! with a timeout) and records it as an `alert` audit row. The queue is bounded: when it is
//! full an alert is dropped, counted ([`AlertStats::dropped`]) and logged, never waited for.
//! When the last handle is dropped, deliveries in flight get [`AlertsConfig::drain`] to finish
//! (so `skillbox run` still delivers the tripwire it ends with).
//!
//! **No secret values.** An [`Alert`] holds names, counts and reasons, never a secret: the API
//! takes no secret type, and the host side builds alerts from its (redacted) audit events.
//!
//! ```no_run
//! use skillbox_alerts::{Alert, AlertKind, Alerts, AlertsConfig, Subject};
//!
//! let alerts = Alerts::new(AlertsConfig::default(), None)?;
//! alerts.raise(Alert::new(AlertKind::Compromise, Subject::credential("github"), "declared compromised"));
//! # Ok::<(), skillbox_alerts::Error>(())
//! ```
#![deny(missing_docs)]

mod alert;
pub mod config;
pub mod detect;
mod sinks;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use skillbox_vault::{AuditAction, AuditEvent, AuditQuery, CredentialRef, Vault};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

pub use alert::{Alert, AlertKind, Severity, Subject};
pub use config::{AlertsConfig, BurstConfig, CommandConfig, KeySource, WebhookConfig};
use detect::{CredentialKey, DenialBursts, FirstUse, UseRecord};
use sinks::Sink;
pub use sinks::{DeliveryReport, ID_HEADER, MIN_KEY_BYTES, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify};

/// Why alerts could not be set up. Delivery failures are not errors: they are logged and
/// counted, never returned to whoever raised the alert.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A webhook's HMAC key could not be read, or is too short.
    #[error("alerts: {what}: {reason}")]
    Key {
        /// Which source (`secret_file PATH`, `secret_env NAME`).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting is not valid.
    #[error("alerts: {0}")]
    Config(String),
    /// The HTTP client for webhooks could not be built.
    #[error("alerts: cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Writes an alert to the audit trail (as an `alert` row: kind and subject, never a secret).
pub trait AuditRecorder: Send + Sync + std::fmt::Debug {
    /// Records `alert`; the error is logged.
    fn record(&self, alert: &Alert) -> Result<(), String>;
}

/// Reads who has used a credential: the history [`detect::FirstUse`] is seeded from.
pub trait UseHistory: Send + Sync + std::fmt::Debug {
    /// The uses of `credential` recorded before `before`.
    fn uses(&self, credential: &CredentialKey, before: SystemTime) -> Result<Vec<UseRecord>, String>;
}

/// The vault as [`AuditRecorder`] and [`UseHistory`]: `alert` rows, and `use` rows read back.
#[derive(Debug, Clone)]
pub struct VaultAudit(pub Arc<Vault>);

/// Most `use` rows read to seed one credential's history (the most recent ones).
const MAX_HISTORY_ROWS: usize = 100_000;

impl AuditRecorder for VaultAudit {
    fn record(&self, alert: &Alert) -> Result<(), String> {
        let subject = &alert.subject;
        let mut event = AuditEvent::new(AuditAction::Alert, subject.user.clone().unwrap_or_else(|| "skillbox".into()));
        // The skill is named in `detail.subject`, not the row's skill column: an alert is not a
        // row the skill's invocation caused, and must not count against its per-invocation cap.
        event.credential = match (&subject.credential, &subject.user, &subject.environment) {
            (Some(name), Some(owner), Some(env)) => env.parse().ok().map(|environment| CredentialRef {
                owner: owner.clone(),
                environment,
                name: name.clone(),
            }),
            _ => None,
        };
        event.success = true;
        event.detail = serde_json::json!({
            "kind": alert.kind.as_str(),
            "severity": alert.severity.as_str(),
            "id": alert.id,
            "subject": subject,
        });
        self.0.record(&event).map_err(|e| e.to_string())
    }
}

impl UseHistory for VaultAudit {
    fn uses(&self, credential: &CredentialKey, before: SystemTime) -> Result<Vec<UseRecord>, String> {
        let query = AuditQuery {
            credential: Some(credential.name.clone()),
            action: Some(AuditAction::Use),
            until: Some(before),
            limit: Some(MAX_HISTORY_ROWS),
            ..AuditQuery::default()
        };
        let rows = self.0.audit_list(&query).map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .filter(|r| {
                r.owner.as_deref() == Some(&credential.owner)
                    && r.environment.map(|e| e.as_str()) == Some(credential.environment.as_str())
            })
            .map(|r| UseRecord {
                skill: r.skill,
                host: r.detail.get("host").and_then(|h| h.as_str()).map(str::to_owned),
                user: Some(r.actor),
            })
            .collect())
    }
}

/// Counters since the [`Alerts`] was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlertStats {
    /// Alerts raised (logged).
    pub raised: u64,
    /// Alerts dropped because the queue was full.
    pub dropped: u64,
    /// Deliveries that succeeded (one per alert and sink).
    pub delivered: u64,
    /// Deliveries that failed after their retries.
    pub failed: u64,
    /// Alerts whose audit row could not be written.
    pub audit_failures: u64,
}

/// Most deliveries in flight at once; the worker waits for a slot (and the queue fills).
const MAX_IN_FLIGHT: usize = 64;
/// Most `first-use` alerts sent per credential per hour; more are only logged (a skill with a
/// wildcard host grant must not turn new hosts into a flood of alerts and audit rows).
const MAX_FIRST_USES_PER_HOUR: u32 = 20;

enum Job {
    Alert(Alert),
    Use { credential: CredentialKey, record: UseRecord, at: SystemTime },
}

#[derive(Debug)]
struct Shared {
    sinks: Vec<Sink>,
    client: reqwest::Client,
    recorder: Option<Arc<dyn AuditRecorder>>,
    history: Option<Arc<dyn UseHistory>>,
    raised: AtomicU64,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Jobs queued and deliveries in flight.
    pending: AtomicUsize,
    /// Audit rows that could not be written (the first failure is logged as an error, the
    /// rest at debug level: one broken vault must not flood the log).
    audit_failures: AtomicU64,
}

/// Decrements `pending` when a job or delivery is done, however it ends.
struct Pending(Arc<Shared>);

impl Pending {
    fn new(shared: &Arc<Shared>) -> Pending {
        shared.pending.fetch_add(1, Ordering::SeqCst);
        Pending(shared.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Worker {
    tx: mpsc::Sender<(Job, Pending)>,
    done: Mutex<std::sync::mpsc::Receiver<()>>,
}

struct Inner {
    shared: Arc<Shared>,
    queue: usize,
    drain: Duration,
    first_use: bool,
    bursts: Mutex<DenialBursts>,
    worker: OnceLock<Option<Worker>>,
}

/// The alert raiser: cheap to clone and share. See the [crate docs](crate).
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").field("sinks", &self.sink_names()).field("stats", &self.stats()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Alerts {
    /// Alerts with the sinks in `config`; with a vault, each alert is also an `alert` audit
    /// row and first uses are checked against the vault's `use` rows. Reads the webhooks' keys.
    pub fn new(config: AlertsConfig, vault: Option<Arc<Vault>>) -> Result<Alerts, Error> {
        let audit = vault.map(|v| Arc::new(VaultAudit(v)));
        let recorder = audit.clone().map(|a| a as Arc<dyn AuditRecorder>);
        let history = audit.map(|a| a as Arc<dyn UseHistory>);
        Alerts::with_hooks(config, recorder, history)
    }

    /// Like [`Alerts::new`], with any audit recorder and use history.
    pub fn with_hooks(
        config: AlertsConfig,
        recorder: Option<Arc<dyn AuditRecorder>>,
        history: Option<Arc<dyn UseHistory>>,
    ) -> Result<Alerts, Error> {
        if config.queue == 0 {
            return Err(Error::Config("[alerts] queue must be at least 1".into()));
        }
        let mut sinks = Vec::new();
        for webhook in config.webhooks {
            sinks.push(Sink::webhook(webhook)?);
        }
        for command in config.commands {
            sinks.push(Sink::command(command)?);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("skillbox-alerts/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        let shared = Arc::new(Shared {
            sinks,
            client,
            recorder,
            history,
            raised: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            audit_failures: AtomicU64::new(0),
        });
        Ok(Alerts {
            inner: Arc::new(Inner {
                shared,
                queue: config.queue,
                drain: config.drain,
                first_use: config.first_use,
                bursts: Mutex::new(DenialBursts::new(config.burst.count, config.burst.window)),
                worker: OnceLock::new(),
            }),
        })
    }

    /// Alerts that only log (no sinks, no audit rows).
    pub fn log_only() -> Alerts {
        Alerts::with_hooks(AlertsConfig::default(), None, None).expect("the default config is valid")
    }

    /// The configured sinks (`webhook https://host/…`, `command /path`), the log not included.
    pub fn sink_names(&self) -> Vec<String> {
        self.inner.shared.sinks.iter().map(|s| s.name().to_owned()).collect()
    }

    /// The counters so far.
    pub fn stats(&self) -> AlertStats {
        let s = &self.inner.shared;
        AlertStats {
            raised: s.raised.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            audit_failures: s.audit_failures.load(Ordering::Relaxed),
        }
    }

    /// Raises `alert`: logs it now, and queues its delivery and audit row. Never blocks, never
    /// fails: a full queue drops the alert (counted, and logged).
    pub fn raise(&self, alert: Alert) {
        let shared = &self.inner.shared;
        shared.raised.fetch_add(1, Ordering::Relaxed);
        log_alert(&alert);
        if shared.sinks.is_empty() && shared.recorder.is_none() {
            return;
        }
        self.enqueue(Job::Alert(alert));
    }

    /// Notes a denial met by `skill` running for `user`; raises `denial-burst` when it
    /// completes a burst (per skill, per user; one alert per window each).
    pub fn note_denial(&self, skill: &str, user: &str) {
        let bursts = lock(&self.inner.bursts).record(skill, user, Instant::now());
        for burst in bursts {
            let minutes = humantime::format_duration(burst.window);
            let mut subject = Subject::default();
            match &burst.key {
                detect::BurstKey::Skill(s) => subject.skill = Some(s.clone()),
                detect::BurstKey::User(u) => subject.user = Some(u.clone()),
            }
            let message =
                format!("{} denials within {minutes} for {} `{}`", burst.count, burst.key.scope(), burst.key.name());
            let detail = serde_json::json!({
                "scope": burst.key.scope(),
                "count": burst.count,
                "window_secs": burst.window.as_secs(),
                "last_skill": skill,
                "last_user": user,
            });
            self.raise(Alert::new(AlertKind::DenialBurst, subject, message).detail(detail));
        }
    }

    /// Notes a successful use of `credential` by `record`'s skill, host and user, made at `at`
    /// (taken before its `use` row was written); raises `first-use` for parties it had never
    /// been used by. The check (and the history it needs) runs in the background.
    pub fn note_use(&self, credential: CredentialKey, record: UseRecord, at: SystemTime) {
        if self.inner.first_use {
            self.enqueue(Job::Use { credential, record, at });
        }
    }

    /// Delivers `alert` to every sink now (not queued, nothing dropped, no audit row) and says
    /// how each delivery went: what `skillbox alerts test` prints. The log is always first.
    pub async fn deliver_now(&self, alert: &Alert) -> Vec<DeliveryReport> {
        log_alert(alert);
        let mut reports =
            vec![DeliveryReport { sink: "log".into(), ok: true, attempts: 1, ..DeliveryReport::default() }];
        if let Some(recorder) = &self.inner.shared.recorder {
            let recorded = recorder.record(alert);
            reports.push(DeliveryReport {
                sink: "audit".into(),
                ok: recorded.is_ok(),
                attempts: 1,
                error: recorded.err(),
                ..DeliveryReport::default()
            });
        }
        let body = alert.to_json().into_bytes();
        let shared = &self.inner.shared;
        let deliveries = shared.sinks.iter().map(|sink| sink.deliver(&shared.client, alert, &body));
        reports.extend(futures_util::future::join_all(deliveries).await);
        reports
    }

    /// Waits until every queued alert is delivered (or has failed), up to `timeout`. True if
    /// nothing is left.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if self.inner.shared.pending.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn enqueue(&self, job: Job) {
        let Some(worker) = self.inner.worker() else { return };
        let shared = &self.inner.shared;
        match worker.tx.try_send((job, Pending::new(shared))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((job, _))) => {
                let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let what = match &job {
                    Job::Alert(a) => format!("alert {} ({})", a.kind, a.subject.describe()),
                    Job::Use { credential, .. } => format!("first-use check for credential {}", credential.name),
                };
                tracing::warn!(dropped, "alert queue full ({} waiting): dropped {what}", self.inner.queue);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn log_alert(alert: &Alert) {
    let subject = alert.subject.describe();
    let (kind, id) = (alert.kind.as_str(), alert.id.as_str());
    match alert.severity {
        Severity::Critical => tracing::error!(target: "alert", kind, id, subject, "{}", alert.message),
        Severity::Warning => tracing::warn!(target: "alert", kind, id, subject, "{}", alert.message),
        Severity::Info => tracing::info!(target: "alert", kind, id, subject, "{}", alert.message),
    }
}

impl Inner {
    /// The delivery worker, started on first use (a process that raises nothing starts no
    /// thread). `None` if the thread could not be started (then alerts are only logged).
    fn worker(&self) -> Option<&Worker> {
        self.worker
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel(self.queue);
                let (done_tx, done_rx) = std::sync::mpsc::channel();
                let shared = self.shared.clone();
                let spawned = std::thread::Builder::new().name("skillbox-alerts".into()).spawn(move || {
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt.block_on(work(shared, rx)),
                        Err(e) => tracing::error!("alerts: cannot start the delivery runtime: {e}"),
                    }
                    let _ = done_tx.send(());
                });
                match spawned {
                    Ok(_) => Some(Worker { tx, done: Mutex::new(done_rx) }),
                    Err(e) => {
                        tracing::error!("alerts: cannot start the delivery thread ({e}); alerts are only logged");
                        None
                    }
                }
            })
            .as_ref()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Some(Some(worker)) = self.worker.take() else { return };
        let Worker { tx, done } = worker;
        drop(tx);
        let waiting = self.shared.pending.load(Ordering::SeqCst);
        let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        if done.recv_timeout(self.drain).is_err() {
            let left = self.shared.pending.load(Ordering::SeqCst);
            tracing::warn!(
                "alerts: {left} deliveries (of {waiting}) still unfinished after {}; given up",
                humantime::format_duration(self.drain)
            );
        }
    }
}

/// The delivery loop: one job at a time from the queue, each delivery in a task of its own.
async fn work(shared: Arc<Shared>, mut rx: mpsc::Receiver<(Job, Pending)>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut first_use = FirstUse::new();
    let mut first_use_budget: std::collections::HashMap<CredentialKey, (Instant, u32)> = Default::default();
    while let Some((job, _pending)) = rx.recv().await {
        while tasks.try_join_next().is_some() {}
        match job {
            Job::Alert(alert) => dispatch(&shared, &permits, &mut tasks, alert).await,
            Job::Use { credential, record, at } => {
                let key = credential.clone();
                if let Some(alert) = check_first_use(&shared, &mut first_use, credential, record, at).await {
                    shared.raised.fetch_add(1, Ordering::Relaxed);
                    log_alert(&alert);
                    if first_use_budget.len() > 10_000 {
                        first_use_budget.clear();
                    }
                    let (start, sent) = first_use_budget.entry(key).or_insert((Instant::now(), 0));
                    if start.elapsed() >= Duration::from_secs(3600) {
                        (*start, *sent) = (Instant::now(), 0);
                    }
                    *sent += 1;
                    if *sent <= MAX_FIRST_USES_PER_HOUR {
                        dispatch(&shared, &permits, &mut tasks, alert).await;
                    } else if *sent == MAX_FIRST_USES_PER_HOUR + 1 {
                        tracing::warn!(
                            credential = alert.subject.credential,
                            "alerts: over {MAX_FIRST_USES_PER_HOUR} first uses of this credential within an hour; more are only logged"
                        );
                    }
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn dispatch(shared: &Arc<Shared>, permits: &Arc<Semaphore>, tasks: &mut JoinSet<()>, alert: Alert) {
    let alert = Arc::new(alert);
    let body: Arc<[u8]> = alert.to_json().into_bytes().into();
    if let Some(recorder) = &shared.recorder {
        let (recorder, alert, pending) = (recorder.clone(), alert.clone(), Pending::new(shared));
        let shared = shared.clone();
        tasks.spawn(async move {
            let id = alert.id.clone();
            let recorded = tokio::task::spawn_blocking(move || recorder.record(&alert)).await;
            let error = match recorded {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = error {
                if shared.audit_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(id, "alerts: could not write the alert's audit row: {e}");
                } else {
                    tracing::debug!(id, "alerts: could not write the alert's audit row: {e}");
                }
            }
            drop(pending);
        });
    }
    for index in 0..shared.sinks.len() {
        if !shared.sinks[index].wants(alert.severity) {
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (shared, alert, body, pending) = (shared.clone(), alert.clone(), body.clone(), Pending::new(shared));
        tasks.spawn(async move {
            let report = shared.sinks[index].deliver(&shared.client, &alert, &body).await;
            if report.ok {
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id = alert.id, kind = alert.kind.as_str(), "alert {report}");
            } else {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = alert.id, kind = alert.kind.as_str(), "alert not delivered: {report}");
            }
            drop((permit, pending));
        });
    }
}

async fn check_first_use(
    shared: &Arc<Shared>,
    tracker: &mut FirstUse,
    credential: CredentialKey,
    record: UseRecord,
    at: SystemTime,
) -> Option<Alert> {
    if !tracker.is_seeded(&credential)
        && let Some(history) = &shared.history
    {
        let (history, key) = (history.clone(), credential.clone());
        match tokio::task::spawn_blocking(move || history.uses(&key, at)).await {
            Ok(Ok(rows)) => tracker.seed(&credential, rows),
            Ok(Err(e)) => {
                tracing::warn!(
                    credential = credential.name,
                    "alerts: cannot read its use history, first use not checked: {e}"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(credential = credential.name, "alerts: reading its use history failed: {e}");
                return None;
            }
        }
    }
    let new = tracker.observe(&credential, &record);
    if new.is_empty() {
        return None;
    }
    let named: Vec<String> = new.iter().map(|p| format!("{} `{}`", p.scope(), p.name())).collect();
    let message = format!("credential `{}` used for the first time by {}", credential.name, named.join(", "));
    let subject = Subject {
        skill: record.skill.clone(),
        credential: Some(credential.name.clone()),
        user: Some(credential.owner.clone()),
        environment: Some(credential.environment.clone()),
        host: record.host.clone(),
    };
    let detail = serde_json::json!({
        "new": new.iter().map(|p| serde_json::json!({ "scope": p.scope(), "name": p.name() })).collect::<Vec<_>>(),
        "actor": record.user,
    });
    Some(Alert::new(AlertKind::FirstUse, subject, message).detail(detail))
}
