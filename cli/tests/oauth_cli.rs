//! `skillbox oauth login` against a real authorization server on loopback, with the browser
//! step scripted (an HTTP client following the redirect), then two `skillbox run` processes
//! sharing the vault after the token expired: one refresh between them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use secrecy::ExposeSecret;
use skillbox_runtime::vault::{CredentialRef, MasterKeySource, SecretValue, Vault};
use skillbox_tests::oauth::{CLIENT_ID, CLIENT_SECRET, OAuthServer};

const MASTER_KEY: &str = "6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f";

fn skillbox(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skillbox"));
    command
        .env("SKILLBOX_VAULT", dir.join("vault.db"))
        .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
        .env("SKILLBOX_CACHE_DIR", dir.join("cache"))
        .env_remove("SKILLBOX_KEY_FILE")
        .env_remove("SKILLBOX_PASSPHRASE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// `github-issues` with its `github` credential declared `oauth2` for the server's host.
fn manifest(dir: &Path, server: &OAuthServer) -> PathBuf {
    let component = skillbox_tests::GITHUB_ISSUES_COMPONENT;
    let path = dir.join("skill.toml");
    std::fs::write(
        &path,
        format!(
            "[skill]\nname = \"github-issues\"\nversion = \"0.1.0\"\ncomponent = \"{component}\"\n\
             [[credentials]]\nname = \"github\"\nkind = \"oauth2\"\nhosts = [\"{}\"]\n",
            server.server.host()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_login_then_two_processes_share_one_refresh() {
    let (server, _) = OAuthServer::start(Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = skillbox(dir.path()).args(["vault", "init"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The login: the URL comes on stderr; the "browser" follows it to the loopback callback.
    let base = server.server.base_url();
    let mut login = skillbox(dir.path())
        .args(["oauth", "login", "github", "--client-id", CLIENT_ID, "--client-secret-stdin"])
        .args(["--auth-url", &format!("{base}/authorize"), "--token-url", &server.token_url()])
        .args(["--scope", "repo", "--allow-http-loopback"])
        .spawn()
        .unwrap();
    login.stdin.take().unwrap().write_all(CLIENT_SECRET.as_bytes()).unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "login ended before printing a URL");
        if line.starts_with("http://") {
            break line.trim().to_owned();
        }
    };
    assert!(url.contains("code_challenge=") && url.contains("code_challenge_method=S256"), "{url}");
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Signed in"));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(login.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("signed in"), "{rest}");
    assert_eq!(server.issued("authorization_code"), 1);

    // What was stored: the server's live refresh token, the endpoints and client.
    let vault = Vault::open(&dir.path().join("vault.db"), &MasterKeySource::Hex(MASTER_KEY.to_owned().into())).unwrap();
    let SecretValue::OAuth2(token) = vault.reveal(&CredentialRef::new("github"), "test", None).unwrap() else {
        panic!("not an oauth2 value")
    };
    let stored = token.refresh_token.as_ref().unwrap().expose_secret().to_owned();
    assert!(server.live_refresh_tokens().contains(&stored), "the stored refresh token is one the server issued");
    assert_eq!(token.auth_url.as_deref(), Some(format!("{base}/authorize").as_str()));
    assert_eq!(token.scopes, ["repo"]);
    drop(vault);

    // The token lives 2 s: let it expire, then two processes use it at once.
    let skill = manifest(dir.path(), &server);
    let out = skillbox(dir.path()).args(["grant", "github-issues", "github"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Tokens issued from now on live an hour: one refresh serves both processes.
    server.state.lock().unwrap().ttl = Duration::from_secs(3600);
    let input = serde_json::json!({ "owner": "o", "repo": "r", "base_url": base }).to_string();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            skillbox(dir.path())
                .args(["run", skill.to_str().unwrap(), "--allow-http-loopback", "--input", &input])
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"issues":[]}"#);
    }
    assert_eq!(server.issued("refresh_token"), 1, "two processes, one refresh");
}
