//! A service that hands credentials back, and a skill that tries to read them.
//!
//! The `reflect-probe` skill sends requests with each style of credential
//! (bearer, basic, a header, a query parameter) to a loopback server
//! (`skillbox_tests::reflect`) that returns the credential it received in
//! every form it can think of: raw, in headers, Content-Encoded, as
//! compressed blobs, escaped, encoded, nested, split, reversed. The skill
//! returns what it got *sealed* (XOR, hex), which no scanner view decodes, so
//! these tests see exactly the bytes the guest saw and decode them
//! themselves, as an attacker would, looking for any 12-byte fragment of any
//! secret or of its reverse.
//!
//! Then the other direction: a skill that sends, logs, prints or returns a
//! secret is stopped (the tripwire) and, after three times, loses its grants;
//! a refused destination answers the same whatever the request carries (no
//! oracle); decompression bombs are refused without the host's memory
//! growing; foreign tokens are redacted; a response-blind credential returns
//! only a status.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use serde_json::{Value, json};
use skillbox_runtime::vault::{AuditAction, AuditEntry, AuditQuery, CredentialRef, NewGrant, ResponseMode};
use skillbox_runtime::{Error, Skill};
use skillbox_tests::reflect::{self, BEYOND_MODEL, FORMS, Needles};
use skillbox_tests::server::{Received, Reply, TestServer};
use skillbox_tests::{TestVault, json};

const SKILL: &str = "reflect-probe";
/// The credential styles, by the probe's manifest names.
const STYLES: &[&str] = &["bearer", "basic", "header", "query"];
/// What the host asks servers for, whatever the guest asked.
const HOST_ACCEPT_ENCODING: &str = "gzip, deflate, br, zstd";

/// Heavy tests (memory dump, bombs) take this so that one's memory does not count as the other's.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `prefix` and six groups of seven random letters and digits, joined by `/`: no run of 12
/// bytes survives when every `/` is escaped (`\/`), so the escaped form can only be found
/// by decoding it.
fn slashy(prefix: &str) -> String {
    let mut rng = rand::rng();
    let groups: Vec<String> =
        (0..6).map(|_| (0..7).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect::<String>()).collect();
    format!("{prefix}{}", groups.join("/"))
}

/// The values behind the probe's four credential styles.
struct Secrets {
    bearer: String,
    basic_user: String,
    basic_password: String,
    header: String,
    query: String,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            bearer: slashy("bt_"),
            // Ends in `/`, so `user:pass` has no 12-byte run across the colon when escaped.
            basic_user: format!("{}/", slashy("u_")),
            basic_password: slashy("pw_"),
            header: slashy("hk_"),
            query: slashy("qk_"),
        }
    }

    /// What the server receives (and reflects) for `style`.
    fn reflected(&self, style: &str) -> String {
        match style {
            "bearer" => self.bearer.clone(),
            "basic" => format!("{}:{}", self.basic_user, self.basic_password),
            "header" => self.header.clone(),
            "query" => self.query.clone(),
            other => panic!("no style {other}"),
        }
    }

    /// Every secret, labelled (the basic user name is not one).
    fn labelled(&self) -> Vec<(&'static str, &[u8])> {
        vec![
            ("bearer token", self.bearer.as_bytes()),
            ("basic password", self.basic_password.as_bytes()),
            ("X-Api-Key key", self.header.as_bytes()),
            ("api_key query key", self.query.as_bytes()),
        ]
    }

    fn needles(&self) -> Needles {
        Needles::new(&self.labelled())
    }
}

/// A vault holding the four credentials, granted to the probe (hosts from its manifest:
/// `127.0.0.1:*`), and the reflecting server.
struct Scene {
    vault: TestVault,
    skill: Skill,
    server: TestServer,
    secrets: Secrets,
}

impl Scene {
    async fn new() -> Scene {
        Scene::with_server(reflect::start().await).await
    }

    async fn with_server(server: TestServer) -> Scene {
        let secrets = Secrets::new();
        let vault = TestVault::new();
        vault.add("bearer", "bearer", &secrets.bearer);
        let basic = json!({ "username": secrets.basic_user, "password": secrets.basic_password });
        vault.add("basic", "basic", &basic.to_string());
        vault.add("header", "api_key", &secrets.header);
        vault.add("query", "api_key", &secrets.query);
        Scene::grant_all(&vault, &["bearer", "basic", "header", "query"]);
        let skill = vault.runtime().load(skillbox_tests::REFLECT_PROBE).unwrap();
        Scene { vault, skill, server, secrets }
    }

