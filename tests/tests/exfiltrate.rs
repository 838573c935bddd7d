//! The hostile `exfiltrate` skill against a real vault, a loopback echo
//! server (the token's own host) and a loopback "attacker" (127.0.0.2).
//!
//! Every attempt the skill reports must be blocked or have returned nothing
//! secret; the attacker must never receive a secret in any encoding; and no
//! secret may appear in the skill's output, stdout or stderr. The skill also
//! returns its report in an encoding no redactor knows (`sealed`), so a
//! secret the guest did obtain cannot hide behind the host's output redaction.

use rand::RngCore;
use serde_json::{Value, json};
use skillbox_runtime::vault::{AuditAction, AuditQuery};
use skillbox_runtime::{Error, InvocationContext, Skill};
use skillbox_tests::reflect;
use skillbox_tests::server::{Received, Reply, TestServer};
use skillbox_tests::{TestVault, json};

/// A long, distinctive secret: `prefix` + 40 random hex digits + `suffix`.
/// The punctuation makes the percent-encoded forms differ from the raw one.
fn secret(prefix: &str, suffix: &str) -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}{suffix}", hex::encode(bytes))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Every form of `secret` a leak could take: raw; base64 (standard and URL-safe) at each of
/// the three byte alignments, as the characters that depend on the secret alone (so a secret
/// embedded at any offset of a larger encoded text is found); hex in both cases; and
/// percent-encoding (every byte, and only the reserved bytes, in both cases).
fn encodings(secret: &str) -> Vec<(String, String)> {
    let raw = secret.as_bytes();
    let mut forms = vec![("raw".to_owned(), secret.to_owned())];
    for shift in 0..3usize {
        let shifted = [vec![0u8; shift], raw.to_vec()].concat();
        let text = base64(&shifted);
        // Characters whose 6 bits all come from the secret's bytes.
        let start = (8 * shift).div_ceil(6);
        let end = (8 * (shift + raw.len())) / 6;
        let core = text[start..end].to_owned();
        forms.push((format!("base64 (alignment {shift})"), core.clone()));
        forms.push((format!("base64url (alignment {shift})"), core.replace('+', "-").replace('/', "_")));
    }
    forms.push(("hex".into(), hex::encode(raw)));
    forms.push(("HEX".into(), hex::encode_upper(raw)));
    forms.push(("percent (every byte)".into(), raw.iter().map(|b| format!("%{b:02X}")).collect()));
    forms.push(("percent (every byte, lower)".into(), raw.iter().map(|b| format!("%{b:02x}")).collect()));
    let reserved = |lower: bool| -> String {
        raw.iter()
            .map(|&b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ if lower => format!("%{b:02x}"),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    forms.push(("percent".into(), reserved(false)));
    forms.push(("percent (lower)".into(), reserved(true)));
    forms
}

/// Panics, naming the secret, the encoding and `place`, if `haystack` holds any form of any secret.
fn assert_clean(place: &str, haystack: &[u8], secrets: &[(&str, &str)]) {
    for (label, secret) in secrets {
        for (encoding, form) in encodings(secret) {
            let found = haystack.windows(form.len()).position(|w| w == form.as_bytes());
            assert!(
                found.is_none(),
                "LEAK: the {label} ({encoding}) is in {place} at byte {}: {}",
                found.unwrap_or(0),
                String::from_utf8_lossy(haystack)
            );
        }
    }
}

fn assert_received_clean(who: &str, server: &TestServer, secrets: &[(&str, &str)]) {
    for req in server.received() {
        let place = format!("a request the {who} received ({} {})", req.method, req.target);
        assert_clean(&place, req.target.as_bytes(), secrets);
        for (name, value) in &req.headers {
            assert_clean(&place, format!("{name}: {value}").as_bytes(), secrets);
        }
        assert_clean(&place, &req.body, secrets);
    }
}

/// The token's own host: echoes the request back in every way a careless API might, and
/// compressed or escaped on `/echo-gzip` (Content-Encoding), `/echo-br` (Content-Encoding),
/// `/echo-blob` (a gzip blob) and `/echo-escaped` (JSON `\u` escapes).
async fn echo_server(attacker: String) -> TestServer {
    TestServer::start("127.0.0.1", move |req: &Received| {
        let path = req.target.split('?').next().unwrap_or_default();
        let accepts = |coding: &str| req.header("accept-encoding").unwrap_or_default().split(", ").any(|c| c == coding);
        match path {
            "/redirect" => Reply::redirect(&attacker),
            "/redirect-metadata" => Reply::redirect("https://169.254.169.254/latest/meta-data/"),
            "/echo-gzip" | "/echo-br" | "/echo-blob" => {
                let mut reply = echo(req);
                // Compressible padding, so the compressor codes the token instead of storing it.
                let mut body: Value = serde_json::from_slice(&reply.body).unwrap();
                body["padding"] = reflect::filler(2048).into();
                let body = body.to_string().into_bytes();
                let (coding, compressed) = match path {
                    "/echo-gzip" => (Some("gzip"), reflect::gzip(&body)),
                    "/echo-br" => (Some("br"), reflect::brotli(&body)),
                    _ => (None, reflect::gzip(&body)),
                };
                reply.body = compressed;
                match coding {
                    Some(coding) if !accepts(coding) => return Reply::json(406, json!({ "error": "not accepted" })),
                    Some(coding) => reply.headers.push(("content-encoding".into(), coding.into())),
                    None => reply.headers[0] = ("content-type".into(), "application/octet-stream".into()),
                }
                reply
            }
            "/echo-escaped" => {
                let auth = req.header("authorization").unwrap_or_default();
                let token = auth.strip_prefix("Bearer ").unwrap_or_default();
                let escaped: String = token.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
                Reply {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: format!("{{\"token\":\"{escaped}\"}}").into_bytes(),
                }
            }
            _ => echo(req),
        }
    })
    .await
}

/// The echo: the request, raw and encoded, in the body and in headers.
fn echo(req: &Received) -> Reply {
    let auth = req.header("authorization").unwrap_or_default().to_owned();
    let token = auth.strip_prefix("Bearer ").unwrap_or_default();
    let dump = format!("{} {}\n{:?}\n{}", req.method, req.target, req.headers, String::from_utf8_lossy(&req.body));
    let mut reply = Reply::json(
        200,
        json!({
            "authorization": auth,
            "token_base64": base64(token.as_bytes()),
            "token_hex": hex::encode(token),
            "auth_base64": base64(auth.as_bytes()),
            "request": dump,
            "request_base64": base64(dump.as_bytes()),
        }),
    );
    reply.headers.push(("x-echo-authorization".into(), auth.clone()));
    reply.headers.push(("x-echo-base64".into(), base64(auth.as_bytes())));
    reply.headers.push(("set-cookie".into(), format!("session={token}")));
    reply
}

/// The attacker's collection point: accepts anything.
async fn attacker_server() -> TestServer {
    TestServer::start("127.0.0.2", |_req: &Received| Reply::json(200, json!({ "thanks": true }))).await
}

struct Scene {
    vault: TestVault,
    skill: Skill,
    echo: TestServer,
    attacker: TestServer,
    token: String,
    hmac_key: String,
    db_password: Option<String>,
    _db_dir: tempfile::TempDir,
}

impl Scene {
    /// A vault holding `token`, `signer` and `db` (SQLite, or PostgreSQL when `postgres`
    /// is given), each granted to `exfiltrate`; `ungranted` exists but is not granted.
    async fn new(postgres: Option<&str>) -> Scene {
        let attacker = attacker_server().await;
        let echo = echo_server(format!("{}/landed", attacker.base_url())).await;
        let vault = TestVault::new();
        let token = secret("tok_", "/+=~");
        let hmac_key = secret("hk_", "!$&'()*");
        vault.add("token", "bearer", &token);
        vault.add("ungranted", "bearer", &secret("ung_", ""));
        vault.add("signer", "hmac_key", &hmac_key);
        let db_dir = tempfile::tempdir().unwrap();
        let (db_value, db_password) = match postgres {
            Some(url) => {
                let password = secret("pw_", "#%");
                (postgres_value(url, &password), Some(password))
            }
            None => {
                // A zero-length file is a valid, empty SQLite database.
                let path = db_dir.path().join("app.db");
                std::fs::write(&path, b"").unwrap();
                (json!({ "driver": "sqlite", "path": path }), None)
            }
        };
        vault.add("db", "database", &db_value.to_string());
        vault.grant("exfiltrate", "token", Some(&[&echo.host()]));
        vault.grant("exfiltrate", "signer", None);
        vault.grant("exfiltrate", "db", None);
        let skill = vault.runtime().load(skillbox_tests::EXFILTRATE).unwrap();
        Scene { vault, skill, echo, attacker, token, hmac_key, db_password, _db_dir: db_dir }
    }

    /// Grants `token`, `signer` and `db` again, which lifts a suspension after tripwires.
    fn regrant(&self) {
        self.vault.grant("exfiltrate", "token", Some(&[&self.echo.host()]));
        self.vault.grant("exfiltrate", "signer", None);
        self.vault.grant("exfiltrate", "db", None);
    }

    fn tripwires(&self) -> usize {
        let query = AuditQuery { action: Some(AuditAction::Tripwire), ..AuditQuery::default() };
        self.vault.vault.audit_list(&query).unwrap().len()
    }

    fn secrets(&self) -> Vec<(&str, &str)> {
        let mut out = vec![("bearer token", self.token.as_str()), ("HMAC key", self.hmac_key.as_str())];
        out.extend(self.db_password.as_deref().map(|p| ("database password", p)));
        out
    }

    fn attack_input(&self) -> String {
        json!({
            "echo_url": format!("{}/echo", self.echo.base_url()),
            "redirect_url": format!("{}/redirect", self.echo.base_url()),
            "redirect_metadata_url": format!("{}/redirect-metadata", self.echo.base_url()),
            "attacker_url": format!("{}/collect", self.attacker.base_url()),
            "vault_path": self.vault.path(),
        })
        .to_string()
    }
}

/// A `database` credential for the server at `url` (`postgres://user@host:port/db`),
/// with `password` (trust authentication ignores it, so any value connects).
fn postgres_value(url: &str, password: &str) -> Value {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (auth, rest) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let user = auth.split(':').next().unwrap_or("postgres");
    let (hostport, database) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let database = database.split('?').next().unwrap_or(database);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    // The test server's role is a superuser, which skillbox refuses without the operator's opt-in.
    json!({ "driver": "postgres", "host": host, "port": port.parse::<u16>().unwrap(), "database": database, "user": user, "password": password, "allow_privileged_role": true })
}

/// Reverses the skill's `sealed` encoding (XOR 0xA5, hex).
fn unseal(sealed: &str) -> Vec<u8> {
    hex::decode(sealed).expect("sealed is hex").into_iter().map(|b| b ^ 0xA5).collect()
}

/// The outcome of attempt `name` in the report, panicking if it is missing.
fn outcome<'a>(attempts: &'a [(String, String)], name: &str) -> &'a str {
    attempts
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, o)| o.as_str())
        .unwrap_or_else(|| panic!("no attempt named {name:?} in {attempts:#?}"))
}

