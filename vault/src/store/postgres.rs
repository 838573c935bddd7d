//! The shared store: a PostgreSQL database that several hosts open at once.
//!
//! The vault's API is synchronous (it is called from blocking code and, briefly, from async
//! tasks, like SQLite). This store therefore owns a small tokio runtime of its own and runs
//! each statement there, on a pooled `tokio-postgres` connection (`deadpool-postgres`; TLS by
//! rustls with Mozilla's roots when the URL asks for it). The caller's thread waits on a
//! channel, never on `block_on`, so a caller inside another runtime is safe.
//!
//! Every write transaction starts by locking the audit chain's head row
//! (`SELECT ... FOR UPDATE`): writers from every host queue there, exactly as SQLite's
//! `BEGIN IMMEDIATE` queues writers of one file. The lock is transaction-scoped, so it works
//! behind transaction-pooling proxies and is released by the server if a host dies.
//! The database only ever holds what the SQLite file holds: ciphertext, wrapped keys, MACs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::{Backend, DbError, Rows, Sql, Store, StoreFacts, TxImpl, Txn, Value};
use crate::error::{Error, Result};

/// Longest wait for a pooled connection (or a new one) before the call fails closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a single statement may take, lock waits included.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per open vault (one process).
const POOL_SIZE: usize = 4;

