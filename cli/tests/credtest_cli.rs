//! `skillbox cred test NAME` through the real binary, against real servers on loopback: a
//! bearer credential sent through the egress pipeline to a test server (200, then a 401, then a
//! host its grant does not allow), an `oauth2` credential whose access token expired refreshed
//! against a real authorization server before its test, SQLite always, and the machine's
//! PostgreSQL when `SKILLBOX_TEST_POSTGRES_URL` is set. Every run: the secret never appears on
//! stdout or stderr, and the audit log gains a row.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use skillbox_tests::oauth::{CLIENT_ID, CLIENT_SECRET, OAuthServer};
use skillbox_tests::server::{Reply, TestServer};

const KEY: &str = "5a5b5c5d5e5f50515253545556575859505152535455565758595a5b5c5d5e5f";
/// What `cred test` exits with when the credential does not work.
const FAILED: i32 = 6;
/// What it exits with when skillbox's own rules refuse the test.
const DENIED: i32 = 4;

const TOKEN: &str = "tok-CredTest-0123456789abcdefXYZ";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env { dir: tempfile::tempdir().unwrap() };
        env.ok(&["vault", "init"], None);
        env
    }

    fn vault(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .args(args)
            .env("SKILLBOX_VAULT", self.vault())
            .env("SKILLBOX_MASTER_KEY", KEY)
            .env("SKILLBOX_CACHE_DIR", self.dir.path().join("cache"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
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
            let _ = input.write_all(text.as_bytes());
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `cred test` with `args`: its exit code, stdout and stderr, after checking that none of
    /// `secrets` appears in either stream.
    fn cred_test(&self, args: &[&str], secrets: &[&str]) -> (i32, String, String) {
        let mut all = vec!["cred", "test"];
        all.extend_from_slice(args);
        let out = self.run(&all, None);
        let (stdout, stderr) =
            (String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned());
        for secret in secrets {
            assert!(!stdout.contains(secret), "a secret on stdout: {stdout}");
            assert!(!stderr.contains(secret), "a secret on stderr: {stderr}");
        }
        (out.status.code().unwrap(), stdout, stderr)
    }

    /// The audit rows `cred test` wrote about `credential` (purpose `cred test`, any action
    /// but `read`).
    fn test_rows(&self, credential: &str) -> Vec<Value> {
        let rows: Value =
            serde_json::from_str(&self.ok(&["audit", "list", "--credential", credential, "--json"], None)).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["purpose"] == "cred test" && r["action"] != "read")
            .cloned()
            .collect()
    }

    /// The whole audit log as JSON lines.
    fn audit_export(&self) -> String {
        self.ok(&["audit", "export"], None)
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A server that answers 200 only to `Authorization: Bearer TOKEN`, else 401.
async fn bearer_server() -> TestServer {
    TestServer::start("127.0.0.1", |req| {
        if req.header("authorization") == Some(format!("Bearer {TOKEN}").as_str()) {
            Reply::json(200, json!({ "login": "ada" }))
        } else {
            Reply::json(401, json!({ "message": "Bad credentials" }))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_credential_works_fails_and_is_refused_elsewhere_without_showing_the_secret() {
    let server = bearer_server().await;
    let env = Env::new();
    let url = format!("{}/user", server.base_url());
    env.ok(
        &["cred", "add", "gh", "--type", "bearer", "--service", "github", "--value-stdin", "--test-url", &url],
        Some(TOKEN),
    );
    let shown: Value = json(&env.ok(&["cred", "show", "gh", "--json"], None));
    assert_eq!(shown["test_url"], url.as_str(), "cred add --test-url records it");

    // Works: 200, the server saw the injected header, nothing shows the token.
    let (code, stdout, _) = env.cred_test(&["gh", "--allow-http-loopback"], &[TOKEN]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("works") && stdout.contains("HTTP 200"), "{stdout}");
    let received = server.received();
    assert_eq!(received.len(), 1, "one request");
    assert_eq!(received[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(received[0].target, "/user");

    let (code, stdout, _) = env.cred_test(&["gh", "--allow-http-loopback", "--json"], &[TOKEN]);
    assert_eq!(code, 0, "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["ok"], true);
    assert_eq!(report["http"]["status"], 200);
    assert_eq!(report["http"]["credential_sent"], true);
    assert_eq!(report["audit"], "use");

    let rows = env.test_rows("gh");
    assert_eq!(rows.len(), 2, "one use row per test: {rows:#?}");
    let row = &rows[0];
    assert_eq!(row["action"], "use");
    assert_eq!(row["success"], true);
    assert_eq!(row["detail"]["operation"], "http.send");
    assert_eq!(row["detail"]["status"], 200);
    assert_eq!(row["detail"]["host"], server.host().as_str());

    // Without --allow-http-loopback plain http is refused before anything is sent.
    let (code, stdout, _) = env.cred_test(&["gh"], &[TOKEN]);
    assert_eq!(code, DENIED, "{stdout}");
    assert!(stdout.contains("--allow-http-loopback"), "the fix is named: {stdout}");
    assert_eq!(server.received().len(), 2, "nothing sent");

    // A wrong token: the server's 401 is a failure, exit 6.
    let wrong = "tok-Wrong-0123456789abcdefXYZ";
    env.ok(
        &["cred", "add", "stale", "--type", "bearer", "--service", "github", "--value-stdin", "--test-url", &url],
        Some(wrong),
    );
    let (code, stdout, _) = env.cred_test(&["stale", "--allow-http-loopback"], &[wrong]);
    assert_eq!(code, FAILED, "{stdout}");
    assert!(stdout.contains("FAILED") && stdout.contains("HTTP 401"), "{stdout}");
    assert!(stdout.contains("skillbox cred rotate stale"), "the fix is named: {stdout}");
    let (code, stdout, _) = env.cred_test(&["stale", "--allow-http-loopback", "--json"], &[wrong]);
    assert_eq!(code, FAILED);
    let report = json(&stdout);
    assert_eq!((report["ok"].clone(), report["http"]["status"].clone()), (json!(false), json!(401)));
    let rows = env.test_rows("stale");
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["action"].clone(), rows[0]["success"].clone()), (json!("use"), json!(false)));
    assert_eq!(rows[0]["detail"]["status"], 401);

    // A grant that sends it only to another host: the test URL is refused, nothing is sent.
    env.ok(&["grant", "issue-triage", "gh", "--hosts", "api.github.com"], None);
    let before = server.received().len();
    let (code, stdout, _) = env.cred_test(&["gh", "--allow-http-loopback"], &[TOKEN]);
    assert_eq!(code, DENIED, "{stdout}");
    assert!(stdout.contains("not one credential 'gh' may be sent to"), "{stdout}");
    assert!(stdout.contains("api.github.com") && stdout.contains("--hosts"), "{stdout}");
    assert_eq!(server.received().len(), before, "nothing sent");
    let rows = env.test_rows("gh");
    assert_eq!(rows.last().unwrap()["action"], "denied");
    // With the test server among the grant's hosts it works again; --url overrides.
    env.ok(&["grant", "issue-triage", "gh", "--hosts", &format!("api.github.com,{}", server.host())], None);
    let other = format!("{}/other", server.base_url());
    let (code, stdout, _) = env.cred_test(&["gh", "--allow-http-loopback", "--url", &other], &[TOKEN]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(server.received().last().unwrap().target, "/other");

    // No test URL: a usage error that says how to record one.
    env.ok(&["cred", "add", "bare", "--type", "bearer", "--service", "x", "--value-stdin"], Some(TOKEN));
    let (code, _, stderr) = env.cred_test(&["bare"], &[TOKEN]);
    assert_eq!(code, 2);
    assert!(stderr.contains("skillbox cred update bare --test-url"), "{stderr}");

    let export = env.audit_export();
    assert!(!export.contains(TOKEN) && !export.contains(wrong), "no secret in the audit log");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_oauth2_token_is_refreshed_once_then_tested() {
    let (server, refresh_token) = OAuthServer::start(Duration::from_secs(3600)).await;
    let env = Env::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let expired_access = "at_expired_0123456789abcdefghij";
    let value = json!({
        "access_token": expired_access,
        "refresh_token": refresh_token,
        "expires_at": now - 60,
        "token_url": server.token_url(),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    })
    .to_string();
    let resource = format!("{}/resource", server.server.base_url());
    env.ok(
        &["cred", "add", "svc", "--type", "oauth2", "--service", "svc", "--value-stdin", "--test-url", &resource],
        Some(&value),
    );

    let secrets = [expired_access, refresh_token.as_str(), CLIENT_SECRET];
    let (code, stdout, stderr) = env.cred_test(&["svc", "--allow-http-loopback", "--json"], &secrets);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(server.issued("refresh_token"), 1, "one refresh");
    let report = json(&stdout);
    assert_eq!(report["refresh"], json!({ "ok": true, "forced": false, "error": null }));
    assert_eq!(report["http"]["status"], 200);
    // The resource saw the new token, never the expired one; neither is printed.
    let received = server.server.received();
    let last = received.iter().rfind(|r| r.target == "/resource").unwrap();
    let sent = last.header("authorization").unwrap().strip_prefix("Bearer ").unwrap().to_owned();
    assert_ne!(sent, expired_access);
    assert!(!stdout.contains(&sent) && !stderr.contains(&sent), "the new access token is not shown");
    assert_eq!(json(&env.ok(&["cred", "show", "svc", "--json"], None))["version"], 2, "stored");

    // The token is now good for an hour: the test still proves a refresh works (forced).
    let (code, stdout, _) = env.cred_test(&["svc", "--allow-http-loopback"], &[&sent, CLIENT_SECRET]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("refreshed once to prove it can be"), "{stdout}");
    assert_eq!(server.issued("refresh_token"), 2);
    // --no-refresh skips it.
    let (code, _, _) = env.cred_test(&["svc", "--allow-http-loopback", "--no-refresh"], &[CLIENT_SECRET]);
    assert_eq!(code, 0);
    assert_eq!(server.issued("refresh_token"), 2);

    let rows: Value = json(&env.ok(&["audit", "list", "--credential", "svc", "--json"], None));
    let refreshes = rows.as_array().unwrap().iter().filter(|r| r["action"] == "refresh").count();
    assert_eq!(refreshes, 2, "each refresh is audited");
    let uses = env.test_rows("svc");
    assert_eq!(uses.len(), 3);
    assert!(uses.iter().all(|r| r["action"] == "use" && r["success"] == true), "{uses:#?}");
    assert_eq!(uses[0]["detail"]["refreshed"], true);

    // The provider refuses the refresh token: the test fails, names `oauth login`, and the
    // credential is marked as needing re-authorization.
    server.state.lock().unwrap().invalid_grant = true;
    let (code, stdout, _) = env.cred_test(&["svc", "--allow-http-loopback"], &[CLIENT_SECRET]);
    assert_eq!(code, FAILED, "{stdout}");
    assert!(stdout.contains("skillbox oauth login svc"), "{stdout}");
    let shown = json(&env.ok(&["cred", "show", "svc", "--json"], None));
    assert!(shown["needs_reauth"].as_str().unwrap().contains("invalid_grant"), "{shown}");

    let export = env.audit_export();
    for secret in [expired_access, refresh_token.as_str(), CLIENT_SECRET, sent.as_str()] {
        assert!(!export.contains(secret), "no secret in the audit log");
    }
}

#[test]
fn sqlite_credential_connects_or_fails_clearly() {
    let env = Env::new();
    let db = env.dir.path().join("reports.db");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    let value = json!({ "driver": "sqlite", "path": db }).to_string();
    env.ok(&["cred", "add", "reports", "--type", "database", "--service", "sqlite", "--value-stdin"], Some(&value));
    let (code, stdout, _) = env.cred_test(&["reports"], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("works") && stdout.contains("SELECT 1"), "{stdout}");

    let missing = json!({ "driver": "sqlite", "path": env.dir.path().join("nope.db") }).to_string();
    env.ok(&["cred", "add", "gone", "--type", "database", "--service", "sqlite", "--value-stdin"], Some(&missing));
    let (code, stdout, _) = env.cred_test(&["gone", "--json"], &[]);
    assert_eq!(code, FAILED, "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["ok"], false);
    assert!(report["error"].as_str().unwrap().contains("could not open SQLite database"), "{report}");
    assert!(!std::path::Path::new(&env.dir.path().join("nope.db")).exists(), "opened read-only: nothing created");
    // --url belongs to HTTP credentials.
    assert_eq!(env.cred_test(&["reports", "--url", "https://example.com/"], &[]).0, 2);

    let rows = env.test_rows("reports");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0]["action"].clone(), rows[0]["success"].clone()), (json!("use"), json!(true)));
    assert_eq!(rows[0]["detail"]["operation"], "sql.query");
    assert_eq!(env.test_rows("gone")[0]["success"], false);
}

/// A password trust authentication ignores, carried so the test can look for it.
const PG_PASSWORD: &str = "pg-CredTest-Pa55word-0123456789";

/// The credential value for the test PostgreSQL at `url`, on `database` when given.
fn postgres_value(url: &str, database: Option<&str>, privileged: bool) -> String {
    let rest =
        url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://")).expect("a postgres:// URL");
    let (userinfo, rest) = rest.split_once('@').unwrap_or(("postgres", rest));
    let user = userinfo.split(':').next().unwrap();
    let (hostport, dbname) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let dbname = dbname.split('?').next().unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    json!({
        "driver": "postgres",
        "host": host,
        "port": port.parse::<u16>().unwrap(),
        "database": database.unwrap_or(dbname),
        "user": user,
        "password": PG_PASSWORD,
        "allow_privileged_role": privileged,
    })
    .to_string()
}

#[test]
fn postgres_credential_runs_select_1_or_fails_clearly() {
    let Some(url) = skillbox_tests::postgres_url("postgres_credential_runs_select_1_or_fails_clearly") else {
        return;
    };
    let env = Env::new();
    // The test server's role is a superuser: stored knowing it, as `cred add
    // --allow-privileged-role` does.
    let add = |name: &str, value: &str| {
        env.ok(&["cred", "add", name, "--type", "database", "--service", "pg", "--value-stdin"], Some(value))
    };
    add("pg", &postgres_value(&url, None, true));
    let (code, stdout, stderr) = env.cred_test(&["pg"], &[PG_PASSWORD]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("works") && stdout.contains("SELECT 1"), "{stdout}");
    let rows = env.test_rows("pg");
    assert_eq!(rows.len(), 1, "the audit log gains a row");
    assert_eq!((rows[0]["action"].clone(), rows[0]["success"].clone()), (json!("use"), json!(true)));
    assert_eq!(rows[0]["detail"]["statement"], "SELECT 1");
    assert_eq!(rows[0]["detail"]["privileged_role"], true);

    // A database that does not exist: a clear failure, exit 6.
    add("pg-wrong-db", &postgres_value(&url, Some("no_such_database_for_cred_test"), true));
    let (code, stdout, _) = env.cred_test(&["pg-wrong-db", "--json"], &[PG_PASSWORD]);
    assert_eq!(code, FAILED, "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["ok"], false);
    assert!(report["error"].as_str().unwrap().contains("the database does not exist"), "{report}");
    assert!(report["hint"].as_str().unwrap().contains("skillbox cred rotate pg-wrong-db"), "{report}");
    assert_eq!(env.test_rows("pg-wrong-db")[0]["success"], false);

    // The same rules as for skills: a privileged role the credential does not allow is refused.
    add("pg-unmarked", &postgres_value(&url, None, false));
    let (code, stdout, _) = env.cred_test(&["pg-unmarked"], &[PG_PASSWORD]);
    assert_eq!(code, DENIED, "{stdout}");
    assert!(stdout.contains("privileged database role"), "{stdout}");
    assert_eq!(env.test_rows("pg-unmarked")[0]["action"], "denied");

    assert!(!env.audit_export().contains(PG_PASSWORD), "no password in the audit log");
}
