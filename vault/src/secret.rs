//! Credential kinds and their typed, zeroizing values.
//!
//! Values come in as JSON (or a single secret string for one-secret kinds),
//! are validated field by field, and are held in [`SecretString`]s so they are
//! wiped on drop and never printed. Parsing goes through a
//! `serde_json::Value` that is scrubbed before it is dropped, and error
//! messages name fields but never echo their contents.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// The shortest secret (in bytes) the leak scanner can look for in free text
/// without false alarms. [`SecretValue::check_secret_length`] enforces it.
pub const MIN_SECRET_LEN: usize = 8;

/// The kind of a credential, which fixes the shape of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum CredentialKind {
    /// `{key, secret?}`
    #[serde(rename = "api_key")]
    ApiKey,
    /// `{access_token, refresh_token?, token_endpoint?, expires_at?, scopes?}`
    #[serde(rename = "bearer")]
    Bearer,
    /// Same fields as `bearer`.
    #[serde(rename = "oauth2")]
    OAuth2,
    /// `{username, password}`
    #[serde(rename = "basic")]
    Basic,
    /// `{driver: "postgres", host, port?, database, user, password?, ssl?, sslmode?, allow_privileged_role?}` or `{driver: "sqlite", path}`
    #[serde(rename = "database")]
    Database,
    /// `{key}` (text)
    #[serde(rename = "hmac_key")]
    HmacKey,
    /// Any JSON object.
    #[serde(rename = "custom")]
    Custom,
}

impl CredentialKind {
    /// Every kind.
    pub const ALL: &'static [CredentialKind] = &[
        CredentialKind::ApiKey,
        CredentialKind::Bearer,
        CredentialKind::OAuth2,
        CredentialKind::Basic,
        CredentialKind::Database,
        CredentialKind::HmacKey,
        CredentialKind::Custom,
    ];

    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Bearer => "bearer",
            CredentialKind::OAuth2 => "oauth2",
            CredentialKind::Basic => "basic",
            CredentialKind::Database => "database",
            CredentialKind::HmacKey => "hmac_key",
            CredentialKind::Custom => "custom",
        }
    }

    /// True when a single secret string is a complete value (`api_key`, `bearer`, `oauth2`, `hmac_key`).
    pub fn is_single_secret(self) -> bool {
        matches!(
            self,
            CredentialKind::ApiKey | CredentialKind::Bearer | CredentialKind::OAuth2 | CredentialKind::HmacKey
        )
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        CredentialKind::ALL.iter().copied().find(|k| k.as_str() == s).ok_or_else(|| Error::InvalidInput {
            what: "credential type",
            reason: format!(
                "unknown type '{s}': expected one of {}",
                CredentialKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

/// `api_key` value.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The key.
    pub key: SecretString,
    /// An accompanying secret, for services that use a pair.
    pub secret: Option<SecretString>,
}

/// `bearer` / `oauth2` value.
#[derive(Debug, Clone)]
pub struct Token {
    /// The access token.
    pub access_token: SecretString,
    /// A refresh token.
    pub refresh_token: Option<SecretString>,
    /// Where to refresh (http or https URL).
    pub token_endpoint: Option<String>,
    /// When the access token expires (RFC 3339).
    pub expires_at: Option<String>,
    /// Scopes it carries.
    pub scopes: Vec<String>,
    /// The OAuth 2 client the host refreshes (or fetches) tokens as.
    pub client_id: Option<String>,
    /// That client's secret.
    pub client_secret: Option<SecretString>,
    /// The provider's authorization endpoint, for signing in again (`skillbox oauth login`).
    pub auth_url: Option<String>,
}

impl Token {
    /// When the access token expires, in seconds since the Unix epoch.
    pub fn expires_at_unix(&self) -> Option<u64> {
        let at = humantime::parse_rfc3339_weak(self.expires_at.as_deref()?).ok()?;
        at.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
    }

    /// Whether the host can get a new access token itself: with a refresh token, or as a
    /// client (`client_credentials`), at a token endpoint.
    pub fn can_refresh(&self) -> bool {
        self.token_endpoint.is_some()
            && (self.refresh_token.is_some() || (self.client_id.is_some() && self.client_secret.is_some()))
    }
}

/// `basic` value.
#[derive(Debug, Clone)]
pub struct Basic {
    /// User name (not secret).
    pub username: String,
    /// Password.
    pub password: SecretString,
}

/// `database` value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Database {
    /// A PostgreSQL server.
    Postgres(Postgres),
    /// A SQLite file.
    Sqlite {
        /// Path of the database file.
        path: String,
    },
}

/// PostgreSQL connection parameters.
#[derive(Debug, Clone)]
pub struct Postgres {
    /// Host name or address.
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: Option<SecretString>,
    /// Require TLS even to a loopback host (`"ssl": true`, or `"sslmode": "require"`).
    pub ssl: bool,
    /// Connect in plain text even to a non-loopback host: only with an explicit
    /// `"sslmode": "disable"`. Without it, TLS is used for every host but loopback.
    pub ssl_disabled: bool,
    /// The operator stored this credential knowing its role is privileged (superuser,
    /// `pg_execute_server_program`, ...): `"allow_privileged_role": true`, set by
    /// `cred add --allow-privileged-role`. Without it such a role is refused at connect.
    pub allow_privileged_role: bool,
}

/// `hmac_key` value (text key).
#[derive(Debug, Clone)]
pub struct HmacKey {
    /// The key.
    pub key: SecretString,
}

/// `custom` value: a JSON object. Every string inside counts as secret.
#[derive(Clone)]
pub struct Custom {
    json: SecretString,
    leaves: Vec<SecretString>,
}

impl Custom {
    /// The object as JSON text (keys sorted).
    pub fn expose_json(&self) -> &str {
        self.json.expose_secret()
    }
}

impl fmt::Debug for Custom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Custom([REDACTED])")
    }
}

