//! The tamper-evident audit log.
//!
//! Each row stores `prev_hash` = SHA-256 of the previous row's canonical
//! bytes and MAC, and its own `mac` = HMAC-SHA256 (audit sub-key) of its
//! canonical bytes. Without the master key nobody can recompute MACs, so an
//! edited row fails its MAC, an inserted row fails its MAC and its link, and a
//! deleted row breaks the next row's link. A MACed head record (row count,
//! last id, last hash) in `meta`, updated in the same transaction as each
//! append, catches deletion of the newest rows too.

use std::collections::BTreeMap;
use std::io::Write;

use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use crate::crypto::{Key32, sha256};
use crate::error::{Error, Result};
use crate::types::*;
use crate::{Vault, meta_get, meta_set};

/// A row about to be appended.
#[derive(Debug, Default)]
pub(crate) struct NewRow<'a> {
    pub action: &'a str,
    pub actor: &'a str,
    pub skill: Option<&'a str>,
    pub credential_id: Option<&'a str>,
    pub credential_name: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub purpose: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub success: bool,
    pub error: Option<&'a str>,
}

impl<'a> NewRow<'a> {
    /// A successful operation by `actor` on the credential `r` (id `credential_id`).
    pub(crate) fn about_credential(
        action: AuditAction,
        actor: &'a str,
        credential_id: &'a str,
        r: &'a CredentialRef,
        detail: &'a str,
    ) -> NewRow<'a> {
        NewRow {
            action: action.as_str(),
            actor,
            credential_id: Some(credential_id),
            credential_name: Some(&r.name),
            environment: Some(r.environment.as_str()),
            owner: Some(&r.owner),
            detail: Some(detail),
            success: true,
            ..NewRow::default()
        }
    }
}

struct Head {
    count: u64,
    last_id: i64,
    last_hash: [u8; 32],
}

fn genesis(vault_id: &[u8]) -> [u8; 32] {
    sha256(&[b"skillbox-vault/v1/audit-genesis", vault_id])
}

fn head_bytes(key: &Key32, h: &Head) -> Vec<u8> {
    let mut body = Vec::with_capacity(80);
    body.extend_from_slice(&h.count.to_be_bytes());
    body.extend_from_slice(&h.last_id.to_be_bytes());
    body.extend_from_slice(&h.last_hash);
    let mac = key.mac(&[b"skillbox-vault/v1/audit-head", &body]);
    body.extend_from_slice(&mac);
    body
}

/// Parses the head; `Err(())` when it is malformed or its MAC is wrong.
fn parse_head(key: &Key32, b: &[u8]) -> std::result::Result<Head, ()> {
    if b.len() != 80 {
        return Err(());
    }
    let (body, mac) = b.split_at(48);
    if !key.verify_mac(&[b"skillbox-vault/v1/audit-head", body], mac) {
        return Err(());
    }
    Ok(Head {
        count: u64::from_be_bytes(body[0..8].try_into().expect("8 bytes")),
        last_id: i64::from_be_bytes(body[8..16].try_into().expect("8 bytes")),
        last_hash: body[16..48].try_into().expect("32 bytes"),
    })
}

/// Writes the empty log's head (at init).
pub(crate) fn init_head(conn: &Connection, key: &Key32, vault_id: &[u8]) -> rusqlite::Result<()> {
    meta_set(conn, "audit_head", &head_bytes(key, &Head { count: 0, last_id: 0, last_hash: genesis(vault_id) }))
}

fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

/// The bytes a row's MAC and hash cover: every column but `mac`, length-prefixed.
fn canonical(r: &StoredRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"skillbox-vault/v1/audit-row");
    put(&mut out, Some(&r.id.to_be_bytes()));
    put(&mut out, Some(&r.ts.to_be_bytes()));
    for f in [
        Some(r.action.as_str()),
        Some(r.actor.as_str()),
        r.skill.as_deref(),
        r.credential_id.as_deref(),
        r.credential_name.as_deref(),
        r.environment.as_deref(),
        r.owner.as_deref(),
        r.purpose.as_deref(),
        Some(r.detail.as_str()),
    ] {
        put(&mut out, f.map(str::as_bytes));
    }
    put(&mut out, Some(&[r.success as u8]));
    put(&mut out, r.error.as_deref().map(str::as_bytes));
    put(&mut out, Some(&r.prev_hash));
    out
}