/// Serialises schema changes of one database (init and migrations), before `meta` exists.
const SCHEMA_LOCK: i64 = 0x736b_696c_6c62_6f78; // "skillbox"

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to a {ty} parameter").into()),
            },
            Value::Text(s) if <String as ToSql>::accepts(ty) => s.to_sql(ty, out),
            Value::Blob(b) if <Vec<u8> as ToSql>::accepts(ty) => b.to_sql(ty, out),
            Value::Text(_) => Err(format!("text cannot be bound to a {ty} parameter").into()),
            Value::Blob(_) => Err(format!("bytes cannot be bound to a {ty} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            _ if <String as FromSql>::accepts(ty) => Value::Text(String::from_sql(ty, raw)?),
            _ => return Err(format!("a column of type {ty}").into()),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// `?N` placeholders (the shared dialect) as PostgreSQL's `$N`. A bare `?` takes the number
/// after the largest so far, as in SQLite. Quoted text is left alone.
pub(crate) fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    let mut highest = 0u32;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = if digits.is_empty() { highest + 1 } else { digits.parse().unwrap_or(0) };
                highest = highest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// A PostgreSQL URL without its password, for messages and `vault status`.
pub(crate) fn redact(url: &str) -> String {
    // postgres://user:password@host/db?...: drop what follows the ':' of the userinfo.
    let Some((scheme, rest)) = url.split_once("://") else { return "postgres://(unparsable URL)".into() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query parameters may carry a password too.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", kept.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// TLS for PostgreSQL connections: rustls with ring and Mozilla's roots; the server's
/// certificate and name are verified. Used when the URL's `sslmode` asks for TLS.
pub fn postgres_tls() -> std::result::Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A vault in a PostgreSQL database.
pub(crate) struct PgStore {
    /// Owned so it can be shut down without blocking (a vault may be dropped inside a task).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    display: String,
    /// The newest generation announced on the vault's channel (see `listen`).
    changes: tokio::sync::watch::Receiver<u64>,
    /// What the listener needs, until it is started (once the vault's id is known).
    listener: std::sync::Mutex<Option<Listener>>,
}

struct Listener {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    tx: tokio::sync::watch::Sender<u64>,
}

/// The channel changes to vault `vault_id` are announced on (`grants::bump_generation`).
/// Per vault: one database may hold several vaults (in several schemas), and `NOTIFY`
/// channels are database-wide.
pub(crate) fn channel(vault_id: &str) -> String {
    format!("skillbox_vault_{vault_id}")
}

/// Keeps one connection listening on `channel` and publishes each announced generation.
/// Best effort: it reconnects after a second when the connection drops, and nothing's
/// correctness depends on it (every use reads the generation itself); it only lets hosts
/// drop what they cache sooner.
async fn listen(listener: Listener, channel: String) {
    let Listener { config, tls, tx } = listener;
    use futures_util::StreamExt;
    loop {
        if let Ok((client, mut connection)) = config.connect(tls.clone()).await {
            let (found, mut notifications) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(n) = message {
                        let _ = found.send(n.payload().parse::<u64>().ok());
                    }
                }
            });
            if client.batch_execute(&format!("LISTEN {channel}")).await.is_ok() {
                while let Some(generation) = notifications.recv().await {
                    tx.send_modify(|g| *g = generation.map_or(*g + 1, |n| n.max(*g)));
                }
            }
            driver.abort();
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable(display: &str, why: impl std::fmt::Display) -> Error {
    Error::Database(DbError::unavailable(format!("the vault database {display} is unreachable: {why}")))
}

impl PgStore {
    /// Connects (checking that the server answers); the schema is not touched.
    pub(crate) fn connect(url: &str) -> Result<PgStore> {
        let display = redact(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| Error::InvalidInput {
            what: "store URL",
            reason: format!(
                "{display} is not a valid PostgreSQL URL ({e}); expected postgres://USER@HOST[:PORT]/DATABASE"
            ),
        })?;
        config.application_name("skillbox-vault").connect_timeout(CONNECT_TIMEOUT);
        // The password may come from the environment, so it need not be in a URL or on a
        // command line.
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        // TLS is required (and verified) unless every host is loopback or a Unix socket, or
        // the URL says `sslmode=disable`. `prefer` would let anyone on the path strip TLS
        // silently, so it is treated as `require`.
        let asked = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let disable = asked.split('&').any(|kv| kv.eq_ignore_ascii_case("sslmode=disable"));
        let require = asked.split('&').any(|kv| kv.eq_ignore_ascii_case("sslmode=require"));
        let local = config.get_hosts().iter().all(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => {
                name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => true,
        });
        config.ssl_mode(if disable || (local && !require) {
            tokio_postgres::config::SslMode::Disable
        } else {
            tokio_postgres::config::SslMode::Require
        });
        let tls = postgres_tls().map_err(|reason| Error::InvalidInput { what: "store URL", reason })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("skillbox-vault-pg")
            .enable_all()
            .build()
            .map_err(|e| unavailable(&display, format!("cannot start its I/O thread: {e}")))?;
        let handle = runtime.handle().clone();
        let (tx, changes) = tokio::sync::watch::channel(0);
        let listener = std::sync::Mutex::new(Some(Listener { config: config.clone(), tls: tls.clone(), tx }));
        let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = {
            let _enter = handle.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CONNECT_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| unavailable(&display, e))?
        };
        let store = PgStore { runtime: Some(runtime), handle, pool, display, changes, listener };
        store.query_values("SELECT 1", &[])?;
        Ok(store)
    }

    /// Runs `fut` on the store's runtime and waits for it on this thread.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let display = self.display.clone();
        self.handle.spawn(async move {
            let result = match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(unavailable(&display, format!("no answer within {}s", STATEMENT_TIMEOUT.as_secs()))),
            };
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or_else(|_| Err(unavailable(&self.display, "its I/O thread has stopped")))
    }

    async fn client(pool: Pool, display: String) -> Result<Object> {
        pool.get().await.map_err(|e| unavailable(&display, e))
    }

    fn on_client<T: Send + 'static, F>(&self, client: Option<Arc<Object>>, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Object>) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>> + Send + 'static,
    {
        let pool = self.pool.clone();
        let display = self.display.clone();
        self.run(async move {
            let client = match client {
                Some(c) => c,
                None => Arc::new(Self::client(pool, display).await?),
            };
            f(client).await
        })
    }

    fn exec_on(&self, client: Option<Arc<Object>>, sql: &str, params: &[Value]) -> Result<u64> {
        let sql = placeholders(sql);
        let params = params.to_vec();
        self.on_client(client, move |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached(&sql).await?;
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                Ok(c.execute(&stmt, &refs).await?)
            })
        })
    }

    fn query_on(&self, client: Option<Arc<Object>>, sql: &str, params: &[Value]) -> Result<Rows> {
        let sql = placeholders(sql);
        let params = params.to_vec();
        self.on_client(client, move |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached(&sql).await?;
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let rows = c.query(&stmt, &refs).await?;
                let mut out = Rows::default();
                for row in rows {
                    out.rows.push(
                        (0..row.len()).map(|i| row.try_get::<_, Value>(i)).collect::<std::result::Result<_, _>>()?,
                    );
                }
                Ok(out)
            })
        })
    }

    fn batch_on(&self, client: Option<Arc<Object>>, sql: &str) -> Result<()> {
        let sql = sql.to_owned();
        self.on_client(client, move |c| Box::pin(async move { Ok(c.batch_execute(&sql).await?) }))
    }

    /// A transaction whose first act is `lock` (a statement that serialises it).
    fn begin_with(&self, lock: &str) -> Result<Txn<'_>> {
        let pool = self.pool.clone();
        let display = self.display.clone();
        let client = self.run(async move { Ok(Arc::new(Self::client(pool, display).await?)) })?;
        let tx = PgTx { store: self, client: Some(client), done: false };
        tx.execute_batch(&format!("BEGIN; {lock}"))?;
        Ok(Txn::new(Box::new(tx)))
    }

    /// Whether the database holds no vault yet (no `skillbox_schema` table).
    pub(crate) fn is_empty(&self) -> Result<bool> {
        Ok(crate::schema::postgres_version(self)? == 0)
    }
}

