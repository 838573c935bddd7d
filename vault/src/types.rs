//! The vault's public data types: identities, metadata, grants, audit rows.
//!
//! None of these types holds a secret value; [`crate::SecretValue`] is the
//! only type that does.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::Error;
use crate::secret::CredentialKind;

/// The owner namespace used when none is given.
pub const DEFAULT_OWNER: &str = "default";

/// Serde helpers: timestamps as RFC 3339 strings.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string())
    }

    pub mod opt {
        use super::*;
        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Milliseconds since the Unix epoch (the storage format of every timestamp).
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

/// The inverse of [`to_ms`].
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

pub(crate) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// RFC 3339 text for messages.
pub(crate) fn fmt_ms(ms: i64) -> String {
    humantime::format_rfc3339_seconds(from_ms(ms)).to_string()
}

macro_rules! string_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? } what = $what:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $v),+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The stored and printed name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(Error::InvalidInput {
                        what: $what,
                        reason: format!("unknown {} '{}': expected one of {}", $what, s, [$($s),+].join(", ")),
                    }),
                }
            }
        }
    };
}

string_enum! {
    /// The deployment environment a credential belongs to.
    #[derive(Default)]
    pub enum Environment {
        /// Development (the default).
        #[default]
        Dev = "dev",
        /// Staging.
        Staging = "staging",
        /// Production.
        Production = "production",
    }
    what = "environment"
}

string_enum! {
    /// Lifecycle status of a credential or of one of its versions.
    ///
    /// A credential is `active` or `revoked`; a version is `active` (the
    /// current one), `rotated` (kept as history) or `revoked`.
    pub enum Status {
        /// In use.
        Active = "active",
        /// Replaced by a newer version.
        Rotated = "rotated",
        /// Withdrawn; resolving it is refused.
        Revoked = "revoked",
    }
    what = "status"
}

string_enum! {
    /// How much a grant allows. The vault records it; the runtime enforces
    /// what each level means for a skill (e.g. `use` = host-side injection only).
    #[derive(Default)]
    pub enum AccessLevel {
        /// The skill may read the plaintext.
        Read = "read",
        /// The host may use the credential on the skill's behalf (the default).
        #[default]
        Use = "use",
        /// Full access.
        Admin = "admin",
    }
    what = "access level"
}

string_enum! {
    /// What an audit row records.
    pub enum AuditAction {
        /// A credential was added.
        Create = "create",
        /// A secret value was decrypted and released.
        Read = "read",
        /// The host used a credential on a skill's behalf (reported by the runtime).
        Use = "use",
        /// A credential got a new version.
        Rotate = "rotate",
        /// A credential was revoked.
        Revoke = "revoke",
        /// A credential was deleted.
        Delete = "delete",
        /// A grant was made or replaced.
        Grant = "grant",
        /// A grant was removed.
        Ungrant = "ungrant",
        /// The master key was rotated.
        KeyRotate = "key-rotate",
        /// Access was refused.
        Denied = "denied",
        /// A grant was pinned to a component digest (trust on first use).
        Pin = "pin",
        /// A backup copy of the vault was written.
        Backup = "backup",
        /// A skill tried to send, return or log a secret, and its invocation
        /// was ended (recorded by the runtime with [`crate::Vault::record_tripwire`]).
        Tripwire = "tripwire",
        /// A grant was suspended automatically after repeated tripwires.
        Suspend = "suspend",
        /// A response was blocked, or a foreign token was found in it (recorded
        /// by the runtime; `detail` holds `channel`, `view` and `rule`).
        Leak = "leak",
        /// A suspended grant was re-enabled (by granting it again).
        Resume = "resume",
        /// An operator rebuilt a damaged audit head (`skillbox audit repair`);
        /// `detail.rows` is how many rows the repaired chain holds.
        Repair = "repair",
        /// The automatically rewritten audit anchor file was set or removed.
        Anchor = "anchor",
        /// An API key was created (`detail`: name, fingerprint, user, environment, skills,
        /// expiry; never the key).
        ApikeyCreate = "apikey-create",
        /// An API key was revoked.
        ApikeyRevoke = "apikey-revoke",
        /// An OAuth 2 access token was refreshed (or fetched) by the host and stored as a new
        /// version; `detail` says which grant and whether the refresh token rotated.
        Refresh = "refresh",
        /// An alert was raised (`detail`: event kind and what it concerns; never a secret).
        Alert = "alert",
        /// A credential was declared compromised: every version revoked and every grant
        /// suspended in one step (`detail`: reason, grants suspended).
        Compromise = "compromise",
        /// A credential's metadata changed (`cred update`: rotation schedule, test URL, ...).
        Update = "update",
        /// A credential handle was released at the end of an invocation (`detail`: uses,
        /// held for how long).
        Release = "release",
        /// The whole vault was copied to another store (`vault migrate`; `detail`: target,
        /// row counts). The row is in both copies.
        Migrate = "migrate",
    }
    what = "audit action"
}

