//! Host-side implementations of the `skillbox:skill` WIT interfaces, one module per interface.
//!
//! The runtime owns the store; this crate owns what the guest can ask of the
//! host. State is reached through a view, as `wasmtime-wasi` does it: the
//! store's data implements [`SkillView`], which lends out a [`SkillCtxView`]
//! (the per-invocation [`SkillCtx`] plus the store's `ResourceTable`), and
//! every `Host` trait is implemented for that view. wasmtime reaches them
//! through `Metered`, a wrapper that first holds each call to the
//! invocation's [`limits`].
//!
//! | module | interface |
//! |---|---|
//! | `log` | `skillbox:skill/log` |
//! | `credentials` | `skillbox:skill/credentials`: opening handles (grant check, approval, audit) |
//! | `http` | `skillbox:skill/http`: requests through the egress pipeline, credential injected |
//! | `signing` | `skillbox:skill/signing`: HMAC with keys the guest cannot read |
//! | `sql` | `skillbox:skill/sql`: PostgreSQL and SQLite on database credentials |
//! | `metered` | all of them: the per-invocation bounds of [`limits`], checked before each call |
//!
//! ```no_run
//! use std::sync::Arc;
//! use skillbox_host_api::{HostServices, Invocation, SkillCtx, SkillCtxView, SkillView};
//! use wasmtime::component::{Linker, ResourceTable};
//!
//! struct State { skill: SkillCtx, table: ResourceTable }
//! impl SkillView for State {
//!     fn skill(&mut self) -> SkillCtxView<'_> {
//!         SkillCtxView { ctx: &mut self.skill, table: &mut self.table }
//!     }
//! }
//!
//! let engine = wasmtime::Engine::default();
//! let mut linker = Linker::<State>::new(&engine);
//! skillbox_host_api::add_to_linker(&mut linker)?;
//! let services = Arc::new(HostServices::new(Default::default())?);
//! let state = State { skill: SkillCtx::new(Invocation::anonymous("hello"), services), table: ResourceTable::new() };
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

// Generated code: its docs come from the WIT, which bindgen copies where it can.
mod approval;
#[allow(missing_docs)]
mod bindings;
mod credentials;
mod error;
mod http;
pub mod limits;
mod log;
mod metered;
mod policy;
mod record;
mod signing;
mod sql;
mod wasi_http;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skillbox_egress::{Egress, EgressConfig, EgressError, ForeignAction, Scanner, SecretMatcher, ViewLimits};
use skillbox_scan::rules::RuleSet;
use skillbox_vault::{AuditAction, AuditEvent, Environment, Vault};
use wasmtime::component::{Linker, ResourceTable};

pub use approval::{Approval, ApprovalRequest, Approver, DenyAll};
pub use bindings::skillbox::skill::log::Level as LogLevel;
pub use bindings::skillbox::skill::types::SkillError;
pub use bindings::{Skill, SkillPre};
pub use credentials::OpenCredential;
pub use error::{HostError, LimitExceeded, Tripped};
pub use log::truncate_at_char_boundary;
pub use policy::{CredentialDecl, DeclaredLimits, HttpAuth, SkillPolicy};
use record::Recorder;
pub use sql::{DatabaseCheck, check_database};

/// Longest log message a guest may write; longer ones are truncated.
pub const MAX_LOG_MESSAGE: usize = 64 * 1024;

/// How the host scans what crosses the sandbox boundary: the operator's settings.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// Foreign-token rules (the built-in set plus the operator's).
    pub rules: RuleSet,
    /// What to do with a foreign token unless a skill's manifest says otherwise.
    pub foreign: ForeignAction,
    /// How far decoded views go.
    pub limits: ViewLimits,
    /// Tripwires by one skill build within `tripwire_window` that suspend its grants.
    pub tripwire_threshold: u32,
    /// The window tripwires are counted in.
    pub tripwire_window: Duration,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            rules: RuleSet::builtin(),
            foreign: ForeignAction::Redact,
            limits: ViewLimits::default(),
            tripwire_threshold: 3,
            tripwire_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Things built once per credential version (matchers, prepared injections) and shared by
/// every invocation that opens it. Bounded: when full it is emptied wholesale, since old
/// versions are not tracked.
#[derive(Debug)]
struct BuildCache<K, V> {
    entries: Mutex<HashMap<K, Arc<V>>>,
}

