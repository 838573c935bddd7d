//! Credentials across the Wasm boundary, end to end: real vault, real
//! components, real HTTP servers on loopback. The `attack` module is the
//! issue's attack table, one test per row; each must stay blocked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{Value, json};
use skillbox_runtime::vault::{AuditAction, AuditQuery, CredentialRef, Environment, NewGrant};
use skillbox_runtime::{Approval, ApprovalRequest, Approver, Error, InvocationContext, Skill};
use skillbox_tests::server::{Received, Reply, TestServer};
use skillbox_tests::{TestVault, json, temp_skill};

const TOKEN: &str = "ghp_TestToken0123456789abcdefABCDEF4242";

/// A GitHub-like server that answers only `Authorization: Bearer TOKEN`.
async fn github_server() -> TestServer {
    TestServer::start("127.0.0.1", |req: &Received| {
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Reply::json(401, json!({ "message": "Bad credentials" }));
        }
        if req.target == "/repos/o/r/issues" {
            Reply::json(
                200,
                json!([{ "number": 1, "title": "First", "state": "open" }, { "number": 2, "title": "Second" }]),
            )
        } else {
            Reply::json(404, json!({ "message": "Not Found" }))
        }
    })
    .await
}

/// A server that echoes the request back: headers and body in its body (raw
/// and base64), and the Authorization header reflected as response headers.
async fn echo_server() -> TestServer {
    TestServer::start("127.0.0.1", |req: &Received| {
        let dump = format!("{} {}\n{:?}\n{}", req.method, req.target, req.headers, String::from_utf8_lossy(&req.body));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&dump);
        let mut reply = Reply::json(200, json!({ "echo": dump, "echo_b64": b64 }));
        if let Some(auth) = req.header("authorization") {
            reply.headers.push(("x-echo-authorization".into(), auth.to_owned()));
            reply.headers.push(("x-echo-b64".into(), base64::engine::general_purpose::STANDARD.encode(auth)));
        }
        reply
    })
    .await
}

fn issues_input(server: &TestServer) -> String {
    json!({ "owner": "o", "repo": "r", "base_url": server.base_url() }).to_string()
}

fn encodings(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    vec![secret.to_owned(), STANDARD.encode(secret), URL_SAFE_NO_PAD.encode(secret), hex::encode(secret)]
}

fn assert_no_secret(text: &str, secret: &str) {
    for form in encodings(secret) {
        assert!(!text.contains(&form), "secret (as {form:?}) found in: {text}");
    }
}

#[tokio::test]
async fn github_issues_with_a_granted_token() {
    let server = github_server().await;
    let vault = TestVault::new();
    vault.add("github", "bearer", TOKEN);
    vault.grant("github-issues", "github", Some(&[&server.host()]));
    let skill = vault.runtime().load(skillbox_tests::GITHUB_ISSUES).unwrap();

    let output = skill.invoke(&issues_input(&server)).await.unwrap();
    assert_eq!(
        json(&output.json),
        json!({ "issues": [{ "number": 1, "title": "First" }, { "number": 2, "title": "Second" }] })
    );
    let seen = server.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));

    // The use is audited with the host, and no audit row holds the token.
    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    let used = rows.iter().find(|r| r.action == AuditAction::Use).expect("a use row");
    assert_eq!(used.skill.as_deref(), Some("github-issues"));
    assert_eq!(used.detail["operation"], "http.send");
    assert_eq!(used.detail["host"], server.host());
    assert!(rows.iter().any(|r| r.action == AuditAction::Pin), "first use pins the digest");
    assert_no_secret(&serde_json::to_string(&rows).unwrap(), TOKEN);
}

#[tokio::test]
async fn after_ungrant_the_run_is_denied_naming_skillbox_grant() {
    let server = github_server().await;
    let vault = TestVault::new();
    vault.add("github", "bearer", TOKEN);
    vault.grant("github-issues", "github", Some(&[&server.host()]));
    let skill = vault.runtime().load(skillbox_tests::GITHUB_ISSUES).unwrap();
    skill.invoke(&issues_input(&server)).await.unwrap();

    vault.vault.ungrant("github-issues", "github", Environment::Dev, "default", "test").unwrap();
    let err = skill.invoke(&issues_input(&server)).await.unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    assert!(err.to_string().contains("skillbox grant github-issues github"), "{err}");
    assert_eq!(server.received().len(), 1, "the denied run sent nothing");
}

