//! Implementation for the `skillbox:skill/credentials` interface.
//!
//! `open` is where access is decided: the name must be declared in the
//! manifest, and the vault must hold a grant of it to this skill (this
//! component digest, this policy) for this environment and user — or the
//! approver must allow it now. The handle the guest gets is an index into the store's
//! resource table; the secret stays in [`OpenCredential`] on the host side.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use skillbox_egress::{Auth, HostPattern, Injection, Redactor, ResponseScope};
use skillbox_oauth::Refresher;
use skillbox_vault::{
    Access, CredentialKind, CredentialRef, Generation, NewGrant, Resolved, ResponseMode, SecretValue, Vault,
};
use wasmtime::component::Resource;

use crate::approval::{Approval, ApprovalRequest};
use crate::bindings::skillbox::skill::credentials::{self, Kind};
use crate::bindings::skillbox::skill::types::Error as WitError;
use crate::error::HostError;
use crate::policy::{CredentialDecl, HttpAuth};
use crate::record::{HandleUse, Recorder};
use crate::{HostServices, SkillCtx, SkillCtxView};

/// A credential opened by one invocation: metadata for the guest, the
/// secret for the host. Lives in the store's resource table and dies with it.
#[derive(Debug)]
pub struct OpenCredential {
    declared: CredentialDecl,
    /// The vault's id and version of the value behind the handle (keys the matcher cache).
    id: String,
    version: u32,
    /// What of a response the guest gets: the manifest's `response`, narrowed by the grant.
    response: ResponseScope,
    /// How to ask the vault again whether access still holds, and the vault generation it
    /// last held at: compared before every use, so a revocation bites mid-run.
    recheck: Access,
    generation: std::sync::Mutex<Option<Generation>>,
    /// The earlier of the credential's and the grant's expiry.
    deadline: Option<SystemTime>,
    /// Opened by a one-time approval (no grant).
    grant_less: bool,
    credential: CredentialRef,
    service: String,
    scopes: Vec<String>,
    expires_at: Option<SystemTime>,
    /// Invariant: of the kind `declared.kind` (checked in `open`).
    pub(crate) value: SecretValue,
    /// The hosts it may go to: the grant's override, else the manifest's.
    hosts: Vec<HostPattern>,
    /// The prepared HTTP injection, built on first use (or taken from the runtime's cache of
    /// them) and reused by later requests.
    injection: OnceLock<Arc<Injection>>,
    /// When it was opened and how many times it was used: its `release` row at the end.
    usage: Arc<HandleUse>,
}

impl OpenCredential {
    /// The declared name.
    pub(crate) fn name(&self) -> &str {
        &self.declared.name
    }

    /// The vault identity of the credential, for audit rows.
    pub(crate) fn vault_ref(&self) -> &CredentialRef {
        &self.credential
    }

    /// Its ledger: uses are counted here as their `use` rows are written.
    pub(crate) fn usage(&self) -> &Arc<HandleUse> {
        &self.usage
    }

    /// The hosts it may be sent to: the grant's override, else the manifest's.
    pub(crate) fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    /// Adds its secret fields to `secrets`, a `wasi:http` request's copy of the invocation's
    /// scanner, as [`SkillCtx::remember_open`] does to the invocation's own.
    pub(crate) fn remember_in(&self, services: &HostServices, secrets: &mut Redactor) {
        let key = (self.id.clone(), self.version, self.name().to_owned());
        secrets.push(services.matcher(key, &self.value.secret_fields()));
    }

    /// Whether a `401` to a request that carried it can be answered with a refresh: an OAuth 2
    /// value with a refresh token or a client to fetch a new one with.
    pub(crate) fn refreshable(&self) -> bool {
        matches!(&self.value, SecretValue::OAuth2(t) if t.can_refresh())
    }

