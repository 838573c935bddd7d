//! Grants (default deny) and [`Vault::resolve`], the one path by which a skill gets a value.

use std::time::Duration;

use crate::store::{OptionalExtension, Row, Sql, SqlExt, params};

use crate::Vault;
use crate::audit::NewRow;
use crate::creds::{check_ident, credential_id, equality_filters, load_current_by_id, not_found};
use crate::error::{Error, Result};
use crate::records::{RecordKey, Table};
use crate::types::*;

/// The same columns from `grants` alone (credential name left empty): the
/// resolve hot path avoids joins, which SQLite re-prepares on every rebind.
const GRANT_COLS_NO_JOIN: &str = "g.id, g.skill, g.alias, g.credential_id, '', g.environment, g.owner, g.access_level, \
     g.granted_by, g.granted_at, g.expires_at, g.reason, g.skill_digest, g.any_digest, g.hosts, \
     g.suspended_at, g.suspended_reason, g.response, g.policy";

const GRANT_COLS: &str = "g.id, g.skill, g.alias, g.credential_id, c.name, g.environment, g.owner, g.access_level, \
     g.granted_by, g.granted_at, g.expires_at, g.reason, g.skill_digest, g.any_digest, g.hosts, \
     g.suspended_at, g.suspended_reason, g.response, g.policy";

fn read_grant(r: &Row<'_>) -> Result<GrantInfo> {
    let bad = |what: &str| -> Error {
        crate::store::DbError::convert(format!("column {what} holds an unknown value")).into()
    };
    let env: String = r.get(5)?;
    let access: String = r.get(7)?;
    let hosts: Option<String> = r.get(14)?;
    let expires_at: Option<i64> = r.get(10)?;
    let suspended_at: Option<i64> = r.get(15)?;
    let response: Option<String> = r.get(17)?;
    let status = if suspended_at.is_some() {
        GrantStatus::Suspended
    } else if expires_at.is_some_and(|e| e <= now_ms()) {
        GrantStatus::Expired
    } else {
        GrantStatus::Active
    };
    Ok(GrantInfo {
        id: r.get(0)?,
        skill: r.get(1)?,
        alias: r.get(2)?,
        credential_id: r.get(3)?,
        credential_name: r.get(4)?,
        environment: env.parse().map_err(|_| bad("environment"))?,
        owner: r.get(6)?,
        access: access.parse().map_err(|_| bad("access_level"))?,
        granted_by: r.get(8)?,
        granted_at: from_ms(r.get(9)?),
        expires_at: expires_at.map(from_ms),
        reason: r.get(11)?,
        skill_digest: r.get(12)?,
        any_digest: r.get(13)?,
        hosts: hosts.and_then(|h| serde_json::from_str(&h).ok()),
        status,
        suspended_at: suspended_at.map(from_ms),
        suspended_reason: r.get(16)?,
        response: response.map(|m| m.parse()).transpose().map_err(|_| bad("response"))?,
        policy: r.get(18)?,
    })
}

/// A policy to pin: a JSON object of bounded size (the runtime writes it; a grant stores it).
fn check_policy(policy: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidInput { what: "skill policy", reason };
    if policy.len() > crate::policy::MAX_POLICY_BYTES {
        return Err(invalid(format!(
            "it is {} bytes, over the {}-byte limit; list fewer hosts",
            policy.len(),
            crate::policy::MAX_POLICY_BYTES
        )));
    }
    match serde_json::from_str::<serde_json::Value>(policy) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(invalid("it must be a JSON object (the runtime's canonical policy text)".into())),
    }
}