#[tokio::test]
async fn an_echo_server_cannot_hand_the_token_back() {
    let server = echo_server().await;
    let vault = TestVault::new();
    vault.add("github", "bearer", TOKEN);
    vault.grant("cred-probe", "github", Some(&[&server.host()]));
    let skill = vault.runtime().load(skillbox_tests::CRED_PROBE).unwrap();
    let input =
        json!({ "steps": [{ "send": { "url": format!("{}/anything", server.base_url()) }, "auth": "github" }] });
    let output = skill.invoke(&input.to_string()).await.unwrap();
    let result = &json(&output.json)["results"][0]["ok"];
    assert_eq!(result["status"], 200, "{result}");
    // The server did get the token, and reflected it in body and headers...
    assert_eq!(server.received()[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    // ...but none of it reached the guest or its output.
    assert_no_secret(&output.json, TOKEN);
    assert!(output.json.contains("[REDACTED]"), "the reflected header was replaced: {}", output.json);
}

#[tokio::test]
async fn stripe_charge_sends_the_key_as_basic_auth_user() {
    const KEY: &str = "sk_test_51Hxyz0123456789abcdefSECRET";
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:")));
    let server = TestServer::start("127.0.0.1", move |req: &Received| {
        if req.header("authorization") != Some(expected.as_str()) || req.method != "POST" {
            return Reply::json(401, json!({ "error": { "message": "Invalid API Key" } }));
        }
        let form = String::from_utf8_lossy(&req.body);
        assert!(form.contains("amount=2000") && form.contains("currency=usd"), "{form}");
        Reply::json(200, json!({ "id": "ch_123", "amount": 2000, "currency": "usd", "status": "succeeded" }))
    })
    .await;
    let vault = TestVault::new();
    vault.add("stripe", "api_key", KEY);
    vault.grant("stripe-charge", "stripe", Some(&[&server.host()]));
    let skill = vault.runtime().load(skillbox_tests::STRIPE_CHARGE).unwrap();
    let input = json!({ "amount": 2000, "currency": "usd", "source": "tok_visa", "base_url": server.base_url() });
    let output = skill.invoke(&input.to_string()).await.unwrap();
    assert_eq!(json(&output.json), json!({ "id": "ch_123", "amount": 2000, "currency": "usd", "status": "succeeded" }));
}

#[tokio::test]
async fn webhook_signer_returns_the_reference_hmac() {
    use hmac::{KeyInit, Mac};
    const KEY: &str = "whsec_0123456789abcdefghijklmnopqrstuv";
    let vault = TestVault::new();
    vault.add("webhook-key", "hmac_key", KEY);
    vault.grant("webhook-signer", "webhook-key", None);
    let skill = vault.runtime().load(skillbox_tests::WEBHOOK_SIGNER).unwrap();
    for (algorithm, expected) in [
        ("sha256", {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
            mac.update(b"1700000000.{\"event\":\"paid\"}");
            hex::encode(mac.finalize().into_bytes())
        }),
        ("sha512", {
            let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(KEY.as_bytes()).unwrap();
            mac.update(b"1700000000.{\"event\":\"paid\"}");
            hex::encode(mac.finalize().into_bytes())
        }),
    ] {
        let input = json!({ "payload": "{\"event\":\"paid\"}", "timestamp": 1700000000, "algorithm": algorithm });
        let output = json(&skill.invoke(&input.to_string()).await.unwrap().json);
        assert_eq!(output["signature"], expected);
        assert_eq!(output["header"], format!("t=1700000000,v1={expected}"));
    }
}

/// An approver that answers with `decision` and remembers what it was asked.
#[derive(Debug)]
struct Scripted {
    decision: Approval,
    asked: std::sync::Mutex<Vec<ApprovalRequest>>,
}

impl Approver for Scripted {
    fn approve(&self, request: &ApprovalRequest) -> Approval {
        self.asked.lock().unwrap().push(request.clone());
        self.decision
    }
}

async fn run_with_approver(decision: Approval) -> (Result<skillbox_runtime::Output, Error>, TestVault, Arc<Scripted>) {
    let server = github_server().await;
    let vault = TestVault::new();
    vault.add("github", "bearer", TOKEN);
    let approver = Arc::new(Scripted { decision, asked: Default::default() });
    // No grant: the operator widens hosts via the manifest for this test only.
    let (_dir, manifest) = temp_skill(&format!(
        "[skill]\nname = \"github-issues\"\nversion = \"0.1.0\"\ncomponent = \"{{component:github-issues}}\"\n\
         [[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"{}\"]\npurpose = \"read issues\"\n",
        server.host()
    ));
    let skill = vault.runtime_with(approver.clone()).load(&manifest).unwrap();
    let result = skill.invoke(&issues_input(&server)).await;
    (result, vault, approver)
}

#[tokio::test]
async fn approval_once_allows_this_run_only() {
    let (result, vault, approver) = run_with_approver(Approval::Once).await;
    assert!(result.unwrap().json.contains("First"));
    let asked = approver.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].skill.as_str(), asked[0].credential.as_str()), ("github-issues", "github"));
    assert_eq!(asked[0].purpose, "read issues");
    assert!(vault.vault.grants(&Default::default()).unwrap().is_empty(), "once leaves no grant");
}

