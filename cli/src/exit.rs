//! Exit codes, and how errors are shown.
//!
//! Scripts branch on the code, people read the message: each error is
//! printed once, on stderr, with its causes, and mapped to the code of its
//! class.

use std::process::ExitCode;

/// The skill ran and failed: it returned an error, crashed, or gave invalid JSON.
pub const SKILL_FAILED: u8 = 1;
/// The command was used wrongly: bad arguments, manifest, input or file.
pub const USAGE: u8 = 2;
/// The skill was stopped by one of its limits (time, memory, fuel, or a per-invocation host limit).
pub const LIMIT_EXCEEDED: u8 = 3;
/// Access was refused: a credential not granted, revoked, or a host not allowed.
pub const DENIED: u8 = 4;
/// `skillbox cred test`: the credential was tried and did not work.
pub const CRED_TEST_FAILED: u8 = 6;

/// Shown at the end of `skillbox --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the skill failed (returned an error, crashed, or returned invalid JSON)
  2  bad usage: arguments, manifest, input, component file, vault
  3  the skill hit a limit (time, memory or fuel; its manifest's or the operator's cap;
     or a host limit: too many host calls, handles or audit rows, a request or result too large)
  4  access denied (credential not granted, revoked, expired; host not allowed)
  5  `skillbox cred due`: something is overdue for rotation, expired or needs re-authorization
  6  `skillbox cred test`: the credential did not work (refused by the service, wrong status,
     database login or connection failed, OAuth 2 refresh failed)";

/// A failure whose exit code was decided where it happened.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Coded {}

/// Wraps `error` so that it exits with `code`.
pub fn with_code(code: u8, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Coded { code, error: error.into() })
}

/// Prints `error` and returns the exit code for its class.
///
/// The message is [escaped](skillbox_runtime::display::escape): much of it (names, purposes,
/// a skill's own error and stderr) comes from a skill or its manifest, and must not forge
/// lines or send control sequences to the terminal.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", skillbox_runtime::display::escape(&format!("{error:#}")));
    ExitCode::from(code_for(error))
}

fn code_for(error: &anyhow::Error) -> u8 {
    if let Some(coded) = error.downcast_ref::<Coded>() {
        return coded.code;
    }
    if let Some(runtime) = error.downcast_ref::<skillbox_runtime::Error>() {
        return runtime_code(runtime);
    }
    USAGE
}

/// The exit code for a runtime error.
pub fn runtime_code(error: &skillbox_runtime::Error) -> u8 {
    use skillbox_runtime::Error as E;
    match error {
        e if e.is_limit() => LIMIT_EXCEEDED,
        E::Denied { .. } | E::Tripwire { .. } => DENIED,
        E::Trap { .. } | E::SkillFailed { .. } | E::InvalidOutput { .. } => SKILL_FAILED,
        _ => USAGE,
    }
}
