//! A loaded skill and how one invocation of it runs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};
use skillbox_host_api::{Invocation, LimitExceeded, SkillCtx, SkillError, SkillPolicy, SkillPre};
use wasmtime::component::Component;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::cache::CacheOutcome;
use crate::display::escape;
use crate::error::{Error, Result, SkillFailure};
use crate::manifest::Limits;
use crate::manifest::Manifest;
use crate::store::StoreState;
use crate::{Capped, RuntimeInner};

/// Largest result a skill may return from `run`. Checked as soon as the result is out of the
/// guest, before the host scans, redacts or copies it; a larger one is a
/// [`HostLimit`](Error::HostLimit) error.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// Longest message of a skill's own error that is passed on; the rest is cut off before the
/// host scans or copies it.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 64 * 1024;

/// A skill ready to run: manifest checked, component compiled and pre-linked.
///
/// Cheap to clone and safe to share across tasks; every [`Skill::invoke`]
/// gets its own store.
#[derive(Clone, Debug)]
pub struct Skill {
    inner: Arc<SkillInner>,
}

struct SkillInner {
    runtime: Arc<RuntimeInner>,
    manifest: Manifest,
    /// The manifest's limits, capped by the operator's.
    limits: Limits,
    capped: Capped,
    name: Arc<str>,
    digest: Arc<str>,
    policy: Arc<SkillPolicy>,
    component: Component,
    pre: SkillPre<StoreState>,
    /// The component imports `wasi:http/outgoing-handler`: its transparent credentials are
    /// opened before it runs.
    uses_wasi_http: bool,
}

impl std::fmt::Debug for SkillInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Skill").field("name", &self.name).field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// Who is invoking a skill, where, and why.
///
/// Carried through to every host call; credential access is decided and
/// audited against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationContext {
    /// The user or tenant on whose behalf the skill runs.
    pub user: String,
    /// The environment (`dev`, `staging`, `production`).
    pub environment: String,
    /// Why the skill is being run, in the caller's words.
    pub purpose: String,
    /// Who asked for the run, recorded as the actor of every audit row it causes: the
    /// operating-system account for `skillbox run`, `apikey:<fingerprint>` for a call through
    /// `skillbox serve`. `None`: [`InvocationContext::user`].
    pub actor: Option<String>,
}

impl Default for InvocationContext {
    fn default() -> Self {
        InvocationContext { user: "default".into(), environment: "dev".into(), purpose: String::new(), actor: None }
    }
}

/// What a successful invocation produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// The skill's result: JSON text, already checked to parse.
    pub json: String,
    /// What the guest wrote to stdout (capped).
    pub stdout: Vec<u8>,
    /// What the guest wrote to stderr (capped).
    pub stderr: Vec<u8>,
    /// Fuel the invocation consumed.
    pub fuel_consumed: u64,
    /// Wall-clock time of the invocation, instantiation included.
    pub elapsed: Duration,
    /// Log lines the skill wrote past its per-invocation log cap, dropped unwritten
    /// ([`limits::MAX_LOG_LINES`](crate::limits::MAX_LOG_LINES),
    /// [`limits::MAX_LOG_BYTES`](crate::limits::MAX_LOG_BYTES)).
    pub log_lines_dropped: u64,
}

impl Skill {
    pub(crate) fn load(runtime: Arc<RuntimeInner>, manifest: Manifest) -> Result<(Skill, CacheOutcome)> {
        let path = manifest.component_path();
        let compiled = compile(&runtime, &path)?;
        let pre = link(&runtime, &compiled.component, &path)?;
        // Manifest::parse already checked the policy; a hand-built manifest is checked here.
        let policy =
            Arc::new(manifest.policy().map_err(|message| Error::Manifest { path: manifest.path.clone(), message })?);
        let name: Arc<str> = manifest.skill.name.as_str().into();
        tracing::debug!(skill = %name, digest = %compiled.digest, cache = ?compiled.outcome, "loaded skill");
        let (limits, capped) = runtime.config.limits.apply(&manifest.limits);
        warn_capped(&name, &manifest.limits, &limits, capped);
        let digest = compiled.digest.into();
        let uses_wasi_http = imports_wasi_http(&runtime.engine, &compiled.component);
        if !uses_wasi_http && let Some(decl) = policy.credentials.iter().find(|c| c.transparent) {
            tracing::warn!(
                skill = %name,
                credential = %decl.name,
                "`transparent = true` has no effect: the component does not import wasi:http/outgoing-handler"
            );
        }
        let inner = SkillInner {
            runtime,
            manifest,
            limits,
            capped,
            name,
            digest,
            policy,
            component: compiled.component,
            pre,
            uses_wasi_http,
        };
        Ok((Skill { inner: Arc::new(inner) }, compiled.outcome))
    }