string_enum! {
    /// How much of an HTTP response a skill gets back for requests made with a
    /// credential. Ordered from narrowest to widest: `status` < `headers` < `full`.
    pub enum ResponseMode {
        /// Only the status code.
        Status = "status",
        /// The status code and the headers.
        Headers = "headers",
        /// Status, headers and body.
        Full = "full",
    }
    what = "response mode"
}

impl ResponseMode {
    /// The narrower of the two modes (`status` < `headers` < `full`): a grant
    /// can narrow what a manifest asks for, never widen it.
    pub fn narrowest(self, other: ResponseMode) -> ResponseMode {
        self.min(other)
    }
}

impl<'de> serde::Deserialize<'de> for ResponseMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

string_enum! {
    /// Whether a grant can be used now (computed when it is read).
    pub enum GrantStatus {
        /// Usable (subject to the credential's own status and the digest pin).
        Active = "active",
        /// Suspended after repeated tripwires; `skillbox grant` re-enables it.
        Suspended = "suspended",
        /// Past its expiry.
        Expired = "expired",
    }
    what = "grant status"
}

string_enum! {
    /// Whether an API key is accepted now (computed when it is read).
    pub enum ApiKeyStatus {
        /// Accepted.
        Active = "active",
        /// Past its expiry.
        Expired = "expired",
        /// Revoked (`skillbox apikey revoke`).
        Revoked = "revoked",
    }
    what = "API key status"
}

/// What [`crate::Vault::generation`] returns: compare two for equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// The vault's change counter (`meta.generation`), shared by every process and host.
    pub(crate) counter: u64,
}

impl Generation {
    /// The counter's value (what `Vault::watch_changes` announces).
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

/// The identity of a credential: (owner, environment, name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialRef {
    /// Owner (user or tenant namespace); [`DEFAULT_OWNER`] by default.
    pub owner: String,
    /// Environment; `dev` by default.
    pub environment: Environment,
    /// Credential name.
    pub name: String,
}

impl CredentialRef {
    /// `name` in the default owner and the `dev` environment.
    pub fn new(name: impl Into<String>) -> Self {
        CredentialRef { owner: DEFAULT_OWNER.into(), environment: Environment::Dev, name: name.into() }
    }

    /// The same reference in environment `env`.
    pub fn env(mut self, env: Environment) -> Self {
        self.environment = env;
        self
    }

    /// The same reference for owner `owner`.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }
}

/// Metadata of a new credential (its value is passed separately).
#[derive(Debug, Clone)]
pub struct NewCredential {
    /// Identity.
    pub id: CredentialRef,
    /// Kind; the value must be of this kind.
    pub kind: CredentialKind,
    /// Service it authenticates to ("stripe", "github", ...).
    pub service: String,
    /// Free text.
    pub description: Option<String>,
    /// Scopes the credential carries (informational).
    pub scopes: Vec<String>,
    /// When the credential stops being usable.
    pub expires_at: Option<SystemTime>,
    /// How often the value should be rotated (at least one minute); `None`: no schedule.
    pub rotate_every: Option<Duration>,
}

impl NewCredential {
    /// A credential with only the required fields set.
    pub fn new(id: CredentialRef, kind: CredentialKind, service: impl Into<String>) -> Self {
        NewCredential {
            id,
            kind,
            service: service.into(),
            description: None,
            scopes: Vec::new(),
            expires_at: None,
            rotate_every: None,
        }
    }
}

