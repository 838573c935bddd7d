//! OAuth 2 on the host, against a real authorization server on loopback
//! (`skillbox_tests::oauth`): the `github-issues` sample, declared with an `oauth2` credential,
//! keeps working as its access tokens expire, is refreshed once however many invocations need
//! it, survives refresh-token rotation and a provider-side revocation (`401`), and stops with
//! a clear message on `invalid_grant`. The guest never holds either token. The same holds for
//! a standard wasi:http skill (`wasi-http-probe`) whose `transparent` credential is `oauth2`.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use skillbox_runtime::vault::{AuditAction, AuditQuery, CredentialRef, SecretValue, Vault};
use skillbox_runtime::{Error, Runtime, RuntimeConfig, Skill};
use skillbox_tests::oauth::{CLIENT_ID, CLIENT_SECRET, OAuthServer};
use skillbox_tests::{TestVault, json};

const SKILL: &str = "github-issues";

/// `github-issues` under a manifest that declares its `github` credential as `oauth2`, for the
/// authorization server's host.
fn manifest(server: &OAuthServer) -> (tempfile::TempDir, std::path::PathBuf) {
    skillbox_tests::temp_skill(&format!(
        "[skill]\nname = \"{SKILL}\"\nversion = \"0.1.0\"\ncomponent = \"{{component:{SKILL}}}\"\n\
         [[credentials]]\nname = \"github\"\nkind = \"oauth2\"\nhosts = [\"{}\"]\n",
        server.server.host()
    ))
}

/// A vault holding `github` as an OAuth 2 credential whose access token has already expired.
fn vault_with(server: &OAuthServer, refresh_token: &str) -> TestVault {
    fill(TestVault::new(), server, refresh_token)
}

/// `vault`, holding `github` as an OAuth 2 credential whose access token has already expired.
fn fill(vault: TestVault, server: &OAuthServer, refresh_token: &str) -> TestVault {
    let value = json!({
        "access_token": "at_expired_before_the_test_began",
        "expires_at": 1,
        "refresh_token": refresh_token,
        "token_url": server.token_url(),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    });
    vault.add("github", "oauth2", &value.to_string());
    vault.grant(SKILL, "github", None);
    vault
}

fn input(server: &OAuthServer) -> String {
    json!({ "owner": "o", "repo": "r", "base_url": server.server.base_url() }).to_string()
}

async fn call(skill: &Skill, server: &OAuthServer) -> Result<Value, Error> {
    skill.invoke(&input(server)).await.map(|out| json(&out.json))
}

fn stored(vault: &Vault) -> skillbox_runtime::vault::Token {
    match vault.reveal(&CredentialRef::new("github"), "test", None).unwrap() {
        SecretValue::OAuth2(token) => token,
        other => panic!("not oauth2: {:?}", other.kind()),
    }
}