    /// The skill's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The limits it runs with: its manifest's, capped by the operator's
    /// ([`RuntimeConfig::limits`](crate::RuntimeConfig::limits)).
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The skill's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Hex SHA-256 of the component file: with the name, the skill's identity.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// What the manifest allows the skill (credentials, hosts, SQL writes).
    pub fn policy(&self) -> &SkillPolicy {
        &self.inner.policy
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        &self.inner.component
    }

    /// Runs the skill once with `input` (JSON text) and the default context.
    pub async fn invoke(&self, input: &str) -> Result<Output> {
        self.invoke_with(input, &InvocationContext::default()).await
    }

    /// Runs the skill once with `input` (JSON text) on behalf of `context`.
    pub async fn invoke_with(&self, input: &str, context: &InvocationContext) -> Result<Output> {
        self.invoke_inner(input, context, None).await
    }

    /// [`Skill::invoke_with`], asking `approver` (not the runtime's) about credentials the
    /// skill declares but is not granted: an MCP client that can show the operator a form.
    pub async fn invoke_approved_by(
        &self,
        input: &str,
        context: &InvocationContext,
        approver: Arc<dyn skillbox_host_api::Approver>,
    ) -> Result<Output> {
        self.invoke_inner(input, context, Some(approver)).await
    }

    async fn invoke_inner(
        &self,
        input: &str,
        context: &InvocationContext,
        approver: Option<Arc<dyn skillbox_host_api::Approver>>,
    ) -> Result<Output> {
        serde_json::from_str::<IgnoredAny>(input).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let mut invocation = self.invocation(context)?;
        invocation.approver = approver;
        let runtime = &self.inner.runtime;
        // The semaphore is never closed, so acquire only fails if it were.
        let _slot = runtime.slots.acquire().await.expect("invocation semaphore is never closed");
        let limits = &self.inner.limits;
        let started = Instant::now();
        tracing::debug!(skill = %self.inner.name, user = %context.user, environment = %context.environment, "invoking");

        let mut store = self.new_store(invocation, started + limits.timeout)?;
        let call = async {
            if self.inner.uses_wasi_http {
                store.data_mut().skill_ctx_mut().open_transparent().await;
            }
            let instance = self.inner.pre.instantiate_async(&mut store).await?;
            instance.call_run(&mut store, input).await
        };
        // The epoch callback stops guest code at the deadline; this timeout
        // also covers time spent waiting in host calls.
        let result = match tokio::time::timeout(limits.timeout, call).await {
            Ok(result) => result,
            Err(_elapsed) => Err(wasmtime::Error::new(DeadlineExceeded)),
        };
        let fuel_consumed = limits.fuel.unwrap_or(u64::MAX) - store.get_fuel().unwrap_or(0);
        // The guest is done: repeated refusals are written as their counts now.
        store.data_mut().skill_ctx_mut().finish();
        let tripwire =
            |host: &SkillCtx| host.tripped().map(|tripped| Error::Tripwire { skill: self.name().to_owned(), tripped });
        // A tripwire during the run ends it; nothing the guest produced is handed on.
        if let Some(error) = tripwire(store.data().skill_ctx()) {
            return Err(error);
        }
        let (stdout, stderr) = self.drain_stdio(&mut store);
        let elapsed = started.elapsed();
        if let Some(error) = tripwire(store.data().skill_ctx()) {
            return Err(error);
        }

        let memory_hit = store.data().limiter.hit;
        let host = store.data_mut().skill_ctx_mut();
        let returned = result.map_err(|e| self.classify_failure(e, memory_hit, host.limit(), &stderr))?;
        let json = match returned {
            Ok(json) => json,
            Err(e) => {
                let failure = self.check_failure(host, e);
                return Err(tripwire(host).unwrap_or_else(|| self.skill_failure(failure, host)));
            }
        };
        if json.len() > MAX_OUTPUT_BYTES {
            return Err(Error::HostLimit {
                skill: self.name().to_owned(),
                message: format!(
                    "its result is {} bytes, over the {} MiB limit on a skill's result; return less (or page it)",
                    json.len(),
                    MAX_OUTPUT_BYTES / (1024 * 1024)
                ),
            });
        }
        // The result leaves the sandbox: a secret in it, in any view, trips the wire.
        let json = match host.check_outbound("output", json.as_bytes()) {
            Ok(()) => host.redactor().without_any_short().redact_str(&json).into_owned(),
            Err(tripped) => return Err(Error::Tripwire { skill: self.name().to_owned(), tripped }),
        };
        let json = host.clean_foreign("output", &json).map_err(|rule| Error::SkillFailed {
            skill: self.name().to_owned(),
            error: SkillFailure::Failed(format!(
                "the result was withheld: it contained a token matching rule `{rule}`, and foreign tokens are blocked for this skill"
            )),
        })?;
        let json = json.into_owned();
        serde_json::from_str::<IgnoredAny>(&json)
            .map_err(|e| Error::InvalidOutput { skill: self.name().into(), reason: e.to_string() })?;
        let log_lines_dropped = host.log_lines_dropped();
        Ok(Output { json, stdout, stderr, fuel_consumed, elapsed, log_lines_dropped })
    }

