//! Implementation for the `skillbox:skill/sql` interface.
//!
//! The guest hands over a `database` credential handle, a statement and
//! parameters; the host connects with the credential's fields (never a
//! connection string the guest could see), runs the statement, and returns
//! typed rows. Connections are cached per invocation, keyed by the
//! credential, and closed when the invocation's store is dropped.
//!
//! Read-only is enforced by the database itself, not by parsing SQL: without
//! `[sql] write = true`, `execute` is refused outright, PostgreSQL queries run
//! inside `BEGIN READ ONLY` ... `ROLLBACK`, and SQLite files are opened with
//! `SQLITE_OPEN_READ_ONLY`. Two things a read-only transaction does not stop
//! are refused on top: a privileged PostgreSQL role (superuser, or one that
//! can run server programs or read/write server files; checked once per
//! connection, allowed only with the credential's `allow_privileged_role`
//! opt-in), and, on read-only PostgreSQL connections, `COPY`, `DO` and the
//! server-side file, program and SQL-text functions (found by a lexer, see
//! [`pg_read_only_guard`]).
//!
//! Result rows pass through the invocation's leak scanner like HTTP responses:
//! a secret in a text or blob value is redacted; one in a decoded view
//! withholds the whole result (`leak-blocked`).
//!
//! Sizes are checked before the host copies anything: the statement and the
//! parameters before they are scanned, converted or bound; every result value
//! against the result budget while it is still the driver's borrowed bytes.
//! SQLite runs inside the host process, so its connections are also opened
//! with a length limit: it cannot build a string or blob (from a parameter, a
//! stored row or a function like `zeroblob`) over [`MAX_RESULT_BYTES`].

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, pin_mut};
use rusqlite::OpenFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use skillbox_vault::{AuditAction, CredentialRef, Database, Postgres, SecretValue};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use wasmtime::component::Resource;

use crate::SkillCtxView;
use crate::bindings::skillbox::skill::sql::{self, Rows, Value};
use crate::bindings::skillbox::skill::types::Error as WitError;
use crate::credentials::{OpenCredential, expose};
use crate::error::HostError;

/// Most rows one query may return.
pub const MAX_ROWS: usize = 10_000;
/// Most bytes (text, blobs, 8 per scalar) one query may return.
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;
/// Longest a statement may run, connecting included.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest statement text accepted.
pub const MAX_STATEMENT_BYTES: usize = 1024 * 1024;
/// Most parameters one statement may take (PostgreSQL's own maximum).
pub const MAX_PARAMS: usize = 65_535;
/// Most bytes (text, blobs, 8 per scalar) one statement's parameters may hold together.
pub const MAX_PARAM_BYTES: usize = MAX_RESULT_BYTES;
/// How long connecting to PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Database connections opened by one invocation, closed with it.
#[derive(Default)]
pub(crate) struct Connections {
    /// Keyed by [`key`] of the credential's vault identity.
    open: HashMap<String, Conn>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").field("open", &self.open.len()).finish()
    }
}

enum Conn {
    Postgres(PgConn),
    /// rusqlite connections are `Send` but not `Sync`; the mutex lets a
    /// blocking thread borrow one while the cache keeps it.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
}

struct PgConn {
    client: tokio_postgres::Client,
    /// Why the role counts as privileged (empty for a least-privilege role); only ever
    /// non-empty under the credential's `allow_privileged_role` opt-in.
    privileges: Vec<String>,
    /// The task driving the connection; aborted so the socket closes with the invocation.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which host function is running.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Query,
    Execute,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Query => "sql.query",
            Op::Execute => "sql.execute",
        }
    }
}

/// What a statement produced.
enum Outcome {
    Rows(Rows),
    Changed(u64),
}

impl Outcome {
    fn count(&self) -> u64 {
        match self {
            Outcome::Rows(rows) => rows.rows.len() as u64,
            Outcome::Changed(n) => *n,
        }
    }
}

impl sql::Host for SkillCtxView<'_> {
    async fn query(
        &mut self,
        db: Resource<OpenCredential>,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Rows, HostError> {
        match self.run(db, Op::Query, statement, params).await? {
            Outcome::Rows(rows) => Ok(rows),
            Outcome::Changed(_) => unreachable!("a query always produces rows"),
        }
    }

    async fn execute(
        &mut self,
        db: Resource<OpenCredential>,
        statement: String,
        params: Vec<Value>,
    ) -> Result<u64, HostError> {
        match self.run(db, Op::Execute, statement, params).await? {
            Outcome::Changed(n) => Ok(n),
            Outcome::Rows(_) => unreachable!("execute always produces a count"),
        }
    }
}