    /// (Re-)grants `names`; granting again also lifts a suspension.
    fn grant_all(vault: &TestVault, names: &[&str]) {
        for name in names {
            vault.grant(SKILL, name, None);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    fn audit(&self, action: AuditAction) -> Vec<AuditEntry> {
        self.vault.vault.audit_list(&AuditQuery { action: Some(action), ..AuditQuery::default() }).unwrap()
    }
}

/// What the guest got for one request.
#[derive(Debug, Clone)]
struct Record {
    credential: Option<String>,
    url: String,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    error_case: Option<String>,
    error_message: Option<String>,
}

impl Record {
    fn from_json(v: &Value) -> Record {
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        Record {
            credential: text("credential"),
            url: text("url").unwrap_or_default(),
            status: v["status"].as_u64().map(|s| s as u16),
            headers: v["headers"]
                .as_array()
                .map(|hs| {
                    hs.iter().map(|h| (h[0].as_str().unwrap().to_owned(), h[1].as_str().unwrap().to_owned())).collect()
                })
                .unwrap_or_default(),
            body: hex::decode(v["body_hex"].as_str().unwrap_or_default()).expect("body_hex is hex"),
            error_case: text("error_case"),
            error_message: text("error_message"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The form requested, from the URL's `/reflect/<form>`.
    fn form(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default()
    }

    fn summary(&self) -> String {
        let printable = std::str::from_utf8(&self.body)
            .is_ok_and(|t| t.chars().all(|c| !c.is_control() || c.is_ascii_whitespace()));
        let body = if printable {
            format!("{:.300}", self.body_text())
        } else {
            format!("({} bytes) hex {}", self.body.len(), hex::encode(&self.body[..self.body.len().min(48)]))
        };
        format!(
            "status {:?}, error {:?}: {:?}, headers {:?}, body {body}",
            self.status, self.error_case, self.error_message, self.headers
        )
    }

    /// Searches everything the guest got (body, every header, the error message) in every
    /// view an attacker would try.
    fn leak(&self, needles: &Needles) -> Option<String> {
        if let Some(hit) = needles.find_in_reply(&self.headers, &self.body, 4) {
            return Some(hit);
        }
        let message = self.error_message.as_deref().unwrap_or_default();
        needles.find_in_views(message.as_bytes(), 4).map(|hit| format!("error message: {hit}"))
    }
}

/// Reverses the probe's seal (XOR 0xA5 of hex).
fn unseal(sealed: &str) -> Vec<u8> {
    hex::decode(sealed).expect("sealed is hex").into_iter().map(|b| b ^ 0xA5).collect()
}

/// The probe's output and its records (unsealed).
fn records(output: &Value) -> Vec<Record> {
    let sealed = unseal(output["sealed"].as_str().expect("sealed records"));
    let list: Vec<Value> = serde_json::from_slice(&sealed).expect("sealed records are JSON");
    list.iter().map(Record::from_json).collect()
}

/// Runs the probe; the output as JSON and its records.
async fn probe(skill: &Skill, input: Value) -> Result<(Value, Vec<Record>), Error> {
    let output = skill.invoke(&input.to_string()).await?;
    let value = json(&output.json);
    let records = records(&value);
    Ok((value, records))
}

/// One request per form, style and "did the guest ask for compression".
fn matrix(scene: &Scene, forms: &[&str], ask: &[bool]) -> Vec<Value> {
    let mut requests = Vec::new();
    for form in forms {
        for style in STYLES {
            for &ask in ask {
                let mut request = json!({ "credential": style, "url": scene.url(&format!("/reflect/{form}")) });
                if ask {
                    request["accept_encoding"] = reflect::content_coding(form).unwrap_or("gzip").into();
                }
                requests.push(request);
            }
        }
    }
    requests
}

/// What a form must come back as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Status 200, the reflection cut out in place (`[REDACTED]`).
    Redacted,
    /// `leak-blocked`, naming the credential, with a `leak` audit row for the view.
    Blocked,
    /// Content-Encoding: decoded by the host, redacted, no `content-encoding` header.
    Decoded,
    /// Either of the first two (the secret is visible raw in some part, or an encoding the
    /// in-place redactor may or may not model at that alignment).
    RedactedOrBlocked,
    /// Either blocked or decoded (stacked codings the HTTP client may or may not undo).
    BlockedOrDecoded,
    /// Any outcome, as long as nothing leaks (a header dropped, a stream that fails to decode).
    Clean,
}

fn expectation(form: &str, style: &str, reflected: &str) -> Expect {
    let expect = match form {
        "gzip-ce" | "deflate-ce" | "br-ce" | "zstd-ce" => Expect::Decoded,
        "gzip-gzip-ce" | "gzip-ce-upper" | "br-ce-upper" | "br-ce-list" | "br-ce-two-headers" => {
            Expect::BlockedOrDecoded
        }
        // A raw deflate stream labelled `deflate` (which means zlib) may fail to decode.
        "deflate-raw-ce" | "header-name-hex" => Expect::Clean,
        "percent-lower" => Expect::Redacted,
        // A 12-byte part can be cut out where it is found (raw), or the whole reply withheld.
        "split-base64" => Expect::RedactedOrBlocked,
        "form-encoded" => Expect::RedactedOrBlocked,
        "raw" | "header" | "header-base64" | "base64" | "base64url" | "hex" | "hex-upper" | "percent" | "split"
        | "reversed" | "upper" => Expect::Redacted,
        "base64-doc" | "base64-mime" => Expect::RedactedOrBlocked,
        // base64 of `user:pass` is the Basic token itself, whose encodings the redactor knows.
        "double-base64" | "percent-base64" if style == "basic" => Expect::RedactedOrBlocked,
        _ => Expect::Blocked,
    };
    // A compressor may store input verbatim: then a raw fragment is there to cut out, and
    // redaction in place is as good as blocking.
    let served = reflect::reflect(form, reflected.as_bytes(), HOST_ACCEPT_ENCODING);
    let raw = Needles::new(&[("value", reflected.as_bytes())]);
    if expect == Expect::Blocked && raw.find(&served.body).is_some() { Expect::RedactedOrBlocked } else { expect }
}

/// The view a `leak-blocked` message names: "... (the json view) ...".
fn blocked_view(message: &str) -> Option<&str> {
    let start = message.find("(the ")? + 5;
    let end = message[start..].find(" view)")? + start;
    Some(&message[start..end])
}

/// Checks one record against its expectation; `None` when it is as expected.
fn check_outcome(record: &Record, expect: Expect, leaks: &[AuditEntry]) -> Option<String> {
    let style = record.credential.as_deref().unwrap_or_default();
    let redacted = || {
        record.status == Some(200)
            && record.error_case.is_none()
            && (record.body_text().contains("[REDACTED]")
                || record.headers.iter().any(|(_, v)| v.contains("[REDACTED]")))
    };
    let blocked = || -> Result<(), String> {
        if record.error_case.as_deref() != Some("leak-blocked") {
            return Err("not leak-blocked".into());
        }
        let message = record.error_message.as_deref().unwrap_or_default();
        if !message.contains(&format!("`{style}`")) {
            return Err(format!("the message does not name credential `{style}`"));
        }
        let view = blocked_view(message).ok_or("the message names no view")?;
        let audited = leaks.iter().any(|row| {
            row.credential_name.as_deref() == Some(style)
                && row.detail["channel"] == "http.response"
                && row.detail["view"] == view
                && row.detail["action"] == "block"
        });
        if !audited {
            return Err(format!("no `leak` audit row for credential {style}, view {view}"));
        }
        Ok(())
    };
    let decoded = || {
        record.status == Some(200)
            && record.error_case.is_none()
            && record.header("content-encoding").is_none()
            && serde_json::from_slice::<Value>(&record.body).is_ok()
            && record.body_text().contains("[REDACTED]")
    };
    let ok = match expect {
        Expect::Redacted => redacted(),
        Expect::Blocked => match blocked() {
            Ok(()) => true,
            Err(why) => return Some(format!("expected leak-blocked ({why})")),
        },
        Expect::Decoded => decoded(),
        Expect::RedactedOrBlocked => redacted() || blocked().is_ok(),
        Expect::BlockedOrDecoded => decoded() || blocked().is_ok(),
        Expect::Clean => true,
    };
    (!ok).then(|| format!("expected {expect:?}"))
}

/// Checks that the server got each credential and that the host, not the guest, chose the
/// Accept-Encoding of every request.
fn check_received(scene: &Scene) {
    let received = scene.server.received();
    assert!(!received.is_empty(), "the server received nothing, so nothing was tested");
    let mut styles = BTreeSet::new();
    for req in &received {
        let (style, value) = reflect::credential_of(req).unwrap_or_else(|| panic!("no credential in {req:?}"));
        assert_eq!(String::from_utf8_lossy(&value), scene.secrets.reflected(style), "{style}: wrong value injected");
        styles.insert(style);
        assert_eq!(
            req.header("accept-encoding"),
            Some(HOST_ACCEPT_ENCODING),
            "the host must set Accept-Encoding itself: {req:?}"
        );
        assert_eq!(req.headers.iter().filter(|(n, _)| n == "accept-encoding").count(), 1, "{req:?}");
    }
    assert_eq!(styles.into_iter().collect::<Vec<_>>(), {
        let mut s = STYLES.to_vec();
        s.sort();
        s
    });
}

/// Every form, every credential style, with and without the guest asking for compression:
/// the guest never gets any 12-byte fragment of any secret (or of its reverse) in any form an
/// attacker could decode, and each form comes back redacted, decoded or blocked as it should.
#[tokio::test]
async fn no_reflection_reaches_the_guest_in_any_form() {
    let scene = Scene::new().await;
    let requests = matrix(&scene, FORMS, &[false, true]);
    let count = requests.len();
    let (_, records) = probe(&scene.skill, json!({ "requests": requests })).await.expect("the probe runs");
    assert_eq!(records.len(), count);
    check_received(&scene);
    let leaks_audited = scene.audit(AuditAction::Leak);
    let needles = scene.secrets.needles();

    let (mut leaks, mut outcomes) = (Vec::new(), Vec::new());
    for (record, request) in records.iter().zip(&requests) {
        let style = record.credential.as_deref().unwrap();
        let ask = request.get("accept_encoding").is_some();
        let what = format!("{} / {style} / guest asked for compression: {ask}", record.form());
        if let Some(leak) = record.leak(&needles) {
            leaks.push(format!("LEAK {what}: {leak}\n    got {}", record.summary()));
            continue;
        }
        let expect = expectation(record.form(), style, &scene.secrets.reflected(style));
        // `REFLECTION_TABLE=1 cargo test ... -- --nocapture` prints every outcome.
        if std::env::var_os("REFLECTION_TABLE").is_some() {
            eprintln!(
                "{what:60} {:?} {}",
                expect,
                match (&record.error_case, record.status) {
                    (Some(case), _) => format!("{case}: {}", record.error_message.as_deref().unwrap_or_default()),
                    (None, status) => format!("{status:?} {:.120}", record.body_text()),
                }
            );
        }
        if let Some(problem) = check_outcome(record, expect, &leaks_audited) {
            outcomes.push(format!("{what}: {problem}; got {}", record.summary()));
        }
    }
    assert!(
        leaks.is_empty() && outcomes.is_empty(),
        "{} leaks, {} unexpected outcomes of {count} requests:\n{}\n{}",
        leaks.len(),
        outcomes.len(),
        leaks.join("\n"),
        outcomes.join("\n")
    );
}

/// The transformations the scanner does not model (no magic bytes, no known encoding). Not part
/// of the default run: docs/threat-model.md lists them as known limits. Run it with
/// `--ignored` to see which of them still reach the guest.
#[tokio::test]
#[ignore = "documents known limits of the scanner (transformations it does not model)"]
async fn transformations_beyond_the_model() {
    let scene = Scene::new().await;
    let requests = matrix(&scene, BEYOND_MODEL, &[false]);
    let (_, records) = probe(&scene.skill, json!({ "requests": requests })).await.expect("the probe runs");
    let needles = scene.secrets.needles();
    let leaks: Vec<String> = records
        .iter()
        .filter_map(|r| {
            r.leak(&needles).map(|l| format!("{} / {}: {l}", r.form(), r.credential.as_deref().unwrap_or_default()))
        })
        .collect();
    assert!(leaks.is_empty(), "{} of {} reach the guest:\n{}", leaks.len(), records.len(), leaks.join("\n"));
}

/// Every form of `secret` to search a memory dump for: raw, reversed, UTF-16 both ways, base64
/// and base64url at each byte alignment (the characters that depend on the secret alone), hex.
fn memory_forms(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut forms = vec![
        ("raw".to_owned(), secret.to_vec()),
        ("reversed".to_owned(), secret.iter().rev().copied().collect()),
        ("utf-16le".to_owned(), secret.iter().flat_map(|&b| [b, 0]).collect()),
        ("utf-16be".to_owned(), secret.iter().flat_map(|&b| [0, b]).collect()),
        ("hex".to_owned(), hex::encode(secret).into_bytes()),
        ("HEX".to_owned(), hex::encode_upper(secret).into_bytes()),
    ];
    for shift in 0..3usize {
        let shifted = [vec![0u8; shift], secret.to_vec()].concat();
        let (start, end) = ((8 * shift).div_ceil(6), (8 * (shift + secret.len())) / 6);
        let encoded = STANDARD.encode(&shifted);
        let core = &encoded[start..end];
        forms.push((format!("base64 (alignment {shift})"), core.as_bytes().to_vec()));
        forms.push((format!("base64url (alignment {shift})"), core.replace('+', "-").replace('/', "_").into_bytes()));
    }
    forms
}

/// Searches a memory dump for every form of every secret, every 12-byte fragment of each (and
/// of its reverse) raw, and the attacker's decoded views of the whole dump.
fn memory_leaks(memory: &[u8], secrets: &[(&str, &[u8])], needles: &Needles) -> Vec<String> {
    let mut leaks = Vec::new();
    for (label, secret) in secrets {
        for (encoding, form) in memory_forms(secret) {
            if let Some(at) = memchr::memmem::find(memory, &form) {
                leaks.push(format!("the {label} ({encoding}) at address {:#x}", at + 1));
            }
        }
    }
    if let Some(hit) = needles.find(memory) {
        leaks.push(format!("{hit} (raw)"));
    }
    if let Some(hit) = needles.find_in_views(memory, 2) {
        leaks.push(hit);
    }
    leaks
}

/// The memory proof over every reflection: after the host handled every form for every style,
/// the guest's whole linear memory holds no secret in any form and no fragment of one.
#[tokio::test]
async fn guest_memory_holds_no_reflected_secret() {
    let _heavy = HEAVY.lock().await;
    let scene = Scene::new().await;
    let requests = matrix(&scene, FORMS, &[false]);
    let (output, records) =
        probe(&scene.skill, json!({ "requests": requests, "dump_memory": true })).await.expect("the probe runs");
    assert_eq!(records.len(), FORMS.len() * STYLES.len());
    assert!(records.iter().any(|r| r.status == Some(200)), "no request got through, so nothing was tested");
    let size = output["memory_bytes"].as_u64().unwrap() as usize;
    let memory = unseal(output["memory"].as_str().expect("memory"));
    assert_eq!(memory.len(), size - 1, "the dump covers addresses 1..memory_size");
    // Sanity: the redacted responses are in the dump.
    assert!(memchr::memmem::find(&memory, b"[REDACTED]").is_some(), "the responses are not in the dump");

    let secrets = scene.secrets.labelled();
    let needles = scene.secrets.needles();
    let leaks = memory_leaks(&memory, &secrets, &needles);
    assert!(leaks.is_empty(), "LEAK: found in guest linear memory: {leaks:#?}");
    // The search finds a secret that is there: plant each form of the bearer token.
    for (encoding, form) in memory_forms(scene.secrets.bearer.as_bytes()) {
        let mut planted = memory[..4096].to_vec();
        planted.extend_from_slice(&form);
        assert!(!memory_leaks(&planted, &secrets, &needles).is_empty(), "the search misses {encoding}");
    }
    let fragment = &scene.secrets.query.as_bytes()[20..32];
    assert!(needles.find(&[&memory[..4096], fragment].concat()).is_some(), "the search misses a fragment");
}

/// A guess at a secret sent to a host the skill may not reach is refused before anything looks
/// at the secret: the right and the wrong guess get the same `host-not-allowed`, for a short
/// secret (never searched outbound) and a long one, with and without a credential. Nothing is
/// sent, and nothing trips.
#[tokio::test]
async fn a_refused_destination_is_no_oracle() {
    let scene = Scene::new().await;
    let short: String = {
        let mut rng = rand::rng();
        (0..7).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
    };
    assert!(short.len() < skillbox_runtime::vault::MIN_SECRET_LEN);
    scene.vault.add("short", "bearer", &short);
    Scene::grant_all(&scene.vault, &["short"]);
    let elsewhere = TestServer::start("127.0.0.2", |_req: &Received| Reply::json(200, json!({}))).await;
    let wrong_short = loop {
        let mut rng = rand::rng();
        let guess: String = (0..7).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect();
        if guess != short {
            break guess;
        }
    };
    let long = scene.secrets.bearer.clone();
    let wrong_long = slashy("bt_");

    let mut requests = Vec::new();
    let mut pairs = Vec::new();
    for (label, right, wrong) in [("short", &short, &wrong_short), ("long", &long, &wrong_long)] {
        for auth in [None, Some("bearer")] {
            for part in ["url", "header", "body"] {
                for guess in [right, wrong] {
                    let mut request = json!({ "method": "POST", "url": format!("{}/collect", elsewhere.base_url()) });
                    match part {
                        "url" => request["url"] = format!("{}/collect?q={guess}", elsewhere.base_url()).into(),
                        "header" => request["headers"] = json!([["x-guess", guess]]),
                        _ => request["body"] = guess.as_str().into(),
                    }
                    if let Some(auth) = auth {
                        request["credential"] = auth.into();
                    }
                    requests.push(request);
                }
                pairs.push(format!("{label} secret in the {part}, credential {auth:?}"));
            }
        }
    }
    let input = json!({ "open": ["short", "bearer"], "requests": requests });
    let (output, records) = probe(&scene.skill, input).await.expect("no tripwire: nothing was sent");
    assert!(output["opens"].as_array().unwrap().iter().all(|o| o["ok"] == true), "{}", output["opens"]);
    for (pair, what) in records.chunks(2).zip(&pairs) {
        let (right, wrong) = (&pair[0], &pair[1]);
        assert_eq!(right.error_case.as_deref(), Some("host-not-allowed"), "{what}: {}", right.summary());
        assert_eq!(wrong.error_case.as_deref(), Some("host-not-allowed"), "{what}: {}", wrong.summary());
        let (guess_right, guess_wrong) =
            if what.starts_with("short") { (&short, &wrong_short) } else { (&long, &wrong_long) };
        let normal = |r: &Record, guess: &str| r.error_message.clone().unwrap_or_default().replace(guess, "GUESS");
        assert_eq!(normal(right, guess_right), normal(wrong, guess_wrong), "{what}: the answers differ");
        assert!(!right.error_message.as_deref().unwrap_or_default().contains("[REDACTED]"), "{what}");
    }
    assert!(elsewhere.received().is_empty(), "a refused request was sent: {:?}", elsewhere.received());
    assert!(scene.audit(AuditAction::Tripwire).is_empty(), "a refused request tripped the wire");
}

/// A short secret (never searched outbound, so sending it does not trip) echoed back by an
/// allowed service must not tell the guest whether its guess was right: the answer to the right
/// guess and to a wrong one must look the same. If the host redacts only the right one, a skill
/// can test guesses one request at a time.
#[tokio::test]
async fn an_echoed_short_guess_is_not_confirmed() {
    let scene = Scene::new().await;
    let short: String = {
        let mut rng = rand::rng();
        (0..7).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
    };
    scene.vault.add("short", "bearer", &short);
    Scene::grant_all(&scene.vault, &["short"]);
    let wrong: String = short.chars().map(|c| if c == 'q' { 'r' } else { 'q' }).collect();
    let requests: Vec<Value> =
        [&short, &wrong].iter().map(|g| json!({ "url": scene.url(&format!("/reflect/raw?q={g}")) })).collect();
    let (_, records) = probe(&scene.skill, json!({ "open": ["short"], "requests": requests })).await.unwrap();
    let (right, wrong_answer) = (&records[0], &records[1]);
    assert_eq!(wrong_answer.status, Some(200), "{}", wrong_answer.summary());
    assert_eq!(
        right.body_text().replace(&short, "GUESS"),
        wrong_answer.body_text().replace(&wrong, "GUESS"),
        "ORACLE: the echo of the right guess differs from the echo of a wrong one"
    );
}

/// What a tripwire case sends, logs or returns.
struct Trip {
    name: String,
    channel: &'static str,
    input: Value,
}

fn trips(scene: &Scene) -> Vec<Trip> {
    let secret = scene.secrets.bearer.as_str();
    let fragment = &secret[13..25];
    let reversed: String = secret.chars().rev().collect();
    let base64 = STANDARD.encode(secret);
    let mut trips = Vec::new();
    for (how, value) in
        [("whole", secret), ("12-byte fragment", fragment), ("reversed", &reversed), ("base64", &base64)]
    {
        let url = scene.url(&format!("/reflect/raw?q={value}"));
        trips.push(Trip {
            name: format!("{how} in the url"),
            channel: "http.send url",
            input: json!({ "requests": [{ "url": url }] }),
        });
        trips.push(Trip {
            name: format!("{how} in a header"),
            channel: "http.send header x-data",
            input: json!({ "requests": [{ "url": scene.url("/reflect/raw?q=x"), "headers": [["x-data", value]] }] }),
        });
        trips.push(Trip {
            name: format!("{how} in the body"),
            channel: "http.send body",
            input: json!({ "requests": [{ "method": "POST", "url": scene.url("/reflect/raw?q=x"), "body": value }] }),
        });
    }
    let mut other = |name: &str, channel, input| trips.push(Trip { name: name.to_owned(), channel, input });
    other("whole in a log line", "log", json!({ "log": format!("token={secret}") }));
    other("reversed as the result", "output", json!({ "result": reversed }));
    other("whole on stdout", "stdout", json!({ "stdout": secret }));
    other("base64 in the skill's error", "error", json!({ "fail": base64 }));
    trips
}

/// Checks a tripwire error and its audit row; returns how many grants it suspended.
fn check_tripped(scene: &Scene, result: Result<skillbox_runtime::Output, Error>, trip: &Trip) -> usize {
    let err = match result {
        Err(err @ Error::Tripwire { .. }) => err,
        other => panic!("{}: expected a tripwire, got {other:?}", trip.name),
    };
    let Error::Tripwire { skill, tripped } = &err else { unreachable!() };
    assert_eq!(skill, SKILL);
    assert!(tripped.channel.starts_with(trip.channel), "{}: channel {:?}", trip.name, tripped.channel);
    assert_eq!(tripped.credential.as_deref(), Some("bearer"), "{}: {tripped:?}", trip.name);
    let needles = scene.secrets.needles();
    for text in [err.to_string(), format!("{err:?}")] {
        assert_eq!(
            needles.find_in_views(text.as_bytes(), 3),
            None,
            "{}: the error holds the secret: {text}",
            trip.name
        );
    }
    let rows = scene.audit(AuditAction::Tripwire);
    let row = rows.iter().max_by_key(|r| r.id).expect("a tripwire audit row");
    assert_eq!(row.skill.as_deref(), Some(SKILL));
    assert_eq!(row.credential_name.as_deref(), Some("bearer"), "{row:?}");
    assert!(row.detail["channel"].as_str().unwrap().starts_with(trip.channel), "{}: {row:?}", trip.name);
    let digest = row.detail["digest"].as_str().expect("the row names the component digest");
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
    let all_rows = serde_json::to_string(&scene.vault.vault.audit_list(&AuditQuery::default()).unwrap()).unwrap();
    assert_eq!(needles.find_in_views(all_rows.as_bytes(), 3), None, "{}: an audit row holds the secret", trip.name);
    tripped.suspended.len()
}

/// A skill that sends its secret (whole, a 12-byte fragment, reversed, base64) in a URL, a
/// header or a body to a host it may reach, logs it, prints it, returns it or fails with it is
/// stopped, the attempt is audited (never the value), and nothing reaches the server.
#[tokio::test]
async fn sending_logging_or_returning_a_secret_trips_the_wire() {
    let scene = Scene::new().await;
    let trips = trips(&scene);
    assert_eq!(trips.len(), 16);
    for (i, trip) in trips.iter().enumerate() {
        // Lift the suspension the previous tripwires caused (granting again re-enables).
        Scene::grant_all(&scene.vault, STYLES);
        let mut input = trip.input.clone();
        input["open"] = json!(["bearer"]);
        let result = scene.skill.invoke(&input.to_string()).await;
        check_tripped(&scene, result, trip);
        assert_eq!(scene.audit(AuditAction::Tripwire).len(), i + 1);
        assert!(scene.server.received().is_empty(), "{}: the server received {:?}", trip.name, scene.server.received());
    }
    // Control: the same kinds of request without a secret go through.
    Scene::grant_all(&scene.vault, STYLES);
    let input = json!({ "open": ["bearer"], "requests": [{ "url": scene.url("/reflect/raw?q=harmless"),
        "headers": [["x-data", "harmless"]] }], "log": "harmless", "stdout": "harmless", "result": "harmless" });
    let (output, records) = probe(&scene.skill, input).await.expect("a harmless run");
    assert_eq!(records[0].status, Some(200), "{}", records[0].summary());
    assert_eq!(output["result"], "harmless");
}

/// Three tripwires by one component suspend the skill's grants: the fourth invocation cannot
/// open its credential (`denied`, saying it is suspended and how to re-enable), and granting
/// again restores it.
#[tokio::test]
async fn three_tripwires_suspend_the_grants_until_granted_again() {
    let scene = Scene::new().await;
    let trips = trips(&scene);
    let mut suspended = 0;
    for trip in &trips[..3] {
        let mut input = trip.input.clone();
        input["open"] = json!(["bearer"]);
        suspended = check_tripped(&scene, scene.skill.invoke(&input.to_string()).await, trip);
    }
    assert!(suspended >= 1, "the third tripwire suspended nothing");
    let rows = scene.audit(AuditAction::Suspend);
    assert!(rows.iter().any(|r| r.credential_name.as_deref() == Some("bearer")), "no suspend row: {rows:?}");

    let use_it =
        json!({ "open": ["bearer"], "requests": [{ "credential": "bearer", "url": scene.url("/reflect/raw") }] });
    let (output, records) = probe(&scene.skill, use_it.clone()).await.expect("a denied open is reported, not fatal");
    let open = &output["opens"][0];
    assert_eq!(open["error_case"], "denied", "{open}");
    let message = open["error_message"].as_str().unwrap();
    assert!(message.contains("suspended"), "{message}");
    assert!(message.contains("skillbox grant"), "{message}");
    assert_eq!(records[0].error_case.as_deref(), Some("denied"), "{}", records[0].summary());
    assert!(scene.server.received().is_empty(), "a suspended credential was used");

    scene.vault.grant(SKILL, "bearer", None);
    let (output, records) = probe(&scene.skill, use_it).await.unwrap();
    assert_eq!(output["opens"][0]["ok"], true, "{}", output["opens"]);
    assert_eq!(records[0].status, Some(200), "{}", records[0].summary());
    assert!(records[0].body_text().contains("[REDACTED]"), "{}", records[0].summary());
    assert_eq!(scene.server.received().len(), 1);
}

/// Serves decompression bombs: Content-Encoded (1 GiB of zeros in about 1 MiB of gzip, and in
/// 32 KiB of zstd) and as compressed blobs without Content-Encoding, under the 10 MiB body cap
/// but past the scanner's 64 MiB budget.
async fn bomb_server() -> TestServer {
    const GIB: usize = 1 << 30;
    let gzip_ce = reflect::gzip_zeros(64 << 20, 16);
    let zstd_ce = reflect::zstd_zeros(GIB);
    let gzip_blob = reflect::gzip_zeros(128 << 20, 1);
    let zlib_blob = reflect::zlib_zeros(128 << 20);
    let zstd_blob = reflect::zstd_zeros(GIB);
    let base64_gzip = STANDARD.encode(&gzip_blob);
    for bomb in [&gzip_ce, &zstd_ce, &gzip_blob, &zlib_blob, &zstd_blob] {
        assert!(bomb.len() < 4 << 20, "a bomb of {} bytes is not small", bomb.len());
    }
    TestServer::start("127.0.0.1", move |req: &Received| {
        let path = req.target.split('?').next().unwrap_or_default();
        let octet = |body: &Vec<u8>| Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: body.clone(),
        };
        let encoded = |coding: &str, body: &Vec<u8>| Reply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("content-encoding".into(), coding.into()),
            ],
            body: body.clone(),
        };
        match path {
            "/bomb/gzip-ce" => encoded("gzip", &gzip_ce),
            "/bomb/zstd-ce" => encoded("zstd", &zstd_ce),
            "/bomb/gzip-blob" => octet(&gzip_blob),
            "/bomb/zlib-blob" => octet(&zlib_blob),
            "/bomb/zstd-blob" => octet(&zstd_blob),
            "/bomb/base64-gzip" => Reply::json(200, json!({ "data": base64_gzip })),
            _ => reflect::route(req),
        }
    })
    .await
}

/// Decompression bombs are refused as `limit` errors, the invocation completes, and the test
/// process (which hosts the runtime) does not grow by anything like the inflated size.
#[tokio::test]
async fn decompression_bombs_are_refused_with_bounded_memory() {
    let _heavy = HEAVY.lock().await;
    let scene = Scene::with_server(bomb_server().await).await;
    let bombs = ["gzip-ce", "zstd-ce", "gzip-blob", "zlib-blob", "zstd-blob", "base64-gzip"];
    let mut requests = Vec::new();
    for bomb in bombs {
        requests.push(json!({ "credential": "bearer", "url": scene.url(&format!("/bomb/{bomb}")) }));
        requests.push(json!({ "url": scene.url(&format!("/bomb/{bomb}")) }));
    }
    let before = reflect::peak_rss();
    let started = std::time::Instant::now();
    let (_, records) = probe(&scene.skill, json!({ "requests": requests })).await.expect("the invocation completes");
    let elapsed = started.elapsed();
    let after = reflect::peak_rss();
    assert_eq!(records.len(), 2 * bombs.len());
    for record in &records {
        let what = format!("{} (credential {:?})", record.url, record.credential);
        assert_eq!(record.error_case.as_deref(), Some("limit"), "{what}: {}", record.summary());
        let message = record.error_message.as_deref().unwrap_or_default();
        if record.url.ends_with("-ce") {
            assert!(message.contains("over the") && message.contains("limit"), "{what}: {message}");
        } else {
            assert!(message.contains("limit"), "{what}: {message}");
        }
    }
    eprintln!("bombs refused in {elapsed:?}; peak RSS {before:?} -> {after:?}");
    if let (Some(before), Some(after)) = (before, after) {
        assert!(
            after.saturating_sub(before) < 512 << 20,
            "peak RSS grew by {} MiB while refusing bombs",
            (after - before) >> 20
        );
    }
    // The server got every request: the refusals came from reading the answers.
    assert_eq!(scene.server.received().len(), 2 * bombs.len());
}

/// A token of another service (`ghp_` + 36 random letters and digits, made now) in a response,
/// with or without a credential, on stdout and in the result, is replaced by
/// `[REDACTED:github-pat]` and audited.
#[tokio::test]
async fn a_foreign_token_is_redacted_by_rule() {
    let foreign = loop {
        let mut rng = rand::rng();
        let body: String = (0..36).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect();
        // Skip the (rare) draws the rule would take for a placeholder: runs of 4.
        let runs = body.as_bytes().windows(4).any(|w| {
            w.windows(2).all(|p| p[0] == p[1])
                || w.windows(2).all(|p| p[1] == p[0].wrapping_add(1))
                || w.windows(2).all(|p| p[1] == p[0].wrapping_sub(1))
        });
        if !runs && !body.to_ascii_lowercase().contains("example") {
            break format!("ghp_{body}");
        }
    };
    let token = foreign.clone();
    let server = TestServer::start("127.0.0.1", move |req: &Received| {
        if req.target.starts_with("/foreign") {
            let mut reply =
                Reply::json(200, json!({ "login": "octocat", "leaked": token, "note": format!("{token} ok") }));
            reply.headers.push(("x-token".into(), token.clone()));
            reply
        } else {
            reflect::route(req)
        }
    })
    .await;
    let scene = Scene::with_server(server).await;
    let input = json!({
        "requests": [{ "url": scene.url("/foreign") }, { "credential": "bearer", "url": scene.url("/foreign") }],
        "stdout": format!("printing {foreign}"),
        "result": { "echo": foreign },
        "plain": true,
    });
    let output = scene.skill.invoke(&input.to_string()).await.expect("foreign tokens are redacted, not fatal");
    let value = json(&output.json);
    for record in records(&value) {
        assert_eq!(record.status, Some(200), "{}", record.summary());
        let body = record.body_text();
        assert!(!body.contains(&foreign), "the guest got the foreign token: {body}");
        assert_eq!(body.matches("[REDACTED:github-pat]").count(), 2, "{body}");
        assert_eq!(record.header("x-token"), Some("[REDACTED:github-pat]"), "{}", record.summary());
    }
    assert!(!output.json.contains(&foreign), "{}", output.json);
    assert_eq!(value["result"]["echo"], "[REDACTED:github-pat]", "{}", output.json);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("printing [REDACTED:github-pat]") && !stdout.contains(&foreign), "{stdout}");

