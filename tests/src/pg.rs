//! A PostgreSQL schema of a test's own, on the server `SKILLBOX_TEST_POSTGRES_URL` names,
//! dropped when the test ends. Its URL sets `search_path`, so a vault (or anything else)
//! opened with it keeps every table there.

/// A schema created for one test.
pub struct PgSchema {
    admin: String,
    name: String,
    url: String,
}

/// Runs `sql` on `url` from a thread of its own (callers may be inside an async runtime).
fn batch(url: &str, sql: String) {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            client.batch_execute(&sql).await.expect("schema statement");
        });
    })
    .join()
    .unwrap();
}

impl PgSchema {
    /// A new schema, or `None` (after saying the test is skipped) without a server.
    pub fn create(test: &str) -> Option<PgSchema> {
        let admin = crate::postgres_url(test)?;
        let name = format!("sbx_{}_{}", std::process::id(), hex::encode(rand::random::<[u8; 6]>()));
        batch(&admin, format!("CREATE SCHEMA {name}"));
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-csearch_path%3D{name}");
        Some(PgSchema { admin, name, url })
    }

    /// The URL to give `--store` / `SKILLBOX_STORE` / `Location::Postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Debug for PgSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only the schema is shown.
        f.debug_struct("PgSchema").field("schema", &self.name).finish()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        batch(&self.admin, format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}
