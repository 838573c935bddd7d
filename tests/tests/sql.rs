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

/// `value` (a PostgreSQL credential) with the operator's `allow_privileged_role` opt-in.
fn privileged(value: &str) -> String {
    let mut value: Value = serde_json::from_str(value).unwrap();
    value["allow_privileged_role"] = true.into();
    value.to_string()
}

/// A vault whose `db` is the test PostgreSQL (as its superuser, stored with the
/// `allow_privileged_role` opt-in), and a writing probe on it.
fn postgres_vault(url: &str) -> (TestVault, tempfile::TempDir, Skill) {
    let vault = TestVault::new();
    vault.add("db", "database", &privileged(&postgres_value(url, None, None)));
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
    // The guest learns that the login failed, not as whom (nor where).
    assert!(message.contains("refused the login"), "{message}");
    assert!(!message.contains("skillbox_no_such_role"), "{message}");
    assert_no_password(&report.to_string());

    let input = json!({ "statement": "SELECT 1", "credential": "echo" });
    let report = json(&reader.invoke(&input.to_string()).await.unwrap().json);
    let message = expect_error(&report, "upstream");
    assert!(message.contains("does not exist"), "{message}");
    assert_no_password(&report.to_string());
    assert_no_password(&serde_json::to_string(&vault.vault.audit_list(&AuditQuery::default()).unwrap()).unwrap());
}

// ------------------------------------------------------- privileged roles

/// A login role of its own for one test, with `grants` run after `CREATE ROLE ... LOGIN`
/// (`{role}` stands for its name); dropped by [`drop_role`].
async fn create_role(admin: &Skill, test: &str, grants: &[&str]) -> String {
    let role = unique(test);
    let report = execute(admin, &format!("CREATE ROLE {role} LOGIN"), json!([])).await;
    assert!(report.get("changed").is_some(), "{report}");
    for grant in grants {
        let report = execute(admin, &grant.replace("{role}", &role), json!([])).await;
        assert!(report.get("changed").is_some(), "{report}");
    }
    role
}

async fn drop_role(admin: &Skill, role: &str) {
    execute(admin, &format!("DROP OWNED BY {role}"), json!([])).await;
    execute(admin, &format!("DROP ROLE {role}"), json!([])).await;
}

/// Statements that reach the server's programs or files, written the ways a text filter
/// would miss: case, comments, quotes, schema prefixes, SQL given as text.
fn server_escapes(marker: &str) -> Vec<String> {
    vec![
        format!("COPY (SELECT 1) TO PROGRAM 'touch {marker}'"),
        format!("/* hello */ CoPy (SELECT 1) TO PROGRAM 'touch {marker}'"),
        format!("COPY (SELECT 1) TO '{marker}'"),
        "SELECT pg_read_file('PG_VERSION')".into(),
        "select PG_CATALOG . /* x */ \"pg_read_file\" ('PG_VERSION')".into(),
        "SELECT pg_catalog.pg_read_binary_file('PG_VERSION')".into(),
        "SELECT * FROM pg_ls_dir('.')".into(),
        "SELECT (pg_stat_file('PG_VERSION')).size::text".into(),
        "SELECT lo_import('/etc/hostname')::text".into(),
        "SELECT query_to_xml('select pg_read_file(''PG_VERSION'')', true, true, '')::text".into(),
        format!("DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END $$"),
        "SELECT U&\"pg_read_fil\\0065\"('PG_VERSION')".into(),
        "SELECT $x$ a string $x$ AS s, pg_read_file('PG_VERSION') -- $x$".into(),
        "SELECT E'\\' ', pg_read_file('PG_VERSION') -- '".into(),
    ]
}