    let rows = scene.audit(AuditAction::Leak);
    let channels: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.detail["rule"] == "github-pat" && r.detail["action"] == "redact")
        .filter_map(|r| r.detail["channel"].as_str())
        .collect();
    for channel in ["http.response", "stdout", "output"] {
        assert!(channels.contains(channel), "no `leak` row for {channel}: {rows:?}");
    }
    assert!(!serde_json::to_string(&rows).unwrap().contains(&foreign), "an audit row holds the token");
}

/// Checks that every record got a status and nothing else (no headers, no body).
fn assert_status_only(records: &[Record], needles: &Needles) {
    for record in records {
        let what = format!("{} / {:?}", record.form(), record.credential);
        assert_eq!(record.status, Some(200), "{what}: {}", record.summary());
        assert!(record.headers.is_empty(), "{what}: headers came back: {:?}", record.headers);
        assert!(record.body.is_empty(), "{what}: a body came back: {}", record.summary());
        assert_eq!(record.leak(needles), None, "{what}");
    }
}

/// A write-only credential (`response = "status"` in the manifest, or a grant narrowed with
/// `--response status`) returns the status and nothing else, whatever the server reflects.
#[tokio::test]
async fn a_response_blind_credential_returns_only_the_status() {
    let scene = Scene::new().await;
    let blind = slashy("bl_");
    scene.vault.add("blind", "bearer", &blind);
    Scene::grant_all(&scene.vault, &["blind"]);
    let forms: Vec<&str> = FORMS.iter().chain(BEYOND_MODEL).copied().collect();
    let requests: Vec<Value> = forms
        .iter()
        .map(|form| json!({ "credential": "blind", "url": scene.url(&format!("/reflect/{form}")) }))
        .collect();
    let (_, records) = probe(&scene.skill, json!({ "requests": requests })).await.unwrap();
    let needles = Needles::new(&[("blind token", blind.as_bytes())]);
    assert_status_only(&records, &needles);
    assert!(
        scene.server.received().iter().all(|r| r.header("authorization") == Some(&format!("Bearer {blind}"))),
        "the credential was not sent, so nothing was tested"
    );

    // The same for the full-response `bearer`, narrowed by the grant.
    let mut grant = NewGrant::new(SKILL, CredentialRef::new("bearer"));
    grant.response = Some(ResponseMode::Status);
    scene.vault.vault.grant(&grant, "test").unwrap();
    let requests: Vec<Value> = forms
        .iter()
        .map(|form| json!({ "credential": "bearer", "url": scene.url(&format!("/reflect/{form}")) }))
        .collect();
    let (_, records) = probe(&scene.skill, json!({ "requests": requests })).await.unwrap();
    assert_status_only(&records, &scene.secrets.needles());

    // Narrowed to headers: no body, and no header that holds anything of the secret. (Only the
    // modelled forms: a secret cut into parts shorter than a fragment, one per header, is
    // beyond what any scan of single headers can see.)
    grant.response = Some(ResponseMode::Headers);
    scene.vault.vault.grant(&grant, "test").unwrap();
    let requests: Vec<Value> = FORMS
        .iter()
        .map(|form| json!({ "credential": "bearer", "url": scene.url(&format!("/reflect/{form}")) }))
        .collect();
    let (_, records) = probe(&scene.skill, json!({ "requests": requests })).await.unwrap();
    let needles = scene.secrets.needles();
    for record in &records {
        let what = record.form();
        assert_eq!(record.status, Some(200), "{what}: {}", record.summary());
        assert!(record.body.is_empty(), "{what}: a body came back: {}", record.summary());
        assert_eq!(record.leak(&needles), None, "{what}");
        assert!(record.headers.iter().all(|(_, v)| !v.contains("[REDACTED]")), "{what}: patched, not dropped");
    }
    let header = records.iter().find(|r| r.form() == "header").unwrap();
    assert!(header.header("x-reflected").is_none(), "{}", header.summary());
    assert!(header.header("content-type").is_some(), "clean headers are kept: {}", header.summary());
}