impl Sql for PgStore {
    fn exec_values(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.exec_on(None, sql, params)
    }
    fn query_values(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        self.query_on(None, sql, params)
    }
    fn execute_batch(&self, sql: &str) -> Result<()> {
        self.batch_on(None, sql)
    }
    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}

/// An open transaction on one pooled connection.
struct PgTx<'a> {
    store: &'a PgStore,
    client: Option<Arc<Object>>,
    done: bool,
}

impl Sql for PgTx<'_> {
    fn exec_values(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.store.exec_on(self.client.clone(), sql, params)
    }
    fn query_values(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        self.store.query_on(self.client.clone(), sql, params)
    }
    fn execute_batch(&self, sql: &str) -> Result<()> {
        self.store.batch_on(self.client.clone(), sql)
    }
    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}

impl TxImpl for PgTx<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let result = self.execute_batch("COMMIT");
        self.done = result.is_ok();
        result
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        if !self.done && self.store.batch_on(Some(Arc::clone(&client)), "ROLLBACK").is_err() {
            // The connection's state is unknown: keep it out of the pool.
            if let Ok(object) = Arc::try_unwrap(client) {
                let _ = Object::take(object);
            }
        }
    }
}

impl Store for PgStore {
    fn begin(&self) -> Result<Txn<'_>> {
        self.begin_with("SELECT 1 FROM meta WHERE key = 'audit_head' FOR UPDATE")
    }

    fn begin_schema(&self) -> Result<Txn<'_>> {
        self.begin_with(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
    }

    fn watch_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.clone())
    }

    fn listen(&self, vault_id: &str) {
        if let Some(listener) = self.listener.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.handle.spawn(listen(listener, channel(vault_id)));
        }
    }

    fn schema_version(&self) -> Result<i64> {
        crate::schema::postgres_version(self)
    }

    fn facts(&self) -> StoreFacts {
        let version = self
            .query_values("SELECT current_setting('server_version')", &[])
            .ok()
            .and_then(|r| r.iter().next().and_then(|r| r.get::<String>(0).ok()));
        let tls = self
            .query_values("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .ok()
            .and_then(|r| r.iter().next().and_then(|r| r.get::<bool>(0).ok()));
        StoreFacts { backend: "postgres".into(), location: self.display.clone(), server_version: version, tls }
    }
}
