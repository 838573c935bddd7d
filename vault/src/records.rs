//! Integrity of the vault's own records: every `credentials`, `versions`,
//! `grants` and `api_keys` row carries a MAC (column `mac`) under an HKDF sub-key of the
//! vault secret, over a canonical encoding of its security-relevant columns.
//!
//! Written after every insert or update (by re-reading the row, so the MAC
//! covers exactly what is stored), checked on every read on the resolve path
//! and in listings. Someone who can edit the file but has no master key cannot
//! point a grant at another credential, un-revoke or un-expire a credential,
//! roll its current version back, or widen a grant's hosts: the row's MAC no
//! longer matches and it is refused with [`Error::Tampered`].

use crate::store::{Params, Row, Sql, SqlExt, Value};

use crate::crypto::{Key32, ad};
use crate::error::{Error, Result};

/// A table whose rows are MACed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Credentials,
    Versions,
    Grants,
    /// Since schema 5; every column but `last_used_at` (which changes on use).
    ApiKeys,
}

impl Table {
    pub(crate) const ALL: [Table; 4] = [Table::Credentials, Table::Versions, Table::Grants, Table::ApiKeys];

    fn name(self) -> &'static str {
        match self {
            Table::Credentials => "credentials",
            Table::Versions => "versions",
            Table::Grants => "grants",
            Table::ApiKeys => "api_keys",
        }
    }

    /// The covered columns, in MAC order. The first ones identify the row in messages.
    pub(crate) fn columns(self) -> &'static str {
        match self {
            Table::Credentials => {
                "id, owner, environment, name, kind, service, expires_at, status, current_version, revoked_reason, \
                 rotate_every, needs_reauth, test_url"
            }
            Table::Versions => "credential_id, version, key_id, status, fingerprint",
            Table::Grants => {
                "id, credential_id, skill, alias, environment, owner, access_level, expires_at, skill_digest, \
                 any_digest, hosts, suspended_at, suspended_reason, response, policy"
            }
            Table::ApiKeys => {
                "id, name, owner, environment, skills, key_hash, fingerprint, created_at, created_by, expires_at, \
                 revoked_at"
            }
        }
    }

    fn describe(self, row: &Row<'_>) -> String {
        let text = |i: usize| -> String {
            match row.get_ref(i) {
                Ok(Value::Text(t)) => t.clone(),
                Ok(Value::Int(n)) => n.to_string(),
                _ => "?".into(),
            }
        };
        match self {
            Table::Credentials => format!("the record of credential {} ('{}')", text(0), text(3)),
            Table::Versions => format!("the record of version {} of credential {}", text(1), text(0)),
            Table::Grants => format!("the record of grant {} (skill '{}', name '{}')", text(0), text(2), text(3)),
            Table::ApiKeys => format!("the record of API key '{}' ({})", text(1), text(0)),
        }
    }

    /// [`Error::Tampered`] naming the row `r` (read as `SELECT {columns}, ...`).
    pub(crate) fn tampered(self, r: &Row<'_>) -> Error {
        Error::Tampered { what: self.describe(r) }
    }

    pub(crate) fn count(self) -> usize {
        self.columns().split(',').count()
    }

    /// Columns added after schema 3 (at the end of [`Table::columns`]): trailing NULL ones are
    /// left out of the MAC, so a row sealed before they existed still checks. A NULL among
    /// them before a set one is MACed (as NULL), so every part keeps its position: still
    /// unambiguous, the MAC input is a length-prefixed list of typed parts, and a list with
    /// more parts is a different list. A later migration appends its columns at the end and
    /// raises the count here.
    fn optional_tail(self) -> usize {
        match self {
            Table::Grants => 1,      // policy (schema 4)
            Table::Credentials => 3, // rotate_every, needs_reauth, test_url (schema 6)
            _ => 0,
        }
    }
}

/// The sub-key and the vault id the MACs are made with.
pub(crate) struct RecordKey<'a> {
    pub key: &'a Key32,
    pub vault_id: &'a [u8],
}

