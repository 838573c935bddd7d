//! Standard `wasi:http` skills: the host's hook holds every request to the egress policy and
//! injects `transparent` credentials for their own hosts only.
//!
//! `wasi-http-probe` sends the requests its input lists with an off-the-shelf wasi:http client
//! (`wstd`), follows redirects itself when asked, and can return its whole linear memory;
//! `weather-wasi-http` is the sample skill. Every server here is a real one on loopback.

use std::time::Duration;

use serde_json::{Value, json};
use skillbox_runtime::vault::{AuditAction, AuditQuery};
use skillbox_runtime::{Error, Skill};
use skillbox_tests::reflect::{self, Needles};
use skillbox_tests::server::{Reply, TestServer};
use skillbox_tests::{TestVault, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROBE: &str = "wasi-http-probe";

fn token() -> String {
    use rand::Rng;
    let tail: String = (0..32).map(|_| rand::rng().sample(rand::distr::Alphanumeric) as char).collect();
    format!("wt_{tail}")
}

/// A vault holding the probe's `token`, granted for `hosts`, and the probe loaded on it.
fn probe(secret: &str, hosts: &[&str]) -> (TestVault, Skill) {
    let vault = TestVault::new();
    vault.add("token", "bearer", secret);
    vault.grant(PROBE, "token", Some(hosts));
    let skill = vault.runtime().load(skillbox_tests::WASI_HTTP_PROBE).expect("probe loads");
    (vault, skill)
}

async fn run(skill: &Skill, input: Value) -> Result<Value, Error> {
    skill.invoke(&input.to_string()).await.map(|out| json(&out.json))
}

/// A server that answers 200 `{"authorized": bool}`, true only for exactly `Bearer <secret>`.
async fn checking_server(secret: &str) -> TestServer {
    let expected = format!("Bearer {secret}");
    TestServer::start("127.0.0.1", move |req| {
        let ok = req.header("authorization") == Some(expected.as_str());
        Reply::json(if ok { 200 } else { 401 }, json!({ "authorized": ok, "path": req.target }))
    })
    .await
}

/// `http://localhost:PORT` for a server (the probe's `[network] allow` has `localhost:*`, and
/// the credential's granted host is `127.0.0.1:PORT`, so this URL never matches it).
fn via_localhost(server: &TestServer) -> String {
    format!("http://localhost:{}", server.addr.port())
}

#[tokio::test]
async fn an_unmodified_wasi_http_component_gets_its_token_for_its_host_and_nothing_for_others() {
    let secret = token();
    let api = checking_server(&secret).await;
    let other = checking_server(&secret).await;
    let (vault, skill) = probe(&secret, &[&api.host()]);

    let out = run(
        &skill,
        json!({ "requests": [
            { "url": format!("{}/data", api.base_url()) },
            { "url": format!("{}/elsewhere", via_localhost(&other)) },
        ]}),
    )
    .await
    .expect("probe runs");
    let results = out["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 200, "{out}");
    assert_eq!(json(results[0]["body"].as_str().unwrap())["authorized"], true);
    assert_eq!(results[1]["status"], 401, "the other host got no credential: {out}");
    assert_eq!(api.received()[0].header("authorization"), Some(format!("Bearer {secret}").as_str()));
    assert!(other.received()[0].header("authorization").is_none());
    assert!(!out.to_string().contains(&secret));

    // Each credentialed request is a `use` row naming wasi:http; the unauthenticated one is not.
    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    let uses: Vec<_> = rows.iter().filter(|r| r.action == AuditAction::Use).collect();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0].detail["operation"], "wasi:http");
    assert_eq!(uses[0].detail["host"], api.host());
    assert_eq!(uses[0].detail["status"], 200);
    assert!(rows.iter().any(|r| r.action == AuditAction::Read), "the transparent open is audited");
}

#[tokio::test]
async fn the_component_imports_wasi_http_and_not_our_credentials_or_http() {
    for path in [skillbox_tests::WASI_HTTP_PROBE, skillbox_tests::WEATHER_WASI_HTTP] {
        let runtime = skillbox_tests::runtime();
        let manifest = skillbox_runtime::Manifest::load(path).unwrap();
        let info = runtime.inspect(&manifest).unwrap();
        let imports: Vec<&str> = info.imports.iter().map(|i| i.name.as_str()).collect();
        assert!(imports.iter().any(|i| i.starts_with("wasi:http/outgoing-handler@")), "{imports:?}");
        // `skillbox:skill/types` (the `run` export's error type) is the only one of ours.
        let ours: Vec<&&str> = imports.iter().filter(|i| i.starts_with("skillbox:skill/")).collect();
        assert_eq!(ours, [&"skillbox:skill/types@0.1.0"], "{imports:?}");
    }
}