pub(crate) fn list_grants(
    rk: &RecordKey<'_>,
    conn: &dyn Sql,
    credential_id: Option<&str>,
    f: &GrantFilter,
) -> Result<Vec<GrantInfo>> {
    let mut sql = format!("SELECT {GRANT_COLS} FROM grants g JOIN credentials c ON c.id = g.credential_id WHERE 1=1");
    let vals = equality_filters(
        &mut sql,
        &[
            ("g.credential_id", credential_id),
            ("g.skill", f.skill.as_deref()),
            ("g.environment", f.environment.map(|e| e.as_str())),
            ("g.owner", f.owner.as_deref()),
        ],
    );
    sql += " ORDER BY g.skill, g.environment, g.alias";
    let mut out: Vec<GrantInfo> = conn.query_map(&sql, &vals, read_grant)?;
    for g in &out {
        rk.check(conn, Table::Grants, "id = ?1", [&g.id])?;
    }
    if let Some(status) = f.status {
        out.retain(|g| g.status == status);
    }
    Ok(out)
}

fn check_digest(d: &str) -> Result<()> {
    if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: "skill digest",
            reason: "must be a sha256 digest: 64 lowercase hex characters".into(),
        })
    }
}

/// `24h`, `90m`, `45s`: a window in the largest whole unit.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 && s >= 7 * 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Why a resolve was refused, for the audit row and the error (boxed: the
/// error is large, and this travels through every step of resolve).
struct Denial {
    error: Box<Error>,
    credential_id: Option<String>,
}

impl Vault {
    /// Grants a skill access to a credential (replacing an existing grant with
    /// the same skill, alias, environment and owner). Audited as `grant`.
    ///
    /// Replacing a suspended grant re-enables it: the suspension is cleared
    /// and a `resume` row is audited after the `grant` row.
    pub fn grant(&self, g: &NewGrant, actor: &str) -> Result<GrantInfo> {
        check_ident("skill name", &g.skill)?;
        let alias = g.alias.clone().unwrap_or_else(|| g.credential.name.clone());
        check_ident("alias", &alias)?;
        if let Some(d) = &g.skill_digest {
            check_digest(d)?;
        }
        if let Some(p) = &g.policy {
            check_policy(p)?;
        }
        if let Some(hosts) = &g.hosts {
            for h in hosts {
                if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
                    return Err(Error::InvalidInput {
                        what: "host",
                        reason: format!("'{h}' is not a host name (give names like api.example.com or *.example.com)"),
                    });
                }
            }
        }
        let r = &g.credential;
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let cred_id: String = credential_id(&tx, r)?.ok_or_else(|| not_found(r))?;
        let rk = self.records();
        rk.check(&tx, Table::Credentials, "id = ?1", [&cred_id])?;
        // A grant being replaced may be suspended: replacing it re-enables it.
        let suspended: Option<(String, i64, Option<String>)> = tx
            .query_row(
                "SELECT id, suspended_at, suspended_reason FROM grants \
                 WHERE skill = ?1 AND alias = ?2 AND environment = ?3 AND owner = ?4 AND suspended_at IS NOT NULL",
                params![g.skill, alias, r.environment.as_str(), r.owner],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let id = format!("grant_{}", crate::crypto::random_hex(8)?);
        let hosts = g.hosts.as_ref().map(|h| serde_json::to_string(h).expect("strings serialize"));
        tx.execute(
            "INSERT INTO grants (id, skill, alias, credential_id, environment, owner, access_level, granted_by, granted_at, \
             expires_at, reason, skill_digest, any_digest, hosts, response, policy) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT (skill, alias, environment, owner) DO UPDATE SET id = excluded.id, credential_id = excluded.credential_id, \
             access_level = excluded.access_level, granted_by = excluded.granted_by, granted_at = excluded.granted_at, \
             expires_at = excluded.expires_at, reason = excluded.reason, skill_digest = excluded.skill_digest, \
             any_digest = excluded.any_digest, hosts = excluded.hosts, response = excluded.response, \
             policy = excluded.policy, suspended_at = NULL, suspended_reason = NULL",
            params![
                id,
                g.skill,
                alias,
                cred_id,
                r.environment.as_str(),
                r.owner,
                g.access.as_str(),
                actor,
                now_ms(),
                g.expires_at.map(to_ms),
                g.reason,
                g.skill_digest,
                g.any_digest,
                hosts,
                g.response.map(ResponseMode::as_str),
                g.policy,
            ],
        )?;
        rk.seal(&tx, Table::Grants, "id = ?1", [&id])?;
        let detail = serde_json::json!({
            "grant_id": id, "alias": alias, "access": g.access.as_str(),
            "expires_at": g.expires_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            "reason": g.reason, "skill_digest": g.skill_digest, "any_digest": g.any_digest, "hosts": g.hosts,
            "response": g.response.map(ResponseMode::as_str),
            "policy_digest": g.policy.as_deref().map(crate::policy::digest),
            "policy": g.policy.as_deref().and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
        })
        .to_string();
        self.audit(
            &tx,
            &NewRow {
                skill: Some(&g.skill),
                ..NewRow::about_credential(AuditAction::Grant, actor, &cred_id, r, &detail)
            },
        )?;
        if let Some((old_id, suspended_at, suspended_reason)) = suspended {
            let detail = serde_json::json!({
                "grant_id": id, "previous_grant_id": old_id, "alias": alias,
                "suspended_at": fmt_ms(suspended_at), "suspended_reason": suspended_reason,
            })
            .to_string();
            self.audit(
                &tx,
                &NewRow {
                    skill: Some(&g.skill),
                    ..NewRow::about_credential(AuditAction::Resume, actor, &cred_id, r, &detail)
                },
            )?;
        }
        let info = tx.query_row(
            &format!("SELECT {GRANT_COLS} FROM grants g JOIN credentials c ON c.id = g.credential_id WHERE g.id = ?1"),
            [&id],
            read_grant,
        )?;
        tx.commit_audited()?;
        Ok(info)
    }

