//! Loads skillbox skill components and runs them under memory, time and capability limits.
//!
//! A [`Runtime`] owns one wasmtime engine (component model, async host
//! calls, epoch deadlines, pooling allocator), a linker holding WASI (with
//! nothing granted) and the `skillbox:skill` imports, and an optional
//! on-disk [`ComponentCache`]. [`Runtime::load`] reads a `skill.toml`,
//! compiles or loads its component and pre-links it once; [`Skill::invoke`]
//! then runs it in a fresh store per call, as many calls at once as the
//! pool allows.
//!
//! ```no_run
//! # async fn demo() -> Result<(), skillbox_runtime::Error> {
//! use skillbox_runtime::{Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let skill = runtime.load("sample-skills/hello")?;
//! let output = skill.invoke(r#"{"name":"Ada"}"#).await?;
//! assert!(output.json.contains("Hello, Ada!"));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod cache;
pub mod catalogue;
pub mod config;
pub mod display;
mod engine;
mod error;
mod inspect;
pub mod manifest;
pub mod schema;
mod skill;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skillbox_egress::EgressConfig;
use skillbox_host_api::HostServices;
use skillbox_vault::Vault;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use cache::{CacheOutcome, ComponentCache};
pub use catalogue::{Catalogue, Tool};
pub use error::{Error, Result, SkillFailure};
pub use inspect::{ComponentInfo, Item};
pub use manifest::{Limits, Manifest};
pub use skill::{InvocationContext, MAX_ERROR_MESSAGE_BYTES, MAX_OUTPUT_BYTES, Output, Skill};
pub use skillbox_alerts as alerts;
pub use skillbox_egress as egress;
pub use skillbox_host_api::limits;
pub use skillbox_host_api::{Approval, ApprovalRequest, Approver, DenyAll, ScanConfig, SkillPolicy, Tripped};
pub use skillbox_vault as vault;

use store::StoreState;

/// How a [`Runtime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// Most invocations live at once; more wait for a slot. Sizes the pool.
    pub max_concurrent: u32,
    /// Most bytes of guest stdout (and, separately, stderr) kept per call.
    pub max_stdio_bytes: usize,
    /// Outbound HTTP settings (loopback http for tests, private ranges, limits).
    pub egress: EgressConfig,
    /// The leak scanner: foreign-token rules and policy, view limits, tripwire threshold.
    pub scan: ScanConfig,
    /// The operator's caps on what a manifest's `[limits]` may ask for.
    pub limits: OperatorLimits,
    /// Skill directories `skillbox mcp` and `skillbox serve` load (`[serve] skills` in the
    /// config file, relative to it), besides any `--skills` given.
    pub skills: Vec<PathBuf>,
    /// Where alerts go (`[alerts]` in the config file): webhooks, commands, the log.
    pub alerts: skillbox_alerts::AlertsConfig,
}

/// The operator's caps on a skill's limits: a manifest that asks for more memory, time or
/// fuel than these runs at the cap instead (with a warning naming the skill).
///
/// Set with `skillbox run --max-memory/--max-timeout/--fuel` or the `[limits]` table of
/// `skillbox.toml`. The defaults ([`OperatorLimits::DEFAULT_MAX_MEMORY`],
/// [`OperatorLimits::DEFAULT_MAX_TIMEOUT`], no fuel cap) bound what a skill author alone
/// can take from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorLimits {
    /// Most linear memory any skill may grow to, in bytes (at most 4 GiB).
    pub max_memory: u64,
    /// Longest wall-clock time any invocation may take.
    pub max_timeout: Duration,
    /// Most fuel (wasmtime instruction budget) any invocation may use; `None` leaves it to
    /// the manifest (whose default is no fuel limit).
    pub fuel: Option<u64>,
}

impl OperatorLimits {
    /// Default memory cap: 512 MiB.
    pub const DEFAULT_MAX_MEMORY: u64 = 512 * 1024 * 1024;
    /// Default time cap: 60 s.
    pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(60);

    /// The limits a skill whose manifest asks for `asked` actually runs with: each one the
    /// smaller of what it asks and the cap. The second value says which were capped.
    pub fn apply(&self, asked: &Limits) -> (Limits, Capped) {
        let max_memory = self.max_memory.min(manifest::MAX_MEMORY);
        let capped = Capped {
            memory: asked.memory > max_memory,
            timeout: asked.timeout > self.max_timeout,
            fuel: match (asked.fuel, self.fuel) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(asked), Some(cap)) => asked > cap,
            },
        };
        let effective = Limits {
            memory: asked.memory.min(max_memory),
            timeout: asked.timeout.min(self.max_timeout),
            fuel: match (asked.fuel, self.fuel) {
                (Some(a), Some(c)) => Some(a.min(c)),
                (a, c) => a.or(c),
            },
        };
        (effective, capped)
    }
}