/// A decrypted credential value, typed by kind. Secret fields are zeroized on
/// drop and redacted in `Debug`; there is no `Display`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SecretValue {
    /// `api_key`
    ApiKey(ApiKey),
    /// `bearer`
    Bearer(Token),
    /// `oauth2`
    OAuth2(Token),
    /// `basic`
    Basic(Basic),
    /// `database`
    Database(Database),
    /// `hmac_key`
    HmacKey(HmacKey),
    /// `custom`
    Custom(Custom),
}

/// A parsed JSON value whose strings are wiped when it is dropped.
struct ScrubbedJson(Value);

impl Drop for ScrubbedJson {
    fn drop(&mut self) {
        scrub(&mut self.0);
    }
}

fn scrub(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(scrub),
        Value::Object(m) => m.values_mut().for_each(scrub),
        _ => {}
    }
}

/// Field-by-field reader over a JSON object with messages that never echo values.
struct Fields<'a> {
    kind: CredentialKind,
    map: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::InvalidValue { kind: self.kind.as_str(), field: field.to_string(), reason: reason.into() }
    }

    fn get(&mut self, field: &'static str) -> Option<&'a Value> {
        self.used.push(field);
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn opt_str(&mut self, field: &'static str) -> Result<Option<&'a str>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => {
                if s.is_empty() {
                    Err(self.err(field, "is empty"))
                } else {
                    Ok(Some(s))
                }
            }
            Some(_) => Err(self.err(field, "must be a string")),
        }
    }

    fn req_str(&mut self, field: &'static str) -> Result<&'a str> {
        self.opt_str(field)?.ok_or_else(|| self.err(field, "is required"))
    }

    /// A secret that may be sent in an HTTP header: no control characters.
    fn opt_header_secret(&mut self, field: &'static str) -> Result<Option<SecretString>> {
        match self.opt_str(field)? {
            None => Ok(None),
            Some(s) => {
                check_header_safe(self.kind, field, s)?;
                Ok(Some(SecretString::from(s)))
            }
        }
    }

    fn req_header_secret(&mut self, field: &'static str) -> Result<SecretString> {
        self.opt_header_secret(field)?.ok_or_else(|| self.err(field, "is required"))
    }

    /// `expires_at` (RFC 3339, or seconds since the Unix epoch) or `expires_in` (seconds from
    /// now), as RFC 3339.
    fn expiry(&mut self) -> Result<Option<String>> {
        let at = match self.get("expires_at") {
            None => None,
            Some(Value::String(t)) => match humantime::parse_rfc3339_weak(t) {
                Ok(_) => Some(t.clone()),
                Err(_) => {
                    return Err(self.err(
                        "expires_at",
                        "must be an RFC 3339 time like 2030-01-31T12:00:00Z or seconds since the Unix epoch",
                    ));
                }
            },
            Some(Value::Number(n)) => match n.as_u64() {
                Some(secs) => Some(rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))),
                None => return Err(self.err("expires_at", "must be a whole number of seconds")),
            },
            Some(_) => return Err(self.err("expires_at", "must be a string or a number")),
        };
        let within = match self.get("expires_in") {
            None => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(secs) => Some(rfc3339(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))),
                None => return Err(self.err("expires_in", "must be a whole number of seconds")),
            },
            Some(_) => return Err(self.err("expires_in", "must be a number of seconds")),
        };
        match (at, within) {
            (Some(_), Some(_)) => Err(self.err("expires_in", "give expires_in or expires_at, not both")),
            (a, b) => Ok(a.or(b)),
        }
    }

    fn opt_bool(&mut self, field: &'static str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(field, "must be true or false")),
        }
    }

    fn opt_port(&mut self, field: &'static str) -> Result<Option<u16>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(p) if (1..=65535).contains(&p) => Ok(Some(p as u16)),
                _ => Err(self.err(field, "must be a port number from 1 to 65535")),
            },
            Some(_) => Err(self.err(field, "must be a number")),
        }
    }

    fn opt_str_list(&mut self, field: &'static str) -> Result<Vec<String>> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(self.err(field, "must be a list of non-empty strings")),
                })
                .collect(),
            Some(_) => Err(self.err(field, "must be a list of strings")),
        }
    }

    fn finish(self) -> Result<()> {
        if let Some(extra) = self.map.keys().find(|k| !self.used.contains(&k.as_str())) {
            let expected = self.used.join(", ");
            return Err(self.err(extra, format!("is not a field of this type (expected: {expected})")));
        }
        Ok(())
    }
}

