//! Encrypted credential vault for skillbox: envelope encryption, versions, grants, and a tamper-evident audit log.
//!
//! A [`Vault`] lives in a store: one SQLite file (WAL mode; the default) or a PostgreSQL
//! database shared by several hosts (see `store`). The master key (hex, key file or
//! passphrase via PBKDF2) wraps key-encryption keys; every credential version
//! has its own data key wrapped by a KEK; values are sealed with AES-256-GCM
//! whose associated data binds each ciphertext to its vault, credential,
//! version, key, owner, environment and name; every credential, version,
//! grant and API key row carries a MAC checked on every read. Skills reach
//! values only through [`Vault::resolve`], which checks a grant (default deny)
//! and commits an audit row before it returns anything. Clients of `skillbox
//! serve` are authenticated by [`Vault::apikey_verify`]. See `docs/vault.md`
//! for the design and threat model.
//!
//! ```no_run
//! use skillbox_vault::*;
//! # fn main() -> Result<(), Error> {
//! let key = MasterKeySource::Hex("00".repeat(32).into());
//! let vault = Vault::init("vault.db".as_ref(), &key, &InitOptions::default())?;
//! let id = CredentialRef::new("github").env(Environment::Production);
//! let value = SecretValue::from_single(CredentialKind::Bearer, "ghp_example")?;
//! vault.add(&NewCredential::new(id.clone(), CredentialKind::Bearer, "github"), &value, "alice")?;
//! vault.grant(&NewGrant::new("issue-triage", id), "alice")?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod apikeys;
mod audit;
mod creds;
mod crypto;
mod error;
mod grants;
mod keyrot;
mod leases;
mod lifecycle;
mod migrate;
mod policy;
mod records;
mod schema;
mod secret;
mod status;
mod store;
mod types;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use aes_gcm::Aes256Gcm;

pub use crate::apikeys::API_KEY_PREFIX;
pub use crate::audit::{AuditAnchor, AuditRepair};
pub use crate::crypto::{
    DEFAULT_PBKDF2_ITERATIONS, MIN_PASSPHRASE_LEN, MIN_PBKDF2_ITERATIONS, MasterKeySource, check_new_passphrase,
    generate_key_file,
};
pub use crate::error::{Error, Result};
pub use crate::keyrot::FAILPOINT_ENV;
pub use crate::leases::Lease;
pub use crate::lifecycle::COMPROMISE_USAGE_WINDOW;
pub use crate::migrate::MigrateReport;
pub use crate::secret::{
    ApiKey, Basic, CredentialKind, Custom, Database, HmacKey, MIN_SECRET_LEN, Postgres, SecretValue, Token,
};
pub use crate::status::VaultStatus;
pub use crate::store::postgres::postgres_tls;
pub use crate::store::{Backend, DbError, Location, StoreFacts};
pub use crate::types::*;

use crate::crypto::{KdfParams, Key32, Material, ad, label};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{OptionalExtension, Sql, SqlExt, Store, params};

/// Versions kept per credential unless configured otherwise.
pub const DEFAULT_HISTORY_DEPTH: u32 = 5;
/// The schema version this build writes (both stores).
pub const SCHEMA_VERSION: i64 = schema::LATEST;
/// KDF name stored for passphrase vaults.
const KDF_PBKDF2: &[u8] = b"pbkdf2-hmac-sha256";
const KDF_NONE: &[u8] = b"none";

/// Options for [`Vault::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Versions kept per credential, current one included (at least 1).
    pub history_depth: u32,
    pbkdf2_iterations: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { history_depth: DEFAULT_HISTORY_DEPTH, pbkdf2_iterations: DEFAULT_PBKDF2_ITERATIONS }
    }
}

impl InitOptions {
    /// Keeps `depth` versions per credential (current one included; at least 1).
    pub fn with_history_depth(mut self, depth: u32) -> Self {
        self.history_depth = depth;
        self
    }

    /// **Tests only.** Uses fewer PBKDF2 iterations than the 600,000 minimum.
    /// `Vault::open` refuses such a vault ([`Error::KdfWeakened`]), so this only
    /// serves tests of that refusal. Never use this for a real vault.
    #[doc(hidden)]
    pub fn insecure_pbkdf2_iterations_for_tests(mut self, iterations: u32) -> Self {
        self.pbkdf2_iterations = iterations.max(1);
        self
    }
}