/// Credential metadata, as listed and shown. Never holds the value.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialInfo {
    /// Internal id (`cred_...`).
    pub id: String,
    /// Owner namespace.
    pub owner: String,
    /// Environment.
    pub environment: Environment,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: CredentialKind,
    /// Service.
    pub service: String,
    /// Description.
    pub description: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry.
    #[serde(with = "rfc3339::opt")]
    pub expires_at: Option<SystemTime>,
    /// `active` or `revoked`.
    pub status: Status,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// Created.
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    /// Last metadata or value change.
    #[serde(with = "rfc3339")]
    pub updated_at: SystemTime,
    /// Last rotation.
    #[serde(with = "rfc3339::opt")]
    pub last_rotated_at: Option<SystemTime>,
    /// Current version number (starts at 1).
    pub version: u32,
    /// Partial keyed fingerprint of the current value, like `…a1b2`.
    pub fingerprint: String,
    /// How often the value should be rotated (`cred add/update --rotate-every`); in JSON,
    /// whole seconds. `None`: no schedule.
    #[serde(with = "secs::opt")]
    pub rotate_every: Option<Duration>,
    /// Why the credential needs an operator before it works again (set when an OAuth 2
    /// refresh fails with `invalid_grant`; cleared when a new value is stored).
    pub needs_reauth: Option<String>,
    /// The URL `cred test` sends one request to (`cred update --test-url`).
    pub test_url: Option<String>,
    /// When the next rotation is due: the last rotation (or the creation) plus
    /// `rotate_every`. `None` without a schedule.
    #[serde(with = "rfc3339::opt")]
    pub rotation_due_at: Option<SystemTime>,
}

impl CredentialInfo {
    /// The credential's identity (owner, environment, name).
    pub fn reference(&self) -> CredentialRef {
        CredentialRef { owner: self.owner.clone(), environment: self.environment, name: self.name.clone() }
    }

    /// When the next rotation is due (see [`CredentialInfo::rotation_due_at`]).
    pub(crate) fn compute_rotation_due(&self) -> Option<SystemTime> {
        let every = self.rotate_every?;
        self.last_rotated_at.unwrap_or(self.created_at).checked_add(every)
    }

    /// True when a rotation schedule is set and its due time has passed.
    pub fn rotation_overdue(&self, now: SystemTime) -> bool {
        self.rotation_due_at.is_some_and(|d| d <= now)
    }
}

/// Serde helpers: durations as whole seconds.
pub(crate) mod secs {
    pub mod opt {
        use std::time::Duration;

        use serde::Serializer;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_u64(d.as_secs()),
                None => s.serialize_none(),
            }
        }
    }
}

/// Metadata changes for [`crate::Vault::update`]: `None` leaves a field as it is,
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct CredentialUpdate {
    /// The rotation schedule (at least one minute).
    pub rotate_every: Option<Option<Duration>>,
    /// The URL `cred test` requests (http or https, no user name or password in it).
    pub test_url: Option<Option<String>>,
    /// Free-text description.
    pub description: Option<Option<String>>,
}

impl CredentialUpdate {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        self.rotate_every.is_none() && self.test_url.is_none() && self.description.is_none()
    }
}

string_enum! {
    /// Why a credential is listed by [`crate::Vault::due`].
    pub enum DueReason {
        /// Its rotation schedule says it is due (or overdue).
        Rotation = "rotation",
        /// It expires (or has expired).
        Expiry = "expiry",
        /// It needs an operator: an OAuth 2 refresh failed with `invalid_grant`
        /// (`skillbox oauth login NAME`, or `skillbox cred rotate NAME`).
        NeedsReauth = "needs-reauth",
    }
    what = "due reason"
}

/// One thing an operator has to do about a credential (from [`crate::Vault::due`]).
#[derive(Debug, Clone, Serialize)]
pub struct DueItem {
    /// The credential's identity and metadata.
    pub credential: CredentialInfo,
    /// What is due.
    pub reason: DueReason,
    /// When it is (or was) due: the rotation due time or the expiry; `None` for `needs-reauth`.
    #[serde(with = "rfc3339::opt")]
    pub due_at: Option<SystemTime>,
    /// True when the time has passed (rotation overdue, credential expired) or the credential
    /// needs re-authorization: what `skillbox cred due` exits non-zero for.
    pub overdue: bool,
}

