//! The vault's SQLite schema and its ordered migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. `init`
//! applies all of them; `open` applies the missing ones only after the master
//! key has been verified, so a wrong key never changes the file.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL -- bytes; text values are stored as UTF-8 bytes
    ) STRICT;

    -- Key-encryption keys, each wrapped by the master key.
    CREATE TABLE keys (
        id         TEXT PRIMARY KEY,
        wrapped    BLOB NOT NULL,
        status     TEXT NOT NULL CHECK (status IN ('active', 'retired')),
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX keys_one_active ON keys(status) WHERE status = 'active';

    CREATE TABLE credentials (
        id              TEXT PRIMARY KEY,
        owner           TEXT NOT NULL,
        environment     TEXT NOT NULL CHECK (environment IN ('dev', 'staging', 'production')),
        name            TEXT NOT NULL,
        kind            TEXT NOT NULL,
        service         TEXT NOT NULL,
        description     TEXT,
        scopes          TEXT NOT NULL DEFAULT '[]',
        expires_at      INTEGER,
        status          TEXT NOT NULL CHECK (status IN ('active', 'rotated', 'revoked')),
        revoked_reason  TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        last_rotated_at INTEGER,
        current_version INTEGER NOT NULL,
        UNIQUE (owner, environment, name)
    ) STRICT;
    CREATE INDEX credentials_service ON credentials(service);

    -- One row per stored value. ciphertext and wrapped_dek are nonce || ct || tag.
    CREATE TABLE versions (
        credential_id TEXT NOT NULL REFERENCES credentials(id) ON DELETE CASCADE,
        version       INTEGER NOT NULL,
        key_id        TEXT NOT NULL REFERENCES keys(id),
        wrapped_dek   BLOB NOT NULL,
        ciphertext    BLOB NOT NULL,
        fingerprint   TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('active', 'rotated', 'revoked')),
        created_at    INTEGER NOT NULL,
        PRIMARY KEY (credential_id, version)
    ) STRICT;

    CREATE TABLE grants (
        id            TEXT PRIMARY KEY,
        skill         TEXT NOT NULL,
        alias         TEXT NOT NULL,
        credential_id TEXT NOT NULL REFERENCES credentials(id) ON DELETE CASCADE,
        environment   TEXT NOT NULL,
        owner         TEXT NOT NULL,
        access_level  TEXT NOT NULL CHECK (access_level IN ('read', 'use', 'admin')),
        granted_by    TEXT NOT NULL,
        granted_at    INTEGER NOT NULL,
        expires_at    INTEGER,
        reason        TEXT,
        skill_digest  TEXT,
        any_digest    INTEGER NOT NULL DEFAULT 0,
        hosts         TEXT,
        UNIQUE (skill, alias, environment, owner)
    ) STRICT;
    CREATE INDEX grants_credential ON grants(credential_id);

    -- Append-only, hash-chained, MACed. No foreign keys: rows outlive credentials.
    CREATE TABLE audit (
        id              INTEGER PRIMARY KEY,
        ts              INTEGER NOT NULL,
        action          TEXT NOT NULL,
        actor           TEXT NOT NULL,
        skill           TEXT,
        credential_id   TEXT,
        credential_name TEXT,
        environment     TEXT,
        owner           TEXT,
        purpose         TEXT,
        detail          TEXT NOT NULL,
        success         INTEGER NOT NULL,
        error           TEXT,
        prev_hash       BLOB NOT NULL,
        mac             BLOB NOT NULL
    ) STRICT;
    -- Deliberately no secondary indexes: each one is another page written on
    -- every resolve. Audit queries are operator-time scans in id order.
    "#,
    // 2: grant suspension (after repeated tripwires) and response narrowing.
    r#"
    ALTER TABLE grants ADD COLUMN suspended_at INTEGER;       -- ms; NULL = not suspended
    ALTER TABLE grants ADD COLUMN suspended_reason TEXT;
    ALTER TABLE grants ADD COLUMN response TEXT CHECK (response IN ('full', 'headers', 'status')); -- NULL = not narrowed
    "#,
    // 3: a MAC on every credentials, versions and grants row (see records.rs).
    // Existing rows are MACed by `Vault::open` in the same transaction, after
    // the master key was verified (`MACS_SINCE`).
    r#"
    ALTER TABLE credentials ADD COLUMN mac BLOB;
    ALTER TABLE versions ADD COLUMN mac BLOB;
    ALTER TABLE grants ADD COLUMN mac BLOB;
    "#,
    // 4: the policy a grant pinned (canonical JSON; NULL = pinned on first use). The
    // grants MAC covers it when set, so rows sealed before stay valid (records.rs).
    r#"
    ALTER TABLE grants ADD COLUMN policy TEXT;
    "#,
    // 5: API keys for `skillbox serve` clients (see apikeys.rs). The key itself is never
    // stored: `key_hash` is HMAC-SHA256 of it under a sub-key of the vault secret (the
    // UNIQUE constraint is the index every request looks it up by). Every column but
    // `last_used_at` is covered by the row's MAC.
    r#"
    CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        owner        TEXT NOT NULL,   -- the user (tenant) every call made with the key runs as
        environment  TEXT NOT NULL CHECK (environment IN ('dev', 'staging', 'production')),
        skills       TEXT,            -- JSON list of skill names; NULL = every skill
        key_hash     BLOB NOT NULL UNIQUE,
        fingerprint  TEXT NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        created_by   TEXT NOT NULL,
        expires_at   INTEGER,
        revoked_at   INTEGER,
        last_used_at INTEGER,         -- written at most once a minute; not MACed
        mac          BLOB
    ) STRICT;
    "#,
    // 6: credential lifecycle (lifecycle.rs). `rotate_every`: the rotation schedule in
    // seconds (NULL = none); `needs_reauth`: why the credential needs an operator (set when an
    // OAuth 2 refresh fails with invalid_grant, cleared by a new value); `test_url`: where
    // `cred test` sends its request. The credentials MAC covers them when set (records.rs),
    // so rows sealed before stay valid.
    r#"
    ALTER TABLE credentials ADD COLUMN rotate_every INTEGER CHECK (rotate_every IS NULL OR rotate_every > 0);
    ALTER TABLE credentials ADD COLUMN needs_reauth TEXT;
    ALTER TABLE credentials ADD COLUMN test_url TEXT;
    "#,
];

/// The schema version that added record MACs: a file older than this gets
/// every row MACed when it is migrated.
pub(crate) const MACS_SINCE: i64 = 3;

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

pub(crate) fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Applies every migration the file lacks, inside the caller's transaction
/// (which must be an immediate one, so no other writer races it).
pub(crate) fn apply_pending(tx: &Connection) -> Result<()> {
    let v = version(tx)?;
    if v > LATEST {
        return Err(Error::UnsupportedSchema { found: v, supported: LATEST });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    Ok(())
}
