//! API keys: how clients of `skillbox serve` prove who they are, and what each key lets them do.
//!
//! A key is `sbx_` followed by 43 random base62 characters (256 bits from the operating
//! system's generator), in the shape the leak scanner's `skillbox-api-key` rule recognises.
//! It is handed out once, by [`Vault::apikey_create`], and never stored: the `api_keys` row
//! holds HMAC-SHA256 of it under an HKDF sub-key of the vault secret (`…/api-key`), so the
//! file alone cannot even confirm a guessed key, and a fingerprint (`sbx_…a1b2c3`, the last
//! six hex digits of a second, separately labelled HMAC) that names the key in listings and
//! audit rows without telling anything about it.
//!
//! A key fixes the user (tenant) and environment of every call made with it, and may be
//! limited to some skills. Those columns, the hash, the expiry and the revocation are covered
//! by the row's MAC (`records.rs`), so editing the file cannot move a key to another tenant,
//! into production, to more skills, or back to life. `last_used_at` is not covered: it
//! changes on use and decides nothing.
//!
//! [`Vault::apikey_verify`] runs on every HTTP request: one HMAC, one indexed lookup by hash,
//! a constant-time comparison, the row's MAC, and at most one small write a minute per key.
//! Every refusal is the same [`Error::ApiKeyRefused`], which says nothing about why.

use std::sync::LazyLock;

use crate::store::{OptionalExtension, Row, SqlExt, params};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Vault;
use crate::audit::NewRow;
use crate::creds::check_ident;
use crate::crypto;
use crate::error::{Error, Result};
use crate::records::Table;
use crate::types::*;

/// Every key starts with this; the leak scanner's `skillbox-api-key` rule looks for it.
pub const API_KEY_PREFIX: &str = "sbx_";
/// Random characters after the prefix: 43 base62 characters carry 256 bits (43 × log2 62 ≈ 256.03).
const RANDOM_CHARS: usize = 43;
const KEY_LEN: usize = API_KEY_PREFIX.len() + RANDOM_CHARS;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Longer input is refused without being hashed (no key of ours is near this long).
const MAX_PRESENTED_LEN: usize = 256;
/// `last_used_at` is rewritten only once it is at least this old, so a busy key costs one
/// write a minute, not one per request.
const LAST_USED_EVERY_MS: i64 = 60_000;
/// Labels of the two HMACs under the API key sub-key (fixed length, then the key).
const HASH_LABEL: &[u8] = b"skillbox-vault/v1/api-key/hash\0";
const FINGERPRINT_LABEL: &[u8] = b"skillbox-vault/v1/api-key/fingerprint\0";
/// Fresh keys drawn at most this often when the fingerprint is taken (each time a 2^-24 chance
/// per existing key).
const FINGERPRINT_TRIES: usize = 64;

/// `SELECT` of every MACed column, then `mac` (11) and `last_used_at` (12).
fn select(where_: &str) -> String {
    format!("SELECT {}, mac, last_used_at FROM api_keys WHERE {where_}", Table::ApiKeys.columns())
}

static BY_HASH: LazyLock<String> = LazyLock::new(|| select("key_hash = ?1"));

