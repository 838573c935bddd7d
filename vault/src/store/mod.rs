//! Where the vault's rows live: one small SQL interface, implemented by SQLite (the embedded
//! default) and PostgreSQL (shared by a fleet of hosts).
//!
//! Everything above this module — envelope encryption, MACed records, grants, the audit
//! chain, API keys, leases — is written once against [`Sql`] and [`Store`]. A backend only
//! moves values: it binds [`Value`]s, returns rows of them, and runs write transactions that
//! are serialised with every other writer of the same vault (SQLite: `BEGIN IMMEDIATE`;
//! PostgreSQL: `SELECT ... FOR UPDATE` on the audit chain's head row, taken first in every
//! write transaction). Shared SQL is written in the dialect both accept, with `?N`
//! placeholders (rewritten to `$N` for PostgreSQL); integers are 64-bit, text is text, bytes
//! are bytes, so a row — and its MAC — reads the same from either.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::fmt;

use crate::error::{Error, Result};

/// One SQL value. The vault stores nothing else: no floats, no dates (times are Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Builds the parameter list of a statement: `params![a, b, c]`.
macro_rules! params {
    () => {
        &[] as &[$crate::store::Value]
    };
    ($($x:expr),+ $(,)?) => {
        &[$($crate::store::ToValue::to_value(&$x)),+] as &[$crate::store::Value]
    };
}
pub(crate) use params;

/// A Rust value that binds as a [`Value`].
pub(crate) trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                // Lossless for every value the vault stores (ids, counts, Unix ms).
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u16, u8);
impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

/// A Rust value read from a [`Value`].
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

fn wrong(v: &Value, want: &str) -> String {
    let got = match v {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    format!("expected {want}, found {got}")
}

impl FromValue for Value {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        Ok(v.clone())
    }
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(n) => Ok(*n),
            v => Err(wrong(v, "an integer")),
        }
    }
}
macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> std::result::Result<Self, String> {
                let n = i64::from_value(v)?;
                <$t>::try_from(n).map_err(|_| format!("integer {n} is out of range for {}", stringify!($t)))
            }
        }
    )*};
}
int_from_value!(i32, u32, u64, u16, u8, usize);
impl FromValue for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            v => Err(wrong(v, "text")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            v => Err(wrong(v, "bytes")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One row of a result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    values: &'a [Value],
}

impl Row<'_> {
    /// Column `i`, converted.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.values.get(i).ok_or_else(|| DbError::convert(format!("the row has no column {i}")))?;
        T::from_value(v).map_err(|e| DbError::convert(format!("column {i}: {e}")).into())
    }

    /// Column `i` as stored.
    pub(crate) fn get_ref(&self, i: usize) -> Result<&Value> {
        self.values.get(i).ok_or_else(|| DbError::convert(format!("the row has no column {i}")).into())
    }
}

/// Rows returned by a query.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub(crate) rows: Vec<Vec<Value>>,
}

impl Rows {
    pub(crate) fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|r| Row { values: r })
    }
}

/// Which engine a store runs on (for the few statements whose dialects differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// SQL for "now" in Unix milliseconds, from the database's clock.
    pub(crate) fn now_ms_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// A database failure (not a decision): the engine's error, a lost connection, a value of
/// the wrong type. Never carries a parameter value.
#[derive(Debug)]
pub struct DbError {
    /// Boxed: the engines' errors are large, and every `Result` of the crate carries this.
    kind: Box<DbErrorKind>,
}

#[derive(Debug)]
enum DbErrorKind {
    Sqlite(rusqlite::Error),
    Postgres(tokio_postgres::Error),
    /// The store could not be reached (pool timeout, connection refused, server gone).
    Unavailable(String),
    Convert(String),
    NoRows,
}

impl DbError {
    pub(crate) fn convert(what: String) -> DbError {
        DbError { kind: Box::new(DbErrorKind::Convert(what)) }
    }

    pub(crate) fn unavailable(what: String) -> DbError {
        DbError { kind: Box::new(DbErrorKind::Unavailable(what)) }
    }

    pub(crate) fn no_rows() -> DbError {
        DbError { kind: Box::new(DbErrorKind::NoRows) }
    }

    /// True when the store could not be reached at all (as opposed to refusing a statement).
    pub fn is_unavailable(&self) -> bool {
        match &*self.kind {
            DbErrorKind::Unavailable(_) => true,
            DbErrorKind::Postgres(e) => e.is_closed() || e.code().is_none(),
            _ => false,
        }
    }

