//! Serving throughput: 256 calls of `hello` made by 64 concurrent clients, through
//! `POST /v1/skills/hello/invoke` and through MCP `tools/call` (streamable HTTP), against the
//! same 256 calls made in process with `Tool::invoke` (64 tasks) in the same run. The ratio
//! of medians is what the HTTP layer costs; the issue's target is HTTP at least half the
//! in-process throughput.
//!
//! Run with `cargo bench -p skillbox-benches --bench serve`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;
use skillbox_runtime::{Catalogue, InvocationContext, Runtime, RuntimeConfig};
use skillbox_serve::{Caller, KeyCheck, ServeOptions};

const CALLS: usize = 256;
const CLIENTS: usize = 64;
const KEY: &str = "sbx_bench_key";

struct Keys(HashMap<&'static str, Caller>);

impl KeyCheck for Keys {
    fn check(&self, key: &str) -> Option<Caller> {
        self.0.get(key).cloned()
    }
}

fn serve(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime =
        Runtime::new(RuntimeConfig { cache_dir: Some(cache.path().to_owned()), ..RuntimeConfig::default() }).unwrap();
    let (catalogue, _) = Catalogue::load(&runtime, &[PathBuf::from(skillbox_tests::HELLO)]).unwrap();
    let catalogue = Arc::new(catalogue);
    let caller =
        Caller { user: "default".into(), environment: "dev".into(), skills: None, fingerprint: "bench".into() };
    let url = tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = listener.local_addr().unwrap();
        let options = ServeOptions { listen, max_concurrent: 64, max_queue: 1024, host_names: Vec::new() };
        let keys = Arc::new(Keys(HashMap::from([(KEY, caller.clone())])));
        let router = skillbox_serve::router(skillbox_serve::LiveCatalogue::new((*catalogue).clone()), keys, &options);
        tokio::spawn(skillbox_serve::serve(listener, router, std::future::pending()));
        format!("http://{listen}")
    });
    let http = reqwest::Client::new();
    let mcp_clients = tokio.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let config = StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp")).auth_header(KEY);
            clients.push(Arc::new(().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap()));
        }
        clients
    });
    let context = InvocationContext::default();

    let mut group = c.benchmark_group("serve");
    group.throughput(Throughput::Elements(CALLS as u64));
    group.sample_size(20);
    group.bench_function("in-process Tool::invoke, 64 tasks", |b| {
        b.to_async(&tokio).iter(|| async {
            let tool = catalogue.get("hello").unwrap().clone();
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    let (tool, context) = (tool.clone(), context.clone());
                    tokio::spawn(async move {
                        for _ in 0..CALLS / CLIENTS {
                            tool.invoke(&json!({ "name": "Ada" }), &context).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
    });
    group.bench_function("POST /v1/skills/hello/invoke, 64 clients", |b| {
        b.to_async(&tokio).iter(|| async {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    let (http, url) = (http.clone(), url.clone());
                    tokio::spawn(async move {
                        for _ in 0..CALLS / CLIENTS {
                            let r = http
                                .post(format!("{url}/v1/skills/hello/invoke"))
                                .bearer_auth(KEY)
                                .body(r#"{"name":"Ada"}"#)
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(r.status().as_u16(), 200);
                            r.bytes().await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
    });
    group.bench_function("MCP tools/call over /mcp, 64 clients", |b| {
        b.to_async(&tokio).iter(|| async {
            let tasks: Vec<_> = mcp_clients
                .iter()
                .map(|client| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        for _ in 0..CALLS / CLIENTS {
                            let args = json!({ "name": "Ada" }).as_object().cloned().unwrap();
                            let r = client.call_tool(CallToolRequestParams::new("hello").with_arguments(args)).await;
                            assert_eq!(r.unwrap().is_error, Some(false));
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
    });
    group.finish();

    // Per-call latency under the same load (criterion times whole batches): every call's
    // time, 64 clients × 64 calls per path, printed as p50 / p99.
    let percentiles = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], ms[ms.len() * 99 / 100])
    };
    let (rest, mcp, local) = tokio.block_on(async {
        let timed = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| async move {
            let started = std::time::Instant::now();
            f.await;
            started.elapsed().as_secs_f64() * 1000.0
        };
        let mut rest = Vec::new();
        let mut mcp = Vec::new();
        let mut local = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..CLIENTS {
            let (http, url, client, tool, context) = (
                http.clone(),
                url.clone(),
                mcp_clients[i].clone(),
                catalogue.get("hello").unwrap().clone(),
                context.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut out = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..64 {
                    let (http, url) = (http.clone(), url.clone());
                    out.0.push(
                        timed(Box::pin(async move {
                            let r = http
                                .post(format!("{url}/v1/skills/hello/invoke"))
                                .bearer_auth(KEY)
                                .body(r#"{"name":"Ada"}"#);
                            r.send().await.unwrap().bytes().await.unwrap();
                        }))
                        .await,
                    );
                    let client = client.clone();
                    out.1.push(
                        timed(Box::pin(async move {
                            let args = json!({ "name": "Ada" }).as_object().cloned().unwrap();
                            client.call_tool(CallToolRequestParams::new("hello").with_arguments(args)).await.unwrap();
                        }))
                        .await,
                    );
                    let (tool, context) = (tool.clone(), context.clone());
                    out.2.push(
                        timed(Box::pin(async move {
                            tool.invoke(&json!({ "name": "Ada" }), &context).await.unwrap();
                        }))
                        .await,
                    );
                }
                out
            }));
        }
        for t in tasks {
            let (a, b, c) = t.await.unwrap();
            rest.extend(a);
            mcp.extend(b);
            local.extend(c);
        }
        (rest, mcp, local)
    });
    for (name, ms) in [("REST /v1 invoke", rest), ("MCP tools/call", mcp), ("in-process Tool::invoke", local)] {
        let (p50, p99) = percentiles(ms);
        eprintln!("serve latency, 64 concurrent clients, {name}: p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
}

criterion_group!(benches, serve);
criterion_main!(benches);