impl<K: std::hash::Hash + Eq, V> Default for BuildCache<K, V> {
    fn default() -> Self {
        BuildCache { entries: Mutex::default() }
    }
}

impl<K: std::hash::Hash + Eq, V> BuildCache<K, V> {
    const MAX_ENTRIES: usize = 1024;

    /// The entry under `key`, built by `build` (outside the lock) on first use.
    fn get_or_build<E>(&self, key: K, build: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        let lock = || self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = lock().get(&key) {
            return Ok(found.clone());
        }
        let built = Arc::new(build()?);
        let mut entries = lock();
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        Ok(entries.entry(key).or_insert(built).clone())
    }

    /// Drops every entry (and with it the secrets they hold, once no invocation uses them).
    fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Long-lived services shared by every invocation: the vault, the approver,
/// the HTTP client, the scanner settings. Built once per runtime.
#[derive(Debug)]
pub struct HostServices {
    vault: Option<Arc<Vault>>,
    approver: Arc<dyn Approver>,
    egress: Egress,
    scan: ScanConfig,
    /// Where alerts go (tripwires, suspensions, denial bursts, first uses); `None`: only the log.
    alerts: Option<Arc<skillbox_alerts::Alerts>>,
    matchers: Arc<BuildCache<(String, u32, String), SecretMatcher>>,
    injections: Arc<BuildCache<String, skillbox_egress::Injection>>,
    /// Keeps `oauth2` credentials fresh (refreshes on the host, single-flight).
    oauth: skillbox_oauth::Refresher,
}

impl HostServices {
    /// Services with no vault: skills that open credentials are refused.
    pub fn new(egress: EgressConfig) -> Result<HostServices, EgressError> {
        let oauth = skillbox_oauth::Refresher::new(egress.allow_http_loopback)
            .map_err(|e| EgressError::Setup(format!("the OAuth 2 client: {e}")))?;
        Ok(HostServices {
            oauth,
            vault: None,
            approver: Arc::new(DenyAll),
            egress: Egress::new(egress)?,
            scan: ScanConfig::default(),
            alerts: None,
            matchers: Arc::default(),
            injections: Arc::default(),
        })
    }

    /// Replaces the scanner settings.
    pub fn with_scan(mut self, scan: ScanConfig) -> HostServices {
        self.scan = scan;
        self
    }

    /// The scanner settings.
    pub fn scan(&self) -> &ScanConfig {
        &self.scan
    }

    /// The prepared injection under `key` (credential version and policy), built on first use.
    fn injection<E>(
        &self,
        key: String,
        build: impl FnOnce() -> Result<skillbox_egress::Injection, E>,
    ) -> Result<Arc<skillbox_egress::Injection>, E> {
        self.injections.get_or_build(key, build)
    }

    /// The matcher for one credential version's secret fields, built on first use.
    fn matcher(&self, key: (String, u32, String), fields: &[&[u8]]) -> Arc<SecretMatcher> {
        let label = key.2.clone();
        let Ok(matcher) =
            self.matchers.get_or_build(key, || Ok::<_, std::convert::Infallible>(SecretMatcher::new(&label, fields)));
        matcher
    }

    /// Adds the credential vault and the approver asked about ungranted credentials.
    ///
    /// When the vault announces changes made elsewhere (PostgreSQL's `NOTIFY`) and this runs
    /// inside a tokio runtime, every announced change empties the caches of prepared
    /// matchers and injections at once, so a revoked secret leaves this host's memory
    /// without waiting for its next use (which refuses it regardless).
    pub fn with_vault(mut self, vault: Arc<Vault>, approver: Arc<dyn Approver>) -> HostServices {
        if let (Some(mut changes), Ok(handle)) = (vault.watch_changes(), tokio::runtime::Handle::try_current()) {
            let (matchers, injections) = (Arc::downgrade(&self.matchers), Arc::downgrade(&self.injections));
            handle.spawn(async move {
                while changes.changed().await.is_ok() {
                    let (Some(m), Some(i)) = (matchers.upgrade(), injections.upgrade()) else { return };
                    m.clear();
                    i.clear();
                    tracing::debug!("the vault changed elsewhere: dropped the prepared credential caches");
                }
            });
        }
        self.vault = Some(vault);
        self.approver = approver;
        self
    }

    /// The vault, when one is configured.
    pub fn vault(&self) -> Option<&Arc<Vault>> {
        self.vault.as_ref()
    }

