//! `vault status`: what the vault is kept in and how much it holds, without decrypting
//! anything.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Vault;
use crate::error::Result;
use crate::store::{SqlExt, StoreFacts, params};

/// What `skillbox vault status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct VaultStatus {
    /// The vault's id (hex).
    pub vault_id: String,
    /// Engine, location, server version, TLS.
    pub store: StoreFacts,
    /// The schema version stored.
    pub schema_version: i64,
    /// Rows by table.
    pub rows: BTreeMap<String, u64>,
    /// The audit chain's head: rows and the newest row's id (checked, see `audit verify`
    /// for the whole chain).
    pub audit_rows: u64,
    /// Id of the newest audit row (0 for an empty log).
    pub audit_last_id: i64,
    /// The change counter hosts compare before each use.
    pub generation: u64,
}

impl Vault {
    /// The store's facts, the schema version, row counts and the audit head.
    pub fn status(&self) -> Result<VaultStatus> {
        let anchor = self.audit_anchor()?;
        let generation = self.generation()?;
        let inner = self.lock();
        let schema_version = inner.conn.schema_version()?;
        let mut rows = BTreeMap::new();
        for table in ["credentials", "versions", "grants", "api_keys", "audit", "keys"] {
            let n: i64 = inner.conn.query_row(&format!("SELECT count(*) FROM {table}"), params![], |r| r.get(0))?;
            rows.insert(table.to_owned(), n as u64);
        }
        Ok(VaultStatus {
            vault_id: self.vault_id(),
            store: inner.conn.facts(),
            schema_version,
            rows,
            audit_rows: anchor.count,
            audit_last_id: anchor.last_id,
            generation: generation.counter,
        })
    }
}
