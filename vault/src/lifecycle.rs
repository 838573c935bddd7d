//! The credential lifecycle beyond add/rotate/revoke: rotation schedules and what is due,
//! re-authorization marks, generated values, and the one-step compromise response.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction holding its audit row, like the rest of
//! the vault; every row read is MAC-checked first, and every row written is sealed again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::store::{Sql, SqlExt, params};
use secrecy::SecretString;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::Vault;
use crate::audit::NewRow;
use crate::creds::{check_credential, credential_id, load_current, not_found};
use crate::error::{Error, Result};
use crate::records::Table;
use crate::secret::{CredentialKind, SecretValue};
use crate::types::*;

/// The shortest rotation schedule accepted.
const MIN_ROTATE_EVERY: Duration = Duration::from_secs(60);
/// The longest (100 years).
const MAX_ROTATE_EVERY: Duration = Duration::from_secs(100 * 365 * 86_400);
/// How far back [`Vault::compromised`] summarizes uses.
pub const COMPROMISE_USAGE_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// Generated values: at least this many characters...
const MIN_GENERATED: usize = 16;
/// ...and at most this many.
const MAX_GENERATED: usize = 4096;
/// A credential overdue for rotation is warned about at most this often per process.
const OVERDUE_WARN_EVERY: Duration = Duration::from_secs(3600);

/// A rotation schedule as stored (whole seconds), or why it is refused.
pub(crate) fn check_rotate_every(d: Duration) -> Result<i64> {
    if d < MIN_ROTATE_EVERY || d > MAX_ROTATE_EVERY {
        return Err(Error::InvalidInput {
            what: "rotation schedule",
            reason: "must be between 1 minute and 100 years (give a duration like 90d, 12h or 30m)".into(),
        });
    }
    Ok(d.as_secs() as i64)
}

/// A `cred test` URL: http(s), no user name or password in it (they would be stored and
/// shown in clear), no whitespace or control characters, at most 2048 bytes.
fn check_test_url(url: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidInput { what: "test URL", reason: reason.into() };
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("must be at most 2048 characters, without spaces or control characters"));
    }
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return Err(invalid("must start with https:// (or http:// for a loopback test server)"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(invalid("names no host (give a URL like https://api.example.com/v1/me)"));
    }
    if authority.contains('@') {
        return Err(invalid(
            "must not hold a user name or password (it is stored and shown in clear); the credential supplies them",
        ));
    }
    Ok(())
}

fn check_reason(what: &'static str, s: &str) -> Result<()> {
    if s.trim().is_empty() || s.len() > 1024 || s.chars().any(char::is_control) {
        return Err(Error::InvalidInput {
            what,
            reason: "must be 1-1024 characters without control characters".into(),
        });
    }
    Ok(())
}

/// The field of a `kind` value that [`Vault::rotate_generated`] replaces by default.
fn default_field(kind: CredentialKind) -> Option<&'static str> {
    match kind {
        CredentialKind::ApiKey | CredentialKind::HmacKey => Some("key"),
        CredentialKind::Bearer => Some("access_token"),
        CredentialKind::Basic => Some("password"),
        _ => None,
    }
}

/// `length` characters drawn uniformly from `charset` by the operating system's generator.
fn generate(length: usize, charset: Charset) -> Result<Zeroizing<String>> {
    use rand::{Rng, TryRngCore};
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const HEX: &[u8] = b"0123456789abcdef";
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let printable: Vec<u8> = (b'!'..=b'~').collect();
    let alphabet: &[u8] = match charset {
        Charset::Alnum => ALNUM,
        Charset::Hex => HEX,
        Charset::Base64url => B64URL,
        Charset::Printable => &printable,
    };
    // Fails before drawing anything if the generator is unavailable.
    let mut probe = [0u8; 1];
    rand::rngs::OsRng.try_fill_bytes(&mut probe).map_err(|e| Error::Random(e.to_string()))?;
    let mut rng = rand::rngs::OsRng.unwrap_err();
    let mut out = Zeroizing::new(String::with_capacity(length));
    for _ in 0..length {
        out.push(alphabet[rng.random_range(0..alphabet.len())] as char);
    }
    Ok(out)
}

/// A parsed JSON value whose strings are wiped when it is dropped.
struct Scrubbed(Value);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        fn scrub(v: &mut Value) {
            match v {
                Value::String(s) => s.zeroize(),
                Value::Array(a) => a.iter_mut().for_each(scrub),
                Value::Object(m) => m.values_mut().for_each(scrub),
                _ => {}
            }
        }
        scrub(&mut self.0);
    }
}

/// Credentials overdue for rotation already warned about, by id (see [`warn_if_overdue`]).
static OVERDUE_WARNED: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

/// Logs a warning when a credential just resolved for a skill is overdue for rotation (at
/// most once an hour per credential and process): how `skillbox run` and `serve` say so.
pub(crate) fn warn_if_overdue(info: &CredentialInfo, skill: &str) {
    let Some(due) = info.rotation_due_at.filter(|d| *d <= SystemTime::now()) else { return };
    let mut warned = OVERDUE_WARNED.lock().unwrap_or_else(|p| p.into_inner());
    let warned = warned.get_or_insert_with(HashMap::new);
    if warned.get(&info.id).is_some_and(|t| t.elapsed() < OVERDUE_WARN_EVERY) {
        return;
    }
    warned.insert(info.id.clone(), Instant::now());
    tracing::warn!(
        credential = %info.name,
        environment = %info.environment,
        skill,
        due_at = %humantime::format_rfc3339_seconds(due),
        "credential '{}' is overdue for rotation (due {}): rotate it with `skillbox cred rotate {}{}`",
        info.name,
        humantime::format_rfc3339_seconds(due),
        info.name,
        if info.environment == Environment::Dev { String::new() } else { format!(" --env {}", info.environment) },
    );
}