/// Runs the attack with the database credential of `postgres` (else SQLite) and checks it all.
async fn run_attack(postgres: Option<&str>) {
    let scene = Scene::new(postgres).await;
    let secrets = scene.secrets();
    let output = scene.skill.invoke(&scene.attack_input()).await.unwrap_or_else(|e| panic!("the skill failed: {e}"));

    // What the guest itself saw, free of the host's output redaction.
    let report = json(&output.json);
    let sealed = unseal(report["sealed"].as_str().expect("sealed"));
    assert_clean("what the guest saw (sealed report)", &sealed, &secrets);
    let attempts: Vec<(String, String)> = serde_json::from_slice::<Vec<Value>>(&sealed)
        .expect("sealed report is JSON")
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_owned(), a["outcome"].as_str().unwrap().to_owned()))
        .collect();
    for (name, outcome) in &attempts {
        eprintln!("{name:60} {outcome:.300}");
    }
    // What left the sandbox.
    assert_clean("the skill's output", output.json.as_bytes(), &secrets);
    assert_clean("the skill's stdout", &output.stdout, &secrets);
    assert_clean("the skill's stderr", &output.stderr, &secrets);
    assert_received_clean("attacker", &scene.attacker, &secrets);
    for req in scene.attacker.received() {
        assert_eq!(req.header("authorization"), None, "a credential reached the attacker: {req:?}");
        assert_eq!(req.header("cookie"), None, "a cookie reached the attacker: {req:?}");
    }
    check_outcomes(&attempts, &scene, postgres.is_some());
}