    /// The host-side view of one invocation: who, where, why, under what policy.
    fn invocation(&self, context: &InvocationContext) -> Result<Invocation> {
        let environment = context.environment.parse().map_err(|_| {
            Error::InvalidContext(format!(
                "environment {:?} is not known; use dev, staging or production",
                context.environment
            ))
        })?;
        Ok(Invocation {
            skill: self.inner.name.clone(),
            digest: self.inner.digest.clone(),
            policy: self.inner.policy.clone(),
            user: context.user.clone(),
            actor: context.actor.clone().unwrap_or_else(|| context.user.clone()),
            environment,
            purpose: context.purpose.clone(),
            foreign: self.inner.manifest.foreign_action(),
            approver: None,
        })
    }

    /// The skill's own error, cut to [`MAX_ERROR_MESSAGE_BYTES`], checked like its result (a
    /// secret in it trips the wire, so `tripped` is set) and scrubbed.
    fn check_failure(&self, host: &mut SkillCtx, error: SkillError) -> SkillFailure {
        let (invalid_input, message) = match &error {
            SkillError::InvalidInput(m) => (true, m),
            SkillError::Failed(m) => (false, m),
        };
        let message = skillbox_host_api::truncate_at_char_boundary(message, MAX_ERROR_MESSAGE_BYTES);
        let _ = host.check_outbound("error", message.as_bytes());
        let message = host.redactor().without_any_short().redact_str(message).into_owned();
        let message = host.scanner().foreign(std::borrow::Cow::Borrowed(message.as_bytes())).map_or_else(
            |_| "[withheld: it contained a foreign token]".to_owned(),
            |c| String::from_utf8_lossy(&c.bytes).into_owned(),
        );
        if invalid_input { SkillFailure::InvalidInput(message) } else { SkillFailure::Failed(message) }
    }

