//! Host memory and audit volume are bounded (issue 8, item 7): every size a guest hands
//! over is checked before the host copies it, and one invocation's host calls, open
//! handles, log lines and audit rows are capped; repeated refusals of the same thing are
//! counted, not each written as a row. Each test is a hostile guest (`limit-probe`) pushing
//! one bound past its documented value.

use serde_json::{Value, json};
use skillbox_runtime::vault::{AuditAction, AuditEntry, AuditQuery};
use skillbox_runtime::{Error, Skill, limits};
use skillbox_tests::server::{Received, Reply, TestServer};
use skillbox_tests::{TestVault, json, postgres_url, runtime, temp_skill};

const MIB: usize = 1024 * 1024;
const MAX_HOST_CALLS: u64 = limits::MAX_HOST_CALLS as u64;
const MAX_OPEN_CREDENTIALS: u64 = limits::MAX_OPEN_CREDENTIALS as u64;
const MAX_AUDIT_ROWS: usize = limits::MAX_AUDIT_ROWS as usize;
const MAX_LOG_LINES: u64 = limits::MAX_LOG_LINES as u64;
const MAX_CREDENTIAL_NAME: usize = limits::MAX_CREDENTIAL_NAME;

#[test]
fn the_caps_are_the_documented_values() {
    assert_eq!(
        (MAX_HOST_CALLS, MAX_OPEN_CREDENTIALS, MAX_AUDIT_ROWS, MAX_LOG_LINES, limits::MAX_LOG_BYTES),
        (100_000, 64, 1_000, 10_000, MIB)
    );
    assert_eq!(
        (MAX_CREDENTIAL_NAME, limits::MAX_URL_BYTES, limits::MAX_HEADERS, limits::MAX_HEADER_BYTES),
        (128, 8 * 1024, 100, 64 * 1024)
    );
    assert_eq!(
        (limits::MAX_PARAM_BYTES, limits::MAX_RESULT_BYTES, skillbox_runtime::MAX_OUTPUT_BYTES),
        (16 * MIB, 16 * MIB, 16 * MIB)
    );
}

/// Runs `limit-probe` (its own manifest) with `input` and returns its report.
async fn probe(skill: &Skill, input: Value) -> Value {
    let output = skill.invoke(&input.to_string()).await.unwrap_or_else(|e| panic!("{input}: {e}"));
    json(&output.json)
}

/// `limit-probe` on `vault`'s runtime, under its own manifest.
fn probe_skill(vault: &TestVault) -> Skill {
    vault.runtime().load(skillbox_tests::LIMIT_PROBE).unwrap()
}

/// Every audit row written for `limit-probe`.
fn rows(vault: &TestVault) -> Vec<AuditEntry> {
    vault.vault.audit_list(&AuditQuery { skill: Some("limit-probe".into()), ..AuditQuery::default() }).unwrap()
}

fn denied(rows: &[AuditEntry]) -> Vec<&AuditEntry> {
    rows.iter().filter(|r| r.action == AuditAction::Denied).collect()
}

#[tokio::test]
async fn a_credential_name_over_the_limit_is_refused_before_it_is_echoed_or_audited() {
    let vault = TestVault::new();
    let skill = probe_skill(&vault);
    let report = probe(&skill, json!({ "steps": [{ "open_long": MIB }] })).await;
    let error = &report["results"][0]["first_error"];
    assert_eq!(error["case"], "limit", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.len() < 512 && !message.contains(&"a".repeat(MAX_CREDENTIAL_NAME + 1)), "{message}");
    let all = serde_json::to_string(&rows(&vault)).unwrap();
    assert!(!all.contains(&"a".repeat(MAX_CREDENTIAL_NAME + 1)), "an audit row holds the long name");
    // At the limit itself the name is an ordinary (undeclared) one.
    let report = probe(&skill, json!({ "steps": [{ "open_long": MAX_CREDENTIAL_NAME }] })).await;
    assert_eq!(report["results"][0]["first_error"]["case"], "not-declared", "{report}");
}

