//! The embedded store: one SQLite file in WAL mode, one connection per open vault. Writers in
//! other processes are serialised by SQLite's write lock (`BEGIN IMMEDIATE`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{Backend, DbError, Rows, Sql, Store, StoreFacts, TxImpl, Txn, Value};
use crate::error::{Error, Result};

/// How long a writer waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn value(v: ValueRef<'_>) -> Result<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Real(_) => return Err(DbError::convert("a floating-point value".into()).into()),
        ValueRef::Text(t) => {
            Value::Text(String::from_utf8(t.to_vec()).map_err(|_| DbError::convert("text that is not UTF-8".into()))?)
        }
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

fn exec(conn: &Connection, sql: &str, params: &[Value]) -> Result<u64> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
}

fn query(conn: &Connection, sql: &str, params: &[Value]) -> Result<Rows> {
    let mut stmt = conn.prepare_cached(sql)?;
    let n = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Rows::default();
    while let Some(r) = rows.next()? {
        out.rows.push((0..n).map(|i| value(r.get_ref(i)?)).collect::<Result<_>>()?);
    }
    Ok(out)
}

/// A vault in one SQLite file.
pub(crate) struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl Sql for Connection {
    fn exec_values(&self, sql: &str, params: &[Value]) -> Result<u64> {
        exec(self, sql, params)
    }
    fn query_values(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        query(self, sql, params)
    }
    fn execute_batch(&self, sql: &str) -> Result<()> {
        Ok(Connection::execute_batch(self, sql)?)
    }
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }
}

impl Sql for SqliteStore {
    fn exec_values(&self, sql: &str, params: &[Value]) -> Result<u64> {
        exec(&self.conn, sql, params)
    }
    fn query_values(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        query(&self.conn, sql, params)
    }
    fn execute_batch(&self, sql: &str) -> Result<()> {
        Ok(self.conn.execute_batch(sql)?)
    }
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }
}

struct SqliteTx<'a>(rusqlite::Transaction<'a>);

impl Sql for SqliteTx<'_> {
    fn exec_values(&self, sql: &str, params: &[Value]) -> Result<u64> {
        exec(&self.0, sql, params)
    }
    fn query_values(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        query(&self.0, sql, params)
    }
    fn execute_batch(&self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }
}

impl TxImpl for SqliteTx<'_> {
    fn commit(self: Box<Self>) -> Result<()> {
        Ok(self.0.commit()?)
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoint (with its fsync) every ~40 MiB of WAL instead of every 4 MiB:
    // resolves rewrite the same few pages, so rarer checkpoints write far less.
    // Deletes still checkpoint at once (see `after_delete`).
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase)
}

impl SqliteStore {
    /// Creates the file (owner-only; refusing to clobber anything) and switches it to WAL.
    /// On failure the caller removes the file with [`SqliteStore::remove`].
    pub(crate) fn create(path: &Path) -> Result<SqliteStore> {
        check_vault_path(path)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists { location: path.display().to_string() });
            }
            Err(source) => return Err(Error::Io { action: "creating vault", path: path.to_path_buf(), source }),
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        configure(&conn)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::InvalidInput {
                what: "vault path",
                reason: format!("the filesystem does not support WAL mode (got {mode})"),
            });
        }
        Ok(SqliteStore { conn, path: path.to_path_buf() })
    }

    /// Removes a half-created vault file and its WAL files.
    pub(crate) fn remove(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// Opens an existing vault file ([`Error::NotInitialized`] when there is none).
    pub(crate) fn open(path: &Path) -> Result<SqliteStore> {
        check_vault_path(path)?;
        let missing = || Error::NotInitialized { location: path.display().to_string() };
        match std::fs::metadata(path) {
            Ok(m) if m.len() > 0 => {}
            Ok(_) => return Err(missing()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
            Err(source) => return Err(Error::Io { action: "opening vault", path: path.to_path_buf(), source }),
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| if not_a_database(&e) { missing() } else { e.into() })?;
        configure(&conn)?;
        let store = SqliteStore { conn, path: path.to_path_buf() };
        match store.schema_version() {
            Err(Error::Database(e)) if e.sqlite().is_some_and(not_a_database) => Err(missing()),
            Err(e) => Err(e),
            Ok(0) => Err(missing()),
            Ok(_) => Ok(store),
        }
    }
}

impl Store for SqliteStore {
    fn begin(&self) -> Result<Txn<'_>> {
        // The vault's lock gives this connection to one caller at a time, so no other
        // transaction is open on it.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        Ok(Txn::new(Box::new(SqliteTx(tx))))
    }

    fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn after_delete(&self) {
        // Deleted ciphertext must not linger in the WAL: checkpoint it into the main file
        // (where `secure_delete` zeroes freed pages) and truncate the WAL.
        if let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "could not checkpoint the vault's WAL after a delete");
        }
    }

    fn facts(&self) -> StoreFacts {
        StoreFacts {
            backend: "sqlite".into(),
            location: self.path.display().to_string(),
            server_version: Some(rusqlite::version().to_owned()),
            tls: None,
        }
    }
}

/// Refuses a vault path that someone other than this user could redirect: its last component
/// is a symbolic link, or its directory is writable by others or owned by another user (who
/// could swap the file, or plant the `-wal`/`-shm` files SQLite creates beside it). Checked on
/// a handle to the directory (`cap_std`); SQLite then opens the path again, which leaves the
/// window described in `docs/threat-model.md`. A missing directory passes (the caller's own
/// open reports it).
fn check_vault_path(path: &Path) -> Result<()> {
    let invalid = |reason: String| Error::InvalidInput { what: "vault path", reason };
    let Some(name) = path.file_name() else {
        return Err(invalid(format!("{} does not name a file: give the vault file's path", path.display())));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |source| Error::Io { action: "checking the vault's directory", path: parent.to_path_buf(), source };
    let dir = match cap_std::fs::Dir::open_ambient_dir(parent, cap_std::ambient_authority()) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    #[cfg(unix)]
    {
        use cap_std::fs::MetadataExt;
        let meta = dir.dir_metadata().map_err(io)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let mode = meta.mode() & 0o7777;
        let problem = if mode & 0o002 != 0 {
            Some(format!("is writable by every user (mode {mode:04o})"))
        } else if meta.uid() != me && meta.uid() != 0 {
            Some(format!("belongs to uid {}, not to you (uid {me}) or root", meta.uid()))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(invalid(format!(
                "the vault's directory {} {problem}, so someone else could replace the vault or plant the \
                 files SQLite writes beside it. Keep the vault in a directory only you can write (`chmod o-w {}`, \
                 or a private directory via --vault / SKILLBOX_VAULT)",
                parent.display(),
                parent.display()
            )));
        }
    }
    match dir.symlink_metadata(name) {
        Ok(meta) if meta.file_type().is_symlink() => Err(invalid(format!(
            "{} is a symbolic link; skillbox does not follow one to the vault (whoever can change the link \
             chooses the file). Point --vault / SKILLBOX_VAULT at the file itself: {}",
            path.display(),
            std::fs::canonicalize(path).map_or_else(|_| "(the link's target)".into(), |t| t.display().to_string())
        ))),
        _ => Ok(()),
    }
}