impl SkillCtxView<'_> {
    /// Checks, runs and audits one statement.
    async fn run(
        &mut self,
        db: Resource<OpenCredential>,
        op: Op,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Outcome, HostError> {
        if let Err(message) = check_sizes(&statement, &params) {
            return Err(self.ctx.refuse(message));
        }
        let open = self.table.get(&db)?;
        self.ctx.check_still_granted(open, op.name())?;
        let (name, vault_ref, usage) = (open.name().to_owned(), open.vault_ref().clone(), open.usage().clone());
        let SecretValue::Database(database) = &open.value else {
            return Err(HostError::wrong_kind(format!(
                "credential `{name}` is a {} credential; sql needs a database credential",
                open.value.kind().as_str()
            )));
        };
        let database = database.clone();
        let label = self.ctx.redactor().redact_str(&database_label(&database)).into_owned();
        let write = self.ctx.record.invocation.policy.sql_write;

        // The tripwire: SQL text and parameters go to a server; no secret may be in them.
        self.ctx.check_outbound(op.name(), statement.as_bytes())?;
        for param in &params {
            match param {
                Value::Text(text) => self.ctx.check_outbound(op.name(), text.as_bytes())?,
                Value::Blob(bytes) => self.ctx.check_outbound(op.name(), bytes)?,
                _ => {}
            }
        }
        // A short secret the guest wrote itself is not redacted from the rows: the echo of a
        // right guess must look like the echo of a wrong one (as for HTTP responses).
        let mut wrote_short: Vec<usize> = {
            let (secrets, limits) = (&self.ctx.scanner().secrets, &self.ctx.scanner().limits);
            std::iter::once(statement.as_bytes())
                .chain(params.iter().filter_map(|p| match p {
                    Value::Text(text) => Some(text.as_bytes()),
                    Value::Blob(bytes) => Some(bytes.as_slice()),
                    _ => None,
                }))
                .flat_map(|part| secrets.short_written(part, limits))
                .collect()
        };
        wrote_short.sort_unstable();
        wrote_short.dedup();
        let key = key(&vault_ref);
        let started = Instant::now();
        let result = match check(op, write) {
            Ok(()) => {
                let work = self.ctx.sql.run(&key, &vault_ref.name, &database, write, op, &statement, params);
                match tokio::time::timeout(STATEMENT_TIMEOUT, work).await {
                    Ok(result) => result,
                    Err(_) => {
                        // The connection is mid-statement: drop it rather than reuse it.
                        self.ctx.sql.open.remove(&key);
                        Err(limit(format!(
                            "the statement ran longer than {}s and was stopped",
                            STATEMENT_TIMEOUT.as_secs()
                        )))
                    }
                }
            }
            Err(error) => Err(error),
        };
        // Database messages can echo connection details; nothing leaves unredacted.
        let result = result.map_err(|e| redact(e, self.ctx.redactor()));
        if let Err(HostError::Guest(WitError::Limit(message))) = &result {
            self.ctx.note_limit(message.clone());
        }
        // Rows are server-supplied text: the leak scanner sees them before the guest does.
        let mut redacted = false;
        let result = match result {
            Ok(Outcome::Rows(rows)) => self.scan_rows(&name, op, rows, &wrote_short, &mut redacted).map(Outcome::Rows),
            other => other,
        };

        if let Err(error) = &result
            && error.is_denial()
        {
            self.ctx.record_denial(Some(&name), op.name(), error);
        }
        let mut event = self.ctx.audit_event(AuditAction::Use, Some(&name), op.name());
        event.credential = Some(vault_ref);
        event.detail["database"] = label.into();
        event.detail["duration_ms"] = (started.elapsed().as_millis() as u64).into();
        if let Database::Postgres(pg) = &database
            && pg.allow_privileged_role
        {
            // The operator's opt-in is on the record for every use, not just the first.
            event.detail["privileged_role"] = true.into();
            if let Some(Conn::Postgres(conn)) = self.ctx.sql.open.get(&key)
                && !conn.privileges.is_empty()
            {
                event.detail["role_privileges"] = conn.privileges.clone().into();
            }
        }
        if redacted {
            event.detail["redacted"] = true.into();
        }
        match &result {
            Ok(outcome) => event.detail["rows"] = outcome.count().into(),
            Err(error) => {
                event.success = false;
                event.error = Some(error.message());
            }
        }
        self.ctx.audit_use(&usage, event)?;
        result
    }

    /// Passes every column name and text or blob value through the invocation's leak scanner:
    /// raw hits are redacted in place; a secret in a decoded view, a blocked foreign token or
    /// unscannable text withholds the whole result (`leak-blocked`). Hits are audited.
    fn scan_rows(
        &self,
        name: &str,
        op: Op,
        mut rows: Rows,
        wrote_short: &[usize],
        redacted: &mut bool,
    ) -> Result<Rows, HostError> {
        use skillbox_scan::Blocked;
        use std::borrow::Cow;
        let ctx = &*self.ctx;
        let channel = op.name();
        let narrowed;
        let scanner = if wrote_short.is_empty() {
            ctx.scanner()
        } else {
            narrowed = skillbox_egress::Scanner {
                secrets: ctx.scanner().secrets.without_short(wrote_short),
                ..ctx.scanner().clone()
            };
            &narrowed
        };
        let withheld = |what: String| {
            HostError::Guest(WitError::LeakBlocked(format!(
                "the query's result was withheld: {what}; nothing from it reached the skill"
            )))
        };
        let mut clear = |bytes: &[u8]| -> Result<Option<Vec<u8>>, HostError> {
            match scanner.inbound(bytes) {
                Ok(cleared) => {
                    for rule in &cleared.foreign {
                        ctx.record_leak(channel, Some(name), "raw", Some(rule), scanner.foreign.as_str());
                    }
                    match cleared.bytes {
                        Cow::Borrowed(_) => Ok(None),
                        Cow::Owned(bytes) => {
                            if cleared.foreign.is_empty() {
                                *redacted = true;
                            }
                            Ok(Some(bytes))
                        }
                    }
                }
                Err(Blocked::Secret(hit)) => {
                    ctx.record_leak(channel, Some(name), &hit.view, None, "block");
                    Err(withheld(format!(
                        "a value holds the secret of credential `{}` in a form that cannot be cut out ({} view)",
                        hit.label, hit.view
                    )))
                }
                Err(Blocked::Foreign(rule)) => {
                    ctx.record_leak(channel, Some(name), "raw", Some(&rule), "block");
                    Err(withheld(format!("a value holds a token that matches rule `{rule}`")))
                }
                Err(Blocked::Unscannable(e)) => Err(withheld(format!("a value could not be scanned for secrets: {e}"))),
            }
        };
        for column in &mut rows.columns {
            if let Some(bytes) = clear(column.as_bytes())? {
                *column = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        for row in &mut rows.rows {
            for value in row.iter_mut() {
                match value {
                    Value::Text(text) => {
                        if let Some(bytes) = clear(text.as_bytes())? {
                            *text = String::from_utf8_lossy(&bytes).into_owned();
                        }
                    }
                    Value::Blob(blob) => {
                        if let Some(bytes) = clear(blob)? {
                            *blob = bytes;
                        }
                    }
                    _ => {}
                }
            }
        }
        if *redacted {
            ctx.record_leak(channel, Some(name), "raw", None, "redact");
        }
        Ok(rows)
    }
}

/// Refusals that need no database: writes under a read-only manifest.
fn check(op: Op, write: bool) -> Result<(), HostError> {
    if op == Op::Execute && !write {
        return Err(HostError::denied(
            "sql.execute is refused: this skill's manifest does not allow SQL writes; add `[sql]\\nwrite = true` to its skill.toml if it must change data",
        ));
    }
    Ok(())
}

/// Refuses a statement or parameter list over its limit, before anything is scanned,
/// converted or bound; the message names sizes only.
fn check_sizes(statement: &str, params: &[Value]) -> Result<(), String> {
    if statement.len() > MAX_STATEMENT_BYTES {
        return Err(format!("the statement is {} bytes, over the {MAX_STATEMENT_BYTES}-byte limit", statement.len()));
    }
    if params.len() > MAX_PARAMS {
        return Err(format!("the statement was given {} parameters, over the limit of {MAX_PARAMS}", params.len()));
    }
    let bytes: usize = params.iter().map(value_size).sum();
    if bytes > MAX_PARAM_BYTES {
        return Err(format!(
            "the parameters hold {bytes} bytes, over the {} MiB limit; pass less data per statement",
            MAX_PARAM_BYTES / (1024 * 1024)
        ));
    }
    Ok(())
}

/// What a value counts against a size budget: its bytes for text and blobs, 8 for the rest.
fn value_size(value: &Value) -> usize {
    match value {
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
        _ => 8,
    }
}

impl Connections {
    /// Runs `statement` on the cached connection for `key`, opening it first if needed.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        key: &str,
        credential: &str,
        database: &Database,
        write: bool,
        op: Op,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Outcome, HostError> {
        if !self.open.contains_key(key) {
            let conn = match database {
                Database::Postgres(pg) => Conn::Postgres(pg_connect(credential, pg).await?),
                Database::Sqlite { path } => Conn::Sqlite(sqlite_open(path, write).await?),
                _ => return Err(HostError::wrong_kind("this kind of database is not supported by sql")),
            };
            self.open.insert(key.to_owned(), conn);
        }
        match self.open.get(key) {
            Some(Conn::Postgres(conn)) => pg_run(&conn.client, write, op, statement, params).await,
            Some(Conn::Sqlite(conn)) => {
                let (conn, statement) = (conn.clone(), statement.to_owned());
                let deadline = Instant::now() + STATEMENT_TIMEOUT;
                tokio::task::spawn_blocking(move || {
                    // A panic elsewhere cannot leave a half-used statement behind: each
                    // call prepares its own, so a poisoned lock is still usable.
                    let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    sqlite_run(&mut conn, op, &statement, &params, deadline)
                })
                .await
                .map_err(|e| HostError::Trap(wasmtime::Error::msg(format!("sqlite worker failed: {e}"))))?
            }
            None => unreachable!("inserted above"),
        }
    }
}

/// Cache key for a credential: its vault identity.
fn key(credential: &CredentialRef) -> String {
    format!("{}\0{}\0{}", credential.owner, credential.environment.as_str(), credential.name)
}

/// Where a database is, for audit rows: never the user or password.
fn database_label(database: &Database) -> String {
    match database {
        Database::Postgres(pg) => format!("postgres://{}:{}/{}", pg.host, pg.port, pg.database),
        Database::Sqlite { path } => {
            let file = std::path::Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned());
            format!("sqlite:{}", file.unwrap_or_default())
        }
        _ => "unknown".into(),
    }
}

fn limit(message: String) -> HostError {
    HostError::Guest(WitError::Limit(message))
}

/// Runs every guest-visible message through the invocation's redactor.
fn redact(error: HostError, redactor: &skillbox_egress::Redactor) -> HostError {
    let HostError::Guest(e) = error else { return error };
    let r = |m: String| redactor.redact_str(&m).into_owned();
    HostError::Guest(match e {
        WitError::NotDeclared(m) => WitError::NotDeclared(r(m)),
        WitError::NotGranted(m) => WitError::NotGranted(r(m)),
        WitError::Denied(m) => WitError::Denied(r(m)),
        WitError::Revoked(m) => WitError::Revoked(r(m)),
        WitError::Expired(m) => WitError::Expired(r(m)),
        WitError::HostNotAllowed(m) => WitError::HostNotAllowed(r(m)),
        WitError::WrongKind(m) => WitError::WrongKind(r(m)),
        WitError::Limit(m) => WitError::Limit(r(m)),
        WitError::Invalid(m) => WitError::Invalid(r(m)),
        WitError::LeakBlocked(m) => WitError::LeakBlocked(r(m)),
        WitError::Upstream(m) => WitError::Upstream(r(m)),
    })
}

/// Counts result size and rows against the limits, each value before it is copied.
struct Budget {
    bytes: usize,
}

impl Budget {
    fn new(columns: &[String]) -> Budget {
        Budget { bytes: columns.iter().map(|c| c.len()).sum() }
    }

    /// Before row number `rows` (from 0) is read.
    fn start_row(&self, rows: usize) -> Result<(), HostError> {
        if rows >= MAX_ROWS {
            return Err(limit(format!(
                "the query returned more than {MAX_ROWS} rows; add a LIMIT or a narrower WHERE"
            )));
        }
        Ok(())
    }

    /// Before a value of `bytes` (8 for a scalar or NULL) is copied out of the driver.
    fn charge(&mut self, bytes: usize) -> Result<(), HostError> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > MAX_RESULT_BYTES {
            return Err(limit(format!(
                "the query's result is over the {} MiB limit; select fewer rows or columns",
                MAX_RESULT_BYTES / (1024 * 1024)
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- cred test

/// What [`check_database`] found.
#[derive(Debug, Clone)]
pub struct DatabaseCheck {
    /// Where it connected, for people and audit rows: `postgres://host:port/db` or
    /// `sqlite:file` (never the user or password).
    pub target: String,
    /// Why the role counts as privileged, when the credential allows a privileged role
    /// (empty for a least-privilege role).
    pub privileges: Vec<String>,
    /// `None` when the connection and `SELECT 1` worked; else why not, in the words a skill
    /// would get (never the password).
    pub error: Option<String>,
    /// True when the error is a refusal by skillbox's own rules (a privileged role the
    /// credential does not allow), not the database's.
    pub denied: bool,
}

/// `skillbox cred test` for a database credential named `credential`: connects exactly as
/// `sql.query` would (PostgreSQL: TLS unless loopback, the privileged-role check; SQLite: the
/// file opened read-only) and runs `SELECT 1`. Nothing is written.
pub async fn check_database(credential: &str, database: &Database) -> DatabaseCheck {
    let target = database_label(database);
    let mut privileges = Vec::new();
    let result: Result<(), HostError> = async {
        match database {
            Database::Postgres(pg) => {
                let conn = pg_connect(credential, pg).await?;
                privileges.clone_from(&conn.privileges);
                let row = tokio::time::timeout(STATEMENT_TIMEOUT, conn.client.query_one("SELECT 1", &[]))
                    .await
                    .map_err(|_| HostError::upstream("SELECT 1 did not finish in time"))?
                    .map_err(pg_error)?;
                match row.try_get::<_, i32>(0) {
                    Ok(1) => Ok(()),
                    _ => Err(HostError::upstream("SELECT 1 did not return 1")),
                }
            }
            Database::Sqlite { path } => {
                let conn = sqlite_open(path, false).await?;
                tokio::task::spawn_blocking(move || {
                    let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    match conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)) {
                        Ok(1) => Ok(()),
                        Ok(_) => Err(HostError::upstream("SELECT 1 did not return 1")),
                        Err(e) => Err(HostError::upstream(format!("SELECT 1 failed: {e}"))),
                    }
                })
                .await
                .map_err(|e| HostError::upstream(format!("sqlite worker failed: {e}")))?
            }
            _ => Err(HostError::wrong_kind("this kind of database is not supported by sql")),
        }
    }
    .await;
    let denied = result.as_ref().err().is_some_and(HostError::is_denial);
    DatabaseCheck { target, privileges, error: result.err().map(|e| e.message()), denied }
}

// ---------------------------------------------------------------- PostgreSQL

async fn pg_connect(credential: &str, pg: &Postgres) -> Result<PgConn, HostError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&pg.host)
        .port(pg.port)
        .dbname(&pg.database)
        .user(&pg.user)
        .application_name("skillbox")
        .connect_timeout(CONNECT_TIMEOUT)
        // The server stops a runaway statement even if this host's timer is late, and
        // string literals lex the way `pg_read_only_guard` reads them.
        .options(format!("-c statement_timeout={} -c standard_conforming_strings=on", STATEMENT_TIMEOUT.as_millis()));
    if let Some(password) = &pg.password {
        config.password(expose(password));
    }
    // TLS unless the host is loopback (or a Unix socket) or the credential says
    // `"sslmode": "disable"`; `"ssl": true` requires it even on loopback.
    let (client, task) = if pg.ssl || (!pg.ssl_disabled && !is_loopback(&pg.host)) {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        let (client, connection) = config.connect(tls()?).await.map_err(|e| pg_connect_error(&e, true))?;
        (client, tokio::spawn(drive(connection)))
    } else {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, connection) =
            config.connect(tokio_postgres::NoTls).await.map_err(|e| pg_connect_error(&e, false))?;
        (client, tokio::spawn(drive(connection)))
    };
    let mut conn = PgConn { client, privileges: Vec::new(), task };
    conn.privileges = pg_role_privileges(&conn.client).await?;
    if !conn.privileges.is_empty() && !pg.allow_privileged_role {
        return Err(HostError::denied(format!(
            "credential `{credential}` logs in as a privileged database role ({}): through it a skill could run \
             programs or read and write files on the database server, whatever skillbox allows. Store a \
             least-privilege role for it (`skillbox cred rotate {credential} --type database ...` with a role that \
             has only the grants the skill needs), or, if this role is deliberate, store it again with \
             --allow-privileged-role (every use is then audited as privileged)",
            conn.privileges.join(", ")
        )));
    }
    Ok(conn)
}

/// Roles whose membership lets a session reach beyond the database's own data: programs and
/// files on the server, other sessions, outbound connections from the server.
const PRIVILEGED_MEMBERSHIPS: &[&str] = &[
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_signal_backend",
    "pg_signal_autovacuum_worker",
    "pg_create_subscription",
];

/// What makes the session's role privileged, looked up once per connection: the attributes
/// `SUPERUSER`, `CREATEROLE` (it can grant itself any of the rest), `REPLICATION` and
/// `BYPASSRLS` on the role or any role it is a member of (it could `SET ROLE` to it), and
/// membership of [`PRIVILEGED_MEMBERSHIPS`]. Names only built-in roles and attributes,
/// never the login role's own name.
async fn pg_role_privileges(client: &tokio_postgres::Client) -> Result<Vec<String>, HostError> {
    let names = PRIVILEGED_MEMBERSHIPS.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT b.rolname::text, b.rolsuper, b.rolcreaterole, b.rolreplication, b.rolbypassrls \
         FROM pg_catalog.pg_roles b \
         WHERE pg_catalog.pg_has_role(current_user, b.oid, 'MEMBER') \
           AND (b.rolsuper OR b.rolcreaterole OR b.rolreplication OR b.rolbypassrls OR b.rolname IN ({names}))"
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| {
        HostError::upstream(format!("could not check the database role's privileges: {}", pg_message(&e)))
    })?;
    let mut found = std::collections::BTreeSet::new();
    for row in rows {
        let role: String = row.get(0);
        for (i, attribute) in [(1, "superuser"), (2, "CREATEROLE"), (3, "REPLICATION"), (4, "BYPASSRLS")] {
            if row.get::<_, bool>(i) {
                found.insert(attribute.to_owned());
            }
        }
        if PRIVILEGED_MEMBERSHIPS.contains(&role.as_str()) {
            found.insert(format!("member of {role}"));
        }
    }
    Ok(found.into_iter().collect())
}