/// Attempts allowed to come back with something: each returns only what a skill may
/// legitimately see (metadata, a redacted echo, a MAC, rows, nothing), checked clean above.
const MAY_RETURN: &[&str] = &[
    "open token",
    "open signer",
    "open db",
    "echo with token",
    "forward echo body to attacker",
    "forward echo headers to attacker",
    "forward echo headers as headers",
    "write echo to stdout, stderr and log",
    "echo with token, gzip content-encoding",
    "echo with token, brotli content-encoding",
    "redirect to attacker",
    "own Authorization header beside the token",
    "hmac-sha256 of empty message",
    "hmac-sha512 of 'key?'",
    "environment variables",
    "arguments",
    "handle numbers",
    "sql parameter carrying a path",
];

fn check_outcomes(attempts: &[(String, String)], scene: &Scene, postgres: bool) {
    let blocked = |name: &str, case: &str| {
        let o = outcome(attempts, name);
        assert!(o.starts_with(&format!("blocked: {case}")), "{name}: expected `blocked: {case}`, got: {o}");
    };
    for (name, o) in attempts {
        let may_return = MAY_RETURN.contains(&name.as_str())
            // Harmless reads: the PostgreSQL set on SQLite and vice versa, or catalog queries.
            || name.starts_with("sql query SELECT name, sql FROM sqlite_master")
            || name.starts_with("sql query SELECT * FROM pragma_database_list")
            || name.starts_with("sql query PRAGMA database_list")
            || (postgres && name.starts_with("sql query") && !name.contains("ATTACH") && !name.contains("VACUUM"));
        assert!(may_return || o.starts_with("blocked: "), "{name} was not blocked: {o}");
        if name.starts_with("open undeclared") {
            assert!(o.starts_with("blocked: not-declared"), "{name}: {o}");
        }
        if name.starts_with("token to ") {
            assert!(o.starts_with("blocked: host-not-allowed"), "{name}: {o}");
        }
        // Listed in [network] allow on purpose: only the address check can refuse these
        // (plain http is refused earlier, by the scheme check), before any connection.
        if name.starts_with("no auth to https://") {
            assert!(o.starts_with("blocked: host-not-allowed") && o.contains("may not reach"), "{name}: {o}");
        }
        if name.starts_with("no auth to http://") {
            assert!(o.starts_with("blocked: host-not-allowed") && o.contains("scheme"), "{name}: {o}");
        }
        if name.starts_with("sql execute") {
            assert!(o.starts_with("blocked: denied"), "read-only manifest, yet {name}: {o}");
        }
        if name.starts_with("read file") || name.starts_with("list directory") || name.starts_with("raw TCP") {
            assert!(o.starts_with("blocked: wasi"), "{name}: {o}");
        }
    }
    assert_eq!(attempts.iter().filter(|(n, _)| n.starts_with("open undeclared")).count(), 9);
    blocked("open declared but ungranted", "not-granted");
    assert!(outcome(attempts, "open token").starts_with("returned: name=token kind=Kind::Bearer"));
    assert_eq!(attempts.iter().filter(|(n, _)| n.starts_with("no auth to https://")).count(), 7);

    // The echo did reflect the token, and the host redacted every copy (body and headers).
    let echoed = outcome(attempts, "echo with token");
    assert!(echoed.starts_with("returned: status 200"), "{echoed}");
    assert!(echoed.contains("x-echo-authorization: Bearer [REDACTED]"), "{echoed}");
    assert!(echoed.contains("session=[REDACTED]"), "{echoed}");
    // Compressed by the server: a Content-Encoding the host decodes (then redacts as above)...
    for name in ["echo with token, gzip content-encoding", "echo with token, brotli content-encoding"] {
        let o = outcome(attempts, name);
        assert!(o.starts_with("returned: status 200"), "{name}: {o}");
        assert!(o.contains("x-echo-authorization: Bearer [REDACTED]"), "{name}: {o}");
        assert!(o.contains("\"authorization\":\"Bearer [REDACTED]\""), "{name}: decoded and redacted: {o}");
        assert!(!o.contains("content-encoding"), "{name}: {o}");
    }
    // ...but a compressed blob or escaped text cannot have the token cut out: withheld.
    blocked("echo with token, gzip blob", "leak-blocked");
    blocked("echo with token, JSON-escaped", "leak-blocked");
    assert!(outcome(attempts, "echo with token, gzip blob").contains("`token`"));
    assert!(
        scene.echo.received().iter().any(|r| r.header("authorization") == Some(&format!("Bearer {}", scene.token))),
        "the token was never injected, so nothing was tested"
    );
    // A guest-written Authorization header never replaces or joins the injected one.
    for req in scene.echo.received() {
        let auths: Vec<_> = req.headers.iter().filter(|(n, _)| n == "authorization").collect();
        assert!(auths.len() <= 1, "two Authorization headers: {req:?}");
    }

    // The redirect reached the attacker, without the token (checked on every request above).
    assert!(outcome(attempts, "redirect to attacker").starts_with("returned: status 200"));
    assert!(scene.attacker.received().iter().any(|r| r.target == "/landed"), "the redirect was not followed");
    blocked("redirect to metadata", "host-not-allowed");

    for name in [
        "TRACE echoes the request",
        "Host header pointing at the attacker",
        "header injection",
        "proxy-authorization",
        "CONNECT tunnel",
        "URL with user info",
    ] {
        blocked(name, "invalid");
    }
    for name in
        ["hmac with the bearer token", "sql with the bearer token", "signer as http auth", "sql with the signer"]
    {
        blocked(name, "wrong-kind");
    }
    blocked("db as http auth", "wrong-kind");
    blocked("hmac with the db", "wrong-kind");
    let mac = outcome(attempts, "hmac-sha256 of empty message").trim_start_matches("returned: ");
    assert!(mac.len() == 64 && mac.bytes().all(|b| b.is_ascii_hexdigit()), "{mac}");
    let mac = outcome(attempts, "hmac-sha512 of 'key?'").trim_start_matches("returned: ");
    assert!(mac.len() == 128 && mac.bytes().all(|b| b.is_ascii_hexdigit()), "{mac}");

    // SQLite must not reach other files: no ATTACH (the vault!), no VACUUM INTO, no extensions.
    let vault = scene.vault.path().display().to_string();
    if !postgres {
        blocked(&format!("sql query ATTACH DATABASE '{vault}' AS v"), "denied");
        blocked("sql query VACUUM INTO '/tmp/skillbox-exfiltrate.db'", "denied");
        blocked("sql query SELECT load_extension('/proc/self/environ')", "");
        blocked("sql query SELECT name FROM v.sqlite_master", "");
        blocked(&format!("sql query SELECT * FROM sqlite_dbpage('{vault}')"), "");
    }
    assert!(!std::path::Path::new("/tmp/skillbox-exfiltrate.db").exists(), "VACUUM INTO wrote a file");

    assert_eq!(outcome(attempts, "environment variables"), "returned: []");
    assert_eq!(outcome(attempts, "arguments"), "returned: []");
    blocked("write a file", "wasi");
    blocked("UDP socket", "wasi");
    blocked("DNS lookup", "wasi");
}

