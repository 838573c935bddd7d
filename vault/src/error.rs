//! The crate's one error type.
//!
//! Every message names the problem and, where there is one, the fix. No
//! message ever contains a secret value: fields are named, never echoed.

use std::path::PathBuf;

use crate::types::Environment;

/// Everything that can go wrong in the vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read, written or inspected.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading key file", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store reported an error (SQLite locked past the busy timeout, disk full, corrupt
    /// file; PostgreSQL unreachable or refusing a statement...). Calls that need a credential
    /// fail closed.
    #[error("vault database error: {0}")]
    Database(#[from] crate::store::DbError),
    /// There is no vault at this location (or the file is not one).
    #[error(
        "no vault at {location}: create one with `skillbox vault init` (or point --vault / --store / \
         SKILLBOX_VAULT / SKILLBOX_STORE at it)"
    )]
    NotInitialized {
        /// The file or database (without a password).
        location: String,
    },
    /// `init` (or `vault migrate`) was asked to create a vault where one already exists.
    #[error("a vault already exists at {location}: refusing to overwrite it (choose another location)")]
    AlreadyExists {
        /// The existing vault (without a password).
        location: String,
    },
    /// The vault was written by a newer skillbox.
    #[error("vault schema version {found} is newer than this skillbox supports ({supported}): upgrade skillbox")]
    UnsupportedSchema {
        /// Schema version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The master key does not open this vault. Nothing was written.
    #[error(
        "the master key does not open the vault at {location} (the key came from {tried}){hint}. \
         Master key sources, in order: SKILLBOX_MASTER_KEY (64 hex chars), --key-file / SKILLBOX_KEY_FILE, \
         SKILLBOX_PASSPHRASE, then a passphrase prompt. Nothing was changed."
    )]
    WrongMasterKey {
        /// The vault (without a password).
        location: String,
        /// Which kind of source supplied the key that failed.
        tried: &'static str,
        /// Extra explanation, possibly empty (e.g. "this vault was created with a raw key").
        hint: String,
    },
    /// A master key was supplied in an unusable form.
    #[error("invalid master key: {reason}")]
    InvalidMasterKey {
        /// What is wrong with it (never the key itself).
        reason: String,
    },
    /// A key file may be read by other users.
    #[error(
        "key file {path} has mode {mode:04o}: it must be readable by its owner only. Fix it with `chmod 600 {path}`"
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Stored data failed its integrity check: it was altered, truncated, or moved from elsewhere.
    #[error(
        "integrity check failed for {what}: the stored data was altered or copied from another record. \
         Restore the vault from a backup (`skillbox vault backup` makes one)"
    )]
    Corrupt {
        /// Which record failed (credential, version, key id; never a value).
        what: String,
    },
    /// The vault's stored key-derivation parameters are below the floor
    /// ([`crate::MIN_PBKDF2_ITERATIONS`]). skillbox never writes such values, so
    /// the file was edited; nothing was derived with them and nothing was changed.
    #[error(
        "the vault's key-derivation parameters were weakened: '{setting}' asks for {found} PBKDF2 iterations, \
         below the minimum of {minimum}. skillbox never stores such a value, so this is only possible by editing \
         the vault file. Nothing was changed and the passphrase was not used with it. Restore the vault from a \
         backup you trust and check it with `skillbox audit verify`"
    )]
    KdfWeakened {
        /// The metadata key that holds the weak value (`kdf_iterations`, `pbkdf2_iterations`).
        setting: &'static str,
        /// The stored iteration count.
        found: u32,
        /// The floor.
        minimum: u32,
    },
    /// A credential with this identity already exists.
    #[error(
        "credential '{name}' already exists in environment {environment} for owner '{owner}': \
         use `skillbox cred rotate {name}` to change its value"
    )]
    CredentialExists {
        /// Credential name.
        name: String,
        /// Its environment.
        environment: Environment,
        /// Its owner namespace.
        owner: String,
    },
    /// No credential with this identity.
    #[error(
        "no credential '{name}' in environment {environment} for owner '{owner}': \
         see `skillbox cred list`, or add it with `skillbox cred add {name} --type TYPE --service SERVICE --env {environment}`"
    )]
    NotFound {
        /// Credential name.
        name: String,
        /// Environment searched.
        environment: Environment,
        /// Owner searched.
        owner: String,
    },
    /// A credential value failed validation.
    #[error("invalid {kind} credential value: field '{field}' {reason}")]
    InvalidValue {
        /// The credential kind.
        kind: &'static str,
        /// The offending field.
        field: String,
        /// What is wrong (never the value).
        reason: String,
    },
    /// An argument (name, filter, option) is not acceptable.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The skill has no grant for this credential (default deny).
    #[error(
        "skill '{skill}' is not granted credential '{name}' in environment {environment} (owner '{owner}'): \
         grant it with `skillbox grant {skill} {name} --env {environment}`"
    )]
    NotGranted {
        /// Skill (manifest name).
        skill: String,
        /// The name the skill asked for.
        name: String,
        /// Environment.
        environment: Environment,
        /// Owner namespace.
        owner: String,
    },
    /// The grant exists but has expired.
    #[error(
        "the grant of credential '{name}' to skill '{skill}' in environment {environment} expired at {expired_at}: \
         renew it with `skillbox grant {skill} {name} --env {environment} --expires 30d`"
    )]
    GrantExpired {
        /// Skill.
        skill: String,
        /// Credential (alias) name.
        name: String,
        /// Environment.
        environment: Environment,
        /// When it expired (RFC 3339).
        expired_at: String,
    },
    /// No grant matches for `ungrant`.
    #[error(
        "skill '{skill}' has no grant named '{name}' in environment {environment} (owner '{owner}'): see `skillbox grants`"
    )]
    GrantNotFound {
        /// Skill.
        skill: String,
        /// Alias.
        name: String,
        /// Environment.
        environment: Environment,
        /// Owner.
        owner: String,
    },
    /// The credential was revoked.
    #[error(
        "credential '{name}' in environment {environment} is revoked ({reason}): \
         put a new value in with `skillbox cred rotate {name} --env {environment}`"
    )]
    Revoked {
        /// Credential name.
        name: String,
        /// Environment.
        environment: Environment,
        /// The reason given at revocation.
        reason: String,
    },
    /// The credential is past its expiry date.
    #[error(
        "credential '{name}' in environment {environment} expired at {expired_at}: \
         rotate it with `skillbox cred rotate {name} --env {environment} --expires ...`"
    )]
    Expired {
        /// Credential name.
        name: String,
        /// Environment.
        environment: Environment,
        /// When it expired (RFC 3339).
        expired_at: String,
    },
    /// The skill's component is not the one the grant was pinned to.
    #[error(
        "skill '{skill}' changed: its grant is pinned to component sha256 {pinned}, but this component is sha256 {found}. \
         If the change is expected, re-grant with `skillbox grant <path-to-skill> CREDENTIAL --env ENV` \
         (or `--any-digest` to stop pinning)"
    )]
    DigestMismatch {
        /// Skill.
        skill: String,
        /// The pinned digest (hex).
        pinned: String,
        /// The digest presented now (hex).
        found: String,
    },
    /// The skill's security policy for the credential (hosts, HTTP style, response scope,
    /// network allowlist, SQL writes, limits) is not the one the grant pinned.
    #[error(
        "the policy of skill '{skill}' for credential '{name}' changed since it was approved \
         (pinned policy sha256 {pinned}..., now {found}...): {changes}. The credential is not used \
         until an operator approves the new policy: review skill.toml, then run `{command}` \
         (give the skill's directory instead of its name to pin exactly the manifest you reviewed)"
    )]
    PolicyChanged {
        /// Skill.
        skill: String,
        /// The declared name (the grant's alias).
        name: String,
        /// The pinned policy's digest (hex prefix).
        pinned: String,
        /// The digest of the policy presented now (hex prefix).
        found: String,
        /// What changed, key by key (`hosts: [..] -> [..]`).
        changes: String,
        /// The `skillbox grant` command that approves the new policy.
        command: String,
    },
    /// The grant was suspended automatically after repeated tripwires (the
    /// skill kept trying to send, return or log a secret).
    #[error(
        "the grant of credential '{credential}' to skill '{skill}' in environment {environment} is suspended: \
         {reason}; the skill repeatedly tried to send, return or log a secret, so its access was stopped. \
         See what it did with `skillbox audit list --skill {skill} --action tripwire`; once that is understood \
         (or the skill is fixed), re-enable the grant with `{command}`"
    )]
    Suspended {
        /// Skill.
        skill: String,
        /// Credential name.
        credential: String,
        /// Environment.
        environment: Environment,
        /// Why it was suspended ("3 tripwires within 24h by component …").
        reason: String,
        /// The `skillbox grant` command that re-enables this grant.
        command: String,
    },
    /// The audit row could not be written, so the operation was refused (fail closed).
    #[error("the audit log could not be written, so the operation was refused and no secret was released: {source}")]
    Audit {
        /// Why the write failed.
        #[source]
        source: Box<Error>,
    },
    /// The audit log's MACed head is damaged or no longer describes the newest
    /// row, so nothing more can be appended (fail closed) until an operator
    /// runs `skillbox audit repair`.
    #[error(
        "the audit log's head record is damaged ({reason}), so nothing more can be recorded: the operation was \
         refused and no secret was released. The newest audit rows may have been deleted. Run \
         `skillbox audit verify` to see what is wrong, then `skillbox audit repair` if you accept the loss \
         (it rebuilds the head from the rows that remain and records a `repair` row)"
    )]
    AuditHeadDamaged {
        /// What is wrong with the head (no secret).
        reason: String,
    },
    /// A record that skillbox protects with a MAC failed its check: the vault
    /// file was modified outside skillbox.
    #[error(
        "{what} was modified outside skillbox (its integrity check failed), so the operation was refused. \
         Check the vault with `skillbox audit verify`, and restore it from a backup you trust"
    )]
    Tampered {
        /// Which record (never a value).
        what: String,
    },
    /// An API key was not accepted: unknown, expired, revoked or malformed. One variant
    /// and one message for every case, so nothing tells a caller which it was (an HTTP
    /// server answers 401). A key whose stored record fails its MAC is
    /// [`Error::Tampered`] instead: that is for the operator, not the caller.
    #[error("API key refused")]
    ApiKeyRefused,
    /// No API key has this name (`skillbox apikey revoke`).
    #[error("no API key named '{name}': see `skillbox apikey list`")]
    ApiKeyNotFound {
        /// The name asked for.
        name: String,
    },
    /// An API key with this name exists (names stay taken after revocation, so audit
    /// rows and listings never confuse two keys).
    #[error(
        "an API key named '{name}' already exists (a revoked key keeps its name): choose another name; \
         see `skillbox apikey list`"
    )]
    ApiKeyExists {
        /// The name asked for.
        name: String,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for refusals of access (not granted, expired, revoked, digest changed, suspended,
    /// API key refused): the CLI maps these to its "denied" exit code.
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            Error::NotGranted { .. }
                | Error::GrantExpired { .. }
                | Error::Revoked { .. }
                | Error::Expired { .. }
                | Error::DigestMismatch { .. }
                | Error::PolicyChanged { .. }
                | Error::Suspended { .. }
                | Error::ApiKeyRefused
        )
    }
}