    /// True when a statement returned no row where one was required.
    pub(crate) fn is_no_rows(&self) -> bool {
        matches!(*self.kind, DbErrorKind::NoRows | DbErrorKind::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }

    /// The SQLite error, if this is one (tests of SQLite-specific failures).
    pub fn sqlite(&self) -> Option<&rusqlite::Error> {
        match &*self.kind {
            DbErrorKind::Sqlite(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLSTATE code PostgreSQL reported, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match &*self.kind {
            DbErrorKind::Postgres(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            DbErrorKind::Sqlite(e) => write!(f, "{e}"),
            DbErrorKind::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "PostgreSQL: {} ({})", db.message(), db.code().code()),
                None => write!(f, "PostgreSQL: {e}"),
            },
            DbErrorKind::Unavailable(what) => write!(f, "{what}"),
            DbErrorKind::Convert(what) => write!(f, "unexpected value in the database: {what}"),
            DbErrorKind::NoRows => write!(f, "the query returned no row"),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.kind {
            DbErrorKind::Sqlite(e) => Some(e),
            DbErrorKind::Postgres(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError { kind: Box::new(DbErrorKind::Sqlite(e)) }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError { kind: Box::new(DbErrorKind::Postgres(e)) }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Database(e.into())
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Database(e.into())
    }
}

/// The statements a connection or an open transaction runs. Object safe: the vault's code
/// takes `&dyn Sql` and never knows which engine it talks to. See [`SqlExt`] for the
/// convenient forms.
pub(crate) trait Sql {
    /// Runs a statement; returns how many rows it changed.
    fn exec_values(&self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs a query; returns every row.
    fn query_values(&self, sql: &str, params: &[Value]) -> Result<Rows>;
    /// Runs several statements without parameters (schema changes).
    fn execute_batch(&self, sql: &str) -> Result<()>;
    /// Which engine this is.
    fn backend(&self) -> Backend;
}

/// Parameters of a statement: `params![..]`, a `Vec<Value>`, or an array of one type.
pub(crate) trait Params {
    fn values(&self) -> std::borrow::Cow<'_, [Value]>;
}
impl<T: ToValue> Params for &[T] {
    fn values(&self) -> std::borrow::Cow<'_, [Value]> {
        std::borrow::Cow::Owned(self.iter().map(ToValue::to_value).collect())
    }
}
impl<T: ToValue> Params for &Vec<T> {
    fn values(&self) -> std::borrow::Cow<'_, [Value]> {
        std::borrow::Cow::Owned(self.iter().map(ToValue::to_value).collect())
    }
}
impl<T: ToValue> Params for Vec<T> {
    fn values(&self) -> std::borrow::Cow<'_, [Value]> {
        std::borrow::Cow::Owned(self.iter().map(ToValue::to_value).collect())
    }
}
impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(&self) -> std::borrow::Cow<'_, [Value]> {
        std::borrow::Cow::Owned(self.iter().map(ToValue::to_value).collect())
    }
}

impl<S: Sql + ?Sized> Sql for &S {
    fn exec_values(&self, sql: &str, params: &[Value]) -> Result<u64> {
        (**self).exec_values(sql, params)
    }
    fn query_values(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        (**self).query_values(sql, params)
    }
    fn execute_batch(&self, sql: &str) -> Result<()> {
        (**self).execute_batch(sql)
    }
    fn backend(&self) -> Backend {
        (**self).backend()
    }
}

/// The convenient forms of [`Sql`], for every implementation.
pub(crate) trait SqlExt: Sql {
    /// Runs a statement; returns how many rows it changed.
    fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        Ok(self.exec_values(sql, &params.values())? as usize)
    }

    /// The first row, mapped; no row is an error (use [`OptionalExtension::optional`]).
    fn query_row<T>(&self, sql: &str, params: impl Params, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        let rows = self.query_values(sql, &params.values())?;
        match rows.iter().next() {
            Some(r) => f(&r),
            None => Err(DbError::no_rows().into()),
        }
    }