/// Uses of credential `cred_id` since `since` (ms), from the audit log: `read` rows (a value
/// handed out) and `use` rows (host-side uses), grouped by skill, digest, actor and host.
///
/// A `use` row names no component digest; it gets the digest of the last `read` row of the
/// same skill and actor before it (the resolve that opened the handle it was made with).
pub(crate) fn usage(conn: &dyn Sql, cred_id: &str, since: i64) -> Result<Vec<UsageRow>> {
    let rows = conn.query_rows(
        "SELECT ts, action, actor, skill, detail, success FROM audit \
         WHERE credential_id = ?1 AND ts >= ?2 AND action IN ('read', 'use') ORDER BY id",
        params![cred_id, since],
    )?;
    let mut last_digest: HashMap<(Option<String>, String), String> = HashMap::new();
    let mut groups: Vec<UsageRow> = Vec::new();
    for r in rows.iter() {
        let ts: i64 = r.get(0)?;
        let action: String = r.get(1)?;
        let actor: String = r.get(2)?;
        let skill: Option<String> = r.get(3)?;
        let detail: String = r.get(4)?;
        let success: bool = r.get(5)?;
        let detail: Value = serde_json::from_str(&detail).unwrap_or(Value::Null);
        let text = |k: &str| detail.get(k).and_then(Value::as_str).map(str::to_owned);
        let key = (skill.clone(), actor.clone());
        let digest = text("skill_digest").or_else(|| text("digest"));
        let (digest, host) = if action == "read" {
            if let Some(d) = &digest {
                last_digest.insert(key, d.clone());
            }
            (digest, None)
        } else {
            (digest.or_else(|| last_digest.get(&key).cloned()), text("host"))
        };
        let at = from_ms(ts);
        let g = match groups
            .iter_mut()
            .find(|g| g.skill == skill && g.digest == digest && g.actor == actor && g.host == host)
        {
            Some(g) => g,
            None => {
                groups.push(UsageRow {
                    skill,
                    digest,
                    actor,
                    host,
                    opens: 0,
                    uses: 0,
                    failures: 0,
                    first: at,
                    last: at,
                });
                groups.last_mut().expect("just pushed")
            }
        };
        if action == "read" {
            g.opens += 1;
        } else {
            g.uses += 1;
        }
        if !success {
            g.failures += 1;
        }
        g.first = g.first.min(at);
        g.last = g.last.max(at);
    }
    groups.sort_by(|a, b| b.last.cmp(&a.last));
    Ok(groups)
}

impl Vault {
    /// Changes a credential's metadata: rotation schedule, test URL, description. Audited as
    /// `update` (detail: what changed; never a value). Nothing to change is an error.
    pub fn update(&self, r: &CredentialRef, change: &CredentialUpdate, actor: &str) -> Result<CredentialInfo> {
        if change.is_empty() {
            return Err(Error::InvalidInput {
                what: "update",
                reason: "nothing to change: give --rotate-every D, --no-rotate, --test-url URL, --no-test-url or \
                         --description TEXT"
                    .into(),
            });
        }
        let rotate_every = match change.rotate_every {
            Some(Some(d)) => Some(Some(check_rotate_every(d)?)),
            Some(None) => Some(None),
            None => None,
        };
        if let Some(Some(url)) = &change.test_url {
            check_test_url(url)?;
        }
        if let Some(Some(d)) = &change.description {
            check_reason("description", d)?;
        }
        let mut detail = serde_json::Map::new();
        if let Some(v) = rotate_every {
            detail.insert("rotate_every_secs".into(), v.into());
        }
        if let Some(v) = &change.test_url {
            detail.insert("test_url".into(), v.clone().into());
        }
        if let Some(v) = &change.description {
            detail.insert("description".into(), v.clone().into());
        }
        self.update_columns(r, actor, Value::Object(detail), |tx, id, now| {
            if let Some(v) = rotate_every {
                tx.execute(
                    "UPDATE credentials SET rotate_every = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, v, now],
                )?;
            }
            if let Some(v) = &change.test_url {
                tx.execute("UPDATE credentials SET test_url = ?2, updated_at = ?3 WHERE id = ?1", params![id, v, now])?;
            }
            if let Some(v) = &change.description {
                tx.execute(
                    "UPDATE credentials SET description = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, v, now],
                )?;
            }
            Ok(())
        })
    }

    /// Sets (or with `None` removes) a credential's rotation schedule. See [`Vault::update`].
    pub fn set_rotation(&self, r: &CredentialRef, every: Option<Duration>, actor: &str) -> Result<CredentialInfo> {
        self.update(r, &CredentialUpdate { rotate_every: Some(every), ..Default::default() }, actor)
    }