#[tokio::test]
async fn approval_always_records_a_pinned_grant() {
    let (result, vault, _) = run_with_approver(Approval::Always).await;
    assert!(result.unwrap().json.contains("First"));
    let grants = vault.vault.grants(&Default::default()).unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].skill, "github-issues");
    assert_eq!(grants[0].skill_digest.as_deref().map(str::len), Some(64));
    // What was shown is what is pinned: the hosts in the approval request.
    assert!(grants[0].policy_digest().is_some());
    assert_eq!(grants[0].pinned_hosts().unwrap().len(), 1);
}

/// A manifest that raises its limits or lets SQL write, with the same component, is a
/// changed policy: the grant pinned on first use refuses it until an operator grants again.
#[tokio::test]
async fn a_manifest_that_raises_its_limits_is_refused_until_granted_again() {
    let server = github_server().await;
    let vault = TestVault::new();
    vault.add("github", "bearer", TOKEN);
    vault.grant("github-issues", "github", Some(&[&server.host()]));
    let manifest = |extra: &str| {
        temp_skill(&format!(
            "[skill]\nname = \"github-issues\"\nversion = \"0.1.0\"\ncomponent = \"{{component:github-issues}}\"\n\
             {extra}[[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"api.github.com\"]\n"
        ))
    };
    let runtime = vault.runtime();
    let (_a, original) = manifest("");
    runtime.load(&original).unwrap().invoke(&issues_input(&server)).await.unwrap(); // pins
    for (extra, changed) in [
        ("[limits]\nmemory = \"1GiB\"\n", "limits.memory"),
        ("[limits]\ntimeout = \"10m\"\n", "limits.timeout_ms"),
        ("[sql]\nwrite = true\n", "sql.write"),
        ("[network]\nallow = [\"collector.example\"]\n", "network.allow"),
    ] {
        let (_d, updated) = manifest(extra);
        let skill = runtime.load(&updated).unwrap();
        let err = skill.invoke(&issues_input(&server)).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Denied { .. }), "{changed}: {text}");
        assert!(text.contains(&format!("{changed}: ")), "{changed}: {text}");
    }
    assert_eq!(server.received().len(), 1, "only the approved run sent anything");
    // The same manifest again is still fine.
    runtime.load(&original).unwrap().invoke(&issues_input(&server)).await.unwrap();
}

#[tokio::test]
async fn approval_denied_is_a_denial() {
    let (result, _, approver) = run_with_approver(Approval::Deny).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    assert!(err.to_string().contains("skillbox grant"), "{err}");
    assert_eq!(approver.asked.lock().unwrap().len(), 1);
}

/// `path` with a custom section appended: a valid component with another digest.
fn tampered_copy(component: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"tampered";
    let payload = b"a different build";
    bytes.push(0); // custom section id
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let path = dir.join("tampered.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn a_different_component_under_the_same_name_is_not_granted() {
    let server = github_server().await;
    let vault = TestVault::new();
    vault.add("github", "bearer", TOKEN);
    vault.grant("github-issues", "github", Some(&[&server.host()]));
    let runtime = vault.runtime();
    let genuine = runtime.load(skillbox_tests::GITHUB_ISSUES).unwrap();
    genuine.invoke(&issues_input(&server)).await.unwrap(); // pins the digest (trust on first use)

    let dir = tempfile::tempdir().unwrap();
    let copy = tampered_copy(skillbox_tests::GITHUB_ISSUES_COMPONENT, dir.path());
    let manifest = std::fs::read_to_string(format!("{}/skill.toml", skillbox_tests::GITHUB_ISSUES))
        .unwrap()
        .replace("../target/wasm32-wasip2/release/github_issues.wasm", copy.to_str().unwrap());
    std::fs::write(dir.path().join("skill.toml"), manifest).unwrap();
    let impostor = runtime.load(dir.path()).unwrap();
    assert_ne!(impostor.digest(), genuine.digest());

    let err = impostor.invoke(&issues_input(&server)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Denied { .. }), "{text}");
    assert!(text.contains(genuine.digest()) && text.contains(impostor.digest()), "shows both digests: {text}");
    assert!(text.contains("skillbox grant"), "{text}");
    assert_eq!(server.received().len(), 1, "the impostor sent nothing");
}