    /// Removes the grant `alias` (the name the skill uses; usually the
    /// credential's name) of `skill` in the given environment and owner. Audited as `ungrant`.
    pub fn ungrant(&self, skill: &str, alias: &str, environment: Environment, owner: &str, actor: &str) -> Result<()> {
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let found: Option<(String, String, String)> = tx
            .query_row(
                "SELECT g.id, g.credential_id, c.name FROM grants g JOIN credentials c ON c.id = g.credential_id \
                 WHERE g.skill = ?1 AND g.alias = ?2 AND g.environment = ?3 AND g.owner = ?4",
                params![skill, alias, environment.as_str(), owner],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((grant_id, cred_id, cred_name)) = found else {
            return Err(Error::GrantNotFound {
                skill: skill.into(),
                name: alias.into(),
                environment,
                owner: owner.into(),
            });
        };
        tx.execute("DELETE FROM grants WHERE id = ?1", [&grant_id])?;
        let detail = serde_json::json!({ "grant_id": grant_id, "alias": alias }).to_string();
        self.audit(
            &tx,
            &NewRow {
                action: AuditAction::Ungrant.as_str(),
                actor,
                skill: Some(skill),
                credential_id: Some(&cred_id),
                credential_name: Some(&cred_name),
                environment: Some(environment.as_str()),
                owner: Some(owner),
                detail: Some(&detail),
                success: true,
                ..Default::default()
            },
        )?;
        tx.commit_audited()
    }

    /// Records a tripwire (a skill tried to send, return or log a secret, and
    /// its invocation was ended) and suspends the skill's grants when this
    /// component has now tripped `threshold` times within `window`.
    ///
    /// `event.action` must be [`AuditAction::Tripwire`], `event.skill` set, and
    /// `event.detail` an object with `"digest"` (the component's sha256, hex)
    /// and `"channel"`; the credential concerned goes in `event.credential`.
    ///
    /// In one immediate transaction: the event is appended; the `tripwire`
    /// rows with the same skill and digest at most `window` old are counted
    /// (this one included; the scan walks back from the newest row and stops
    /// at the first row older than the window); at `count >= threshold`, every
    /// grant of the skill that this component can use (pinned to this digest,
    /// `any_digest`, or not pinned yet), in every environment and owner, is
    /// suspended, with one `suspend` row each. Grants already suspended are
    /// left as they are. [`Vault::grant`] re-enables a suspended grant.
    pub fn record_tripwire(&self, event: &AuditEvent, threshold: u32, window: Duration) -> Result<TripwireOutcome> {
        let invalid = |reason: &str| Error::InvalidInput { what: "tripwire event", reason: reason.into() };
        if event.action != AuditAction::Tripwire {
            return Err(Error::InvalidInput {
                what: "tripwire event",
                reason: format!("its action must be 'tripwire' (got '{}')", event.action),
            });
        }
        let Some(skill) = event.skill.as_deref() else {
            return Err(invalid("it names no skill"));
        };
        let Some(digest) = event.detail.get("digest").and_then(|d| d.as_str()) else {
            return Err(invalid("its detail has no \"digest\" (the component's sha256, hex)"));
        };
        check_digest(digest)?;
        if threshold == 0 {
            return Err(invalid("the suspension threshold must be at least 1"));
        }
        let window_ms = window.as_millis().min(i64::MAX as u128) as i64;

        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let now = now_ms();
        self.append_event(&tx, event)?;

        // Count this skill's tripwires inside the window. The audit table has no index on
        // purpose (each one is another page written on every resolve): tripwires are rare,
        // so a scan here is the cheaper side.
        let cutoff = now.saturating_sub(window_ms);
        let mut count: u32 = 0;
        {
            let rows = tx.query_rows(
                "SELECT detail FROM audit WHERE ts >= ?1 AND action = ?2 AND skill = ?3",
                params![cutoff, AuditAction::Tripwire.as_str(), skill],
            )?;
            for row in rows.iter() {
                let detail: String = row.get(0)?;
                let same = serde_json::from_str::<serde_json::Value>(&detail)
                    .ok()
                    .is_some_and(|d| d.get("digest").and_then(|x| x.as_str()) == Some(digest));
                if same {
                    count = count.saturating_add(1);
                }
            }
        }

        let mut suspended = Vec::new();
        if count >= threshold {
            let reason = format!(
                "{count} tripwire{} within {} by component {}",
                if count == 1 { "" } else { "s" },
                short_duration(window),
                &digest[..12]
            );
            let targets: Vec<GrantInfo> = tx.query_map(
                &format!(
                    "SELECT {GRANT_COLS} FROM grants g JOIN credentials c ON c.id = g.credential_id \
                     WHERE g.skill = ?1 AND g.suspended_at IS NULL \
                     AND (g.skill_digest = ?2 OR g.skill_digest IS NULL OR g.any_digest = 1) \
                     ORDER BY g.environment, g.owner, g.alias"
                ),
                params![skill, digest],
                read_grant,
            )?;
            for mut g in targets {
                let detail = serde_json::json!({
                    "digest": digest, "tripwires": count, "threshold": threshold, "window_secs": window.as_secs(),
                    "automatic": true,
                });
                self.suspend_grant(&tx, &mut g, now, &reason, &event.actor, detail)?;
                suspended.push(g);
            }
        }
        tx.commit_audited()?;
        Ok(TripwireOutcome { count, suspended })
    }

    /// Suspends grant `g` inside the caller's transaction: checks its MAC, sets `suspended_at`
    /// and `suspended_reason`, seals it, and appends a `suspend` row whose detail is `detail`
    /// (an object) plus the grant id, alias and reason. `g` is updated to match.
    pub(crate) fn suspend_grant(
        &self,
        tx: &dyn Sql,
        g: &mut GrantInfo,
        now: i64,
        reason: &str,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let rk = self.records();
        rk.check(tx, Table::Grants, "id = ?1", [&g.id])?;
        tx.execute(
            "UPDATE grants SET suspended_at = ?2, suspended_reason = ?3 WHERE id = ?1",
            params![g.id, now, reason],
        )?;
        rk.seal(tx, Table::Grants, "id = ?1", [&g.id])?;
        let mut full = serde_json::json!({ "grant_id": g.id, "alias": g.alias, "reason": reason });
        if let serde_json::Value::Object(extra) = detail {
            full.as_object_mut().expect("an object").extend(extra);
        }
        let full = full.to_string();
        self.audit(
            tx,
            &NewRow {
                action: AuditAction::Suspend.as_str(),
                actor,
                skill: Some(&g.skill),
                credential_id: Some(&g.credential_id),
                credential_name: Some(&g.credential_name),
                environment: Some(g.environment.as_str()),
                owner: Some(&g.owner),
                detail: Some(&full),
                success: true,
                ..Default::default()
            },
        )?;
        g.status = GrantStatus::Suspended;
        g.suspended_at = Some(from_ms(now));
        g.suspended_reason = Some(reason.to_owned());
        Ok(())
    }

    /// Suspends every grant of credential `cred_id` that is not suspended yet (in every skill,
    /// environment and owner), inside the caller's transaction; returns them as they are now.
    pub(crate) fn suspend_credential_grants(
        &self,
        tx: &dyn Sql,
        cred_id: &str,
        now: i64,
        reason: &str,
        actor: &str,
    ) -> Result<Vec<GrantInfo>> {
        let targets: Vec<GrantInfo> = tx.query_map(
            &format!(
                "SELECT {GRANT_COLS} FROM grants g JOIN credentials c ON c.id = g.credential_id \
                 WHERE g.credential_id = ?1 AND g.suspended_at IS NULL ORDER BY g.skill, g.environment, g.owner, g.alias"
            ),
            [cred_id],
            read_grant,
        )?;
        let mut out = Vec::with_capacity(targets.len());
        for mut g in targets {
            self.suspend_grant(tx, &mut g, now, reason, actor, serde_json::json!({ "compromise": true }))?;
            out.push(g);
        }
        Ok(out)
    }

    /// Grants matching `filter`.
    pub fn grants(&self, filter: &GrantFilter) -> Result<Vec<GrantInfo>> {
        let inner = self.lock();
        list_grants(&self.records(), &*inner.conn, None, filter)
    }

    /// A token that changes whenever an access decision may have changed: a grant, ungrant,
    /// revocation, suspension, rotation or deletion, made by this process or by any other
    /// process or host sharing the store. It is one counter in the store (`meta.generation`),
    /// moved inside the transaction of the change itself, so reading it is one indexed read:
    /// cheap enough to compare before every use. A store that cannot be read is an error, and
    /// the host then rechecks, which fails closed.
    pub fn generation(&self) -> Result<Generation> {
        let inner = self.lock();
        Ok(Generation { counter: read_generation(&*inner.conn)? })
    }

    /// Best-effort announcements of access-relevant changes made by any host (PostgreSQL's
    /// `LISTEN`/`NOTIFY`; `None` for SQLite): the value is the newest generation announced.
    /// Use it to drop caches early, never as the only check: a missed announcement changes
    /// nothing, because every use compares [`Vault::generation`] itself.
    pub fn watch_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.lock().conn.watch_changes()
    }