/// A row as stored (owned), used for both append and verify.
struct StoredRow {
    id: i64,
    ts: i64,
    action: String,
    actor: String,
    skill: Option<String>,
    credential_id: Option<String>,
    credential_name: Option<String>,
    environment: Option<String>,
    owner: Option<String>,
    purpose: Option<String>,
    detail: String,
    success: bool,
    error: Option<String>,
    prev_hash: Vec<u8>,
    mac: Vec<u8>,
}

const COLUMNS: &str = "id, ts, action, actor, skill, credential_id, credential_name, environment, owner, purpose, \
                       detail, success, error, prev_hash, mac";

fn read_row(r: &Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        id: r.get(0)?,
        ts: r.get(1)?,
        action: r.get(2)?,
        actor: r.get(3)?,
        skill: r.get(4)?,
        credential_id: r.get(5)?,
        credential_name: r.get(6)?,
        environment: r.get(7)?,
        owner: r.get(8)?,
        purpose: r.get(9)?,
        detail: r.get(10)?,
        success: r.get(11)?,
        error: r.get(12)?,
        prev_hash: r.get(13)?,
        mac: r.get(14)?,
    })
}

/// Appends one row inside the caller's (immediate) transaction. Any error
/// means the row was not written and the caller must not go on.
pub(crate) fn append(conn: &Connection, key: &Key32, vault_id: &[u8], row: &NewRow<'_>) -> rusqlite::Result<()> {
    let head_raw = meta_get(conn, "audit_head")?.unwrap_or_default();
    // A damaged head does not stop the log (that would let tampering block
    // every operation); `verify` reports it. Continue from the last row.
    let head = match parse_head(key, &head_raw) {
        Ok(h) => h,
        Err(()) => {
            let last = conn
                .query_row(&format!("SELECT {COLUMNS} FROM audit ORDER BY id DESC LIMIT 1"), [], read_row)
                .optional()?;
            let count: i64 = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
            match last {
                Some(last) => {
                    Head { count: count as u64, last_id: last.id, last_hash: sha256(&[&canonical(&last), &last.mac]) }
                }
                None => Head { count: 0, last_id: 0, last_hash: genesis(vault_id) },
            }
        }
    };
    let stored = StoredRow {
        id: head.last_id + 1,
        ts: now_ms(),
        action: row.action.to_string(),
        actor: row.actor.to_string(),
        skill: row.skill.map(str::to_string),
        credential_id: row.credential_id.map(str::to_string),
        credential_name: row.credential_name.map(str::to_string),
        environment: row.environment.map(str::to_string),
        owner: row.owner.map(str::to_string),
        purpose: row.purpose.map(str::to_string),
        detail: row.detail.unwrap_or("{}").to_string(),
        success: row.success,
        error: row.error.map(str::to_string),
        prev_hash: head.last_hash.to_vec(),
        mac: Vec::new(),
    };
    let canon = canonical(&stored);
    let mac = key.mac(&[&canon]);
    conn.prepare_cached(
        "INSERT INTO audit (id, ts, action, actor, skill, credential_id, credential_name, environment, owner, purpose, \
         detail, success, error, prev_hash, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        stored.id,
        stored.ts,
        stored.action,
        stored.actor,
        stored.skill,
        stored.credential_id,
        stored.credential_name,
        stored.environment,
        stored.owner,
        stored.purpose,
        stored.detail,
        stored.success,
        stored.error,
        stored.prev_hash,
        &mac[..],
    ])?;
    let new_head = Head { count: head.count + 1, last_id: stored.id, last_hash: sha256(&[&canon, &mac]) };
    meta_set(conn, "audit_head", &head_bytes(key, &new_head))
}

fn entry(r: StoredRow) -> AuditEntry {
    AuditEntry {
        id: r.id,
        ts: from_ms(r.ts),
        action: r.action.parse().unwrap_or(AuditAction::Denied),
        actor: r.actor,
        skill: r.skill,
        credential_id: r.credential_id,
        credential_name: r.credential_name,
        environment: r.environment.and_then(|e| e.parse().ok()),
        owner: r.owner,
        purpose: r.purpose,
        detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
        success: r.success,
        error: r.error,
    }
}

