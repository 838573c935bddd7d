//! OAuth 2 on the host: keeps `oauth2` credentials fresh without the guest ever holding a token.
//!
//! An `oauth2` credential's value holds the access token, its expiry, and what the host needs to
//! get a new one: the token endpoint (`token_url`) and a refresh token, or a client id and
//! secret (`client_credentials`, for service accounts). [`Refresher::fresh`] hands back a value
//! whose access token is good for at least [`REFRESH_MARGIN`] (or a new one on demand, after a
//! `401`), refreshing it at most once however many callers ask at once:
//!
//! - **in this process**, callers for one credential queue on one async lock, and re-read the
//!   vault when they get it (the first one's refresh serves them all);
//! - **across processes and hosts** sharing the vault (one SQLite file, or one PostgreSQL
//!   store for a fleet), the refresher also holds the vault's lease `oauth-refresh:<credential
//!   id>` (`Vault::lease`: one atomic upsert, expiring by the database's clock), and re-reads
//!   the value under it, so another process or host finds the token the first one stored. A
//!   holder that dies keeps the lease for at most [`LEASE_TTL`].
//!
//! The new access token (and a rotated refresh token, when the provider returns one; the old
//! one is kept otherwise) is stored as a new version with `Vault::rotate_with`, and a `refresh`
//! audit row records it. `invalid_grant` means the refresh token (or the client) is no good any
//! more: [`Error::InvalidGrant`], which the caller turns into `needs-reauth`.
//!
//! The protocol is the `oauth2` crate's; token requests go out with redirects off and a time
//! limit, over https (plain http only to loopback, and only when the runtime allows it).

#![deny(missing_docs)]

mod login;

pub use login::{Login, LoginOutcome};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, RefreshToken, RequestTokenError, Scope, StandardErrorResponse, TokenResponse,
    TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use skillbox_vault::{AuditAction, AuditEvent, CredentialRef, Lease, SecretValue, Token, Vault};

/// A token that expires within this is refreshed before it is used.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long one token request may take.
pub(crate) const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a process waits for another one's refresh before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How long a refresh lease lasts unless given back: longer than a token request may take.
pub const LEASE_TTL: Duration = Duration::from_secs(TOKEN_TIMEOUT.as_secs() + 15);

/// The actor refresh rows are recorded under.
pub const ACTOR: &str = "skillbox-oauth";

/// What went wrong getting a token. Messages never contain a token or secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider refused the refresh token or the client (`invalid_grant`,
    /// `invalid_client`, `unauthorized_client`): an operator must sign in again.
    #[error(
        "the OAuth 2 provider refused to refresh credential `{name}` ({code}); sign in again with `skillbox oauth login {name}` or store new tokens with `skillbox cred rotate {name} --value-stdin`"
    )]
    InvalidGrant {
        /// The credential.
        name: String,
        /// The provider's error code.
        code: String,
    },
    /// The value has no way to get a new token (no token endpoint, refresh token or client).
    #[error(
        "credential `{name}` cannot be refreshed: its value has no token_url with a refresh_token (or client_id and client_secret); store them with `skillbox cred rotate {name} --value-stdin`"
    )]
    NotRefreshable {
        /// The credential.
        name: String,
    },
    /// The token endpoint could not be reached, or answered something that is not a token.
    #[error("refreshing credential `{name}` failed: {reason}")]
    Failed {
        /// The credential.
        name: String,
        /// Why (never a token).
        reason: String,
    },
    /// Reading or storing the value failed.
    #[error("refreshing credential `{name}`: {source}")]
    Vault {
        /// The credential.
        name: String,
        /// The vault's error.
        #[source]
        source: skillbox_vault::Error,
    },
}

