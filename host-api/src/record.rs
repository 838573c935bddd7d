//! What one invocation records: its audit rows (under the per-invocation ledger), the
//! denials it met and the tripwire it hit.
//!
//! Shared (`Arc`) between the invocation's host state and its `wasi:http` requests, which the
//! host runs in tasks of their own: a use, a refusal or a tripwire in such a request is
//! recorded exactly as one in a host call, and the runtime sees it when the guest is done.
//!
//! It also raises the invocation's alerts (when the services have [`skillbox_alerts::Alerts`]):
//! `tripwire` and `suspension` from [`Recorder::trip`], denials (every one passes through
//! [`Recorder::deny`]) counted towards a `denial-burst`, and successful uses checked for a
//! `first-use`. Raising never blocks.
//!
//! And it keeps the ledger of the credential handles the invocation opened ([`HandleUse`]):
//! when each was opened, how many times it was used (counted in memory, as each `use` row is
//! written) and when it was let go, so [`Recorder::release_handles`] can write one `release`
//! row per handle when the invocation ends, however it ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use skillbox_alerts::{Alert, AlertKind, Subject};
use skillbox_egress::Redactor;
use skillbox_vault::{AuditAction, AuditEvent, CredentialRef};

use crate::error::{HostError, Tripped};
use crate::limits::AuditLedger;
use crate::{HostServices, Invocation};

/// The recording side of one invocation.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) invocation: Invocation,
    pub(crate) services: Arc<HostServices>,
    /// The audit rows this invocation caused, and the repeats folded into counts.
    ledger: Mutex<AuditLedger>,
    /// Set when the invocation tripped the wire; the runtime reports it instead of the trap.
    tripped: Mutex<Option<Tripped>>,
    /// Access decisions that went against the skill.
    denials: Mutex<Vec<String>>,
    /// Every credential handle opened in this invocation, in order (see [`HandleUse`]).
    handles: Mutex<Vec<Arc<HandleUse>>>,
}

/// One credential handle opened by an invocation: who it names, when it was opened, how many
/// times it was used, and when the guest dropped it (if it did). Shared by the handle and the
/// invocation's [`Recorder`], which writes its `release` row when the invocation ends.
#[derive(Debug)]
pub(crate) struct HandleUse {
    /// 1, 2, ...: the order in which the invocation opened its handles.
    number: usize,
    /// The name the skill declared and opened (a grant's alias).
    alias: String,
    /// The vault credential behind it.
    credential: CredentialRef,
    /// Opened by the host for `wasi:http` (a `transparent` credential), not by the guest.
    transparent: bool,
    opened_at: SystemTime,
    /// `use` rows written for it, and how many of those record a failure.
    uses: AtomicU64,
    failed: AtomicU64,
    /// When the guest dropped the handle; unset when it held it to the end.
    dropped_at: OnceLock<SystemTime>,
}

