//! Host-side implementations of the `skillbox:skill` WIT interfaces, one module per interface.
//!
//! The runtime owns the store; this crate owns what the guest can ask of the
//! host. State is reached through a view, as `wasmtime-wasi` does it: the
//! store's data implements [`SkillView`], which lends out a [`SkillCtxView`]
//! (the per-invocation [`SkillCtx`] plus the store's `ResourceTable`), and
//! every `Host` trait is implemented for that view alone.
//!
//! | module | interface |
//! |---|---|
//! | `log` | `skillbox:skill/log` |
//! | `credentials` | `skillbox:skill/credentials`: opening handles (grant check, approval, audit) |
//! | `http` | `skillbox:skill/http`: requests through the egress pipeline, credential injected |
//! | `signing` | `skillbox:skill/signing`: HMAC with keys the guest cannot read |
//! | `sql` | `skillbox:skill/sql`: PostgreSQL and SQLite on database credentials |
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
mod log;
mod policy;
mod signing;
mod sql;

use std::sync::Arc;

use skillbox_egress::{Egress, EgressConfig, EgressError, Redactor};
use skillbox_vault::{AuditAction, AuditEvent, CredentialRef, Environment, Vault};
use wasmtime::component::{HasData, Linker, ResourceTable};
use zeroize::Zeroizing;

pub use approval::{Approval, ApprovalRequest, Approver, DenyAll};
pub use bindings::skillbox::skill::log::Level as LogLevel;
pub use bindings::skillbox::skill::types::SkillError;
pub use bindings::{Skill, SkillPre};
pub use credentials::OpenCredential;
pub use error::HostError;
pub use policy::{CredentialDecl, HttpAuth, SkillPolicy};

/// Longest log message a guest may write; longer ones are truncated.
pub const MAX_LOG_MESSAGE: usize = 64 * 1024;

/// Long-lived services shared by every invocation: the vault, the approver,
/// the HTTP client. Built once per runtime.
#[derive(Debug)]
pub struct HostServices {
    vault: Option<Arc<Vault>>,
    approver: Arc<dyn Approver>,
    egress: Egress,
}

impl HostServices {
    /// Services with no vault: skills that open credentials are refused.
    pub fn new(egress: EgressConfig) -> Result<HostServices, EgressError> {
        Ok(HostServices { vault: None, approver: Arc::new(DenyAll), egress: Egress::new(egress)? })
    }

    /// Adds the credential vault and the approver asked about ungranted credentials.
    pub fn with_vault(mut self, vault: Arc<Vault>, approver: Arc<dyn Approver>) -> HostServices {
        self.vault = Some(vault);
        self.approver = approver;
        self
    }

    /// The vault, when one is configured.
    pub fn vault(&self) -> Option<&Arc<Vault>> {
        self.vault.as_ref()
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
    /// The environment whose credentials it may use.
    pub environment: Environment,
    /// Why it runs (audited).
    pub purpose: String,
}

impl Invocation {
    /// An invocation of `skill` with an empty policy, the default user and `dev`.
    pub fn anonymous(skill: &str) -> Invocation {
        Invocation {
            skill: skill.into(),
            digest: "".into(),
            policy: Arc::default(),
            user: skillbox_vault::DEFAULT_OWNER.into(),
            environment: Environment::Dev,
            purpose: String::new(),
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
    invocation: Invocation,
    services: Arc<HostServices>,
    /// Every secret byte string released to this invocation's host side;
    /// the redactor is rebuilt from it when it grows.
    secrets: Vec<Zeroizing<Vec<u8>>>,
    redactor: Redactor,
    denials: Vec<String>,
    sql: sql::Connections,
}

impl SkillCtx {
    /// Creates the host state for one invocation.
    pub fn new(invocation: Invocation, services: Arc<HostServices>) -> Self {
        SkillCtx {
            invocation,
            services,
            secrets: Vec::new(),
            redactor: Redactor::empty(),
            denials: Vec::new(),
            sql: sql::Connections::default(),
        }
    }

    /// The name of the skill this state belongs to, as its manifest gives it.
    pub fn skill_name(&self) -> &str {
        &self.invocation.skill
    }

    /// Redacts every secret this invocation touched from guest-produced text
    /// (its output, logs, stdio) before it goes anywhere.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Access decisions that went against the skill during this invocation.
    pub fn denials(&self) -> &[String] {
        &self.denials
    }

    /// Adds a credential's secret fields to what is redacted from now on.
    fn remember_secrets(&mut self, fields: Vec<&[u8]>) {
        let before = self.secrets.len();
        for field in fields {
            if !field.is_empty() && !self.secrets.iter().any(|s| s.as_slice() == field) {
                self.secrets.push(Zeroizing::new(field.to_vec()));
            }
        }
        if self.secrets.len() != before {
            self.redactor = Redactor::new(self.secrets.iter().map(|s| s.as_slice()));
        }
    }

    /// Notes a denial (for the runtime's exit status) and audits it when a vault is present.
    fn record_denial(&mut self, credential: Option<&str>, operation: &str, error: &HostError) {
        let message = error.message();
        tracing::warn!(skill = %self.invocation.skill, operation, credential, "denied: {message}");
        self.denials.push(message.clone());
        let mut event = self.audit_event(AuditAction::Denied, credential, operation);
        event.success = false;
        event.error = Some(message);
        self.audit(event);
    }

    /// An audit event for this invocation, about the declared credential `credential`.
    fn audit_event(&self, action: AuditAction, credential: Option<&str>, operation: &str) -> AuditEvent {
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
    fn audit(&self, event: AuditEvent) {
        if let Some(vault) = &self.services.vault
            && let Err(e) = vault.record(&event)
        {
            tracing::error!(skill = %self.invocation.skill, "could not write audit row: {e}");
        }
    }

    /// Appends a use event that must be recorded: if it cannot be, the
    /// result is withheld from the guest (fail closed).
    fn audit_use(&self, event: AuditEvent) -> Result<(), HostError> {
        match &self.services.vault {
            Some(vault) => vault.record(&event).map_err(|e| {
                HostError::upstream(format!("the audit log could not be written, so the result was withheld: {e}"))
            }),
            None => Ok(()),
        }
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

/// Marker type tying [`SkillView`] into wasmtime's `HasData` plumbing.
struct HasSkill<T>(std::marker::PhantomData<T>);

impl<T: 'static> HasData for HasSkill<T> {
    type Data<'a> = SkillCtxView<'a>;
}

/// Adds every `skillbox:skill` import to `linker`.
///
/// WASI is not added here: the runtime links it separately, granting nothing.
pub fn add_to_linker<T: SkillView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    Skill::add_to_linker::<T, HasSkill<T>>(linker, T::skill)
}