#[tokio::test]
async fn ten_thousand_refusals_of_one_name_are_one_row_and_a_count() {
    let vault = TestVault::new();
    let skill = probe_skill(&vault);
    let report = probe(&skill, json!({ "steps": [{ "open": "nope", "times": 10_000 }] })).await;
    assert_eq!(report["results"][0]["errors"], json!({ "not-declared": 10_000 }), "{report}");
    let rows = rows(&vault);
    let denied = denied(&rows);
    assert_eq!(denied.len(), 2, "the first refusal and one summary: {denied:#?}");
    assert_eq!(denied[0].credential_name.as_deref(), Some("nope"));
    assert_eq!(denied[1].credential_name.as_deref(), Some("nope"));
    assert_eq!(denied[1].detail["repeats"], 9_999, "{:?}", denied[1]);
}

#[tokio::test]
async fn an_ungranted_credential_is_looked_up_once_per_invocation() {
    let vault = TestVault::new();
    vault.add("github", "bearer", "ghp_TestToken0123456789abcdefABCDEF4242");
    let skill = probe_skill(&vault);
    let report = probe(&skill, json!({ "steps": [{ "open": "github", "times": 1_000 }] })).await;
    assert_eq!(report["results"][0]["errors"], json!({ "not-granted": 1_000 }), "{report}");
    let rows = rows(&vault);
    let denied = denied(&rows);
    assert_eq!(denied.len(), 2, "the vault's refusal and one summary: {denied:#?}");
    assert_eq!(denied[1].detail["repeats"], 999, "{:?}", denied[1]);
}

#[tokio::test]
async fn repeated_refusals_of_a_host_are_one_row_and_a_count() {
    let vault = TestVault::new();
    let skill = probe_skill(&vault);
    let report = probe(&skill, json!({ "steps": [{ "send": "https://not-allowed.example/", "times": 500 }] })).await;
    assert_eq!(report["results"][0]["errors"], json!({ "host-not-allowed": 500 }), "{report}");
    let rows = rows(&vault);
    let denied = denied(&rows);
    assert_eq!(denied.len(), 2, "{denied:#?}");
    assert_eq!(denied[1].detail["repeats"], 499, "{:?}", denied[1]);
}

#[tokio::test]
async fn repeated_leak_findings_in_log_lines_are_one_row_and_a_count() {
    // A foreign token (not one of ours): redacted from the line and audited as a leak.
    const FOREIGN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    let vault = TestVault::new();
    let skill = probe_skill(&vault);
    let report = probe(&skill, json!({ "steps": [{ "log": 2_000, "text": format!("token {FOREIGN}") }] })).await;
    assert_eq!(report["results"][0]["ok"], 2_000, "{report}");
    let rows = rows(&vault);
    let leaks: Vec<_> = rows.iter().filter(|r| r.action == AuditAction::Leak).collect();
    assert_eq!(leaks.len(), 2, "{leaks:#?}");
    assert_eq!(leaks[1].detail["repeats"], 1_999, "{:?}", leaks[1]);
}

#[tokio::test]
async fn open_handles_are_capped_and_a_dropped_handle_frees_its_place() {
    let vault = TestVault::new();
    vault.add("github", "bearer", "ghp_TestToken0123456789abcdefABCDEF4242");
    vault.grant("limit-probe", "github", None);
    let skill = probe_skill(&vault);
    let steps = json!([
        { "open": "github", "times": 100, "keep": true },
        { "open": "github", "times": 100, "keep": false },
    ]);
    let report = probe(&skill, json!({ "steps": steps })).await;
    let kept = &report["results"][0];
    assert_eq!(kept["ok"], MAX_OPEN_CREDENTIALS, "{kept}");
    assert_eq!(kept["errors"]["limit"], 100 - MAX_OPEN_CREDENTIALS, "{kept}");
    assert_eq!(report["results"][1]["ok"], 100, "{}", report["results"][1]);
}

#[tokio::test]
async fn one_invocation_causes_at_most_its_audit_rows() {
    let vault = TestVault::new();
    vault.add("signer", "hmac_key", "whsec_0123456789abcdefghijklmnopqrstuv");
    vault.grant("limit-probe", "signer", None);
    let skill = probe_skill(&vault);
    let report = probe(&skill, json!({ "steps": [{ "hmac": "signer", "times": 1_200 }] })).await;
    let tally = &report["results"][0];
    let refused = tally["errors"]["limit"].as_u64().unwrap_or(0);
    assert!(refused > 0, "every use was allowed: {tally}");
    assert_eq!(tally["ok"].as_u64().unwrap() + refused, 1_201, "{tally}");
    // One open (a read row, plus the pin of the first use) and the uses, under the cap.
    let rows = rows(&vault);
    assert!(rows.len() <= MAX_AUDIT_ROWS + 1, "{} rows", rows.len());
    assert!(rows.len() >= MAX_AUDIT_ROWS - 10, "{} rows", rows.len());
    assert_eq!(tally["first_error"]["case"], "limit");
}

