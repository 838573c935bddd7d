//! The vault's schema, for each store, and its ordered migrations.
//!
//! SQLite: `PRAGMA user_version` holds the number of migrations applied. PostgreSQL: the
//! one-row table `skillbox_schema`; a new database starts directly at the layout of SQLite's
//! version 6 (nothing older ever existed there) and then follows the same numbering. `init`
//! applies every migration; `open` applies the missing ones only after the master key has
//! been verified, so a wrong key never changes the store. The two layouts hold the same
//! columns, in the same order, with the same value types (64-bit integers, text, bytes), so
//! a row and its MAC read the same from either and `vault migrate` copies rows as they are.

use crate::error::{Error, Result};
use crate::store::{Backend, Sql, SqlExt, params};

/// SQLite migration `i` brings the schema from version `i` to `i + 1`.
pub(crate) const SQLITE: &[&str] = &[
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
    // 7: leases (one holder at a time for a named job across every host sharing the vault,
    // such as an OAuth 2 refresh), and the generation counter lives in `meta`.
    r#"
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at INTEGER NOT NULL -- Unix ms, from the database's clock
    ) STRICT;
    "#,
];

/// PostgreSQL migrations: (the version it brings the schema to, its SQL).
pub(crate) const POSTGRES: &[(i64, &str)] = &[
    (
        6,
        r#"
    CREATE TABLE skillbox_schema (version BIGINT NOT NULL);
    INSERT INTO skillbox_schema (version) VALUES (0);

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );

    CREATE TABLE keys (
        id         TEXT PRIMARY KEY,
        wrapped    BYTEA NOT NULL,
        status     TEXT NOT NULL CHECK (status IN ('active', 'retired')),
        created_at BIGINT NOT NULL
    );
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
        expires_at      BIGINT,
        status          TEXT NOT NULL CHECK (status IN ('active', 'rotated', 'revoked')),
        revoked_reason  TEXT,
        created_at      BIGINT NOT NULL,
        updated_at      BIGINT NOT NULL,
        last_rotated_at BIGINT,
        current_version BIGINT NOT NULL,
        mac             BYTEA,
        rotate_every    BIGINT CHECK (rotate_every IS NULL OR rotate_every > 0),
        needs_reauth    TEXT,
        test_url        TEXT,
        UNIQUE (owner, environment, name)
    );
    CREATE INDEX credentials_service ON credentials(service);

    CREATE TABLE versions (
        credential_id TEXT NOT NULL REFERENCES credentials(id) ON DELETE CASCADE,
        version       BIGINT NOT NULL,
        key_id        TEXT NOT NULL REFERENCES keys(id),
        wrapped_dek   BYTEA NOT NULL,
        ciphertext    BYTEA NOT NULL,
        fingerprint   TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('active', 'rotated', 'revoked')),
        created_at    BIGINT NOT NULL,
        mac           BYTEA,
        PRIMARY KEY (credential_id, version)
    );

    CREATE TABLE grants (
        id               TEXT PRIMARY KEY,
        skill            TEXT NOT NULL,
        alias            TEXT NOT NULL,
        credential_id    TEXT NOT NULL REFERENCES credentials(id) ON DELETE CASCADE,
        environment      TEXT NOT NULL,
        owner            TEXT NOT NULL,
        access_level     TEXT NOT NULL CHECK (access_level IN ('read', 'use', 'admin')),
        granted_by       TEXT NOT NULL,
        granted_at       BIGINT NOT NULL,
        expires_at       BIGINT,
        reason           TEXT,
        skill_digest     TEXT,
        any_digest       BIGINT NOT NULL DEFAULT 0,
        hosts            TEXT,
        suspended_at     BIGINT,
        suspended_reason TEXT,
        response         TEXT CHECK (response IN ('full', 'headers', 'status')),
        mac              BYTEA,
        policy           TEXT,
        UNIQUE (skill, alias, environment, owner)
    );
    CREATE INDEX grants_credential ON grants(credential_id);

    CREATE TABLE audit (
        id              BIGINT PRIMARY KEY,
        ts              BIGINT NOT NULL,
        action          TEXT NOT NULL,
        actor           TEXT NOT NULL,
        skill           TEXT,
        credential_id   TEXT,
        credential_name TEXT,
        environment     TEXT,
        owner           TEXT,
        purpose         TEXT,
        detail          TEXT NOT NULL,
        success         BIGINT NOT NULL,
        error           TEXT,
        prev_hash       BYTEA NOT NULL,
        mac             BYTEA NOT NULL
    );

    CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        owner        TEXT NOT NULL,
        environment  TEXT NOT NULL CHECK (environment IN ('dev', 'staging', 'production')),
        skills       TEXT,
        key_hash     BYTEA NOT NULL UNIQUE,
        fingerprint  TEXT NOT NULL UNIQUE,
        created_at   BIGINT NOT NULL,
        created_by   TEXT NOT NULL,
        expires_at   BIGINT,
        revoked_at   BIGINT,
        last_used_at BIGINT,
        mac          BYTEA
    );
    "#,
    ),
    (
        7,
        r#"
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    "#,
    ),
];

/// The schema version that added record MACs: a file older than this gets
/// every row MACed when it is migrated.
pub(crate) const MACS_SINCE: i64 = 3;

/// The schema version this build writes.
pub(crate) const LATEST: i64 = SQLITE.len() as i64;

const _: () = assert!(POSTGRES[POSTGRES.len() - 1].0 == LATEST, "both stores reach the same version");

/// Applies every migration the store lacks, inside `tx` (a transaction from
/// `Store::begin_schema`, so no other writer races it).
pub(crate) fn migrate(tx: &dyn Sql) -> Result<()> {
    match tx.backend() {
        Backend::Sqlite => {
            let v: i64 = tx.query_row("PRAGMA user_version", params![], |r| r.get(0))?;
            check(v)?;
            for (i, sql) in SQLITE.iter().enumerate().skip(v as usize) {
                tx.execute_batch(sql)?;
                tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
            }
        }
        Backend::Postgres => {
            let v = postgres_version(tx)?;
            check(v)?;
            for (version, sql) in POSTGRES.iter().filter(|(version, _)| *version > v) {
                tx.execute_batch(sql)?;
                tx.execute("UPDATE skillbox_schema SET version = ?1", params![*version])?;
            }
        }
    }
    Ok(())
}

/// The schema version a PostgreSQL store holds: 0 while it holds no vault (no
/// `skillbox_schema` table; a vault's tables and its version are created in one transaction).
pub(crate) fn postgres_version(conn: &dyn Sql) -> Result<i64> {
    let empty: bool = conn.query_row("SELECT to_regclass('skillbox_schema') IS NULL", params![], |r| r.get(0))?;
    if empty { Ok(0) } else { conn.query_row("SELECT version FROM skillbox_schema", params![], |r| r.get(0)) }
}

fn check(v: i64) -> Result<()> {
    if v > LATEST {
        return Err(Error::UnsupportedSchema { found: v, supported: LATEST });
    }
    Ok(())
}