/// Whether `host` is this machine: a Unix socket directory, `localhost`, or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A failed connection as the guest sees it: what went wrong, never the host, port, user or
/// the server's own words (which name them). The full message goes to the host's log.
fn pg_connect_error(e: &tokio_postgres::Error, tls: bool) -> HostError {
    tracing::warn!("could not connect to PostgreSQL: {}", pg_message(e));
    let reason = if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let what = match code {
            "28000" | "28P01" => "the server refused the login (unknown role, wrong password, or no pg_hba.conf entry)",
            "3D000" => "the database does not exist",
            "53300" => "the server has too many connections",
            "57P03" => "the server is not accepting connections now",
            _ => "the server refused the connection",
        };
        format!("{what} (SQLSTATE {code})")
    } else {
        let mut io = None;
        let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
        while let Some(s) = source {
            if let Some(e) = s.downcast_ref::<std::io::Error>() {
                io = Some(e.kind());
                break;
            }
            source = s.source();
        }
        let text = format!("{e} {}", e.source().map(|s| s.to_string()).unwrap_or_default()).to_ascii_lowercase();
        match io {
            Some(std::io::ErrorKind::ConnectionRefused) => "the connection was refused".to_owned(),
            Some(std::io::ErrorKind::TimedOut) => {
                format!("the connection timed out after {}s", CONNECT_TIMEOUT.as_secs())
            }
            _ if text.contains("lookup") || text.contains("resolve") => {
                "the host name could not be resolved".to_owned()
            }
            _ if tls && (text.contains("tls") || text.contains("certificate") || text.contains("ssl")) => {
                "TLS could not be set up (TLS is required for every host but loopback; the operator can store \
                 `\"sslmode\": \"disable\"` for a trusted network)"
                    .to_owned()
            }
            Some(kind) => format!("the connection failed ({kind})"),
            None => "the connection failed".to_owned(),
        }
    };
    HostError::upstream(format!(
        "could not connect to this credential's PostgreSQL database: {reason}; the host's log has the details"
    ))
}