#[tokio::test]
async fn a_skill_keeps_working_across_several_expiries_without_seeing_a_token() {
    // Tokens live 1 s, well inside the 5-minute margin: every call refreshes.
    let (server, refresh) = OAuthServer::start(Duration::from_secs(1)).await;
    let vault = vault_with(&server, &refresh);
    let (_dir, path) = manifest(&server);
    let skill = vault.runtime().load(&path).unwrap();
    for round in 1..=3 {
        let out = skill.invoke(&input(&server)).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(json(&out.json), json!({ "issues": [] }));
        let token = stored(&vault.vault);
        for secret in [token.access_token.expose_secret(), &refresh] {
            assert!(!out.json.contains(secret) && !String::from_utf8_lossy(&out.stdout).contains(secret));
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(server.issued("refresh_token"), 3);
    let rows = vault.vault.audit_list(&AuditQuery { action: Some(AuditAction::Refresh), ..AuditQuery::default() });
    assert_eq!(rows.unwrap().len(), 3, "each refresh is audited");
    let all = serde_json::to_string(&vault.vault.audit_list(&AuditQuery::default()).unwrap()).unwrap();
    assert!(!all.contains(&refresh) && !all.contains("at_"), "no token in any audit row");
}

#[tokio::test]
async fn fifty_concurrent_invocations_cause_exactly_one_refresh() {
    let (server, refresh) = OAuthServer::start(Duration::from_secs(3600)).await;
    let vault = vault_with(&server, &refresh);
    let (_dir, path) = manifest(&server);
    let skill = vault.runtime().load(&path).unwrap();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (skill, server) = (skill.clone(), server.clone());
            tokio::spawn(async move { call(&skill, &server).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), json!({ "issues": [] }));
    }
    assert_eq!(server.issued("refresh_token"), 1);
}

#[tokio::test]
async fn two_vault_handles_with_their_own_refreshers_cause_one_refresh() {
    let (server, refresh) = OAuthServer::start(Duration::from_secs(3600)).await;
    two_handles_one_refresh(vault_with(&server, &refresh), server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_postgres_store_cause_one_refresh() {
    let Some(vault) = TestVault::postgres("two_hosts_on_one_postgres_store_cause_one_refresh") else { return };
    let (server, refresh) = OAuthServer::start(Duration::from_secs(3600)).await;
    two_handles_one_refresh(fill(vault, &server, &refresh), server).await;
}

/// Two runtimes, each with its own vault connection(s) and refresher (as two processes or
/// hosts have), call at once: the vault lease and the re-read under it make the second find
/// the first's token. (cli/tests/oauth_cli.rs does the same with two `skillbox` processes.)
async fn two_handles_one_refresh(first: TestVault, server: OAuthServer) {
    let second = Arc::new(first.open_again());
    let (_dir, path) = manifest(&server);
    let mut config = RuntimeConfig::default();
    config.egress.allow_http_loopback = true;
    let other = Runtime::with_vault(config, second, Arc::new(skillbox_runtime::DenyAll)).unwrap();
    let skills = [first.runtime().load(&path).unwrap(), other.load(&path).unwrap()];
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (skill, server) = (skills[i % 2].clone(), server.clone());
            tokio::spawn(async move { call(&skill, &server).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), json!({ "issues": [] }));
    }
    assert_eq!(server.issued("refresh_token"), 1);
    assert!(first.vault.audit_verify().unwrap().is_ok());
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_and_used_next_time() {
    let (server, refresh) = OAuthServer::start(Duration::from_secs(1)).await;
    server.state.lock().unwrap().rotate_refresh_tokens = true;
    let vault = vault_with(&server, &refresh);
    let (_dir, path) = manifest(&server);
    let skill = vault.runtime().load(&path).unwrap();
    call(&skill, &server).await.unwrap();
    let live = server.live_refresh_tokens();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0], refresh, "the server rotated it");
    let token = stored(&vault.vault);
    assert_eq!(token.refresh_token.as_ref().unwrap().expose_secret(), live[0], "the rotated token is persisted");
    // The old one is dead; the next refresh must use the stored new one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    call(&skill, &server).await.expect("refreshed with the rotated token");
    assert_eq!(server.issued("refresh_token"), 2);
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries() {
    let (server, refresh) = OAuthServer::start(Duration::from_secs(3600)).await;
    let vault = vault_with(&server, &refresh);
    let (_dir, path) = manifest(&server);
    let skill = vault.runtime().load(&path).unwrap();
    call(&skill, &server).await.unwrap();
    assert_eq!(server.issued("refresh_token"), 1);
    // The provider revokes the (unexpired) token: the next request gets a 401, the host
    // refreshes and sends it again.
    server.revoke_access_tokens();
    assert_eq!(call(&skill, &server).await.unwrap(), json!({ "issues": [] }));
    assert_eq!(server.issued("refresh_token"), 2);
}

#[tokio::test]
async fn invalid_grant_fails_the_call_with_what_to_run() {
    let (server, refresh) = OAuthServer::start(Duration::from_secs(3600)).await;
    server.state.lock().unwrap().invalid_grant = true;
    let vault = vault_with(&server, &refresh);
    let (_dir, path) = manifest(&server);
    let skill = vault.runtime().load(&path).unwrap();
    let error = call(&skill, &server).await.unwrap_err().to_string();
    assert!(error.contains("invalid_grant") && error.contains("skillbox oauth login github"), "{error}");
    assert!(!error.contains(&refresh));
    // The credential now says so, and `cred due` lists it.
    let info = vault.vault.show(&CredentialRef::new("github")).unwrap().info;
    assert!(info.needs_reauth.as_deref().is_some_and(|r| r.contains("invalid_grant")), "{:?}", info.needs_reauth);
    assert!(vault.vault.due(Duration::from_secs(0)).unwrap().iter().any(|d| d.credential.name == "github"));
}

#[tokio::test]
async fn client_credentials_are_fetched_by_the_host() {
    let (server, _) = OAuthServer::start(Duration::from_secs(3600)).await;
    let vault = TestVault::new();
    let value = json!({ "token_url": server.token_url(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET });
    vault.add("github", "oauth2", &value.to_string());
    vault.grant(SKILL, "github", None);
    let (_dir, path) = manifest(&server);
    let skill = vault.runtime().load(&path).unwrap();
    for _ in 0..3 {
        assert_eq!(call(&skill, &server).await.unwrap(), json!({ "issues": [] }));
    }
    assert_eq!(server.issued("client_credentials"), 1, "fetched once, then cached in the vault");
}

/// The `wasi-http-probe` (an unmodified wasi:http client) on a vault holding its transparent
/// `token` as an OAuth 2 credential whose access token is unexpired by time but unknown to
/// the provider (revoked there), granted for the authorization server's host.
fn transparent_probe(server: &OAuthServer, refresh_token: &str) -> (TestVault, Skill) {
    let vault = TestVault::new();
    let value = json!({
        "access_token": "at_revoked_by_the_provider",
        "expires_in": 3600,
        "refresh_token": refresh_token,
        "token_url": server.token_url(),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    });
    vault.add("token", "oauth2", &value.to_string());
    vault.grant(PROBE, "token", Some(&[&server.server.host()]));
    let skill = vault.runtime().load(skillbox_tests::WASI_HTTP_PROBE).expect("probe loads");
    (vault, skill)
}

const PROBE: &str = "wasi-http-probe";

/// The `Authorization` headers the provider's resource (anything but `/token`) received.
fn resource_auth(server: &OAuthServer) -> Vec<String> {
    let received = server.server.received();
    let resource = received.iter().filter(|r| !r.target.starts_with("/token"));
    resource.map(|r| r.header("authorization").unwrap_or_default().to_owned()).collect()
}

fn stored_token(vault: &Vault) -> skillbox_runtime::vault::Token {
    match vault.reveal(&CredentialRef::new("token"), "test", None).unwrap() {
        SecretValue::OAuth2(token) => token,
        other => panic!("not oauth2: {:?}", other.kind()),
    }
}

#[tokio::test]
async fn a_401_to_a_transparent_wasi_http_request_refreshes_once_and_resends_it_once() {
    let (server, refresh) = OAuthServer::start(Duration::from_secs(3600)).await;
    let (vault, skill) = transparent_probe(&server, &refresh);
    let base = server.server.base_url();

    // The first request gets a 401 for the revoked token: the host refreshes once and sends it
    // again; the second request uses the new token from the start.
    let input = json!({ "requests": [
        { "method": "POST", "url": format!("{base}/data"), "body": "the same body twice" },
        { "url": format!("{base}/more") },
    ]});
    let out = json(&skill.invoke(&input.to_string()).await.expect("probe runs").json);
    let results = out["results"].as_array().unwrap();
    for result in results {
        assert_eq!(result["status"], 200, "{out}");
        assert_eq!(result["body"], "[]", "{out}");
    }
    assert_eq!(server.issued("refresh_token"), 1, "exactly one refresh");
    let token = stored_token(&vault.vault);
    let new = token.access_token.expose_secret().to_owned();
    assert_ne!(new, "at_revoked_by_the_provider", "the stored value has the new token");
    assert!(server.state.lock().unwrap().access.contains_key(&new), "and the provider issued it");
    assert_eq!(
        resource_auth(&server),
        ["Bearer at_revoked_by_the_provider".to_owned(), format!("Bearer {new}"), format!("Bearer {new}")]
    );
    let resent: Vec<_> = server.server.received().into_iter().filter(|r| r.target == "/data").collect();
    assert_eq!(resent.len(), 2);
    assert!(resent.iter().all(|r| r.method == "POST" && r.body == b"the same body twice"), "the same request");
    let text = out.to_string();
    for secret in [new.as_str(), "at_revoked_by_the_provider", &refresh] {
        assert!(!text.contains(secret), "the guest saw a token");
    }

    // Audited as for http.send: one forced refresh, and a use row per request sent.
    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    let refreshes: Vec<_> = rows.iter().filter(|r| r.action == AuditAction::Refresh).collect();
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].detail["forced"], true);
    let mut statuses: Vec<_> = rows
        .iter()
        .filter(|r| r.action == AuditAction::Use && r.detail["operation"] == "wasi:http")
        .map(|r| r.detail["status"].as_u64().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 401]);
    let all = serde_json::to_string(&rows).unwrap();
    assert!(!all.contains(&refresh) && !all.contains(&new), "no token in any audit row");

    // A 401 to the resent request goes to the guest: no second refresh, no loop. (New tokens
    // are born expired, so the provider refuses the refreshed one too.)
    server.state.lock().unwrap().ttl = Duration::ZERO;
    server.revoke_access_tokens();
    let before = resource_auth(&server).len();
    let input = json!({ "requests": [{ "url": format!("{base}/data") }] });
    let out = json(&skill.invoke(&input.to_string()).await.expect("probe runs").json);
    assert_eq!(out["results"][0]["status"], 401, "{out}");
    assert_eq!(server.issued("refresh_token"), 2, "one refresh for the request");
    let sent = &resource_auth(&server)[before..];
    assert_eq!(sent.len(), 2, "sent, then sent once more: {sent:?}");
    let newer = stored_token(&vault.vault).access_token.expose_secret().to_owned();
    assert_eq!(sent, [format!("Bearer {new}"), format!("Bearer {newer}")]);
    assert!(!out.to_string().contains(&newer));
}