impl RecordKey<'_> {
    fn mac(&self, table: Table, row: &Row<'_>, first: usize) -> Result<[u8; 32]> {
        let mut parts: Vec<Vec<u8>> = Vec::with_capacity(table.count() + 1);
        parts.push(self.vault_id.to_vec());
        // Trailing NULL columns of the optional tail are left out (see `optional_tail`).
        let mut end = table.count();
        while end > table.count() - table.optional_tail() && matches!(row.get_ref(first + end - 1)?, Value::Null) {
            end -= 1;
        }
        for i in 0..end {
            let mut v = Vec::new();
            match row.get_ref(first + i)? {
                // Tag 2 was a floating-point value; the stores hold none.
                Value::Null => v.push(0),
                Value::Int(n) => {
                    v.push(1);
                    v.extend_from_slice(&n.to_be_bytes());
                }
                Value::Text(t) => {
                    v.push(3);
                    v.extend_from_slice(t.as_bytes());
                }
                Value::Blob(b) => {
                    v.push(4);
                    v.extend_from_slice(b);
                }
            }
            parts.push(v);
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Ok(self.key.mac(&[&ad(&format!("record/{}", table.name()), &refs)]))
    }

    /// (Re)computes the MAC of every row of `table` matching `where_` (SQL
    /// after `WHERE`). Call only for rows this process just wrote, or whose
    /// MAC it has just checked: sealing blesses what is stored.
    pub(crate) fn seal(&self, conn: &dyn Sql, table: Table, where_: &str, params: impl Params) -> Result<()> {
        let sql = format!("SELECT {} FROM {} WHERE {where_}", table.columns(), table.name());
        let rows = conn.query_rows(&sql, params)?;
        let update = match table {
            Table::Versions => "UPDATE versions SET mac = ?1 WHERE credential_id = ?2 AND version = ?3".to_owned(),
            t => format!("UPDATE {} SET mac = ?1 WHERE id = ?2", t.name()),
        };
        let key_columns = if table == Table::Versions { 2 } else { 1 };
        for r in rows.iter() {
            let mut args = vec![Value::Blob(self.mac(table, &r, 0)?.to_vec())];
            for i in 0..key_columns {
                args.push(r.get_ref(i)?.clone());
            }
            conn.execute(&update, args)?;
        }
        Ok(())
    }

    /// Checks the MAC of every row of `table` matching `where_`; the first
    /// forged one is [`Error::Tampered`].
    pub(crate) fn check(&self, conn: &dyn Sql, table: Table, where_: &str, params: impl Params) -> Result<()> {
        match self.first_forged(conn, table, where_, params)? {
            Some(what) => Err(Error::Tampered { what }),
            None => Ok(()),
        }
    }

    /// The description of the first row matching `where_` whose MAC fails.
    pub(crate) fn first_forged(
        &self,
        conn: &dyn Sql,
        table: Table,
        where_: &str,
        params: impl Params,
    ) -> Result<Option<String>> {
        let sql = format!("SELECT {}, mac FROM {} WHERE {where_}", table.columns(), table.name());
        for r in conn.query_rows(&sql, params)?.iter() {
            if !self.is_authentic(table, &r)? {
                return Ok(Some(table.describe(&r)));
            }
        }
        Ok(None)
    }

    /// Whether `r` — a row read as `SELECT {table.columns()}, mac, ...` — carries its MAC.
    /// For hot paths that read a row once and check it in place.
    pub(crate) fn is_authentic(&self, table: Table, r: &Row<'_>) -> Result<bool> {
        let stored: Option<Vec<u8>> = r.get(table.count())?;
        let expected = self.mac(table, r, 0)?;
        Ok(stored.is_some_and(|m| bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &m[..]))))
    }

    /// The first forged row in any MACed table (for `audit verify`).
    pub(crate) fn verify_all(&self, conn: &dyn Sql) -> Result<Option<String>> {
        for t in Table::ALL {
            if let Some(what) = self.first_forged(conn, t, "1=1", crate::store::params![])? {
                return Ok(Some(what));
            }
        }
        Ok(None)
    }

    /// MACs every row of every table (the migration that adds the column).
    pub(crate) fn seal_all(&self, conn: &dyn Sql) -> Result<()> {
        for t in Table::ALL {
            self.seal(conn, t, "1=1", crate::store::params![])?;
        }
        Ok(())
    }
}