#[tokio::test]
async fn host_calls_are_capped_and_the_invocation_ends_as_a_limit() {
    let skill = runtime().load(skillbox_tests::LIMIT_PROBE).unwrap();
    let input = json!({ "steps": [{ "open": "nope", "times": 2 * MAX_HOST_CALLS }] });
    let err = skill.invoke(&input.to_string()).await.unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert!(err.to_string().contains("100000 host calls"), "{err}");
}

#[tokio::test]
async fn a_skill_that_fails_after_hitting_a_cap_is_reported_as_limited() {
    let vault = TestVault::new();
    vault.add("github", "bearer", "ghp_TestToken0123456789abcdefABCDEF4242");
    vault.grant("limit-probe", "github", None);
    let skill = probe_skill(&vault);
    let input = json!({ "steps": [{ "open": "github", "times": 100, "keep": true }], "fail": 10 });
    let err = skill.invoke(&input.to_string()).await.unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert!(err.to_string().contains("credential handles"), "{err}");
}

#[tokio::test]
async fn log_lines_past_the_caps_are_dropped_and_counted() {
    let skill = runtime().load(skillbox_tests::LIMIT_PROBE).unwrap();
    let input = json!({ "steps": [{ "log": 2 * MAX_LOG_LINES, "bytes": 10 }] });
    let output = skill.invoke(&input.to_string()).await.expect("logging never fails the skill");
    assert_eq!(output.log_lines_dropped, MAX_LOG_LINES);
    // The byte budget (1 MiB) holds as well: 64 KiB lines, 16 of them written.
    let input = json!({ "steps": [{ "log": 100, "bytes": 64 * 1024 }] });
    let output = skill.invoke(&input.to_string()).await.unwrap();
    assert_eq!(output.log_lines_dropped, 100 - 16);
}

#[tokio::test]
async fn a_result_over_the_limit_is_refused_as_a_limit() {
    let skill = runtime().load(skillbox_tests::LIMIT_PROBE).unwrap();
    let err = skill.invoke(&json!({ "pad": 17 * MIB }).to_string()).await.unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert!(err.to_string().len() < 1024, "the message names sizes, not content");
    // Just under it is fine.
    let output = skill.invoke(&json!({ "pad": 15 * MIB }).to_string()).await.unwrap();
    assert!(output.json.len() > 15 * MIB);
}

#[tokio::test]
async fn a_failure_message_is_cut_to_its_limit() {
    let skill = runtime().load(skillbox_tests::LIMIT_PROBE).unwrap();
    let err = skill.invoke(&json!({ "fail": 4 * MIB }).to_string()).await.unwrap_err();
    assert!(matches!(err, Error::SkillFailed { .. }), "{err}");
    let message = err.to_string();
    assert!(message.len() <= 64 * 1024 + 512, "{} bytes", message.len());
    assert!(message.contains("eeee"), "{}", &message[..200]);
}

/// `limit-probe` under a manifest that lets it reach `server` without a credential.
fn probe_reaching(server: &TestServer) -> (TestVault, tempfile::TempDir, Skill) {
    let (dir, manifest) = temp_skill(&format!(
        "[skill]\nname = \"limit-probe\"\nversion = \"0.1.0\"\ncomponent = \"{{component:limit-probe}}\"\n\
         [limits]\nmemory = \"128MiB\"\n[network]\nallow = [\"{}\"]\n",
        server.host()
    ));
    let vault = TestVault::new();
    let skill = vault.runtime().load(manifest).unwrap();
    (vault, dir, skill)
}