impl HandleUse {
    /// Counts one use (its `use` row is being written).
    pub(crate) fn count_use(&self, success: bool) {
        self.uses.fetch_add(1, Ordering::Relaxed);
        if !success {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes that the guest let go of the handle (the first time counts).
    pub(crate) fn dropped(&self) {
        let _ = self.dropped_at.set(SystemTime::now());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    pub(crate) fn new(invocation: Invocation, services: Arc<HostServices>) -> Recorder {
        Recorder {
            invocation,
            services,
            ledger: Mutex::default(),
            tripped: Mutex::default(),
            denials: Mutex::default(),
            handles: Mutex::default(),
        }
    }

    /// Starts the ledger of a handle opened now to the credential `credential`, declared as
    /// `alias`.
    pub(crate) fn track_handle(&self, alias: &str, credential: CredentialRef, transparent: bool) -> Arc<HandleUse> {
        let mut handles = lock(&self.handles);
        let handle = Arc::new(HandleUse {
            number: handles.len() + 1,
            alias: alias.to_owned(),
            credential,
            transparent,
            opened_at: SystemTime::now(),
            uses: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped_at: OnceLock::new(),
        });
        handles.push(Arc::clone(&handle));
        handle
    }

    /// Writes one `release` row for every handle the invocation opened: when it was opened,
    /// how many times it was used (and how many of those failed), when it was released (the
    /// guest's drop, else now: the end of the invocation) and how long it was held. Called once,
    /// when the invocation ends; each row was reserved when its handle was opened.
    pub(crate) fn release_handles(&self) {
        let handles = std::mem::take(&mut *lock(&self.handles));
        let now = SystemTime::now();
        for handle in handles {
            let (released_at, released_by) = match handle.dropped_at.get() {
                Some(at) => (*at, "guest"),
                None => (now, "end-of-invocation"),
            };
            let held_ms = released_at.duration_since(handle.opened_at).unwrap_or_default().as_millis() as u64;
            let uses = handle.uses.load(Ordering::Relaxed);
            let mut event = self.audit_event(AuditAction::Release, Some(&handle.alias), "credentials.release");
            event.credential = Some(handle.credential.clone());
            let detail = &mut event.detail;
            detail["handle"] = handle.number.into();
            detail["alias"] = handle.alias.clone().into();
            detail["transparent"] = handle.transparent.into();
            detail["uses"] = uses.into();
            detail["failed_uses"] = handle.failed.load(Ordering::Relaxed).into();
            detail["opened_at"] = rfc3339(handle.opened_at).into();
            detail["released_at"] = rfc3339(released_at).into();
            detail["held_ms"] = held_ms.into();
            detail["released_by"] = released_by.into();
            tracing::debug!(skill = %self.invocation.skill, credential = %handle.alias, uses, held_ms, "released credential handle");
            self.audit(event);
        }
    }

    /// The audit ledger.
    pub(crate) fn ledger(&self) -> MutexGuard<'_, AuditLedger> {
        lock(&self.ledger)
    }

    /// The tripwire hit so far, if any.
    pub(crate) fn tripped(&self) -> Option<Tripped> {
        lock(&self.tripped).clone()
    }

    /// The denials so far.
    pub(crate) fn denials(&self) -> Vec<String> {
        lock(&self.denials).clone()
    }

    /// Notes a denial for the runtime's exit status (already audited elsewhere), and counts
    /// it towards a `denial-burst` alert. Every denial passes here once ([`Self::record_denial`]
    /// included; the same refusal repeated within an invocation is folded, as in the audit log).
    pub(crate) fn deny(&self, message: String) {
        if let Some(alerts) = &self.services.alerts {
            alerts.note_denial(&self.invocation.skill, &self.invocation.user);
        }
        lock(&self.denials).push(message);
    }

    /// Records a tripwire: an audit row (which may suspend the skill's grants) and the state
    /// the runtime reports. The caller ends the invocation. Only the first one is recorded.
    pub(crate) fn trip(&self, channel: &str, credential: &str, view: &str) -> Tripped {
        let mut tripped = lock(&self.tripped);
        if let Some(existing) = &*tripped {
            return existing.clone();
        }
        let inv = &self.invocation;
        let credential = (!credential.is_empty()).then(|| credential.to_owned());
        tracing::error!(skill = %inv.skill, channel, credential, view, "tripwire: the skill tried to pass on a secret");
        let mut event = self.audit_event(AuditAction::Tripwire, credential.as_deref(), channel);
        event.success = false;
        event.detail["channel"] = channel.into();
        event.detail["view"] = view.into();
        event.detail["digest"] = inv.digest.to_string().into();
        let mut suspended = Vec::new();
        let mut outcome = None;
        // Recorded whatever the row cap: it ends the invocation, so it happens once.
        self.ledger().count_row();
        if let Some(vault) = &self.services.vault {
            let scan = &self.services.scan;
            match vault.record_tripwire(&event, scan.tripwire_threshold, scan.tripwire_window) {
                Ok(found) => {
                    suspended = found.suspended.iter().map(|g| g.alias.clone()).collect();
                    if !suspended.is_empty() {
                        tracing::error!(skill = %inv.skill, count = found.count, "grants suspended after repeated tripwires");
                    }
                    outcome = Some(found);
                }
                Err(e) => tracing::error!(skill = %inv.skill, "could not record the tripwire: {e}"),
            }
        }
        let hit = Tripped { channel: channel.to_owned(), credential, view: view.to_owned(), suspended };
        self.alert_tripwire(&hit, outcome.as_ref());
        // Not a denial for bursts: the tripwire raised its own alert.
        lock(&self.denials).push(hit.to_string());
        *tripped = Some(hit.clone());
        hit
    }

    /// Raises `tripwire` for `hit`, and `suspension` when it suspended grants. Names only: the
    /// channel, the view, the declared credential, never what was sent.
    fn alert_tripwire(&self, hit: &Tripped, outcome: Option<&skillbox_vault::TripwireOutcome>) {
        let Some(alerts) = &self.services.alerts else { return };
        let inv = &self.invocation;
        let subject = Subject {
            skill: Some(inv.skill.to_string()),
            credential: hit.credential.clone(),
            user: Some(inv.user.clone()),
            environment: Some(inv.environment.as_str().to_owned()),
            host: None,
        };
        let count = outcome.map(|o| o.count);
        let what = hit.credential.as_deref().map(|c| format!(" (credential `{c}`)")).unwrap_or_default();
        let message = format!(
            "skill `{}` tried to pass on a secret{what} through {} ({} view); the invocation was ended",
            inv.skill, hit.channel, hit.view
        );
        let detail = serde_json::json!({
            "channel": hit.channel,
            "view": hit.view,
            "digest": inv.digest.to_string(),
            "tripwires_in_window": count,
            "threshold": self.services.scan.tripwire_threshold,
            "window_secs": self.services.scan.tripwire_window.as_secs(),
            "suspended": hit.suspended,
        });
        alerts.raise(Alert::new(AlertKind::Tripwire, subject.clone(), message).detail(detail));
        let Some(outcome) = outcome.filter(|o| !o.suspended.is_empty()) else { return };
        let grants: Vec<&str> = outcome.suspended.iter().map(|g| g.alias.as_str()).collect();
        let message = format!(
            "skill `{}` lost its grants of {} after {} tripwires within {}; `skillbox grant` re-enables them",
            inv.skill,
            grants.join(", "),
            outcome.count,
            humantime_secs(self.services.scan.tripwire_window.as_secs()),
        );
        let detail = serde_json::json!({
            "grants": grants,
            "tripwires": outcome.count,
            "digest": inv.digest.to_string(),
            "regrant": outcome.suspended.iter().map(|g| g.grant_command()).collect::<Vec<_>>(),
        });
        let subject = Subject { credential: None, ..subject };
        alerts.raise(Alert::new(AlertKind::Suspension, subject, message).detail(detail));
    }

    /// Audits a secret or foreign token found in `channel` (no value, ever); the same finding
    /// again in this invocation is only counted (see [`limits`](crate::limits)).
    pub(crate) fn record_leak(
        &self,
        channel: &str,
        credential: Option<&str>,
        view: &str,
        rule: Option<&str>,
        action: &str,
    ) {
        let mut event = self.audit_event(AuditAction::Leak, credential, channel);
        event.detail["channel"] = channel.into();
        event.detail["view"] = view.into();
        event.detail["action"] = action.into();
        if let Some(rule) = rule {
            event.detail["rule"] = rule.into();
        }
        if self.audit_once(event) {
            tracing::warn!(skill = %self.invocation.skill, channel, view, rule, action, "secret found in skill traffic");
        }
    }

    /// Notes a denial (for the runtime's exit status) and audits it when a vault is present;
    /// the same denial again in this invocation is only counted (see [`limits`](crate::limits)).
    pub(crate) fn record_denial(
        &self,
        redactor: &Redactor,
        credential: Option<&str>,
        operation: &str,
        error: &HostError,
    ) {
        let event = self.denial_event(redactor, credential, operation, &error.message());
        let message = event.error.clone().unwrap_or_default();
        if self.audit_once(event) {
            tracing::warn!(skill = %self.invocation.skill, operation, credential, "denied: {message}");
            self.deny(message);
        }
    }

    /// The audit event for a refusal of `operation`. The message is redacted here: refusals
    /// made before the tripwire echo the guest's own text to the guest unredacted, but
    /// operators and callers must never see a secret.
    pub(crate) fn denial_event(
        &self,
        redactor: &Redactor,
        credential: Option<&str>,
        operation: &str,
        message: &str,
    ) -> AuditEvent {
        let mut event = self.audit_event(AuditAction::Denied, credential, operation);
        event.success = false;
        event.error = Some(redactor.redact_str(message).into_owned());
        event
    }

    /// An audit event for this invocation, about the declared credential `credential`.
    /// Its actor is the invocation's: who asked for the run (see [`Invocation::actor`]).
    pub(crate) fn audit_event(&self, action: AuditAction, credential: Option<&str>, operation: &str) -> AuditEvent {
        let inv = &self.invocation;
        let mut event = AuditEvent::new(action, inv.actor.clone());
        event.skill = Some(inv.skill.to_string());
        event.credential = credential.map(|name| CredentialRef {
            owner: inv.user.clone(),
            environment: inv.environment,
            name: name.to_owned(),
        });
        event.purpose = (!inv.purpose.is_empty()).then(|| inv.purpose.clone());
        event.detail = serde_json::json!({ "operation": operation, "environment": inv.environment.as_str() });
        event
    }

    /// Appends `event` to the vault's audit log (when there is a vault).
    pub(crate) fn audit(&self, event: AuditEvent) {
        if let Some(vault) = &self.services.vault
            && let Err(e) = vault.record(&event)
        {
            tracing::error!(skill = %self.invocation.skill, "could not write audit row: {e}");
        }
    }

    /// Writes `event` unless this invocation already audited the same event (then it is
    /// counted) or has no rows left (then it is counted in the closing row). True if written.
    pub(crate) fn audit_once(&self, event: AuditEvent) -> bool {
        let admitted = self.ledger().admit(&event);
        if admitted {
            self.audit(event);
        }
        admitted
    }

    /// Appends a use event that must be recorded: if it cannot be, the
    /// result is withheld from the guest (fail closed). Its row was reserved before the use.
    /// The use is counted against `handle` (for its `release` row) whether or not the row
    /// can be written: the credential was used either way.
    pub(crate) fn audit_use(&self, handle: &HandleUse, event: AuditEvent) -> Result<(), HostError> {
        handle.count_use(event.success);
        self.ledger().take_reserved();
        // Taken before the row is written: the first-use check reads the history before it.
        let at = SystemTime::now();
        match &self.services.vault {
            Some(vault) => vault.record(&event).map_err(|e| {
                HostError::upstream(format!("the audit log could not be written, so the result was withheld: {e}"))
            })?,
            None => return Ok(()),
        }
        self.note_use(&event, at);
        Ok(())
    }

    /// Hands a successful, recorded use to the first-use check (in the background).
    fn note_use(&self, event: &AuditEvent, at: SystemTime) {
        let (Some(alerts), Some(credential), true) = (&self.services.alerts, &event.credential, event.success) else {
            return;
        };
        let key = skillbox_alerts::detect::CredentialKey {
            owner: credential.owner.clone(),
            environment: credential.environment.as_str().to_owned(),
            name: credential.name.clone(),
        };
        let record = skillbox_alerts::detect::UseRecord {
            skill: event.skill.clone(),
            host: event.detail.get("host").and_then(|h| h.as_str()).map(str::to_owned),
            user: Some(event.actor.clone()),
        };
        alerts.note_use(key, record, at);
    }
}

/// `2026-11-24T04:46:46.460Z`.
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// `86400` as `24h`, `300` as `5m`, for messages.
fn humantime_secs(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
