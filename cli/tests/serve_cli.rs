//! `skillbox serve` as an operator runs it: a key from `skillbox apikey create`, the REST API
//! with reqwest, revocation, and SIGTERM while a call is running.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const MASTER_KEY: &str = "7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e";

fn skillbox(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillbox"));
    cmd.env("SKILLBOX_VAULT", dir.join("vault.db"))
        .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
        .env("SKILLBOX_CACHE_DIR", dir.join("cache"))
        .env_remove("SKILLBOX_KEY_FILE")
        .env_remove("SKILLBOX_PASSPHRASE")
        .env_remove("SKILLBOX_CONFIG")
        .env_remove("RUST_LOG");
    cmd
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let mut child =
        skillbox(dir).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().flush().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `skillbox serve` on a free loopback port; returns the child and its base URL.
fn start(dir: &Path, skills: &[&str]) -> (Child, String) {
    start_with(skillbox(dir), skills)
}

/// `cmd` (a `skillbox`, with any `serve` flags after the subcommand already given as
/// `--flag` arguments) started as `skillbox serve` on a free loopback port.
fn start_with(cmd: Command, skills: &[&str]) -> (Child, String) {
    let extra: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut cmd = {
        let mut fresh = Command::new(cmd.get_program());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => fresh.env(k, v),
                None => fresh.env_remove(k),
            };
        }
        fresh
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--shutdown-grace", "20s"]).args(extra);
    for s in skills {
        cmd.args(["--skills", s]);
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the server says where it listens").unwrap();
        for scheme in ["http", "https"] {
            if let Some(rest) = line.split(&format!("on {scheme}://")).nth(1) {
                return finish(child, lines, format!("{scheme}://{}", rest.split_whitespace().next().unwrap()));
            }
        }
    }
}

