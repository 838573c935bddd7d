//! Credential lifecycle: add, list, show, rotate, revoke, delete, reveal.
//!
//! Every write runs in one `BEGIN IMMEDIATE` transaction together with its
//! audit row, so either both land or neither does.

use crate::store::{OptionalExtension, Row, Sql, SqlExt, params};

use crate::audit::{self, NewRow};
use crate::crypto::{self, Key32, ad};
use crate::error::{Error, Result};
use crate::records::{RecordKey, Table};
use crate::secret::{CredentialKind, SecretValue};
use crate::types::*;
use crate::{Keys, Vault};

/// Columns of [`read_info`], in order (`c` = credentials, `v` = current version).
pub(crate) const INFO_COLS: &str = "c.id, c.owner, c.environment, c.name, c.kind, c.service, c.description, c.scopes, \
     c.expires_at, c.status, c.revoked_reason, c.created_at, c.updated_at, c.last_rotated_at, c.current_version, \
     v.fingerprint, c.rotate_every, c.needs_reauth, c.test_url";
pub(crate) const INFO_FROM: &str =
    "credentials c JOIN versions v ON v.credential_id = c.id AND v.version = c.current_version";

fn bad(what: &str) -> Error {
    crate::store::DbError::convert(format!("column {what} holds an unknown value")).into()
}

pub(crate) fn read_info(r: &Row<'_>) -> Result<CredentialInfo> {
    let env: String = r.get(2)?;
    let kind: String = r.get(4)?;
    let scopes: String = r.get(7)?;
    let status: String = r.get(9)?;
    let fp: String = r.get(15)?;
    let rotate_every: Option<i64> = r.get(16)?;
    let mut info = CredentialInfo {
        id: r.get(0)?,
        owner: r.get(1)?,
        environment: env.parse().map_err(|_| bad("environment"))?,
        name: r.get(3)?,
        kind: kind.parse().map_err(|_| bad("kind"))?,
        service: r.get(5)?,
        description: r.get(6)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        expires_at: r.get::<Option<i64>>(8)?.map(from_ms),
        status: status.parse().map_err(|_| bad("status"))?,
        revoked_reason: r.get(10)?,
        created_at: from_ms(r.get(11)?),
        updated_at: from_ms(r.get(12)?),
        last_rotated_at: r.get::<Option<i64>>(13)?.map(from_ms),
        version: r.get(14)?,
        fingerprint: partial(&fp),
        rotate_every: rotate_every.map(|s| std::time::Duration::from_secs(s.max(0) as u64)),
        needs_reauth: r.get(17)?,
        test_url: r.get(18)?,
        rotation_due_at: None,
    };
    info.rotation_due_at = info.compute_rotation_due();
    Ok(info)
}

/// `…a1b2`: the last four hex digits of a stored fingerprint.
fn partial(fp: &str) -> String {
    format!("…{}", &fp[fp.len().saturating_sub(4)..])
}

/// Checks a name-like identifier (credential, owner, skill, alias).
pub(crate) fn check_ident(what: &'static str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@'))
        && !s.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what,
            reason: "must be 1-128 characters of letters, digits and - _ . / : @ (not starting with '.')".into(),
        })
    }
}

fn check_text(what: &'static str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 1024 || s.chars().any(char::is_control) {
        return Err(Error::InvalidInput {
            what,
            reason: "must be 1-1024 characters without control characters".into(),
        });
    }
    Ok(())
}

/// The id of the credential `r` names, if it exists.
pub(crate) fn credential_id(conn: &dyn Sql, r: &CredentialRef) -> Result<Option<String>> {
    conn.query_row(
        "SELECT id FROM credentials WHERE owner = ?1 AND environment = ?2 AND name = ?3",
        params![r.owner, r.environment.as_str(), r.name],
        |row| row.get(0),
    )
    .optional()
}