    /// Whether `access` would still be granted now (grant present, not suspended or expired,
    /// digest and policy still the pinned ones, credential not revoked or expired), without
    /// decrypting anything or writing an audit row. The host calls it before a use when
    /// [`Vault::generation`] has moved since the credential was opened, so a revocation bites
    /// mid-run. A refusal is the same error a fresh resolve would give.
    pub fn recheck(&self, access: &Access) -> Result<()> {
        let inner = self.lock();
        let rk = self.records();
        let (grant, _row) = find_access(&rk, &*inner.conn, access, now_ms()).map_err(|d| *d.error)?;
        if let Some(g) = grant {
            // A pin still missing here (a grant made again mid-run) is taken at the next open.
            check_pins(&g, access)?;
        }
        Ok(())
    }

    /// Resolves a skill's request for a credential: finds the grant (skill,
    /// declared name, environment, owner), checks it has not expired, that the
    /// credential is active and unexpired, the component digest (pinning it on
    /// first use unless the grant says `any_digest`) and the policy
    /// ([`Access::policy`], pinned on first use); then decrypts.
    ///
    /// Every outcome writes an audit row. On success the row is committed
    /// before the value is returned; if it cannot be written, this fails with
    /// [`Error::Audit`] and returns no secret.
    pub fn resolve(&self, access: &Access) -> Result<Resolved> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let tx = inner.conn.begin()?;
        let now = now_ms();
        let env = access.environment;
        let rk = self.records();