/// Refreshes OAuth 2 credentials for one process; share one per runtime.
#[derive(Debug)]
pub struct Refresher {
    http: reqwest::Client,
    allow_http_loopback: bool,
    /// One async lock per credential id: callers in this process take turns.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Refresher {
    /// A refresher whose token requests go over https, or plain http to loopback when
    /// `allow_http_loopback` (tests, local development).
    pub fn new(allow_http_loopback: bool) -> Result<Refresher, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(TOKEN_TIMEOUT)
            .build()?;
        Ok(Refresher { http, allow_http_loopback, locks: Mutex::default() })
    }

    /// Whether `value` needs a new access token before use: missing, or expiring within
    /// [`REFRESH_MARGIN`]. A token without an expiry is used until a `401` says otherwise.
    pub fn needs_refresh(value: &SecretValue) -> bool {
        let SecretValue::OAuth2(token) = value else { return false };
        if token.access_token.expose_secret().is_empty() {
            return true;
        }
        match token.expires_at_unix() {
            Some(at) => at <= now_secs() + REFRESH_MARGIN.as_secs(),
            None => false,
        }
    }

    /// A value for credential `r` (vault id `id`) whose access token is fresh.
    ///
    /// `current` is the value the caller resolved. Unless `force`, it is returned as it is when
    /// it does not [need a refresh](Refresher::needs_refresh). `force` (after a `401`) asks for
    /// a token other than `current`'s. Otherwise the caller waits its turn; whoever refreshes
    /// first stores the new version, and everyone after it finds that version in the vault and
    /// uses it. `Ok(None)`: `current` is fine.
    pub async fn fresh(
        &self,
        vault: &Vault,
        id: &str,
        r: &CredentialRef,
        current: &SecretValue,
        force: bool,
    ) -> Result<Option<SecretValue>, Error> {
        if !force && !Self::needs_refresh(current) {
            return Ok(None);
        }
        let local = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(id.to_owned()).or_default())
        };
        let _turn = local.lock().await;
        let _lease = RefreshLease::acquire(vault, id, &r.name).await?;
        // Under both locks: someone may have refreshed while we waited.
        let latest = vault
            .reveal(r, ACTOR, Some("check before an OAuth 2 refresh"))
            .map_err(|source| Error::Vault { name: r.name.clone(), source })?;
        let changed = access_token(&latest) != access_token(current);
        if changed && !Self::needs_refresh(&latest) {
            return Ok(Some(latest));
        }
        let SecretValue::OAuth2(token) = &latest else {
            return Err(Error::NotRefreshable { name: r.name.clone() });
        };
        let (value, rotated_refresh) = self.request(&r.name, token).await?;
        // The access token's expiry lives in the value; the credential's own expiry (after which
        // the vault refuses it) is the operator's and stays as it is.
        vault.rotate(r, &value, ACTOR).map_err(|source| Error::Vault { name: r.name.clone(), source })?;
        let mut event = AuditEvent::new(AuditAction::Refresh, ACTOR.to_owned());
        event.credential = Some(r.clone());
        event.detail = serde_json::json!({
            "grant": if token.refresh_token.is_some() { "refresh_token" } else { "client_credentials" },
            "refresh_token_rotated": rotated_refresh,
            "expires_at": value.as_bearer().and_then(|t| t.expires_at.clone()),
            "forced": force,
        });
        if let Err(e) = vault.record(&event) {
            tracing::error!(credential = %r.name, "could not record the refresh: {e}");
        }
        tracing::info!(credential = %r.name, rotated_refresh, "refreshed an OAuth 2 access token");
        Ok(Some(value))
    }

    /// One token request: `refresh_token` when the value has one, else `client_credentials`.
    /// Returns the new value and whether the provider rotated the refresh token.
    async fn request(&self, name: &str, token: &Token) -> Result<(SecretValue, bool), Error> {
        let failed = |reason: String| Error::Failed { name: name.to_owned(), reason };
        let Some(url) = token.token_endpoint.as_deref() else {
            return Err(Error::NotRefreshable { name: name.to_owned() });
        };
        check_endpoint(url, self.allow_http_loopback).map_err(|e| failed(format!("token_url: {e}")))?;
        let token_url = TokenUrl::new(url.to_owned()).map_err(|e| failed(format!("token_url is not a URL ({e})")))?;
        let mut client = BasicClient::new(ClientId::new(token.client_id.clone().unwrap_or_default()))
            .set_token_uri(token_url)
            .set_auth_type(AuthType::RequestBody);
        if let Some(secret) = &token.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        let response: Result<BasicTokenResponse, _> = match &token.refresh_token {
            Some(refresh) => {
                let refresh = RefreshToken::new(refresh.expose_secret().to_owned());
                client.exchange_refresh_token(&refresh).request_async(&self.http).await
            }
            None if token.client_id.is_some() && token.client_secret.is_some() => {
                let mut request = client.exchange_client_credentials();
                for scope in &token.scopes {
                    request = request.add_scope(Scope::new(scope.clone()));
                }
                request.request_async(&self.http).await
            }
            None => return Err(Error::NotRefreshable { name: name.to_owned() }),
        };
        let response = response.map_err(|e| classify(name, e))?;
        let rotated = response.refresh_token().is_some();
        let new = Token {
            access_token: SecretString::from(response.access_token().secret().clone()),
            refresh_token: response
                .refresh_token()
                .map(|t| SecretString::from(t.secret().clone()))
                .or_else(|| token.refresh_token.clone()),
            token_endpoint: token.token_endpoint.clone(),
            expires_at: response.expires_in().map(|d| rfc3339(SystemTime::now() + d)),
            scopes: match response.scopes() {
                Some(scopes) => scopes.iter().map(|s| s.to_string()).collect(),
                None => token.scopes.clone(),
            },
            client_id: token.client_id.clone(),
            client_secret: token.client_secret.clone(),
            auth_url: token.auth_url.clone(),
        };
        Ok((SecretValue::OAuth2(new), rotated))
    }
}