/// The name of the credential with id `id`, if it exists.
pub(crate) fn credential_name(conn: &dyn Sql, id: &str) -> Result<Option<String>> {
    conn.query_row("SELECT name FROM credentials WHERE id = ?1", [id], |row| row.get(0)).optional()
}

/// Appends ` AND col = ?N` to `sql` for every filter that is set, and returns
/// the values to bind, in order.
pub(crate) fn equality_filters(sql: &mut String, filters: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut values = Vec::new();
    for (column, value) in filters {
        if let Some(value) = value {
            values.push(value.to_string());
            *sql += &format!(" AND {column} = ?{}", values.len());
        }
    }
    values
}

pub(crate) fn not_found(r: &CredentialRef) -> Error {
    Error::NotFound { name: r.name.clone(), environment: r.environment, owner: r.owner.clone() }
}

/// The sealed form of one version's value.
pub(crate) struct Sealed {
    pub key_id: String,
    pub wrapped_dek: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub fingerprint: String,
}

/// A value's associated data: its vault, credential id, version, KEK and kind,
/// and (since schema 3) the credential's owner, environment and name.
pub(crate) fn value_ad(
    vault_id: &[u8],
    cred_id: &str,
    version: u32,
    key_id: &str,
    kind: &str,
    ident: &CredentialRef,
) -> Vec<u8> {
    ad(
        "value/v2",
        &[
            vault_id,
            cred_id.as_bytes(),
            &version.to_be_bytes(),
            key_id.as_bytes(),
            kind.as_bytes(),
            ident.owner.as_bytes(),
            ident.environment.as_str().as_bytes(),
            ident.name.as_bytes(),
        ],
    )
}

/// The associated data of values sealed before schema 3 (only the migration reads it).
fn value_ad_v1(vault_id: &[u8], cred_id: &str, version: u32, key_id: &str, kind: &str) -> Vec<u8> {
    ad("value", &[vault_id, cred_id.as_bytes(), &version.to_be_bytes(), key_id.as_bytes(), kind.as_bytes()])
}

/// Schema 3: re-seals every stored value so its associated data binds the
/// credential's owner, environment and name too. Same data key, new nonce.
/// Runs inside the migration transaction, after the master key was verified.
/// A version that does not open under its old associated data is left as it
/// is (it was already unusable; resolving it still fails with `Corrupt`).
pub(crate) fn migrate_value_ad(conn: &dyn Sql, master_wrap: &Key32, vault_id: &[u8]) -> Result<()> {
    type Row = (i64, String, u32, String, Vec<u8>, Vec<u8>, String, String, String, String);
    let rows: Vec<Row> = {
        conn.query_map(
            "SELECT v.rowid, v.credential_id, v.version, v.key_id, v.wrapped_dek, v.ciphertext, c.kind, c.owner, \
             c.environment, c.name FROM versions v JOIN credentials c ON c.id = v.credential_id",
            params![],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )?
    };
    let wrap = master_wrap.cipher();
    let mut keks: std::collections::HashMap<String, Option<Key32>> = std::collections::HashMap::new();
    for (rowid, cid, version, key_id, wrapped_dek, ciphertext, kind, owner, env, name) in rows {
        if !keks.contains_key(&key_id) {
            let wrapped: Option<Vec<u8>> =
                conn.query_row("SELECT wrapped FROM keys WHERE id = ?1", [&key_id], |r| r.get(0)).optional()?;
            let kek = wrapped
                .and_then(|w| crypto::open(&wrap, &crate::kek_ad(vault_id, &key_id), &w))
                .and_then(|b| Key32::from_slice(&b));
            keks.insert(key_id.clone(), kek);
        }
        let Some(kek) = &keks[&key_id] else { continue };
        let Some(dek) = crypto::open(&kek.cipher(), &dek_ad(vault_id, &cid, version, &key_id), &wrapped_dek)
            .and_then(|b| Key32::from_slice(&b))
        else {
            continue;
        };
        let cipher = dek.cipher();
        let Some(plaintext) = crypto::open(&cipher, &value_ad_v1(vault_id, &cid, version, &key_id, &kind), &ciphertext)
        else {
            continue;
        };
        let Ok(environment) = env.parse::<Environment>() else { continue };
        let ident = CredentialRef { owner, environment, name };
        let resealed = crypto::seal(&cipher, &value_ad(vault_id, &cid, version, &key_id, &kind, &ident), &plaintext)?;
        conn.execute("UPDATE versions SET ciphertext = ?2 WHERE rowid = ?1", params![rowid, resealed])?;
    }
    Ok(())
}