/// Drives a connection until the client is dropped or the server hangs up.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!("postgres connection ended: {}", pg_message(&e));
    }
}

/// TLS with Mozilla's roots (rustls, ring); the server's certificate and name are verified.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, HostError> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| HostError::upstream(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

async fn pg_run(
    client: &tokio_postgres::Client,
    write: bool,
    op: Op,
    statement: &str,
    params: Vec<Value>,
) -> Result<Outcome, HostError> {
    let read_only = op == Op::Query && !write;
    if read_only {
        pg_read_only_guard(statement)?;
        // The database refuses writes inside this transaction, whatever the SQL says.
        client.batch_execute("BEGIN READ ONLY").await.map_err(pg_error)?;
    }
    let result = pg_statement(client, op, statement, params).await;
    if read_only {
        // Nothing a read-only query did is kept (not even `SET`s).
        let ended = client.batch_execute("ROLLBACK").await.map_err(pg_error);
        if result.is_ok() {
            ended?;
        }
    }
    result
}

/// Functions refused on read-only connections: they read, list or write files on the
/// database server, run SQL given as text (which the guard cannot see into), reach other
/// servers, or act on other sessions and the server itself.
const PG_REFUSED_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir",
    "pg_ls_replslotdir",
    "pg_ls_summariesdir",
    "pg_current_logfile",
    "pg_logdir_ls",
    "lo_import",
    "lo_export",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "ts_stat",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_log_backend_memory_contexts",
];