#[tokio::test]
async fn oversized_urls_and_headers_are_refused_before_anything_is_sent() {
    let server = TestServer::start("127.0.0.1", |_: &Received| Reply::json(200, json!({}))).await;
    let (_vault, _dir, skill) = probe_reaching(&server);
    let url = format!("{}/x", server.base_url());
    let steps = json!([
        { "send": url, "url_bytes": 9 * 1024 },
        { "send": url, "headers": 101 },
        { "send": url, "headers": 1, "header_bytes": 65 * 1024 },
        { "send": url, "url_bytes": 1024, "headers": 10, "header_bytes": 1024 },
    ]);
    let report = probe(&skill, json!({ "steps": steps })).await;
    for (i, result) in report["results"].as_array().unwrap()[..3].iter().enumerate() {
        assert_eq!(result["first_error"]["case"], "limit", "step {i}: {result}");
        assert!(result["first_error"]["message"].as_str().unwrap().len() < 512, "step {i}: {result}");
    }
    assert_eq!(report["results"][3]["ok"], 1, "within the limits: {}", report["results"][3]);
    assert_eq!(server.received().len(), 1, "only the request within the limits was sent");
}

/// A SQLite file added to a fresh vault as `db` and granted to `limit-probe`.
fn sqlite_probe() -> (TestVault, tempfile::TempDir, Skill) {
    let vault = TestVault::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.db");
    vault.add("db", "database", &json!({ "driver": "sqlite", "path": path }).to_string());
    vault.grant("limit-probe", "db", None);
    // An empty file is a valid, empty SQLite database (a read-only open needs one to exist).
    std::fs::write(&path, b"").unwrap();
    let skill = probe_skill(&vault);
    (vault, dir, skill)
}

#[tokio::test]
async fn a_sql_parameter_over_the_budget_is_refused_before_it_is_bound() {
    let (_vault, _dir, skill) = sqlite_probe();
    let steps = json!([
        { "sql": "SELECT length(?1)", "text_bytes": 17 * MIB },
        { "sql": "SELECT length(?1)", "text_bytes": MIB },
    ]);
    let report = probe(&skill, json!({ "steps": steps })).await;
    assert_eq!(report["results"][0]["first_error"]["case"], "limit", "{}", report["results"][0]);
    assert_eq!(report["results"][1]["value"], MIB, "{}", report["results"][1]);
}

#[tokio::test]
async fn sqlite_cannot_build_a_value_past_the_result_budget() {
    let (_vault, _dir, skill) = sqlite_probe();
    let steps = json!([
        { "sql": "SELECT length(zeroblob(20000000))" },
        { "sql": "SELECT length(zeroblob(1000000))" },
    ]);
    let report = probe(&skill, json!({ "steps": steps })).await;
    assert_eq!(report["results"][0]["first_error"]["case"], "limit", "{}", report["results"][0]);
    assert_eq!(report["results"][1]["value"], 1_000_000, "{}", report["results"][1]);
}

#[tokio::test]
async fn a_postgres_parameter_over_the_budget_is_refused_before_it_is_sent() {
    let Some(url) = postgres_url("a_postgres_parameter_over_the_budget_is_refused_before_it_is_sent") else {
        return;
    };
    let rest =
        url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://")).expect("a postgres:// URL");
    let (userinfo, rest) = rest.split_once('@').unwrap_or(("postgres", rest));
    let (hostport, database) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    // The test server's role is a superuser: stored with the operator's opt-in.
    let value = json!({
        "driver": "postgres", "host": host, "port": port.parse::<u16>().unwrap(),
        "database": database.split('?').next().unwrap(), "user": userinfo.split(':').next().unwrap(),
        "password": "pg-Secret-Pa55word-0123456789abcdef", "allow_privileged_role": true,
    });
    let vault = TestVault::new();
    vault.add("db", "database", &value.to_string());
    vault.grant("limit-probe", "db", None);
    let skill = probe_skill(&vault);
    let steps = json!([
        { "sql": "SELECT length($1::text)", "text_bytes": 17 * MIB },
        { "sql": "SELECT length($1::text)", "text_bytes": MIB },
    ]);
    let report = probe(&skill, json!({ "steps": steps })).await;
    assert_eq!(report["results"][0]["first_error"]["case"], "limit", "{}", report["results"][0]);
    assert_eq!(report["results"][1]["value"], MIB, "{}", report["results"][1]);
}