pub(crate) fn dek_ad(vault_id: &[u8], cred_id: &str, version: u32, key_id: &str) -> Vec<u8> {
    ad("dek", &[vault_id, cred_id.as_bytes(), &version.to_be_bytes(), key_id.as_bytes()])
}

impl Vault {
    /// Encrypts `value` as version `version` of `cred_id` under a fresh data key
    /// wrapped by the active KEK.
    pub(crate) fn seal_value(
        &self,
        conn: &dyn Sql,
        keys: &mut Keys,
        cred_id: &str,
        ident: &CredentialRef,
        version: u32,
        value: &SecretValue,
    ) -> Result<Sealed> {
        let key_id: String = conn
            .query_row("SELECT id FROM keys WHERE status = 'active'", params![], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::Corrupt { what: "the key table (no active key-encryption key)".into() })?;
        let plaintext = value.to_json();
        let dek = Key32::random()?;
        let ciphertext = crypto::seal(
            &dek.cipher(),
            &value_ad(&self.vault_id, cred_id, version, &key_id, value.kind().as_str(), ident),
            &plaintext,
        )?;
        let kek = keys.kek(conn, &self.vault_id, &key_id)?;
        let wrapped_dek = crypto::seal(kek, &dek_ad(&self.vault_id, cred_id, version, &key_id), dek.bytes())?;
        let fingerprint = hex::encode(self.fp_key.mac(&[&plaintext]))[56..].to_string();
        Ok(Sealed { key_id, wrapped_dek, ciphertext, fingerprint })
    }