/// Name prefixes refused the same way: adminpack's `pg_file_*`, `dblink*`.
const PG_REFUSED_PREFIXES: &[&str] = &["pg_file_", "dblink"];

/// Refuses, on a read-only connection, what a read-only transaction does not stop: `COPY`
/// (`TO/FROM PROGRAM` runs a shell command on the server, `TO/FROM 'file'` reaches its
/// files, and `TO STDOUT` cannot be returned as rows anyway), `DO` (its body is a string
/// the guard cannot read), and [`PG_REFUSED_FUNCTIONS`].
///
/// The statement is split into words the way PostgreSQL's lexer does: comments dropped,
/// string and dollar-quoted literals skipped, unquoted names folded to lower case, quoted
/// names unquoted, each part of `schema.name` a word of its own, so case, quoting, comments
/// and `pg_catalog.` prefixes change nothing. Literals are skipped both with and without
/// backslash escapes and the words of both readings checked, so a mistaken reading cannot
/// hide a name (the connection also pins `standard_conforming_strings = on`). `U&"..."`
/// names, which could spell a name in escapes, are refused outright. What it cannot see: a
/// function defined in the database that calls these itself, so the role check at connect
/// is what really confines a session.
fn pg_read_only_guard(statement: &str) -> Result<(), HostError> {
    let refuse = |what: String| {
        Err(HostError::denied(format!(
            "{what} is refused on a read-only connection: it could run programs or reach files on the database \
             server, or run SQL given as text (skillbox refuses COPY, DO and the server-side file, program and \
             SQL-text functions unless the manifest has `[sql] write = true`)"
        )))
    };
    for backslashes in [false, true] {
        let words = pg_words(statement, backslashes);
        match words.first().map(|w| w.text.as_str()) {
            Some("copy") => return refuse("COPY".into()),
            Some("do") => return refuse("DO".into()),
            _ => {}
        }
        for word in &words {
            if word.unicode {
                return refuse("a U&\"...\" (Unicode-escaped) name".into());
            }
            let name = word.text.as_str();
            if PG_REFUSED_FUNCTIONS.contains(&name) || PG_REFUSED_PREFIXES.iter().any(|p| name.starts_with(p)) {
                return refuse(format!("`{name}`"));
            }
        }
    }
    Ok(())
}

/// A name in a PostgreSQL statement: an unquoted identifier or keyword (lower-cased), or a
/// quoted identifier (unquoted, lower-cased too: refusing `"PG_READ_FILE"` costs nothing).
#[derive(Debug)]
struct PgWord {
    text: String,
    /// Written `U&"..."`.
    unicode: bool,
}

