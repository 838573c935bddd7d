//! Python skills built with componentize-py (`sample-skills/py-*`, built by
//! `sample-skills/build-python.sh`): a real round trip with a vault credential
//! against a loopback server, and a hostile Python skill that tries to read its
//! token back and gets nothing.
//!
//! A Python component is ~18 MiB (CPython inside) and takes tens of seconds to
//! compile on a small machine, so these tests share one compile cache that
//! outlives the test process (in cargo's target tmp dir; entries are keyed by
//! the component's digest and the engine's settings, so a rebuilt component or
//! another wasmtime never loads a stale one), and load each component under
//! one lock: only the first load in a fresh checkout compiles.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use serde_json::{Value, json};
use skillbox_runtime::vault::AuditQuery;
use skillbox_runtime::{DenyAll, Error, Runtime, RuntimeConfig, Skill, SkillFailure};
use skillbox_tests::server::{Received, Reply, TestServer};
use skillbox_tests::{TestVault, json};

const TOKEN: &str = "wx_TestToken0123456789abcdefABCDEF4242";

/// A runtime on `vault` (plain http to loopback allowed, approvals denied) with
/// the compile cache these tests share across runs.
fn runtime(vault: &TestVault) -> Runtime {
    let mut config = RuntimeConfig { cache_dir: Some(cache_dir().to_owned()), ..RuntimeConfig::default() };
    config.egress.allow_http_loopback = true;
    Runtime::with_vault(config, vault.vault.clone(), Arc::new(DenyAll)).expect("runtime with vault")
}

/// The compile cache shared across runs. Entries are ~40 MiB each, so the first
/// call removes those of components that no longer exist (an earlier build of a
/// Python sample), keeping the directory at one entry per sample.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use sha2::Digest;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skillbox-python-cache");
        let current: Vec<String> = [skillbox_tests::PY_WEATHER_COMPONENT, skillbox_tests::PY_PROBE_COMPONENT]
            .iter()
            .map(|path| hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("a Python sample's component"))))
            .collect();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".cwasm") && !current.iter().any(|digest| name.starts_with(digest.as_str())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        dir
    })
}

/// Loads a sample under one lock, so tests running side by side never compile
/// the same Python component twice: the first compiles and fills the cache,
/// the rest load from it.
fn load(runtime: &Runtime, dir: &str) -> Skill {
    static LOADING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    runtime.load(dir).unwrap_or_else(|e| panic!("loading {dir}: {e}"))
}

/// A weather service that answers only `Authorization: Bearer TOKEN`.
async fn weather_server() -> TestServer {
    TestServer::start("127.0.0.1", |req: &Received| {
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Reply::json(401, json!({ "message": "invalid token" }));
        }
        match req.target.strip_prefix("/weather?city=") {
            Some(city) if req.method == "GET" => Reply::json(
                200,
                json!({ "city": percent_decode(city), "temp_c": -3.5, "conditions": ["snow", "wind"] }),
            ),
            _ => Reply::json(404, json!({ "message": "no such endpoint" })),
        }
    })
    .await
}

/// A server that hands the request's Authorization header straight back, in
/// its body (raw and base64) and in response headers.
async fn echo_server() -> TestServer {
    TestServer::start("127.0.0.1", |req: &Received| {
        let auth = req.header("authorization").unwrap_or_default().to_owned();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&auth);
        let mut reply =
            Reply::json(200, json!({ "authorization": auth, "authorization_b64": b64, "target": req.target }));
        reply.headers.push(("x-echo-authorization".into(), auth));
        reply.headers.push(("x-echo-b64".into(), b64));
        reply
    })
    .await
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 city")
}

/// The token in every form a leak could take.
fn assert_no_token(what: &str, text: &str) {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    for form in [TOKEN.to_owned(), STANDARD.encode(TOKEN), URL_SAFE_NO_PAD.encode(TOKEN), hex::encode(TOKEN)] {
        assert!(!text.contains(&form), "the token (as {form:?}) is in {what}: {text}");
    }
}

fn weather_input(server: &TestServer, city: &str) -> String {
    json!({ "city": city, "base_url": server.base_url() }).to_string()
}

