//! `vault migrate`: copies a whole vault to another store (SQLite ⇄ PostgreSQL) under the
//! same master key.
//!
//! Rows are copied as stored — ciphertext, wrapped keys, MACs, the audit chain — so nothing
//! is decrypted on the way, and every MAC still checks in the copy (MACs bind the vault id,
//! never the engine). The source's chain is verified first, the copy's after, against the
//! source's keys; a target that already holds a vault is refused. The source holds its
//! writers' lock for the whole copy, so the copy is one consistent snapshot, and its
//! `migrate` audit row is written inside that snapshot, so both copies carry it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::NewRow;
use crate::error::{Error, Result};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Location, Sql, SqlExt, Store, Value};
use crate::types::AuditAction;
use crate::{Vault, schema};

/// Every table that holds the vault, in foreign-key order, with its columns (the same names
/// in both stores; the order here is the copy's, not the layout's).
const TABLES: &[(&str, &str, &str)] = &[
    ("meta", "key, value", "key"),
    ("keys", "id, wrapped, status, created_at", "id"),
    (
        "credentials",
        "id, owner, environment, name, kind, service, description, scopes, expires_at, status, revoked_reason, \
         created_at, updated_at, last_rotated_at, current_version, mac, rotate_every, needs_reauth, test_url",
        "id",
    ),
    (
        "versions",
        "credential_id, version, key_id, wrapped_dek, ciphertext, fingerprint, status, created_at, mac",
        "credential_id, version",
    ),
    (
        "grants",
        "id, skill, alias, credential_id, environment, owner, access_level, granted_by, granted_at, expires_at, \
         reason, skill_digest, any_digest, hosts, suspended_at, suspended_reason, response, mac, policy",
        "id",
    ),
    (
        "api_keys",
        "id, name, owner, environment, skills, key_hash, fingerprint, created_at, created_by, expires_at, \
         revoked_at, last_used_at, mac",
        "id",
    ),
    (
        "audit",
        "id, ts, action, actor, skill, credential_id, credential_name, environment, owner, purpose, detail, \
         success, error, prev_hash, mac",
        "id",
    ),
];

/// Metadata that belongs to one installation, not to the vault: not copied.
const LOCAL_META: &[&str] = &["audit_anchor_file"];

/// Rows copied per statement batch.
const PAGE: usize = 500;

/// What `vault migrate` copied.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    /// The target (a file, or a database URL without its password).
    pub target: String,
    /// Rows copied, by table.
    pub rows: BTreeMap<String, u64>,
    /// Audit rows in the target's chain, verified after the copy.
    pub audit_rows: u64,
}

impl Vault {
    /// Copies this vault, whole, to `target`, which must hold no vault: a SQLite file that
    /// does not exist yet, or a PostgreSQL database without the vault's tables. The audit
    /// chain is verified before (a damaged chain is not copied) and after (in the target).
    /// Records a `migrate` row (in both copies). The target opens with the same master key.
    pub fn migrate_to(&self, target: &Location, actor: &str) -> Result<MigrateReport> {
        if *target == self.location {
            return Err(Error::InvalidInput {
                what: "migration target",
                reason: format!("{target} is the vault itself: give another location"),
            });
        }
        let before = self.audit_verify()?;
        if let Some(p) = before.problem {
            return Err(Error::InvalidInput {
                what: "vault to migrate",
                reason: format!(
                    "its audit chain does not verify ({}), so it is not copied: run `skillbox audit verify`, and \
                     `skillbox audit repair` if you accept the damage, then migrate again",
                    p.message
                ),
            });
        }
        match target {
            Location::Sqlite(path) => {
                let store = SqliteStore::create(path)?;
                let result = self.copy_into(&store, target, actor);
                if result.is_err() {
                    drop(store);
                    SqliteStore::remove(path);
                }
                result
            }
            Location::Postgres(url) => {
                let store = PgStore::connect(url)?;
                if !store.is_empty()? {
                    return Err(Error::AlreadyExists { location: target.display() });
                }
                self.copy_into(&store, target, actor)
            }
        }
    }

    fn copy_into(&self, store: &dyn Store, target: &Location, actor: &str) -> Result<MigrateReport> {
        let inner = self.lock();
        let source = inner.conn.begin()?;
        let dest = store.begin_schema()?;
        if target.backend() == crate::Backend::Postgres && schema::postgres_version(&dest)? != 0 {
            return Err(Error::AlreadyExists { location: target.display() });
        }
        schema::migrate(&dest)?;

        let detail = serde_json::json!({ "to": target.display(), "backend": target.backend().as_str() }).to_string();
        self.audit(
            &source,
            &NewRow {
                action: AuditAction::Migrate.as_str(),
                actor,
                detail: Some(&detail),
                success: true,
                ..Default::default()
            },
        )?;

        let mut rows = BTreeMap::new();
        for (table, columns, key) in TABLES {
            let n = copy_table(&source, &dest, table, columns, key)?;
            rows.insert((*table).to_owned(), n);
        }
        let after = self.verify_on(&dest, None)?;
        if let Some(p) = after.problem {
            return Err(Error::Corrupt {
                what: format!("the copy in {target} (its audit chain does not verify: {})", p.message),
            });
        }
        dest.commit()?;
        source.commit_audited()?;
        Ok(MigrateReport { target: target.display(), rows, audit_rows: after.rows })
    }
}

/// Copies every row of `table` from `source` to `dest`, in key order, a page at a time.
fn copy_table(source: &dyn Sql, dest: &dyn Sql, table: &str, columns: &str, key: &str) -> Result<u64> {
    let width = columns.split(',').count();
    let placeholders: Vec<String> = (1..=width).map(|i| format!("?{i}")).collect();
    let insert = format!("INSERT INTO {table} ({columns}) VALUES ({})", placeholders.join(", "));
    let select = format!("SELECT {columns} FROM {table} ORDER BY {key} LIMIT {PAGE} OFFSET ?1");
    let mut copied = 0u64;
    loop {
        let page = source.query_rows(&select, [copied])?;
        let mut n = 0u64;
        for row in page.iter() {
            n += 1;
            let values: Vec<Value> = (0..width).map(|i| row.get_ref(i).cloned()).collect::<Result<_>>()?;
            if table == "meta" && matches!(&values[0], Value::Text(k) if LOCAL_META.contains(&k.as_str())) {
                continue;
            }
            dest.exec_values(&insert, &values)?;
        }
        copied += n;
        if n < PAGE as u64 {
            return Ok(copied);
        }
    }
}
