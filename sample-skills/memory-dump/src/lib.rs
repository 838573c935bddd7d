//! Test program for the memory proof: uses credentials through every host
//! interface (HTTP with a bearer token, HMAC signing, SQL), then returns its
//! entire linear memory. `tests/tests/memory_proof.rs` searches the dump for
//! each secret and its encodings and must find none: the secrets stay on
//! the host side, and what comes back (responses, MACs, rows) holds none.
//!
//! Input: `{"url": "http://127.0.0.1:P/echo"}` (the token's granted host).
//! Output: `{"uses": {...}, "memory_bytes": N, "memory": "<hex of bytes 1..N>"}`.

use serde::Deserialize;
use skillbox_sdk::signing::{self, Algorithm};
use skillbox_sdk::sql::{self, Value};
use skillbox_sdk::{Guest, SkillError, credentials, describe, parse_input, send, to_output};

#[derive(Deserialize)]
struct Input {
    url: String,
}

struct MemoryDump;

impl Guest for MemoryDump {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = parse_input(&input)?;
        let mut uses = serde_json::Map::new();
        let mut note = |name: &str, result: Result<String, skillbox_sdk::Error>| {
            let text = match result {
                Ok(v) => format!("ok: {v}"),
                Err(e) => format!("error: {}", describe(&e)),
            };
            uses.insert(name.to_owned(), text.into());
        };

        // HTTP: the server echoes the Authorization header back (raw, base64, in a header);
        // what reaches this memory is the host's redacted copy.
        match credentials::open("token") {
            Ok(token) => {
                let response =
                    send("POST", &input.url, &[("content-type", "text/plain")], b"hello".to_vec(), Some(&token));
                note("http", response.map(|r| format!("status {} body {} bytes", r.status, r.body.len())));
                // Keep the response's bytes around in memory: the dump must cover them.
                note("metadata", Ok(format!("{} {:?} {}", token.name(), token.kind(), token.service())));
            }
            Err(e) => note("http", Err(e)),
        }
        match credentials::open("signer") {
            Ok(signer) => {
                let mac = signing::hmac(&signer, Algorithm::HmacSha256, b"message to sign");
                note("hmac-sha256", mac.map(|m| format!("{} bytes", m.len())));
                let mac = signing::hmac(&signer, Algorithm::HmacSha512, b"message to sign");
                note("hmac-sha512", mac.map(|m| format!("{} bytes", m.len())));
            }
            Err(e) => note("hmac-sha256", Err(e)),
        }
        match credentials::open("db") {
            Ok(db) => {
                // Works on SQLite and PostgreSQL; a failure still counts as a use.
                let rows = sql::query(&db, "SELECT 1 AS one, 'text' AS two", &[]);
                note("sql", rows.map(|r| format!("{} rows", r.rows.len())));
                let rows = sql::query(&db, "SELECT ?1", &[Value::Text("param".into())]);
                note("sql-param", rows.map(|r| format!("{} rows", r.rows.len())));
            }
            Err(e) => note("sql", Err(e)),
        }

        let bytes = memory_size_bytes();
        // Reserve the whole hex buffer first: the dump then reads memory as it was, not
        // a buffer that grows while it is being read.
        let mut hex = String::with_capacity(2 * bytes);
        // SAFETY: every address in 1..memory_size is inside linear memory, which
        // wasm never unmaps; reading it as bytes through a raw pointer is defined at the
        // wasm level. Address 0 is skipped because Rust treats it as null.
        unsafe { dump(1, bytes, &mut hex) };
        to_output(&serde_json::json!({ "uses": uses, "memory_bytes": bytes, "memory": hex }))
    }
}

/// The size of linear memory 0 in bytes.
fn memory_size_bytes() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
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

skillbox_sdk::export_skill!(MemoryDump);