    /// Raises alerts through `alerts` (tripwires, suspensions, denial bursts, first uses).
    pub fn with_alerts(mut self, alerts: Arc<skillbox_alerts::Alerts>) -> HostServices {
        self.alerts = Some(alerts);
        self
    }

    /// Where alerts go, when configured.
    pub fn alerts(&self) -> Option<&Arc<skillbox_alerts::Alerts>> {
        self.alerts.as_ref()
    }
}

/// Who runs which skill, where, why, under what policy: fixed for one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The skill's manifest name.
    pub skill: Arc<str>,
    /// SHA-256 (hex) of its component.
    pub digest: Arc<str>,
    /// What its manifest allows.
    pub policy: Arc<SkillPolicy>,
    /// The user or tenant it runs for; selects whose credentials.
    pub user: String,
    /// Who asked for the run, recorded as the actor of its audit rows: the operating-system
    /// account for `skillbox run`, `apikey:<fingerprint>` for a call through `skillbox serve`.
    /// Often not [`Invocation::user`], whose credentials it uses.
    pub actor: String,
    /// The environment whose credentials it may use.
    pub environment: Environment,
    /// Why it runs (audited).
    pub purpose: String,
    /// What to do with foreign tokens (the manifest's `[scan] foreign`, else the operator's).
    pub foreign: Option<ForeignAction>,
    /// Who to ask about an ungranted credential in this invocation, instead of the services'
    /// approver (an MCP client that can show a form, say). The decision is recorded the same
    /// way whoever makes it.
    pub approver: Option<Arc<dyn Approver>>,
}

impl Invocation {
    /// An invocation of `skill` with an empty policy, the default user and `dev`.
    pub fn anonymous(skill: &str) -> Invocation {
        Invocation {
            skill: skill.into(),
            digest: "".into(),
            policy: Arc::default(),
            user: skillbox_vault::DEFAULT_OWNER.into(),
            actor: skillbox_vault::DEFAULT_OWNER.into(),
            environment: Environment::Dev,
            purpose: String::new(),
            foreign: None,
            approver: None,
        }
    }
}

/// Per-invocation host state for the `skillbox:skill` interfaces.
///
/// One is built for every invocation and dropped with its store, so nothing
/// a guest obtains (credential handles, database connections) outlives the
/// call that obtained it.
#[derive(Debug)]
pub struct SkillCtx {
    /// Who runs what, the services, and what the invocation has recorded (audit rows,
    /// denials, a tripwire): shared with the invocation's `wasi:http` requests, which run in
    /// tasks of their own.
    record: Arc<Recorder>,
    /// The secrets released to this invocation's host side, and the foreign-token policy.
    scanner: Scanner,
    sql: sql::Connections,
    /// Counters for the per-invocation bounds (host calls, handles, log volume).
    budget: limits::Budget,
    /// The first host limit the guest hit.
    limit: Option<LimitExceeded>,
    /// The manifest's `transparent` credentials, opened for `wasi:http`.
    transparent: wasi_http::Transparent,
}

impl SkillCtx {
    /// Creates the host state for one invocation.
    pub fn new(invocation: Invocation, services: Arc<HostServices>) -> Self {
        let scan = services.scan();
        let scanner = Scanner {
            secrets: Default::default(),
            rules: scan.rules.clone(),
            foreign: invocation.foreign.unwrap_or(scan.foreign),
            limits: scan.limits,
        };
        SkillCtx {
            record: Arc::new(Recorder::new(invocation, services)),
            scanner,
            sql: sql::Connections::default(),
            budget: limits::Budget::default(),
            limit: None,
            transparent: wasi_http::Transparent::default(),
        }
    }

    /// The name of the skill this state belongs to, as its manifest gives it.
    pub fn skill_name(&self) -> &str {
        &self.record.invocation.skill
    }

    /// The secrets this invocation touched (to redact text for operators and callers).
    pub fn redactor(&self) -> &skillbox_egress::Redactor {
        &self.scanner.secrets
    }

    /// The invocation's scanner: its secrets and the foreign-token policy.
    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// Access decisions that went against the skill during this invocation.
    pub fn denials(&self) -> Vec<String> {
        self.record.denials()
    }

    /// The tripwire this invocation hit, if any (in a host call or a `wasi:http` request).
    pub fn tripped(&self) -> Option<Tripped> {
        self.record.tripped()
    }