#[tokio::test]
async fn every_exfiltration_attempt_is_blocked_sqlite() {
    run_attack(None).await;
}

#[tokio::test]
async fn every_exfiltration_attempt_is_blocked_postgres() {
    let Some(url) = skillbox_tests::postgres_url("every_exfiltration_attempt_is_blocked_postgres") else { return };
    run_attack(Some(&url)).await;
}

/// A handle is an index into one instance's handle table. Invocation 1 opens the token
/// and hands its number out; invocations for a user with no grant (and for the same user,
/// without opening anything) forge handles from numbers. Each must trap, and the token's
/// host must receive nothing.
#[tokio::test]
async fn a_handle_number_from_another_invocation_is_useless() {
    let scene = Scene::new(None).await;
    let first = scene.skill.invoke(&json!({ "mode": "open-handle" }).to_string()).await.unwrap();
    let handle = json(&first.json)["handle"].as_u64().expect("handle number") as u32;
    let echo_url = format!("{}/echo", scene.echo.base_url());
    let mallory = InvocationContext { user: "mallory".into(), ..InvocationContext::default() };
    for (context, n) in [
        (&mallory, handle),
        (&InvocationContext::default(), handle),
        (&mallory, 0),
        (&mallory, handle + 1),
        (&mallory, 100),
        (&mallory, u32::MAX),
    ] {
        let input = json!({ "mode": "reuse-handle", "handle": n, "echo_url": echo_url }).to_string();
        let result = scene.skill.invoke_with(&input, context).await;
        match result {
            Err(Error::Trap { message, .. }) => {
                assert!(!message.contains(&scene.token), "{message}");
            }
            other => panic!("forged handle {n} for user {} did not trap: {other:?}", context.user),
        }
    }
    assert!(scene.echo.received().is_empty(), "a forged handle reached the server: {:?}", scene.echo.received());
}