/// Options for [`crate::Vault::rotate_generated`]: how to make a random value.
#[derive(Debug, Clone)]
pub struct Generate {
    /// Characters in the value (16 to 4096).
    pub length: usize,
    /// Which characters.
    pub charset: Charset,
    /// Which field of the value to replace: default `key` (api_key, hmac_key),
    /// `access_token` (bearer), `password` (basic); required for `custom` (a top-level
    /// string field). Other fields are kept.
    pub field: Option<String>,
}

impl Default for Generate {
    fn default() -> Self {
        Generate { length: 32, charset: Charset::Alnum, field: None }
    }
}

string_enum! {
    /// The characters a generated value is drawn from, uniformly, by the operating system's
    /// generator.
    #[derive(Default)]
    pub enum Charset {
        /// `A-Z a-z 0-9` (5.95 bits per character).
        #[default]
        Alnum = "alnum",
        /// `0-9 a-f` (4 bits per character).
        Hex = "hex",
        /// `A-Z a-z 0-9 - _` (6 bits per character).
        Base64url = "base64url",
        /// Printable ASCII without space, `!` to `~` (6.55 bits per character).
        Printable = "printable",
    }
    what = "charset"
}

/// What [`crate::Vault::compromised`] did, and who used the credential.
#[derive(Debug, Clone, Serialize)]
pub struct CompromiseReport {
    /// The credential, as it is now (revoked).
    pub credential: CredentialInfo,
    /// The reason given.
    pub reason: String,
    /// Who declared it.
    pub actor: String,
    /// When.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// How many versions were revoked (every stored one that was not already).
    pub versions_revoked: u32,
    /// The grants suspended now (grants suspended before are left as they were).
    pub grants_suspended: Vec<GrantInfo>,
    /// The audit row that records it.
    pub audit_id: i64,
    /// Uses since this time are summarized in `usage` (30 days back).
    #[serde(with = "rfc3339")]
    pub usage_since: SystemTime,
    /// Who used the credential since `usage_since`, from the audit log.
    pub usage: Vec<UsageRow>,
}

/// Uses of a credential by one (skill, component digest, user, host), from the audit log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UsageRow {
    /// The skill (`None`: an operator read the value, e.g. `cred` commands).
    pub skill: Option<String>,
    /// The component's sha256 (hex), when the rows say it.
    pub digest: Option<String>,
    /// Who: the audit actor (the user a skill ran for, or the operator).
    pub actor: String,
    /// The host requests went to (`None` for opens and non-HTTP uses).
    pub host: Option<String>,
    /// Values handed out (`read` rows: a skill opening the credential, an operator reading it).
    pub opens: u64,
    /// Host-side uses (`use` rows: HTTP requests, signatures, queries).
    pub uses: u64,
    /// How many of those failed.
    pub failures: u64,
    /// The first of them.
    #[serde(with = "rfc3339")]
    pub first: SystemTime,
    /// The last of them.
    #[serde(with = "rfc3339")]
    pub last: SystemTime,
}

/// One stored version of a credential's value.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// Version number.
    pub version: u32,
    /// `active`, `rotated` or `revoked`.
    pub status: Status,
    /// The key-encryption key that wraps its data key.
    pub key_id: String,
    /// Created.
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    /// Partial keyed fingerprint, like `…a1b2`.
    pub fingerprint: String,
}

/// A credential with its version history (from [`crate::Vault::show`]).
#[derive(Debug, Clone, Serialize)]
pub struct CredentialDetail {
    /// Metadata.
    #[serde(flatten)]
    pub info: CredentialInfo,
    /// Versions kept, newest first.
    pub versions: Vec<VersionInfo>,
    /// Grants on this credential.
    pub grants: Vec<GrantInfo>,
}

/// Filters for [`crate::Vault::list`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this service.
    pub service: Option<String>,
    /// Only this kind.
    pub kind: Option<CredentialKind>,
    /// Only this environment.
    pub environment: Option<Environment>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this owner.
    pub owner: Option<String>,
}