fn finish(child: Child, lines: std::io::Lines<BufReader<std::process::ChildStderr>>, url: String) -> (Child, String) {
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

async fn invoke(url: &str, skill: &str, key: Option<&str>, input: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("{url}/v1/skills/{skill}/invoke")).json(&input);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_key_serves_hello_until_it_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["vault", "init"]);
    let key = ok(dir.path(), &["apikey", "create", "agent-1", "--user", "default", "--env", "dev"]);
    let key = key.trim().to_owned();
    assert!(key.starts_with("sbx_"), "{key}");
    let (mut server, url) = start(dir.path(), &[skillbox_tests::HELLO]);

    assert_eq!(invoke(&url, "hello", None, json!({ "name": "A" })).await.0, 401);
    assert_eq!(invoke(&url, "hello", Some("sbx_not_a_key"), json!({ "name": "A" })).await.0, 401);
    let (status, body) = invoke(&url, "hello", Some(&key), json!({ "name": "Ada" })).await;
    assert_eq!((status, body), (200, json!({ "greeting": "Hello, Ada!" })));

    ok(dir.path(), &["apikey", "revoke", "agent-1"]);
    assert_eq!(invoke(&url, "hello", Some(&key), json!({ "name": "Ada" })).await.0, 401, "revoked at once");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["vault", "init"]);
    let key = ok(dir.path(), &["apikey", "create", "agent-2"]).trim().to_owned();
    let (mut server, url) = start(dir.path(), &[skillbox_tests::SPIN_FOREVER, skillbox_tests::HELLO]);
    // spin-forever runs to its 1 s time limit: a call certainly in flight when the signal comes.
    let call = {
        let (url, key) = (url.clone(), key.clone());
        tokio::spawn(async move { invoke(&url, "spin-forever", Some(&key), json!({})).await })
    };
    // Wait until the server has the call (its in-flight gauge says so), then signal.
    loop {
        let metrics = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
        if metrics.contains("skillbox_in_flight 1") {
            break;
        }
        assert!(!call.is_finished(), "the call ended before it was seen in flight");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    let (status, body) = call.await.unwrap();
    assert_eq!((status, body["title"].as_str()), (422, Some("limit")), "the accepted call was answered: {body}");
    assert!(server.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_can_list_the_skills() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["vault", "init"]);
    let key = ok(dir.path(), &["apikey", "create", "agent-3"]).trim().to_owned();
    let config = dir.path().join("skillbox.toml");
    std::fs::write(&config, format!("[serve]\nskills = [{:?}]\n", skillbox_tests::HELLO)).unwrap();
    let mut cmd = skillbox(dir.path());
    cmd.env("SKILLBOX_CONFIG", &config);
    let (mut server, url) = start_with(cmd, &[]);
    let (status, body) = invoke(&url, "hello", Some(&key), json!({ "name": "Cy" })).await;
    assert_eq!((status, body), (200, json!({ "greeting": "Hello, Cy!" })));
    server.kill().unwrap();
    server.wait().unwrap();

    // Neither the file nor --skills: a usage error that says how to give them.
    let out = skillbox(dir.path()).args(["serve"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[serve] skills"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_public_address_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = skillbox(dir.path())
        .args(["serve", "--skills", skillbox_tests::HELLO, "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-listen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_it_serves_https_and_only_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED with_a_certificate_it_serves_https_and_only_https: no `openssl` to make a test certificate");
        return;
    }
    ok(dir.path(), &["vault", "init"]);
    let api_key = ok(dir.path(), &["apikey", "create", "agent-tls"]).trim().to_owned();
    let mut cmd = skillbox(dir.path());
    cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
    let (mut server, url) = start_with(cmd, &[skillbox_tests::HELLO]);
    assert!(url.starts_with("https://"), "{url}");

    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap())
        .build()
        .unwrap();
    let response = trusted
        .post(format!("{url}/v1/skills/hello/invoke"))
        .bearer_auth(&api_key)
        .json(&json!({ "name": "Tess" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "greeting": "Hello, Tess!" }));
    // Plain http to the same port gets no answer, and a client that does not trust the
    // certificate does not connect.
    let plain = url.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err());
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Feeds `stdin` to a `skillbox` command that must succeed.
fn ok_with(dir: &Path, args: &[&str], stdin: &str) -> String {
    let mut child =
        skillbox(dir).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_call_is_audited_as_its_api_key_fingerprint_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["vault", "init"]);
    let secret = "served-call-webhook-key-0001";
    ok_with(
        dir.path(),
        &["cred", "add", "webhook-key", "--type", "hmac_key", "--service", "webhooks", "--value-stdin"],
        secret,
    );
    ok(dir.path(), &["grant", "webhook-signer", "webhook-key"]);
    let key = ok(dir.path(), &["apikey", "create", "agent-audit", "--user", "default", "--env", "dev"]);
    let key = key.trim().to_owned();
    let keys: Value = serde_json::from_str(&ok(dir.path(), &["apikey", "list", "--json"])).unwrap();
    let fingerprint = keys[0]["fingerprint"].as_str().unwrap().to_owned();
    assert!(fingerprint.starts_with("sbx_…"), "{fingerprint}");

    let (mut server, url) = start(dir.path(), &[skillbox_tests::WEBHOOK_SIGNER]);
    let (status, body) = invoke(&url, "webhook-signer", Some(&key), json!({ "payload": "p", "timestamp": 1 })).await;
    assert_eq!(status, 200, "{body}");
    server.kill().unwrap();
    server.wait().unwrap();

    let rows: Value = serde_json::from_str(&ok(dir.path(), &["audit", "list", "--json"])).unwrap();
    // Every row the served call caused (those after the key was made: the grant before it is
    // the operator's).
    let created = rows.as_array().unwrap().iter().find(|r| r["action"] == "apikey-create").unwrap()["id"].clone();
    let served: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"].as_i64() > created.as_i64() && r["skill"] == "webhook-signer")
        .collect();
    // The open (`read`), the signing (`use`) and the handle's `release`, at least.
    let actions: Vec<&str> = served.iter().map(|r| r["action"].as_str().unwrap()).collect();
    for action in ["read", "use", "release"] {
        assert!(actions.contains(&action), "{actions:?}");
    }
    let actor = format!("apikey:{fingerprint}");
    for row in &served {
        assert_eq!(row["actor"], actor.as_str(), "{row}");
    }
    // The key's user is still whose credentials were used.
    assert!(served.iter().all(|r| r["owner"].is_null() || r["owner"] == "default"), "{served:?}");
    let export = ok(dir.path(), &["audit", "export"]);
    assert!(!export.contains(&key) && !export.contains(&key[4..]), "the key is in the audit log");
    assert!(!export.contains(secret));
}