/// The encodings `send-known` tries (names as the skill reports them).
const KNOWN_ENCODINGS: &[&str] = &[
    "raw",
    "base64",
    "base64url",
    "base64 shifted by one byte",
    "base64 shifted by two bytes",
    "hex",
    "HEX",
    "percent",
    "reversed",
    "12-byte fragment",
    "JSON unicode escapes",
    "HTML entities",
    "base64 of the reverse",
    "double base64",
];

/// Even a guest that somehow knows a secret (here: given it in its input) cannot send it: the
/// first request whose URL, headers or body carry it, in any encoding, ends the invocation (a
/// tripwire) before anything is sent. (This used to be a `leak-blocked` error per request; the
/// host now stops the skill instead.)
#[tokio::test]
async fn a_known_secret_trips_the_wire_in_every_encoding() {
    let scene = Scene::new(None).await;
    for (i, (encoding, part)) in
        KNOWN_ENCODINGS.iter().flat_map(|e| ["url", "header", "body"].map(move |p| (*e, p))).enumerate()
    {
        // Three tripwires suspend the grants; granting again lifts that.
        scene.regrant();
        let input = json!({
            "mode": "send-known",
            "known_secret": scene.token,
            "attacker_url": format!("{}/collect", scene.attacker.base_url()),
            "encoding": encoding,
            "part": part,
        });
        match scene.skill.invoke(&input.to_string()).await {
            Err(Error::Tripwire { tripped, .. }) => {
                assert!(tripped.channel.starts_with(&format!("http.send {part}")), "{encoding} in {part}: {tripped:?}");
                assert_eq!(tripped.credential.as_deref(), Some("token"), "{encoding} in {part}: {tripped:?}");
                assert_clean("the tripwire", tripped.to_string().as_bytes(), &scene.secrets());
            }
            other => panic!("{encoding} in {part}: expected a tripwire, got {other:?}"),
        }
        assert_eq!(scene.tripwires(), i + 1, "{encoding} in {part}: one tripwire row each");
    }
    assert!(scene.attacker.received().is_empty(), "the attacker received {:?}", scene.attacker.received());
    let rows = scene.vault.vault.audit_list(&AuditQuery::default()).unwrap();
    assert_clean("the audit log", serde_json::to_string(&rows).unwrap().as_bytes(), &scene.secrets());
}