/// The names in `sql`, literals and comments left out. `backslashes`: whether `\` escapes
/// in ordinary string literals (as with `standard_conforming_strings = off`).
fn pg_words(sql: &str, backslashes: bool) -> Vec<PgWord> {
    let b = sql.as_bytes();
    let n = b.len();
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
    let ident_char = |c: u8| ident_start(c) || c.is_ascii_digit() || c == b'$';
    // Index just past a string literal whose body starts at `i`.
    let skip_string = |mut i: usize, escapes: bool| -> usize {
        while i < n {
            match b[i] {
                b'\\' if escapes => i += 2,
                b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => return i + 1,
                _ => i += 1,
            }
        }
        n
    };
    // A quoted identifier whose body starts at `i`: its text and the index past it.
    let quoted = |mut i: usize| -> (String, usize) {
        let mut out = Vec::new();
        while i < n {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    out.push(b'"');
                    i += 2;
                    continue;
                }
                return (String::from_utf8_lossy(&out).to_lowercase(), i + 1);
            }
            out.push(b[i]);
            i += 1;
        }
        (String::from_utf8_lossy(&out).to_lowercase(), n)
    };
    let mut words = Vec::new();
    let mut i = 0;
    while i < n {
        let c = b[i];
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < n && b[i] != b'\n' && b[i] != b'\r' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // Block comments nest.
            let mut depth = 0usize;
            while i < n {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'\'' {
            i = skip_string(i + 1, backslashes);
        } else if c == b'"' {
            let (text, next) = quoted(i + 1);
            words.push(PgWord { text, unicode: false });
            i = next;
        } else if c == b'$' {
            // `$1` is a parameter; `$tag$ ... $tag$` a literal.
            let mut j = i + 1;
            if b.get(j).is_some_and(u8::is_ascii_digit) {
                while j < n && b[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
                continue;
            }
            while j < n && ident_char(b[j]) && b[j] != b'$' {
                j += 1;
            }
            if j < n && b[j] == b'$' {
                let tag = &b[i..=j];
                let body = j + 1;
                i = b[body..].windows(tag.len()).position(|w| w == tag).map_or(n, |p| body + p + tag.len());
            } else {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < n && ident_char(b[i]) {
                i += 1;
            }
            let word = String::from_utf8_lossy(&b[start..i]).to_ascii_lowercase();
            match (word.as_str(), b.get(i)) {
                ("e", Some(b'\'')) => i = skip_string(i + 1, true),
                ("b" | "x" | "n", Some(b'\'')) => i = skip_string(i + 1, backslashes),
                ("u", Some(b'&')) if b.get(i + 1) == Some(&b'\'') => i = skip_string(i + 2, backslashes),
                ("u", Some(b'&')) if b.get(i + 1) == Some(&b'"') => {
                    let (text, next) = quoted(i + 2);
                    words.push(PgWord { text, unicode: true });
                    i = next;
                }
                _ => words.push(PgWord { text: word, unicode: false }),
            }
        } else {
            i += 1;
        }
    }
    words
}

async fn pg_statement(
    client: &tokio_postgres::Client,
    op: Op,
    statement: &str,
    params: Vec<Value>,
) -> Result<Outcome, HostError> {
    let prepared = client.prepare(statement).await.map_err(pg_error)?;
    let types = prepared.params();
    if types.len() != params.len() {
        return Err(HostError::invalid(format!(
            "the statement takes {} parameter(s) but {} were given",
            types.len(),
            params.len()
        )));
    }
    let params = params
        .into_iter()
        .zip(types)
        .enumerate()
        .map(|(i, (value, ty))| PgParam::convert(i + 1, value, ty))
        .collect::<Result<Vec<_>, _>>()?;
    if op == Op::Execute {
        let changed = client.execute_raw(&prepared, params.iter()).await.map_err(pg_error)?;
        return Ok(Outcome::Changed(changed));
    }

    let columns: Vec<String> = prepared.columns().iter().map(|c| c.name().to_owned()).collect();
    for column in prepared.columns() {
        pg_column_supported(column.name(), column.type_())?;
    }
    let mut budget = Budget::new(&columns);
    let mut rows = Vec::new();
    let stream = client.query_raw(&prepared, params.iter()).await.map_err(pg_error)?;
    pin_mut!(stream);
    while let Some(row) = stream.next().await {
        let row = row.map_err(pg_error)?;
        budget.start_row(rows.len())?;
        let values = (0..row.len()).map(|i| pg_value(&row, i, &mut budget)).collect::<Result<Vec<_>, _>>()?;
        rows.push(values);
    }
    Ok(Outcome::Rows(Rows { columns, rows }))
}

/// A WIT value converted to the type PostgreSQL declared for its parameter.
#[derive(Debug)]
enum PgParam {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    Json(serde_json::Value),
}

impl PgParam {
    /// Converts parameter `$n`, refusing combinations that would lose data or need a cast.
    fn convert(n: usize, value: Value, ty: &Type) -> Result<PgParam, HostError> {
        let mismatch = |got: &str| {
            HostError::invalid(format!(
                "parameter ${n} is {ty} in this statement, but a {got} was given; pass a matching value or cast in SQL (e.g. `${n}::text`)"
            ))
        };
        let range = || HostError::invalid(format!("parameter ${n} does not fit in {ty}"));
        if matches!(value, Value::Null) {
            return Ok(PgParam::Null);
        }
        match *ty {
            Type::BOOL => match value {
                Value::Boolean(b) => Ok(PgParam::Bool(b)),
                other => Err(mismatch(kind(&other))),
            },
            Type::INT2 => match value {
                Value::Integer(i) => i16::try_from(i).map(PgParam::I16).map_err(|_| range()),
                other => Err(mismatch(kind(&other))),
            },
            Type::INT4 => match value {
                Value::Integer(i) => i32::try_from(i).map(PgParam::I32).map_err(|_| range()),
                other => Err(mismatch(kind(&other))),
            },
            Type::INT8 => match value {
                Value::Integer(i) => Ok(PgParam::I64(i)),
                other => Err(mismatch(kind(&other))),
            },
            Type::FLOAT4 => match value {
                Value::Float(f) => Ok(PgParam::F32(f as f32)),
                Value::Integer(i) => Ok(PgParam::F32(i as f32)),
                other => Err(mismatch(kind(&other))),
            },
            Type::FLOAT8 => match value {
                Value::Float(f) => Ok(PgParam::F64(f)),
                Value::Integer(i) => Ok(PgParam::F64(i as f64)),
                other => Err(mismatch(kind(&other))),
            },
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => match value {
                Value::Text(s) => Ok(PgParam::Text(s)),
                other => Err(mismatch(kind(&other))),
            },
            Type::BYTEA => match value {
                Value::Blob(b) => Ok(PgParam::Bytes(b)),
                other => Err(mismatch(kind(&other))),
            },
            Type::JSON | Type::JSONB => match value {
                Value::Text(s) => serde_json::from_str(&s)
                    .map(PgParam::Json)
                    .map_err(|e| HostError::invalid(format!("parameter ${n} is {ty} but its text is not JSON: {e}"))),
                other => Err(mismatch(kind(&other))),
            },
            _ => Err(HostError::invalid(format!(
                "parameter ${n} has type {ty}, which sql cannot pass directly; cast it in SQL, e.g. `${n}::text` or `${n}::bigint`"
            ))),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) => "integer",
        Value::Float(_) => "float",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
    }
}

impl ToSql for PgParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            PgParam::Null => Ok(IsNull::Yes),
            PgParam::Bool(v) => v.to_sql(ty, out),
            PgParam::I16(v) => v.to_sql(ty, out),
            PgParam::I32(v) => v.to_sql(ty, out),
            PgParam::I64(v) => v.to_sql(ty, out),
            PgParam::F32(v) => v.to_sql(ty, out),
            PgParam::F64(v) => v.to_sql(ty, out),
            PgParam::Text(v) => v.to_sql(ty, out),
            PgParam::Bytes(v) => v.to_sql(ty, out),
            PgParam::Json(v) => v.to_sql(ty, out),
        }
    }

    // `convert` already matched each value to its parameter's declared type.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Refuses, before any row is read, a column `pg_value` cannot represent.