/// A new key: the prefix and [`RANDOM_CHARS`] base62 characters, uniformly drawn.
fn generate_key() -> Result<SecretString> {
    let mut key = Zeroizing::new(String::with_capacity(KEY_LEN));
    key.push_str(API_KEY_PREFIX);
    let mut pool = Zeroizing::new([0u8; 64]);
    while key.len() < KEY_LEN {
        crypto::fill_random(&mut pool[..])?;
        for &b in pool.iter() {
            // Rejection sampling: 248 = 4 × 62, so `b % 62` is uniform over the bytes kept.
            if b < 248 && key.len() < KEY_LEN {
                key.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    // Capacity equals length, so the move into the box does not reallocate (and leave a copy).
    Ok(SecretString::from(std::mem::take(&mut *key)))
}

fn read_info(r: &Row<'_>, now: i64) -> Result<ApiKeyInfo> {
    let bad = |what: &str| -> Error {
        crate::store::DbError::convert(format!("column {what} holds an unknown value")).into()
    };
    let environment: String = r.get(3)?;
    let skills: Option<String> = r.get(4)?;
    let expires_at: Option<i64> = r.get(9)?;
    let revoked_at: Option<i64> = r.get(10)?;
    let status = if revoked_at.is_some() {
        ApiKeyStatus::Revoked
    } else if expires_at.is_some_and(|e| e <= now) {
        ApiKeyStatus::Expired
    } else {
        ApiKeyStatus::Active
    };
    Ok(ApiKeyInfo {
        name: r.get(1)?,
        fingerprint: r.get(6)?,
        owner: r.get(2)?,
        environment: environment.parse().map_err(|_| bad("environment"))?,
        // Never read an unparsable list as "every skill".
        skills: skills.map(|s| serde_json::from_str(&s)).transpose().map_err(|_| bad("skills"))?,
        created_at: from_ms(r.get(7)?),
        created_by: r.get(8)?,
        expires_at: expires_at.map(from_ms),
        revoked_at: revoked_at.map(from_ms),
        last_used_at: r.get::<Option<i64>>(12)?.map(from_ms),
        status,
    })
}

impl Vault {
    /// The keyed hash stored for `key`.
    fn apikey_hash(&self, key: &str) -> [u8; 32] {
        self.apikey_key.mac(&[HASH_LABEL, key.as_bytes()])
    }

    /// `sbx_…a1b2c3`: the last six hex digits of a second keyed hash of `key`.
    fn apikey_fingerprint(&self, key: &str) -> String {
        let h = self.apikey_key.mac(&[FINGERPRINT_LABEL, key.as_bytes()]);
        format!("{API_KEY_PREFIX}…{}", hex::encode(&h[29..]))
    }

    /// Creates an API key for a client of `skillbox serve` and returns it, once: the vault
    /// keeps only a keyed hash of it and a fingerprint. Audited as `apikey-create` (the
    /// detail holds the name, fingerprint, user, environment, skills and expiry; never the key).
    ///
    /// `skills: Some(list)` limits the key to those skills (at least one); `None` allows
    /// every skill. An expiry in the past makes a key that is already expired.
    pub fn apikey_create(&self, new: &NewApiKey, actor: &str) -> Result<(ApiKeyInfo, SecretString)> {
        check_ident("API key name", &new.name)?;
        check_ident("user", &new.owner)?;
        let skills = match &new.skills {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(Error::InvalidInput {
                    what: "skills",
                    reason: "give at least one skill name (or none at all to allow every skill)".into(),
                });
            }
            Some(list) => {
                for s in list {
                    check_ident("skill name", s)?;
                }
                let mut list = list.clone();
                list.sort();
                list.dedup();
                Some(list)
            }
        };
        let skills_json = skills.as_ref().map(|s| serde_json::to_string(s).expect("strings serialize"));
        let id = format!("apikey_{}", crypto::random_hex(8)?);
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        if tx.exists("SELECT 1 FROM api_keys WHERE name = ?1", [&new.name])? {
            return Err(Error::ApiKeyExists { name: new.name.clone() });
        }
        // The fingerprint names one key in audit rows: draw again in the rare case it is taken.
        let mut drawn = None;
        for _ in 0..FINGERPRINT_TRIES {
            let key = generate_key()?;
            let fingerprint = self.apikey_fingerprint(key.expose_secret());
            if !tx.exists("SELECT 1 FROM api_keys WHERE fingerprint = ?1", [&fingerprint])? {
                drawn = Some((key, fingerprint));
                break;
            }
        }
        let Some((key, fingerprint)) = drawn else {
            return Err(Error::InvalidInput {
                what: "API key",
                reason: "no unused fingerprint was found: revoke and remove keys no longer needed".into(),
            });
        };
        let hash = self.apikey_hash(key.expose_secret());
        let now = now_ms();
        tx.execute(
            "INSERT INTO api_keys (id, name, owner, environment, skills, key_hash, fingerprint, created_at, \
             created_by, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                id,
                new.name,
                new.owner,
                new.environment.as_str(),
                skills_json,
                &hash[..],
                fingerprint,
                now,
                actor,
                new.expires_at.map(to_ms),
            ],
        )?;
        self.records().seal(&tx, Table::ApiKeys, "id = ?1", [&id])?;
        let detail = serde_json::json!({
            "name": new.name,
            "fingerprint": fingerprint,
            "user": new.owner,
            "environment": new.environment.as_str(),
            "skills": skills,
            "expires_at": new.expires_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        })
        .to_string();
        self.audit(
            &tx,
            &NewRow {
                action: AuditAction::ApikeyCreate.as_str(),
                actor,
                environment: Some(new.environment.as_str()),
                owner: Some(&new.owner),
                detail: Some(&detail),
                success: true,
                ..Default::default()
            },
        )?;
        let info = tx.query_row(&select("id = ?1"), [&id], |r| read_info(r, now))?;
        tx.commit_audited()?;
        Ok((info, key))
    }

    /// Checks an API key presented by a client (the `Bearer` token of an HTTP request) and
    /// returns what it allows: the user and environment every call it makes runs as, and the
    /// skills it may call ([`ApiKeyInfo::allows_skill`]).
    ///
    /// One HMAC of the key, one lookup by that hash (an index), a constant-time comparison of
    /// the hashes, the row's MAC, then its revocation and expiry. An unknown, malformed,
    /// revoked or expired key is [`Error::ApiKeyRefused`], whose message says nothing more
    /// (answer 401). A key whose row fails its MAC is [`Error::Tampered`], for the operator
    /// (answer 401 or 500, and log it). No audit row is written; `last_used_at` is updated
    /// when it is a minute old or more (a failure to write it is logged, not returned).
    pub fn apikey_verify(&self, key: &str) -> Result<ApiKeyInfo> {
        if !key.starts_with(API_KEY_PREFIX) || key.len() > MAX_PRESENTED_LEN {
            return Err(Error::ApiKeyRefused);
        }
        let hash = self.apikey_hash(key);
        let now = now_ms();
        let inner = self.lock();
        let (id, mut info) = {
            let rows = inner.conn.query_rows(&BY_HASH, params![&hash[..]])?;
            let Some(r) = rows.iter().next() else {
                return Err(Error::ApiKeyRefused);
            };
            let r = &r;
            let stored: Vec<u8> = r.get(5)?;
            if !bool::from(hash[..].ct_eq(&stored[..])) {
                return Err(Error::ApiKeyRefused);
            }
            if !self.records().is_authentic(Table::ApiKeys, r)? {
                return Err(Table::ApiKeys.tampered(r));
            }
            (r.get::<String>(0)?, read_info(r, now)?)
        };
        if info.status != ApiKeyStatus::Active {
            return Err(Error::ApiKeyRefused);
        }
        let stale = info.last_used_at.is_none_or(|t| now - to_ms(t) >= LAST_USED_EVERY_MS);
        if stale {
            let written = inner.conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?3)",
                params![id, now, now - LAST_USED_EVERY_MS],
            );
            match written {
                Ok(_) => info.last_used_at = Some(from_ms(now)),
                Err(e) => tracing::warn!("recording when API key {} was last used failed: {e}", info.fingerprint),
            }
        }
        Ok(info)
    }

    /// Every API key (never a key itself, which the vault does not have), by name, revoked
    /// and expired ones included. A row that fails its MAC is [`Error::Tampered`].
    pub fn apikey_list(&self) -> Result<Vec<ApiKeyInfo>> {
        let now = now_ms();
        let inner = self.lock();
        let rk = self.records();
        let rows = inner.conn.query_rows(&format!("{} ORDER BY name", select("1=1")), params![])?;
        let mut out = Vec::new();
        for r in rows.iter() {
            let r = &r;
            if !rk.is_authentic(Table::ApiKeys, r)? {
                return Err(Table::ApiKeys.tampered(r));
            }
            out.push(read_info(r, now)?);
        }
        Ok(out)
    }

    /// Revokes the API key `name` at once: every later request with it is refused. The row
    /// is kept (listings show it as revoked; its name and fingerprint stay taken). Audited
    /// as `apikey-revoke`; revoking a revoked key changes and records nothing.
    pub fn apikey_revoke(&self, name: &str, actor: &str) -> Result<()> {
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        type Found = (String, String, String, String, Option<i64>);
        let found: Option<Found> = tx
            .query_row(
                "SELECT id, fingerprint, owner, environment, revoked_at FROM api_keys WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, fingerprint, owner, environment, revoked_at)) = found else {
            return Err(Error::ApiKeyNotFound { name: name.into() });
        };
        let rk = self.records();
        // A write never blesses a forgery: check the row before sealing it again.
        rk.check(&tx, Table::ApiKeys, "id = ?1", [&id])?;
        if revoked_at.is_some() {
            return Ok(());
        }
        tx.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1", params![id, now_ms()])?;
        rk.seal(&tx, Table::ApiKeys, "id = ?1", [&id])?;
        let detail = serde_json::json!({ "name": name, "fingerprint": fingerprint }).to_string();
        self.audit(
            &tx,
            &NewRow {
                action: AuditAction::ApikeyRevoke.as_str(),
                actor,
                environment: Some(&environment),
                owner: Some(&owner),
                detail: Some(&detail),
                success: true,
                ..Default::default()
            },
        )?;
        tx.commit_audited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_scanners_shape_and_differ() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        for k in [&a, &b] {
            let k = k.expose_secret();
            assert_eq!(k.len(), KEY_LEN);
            assert!(k.starts_with("sbx_"));
            // The scanner's rule: \b(sbx_[0-9A-Za-z]{32,})\b
            assert!(k[4..].bytes().all(|c| c.is_ascii_alphanumeric()), "{}", k.len());
        }
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn every_base62_character_is_drawn() {
        let mut seen = [false; 62];
        for _ in 0..100 {
            for c in generate_key().unwrap().expose_secret()[4..].bytes() {
                seen[BASE62.iter().position(|&x| x == c).unwrap()] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "4300 draws from 62 characters cover them all");
    }
}
