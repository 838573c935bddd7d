//! The two stores the vault suite runs against: a SQLite file in a temporary directory, and
//! (when `SKILLBOX_TEST_POSTGRES_URL` is set) a fresh PostgreSQL schema of its own, dropped
//! afterwards. A test written as `fn name(kind: Kind)` and listed in `on_both!` runs once per
//! store; without the variable the PostgreSQL half reports that it was skipped.
//!
//! `TestStore::exec` and friends are the attacker's own connection to the store: they edit
//! rows directly, never through the vault.

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use skillbox_vault::{InitOptions, Location, MasterKeySource, Vault};

/// The variable naming the PostgreSQL server tests may use.
pub const POSTGRES_ENV: &str = "SKILLBOX_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl Kind {
    /// `Some(Postgres)` when the server is configured; otherwise says the test was skipped.
    pub fn postgres(test: &str) -> Option<Kind> {
        if std::env::var_os(POSTGRES_ENV).is_some() {
            Some(Kind::Postgres)
        } else {
            // Written to the process's stderr directly, past the test harness's capture, so the
            // skip shows in a plain `cargo test` run.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipped {test} on PostgreSQL: {POSTGRES_ENV} is not set");
            None
        }
    }
}

/// Runs each listed `fn name(kind: Kind)` as two tests, `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::common::Kind::Sqlite)
            }
            #[test]
            fn postgres() {
                if let Some(kind) = super::common::Kind::postgres(stringify!($name)) {
                    super::$name(kind)
                }
            }
        }
    )*};
}

/// A fresh, empty store, and raw access to it.
pub struct TestStore {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub location: Location,
    pg: Option<Pg>,
}

struct Pg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    admin: String,
    schema: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `url` with `search_path` set to `schema` (so every table the vault makes lands there).
pub fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

fn pg_client(rt: &tokio::runtime::Runtime, url: &str) -> tokio_postgres::Client {
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    })
}

impl TestStore {
    pub fn new(kind: Kind) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            Kind::Sqlite => TestStore { kind, location: Location::Sqlite(dir.path().join("vault.db")), dir, pg: None },
            Kind::Postgres => {
                let admin = std::env::var(POSTGRES_ENV).expect("SKILLBOX_TEST_POSTGRES_URL");
                let schema = format!(
                    "sbx_test_{}_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
                );
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let setup = pg_client(&rt, &admin);
                rt.block_on(setup.batch_execute(&format!("CREATE SCHEMA {schema}"))).unwrap();
                drop(setup);
                let url = with_schema(&admin, &schema);
                let client = pg_client(&rt, &url);
                TestStore { kind, location: Location::Postgres(url), dir, pg: Some(Pg { rt, client, admin, schema }) }
            }
        }
    }

    /// The store's location as `--store` / `SKILLBOX_STORE` takes it.
    pub fn url(&self) -> String {
        match &self.location {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => url.clone(),
        }
    }

    /// The SQLite file (SQLite only).
    pub fn path(&self) -> &Path {
        match &self.location {
            Location::Sqlite(p) => p,
            Location::Postgres(_) => panic!("a PostgreSQL store has no file"),
        }
    }

    /// Creates the vault, keyed by `key`.
    pub fn init_with(&self, key: &MasterKeySource) -> Vault {
        Vault::init_at(&self.location, key, &InitOptions::default()).unwrap()
    }

    /// Runs one statement on the raw store; returns the rows it changed.
    pub fn exec(&self, sql: &str) -> u64 {
        match &self.pg {
            None => rusqlite::Connection::open(self.path()).unwrap().execute(sql, []).unwrap() as u64,
            Some(pg) => pg.rt.block_on(pg.client.execute(sql, &[])).unwrap(),
        }
    }

    /// Runs several statements on the raw store.
    pub fn batch(&self, sql: &str) {
        match &self.pg {
            None => rusqlite::Connection::open(self.path()).unwrap().execute_batch(sql).unwrap(),
            Some(pg) => pg.rt.block_on(pg.client.batch_execute(sql)).unwrap(),
        }
    }

    /// The integer the query returns (first row, first column).
    pub fn i64(&self, sql: &str) -> i64 {
        match &self.pg {
            None => rusqlite::Connection::open(self.path()).unwrap().query_row(sql, [], |r| r.get(0)).unwrap(),
            Some(pg) => pg.rt.block_on(pg.client.query_one(sql, &[])).unwrap().get::<_, i64>(0),
        }
    }

    /// The first column of every row, as bytes.
    pub fn blobs(&self, sql: &str) -> Vec<Vec<u8>> {
        match &self.pg {
            None => {
                let c = rusqlite::Connection::open(self.path()).unwrap();
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
            }
            Some(pg) => pg.rt.block_on(pg.client.query(sql, &[])).unwrap().iter().map(|r| r.get(0)).collect(),
        }
    }

    /// The text the query returns (first row, first column).
    pub fn text(&self, sql: &str) -> String {
        match &self.pg {
            None => rusqlite::Connection::open(self.path()).unwrap().query_row(sql, [], |r| r.get(0)).unwrap(),
            Some(pg) => pg.rt.block_on(pg.client.query_one(sql, &[])).unwrap().get::<_, String>(0),
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            let admin = pg_client(&pg.rt, &pg.admin);
            let _ = pg.rt.block_on(admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", pg.schema)));
        }
    }
}
