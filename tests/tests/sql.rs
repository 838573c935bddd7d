//! The `sql` interface end to end: real components, a real vault, real
//! SQLite files (always) and the real PostgreSQL at
//! `SKILLBOX_TEST_POSTGRES_URL` (tests return early, printing SKIPPED,
//! without it). Each PostgreSQL test works in objects named for it alone and
//! drops them at the end.
//!
//! Most tests drive `sql-probe`, a test program that runs whatever statement
//! it is given and reports rows or the typed error case, under manifests
//! written here so `[sql] write` can be flipped.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};
use skillbox_runtime::vault::{AuditAction, AuditQuery};
use skillbox_runtime::{Error, Skill};
use skillbox_tests::{TestVault, json, postgres_url, temp_skill};

/// A password no test database needs (trust auth) but every credential carries,
/// so tests can look for it where it must not be.
const PASSWORD: &str = "pg-Secret-Pa55word-0123456789abcdef";

/// A name no other test (or concurrent run) uses.
fn unique(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("sb_{test}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// `sql-probe` under a manifest named `name`, declaring the database credential
/// `db` (plus `echo`, and the bearer credential `tok`), with `[sql] write` as given.
fn probe_skill(vault: &TestVault, name: &str, write: bool) -> (tempfile::TempDir, Skill) {
    let sql = if write { "[sql]\nwrite = true\n" } else { "" };
    let (dir, manifest) = temp_skill(&format!(
        "[skill]\nname = \"{name}\"\nversion = \"0.1.0\"\ncomponent = \"{{component:sql-probe}}\"\n\
         [limits]\nmemory = \"64MiB\"\ntimeout = \"60s\"\n\
         [[credentials]]\nname = \"db\"\nkind = \"database\"\npurpose = \"tests\"\n\
         [[credentials]]\nname = \"echo\"\nkind = \"database\"\npurpose = \"tests\"\n\
         [[credentials]]\nname = \"tok\"\nkind = \"bearer\"\nhosts = [\"example.com\"]\n{sql}"
    ));
    let skill = vault.runtime().load(manifest).unwrap();
    (dir, skill)
}

/// Runs one statement through `sql-probe` and returns its JSON report.
async fn run(skill: &Skill, mode: &str, statement: &str, params: Value) -> Value {
    let input = json!({ "statement": statement, "params": params, "mode": mode });
    let output = skill.invoke(&input.to_string()).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    json(&output.json)
}

async fn query(skill: &Skill, statement: &str, params: Value) -> Value {
    run(skill, "query", statement, params).await
}

async fn execute(skill: &Skill, statement: &str, params: Value) -> Value {
    run(skill, "execute", statement, params).await
}

/// Asserts that a probe report is the error `case`, and returns its message.
fn expect_error(report: &Value, case: &str) -> String {
    assert_eq!(report["error"]["case"], case, "{report}");
    report["error"]["message"].as_str().unwrap().to_owned()
}

/// A SQLite file in a fresh directory, added to the vault as `db` and `reports-db`.
fn sqlite_vault() -> (TestVault, tempfile::TempDir, String) {
    let vault = TestVault::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reports.db").to_str().unwrap().to_owned();
    let value = json!({ "driver": "sqlite", "path": path }).to_string();
    vault.add("db", "database", &value);
    vault.add("reports-db", "database", &value);
    (vault, dir, path)
}

/// The credential value for the test PostgreSQL, as `user` on `database`,
/// always carrying [`PASSWORD`].
fn postgres_value(url: &str, user: Option<&str>, database: Option<&str>) -> String {
    let rest =
        url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://")).expect("a postgres:// URL");
    let (userinfo, rest) = rest.split_once('@').unwrap_or(("postgres", rest));
    let url_user = userinfo.split(':').next().unwrap();
    let (hostport, dbname) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let dbname = dbname.split('?').next().unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    json!({
        "driver": "postgres",
        "host": host,
        "port": port.parse::<u16>().unwrap(),
        "database": database.unwrap_or(dbname),
        "user": user.unwrap_or(url_user),
        "password": PASSWORD,
    })
    .to_string()
}

/// A vault whose `db` is the test PostgreSQL (as its superuser), and a writing probe on it.
fn postgres_vault(url: &str) -> (TestVault, tempfile::TempDir, Skill) {
    let vault = TestVault::new();
    vault.add("db", "database", &postgres_value(url, None, None));
    vault.grant("sql-admin", "db", None);
    let (dir, admin) = probe_skill(&vault, "sql-admin", true);
    (vault, dir, admin)
}

async fn orders(writer: &Skill, table: &str) {
    let changed =
        execute(writer, &format!("CREATE TABLE {table} (customer TEXT NOT NULL, total INTEGER NOT NULL)"), json!([]))
            .await;
    assert!(changed.get("changed").is_some(), "{changed}");
    for (customer, total) in [("ada", 120), ("grace", 80), ("linus", 300), ("ken", 5)] {
        let report = execute(
            writer,
            &format!("INSERT INTO {table} (customer, total) VALUES ($1, $2)"),
            json!([customer, total]),
        )
        .await;
        assert_eq!(report, json!({ "changed": 1 }));
    }
}

fn assert_no_password(text: &str) {
    assert!(!text.contains(PASSWORD), "the password appears in: {text}");
}

// ------------------------------------------------------------------ db-report

#[tokio::test]
async fn db_report_on_sqlite() {
    let (vault, _dir, _path) = sqlite_vault();
    vault.grant("sql-admin", "db", None);
    let (_m, admin) = probe_skill(&vault, "sql-admin", true);
    orders(&admin, "orders").await;

    vault.grant("db-report", "reports-db", None);
    let report = vault.runtime().load(skillbox_tests::DB_REPORT).unwrap();
    let output = report.invoke(r#"{"min_total": 100}"#).await.unwrap();
    assert_eq!(
        json(&output.json),
        json!({ "count": 2, "rows": [{ "customer": "linus", "total": 300 }, { "customer": "ada", "total": 120 }] })
    );
    let all = report.invoke("{}").await.unwrap();
    assert_eq!(json(&all.json)["count"], 4);
}

#[tokio::test]
async fn db_report_on_postgres() {
    let Some(url) = postgres_url("db_report_on_postgres") else { return };
    let (_vault, _m, admin) = postgres_vault(&url);
    // db-report reads the unqualified `orders`: a role of its own whose
    // `$user` schema holds it keeps this test apart from every other.
    let role = unique("report");
    for statement in [format!("CREATE ROLE {role} LOGIN"), format!("CREATE SCHEMA {role} AUTHORIZATION {role}")] {
        assert!(execute(&admin, &statement, json!([])).await.get("changed").is_some());
    }
    orders(&admin, &format!("{role}.orders")).await;
    execute(&admin, &format!("GRANT SELECT ON {role}.orders TO {role}"), json!([])).await;

    let vault = TestVault::new();
    vault.add("reports-db", "database", &postgres_value(&url, Some(&role), None));
    vault.grant("db-report", "reports-db", None);
    let report = vault.runtime().load(skillbox_tests::DB_REPORT).unwrap();
    let output = report.invoke(r#"{"min_total": 100}"#).await.map_err(|e| e.to_string());

    execute(&admin, &format!("DROP SCHEMA {role} CASCADE"), json!([])).await;
    execute(&admin, &format!("DROP ROLE {role}"), json!([])).await;
    assert_eq!(
        json(&output.unwrap().json),
        json!({ "count": 2, "rows": [{ "customer": "linus", "total": 300 }, { "customer": "ada", "total": 120 }] })
    );
}

#[tokio::test]
async fn db_report_without_a_grant_is_denied_naming_skillbox_grant() {
    let (vault, _dir, _path) = sqlite_vault();
    let report = vault.runtime().load(skillbox_tests::DB_REPORT).unwrap();
    let err = report.invoke("{}").await.unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    assert!(err.to_string().contains("skillbox grant"), "{err}");
}

// ------------------------------------------------------------ type mapping

#[tokio::test]
async fn sqlite_parameters_round_trip() {
    let (vault, _dir, _path) = sqlite_vault();
    vault.grant("sql-admin", "db", None);
    let (_m, admin) = probe_skill(&vault, "sql-admin", true);
    execute(&admin, "CREATE TABLE t (i INTEGER, big INTEGER, f REAL, b BOOLEAN, s TEXT, x BLOB, n TEXT)", json!([]))
        .await;
    let row = json!([42, i64::MAX, { "float": 2.5 }, true, "héllo ✓", { "blob": [0, 1, 255] }, null]);
    let inserted = execute(&admin, "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7)", row).await;
    assert_eq!(inserted, json!({ "changed": 1 }));
    let report = query(&admin, "SELECT i, big, f, b, s, x, n FROM t", json!([])).await;
    assert_eq!(report["columns"], json!(["i", "big", "f", "b", "s", "x", "n"]));
    // SQLite has no boolean type: `true` is stored and read back as 1.
    assert_eq!(report["rows"], json!([[42, i64::MAX, { "float": 2.5 }, 1, "héllo ✓", { "blob": [0, 1, 255] }, null]]));
    // Numbered parameters bind by number, whatever order the text uses them in.
    let swapped = query(&admin, "SELECT $2 AS two, $1 AS one, $2 AS again", json!(["a", "b"])).await;
    assert_eq!(swapped["rows"], json!([["b", "a", "b"]]));
    let short = query(&admin, "SELECT $1, $2", json!([1])).await;
    expect_error(&short, "invalid");
    let long = query(&admin, "SELECT $1", json!([1, 2])).await;
    expect_error(&long, "invalid");
}

#[tokio::test]
async fn postgres_parameters_round_trip() {
    let Some(url) = postgres_url("postgres_parameters_round_trip") else { return };
    let (_vault, _m, admin) = postgres_vault(&url);
    let t = unique("types");
    execute(
        &admin,
        &format!(
            "CREATE TABLE {t} (i4 INT4, i8 INT8, i2 INT2, f8 FLOAT8, f4 FLOAT4, b BOOL, s TEXT, v VARCHAR(20), x BYTEA, j JSONB, n INT4)"
        ),
        json!([]),
    )
    .await;
    let row = json!([
        42,
        i64::MAX,
        7,
        { "float": 2.5 },
        { "float": 0.5 },
        true,
        "héllo ✓",
        "short",
        { "blob": [0, 1, 255] },
        "{\"a\": [1, 2]}",
        null
    ]);
    let inserted =
        execute(&admin, &format!("INSERT INTO {t} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"), row).await;
    let report = query(&admin, &format!("SELECT i4, i8, i2, f8, f4, b, s, v, x, j, n FROM {t}"), json!([])).await;
    // Each parameter is checked against the type the statement gives it.
    let too_big = execute(&admin, &format!("INSERT INTO {t} (i4) VALUES ($1)"), json!([i64::from(i32::MAX) + 1])).await;
    let text_into_int = execute(&admin, &format!("INSERT INTO {t} (i4) VALUES ($1)"), json!(["42"])).await;
    let int_into_float = query(&admin, &format!("SELECT count(*) FROM {t} WHERE f8 > $1"), json!([1])).await;
    let needs_cast = query(&admin, "SELECT $1::date IS NULL AS d", json!(["2024-01-01"])).await;
    let cast = query(&admin, "SELECT $1::text::date::text AS d", json!(["2024-01-01"])).await;
    let odd_column = query(&admin, "SELECT now() AS right_now", json!([])).await;
    execute(&admin, &format!("DROP TABLE {t}"), json!([])).await;

    assert_eq!(inserted, json!({ "changed": 1 }));
    assert_eq!(
        report["rows"],
        json!([[
            42,
            i64::MAX,
            7,
            { "float": 2.5 },
            { "float": 0.5 },
            true,
            "héllo ✓",
            "short",
            { "blob": [0, 1, 255] },
            "{\"a\":[1,2]}",
            null
        ]])
    );
    assert!(expect_error(&too_big, "invalid").contains("does not fit"), "{too_big}");
    expect_error(&text_into_int, "invalid");
    assert_eq!(int_into_float["rows"], json!([[1]]), "{int_into_float}");
    assert!(expect_error(&needs_cast, "invalid").contains("$1::text"), "{needs_cast}");
    assert_eq!(cast["rows"], json!([["2024-01-01"]]));
    let message = expect_error(&odd_column, "invalid");
    assert!(message.contains("right_now") && message.contains("right_now::text"), "{message}");
}

// ------------------------------------------------------------------ read-only

#[tokio::test]
async fn sqlite_is_read_only_unless_the_manifest_allows_writes() {
    let (vault, _dir, _path) = sqlite_vault();
    vault.grant("sql-admin", "db", None);
    vault.grant("sql-reader", "db", None);
    let (_m1, admin) = probe_skill(&vault, "sql-admin", true);
    let (_m2, reader) = probe_skill(&vault, "sql-reader", false);
    execute(&admin, "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)", json!([])).await;
    execute(&admin, "INSERT INTO t (s) VALUES ('kept')", json!([])).await;

    let refused = execute(&reader, "DELETE FROM t", json!([])).await;
    assert!(expect_error(&refused, "denied").contains("write = true"), "{refused}");
    // The database itself refuses writes that come in through `query`.
    let delete = query(&reader, "DELETE FROM t", json!([])).await;
    expect_error(&delete, "denied");
    let returning = query(&reader, "INSERT INTO t (s) VALUES ('sneaky') RETURNING id", json!([])).await;
    expect_error(&returning, "denied");
    let read = query(&reader, "SELECT s FROM t", json!([])).await;
    assert_eq!(read["rows"], json!([["kept"]]));
    // Denials are audited as such.
    let denied =
        vault.vault.audit_list(&AuditQuery { action: Some(AuditAction::Denied), ..Default::default() }).unwrap();
    assert!(denied.iter().any(|r| r.detail["operation"] == "sql.execute"), "{denied:?}");

    // With `[sql] write = true`, both work.
    assert_eq!(execute(&admin, "DELETE FROM t WHERE s = $1", json!(["kept"])).await, json!({ "changed": 1 }));
    let inserted = query(&admin, "INSERT INTO t (s) VALUES ('new') RETURNING s", json!([])).await;
    assert_eq!(inserted["rows"], json!([["new"]]), "{inserted}");
}

#[tokio::test]
async fn postgres_is_read_only_unless_the_manifest_allows_writes() {
    let Some(url) = postgres_url("postgres_is_read_only_unless_the_manifest_allows_writes") else { return };
    let (vault, _m1, admin) = postgres_vault(&url);
    vault.grant("sql-reader", "db", None);
    let (_m2, reader) = probe_skill(&vault, "sql-reader", false);
    let t = unique("ro");
    execute(&admin, &format!("CREATE TABLE {t} (id SERIAL PRIMARY KEY, s TEXT)"), json!([])).await;
    execute(&admin, &format!("INSERT INTO {t} (s) VALUES ('kept')"), json!([])).await;

    let refused = execute(&reader, &format!("DELETE FROM {t}"), json!([])).await;
    let delete = query(&reader, &format!("DELETE FROM {t} RETURNING id"), json!([])).await;
    let returning = query(&reader, &format!("INSERT INTO {t} (s) VALUES ('sneaky') RETURNING id"), json!([])).await;
    // A read-only transaction cannot be escaped by ending it or by changing the default.
    let commit = query(&reader, "COMMIT", json!([])).await;
    query(&reader, "SET default_transaction_read_only = off", json!([])).await;
    let after = query(&reader, &format!("INSERT INTO {t} (s) VALUES ('after') RETURNING id"), json!([])).await;
    let read = query(&reader, &format!("SELECT s FROM {t}"), json!([])).await;
    let deleted = execute(&admin, &format!("DELETE FROM {t} WHERE s = $1"), json!(["kept"])).await;
    let inserted = query(&admin, &format!("INSERT INTO {t} (s) VALUES ('new') RETURNING s"), json!([])).await;
    execute(&admin, &format!("DROP TABLE {t}"), json!([])).await;

    assert!(expect_error(&refused, "denied").contains("write = true"), "{refused}");
    expect_error(&delete, "denied");
    expect_error(&returning, "denied");
    assert!(commit.get("error").is_none(), "{commit}");
    expect_error(&after, "denied");
    assert_eq!(read["rows"], json!([["kept"]]));
    assert_eq!(deleted, json!({ "changed": 1 }));
    assert_eq!(inserted["rows"], json!([["new"]]), "{inserted}");
}

// ---------------------------------------------------------- access and kinds

#[tokio::test]
async fn a_credential_of_another_kind_is_wrong_kind() {
    let (vault, _dir, _path) = sqlite_vault();
    vault.add("tok", "bearer", "tok_0123456789abcdef");
    vault.grant("sql-reader", "tok", None);
    let (_m, reader) = probe_skill(&vault, "sql-reader", false);
    let input = json!({ "statement": "SELECT 1", "credential": "tok" });
    let report = json(&reader.invoke(&input.to_string()).await.unwrap().json);
    assert!(expect_error(&report, "wrong-kind").contains("database"), "{report}");
    assert!(!report.to_string().contains("tok_0123456789abcdef"), "{report}");

    // A bearer token granted where the manifest declares a database fails at `open`.
    let vault = TestVault::new();
    vault.add("db", "bearer", "tok_0123456789abcdef");
    vault.grant("sql-reader", "db", None);
    let (_m, reader) = probe_skill(&vault, "sql-reader", false);
    let report = query(&reader, "SELECT 1", json!([])).await;
    expect_error(&report, "wrong-kind");
}

#[tokio::test]
async fn sqlite_refuses_attach_and_hides_the_file_path() {
    let (vault, dir, _path) = sqlite_vault();
    vault.grant("sql-admin", "db", None);
    let (_m, admin) = probe_skill(&vault, "sql-admin", true);
    let other = dir.path().join("other.db").to_str().unwrap().to_owned();
    let attach = execute(&admin, "ATTACH DATABASE $1 AS other", json!([other])).await;
    expect_error(&attach, "denied");
    let vacuum = execute(&admin, "VACUUM INTO $1", json!([other])).await;
    assert!(vacuum.get("error").is_some(), "{vacuum}");
    assert!(!std::path::Path::new(&other).exists(), "no file was created outside the granted one");
    // Nor does the guest learn where the granted file is.
    for statement in ["PRAGMA database_list", "SELECT * FROM pragma_database_list"] {
        let report = query(&admin, statement, json!([])).await;
        expect_error(&report, "denied");
        assert!(!report.to_string().contains(dir.path().to_str().unwrap()), "{report}");
    }
}

// ----------------------------------------------------------------- limits

#[tokio::test]
async fn sqlite_result_limits() {
    let (vault, _dir, _path) = sqlite_vault();
    vault.grant("sql-admin", "db", None);
    let (_m, admin) = probe_skill(&vault, "sql-admin", true);
    let rows = query(
        &admin,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10001) SELECT x FROM c",
        json!([]),
    )
    .await;
    assert!(expect_error(&rows, "limit").contains("10000 rows"), "{rows}");
    let ok = query(
        &admin,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10000) SELECT count(*) FROM c",
        json!([]),
    )
    .await;
    assert_eq!(ok["rows"], json!([[10000]]));
    let bytes = query(&admin, "SELECT zeroblob(17 * 1024 * 1024)", json!([])).await;
    assert!(expect_error(&bytes, "limit").contains("MiB"), "{bytes}");
}

// ------------------------------------------------------ audit and secrets

#[tokio::test]
async fn sqlite_uses_are_audited_with_the_file_name_only() {
    let (vault, _dir, path) = sqlite_vault();
    vault.grant("sql-admin", "db", None);
    let (_m, admin) = probe_skill(&vault, "sql-admin", true);
    execute(&admin, "CREATE TABLE t (x INTEGER)", json!([])).await;
    query(&admin, "SELECT x FROM t", json!([])).await;
    let bad = query(&admin, "SELEC x FRM t", json!([])).await;
    expect_error(&bad, "invalid");

    let rows = vault.vault.audit_list(&AuditQuery { action: Some(AuditAction::Use), ..Default::default() }).unwrap();
    let ok = rows.iter().find(|r| r.detail["operation"] == "sql.query" && r.success).expect("a sql.query use row");
    assert_eq!(ok.detail["database"], "sqlite:reports.db");
    assert_eq!(ok.detail["rows"], 0);
    assert!(ok.detail["duration_ms"].is_u64());
    assert!(rows.iter().any(|r| r.detail["operation"] == "sql.execute" && r.success));
    assert!(rows.iter().any(|r| r.detail["operation"] == "sql.query" && !r.success && r.error.is_some()));
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains(&path), "the full path stays out of the audit log: {text}");
}

#[tokio::test]
async fn postgres_audit_errors_and_output_never_hold_the_password() {
    let Some(url) = postgres_url("postgres_audit_errors_and_output_never_hold_the_password") else { return };
    let (vault, _m, admin) = postgres_vault(&url);
    let ok = query(&admin, "SELECT 1 AS one", json!([])).await;
    let bad = query(&admin, "SELEC 1", json!([])).await;
    let missing = query(&admin, &format!("SELECT * FROM {}", unique("missing")), json!([])).await;
    // The guest cannot know the password; if it somehow sends it, nothing goes out and the
    // invocation ends (a tripwire, not an error it could catch and retry).
    let input = json!({ "statement": format!("SELECT '{PASSWORD}'"), "params": [], "mode": "query" });
    let tripped = admin.invoke(&input.to_string()).await.unwrap_err();
    assert!(matches!(tripped, skillbox_runtime::Error::Tripwire { .. }), "{tripped}");
    assert_no_password(&format!("{tripped} {tripped:?}"));

    assert_eq!(ok, json!({ "columns": ["one"], "rows": [[1]] }));
    let message = expect_error(&bad, "invalid");
    assert!(message.contains("syntax"), "{message}");
    expect_error(&missing, "invalid");
    for report in [&ok, &bad, &missing] {
        assert_no_password(&report.to_string());
    }

    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    let used = rows
        .iter()
        .find(|r| r.action == AuditAction::Use && r.detail["operation"] == "sql.query" && r.success)
        .expect("a sql.query use row");
    assert!(used.detail["database"].as_str().unwrap().starts_with("postgres://"), "{:?}", used.detail);
    assert_eq!(used.detail["rows"], 1);
    assert!(rows.iter().any(|r| r.action == AuditAction::Use && !r.success));
    assert!(rows.iter().any(|r| r.action == AuditAction::Tripwire && r.detail["channel"] == "sql.query"));
    assert_no_password(&serde_json::to_string(&rows).unwrap());
}

#[tokio::test]
async fn postgres_bad_login_is_upstream_and_never_shows_the_password() {
    let Some(url) = postgres_url("postgres_bad_login_is_upstream_and_never_shows_the_password") else { return };
    let vault = TestVault::new();
    // The test server trusts every local login, so the password itself is never
    // checked: a role that does not exist is the login it refuses.
    vault.add("db", "database", &postgres_value(&url, Some("skillbox_no_such_role"), None));
    // A server message that echoes a secret (here, a database named after the
    // password) is redacted before the guest or the audit log sees it.
    let echo = format!("nodb_{PASSWORD}");
    vault.add("echo", "database", &postgres_value(&url, None, Some(&echo)));
    vault.grant("sql-reader", "db", None);
    vault.grant("sql-reader", "echo", None);
    let (_m, reader) = probe_skill(&vault, "sql-reader", false);

    let report = query(&reader, "SELECT 1", json!([])).await;
    let message = expect_error(&report, "upstream");
    assert!(message.contains("skillbox_no_such_role"), "{message}");
    assert_no_password(&report.to_string());

    let input = json!({ "statement": "SELECT 1", "credential": "echo" });
    let report = json(&reader.invoke(&input.to_string()).await.unwrap().json);
    let message = expect_error(&report, "upstream");
    assert!(message.contains("does not exist"), "{message}");
    assert_no_password(&report.to_string());
    assert_no_password(&serde_json::to_string(&vault.vault.audit_list(&AuditQuery::default()).unwrap()).unwrap());
}