impl Default for OperatorLimits {
    fn default() -> Self {
        OperatorLimits { max_memory: Self::DEFAULT_MAX_MEMORY, max_timeout: Self::DEFAULT_MAX_TIMEOUT, fuel: None }
    }
}

/// Which of a manifest's limits an operator cap lowered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capped {
    /// `limits.memory` was above the memory cap.
    pub memory: bool,
    /// `limits.timeout` was above the time cap.
    pub timeout: bool,
    /// `limits.fuel` was above the fuel cap, or absent while there is one.
    pub fuel: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: ComponentCache::default_dir(),
            max_concurrent: 256,
            max_stdio_bytes: 64 * 1024,
            egress: EgressConfig::default(),
            scan: ScanConfig::default(),
            limits: OperatorLimits::default(),
            skills: Vec::new(),
            alerts: skillbox_alerts::AlertsConfig::default(),
        }
    }
}

/// The skill host: engine, linker, compile cache. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: Option<ComponentCache>,
    slots: Semaphore,
    services: Arc<HostServices>,
    config: RuntimeConfig,
}

impl std::fmt::Debug for RuntimeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeInner").field("cache", &self.cache).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and linker, and opens the compile cache. Without a
    /// vault, skills that open credentials are refused.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let services = host_services(&config, None)?;
        Runtime::with_services(config, services)
    }

    /// Like [`Runtime::new`], with a credential vault: skills may open what
    /// it grants them, and `approver` decides about declared but ungranted
    /// credentials.
    pub fn with_vault(config: RuntimeConfig, vault: Arc<Vault>, approver: Arc<dyn Approver>) -> Result<Runtime> {
        let services = host_services(&config, Some(&vault))?.with_vault(vault, approver);
        Runtime::with_services(config, services)
    }

    fn with_services(config: RuntimeConfig, services: HostServices) -> Result<Runtime> {
        let engine = engine::build_engine(config.max_concurrent, config.limits.max_memory)?;
        engine::EpochTicker::start(&engine);
        let linker = build_linker(&engine)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ComponentCache::open(dir, &engine)?),
            None => None,
        };
        let slots = Semaphore::new(config.max_concurrent as usize);
        let services = Arc::new(services);
        Ok(Runtime { inner: Arc::new(RuntimeInner { engine, linker, cache, slots, services, config }) })
    }

    /// The wasmtime engine, for embedders who want to share it.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Loads the skill whose manifest is at `path` (a `skill.toml` or its directory).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Skill> {
        self.load_manifest(Manifest::load(path)?)
    }

    /// Loads a skill from an already parsed manifest.
    pub fn load_manifest(&self, manifest: Manifest) -> Result<Skill> {
        Skill::load(self.inner.clone(), manifest).map(|(skill, _)| skill)
    }

    /// Compiles a manifest's component (without linking it, so this works
    /// for components that are not valid skills) and lists its imports and exports.
    pub fn inspect(&self, manifest: &Manifest) -> Result<ComponentInfo> {
        let path = manifest.component_path();
        let compiled = skill::compile(&self.inner, &path)?;
        let path = path.canonicalize().unwrap_or(path);
        Ok(inspect::inspect_component(&self.inner.engine, &compiled.component, path, compiled.digest, compiled.size))
    }

    /// The limits a skill with `manifest` runs with here: its own, capped by the operator's.
    pub fn effective_limits(&self, manifest: &Manifest) -> Limits {
        self.inner.config.limits.apply(&manifest.limits).0
    }

    /// Like [`Runtime::load`], also saying whether the compile cache was hit.
    pub fn load_reporting_cache(&self, path: impl AsRef<Path>) -> Result<(Skill, CacheOutcome)> {
        Skill::load(self.inner.clone(), Manifest::load(path)?)
    }
}

fn host_services(config: &RuntimeConfig, vault: Option<&Arc<Vault>>) -> Result<HostServices> {
    let alerts = skillbox_alerts::Alerts::new(config.alerts.clone(), vault.cloned())
        .map_err(|e| Error::Engine(format!("setting up alerts: {e}")))?;
    Ok(HostServices::new(config.egress.clone())
        .map_err(|e| Error::Engine(format!("setting up outbound HTTP: {e}")))?
        .with_scan(config.scan.clone())
        .with_alerts(Arc::new(alerts)))
}

fn build_linker(engine: &Engine) -> Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    let link = |e: wasmtime::Error| Error::Engine(format!("linking host interfaces: {e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
    // Standard wasi:http (types and outgoing-handler only): every request reaches the
    // host-api hook, which holds it to the egress policy; there is no other sender.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link)?;
    skillbox_host_api::add_to_linker(&mut linker).map_err(link)?;
    Ok(linker)
}