#[tokio::test]
async fn postgres_privileged_role_is_refused_without_the_opt_in() {
    let Some(url) = postgres_url("postgres_privileged_role_is_refused_without_the_opt_in") else { return };
    let (_admin_vault, _m1, admin) = postgres_vault(&url);
    let files_role = create_role(&admin, "files", &["GRANT pg_read_server_files TO {role}"]).await;
    let creator_role = create_role(&admin, "creator", &["ALTER ROLE {role} CREATEROLE"]).await;

    let vault = TestVault::new();
    // The superuser, as every other test uses it, but without the opt-in.
    vault.add("db", "database", &postgres_value(&url, None, None));
    vault.add("echo", "database", &postgres_value(&url, Some(&files_role), None));
    vault.grant("sql-reader", "db", None);
    vault.grant("sql-reader", "echo", None);
    vault.grant("sql-writer", "db", None);
    let (_m2, reader) = probe_skill(&vault, "sql-reader", false);
    let (_m3, writer) = probe_skill(&vault, "sql-writer", true);
    let superuser = query(&reader, "SELECT 1", json!([])).await;
    let superuser_writes = execute(&writer, "SELECT 1", json!([])).await;
    let on = |credential: &str| json!({ "statement": "SELECT 1", "credential": credential }).to_string();
    let files = json(&reader.invoke(&on("echo")).await.unwrap().json);
    let creator_vault = TestVault::new();
    creator_vault.add("db", "database", &postgres_value(&url, Some(&creator_role), None));
    creator_vault.grant("sql-reader", "db", None);
    let (_m4, creator_reader) = probe_skill(&creator_vault, "sql-reader", false);
    let creator = query(&creator_reader, "SELECT 1", json!([])).await;
    drop_role(&admin, &files_role).await;
    drop_role(&admin, &creator_role).await;

    for (report, why) in [
        (&superuser, "superuser"),
        (&superuser_writes, "superuser"),
        (&files, "member of pg_read_server_files"),
        (&creator, "CREATEROLE"),
    ] {
        let message = expect_error(report, "denied");
        assert!(message.contains(why), "{message}");
        assert!(message.contains("least-privilege") && message.contains("--allow-privileged-role"), "{message}");
        // Nothing about where the database is or whom it logs in as.
        for hidden in ["127.0.0.1", "5432", "\"postgres\"", files_role.as_str(), creator_role.as_str()] {
            assert!(!message.contains(hidden), "{hidden} in {message}");
        }
    }
    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    assert!(rows.iter().any(|r| r.action == AuditAction::Denied && r.detail["operation"] == "sql.query"), "{rows:?}");
    assert!(rows.iter().all(|r| r.action != AuditAction::Use || !r.success), "{rows:?}");
}

#[tokio::test]
async fn postgres_privileged_role_with_the_opt_in_still_cannot_reach_the_server_when_read_only() {
    let test = "postgres_privileged_role_with_the_opt_in_still_cannot_reach_the_server_when_read_only";
    let Some(url) = postgres_url(test) else { return };
    let (vault, _m1, _admin) = postgres_vault(&url);
    vault.grant("sql-reader", "db", None);
    let (_m2, reader) = probe_skill(&vault, "sql-reader", false);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join(unique("copy")).to_str().unwrap().to_owned();

    let ok = query(&reader, "SELECT 1 AS one", json!([])).await;
    assert_eq!(ok, json!({ "columns": ["one"], "rows": [[1]] }));
    for statement in server_escapes(&marker) {
        let report = query(&reader, &statement, json!([])).await;
        let message = expect_error(&report, "denied");
        assert!(message.contains("read-only"), "{statement}: {message}");
    }
    assert!(!std::path::Path::new(&marker).exists(), "COPY TO PROGRAM ran on the server");
    // Names inside literals and comments are not calls.
    let literal = query(&reader, "SELECT 'pg_read_file' AS s /* pg_ls_dir */ -- copy", json!([])).await;
    assert_eq!(literal["rows"], json!([["pg_read_file"]]), "{literal}");

    // Every use under the opt-in says so, with what makes the role privileged.
    let uses = vault.vault.audit_list(&AuditQuery { action: Some(AuditAction::Use), ..Default::default() }).unwrap();
    let queries: Vec<_> = uses.iter().filter(|r| r.detail["operation"] == "sql.query").collect();
    assert!(queries.len() > 10, "{uses:?}");
    for row in &queries {
        assert_eq!(row.detail["privileged_role"], true, "{:?}", row.detail);
    }
    let ok_row = queries.iter().find(|r| r.success).unwrap();
    assert!(ok_row.detail["role_privileges"].to_string().contains("superuser"), "{:?}", ok_row.detail);
}

