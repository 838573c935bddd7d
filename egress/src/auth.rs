//! Credential injection: how a credential is applied to a request, and what it leaves behind
//! that must never come back to the guest.
//!
//! The host adds the credential to the wire request only, after every policy check, and removes
//! any guest-supplied header (or query parameter) of the same name first, so a guest cannot
//! shadow or duplicate it. The exact strings put on the wire (the token, `user:pass`, the
//! base64 Basic token, the custom header value) are also collected into a per-request
//! [`Redactor`], which the pipeline applies to the response on top of the invocation's scanner.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use url::Url;
use zeroize::Zeroizing;

use std::sync::Arc;

use skillbox_scan::SecretMatcher;

use crate::{EgressError, HostPattern};

/// How a credential is applied to an HTTP request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// `Authorization: Basic base64(<username>:<password>)`. Both halves are treated as secret
    /// (some services, Stripe for one, put the API key in the username).
    Basic {
        /// The user name (or API key).
        username: SecretString,
        /// The password; may be empty.
        password: SecretString,
    },
    /// A custom header: `<name>: <prefix><value>`.
    Header {
        /// The header name, e.g. `X-Api-Key`.
        name: String,
        /// Text put before the value, e.g. `Token ` (may be empty).
        prefix: String,
        /// The secret value.
        value: SecretString,
    },
    /// A query parameter `<param>=<value>` appended to the URL (form-encoded).
    Query {
        /// The parameter name, e.g. `api_key`.
        param: String,
        /// The secret value.
        value: SecretString,
    },
}

/// What of a response to a credentialed request the guest receives (`response = ...` in a
/// manifest, narrowed by `skillbox grant --response`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResponseScope {
    /// Only the status code.
    Status,
    /// The status code and the headers (minus any that matched a secret).
    Headers,
    /// Everything, scanned.
    #[default]
    Full,
}

/// A credential to inject, and the hosts it may be sent to.
///
/// Built once per opened credential and reused for every request: building
/// validates the credential and prepares its wire form and redaction patterns,
/// which costs tens of microseconds.
#[derive(Debug)]
pub struct Injection {
    /// What of a response the guest gets back.
    response: ResponseScope,
    /// Where it may go: the manifest's `hosts` for this credential, or the operator's
    /// `skillbox grant --hosts` override. Empty means nowhere.
    hosts: Vec<HostPattern>,
    /// Invariant: prepared from the `Auth` this injection was built with.
    applied: Applied,
}

impl Injection {
    /// Validates `auth` (a header value must be valid; a query parameter needs a name) and
    /// prepares it for sending to `hosts`.
    pub fn new(auth: Auth, hosts: Vec<HostPattern>) -> Result<Injection, EgressError> {
        Self::named("the injected credential", auth, hosts)
    }

    /// [`Injection::new`] for the credential a skill knows as `name`, which scan hits report.
    pub fn named(name: &str, auth: Auth, hosts: Vec<HostPattern>) -> Result<Injection, EgressError> {
        Ok(Injection { applied: Applied::new(name, &auth)?, hosts, response: ResponseScope::Full })
    }

    /// Hands the guest only part of every response to a request made with this credential.
    pub fn with_response(mut self, response: ResponseScope) -> Injection {
        self.response = response;
        self
    }

    /// What of a response the guest gets back.
    pub fn response(&self) -> ResponseScope {
        self.response
    }

    /// Everything this credential puts on the wire, as a matcher (for scans outside the
    /// pipeline, such as the skill's output).
    pub fn material(&self) -> &Arc<SecretMatcher> {
        &self.applied.material
    }

    /// The hosts this credential may be sent to.
    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    pub(crate) fn applied(&self) -> &Applied {
        &self.applied
    }
}

/// The prepared wire form of one credential, built once per [`Injection`].
pub(crate) struct Applied {
    /// Header name and sensitive value, for header-based styles.
    header: Option<(HeaderName, HeaderValue)>,
    /// Query parameter name and value, for the query style.
    query: Option<(String, Zeroizing<String>)>,
    /// Every string this credential puts on the wire, for response redaction.
    pub(crate) material: Arc<SecretMatcher>,
}

impl fmt::Debug for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Applied").field("header", &self.header.as_ref().map(|(n, _)| n)).finish_non_exhaustive()
    }
}