/// A new grant of a credential to a skill.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// Skill (manifest name).
    pub skill: String,
    /// The credential granted.
    pub credential: CredentialRef,
    /// The name the skill declares and opens; defaults to the credential's name.
    pub alias: Option<String>,
    /// Access level.
    pub access: AccessLevel,
    /// When the grant lapses.
    pub expires_at: Option<SystemTime>,
    /// Why it was granted.
    pub reason: Option<String>,
    /// sha256 (hex) of the skill's component to pin now; otherwise pinned on first use.
    pub skill_digest: Option<String>,
    /// Never pin a digest.
    pub any_digest: bool,
    /// Operator override of the hosts the credential may be sent to.
    pub hosts: Option<Vec<String>>,
    /// Narrow what the skill gets back from requests made with this credential
    /// (`None`: as the manifest says).
    pub response: Option<ResponseMode>,
    /// The skill's security policy for this credential to pin now (canonical JSON, as
    /// [`Access::policy`]); otherwise pinned on first use.
    pub policy: Option<String>,
}

impl NewGrant {
    /// A `use` grant with no expiry, pinned on first use.
    pub fn new(skill: impl Into<String>, credential: CredentialRef) -> Self {
        NewGrant {
            skill: skill.into(),
            credential,
            alias: None,
            access: AccessLevel::Use,
            expires_at: None,
            reason: None,
            skill_digest: None,
            any_digest: false,
            hosts: None,
            response: None,
            policy: None,
        }
    }
}

/// A grant, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct GrantInfo {
    /// Internal id (`grant_...`).
    pub id: String,
    /// Skill.
    pub skill: String,
    /// The name the skill uses for the credential.
    pub alias: String,
    /// Credential id.
    pub credential_id: String,
    /// Credential name.
    pub credential_name: String,
    /// Environment (the credential's).
    pub environment: Environment,
    /// Owner (the credential's).
    pub owner: String,
    /// Access level.
    pub access: AccessLevel,
    /// Who granted it.
    pub granted_by: String,
    /// When.
    #[serde(with = "rfc3339")]
    pub granted_at: SystemTime,
    /// Expiry.
    #[serde(with = "rfc3339::opt")]
    pub expires_at: Option<SystemTime>,
    /// Reason.
    pub reason: Option<String>,
    /// Pinned component digest (sha256 hex).
    pub skill_digest: Option<String>,
    /// True when no digest is pinned on purpose.
    pub any_digest: bool,
    /// Host override.
    pub hosts: Option<Vec<String>>,
    /// `active`, `suspended` or `expired`, as of when the grant was read.
    pub status: GrantStatus,
    /// When the grant was suspended (`None`: not suspended).
    #[serde(with = "rfc3339::opt")]
    pub suspended_at: Option<SystemTime>,
    /// Why it was suspended.
    pub suspended_reason: Option<String>,
    /// Response narrowing (`None`: as the manifest says).
    pub response: Option<ResponseMode>,
    /// The pinned policy (canonical JSON of the security-relevant parts of the skill's
    /// manifest for this credential); `None` until first use.
    pub policy: Option<String>,
}

impl GrantInfo {
    /// sha256 (hex) of the pinned policy, if one is pinned.
    pub fn policy_digest(&self) -> Option<String> {
        self.policy.as_deref().map(crate::policy::digest)
    }

    /// The hosts the credential may be sent to under this grant: the operator's override,
    /// else the pinned policy's `hosts`; `None` when neither says (not pinned yet).
    pub fn pinned_hosts(&self) -> Option<Vec<String>> {
        self.hosts.clone().or_else(|| self.policy.as_deref().and_then(crate::policy::hosts))
    }

    /// The `skillbox grant` command that makes this grant again, with its
    /// environment, owner, alias, access, hosts, digest choice and response
    /// mode (not its expiry or reason): what re-enables it when suspended.
    pub fn grant_command(&self) -> String {
        let mut c = format!("skillbox grant {} {}", self.skill, self.credential_name);
        if self.environment != Environment::Dev {
            c += &format!(" --env {}", self.environment);
        }
        if self.owner != DEFAULT_OWNER {
            c += &format!(" --owner {}", self.owner);
        }
        if self.alias != self.credential_name {
            c += &format!(" --as {}", self.alias);
        }
        if self.access != AccessLevel::Use {
            c += &format!(" --access {}", self.access);
        }
        if let Some(hosts) = &self.hosts {
            c += &format!(" --hosts {}", hosts.join(","));
        }
        if self.any_digest {
            c += " --any-digest";
        }
        if let Some(m) = self.response {
            c += &format!(" --response {m}");
        }
        c
    }
}