#[tokio::test]
async fn postgres_least_privilege_role_reads_but_cannot_copy_to_program() {
    let Some(url) = postgres_url("postgres_least_privilege_role_reads_but_cannot_copy_to_program") else { return };
    let (_admin_vault, _m1, admin) = postgres_vault(&url);
    let role = create_role(&admin, "plain", &[]).await;
    let t = unique("plain_t");
    execute(&admin, &format!("CREATE TABLE {t} (s TEXT)"), json!([])).await;
    execute(&admin, &format!("INSERT INTO {t} VALUES ('visible')"), json!([])).await;
    execute(&admin, &format!("GRANT SELECT ON {t} TO {role}"), json!([])).await;

    let vault = TestVault::new();
    vault.add("db", "database", &postgres_value(&url, Some(&role), None));
    vault.grant("sql-reader", "db", None);
    let (_m2, reader) = probe_skill(&vault, "sql-reader", false);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join(unique("copy")).to_str().unwrap().to_owned();
    let read = query(&reader, &format!("SELECT s FROM {t}"), json!([])).await;
    let copy = query(&reader, &format!("COPY (SELECT 1) TO PROGRAM 'touch {marker}'"), json!([])).await;
    let file = query(&reader, "SELECT pg_catalog.pg_read_file('PG_VERSION')", json!([])).await;
    execute(&admin, &format!("DROP TABLE {t}"), json!([])).await;
    drop_role(&admin, &role).await;

    assert_eq!(read["rows"], json!([["visible"]]), "{read}");
    expect_error(&copy, "denied");
    expect_error(&file, "denied");
    assert!(!std::path::Path::new(&marker).exists());
    let uses = vault.vault.audit_list(&AuditQuery { action: Some(AuditAction::Use), ..Default::default() }).unwrap();
    assert!(uses.iter().all(|r| r.detail.get("privileged_role").is_none()), "{uses:?}");
}

// ------------------------------------------------------ rows and the scanner

#[tokio::test]
async fn postgres_result_rows_pass_through_the_leak_scanner() {
    let Some(url) = postgres_url("postgres_result_rows_pass_through_the_leak_scanner") else { return };
    let (vault, _m, admin) = postgres_vault(&url);
    // The statement holds no piece of the password long enough to trip the wire, but the
    // row the server builds from it is the password itself.
    let pieces = PASSWORD.as_bytes().chunks(11).map(|c| format!("'{}'", std::str::from_utf8(c).unwrap()));
    let built = pieces.collect::<Vec<_>>().join(" || ");
    let text = query(&admin, &format!("SELECT ({built}) AS s, 'plain' AS p"), json!([])).await;
    let blob = query(&admin, &format!("SELECT convert_to({built}, 'UTF8') AS b"), json!([])).await;
    // As JSON `\u` escapes, which cannot be cut out in place: the whole result is withheld.
    let escaped = format!(
        "SELECT string_agg('\\u' || lpad(to_hex(ascii(c)), 4, '0'), '') AS e FROM regexp_split_to_table({built}, '') AS c"
    );
    let encoded = query(&admin, &escaped, json!([])).await;

    assert!(text.get("error").is_none(), "{text}");
    assert_no_password(&text.to_string());
    assert!(text["rows"][0][0].as_str().unwrap().contains("REDACTED"), "{text}");
    assert_eq!(text["rows"][0][1], "plain");
    assert!(blob.get("error").is_none(), "{blob}");
    let bytes: Vec<u8> = serde_json::from_value(blob["rows"][0][0]["blob"].clone()).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains(PASSWORD), "{blob}");
    expect_error(&encoded, "leak-blocked");
    assert_no_password(&encoded.to_string());

    let rows = vault.vault.audit_list(&AuditQuery::default()).unwrap();
    let leaks: Vec<_> = rows.iter().filter(|r| r.action == AuditAction::Leak).collect();
    assert!(leaks.iter().any(|r| r.detail["channel"] == "sql.query" && r.detail["action"] == "redact"), "{leaks:?}");
    assert!(leaks.iter().any(|r| r.detail["channel"] == "sql.query" && r.detail["action"] == "block"), "{leaks:?}");
    assert!(rows.iter().any(|r| r.action == AuditAction::Use && r.detail["redacted"] == true), "{rows:?}");
    assert_no_password(&serde_json::to_string(&rows).unwrap());
}

