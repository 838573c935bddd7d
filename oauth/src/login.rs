//! Getting the first token: the authorization-code flow with PKCE and a loopback redirect
//! (RFC 6749 section 4.1, RFC 7636, RFC 8252 section 7.3).
//!
//! [`Login::run`] listens on `127.0.0.1` on a port of its own, hands the caller the
//! authorization URL to show (and open), takes the one redirect that carries the code (checking
//! `state`), and exchanges the code, with the PKCE verifier, for tokens. The user approves in
//! their browser; the tokens go from the provider to the host and never through a terminal, an
//! argument list or the guest.

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope,
    TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use skillbox_vault::{SecretValue, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, rfc3339};

/// How long the user has to approve in the browser.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What a sign-in needs to know about the provider and the client.
#[derive(Debug, Clone)]
pub struct Login {
    /// The credential's name (for messages).
    pub name: String,
    /// The provider's authorization endpoint.
    pub auth_url: String,
    /// Its token endpoint.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret, for confidential clients.
    pub client_secret: Option<SecretString>,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
    /// Allow plain http endpoints on loopback (tests, local providers).
    pub allow_http_loopback: bool,
}

/// The tokens a sign-in produced, as the value to store.
#[derive(Debug)]
pub struct LoginOutcome {
    /// An `oauth2` value: tokens, expiry, endpoints and client, ready for refreshes.
    pub value: SecretValue,
}

impl Login {
    /// Runs the flow. `show` is called once with the authorization URL (print it, open it);
    /// the call then waits, up to [`LOGIN_TIMEOUT`], for the browser to come back.
    pub async fn run(&self, show: impl FnOnce(&str)) -> Result<LoginOutcome, Error> {
        let failed = |reason: String| Error::Failed { name: self.name.clone(), reason };
        for (what, url) in [("auth_url", &self.auth_url), ("token_url", &self.token_url)] {
            crate::check_endpoint(url, self.allow_http_loopback).map_err(|e| failed(format!("{what}: {e}")))?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| failed(format!("cannot listen on 127.0.0.1 for the redirect: {e}")))?;
        let port = listener.local_addr().map_err(|e| failed(e.to_string()))?.port();
        let redirect = format!("http://127.0.0.1:{port}/callback");
        let mut client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::new(self.auth_url.clone()).map_err(|e| failed(format!("auth_url: {e}")))?)
            .set_token_uri(TokenUrl::new(self.token_url.clone()).map_err(|e| failed(format!("token_url: {e}")))?)
            .set_redirect_uri(RedirectUrl::new(redirect).map_err(|e| failed(e.to_string()))?)
            .set_auth_type(AuthType::RequestBody);
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge);
        for scope in &self.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state) = request.url();
        show(url.as_str());

        let code = tokio::time::timeout(LOGIN_TIMEOUT, accept_code(&listener, state.secret()))
            .await
            .map_err(|_| failed(format!("no sign-in arrived within {} s", LOGIN_TIMEOUT.as_secs())))??;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(crate::TOKEN_TIMEOUT)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .map_err(|e| crate::classify(&self.name, e))?;
        let token = Token {
            access_token: SecretString::from(response.access_token().secret().clone()),
            refresh_token: response.refresh_token().map(|t| SecretString::from(t.secret().clone())),
            token_endpoint: Some(self.token_url.clone()),
            expires_at: response.expires_in().map(|d| rfc3339(std::time::SystemTime::now() + d)),
            scopes: match response.scopes() {
                Some(scopes) => scopes.iter().map(|s| s.to_string()).collect(),
                None => self.scopes.clone(),
            },
            client_id: Some(self.client_id.clone()),
            client_secret: self.client_secret.clone(),
            auth_url: Some(self.auth_url.clone()),
        };
        Ok(LoginOutcome { value: SecretValue::OAuth2(token) })
    }
}

/// Waits for the browser's request to `/callback`, answers it, and returns the code. Requests
/// for anything else (a favicon) get a 404; one with the wrong `state` or an `error` ends the
/// sign-in.
async fn accept_code(listener: &tokio::net::TcpListener, state: &str) -> Result<String, Error> {
    let failed = |reason: String| Error::Failed { name: "sign-in".into(), reason };
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|e| failed(e.to_string()))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            continue;
        };
        let params: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let (page, outcome) = match (params.get("state"), params.get("code"), params.get("error")) {
            (_, _, Some(error)) => (
                "Sign-in was refused. You can close this window.",
                Err(failed(format!("the provider answered `{error}`"))),
            ),
            (Some(got), Some(code), None) if got == state => {
                ("Signed in. You can close this window and return to skillbox.", Ok(code.clone()))
            }
            _ => (
                "This sign-in link is not valid. You can close this window.",
                Err(failed(
                    "the redirect's state did not match this sign-in (a stale or forged link); run the login again"
                        .into(),
                )),
            ),
        };
        let body = format!("<!doctype html><title>skillbox</title><p>{page}</p>");
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
        return outcome;
    }
}