#[tokio::test]
async fn an_any_digest_grant_accepts_any_build() {
    let server = github_server().await;
    let vault = TestVault::new();
    vault.add("github", "bearer", TOKEN);
    let mut grant = NewGrant::new("github-issues", CredentialRef::new("github"));
    grant.any_digest = true;
    grant.hosts = Some(vec![server.host()]);
    vault.vault.grant(&grant, "test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = tampered_copy(skillbox_tests::GITHUB_ISSUES_COMPONENT, dir.path());
    // The same manifest (so the same policy) over another build.
    let manifest = std::fs::read_to_string(format!("{}/skill.toml", skillbox_tests::GITHUB_ISSUES))
        .unwrap()
        .replace("../target/wasm32-wasip2/release/github_issues.wasm", copy.to_str().unwrap());
    let (_d, manifest) = temp_skill(&manifest);
    let runtime = vault.runtime();
    for skill in [runtime.load(skillbox_tests::GITHUB_ISSUES).unwrap(), runtime.load(&manifest).unwrap()] {
        assert!(skill.invoke(&issues_input(&server)).await.unwrap().json.contains("First"));
    }
}

/// The attack table: each row must stay blocked.
mod attack {
    use super::*;

    /// Runs cred-probe with `steps` and returns each step's result.
    async fn probe(skill: &Skill, steps: Value) -> Vec<Value> {
        probe_as(skill, steps, &InvocationContext::default()).await
    }

    async fn probe_as(skill: &Skill, steps: Value, context: &InvocationContext) -> Vec<Value> {
        let output = skill.invoke_with(&json!({ "steps": steps }).to_string(), context).await.unwrap();
        json(&output.json)["results"].as_array().unwrap().clone()
    }

    fn case(result: &Value) -> &str {
        result["error"]["case"].as_str().unwrap_or_else(|| panic!("expected an error, got {result}"))
    }

    fn open(name: &str) -> Value {
        json!([{ "open": name }])
    }

    /// A vault holding `github` granted to cred-probe, hosts = the test server.
    async fn granted() -> (TestVault, Skill, TestServer) {
        let server = echo_server().await;
        let vault = TestVault::new();
        vault.add("github", "bearer", TOKEN);
        vault.grant("cred-probe", "github", Some(&[&server.host()]));
        let skill = vault.runtime().load(skillbox_tests::CRED_PROBE).unwrap();
        (vault, skill, server)
    }

    #[tokio::test]
    async fn undeclared_name() {
        let (_vault, skill, _) = granted().await;
        let results = probe(&skill, open("aws")).await;
        assert_eq!(case(&results[0]), "not-declared");
        assert!(results[0]["error"]["message"].as_str().unwrap().contains("[[credentials]]"));
    }

    #[tokio::test]
    async fn declared_but_not_granted() {
        let (vault, skill, _) = granted().await;
        vault.add("other", "bearer", "another-token-0123456789abcdef");
        let results = probe(&skill, open("other")).await;
        assert_eq!(case(&results[0]), "not-granted");
        assert!(results[0]["error"]["message"].as_str().unwrap().contains("skillbox grant cred-probe other"));
    }

    #[tokio::test]
    async fn revoked() {
        let (vault, skill, _) = granted().await;
        vault.vault.revoke(&CredentialRef::new("github"), "leaked in a log", "test").unwrap();
        assert_eq!(case(&probe(&skill, open("github")).await[0]), "revoked");
    }

    #[tokio::test]
    async fn expired_grant() {
        let server = echo_server().await;
        let vault = TestVault::new();
        vault.add("github", "bearer", TOKEN);
        let mut grant = NewGrant::new("cred-probe", CredentialRef::new("github"));
        grant.expires_at = Some(SystemTime::now() + Duration::from_secs(1));
        grant.hosts = Some(vec![server.host()]);
        vault.vault.grant(&grant, "test").unwrap();
        let skill = vault.runtime().load(skillbox_tests::CRED_PROBE).unwrap();
        assert!(probe(&skill, open("github")).await[0]["ok"].is_object(), "valid before expiry");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(case(&probe(&skill, open("github")).await[0]), "expired");
    }

    #[tokio::test]
    async fn wrong_environment() {
        let (_vault, skill, _) = granted().await;
        let production = InvocationContext { environment: "production".into(), ..Default::default() };
        assert_eq!(case(&probe_as(&skill, open("github"), &production).await[0]), "not-granted");
    }

    #[tokio::test]
    async fn another_owners_credential() {
        let server = echo_server().await;
        let vault = TestVault::new();
        let alice = CredentialRef::new("github").owner("alice");
        vault.add_to(alice.clone(), "bearer", TOKEN);
        let mut grant = NewGrant::new("cred-probe", alice);
        grant.hosts = Some(vec![server.host()]);
        vault.vault.grant(&grant, "test").unwrap();
        let skill = vault.runtime().load(skillbox_tests::CRED_PROBE).unwrap();
        let as_alice = InvocationContext { user: "alice".into(), ..Default::default() };
        let as_bob = InvocationContext { user: "bob".into(), ..Default::default() };
        assert!(probe_as(&skill, open("github"), &as_alice).await[0]["ok"].is_object());
        assert_eq!(case(&probe_as(&skill, open("github"), &as_bob).await[0]), "not-granted");
    }

    #[tokio::test]
    async fn host_not_allowed() {
        let (_vault, skill, server) = granted().await;
        let elsewhere = echo_server().await;
        let steps = json!([{ "send": { "url": format!("{}/steal", elsewhere.base_url()) }, "auth": "github" }]);
        let results = probe(&skill, steps).await;
        assert_eq!(case(&results[0]), "host-not-allowed");
        assert!(elsewhere.received().is_empty() && server.received().is_empty());
    }

    #[tokio::test]
    async fn credential_sent_to_an_allowed_host_that_is_not_its_own() {
        let server = echo_server().await;
        let unrelated = echo_server().await;
        let vault = TestVault::new();
        vault.add("github", "bearer", TOKEN);
        vault.grant("cred-probe", "github", Some(&[&server.host()]));
        // The manifest lets the skill reach `unrelated` without credentials...
        let (_d, manifest) = temp_skill(&format!(
            "[skill]\nname = \"cred-probe\"\nversion = \"0.1.0\"\ncomponent = \"{{component:cred-probe}}\"\n\
             [[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"api.github.com\"]\n\
             [network]\nallow = [\"{}\"]\n",
            unrelated.host()
        ));
        let skill = vault.runtime().load(&manifest).unwrap();
        let url = format!("{}/x", unrelated.base_url());
        let results =
            probe(&skill, json!([{ "send": { "url": url } }, { "send": { "url": url }, "auth": "github" }])).await;
        assert_eq!(results[0]["ok"]["status"], 200, "plain request allowed: {}", results[0]);
        // ...but not with the credential, whose hosts are only `server`.
        assert_eq!(case(&results[1]), "host-not-allowed");
        assert_eq!(unrelated.received().len(), 1);
        assert_eq!(unrelated.received()[0].header("authorization"), None);
    }

    #[tokio::test]
    async fn redirect_to_another_host() {
        let other = echo_server().await; // 127.0.0.1, another port: another origin
        let target = format!("{}/landed", other.base_url());
        let redirector = TestServer::start("127.0.0.1", move |_req: &Received| Reply::redirect(&target)).await;
        let vault = TestVault::new();
        vault.add("github", "bearer", TOKEN);
        vault.grant("cred-probe", "github", Some(&[&redirector.host()]));
        let send = json!([{ "send": { "url": format!("{}/start", redirector.base_url()) }, "auth": "github" }]);

        // Not allowed at all: refused.
        let skill = vault.runtime().load(skillbox_tests::CRED_PROBE).unwrap();
        assert_eq!(case(&probe(&skill, send.clone()).await[0]), "host-not-allowed");
        assert!(other.received().is_empty());

        // Allowed for plain requests: followed, without the credential.
        let (_d, manifest) = temp_skill(&format!(
            "[skill]\nname = \"cred-probe\"\nversion = \"0.1.0\"\ncomponent = \"{{component:cred-probe}}\"\n\
             [[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"api.github.com\"]\n\
             [network]\nallow = [\"{}\"]\n",
            other.host()
        ));
        // A wider manifest is a new policy: the operator grants again.
        vault.grant("cred-probe", "github", Some(&[&redirector.host()]));
        let skill = vault.runtime().load(&manifest).unwrap();
        let results = probe(&skill, send).await;
        assert_eq!(results[0]["ok"]["status"], 200, "{}", results[0]);
        assert_eq!(redirector.received()[1].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        assert_eq!(other.received().len(), 1);
        assert_eq!(other.received()[0].header("authorization"), None, "the credential did not follow the redirect");
    }

    #[tokio::test]
    async fn private_and_metadata_addresses() {
        let vault = TestVault::new();
        vault.add("github", "bearer", TOKEN);
        let targets = ["10.0.0.1", "192.168.1.1", "169.254.169.254", "[fd00::1]", "[::ffff:169.254.169.254]"];
        vault.grant("cred-probe", "github", Some(&targets));
        // Even listed in the manifest's allowlist, these addresses are refused.
        let (_d, manifest) = temp_skill(&format!(
            "[skill]\nname = \"cred-probe\"\nversion = \"0.1.0\"\ncomponent = \"{{component:cred-probe}}\"\n\
             [[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"api.github.com\"]\n\
             [network]\nallow = {targets:?}\n"
        ));
        let skill = vault.runtime().load(&manifest).unwrap();
        for target in targets {
            for auth in [None, Some("github")] {
                let url = format!("https://{target}/latest/meta-data/");
                let results = probe(&skill, json!([{ "send": { "url": url }, "auth": auth }])).await;
                assert_eq!(case(&results[0]), "host-not-allowed", "{target} with {auth:?}: {}", results[0]);
            }
        }
    }

    #[tokio::test]
    async fn echo_of_the_auth_header_in_body_and_headers() {
        let (_vault, skill, server) = granted().await;
        let url = format!("{}/echo?x=1", server.base_url());
        let results =
            probe(&skill, json!([{ "send": { "url": url, "method": "POST", "body": "hello" }, "auth": "github" }]))
                .await;
        let response = &results[0]["ok"];
        assert_eq!(response["status"], 200, "{response}");
        let text = response.to_string();
        assert_no_secret(&text, TOKEN);
        // The base64 copy of the whole request was scrubbed where the token sat
        // inside it, whatever its alignment.
        let echoed = json(response["body"].as_str().unwrap());
        let b64 = echoed["echo_b64"].as_str().unwrap();
        assert!(b64.contains("[REDACTED]"), "{b64}");
        for piece in b64.split("[REDACTED]") {
            let piece = piece.trim_end_matches('=');
            let decoded =
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(&piece[..piece.len() / 4 * 4]).unwrap();
            assert_no_secret(&String::from_utf8_lossy(&decoded), TOKEN);
        }
    }

    #[tokio::test]
    async fn a_secret_written_by_the_guest_trips_the_wire() {
        let (vault, skill, server) = granted().await;
        // A guest that somehow learned the token (it cannot, but suppose) may not send it: the
        // invocation ends, nothing goes out, and the tripwire is audited.
        let url = format!("{}/x?t={TOKEN}", server.base_url());
        let input = json!({ "steps": [{ "send": { "url": url }, "auth": "github" }] }).to_string();
        let error = skill.invoke(&input).await.unwrap_err();
        let skillbox_runtime::Error::Tripwire { tripped, .. } = &error else { panic!("expected a tripwire: {error}") };
        assert_eq!(tripped.credential.as_deref(), Some("github"));
        assert!(!format!("{error} {error:?}").contains(TOKEN));
        assert!(server.received().is_empty());
        let rows =
            vault.vault.audit_list(&AuditQuery { action: Some(AuditAction::Tripwire), ..Default::default() }).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].detail["digest"].as_str(), Some(skill.digest()));
        assert!(!serde_json::to_string(&rows).unwrap().contains(TOKEN));
    }

    #[tokio::test]
    async fn hmac_with_a_bearer_token_is_the_wrong_kind() {
        let (_vault, skill, _) = granted().await;
        let results = probe(&skill, json!([{ "hmac": "github", "message": "m" }])).await;
        assert_eq!(case(&results[0]), "wrong-kind");
    }

    #[tokio::test]
    async fn denials_are_audited() {
        let (vault, skill, _) = granted().await;
        probe(&skill, open("aws")).await;
        probe(&skill, open("other")).await;
        let denied =
            vault.vault.audit_list(&AuditQuery { action: Some(AuditAction::Denied), ..Default::default() }).unwrap();
        assert!(denied.len() >= 2, "{denied:?}");
        assert!(denied.iter().all(|r| !r.success && r.skill.as_deref() == Some("cred-probe")));
    }
}

