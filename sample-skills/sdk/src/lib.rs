//! Guest-side Rust bindings and helpers for writing skillbox skills.
//!
//! Generates the `skillbox:skill` bindings once, so a skill crate only
//! implements [`Guest`] and calls [`export_skill!`]:
//!
//! ```ignore
//! struct MySkill;
//! impl skillbox_sdk::Guest for MySkill {
//!     fn run(input: String) -> Result<String, skillbox_sdk::SkillError> { Ok(input) }
//! }
//! skillbox_sdk::export_skill!(MySkill);
//! ```

/// The generated bindings; the names a skill needs are re-exported below.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "skill",
        pub_export_macro: true,
        export_macro_name: "export_skill",
        default_bindings_module: "skillbox_sdk::bindings",
    });
}

pub use bindings::skillbox::skill::types::Error;
pub use bindings::skillbox::skill::{credentials, http, log, signing, sql};
pub use bindings::{Guest, SkillError, export_skill};

/// The WIT case name of a host error (`"not-granted"`, ...) and its message.
pub fn case(error: &Error) -> (&'static str, &str) {
    match error {
        Error::NotDeclared(m) => ("not-declared", m),
        Error::NotGranted(m) => ("not-granted", m),
        Error::Denied(m) => ("denied", m),
        Error::Revoked(m) => ("revoked", m),
        Error::Expired(m) => ("expired", m),
        Error::HostNotAllowed(m) => ("host-not-allowed", m),
        Error::WrongKind(m) => ("wrong-kind", m),
        Error::Limit(m) => ("limit", m),
        Error::Invalid(m) => ("invalid", m),
        Error::LeakBlocked(m) => ("leak-blocked", m),
        Error::Upstream(m) => ("upstream", m),
    }
}

/// `case: message` for a host error, the form skills put in their own errors.
pub fn describe(error: &Error) -> String {
    let (case, message) = case(error);
    format!("{case}: {message}")
}

/// Turns a host error into the skill's own failure, keeping the host's
/// message: a denial's message says how to grant access.
pub fn fail(error: Error) -> SkillError {
    SkillError::Failed(describe(&error))
}

/// Parses the skill's JSON input, or reports which input was wrong.
pub fn parse_input<T: serde::de::DeserializeOwned>(input: &str) -> Result<T, SkillError> {
    serde_json::from_str(input).map_err(|e| SkillError::InvalidInput(e.to_string()))
}

/// Serializes the skill's result.
pub fn to_output<T: serde::Serialize>(value: &T) -> Result<String, SkillError> {
    serde_json::to_string(value).map_err(|e| SkillError::Failed(format!("cannot serialize the result: {e}")))
}

/// A GET or POST through the host's HTTP, authenticated with `auth`.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    auth: Option<&credentials::Credential>,
) -> Result<http::Response, Error> {
    let request = http::Request {
        method: method.to_owned(),
        url: url.to_owned(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body,
    };
    http::send(&request, auth)
}