    /// Adds a credential's secret fields (credential `id`, `version`, declared as `label`) to
    /// what is searched for from now on.
    fn remember_secrets(&mut self, id: &str, version: u32, label: &str, fields: Vec<&[u8]>) {
        let matcher = self.record.services.matcher((id.to_owned(), version, label.to_owned()), &fields);
        self.scanner.secrets.push(matcher);
    }

    /// Checks text the guest sends out of the sandbox through `channel` (a log line, SQL, an
    /// HMAC message, its result): a secret in any view trips the wire.
    pub fn check_outbound(&mut self, channel: &str, bytes: &[u8]) -> Result<(), Tripped> {
        match self.scanner.outbound(bytes) {
            Ok(None) => Ok(()),
            Ok(Some(hit)) => Err(self.trip(channel, &hit.label, &hit.view)),
            Err(_) => Err(self.trip(channel, "", "unscannable")),
        }
    }

    /// Records a tripwire (see [`Recorder::trip`]); the caller ends the invocation.
    pub(crate) fn trip(&mut self, channel: &str, credential: &str, view: &str) -> Tripped {
        self.record.trip(channel, credential, view)
    }

    /// Applies the foreign-token policy to text the guest hands out through `channel`,
    /// auditing every hit; `Err` names the rule when the policy blocks it.
    pub fn clean_foreign<'a>(&mut self, channel: &str, text: &'a str) -> Result<std::borrow::Cow<'a, str>, String> {
        use std::borrow::Cow;
        match self.scanner.foreign(Cow::Borrowed(text.as_bytes())) {
            Ok(cleared) => {
                for rule in &cleared.foreign {
                    self.record_leak(channel, None, "raw", Some(rule), self.scanner.foreign.as_str());
                }
                Ok(match cleared.bytes {
                    Cow::Borrowed(_) => Cow::Borrowed(text),
                    Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
                })
            }
            Err(skillbox_scan::Blocked::Foreign(rule)) => {
                self.record_leak(channel, None, "raw", Some(&rule), "block");
                Err(rule.to_string())
            }
            Err(_) => Err("unscannable".into()),
        }
    }

    /// Audits a secret or foreign token found in `channel` (see [`Recorder::record_leak`]).
    fn record_leak(&self, channel: &str, credential: Option<&str>, view: &str, rule: Option<&str>, action: &str) {
        self.record.record_leak(channel, credential, view, rule, action);
    }

    /// Notes and audits a denial (see [`Recorder::record_denial`]).
    fn record_denial(&mut self, credential: Option<&str>, operation: &str, error: &HostError) {
        self.record.record_denial(&self.scanner.secrets, credential, operation, error);
    }

    /// The audit event for a refusal of `operation`, redacted.
    fn denial_event(&self, credential: Option<&str>, operation: &str, message: &str) -> AuditEvent {
        self.record.denial_event(&self.scanner.secrets, credential, operation, message)
    }

    /// An audit event for this invocation, about the declared credential `credential`.
    fn audit_event(&self, action: AuditAction, credential: Option<&str>, operation: &str) -> AuditEvent {
        self.record.audit_event(action, credential, operation)
    }

    /// Appends `event` to the vault's audit log (when there is a vault).
    fn audit(&self, event: AuditEvent) {
        self.record.audit(event);
    }

    /// Appends a use event of `handle` that must be recorded (see [`Recorder::audit_use`]).
    fn audit_use(&self, handle: &record::HandleUse, event: AuditEvent) -> Result<(), HostError> {
        self.record.audit_use(handle, event)
    }
}

impl Drop for SkillCtx {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a [`SkillView`] lends out: the host state and the store's resource table.
#[allow(missing_debug_implementations)]
pub struct SkillCtxView<'a> {
    /// Host state for this invocation.
    pub ctx: &'a mut SkillCtx,
    /// The store's resource table, where handles given to the guest live.
    pub table: &'a mut ResourceTable,
}

/// Implemented by a store's data to give the host implementations their state.
pub trait SkillView: Send {
    /// Lends out the host state for the current invocation.
    fn skill(&mut self) -> SkillCtxView<'_>;
}

/// Adds every `skillbox:skill` import to `linker`, each call held to the invocation's
/// [`limits`] first.
///
/// WASI is not added here: the runtime links it separately, granting nothing.
pub fn add_to_linker<T: SkillView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    Skill::add_to_linker::<T, metered::HasMetered<T>>(linker, |state| metered::Metered(state.skill()))
}
