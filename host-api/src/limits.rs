//! Per-invocation bounds on what a guest can make the host do, hold and write down.
//!
//! Every size a guest hands over is checked where it arrives, before the host copies or
//! builds anything from it: credential names here, statements, parameters and result values
//! in `sql`, URLs and headers in `http`, messages in `signing`, log lines in `log`, the `run`
//! result in the runtime. (wasmtime itself copies a guest's arguments into host memory before
//! any of that; that first copy is bounded by the guest's memory limit.) Every size limit is
//! re-exported here, so this module lists them all.
//!
//! What spans calls is counted on the invocation's [`SkillCtx`], and checked by the
//! `Metered` view every host call passes through first:
//!
//! | bound | past it |
//! |---|---|
//! | [`MAX_HOST_CALLS`] host calls | the call traps: the invocation ends with a limit error |
//! | [`MAX_OPEN_CREDENTIALS`] handles open at once | `open` returns `limit` |
//! | [`MAX_AUDIT_ROWS`] audit rows | `open` and credential uses return `limit`; further refusals and leak findings are counted in one closing row |
//! | [`MAX_LOG_LINES`] lines or [`MAX_LOG_BYTES`] bytes of log | later lines are dropped and counted (logging never fails) |
//!
//! Any `limit` returned to the guest is remembered ([`SkillCtx::limit`]), so a skill that
//! fails after hitting one is reported as limited, not as having failed on its own.
//!
//! A refusal or leak finding equal to one this invocation already audited (same action,
//! credential, operation and message) is counted instead of written again, and
//! [`SkillCtx::finish`] writes one row per such repeat with the count in `detail.repeats`. A
//! refused `open` is answered from memory when asked again, so the vault is asked (and
//! writes its own row) once per name and invocation, and an approver is not asked twice.

use std::collections::HashMap;
use std::sync::MutexGuard;

use skillbox_vault::{AuditAction, AuditEvent};
use wasmtime::component::Resource;

pub use crate::MAX_LOG_MESSAGE;
pub use crate::http::{MAX_HEADER_BYTES, MAX_HEADERS, MAX_METHOD_BYTES, MAX_URL_BYTES};
pub use crate::signing::MAX_MESSAGE as MAX_SIGNED_MESSAGE;
pub use crate::sql::{MAX_PARAM_BYTES, MAX_PARAMS, MAX_RESULT_BYTES, MAX_ROWS, MAX_STATEMENT_BYTES};

use crate::SkillCtx;
use crate::bindings::skillbox::skill::types::Error as WitError;
use crate::credentials::OpenCredential;
use crate::error::{HostError, LimitExceeded, wit_error_message};

/// Most host calls (every `skillbox:skill` import, credential handle methods included) one
/// invocation may make. The call past it traps, ending the invocation with a limit error:
/// a guest that ignores `limit` errors cannot keep the host busy.
pub const MAX_HOST_CALLS: u32 = 100_000;
/// Most credential handles one invocation may hold open at once (dropping one frees its
/// place); `open` past it returns `limit`.
pub const MAX_OPEN_CREDENTIALS: u32 = 64;
/// Most audit rows one invocation may cause, every kind counted, the closing summary rows
/// included (an `open` counts as the row the vault writes for it and, when it opens a
/// handle, the handle's `release` row at the end; the pin or the approval's grant of a first
/// use comes on top). At the cap,
/// `open` and credential uses return `limit` (a use is never made unaudited), and further
/// refusals and leak findings are counted in one closing row. A tripwire is always recorded.
pub const MAX_AUDIT_ROWS: u32 = 1_000;
/// Most log lines one invocation may write. Later lines are dropped unwritten and counted
/// (the runtime reports how many): logging never fails.
pub const MAX_LOG_LINES: u32 = 10_000;
/// Most log bytes (after each line's cut at [`MAX_LOG_MESSAGE`]) one invocation may write;
/// from the first line that does not fit, every later line is dropped and counted.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;
/// Longest credential name `credentials.open` accepts, the vault's own limit on names. A
/// longer one is refused with `limit` before it is echoed, logged or audited.
pub const MAX_CREDENTIAL_NAME: usize = 128;

/// The operation name refusals of `credentials.open` are audited under.
const OPEN: &str = "credentials.open";