/// An open vault. `Send + Sync`: share it behind an `Arc`; calls are serialized on one
/// connection (SQLite) or one at a time over a small pool (PostgreSQL), and other processes
/// and hosts coordinate through the store's locks.
pub struct Vault {
    location: Location,
    vault_id: [u8; 16],
    /// HKDF sub-key of the vault secret: MACs audit rows.
    audit_key: Key32,
    /// HKDF sub-key of the vault secret: value fingerprints.
    fp_key: Key32,
    /// HKDF sub-key of the vault secret: MACs credentials, versions, grants and API key rows.
    record_key: Key32,
    /// HKDF sub-key of the vault secret: keyed hashes and fingerprints of API keys.
    apikey_key: Key32,
    history_depth: u32,
    inner: Mutex<Inner>,
}

/// State behind the lock.
pub(crate) struct Inner {
    pub(crate) conn: Box<dyn Store>,
    pub(crate) keys: Keys,
}

/// Unwrapped key material, kept apart from the connection so a transaction
/// and the key cache can be borrowed at the same time.
pub(crate) struct Keys {
    /// The HKDF sub-key of the master key that wraps KEKs and the vault secret.
    pub(crate) master_wrap: Key32,
    /// Where the current master key came from (for messages).
    pub(crate) source_kind: &'static str,
    /// Unwrapped KEKs, by id. A KEK's plaintext never changes (master-key
    /// rotation only re-wraps it), so entries never go stale.
    pub(crate) keks: HashMap<String, Aes256Gcm>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("location", &self.location.display())
            .field("vault_id", &hex::encode(self.vault_id))
            .finish()
    }
}

pub(crate) fn meta_get(conn: &dyn Sql, key: &str) -> Result<Option<Vec<u8>>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()
}

pub(crate) fn meta_set(conn: &dyn Sql, key: &str, value: &[u8]) -> Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn meta_req(conn: &dyn Sql, key: &str) -> Result<Vec<u8>> {
    meta_get(conn, key)?.ok_or_else(|| Error::Corrupt { what: format!("vault metadata ('{key}' is missing)") })
}

fn meta_u32(conn: &dyn Sql, key: &str) -> Result<u32> {
    let v = meta_req(conn, key)?;
    std::str::from_utf8(&v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt { what: format!("vault metadata ('{key}' is not a number)") })
}

pub(crate) fn read_kdf(conn: &dyn Sql) -> Result<Option<KdfParams>> {
    if meta_req(conn, "kdf")? == KDF_NONE {
        return Ok(None);
    }
    let iterations = meta_u32(conn, "kdf_iterations")?;
    crypto::check_iterations("kdf_iterations", iterations)?;
    Ok(Some(KdfParams { salt: meta_req(conn, "kdf_salt")?, iterations }))
}

pub(crate) fn write_kdf(conn: &dyn Sql, kdf: Option<&KdfParams>) -> Result<()> {
    match kdf {
        None => {
            meta_set(conn, "kdf", KDF_NONE)?;
            conn.execute("DELETE FROM meta WHERE key IN ('kdf_salt', 'kdf_iterations')", params![])?;
        }
        Some(p) => {
            meta_set(conn, "kdf", KDF_PBKDF2)?;
            meta_set(conn, "kdf_salt", &p.salt)?;
            meta_set(conn, "kdf_iterations", p.iterations.to_string().as_bytes())?;
        }
    }
    Ok(())
}

/// The key material a master key yields for one vault.
pub(crate) struct MasterDerived {
    pub(crate) wrap: Key32,
    pub(crate) check: Key32,
}

pub(crate) fn derive_master(master: &Key32, vault_id: &[u8]) -> MasterDerived {
    MasterDerived {
        wrap: master.derive(vault_id, label::MASTER_WRAP),
        check: master.derive(vault_id, label::KEY_CHECK),
    }
}

pub(crate) fn vault_secret_ad(vault_id: &[u8]) -> Vec<u8> {
    ad("vault-secret", &[vault_id])
}

pub(crate) fn kek_ad(vault_id: &[u8], kek_id: &str) -> Vec<u8> {
    ad("kek", &[vault_id, kek_id.as_bytes()])
}

/// New random PBKDF2 parameters for a passphrase.
pub(crate) fn new_kdf(iterations: u32) -> Result<KdfParams> {
    let mut salt = vec![0u8; 16];
    crypto::fill_random(&mut salt)?;
    Ok(KdfParams { salt, iterations })
}

impl Vault {
    /// Creates a new SQLite vault file at `path` (which must not exist) keyed by `source`.
    /// See [`Vault::init_at`].
    pub fn init(path: &Path, source: &MasterKeySource, options: &InitOptions) -> Result<Vault> {
        Self::init_at(&Location::Sqlite(path.to_path_buf()), source, options)
    }

