//! The one error type of `skillbox-runtime`.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong loading or running a skill.
///
/// Variants carry what a person needs to fix the problem: the file, the
/// manifest key, the limit that was hit. No variant ever carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `skill.toml` could not be read or is not valid.
    #[error("invalid manifest {}: {message}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, naming the key and the fix.
        message: String,
    },

    /// The component file named by a manifest could not be read.
    #[error("cannot read component {}: {source} (build it with `skillbox build` or fix `skill.component`)", path.display())]
    ComponentMissing {
        /// The component file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// The file is WebAssembly (or not even that) but not a component.
    #[error("{} is not a WebAssembly component: {reason}", path.display())]
    NotAComponent {
        /// The file that was loaded.
        path: PathBuf,
        /// Why it was rejected, and how to produce a component instead.
        reason: String,
    },

    /// The component is valid but cannot be linked as a skill: it does not
    /// export the `skillbox:skill/skill` world's `run`, or imports something
    /// the host does not provide.
    #[error("{} is not a skillbox skill: {reason}", path.display())]
    NotASkill {
        /// The component file.
        path: PathBuf,
        /// What is missing or unsupported.
        reason: String,
    },

    /// wasmtime failed to compile the component.
    #[error("cannot compile {}: {message}", path.display())]
    Compile {
        /// The component file.
        path: PathBuf,
        /// wasmtime's message.
        message: String,
    },

    /// The runtime config file (`skillbox.toml`) could not be read or is not valid.
    #[error("invalid config file {}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key and the fix.
        message: String,
    },

    /// A tool catalogue (`--skills`) cannot be built: a directory that does not exist, or
    /// two skills with the same name (the message names both files).
    #[error("{0}")]
    Catalogue(String),

    /// The invocation context is not valid (for example an unknown environment).
    #[error("invalid invocation: {0}")]
    InvalidContext(String),

    /// The skill failed after being refused access to a credential or host.
    #[error("skill `{skill}` was denied access: {reason}")]
    Denied {
        /// The skill's name.
        skill: String,
        /// The first denial, which says how to grant access.
        reason: String,
        /// What the skill itself reported, if it returned an error.
        skill_error: Option<String>,
    },

    /// The skill tried to pass a secret out of the sandbox (in a request, SQL, a log line, its
    /// stdio or its result). The invocation was ended and nothing it produced is returned.
    #[error("skill `{skill}` was stopped: {tripped}")]
    Tripwire {
        /// The skill's name.
        skill: String,
        /// Where, which credential, which view; and any grants suspended as a result.
        tripped: skillbox_host_api::Tripped,
    },

    /// The caller's input is not JSON text.
    #[error("input is not valid JSON: {0}")]
    InvalidInput(String),

    /// The input does not match the skill's input schema (`[input] schema`).
    #[error("input for skill `{skill}` does not match its input schema: {message}")]
    InputSchema {
        /// The skill.
        skill: String,
        /// Which fields are wrong and how (JSON pointers), up to five.
        message: String,
    },

    /// The skill ran past its wall-clock limit and was stopped.
    #[error("skill `{skill}` hit its time limit of {} and was stopped ({})", humantime::format_duration(*limit),
        if *operator_cap { "the operator's cap, lower than its skill.toml asks; raise `--max-timeout` or `[limits] max_timeout` in skillbox.toml if it needs longer" }
        else { "raise `limits.timeout` in its skill.toml if it needs longer" })]
    TimeLimit {
        /// The skill's name.
        skill: String,
        /// The limit that was hit.
        limit: Duration,
        /// The limit was the operator's cap, not the manifest's own.
        operator_cap: bool,
    },

    /// The skill tried to grow its memory past its limit and was stopped.
    #[error("skill `{skill}` hit its memory limit of {} and was stopped ({})", bytesize::ByteSize::b(*limit).display().iec(),
        if *operator_cap { "the operator's cap, lower than its skill.toml asks; raise `--max-memory` or `[limits] max_memory` in skillbox.toml if it needs more" }
        else { "raise `limits.memory` in its skill.toml if it needs more" })]
    MemoryLimit {
        /// The skill's name.
        skill: String,
        /// The limit in bytes.
        limit: u64,
        /// The limit was the operator's cap, not the manifest's own.
        operator_cap: bool,
    },

    /// The skill used up its fuel (instruction budget) and was stopped.
    #[error("skill `{skill}` used up its fuel limit of {limit} and was stopped ({})",
        if *operator_cap { "the operator's cap; raise `--fuel` or `[limits] fuel` in skillbox.toml" }
        else { "raise `limits.fuel` in its skill.toml" })]
    FuelLimit {
        /// The skill's name.
        skill: String,
        /// The fuel it was given.
        limit: u64,
        /// The limit was the operator's cap, not the manifest's own.
        operator_cap: bool,
    },

    /// The skill hit a per-invocation host limit (too many host calls, handles or audit
    /// rows; a parameter, request or result too large: see
    /// [`limits`](crate::limits)) and was stopped, or failed after one was refused.
    #[error("skill `{skill}` hit a host limit: {message}")]
    HostLimit {
        /// The skill's name.
        skill: String,
        /// Which limit, the sizes involved, and what to do instead.
        message: String,
    },

    /// The guest trapped (panicked, hit `unreachable`, divided by zero...).
    #[error("skill `{skill}` crashed: {message}")]
    Trap {
        /// The skill's name.
        skill: String,
        /// The trap, plus the tail of the guest's stderr when it wrote one.
        message: String,
    },

    /// The skill returned an error of its own from `run`.
    #[error("skill `{skill}` failed: {error}")]
    SkillFailed {
        /// The skill's name.
        skill: String,
        /// The error the skill returned.
        error: SkillFailure,
    },

    /// The skill returned text that is not JSON.
    #[error("skill `{skill}` returned invalid JSON: {reason}")]
    InvalidOutput {
        /// The skill's name.
        skill: String,
        /// The JSON parser's complaint.
        reason: String,
    },

    /// The on-disk compile cache could not be used: its directory cannot be created, or it
    /// is refused (owned by another user, or writable by group or others). Loading works
    /// without it (`--no-cache`); a bad entry is skipped, not an error.
    #[error("compile cache {}: {source}", path.display())]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// The engine could not be configured (for example the pooling
    /// allocator could not reserve its address space).
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
}

impl Error {
    /// True when the skill was stopped because it hit one of its limits.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Error::TimeLimit { .. } | Error::MemoryLimit { .. } | Error::FuelLimit { .. } | Error::HostLimit { .. }
        )
    }
}

/// A `run` failure reported by the skill itself (the WIT `skill-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkillFailure {
    /// The skill rejected its input.
    InvalidInput(String),
    /// The skill could not do the work.
    Failed(String),
}

impl std::fmt::Display for SkillFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkillFailure::InvalidInput(m) => write!(f, "invalid input: {m}"),
            SkillFailure::Failed(m) => f.write_str(m),
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