    /// Sets (or with `None` removes) the URL `cred test` requests. See [`Vault::update`].
    pub fn set_test_url(&self, r: &CredentialRef, url: Option<&str>, actor: &str) -> Result<CredentialInfo> {
        self.update(r, &CredentialUpdate { test_url: Some(url.map(str::to_owned)), ..Default::default() }, actor)
    }

    /// Marks a credential as needing an operator before it works again (an OAuth 2 refresh
    /// failed with `invalid_grant`, say): `reason` is stored in `needs_reauth` (MACed), listed
    /// by [`Vault::due`], and cleared when a new value is stored ([`Vault::rotate`]). Audited
    /// as `update` with `needs_reauth` in the detail. The reason must not hold a secret (it
    /// is stored and shown in clear).
    pub fn mark_needs_reauth(&self, r: &CredentialRef, reason: &str, actor: &str) -> Result<CredentialInfo> {
        check_reason("re-authorization reason", reason)?;
        let detail = serde_json::json!({ "needs_reauth": reason });
        self.update_columns(r, actor, detail, |tx, id, now| {
            tx.execute(
                "UPDATE credentials SET needs_reauth = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, reason, now],
            )?;
            Ok(())
        })
    }

    /// One `update` transaction: finds and MAC-checks the credential, runs `apply`, seals the
    /// row again and appends the audit row.
    fn update_columns(
        &self,
        r: &CredentialRef,
        actor: &str,
        detail: Value,
        apply: impl FnOnce(&dyn Sql, &str, i64) -> Result<()>,
    ) -> Result<CredentialInfo> {
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let cred_id = credential_id(&tx, r)?.ok_or_else(|| not_found(r))?;
        let rk = self.records();
        check_credential(&rk, &tx, &cred_id, None)?;
        apply(&tx, &cred_id, now_ms())?;
        rk.seal(&tx, Table::Credentials, "id = ?1", [&cred_id])?;
        let detail = detail.to_string();
        self.audit(&tx, &NewRow::about_credential(AuditAction::Update, actor, &cred_id, r, &detail))?;
        tx.commit_audited()?;
        drop(inner);
        Ok(self.show(r)?.info)
    }

    /// What needs an operator within `within` from now, most urgent first: rotations due
    /// (or overdue) by their schedule, expiries (or expired credentials), and credentials that
    /// need re-authorization. Revoked credentials are left out. An item is `overdue` when its
    /// time has passed or it needs re-authorization.
    pub fn due(&self, within: Duration) -> Result<Vec<DueItem>> {
        let now = SystemTime::now();
        let horizon = now.checked_add(within).unwrap_or(now);
        let mut items = Vec::new();
        for c in self.list(&ListFilter::default())? {
            if c.status == Status::Revoked {
                continue;
            }
            if c.needs_reauth.is_some() {
                items.push(DueItem {
                    credential: c.clone(),
                    reason: DueReason::NeedsReauth,
                    due_at: None,
                    overdue: true,
                });
            }
            if let Some(due) = c.rotation_due_at.filter(|d| *d <= horizon) {
                items.push(DueItem {
                    credential: c.clone(),
                    reason: DueReason::Rotation,
                    due_at: Some(due),
                    overdue: due <= now,
                });
            }
            if let Some(exp) = c.expires_at.filter(|e| *e <= horizon) {
                items.push(DueItem {
                    credential: c.clone(),
                    reason: DueReason::Expiry,
                    due_at: Some(exp),
                    overdue: exp <= now,
                });
            }
        }
        items.sort_by(|a, b| {
            b.overdue.cmp(&a.overdue).then_with(|| {
                a.due_at.unwrap_or(SystemTime::UNIX_EPOCH).cmp(&b.due_at.unwrap_or(SystemTime::UNIX_EPOCH))
            })
        });
        Ok(items)
    }