    /// A `run` error, reported as a limit when a host limit was hit during the run, or as a
    /// denial when access was refused: either says how to fix it, the skill's own message
    /// rarely does.
    fn skill_failure(&self, failure: SkillFailure, host: &SkillCtx) -> Error {
        let skill = self.name().to_owned();
        if let Some(limit) = host.limit() {
            return Error::HostLimit { skill, message: format!("{limit} (the skill then failed: {failure})") };
        }
        match host.denials().first() {
            Some(reason) => Error::Denied { skill, reason: reason.clone(), skill_error: Some(failure.to_string()) },
            None => Error::SkillFailed { skill, error: failure },
        }
    }

    fn new_store(&self, invocation: Invocation, deadline: Instant) -> Result<Store<StoreState>> {
        let runtime = &self.inner.runtime;
        let limits = &self.inner.limits;
        let host = SkillCtx::new(invocation, runtime.services.clone());
        let state = StoreState::new(host, limits.memory, runtime.config.max_stdio_bytes);
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| Error::Engine(format!("{e:#}")))?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                // Yield at every tick so a busy guest shares its worker thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }

    /// Takes the guest's captured stdio, checked like its result (a secret trips the wire),
    /// scrubbed, and forwards it to `tracing`.
    fn drain_stdio(&self, store: &mut Store<StoreState>) -> (Vec<u8>, Vec<u8>) {
        let state = store.data_mut();
        let (stdout, out_dropped) = state.stdout.take();
        let (stderr, err_dropped) = state.stderr.take();
        let host = state.skill_ctx_mut();
        let mut clean = |channel: &str, bytes: Vec<u8>| -> Vec<u8> {
            if bytes.is_empty() || host.check_outbound(channel, &bytes).is_err() {
                return Vec::new();
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let text = host.redactor().without_any_short().redact_str(&text).into_owned();
            match host.clean_foreign(channel, &text) {
                Ok(text) => text.into_owned().into_bytes(),
                Err(_) => Vec::new(),
            }
        };
        let stdout = clean("stdout", stdout);
        let stderr = clean("stderr", stderr);
        let skill = &*self.inner.name;
        // Escaped: a skill must not forge log lines or send terminal control sequences.
        for line in String::from_utf8_lossy(&stdout).lines() {
            tracing::info!(target: "skill::stdout", skill, "{}", escape(line));
        }
        for line in String::from_utf8_lossy(&stderr).lines() {
            tracing::warn!(target: "skill::stderr", skill, "{}", escape(line));
        }
        if out_dropped + err_dropped > 0 {
            tracing::warn!(skill, out_dropped, err_dropped, "guest output past the capture cap was dropped");
        }
        (stdout, stderr)
    }

    /// Turns a wasmtime error from instantiate/call into the error a caller can act on; `limit`
    /// is the host limit the guest hit during the run, if any.
    fn classify_failure(
        &self,
        error: wasmtime::Error,
        memory_limit_hit: bool,
        limit: Option<&LimitExceeded>,
        stderr: &[u8],
    ) -> Error {
        let skill = self.name().to_owned();
        let limits = &self.inner.limits;
        if error.downcast_ref::<DeadlineExceeded>().is_some() || error.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
        {
            return Error::TimeLimit { skill, limit: limits.timeout, operator_cap: self.inner.capped.timeout };
        }
        if memory_limit_hit {
            return Error::MemoryLimit { skill, limit: limits.memory, operator_cap: self.inner.capped.memory };
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
            let limit = limits.fuel.unwrap_or(u64::MAX);
            return Error::FuelLimit { skill, limit, operator_cap: self.inner.capped.fuel };
        }
        if let Some(limit) = limit {
            return Error::HostLimit { skill, message: limit.to_string() };
        }
        let mut message = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        if let Some(tail) = stderr_tail(stderr) {
            message.push_str("; guest stderr: ");
            message.push_str(&tail);
        }
        Error::Trap { skill, message }
    }
}

/// Marker error raised when an invocation passes its deadline.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// The last few lines the guest wrote to stderr (a Rust panic message lands there).
fn stderr_tail(stderr: &[u8]) -> Option<String> {
    const MAX: usize = 512;
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut start = text.len().saturating_sub(MAX);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    Some(escape(&text[start..].replace('\n', " | ")).into_owned())
}

/// Says, once per load, which of a skill's limits the operator's caps lowered.
fn warn_capped(skill: &str, asked: &Limits, effective: &Limits, capped: Capped) {
    let size = |n: u64| bytesize::ByteSize::b(n).display().iec().to_string();
    if capped.memory {
        tracing::warn!(
            skill,
            "skill `{skill}` asks for limits.memory {}; it runs at the operator's cap of {}",
            size(asked.memory),
            size(effective.memory)
        );
    }
    if capped.timeout {
        tracing::warn!(
            skill,
            "skill `{skill}` asks for limits.timeout {}; it runs at the operator's cap of {}",
            humantime::format_duration(asked.timeout),
            humantime::format_duration(effective.timeout)
        );
    }
    match (capped.fuel, asked.fuel) {
        (true, Some(asked)) => tracing::warn!(
            skill,
            "skill `{skill}` asks for limits.fuel {asked}; it runs at the operator's fuel cap of {}",
            effective.fuel.unwrap_or(u64::MAX)
        ),
        // No fuel limit of its own is the common case, not worth a warning.
        (true, None) => tracing::info!(
            skill,
            "skill `{skill}` runs at the operator's fuel cap of {}",
            effective.fuel.unwrap_or(u64::MAX)
        ),
        (false, _) => {}
    }
}

/// A compiled component and what identifies it.
pub(crate) struct Compiled {
    pub(crate) component: Component,
    /// Hex SHA-256 of the component file.
    pub(crate) digest: String,
    /// Size of the component file in bytes.
    pub(crate) size: u64,
    pub(crate) outcome: CacheOutcome,
}

/// Reads, checks and compiles (or loads from cache) the component at `path`.
pub(crate) fn compile(runtime: &RuntimeInner, path: &Path) -> Result<Compiled> {
    let bytes = std::fs::read(path).map_err(|source| Error::ComponentMissing { path: path.to_owned(), source })?;
    check_component_header(path, &bytes)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let compile = || {
        Component::new(&runtime.engine, &bytes)
            .map_err(|e| Error::Compile { path: path.to_owned(), message: format!("{e:#}") })
    };
    let (component, outcome) = match &runtime.cache {
        Some(cache) => cache.load_or_compile(&runtime.engine, &digest, compile)?,
        None => (compile()?, CacheOutcome::Compiled),
    };
    Ok(Compiled { component, digest, size: bytes.len() as u64, outcome })
}

/// Rejects files that are not components before wasmtime sees them, with a fix.
fn check_component_header(path: &Path, bytes: &[u8]) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
    let reason = if bytes.len() < 8 || &bytes[..4] != MAGIC {
        "it is not a WebAssembly file at all (expected a `.wasm` built for wasm32-wasip2)"
    } else if bytes[4..8] == CORE_MODULE {
        "it is a core WebAssembly module; build the skill for the wasm32-wasip2 target (or wrap the module with `wasm-tools component new`)"
    } else {
        return Ok(());
    };
    Err(Error::NotAComponent { path: path.to_owned(), reason: reason.into() })
}

/// Whether `component` imports `wasi:http/outgoing-handler` (any 0.2 version).
fn imports_wasi_http(engine: &wasmtime::Engine, component: &Component) -> bool {
    component.component_type().imports(engine).any(|(name, _)| name.starts_with("wasi:http/outgoing-handler@"))
}

/// Pre-links a component against the runtime's linker and checks it exports `run`.
fn link(runtime: &RuntimeInner, component: &Component, path: &Path) -> Result<SkillPre<StoreState>> {
    let not_a_skill = |e: wasmtime::Error| Error::NotASkill { path: path.to_owned(), reason: format!("{e:#}") };
    let instance_pre = runtime.linker.instantiate_pre(component).map_err(not_a_skill)?;
    SkillPre::new(instance_pre).map_err(|e| Error::NotASkill {
        path: path.to_owned(),
        reason: format!("{e:#} (a skill must export `run: func(input: string) -> result<string, skill-error>` from the skillbox:skill world)"),
    })
}
