//! `skill.toml`: what a skill is, where its component lives, and its limits.
//!
//! Parsing is strict on purpose (as Spin's `validate_all_keys_used`): an
//! unknown key is a typo the author wants to hear about, not something to
//! skip, so every table is `deny_unknown_fields` and every value that has a
//! unit is parsed here, with an error that names the key and a valid example.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use skillbox_egress::{ForeignAction, HostPattern, Policy, ResponseScope};
use skillbox_host_api::{CredentialDecl, DeclaredLimits, HttpAuth, SkillPolicy};
use skillbox_vault::CredentialKind;

use crate::error::{Error, Result};
use crate::schema::{Schema, SchemaSection};

/// The file name the CLI looks for when given a directory.
pub const MANIFEST_FILE: &str = "skill.toml";

/// Memory limit used when `[limits] memory` is absent.
pub const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;
/// Time limit used when `[limits] timeout` is absent.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest memory limit a manifest may ask for: a 32-bit linear memory's size.
pub const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;
/// Smallest memory limit that lets a Rust guest start at all.
pub const MIN_MEMORY: u64 = 1024 * 1024;
/// Longest time limit a manifest may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// A parsed and checked `skill.toml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `[skill]` table.
    pub skill: SkillSection,
    /// The `[limits]` table; defaults apply when it is absent.
    #[serde(default)]
    pub limits: Limits,
    /// The optional `[build]` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSection>,
    /// The `[[credentials]]` the skill may open; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialEntry>,
    /// The `[network]` table: hosts reachable without credentials.
    #[serde(default)]
    pub network: NetworkSection,
    /// The `[sql]` table.
    #[serde(default)]
    pub sql: SqlSection,
    /// The `[scan]` table: what to do with foreign tokens in this skill's traffic.
    #[serde(default)]
    pub scan: ScanSection,
    /// The `[input]` table: the JSON Schema inputs must match (default: any object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<SchemaSection>,
    /// The `[output]` table: the JSON Schema of the skill's result, for callers (not enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<SchemaSection>,
    /// Where the manifest was read from; relative paths resolve against its directory.
    #[serde(skip)]
    pub path: PathBuf,
}

/// The `[skill]` table.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SkillSection {
    /// The skill's name: lowercase letters, digits and `-`; grants refer to it.
    #[serde(deserialize_with = "de_name")]
    pub name: String,
    /// The skill's version, as semver.
    #[serde(deserialize_with = "de_version")]
    pub version: semver::Version,
    /// One line saying what the skill does.
    #[serde(default)]
    pub description: String,
    /// Path of the `.wasm` component, relative to the manifest.
    pub component: PathBuf,
}

/// The `[limits]` table.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most linear memory the guest may grow to, in bytes (`"64MiB"` in TOML).
    #[serde(default = "default_memory", deserialize_with = "de_memory")]
    pub memory: u64,
    /// Wall-clock time one invocation may take (`"5s"` in TOML).
    #[serde(default = "default_timeout", deserialize_with = "de_timeout", serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Optional instruction budget (wasmtime fuel units) per invocation.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_fuel")]
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory: DEFAULT_MEMORY, timeout: DEFAULT_TIMEOUT, fuel: None }
    }
}

/// The `[build]` table: how to produce the component, like `spin build`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// A shell command run in the manifest's directory.
    pub command: String,
}

/// One `[[credentials]]` entry: a credential the skill may open by `name`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    /// The name the skill opens; grants refer to it.
    pub name: String,
    /// `api_key`, `bearer`, `oauth2`, `basic`, `database`, `hmac_key` or `custom`.
    pub kind: String,
    /// How HTTP applies it: `"bearer"`, `"basic"`, `{ header = { name, prefix } }`
    /// or `{ query = { param } }`. Defaults to `bearer` for bearer/oauth2 and
    /// `basic` for basic credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAuth>,
    /// Hosts it may be sent to (`api.github.com`, `*.example.com`, `127.0.0.1:8080`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Why the skill needs it; shown to operators when they grant or approve.
    #[serde(default)]
    pub purpose: String,
    /// What of a response to a request made with it the skill gets: `full` (default),
    /// `headers` or `status`. For write-only uses (post a message, create a charge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Inject it into every standard `wasi:http` request to its hosts, with no handle: for
    /// skills written against `wasi:http/outgoing-handler` rather than our `http` interface.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transparent: bool,
}

/// The `[scan]` table.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSection {
    /// What to do with a foreign token (a known token format that is not one of the skill's
    /// credentials) in responses, logs, stdio and the result: `redact` (the operator's
    /// default unless set), `block` or `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign: Option<String>,
}