fn pg_column_supported(name: &str, ty: &Type) -> Result<(), HostError> {
    match *ty {
        Type::BOOL
        | Type::INT2
        | Type::INT4
        | Type::INT8
        | Type::OID
        | Type::FLOAT4
        | Type::FLOAT8
        | Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::BYTEA
        | Type::JSON
        | Type::JSONB => Ok(()),
        _ => Err(HostError::invalid(format!(
            "column `{name}` has type {ty}, which sql cannot return directly; cast it in SQL, e.g. `{name}::text`"
        ))),
    }
}

/// The size of a column's value as the server sent it, read without copying it.
struct RawSize(usize);

impl<'a> tokio_postgres::types::FromSql<'a> for RawSize {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawSize(raw.len()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column `i` of `row` as a WIT value, charged to `budget` before it is copied.
fn pg_value(row: &tokio_postgres::Row, i: usize, budget: &mut Budget) -> Result<Value, HostError> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>, HostError> {
        row.try_get::<_, Option<T>>(i).map_err(|e| {
            HostError::upstream(format!("could not read column `{}`: {}", row.columns()[i].name(), pg_message(&e)))
        })
    }
    let ty = row.columns()[i].type_();
    let variable = matches!(*ty, Type::BYTEA | Type::JSON | Type::JSONB) || pg_text_type(ty);
    let raw = match get::<RawSize>(row, i)? {
        Some(RawSize(size)) if variable => size,
        _ => 8,
    };
    budget.charge(raw)?;
    let value = match *ty {
        Type::BOOL => get::<bool>(row, i)?.map(Value::Boolean),
        Type::INT2 => get::<i16>(row, i)?.map(|v| Value::Integer(v.into())),
        Type::INT4 => get::<i32>(row, i)?.map(|v| Value::Integer(v.into())),
        Type::INT8 => get::<i64>(row, i)?.map(Value::Integer),
        Type::OID => get::<u32>(row, i)?.map(|v| Value::Integer(v.into())),
        Type::FLOAT4 => get::<f32>(row, i)?.map(|v| Value::Float(v.into())),
        Type::FLOAT8 => get::<f64>(row, i)?.map(Value::Float),
        Type::BYTEA => get::<Vec<u8>>(row, i)?.map(Value::Blob),
        Type::JSON | Type::JSONB => match get::<serde_json::Value>(row, i)? {
            Some(json) => {
                // Written out again, JSON can grow (`1e2` is `100.0`): the difference counts too.
                let text = json.to_string();
                budget.charge(text.len().saturating_sub(raw))?;
                Some(Value::Text(text))
            }
            None => None,
        },
        _ => get::<String>(row, i)?.map(Value::Text),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// The column types `pg_value` returns as text (everything `pg_column_supported` allows
/// that is not a number, boolean, bytea or JSON).
fn pg_text_type(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN)
}

/// A PostgreSQL error as a guest error: bad SQL is `invalid`, a write in a
/// read-only transaction is `denied`, a cancelled statement is `limit`.
fn pg_error(e: tokio_postgres::Error) -> HostError {
    let message = pg_message(&e);
    let Some(code) = e.code() else { return HostError::upstream(format!("PostgreSQL: {message}")) };
    let code = code.code();
    if code == "25006" {
        return HostError::denied(format!(
            "the database refused a write: this skill's manifest does not allow SQL writes (add `[sql]\\nwrite = true` to its skill.toml if it must change data): {message}"
        ));
    }
    if code == "57014" {
        return limit(format!("the statement was cancelled (time limit {}s): {message}", STATEMENT_TIMEOUT.as_secs()));
    }
    if (code.starts_with("42") && code != "42501") || code.starts_with("22") || code == "08P01" {
        return HostError::invalid(format!("PostgreSQL rejected the statement: {message}"));
    }
    HostError::upstream(format!("PostgreSQL: {message}"))
}

/// The most useful text in a tokio-postgres error: the server's message,
/// detail and hint, or the client error with its cause.
fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut message = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            message += &format!("; {detail}");
        }
        if let Some(hint) = db.hint() {
            message += &format!("; hint: {hint}");
        }
        return message;
    }
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

// ---------------------------------------------------------------- SQLite

async fn sqlite_open(path: &str, write: bool) -> Result<Arc<Mutex<rusqlite::Connection>>, HostError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        // No SQLITE_OPEN_URI: the path is a file name, never `file:...?mode=rwc`.
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        flags |= if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        };
        let file =
            std::path::Path::new(&path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let mut conn = rusqlite::Connection::open_with_flags(&path, flags)
            .map_err(|e| HostError::upstream(format!("could not open SQLite database `{file}`: {e}")))?;
        // SQLite allocates in this process: no string or blob it builds (a bound parameter,
        // a stored value, `zeroblob(1e9)`) may be larger than a whole result may be.
        let max_length = std::os::raw::c_int::try_from(MAX_RESULT_BYTES).expect("16 MiB fits a C int");
        // SAFETY: `conn` is open and owned here, and `sqlite3_limit` only sets a number on it.
        unsafe { rusqlite::ffi::sqlite3_limit(conn.handle(), rusqlite::ffi::SQLITE_LIMIT_LENGTH, max_length) };
        // ATTACH (and VACUUM INTO, which attaches) would reach files the
        // operator never granted; refuse them whatever the manifest says.
        conn.authorizer(Some(|ctx: AuthContext<'_>| match ctx.action {
            AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
            // A file name given as a parameter reaches the authorizer as NULL,
            // which rusqlite reports as an unknown action with the raw code.
            AuthAction::Unknown { code: rusqlite::ffi::SQLITE_ATTACH | rusqlite::ffi::SQLITE_DETACH, .. } => {
                Authorization::Deny
            }
            // `database_list` shows the file's full path, which stays host-side.
            AuthAction::Pragma { pragma_name, .. } if pragma_name.eq_ignore_ascii_case("database_list") => {
                Authorization::Deny
            }
            AuthAction::Read { table_name, .. } if table_name.eq_ignore_ascii_case("pragma_database_list") => {
                Authorization::Deny
            }
            _ => Authorization::Allow,
        }))
        .map_err(|e| HostError::upstream(format!("could not set up SQLite database `{file}`: {e}")))?;
        Ok(Arc::new(Mutex::new(conn)))
    })
    .await
    .map_err(|e| HostError::Trap(wasmtime::Error::msg(format!("sqlite worker failed: {e}"))))?
}