        // 1. Find the grant and the credential (or the credential alone with a one-time approval).
        let outcome = find_access(&rk, &tx, access, now);

        // 2. Digest and policy pinning (trust on first use).
        let mut pinned_now = Pins::default();
        let outcome = outcome.and_then(|(grant, row)| {
            let Some(mut g) = grant else { return Ok((None, row)) };
            let denial = |e: Error| Denial { error: Box::new(e), credential_id: Some(row.info.id.clone()) };
            let pins = check_pins(&g, access).map_err(denial)?;
            if pins.digest || pins.policy {
                (|| {
                    if pins.digest {
                        check_digest(&access.skill_digest)?;
                        tx.execute(
                            "UPDATE grants SET skill_digest = ?2 WHERE id = ?1",
                            params![g.id, access.skill_digest],
                        )?;
                        g.skill_digest = Some(access.skill_digest.clone());
                    }
                    if pins.policy
                        && let Some(policy) = &access.policy
                    {
                        check_policy(policy)?;
                        tx.execute("UPDATE grants SET policy = ?2 WHERE id = ?1", params![g.id, policy])?;
                        g.policy = Some(policy.clone());
                    }
                    rk.seal(&tx, Table::Grants, "id = ?1", [&g.id])
                })()
                .map_err(denial)?;
                pinned_now = pins;
            }
            Ok((Some(g), row))
        });