/// Counters for the bounds that span host calls.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    host_calls: u32,
    log_lines: u32,
    log_bytes: usize,
    log_dropped: u64,
    /// Credential handles the guest holds: opened and not yet dropped.
    handles: u32,
    /// Refused `open`s by name, answered again without asking the vault. Invariant: one
    /// entry per `open` that got past the audit-room check, so at most [`MAX_AUDIT_ROWS`].
    refused_opens: HashMap<String, WitError>,
    /// The closing rows are written (see [`SkillCtx::finish`]).
    finished: bool,
}

/// The invocation's audit rows: how many it caused, and the repeats folded into counts.
#[derive(Debug, Default)]
pub(crate) struct AuditLedger {
    /// Rows written or reserved. Invariant: `rows + repeats.len() + 1 <= MAX_AUDIT_ROWS`
    /// (each repeat owes a summary row, the 1 is the overflow row), but for a tripwire row.
    rows: u32,
    /// Rows reserved by a use before it ran, not yet taken by its `use` row.
    reserved: u32,
    /// Each audited event's key, with the index of its count in `repeats` once it repeated.
    seen: HashMap<String, Option<usize>>,
    /// Events that repeated, and how many times more than once.
    repeats: Vec<(AuditEvent, u64)>,
    /// Refusals and findings neither written nor counted under a key: the cap was reached.
    overflow: u64,
}

impl AuditLedger {
    /// Whether `n` more rows fit, keeping room for the summary rows owed.
    fn room(&self, n: u32) -> bool {
        self.rows as usize + self.repeats.len() + 1 + n as usize <= MAX_AUDIT_ROWS as usize
    }

    /// What makes two events "the same thing": action, credential, detail (operation,
    /// channel, rule, ...) and message.
    fn key(event: &AuditEvent) -> String {
        let credential = event.credential.as_ref().map_or("", |c| c.name.as_str());
        format!("{}\0{credential}\0{}\0{}", event.action, event.detail, event.error.as_deref().unwrap_or(""))
    }

    /// Decides whether `event` is written (true) or only counted: counted when the same
    /// event was audited already, or when the invocation has no rows left.
    pub(crate) fn admit(&mut self, event: &AuditEvent) -> bool {
        let key = Self::key(event);
        match self.seen.get(&key).copied() {
            Some(Some(index)) => self.repeats[index].1 += 1,
            Some(None) if self.room(1) => {
                self.seen.insert(key, Some(self.repeats.len()));
                self.repeats.push((event.clone(), 1));
            }
            None if self.room(1) => {
                self.rows += 1;
                self.seen.insert(key, None);
                return true;
            }
            _ => self.overflow += 1,
        }
        false
    }

    /// Notes an event the vault wrote itself (its row was reserved), so repeats fold into it.
    fn register(&mut self, event: &AuditEvent) {
        self.seen.entry(Self::key(event)).or_insert(None);
    }

    /// Reserves a row for an act that writes one later; false when none is left.
    pub(crate) fn reserve(&mut self) -> bool {
        self.reserve_rows(1)
    }

    /// Reserves `n` rows for acts that write them later; false (nothing reserved) when they do
    /// not all fit.
    fn reserve_rows(&mut self, n: u32) -> bool {
        if !self.room(n) {
            return false;
        }
        self.rows += n;
        self.reserved += n;
        true
    }

    /// Gives back a reserved row that will not be written.
    fn unreserve(&mut self) {
        if self.reserved > 0 {
            self.reserved -= 1;
            self.rows -= 1;
        }
    }

    /// Accounts for a `use` row: it takes a reservation, or counts as a new row.
    pub(crate) fn take_reserved(&mut self) {
        if self.reserved > 0 {
            self.reserved -= 1;
        } else {
            self.rows += 1;
        }
    }

    /// Accounts for a row written whatever the cap (a tripwire).
    pub(crate) fn count_row(&mut self) {
        self.rows += 1;
    }
}

impl SkillCtx {
    /// The first host limit the guest hit in this invocation, if any.
    pub fn limit(&self) -> Option<&LimitExceeded> {
        self.limit.as_ref()
    }

    /// Log lines dropped unwritten because the invocation was past [`MAX_LOG_LINES`] or
    /// [`MAX_LOG_BYTES`].
    pub fn log_lines_dropped(&self) -> u64 {
        self.budget.log_dropped
    }

