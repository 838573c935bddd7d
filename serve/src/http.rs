//! The HTTP server: MCP streamable HTTP at `/mcp`, a REST API under `/v1`, `/healthz` and
//! `/metrics`, every call behind an API key and a bound on concurrent work.
//!
//! Routes:
//! - `GET /healthz` — `ok`, without a key.
//! - `GET /metrics` — Prometheus text; from loopback, or with a key.
//! - `GET /v1/skills`, `GET /v1/skills/{name}` — the tools the key may call, with schemas.
//! - `POST /v1/skills/{name}/invoke` — JSON in, the skill's JSON out; failures are
//!   `application/problem+json` (RFC 9457) with a status by class.
//! - `GET /v1/openapi.json` — this API, described.
//! - `/mcp` — MCP streamable HTTP (rmcp), `Host` and `Origin` checked against the listen
//!   address (DNS rebinding), each call run as the key's caller.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use skillbox_runtime::{Error as RunError, Tool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::caller::{Caller, KeyCheck};
use crate::live::LiveCatalogue;
use crate::mcp::SkillboxMcp;
use crate::metrics::{Metrics, class};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address it listens on (its host and port are the only ones `/mcp` accepts in
    /// `Host`, besides `localhost`).
    pub listen: SocketAddr,
    /// Calls that may run at once.
    pub max_concurrent: usize,
    /// Calls that may wait for a free slot; beyond that, `429` / a busy error.
    pub max_queue: usize,
    /// Other names clients reach the server by (a TLS certificate's name, say): accepted in
    /// `/mcp`'s `Host` and `Origin` checks besides `localhost` and the listen address.
    pub host_names: Vec<String>,
}

/// Shared by every handler.
struct AppState {
    catalogue: Arc<LiveCatalogue>,
    keys: Arc<dyn KeyCheck>,
    metrics: Arc<Metrics>,
    /// Permits for calls admitted (running or waiting); one is held for a whole call.
    admitted: Arc<Semaphore>,
    /// Permits for calls running.
    running: Arc<Semaphore>,
    /// How many `admitted` permits there are in all.
    capacity: usize,
}

/// The server's routes over `catalogue`, keys checked by `keys`.
pub fn router(catalogue: Arc<LiveCatalogue>, keys: Arc<dyn KeyCheck>, options: &ServeOptions) -> Router {
    let metrics = Arc::new(Metrics::default());
    let max_concurrent = options.max_concurrent.max(1);
    let state = Arc::new(AppState {
        catalogue: catalogue.clone(),
        keys,
        metrics: metrics.clone(),
        admitted: Arc::new(Semaphore::new(max_concurrent + options.max_queue)),
        running: Arc::new(Semaphore::new(max_concurrent)),
        capacity: max_concurrent + options.max_queue,
    });
    let port = options.listen.port();
    let mut hosts = vec!["localhost".to_owned(), options.listen.ip().to_string()];
    hosts.extend(options.host_names.iter().cloned());
    let mut allowed_hosts = Vec::new();
    let mut allowed_origins = Vec::new();
    for host in &hosts {
        let authority = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.clone() };
        allowed_hosts.push(host.clone());
        allowed_hosts.push(format!("{authority}:{port}"));
        for scheme in ["http", "https"] {
            allowed_origins.push(format!("{scheme}://{authority}:{port}"));
        }
    }
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts)
        .with_allowed_origins(allowed_origins)
        .enforce_origin_validation();
    let mcp_stats = metrics.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(SkillboxMcp::for_http(catalogue.clone(), mcp_stats.clone())),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let keyed = Router::new()
        .route("/v1/skills", get(list_skills))
        .route("/v1/skills/{name}", get(show_skill))
        .route("/v1/skills/{name}/invoke", post(invoke))
        .route("/v1/openapi.json", get(openapi))
        .nest_service("/mcp", mcp)
        // MCP calls are admitted like REST ones, once their key is checked (the outer layer).
        .route_layer(middleware::from_fn_with_state(state.clone(), admit_mcp))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .merge(keyed)
        .with_state(state)
}