// -------------------------------------------------- connections and TLS

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn connection_errors_name_no_host_port_or_user() {
    let port = closed_port();
    let user = "skillbox_hidden_user";
    let vault = TestVault::new();
    let value = json!({
        "driver": "postgres", "host": "127.0.0.1", "port": port, "database": "hidden_db_name",
        "user": user, "password": PASSWORD,
    });
    vault.add("db", "database", &value.to_string());
    vault.grant("sql-reader", "db", None);
    let (_m, reader) = probe_skill(&vault, "sql-reader", false);
    let report = query(&reader, "SELECT 1", json!([])).await;
    let message = expect_error(&report, "upstream");
    assert!(message.contains("refused"), "{message}");
    for hidden in ["127.0.0.1", &port.to_string(), user, "hidden_db_name", PASSWORD] {
        assert!(!report.to_string().contains(hidden), "{hidden} in {report}");
    }
}

/// This machine's address on its default route, when it has one that is not loopback.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Accepts one connection on `ip`, answers an SSLRequest with `N` (no TLS), and reports
/// whether the client's first message was an SSLRequest.
fn fake_postgres(ip: std::net::IpAddr) -> (u16, std::sync::mpsc::Receiver<bool>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut first = [0u8; 8];
        stream.read_exact(&mut first).unwrap();
        let ssl_request = first == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        if ssl_request {
            stream.write_all(b"N").unwrap();
        }
        tx.send(ssl_request).unwrap();
    });
    (port, rx)
}

#[tokio::test]
async fn postgres_uses_tls_for_non_loopback_hosts_unless_sslmode_is_disable() {
    let Some(ip) = non_loopback_address() else {
        eprintln!(
            "SKIPPED postgres_uses_tls_for_non_loopback_hosts_unless_sslmode_is_disable: no non-loopback address"
        );
        return;
    };
    let credential = |port: u16, extra: Value| {
        let mut value = json!({
            "driver": "postgres", "host": ip.to_string(), "port": port, "database": "d", "user": "u",
            "password": PASSWORD,
        });
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        value.to_string()
    };
    let (default_port, default_first) = fake_postgres(ip);
    let (plain_port, plain_first) = fake_postgres(ip);
    let vault = TestVault::new();
    // `"ssl": false` is what every credential stored before this change carries: not an opt-out.
    vault.add("db", "database", &credential(default_port, json!({ "ssl": false })));
    vault.add("echo", "database", &credential(plain_port, json!({ "sslmode": "disable" })));
    vault.grant("sql-reader", "db", None);
    vault.grant("sql-reader", "echo", None);
    let (_m, reader) = probe_skill(&vault, "sql-reader", false);

    let report = query(&reader, "SELECT 1", json!([])).await;
    assert!(default_first.recv().unwrap(), "the first message was not an SSLRequest");
    let message = expect_error(&report, "upstream");
    assert!(message.contains("TLS") && message.contains("sslmode"), "{message}");
    assert!(!message.contains(&ip.to_string()), "{message}");

    let input = json!({ "statement": "SELECT 1", "credential": "echo" });
    let report = json(&reader.invoke(&input.to_string()).await.unwrap().json);
    assert!(!plain_first.recv().unwrap(), "sslmode=disable still asked for TLS");
    expect_error(&report, "upstream");

    // A wrong sslmode, or one that contradicts `ssl`, is refused when stored.
    use skillbox_runtime::vault::{CredentialKind, SecretValue};
    assert!(SecretValue::from_json(CredentialKind::Database, &credential(1, json!({ "sslmode": "prefer" }))).is_err());
    let both = credential(1, json!({ "sslmode": "disable", "ssl": true }));
    assert!(SecretValue::from_json(CredentialKind::Database, &both).is_err());
}
