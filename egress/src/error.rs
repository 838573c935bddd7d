//! The one error type of this crate.
//!
//! Every message says what was refused and how to fix it, and none contains a secret value:
//! the pipeline passes every error through the invocation's [`Redactor`](crate::Redactor)
//! before returning it, because some fields (a host, a URL) may come from a server-supplied
//! redirect `Location` that an echo server could have filled with a token.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Which guest-written part of a request contained a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestPart {
    /// The method.
    Method,
    /// The URL, including its query string.
    Url,
    /// A header name or value; holds the header's name (or `"(name)"` when the name itself
    /// contained the secret).
    Header(String),
    /// The request body.
    Body,
    /// The `Location` of a redirect returned by the server (not guest-written, but following it
    /// would carry the secret to wherever it points).
    RedirectLocation,
}

impl fmt::Display for RequestPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestPart::Method => f.write_str("method"),
            RequestPart::Url => f.write_str("url"),
            RequestPart::Header(name) => write!(f, "header {name}"),
            RequestPart::Body => f.write_str("body"),
            RequestPart::RedirectLocation => f.write_str("redirect location"),
        }
    }
}

/// Why an outbound request was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The request is malformed: bad URL, method, header name or value, or a header the host
    /// manages itself.
    #[error("invalid request: {reason}")]
    BadRequest {
        /// What is wrong, and what to do instead.
        reason: String,
    },
    /// A credential cannot be applied (for example its header name is not a valid token or its
    /// value contains a line break). The value itself is never named.
    #[error("credential cannot be applied: {reason}; fix the credential's HTTP settings in the manifest or vault")]
    InvalidCredential {
        /// What is wrong with it.
        reason: String,
    },
    /// A host pattern (manifest `hosts`, `[network] allow`, or `--hosts`) could not be parsed.
    #[error(
        "invalid host pattern `{pattern}`: {reason}; write `host`, `host:port`, `*.domain`, `[v6]:port` or `host:*`"
    )]
    InvalidHostPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL scheme is not permitted for this host.
    #[error(
        "scheme `{scheme}` is not allowed for {host}: use https; plain http is only permitted to 127.0.0.0/8, ::1 \
         and localhost (resolving to loopback only) when the runtime allows it (`skillbox run --allow-http-loopback`)"
    )]
    SchemeNotAllowed {
        /// The scheme of the refused URL.
        scheme: String,
        /// The host of the refused URL.
        host: String,
    },
    /// An unauthenticated request to a host the manifest does not allow.
    #[error(
        "host {host} is not allowed: add it to the skill manifest's `[network] allow` list (allowed now: {})",
        list(allowed)
    )]
    HostNotAllowed {
        /// The refused host (with port when not the scheme's default).
        host: String,
        /// The patterns that are allowed.
        allowed: Vec<String>,
    },
    /// A credential would have been sent to a host outside that credential's `hosts`.
    #[error(
        "this credential may not be sent to {host} (its hosts: {}); an operator can change them with \
         `skillbox grant SKILL CRED --hosts HOST[,HOST...]`",
        list(allowed)
    )]
    CredentialHostNotAllowed {
        /// The refused host.
        host: String,
        /// The credential's allowed host patterns.
        allowed: Vec<String>,
    },
    /// The host is, or resolved to, an address this request may not connect to: over `https` a
    /// special-purpose one (loopback included), over plain `http` anything but loopback.
    #[error(
        "{host} resolves to {addr}, a {reason} address, which this request may not reach; over https an \
         operator can open a private range in the runtime's egress config (`allowed_private`); plain http goes \
         only to loopback (127.0.0.0/8, ::1, localhost), and only under `skillbox run --allow-http-loopback`"
    )]
    AddressNotAllowed {
        /// The host as written in the URL.
        host: String,
        /// The first refused address.
        addr: IpAddr,
        /// Which kind of address it is (`non-loopback` for plain http).
        reason: &'static str,
    },
    /// A redirect pointed to a host the request may not go to.
    #[error(
        "redirect to {host} refused: it is not in the skill manifest's `[network] allow` list (allowed now: {}); \
         credentials never follow a redirect to another origin",
        list(allowed)
    )]
    RedirectNotAllowed {
        /// The redirect target's host.
        host: String,
        /// The manifest's `[network] allow` patterns.
        allowed: Vec<String>,
    },
    /// More redirects than the configured limit.
    #[error("more than {limit} redirects; the server may be redirecting in a loop")]
    TooManyRedirects {
        /// The configured limit.
        limit: usize,
    },
    /// A guest-written part of the request contained a secret value (raw or encoded).
    #[error(
        "the request's {part} contains a secret value; skills may not send secrets themselves: open the \
         credential and pass it as `auth` so the host injects it"
    )]
    SecretInRequest {
        /// Where it was found.
        part: RequestPart,
    },
    /// A guest-written part of a request to an allowed host held a secret in some view: the
    /// skill tried to send a secret itself. The host ends the invocation.
    #[error(
        "tripwire: the request's {part} contains the secret of credential `{credential}` (found in the {view} view); \
         skills may not send secrets themselves, so the invocation was ended"
    )]
    Tripwire {
        /// Where it was found.
        part: RequestPart,
        /// The credential whose secret it was (its name, never its value).
        credential: String,
        /// The view it was found in (`raw`, `base64>gzip`, ...).
        view: String,
    },
    /// A response held a secret in a form that cannot be cut out (an encoding, a compressed
    /// blob): nothing of it is returned.
    #[error(
        "the response contained the secret of credential `{credential}` in a form that cannot be redacted (the {view} \
         view), so it was withheld; if the service echoes credentials, declare `response = \"status\"` for it"
    )]
    ResponseBlocked {
        /// The credential whose secret it was.
        credential: String,
        /// The view it was found in.
        view: String,
    },
    /// A response held a foreign token and the policy for them is `block`.
    #[error(
        "the response contained a token matching rule `{rule}`, and foreign tokens are blocked for this skill \
         (`[scan] foreign = \"block\"`), so it was withheld"
    )]
    ForeignTokenBlocked {
        /// The rule that matched.
        rule: String,
    },
    /// A response could not be examined within the scanner's limits (a decompression bomb).
    #[error("the response was withheld: {reason}")]
    Unscannable {
        /// The scanner's explanation.
        reason: String,
    },
    /// The request body exceeds the configured limit.
    #[error("request body is {size} bytes, over the {limit}-byte limit")]
    RequestTooLarge {
        /// The body's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The response body exceeds the configured limit; nothing of it is returned.
    #[error("response body is over the {limit}-byte limit")]
    ResponseTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The whole exchange (all hops, including reading the body) took too long.
    #[error("no complete response within {after:?}")]
    Timeout {
        /// The configured timeout.
        after: Duration,
    },
    /// The connection or the server failed (connection refused, TLS error, DNS failure...).
    #[error("upstream error: {0}")]
    Upstream(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Setup(String),
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
}

impl EgressError {
    /// Applies `f` to every free-text field, so that the pipeline can redact secret values that
    /// a server may have placed into a redirect target.
    pub(crate) fn map_text(self, f: impl Fn(&str) -> String) -> Self {
        let all = |v: Vec<String>| v.iter().map(|s| f(s)).collect();
        match self {
            EgressError::BadRequest { reason } => EgressError::BadRequest { reason: f(&reason) },
            EgressError::SchemeNotAllowed { scheme, host } => {
                EgressError::SchemeNotAllowed { scheme: f(&scheme), host: f(&host) }
            }
            EgressError::HostNotAllowed { host, allowed } => {
                EgressError::HostNotAllowed { host: f(&host), allowed: all(allowed) }
            }
            EgressError::CredentialHostNotAllowed { host, allowed } => {
                EgressError::CredentialHostNotAllowed { host: f(&host), allowed: all(allowed) }
            }
            EgressError::AddressNotAllowed { host, addr, reason } => {
                EgressError::AddressNotAllowed { host: f(&host), addr, reason }
            }
            EgressError::RedirectNotAllowed { host, allowed } => {
                EgressError::RedirectNotAllowed { host: f(&host), allowed: all(allowed) }
            }
            EgressError::SecretInRequest { part: RequestPart::Header(name) } => {
                EgressError::SecretInRequest { part: RequestPart::Header(f(&name)) }
            }
            EgressError::Upstream(message) => EgressError::Upstream(f(&message)),
            other => other,
        }
    }
}