/// Filters for [`crate::Vault::grants`].
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    /// Only grants to this skill.
    pub skill: Option<String>,
    /// Only this environment.
    pub environment: Option<Environment>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only grants with this status.
    pub status: Option<GrantStatus>,
}

/// What [`crate::Vault::record_tripwire`] did.
#[derive(Debug, Clone, Serialize)]
pub struct TripwireOutcome {
    /// Tripwires by this skill and component within the window, this one included.
    pub count: u32,
    /// The grants this tripwire suspended (empty below the threshold, and when
    /// they were suspended already).
    pub suspended: Vec<GrantInfo>,
}

/// A request by the runtime for a credential on behalf of a skill.
#[derive(Debug, Clone)]
pub struct Access {
    /// Skill (manifest name).
    pub skill: String,
    /// sha256 (hex) of the running component.
    pub skill_digest: String,
    /// The credential name the skill declared and opened (a grant's alias).
    pub declared_name: String,
    /// Environment of the run.
    pub environment: Environment,
    /// Owner namespace of the run.
    pub owner: String,
    /// The user on whose behalf the skill runs (audit actor).
    pub user: String,
    /// Why (free text, audited).
    pub purpose: Option<String>,
    /// Skip the grant check once, approved by this person (audited as such).
    pub one_time_approval: Option<String>,
    /// The security-relevant policy the skill runs with for this credential, as canonical
    /// JSON (a flat object; see [`crate::policy`]): pinned by the grant on first use and
    /// compared on every later use. `None` skips the policy check (embedders without a
    /// manifest).
    pub policy: Option<String>,
}

/// What [`crate::Vault::resolve`] returns: metadata, the grant used, and the value.
#[derive(Debug)]
pub struct Resolved {
    /// The credential's metadata.
    pub credential: CredentialInfo,
    /// The grant that allowed it (`None` with a one-time approval).
    pub grant: Option<GrantInfo>,
    /// The decrypted value.
    pub value: crate::secret::SecretValue,
}

/// An event to append to the audit log. Never put a secret value in any field.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Action (`use`, `denied`, `leak` or `tripwire` for [`crate::Vault::record`];
    /// `tripwire` for [`crate::Vault::record_tripwire`]).
    pub action: AuditAction,
    /// The user.
    pub actor: String,
    /// Skill, if any.
    pub skill: Option<String>,
    /// Credential, if any (looked up to fill id and name; may be absent).
    pub credential: Option<CredentialRef>,
    /// Why.
    pub purpose: Option<String>,
    /// Structured details (operation, target host or database, duration_ms, ...).
    pub detail: serde_json::Value,
    /// Whether it succeeded.
    pub success: bool,
    /// Error text on failure.
    pub error: Option<String>,
}

impl AuditEvent {
    /// An event with only action and actor set (success, empty detail).
    pub fn new(action: AuditAction, actor: impl Into<String>) -> Self {
        AuditEvent {
            action,
            actor: actor.into(),
            skill: None,
            credential: None,
            purpose: None,
            detail: serde_json::Value::Object(Default::default()),
            success: true,
            error: None,
        }
    }
}

/// One audit row, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Row id (sequence number).
    pub id: i64,
    /// When.
    #[serde(with = "rfc3339")]
    pub ts: SystemTime,
    /// Action.
    pub action: AuditAction,
    /// Who.
    pub actor: String,
    /// Skill.
    pub skill: Option<String>,
    /// Credential id.
    pub credential_id: Option<String>,
    /// Credential name.
    pub credential_name: Option<String>,
    /// Environment.
    pub environment: Option<Environment>,
    /// Owner.
    pub owner: Option<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// Details.
    pub detail: serde_json::Value,
    /// Outcome.
    pub success: bool,
    /// Error text.
    pub error: Option<String>,
}

/// Filters for audit queries; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Credential name or id.
    pub credential: Option<String>,
    /// Skill.
    pub skill: Option<String>,
    /// Action.
    pub action: Option<AuditAction>,
    /// At or after.
    pub since: Option<SystemTime>,
    /// Before.
    pub until: Option<SystemTime>,
    /// At most this many rows (the most recent ones).
    pub limit: Option<usize>,
}

