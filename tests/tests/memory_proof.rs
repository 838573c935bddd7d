//! The memory proof: a skill that used a bearer token (HTTP, against a server
//! that echoes it back), an HMAC key (signing) and a database credential
//! (SQL) returns its entire linear memory, and the test finds no secret in
//! it, raw or in any common encoding. The secrets never cross into the guest.
//!
//! The host redacts a skill's output, so a secret in the hex dump would show
//! up as `[REDACTED]` rather than as itself; the test therefore also demands
//! that the output holds no `[REDACTED]` at all.

use rand::RngCore;
use serde_json::{Value, json};
use skillbox_tests::server::{Received, Reply, TestServer};
use skillbox_tests::{TestVault, json};

fn secret(prefix: &str, suffix: &str) -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}{suffix}", hex::encode(bytes))
}

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Every form of `secret` to search for: raw; UTF-16LE (what a JS or .NET string would
/// hold); base64 and base64url at each of the three byte alignments (only the characters
/// that depend on the secret alone, so an occurrence at any offset of a longer encoded text
/// matches); hex lower and upper; percent-encoding of every byte and of reserved bytes only.
fn encodings(secret: &str) -> Vec<(String, Vec<u8>)> {
    let raw = secret.as_bytes();
    let mut forms =
        vec![("raw".to_owned(), raw.to_vec()), ("utf-16le".to_owned(), raw.iter().flat_map(|&b| [b, 0]).collect())];
    for shift in 0..3usize {
        let shifted = [vec![0u8; shift], raw.to_vec()].concat();
        let (start, end) = ((8 * shift).div_ceil(6), (8 * (shift + raw.len())) / 6);
        for (name, alphabet) in [("base64", STD), ("base64url", URL)] {
            forms.push((format!("{name} (alignment {shift})"), base64(&shifted, alphabet)[start..end].into()));
        }
    }
    forms.push(("hex".into(), hex::encode(raw).into_bytes()));
    forms.push(("HEX".into(), hex::encode_upper(raw).into_bytes()));
    forms.push(("percent (every byte)".into(), raw.iter().flat_map(|b| format!("%{b:02X}").into_bytes()).collect()));
    forms.push((
        "percent (reserved bytes)".into(),
        raw.iter()
            .flat_map(|&b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => vec![b],
                _ => format!("%{b:02X}").into_bytes(),
            })
            .collect(),
    ));
    forms
}

/// Searches `memory` for every form of every secret; ASCII case is ignored so that
/// `%2f` and mixed-case hex count too.
fn find_leaks(memory: &[u8], secrets: &[(&str, &str)]) -> Vec<String> {
    let lower = memory.to_ascii_lowercase();
    let mut leaks = Vec::new();
    for (label, secret) in secrets {
        for (encoding, form) in encodings(secret) {
            // Case-sensitive for base64 (case carries information), insensitive otherwise.
            let (hay, needle) = if encoding.starts_with("base64") || encoding == "utf-16le" || encoding == "raw" {
                (memory, form.clone())
            } else {
                (lower.as_slice(), form.to_ascii_lowercase())
            };
            if let Some(at) = hay.windows(needle.len()).position(|w| w == needle.as_slice()) {
                leaks.push(format!("the {label} ({encoding}) at address {:#x}", at + 1));
            }
        }
    }
    leaks
}

/// Answers only the right bearer token, and echoes it back raw, base64 and in a header,
/// so the (redacted) reflection is part of what lands in guest memory.
async fn echo_server(token: String) -> TestServer {
    TestServer::start("127.0.0.1", move |req: &Received| {
        let auth = req.header("authorization").unwrap_or_default().to_owned();
        if auth != format!("Bearer {token}") {
            return Reply::json(401, json!({ "error": "bad token" }));
        }
        let mut reply = Reply::json(
            200,
            json!({ "authorization": auth, "base64": base64(auth.as_bytes(), STD), "hex": hex::encode(&auth) }),
        );
        reply.headers.push(("x-echo-authorization".into(), auth.clone()));
        reply
    })
    .await
}