    /// Stores a new random value as the next version (like [`Vault::rotate`]): `generate.length`
    /// characters from `generate.charset`, drawn by the operating system's generator, replacing
    /// one field of the current value (`key` for api_key and hmac_key, `access_token` for bearer,
    /// `password` for basic, the named top-level string field for custom); the other fields are
    /// kept. Refused for `oauth2` (its provider issues tokens) and `database` (the server's
    /// password must change first). Audited as `rotate` with `generated` in the detail.
    ///
    /// The expiry is replaced when `expires_at` is `Some` (as [`Vault::rotate_with`]). The new
    /// secret is returned for the caller to show once if asked; it is never logged.
    pub fn rotate_generated(
        &self,
        r: &CredentialRef,
        generate: &Generate,
        expires_at: Option<SystemTime>,
        actor: &str,
    ) -> Result<(CredentialInfo, SecretString)> {
        if !(MIN_GENERATED..=MAX_GENERATED).contains(&generate.length) {
            return Err(Error::InvalidInput {
                what: "generated value length",
                reason: format!("must be {MIN_GENERATED} to {MAX_GENERATED} characters"),
            });
        }
        let (kind, version, current) = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            let row = load_current(&self.records(), &*inner.conn, r)?.ok_or_else(|| not_found(r))?;
            let kind = row.info.kind;
            match kind {
                CredentialKind::OAuth2 => {
                    return Err(Error::InvalidInput {
                        what: "--generate",
                        reason: format!(
                            "'{}' is an oauth2 credential: its provider issues the tokens. Get new ones with \
                             `skillbox oauth login {}`, or store them with `skillbox cred rotate {} --value-stdin`",
                            r.name, r.name, r.name
                        ),
                    });
                }
                CredentialKind::Database => {
                    return Err(Error::InvalidInput {
                        what: "--generate",
                        reason: format!(
                            "'{}' is a database credential: its password must be changed on the server first \
                             (ALTER ROLE ... PASSWORD), then stored with `skillbox cred rotate {} --value-stdin`",
                            r.name, r.name
                        ),
                    });
                }
                _ => {}
            }
            let current = self.open_value(
                &*inner.conn,
                &mut inner.keys,
                &row.info.id,
                &row.info.reference(),
                row.info.version,
                kind,
                &row.key_id,
                &row.wrapped_dek,
                &row.ciphertext,
            )?;
            (kind, row.info.version, current)
        };
        let field = match (&generate.field, default_field(kind)) {
            (Some(f), _) => f.clone(),
            (None, Some(f)) => f.to_owned(),
            (None, None) => {
                return Err(Error::InvalidInput {
                    what: "--generate",
                    reason: format!(
                        "a {kind} value has several fields: name the one to generate with --field NAME (a \
                         top-level string field of the stored object)"
                    ),
                });
            }
        };
        let mut json = Scrubbed(
            serde_json::from_slice::<Value>(&current.to_json())
                .map_err(|_| Error::Corrupt { what: format!("the current value of '{}'", r.name) })?,
        );
        drop(current);
        let Value::Object(map) = &mut json.0 else {
            return Err(Error::Corrupt { what: format!("the current value of '{}'", r.name) });
        };
        let secret = generate_value(generate)?;
        match map.get_mut(&field) {
            Some(Value::String(s)) => {
                s.zeroize();
                *s = secret.to_string();
            }
            Some(_) => {
                return Err(Error::InvalidInput {
                    what: "--field",
                    reason: format!("field '{field}' of '{}' is not a string", r.name),
                });
            }
            None if kind != CredentialKind::Custom && default_field(kind) == Some(field.as_str()) => {
                map.insert(field.clone(), Value::String(secret.to_string()));
            }
            None if kind == CredentialKind::ApiKey && field == "secret" => {
                map.insert(field.clone(), Value::String(secret.to_string()));
            }
            None => {
                let fields: Vec<&str> = map.iter().filter(|(_, v)| v.is_string()).map(|(k, _)| k.as_str()).collect();
                return Err(Error::InvalidInput {
                    what: "--field",
                    reason: format!(
                        "'{}' has no string field '{field}' (its string fields: {})",
                        r.name,
                        if fields.is_empty() { "none".into() } else { fields.join(", ") }
                    ),
                });
            }
        }
        let text = Zeroizing::new(json.0.to_string());
        let value = SecretValue::from_json(kind, &text)?;
        let extra = serde_json::json!({
            "generated": { "field": field, "length": generate.length, "charset": generate.charset.as_str() }
        });
        let info = self.rotate_inner(r, &value, expires_at, actor, Some(version), extra)?;
        Ok((info, SecretString::from(secret.to_string())))
    }

    /// Declares a credential compromised. In one transaction: the credential and every stored
    /// version are revoked (reason `compromised: REASON`), every grant of it not already
    /// suspended is suspended (a `suspend` row each), and a `compromise` row records the
    /// reason, the versions revoked and the grants suspended (never a value). Then the audit
    /// log's last 30 days of `read` and `use` rows of the credential are summarized by skill,
    /// component digest, actor and host: what to look at and rotate downstream.
    ///
    /// To put it back in service: store a new value (`rotate`, which un-revokes it), then grant
    /// each skill again (which lifts the suspension).
    pub fn compromised(&self, r: &CredentialRef, reason: &str, actor: &str) -> Result<CompromiseReport> {
        check_reason("compromise reason", reason)?;
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let cred_id = credential_id(&tx, r)?.ok_or_else(|| not_found(r))?;
        let rk = self.records();
        check_credential(&rk, &tx, &cred_id, None)?;
        let now = now_ms();
        let previous: String =
            tx.query_row("SELECT status FROM credentials WHERE id = ?1", [&cred_id], |row| row.get(0))?;
        tx.execute(
            "UPDATE credentials SET status = 'revoked', revoked_reason = ?2, updated_at = ?3 WHERE id = ?1",
            params![cred_id, format!("compromised: {reason}"), now],
        )?;
        let versions_revoked = tx.execute(
            "UPDATE versions SET status = 'revoked' WHERE credential_id = ?1 AND status != 'revoked'",
            [&cred_id],
        )? as u32;
        rk.seal(&tx, Table::Credentials, "id = ?1", [&cred_id])?;
        rk.seal(&tx, Table::Versions, "credential_id = ?1", [&cred_id])?;
        let suspend_reason = format!("credential '{}' declared compromised: {reason}", r.name);
        let grants_suspended = self.suspend_credential_grants(&tx, &cred_id, now, &suspend_reason, actor)?;
        let detail = serde_json::json!({
            "reason": reason,
            "previous_status": previous,
            "versions_revoked": versions_revoked,
            "grants_suspended": grants_suspended.iter().map(|g| serde_json::json!({
                "grant_id": g.id, "skill": g.skill, "alias": g.alias,
                "environment": g.environment.as_str(), "owner": g.owner,
            })).collect::<Vec<_>>(),
        })
        .to_string();
        self.audit(&tx, &NewRow::about_credential(AuditAction::Compromise, actor, &cred_id, r, &detail))?;
        let audit_id: i64 = tx.query_row("SELECT max(id) FROM audit", params![], |row| row.get(0))?;
        let since = now.saturating_sub(COMPROMISE_USAGE_WINDOW.as_millis() as i64);
        let usage = usage(&tx, &cred_id, since)?;
        tx.commit_audited()?;
        drop(inner);
        tracing::warn!(credential = %r.name, environment = %r.environment, "credential declared compromised: {reason}");
        Ok(CompromiseReport {
            credential: self.show(r)?.info,
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            at: from_ms(now),
            versions_revoked,
            grants_suspended,
            audit_id,
            usage_since: from_ms(since),
            usage,
        })
    }

    /// Who used credential `r` since `since`, from the audit log (see [`Vault::compromised`]).
    pub fn credential_usage(&self, r: &CredentialRef, since: SystemTime) -> Result<Vec<UsageRow>> {
        let inner = self.lock();
        let cred_id = credential_id(&*inner.conn, r)?.ok_or_else(|| not_found(r))?;
        usage(&*inner.conn, &cred_id, to_ms(since))
    }
}