fn where_clause(q: &AuditQuery) -> (String, Vec<Box<dyn ToSql>>) {
    let mut sql = String::from(" WHERE 1=1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(c) = &q.credential {
        args.push(Box::new(c.clone()));
        sql += &format!(" AND (credential_name = ?{n} OR credential_id = ?{n})", n = args.len());
    }
    if let Some(s) = &q.skill {
        args.push(Box::new(s.clone()));
        sql += &format!(" AND skill = ?{}", args.len());
    }
    if let Some(a) = q.action {
        args.push(Box::new(a.as_str()));
        sql += &format!(" AND action = ?{}", args.len());
    }
    if let Some(t) = q.since {
        args.push(Box::new(to_ms(t)));
        sql += &format!(" AND ts >= ?{}", args.len());
    }
    if let Some(t) = q.until {
        args.push(Box::new(to_ms(t)));
        sql += &format!(" AND ts < ?{}", args.len());
    }
    (sql, args)
}

impl Vault {
    /// Appends a host-side event reported by the runtime: `use` (operation,
    /// target host or database, duration_ms, success, error in `detail`),
    /// `denied` (e.g. host not allowed), `leak` (a response was blocked or a
    /// foreign token was found; `detail` holds `channel`, `view` and `rule`) or
    /// `tripwire` (appended without checking the suspension threshold: use
    /// [`Vault::record_tripwire`] for that). Other actions are the vault's own:
    /// `suspend` and `resume` rows are written only when a grant changes state.
    /// The credential, if given, is looked up for its id; it need not exist.
    pub fn record(&self, event: &AuditEvent) -> Result<()> {
        if !matches!(event.action, AuditAction::Use | AuditAction::Denied | AuditAction::Leak | AuditAction::Tripwire) {
            return Err(Error::InvalidInput {
                what: "audit event",
                reason: format!(
                    "only 'use', 'denied', 'leak' and 'tripwire' events can be recorded from outside (got '{}')",
                    event.action
                ),
            });
        }
        let mut inner = self.lock();
        let tx = inner.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        self.append_event(&tx, event)?;
        tx.commit().map_err(|source| Error::Audit { source })
    }

    /// Appends `event` inside the caller's (immediate) transaction.
    pub(crate) fn append_event(&self, tx: &Connection, event: &AuditEvent) -> Result<()> {
        let cred_id = match &event.credential {
            Some(c) => crate::creds::credential_id(tx, c)?,
            None => None,
        };
        let detail = event.detail.to_string();
        let row = NewRow {
            action: event.action.as_str(),
            actor: &event.actor,
            skill: event.skill.as_deref(),
            credential_id: cred_id.as_deref(),
            credential_name: event.credential.as_ref().map(|c| c.name.as_str()),
            environment: event.credential.as_ref().map(|c| c.environment.as_str()),
            owner: event.credential.as_ref().map(|c| c.owner.as_str()),
            purpose: event.purpose.as_deref(),
            detail: Some(&detail),
            success: event.success,
            error: event.error.as_deref(),
        };
        append(tx, &self.audit_key, &self.vault_id, &row).map_err(|source| Error::Audit { source })
    }