    /// Decrypts a stored version; [`Error::Corrupt`] if anything was altered or moved.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_value(
        &self,
        conn: &dyn Sql,
        keys: &mut Keys,
        cred_id: &str,
        ident: &CredentialRef,
        version: u32,
        kind: CredentialKind,
        key_id: &str,
        wrapped_dek: &[u8],
        ciphertext: &[u8],
    ) -> Result<SecretValue> {
        let corrupt = || Error::Corrupt { what: format!("credential {cred_id} version {version}") };
        let kek = keys.kek(conn, &self.vault_id, key_id)?;
        let dek = crypto::open(kek, &dek_ad(&self.vault_id, cred_id, version, key_id), wrapped_dek)
            .and_then(|b| Key32::from_slice(&b))
            .ok_or_else(corrupt)?;
        let plaintext = crypto::open(
            &dek.cipher(),
            &value_ad(&self.vault_id, cred_id, version, key_id, kind.as_str(), ident),
            ciphertext,
        )
        .ok_or_else(corrupt)?;
        let text = std::str::from_utf8(&plaintext).map_err(|_| corrupt())?;
        SecretValue::from_json(kind, text).map_err(|_| corrupt())
    }

    pub(crate) fn audit(&self, conn: &dyn Sql, row: &NewRow<'_>) -> Result<()> {
        // Every state change is audited through here; those that can change an access decision
        // move the generation the host compares before each use.
        if !matches!(
            row.action,
            "read"
                | "use"
                | "denied"
                | "leak"
                | "tripwire"
                | "backup"
                | "pin"
                | "anchor"
                | "refresh"
                | "alert"
                | "release"
        ) {
            crate::grants::bump_generation(conn, &self.vault_id)?;
        }
        audit::append(conn, &self.audit_key, &self.vault_id, row)
    }

    /// Adds a credential with its first version. Audited as `create`.
    pub fn add(&self, new: &NewCredential, value: &SecretValue, actor: &str) -> Result<CredentialInfo> {
        let r = &new.id;
        check_ident("credential name", &r.name)?;
        check_ident("owner", &r.owner)?;
        check_text("service", &new.service)?;
        if let Some(d) = &new.description {
            check_text("description", d)?;
        }
        for s in &new.scopes {
            check_text("scope", s)?;
        }
        let rotate_every = new.rotate_every.map(crate::lifecycle::check_rotate_every).transpose()?;
        if value.kind() != new.kind {
            return Err(Error::InvalidInput {
                what: "credential value",
                reason: format!("the value is of type {} but the credential is of type {}", value.kind(), new.kind),
            });
        }
        value.validate()?;
        let cred_id = format!("cred_{}", crypto::random_hex(12)?);
        let mut inner = self.lock();
        let inner = &mut *inner;
        let sealed = self.seal_value(&*inner.conn, &mut inner.keys, &cred_id, r, 1, value)?;
        let now = now_ms();
        let tx = inner.conn.begin()?;
        let exists: bool = tx.exists(
            "SELECT 1 FROM credentials WHERE owner = ?1 AND environment = ?2 AND name = ?3",
            params![r.owner, r.environment.as_str(), r.name],
        )?;
        if exists {
            return Err(Error::CredentialExists {
                name: r.name.clone(),
                environment: r.environment,
                owner: r.owner.clone(),
            });
        }
        tx.execute(
            "INSERT INTO credentials (id, owner, environment, name, kind, service, description, scopes, expires_at, \
             status, created_at, updated_at, current_version, rotate_every) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10, ?10, 1, ?11)",
            params![
                cred_id,
                r.owner,
                r.environment.as_str(),
                r.name,
                new.kind.as_str(),
                new.service,
                new.description,
                serde_json::to_string(&new.scopes).expect("strings serialize"),
                new.expires_at.map(to_ms),
                now,
                rotate_every
            ],
        )?;
        insert_version(&tx, &cred_id, 1, &sealed, now)?;
        let rk = self.records();
        rk.seal(&tx, Table::Credentials, "id = ?1", [&cred_id])?;
        rk.seal(&tx, Table::Versions, "credential_id = ?1", [&cred_id])?;
        let mut detail = serde_json::json!({ "version": 1, "kind": new.kind.as_str(), "service": new.service });
        if let Some(secs) = rotate_every {
            detail["rotate_every_secs"] = secs.into();
        }
        let detail = detail.to_string();
        self.audit(&tx, &NewRow::about_credential(AuditAction::Create, actor, &cred_id, r, &detail))?;
        tx.commit_audited()?;
        Ok(self.show_locked(&*inner.conn, r)?.info)
    }

    /// Credential metadata matching `filter` (never values), by environment, owner and name.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<CredentialInfo>> {
        let mut sql = format!("SELECT {INFO_COLS} FROM {INFO_FROM} WHERE 1=1");
        let vals = equality_filters(
            &mut sql,
            &[
                ("c.service", filter.service.as_deref()),
                ("c.kind", filter.kind.map(|k| k.as_str())),
                ("c.environment", filter.environment.map(|e| e.as_str())),
                ("c.status", filter.status.map(|s| s.as_str())),
                ("c.owner", filter.owner.as_deref()),
            ],
        );
        sql += " ORDER BY c.environment, c.owner, c.name";
        let inner = self.lock();
        let list: Vec<CredentialInfo> = inner.conn.query_map(&sql, &vals, read_info)?;
        let rk = self.records();
        for c in &list {
            check_credential(&rk, &*inner.conn, &c.id, Some(c.version))?;
        }
        Ok(list)
    }

    /// One credential's metadata, kept versions (newest first) and grants.
    pub fn show(&self, r: &CredentialRef) -> Result<CredentialDetail> {
        let inner = self.lock();
        self.show_locked(&*inner.conn, r)
    }

    fn show_locked(&self, conn: &dyn Sql, r: &CredentialRef) -> Result<CredentialDetail> {
        let info = conn
            .query_row(
                &format!(
                    "SELECT {INFO_COLS} FROM {INFO_FROM} WHERE c.owner = ?1 AND c.environment = ?2 AND c.name = ?3"
                ),
                params![r.owner, r.environment.as_str(), r.name],
                read_info,
            )
            .optional()?
            .ok_or_else(|| not_found(r))?;
        let rk = self.records();
        check_credential(&rk, conn, &info.id, None)?;
        let versions = conn.query_map(
            "SELECT version, status, key_id, created_at, fingerprint FROM versions WHERE credential_id = ?1 ORDER BY version DESC",
            [&info.id],
            |row| {
                let status: String = row.get(1)?;
                let fp: String = row.get(4)?;
                Ok(VersionInfo {
                    version: row.get(0)?,
                    status: status.parse().map_err(|_| bad("status"))?,
                    key_id: row.get(2)?,
                    created_at: from_ms(row.get(3)?),
                    fingerprint: partial(&fp),
                })
            },
        )?;
        let grants = crate::grants::list_grants(&rk, conn, Some(&info.id), &GrantFilter::default())?;
        Ok(CredentialDetail { info, versions, grants })
    }

    /// Stores a new value as the next version; the previous one becomes
    /// `rotated`. Versions beyond the history depth are hard-deleted. A revoked
    /// credential becomes active again with the new value. Audited as `rotate`.
    pub fn rotate(&self, r: &CredentialRef, value: &SecretValue, actor: &str) -> Result<CredentialInfo> {
        self.rotate_with(r, value, None, actor)
    }

    /// [`Vault::rotate`], also replacing the expiry when `expires_at` is `Some`.
    /// A credential that needed re-authorization (`needs_reauth`) no longer does.
    pub fn rotate_with(
        &self,
        r: &CredentialRef,
        value: &SecretValue,
        expires_at: Option<std::time::SystemTime>,
        actor: &str,
    ) -> Result<CredentialInfo> {
        self.rotate_inner(r, value, expires_at, actor, None, serde_json::Value::Null)
    }

    /// [`Vault::rotate_with`], refusing with a retry message when the current version is no
    /// longer `expected` (when given), and adding `extra` (an object) to the audit detail.
    pub(crate) fn rotate_inner(
        &self,
        r: &CredentialRef,
        value: &SecretValue,
        expires_at: Option<std::time::SystemTime>,
        actor: &str,
        expected: Option<u32>,
        extra: serde_json::Value,
    ) -> Result<CredentialInfo> {
        value.validate()?;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let found: Option<(String, String, u32)> = inner
            .conn
            .query_row(
                "SELECT id, kind, current_version FROM credentials WHERE owner = ?1 AND environment = ?2 AND name = ?3",
                params![r.owner, r.environment.as_str(), r.name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let (cred_id, kind, current) = found.ok_or_else(|| not_found(r))?;
        if expected.is_some_and(|e| e != current) {
            return Err(Error::InvalidInput {
                what: "rotation",
                reason: "the credential changed while rotating (another process?); run the command again".into(),
            });
        }
        check_credential(&self.records(), &*inner.conn, &cred_id, None)?;
        if kind != value.kind().as_str() {
            return Err(Error::InvalidInput {
                what: "credential value",
                reason: format!("the value is of type {} but the credential is of type {kind}", value.kind()),
            });
        }
        let next = current + 1;
        let sealed = self.seal_value(&*inner.conn, &mut inner.keys, &cred_id, r, next, value)?;
        let now = now_ms();
        let tx = inner.conn.begin()?;
        // Re-check under the write lock: another process may have rotated meanwhile.
        let still: Option<u32> = tx
            .query_row("SELECT current_version FROM credentials WHERE id = ?1", [&cred_id], |row| row.get(0))
            .optional()?;
        if still != Some(current) {
            return Err(Error::InvalidInput {
                what: "rotation",
                reason: "the credential changed while rotating (another process?); run the command again".into(),
            });
        }
        let rk = self.records();
        check_credential(&rk, &tx, &cred_id, None)?;
        tx.execute(
            "UPDATE versions SET status = 'rotated' WHERE credential_id = ?1 AND status = 'active'",
            [&cred_id],
        )?;
        insert_version(&tx, &cred_id, next, &sealed, now)?;
        tx.execute(
            "UPDATE credentials SET current_version = ?2, status = 'active', revoked_reason = NULL, updated_at = ?3, \
             last_rotated_at = ?3, expires_at = CASE WHEN ?4 THEN ?5 ELSE expires_at END, needs_reauth = NULL \
             WHERE id = ?1",
            params![cred_id, next, now, expires_at.is_some(), expires_at.map(to_ms)],
        )?;
        let pruned = tx.execute(
            "DELETE FROM versions WHERE credential_id = ?1 AND version <= ?2",
            params![cred_id, next as i64 - self.history_depth as i64],
        )?;
        rk.seal(&tx, Table::Credentials, "id = ?1", [&cred_id])?;
        rk.seal(&tx, Table::Versions, "credential_id = ?1", [&cred_id])?;
        let mut detail = serde_json::json!({ "version": next, "previous": current, "pruned_versions": pruned });
        if let serde_json::Value::Object(extra) = extra {
            detail.as_object_mut().expect("an object").extend(extra);
        }
        let detail = detail.to_string();
        self.audit(&tx, &NewRow::about_credential(AuditAction::Rotate, actor, &cred_id, r, &detail))?;
        tx.commit_audited()?;
        Ok(self.show_locked(&*inner.conn, r)?.info)
    }

    /// Revokes a credential at once (soft: kept, but never resolved). Audited as `revoke`.
    pub fn revoke(&self, r: &CredentialRef, reason: &str, actor: &str) -> Result<()> {
        check_text("revocation reason", reason)?;
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let cred_id: String = credential_id(&tx, r)?.ok_or_else(|| not_found(r))?;
        let rk = self.records();
        check_credential(&rk, &tx, &cred_id, None)?;
        let now = now_ms();
        tx.execute(
            "UPDATE credentials SET status = 'revoked', revoked_reason = ?2, updated_at = ?3 WHERE id = ?1",
            params![cred_id, reason, now],
        )?;
        tx.execute(
            "UPDATE versions SET status = 'revoked' WHERE credential_id = ?1 AND status = 'active'",
            [&cred_id],
        )?;
        rk.seal(&tx, Table::Credentials, "id = ?1", [&cred_id])?;
        rk.seal(&tx, Table::Versions, "credential_id = ?1", [&cred_id])?;
        let detail = serde_json::json!({ "reason": reason }).to_string();
        self.audit(&tx, &NewRow::about_credential(AuditAction::Revoke, actor, &cred_id, r, &detail))?;
        tx.commit_audited()
    }

    /// Deletes a credential, its versions and its grants for good, then
    /// checkpoints the WAL so no ciphertext is left in the `-wal` file
    /// (`secure_delete` zeroes the freed space in the database file). Audited as `delete`.
    pub fn delete(&self, r: &CredentialRef, actor: &str) -> Result<()> {
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let cred_id: String = credential_id(&tx, r)?.ok_or_else(|| not_found(r))?;
        let versions = tx.execute("DELETE FROM versions WHERE credential_id = ?1", [&cred_id])?;
        let grants = tx.execute("DELETE FROM grants WHERE credential_id = ?1", [&cred_id])?;
        tx.execute("DELETE FROM credentials WHERE id = ?1", [&cred_id])?;
        let detail = serde_json::json!({ "versions_deleted": versions, "grants_deleted": grants }).to_string();
        self.audit(&tx, &NewRow::about_credential(AuditAction::Delete, actor, &cred_id, r, &detail))?;
        tx.commit_audited()?;
        inner.conn.after_delete();
        Ok(())
    }

    /// Decrypts the current value for an operator (not a skill). Audited as
    /// `read` (the audit row is committed first; if it cannot be written,
    /// nothing is returned). Refuses revoked credentials.
    pub fn reveal(&self, r: &CredentialRef, actor: &str, purpose: Option<&str>) -> Result<SecretValue> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let tx = inner.conn.begin()?;
        let row = load_current(&self.records(), &tx, r)?.ok_or_else(|| not_found(r))?;
        let result = if row.info.status == Status::Revoked {
            Err(Error::Revoked {
                name: r.name.clone(),
                environment: r.environment,
                reason: row.info.revoked_reason.clone().unwrap_or_default(),
            })
        } else {
            self.open_value(
                &tx,
                &mut inner.keys,
                &row.info.id,
                &row.info.reference(),
                row.info.version,
                row.info.kind,
                &row.key_id,
                &row.wrapped_dek,
                &row.ciphertext,
            )
        };
        let err_text = result.as_ref().err().map(|e| e.to_string());
        let detail = serde_json::json!({ "version": row.info.version, "operator": true }).to_string();
        self.audit(
            &tx,
            &NewRow {
                action: if result.is_ok() { AuditAction::Read.as_str() } else { AuditAction::Denied.as_str() },
                actor,
                credential_id: Some(&row.info.id),
                credential_name: Some(&r.name),
                environment: Some(r.environment.as_str()),
                owner: Some(&r.owner),
                purpose,
                detail: Some(&detail),
                success: result.is_ok(),
                error: err_text.as_deref(),
                ..Default::default()
            },
        )?;
        // The row is committed before the value leaves this function.
        tx.commit_audited()?;
        result
    }
}