/// https anywhere; plain http only to loopback, and only when allowed.
pub(crate) fn check_endpoint(url: &str, allow_http_loopback: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    let loopback = parsed.host_str().is_some_and(is_loopback_host);
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback && allow_http_loopback => Ok(()),
        "http" => {
            Err("plain http is refused; use https (plain http is allowed only to loopback, with --allow-http-loopback)"
                .into())
        }
        other => Err(format!("scheme {other} is refused; use https")),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Sorts a failed token request into what the operator must do.
pub(crate) fn classify<RE: std::error::Error + 'static>(
    name: &str,
    error: RequestTokenError<RE, StandardErrorResponse<BasicErrorResponseType>>,
) -> Error {
    match error {
        RequestTokenError::ServerResponse(response) => {
            let code = response.error().as_ref().to_owned();
            match response.error() {
                BasicErrorResponseType::InvalidGrant
                | BasicErrorResponseType::InvalidClient
                | BasicErrorResponseType::UnauthorizedClient => Error::InvalidGrant { name: name.to_owned(), code },
                _ => Error::Failed { name: name.to_owned(), reason: format!("the provider answered `{code}`") },
            }
        }
        RequestTokenError::Request(e) => {
            Error::Failed { name: name.to_owned(), reason: format!("the token endpoint could not be reached ({e})") }
        }
        RequestTokenError::Parse(_, _) => Error::Failed {
            name: name.to_owned(),
            reason: "the token endpoint did not answer with a token response".into(),
        },
        RequestTokenError::Other(reason) => Error::Failed { name: name.to_owned(), reason },
    }
}

fn access_token(value: &SecretValue) -> Option<&str> {
    value.as_bearer().map(|t| t.access_token.expose_secret())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// RFC 3339 in UTC with whole seconds, as the vault stores expiries.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The vault lease that makes one refresher of credential `id` at a time, across every
/// process and host sharing the vault; given back when dropped.
struct RefreshLease<'a> {
    vault: &'a Vault,
    lease: Lease,
}

impl<'a> RefreshLease<'a> {
    async fn acquire(vault: &'a Vault, id: &str, name: &str) -> Result<RefreshLease<'a>, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let failed = |reason: String| Error::Failed { name: name.to_owned(), reason };
        let holder = format!(
            "pid {} #{} at {}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        );
        let what = format!("oauth-refresh:{id}");
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match vault.lease(&what, &holder, LEASE_TTL) {
                Ok(Some(lease)) => return Ok(RefreshLease { vault, lease }),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Ok(None) => {
                    return Err(failed(format!(
                        "another process or host held the refresh lease for over {} s",
                        LOCK_WAIT.as_secs()
                    )));
                }
                Err(source) => return Err(Error::Vault { name: name.to_owned(), source }),
            }
        }
    }
}

impl Drop for RefreshLease<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.vault.release_lease(&self.lease) {
            tracing::warn!(lease = %self.lease.name, "could not give the refresh lease back (it expires by itself): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "localhost", "[::1]", "127.5.6.7"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.1", "example.com", "169.254.169.254"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