    /// Makes the handle use a refreshed `value`: a new cache id, so no matcher or injection
    /// built for the old token is reused.
    fn set_value(&mut self, value: SecretValue) {
        self.value = value;
        self.id = refreshed_id(&self.id);
        self.injection = OnceLock::new();
    }

    /// The same handle with a refreshed `value` (see [`OpenCredential::set_value`]), for a
    /// `wasi:http` credential shared by the invocation's requests. It keeps the ledger, so
    /// the handle still gets one `release` row.
    pub(crate) fn with_value(&self, value: SecretValue) -> OpenCredential {
        let mut next = OpenCredential {
            declared: self.declared.clone(),
            id: self.id.clone(),
            version: self.version,
            response: self.response,
            recheck: self.recheck.clone(),
            generation: std::sync::Mutex::new(*self.generation.lock().unwrap_or_else(|p| p.into_inner())),
            deadline: self.deadline,
            grant_less: self.grant_less,
            credential: self.credential.clone(),
            service: self.service.clone(),
            scopes: self.scopes.clone(),
            expires_at: self.expires_at,
            value: self.value.clone(),
            hosts: self.hosts.clone(),
            injection: OnceLock::new(),
            usage: Arc::clone(&self.usage),
        };
        next.set_value(value);
        next
    }

    /// [`OpenCredential::injection`], shared (for a `wasi:http` request's own task).
    pub(crate) fn shared_injection(&self, services: &HostServices) -> Result<Arc<Injection>, HostError> {
        self.injection(services)?;
        Ok(Arc::clone(self.injection.get().expect("set by injection()")))
    }

    /// How `http.send` applies this credential, with the hosts it may go to;
    /// prepared once per handle.
    pub(crate) fn injection(&self, services: &HostServices) -> Result<&Injection, HostError> {
        if let Some(injection) = self.injection.get() {
            return Ok(injection);
        }
        // Building one validates the credential and its matcher (tens of microseconds), so it
        // is shared by every invocation that opens the same value with the same policy.
        let hosts: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
        let key = format!(
            "{}\0{}\0{}\0{:?}\0{:?}\0{}",
            self.id,
            self.version,
            self.declared.name,
            self.declared.http,
            self.response,
            hosts.join(",")
        );
        let injection = services.injection(key, || self.prepare_injection())?;
        Ok(self.injection.get_or_init(|| injection))
    }

    fn prepare_injection(&self) -> Result<Injection, HostError> {
        let style = self.declared.http.as_ref().ok_or_else(|| {
            HostError::wrong_kind(format!(
                "credential `{}` is not declared for HTTP: add `http = \"bearer\"` (or basic, header, query) and `hosts` to its [[credentials]] entry",
                self.declared.name
            ))
        })?;
        Injection::named(&self.declared.name, self.auth(style)?, self.hosts.clone())
            .map(|injection| injection.with_response(self.response))
            .map_err(|e| {
                HostError::invalid(format!("credential `{}` cannot be sent over HTTP: {e}", self.declared.name))
            })
    }

    fn auth(&self, style: &HttpAuth) -> Result<Auth, HostError> {
        let (primary, secondary) = self.http_secrets()?;
        Ok(match style {
            HttpAuth::Bearer => Auth::Bearer(primary),
            HttpAuth::Basic => match &self.value {
                SecretValue::Basic(basic) => Auth::Basic {
                    username: SecretString::from(basic.username.clone()),
                    password: basic.password.clone(),
                },
                _ => Auth::Basic { username: primary, password: secondary.unwrap_or_else(|| SecretString::from("")) },
            },
            HttpAuth::Header { name, prefix } => {
                Auth::Header { name: name.clone(), prefix: prefix.clone(), value: primary }
            }
            HttpAuth::Query { param } => Auth::Query { param: param.clone(), value: primary },
        })
    }