#[tokio::test]
async fn py_weather_round_trip_with_a_granted_token() {
    let server = weather_server().await;
    let vault = TestVault::new();
    vault.add("weather", "bearer", TOKEN);
    vault.grant("py-weather", "weather", Some(&[&server.host()]));
    let skill = load(&runtime(&vault), skillbox_tests::PY_WEATHER);

    let output = skill.invoke(&weather_input(&server, "São Paulo & Co")).await.unwrap();
    assert_eq!(
        json(&output.json),
        json!({ "city": "São Paulo & Co", "temp_c": -3.5, "conditions": ["snow", "wind"] }),
        "the server's JSON comes back as it was sent"
    );
    let seen = server.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/weather?city=S%C3%A3o%20Paulo%20%26%20Co", "the city is URL-encoded");
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));

    // The use is audited with its host; the token is in no audit row and nowhere in the output.
    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    let used = rows.iter().find(|r| r.action == skillbox_runtime::vault::AuditAction::Use).expect("a use row");
    assert_eq!(used.skill.as_deref(), Some("py-weather"));
    assert_eq!(used.detail["operation"], "http.send");
    assert_eq!(used.detail["host"], server.host());
    assert_no_token("the audit rows", &serde_json::to_string(&rows).unwrap());
    assert_no_token("the output", &output.json);
    assert_no_token("stdout", &String::from_utf8_lossy(&output.stdout));
    assert_no_token("stderr", &String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn py_weather_with_the_wrong_token_fails_naming_the_401() {
    let server = weather_server().await;
    let vault = TestVault::new();
    vault.add("weather", "bearer", "wx_NotTheRightToken0000000000000000");
    vault.grant("py-weather", "weather", Some(&[&server.host()]));
    let skill = load(&runtime(&vault), skillbox_tests::PY_WEATHER);

    let err = skill.invoke(&weather_input(&server, "Oslo")).await.unwrap_err();
    assert!(
        matches!(&err, Error::SkillFailed { error: SkillFailure::Failed(m), .. } if m.contains("401") && m.contains("invalid token")),
        "{err}"
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn py_weather_without_a_grant_is_denied_naming_skillbox_grant() {
    let server = weather_server().await;
    let vault = TestVault::new();
    vault.add("weather", "bearer", TOKEN);
    let skill = load(&runtime(&vault), skillbox_tests::PY_WEATHER);

    let err = skill.invoke(&weather_input(&server, "Oslo")).await.unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    assert!(err.to_string().contains("skillbox grant py-weather weather"), "{err}");
    assert!(server.received().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn py_probe_cannot_get_its_token_back() {
    let server = echo_server().await;
    let vault = TestVault::new();
    vault.add("weather", "bearer", TOKEN);
    vault.grant("py-probe", "weather", Some(&[&server.host()]));
    let skill = load(&runtime(&vault), skillbox_tests::PY_PROBE);

    let output = skill.invoke(&json!({ "base_url": server.base_url() }).to_string()).await.unwrap();
    let seen: Value = json(&output.json);

    // The server did get the token, twice, and reflected it in body and headers...
    let received = server.received();
    assert_eq!(received.len(), 2, "the two echo requests, nothing to the ungranted host");
    for request in &received {
        assert_eq!(request.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    }
    // ...but none of it reached the skill: the reflection came back redacted.
    for step in ["echo", "echo_post"] {
        let response = &seen[step]["ok"];
        assert_eq!(response["status"], 200, "{step}: {}", seen[step]);
        assert!(response["body"].as_str().unwrap().contains("Bearer [REDACTED]"), "{step}: {response}");
        let header = response["headers"].as_array().unwrap().iter().find(|h| h[0] == "x-echo-authorization");
        assert_eq!(header.map(|h| &h[1]), Some(&json!("Bearer [REDACTED]")), "{step}: {response}");
    }
    assert_eq!(seen["other_host"]["error"], "Error_HostNotAllowed", "{}", seen["other_host"]);
    // The handle is an opaque number with metadata; the sandbox has no env, args or files.
    assert_eq!(seen["handle"]["name"]["ok"], "weather");
    assert_eq!(seen["handle"]["service"]["ok"], "test-service");
    assert_eq!(seen["environ"]["ok"], json!({}));
    assert_eq!(seen["argv"]["ok"], json!([]));
    for (path, attempt) in seen["files"].as_object().unwrap().iter().chain(seen["dirs"].as_object().unwrap()) {
        assert!(attempt.get("exception").is_some(), "{path} was readable: {attempt}");
    }

    // The token is nowhere: not in the result, stdout, stderr, or the audit trail.
    assert_no_token("the output", &output.json);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("[REDACTED]"), "the probe printed what it saw: {stdout}");
    assert_no_token("stdout", &stdout);
    assert_no_token("stderr", &String::from_utf8_lossy(&output.stderr));
    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    assert!(!rows.is_empty());
    assert_no_token("the audit rows", &serde_json::to_string(&rows).unwrap());
}