    /// Audit rows matching `query`, oldest first (with a limit: the most recent `limit` rows).
    pub fn audit_list(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let inner = self.lock();
        let (w, args) = where_clause(query);
        let limit = query.limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
        let sql = format!("SELECT {COLUMNS} FROM audit{w} ORDER BY id DESC{limit}");
        let mut stmt = inner.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), read_row)?;
        let mut out: Vec<AuditEntry> = rows.map(|r| r.map(entry)).collect::<rusqlite::Result<_>>()?;
        out.reverse();
        Ok(out)
    }

    /// Writes the rows matching `query` (oldest first) as JSON lines; returns how many.
    pub fn audit_export(&self, query: &AuditQuery, out: &mut dyn Write) -> Result<u64> {
        let rows = self.audit_list(query)?;
        let io = |source| Error::Io { action: "writing audit export", path: "(output)".into(), source };
        for r in &rows {
            serde_json::to_writer(&mut *out, r).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)?;
        Ok(rows.len() as u64)
    }

    /// Counts by action, skill and credential, successes and failures.
    pub fn audit_summary(&self, query: &AuditQuery) -> Result<AuditSummary> {
        let inner = self.lock();
        let (w, args) = where_clause(query);
        let p = || rusqlite::params_from_iter(args.iter().map(|b| b.as_ref()));
        let mut s = AuditSummary::default();
        let (total, ok, last): (i64, Option<i64>, Option<i64>) =
            inner.conn.query_row(&format!("SELECT count(*), sum(success), max(ts) FROM audit{w}"), p(), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        s.total = total as u64;
        s.successes = ok.unwrap_or(0) as u64;
        s.failures = s.total - s.successes;
        s.last_at = last.map(from_ms);
        let group = |col: &str| -> Result<BTreeMap<String, u64>> {
            let sql = format!("SELECT {col}, count(*) FROM audit{w} AND {col} IS NOT NULL GROUP BY {col}");
            let mut stmt = inner.conn.prepare(&sql)?;
            let rows = stmt.query_map(p(), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        s.by_action = group("action")?;
        s.by_skill = group("skill")?;
        s.by_credential = group("credential_name")?;
        Ok(s)
    }

    /// Walks the whole chain and reports the first edited, inserted or deleted
    /// row (including deletion of the newest rows, caught by the MACed head).
    pub fn audit_verify(&self) -> Result<AuditReport> {
        let inner = self.lock();
        // One read transaction so the rows and the head are a consistent snapshot.
        let tx = inner.conn.unchecked_transaction()?;
        let mut prev = genesis(&self.vault_id).to_vec();
        let mut last_id = 0i64;
        let mut rows = 0u64;
        let mut stmt = tx.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY id"))?;
        let mut it = stmt.query([])?;
        let problem = |rows: u64, kind, row, message: String| {
            Ok(AuditReport { rows, problem: Some(AuditProblem { kind, row, message }) })
        };
        while let Some(r) = it.next()? {
            let row = read_row(r)?;
            let canon = canonical(&row);
            let mac_ok = self.audit_key.verify_mac(&[&canon], &row.mac);
            let linked = row.prev_hash == prev;
            match (linked, mac_ok) {
                (true, true) => {}
                (true, false) => {
                    return problem(
                        rows,
                        TamperKind::Edited,
                        row.id,
                        format!("audit row {} was edited (its MAC does not match)", row.id),
                    );
                }
                (false, true) => {
                    return problem(
                        rows,
                        TamperKind::Deleted,
                        row.id,
                        format!(
                            "audit rows were deleted between row {last_id} and row {} (the chain is broken)",
                            row.id
                        ),
                    );
                }
                (false, false) => {
                    return problem(
                        rows,
                        TamperKind::Inserted,
                        row.id,
                        format!(
                            "audit row {} was inserted: it is not authentic and does not link to row {last_id}",
                            row.id
                        ),
                    );
                }
            }
            prev = crate::crypto::sha256(&[&canon, &row.mac]).to_vec();
            last_id = row.id;
            rows += 1;
        }
        drop(it);
        drop(stmt);
        let head_raw = meta_get(&tx, "audit_head")?.unwrap_or_default();
        let Ok(head) = parse_head(&self.audit_key, &head_raw) else {
            return problem(
                rows,
                TamperKind::HeadAltered,
                last_id,
                "the audit head record in the vault metadata was altered".into(),
            );
        };
        if head.count > rows || (head.count == rows && head.last_hash[..] != prev[..]) || head.last_id > last_id {
            return problem(
                rows,
                TamperKind::Deleted,
                last_id,
                format!(
                    "the newest audit rows were deleted: the log should hold {} rows up to row {}, but ends at row {last_id} after {rows} rows",
                    head.count, head.last_id
                ),
            );
        }
        if head.count < rows || head.last_id < last_id {
            return problem(
                rows,
                TamperKind::Inserted,
                head.last_id + 1,
                format!("audit rows after row {} were added outside the vault", head.last_id),
            );
        }
        Ok(AuditReport { rows, problem: None })
    }
}