/// Revocation bites mid-run: a credential opened at the start of an invocation is refused at
/// its next use once it has been revoked, ungranted or suspended, whoever changed the vault.
mod mid_run {
    use super::*;

    /// A `cred-probe` manifest that may also reach `server` without a credential.
    fn probe_skill(vault: &TestVault, server: &TestServer) -> (tempfile::TempDir, Skill) {
        let mut grant = NewGrant::new("cred-probe", CredentialRef::new("github"));
        grant.hosts = Some(vec![server.host()]);
        grant.any_digest = true;
        vault.vault.grant(&grant, "test").unwrap();
        let (dir, manifest) = temp_skill(&format!(
            "[skill]\nname = \"cred-probe\"\nversion = \"0.1.0\"\ncomponent = \"{{component:cred-probe}}\"\n\
             [[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"api.github.com\"]\n\
             [network]\nallow = [\"{}\"]\n",
            server.host()
        ));
        (dir, vault.runtime().load(&manifest).unwrap())
    }

    /// Opens the token, makes an unauthenticated request during which the server runs
    /// `change` on the vault, then uses the token again: that use must be refused.
    async fn use_after(change: impl Fn(&TestVault) + Send + Sync + 'static) -> (Value, Vec<Received>, Arc<TestVault>) {
        let vault = Arc::new(TestVault::new());
        vault.add("github", "bearer", TOKEN);
        let in_handler = vault.clone();
        let server = TestServer::start("127.0.0.1", move |req: &Received| {
            if req.target.starts_with("/change") {
                change(&in_handler);
            }
            Reply::json(200, json!({ "ok": true }))
        })
        .await;
        let (_dir, skill) = probe_skill(&vault, &server);
        let steps = json!([
            { "open": "github" },
            { "send": { "url": format!("{}/before", server.base_url()) }, "auth": "github" },
            { "send": { "url": format!("{}/change", server.base_url()) } },
            { "send": { "url": format!("{}/after", server.base_url()) }, "auth": "github" },
        ]);
        let output = skill.invoke(&json!({ "steps": steps }).to_string()).await.unwrap();
        (json(&output.json)["results"].clone(), server.received(), vault)
    }