    /// Creates a new vault at `location` keyed by `source`: a SQLite file (which must not
    /// exist; a path whose last component is a symbolic link, or whose directory others can
    /// write, is refused) or a PostgreSQL database (which must hold no vault yet).
    ///
    /// For a passphrase, a random salt is generated and PBKDF2-HMAC-SHA256
    /// runs with 600,000 iterations; the parameters are stored in the vault.
    pub fn init_at(location: &Location, source: &MasterKeySource, options: &InitOptions) -> Result<Vault> {
        if options.history_depth == 0 {
            return Err(Error::InvalidInput { what: "history depth", reason: "must be at least 1".into() });
        }
        source.check_new()?;
        let material = source.material()?;
        match location {
            Location::Sqlite(path) => {
                let store = SqliteStore::create(path)?;
                let result = Self::init_store(location, Box::new(store), source, &material, options);
                if result.is_err() {
                    SqliteStore::remove(path);
                }
                result
            }
            Location::Postgres(url) => {
                let store = PgStore::connect(url)?;
                if !store.is_empty()? {
                    return Err(Error::AlreadyExists { location: location.display() });
                }
                Self::init_store(location, Box::new(store), source, &material, options)
            }
        }
    }

    fn init_store(
        location: &Location,
        store: Box<dyn Store>,
        source: &MasterKeySource,
        material: &Material,
        options: &InitOptions,
    ) -> Result<Vault> {
        let mut vault_id = [0u8; 16];
        crypto::fill_random(&mut vault_id)?;
        let kdf = match material {
            Material::Raw(_) => None,
            Material::Passphrase(_) => Some(new_kdf(options.pbkdf2_iterations)?),
        };
        let master = material.master_key(kdf.as_ref()).expect("KDF parameters are present for a passphrase");
        let derived = derive_master(&master, &vault_id);
        drop(master);
        let vault_secret = Key32::random()?;
        let kek = Key32::random()?;
        let kek_id = format!("kek_{}", crypto::random_hex(8)?);
        let wrap = derived.wrap.cipher();
        let wrapped_secret = crypto::seal(&wrap, &vault_secret_ad(&vault_id), vault_secret.bytes())?;
        let wrapped_kek = crypto::seal(&wrap, &kek_ad(&vault_id, &kek_id), kek.bytes())?;
        let audit_key = vault_secret.derive(&vault_id, label::AUDIT_MAC);
        let fp_key = vault_secret.derive(&vault_id, label::FINGERPRINT);
        let record_key = vault_secret.derive(&vault_id, label::RECORD_MAC);
        let apikey_key = vault_secret.derive(&vault_id, label::API_KEY);
        let now = types::now_ms();

        {
            let tx = store.begin_schema()?;
            if location.backend() == Backend::Postgres && schema::postgres_version(&tx)? != 0 {
                // Another host initialised it while this one connected.
                return Err(Error::AlreadyExists { location: location.display() });
            }
            schema::migrate(&tx)?;
            meta_set(&tx, "vault_id", &vault_id)?;
            write_kdf(&tx, kdf.as_ref())?;
            meta_set(&tx, "pbkdf2_iterations", options.pbkdf2_iterations.to_string().as_bytes())?;
            meta_set(&tx, "key_check", derived.check.bytes())?;
            meta_set(&tx, "vault_secret", &wrapped_secret)?;
            meta_set(&tx, "history_depth", options.history_depth.to_string().as_bytes())?;
            meta_set(&tx, "created_at", now.to_string().as_bytes())?;
            tx.execute(
                "INSERT INTO keys(id, wrapped, status, created_at) VALUES (?1, ?2, 'active', ?3)",
                params![kek_id, wrapped_kek, now],
            )?;
            audit::init_head(&tx, &audit_key, &vault_id)?;
            tx.commit()?;
        }

        let mut keks = HashMap::new();
        keks.insert(kek_id, kek.cipher());
        store.listen(&hex::encode(vault_id));
        Ok(Vault {
            location: location.clone(),
            vault_id,
            audit_key,
            fp_key,
            record_key,
            apikey_key,
            history_depth: options.history_depth,
            inner: Mutex::new(Inner {
                conn: store,
                keys: Keys { master_wrap: derived.wrap, source_kind: source.describe(), keks },
            }),
        })
    }

    /// Opens an existing SQLite vault file. See [`Vault::open_at`].
    pub fn open(path: &Path, source: &MasterKeySource) -> Result<Vault> {
        Self::open_at(&Location::Sqlite(path.to_path_buf()), source)
    }

