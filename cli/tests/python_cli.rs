//! The Python sample `py-weather` through the `skillbox` command, as issue 10's
//! "done when" types it: store a token with `--value-stdin`, grant it with
//! `--hosts`, run the skill against a local server that answers only that token;
//! `inspect --json` shows it uses our `credentials` and `http` interfaces, and
//! `skillbox build` runs its `[build] command` (a no-op when it is up to date).
//!
//! The compile cache is the one `tests/tests/python.rs` keeps in cargo's target
//! tmp dir, so the ~18 MiB Python component is compiled once, not once per run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use skillbox_tests::server::{Received, Reply, TestServer};

const TOKEN: &str = "wx_CliPythonToken0123456789abcdefABCD";
const MASTER_KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("skillbox-python-cache")
}

/// `skillbox ARGS` with a vault in `dir`, `stdin` on its standard input.
fn skillbox(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .args(args)
        .env("SKILLBOX_VAULT", dir.join("vault.db"))
        .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
        .env("SKILLBOX_CACHE_DIR", cache_dir())
        .env_remove("SKILLBOX_KEY_FILE")
        .env_remove("SKILLBOX_PASSPHRASE")
        .env_remove("SKILLBOX_CONFIG")
        .env_remove("RUST_LOG")
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

fn ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = skillbox(dir, args, stdin);
    assert!(out.status.success(), "{args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn weather_server() -> TestServer {
    TestServer::start("127.0.0.1", |req: &Received| {
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Reply::json(401, json!({ "message": "invalid token" }));
        }
        if req.target == "/weather?city=Oslo" {
            Reply::json(200, json!({ "city": "Oslo", "temp_c": -3.5 }))
        } else {
            Reply::json(404, json!({ "message": "no such city" }))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_weather_store_grant_run() {
    let server = weather_server().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let skill = skillbox_tests::PY_WEATHER;
    ok(&dir, &["vault", "init"], None);
    ok(&dir, &["cred", "add", "weather", "--type", "bearer", "--service", "weather", "--value-stdin"], Some(TOKEN));
    ok(&dir, &["grant", "py-weather", "weather", "--hosts", &server.host()], None);

    // `skillbox run`, off the async runtime that serves the test server.
    let input = json!({ "city": "Oslo", "base_url": server.base_url() }).to_string();
    let run_dir = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        skillbox(&run_dir, &["run", skill, "--allow-http-loopback", "--input", &input], None)
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "run failed ({}): {stderr}", out.status);
    let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(result, json!({ "city": "Oslo", "temp_c": -3.5 }));
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "{stdout}\n{stderr}");
    assert_eq!(server.received()[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));

    // What the component imports: our credentials and http interfaces.
    let inspect: Value = serde_json::from_str(&ok(&dir, &["inspect", "--json", skill], None)).unwrap();
    let imports: Vec<&str> =
        inspect["component"]["imports"].as_array().unwrap().iter().filter_map(|i| i["name"].as_str()).collect();
    for interface in ["skillbox:skill/credentials@0.1.0", "skillbox:skill/http@0.1.0"] {
        assert!(imports.contains(&interface), "{interface} not in {imports:?}");
    }

    // `skillbox build` runs the manifest's build command in the skill's directory.
    let out = skillbox(&dir, &["build", skill], None);
    assert!(out.status.success(), "build failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("py-weather.wasm"));
}