    fn after_case(results: &Value) -> String {
        assert!(results[1]["ok"]["status"] == 200, "the use before the change worked: {results}");
        results[3]["error"]["case"].as_str().unwrap_or_else(|| panic!("the use after must fail: {results}")).to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_during_the_run_refuses_the_next_use() {
        let (results, received, vault) = use_after(|v| {
            v.vault.revoke(&CredentialRef::new("github"), "leaked mid-run", "test").unwrap();
        })
        .await;
        assert_eq!(after_case(&results), "revoked");
        assert!(!received.iter().any(|r| r.target == "/after"), "nothing went out after the revocation");
        let denied =
            vault.vault.audit_list(&AuditQuery { action: Some(AuditAction::Denied), ..Default::default() }).unwrap();
        assert!(denied.iter().any(|r| r.detail["operation"] == "http.send"), "{denied:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ungrant_by_another_process_refuses_the_next_use() {
        // Another handle on the same file stands in for another process (its own connection).
        let (results, received, _vault) = use_after(|v| {
            let source = skillbox_runtime::vault::MasterKeySource::Hex(v.master_key_hex.clone().into());
            let other = skillbox_runtime::vault::Vault::open(&v.dir.path().join("vault.db"), &source).unwrap();
            other.ungrant("cred-probe", "github", Environment::Dev, "default", "other-host").unwrap();
        })
        .await;
        assert_eq!(after_case(&results), "not-granted");
        assert!(!received.iter().any(|r| r.target == "/after"));
    }
}

/// Per-handle audit: one `release` row per credential handle when the invocation ends, however
/// it ends, with the uses counted, when it was opened and released, and how long it was held.
mod release {
    use super::*;
    use skillbox_runtime::vault::AuditEntry;

    /// The `release` rows so far.
    fn releases(vault: &TestVault) -> Vec<AuditEntry> {
        let query = AuditQuery { action: Some(AuditAction::Release), ..AuditQuery::default() };
        vault.vault.audit_list(&query).unwrap()
    }

    /// The `use` rows so far.
    fn uses(vault: &TestVault) -> Vec<AuditEntry> {
        let query = AuditQuery { action: Some(AuditAction::Use), ..AuditQuery::default() };
        vault.vault.audit_list(&query).unwrap()
    }

    /// Checks the times of a release row: RFC 3339, released after opened, `held_ms` between.
    fn check_times(row: &AuditEntry) {
        let at = |key: &str| {
            let text = row.detail[key].as_str().unwrap_or_else(|| panic!("no {key}: {}", row.detail));
            humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{key} {text:?}: {e}"))
        };
        let (opened, released) = (at("opened_at"), at("released_at"));
        let held = released.duration_since(opened).expect("released after it was opened");
        // The times are written to the millisecond; `held_ms` is measured before rounding.
        let held_ms = row.detail["held_ms"].as_u64().unwrap();
        assert!(held_ms.abs_diff(held.as_millis() as u64) <= 1, "{}", row.detail);
        assert!(released <= row.ts + Duration::from_millis(1), "released before its row was written");
    }

    #[tokio::test]
    async fn a_handle_used_n_times_is_released_once_with_n_uses() {
        let server = echo_server().await;
        let vault = TestVault::new();
        vault.add("github", "bearer", TOKEN);
        vault.grant("cred-probe", "github", Some(&[&server.host()]));
        let skill = vault.runtime().load(skillbox_tests::CRED_PROBE).unwrap();
        const N: usize = 5;
        let send = json!({ "send": { "url": format!("{}/x", server.base_url()) }, "auth": "github" });
        let mut steps = vec![json!({ "open": "github" })];
        steps.extend(std::iter::repeat_n(send, N));
        let out = skill.invoke(&json!({ "steps": steps }).to_string()).await.unwrap();
        assert!(json(&out.json)["results"].as_array().unwrap().iter().all(|r| r["ok"].is_object()), "{}", out.json);
        assert_eq!(server.received().len(), N);

        let rows = releases(&vault);
        assert_eq!(rows.len(), 1, "exactly one release row: {rows:#?}");
        let row = &rows[0];
        assert_eq!(row.detail["uses"], N, "{}", row.detail);
        assert_eq!(row.detail["failed_uses"], 0);
        assert_eq!((row.detail["alias"].as_str(), row.credential_name.as_deref()), (Some("github"), Some("github")));
        assert_eq!(row.detail["handle"], 1);
        assert_eq!(row.detail["transparent"], false);
        // The SDK drops its handles when `run` returns.
        assert_eq!(row.detail["released_by"], "guest");
        assert_eq!((row.skill.as_deref(), row.actor.as_str(), row.success), (Some("cred-probe"), "default", true));
        assert!(row.credential_id.is_some());
        check_times(row);
        // The release comes after every use of the handle.
        assert_eq!(uses(&vault).len(), N);
        assert!(uses(&vault).iter().all(|u| u.id < row.id));

        // Another invocation: its own handle, its own row.
        let steps = json!([{ "send": { "url": format!("{}/y", server.base_url()) }, "auth": "github" }]);
        skill.invoke(&json!({ "steps": steps }).to_string()).await.unwrap();
        let rows = releases(&vault);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].detail["uses"], 1);
        // A skill that opens nothing, or whose open is refused, leaves no release row.
        let refused = skill.invoke(&json!({ "steps": [{ "open": "other" }] }).to_string()).await.unwrap();
        assert!(refused.json.contains("not-granted"), "{}", refused.json);
        assert_eq!(releases(&vault).len(), 2);
        assert_no_secret(&serde_json::to_string(&releases(&vault)).unwrap(), TOKEN);
    }