fn check_header_safe(kind: CredentialKind, field: &str, s: &str) -> Result<()> {
    if s.chars().any(char::is_control) {
        return Err(Error::InvalidValue {
            kind: kind.as_str(),
            field: field.to_string(),
            reason: "contains a control character (newline, tab, ...); remove it (a trailing newline from a file?)"
                .into(),
        });
    }
    Ok(())
}

impl SecretValue {
    /// Parses a value of `kind` from a JSON object. Unknown fields are refused.
    pub fn from_json(kind: CredentialKind, json: &str) -> Result<SecretValue> {
        let parsed = ScrubbedJson(serde_json::from_str::<Value>(json).map_err(|e| Error::InvalidValue {
            kind: kind.as_str(),
            field: "(document)".into(),
            // serde_json syntax errors give only a position, never content.
            reason: format!("is not valid JSON ({}, line {} column {})", classify(&e), e.line(), e.column()),
        })?);
        let Value::Object(map) = &parsed.0 else {
            return Err(Error::InvalidValue {
                kind: kind.as_str(),
                field: "(document)".into(),
                reason: "must be a JSON object".into(),
            });
        };
        Self::from_map(kind, map)
    }

    fn from_map(kind: CredentialKind, map: &Map<String, Value>) -> Result<SecretValue> {
        let mut f = Fields { kind, map, used: Vec::new() };
        let value = match kind {
            CredentialKind::ApiKey => {
                let key = f.req_header_secret("key")?;
                let secret = f.opt_header_secret("secret")?;
                SecretValue::ApiKey(ApiKey { key, secret })
            }
            CredentialKind::Bearer | CredentialKind::OAuth2 => {
                // The standard OAuth 2 names (RFC 6749: `token_url` as most clients call the
                // token endpoint, `expires_in`, a space-separated `scope`) and our own.
                let access_token = f.opt_header_secret("access_token")?;
                let refresh_token = f.opt_header_secret("refresh_token")?;
                let (token_endpoint, url_key) = match (f.opt_str("token_endpoint")?, f.opt_str("token_url")?) {
                    (Some(_), Some(_)) => return Err(f.err("token_url", "give token_url or token_endpoint, not both")),
                    (Some(a), None) => (Some(a.to_owned()), "token_endpoint"),
                    (None, b) => (b.map(str::to_owned), "token_url"),
                };
                if let Some(url) = &token_endpoint
                    && !(url.starts_with("https://") || url.starts_with("http://"))
                {
                    return Err(f.err(url_key, "must be an http:// or https:// URL"));
                }
                let expires_at = f.expiry()?;
                let mut scopes = f.opt_str_list("scopes")?;
                if let Some(scope) = f.opt_str("scope")? {
                    scopes.extend(scope.split_whitespace().map(str::to_owned));
                }
                let client_id = f.opt_str("client_id")?.map(str::to_owned);
                let client_secret = f.opt_header_secret("client_secret")?;
                let auth_url = f.opt_str("auth_url")?.map(str::to_owned);
                if let Some(url) = &auth_url
                    && !(url.starts_with("https://") || url.starts_with("http://"))
                {
                    return Err(f.err("auth_url", "must be an http:// or https:// URL"));
                }
                let t = Token {
                    auth_url,
                    access_token: access_token.clone().unwrap_or_else(|| SecretString::from("")),
                    refresh_token,
                    token_endpoint,
                    expires_at,
                    scopes,
                    client_id,
                    client_secret,
                };
                // Without an access token, the host must be able to fetch one.
                if access_token.is_none() && !(kind == CredentialKind::OAuth2 && t.can_refresh()) {
                    return Err(f.err(
                        "access_token",
                        "is required (an oauth2 credential may leave it out when it gives token_url with a refresh_token, or client_id and client_secret)",
                    ));
                }
                if kind == CredentialKind::Bearer { SecretValue::Bearer(t) } else { SecretValue::OAuth2(t) }
            }
            CredentialKind::Basic => {
                let username = f.req_str("username")?;
                if username.contains(':') || username.chars().any(char::is_control) {
                    return Err(f.err("username", "must not contain ':' or control characters"));
                }
                let username = username.to_owned();
                let password = f.req_header_secret("password")?;
                SecretValue::Basic(Basic { username, password })
            }
            CredentialKind::Database => match f.req_str("driver")? {
                "postgres" => {
                    let host = f.req_str("host")?.to_owned();
                    let port = f.opt_port("port")?.unwrap_or(5432);
                    let database = f.req_str("database")?.to_owned();
                    let user = f.req_str("user")?.to_owned();
                    let password = f.opt_str("password")?.map(SecretString::from);
                    let mut ssl = f.opt_bool("ssl")?.unwrap_or(false);
                    let ssl_disabled = match f.opt_str("sslmode")? {
                        None => false,
                        Some("disable") if ssl => {
                            return Err(f.err("sslmode", "is \"disable\" but \"ssl\" is true; give one of them"));
                        }
                        Some("disable") => true,
                        Some("require" | "verify-full") => {
                            ssl = true;
                            false
                        }
                        Some(_) => return Err(f.err("sslmode", "must be \"require\", \"verify-full\" or \"disable\"")),
                    };
                    let allow_privileged_role = f.opt_bool("allow_privileged_role")?.unwrap_or(false);
                    SecretValue::Database(Database::Postgres(Postgres {
                        host,
                        port,
                        database,
                        user,
                        password,
                        ssl,
                        ssl_disabled,
                        allow_privileged_role,
                    }))
                }
                "sqlite" => {
                    let path = f.req_str("path")?.to_owned();
                    SecretValue::Database(Database::Sqlite { path })
                }
                _ => return Err(f.err("driver", "must be \"postgres\" or \"sqlite\"")),
            },
            CredentialKind::HmacKey => {
                let key = f.req_str("key")?;
                SecretValue::HmacKey(HmacKey { key: SecretString::from(key) })
            }
            CredentialKind::Custom => {
                let mut leaves = Vec::new();
                map.values().for_each(|v| collect_leaves(v, &mut leaves));
                let json = Zeroizing::new(serde_json::to_string(map).expect("a JSON map serializes"));
                return Ok(SecretValue::Custom(Custom { json: SecretString::from(json.as_str()), leaves }));
            }
        };
        f.finish()?;
        Ok(value)
    }