pub(crate) fn insert_version(tx: &dyn Sql, cred_id: &str, version: u32, s: &Sealed, now: i64) -> Result<()> {
    tx.execute("INSERT INTO versions (credential_id, version, key_id, wrapped_dek, ciphertext, fingerprint, status, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7)", params![cred_id, version, s.key_id, s.wrapped_dek, s.ciphertext, s.fingerprint, now])?;
    Ok(())
}

/// A credential with its current version's sealed value.
pub(crate) struct CurrentRow {
    pub info: CredentialInfo,
    pub key_id: String,
    pub wrapped_dek: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Credential columns read without a join, in [`read_info`] order (the
/// fingerprint placeholder is filled from the version row). Hot-path queries
/// avoid joins: SQLite re-prepares joined statements on every rebind.
const CRED_COLS: &str = "id, owner, environment, name, kind, service, description, scopes, expires_at, status, \
     revoked_reason, created_at, updated_at, last_rotated_at, current_version, '', rotate_every, needs_reauth, test_url";

/// Checks the MACs of credential `id` and of its versions (only `version` when given).
pub(crate) fn check_credential(rk: &RecordKey<'_>, conn: &dyn Sql, id: &str, version: Option<u32>) -> Result<()> {
    rk.check(conn, Table::Credentials, "id = ?1", [id])?;
    match version {
        Some(v) => rk.check(conn, Table::Versions, "credential_id = ?1 AND version = ?2", params![id, v]),
        None => rk.check(conn, Table::Versions, "credential_id = ?1", [id]),
    }
}

fn load_with(rk: &RecordKey<'_>, conn: &dyn Sql, info: Option<CredentialInfo>) -> Result<Option<CurrentRow>> {
    let Some(mut info) = info else { return Ok(None) };
    check_credential(rk, conn, &info.id, Some(info.version))?;
    let (key_id, wrapped_dek, ciphertext, fp): (String, Vec<u8>, Vec<u8>, String) = conn
        .query_row("SELECT key_id, wrapped_dek, ciphertext, fingerprint FROM versions WHERE credential_id = ?1 AND version = ?2", params![info.id, info.version], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?
        .ok_or_else(|| Error::Corrupt { what: format!("credential {} (its current version is missing)", info.id) })?;
    info.fingerprint = partial(&fp);
    Ok(Some(CurrentRow { info, key_id, wrapped_dek, ciphertext }))
}

pub(crate) fn load_current(rk: &RecordKey<'_>, conn: &dyn Sql, r: &CredentialRef) -> Result<Option<CurrentRow>> {
    let info = conn
        .query_row(
            &format!("SELECT {CRED_COLS} FROM credentials WHERE owner = ?1 AND environment = ?2 AND name = ?3"),
            params![r.owner, r.environment.as_str(), r.name],
            read_info,
        )
        .optional()?;
    load_with(rk, conn, info)
}

pub(crate) fn load_current_by_id(rk: &RecordKey<'_>, conn: &dyn Sql, id: &str) -> Result<Option<CurrentRow>> {
    let info =
        conn.query_row(&format!("SELECT {CRED_COLS} FROM credentials WHERE id = ?1"), [id], read_info).optional()?;
    load_with(rk, conn, info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InitOptions, MasterKeySource};

    #[test]
    fn schema_3_reseals_values_sealed_without_owner_environment_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let key = MasterKeySource::Hex("ab".repeat(32).into());
        let v = Vault::init(&path, &key, &InitOptions::default()).unwrap();
        let r = CredentialRef::new("gh");
        let value = SecretValue::from_single(CredentialKind::Bearer, "tok-old-ad").unwrap();
        let info = v.add(&NewCredential::new(r.clone(), CredentialKind::Bearer, "github"), &value, "t").unwrap();
        // Seal version 1 the way schema 2 did, and turn the file back into schema 2.
        let old = {
            let mut inner = v.lock();
            let inner = &mut *inner;
            let (key_id, wrapped_dek): (String, Vec<u8>) = inner
                .conn
                .query_row("SELECT key_id, wrapped_dek FROM versions", params![], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            let kek = inner.keys.kek(&*inner.conn, &v.vault_id, &key_id).unwrap();
            let dek = crypto::open(kek, &dek_ad(&v.vault_id, &info.id, 1, &key_id), &wrapped_dek)
                .and_then(|b| Key32::from_slice(&b))
                .unwrap();
            let ad = value_ad_v1(&v.vault_id, &info.id, 1, &key_id, "bearer");
            let old = crypto::seal(&dek.cipher(), &ad, &value.to_json()).unwrap();
            inner.conn.execute("UPDATE versions SET ciphertext = ?1", [&old]).unwrap();
            inner
                .conn
                .execute_batch(
                    "ALTER TABLE credentials DROP COLUMN mac; ALTER TABLE versions DROP COLUMN mac; \
                     ALTER TABLE grants DROP COLUMN mac; ALTER TABLE grants DROP COLUMN policy; \
                     DROP TABLE api_keys; ALTER TABLE credentials DROP COLUMN rotate_every; \
                     ALTER TABLE credentials DROP COLUMN needs_reauth; ALTER TABLE credentials DROP COLUMN test_url; \
                     DROP TABLE leases; PRAGMA user_version = 2;",
                )
                .unwrap();
            old
        };
        drop(v);
        let v = Vault::open(&path, &key).unwrap();
        let now: Vec<u8> = v.lock().conn.query_row("SELECT ciphertext FROM versions", params![], |r| r.get(0)).unwrap();
        assert_ne!(now, old, "the value was re-sealed");
        assert_eq!(&v.reveal(&r, "t", None).unwrap().to_json()[..], &value.to_json()[..]);
        assert!(v.audit_verify().unwrap().is_ok());
    }
}