    #[tokio::test]
    async fn a_timed_out_invocation_still_releases_its_handle() {
        let server = echo_server().await;
        // Accepts connections and never answers: the last request outlives the invocation.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_host = silent.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let vault = TestVault::new();
        vault.add("github", "bearer", TOKEN);
        vault.grant("cred-probe", "github", None);
        let (_d, manifest) = temp_skill(&format!(
            "[skill]\nname = \"cred-probe\"\nversion = \"0.1.0\"\ncomponent = \"{{component:cred-probe}}\"\n\
             [limits]\ntimeout = \"2s\"\n\
             [[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"{}\", \"{silent_host}\"]\n",
            server.host()
        ));
        let skill = vault.runtime().load(&manifest).unwrap();
        let send = |base: String| json!({ "send": { "url": format!("{base}/x") }, "auth": "github" });
        let mut steps = vec![send(server.base_url()); 3];
        steps.push(send(format!("http://{silent_host}")));
        let err = skill.invoke(&json!({ "steps": steps }).to_string()).await.unwrap_err();
        assert!(matches!(err, Error::TimeLimit { .. }), "{err}");

        let rows = releases(&vault);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        // Three uses were recorded; the request cut off by the deadline never completed.
        assert_eq!(rows[0].detail["uses"], 3, "{}", rows[0].detail);
        assert_eq!(rows[0].detail["released_by"], "end-of-invocation");
        check_times(&rows[0]);
        assert!(rows[0].detail["held_ms"].as_u64().unwrap() >= 1000, "held until the deadline: {}", rows[0].detail);
    }