    /// Closes the invocation's accounts: writes one `release` row per credential handle it
    /// opened (uses, how long it was held), one row for each refusal or leak finding that
    /// repeated (the first row's copy, `detail.repeats` the count), one for those past the
    /// row cap, and warns of dropped log lines. The runtime calls it when the guest is done;
    /// dropping the state calls it too. Only the first call does anything.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.budget.finished, true) {
            return;
        }
        self.record.release_handles();
        let (repeats, overflow) = {
            let mut ledger = self.ledger();
            (std::mem::take(&mut ledger.repeats), ledger.overflow)
        };
        let skill = &*self.record.invocation.skill;
        for (mut event, count) in repeats {
            let credential = event.credential.as_ref().map(|c| c.name.clone());
            tracing::warn!(skill, action = %event.action, credential, count, "repeated in this invocation, recorded once");
            event.detail["repeats"] = count.into();
            if let Some(error) = &mut event.error {
                error.push_str(&format!(" (and {count} more times in this invocation, recorded once)"));
            }
            self.audit(event);
        }
        if overflow > 0 {
            tracing::warn!(skill, count = overflow, "refusals and leak findings past the audit row cap were counted");
            let mut event = self.audit_event(AuditAction::Denied, None, "audit-cap");
            event.success = false;
            event.detail["unrecorded"] = overflow.into();
            event.error = Some(format!(
                "{overflow} further refusals and leak findings in this invocation were not recorded one by one: it reached its cap of {MAX_AUDIT_ROWS} audit rows"
            ));
            self.audit(event);
        }
        let dropped = self.budget.log_dropped;
        if dropped > 0 {
            tracing::warn!(
                skill,
                dropped,
                "log lines past the cap of {MAX_LOG_LINES} lines or {} KiB per invocation were dropped",
                MAX_LOG_BYTES / 1024
            );
        }
    }

    /// The audit ledger (shared with the invocation's `wasi:http` requests).
    pub(crate) fn ledger(&self) -> MutexGuard<'_, AuditLedger> {
        self.record.ledger()
    }

    /// Writes `event` once per invocation (see [`Recorder::audit_once`](crate::record::Recorder)).
    pub(crate) fn audit_once(&self, event: AuditEvent) -> bool {
        self.record.audit_once(event)
    }

    /// Remembers the first limit hit and returns it; the first one is also logged.
    pub(crate) fn note_limit(&mut self, message: String) -> LimitExceeded {
        let exceeded = LimitExceeded { message };
        if self.limit.is_none() {
            tracing::warn!(skill = %self.record.invocation.skill, "host limit: {exceeded}");
            self.limit = Some(exceeded.clone());
        }
        exceeded
    }

    /// A `limit` error for the guest, remembered for the runtime.
    pub(crate) fn refuse(&mut self, message: String) -> HostError {
        HostError::limit(self.note_limit(message).message)
    }

    /// Counts one host call; past [`MAX_HOST_CALLS`] the call traps.
    /// A tripwire hit in a `wasi:http` request (which runs in a task of its own) stops the
    /// guest here, at its next host call.
    pub(crate) fn count_call(&mut self) -> wasmtime::Result<()> {
        if let Some(tripped) = self.record.tripped() {
            return Err(wasmtime::Error::new(tripped));
        }
        self.budget.host_calls = self.budget.host_calls.saturating_add(1);
        if self.budget.host_calls <= MAX_HOST_CALLS {
            return Ok(());
        }
        let message = format!(
            "the skill made more than {MAX_HOST_CALLS} host calls in one invocation, the most allowed, and was stopped; make fewer calls per invocation"
        );
        Err(wasmtime::Error::new(self.note_limit(message)))
    }

    /// Whether a log line of `bytes` may be written; when not, it is counted as dropped.
    pub(crate) fn admit_log_line(&mut self, bytes: usize) -> bool {
        let budget = &mut self.budget;
        if budget.log_dropped > 0 || budget.log_lines >= MAX_LOG_LINES || budget.log_bytes + bytes > MAX_LOG_BYTES {
            budget.log_dropped += 1;
            return false;
        }
        budget.log_lines += 1;
        budget.log_bytes += bytes;
        true
    }

    /// Reserves the audit row a credential use will write; `limit` when none is left.
    pub(crate) fn reserve_use_row(&mut self, operation: &str) -> Result<(), HostError> {
        if self.ledger().reserve() {
            return Ok(());
        }
        Err(self.refuse(format!(
            "{operation} was not performed: this invocation has caused {MAX_AUDIT_ROWS} audit rows, the most one may, and a credential is never used unaudited; do less per invocation"
        )))
    }

    /// Checks an `open` before anything is done with the name: its length, an earlier refusal
    /// of the same name (answered again, and counted), the handle cap, room for its audit row.
    pub(crate) fn before_open(&mut self, name: &str) -> Result<(), HostError> {
        if name.len() > MAX_CREDENTIAL_NAME {
            return Err(self.refuse(format!(
                "a credential name is at most {MAX_CREDENTIAL_NAME} bytes, and this one is {} bytes; open a name the skill's skill.toml declares",
                name.len()
            )));
        }
        if let Some(refused) = self.budget.refused_opens.get(name).cloned() {
            let event = self.denial_event(Some(name), OPEN, wit_error_message(&refused));
            self.audit_once(event);
            return Err(HostError::Guest(refused));
        }
        if self.budget.handles >= MAX_OPEN_CREDENTIALS {
            return Err(self.refuse(format!(
                "the skill holds {MAX_OPEN_CREDENTIALS} credential handles, the most one invocation may hold at once; drop handles it no longer needs, or reuse one"
            )));
        }
        // Every open is audited: by the vault when the name is declared, else as a refusal. A
        // handle it opens also gets its `release` row when the invocation ends: reserved too.
        let room = if self.opened_by_vault(name) { self.ledger().reserve_rows(2) } else { self.ledger().room(1) };
        if !room {
            return Err(self.refuse(format!(
                "credentials.open was refused: this invocation has caused {MAX_AUDIT_ROWS} audit rows, the most one may, and every open is audited; do less per invocation"
            )));
        }
        Ok(())
    }

    /// Whether an `open` of `name` is decided (and audited) by the vault: there is one and the
    /// name is declared.
    fn opened_by_vault(&self, name: &str) -> bool {
        self.record.services.vault.is_some() && self.record.invocation.policy.credential(name).is_some()
    }

    /// Gives back the `release` row [`SkillCtx::before_open`] reserved for an `open` of `name`
    /// that opened no handle.
    pub(crate) fn no_handle_opened(&mut self, name: &str) {
        if self.opened_by_vault(name) {
            self.ledger().unreserve();
        }
    }

    /// Accounts for an `open`'s outcome: a handle held, or a refusal to answer from memory.
    pub(crate) fn after_open(&mut self, name: &str, result: &Result<Resource<OpenCredential>, HostError>) {
        if result.is_err() {
            self.no_handle_opened(name);
        }
        match result {
            Ok(_) => self.budget.handles += 1,
            Err(error @ HostError::Guest(refusal)) if error.is_denial() => {
                if !matches!(refusal, WitError::NotDeclared(_)) {
                    // The vault audited this refusal itself; repeats fold into its row.
                    let event = self.denial_event(Some(name), OPEN, wit_error_message(refusal));
                    self.ledger().register(&event);
                }
                self.budget.refused_opens.insert(name.to_owned(), refusal.clone());
            }
            Err(_) => {}
        }
    }

    /// Accounts for a handle the guest dropped.
    pub(crate) fn dropped_handle(&mut self) {
        self.budget.handles = self.budget.handles.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(n: usize) -> AuditEvent {
        let mut event = AuditEvent::new(AuditAction::Denied, "default");
        event.error = Some(format!("refusal {n}"));
        event
    }

    #[test]
    fn repeats_are_counted_and_the_rows_stay_under_the_cap() {
        let mut ledger = AuditLedger::default();
        assert!(ledger.admit(&denial(0)));
        assert!(!ledger.admit(&denial(0)) && !ledger.admit(&denial(0)));
        assert_eq!((ledger.rows, ledger.repeats.len(), ledger.repeats[0].1), (1, 1, 2));
        let written = (1..2 * MAX_AUDIT_ROWS as usize).filter(|&n| ledger.admit(&denial(n))).count();
        // One row for each event written, one owed for the repeat, one kept for the overflow.
        assert_eq!(written, MAX_AUDIT_ROWS as usize - 3);
        assert_eq!(ledger.overflow, 2 * u64::from(MAX_AUDIT_ROWS) - 1 - written as u64);
        assert!(!ledger.reserve(), "no row left for a use");
        assert_eq!(ledger.rows as usize + ledger.repeats.len() + 1, MAX_AUDIT_ROWS as usize);
    }

    #[test]
    fn a_reserved_row_is_taken_by_its_use() {
        let mut ledger = AuditLedger::default();
        assert!(ledger.reserve());
        ledger.take_reserved();
        assert_eq!((ledger.rows, ledger.reserved), (1, 0));
        ledger.take_reserved();
        assert_eq!(ledger.rows, 2, "a use without a reservation still counts");
    }
}