    /// Every row, mapped.
    fn query_map<T>(&self, sql: &str, params: impl Params, mut f: impl FnMut(&Row<'_>) -> Result<T>) -> Result<Vec<T>> {
        let rows = self.query_values(sql, &params.values())?;
        rows.iter().map(|r| f(&r)).collect()
    }

    /// Every row, as stored.
    fn query_rows(&self, sql: &str, params: impl Params) -> Result<Rows> {
        self.query_values(sql, &params.values())
    }

    /// Whether the query returns a row.
    fn exists(&self, sql: &str, params: impl Params) -> Result<bool> {
        Ok(!self.query_values(sql, &params.values())?.rows.is_empty())
    }
}
impl<S: Sql + ?Sized> SqlExt for S {}

/// `.optional()` on a single-row result: no row becomes `None`.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}
impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::Database(e)) if e.is_no_rows() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One write transaction, serialised with every other writer of the vault (see the module
/// docs). Dropped without [`Txn::commit`], it rolls back and leaves nothing behind.
pub(crate) struct Txn<'a>(Box<dyn TxImpl + 'a>);

/// What a backend's transaction provides.
pub(crate) trait TxImpl: Sql {
    fn commit(self: Box<Self>) -> Result<()>;
}

impl<'a> Txn<'a> {
    pub(crate) fn new(inner: Box<dyn TxImpl + 'a>) -> Self {
        Txn(inner)
    }

    /// Makes every change of the transaction durable, or none of them.
    pub(crate) fn commit(self) -> Result<()> {
        self.0.commit()
    }

    /// [`Txn::commit`] for a transaction holding an audit row: a failure is
    /// [`Error::Audit`] (the change and its row are both gone, and nothing was released).
    pub(crate) fn commit_audited(self) -> Result<()> {
        self.0.commit().map_err(|source| Error::Audit { source: Box::new(source) })
    }
}

impl Sql for Txn<'_> {
    fn exec_values(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.0.exec_values(sql, params)
    }
    fn query_values(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        self.0.query_values(sql, params)
    }
    fn execute_batch(&self, sql: &str) -> Result<()> {
        self.0.execute_batch(sql)
    }
    fn backend(&self) -> Backend {
        self.0.backend()
    }
}

/// Facts for `skillbox vault status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoreFacts {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The file, or the database URL without its password.
    pub location: String,
    /// The server's version (PostgreSQL).
    pub server_version: Option<String>,
    /// Whether the connection is encrypted (PostgreSQL); `None` for a local file.
    pub tls: Option<bool>,
}

/// A vault's storage: a connection for reads, write transactions, and the engine-specific
/// chores. Implemented by [`sqlite::SqliteStore`] and [`postgres::PgStore`].
pub(crate) trait Store: Sql + Send {
    /// Starts a write transaction, serialised with every other writer of this vault.
    fn begin(&self) -> Result<Txn<'_>>;
    /// Starts a transaction serialised with schema changes (init, migrations); usable
    /// before the schema exists.
    fn begin_schema(&self) -> Result<Txn<'_>> {
        self.begin()
    }
    /// The schema version stored (0 when the store is empty).
    fn schema_version(&self) -> Result<i64>;
    /// Announcements of changes made by other hosts, where the engine has them.
    fn watch_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Starts listening for announcements about vault `vault_id` (once its id is known).
    fn listen(&self, _vault_id: &str) {}
    /// After a delete: make sure the deleted ciphertext is gone from disk too.
    fn after_delete(&self) {}
    /// The store, for messages and `vault status`.
    fn facts(&self) -> StoreFacts;
}

/// Where a vault is kept: a SQLite file (a path or a `sqlite:` URL) or a PostgreSQL
/// database (a `postgres://` or `postgresql://` URL).
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string (may hold a password: never printed whole).
    Postgres(String),
}

impl Location {
    /// Parses `--store` / `SKILLBOX_STORE` / `--vault`: `postgres://...`, `postgresql://...`,
    /// `sqlite:PATH`, `sqlite://PATH`, or a plain path.
    pub fn parse(text: &str) -> Location {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Location::Postgres(text.to_owned())
        } else if let Some(path) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
            Location::Sqlite(path.into())
        } else {
            Location::Sqlite(text.into())
        }
    }

    /// The location as a user may see it: a PostgreSQL URL loses its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => postgres::redact(url),
        }
    }

    /// Whether the location holds a password (a PostgreSQL URL with one), which must not be
    /// shown or put on a command line.
    pub fn has_password(&self) -> bool {
        match self {
            Location::Sqlite(_) => false,
            Location::Postgres(url) => postgres::redact(url) != *url,
        }
    }

    /// The backend this location selects.
    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display())
    }
}