    #[tokio::test]
    async fn a_tripwire_still_releases_the_handle() {
        let vault = TestVault::new();
        let secret = "tok_release_on_tripwire_7c2b9e41d0";
        vault.add("token", "bearer", secret);
        vault.grant("exfiltrate", "token", Some(&["127.0.0.1"]));
        let skill = vault.runtime().load(skillbox_tests::EXFILTRATE).unwrap();
        let input = json!({ "mode": "log-known", "known_secret": secret });
        let err = skill.invoke(&input.to_string()).await.unwrap_err();
        assert!(matches!(err, Error::Tripwire { .. }), "{err}");
        let rows = releases(&vault);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert_eq!((rows[0].detail["alias"].as_str(), rows[0].detail["uses"].as_u64()), (Some("token"), Some(0)));
        check_times(&rows[0]);
        assert_no_secret(&serde_json::to_string(&rows).unwrap(), secret);
    }

    #[tokio::test]
    async fn a_trapped_invocation_still_releases_the_handle_with_its_uses() {
        let vault = TestVault::new();
        vault.add("signer", "hmac_key", "release-test-hmac-key-0001");
        vault.grant("limit-probe", "signer", None);
        let skill = vault.runtime().load(skillbox_tests::LIMIT_PROBE).unwrap();
        // Signs until the audit row cap refuses further uses, then on until the host-call cap
        // traps the guest.
        let max_calls = u64::from(skillbox_runtime::limits::MAX_HOST_CALLS);
        let input = json!({ "steps": [{ "hmac": "signer", "times": max_calls + 1 }] });
        let err = skill.invoke(&input.to_string()).await.unwrap_err();
        assert!(err.is_limit(), "{err}");
        let rows = releases(&vault);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        let recorded = uses(&vault).len();
        assert!(recorded > 900, "{recorded} uses");
        assert_eq!(rows[0].detail["uses"], recorded, "{}", rows[0].detail);
        check_times(&rows[0]);
        // The release row fits under the per-invocation cap with everything else.
        let all = vault.vault.audit_list(&AuditQuery::default()).unwrap();
        // (The pin of a first use comes on top of the cap.)
        let invocation_rows =
            all.iter().filter(|r| r.skill.as_deref() == Some("limit-probe") && r.action != AuditAction::Pin).count();
        assert!(invocation_rows <= skillbox_runtime::limits::MAX_AUDIT_ROWS as usize, "{invocation_rows}");
    }

    #[tokio::test]
    async fn a_handle_the_guest_dropped_is_released_when_it_was_dropped() {
        let vault = TestVault::new();
        vault.add("github", "bearer", TOKEN);
        vault.grant("limit-probe", "github", None);
        let skill = vault.runtime().load(skillbox_tests::LIMIT_PROBE).unwrap();
        // Opens and drops the handle three times: three handles, three rows.
        let input = json!({ "steps": [{ "open": "github", "times": 3 }] });
        skill.invoke(&input.to_string()).await.unwrap();
        let rows = releases(&vault);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        for (n, row) in rows.iter().enumerate() {
            assert_eq!(row.detail["handle"], n + 1);
            assert_eq!(row.detail["released_by"], "guest", "{}", row.detail);
            assert_eq!(row.detail["uses"], 0);
            check_times(row);
        }
    }
}