        // 3. Decrypt (still inside the transaction; nothing leaves before the commit).
        let outcome = outcome.and_then(|(grant, row)| {
            match self.open_value(
                &tx,
                &mut inner.keys,
                &row.info.id,
                &row.info.reference(),
                row.info.version,
                row.info.kind,
                &row.key_id,
                &row.wrapped_dek,
                &row.ciphertext,
            ) {
                Ok(value) => Ok((grant, row.info, value)),
                Err(error) => Err(Denial { error: Box::new(error), credential_id: Some(row.info.id.clone()) }),
            }
        });

        // 4. Audit, then commit, then release.
        let cred_name = access.declared_name.as_str();
        let base = NewRow {
            action: "",
            actor: &access.user,
            skill: Some(&access.skill),
            credential_id: None,
            credential_name: Some(cred_name),
            environment: Some(env.as_str()),
            owner: Some(&access.owner),
            purpose: access.purpose.as_deref(),
            detail: None,
            success: true,
            error: None,
        };
        match outcome {
            Ok((grant, info, value)) => {
                if pinned_now.digest || pinned_now.policy {
                    let mut pinned = Vec::new();
                    if pinned_now.digest {
                        pinned.push("component");
                    }
                    if pinned_now.policy {
                        pinned.push("policy");
                    }
                    let detail = serde_json::json!({
                        "pinned": pinned,
                        "skill_digest": access.skill_digest,
                        "policy_digest": grant.as_ref().and_then(GrantInfo::policy_digest),
                        "trust_on_first_use": true,
                    })
                    .to_string();
                    self.audit(
                        &tx,
                        &NewRow {
                            action: AuditAction::Pin.as_str(),
                            credential_id: Some(&info.id),
                            credential_name: Some(&info.name),
                            detail: Some(&detail),
                            ..base
                        },
                    )?;
                }
                let detail = serde_json::json!({
                    "version": info.version,
                    "grant_id": grant.as_ref().map(|g| g.id.as_str()),
                    "alias": access.declared_name,
                    "access": grant.as_ref().map(|g| g.access.as_str()),
                    "skill_digest": access.skill_digest,
                    "approved_once_by": access.one_time_approval,
                })
                .to_string();
                self.audit(
                    &tx,
                    &NewRow {
                        action: AuditAction::Read.as_str(),
                        credential_id: Some(&info.id),
                        credential_name: Some(&info.name),
                        detail: Some(&detail),
                        ..base
                    },
                )?;
                tx.commit_audited()?;
                crate::lifecycle::warn_if_overdue(&info, &access.skill);
                Ok(Resolved { credential: info, grant, value })
            }
            Err(Denial { error, credential_id }) => {
                let message = error.to_string();
                let detail = serde_json::json!({
                    "alias": access.declared_name,
                    "skill_digest": access.skill_digest,
                    "approved_once_by": access.one_time_approval,
                })
                .to_string();
                let row = NewRow {
                    action: AuditAction::Denied.as_str(),
                    credential_id: credential_id.as_deref(),
                    detail: Some(&detail),
                    success: false,
                    error: Some(&message),
                    ..base
                };
                // A pin attempted in this transaction is rolled back with it;
                // the denial row goes in a fresh one.
                drop(tx);
                let tx = inner.conn.begin()?;
                match self.audit(&tx, &row).and_then(|()| tx.commit_audited()) {
                    Ok(()) => {}
                    Err(e) => tracing::error!("could not audit a denied credential request: {e}"),
                }
                Err(*error)
            }
        }
    }
}

