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

use crate::store::{OptionalExtension, Row, Sql, SqlExt, ToValue, Value, params};

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

pub(crate) struct Head {
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
pub(crate) fn init_head(conn: &dyn Sql, key: &Key32, vault_id: &[u8]) -> Result<()> {
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

fn read_row(r: &Row<'_>) -> Result<StoredRow> {
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

/// The stored head, checked: its MAC, and that the row it names is the newest
/// row as stored. Anything else is [`Error::AuditHeadDamaged`]: appends stop
/// (fail closed) until `skillbox audit repair`.
fn checked_head(conn: &dyn Sql, key: &Key32) -> Result<Head> {
    let db = |source| Error::Audit { source: Box::new(source) };
    let head_raw = meta_get(conn, "audit_head").map_err(db)?.unwrap_or_default();
    let head = parse_head(key, &head_raw).map_err(|()| Error::AuditHeadDamaged {
        reason: "its MAC does not match: it was altered or replaced".into(),
    })?;
    if head.count > 0 {
        let last = conn
            .query_row(&format!("SELECT {COLUMNS} FROM audit WHERE id = ?1"), [head.last_id], read_row)
            .optional()
            .map_err(db)?;
        match last {
            Some(r) if sha256(&[&canonical(&r), &r.mac]) == head.last_hash => {}
            Some(_) => {
                return Err(Error::AuditHeadDamaged {
                    reason: format!("audit row {} no longer matches it", head.last_id),
                });
            }
            None => {
                return Err(Error::AuditHeadDamaged {
                    reason: format!("audit row {} that it names is missing", head.last_id),
                });
            }
        }
    }
    Ok(head)
}

/// Appends one row inside the caller's (immediate) transaction. Any error
/// means the row was not written and the caller must not go on. A damaged
/// head is never rebuilt here: that would let someone who deleted the newest
/// rows and spoiled the head erase history unnoticed.
pub(crate) fn append(conn: &dyn Sql, key: &Key32, vault_id: &[u8], row: &NewRow<'_>) -> Result<()> {
    let head = checked_head(conn, key)?;
    append_after(conn, key, vault_id, &head, row)
}

fn append_after(conn: &dyn Sql, key: &Key32, vault_id: &[u8], head: &Head, row: &NewRow<'_>) -> Result<()> {
    let db = |source| Error::Audit { source: Box::new(source) };
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
    let inserted = conn.execute("INSERT INTO audit (id, ts, action, actor, skill, credential_id, credential_name, environment, owner, purpose, \
         detail, success, error, prev_hash, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)", params![
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
    ]);
    inserted.map_err(db)?;
    let new_head = Head { count: head.count + 1, last_id: stored.id, last_hash: sha256(&[&canon, &mac]) };
    meta_set(conn, "audit_head", &head_bytes(key, &new_head)).map_err(db)?;
    // The configured anchor file follows every append. It is written before
    // the caller commits: if the commit then fails, the file is one row ahead
    // until the next append rewrites it (a false alarm, never a missed one).
    if let Some(path) = anchor_file(conn, key, vault_id)? {
        write_atomic(&path, anchor_of(key, vault_id, &new_head).to_json().as_bytes())?;
    }
    Ok(())
}

// ---------------------------------------------------------------- anchors

const ANCHOR_FORMAT: &str = "skillbox-audit-anchor/v1";
const ANCHOR_FILE_KEY: &str = "audit_anchor_file";

/// The audit log's signed head, exported to be kept outside the vault
/// (`skillbox audit anchor`). A later `audit verify --anchor` proves the log
/// still extends it, which no file can prove about itself: truncation with a
/// consistent head, or the whole file replaced by an older copy, is caught.
///
/// `mac` is HMAC-SHA256 under a sub-key of the audit key (itself derived from
/// the vault secret that the master key unwraps), so only a holder of the
/// master key can make one, and it survives master-key rotation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditAnchor {
    /// Always `skillbox-audit-anchor/v1`.
    pub format: String,
    /// The vault's id (hex).
    pub vault_id: String,
    /// Rows in the log when the anchor was made.
    pub count: u64,
    /// Id of the newest row then (0 for an empty log).
    pub last_id: i64,
    /// SHA-256 (hex) of that row's canonical bytes and MAC.
    pub last_hash: String,
    /// HMAC-SHA256 (hex) of the fields above.
    pub mac: String,
}

impl AuditAnchor {
    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("an anchor serializes");
        s.push('\n');
        s
    }

    /// Parses an anchor file's text. Authenticity is checked by
    /// [`Vault::audit_verify_anchor`], not here.
    pub fn from_json(text: &str) -> Result<AuditAnchor> {
        let a: AuditAnchor = serde_json::from_str(text).map_err(|e| Error::InvalidInput {
            what: "audit anchor",
            reason: format!("not an anchor file written by `skillbox audit anchor` ({e})"),
        })?;
        if a.format != ANCHOR_FORMAT {
            return Err(Error::InvalidInput {
                what: "audit anchor",
                reason: format!("unknown format '{}' (expected {ANCHOR_FORMAT})", a.format),
            });
        }
        Ok(a)
    }
}

fn anchor_key(key: &Key32, vault_id: &[u8]) -> Key32 {
    key.derive(vault_id, crate::crypto::label::AUDIT_ANCHOR)
}

fn anchor_body(vault_id: &[u8], count: u64, last_id: i64, last_hash: &[u8]) -> Vec<u8> {
    crate::crypto::ad(ANCHOR_FORMAT, &[vault_id, &count.to_be_bytes(), &last_id.to_be_bytes(), last_hash])
}

fn anchor_of(key: &Key32, vault_id: &[u8], h: &Head) -> AuditAnchor {
    let mac = anchor_key(key, vault_id).mac(&[&anchor_body(vault_id, h.count, h.last_id, &h.last_hash)]);
    AuditAnchor {
        format: ANCHOR_FORMAT.into(),
        vault_id: hex::encode(vault_id),
        count: h.count,
        last_id: h.last_id,
        last_hash: hex::encode(h.last_hash),
        mac: hex::encode(mac),
    }
}

/// The anchor's head, if it is authentic and made for this vault.
fn anchor_head(key: &Key32, vault_id: &[u8], a: &AuditAnchor) -> Result<Head> {
    let bad = |reason: &str| Error::InvalidInput { what: "audit anchor", reason: reason.into() };
    if a.vault_id != hex::encode(vault_id) {
        return Err(bad("it was made for another vault"));
    }
    let hash: [u8; 32] = hex::decode(&a.last_hash)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| bad("its last_hash is not 64 hex characters"))?;
    let mac = hex::decode(&a.mac).map_err(|_| bad("its mac is not hex"))?;
    if !anchor_key(key, vault_id).verify_mac(&[&anchor_body(vault_id, a.count, a.last_id, &hash)], &mac) {
        return Err(bad(
            "its MAC does not match: it was edited, or made with another master key (`skillbox audit anchor` makes a fresh one)",
        ));
    }
    Ok(Head { count: a.count, last_id: a.last_id, last_hash: hash })
}