/// Serves `router` on `listener` (a [`tokio::net::TcpListener`] or a
/// [`TlsListener`](crate::TlsListener)) until `shutdown` completes, then lets calls in flight
/// finish (the caller bounds how long with a timeout around this future).
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use axum::serve::ListenerExt;
    // `tap_io` (doing nothing) gives any listener with socket addresses the peer-address
    // extractor `/metrics` uses.
    axum::serve(listener.tap_io(|_| {}), router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

impl AppState {
    /// Admits one call for as long as the permits live: a slot to wait in, then one to run
    /// in. `None` (counted as busy) when every slot to wait in is taken.
    async fn admit(&self) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            self.metrics.record_busy();
            return None;
        };
        let running = self.running.clone().acquire_owned().await.ok()?;
        Some((admitted, running))
    }

    /// The caller an `Authorization: Bearer` header's key identifies, if it is valid.
    fn caller_of(&self, request: &Request) -> Option<Caller> {
        bearer(request).and_then(|key| self.keys.check(key))
    }
}

/// `Authorization: Bearer <key>` → a [`Caller`] in the request's extensions, or 401 with no
/// detail.
async fn require_key(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    match state.caller_of(&request) {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => unauthorized(),
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}

fn unauthorized() -> Response {
    let mut response = problem(StatusCode::UNAUTHORIZED, "unauthorized", "An API key is required.", None);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// MCP `POST`s take an admission permit for the whole request, like REST invocations.
async fn admit_mcp(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if !(request.uri().path().starts_with("/mcp") && request.method() == axum::http::Method::POST) {
        return next.run(request).await;
    }
    let Some(_slot) = state.admit().await else { return busy() };
    next.run(request).await
}

fn busy() -> Response {
    let mut response = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "busy",
        "The server is running as many skills as it may and its queue is full; retry shortly.",
        None,
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An RFC 9457 problem document.
fn problem(status: StatusCode, kind: &str, detail: &str, skill: Option<&str>) -> Response {
    let mut body = json!({
        "type": format!("https://skillbox.invalid/problems/{kind}"),
        "title": kind,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(skill) = skill {
        body["skill"] = json!(skill);
    }
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

fn describe(tool: &Tool) -> Value {
    json!({
        "name": tool.name,
        "description": tool.description,
        "input_schema": tool.input.value(),
        "output_schema": tool.output.as_ref().map(|s| s.value()),
    })
}

/// The tool `name`, if this caller may call it (one the key may not call looks absent).
fn visible(state: &AppState, caller: &Caller, name: &str) -> Option<Tool> {
    state.catalogue.current().get(name).filter(|t| caller.may_call(&t.name)).cloned()
}

fn not_found(name: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        &format!("there is no skill named `{}`; GET /v1/skills lists them", skillbox_runtime::display::escape(name)),
        None,
    )
}

async fn list_skills(State(state): State<Arc<AppState>>, axum::Extension(caller): axum::Extension<Caller>) -> Response {
    let catalogue = state.catalogue.current();
    let tools: Vec<Value> = catalogue.tools().filter(|t| caller.may_call(&t.name)).map(describe).collect();
    Json(json!({ "skills": tools })).into_response()
}

async fn show_skill(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    match visible(&state, &caller, &name) {
        Some(tool) => Json(describe(&tool)).into_response(),
        None => not_found(&name),
    }
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Some(tool) = visible(&state, &caller, &name) else { return not_found(&name) };
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return problem(StatusCode::BAD_REQUEST, "input", &format!("the body is not JSON: {e}"), Some(&tool.name));
        }
    };
    let Some(_slot) = state.admit().await else { return busy() };
    let outcome = crate::call::run(&tool, &input, &caller, &caller.context(), None, Some(&state.metrics)).await;
    match outcome {
        Ok(output) => {
            let mut response = output.json.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => {
            problem(status_of(&error), class(&error), &crate::call::failure_text(&tool.name, &error), Some(&tool.name))
        }
    }
}

/// The CLI's error classes as HTTP statuses.
fn status_of(error: &RunError) -> StatusCode {
    match class(error) {
        "input" => StatusCode::BAD_REQUEST,
        "denied" | "tripwire" => StatusCode::FORBIDDEN,
        "limit" => StatusCode::UNPROCESSABLE_ENTITY,
        "failed" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn metrics_text(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let keyed = state.caller_of(&request).is_some();
    if !peer.ip().is_loopback() && !keyed {
        return unauthorized();
    }
    let in_flight = state.capacity - state.admitted.available_permits();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(in_flight)).into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
