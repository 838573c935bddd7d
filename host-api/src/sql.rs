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
//! `SQLITE_OPEN_READ_ONLY`.

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
        let open = self.table.get(&db)?;
        let (name, vault_ref) = (open.name().to_owned(), open.vault_ref().clone());
        let SecretValue::Database(database) = &open.value else {
            return Err(HostError::wrong_kind(format!(
                "credential `{name}` is a {} credential; sql needs a database credential",
                open.value.kind().as_str()
            )));
        };
        let database = database.clone();
        let label = self.ctx.redactor().redact_str(&database_label(&database)).into_owned();
        let write = self.ctx.invocation.policy.sql_write;

        // The tripwire: SQL text and parameters go to a server; no secret may be in them.
        self.ctx.check_outbound(op.name(), statement.as_bytes())?;
        for param in &params {
            match param {
                Value::Text(text) => self.ctx.check_outbound(op.name(), text.as_bytes())?,
                Value::Blob(bytes) => self.ctx.check_outbound(op.name(), bytes)?,
                _ => {}
            }
        }
        let started = Instant::now();
        let result = match check(op, write, &statement) {
            Ok(()) => {
                let key = key(&vault_ref);
                let work = self.ctx.sql.run(&key, &database, write, op, &statement, params);
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

        if let Err(error) = &result
            && error.is_denial()
        {
            self.ctx.record_denial(Some(&name), op.name(), error);
        }
        let mut event = self.ctx.audit_event(AuditAction::Use, Some(&name), op.name());
        event.credential = Some(vault_ref);
        event.detail["database"] = label.into();
        event.detail["duration_ms"] = (started.elapsed().as_millis() as u64).into();
        match &result {
            Ok(outcome) => event.detail["rows"] = outcome.count().into(),
            Err(error) => {
                event.success = false;
                event.error = Some(error.message());
            }
        }
        self.ctx.audit_use(event)?;
        result
    }
}

/// Refusals that need no database: writes under a read-only manifest, sizes.
fn check(op: Op, write: bool, statement: &str) -> Result<(), HostError> {
    if op == Op::Execute && !write {
        return Err(HostError::denied(
            "sql.execute is refused: this skill's manifest does not allow SQL writes; add `[sql]\\nwrite = true` to its skill.toml if it must change data",
        ));
    }
    if statement.len() > MAX_STATEMENT_BYTES {
        return Err(limit(format!(
            "the statement is {} bytes, over the {MAX_STATEMENT_BYTES}-byte limit",
            statement.len()
        )));
    }
    Ok(())
}

impl Connections {
    /// Runs `statement` on the cached connection for `key`, opening it first if needed.
    async fn run(
        &mut self,
        key: &str,
        database: &Database,
        write: bool,
        op: Op,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Outcome, HostError> {
        if !self.open.contains_key(key) {
            let conn = match database {
                Database::Postgres(pg) => Conn::Postgres(pg_connect(pg).await?),
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

/// Counts result size and rows against the limits.
struct Budget {
    bytes: usize,
}

impl Budget {
    fn new(columns: &[String]) -> Budget {
        Budget { bytes: columns.iter().map(|c| c.len()).sum() }
    }

    fn add_row(&mut self, rows: usize, row: &[Value]) -> Result<(), HostError> {
        if rows >= MAX_ROWS {
            return Err(limit(format!(
                "the query returned more than {MAX_ROWS} rows; add a LIMIT or a narrower WHERE"
            )));
        }
        self.bytes += row
            .iter()
            .map(|v| match v {
                Value::Text(s) => s.len(),
                Value::Blob(b) => b.len(),
                _ => 8,
            })
            .sum::<usize>();
        if self.bytes > MAX_RESULT_BYTES {
            return Err(limit(format!(
                "the query's result is over the {} MiB limit; select fewer rows or columns",
                MAX_RESULT_BYTES / (1024 * 1024)
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- PostgreSQL

async fn pg_connect(pg: &Postgres) -> Result<PgConn, HostError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&pg.host)
        .port(pg.port)
        .dbname(&pg.database)
        .user(&pg.user)
        .application_name("skillbox")
        .connect_timeout(CONNECT_TIMEOUT)
        // The server stops a runaway statement even if this host's timer is late.
        .options(format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis()));
    if let Some(password) = &pg.password {
        config.password(expose(password));
    }
    let connecting = |e: tokio_postgres::Error| {
        HostError::upstream(format!(
            "could not connect to PostgreSQL at {}:{}/{}: {}",
            pg.host,
            pg.port,
            pg.database,
            pg_message(&e)
        ))
    };
    let (client, task) = if pg.ssl {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        let (client, connection) = config.connect(tls()?).await.map_err(connecting)?;
        (client, tokio::spawn(drive(connection)))
    } else {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(connecting)?;
        (client, tokio::spawn(drive(connection)))
    };
    Ok(PgConn { client, task })
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
        let values = (0..row.len()).map(|i| pg_value(&row, i)).collect::<Result<Vec<_>, _>>()?;
        budget.add_row(rows.len(), &values)?;
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

fn pg_value(row: &tokio_postgres::Row, i: usize) -> Result<Value, HostError> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>, HostError> {
        row.try_get::<_, Option<T>>(i).map_err(|e| {
            HostError::upstream(format!("could not read column `{}`: {}", row.columns()[i].name(), pg_message(&e)))
        })
    }
    let value = match *row.columns()[i].type_() {
        Type::BOOL => get::<bool>(row, i)?.map(Value::Boolean),
        Type::INT2 => get::<i16>(row, i)?.map(|v| Value::Integer(v.into())),
        Type::INT4 => get::<i32>(row, i)?.map(|v| Value::Integer(v.into())),
        Type::INT8 => get::<i64>(row, i)?.map(Value::Integer),
        Type::OID => get::<u32>(row, i)?.map(|v| Value::Integer(v.into())),
        Type::FLOAT4 => get::<f32>(row, i)?.map(|v| Value::Float(v.into())),
        Type::FLOAT8 => get::<f64>(row, i)?.map(Value::Float),
        Type::BYTEA => get::<Vec<u8>>(row, i)?.map(Value::Blob),
        Type::JSON | Type::JSONB => get::<serde_json::Value>(row, i)?.map(|v| Value::Text(v.to_string())),
        _ => get::<String>(row, i)?.map(Value::Text),
    };
    Ok(value.unwrap_or(Value::Null))
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
        let values = (0..columns.len())
            .map(|i| row.get_ref(i).map(sqlite_value).map_err(|e| sqlite_error(e, false)))
            .collect::<Result<Vec<_>, _>>()?;
        budget.add_row(out.len(), &values)?;
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
        _ if preparing || matches!(e, rusqlite::Error::SqlInputError { .. }) => {
            HostError::invalid(format!("SQLite rejected the statement: {e}"))
        }
        _ => HostError::upstream(format!("SQLite: {e}")),
    }
}