#[tokio::test]
async fn a_redirect_to_another_host_carries_no_credential() {
    let secret = token();
    let landing = checking_server(&secret).await;
    let target = format!("{}/landing", via_localhost(&landing));
    let api = TestServer::start("127.0.0.1", move |_| Reply::redirect(&target)).await;
    let (_vault, skill) = probe(&secret, &[&api.host()]);

    let out = run(&skill, json!({ "follow": true, "requests": [{ "url": format!("{}/start", api.base_url()) }] }))
        .await
        .expect("probe runs");
    let results = out["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 302, "the host hands the redirect back: {out}");
    assert_eq!(results[1]["status"], 401, "{out}");
    assert_eq!(api.received()[0].header("authorization"), Some(format!("Bearer {secret}").as_str()));
    assert_eq!(landing.received().len(), 1);
    assert!(landing.received()[0].header("authorization").is_none(), "the credential followed the redirect");
}

#[tokio::test]
async fn private_metadata_and_undeclared_destinations_are_refused() {
    let secret = token();
    let (_vault, skill) = probe(&secret, &["api.example.com"]);
    let out = run(
        &skill,
        json!({ "requests": [
            { "url": "https://169.254.169.254/latest/meta-data/" },
            { "url": "https://10.1.2.3/" },
            { "url": "https://undeclared.example/" },
            { "url": "http://10.1.2.3/" },
        ]}),
    )
    .await
    .expect("probe runs (each refusal is the request's error)");
    let errors: Vec<&str> = out["results"].as_array().unwrap().iter().map(|r| r["error"].as_str().unwrap()).collect();
    assert!(errors[0].contains("169.254.169.254") && errors[0].contains("may not reach"), "{}", errors[0]);
    assert!(errors[1].contains("10.1.2.3") && errors[1].contains("may not reach"), "{}", errors[1]);
    assert!(errors[2].contains("undeclared.example"), "{}", errors[2]);
    assert!(errors[3].contains("http"), "{}", errors[3]);
}

#[tokio::test]
async fn an_ungranted_transparent_credential_is_never_sent_and_the_request_is_refused() {
    let secret = token();
    let api = checking_server(&secret).await;
    let vault = TestVault::new();
    vault.add("token", "bearer", &secret);
    // No grant: with a manifest host of 127.0.0.1:PORT the request would carry it.
    let (_dir, manifest) = skillbox_tests::temp_skill(&format!(
        "[skill]\nname = \"{PROBE}\"\nversion = \"0.1.0\"\ncomponent = \"{{component:{PROBE}}}\"\n\
         [[credentials]]\nname = \"token\"\nkind = \"bearer\"\nhosts = [\"{}\"]\ntransparent = true\n",
        api.host()
    ));
    let skill = vault.runtime().load(&manifest).unwrap();
    let out = run(&skill, json!({ "requests": [{ "url": format!("{}/data", api.base_url()) }] })).await;
    let text = match out {
        Ok(out) => out.to_string(),
        Err(error) => error.to_string(),
    };
    assert!(text.contains("token") && text.contains("grant"), "{text}");
    assert!(api.received().is_empty(), "nothing may be sent without the credential it would carry");
}

#[tokio::test]
async fn a_token_in_an_outgoing_body_trips_the_wire() {
    let secret = token();
    let api = checking_server(&secret).await;
    let (vault, skill) = probe(&secret, &[&api.host()]);
    let error = run(
        &skill,
        json!({ "requests": [{ "method": "POST", "url": format!("{}/upload", api.base_url()),
                               "body": format!("leaked={secret}") }]}),
    )
    .await
    .expect_err("a secret in a body trips the wire");
    assert!(matches!(error, Error::Tripwire { .. }), "{error}");
    assert!(api.received().is_empty(), "nothing was sent");
    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    let trip = rows.iter().find(|r| r.action == AuditAction::Tripwire).expect("tripwire row");
    assert_eq!(trip.detail["channel"], "wasi:http body");
}

/// A server that reflects the request's `Authorization` value, `Transfer-Encoding: chunked`,
/// after 64 KiB of padding, with the value split across two chunks sent 50 ms apart. The path
/// says how: `/raw` as it is, `/escaped` as JSON `\uXXXX` escapes (which only a decoded view
/// finds).
async fn split_reflector() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let auth = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: ")))
                    .unwrap_or("none")
                    .to_owned();
                let echoed = if head.starts_with("GET /escaped") {
                    auth.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
                } else {
                    auth.clone()
                };
                let padding = "x".repeat(64 * 1024);
                let body = format!("{{\"padding\":\"{padding}\",\"echo\":\"{echoed}\"}}");
                let (a, b) = body.split_at(body.len() - 2 - echoed.len() / 2);
                let chunk = |part: &str| format!("{:x}\r\n{part}\r\n", part.len());
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{}",
                            chunk(a)
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.write_all(format!("{}0\r\n\r\n", chunk(b)).as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_reflected_token_is_cut_out_even_split_across_chunks_and_never_in_guest_memory() {
    let secret = token();
    let split = split_reflector().await;
    let reflector = reflect::start().await;
    let (vault, skill) = probe(&secret, &[&split.to_string(), &reflector.host()]);

    let out = run(
        &skill,
        json!({ "dump": true, "requests": [
            { "url": format!("http://{split}/raw") },
            { "url": format!("http://{split}/escaped") },
            { "url": format!("{}/reflect/raw", reflector.base_url()) },
            { "url": format!("{}/reflect/base64", reflector.base_url()) },
            { "url": format!("{}/reflect/hex", reflector.base_url()) },
            { "url": format!("{}/reflect/gzip-embedded", reflector.base_url()) },
            { "url": format!("{}/reflect/split-base64", reflector.base_url()) },
        ]}),
    )
    .await
    .expect("probe runs");
    let results = out["results"].as_array().unwrap();
    // Raw reflections, split or whole, are redacted in place.
    let echoed = json(results[0]["body"].as_str().unwrap());
    assert_eq!(echoed["echo"], "Bearer [REDACTED]", "{}", results[0]["error"]);
    assert_eq!(echoed["padding"].as_str().unwrap().len(), 64 * 1024);
    // Encoded and split: found in the views across the boundary; the body is cut off.
    let cut = results[1]["error"].as_str().unwrap_or_else(|| panic!("not cut off: {}", results[1]));
    assert!(cut.contains("withheld"), "{cut}");
    assert!(results[2]["body"].as_str().unwrap().contains("[REDACTED]"), "{}", results[2]);
    // Encoded ones are redacted where the encoding is matched directly, else blocked; either
    // way nothing an attacker could decode is left, and a block is audited.
    let needles = Needles::new(&[("token", secret.as_bytes())]);
    let mut blocked = 0;
    for result in &results[3..] {
        match result["error"].as_str() {
            Some(error) => {
                assert!(error.contains("withheld"), "{error}");
                blocked += 1;
            }
            None => assert_eq!(needles.find_in_views(result["body"].as_str().unwrap().as_bytes(), 3), None, "{result}"),
        }
    }
    assert!(blocked > 0, "{out:#}");
    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    assert!(
        rows.iter().any(|r| r.action == AuditAction::Leak && r.detail["channel"] == "wasi:http.response"),
        "the blocked response is audited"
    );

    // The memory proof: the token is nowhere in the guest's memory, raw or in any view.
    let memory = hex::decode(out["memory"].as_str().unwrap()).unwrap();
    assert!(memory.len() > 1 << 20);
    assert_eq!(needles.find(&memory), None, "the token is in guest memory");
    assert_eq!(needles.find_in_views(&memory[..memory.len().min(4 << 20)], 1), None);
}

#[tokio::test]
async fn weather_wasi_http_round_trips_with_the_injected_token() {
    let secret = token();
    let expected = format!("Bearer {secret}");
    let server = TestServer::start("127.0.0.1", move |req| {
        if req.header("authorization") != Some(expected.as_str()) {
            return Reply::json(401, json!({ "error": "bad token" }));
        }
        let city = req.target.split("city=").nth(1).unwrap_or_default().to_owned();
        Reply::json(200, json!({ "city": city, "temperature_c": 3.5, "conditions": "snow" }))
    })
    .await;
    let vault = TestVault::new();
    vault.add("weather", "bearer", &secret);
    vault.grant("weather-wasi-http", "weather", Some(&[&server.host()]));
    let skill = vault.runtime().load(skillbox_tests::WEATHER_WASI_HTTP).unwrap();
    let out = run(&skill, json!({ "city": "Oslo", "base_url": server.base_url() })).await.unwrap();
    assert_eq!(out, json!({ "city": "Oslo", "temperature_c": 3.5, "conditions": "snow" }));
    assert_eq!(server.received()[0].target, "/weather?city=Oslo");

    // With the wrong token in the vault, the server's 401 is the skill's error.
    let vault = TestVault::new();
    vault.add("weather", "bearer", &token());
    vault.grant("weather-wasi-http", "weather", Some(&[&server.host()]));
    let skill = vault.runtime().load(skillbox_tests::WEATHER_WASI_HTTP).unwrap();
    let error = run(&skill, json!({ "city": "Oslo", "base_url": server.base_url() })).await.unwrap_err();
    assert!(error.to_string().contains("401"), "{error}");
}
