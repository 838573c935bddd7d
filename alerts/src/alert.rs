//! What an alert is: a kind, a severity, what it concerns, a message and structured detail.
//!
//! **An alert never carries a secret value.** Nothing here takes a secret type
//! (`SecretValue`, keys, tokens): only names (skill, credential, user, host), counts and
//! reasons that were already fit for the audit log. Whoever raises an alert must keep it so;
//! the host side builds them from audit events, whose messages are already redacted.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    /// A skill tried to send, log or return a secret, and its invocation was ended.
    Tripwire,
    /// A skill's grants were suspended after repeated tripwires.
    Suspension,
    /// Many denials for one skill or one user within a short window.
    DenialBurst,
    /// A credential was used by a skill, a host or a user it had never been used by before.
    FirstUse,
    /// The host could not refresh an OAuth 2 access token.
    RefreshFailed,
    /// An OAuth 2 credential needs the operator to log in again (`invalid_grant`).
    NeedsReauth,
    /// A credential's rotation is due (or overdue) within the warning window.
    RotationDue,
    /// A credential expires within the warning window.
    ExpiryDue,
    /// A credential was declared compromised.
    Compromise,
    /// A test alert (`skillbox alerts test`): checks the sinks, means nothing else.
    Test,
}

impl AlertKind {
    /// Every kind, in order.
    pub const ALL: &'static [AlertKind] = &[
        AlertKind::Tripwire,
        AlertKind::Suspension,
        AlertKind::DenialBurst,
        AlertKind::FirstUse,
        AlertKind::RefreshFailed,
        AlertKind::NeedsReauth,
        AlertKind::RotationDue,
        AlertKind::ExpiryDue,
        AlertKind::Compromise,
        AlertKind::Test,
    ];

    /// The name in JSON, logs and audit rows (`denial-burst`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Tripwire => "tripwire",
            AlertKind::Suspension => "suspension",
            AlertKind::DenialBurst => "denial-burst",
            AlertKind::FirstUse => "first-use",
            AlertKind::RefreshFailed => "refresh-failed",
            AlertKind::NeedsReauth => "needs-reauth",
            AlertKind::RotationDue => "rotation-due",
            AlertKind::ExpiryDue => "expiry-due",
            AlertKind::Compromise => "compromise",
            AlertKind::Test => "test",
        }
    }

    /// The severity this kind is raised with unless the raiser says otherwise.
    pub fn default_severity(self) -> Severity {
        match self {
            AlertKind::Tripwire | AlertKind::Suspension | AlertKind::Compromise => Severity::Critical,
            AlertKind::DenialBurst | AlertKind::RefreshFailed | AlertKind::NeedsReauth | AlertKind::ExpiryDue => {
                Severity::Warning
            }
            AlertKind::FirstUse | AlertKind::RotationDue | AlertKind::Test => Severity::Info,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for AlertKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AlertKind::ALL.iter().copied().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown alert kind `{s}`: expected one of {}", names.join(", "))
        })
    }
}

impl Serialize for AlertKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How urgent an alert is. Ordered: `info` < `warning` < `critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Severity {
    /// Worth knowing (a first use, a rotation coming up).
    #[default]
    Info,
    /// Worth looking at soon (a burst of denials, a failing refresh).
    Warning,
    /// Act now (a tripwire, a suspension, a compromise).
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!("unknown severity `{s}`: expected info, warning or critical")),
        }
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What an alert concerns: whichever of these apply. Names only, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// The skill (manifest name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    /// The credential's name (as stored in the vault, or as the skill declares it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The user (owner namespace) the skill ran for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The environment (`dev`, `staging`, `production`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A host the credential was sent to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Subject {
    /// A subject naming only a skill.
    pub fn skill(skill: impl Into<String>) -> Subject {
        Subject { skill: Some(skill.into()), ..Subject::default() }
    }

    /// A subject naming only a credential.
    pub fn credential(credential: impl Into<String>) -> Subject {
        Subject { credential: Some(credential.into()), ..Subject::default() }
    }

    /// `skill=a credential=b ...` for log lines.
    pub fn describe(&self) -> String {
        let parts = [
            ("skill", &self.skill),
            ("credential", &self.credential),
            ("user", &self.user),
            ("environment", &self.environment),
            ("host", &self.host),
        ];
        let text: Vec<String> = parts.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect();
        text.join(" ")
    }
}

/// One alert. Serialised as the JSON a webhook receives and a command reads on stdin:
///
/// ```json
/// {"id": "…32 hex…", "kind": "tripwire", "severity": "critical",
///  "subject": {"skill": "exfiltrate", "credential": "token", "user": "default"},
///  "message": "…", "detail": {…}, "at": "2026-11-24T04:24:58Z"}
/// ```
///
/// Never put a secret value in any field (see the [module docs](self)).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Random, unique per alert: receivers use it to drop a retried delivery they already have.
    pub id: String,
    /// What happened.
    pub kind: AlertKind,
    /// How urgent it is.
    pub severity: Severity,
    /// What it concerns.
    pub subject: Subject,
    /// One line for people.
    pub message: String,
    /// Structured facts (counts, channel, grants suspended, ...); never a secret.
    pub detail: serde_json::Value,
    /// When it was raised.
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
}

impl Alert {
    /// A new alert of `kind` (at its default severity, raised now, empty detail).
    pub fn new(kind: AlertKind, subject: Subject, message: impl Into<String>) -> Alert {
        use rand::RngCore;
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        Alert {
            id: hex::encode(id),
            kind,
            severity: kind.default_severity(),
            subject,
            message: message.into(),
            detail: serde_json::Value::Object(Default::default()),
            at: SystemTime::now(),
        }
    }

    /// The same alert with `severity`.
    pub fn severity(mut self, severity: Severity) -> Alert {
        self.severity = severity;
        self
    }

    /// The same alert with `detail`.
    pub fn detail(mut self, detail: serde_json::Value) -> Alert {
        self.detail = detail;
        self
    }

    /// The JSON text sinks receive.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_serialise_kebab_case() {
        for kind in AlertKind::ALL {
            assert_eq!(kind.as_str().parse::<AlertKind>().unwrap(), *kind);
        }
        let alert = Alert::new(AlertKind::DenialBurst, Subject::skill("s"), "m");
        let json: serde_json::Value = serde_json::from_str(&alert.to_json()).unwrap();
        assert_eq!(json["kind"], "denial-burst");
        assert_eq!(json["severity"], "warning");
        assert_eq!(json["subject"], serde_json::json!({ "skill": "s" }));
        assert_eq!(json["id"].as_str().unwrap().len(), 32);
        assert!(json["at"].as_str().unwrap().ends_with('Z'));
        assert!("nope".parse::<AlertKind>().unwrap_err().contains("first-use"));
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    }
}
