//! Test program for `wasi:http` (tests/tests/wasi_http.rs): sends the requests its input lists
//! through a standard wasi:http client (`wstd`), reports what came back, and can follow
//! redirects itself and return its entire linear memory, to prove that a transparently
//! injected token never reaches the guest.
//!
//! Input: `{"requests": [{"method": "GET", "url": "...", "headers": [["n", "v"]], "body": "..."}],
//! "follow": false, "dump": false}`.
//! Output: `{"results": [{"url", "status", "headers", "body"} | {"url", "error"}], "memory": "<hex>"}`.

wit_bindgen::generate!({ path: "../../wit", world: "skill" });

use serde::Deserialize;
use serde_json::{Value, json};
use wstd::http::{Body, Client, Request};

#[derive(Deserialize)]
struct Input {
    requests: Vec<Step>,
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    dump: bool,
}

#[derive(Deserialize, Clone)]
struct Step {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

fn get() -> String {
    "GET".into()
}

struct Probe;

impl Guest for Probe {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = serde_json::from_str(&input).map_err(|e| SkillError::InvalidInput(e.to_string()))?;
        let mut results = Vec::new();
        // Keep every response body alive until the dump: the dump must cover them.
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for step in &input.requests {
            let mut step = step.clone();
            for _hop in 0..5 {
                let outcome = wstd::runtime::block_on(send(&step));
                match outcome {
                    Ok((status, headers, body)) => {
                        let location = headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone());
                        results.push(json!({
                            "url": step.url, "status": status, "headers": headers,
                            "body": String::from_utf8_lossy(&body),
                        }));
                        kept.push(body);
                        match location {
                            Some(next) if input.follow && (300..400).contains(&status) => {
                                step = Step { method: "GET".into(), url: next, headers: step.headers, body: String::new() };
                            }
                            _ => break,
                        }
                    }
                    Err(error) => {
                        results.push(json!({ "url": step.url, "error": error }));
                        break;
                    }
                }
            }
        }
        let mut output = json!({ "results": results, "kept": kept.iter().map(Vec::len).sum::<usize>() });
        if input.dump {
            let bytes = core::arch::wasm32::memory_size(0) * 65536;
            let mut hex = String::with_capacity(2 * bytes);
            // SAFETY: 1..bytes is inside linear memory, which wasm never unmaps.
            unsafe { dump(1, bytes, &mut hex) };
            output["memory"] = Value::String(hex);
        }
        Ok(output.to_string())
    }
}

async fn send(step: &Step) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    let mut request = Request::builder().method(step.method.as_str()).uri(&step.url);
    for (name, value) in &step.headers {
        request = request.header(name, value);
    }
    let body = if step.body.is_empty() { Body::empty() } else { Body::from(step.body.clone().into_bytes()) };
    let request = request.body(body).map_err(|e| format!("building the request: {e}"))?;
    let response = Client::new().send(request).await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let mut body = response.into_body();
    let contents = body.contents().await.map_err(|e| format!("reading the body: {e:?}"))?.to_vec();
    Ok((status, headers, contents))
}

/// Appends the hex of addresses `from..to` to `out`.
///
/// # Safety
/// `from..to` must lie inside linear memory.
unsafe fn dump(from: usize, to: usize, out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for addr in from..to {
        // Volatile, so the compiler cannot reason about (or skip) reads of "unallocated" memory.
        let byte = unsafe { core::ptr::read_volatile(addr as *const u8) };
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 15) as usize] as char);
    }
}

export!(Probe);