/// The `[network]` table.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Hosts the skill may call without a credential.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// The `[sql]` table.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSection {
    /// Whether SQL may change data (`sql.execute`, writing queries). Off by default.
    #[serde(default)]
    pub write: bool,
}

impl Manifest {
    /// The manifest's foreign-token action, if it sets one (checked at parse time).
    pub fn foreign_action(&self) -> Option<ForeignAction> {
        self.scan.foreign.as_deref().and_then(|f| f.parse().ok())
    }

    /// Reads the manifest at `path`, which is a `skill.toml` or a directory holding one.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = manifest_path(path.as_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Manifest {
            path: path.clone(),
            message: format!("cannot read it: {e} (pass a skill directory or its skill.toml)"),
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses manifest text; `path` is where it came from (for errors and relative paths).
    pub fn parse(text: &str, path: PathBuf) -> Result<Manifest> {
        let mut manifest: Manifest = toml::from_str(text)
            .map_err(|e| Error::Manifest { path: path.clone(), message: e.to_string().trim_end().to_owned() })?;
        manifest.path = path;
        manifest.policy().map_err(|message| Error::Manifest { path: manifest.path.clone(), message })?;
        Ok(manifest)
    }

    /// What the manifest allows the skill, checked: kinds exist, hosts
    /// parse, names are unique, and HTTP styles fit their kinds.
    pub fn policy(&self) -> std::result::Result<SkillPolicy, String> {
        let mut credentials: Vec<CredentialDecl> = Vec::new();
        for entry in &self.credentials {
            let decl = entry.check()?;
            if credentials.iter().any(|c| c.name == decl.name) {
                return Err(format!("[[credentials]] name {:?} appears twice; each name must be unique", decl.name));
            }
            credentials.push(decl);
        }
        let allow = parse_hosts(&self.network.allow, "network.allow")?;
        if let Some(foreign) = &self.scan.foreign {
            foreign.parse::<ForeignAction>().map_err(|e| format!("[scan] foreign: {e}"))?;
        }
        let limits = DeclaredLimits {
            memory: self.limits.memory,
            timeout_ms: u64::try_from(self.limits.timeout.as_millis()).unwrap_or(u64::MAX),
            fuel: self.limits.fuel,
        };
        Ok(SkillPolicy { credentials, network: Policy { network_allow: allow }, sql_write: self.sql.write, limits })
    }

    /// The input schema: `[input] schema`, loaded and checked, or any JSON object.
    pub fn input_schema(&self) -> Result<Schema> {
        match &self.input {
            Some(section) => Schema::load(section, self.dir(), &self.path, "input"),
            None => Ok(Schema::any_object()),
        }
    }

    /// The output schema, if `[output] schema` gives one.
    pub fn output_schema(&self) -> Result<Option<Schema>> {
        self.output.as_ref().map(|section| Schema::load(section, self.dir(), &self.path, "output")).transpose()
    }

    /// The directory the manifest lives in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The component's path, resolved against the manifest's directory.
    pub fn component_path(&self) -> PathBuf {
        self.dir().join(&self.skill.component)
    }
}

/// Turns "a directory or a skill.toml" into the manifest file's path.
pub fn manifest_path(path: &Path) -> PathBuf {
    if path.is_dir() { path.join(MANIFEST_FILE) } else { path.to_owned() }
}

impl CredentialEntry {
    /// Validates this entry and turns it into the host's declaration.
    fn check(&self) -> std::result::Result<CredentialDecl, String> {
        let name = &self.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!(
                "[[credentials]] name {name:?} is not valid: use letters, digits, '-' and '_' (e.g. \"github\")"
            ));
        }
        let kind: CredentialKind = self.kind.parse().map_err(|_| {
            format!(
                "[[credentials]] {name}: kind {:?} is not known; use one of api_key, bearer, oauth2, basic, database, hmac_key, custom",
                self.kind
            )
        })?;
        let http = match (&self.http, kind) {
            (Some(style), CredentialKind::Database | CredentialKind::HmacKey | CredentialKind::Custom) => {
                return Err(format!(
                    "[[credentials]] {name}: a {} credential cannot be sent over HTTP; remove `http = {style:?}`",
                    kind.as_str()
                ));
            }
            (Some(HttpAuth::Header { name: header, .. }), _) if header.trim().is_empty() => {
                return Err(format!("[[credentials]] {name}: http.header.name must not be empty"));
            }
            (Some(style), _) => Some(style.clone()),
            (None, CredentialKind::Bearer | CredentialKind::OAuth2) => Some(HttpAuth::Bearer),
            (None, CredentialKind::Basic) => Some(HttpAuth::Basic),
            (None, CredentialKind::ApiKey) if !self.hosts.is_empty() => {
                return Err(format!(
                    "[[credentials]] {name}: say how to send the API key, e.g. `http = {{ header = {{ name = \"X-Api-Key\" }} }}`, `http = {{ query = {{ param = \"key\" }} }}` or `http = \"basic\"`"
                ));
            }
            (None, _) => None,
        };
        if http.is_some() && self.hosts.is_empty() {
            return Err(format!(
                "[[credentials]] {name}: list the hosts it may be sent to, e.g. `hosts = [\"api.example.com\"]`"
            ));
        }
        let hosts = parse_hosts(&self.hosts, &format!("[[credentials]] {name}: hosts"))?;
        let response = match self.response.as_deref() {
            None | Some("full") => ResponseScope::Full,
            Some("headers") => ResponseScope::Headers,
            Some("status") => ResponseScope::Status,
            Some(other) => {
                return Err(format!(
                    "[[credentials]] {name}: response {other:?} is not known; use \"full\", \"headers\" or \"status\""
                ));
            }
        };
        if self.transparent && http.is_none() {
            return Err(format!(
                "[[credentials]] {name}: `transparent = true` injects it into wasi:http requests, but a {} credential is not sent over HTTP; remove `transparent` or use an HTTP kind (bearer, oauth2, basic, api_key)",
                kind.as_str()
            ));
        }
        Ok(CredentialDecl {
            name: name.clone(),
            kind,
            http,
            hosts,
            purpose: self.purpose.clone(),
            response,
            transparent: self.transparent,
        })
    }
}

