//! `skillbox serve`'s HTTP server, in process on loopback: the REST API with reqwest, `/mcp`
//! with rmcp's streamable HTTP client, keys, tenants, capacity.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use skillbox_runtime::Catalogue;
use skillbox_serve::{Caller, KeyCheck, ServeOptions};
use skillbox_tests::TestVault;
use skillbox_tests::server::{Received, Reply, TestServer};
use skillbox_vault::{CredentialRef, NewGrant};

const TOKEN: &str = "ghp_HttpServeToken0123456789abcdefABCD";

/// Keys for the test: a fixed table (the CLI checks them against the vault's API keys).
struct Keys(HashMap<&'static str, Caller>);

impl KeyCheck for Keys {
    fn check(&self, key: &str) -> Option<Caller> {
        self.0.get(key).cloned()
    }
}

fn caller(user: &str, skills: Option<&[&str]>) -> Caller {
    Caller {
        user: user.into(),
        environment: "dev".into(),
        skills: skills.map(|s| s.iter().map(|x| x.to_string()).collect()),
        fingerprint: format!("sbx_…{user}"),
    }
}

struct Served {
    addr: SocketAddr,
    _vault: TestVault,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn start(vault: TestVault, skills: &[&str], max_concurrent: usize, max_queue: usize) -> Served {
    let keys = Keys(HashMap::from([
        ("sbx_key_acme", caller("acme", None)),
        ("sbx_key_globex", caller("globex", None)),
        ("sbx_key_only_issues", caller("acme", Some(&["github-issues"]))),
    ]));
    start_with_keys(vault, skills, max_concurrent, max_queue, Arc::new(keys)).await
}

async fn start_with_keys(
    vault: TestVault,
    skills: &[&str],
    max_concurrent: usize,
    max_queue: usize,
    keys: Arc<dyn KeyCheck>,
) -> Served {
    let runtime = vault.runtime();
    let dirs: Vec<PathBuf> = skills.iter().map(PathBuf::from).collect();
    let (catalogue, _skipped) = Catalogue::load(&runtime, &dirs).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions { listen: addr, max_concurrent, max_queue, host_names: Vec::new() };
    let router = skillbox_serve::router(skillbox_serve::LiveCatalogue::new(catalogue), keys, &options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(skillbox_serve::serve(listener, router, async move {
        let _ = stopped.await;
    }));
    Served { addr, _vault: vault, stop: Some(stop) }
}

async fn post(served: &Served, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(served.url(path)).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(served: &Served, path: &str, key: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(served.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_skills_run_through_the_rest_api() {
    let served = start(TestVault::new(), &[skillbox_tests::HELLO, skillbox_tests::GITHUB_ISSUES], 4, 16).await;
    assert_eq!(get(&served, "/healthz", None).await.0, 200);
    for key in [None, Some("sbx_wrong"), Some("")] {
        let (status, body) = get(&served, "/v1/skills", key).await;
        assert_eq!(status, 401, "{key:?}");
        assert!(!body.contains("acme"), "no detail: {body}");
    }
    let (status, body) = post(&served, "/v1/skills/hello/invoke", None, json!({ "name": "x" })).await;
    assert_eq!((status, body["title"].as_str()), (401, Some("unauthorized")));

    let (status, list) = get(&served, "/v1/skills", Some("sbx_key_acme")).await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list["skills"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["github-issues", "hello"]);
    let (status, hello) = get(&served, "/v1/skills/hello", Some("sbx_key_acme")).await;
    assert_eq!(status, 200);
    assert!(hello.contains("\"required\":[\"name\"]"), "{hello}");

    let (status, body) = post(&served, "/v1/skills/hello/invoke", Some("sbx_key_acme"), json!({ "name": "Ada" })).await;
    assert_eq!((status, body), (200, json!({ "greeting": "Hello, Ada!" })));
    let (status, body) = post(&served, "/v1/skills/hello/invoke", Some("sbx_key_acme"), json!({ "name": 7 })).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["title"], "input");
    assert!(body["detail"].as_str().unwrap().contains("`/name`"), "{body}");
    let (status, body) = post(&served, "/v1/skills/nope/invoke", Some("sbx_key_acme"), json!({})).await;
    assert_eq!((status, body["title"].as_str()), (404, Some("not-found")));
    // A key limited to some skills does not see the others.
    let (status, _) =
        post(&served, "/v1/skills/hello/invoke", Some("sbx_key_only_issues"), json!({ "name": "x" })).await;
    assert_eq!(status, 404);

    let (status, spec) = get(&served, "/v1/openapi.json", Some("sbx_key_acme")).await;
    assert_eq!(status, 200);
    assert!(spec.contains("/v1/skills/{name}/invoke"), "{spec}");
    let (status, metrics) = get(&served, "/metrics", None).await;
    assert_eq!(status, 200, "loopback reads metrics without a key");
    assert!(metrics.contains("skillbox_invocations_total{skill=\"hello\"} 2"), "{metrics}");
    assert!(metrics.contains("skillbox_failures_total{skill=\"hello\",class=\"input\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_runs_only_as_its_tenant() {
    let github = TestServer::start("127.0.0.1", |req: &Received| {
        if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            Reply::json(200, json!([{ "number": 1, "title": "acme's" }]))
        } else {
            Reply::json(401, json!({ "message": "Bad credentials" }))
        }
    })
    .await;
    let vault = TestVault::new();
    let acme = CredentialRef::new("github").owner("acme");
    vault.add_to(acme.clone(), "bearer", TOKEN);
    let mut grant = NewGrant::new("github-issues", acme);
    grant.hosts = Some(vec![github.host()]);
    vault.vault.grant(&grant, "test").unwrap();
    let served = start(vault, &[skillbox_tests::GITHUB_ISSUES], 4, 16).await;
    let input = json!({ "owner": "o", "repo": "r", "base_url": github.base_url() });

    let (status, body) = post(&served, "/v1/skills/github-issues/invoke", Some("sbx_key_acme"), input.clone()).await;
    assert_eq!((status, body), (200, json!({ "issues": [{ "number": 1, "title": "acme's" }] })));
    // globex's key cannot reach acme's credential, whatever the input says.
    let (status, body) = post(&served, "/v1/skills/github-issues/invoke", Some("sbx_key_globex"), input).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["title"], "denied");
    assert!(body["detail"].as_str().unwrap().contains("skillbox grant github-issues github"), "{body}");
    assert!(!body.to_string().contains(TOKEN));
    assert_eq!(github.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_needs_a_key_and_runs_as_its_caller() {
    let served = start(TestVault::new(), &[skillbox_tests::HELLO, skillbox_tests::GITHUB_ISSUES], 4, 16).await;
    let config = StreamableHttpClientTransportConfig::with_uri(served.url("/mcp")).auth_header("sbx_key_only_issues");
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.expect("MCP session");
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["github-issues"], "the key's skills only");
    let hidden = client.call_tool(CallToolRequestParams::new("hello")).await;
    assert!(hidden.is_err(), "{hidden:?}");
    client.cancel().await.unwrap();

    let config = StreamableHttpClientTransportConfig::with_uri(served.url("/mcp")).auth_header("sbx_key_acme");
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.expect("MCP session");
    let args = json!({ "name": "Lin" }).as_object().cloned().unwrap();
    let result = client.call_tool(CallToolRequestParams::new("hello").with_arguments(args)).await.unwrap();
    assert_eq!(result.structured_content, Some(json!({ "greeting": "Hello, Lin!" })));
    client.cancel().await.unwrap();

    let unkeyed = StreamableHttpClientTransportConfig::with_uri(served.url("/mcp"));
    assert!(().serve(StreamableHttpClientTransport::from_config(unkeyed)).await.is_err(), "no key, no session");
    // A browser page on another origin cannot drive it (DNS rebinding).
    let response = reqwest::Client::new()
        .post(served.url("/mcp"))
        .bearer_auth("sbx_key_acme")
        .header("origin", "http://evil.example")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_capacity_calls_are_answered_busy_not_dropped() {
    let served = Arc::new(start(TestVault::new(), &[skillbox_tests::HELLO, skillbox_tests::SPIN_FOREVER], 1, 0).await);
    // One slow call holds the only slot (spin-forever runs to its 1 s limit)...
    let slow = {
        let served = served.clone();
        tokio::spawn(
            async move { post(&served, "/v1/skills/spin-forever/invoke", Some("sbx_key_acme"), json!({})).await },
        )
    };
    // Once the server has it (its in-flight gauge says so)...
    loop {
        let (_, metrics) = get(&served, "/metrics", None).await;
        if metrics.contains("skillbox_in_flight 1") {
            break;
        }
        assert!(!slow.is_finished(), "the slow call ended before it was seen in flight");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // ...the others, with no queue, are told to come back: answered, not dropped.
    for _ in 0..3 {
        let (status, body) =
            post(&served, "/v1/skills/hello/invoke", Some("sbx_key_acme"), json!({ "name": "x" })).await;
        assert_eq!((status, body["title"].as_str()), (429, Some("busy")), "{body}");
    }
    let (_, metrics) = get(&served, "/metrics", None).await;
    assert!(metrics.contains("skillbox_busy_total 3"), "{metrics}");
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body["title"].as_str()), (422, Some("limit")), "{body}");
    // Free again.
    let (status, _) = post(&served, "/v1/skills/hello/invoke", Some("sbx_key_acme"), json!({ "name": "x" })).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_all_answer_correctly() {
    let served = Arc::new(start(TestVault::new(), &[skillbox_tests::HELLO], 4, 256).await);
    let calls = (0..200).map(|i| {
        let served = served.clone();
        tokio::spawn(async move {
            post(&served, "/v1/skills/hello/invoke", Some("sbx_key_acme"), json!({ "name": format!("n{i}") })).await
        })
    });
    let results = futures_join(calls.collect()).await;
    for (i, (status, body)) in results.into_iter().enumerate() {
        assert_eq!((status, body), (200, json!({ "greeting": format!("Hello, n{i}!") })));
    }
}

async fn futures_join<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_keys_refuse_wrong_revoked_and_expired_keys_and_fix_the_environment() {
    use secrecy::ExposeSecret;
    use skillbox_vault::{Environment, NewApiKey};
    let vault = TestVault::new();
    let v = vault.vault.clone();
    let create = |name: &str, env: Environment, expires: Option<std::time::SystemTime>| {
        let mut new = NewApiKey::new(name);
        new.environment = env;
        new.expires_at = expires;
        v.apikey_create(&new, "test").unwrap().1.expose_secret().to_owned()
    };
    let good = create("good", Environment::Dev, None);
    let revoked = create("revoked", Environment::Dev, None);
    let expired =
        create("expired", Environment::Dev, Some(std::time::SystemTime::now() - std::time::Duration::from_secs(3600)));
    let production = create("prod", Environment::Production, None);
    v.apikey_revoke("revoked", "test").unwrap();
    let keys = Arc::new(skillbox_serve::VaultKeys::new(v.clone()));
    let served = start_with_keys(vault, &[skillbox_tests::HELLO, skillbox_tests::GITHUB_ISSUES], 4, 16, keys).await;

    let hello = json!({ "name": "Vic" });
    assert_eq!(post(&served, "/v1/skills/hello/invoke", Some(&good), hello.clone()).await.0, 200);
    let one_off = format!("{}x", &good[..good.len() - 1]);
    for key in [revoked.as_str(), expired.as_str(), one_off.as_str(), "sbx_"] {
        let (status, body) = post(&served, "/v1/skills/hello/invoke", Some(key), hello.clone()).await;
        assert_eq!(status, 401, "{key}: {body}");
        assert_eq!(body["detail"], "An API key is required.", "no detail about why");
    }
    // A production key runs in production: the dev credential granted to github-issues is
    // not there, whatever the request says.
    let input = json!({ "owner": "o", "repo": "r", "base_url": "http://127.0.0.1:9" });
    let (status, body) = post(&served, "/v1/skills/github-issues/invoke", Some(&production), input).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("production"), "{body}");
}