#[tokio::test]
async fn invalid_grant_after_a_wasi_http_401_fails_the_request_and_marks_needs_reauth() {
    let (server, refresh) = OAuthServer::start(Duration::from_secs(3600)).await;
    server.state.lock().unwrap().invalid_grant = true;
    let (vault, skill) = transparent_probe(&server, &refresh);
    let input = json!({ "requests": [{ "url": format!("{}/data", server.server.base_url()) }] });
    let out = json(&skill.invoke(&input.to_string()).await.expect("probe runs").json);
    // As http.send: the request fails with what to run, rather than handing back the 401.
    let error = out["results"][0]["error"].as_str().unwrap_or_else(|| panic!("not an error: {out}"));
    assert!(error.contains("invalid_grant") && error.contains("skillbox oauth login token"), "{error}");
    assert!(!out.to_string().contains(&refresh));
    assert_eq!(resource_auth(&server).len(), 1, "not sent again");
    let info = vault.vault.show(&CredentialRef::new("token")).unwrap().info;
    assert!(info.needs_reauth.as_deref().is_some_and(|r| r.contains("invalid_grant")), "{:?}", info.needs_reauth);
}

#[tokio::test]
async fn a_401_to_a_transparent_bearer_credential_is_not_retried() {
    let (server, _) = OAuthServer::start(Duration::from_secs(3600)).await;
    let vault = TestVault::new();
    vault.add("token", "bearer", "at_a_static_token_the_provider_does_not_know");
    vault.grant(PROBE, "token", Some(&[&server.server.host()]));
    let skill = vault.runtime().load(skillbox_tests::WASI_HTTP_PROBE).unwrap();
    let input = json!({ "requests": [{ "url": format!("{}/data", server.server.base_url()) }] });
    let out = json(&skill.invoke(&input.to_string()).await.expect("probe runs").json);
    assert_eq!(out["results"][0]["status"], 401, "{out}");
    assert_eq!(resource_auth(&server).len(), 1);
    assert_eq!(server.state.lock().unwrap().requests, 0, "no token request");
}