/// The known secret sent to a host the skill may not reach is refused exactly like a wrong
/// guess, with or without the token as auth, and trips nothing: the refusal is no oracle.
#[tokio::test]
async fn a_guess_to_a_host_not_allowed_is_no_oracle() {
    let scene = Scene::new(None).await;
    let input = json!({
        "mode": "send-known",
        "known_secret": scene.token,
        "attacker_url": format!("{}/collect", scene.attacker.base_url()),
        "encoding": "elsewhere",
    });
    let output = scene.skill.invoke(&input.to_string()).await.expect("nothing was sent, nothing trips");
    let report = json(&output.json);
    let attempts: Vec<(String, String)> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_owned(), a["outcome"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(outcome(&attempts, "open token"), "returned: token");
    let guesses: Vec<&(String, String)> = attempts.iter().filter(|(n, _)| n.starts_with("right guess")).collect();
    assert_eq!(guesses.len(), 3, "{attempts:#?}");
    for (name, right) in guesses {
        let wrong = outcome(&attempts, &name.replacen("right", "wrong", 1));
        assert!(right.starts_with("blocked: host-not-allowed"), "{name}: {right}");
        assert_eq!(right, wrong, "{name}: the right guess is answered differently from a wrong one");
    }
    assert_eq!(scene.tripwires(), 0, "a refused request tripped the wire");
}

/// The WIT promises that a skill's own error message is scanned for secrets like its output: a
/// secret in it now ends the invocation as a tripwire (it used to be redacted and returned as
/// the skill's failure), and the error the caller sees holds no secret.
#[tokio::test]
async fn a_skill_error_holding_a_secret_trips_the_wire() {
    let scene = Scene::new(None).await;
    let input = json!({ "mode": "fail-with", "message": format!("stolen: {}", scene.token) });
    let err = scene.skill.invoke(&input.to_string()).await.unwrap_err();
    let Error::Tripwire { tripped, .. } = &err else { panic!("expected a tripwire, got {err:?}") };
    assert_eq!(tripped.channel, "error", "{tripped:?}");
    assert_clean("the skill's error (Display)", err.to_string().as_bytes(), &scene.secrets());
    assert_clean("the skill's error (Debug)", format!("{err:?}").as_bytes(), &scene.secrets());
    assert_eq!(scene.tripwires(), 1);
}

/// A log line holding the secret ends the invocation too.
#[tokio::test]
async fn a_logged_secret_trips_the_wire() {
    let scene = Scene::new(None).await;
    let input = json!({ "mode": "log-known", "known_secret": scene.token });
    let err = scene.skill.invoke(&input.to_string()).await.unwrap_err();
    let Error::Tripwire { tripped, .. } = &err else { panic!("expected a tripwire, got {err:?}") };
    assert_eq!(tripped.channel, "log", "{tripped:?}");
    assert_eq!(tripped.credential.as_deref(), Some("token"), "{tripped:?}");
    assert_clean("the tripwire error", format!("{err} {err:?}").as_bytes(), &scene.secrets());
    assert_eq!(scene.tripwires(), 1);
}