/// Runs `memory-dump` with the given database credential and checks the dump.
async fn prove(db_value: Value, db_password: Option<String>) {
    let token = secret("tok_", "/+=~");
    let hmac_key = secret("hk_", "!$&'()*");
    let server = echo_server(token.clone()).await;
    let vault = TestVault::new();
    vault.add("token", "bearer", &token);
    vault.add("signer", "hmac_key", &hmac_key);
    vault.add("db", "database", &db_value.to_string());
    vault.grant("memory-dump", "token", Some(&[&server.host()]));
    vault.grant("memory-dump", "signer", None);
    vault.grant("memory-dump", "db", None);
    let skill = vault.runtime().load(skillbox_tests::MEMORY_DUMP).unwrap();

    let input = json!({ "url": format!("{}/echo", server.base_url()) }).to_string();
    let output = skill.invoke(&input).await.unwrap_or_else(|e| panic!("memory-dump failed: {e}"));
    assert!(
        !output.json.contains("[REDACTED]"),
        "the host redacted the dump, so a secret was in guest memory (the marker would otherwise hide it)"
    );
    let report = json(&output.json);
    let uses = &report["uses"];
    eprintln!("uses: {uses}");
    // Every interface was really exercised with the real secret.
    assert!(uses["http"].as_str().unwrap().starts_with("ok: status 200"), "{uses}");
    assert_eq!(server.received().len(), 1);
    assert!(uses["hmac-sha256"].as_str().unwrap().starts_with("ok: 32 bytes"), "{uses}");
    assert!(uses["hmac-sha512"].as_str().unwrap().starts_with("ok: 64 bytes"), "{uses}");
    // SQL is attempted either way; it must have reached the host (not be refused at `open`).
    assert!(uses["sql"].is_string(), "{uses}");
    assert!(!uses["sql"].as_str().unwrap().contains("not-granted"), "{uses}");

    let size = report["memory_bytes"].as_u64().unwrap() as usize;
    let memory = hex::decode(report["memory"].as_str().unwrap()).expect("the dump is hex");
    assert_eq!(memory.len(), size - 1, "the dump covers addresses 1..memory_size");
    assert!(size >= 65536, "linear memory is at least one page");
    // Sanity check that the search works on this dump: the redacted echo is in memory.
    assert!(memory.windows(10).any(|w| w == b"[REDACTED]"), "the echoed response is not in the dump");
    assert!(memory.windows(15).any(|w| w == b"message to sign"), "the signed message is not in the dump");

    let mut secrets = vec![("bearer token", token.as_str()), ("HMAC key", hmac_key.as_str())];
    secrets.extend(db_password.as_deref().map(|p| ("database password", p)));
    let leaks = find_leaks(&memory, &secrets);
    assert!(leaks.is_empty(), "LEAK: found in guest linear memory: {leaks:#?}");
    // And the search would find a secret that were there (a planted copy, in each encoding).
    for (encoding, form) in encodings(&token) {
        let mut planted = memory.clone();
        planted.extend_from_slice(b"..");
        planted.extend_from_slice(&form);
        assert!(!find_leaks(&planted, &secrets).is_empty(), "the search misses {encoding}");
    }
}

#[tokio::test]
async fn guest_memory_holds_no_secret_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    // A zero-length file is a valid, empty SQLite database.
    std::fs::write(&path, b"").unwrap();
    prove(json!({ "driver": "sqlite", "path": path }), None).await;
}

#[tokio::test]
async fn guest_memory_holds_no_secret_postgres() {
    let Some(url) = skillbox_tests::postgres_url("guest_memory_holds_no_secret_postgres") else { return };
    // Trust authentication accepts any password, so a random one is sent and must not leak.
    let password = secret("pw_", "#%@");
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let (auth, rest) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let user = auth.split(':').next().unwrap_or("postgres");
    let (hostport, database) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let database = database.split('?').next().unwrap_or(database);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    let value = json!({
        "driver": "postgres", "host": host, "port": port.parse::<u16>().unwrap(),
        "database": database, "user": user, "password": password,
        // The test server's role is a superuser, which skillbox refuses without the operator's opt-in.
        "allow_privileged_role": true,
    });
    prove(value, Some(password)).await;
}
