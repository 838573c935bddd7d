//! Cost of using a credential through the host, each against a baseline in
//! the same run:
//!
//! - `http/egress`: one authenticated GET through the egress pipeline
//!   (allowlist, leak check, address check, injection, redaction) with a
//!   prepared injection, as every request after a handle's first uses, vs
//!   `http/direct`: the same GET with a plain reqwest client. Same loopback
//!   server, new connection per request for both. `http/egress-unauth` is
//!   the pipeline without a credential, `http/egress-unauth-secret` the same
//!   with a secret open (so the tripwire and response scans have work to do).
//! - `skill/open+send`: a whole invocation of `cred-probe` that opens a
//!   granted token (grant check, decrypt, audit) and sends one authenticated
//!   request (plus its audit row) vs `skill/send-unauthenticated`: the same
//!   invocation sending the same request without a credential. The
//!   difference is what `open` + one use cost; `skill/open-only`,
//!   `skill/open+send-unauthenticated` and `skill/nothing` split it further.
//!
//! Run with `cargo bench -p skillbox-benches --bench credentials`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use skillbox_egress::{Auth, Egress, EgressConfig, HostPattern, Injection, Policy, Redactor, Request, SecretString};
use skillbox_runtime::vault::{CredentialRef, NewGrant};
use skillbox_tests::server::{Received, Reply, TestServer};
use skillbox_tests::{TestVault, temp_skill};

const TOKEN: &str = "ghp_BenchToken0123456789abcdefABCDEF";

fn http(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = tokio.block_on(TestServer::start("127.0.0.1", |req: &Received| {
        let ok = req.header("authorization") == Some(&format!("Bearer {TOKEN}"));
        Reply::json(if ok { 200 } else { 401 }, json!({ "ok": ok }))
    }));
    let url = format!("{}/resource", server.base_url());

    let egress = Egress::new(EgressConfig { allow_http_loopback: true, ..EgressConfig::default() }).unwrap();
    let injection = Injection::new(
        Auth::Bearer(SecretString::from(TOKEN.to_owned())),
        vec![HostPattern::parse(&server.host()).unwrap()],
    )
    .unwrap();
    let redactor = skillbox_egress::Scanner::secrets(Redactor::new([TOKEN]));
    let policy = Policy::default();
    let direct = reqwest::Client::builder().no_proxy().build().unwrap();

    let mut group = c.benchmark_group("http");
    group.bench_function("egress", |b| {
        b.to_async(&tokio).iter(|| async {
            let request = Request { method: "GET".into(), url: url.clone(), ..Request::default() };
            let exchange = egress.send(&policy, request, Some(&injection), &redactor).await.unwrap();
            assert_eq!(exchange.response.status, 200);
        });
    });
    let open_policy = Policy { network_allow: vec![HostPattern::parse(&server.host()).unwrap()] };
    let empty = skillbox_egress::Scanner::default();
    group.bench_function("egress-unauth", |b| {
        b.to_async(&tokio).iter(|| async {
            let request = Request {
                method: "GET".into(),
                url: url.clone(),
                headers: vec![("authorization".into(), format!("Bearer {TOKEN}"))],
                ..Request::default()
            };
            let exchange = egress.send(&open_policy, request, None, &empty).await.unwrap();
            assert_eq!(exchange.response.status, 200);
        });
    });
    // The same unauthenticated GET, but with a secret open (what every scan then looks for).
    group.bench_function("egress-unauth-secret", |b| {
        b.to_async(&tokio).iter(|| async {
            let request = Request { method: "GET".into(), url: url.clone(), ..Request::default() };
            let exchange = egress.send(&open_policy, request, None, &redactor).await.unwrap();
            assert_eq!(exchange.response.status, 401, "sent without the token");
        });
    });
    group.bench_function("direct", |b| {
        b.to_async(&tokio).iter(|| async {
            let response = direct.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        });
    });
    group.finish();
}

fn skill(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = tokio.block_on(TestServer::start("127.0.0.1", |_req: &Received| Reply::json(200, json!({}))));
    let vault = TestVault::new();
    vault.add("github", "bearer", TOKEN);
    // --any-digest: the bench manifest below is a second manifest for the same component.
    let mut grant = NewGrant::new("cred-probe", CredentialRef::new("github"));
    grant.hosts = Some(vec![server.host()]);
    grant.any_digest = true;
    vault.vault.grant(&grant, "bench").unwrap();
    let (_dir, manifest) = temp_skill(&format!(
        "[skill]\nname = \"cred-probe\"\nversion = \"0.1.0\"\ncomponent = \"{{component:cred-probe}}\"\n\
         [[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"api.github.com\"]\n\
         [network]\nallow = [\"{}\"]\n",
        server.host()
    ));
    let runtime = vault.runtime_with(Arc::new(skillbox_runtime::DenyAll));
    let probe = runtime.load(&manifest).unwrap();
    let url = format!("{}/resource", server.base_url());
    let with_credential = json!({ "steps": [{ "send": { "url": url }, "auth": "github" }] }).to_string();
    let without = json!({ "steps": [{ "send": { "url": url } }] }).to_string();

    let open_only = json!({ "steps": [{ "open": "github" }] }).to_string();
    let open_then_unauth = json!({ "steps": [{ "open": "github" }, { "send": { "url": url } }] }).to_string();
    let nothing = json!({ "steps": [] }).to_string();
    let mut group = c.benchmark_group("skill");
    group.bench_function("open-only", |b| {
        b.to_async(&tokio).iter(|| async { probe.invoke(&open_only).await.unwrap() });
    });
    group.bench_function("open+send-unauthenticated", |b| {
        b.to_async(&tokio).iter(|| async { probe.invoke(&open_then_unauth).await.unwrap() });
    });
    group.bench_function("nothing", |b| {
        b.to_async(&tokio).iter(|| async { probe.invoke(&nothing).await.unwrap() });
    });
    group.bench_function("open+send", |b| {
        b.to_async(&tokio).iter(|| async { probe.invoke(&with_credential).await.unwrap() });
    });
    group.bench_function("send-unauthenticated", |b| {
        b.to_async(&tokio).iter(|| async { probe.invoke(&without).await.unwrap() });
    });
    group.finish();
}

criterion_group!(benches, http, skill);
criterion_main!(benches);
