//! What one invocation records: its audit rows (under the per-invocation ledger), the
//! denials it met and the tripwire it hit.
//!
//! Shared (`Arc`) between the invocation's host state and its `wasi:http` requests, which the
//! host runs in tasks of their own: a use, a refusal or a tripwire in such a request is
//! recorded exactly as one in a host call, and the runtime sees it when the guest is done.

use std::sync::{Arc, Mutex, MutexGuard};

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

    /// Notes a denial for the runtime's exit status (already audited elsewhere).
    pub(crate) fn deny(&self, message: String) {
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
        // Recorded whatever the row cap: it ends the invocation, so it happens once.
        self.ledger().count_row();
        if let Some(vault) = &self.services.vault {
            let scan = &self.services.scan;
            match vault.record_tripwire(&event, scan.tripwire_threshold, scan.tripwire_window) {
                Ok(outcome) => {
                    suspended = outcome.suspended.iter().map(|g| g.alias.clone()).collect();
                    if !suspended.is_empty() {
                        tracing::error!(skill = %inv.skill, count = outcome.count, "grants suspended after repeated tripwires");
                    }
                }
                Err(e) => tracing::error!(skill = %inv.skill, "could not record the tripwire: {e}"),
            }
        }
        let hit = Tripped { channel: channel.to_owned(), credential, view: view.to_owned(), suspended };
        self.deny(hit.to_string());
        *tripped = Some(hit.clone());
        hit
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
    pub(crate) fn audit_event(&self, action: AuditAction, credential: Option<&str>, operation: &str) -> AuditEvent {
        let inv = &self.invocation;
        let mut event = AuditEvent::new(action, inv.user.clone());
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
    pub(crate) fn audit_use(&self, event: AuditEvent) -> Result<(), HostError> {
        self.ledger().take_reserved();
        match &self.services.vault {
            Some(vault) => vault.record(&event).map_err(|e| {
                HostError::upstream(format!("the audit log could not be written, so the result was withheld: {e}"))
            }),
            None => Ok(()),
        }
    }
}
