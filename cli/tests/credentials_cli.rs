//! The README's credential walk-through, as a newcomer types it: store a
//! token, grant it with `--hosts`, run a skill against a local server, see
//! the audit row, ungrant, and see the next run refused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;
use skillbox_tests::server::{Received, Reply, TestServer};

const TOKEN: &str = "ghp_CliWalkthroughToken0123456789abcdef";
const MASTER_KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        let cli = Cli { dir: tempfile::tempdir().unwrap() };
        cli.ok(&["vault", "init"], None);
        cli
    }

    fn vault(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .args(args)
            .env("SKILLBOX_VAULT", self.vault())
            .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
            .env("SKILLBOX_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("SKILLBOX_KEY_FILE")
            .env_remove("SKILLBOX_PASSPHRASE")
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

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn github_server() -> TestServer {
    TestServer::start("127.0.0.1", |req: &Received| {
        if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            Reply::json(200, json!([{ "number": 7, "title": "Served locally" }]))
        } else {
            Reply::json(401, json!({ "message": "Bad credentials" }))
        }
    })
    .await
}

async fn echo_server() -> TestServer {
    TestServer::start("127.0.0.1", |req: &Received| {
        // An issue whose title is every header the server received.
        Reply::json(200, json!([{ "number": 1, "title": format!("{:?}", req.headers) }]))
    })
    .await
}

/// Runs `skillbox run SKILL --allow-http-loopback --input INPUT` off the async runtime that
/// serves the test server.
async fn run_cli(cli: &Cli, skill: &str, input: String) -> Output {
    let skill = Path::new(skill).to_owned();
    let vault = cli.vault();
    let cache = cli.dir.path().join("cache");
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .arg("run")
            .arg(&skill)
            .args(["--allow-http-loopback", "--input", &input])
            .env("SKILLBOX_VAULT", vault)
            .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
            .env("SKILLBOX_CACHE_DIR", cache)
            .env_remove("RUST_LOG")
            .env_remove("SKILLBOX_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Runs `github-issues` against `base_url`.
async fn run_skill(cli: &Cli, base_url: String) -> Output {
    let input = json!({ "owner": "o", "repo": "r", "base_url": base_url }).to_string();
    run_cli(cli, skillbox_tests::GITHUB_ISSUES, input).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_grant_run_audit_ungrant() {
    let server = github_server().await;
    let cli = Cli::new();
    cli.ok(&["cred", "add", "github", "--type", "bearer", "--service", "github", "--value-stdin"], Some(TOKEN));
    cli.ok(&["grant", "github-issues", "github", "--hosts", &server.host()], None);

    let out = run_skill(&cli, server.base_url()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result, json!({ "issues": [{ "number": 7, "title": "Served locally" }] }));

    let audit = cli.ok(&["audit", "list", "--json"], None);
    let rows: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let uses: Vec<_> = rows.as_array().unwrap().iter().filter(|r| r["action"] == "use").collect();
    assert_eq!(uses.len(), 1, "{audit}");
    assert_eq!(uses[0]["skill"], "github-issues");
    assert!(!audit.contains(TOKEN));

    cli.ok(&["ungrant", "github-issues", "github"], None);
    let out = run_skill(&cli, server.base_url()).await;
    assert_eq!(out.status.code(), Some(4), "denied: {}", stderr(&out));
    assert!(stderr(&out).contains("skillbox grant github-issues github"), "{}", stderr(&out));
    assert_eq!(server.received().len(), 1, "the refused run sent nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_echoing_headers_does_not_leak_the_token() {
    let server = echo_server().await;
    let cli = Cli::new();
    cli.ok(&["cred", "add", "github", "--type", "bearer", "--service", "github", "--value-stdin"], Some(TOKEN));
    cli.ok(&["grant", "github-issues", "github", "--hosts", &server.host()], None);
    let out = run_skill(&cli, server.base_url()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("authorization"), "the headers were echoed: {stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr(&out).contains(TOKEN), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_an_ungranted_credential_is_denied_with_the_grant_command() {
    let server = github_server().await;
    let cli = Cli::new();
    cli.ok(&["cred", "add", "github", "--type", "bearer", "--service", "github", "--value-stdin"], Some(TOKEN));
    let out = run_skill(&cli, server.base_url()).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("skillbox grant github-issues github"), "{}", stderr(&out));
    assert!(server.received().is_empty());
}

#[test]
fn a_skill_without_credentials_needs_no_vault_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .args(["run", skillbox_tests::HELLO, "--input", r#"{"name":"keyless"}"#])
        .env("SKILLBOX_VAULT", dir.path().join("absent.db"))
        .env("SKILLBOX_CACHE_DIR", dir.path().join("cache"))
        .env_remove("SKILLBOX_MASTER_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs `cred-probe` with `steps` through the CLI.
async fn run_probe(cli: &Cli, steps: serde_json::Value) -> Output {
    run_cli(cli, skillbox_tests::CRED_PROBE, json!({ "steps": steps }).to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripwire_exits_4_and_three_suspend_the_grant_until_granted_again() {
    let server = github_server().await;
    let cli = Cli::new();
    cli.ok(&["cred", "add", "github", "--type", "bearer", "--service", "github", "--value-stdin"], Some(TOKEN));
    cli.ok(&["grant", "cred-probe", "github", "--hosts", &server.host()], None);
    // A skill that somehow holds the token and tries to send it (reversed, to make it harder).
    let reversed: String = TOKEN.chars().rev().collect();
    let leak = json!([{ "send": { "url": format!("{}/x?q={reversed}", server.base_url()) }, "auth": "github" }]);
    for attempt in 1..=3 {
        let out = run_probe(&cli, leak.clone()).await;
        assert_eq!(out.status.code(), Some(4), "attempt {attempt}: {}", stderr(&out));
        assert!(stderr(&out).contains("tripwire"), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "nothing the skill produced is printed");
        assert!(!stderr(&out).contains(TOKEN) && !stderr(&out).contains(&reversed));
        if attempt == 3 {
            assert!(stderr(&out).contains("suspended"), "{}", stderr(&out));
        }
    }
    assert!(server.received().is_empty(), "no request carrying the secret went out");

    let grants = cli.ok(&["grants", "--json"], None);
    let grants: serde_json::Value = serde_json::from_str(&grants).unwrap();
    assert_eq!(grants[0]["status"], "suspended", "{grants}");
    // The fourth run, even an innocent one, finds the grant suspended.
    let open = json!([{ "send": { "url": format!("{}/ok", server.base_url()) }, "auth": "github" }]);
    let out = run_probe(&cli, open.clone()).await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("suspended") || stderr(&out).contains("suspended"), "{report} {}", stderr(&out));

    let audit = cli.ok(&["audit", "list", "--json"], None);
    let rows: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let count = |action: &str| rows.as_array().unwrap().iter().filter(|r| r["action"] == action).count();
    assert_eq!(count("tripwire"), 3, "{audit}");
    assert_eq!(count("suspend"), 1, "{audit}");
    assert!(!audit.contains(TOKEN) && !audit.contains(&reversed));

    cli.ok(&["grant", "cred-probe", "github", "--hosts", &server.host()], None);
    let out = run_probe(&cli, open).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"), "{}", String::from_utf8_lossy(&out.stdout));
    cli.ok(&["audit", "verify"], None);
}

/// `github-issues` under a manifest of the test's own, in `dir`, allowing `hosts`.
fn issues_manifest(dir: &Path, hosts: &[String]) -> String {
    let manifest = std::fs::read_to_string(Path::new(skillbox_tests::GITHUB_ISSUES).join("skill.toml"))
        .unwrap()
        .replace(
            "component = \"../target/wasm32-wasip2/release/github_issues.wasm\"",
            &format!("component = {:?}", skillbox_tests::GITHUB_ISSUES_COMPONENT),
        )
        .replace("hosts = [\"api.github.com\"]", &format!("hosts = {hosts:?}"));
    std::fs::write(dir.join("skill.toml"), manifest).unwrap();
    dir.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_only_host_change_is_refused_until_the_operator_grants_it() {
    let github = github_server().await;
    let attacker = echo_server().await;
    let cli = Cli::new();
    cli.ok(&["cred", "add", "github", "--type", "bearer", "--service", "github", "--value-stdin"], Some(TOKEN));
    let skill_dir = tempfile::tempdir().unwrap();
    let skill = issues_manifest(skill_dir.path(), &[github.host()]);

    // Granted from the skill's directory: the policy the operator looked at is pinned now.
    let out = cli.run(&["grant", &skill, "github"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("policy sha256")) && stderr(&out).contains(&github.host()),
        "{}",
        stderr(&out)
    );
    let run = |base_url: String| {
        let input = json!({ "owner": "o", "repo": "r", "base_url": base_url }).to_string();
        run_cli(&cli, &skill, input)
    };
    let out = run(github.base_url()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = cli.ok(&["grants"], None);
    assert!(table.contains("POLICY") && table.contains(&github.host()), "shows the pinned hosts: {table}");
    let grants: serde_json::Value = serde_json::from_str(&cli.ok(&["grants", "--json"], None)).unwrap();
    let pinned = grants[0]["policy"].as_str().unwrap().to_owned();
    assert!(table.contains(&hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&pinned))[..12]), "{table}");

    // The skill's author ships a manifest-only update that adds another host.
    issues_manifest(skill_dir.path(), &[github.host(), attacker.host()]);
    let out = run(attacker.base_url()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "denied: {err}");
    assert!(err.contains("policy") && err.contains("changed"), "{err}");
    assert!(err.contains(&format!("hosts: [\"{}\"] -> [", github.host())) && err.contains(&attacker.host()), "{err}");
    assert!(err.contains("skillbox grant github-issues github"), "{err}");
    assert!(attacker.received().is_empty(), "the token went nowhere: {:?}", attacker.received());
    // Nor does the old host get it under the new policy.
    assert_eq!(run(github.base_url()).await.status.code(), Some(4));
    assert_eq!(github.received().len(), 1);

    // The operator reviews the change and approves it.
    let out = cli.run(&["grant", &skill, "github"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(attacker.base_url()).await;
    assert!(out.status.success(), "approved now: {}", stderr(&out));
    assert_eq!(attacker.received().len(), 1);
}

#[test]
fn granting_from_a_directory_a_name_the_manifest_does_not_declare_is_an_error() {
    let cli = Cli::new();
    cli.ok(&["cred", "add", "github", "--type", "bearer", "--service", "github", "--value-stdin"], Some(TOKEN));
    cli.ok(&["cred", "add", "other", "--type", "bearer", "--service", "x", "--value-stdin"], Some(TOKEN));
    let skill_dir = tempfile::tempdir().unwrap();
    let skill = issues_manifest(skill_dir.path(), &["api.github.com".into()]);
    let out = cli.run(&["grant", &skill, "other"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not declare a credential named 'other'"), "{}", stderr(&out));
    // Under the name it declares, it is fine.
    cli.ok(&["grant", &skill, "other", "--as", "github"], None);
}