fn parse_hosts(hosts: &[String], key: &str) -> std::result::Result<Vec<HostPattern>, String> {
    hosts.iter().map(|h| HostPattern::parse(h).map_err(|e| format!("{key}: {e}"))).collect()
}

fn default_memory() -> u64 {
    DEFAULT_MEMORY
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn de_name<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let name = String::deserialize(d)?;
    check_name(&name).map_err(serde::de::Error::custom)?;
    Ok(name)
}

/// Checks a skill name: 1-64 of `a-z`, `0-9`, `-`, starting with a letter.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "skill.name {name:?} is not valid: use 1-64 lowercase letters, digits and '-', starting with a letter (e.g. \"github-issues\")"
        ))
    }
}

fn de_version<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<semver::Version, D::Error> {
    let text = String::deserialize(d)?;
    semver::Version::parse(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "skill.version {text:?} is not a semantic version ({e}); write it like \"1.2.3\""
        ))
    })
}

fn de_memory<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    parse_memory(&text).map_err(serde::de::Error::custom)
}

/// Parses a memory size such as `"64MiB"` and checks it is within bounds.
pub fn parse_memory(text: &str) -> std::result::Result<u64, String> {
    parse_memory_named("limits.memory", text)
}

/// Like [`parse_memory`], naming `key` (`--max-memory`, `[limits] max_memory`) in errors.
pub fn parse_memory_named(key: &str, text: &str) -> std::result::Result<u64, String> {
    let bytes = text
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|e| format!("{key} {text:?} is not a size ({e}); write it like \"64MiB\" or \"512KiB\""))?
        .as_u64();
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&bytes) {
        return Err(format!("{key} {text:?} must be between 1MiB and 4GiB"));
    }
    Ok(bytes)
}

fn de_timeout<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_timeout(&text).map_err(serde::de::Error::custom)
}

/// Parses a duration such as `"5s"` or `"250ms"` and checks it is within bounds.
pub fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    parse_timeout_named("limits.timeout", text)
}

/// Like [`parse_timeout`], naming `key` (`--max-timeout`, `[limits] max_timeout`) in errors.
pub fn parse_timeout_named(key: &str, text: &str) -> std::result::Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{key} {text:?} is not a duration ({e}); write it like \"5s\" or \"250ms\""))?;
    if duration.is_zero() || duration > MAX_TIMEOUT {
        return Err(format!("{key} {text:?} must be more than 0 and at most 1h"));
    }
    Ok(duration)
}