    /// The secret sent over HTTP, and the optional second one (an API key's secret).
    fn http_secrets(&self) -> Result<(SecretString, Option<SecretString>), HostError> {
        match &self.value {
            SecretValue::ApiKey(k) => Ok((k.key.clone(), k.secret.clone())),
            SecretValue::Bearer(t) | SecretValue::OAuth2(t) => Ok((t.access_token.clone(), None)),
            SecretValue::Basic(b) => Ok((b.password.clone(), None)),
            other => Err(HostError::wrong_kind(format!(
                "credential `{}` is a {} credential, which cannot be sent over HTTP",
                self.declared.name,
                other.kind().as_str()
            ))),
        }
    }
}

impl credentials::Host for SkillCtxView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<OpenCredential>, HostError> {
        match self.ctx.open_credential(&name).await {
            Ok(open) => {
                self.ctx.remember_open(&open);
                Ok(self.table.push(open)?)
            }
            Err(error) => {
                if error.is_denial() {
                    self.ctx.record.deny(error.message());
                }
                Err(error)
            }
        }
    }
}

impl credentials::HostCredential for SkillCtxView<'_> {
    async fn name(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<String> {
        Ok(self.table.get(&handle)?.declared.name.clone())
    }

    async fn kind(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<Kind> {
        Ok(wit_kind(self.table.get(&handle)?.declared.kind))
    }

    async fn service(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<String> {
        Ok(self.table.get(&handle)?.service.clone())
    }

    async fn scopes(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&handle)?.scopes.clone())
    }

    async fn expires_at(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<Option<u64>> {
        let expires = self.table.get(&handle)?.expires_at;
        Ok(expires.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()))
    }

    async fn drop(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<()> {
        self.table.delete(handle)?.usage.dropped();
        Ok(())
    }
}

impl SkillCtx {
    /// Adds an opened credential's secret fields to what the invocation searches for.
    pub(crate) fn remember_open(&mut self, open: &OpenCredential) {
        self.remember_secrets(&open.id, open.version, open.name(), open.value.secret_fields());
    }

    /// Decides whether the guest may have the credential it declared as `name`.
    pub(crate) async fn open_credential(&mut self, name: &str) -> Result<OpenCredential, HostError> {
        let Some(declared) = self.record.invocation.policy.credential(name).cloned() else {
            let error = HostError::Guest(WitError::NotDeclared(format!(
                "skill `{}` does not declare a credential named `{name}`: add a [[credentials]] entry with name = \"{name}\" to its skill.toml",
                self.record.invocation.skill
            )));
            self.record_denial(Some(name), "credentials.open", &error);
            return Err(error);
        };
        let Some(vault) = self.record.services.vault.clone() else {
            return Err(HostError::Guest(WitError::NotGranted(format!(
                "no credential vault is open, so `{name}` cannot be granted: create one with `skillbox vault init`, add the credential with `skillbox cred add`, then `skillbox grant {} {name}`",
                self.record.invocation.skill
            ))));
        };
        let access = self.access(name);
        // What later uses ask the vault again (before `access` may become a one-time approval).
        let recheck = access.clone();
        // Taken before the resolve: any change after it makes the first use check again.
        let generation = vault.generation().ok();
        let mut resolved = match vault.resolve(&access) {
            Ok(resolved) => resolved,
            Err(refused @ skillbox_vault::Error::NotGranted { .. }) => {
                self.ask_approver(&vault, &declared, access, refused).await?
            }
            Err(e) => return Err(e.into()),
        };
        // An OAuth 2 token that is missing or expires within the margin is refreshed first.
        let mut refreshed = false;
        if Refresher::needs_refresh(&resolved.value) {
            let r = resolved.credential.reference();
            match self.record.services.oauth.fresh(&vault, &resolved.credential.id, &r, &resolved.value, false).await {
                Ok(Some(value)) => {
                    resolved.value = value;
                    refreshed = true;
                }
                Ok(None) => {}
                Err(e) => return Err(self.refresh_failed(&r, "credentials.open", e)),
            }
        }
        let mut open = self.open_resolved(declared, resolved, recheck)?;
        if refreshed {
            open.id = refreshed_id(&open.id);
        }
        if open.recheck.one_time_approval.is_none() && open.grant_less {
            open.recheck.one_time_approval = Some(open.recheck.user.clone());
        }
        *open.generation.get_mut().unwrap_or_else(|p| p.into_inner()) = generation;
        Ok(open)
    }

    /// After a `401` to a request made with `open`: gets a new access token (unless another
    /// caller already did) and makes the handle use it. `Ok(false)`: the credential cannot be
    /// refreshed, so the `401` stands.
    pub(crate) async fn refresh_after_401(&mut self, open: &mut OpenCredential) -> Result<bool, HostError> {
        match refresh_after_401(&self.record, &self.scanner.secrets, open, "http.send").await? {
            Some(value) => {
                open.set_value(value);
                self.remember_open(open);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A failed refresh as the guest's error (see [`refresh_failed`]).
    fn refresh_failed(&mut self, r: &CredentialRef, operation: &str, error: skillbox_oauth::Error) -> HostError {
        refresh_failed(&self.record, &self.scanner.secrets, r, operation, error)
    }

    /// Before every use of `open`: see [`still_granted`].
    pub(crate) fn check_still_granted(&mut self, open: &OpenCredential, operation: &str) -> Result<(), HostError> {
        still_granted(&self.record, &self.scanner.secrets, open, operation)
    }

    fn access(&self, name: &str) -> Access {
        let inv = &self.record.invocation;
        Access {
            skill: inv.skill.to_string(),
            skill_digest: inv.digest.to_string(),
            declared_name: name.to_owned(),
            environment: inv.environment,
            owner: inv.user.clone(),
            // The vault records it as the actor of the `read` row.
            user: inv.actor.clone(),
            purpose: (!inv.purpose.is_empty()).then(|| inv.purpose.clone()),
            one_time_approval: None,
            policy: inv.policy.pinned(name),
        }
    }

    /// Asks the approver about an ungranted credential; resolves it if allowed.
    /// `refused` is the vault's answer without approval, returned on a denial.
    async fn ask_approver(
        &mut self,
        vault: &Vault,
        declared: &CredentialDecl,
        mut access: Access,
        refused: skillbox_vault::Error,
    ) -> Result<Resolved, HostError> {
        let credential =
            CredentialRef { owner: access.owner.clone(), environment: access.environment, name: declared.name.clone() };
        if vault.show(&credential).is_err() {
            // Nothing to approve: the vault has no such credential.
            return Err(refused.into());
        }
        let request = ApprovalRequest {
            skill: access.skill.clone(),
            skill_digest: access.skill_digest.clone(),
            credential: declared.name.clone(),
            kind: declared.kind.as_str().to_owned(),
            hosts: declared.hosts.iter().map(|h| h.to_string()).collect(),
            purpose: declared.purpose.clone(),
            user: access.owner.clone(),
            environment: access.environment.as_str().to_owned(),
        };
        let approver = self.record.invocation.approver.clone().unwrap_or_else(|| self.record.services.approver.clone());
        let decision = tokio::task::spawn_blocking(move || approver.approve(&request))
            .await
            .map_err(|e| HostError::Trap(wasmtime::Error::msg(format!("approver failed: {e}"))))?;
        match decision {
            Approval::Deny => Err(refused.into()),
            Approval::Once => {
                access.one_time_approval = Some(access.user.clone());
                Ok(vault.resolve(&access)?)
            }
            Approval::Always => {
                let mut grant = NewGrant::new(access.skill.clone(), credential);
                grant.skill_digest = Some(access.skill_digest.clone());
                grant.policy = access.policy.clone();
                grant.reason = Some("approved on first use".into());
                vault.grant(&grant, &access.user)?;
                Ok(vault.resolve(&access)?)
            }
        }
    }

    /// Checks the resolved credential against the declaration and builds the handle.
    fn open_resolved(
        &mut self,
        declared: CredentialDecl,
        resolved: Resolved,
        recheck: Access,
    ) -> Result<OpenCredential, HostError> {
        let Resolved { credential, grant, value } = resolved;
        if !kinds_compatible(declared.kind, value.kind()) {
            let error = HostError::wrong_kind(format!(
                "skill.toml declares `{}` as {}, but the granted credential `{}` is {}: fix the manifest's `kind` or grant a credential of that kind",
                declared.name,
                declared.kind.as_str(),
                credential.name,
                value.kind().as_str()
            ));
            self.record_denial(Some(&declared.name), "credentials.open", &error);
            return Err(error);
        }
        let hosts = match grant.as_ref().and_then(|g| g.hosts.as_ref()) {
            Some(overrides) => overrides
                .iter()
                .map(|h| HostPattern::parse(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| HostError::invalid(format!("the grant's --hosts override is not valid: {e}")))?,
            None => declared.hosts.clone(),
        };
        let narrowed = grant.as_ref().and_then(|g| g.response).map(|mode| match mode {
            ResponseMode::Status => ResponseScope::Status,
            ResponseMode::Headers => ResponseScope::Headers,
            _ => ResponseScope::Full,
        });
        let response = narrowed.map_or(declared.response, |n| n.min(declared.response));
        let credential_ref = CredentialRef {
            owner: credential.owner.clone(),
            environment: credential.environment,
            name: credential.name.clone(),
        };
        tracing::debug!(skill = %self.record.invocation.skill, credential = %declared.name, "opened credential");
        let deadline = [credential.expires_at, grant.as_ref().and_then(|g| g.expires_at)].into_iter().flatten().min();
        let grant_less = grant.is_none();
        let usage = self.record.track_handle(&declared.name, credential_ref.clone(), declared.transparent);
        Ok(OpenCredential {
            usage,
            recheck,
            generation: std::sync::Mutex::new(None),
            deadline,
            grant_less,
            declared,
            id: credential.id.clone(),
            version: credential.version,
            response,
            credential: credential_ref,
            service: credential.service,
            scopes: credential.scopes,
            expires_at: credential.expires_at,
            value,
            hosts,
            injection: OnceLock::new(),
        })
    }
}

/// After a `401` to a request made with `open` (by `operation`): a new value for it, from the
/// provider or, when another caller already refreshed, from the vault (single-flight through
/// the runtime's [`Refresher`], which stores and audits it). `Ok(None)`: the credential cannot
/// be refreshed, so the `401` stands. A failed refresh is recorded ([`refresh_failed`]) and
/// returned as the guest's error. Shared by `http.send` and `wasi:http`.
pub(crate) async fn refresh_after_401(
    record: &Recorder,
    secrets: &Redactor,
    open: &OpenCredential,
    operation: &str,
) -> Result<Option<SecretValue>, HostError> {
    let Some(vault) = record.services.vault.clone() else { return Ok(None) };
    if !open.refreshable() {
        return Ok(None);
    }
    let r = &open.credential;
    let id = open.id.split('#').next().unwrap_or_default();
    match record.services.oauth.fresh(&vault, id, r, &open.value, true).await {
        Ok(value) => Ok(value),
        Err(e) => Err(refresh_failed(record, secrets, r, operation, e)),
    }
}

/// A failed refresh as the guest's error, recorded as a denial; `invalid_grant` also
/// marks the credential as needing a new sign-in (`skillbox cred due` lists it). Either
/// failure raises an alert.
fn refresh_failed(
    record: &Recorder,
    secrets: &Redactor,
    r: &CredentialRef,
    operation: &str,
    error: skillbox_oauth::Error,
) -> HostError {
    let name = r.name.as_str();
    tracing::warn!(skill = %record.invocation.skill, credential = name, "OAuth 2 refresh failed: {error}");
    if let (skillbox_oauth::Error::InvalidGrant { code, .. }, Some(vault)) = (&error, &record.services.vault)
        && let Err(e) = vault.mark_needs_reauth(r, &format!("refresh refused ({code})"), skillbox_oauth::ACTOR)
    {
        tracing::error!(credential = name, "could not mark the credential as needing re-authorization: {e}");
    }
    if let Some(alerts) = &record.services.alerts {
        use skillbox_alerts::{Alert, AlertKind, Subject};
        let kind = match error {
            skillbox_oauth::Error::InvalidGrant { .. } => AlertKind::NeedsReauth,
            _ => AlertKind::RefreshFailed,
        };
        let subject = Subject {
            skill: Some(record.invocation.skill.to_string()),
            credential: Some(name.to_owned()),
            user: Some(r.owner.clone()),
            environment: Some(r.environment.as_str().to_owned()),
            host: None,
        };
        // The error text names the credential and the provider's code, never a token.
        alerts.raise(Alert::new(kind, subject, error.to_string()));
    }
    let host_error = match &error {
        skillbox_oauth::Error::InvalidGrant { .. } | skillbox_oauth::Error::NotRefreshable { .. } => {
            HostError::Guest(WitError::Expired(error.to_string()))
        }
        _ => HostError::upstream(error.to_string()),
    };
    record.record_denial(secrets, Some(name), operation, &host_error);
    host_error
}

/// Before every use of `open` (by `operation`): has it expired, or has the vault changed since
/// it was last checked and now refuses it (revoked, ungranted, suspended, expired)? A refusal
/// is a denial like one at `open`.
pub(crate) fn still_granted(
    record: &Recorder,
    secrets: &Redactor,
    open: &OpenCredential,
    operation: &str,
) -> Result<(), HostError> {
    let expired = open.deadline.is_some_and(|d| SystemTime::now() >= d);
    let Some(vault) = record.services.vault.clone() else { return Ok(()) };
    let current = vault.generation().ok();
    let known = *open.generation.lock().unwrap_or_else(|p| p.into_inner());
    if !expired && current.is_some() && current == known {
        return Ok(());
    }
    match vault.recheck(&open.recheck) {
        Ok(()) if !expired => {
            *open.generation.lock().unwrap_or_else(|p| p.into_inner()) = current;
            Ok(())
        }
        Ok(()) => {
            let error = HostError::Guest(WitError::Expired(format!(
                "credential `{}` (or its grant) expired during this run",
                open.name()
            )));
            record.record_denial(secrets, Some(open.name()), operation, &error);
            Err(error)
        }
        Err(refused) => {
            let error = HostError::from(refused);
            record.record_denial(secrets, Some(open.name()), operation, &error);
            Err(error)
        }
    }
}

/// The cache key of a handle whose value was refreshed in this invocation: unique, so no
/// matcher or injection built for the old token is ever reused for the new one.
fn refreshed_id(id: &str) -> String {
    static REFRESHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = REFRESHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}#refreshed-{n}", id.split('#').next().unwrap_or_default())
}

/// A manifest's `bearer` also accepts an `oauth2` credential (both are tokens).
fn kinds_compatible(declared: CredentialKind, actual: CredentialKind) -> bool {
    use CredentialKind::{Bearer, OAuth2};
    declared == actual || matches!((declared, actual), (Bearer, OAuth2) | (OAuth2, Bearer))
}

fn wit_kind(kind: CredentialKind) -> Kind {
    match kind {
        CredentialKind::ApiKey => Kind::ApiKey,
        CredentialKind::Bearer => Kind::Bearer,
        CredentialKind::OAuth2 => Kind::Oauth2,
        CredentialKind::Basic => Kind::Basic,
        CredentialKind::Database => Kind::Database,
        CredentialKind::HmacKey => Kind::HmacKey,
        _ => Kind::Custom,
    }
}

/// Reads a secret as text, for the few host paths that need it as `&str`.
pub(crate) fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}
