//! A real OAuth 2 authorization server on loopback, for tests: an authorization endpoint that
//! approves at once (PKCE S256 required), a token endpoint with the `authorization_code` (with
//! the PKCE verifier), `refresh_token` and `client_credentials` grants, tokens that
//! expire in seconds, refresh-token rotation and `invalid_grant` on demand, plus a protected
//! resource that answers only a live access token.
//!
//! Routes: `GET /authorize`, `POST /token` (form body, client authenticated in the body or with Basic auth);
//! anything else is the resource: `200 []` for `Authorization: Bearer <live token>`, else `401`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use crate::server::{Received, Reply, TestServer};

/// The client the server knows.
pub const CLIENT_ID: &str = "skillbox-test-client";
/// That client's secret.
pub const CLIENT_SECRET: &str = "client-secret-for-the-test-server";

/// What the server hands out and accepts; tests change it between calls.
#[derive(Debug)]
pub struct State {
    /// Lifetime of new access tokens.
    pub ttl: Duration,
    /// Whether each refresh hands out a new refresh token (and retires the old one).
    pub rotate_refresh_tokens: bool,
    /// Answer every token request with `invalid_grant`.
    pub invalid_grant: bool,
    /// Live access tokens and when they die.
    pub access: HashMap<String, Instant>,
    /// Refresh tokens that are still good.
    pub refresh: Vec<String>,
    /// Token requests answered with a token, by grant type.
    pub issued: HashMap<String, usize>,
    /// Token requests seen (any outcome).
    pub requests: usize,
    /// Codes handed out by `/authorize`: code -> (PKCE challenge, redirect URI).
    pub codes: HashMap<String, (String, String)>,
    counter: usize,
}

/// A running authorization server.
#[derive(Clone, Debug)]
pub struct OAuthServer {
    /// The HTTP server.
    pub server: TestServer,
    /// Its state.
    pub state: Arc<Mutex<State>>,
}

impl OAuthServer {
    /// Starts a server whose tokens live `ttl`, holding one refresh token, which it returns.
    pub async fn start(ttl: Duration) -> (OAuthServer, String) {
        let state = Arc::new(Mutex::new(State {
            ttl,
            rotate_refresh_tokens: false,
            invalid_grant: false,
            access: HashMap::new(),
            refresh: Vec::new(),
            issued: HashMap::new(),
            requests: 0,
            codes: HashMap::new(),
            counter: 0,
        }));
        let first = state.lock().unwrap().mint("rt");
        state.lock().unwrap().refresh.push(first.clone());
        let shared = Arc::clone(&state);
        let server = TestServer::start("127.0.0.1", move |req| handle(&shared, req)).await;
        (OAuthServer { server, state }, first)
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.server.base_url())
    }

    /// How many tokens were issued with `grant` (`refresh_token`, `client_credentials`).
    pub fn issued(&self, grant: &str) -> usize {
        self.state.lock().unwrap().issued.get(grant).copied().unwrap_or(0)
    }

    /// Kills every live access token (the provider revoked them): the next use gets a 401.
    pub fn revoke_access_tokens(&self) {
        self.state.lock().unwrap().access.clear();
    }

    /// The refresh tokens the server still accepts.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().refresh.clone()
    }
}

impl State {
    fn mint(&mut self, prefix: &str) -> String {
        use rand::Rng;
        self.counter += 1;
        let tail: String = (0..24).map(|_| rand::rng().sample(rand::distr::Alphanumeric) as char).collect();
        format!("{prefix}_{}_{tail}", self.counter)
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn error(status: u16, code: &str) -> Reply {
    Reply::json(status, json!({ "error": code }))
}

fn handle(state: &Mutex<State>, req: &Received) -> Reply {
    let mut state = state.lock().unwrap();
    // The authorization endpoint approves at once (the scripted browser step): a code bound to
    // the PKCE challenge and redirect URI, sent back to the redirect URI with the state.
    if req.method == "GET" && req.target.starts_with("/authorize?") {
        let params = form(req.target.split_once('?').map(|(_, q)| q).unwrap_or_default().as_bytes());
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        if get("client_id") != CLIENT_ID || get("response_type") != "code" || get("code_challenge_method") != "S256" {
            return error(400, "invalid_request");
        }
        let redirect = get("redirect_uri");
        if !redirect.starts_with("http://127.0.0.1:") {
            return error(400, "invalid_request");
        }
        let code = state.mint("code");
        state.codes.insert(code.clone(), (get("code_challenge"), redirect.clone()));
        let location = format!("{redirect}?code={code}&state={}", get("state"));
        return Reply::redirect(&location);
    }
    if req.method == "POST" && req.target.starts_with("/token") {
        state.requests += 1;
        let params = form(&req.body);
        // Client authentication: in the body, or HTTP Basic.
        let (id, secret) = match req.header("authorization").and_then(|a| a.strip_prefix("Basic ")) {
            Some(basic) => {
                let pair = base64::engine::general_purpose::STANDARD.decode(basic.trim()).unwrap_or_default();
                let pair = String::from_utf8_lossy(&pair).into_owned();
                let (id, secret) = pair.split_once(':').unwrap_or_default();
                (id.to_owned(), secret.to_owned())
            }
            None => (
                params.get("client_id").cloned().unwrap_or_default(),
                params.get("client_secret").cloned().unwrap_or_default(),
            ),
        };
        if id != CLIENT_ID || secret != CLIENT_SECRET {
            return error(401, "invalid_client");
        }
        if state.invalid_grant {
            return error(400, "invalid_grant");
        }
        let grant = params.get("grant_type").cloned().unwrap_or_default();
        let mut body = json!({ "token_type": "Bearer" });
        match grant.as_str() {
            "refresh_token" => {
                let presented = params.get("refresh_token").cloned().unwrap_or_default();
                if !state.refresh.contains(&presented) {
                    return error(400, "invalid_grant");
                }
                if state.rotate_refresh_tokens {
                    let next = state.mint("rt");
                    state.refresh.retain(|t| t != &presented);
                    state.refresh.push(next.clone());
                    body["refresh_token"] = next.into();
                }
            }
            "client_credentials" => {}
            "authorization_code" => {
                use sha2::Digest as _;
                let code = params.get("code").cloned().unwrap_or_default();
                let Some((challenge, redirect)) = state.codes.remove(&code) else {
                    return error(400, "invalid_grant");
                };
                let verifier = params.get("code_verifier").cloned().unwrap_or_default();
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&verifier));
                if computed != challenge || params.get("redirect_uri") != Some(&redirect) {
                    return error(400, "invalid_grant");
                }
                let refresh = state.mint("rt");
                state.refresh.push(refresh.clone());
                body["refresh_token"] = refresh.into();
            }
            _ => return error(400, "unsupported_grant_type"),
        }
        let token = state.mint("at");
        let ttl = state.ttl;
        state.access.insert(token.clone(), Instant::now() + ttl);
        *state.issued.entry(grant).or_default() += 1;
        body["access_token"] = token.into();
        body["expires_in"] = ttl.as_secs().into();
        return Reply::json(200, body);
    }
    let live = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|t| state.access.get(t))
        .is_some_and(|until| Instant::now() < *until);
    if live { Reply::json(200, json!([])) } else { error(401, "invalid_token") }
}