    /// A single-secret value: `api_key` → key, `bearer`/`oauth2` → access_token,
    /// `hmac_key` → key. Other kinds need a JSON object ([`SecretValue::from_json`]).
    pub fn from_single(kind: CredentialKind, secret: &str) -> Result<SecretValue> {
        let field = match kind {
            CredentialKind::ApiKey | CredentialKind::HmacKey => "key",
            CredentialKind::Bearer | CredentialKind::OAuth2 => "access_token",
            _ => {
                return Err(Error::InvalidValue {
                    kind: kind.as_str(),
                    field: "(value)".into(),
                    reason: "this type has several fields: give a JSON object (e.g. with --value-file)".into(),
                });
            }
        };
        if secret.is_empty() {
            return Err(Error::InvalidValue { kind: kind.as_str(), field: field.into(), reason: "is empty".into() });
        }
        if kind != CredentialKind::HmacKey {
            check_header_safe(kind, field, secret)?;
        }
        let s = || SecretString::from(secret);
        Ok(match kind {
            CredentialKind::ApiKey => SecretValue::ApiKey(ApiKey { key: s(), secret: None }),
            CredentialKind::HmacKey => SecretValue::HmacKey(HmacKey { key: s() }),
            CredentialKind::Bearer | CredentialKind::OAuth2 => {
                let t = Token {
                    access_token: s(),
                    refresh_token: None,
                    token_endpoint: None,
                    expires_at: None,
                    scopes: Vec::new(),
                    client_id: None,
                    client_secret: None,
                    auth_url: None,
                };
                if kind == CredentialKind::Bearer { SecretValue::Bearer(t) } else { SecretValue::OAuth2(t) }
            }
            _ => unreachable!("handled above"),
        })
    }