impl Applied {
    /// Validates the credential and prepares what it adds to a request.
    pub(crate) fn new(label: &str, auth: &Auth) -> Result<Self, EgressError> {
        let invalid = |reason: &str| EgressError::InvalidCredential { reason: reason.to_owned() };
        let sensitive = |value: &str| {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid("its value is not a valid header value (control characters or non-ASCII)"))?;
            value.set_sensitive(true);
            Ok::<_, EgressError>(value)
        };
        match auth {
            Auth::Bearer(token) => {
                let token = token.expose_secret();
                let header = Zeroizing::new(format!("Bearer {token}"));
                Ok(Self {
                    header: Some((AUTHORIZATION, sensitive(&header)?)),
                    query: None,
                    material: matcher(label, [token]),
                })
            }
            Auth::Basic { username, password } => {
                let (user, pass) = (username.expose_secret(), password.expose_secret());
                let pair = Zeroizing::new(format!("{user}:{pass}"));
                let mut token = Zeroizing::new(String::new());
                STANDARD.encode_string(pair.as_bytes(), &mut token);
                let header = Zeroizing::new(format!("Basic {}", &*token));
                Ok(Self {
                    header: Some((AUTHORIZATION, sensitive(&header)?)),
                    query: None,
                    material: matcher(label, [user, pass, pair.as_str(), token.as_str()]),
                })
            }
            Auth::Header { name, prefix, value } => {
                let header_name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid(&format!("`{name}` is not a valid header name")))?;
                if crate::pipeline::is_managed_header(&header_name) {
                    return Err(invalid(&format!("`{name}` is a header the HTTP client manages itself")));
                }
                let value = value.expose_secret();
                let full = Zeroizing::new(format!("{prefix}{value}"));
                Ok(Self {
                    header: Some((header_name, sensitive(&full)?)),
                    query: None,
                    material: matcher(label, [value]),
                })
            }
            Auth::Query { param, value } => {
                if param.is_empty() {
                    return Err(invalid("the query parameter name is empty"));
                }
                let value = value.expose_secret();
                Ok(Self {
                    header: None,
                    query: Some((param.clone(), Zeroizing::new(value.to_owned()))),
                    material: matcher(label, [value]),
                })
            }
        }
    }

    /// Adds the credential to the wire URL and headers, replacing any guest-supplied header or
    /// query parameter of the same name.
    pub(crate) fn apply(&self, url: &mut Url, headers: &mut HeaderMap) {
        if let Some((name, value)) = &self.header {
            headers.remove(name);
            headers.insert(name.clone(), value.clone());
        }
        if let Some((param, value)) = &self.query {
            remove_query_param(url, param);
            url.query_pairs_mut().append_pair(param, value);
        }
    }
}

/// Removes every `param=...` pair (compared after form-decoding the key) and leaves the other
/// pairs byte-for-byte as the guest wrote them.
fn remove_query_param(url: &mut Url, param: &str) {
    let Some(query) = url.query() else { return };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            url::form_urlencoded::parse(key.as_bytes()).next().map(|(k, _)| k != param).unwrap_or(true)
        })
        .collect();
    let kept = kept.join("&");
    url.set_query(if kept.is_empty() { None } else { Some(&kept) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_is_replaced_and_other_pairs_kept_verbatim() {
        let applied = Applied::new(
            "test",
            &Auth::Query { param: "api_key".into(), value: SecretString::from("s3cret-value".to_owned()) },
        )
        .unwrap();
        let mut url = Url::parse("https://x.test/p?a=b%20c&api_key=guest&api%5Fkey=guest2&z").unwrap();
        applied.apply(&mut url, &mut HeaderMap::new());
        assert_eq!(url.query(), Some("a=b%20c&z&api_key=s3cret-value"));
    }

    #[test]
    fn bearer_replaces_guest_authorization_and_is_sensitive() {
        let applied = Applied::new("test", &Auth::Bearer(SecretString::from("tok-123456".to_owned()))).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer guest"));
        applied.apply(&mut Url::parse("https://x.test/").unwrap(), &mut headers);
        let values: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0], "Bearer tok-123456");
        assert!(values[0].is_sensitive());
    }

    #[test]
    fn values_with_line_breaks_are_refused_without_echo() {
        let err = Applied::new("test", &Auth::Bearer(SecretString::from("a\r\nX-Evil: 1".to_owned()))).unwrap_err();
        assert!(!err.to_string().contains("X-Evil"));
    }
}

/// The matcher for the strings one credential puts on the wire.
fn matcher<const N: usize>(label: &str, strings: [&str; N]) -> Arc<SecretMatcher> {
    Arc::new(SecretMatcher::new(label, strings))
}