fn generate_value(g: &Generate) -> Result<Zeroizing<String>> {
    generate(g.length, g.charset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InitOptions, MasterKeySource};
    use rusqlite::Connection;

    const DIGEST: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const DIGEST_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn key() -> MasterKeySource {
        MasterKeySource::Hex("cd".repeat(32).into())
    }

    fn vault(dir: &std::path::Path) -> (Vault, std::path::PathBuf) {
        let path = dir.join("v.db");
        (Vault::init(&path, &key(), &InitOptions::default()).unwrap(), path)
    }

    fn add(v: &Vault, name: &str, kind: CredentialKind, value: &str) -> CredentialInfo {
        let value = if kind.is_single_secret() {
            SecretValue::from_single(kind, value).unwrap()
        } else {
            SecretValue::from_json(kind, value).unwrap()
        };
        v.add(&NewCredential::new(CredentialRef::new(name), kind, "svc"), &value, "op").unwrap()
    }

    fn access(skill: &str, name: &str, digest: &str, user: &str) -> Access {
        Access {
            skill: skill.into(),
            skill_digest: digest.into(),
            declared_name: name.into(),
            environment: Environment::Dev,
            owner: DEFAULT_OWNER.into(),
            user: user.into(),
            purpose: None,
            one_time_approval: None,
            policy: None,
        }
    }

    fn raw(path: &std::path::Path) -> Connection {
        Connection::open(path).unwrap()
    }

    fn tampered(r: Result<impl std::fmt::Debug>) -> bool {
        matches!(r, Err(Error::Tampered { .. }))
    }

    #[test]
    fn a_schema_5_vault_is_migrated_to_6_and_its_macs_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (v, path) = vault(dir.path());
        add(&v, "gh", CredentialKind::Bearer, "tok-schema-five");
        v.grant(&NewGrant::new("triage", CredentialRef::new("gh")), "op").unwrap();
        v.resolve(&access("triage", "gh", DIGEST, "u")).unwrap();
        drop(v);
        raw(&path)
            .execute_batch(
                "ALTER TABLE credentials DROP COLUMN rotate_every; ALTER TABLE credentials DROP COLUMN needs_reauth; \
                 ALTER TABLE credentials DROP COLUMN test_url; DROP TABLE leases; PRAGMA user_version = 5;",
            )
            .unwrap();
        let v = Vault::open(&path, &key()).unwrap();
        let version: i64 = raw(&path).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert!(version >= 6);
        assert!(v.audit_verify().unwrap().is_ok(), "rows sealed at schema 5 still check");
        let info = v.show(&CredentialRef::new("gh")).unwrap().info;
        assert_eq!(
            (info.rotate_every, info.needs_reauth, info.test_url, info.rotation_due_at),
            (None, None, None, None)
        );
        v.resolve(&access("triage", "gh", DIGEST, "u")).unwrap();
        let info = v.set_rotation(&CredentialRef::new("gh"), Some(Duration::from_secs(86_400)), "op").unwrap();
        assert_eq!(info.rotate_every, Some(Duration::from_secs(86_400)));
        assert!(v.audit_verify().unwrap().is_ok());
    }

    #[test]
    fn forged_lifecycle_columns_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (v, path) = vault(dir.path());
        add(&v, "gh", CredentialKind::Bearer, "tok-forge-lifecycle");
        let r = CredentialRef::new("gh");
        let change = CredentialUpdate {
            rotate_every: Some(Some(Duration::from_secs(7 * 86_400))),
            test_url: Some(Some("https://api.example.com/me".into())),
            ..Default::default()
        };
        v.update(&r, &change, "op").unwrap();
        v.mark_needs_reauth(&r, "refresh failed: invalid_grant", "op").unwrap();
        assert!(v.audit_verify().unwrap().is_ok());
        for forge in [
            "UPDATE credentials SET rotate_every = NULL",       // drop the schedule
            "UPDATE credentials SET rotate_every = 3153600000", // postpone it a century
            "UPDATE credentials SET needs_reauth = NULL",       // hide the re-auth mark
            "UPDATE credentials SET test_url = 'https://evil.example/'", // redirect cred test
            "UPDATE credentials SET test_url = NULL",
            // Shift the columns: every part keeps its position in the MAC.
            "UPDATE credentials SET needs_reauth = test_url, test_url = needs_reauth",
        ] {
            let c = raw(&path);
            let saved: (Option<i64>, Option<String>, Option<String>) = c
                .query_row("SELECT rotate_every, needs_reauth, test_url FROM credentials", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap();
            c.execute(forge, []).unwrap();
            assert!(tampered(v.show(&r)), "{forge}");
            assert!(tampered(v.due(Duration::from_secs(86_400))), "{forge}");
            let report = v.audit_verify().unwrap();
            assert_eq!(report.problem.map(|p| p.kind), Some(TamperKind::RecordForged), "{forge}");
            c.execute(
                "UPDATE credentials SET rotate_every = ?1, needs_reauth = ?2, test_url = ?3",
                rusqlite::params![saved.0, saved.1, saved.2],
            )
            .unwrap();
        }
        assert!(v.audit_verify().unwrap().is_ok());
        // A new value clears the mark.
        let value = SecretValue::from_single(CredentialKind::Bearer, "tok-forge-lifecycle-2").unwrap();
        assert_eq!(v.rotate(&r, &value, "op").unwrap().needs_reauth, None);
        assert!(v.audit_verify().unwrap().is_ok());
    }

    #[test]
    fn due_lists_rotations_expiries_and_reauth_most_urgent_first() {
        let dir = tempfile::tempdir().unwrap();
        let (v, path) = vault(dir.path());
        let day = Duration::from_secs(86_400);
        for name in ["overdue", "soon", "later", "none", "expiring", "expired", "reauth", "revoked"] {
            add(&v, name, CredentialKind::HmacKey, "hmac-key-for-due-tests");
        }
        v.set_rotation(&CredentialRef::new("overdue"), Some(day), "op").unwrap();
        v.set_rotation(&CredentialRef::new("soon"), Some(10 * day), "op").unwrap();
        v.set_rotation(&CredentialRef::new("later"), Some(90 * day), "op").unwrap();
        v.set_rotation(&CredentialRef::new("revoked"), Some(day), "op").unwrap();
        v.mark_needs_reauth(&CredentialRef::new("reauth"), "refresh token rejected (invalid_grant)", "op").unwrap();
        v.revoke(&CredentialRef::new("revoked"), "gone", "op").unwrap();
        // created_at is not MACed (it only places the first due date): age two of them.
        let three_days_ago = now_ms() - 3 * 86_400_000;
        raw(&path)
            .execute("UPDATE credentials SET created_at = ?1 WHERE name IN ('overdue', 'revoked')", [three_days_ago])
            .unwrap();
        let exp = |name: &str, at: SystemTime| {
            let r = CredentialRef::new(name);
            let value = SecretValue::from_single(CredentialKind::HmacKey, "hmac-key-for-due-tests-2").unwrap();
            v.rotate_with(&r, &value, Some(at), "op").unwrap();
        };
        exp("expiring", SystemTime::now() + 3 * day);
        exp("expired", SystemTime::now() - day);

        let items = v.due(14 * day).unwrap();
        let got: Vec<(&str, DueReason, bool)> =
            items.iter().map(|i| (i.credential.name.as_str(), i.reason, i.overdue)).collect();
        assert_eq!(
            got,
            [
                ("reauth", DueReason::NeedsReauth, true),
                ("overdue", DueReason::Rotation, true),
                ("expired", DueReason::Expiry, true),
                ("expiring", DueReason::Expiry, false),
                ("soon", DueReason::Rotation, false),
            ]
        );
        let soon = &items[4];
        let due = soon.due_at.unwrap().duration_since(soon.credential.created_at).unwrap();
        assert_eq!(due, 10 * day);
        // A shorter window leaves out what is due later; nothing due at all is an empty list.
        assert_eq!(v.due(Duration::from_secs(3600)).unwrap().len(), 3);
        let dir2 = tempfile::tempdir().unwrap();
        assert!(vault(dir2.path()).0.due(14 * day).unwrap().is_empty());
        // Rotating restarts the schedule.
        exp("overdue", SystemTime::now() + 365 * day);
        assert!(v.due(Duration::ZERO).unwrap().iter().all(|i| i.credential.name != "overdue"));
    }

    #[test]
    fn generated_values_replace_one_field_and_keep_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (v, _path) = vault(dir.path());
        add(&v, "pw", CredentialKind::Basic, r#"{"username":"svc-user","password":"old-password-1"}"#);
        let g = Generate { length: 40, charset: Charset::Base64url, field: None };
        let (info, secret) = v.rotate_generated(&CredentialRef::new("pw"), &g, None, "op").unwrap();
        assert_eq!(info.version, 2);
        let value = v.reveal(&CredentialRef::new("pw"), "op", None).unwrap();
        let basic = value.as_basic().unwrap();
        assert_eq!(basic.username, "svc-user");
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&basic.password),
            secrecy::ExposeSecret::expose_secret(&secret)
        );
        assert_eq!(secrecy::ExposeSecret::expose_secret(&secret).len(), 40);
        let rows = v.audit_list(&AuditQuery { action: Some(AuditAction::Rotate), ..Default::default() }).unwrap();
        assert_eq!(rows[0].detail["generated"]["field"], "password");
        assert!(!rows[0].detail.to_string().contains(secrecy::ExposeSecret::expose_secret(&secret)));

        add(&v, "c", CredentialKind::Custom, r#"{"id":"client-1","secret":"old-custom-secret"}"#);
        let err = v.rotate_generated(&CredentialRef::new("c"), &Generate::default(), None, "op").unwrap_err();
        assert!(err.to_string().contains("--field"), "{err}");
        let g = Generate { field: Some("nope".into()), ..Generate::default() };
        let err = v.rotate_generated(&CredentialRef::new("c"), &g, None, "op").unwrap_err();
        assert!(err.to_string().contains("id, secret"), "{err}");
        let g = Generate { field: Some("secret".into()), ..Generate::default() };
        v.rotate_generated(&CredentialRef::new("c"), &g, None, "op").unwrap();
        let custom = v.reveal(&CredentialRef::new("c"), "op", None).unwrap();
        let json: Value = serde_json::from_str(custom.as_custom().unwrap().expose_json()).unwrap();
        assert_eq!(json["id"], "client-1");
        assert_ne!(json["secret"], "old-custom-secret");

        add(&v, "db", CredentialKind::Database, r#"{"driver":"sqlite","path":"/tmp/x.db"}"#);
        add(&v, "o", CredentialKind::OAuth2, "oauth-access-token-1");
        for name in ["db", "o"] {
            let err = v.rotate_generated(&CredentialRef::new(name), &Generate::default(), None, "op").unwrap_err();
            assert!(err.to_string().contains("--value-stdin"), "{err}");
        }
        let short = Generate { length: 8, ..Generate::default() };
        assert!(v.rotate_generated(&CredentialRef::new("pw"), &short, None, "op").is_err());
    }

    #[test]
    fn compromised_revokes_suspends_records_and_summarizes_usage() {
        let dir = tempfile::tempdir().unwrap();
        let (v, _path) = vault(dir.path());
        let r = CredentialRef::new("gh");
        add(&v, "gh", CredentialKind::Bearer, "tok-compromised-1");
        let value = SecretValue::from_single(CredentialKind::Bearer, "tok-compromised-2").unwrap();
        v.rotate(&r, &value, "op").unwrap();
        add(&v, "other", CredentialKind::Bearer, "tok-not-compromised");
        for skill in ["triage", "report"] {
            v.grant(&NewGrant::new(skill, r.clone()), "op").unwrap();
        }
        v.grant(&NewGrant::new("triage", CredentialRef::new("other")), "op").unwrap();
        let mut any = NewGrant::new("bot", r.clone());
        any.any_digest = true;
        v.grant(&any, "op").unwrap();
        // Uses: triage by two users, bot with two builds; each `use` row carries its host.
        let use_row = |skill: &str, user: &str, host: &str, ok: bool| {
            let mut e = AuditEvent::new(AuditAction::Use, user);
            e.skill = Some(skill.into());
            e.credential = Some(r.clone());
            e.detail = serde_json::json!({ "operation": "http.send", "host": host });
            e.success = ok;
            v.record(&e).unwrap();
        };
        v.resolve(&access("triage", "gh", DIGEST, "alice")).unwrap();
        use_row("triage", "alice", "api.github.com", true);
        use_row("triage", "alice", "api.github.com", false);
        v.resolve(&access("triage", "gh", DIGEST, "bob")).unwrap();
        use_row("triage", "bob", "uploads.github.com", true);
        v.resolve(&access("bot", "gh", DIGEST, "ci")).unwrap();
        use_row("bot", "ci", "api.github.com", true);
        v.resolve(&access("bot", "gh", DIGEST_2, "ci")).unwrap();
        use_row("bot", "ci", "api.github.com", true);
        v.resolve(&access("triage", "other", DIGEST, "alice")).unwrap();
        v.reveal(&r, "operator-olga", None).unwrap();

        let report = v.compromised(&r, "token pasted in a public gist", "sec-team").unwrap();
        assert_eq!(report.credential.status, Status::Revoked);
        assert_eq!(report.credential.revoked_reason.as_deref(), Some("compromised: token pasted in a public gist"));
        assert_eq!(report.versions_revoked, 2, "both stored versions, the rotated one too");
        let detail = v.show(&r).unwrap();
        assert!(detail.versions.iter().all(|x| x.status == Status::Revoked));
        let mut skills: Vec<&str> = report.grants_suspended.iter().map(|g| g.skill.as_str()).collect();
        skills.sort();
        assert_eq!(skills, ["bot", "report", "triage"]);
        assert!(detail.grants.iter().all(|g| g.status == GrantStatus::Suspended));
        // The other credential's grant is untouched.
        v.resolve(&access("triage", "other", DIGEST, "alice")).unwrap();
        // A grant that worked is refused now (suspended, and the credential revoked).
        assert!(matches!(v.resolve(&access("triage", "gh", DIGEST, "alice")), Err(Error::Suspended { .. })));

        let u = |skill: Option<&str>, digest: Option<&str>, actor: &str, host: Option<&str>| {
            report
                .usage
                .iter()
                .find(|x| {
                    x.skill.as_deref() == skill
                        && x.digest.as_deref() == digest
                        && x.actor == actor
                        && x.host.as_deref() == host
                })
                .unwrap_or_else(|| {
                    panic!("no usage row for {skill:?} {digest:?} {actor} {host:?}: {:#?}", report.usage)
                })
                .clone()
        };
        let a = u(Some("triage"), Some(DIGEST), "alice", Some("api.github.com"));
        assert_eq!((a.opens, a.uses, a.failures), (0, 2, 1));
        assert!(a.first <= a.last);
        assert_eq!(u(Some("triage"), Some(DIGEST), "alice", None).opens, 1);
        assert_eq!(u(Some("triage"), Some(DIGEST), "bob", Some("uploads.github.com")).uses, 1);
        assert_eq!(u(Some("bot"), Some(DIGEST), "ci", Some("api.github.com")).uses, 1);
        assert_eq!(u(Some("bot"), Some(DIGEST_2), "ci", Some("api.github.com")).uses, 1);
        assert_eq!(u(None, None, "operator-olga", None).opens, 1);
        assert_eq!(report.usage.len(), 9, "{:#?}", report.usage);
        assert!(report.usage.iter().all(|x| x.actor != "sec-team"));

        // The audit rows: one suspend per grant, then the compromise row; no secret anywhere.
        let rows = v.audit_list(&AuditQuery { credential: Some("gh".into()), ..Default::default() }).unwrap();
        let last = rows.iter().rev().find(|x| x.action != AuditAction::Denied).unwrap();
        assert_eq!(last.action, AuditAction::Compromise);
        assert_eq!(last.id, report.audit_id);
        assert_eq!(last.actor, "sec-team");
        assert_eq!(last.detail["versions_revoked"], 2);
        assert_eq!(last.detail["grants_suspended"].as_array().unwrap().len(), 3);
        assert_eq!(rows.iter().filter(|x| x.action == AuditAction::Suspend).count(), 3);
        let mut export = Vec::new();
        v.audit_export(&AuditQuery::default(), &mut export).unwrap();
        let export = String::from_utf8(export).unwrap();
        assert!(!export.contains("tok-compromised"));
        assert!(v.audit_verify().unwrap().is_ok());

        // Usage outside the window is left out.
        let later = v.credential_usage(&r, SystemTime::now() + Duration::from_secs(60)).unwrap();
        assert!(later.is_empty());

        // Back in service: a new value, then grant again.
        let value = SecretValue::from_single(CredentialKind::Bearer, "tok-compromised-3").unwrap();
        v.rotate(&r, &value, "op").unwrap();
        assert!(matches!(v.resolve(&access("triage", "gh", DIGEST, "alice")), Err(Error::Suspended { .. })));
        v.grant(&NewGrant::new("triage", r.clone()), "op").unwrap();
        v.resolve(&access("triage", "gh", DIGEST, "alice")).unwrap();
    }

    #[test]
    fn compromised_is_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (v, path) = vault(dir.path());
        let r = CredentialRef::new("gh");
        add(&v, "gh", CredentialKind::Bearer, "tok-compromise-atomic");
        v.grant(&NewGrant::new("triage", r.clone()), "op").unwrap();
        // The compromise row is the last write: make it fail, after the revocation and the
        // suspension were written in the same transaction.
        raw(&path)
            .execute_batch(
                "CREATE TRIGGER no_compromise BEFORE INSERT ON audit WHEN NEW.action = 'compromise' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        assert!(v.compromised(&r, "leaked", "sec").is_err());
        let d = v.show(&r).unwrap();
        assert_eq!(d.info.status, Status::Active);
        assert!(d.versions.iter().all(|x| x.status == Status::Active));
        assert!(d.grants.iter().all(|g| g.status == GrantStatus::Active));
        assert!(v.audit_list(&AuditQuery::default()).unwrap().iter().all(|x| x.action != AuditAction::Suspend));
        v.resolve(&access("triage", "gh", DIGEST, "u")).unwrap();
        raw(&path).execute_batch("DROP TRIGGER no_compromise").unwrap();
        v.compromised(&r, "leaked", "sec").unwrap();
        assert!(v.resolve(&access("triage", "gh", DIGEST, "u")).is_err());
    }

    #[test]
    fn generated_values_have_the_length_and_charset_asked_for() {
        for (charset, ok) in [
            (Charset::Alnum, (|c: char| c.is_ascii_alphanumeric()) as fn(char) -> bool),
            (Charset::Hex, |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            (Charset::Base64url, |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            (Charset::Printable, |c: char| c.is_ascii_graphic()),
        ] {
            let a = generate(64, charset).unwrap();
            let b = generate(64, charset).unwrap();
            assert_eq!(a.len(), 64);
            assert!(a.chars().all(ok), "{charset}");
            assert_ne!(*a, *b, "{charset}");
        }
        // Every character of the alphabet turns up (uniform draw, not a subset).
        let long = generate(4096, Charset::Hex).unwrap();
        assert!("0123456789abcdef".chars().all(|c| long.contains(c)));
    }

    #[test]
    fn test_urls_and_schedules_are_checked() {
        assert!(check_test_url("https://api.example.com/v1/me").is_ok());
        assert!(check_test_url("http://127.0.0.1:8080/").is_ok());
        for bad in ["ftp://x", "https://", "https://user:pw@host/", "https://a b/", "api.example.com"] {
            assert!(check_test_url(bad).is_err(), "{bad}");
        }
        assert!(check_rotate_every(Duration::from_secs(59)).is_err());
        assert_eq!(check_rotate_every(Duration::from_secs(90 * 86_400)).unwrap(), 90 * 86_400);
    }
}