    /// The kind of this value.
    pub fn kind(&self) -> CredentialKind {
        match self {
            SecretValue::ApiKey(_) => CredentialKind::ApiKey,
            SecretValue::Bearer(_) => CredentialKind::Bearer,
            SecretValue::OAuth2(_) => CredentialKind::OAuth2,
            SecretValue::Basic(_) => CredentialKind::Basic,
            SecretValue::Database(_) => CredentialKind::Database,
            SecretValue::HmacKey(_) => CredentialKind::HmacKey,
            SecretValue::Custom(_) => CredentialKind::Custom,
        }
    }

    /// Every secret byte string in the value (tokens, keys, passwords, the API
    /// secret; every string of a custom object), for leak scanning. User
    /// names, hosts and other non-secret fields are not included.
    pub fn secret_fields(&self) -> Vec<&[u8]> {
        fn b(s: &SecretString) -> &[u8] {
            s.expose_secret().as_bytes()
        }
        let mut out = Vec::new();
        match self {
            SecretValue::ApiKey(a) => {
                out.push(b(&a.key));
                out.extend(a.secret.as_ref().map(b));
            }
            SecretValue::Bearer(t) | SecretValue::OAuth2(t) => {
                out.push(b(&t.access_token));
                out.extend(t.refresh_token.as_ref().map(b));
                out.extend(t.client_secret.as_ref().map(b));
            }
            SecretValue::Basic(x) => out.push(b(&x.password)),
            SecretValue::Database(Database::Postgres(p)) => out.extend(p.password.as_ref().map(b)),
            SecretValue::Database(Database::Sqlite { .. }) => {}
            SecretValue::HmacKey(h) => out.push(b(&h.key)),
            SecretValue::Custom(c) => out.extend(c.leaves.iter().map(b)),
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// Refuses a value any of whose secret fields (the ones
    /// [`SecretValue::secret_fields`] lists: key, token, password, API secret,
    /// every string of a custom object) is shorter than [`MIN_SECRET_LEN`]
    /// bytes. The leak scanner searches responses, logs and outputs for every
    /// secret field; a short one cannot be told apart from ordinary text, so it
    /// can only be matched as a whole value. The error names the field, never
    /// its content or length. The vault does not call this itself: callers
    /// that take values from people (the CLI) do, unless told to allow them.
    pub fn check_secret_length(&self) -> Result<()> {
        for (field, bytes) in self.named_secret_fields() {
            if !bytes.is_empty() && bytes.len() < MIN_SECRET_LEN {
                return Err(Error::InvalidValue {
                    kind: self.kind().as_str(),
                    field,
                    reason: format!(
                        "is shorter than {MIN_SECRET_LEN} bytes: the leak scanner cannot search free text for a secret \
                         this short without false alarms; use a longer secret, or pass --allow-short-secret to store it \
                         anyway (it will be matched only as a whole value)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// [`SecretValue::secret_fields`] with the name (or JSON path, for a custom object) of each.
    fn named_secret_fields(&self) -> Vec<(String, &[u8])> {
        fn b(s: &SecretString) -> &[u8] {
            s.expose_secret().as_bytes()
        }
        let fields: Vec<(&str, Option<&SecretString>)> = match self {
            SecretValue::ApiKey(a) => vec![("key", Some(&a.key)), ("secret", a.secret.as_ref())],
            SecretValue::Bearer(t) | SecretValue::OAuth2(t) => {
                vec![
                    ("access_token", Some(&t.access_token)),
                    ("refresh_token", t.refresh_token.as_ref()),
                    ("client_secret", t.client_secret.as_ref()),
                ]
            }
            SecretValue::Basic(x) => vec![("password", Some(&x.password))],
            SecretValue::Database(Database::Postgres(p)) => vec![("password", p.password.as_ref())],
            SecretValue::Database(Database::Sqlite { .. }) => vec![],
            SecretValue::HmacKey(h) => vec![("key", Some(&h.key))],
            SecretValue::Custom(_) => vec![],
        };
        let mut out: Vec<(String, &[u8])> =
            fields.into_iter().filter_map(|(name, s)| s.map(|s| (name.to_string(), b(s)))).collect();
        if let SecretValue::Custom(c) = self {
            // Paths in document order; the leaves are in the same order.
            let mut paths = Vec::new();
            if let Ok(v) = serde_json::from_str::<Value>(c.json.expose_secret()) {
                let v = ScrubbedJson(v);
                leaf_paths(&v.0, String::new(), &mut paths);
            }
            for (i, leaf) in c.leaves.iter().enumerate() {
                let name = paths.get(i).cloned().unwrap_or_else(|| "(a string in the object)".into());
                out.push((name, b(leaf)));
            }
        }
        out
    }

    /// The `api_key` value, if this is one.
    pub fn as_api_key(&self) -> Option<&ApiKey> {
        if let SecretValue::ApiKey(v) = self { Some(v) } else { None }
    }

    /// The token of a `bearer` or `oauth2` value.
    pub fn as_bearer(&self) -> Option<&Token> {
        match self {
            SecretValue::Bearer(t) | SecretValue::OAuth2(t) => Some(t),
            _ => None,
        }
    }

    /// The `basic` value, if this is one.
    pub fn as_basic(&self) -> Option<&Basic> {
        if let SecretValue::Basic(v) = self { Some(v) } else { None }
    }

    /// The `database` value, if this is one.
    pub fn as_database(&self) -> Option<&Database> {
        if let SecretValue::Database(v) = self { Some(v) } else { None }
    }

    /// The `hmac_key` value, if this is one.
    pub fn as_hmac_key(&self) -> Option<&HmacKey> {
        if let SecretValue::HmacKey(v) = self { Some(v) } else { None }
    }

    /// The `custom` value, if this is one.
    pub fn as_custom(&self) -> Option<&Custom> {
        if let SecretValue::Custom(v) = self { Some(v) } else { None }
    }

    /// Re-checks a value built by hand (public fields bypass parsing).
    pub(crate) fn validate(&self) -> Result<()> {
        // Round-tripping through the parser applies exactly the input rules.
        let json = self.to_json();
        let json = std::str::from_utf8(&json).expect("serde_json writes UTF-8");
        Self::from_json(self.kind(), json).map(drop)
    }

    /// The canonical JSON encoding (what gets encrypted), in a zeroizing buffer.
    pub(crate) fn to_json(&self) -> Zeroizing<Vec<u8>> {
        #[derive(Serialize)]
        struct ApiKeyOut<'a> {
            key: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            secret: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct TokenOut<'a> {
            /// Absent until the host fetched one (a client-credentials value).
            #[serde(skip_serializing_if = "str::is_empty")]
            access_token: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            refresh_token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            token_endpoint: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expires_at: Option<&'a str>,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            scopes: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            client_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_secret: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            auth_url: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct BasicOut<'a> {
            username: &'a str,
            password: &'a str,
        }
        #[derive(Serialize)]
        struct PgOut<'a> {
            driver: &'static str,
            host: &'a str,
            port: u16,
            database: &'a str,
            user: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            password: Option<&'a str>,
            ssl: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            sslmode: Option<&'static str>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            allow_privileged_role: bool,
        }
        #[derive(Serialize)]
        struct SqliteOut<'a> {
            driver: &'static str,
            path: &'a str,
        }
        #[derive(Serialize)]
        struct KeyOut<'a> {
            key: &'a str,
        }
        // Reserve generously up front so the buffer never reallocates (which
        // would leave an unzeroized copy behind).
        let estimate: usize = 256 + self.secret_fields().iter().map(|s| s.len() * 6).sum::<usize>();
        let mut out = Zeroizing::new(Vec::with_capacity(estimate));
        let w: &mut Vec<u8> = &mut out;
        let r = match self {
            SecretValue::ApiKey(a) => serde_json::to_writer(
                w,
                &ApiKeyOut { key: a.key.expose_secret(), secret: a.secret.as_ref().map(|s| s.expose_secret()) },
            ),
            SecretValue::Bearer(t) | SecretValue::OAuth2(t) => serde_json::to_writer(
                w,
                &TokenOut {
                    auth_url: t.auth_url.as_deref(),
                    client_id: t.client_id.as_deref(),
                    client_secret: t.client_secret.as_ref().map(|s| s.expose_secret()),
                    access_token: t.access_token.expose_secret(),
                    refresh_token: t.refresh_token.as_ref().map(|s| s.expose_secret()),
                    token_endpoint: t.token_endpoint.as_deref(),
                    expires_at: t.expires_at.as_deref(),
                    scopes: &t.scopes,
                },
            ),
            SecretValue::Basic(b) => {
                serde_json::to_writer(w, &BasicOut { username: &b.username, password: b.password.expose_secret() })
            }
            SecretValue::Database(Database::Postgres(p)) => serde_json::to_writer(
                w,
                &PgOut {
                    driver: "postgres",
                    host: &p.host,
                    port: p.port,
                    database: &p.database,
                    user: &p.user,
                    password: p.password.as_ref().map(|s| s.expose_secret()),
                    ssl: p.ssl,
                    sslmode: p.ssl_disabled.then_some("disable"),
                    allow_privileged_role: p.allow_privileged_role,
                },
            ),
            SecretValue::Database(Database::Sqlite { path }) => {
                serde_json::to_writer(w, &SqliteOut { driver: "sqlite", path })
            }
            SecretValue::HmacKey(h) => serde_json::to_writer(w, &KeyOut { key: h.key.expose_secret() }),
            SecretValue::Custom(c) => {
                w.extend_from_slice(c.json.expose_secret().as_bytes());
                Ok(())
            }
        };
        r.expect("serializing plain structs into a Vec cannot fail");
        out
    }
}

fn collect_leaves(v: &Value, out: &mut Vec<SecretString>) {
    match v {
        Value::String(s) if !s.is_empty() => out.push(SecretString::from(s.as_str())),
        Value::Array(a) => a.iter().for_each(|v| collect_leaves(v, out)),
        Value::Object(m) => m.values().for_each(|v| collect_leaves(v, out)),
        _ => {}
    }
}

/// The JSON paths of the strings [`collect_leaves`] collects, in the same order.
fn leaf_paths(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::String(s) if !s.is_empty() => out.push(at),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| leaf_paths(v, format!("{at}[{i}]"), out)),
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            let at = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            leaf_paths(v, at, out)
        }),
        _ => {}
    }
}

fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "unexpected end",
        serde_json::error::Category::Syntax => "syntax error",
        _ => "invalid",
    }
}

/// `at` as RFC 3339 (UTC, whole seconds).
fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}
