//! The error type host functions return, and how library errors map onto the WIT `error`.
//!
//! A host function either reports a failure to the guest (a WIT `error`
//! case it can match on) or traps it (a forged handle, a broken host). The
//! mapping from vault and egress errors lives here so every interface
//! reports the same failure the same way.

use skillbox_egress::EgressError;

use crate::bindings::skillbox::skill::types::Error as WitError;

/// A tripwire: the guest tried to pass a secret out of the sandbox. The invocation ends (a
/// trap the guest cannot catch) and nothing it produced is handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tripped {
    /// Where: `http.send`, `log`, `sql.query`, `signing.hmac`, `output`, `stdout`, ...
    pub channel: String,
    /// The credential whose secret it was (by name); `None` when it could not be told.
    pub credential: Option<String>,
    /// The view it was found in.
    pub view: String,
    /// Grants suspended because of this tripwire (their names).
    pub suspended: Vec<String>,
}

impl std::fmt::Display for Tripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credential = self.credential.as_deref().map_or(String::new(), |c| format!(" of credential `{c}`"));
        write!(
            f,
            "tripwire: the skill tried to pass the secret{credential} out through {} (found in the {} view); the invocation was ended and recorded in the audit log",
            self.channel, self.view
        )?;
        if !self.suspended.is_empty() {
            write!(
                f,
                "; after repeated tripwires its grants ({}) are suspended: inspect the skill, then re-enable with `skillbox grant`",
                self.suspended.join(", ")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Tripped {}

/// A per-invocation host limit the guest hit (see [`crate::limits`]): too many host calls, open
/// handles or audit rows, or something it handed over too large. The runtime reports it as a
/// limit error. The message names the limit and the sizes involved, never the guest's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    /// What was over which limit, and what to do instead.
    pub message: String,
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LimitExceeded {}

impl From<Tripped> for HostError {
    fn from(t: Tripped) -> Self {
        HostError::Trap(wasmtime::Error::new(t))
    }
}

/// A host-call failure: either for the guest to handle, or a trap.
#[derive(Debug)]
pub enum HostError {
    /// Returned to the guest as a WIT `error`.
    Guest(WitError),
    /// Stops the guest: the call cannot be answered meaningfully.
    Trap(wasmtime::Error),
}

impl HostError {
    /// A guest-visible `invalid` error.
    pub(crate) fn invalid(message: impl Into<String>) -> HostError {
        HostError::Guest(WitError::Invalid(message.into()))
    }

    /// A guest-visible `denied` error.
    pub(crate) fn denied(message: impl Into<String>) -> HostError {
        HostError::Guest(WitError::Denied(message.into()))
    }

    /// A guest-visible `wrong-kind` error.
    pub(crate) fn wrong_kind(message: impl Into<String>) -> HostError {
        HostError::Guest(WitError::WrongKind(message.into()))
    }

    /// A guest-visible `limit` error.
    pub(crate) fn limit(message: impl Into<String>) -> HostError {
        HostError::Guest(WitError::Limit(message.into()))
    }

    /// A guest-visible `upstream` error.
    pub(crate) fn upstream(message: impl Into<String>) -> HostError {
        HostError::Guest(WitError::Upstream(message.into()))
    }

    /// The message, for audit rows and denial records.
    pub(crate) fn message(&self) -> String {
        match self {
            HostError::Guest(e) => wit_error_message(e).to_owned(),
            HostError::Trap(e) => format!("{e:#}"),
        }
    }

    /// True for failures that are access decisions (recorded as denials).
    pub(crate) fn is_denial(&self) -> bool {
        matches!(
            self,
            HostError::Guest(
                WitError::NotDeclared(_)
                    | WitError::NotGranted(_)
                    | WitError::Denied(_)
                    | WitError::Revoked(_)
                    | WitError::Expired(_)
                    | WitError::HostNotAllowed(_)
                    | WitError::LeakBlocked(_)
            )
        )
    }
}

/// The human message inside a WIT error.
pub(crate) fn wit_error_message(error: &WitError) -> &str {
    match error {
        WitError::NotDeclared(m)
        | WitError::NotGranted(m)
        | WitError::Denied(m)
        | WitError::Revoked(m)
        | WitError::Expired(m)
        | WitError::HostNotAllowed(m)
        | WitError::WrongKind(m)
        | WitError::Limit(m)
        | WitError::Invalid(m)
        | WitError::LeakBlocked(m)
        | WitError::Upstream(m) => m,
    }
}

impl From<wasmtime::Error> for HostError {
    fn from(e: wasmtime::Error) -> Self {
        HostError::Trap(e)
    }
}

impl From<wasmtime::component::ResourceTableError> for HostError {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        HostError::Trap(e.into())
    }
}

impl From<skillbox_vault::Error> for HostError {
    fn from(e: skillbox_vault::Error) -> Self {
        use skillbox_vault::Error as V;
        let message = e.to_string();
        HostError::Guest(match e {
            V::NotGranted { .. } | V::GrantNotFound { .. } | V::NotFound { .. } => WitError::NotGranted(message),
            V::GrantExpired { .. } | V::Expired { .. } => WitError::Expired(message),
            V::Revoked { .. } => WitError::Revoked(message),
            V::DigestMismatch { .. } | V::PolicyChanged { .. } | V::Suspended { .. } => WitError::Denied(message),
            _ => WitError::Upstream(format!("credential vault: {message}")),
        })
    }
}

impl From<EgressError> for HostError {
    fn from(e: EgressError) -> Self {
        let message = e.to_string();
        HostError::Guest(match e {
            EgressError::SchemeNotAllowed { .. }
            | EgressError::HostNotAllowed { .. }
            | EgressError::CredentialHostNotAllowed { .. }
            | EgressError::AddressNotAllowed { .. }
            | EgressError::RedirectNotAllowed { .. } => WitError::HostNotAllowed(message),
            EgressError::SecretInRequest { .. }
            | EgressError::ResponseBlocked { .. }
            | EgressError::ForeignTokenBlocked { .. } => WitError::LeakBlocked(message),
            EgressError::Unscannable { .. } => WitError::Limit(message),
            EgressError::TooManyRedirects { .. }
            | EgressError::RequestTooLarge { .. }
            | EgressError::ResponseTooLarge { .. }
            | EgressError::Timeout { .. } => WitError::Limit(message),
            EgressError::BadRequest { .. } | EgressError::InvalidHostPattern { .. } => WitError::Invalid(message),
            _ => WitError::Upstream(message),
        })
    }
}