/// What a use would pin now (trust on first use): the component digest, the policy.
#[derive(Debug, Default, Clone, Copy)]
struct Pins {
    digest: bool,
    policy: bool,
}

/// Step 2 of a resolve, shared with [`Vault::recheck`]: the component must be the one the
/// grant pinned (unless `any_digest`) and the policy the one it pinned; what is not pinned
/// yet is returned, to be pinned by the caller.
fn check_pins(g: &GrantInfo, access: &Access) -> Result<Pins> {
    let mut pins = Pins::default();
    if !g.any_digest {
        match &g.skill_digest {
            Some(pinned) if pinned != &access.skill_digest => {
                return Err(Error::DigestMismatch {
                    skill: access.skill.clone(),
                    pinned: pinned.clone(),
                    found: access.skill_digest.clone(),
                });
            }
            Some(_) => {}
            None => pins.digest = true,
        }
    }
    match (&g.policy, &access.policy) {
        (Some(pinned), Some(now)) if pinned != now => {
            return Err(Error::PolicyChanged {
                skill: access.skill.clone(),
                name: access.declared_name.clone(),
                pinned: crate::policy::digest(pinned)[..16].to_owned(),
                found: crate::policy::digest(now)[..16].to_owned(),
                changes: crate::policy::diff(pinned, now),
                command: g.grant_command(),
            });
        }
        (None, Some(_)) => pins.policy = true,
        _ => {}
    }
    Ok(pins)
}

