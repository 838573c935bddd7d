//! What a skill's manifest allows it, in the form the host functions check.
//!
//! The runtime parses `skill.toml` and hands the host a [`SkillPolicy`]:
//! the credentials the skill declares (kind, how HTTP applies each one, the
//! hosts it may go to), the hosts it may reach without credentials, and
//! whether SQL may write. Everything not listed is denied.
//!
//! [`SkillPolicy::pinned`] renders the part of it a grant pins for one credential.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use skillbox_egress::{HostPattern, Policy, ResponseScope};
use skillbox_vault::CredentialKind;

/// Everything a skill's manifest allows it, checked on every host call.
#[derive(Debug, Clone, Default)]
pub struct SkillPolicy {
    /// The `[[credentials]]` the manifest declares.
    pub credentials: Vec<CredentialDecl>,
    /// `[network] allow`: hosts reachable without a credential.
    pub network: Policy,
    /// `[sql] write`: whether `sql.execute` and writing queries are allowed.
    pub sql_write: bool,
    /// The `[limits]` the manifest asks for (before any operator cap): part of what a
    /// grant pins, so a manifest cannot quietly raise them.
    pub limits: DeclaredLimits,
}

/// A manifest's `[limits]`, as asked (the runtime applies the operator's caps on top).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeclaredLimits {
    /// Linear memory, bytes.
    pub memory: u64,
    /// Wall-clock time per invocation, milliseconds.
    pub timeout_ms: u64,
    /// Fuel per invocation (`None`: unmetered).
    pub fuel: Option<u64>,
}

impl SkillPolicy {
    /// The declaration named `name`, if the manifest has one.
    pub fn credential(&self, name: &str) -> Option<&CredentialDecl> {
        self.credentials.iter().find(|c| c.name == name)
    }

    /// What a grant of credential `name` pins of this policy: the credential's kind, HTTP
    /// style, hosts and response scope, the skill's `[network] allow`, `[sql] write` and
    /// limits, as canonical JSON (a flat object, keys sorted, host lists sorted and
    /// deduplicated), so that equal policies give equal text and a change names its key.
    /// `None` when the manifest does not declare `name`.
    pub fn pinned(&self, name: &str) -> Option<String> {
        use serde_json::{Value, json};
        let decl = self.credential(name)?;
        let hosts = |patterns: &[HostPattern]| {
            let mut list: Vec<String> = patterns.iter().map(ToString::to_string).collect();
            list.sort();
            list.dedup();
            Value::from(list)
        };
        let response = match decl.response {
            ResponseScope::Status => "status",
            ResponseScope::Headers => "headers",
            ResponseScope::Full => "full",
        };
        let mut fields: BTreeMap<&str, Value> = BTreeMap::from([
            ("kind", json!(decl.kind.as_str())),
            ("http", serde_json::to_value(&decl.http).unwrap_or(Value::Null)),
            ("hosts", hosts(&decl.hosts)),
            ("response", json!(response)),
            ("network.allow", hosts(&self.network.network_allow)),
            ("sql.write", json!(self.sql_write)),
            ("limits.memory", json!(self.limits.memory)),
            ("limits.timeout_ms", json!(self.limits.timeout_ms)),
            ("limits.fuel", json!(self.limits.fuel)),
        ]);
        // Only when set, so that policies pinned before the key existed stay equal.
        if decl.transparent {
            fields.insert("transparent", json!(true));
        }
        Some(serde_json::to_string(&fields).expect("JSON values serialize"))
    }
}

/// One `[[credentials]]` entry of a manifest.
#[derive(Debug, Clone)]
pub struct CredentialDecl {
    /// The name the guest opens (and grants refer to).
    pub name: String,
    /// The kind of credential expected.
    pub kind: CredentialKind,
    /// How `http.send` applies it; `None` when it is not for HTTP.
    pub http: Option<HttpAuth>,
    /// Hosts it may be sent to (an operator's grant may replace them).
    pub hosts: Vec<HostPattern>,
    /// Why the skill needs it, shown to operators and approvers.
    pub purpose: String,
    /// What of a response to a request made with it the skill receives (`response = ...`).
    pub response: ResponseScope,
    /// `transparent = true`: the host adds it to every standard `wasi:http` request to its
    /// hosts; the guest never holds a handle.
    pub transparent: bool,
}

/// How a credential is applied to an HTTP request (`http = ...` in a manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>` (`bearer`, `oauth2`; `api_key` uses its key).
    Bearer,
    /// `Authorization: Basic ...` (`basic`; `api_key` sends its key as the user
    /// and its secret, or nothing, as the password, as Stripe expects).
    Basic,
    /// A header of the skill's choosing: `http = { header = { name = "X-Api-Key" } }`.
    Header {
        /// Header name.
        name: String,
        /// Text before the secret (`"Token "`); empty by default.
        #[serde(default)]
        prefix: String,
    },
    /// A query parameter: `http = { query = { param = "key" } }`.
    Query {
        /// Parameter name.
        param: String,
    },
}