fn anchor_setting_mac(key: &Key32, vault_id: &[u8], path: &[u8]) -> [u8; 32] {
    anchor_key(key, vault_id).mac(&[&crate::crypto::ad("anchor-file", &[vault_id, path])])
}

/// The configured anchor file, checked: the setting is MACed, so someone who
/// can only edit the vault file cannot make skillbox overwrite a file of their
/// choosing.
fn anchor_file(conn: &dyn Sql, key: &Key32, vault_id: &[u8]) -> Result<Option<std::path::PathBuf>> {
    let Some(v) = meta_get(conn, ANCHOR_FILE_KEY).map_err(|source| Error::Audit { source: Box::new(source) })? else {
        return Ok(None);
    };
    let tampered = || Error::Tampered { what: "the audit anchor file setting in the vault metadata".into() };
    if v.len() < 32 {
        return Err(tampered());
    }
    let (path, mac) = v.split_at(v.len() - 32);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&anchor_setting_mac(key, vault_id, path)[..], mac)) {
        return Err(tampered());
    }
    let path = std::str::from_utf8(path).map_err(|_| tampered())?;
    Ok(Some(std::path::PathBuf::from(path)))
}

/// Writes `bytes` to `path` atomically: a new 0600 temporary file beside it, then a rename.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { action: "writing the audit anchor", path: path.to_path_buf(), source };
    let name = path.file_name().ok_or_else(|| Error::InvalidInput {
        what: "audit anchor path",
        reason: format!("{} names no file", path.display()),
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        crate::crypto::random_hex(4)?
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// What [`Vault::audit_repair`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRepair {
    /// False when the head was intact and nothing was written.
    pub repaired: bool,
    /// Rows the repaired chain holds (before the `repair` row itself).
    pub rows: u64,
    /// How many of them, from the first, verify (chain and MACs).
    pub verified_rows: u64,
    /// What was wrong with the head, when it was repaired.
    pub head_problem: Option<String>,
    /// The first problem in the rows themselves, which repair does not hide
    /// (`audit verify` still reports it).
    pub row_problem: Option<String>,
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

fn where_clause(q: &AuditQuery) -> (String, Vec<Value>) {
    let mut sql = String::from(" WHERE 1=1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(c) = &q.credential {
        args.push(c.to_value());
        sql += &format!(" AND (credential_name = ?{n} OR credential_id = ?{n})", n = args.len());
    }
    if let Some(s) = &q.skill {
        args.push(s.to_value());
        sql += &format!(" AND skill = ?{}", args.len());
    }
    if let Some(a) = q.action {
        args.push(a.as_str().to_value());
        sql += &format!(" AND action = ?{}", args.len());
    }
    if let Some(t) = q.since {
        args.push(to_ms(t).to_value());
        sql += &format!(" AND ts >= ?{}", args.len());
    }
    if let Some(t) = q.until {
        args.push(to_ms(t).to_value());
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
    /// [`Vault::record_tripwire`] for that), `refresh` (the host refreshed an OAuth 2 token),
    /// `alert` (an alert was raised) or `release` (a handle was released). Other actions are
    /// the vault's own: `suspend` and `resume` rows are written only when a grant changes
    /// state. The credential, if given, is looked up for its id; it need not exist.
    pub fn record(&self, event: &AuditEvent) -> Result<()> {
        use AuditAction::{Alert, Denied, Leak, Refresh, Release, Tripwire, Use};
        if !matches!(event.action, Use | Denied | Leak | Tripwire | Refresh | Alert | Release) {
            return Err(Error::InvalidInput {
                what: "audit event",
                reason: format!(
                    "only 'use', 'denied', 'leak', 'tripwire', 'refresh', 'alert' and 'release' events can be recorded from outside (got '{}')",
                    event.action
                ),
            });
        }
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        self.append_event(&tx, event)?;
        tx.commit_audited()
    }

    /// Appends `event` inside the caller's (immediate) transaction.
    pub(crate) fn append_event(&self, tx: &dyn Sql, event: &AuditEvent) -> Result<()> {
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
        append(tx, &self.audit_key, &self.vault_id, &row)
    }

    /// Audit rows matching `query`, oldest first (with a limit: the most recent `limit` rows).
    pub fn audit_list(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let inner = self.lock();
        let (w, args) = where_clause(query);
        let limit = query.limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
        let sql = format!("SELECT {COLUMNS} FROM audit{w} ORDER BY id DESC{limit}");
        let mut out: Vec<AuditEntry> = inner.conn.query_map(&sql, &args, read_row)?.into_iter().map(entry).collect();
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
        let p = || &args;
        let mut s = AuditSummary::default();
        let (total, ok, last): (i64, Option<i64>, Option<i64>) = inner.conn.query_row(
            &format!("SELECT count(*), CAST(sum(success) AS BIGINT), max(ts) FROM audit{w}"),
            p(),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        s.total = total as u64;
        s.successes = ok.unwrap_or(0) as u64;
        s.failures = s.total - s.successes;
        s.last_at = last.map(from_ms);
        let group = |col: &str| -> Result<BTreeMap<String, u64>> {
            let sql = format!("SELECT {col}, count(*) FROM audit{w} AND {col} IS NOT NULL GROUP BY {col}");
            let rows = inner.conn.query_map(&sql, p(), |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)? as u64)))?;
            Ok(rows.into_iter().collect())
        };
        s.by_action = group("action")?;
        s.by_skill = group("skill")?;
        s.by_credential = group("credential_name")?;
        Ok(s)
    }

    /// Walks the whole chain and reports the first edited, inserted or deleted
    /// row (including deletion of the newest rows, caught by the MACed head);
    /// then checks the MAC of every credentials, versions, grants and api_keys row
    /// ([`TamperKind::RecordForged`]).
    pub fn audit_verify(&self) -> Result<AuditReport> {
        self.verify_with(None)
    }

    /// [`Vault::audit_verify`], and also proves the log still extends `anchor`
    /// (exported earlier by [`Vault::audit_anchor`]): it holds at least the
    /// anchor's rows, and the row at the anchor's position hashes to the
    /// anchor's hash. Catches truncation and the whole file being replaced by
    /// an older copy ([`TamperKind::RolledBack`]). An anchor that is not
    /// authentic, or is for another vault, is an error.
    pub fn audit_verify_anchor(&self, anchor: &AuditAnchor) -> Result<AuditReport> {
        let head = anchor_head(&self.audit_key, &self.vault_id, anchor)?;
        self.verify_with(Some(&head))
    }

    fn verify_with(&self, anchor: Option<&Head>) -> Result<AuditReport> {
        let inner = self.lock();
        // One transaction (holding the writers' lock) so the rows and the head are a
        // consistent snapshot; dropped without a commit, it changes nothing.
        let tx = inner.conn.begin()?;
        self.verify_on(&tx, anchor)
    }

    /// Verifies the chain, the head and every record MAC as stored in `tx` (this vault's
    /// store, or a copy of it in another store).
    pub(crate) fn verify_on(&self, tx: &dyn Sql, anchor: Option<&Head>) -> Result<AuditReport> {
        let w = walk(tx, &self.audit_key, &self.vault_id, anchor)?;
        let (rows, last_id, prev) = (w.rows, w.last_id, w.prev);
        if let Some(p) = w.problem {
            return Ok(AuditReport { rows, problem: Some(p) });
        }
        let problem =
            |kind, row, message: String| Ok(AuditReport { rows, problem: Some(AuditProblem { kind, row, message }) });
        if let Some(a) = anchor
            && a.count > rows
        {
            return problem(
                TamperKind::RolledBack,
                last_id,
                format!(
                    "the log does not extend the anchor: it holds {rows} rows, but the anchor was made when it held {} \
                     (up to row {}): rows were removed, or the vault file was replaced by an older copy",
                    a.count, a.last_id
                ),
            );
        }
        let head_raw = meta_get(tx, "audit_head")?.unwrap_or_default();
        let Ok(head) = parse_head(&self.audit_key, &head_raw) else {
            return problem(
                TamperKind::HeadAltered,
                last_id,
                "the audit head record in the vault metadata was altered (appends are stopped until \
                 `skillbox audit repair`)"
                    .into(),
            );
        };
        if head.count > rows || (head.count == rows && head.last_hash[..] != prev[..]) || head.last_id > last_id {
            return problem(
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
                TamperKind::Inserted,
                head.last_id + 1,
                format!("audit rows after row {} were added outside the vault", head.last_id),
            );
        }
        if let Some(what) = self.records().verify_all(tx)? {
            return problem(
                TamperKind::RecordForged,
                0,
                format!("{what} was modified outside skillbox (its MAC does not match)"),
            );
        }
        Ok(AuditReport { rows, problem: None })
    }

    /// The signed head of the audit log, to keep outside the vault (see
    /// [`AuditAnchor`]). Refused while the head is damaged.
    pub fn audit_anchor(&self) -> Result<AuditAnchor> {
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let head = checked_head(&tx, &self.audit_key)?;
        Ok(anchor_of(&self.audit_key, &self.vault_id, &head))
    }

    /// The file the anchor is rewritten to on every append, if one is set.
    pub fn audit_anchor_file(&self) -> Result<Option<std::path::PathBuf>> {
        let inner = self.lock();
        anchor_file(&*inner.conn, &self.audit_key, &self.vault_id)
    }

    /// Sets (or, with `None`, removes) the file the audit anchor is rewritten
    /// to, atomically, on every append. It must be outside the vault's
    /// directory (whoever can replace the vault there could replace the anchor
    /// too), in a directory that exists. The setting is MACed. Audited as
    /// `anchor`; the file is written at once.
    pub fn set_audit_anchor_file(&self, path: Option<&std::path::Path>, actor: &str) -> Result<()> {
        let stored = match path {
            Some(p) => Some(self.check_anchor_path(p)?),
            None => None,
        };
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let detail = match &stored {
            Some(p) => {
                let text = p.to_str().ok_or_else(|| Error::InvalidInput {
                    what: "audit anchor path",
                    reason: "must be valid UTF-8".into(),
                })?;
                let mut v = text.as_bytes().to_vec();
                v.extend_from_slice(&anchor_setting_mac(&self.audit_key, &self.vault_id, text.as_bytes()));
                meta_set(&tx, ANCHOR_FILE_KEY, &v)?;
                serde_json::json!({ "path": text })
            }
            None => {
                tx.execute("DELETE FROM meta WHERE key = ?1", [ANCHOR_FILE_KEY])?;
                serde_json::json!({ "path": null })
            }
        }
        .to_string();
        self.audit(
            &tx,
            &NewRow {
                action: AuditAction::Anchor.as_str(),
                actor,
                detail: Some(&detail),
                success: true,
                ..Default::default()
            },
        )?;
        tx.commit_audited()
    }

    fn check_anchor_path(&self, p: &std::path::Path) -> Result<std::path::PathBuf> {
        let bad = |reason: String| Error::InvalidInput { what: "audit anchor path", reason };
        let io = |source| Error::Io { action: "resolving the audit anchor's directory", path: p.to_path_buf(), source };
        let name = p.file_name().ok_or_else(|| bad(format!("{} names no file", p.display())))?;
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let parent = parent.canonicalize().map_err(io)?;
        if let Some(path) = self.path() {
            let vault_dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            let vault_dir = vault_dir.canonicalize().map_err(|source| Error::Io {
                action: "resolving the vault's directory",
                path: vault_dir.to_path_buf(),
                source,
            })?;
            if parent.starts_with(&vault_dir) {
                return Err(bad(format!(
                    "{} is inside the vault's directory {}: keep the anchor elsewhere (another disk, host or \
                     user), since whoever can replace the vault there can replace the anchor too",
                    p.display(),
                    vault_dir.display()
                )));
            }
        }
        let full = parent.join(name);
        if full.is_dir() {
            return Err(bad(format!("{} is a directory", full.display())));
        }
        Ok(full)
    }

    /// Rebuilds a damaged audit head from the rows that remain, so appends
    /// (and therefore resolves) work again, and records a `repair` row whose
    /// `detail` says how many rows the repaired chain holds and what was
    /// wrong. History that was lost stays lost: run `audit verify` first. Does
    /// nothing (and writes nothing) when the head is intact.
    pub fn audit_repair(&self, actor: &str) -> Result<AuditRepair> {
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let head_problem = match checked_head(&tx, &self.audit_key) {
            Ok(_) => None,
            Err(Error::AuditHeadDamaged { reason }) => Some(reason),
            Err(e) => return Err(e),
        };
        let w = walk(&tx, &self.audit_key, &self.vault_id, None)?;
        let count: i64 = tx.query_row("SELECT count(*) FROM audit", params![], |r| r.get(0))?;
        let mut report = AuditRepair {
            repaired: false,
            rows: count as u64,
            verified_rows: w.rows,
            head_problem,
            row_problem: w.problem.map(|p| p.message),
        };
        if report.head_problem.is_none() {
            return Ok(report);
        }
        let last = tx
            .query_row(&format!("SELECT {COLUMNS} FROM audit ORDER BY id DESC LIMIT 1"), params![], read_row)
            .optional()?;
        let head = match last {
            Some(l) => Head { count: count as u64, last_id: l.id, last_hash: sha256(&[&canonical(&l), &l.mac]) },
            None => Head { count: 0, last_id: 0, last_hash: genesis(&self.vault_id) },
        };
        let detail = serde_json::json!({
            "rows": report.rows,
            "verified_rows": report.verified_rows,
            "head_problem": report.head_problem,
            "row_problem": report.row_problem,
        })
        .to_string();
        append_after(
            &tx,
            &self.audit_key,
            &self.vault_id,
            &head,
            &NewRow {
                action: AuditAction::Repair.as_str(),
                actor,
                detail: Some(&detail),
                success: true,
                ..Default::default()
            },
        )?;
        tx.commit_audited()?;
        report.repaired = true;
        Ok(report)
    }
}

/// The result of walking the chain from the first row.
struct Walk {
    /// Rows that verified (chain and MAC), from the first.
    rows: u64,
    last_id: i64,
    /// Hash of the last verified row (or the genesis hash).
    prev: Vec<u8>,
    /// The first problem, where the walk stopped.
    problem: Option<AuditProblem>,
}

/// Walks the rows in id order, checking each MAC and link (and, with an
/// anchor, that the row at the anchor's position is the one it signed).
fn walk(conn: &dyn Sql, key: &Key32, vault_id: &[u8], anchor: Option<&Head>) -> Result<Walk> {
    let mut w = Walk { rows: 0, last_id: 0, prev: genesis(vault_id).to_vec(), problem: None };
    // Read in pages, so a long log is never held in memory at once.
    let page_sql = format!("SELECT {COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT {WALK_PAGE}");
    let mut after = i64::MIN;
    loop {
        let page = conn.query_map(&page_sql, [after], read_row)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            let canon = canonical(&row);
            let mac_ok = key.verify_mac(&[&canon], &row.mac);
            let linked = row.prev_hash == w.prev;
            let last_id = w.last_id;
            let found = match (linked, mac_ok) {
                (true, true) => None,
                (true, false) => {
                    Some((TamperKind::Edited, format!("audit row {} was edited (its MAC does not match)", row.id)))
                }
                (false, true) => Some((
                    TamperKind::Deleted,
                    format!("audit rows were deleted between row {last_id} and row {} (the chain is broken)", row.id),
                )),
                (false, false) => Some((
                    TamperKind::Inserted,
                    format!(
                        "audit row {} was inserted: it is not authentic and does not link to row {last_id}",
                        row.id
                    ),
                )),
            };
            if let Some((kind, message)) = found {
                w.problem = Some(AuditProblem { kind, row: row.id, message });
                return Ok(w);
            }
            w.prev = sha256(&[&canon, &row.mac]).to_vec();
            w.last_id = row.id;
            w.rows += 1;
            if let Some(a) = anchor
                && a.count == w.rows
                && (a.last_id != row.id || a.last_hash[..] != w.prev[..])
            {
                w.problem = Some(AuditProblem {
                    kind: TamperKind::RolledBack,
                    row: row.id,
                    message: format!(
                        "the log does not extend the anchor: row {} (number {} in the log) is not the row the anchor \
                     signed (row {}): the log was rewritten, or the vault file was replaced by another copy",
                        row.id, a.count, a.last_id
                    ),
                });
                return Ok(w);
            }
        }
    }
    Ok(w)
}

/// Rows read at a time by `walk`.
const WALK_PAGE: usize = 2000;
