//! Several hosts on one PostgreSQL store, as an operator runs them: two `skillbox serve`
//! processes with `SKILLBOX_STORE` pointing at one database share a credential, its grant and
//! an API key; a revocation made from a third process is honoured by both at their next call;
//! one `audit verify` covers everything they recorded; `vault status` and `vault migrate`
//! work on it. Skipped (and said so) without `SKILLBOX_TEST_POSTGRES_URL`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};
use skillbox_tests::pg::PgSchema;
use skillbox_tests::server::{Received, Reply, TestServer};

const TOKEN: &str = "ghp_FleetSharedToken0123456789abcdefABCD";
const MASTER_KEY: &str = "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d";

fn skillbox(store: &str, cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillbox"));
    cmd.env("SKILLBOX_STORE", store)
        .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
        .env("SKILLBOX_CACHE_DIR", cache)
        .env_remove("SKILLBOX_VAULT")
        .env_remove("SKILLBOX_KEY_FILE")
        .env_remove("SKILLBOX_PASSPHRASE")
        .env_remove("SKILLBOX_CONFIG")
        .env_remove("RUST_LOG");
    cmd
}

fn run(store: &str, cache: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = skillbox(store, cache)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(store: &str, cache: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(store, cache, args, stdin);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `skillbox serve` on a free loopback port; the child and its base URL.
fn serve(store: &str, cache: &Path) -> (Child, String) {
    let mut child = skillbox(store, cache)
        .args(["serve", "--listen", "127.0.0.1:0", "--allow-http-loopback", "--skills", skillbox_tests::GITHUB_ISSUES])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("the server says where it listens").unwrap();
        if let Some(rest) = line.split("on http://").nth(1) {
            break format!("http://{}", rest.split_whitespace().next().unwrap());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

async fn invoke(url: &str, key: &str, base_url: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/skills/github-issues/invoke"))
        .bearer_auth(key)
        .json(&json!({ "owner": "o", "repo": "r", "base_url": base_url }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_store_share_grants_and_honour_a_revocation() {
    let Some(pg) = PgSchema::create("two_servers_on_one_postgres_store_share_grants_and_honour_a_revocation") else {
        return;
    };
    let github = TestServer::start("127.0.0.1", |req: &Received| {
        if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            Reply::json(200, json!([{ "number": 7, "title": "Served from the fleet" }]))
        } else {
            Reply::json(401, json!({ "message": "Bad credentials" }))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (store, cache) = (pg.url().to_owned(), dir.path().join("cache"));
    let cli = {
        let (store, cache) = (store.clone(), cache.clone());
        move |args: Vec<String>, stdin: Option<String>| {
            let (store, cache) = (store.clone(), cache.clone());
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ok(&store, &cache, &args, stdin.as_deref())
            })
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    cli(args(&["vault", "init"]), None).await.unwrap();
    cli(
        args(&["cred", "add", "github", "--type", "bearer", "--service", "github", "--value-stdin"]),
        Some(TOKEN.into()),
    )
    .await
    .unwrap();
    cli(args(&["grant", "github-issues", "github", "--hosts", &github.host()]), None).await.unwrap();
    let key = cli(args(&["apikey", "create", "fleet-agent"]), None).await.unwrap().trim().to_owned();

    let (mut a, url_a) = serve(&store, &cache);
    let (mut b, url_b) = serve(&store, &cache);
    for url in [&url_a, &url_b] {
        let (status, body) = invoke(url, &key, &github.base_url()).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert!(body.to_string().contains("Served from the fleet"), "{body}");
        assert!(!body.to_string().contains(TOKEN));
    }
    assert_eq!(github.received().len(), 2);

    // A third host revokes; both servers refuse at their next call and send nothing.
    cli(args(&["cred", "revoke", "github", "--reason", "leaked in a log"]), None).await.unwrap();
    for url in [&url_b, &url_a] {
        let (status, body) = invoke(url, &key, &github.base_url()).await;
        assert_ne!(status, 200, "{url} still used a revoked credential: {body}");
        assert!(body.to_string().contains("revoked"), "{url}: {body}");
    }
    assert_eq!(github.received().len(), 2, "nothing was sent with the revoked credential");

    // One chain holds what every host recorded, and it verifies.
    let verify = cli(args(&["audit", "verify"]), None).await.unwrap();
    assert!(verify.contains("intact") || verify.contains("ok") || verify.contains("verified"), "{verify}");
    let audit = cli(args(&["audit", "list", "--json"]), None).await.unwrap();
    let reads = audit.matches("\"read\"").count();
    assert!(reads >= 2, "both servers' reads are in the one log: {audit}");
    assert!(!audit.contains(TOKEN));

    let status: Value = serde_json::from_str(&cli(args(&["vault", "status", "--json"]), None).await.unwrap()).unwrap();
    assert_eq!(status["store"]["backend"], "postgres", "{status}");
    assert_eq!(status["rows"]["credentials"], 1, "{status}");
    assert!(status["store"]["server_version"].is_string(), "{status}");

    // The whole vault moves to a SQLite file, and opens there with the same key.
    let file = dir.path().join("moved.db");
    cli(args(&["vault", "migrate", "--to", &format!("sqlite:{}", file.display())]), None).await.unwrap();
    let moved = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            ok(file.to_str().unwrap(), &dir.path().join("cache2"), &["cred", "list", "--json"], None)
        })
        .await
        .unwrap()
    };
    assert!(moved.contains("github") && moved.contains("revoked"), "{moved}");

    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn a_password_in_store_on_the_command_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .args(["--store", "postgres://app:hunter2secret@db.example.com/vault", "vault", "status"])
        .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
        .env("SKILLBOX_CACHE_DIR", dir.path())
        .env_remove("SKILLBOX_STORE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PGPASSWORD") && !stderr.contains("hunter2secret"), "{stderr}");
}