/// Step 1 of a resolve, shared with [`Vault::recheck`]: the grant (checked: MAC, suspension,
/// expiry) and the credential's current row (checked: MAC, revocation, expiry).
fn find_access(
    rk: &RecordKey<'_>,
    tx: &dyn Sql,
    access: &Access,
    now: i64,
) -> std::result::Result<(Option<GrantInfo>, crate::creds::CurrentRow), Denial> {
    let env = access.environment;
    let deny = |error, credential_id| Err(Denial { error: Box::new(error), credential_id });
    let (grant, row) = if access.one_time_approval.is_some() {
        let r = CredentialRef { owner: access.owner.clone(), environment: env, name: access.declared_name.clone() };
        match crate::creds::load_current(&rk, &tx, &r)
            .map_err(|e| Denial { error: Box::new(e), credential_id: None })?
        {
            Some(row) => (None, row),
            None => return deny(not_found(&r), None),
        }
    } else {
        let grant = tx
            .query_row(
                &format!(
                    "SELECT {GRANT_COLS_NO_JOIN} FROM grants g \
                     WHERE g.skill = ?1 AND g.alias = ?2 AND g.environment = ?3 AND g.owner = ?4"
                ),
                params![access.skill, access.declared_name, env.as_str(), access.owner],
                read_grant,
            )
            .optional()
            .map_err(|e| Denial { error: Box::new(e), credential_id: None })?;
        let Some(grant) = grant else {
            return deny(
                Error::NotGranted {
                    skill: access.skill.clone(),
                    name: access.declared_name.clone(),
                    environment: env,
                    owner: access.owner.clone(),
                },
                None,
            );
        };
        let cid = Some(grant.credential_id.clone());
        rk.check(&tx, Table::Grants, "id = ?1", [&grant.id])
            .map_err(|e| Denial { error: Box::new(e), credential_id: None })?;
        if grant.suspended_at.is_some() {
            let mut grant = grant;
            grant.credential_name = crate::creds::credential_name(&tx, &grant.credential_id)
                .map_err(|e| Denial { error: Box::new(e), credential_id: cid.clone() })?
                .unwrap_or_else(|| grant.alias.clone());
            return deny(
                Error::Suspended {
                    command: grant.grant_command(),
                    skill: access.skill.clone(),
                    credential: grant.credential_name,
                    environment: env,
                    reason: grant.suspended_reason.unwrap_or_else(|| "no reason recorded".into()),
                },
                cid,
            );
        }
        if let Some(exp) = grant.expires_at
            && to_ms(exp) <= now
        {
            return deny(
                Error::GrantExpired {
                    skill: access.skill.clone(),
                    name: access.declared_name.clone(),
                    environment: env,
                    expired_at: fmt_ms(to_ms(exp)),
                },
                cid,
            );
        }
        let row = load_current_by_id(&rk, &tx, &grant.credential_id)
            .map_err(|e| Denial { error: Box::new(e), credential_id: cid.clone() })?
            .ok_or_else(|| Denial {
                error: Box::new(Error::Corrupt { what: "grant without credential".into() }),
                credential_id: cid.clone(),
            })?;
        let mut grant = grant;
        grant.credential_name = row.info.name.clone();
        (Some(grant), row)
    };
    let cid = Some(row.info.id.clone());
    if row.info.status == Status::Revoked {
        return deny(
            Error::Revoked {
                name: row.info.name.clone(),
                environment: env,
                reason: row.info.revoked_reason.clone().unwrap_or_else(|| "no reason given".into()),
            },
            cid,
        );
    }
    if let Some(exp) = row.info.expires_at
        && to_ms(exp) <= now
    {
        return deny(
            Error::Expired { name: row.info.name.clone(), environment: env, expired_at: fmt_ms(to_ms(exp)) },
            cid,
        );
    }
    Ok((grant, row))
}

/// The stored change counter (0 before the first change).
pub(crate) fn read_generation(conn: &dyn Sql) -> Result<u64> {
    let Some(raw) = crate::meta_get(conn, "generation")? else { return Ok(0) };
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt { what: "vault metadata ('generation' is not a number)".into() })
}

/// Moves the change counter, inside the caller's write transaction (which holds the writers'
/// lock, so no two changes read the same value). On PostgreSQL it also notifies listeners on
/// other hosts at commit (best effort: they check the counter on every use anyway).
pub(crate) fn bump_generation(tx: &dyn Sql, vault_id: &[u8]) -> Result<()> {
    let next = read_generation(tx)? + 1;
    crate::meta_set(tx, "generation", next.to_string().as_bytes())?;
    if tx.backend() == crate::store::Backend::Postgres {
        let channel = crate::store::postgres::channel(&hex::encode(vault_id));
        tx.execute("SELECT pg_notify(?1, ?2)", params![channel, next.to_string()])?;
    }
    Ok(())
}