    /// Opens an existing vault. A SQLite path whose last component is a symbolic link, or
    /// whose directory others can write, is refused. The master key is checked before
    /// anything is written: with a wrong key this returns [`Error::WrongMasterKey`] and the
    /// store is untouched. Pending schema migrations run after the check.
    pub fn open_at(location: &Location, source: &MasterKeySource) -> Result<Vault> {
        let material = source.material()?;
        let store: Box<dyn Store> = match location {
            Location::Sqlite(path) => Box::new(SqliteStore::open(path)?),
            Location::Postgres(url) => Box::new(PgStore::connect(url)?),
        };
        let version = store.schema_version()?;
        if version == 0 {
            return Err(Error::NotInitialized { location: location.display() });
        }
        if version > schema::LATEST {
            return Err(Error::UnsupportedSchema { found: version, supported: schema::LATEST });
        }

        // Read-only phase: verify the key.
        let conn: &dyn Sql = &*store;
        let id_bytes = meta_req(conn, "vault_id")?;
        let vault_id: [u8; 16] =
            id_bytes.as_slice().try_into().map_err(|_| Error::Corrupt { what: "vault metadata (vault_id)".into() })?;
        let kdf = read_kdf(conn)?;
        let wrong = |hint: &str| Error::WrongMasterKey {
            location: location.display(),
            tried: source.describe(),
            hint: hint.to_string(),
        };
        let Some(master) = material.master_key(kdf.as_ref()) else {
            return Err(wrong(" (this vault was created with a raw key: a hex key or a key file, not a passphrase)"));
        };
        let derived = derive_master(&master, &vault_id);
        drop(master);
        let stored_check = meta_req(conn, "key_check")?;
        if !derived.check.ct_eq(&stored_check) {
            let hint = match (&material, &kdf) {
                (Material::Raw(_), Some(_)) => " (this vault was created with a passphrase)",
                _ => "",
            };
            return Err(wrong(hint));
        }
        let wrapped_secret = meta_req(conn, "vault_secret")?;
        let vault_secret = crypto::open(&derived.wrap.cipher(), &vault_secret_ad(&vault_id), &wrapped_secret)
            .and_then(|b| Key32::from_slice(&b))
            .ok_or_else(|| Error::Corrupt { what: "the wrapped vault secret".into() })?;
        let audit_key = vault_secret.derive(&vault_id, label::AUDIT_MAC);
        let fp_key = vault_secret.derive(&vault_id, label::FINGERPRINT);
        let record_key = vault_secret.derive(&vault_id, label::RECORD_MAC);
        let apikey_key = vault_secret.derive(&vault_id, label::API_KEY);
        drop(vault_secret);
        let history_depth = meta_u32(conn, "history_depth")?.max(1);

        // The key is right: now the store may change.
        if version < schema::LATEST {
            let tx = store.begin_schema()?;
            schema::migrate(&tx)?;
            if version < schema::MACS_SINCE {
                // The rows as they are now are trusted once, here, with the key verified.
                creds::migrate_value_ad(&tx, &derived.wrap, &vault_id)?;
                records::RecordKey { key: &record_key, vault_id: &vault_id }.seal_all(&tx)?;
            }
            tx.commit()?;
        }
        store.listen(&hex::encode(vault_id));
        Ok(Vault {
            location: location.clone(),
            vault_id,
            audit_key,
            fp_key,
            record_key,
            apikey_key,
            history_depth,
            inner: Mutex::new(Inner {
                conn: store,
                keys: Keys { master_wrap: derived.wrap, source_kind: source.describe(), keks: HashMap::new() },
            }),
        })
    }

    /// Where the vault is kept.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The vault file, for a SQLite vault.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// The store the vault is kept in: engine, location, server version, TLS.
    pub fn store_facts(&self) -> StoreFacts {
        self.lock().conn.facts()
    }

    /// The vault's random id (hex), bound into every ciphertext's associated data.
    pub fn vault_id(&self) -> String {
        hex::encode(self.vault_id)
    }

    /// Versions kept per credential.
    pub fn history_depth(&self) -> u32 {
        self.history_depth
    }

    /// The key that MACs credentials, versions, grants and api_keys rows.
    pub(crate) fn records(&self) -> records::RecordKey<'_> {
        records::RecordKey { key: &self.record_key, vault_id: &self.vault_id }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the store half-written (the
        // transaction rolls back on drop), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Keys {
    /// The AES-GCM instance of KEK `id`, unwrapping and caching it on first use.
    pub(crate) fn kek(&mut self, conn: &dyn Sql, vault_id: &[u8], id: &str) -> Result<&Aes256Gcm> {
        if !self.keks.contains_key(id) {
            let wrapped: Vec<u8> = conn
                .query_row("SELECT wrapped FROM keys WHERE id = ?1", [id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::Corrupt { what: format!("key-encryption key {id} (missing)") })?;
            let kek = crypto::open(&self.master_wrap.cipher(), &kek_ad(vault_id, id), &wrapped)
                .and_then(|b| Key32::from_slice(&b))
                .ok_or_else(|| Error::Corrupt { what: format!("key-encryption key {id}") })?;
            self.keks.insert(id.to_string(), kek.cipher());
        }
        Ok(&self.keks[id])
    }
}