fn de_fuel<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    let fuel = u64::deserialize(d)?;
    if fuel == 0 {
        return Err(serde::de::Error::custom("limits.fuel must be more than 0 (or leave it out for no fuel limit)"));
    }
    Ok(Some(fuel))
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(text, PathBuf::from("/skills/x/skill.toml"))
    }

    const MINIMAL: &str = r#"
        [skill]
        name = "hello"
        version = "0.1.0"
        component = "hello.wasm"
    "#;

    #[test]
    fn minimal_manifest_gets_default_limits() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.limits.memory, DEFAULT_MEMORY);
        assert_eq!(m.limits.timeout, DEFAULT_TIMEOUT);
        assert_eq!(m.limits.fuel, None);
        assert_eq!(m.component_path(), PathBuf::from("/skills/x/hello.wasm"));
    }

    #[test]
    fn limits_parse_units() {
        let m = parse(&format!("{MINIMAL}\n[limits]\nmemory = \"32MiB\"\ntimeout = \"250ms\"\nfuel = 1000\n")).unwrap();
        assert_eq!(m.limits.memory, 32 * 1024 * 1024);
        assert_eq!(m.limits.timeout, Duration::from_millis(250));
        assert_eq!(m.limits.fuel, Some(1000));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{MINIMAL}\n[limits]\nmemroy = \"32MiB\"\n")).unwrap_err().to_string();
        assert!(err.contains("memroy"), "{err}");
        assert!(err.contains("memory"), "the valid keys are listed: {err}");
    }

    #[test]
    fn bad_units_are_explained() {
        let err = parse(&format!("{MINIMAL}\n[limits]\nmemory = \"lots\"\n")).unwrap_err().to_string();
        assert!(err.contains("limits.memory") && err.contains("64MiB"), "{err}");
        let err = parse(&format!("{MINIMAL}\n[limits]\ntimeout = \"5 parsecs\"\n")).unwrap_err().to_string();
        assert!(err.contains("limits.timeout") && err.contains("5s"), "{err}");
        let err = parse(&format!("{MINIMAL}\n[limits]\nmemory = \"8GiB\"\n")).unwrap_err().to_string();
        assert!(err.contains("between 1MiB and 4GiB"), "{err}");
    }

    #[test]
    fn bad_version_and_name_are_explained() {
        let err = parse(&MINIMAL.replace("0.1.0", "one")).unwrap_err().to_string();
        assert!(err.contains("skill.version") && err.contains("1.2.3"), "{err}");
        let err = parse(&MINIMAL.replace("\"hello\"", "\"Hello World\"")).unwrap_err().to_string();
        assert!(err.contains("skill.name"), "{err}");
    }

    #[test]
    fn credentials_parse_with_http_styles() {
        let m = parse(&format!(
            "{MINIMAL}\n[[credentials]]\nname = \"github\"\nkind = \"bearer\"\nhosts = [\"api.github.com\"]\npurpose = \"read issues\"\n\
             [[credentials]]\nname = \"stripe\"\nkind = \"api_key\"\nhttp = \"basic\"\nhosts = [\"api.stripe.com\"]\n\
             [[credentials]]\nname = \"maps\"\nkind = \"api_key\"\nhttp = {{ query = {{ param = \"key\" }} }}\nhosts = [\"maps.example.com\"]\n\
             [[credentials]]\nname = \"db\"\nkind = \"database\"\n[network]\nallow = [\"example.com\"]\n[sql]\nwrite = true\n"
        ))
        .unwrap();
        let policy = m.policy().unwrap();
        assert_eq!(policy.credentials.len(), 4);
        assert_eq!(policy.credential("github").unwrap().http, Some(HttpAuth::Bearer));
        assert_eq!(policy.credential("stripe").unwrap().http, Some(HttpAuth::Basic));
        assert_eq!(policy.credential("maps").unwrap().http, Some(HttpAuth::Query { param: "key".into() }));
        assert_eq!(policy.credential("db").unwrap().http, None);
        assert!(policy.sql_write);
        assert_eq!(policy.network.network_allow.len(), 1);
    }

    #[test]
    fn credential_mistakes_are_explained() {
        let cases = [
            ("name = \"a\"\nkind = \"token\"", "kind \"token\" is not known"),
            ("name = \"a\"\nkind = \"bearer\"", "list the hosts"),
            ("name = \"a\"\nkind = \"api_key\"\nhosts = [\"x.com\"]", "say how to send the API key"),
            ("name = \"a\"\nkind = \"hmac_key\"\nhttp = \"bearer\"", "cannot be sent over HTTP"),
            ("name = \"a\"\nkind = \"bearer\"\nhosts = [\"https://x.com/path\"]", "hosts"),
            ("name = \"a\"\nkind = \"bearer\"\nhosts = [\"x.com\"]\ncolour = 1", "colour"),
        ];
        for (entry, expected) in cases {
            let err = parse(&format!("{MINIMAL}\n[[credentials]]\n{entry}\n")).unwrap_err().to_string();
            assert!(err.contains(expected), "{entry:?}: {err}");
        }
        let twice = "[[credentials]]\nname = \"a\"\nkind = \"database\"\n";
        let err = parse(&format!("{MINIMAL}\n{twice}{twice}")).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
    }

    #[test]
    fn missing_component_key_is_named() {
        let err = parse("[skill]\nname = \"a\"\nversion = \"1.0.0\"\n").unwrap_err().to_string();
        assert!(err.contains("component"), "{err}");
    }
}