/// Counts over the audit log (seed 001's `getAuditSummary`, extended).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditSummary {
    /// Rows counted.
    pub total: u64,
    /// Successful rows.
    pub successes: u64,
    /// Failed or denied rows.
    pub failures: u64,
    /// Rows per action.
    pub by_action: std::collections::BTreeMap<String, u64>,
    /// Rows per skill.
    pub by_skill: std::collections::BTreeMap<String, u64>,
    /// Rows per credential name.
    pub by_credential: std::collections::BTreeMap<String, u64>,
    /// Most recent row.
    #[serde(with = "rfc3339::opt")]
    pub last_at: Option<SystemTime>,
}

/// What kind of tampering [`crate::Vault::audit_verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TamperKind {
    /// The row is in its place in the chain but its content changed.
    Edited,
    /// The row is not authentic and does not link to its predecessor: it was added.
    Inserted,
    /// Rows before this one (or at the end of the log) are missing.
    Deleted,
    /// The MACed head record in the vault metadata was altered.
    HeadAltered,
    /// The log does not extend an anchor exported earlier: rows the anchor
    /// covers are missing or differ (truncation, or an older copy of the file).
    RolledBack,
    /// A credentials, versions, grants or api_keys row fails its MAC: it was modified
    /// outside skillbox (`row` is 0; the message names the record).
    RecordForged,
}

/// The result of [`crate::Vault::audit_verify`].
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Rows read.
    pub rows: u64,
    /// The first problem found, if any.
    pub problem: Option<AuditProblem>,
}

impl AuditReport {
    /// True when the chain is intact.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The first bad spot in the audit chain.
#[derive(Debug, Clone, Serialize)]
pub struct AuditProblem {
    /// What happened.
    pub kind: TamperKind,
    /// The row where it shows (for a deleted tail: the last row left, or 0).
    pub row: i64,
    /// Human explanation.
    pub message: String,
}

/// A new API key for a client of `skillbox serve` (see [`crate::Vault::apikey_create`]).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Its name, for listings and `skillbox apikey revoke` (unique, never reused).
    pub name: String,
    /// The user (tenant) every call made with the key runs as.
    pub owner: String,
    /// The environment every call made with the key runs in.
    pub environment: Environment,
    /// The skills the key may call; `None` for every skill.
    pub skills: Option<Vec<String>>,
    /// When the key stops being accepted; `None` for never.
    pub expires_at: Option<SystemTime>,
}

impl NewApiKey {
    /// A key for the default user in `dev`, for every skill, that never expires.
    pub fn new(name: impl Into<String>) -> Self {
        NewApiKey {
            name: name.into(),
            owner: DEFAULT_OWNER.into(),
            environment: Environment::Dev,
            skills: None,
            expires_at: None,
        }
    }
}

/// An API key as stored: everything but the key, which the vault never holds (only a
/// keyed hash of it).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    /// Its name.
    pub name: String,
    /// A short fingerprint (`sbx_…a1b2c3`) that names the key in listings and audit rows;
    /// derived with a key the vault holds, so it tells nothing about the key itself.
    /// Unique within the vault.
    pub fingerprint: String,
    /// The user (tenant) every call made with the key runs as.
    pub owner: String,
    /// The environment every call made with the key runs in.
    pub environment: Environment,
    /// The skills the key may call; `None` for every skill. Sorted, no duplicates.
    pub skills: Option<Vec<String>>,
    /// Created.
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    /// Who created it.
    pub created_by: String,
    /// When it stops being accepted.
    #[serde(with = "rfc3339::opt")]
    pub expires_at: Option<SystemTime>,
    /// When it was revoked.
    #[serde(with = "rfc3339::opt")]
    pub revoked_at: Option<SystemTime>,
    /// When it was last accepted (written at most once a minute).
    #[serde(with = "rfc3339::opt")]
    pub last_used_at: Option<SystemTime>,
    /// `active`, `expired` or `revoked`, as of when it was read.
    pub status: ApiKeyStatus,
}

impl ApiKeyInfo {
    /// Whether the key may call skill `skill`.
    pub fn allows_skill(&self, skill: &str) -> bool {
        self.skills.as_ref().is_none_or(|s| s.iter().any(|x| x == skill))
    }
}