/// Runs one statement on a blocking thread; stops it at `deadline`.
fn sqlite_run(
    conn: &mut rusqlite::Connection,
    op: Op,
    statement: &str,
    params: &[Value],
    deadline: Instant,
) -> Result<Outcome, HostError> {
    // Checked every 10k VM steps, so a runaway query stops near the deadline.
    let setup = |e| HostError::upstream(format!("SQLite: could not set the time limit: {e}"));
    conn.progress_handler(10_000, Some(move || Instant::now() > deadline)).map_err(setup)?;
    let result = sqlite_statement(conn, op, statement, params);
    conn.progress_handler(0, None::<fn() -> bool>).map_err(setup)?;
    result
}

fn sqlite_statement(
    conn: &rusqlite::Connection,
    op: Op,
    statement: &str,
    params: &[Value],
) -> Result<Outcome, HostError> {
    let mut stmt = conn.prepare(statement).map_err(|e| sqlite_error(e, true))?;
    bind_sqlite(&mut stmt, params)?;
    if op == Op::Execute {
        // `raw_execute` steps through any rows a statement returns and counts the changes.
        return match stmt.raw_execute() {
            Ok(changed) => Ok(Outcome::Changed(changed as u64)),
            Err(rusqlite::Error::ExecuteReturnedResults) => Ok(Outcome::Changed(0)),
            Err(e) => Err(sqlite_error(e, false)),
        };
    }
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut budget = Budget::new(&columns);
    let mut out = Vec::new();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next().map_err(|e| sqlite_error(e, false))? {
        budget.start_row(out.len())?;
        let values = (0..columns.len())
            .map(|i| {
                let value = row.get_ref(i).map_err(|e| sqlite_error(e, false))?;
                budget.charge(match value {
                    ValueRef::Text(b) | ValueRef::Blob(b) => b.len(),
                    _ => 8,
                })?;
                Ok(sqlite_value(value))
            })
            .collect::<Result<Vec<_>, HostError>>()?;
        out.push(values);
    }
    Ok(Outcome::Rows(Rows { columns, rows: out }))
}

/// Binds `params` by number: `$N`, `?N` and `:N` take `params[N-1]`, so `$2`
/// before `$1` in the text still works; a bare `?` takes the next position.
fn bind_sqlite(stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> Result<(), HostError> {
    let count = stmt.parameter_count();
    let mut used = 0usize;
    for index in 1..=count {
        let number = match stmt.parameter_name(index) {
            None => index,
            Some(name) => name[1..].parse::<usize>().map_err(|_| {
                HostError::invalid(format!("parameter `{name}` is named; use numbered parameters ($1, ?1) or bare `?`"))
            })?,
        };
        let Some(value) = number.checked_sub(1).and_then(|i| params.get(i)) else {
            return Err(HostError::invalid(format!(
                "the statement uses parameter {number} but only {} were given",
                params.len()
            )));
        };
        used = used.max(number);
        let bound = match value {
            Value::Null => stmt.raw_bind_parameter(index, rusqlite::types::Null),
            Value::Boolean(b) => stmt.raw_bind_parameter(index, *b),
            Value::Integer(i) => stmt.raw_bind_parameter(index, *i),
            Value::Float(f) => stmt.raw_bind_parameter(index, *f),
            Value::Text(s) => stmt.raw_bind_parameter(index, s.as_str()),
            Value::Blob(b) => stmt.raw_bind_parameter(index, b.as_slice()),
        };
        bound.map_err(|e| sqlite_error(e, true))?;
    }
    if used != params.len() {
        return Err(HostError::invalid(format!(
            "the statement takes {used} parameter(s) but {} were given",
            params.len()
        )));
    }
    Ok(())
}

fn sqlite_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// An SQLite error as a guest error; `preparing` marks errors in the SQL text itself.
fn sqlite_error(e: rusqlite::Error, preparing: bool) -> HostError {
    use rusqlite::ErrorCode;
    let code = e.sqlite_error_code();
    match code {
        Some(ErrorCode::ReadOnly) => HostError::denied(format!(
            "the database refused a write: this skill's manifest does not allow SQL writes (add `[sql]\\nwrite = true` to its skill.toml if it must change data): {e}"
        )),
        Some(ErrorCode::AuthorizationForStatementDenied) => HostError::denied(format!(
            "SQLite refused the statement: ATTACH, DETACH and PRAGMA database_list are not allowed: {e}"
        )),
        Some(ErrorCode::OperationInterrupted) => {
            limit(format!("the statement ran longer than {}s and was stopped", STATEMENT_TIMEOUT.as_secs()))
        }
        Some(ErrorCode::TooBig) => limit(format!(
            "SQLite refused to build a string or blob over the {} MiB limit on a value: {e}",
            MAX_RESULT_BYTES / (1024 * 1024)
        )),
        _ if preparing || matches!(e, rusqlite::Error::SqlInputError { .. }) => {
            HostError::invalid(format!("SQLite rejected the statement: {e}"))
        }
        _ => HostError::upstream(format!("SQLite: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> bool {
        pg_read_only_guard(sql).is_err()
    }

    #[test]
    fn the_guard_reads_words_as_postgresql_does() {
        for sql in [
            "COPY (SELECT 1) TO PROGRAM 'id'",
            "  -- c\n/* a /* nested */ b */ copy t TO '/tmp/x'",
            "do $$ begin end $$",
            "SELECT PG_READ_FILE('x')",
            "SELECT \"pg_read_file\"('x')",
            "SELECT pg_catalog.\"PG_LS_DIR\"('.')",
            "SELECT pg_catalog . /**/ pg_stat_file('x')",
            "SELECT dblink_exec('x', 'y')",
            "SELECT pg_file_write('a', 'b', false)",
            "SELECT U&\"pg_read_fil\\0065\"('x')",
            "SELECT $a$ x $a$, pg_read_file('x') -- $a$",
            // Whichever way backslashes are read, the call is seen.
            "SELECT 'a\\', pg_read_file('x') -- '",
            "SELECT E'\\' ', pg_read_file('x') -- '",
        ] {
            assert!(refused(sql), "{sql}");
        }
        for sql in [
            "SELECT 'pg_read_file', $$copy$$, $t$ pg_ls_dir $t$ -- pg_read_file",
            "SELECT 1 /* COPY */",
            "SELECT a$copy FROM t",
            "SELECT \"copy\" FROM t",
            "SELECT $1::text AS pg_read_files_count",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            assert!(!refused(sql), "{sql}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.9.9.9", "::1", "[::1]", "/var/run/postgresql"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["db.internal", "10.0.0.1", "192.0.2.2", "localhost.example.com", "::2"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
