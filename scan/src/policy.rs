//! What the host does with what the scanner finds, per direction.
//!
//! [`Scanner`] bundles one invocation's secrets, the foreign-token rules and the policy for
//! them. Text coming *in* to a guest (a response) has raw hits of our secrets cut out and is
//! blocked when a hit survives in a decoded view; text going *out* of the guest (a request, a
//! log line, the skill's result) must hold no secret in any view at all (the caller trips the
//! wire). Foreign tokens are redacted, blocked or only reported, as the policy says.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use crate::rules::RuleSet;
use crate::{Hit, Redactor, ScanError, ViewLimits};

/// What to do with a foreign token (a credential that is not ours, found by a rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForeignAction {
    /// Replace it with `[REDACTED:<rule>]` (the default).
    #[default]
    Redact,
    /// Refuse the whole text.
    Block,
    /// Leave it, but report it (audit row, log).
    Warn,
}

impl ForeignAction {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ForeignAction::Redact => "redact",
            ForeignAction::Block => "block",
            ForeignAction::Warn => "warn",
        }
    }
}

impl std::str::FromStr for ForeignAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redact" => Ok(ForeignAction::Redact),
            "block" => Ok(ForeignAction::Block),
            "warn" => Ok(ForeignAction::Warn),
            other => Err(format!("`{other}` is not a foreign-token action: use redact, block or warn")),
        }
    }
}

/// Why text was refused.
#[derive(Debug)]
pub enum Blocked {
    /// One of our secrets survives in a decoded view (or, outbound, in any view).
    Secret(Hit),
    /// A foreign token under the `block` action; holds the rule id.
    Foreign(Arc<str>),
    /// The text could not be examined within the limits.
    Unscannable(ScanError),
}

/// Text cleared to pass, and the foreign tokens seen in it.
#[derive(Debug)]
pub struct Cleared<'a> {
    /// The text, with raw hits and (under `redact`) foreign tokens replaced.
    pub bytes: Cow<'a, [u8]>,
    /// The rule ids of the foreign tokens found (redacted or, under `warn`, left).
    pub foreign: Vec<Arc<str>>,
}

/// One invocation's secrets plus the foreign-token policy.
#[derive(Debug, Clone)]
pub struct Scanner {
    /// The secrets the invocation has opened.
    pub secrets: Redactor,
    /// The foreign-token rules; empty to look for none.
    pub rules: RuleSet,
    /// What to do with a foreign token.
    pub foreign: ForeignAction,
    /// How far the decoded views go.
    pub limits: ViewLimits,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::secrets(Redactor::empty())
    }
}

impl Scanner {
    /// A scanner for `secrets` alone (no foreign-token rules).
    pub fn secrets(secrets: Redactor) -> Scanner {
        Scanner { secrets, rules: RuleSet::empty(), foreign: ForeignAction::Redact, limits: ViewLimits::default() }
    }

    /// Text coming in to the guest: raw hits cut out, then every decoded view searched (a hit
    /// there blocks), then foreign tokens handled by policy.
    pub fn inbound<'a>(&self, bytes: &'a [u8]) -> Result<Cleared<'a>, Blocked> {
        let redacted = self.secrets.redact(bytes);
        match self.secrets.scan(&redacted, &self.limits) {
            Ok(None) => {}
            Ok(Some(hit)) => return Err(Blocked::Secret(hit)),
            Err(e) => return Err(Blocked::Unscannable(e)),
        }
        self.foreign(redacted)
    }

    /// Text going out of the guest: the first hit of any secret in any view (the caller trips
    /// the wire), or an error when it cannot be examined (which the caller treats as a hit).
    pub fn outbound(&self, bytes: &[u8]) -> Result<Option<Hit>, ScanError> {
        self.secrets.scan(bytes, &self.limits)
    }

    /// Foreign tokens in `bytes`, handled by policy.
    pub fn foreign<'a>(&self, bytes: Cow<'a, [u8]>) -> Result<Cleared<'a>, Blocked> {
        match self.foreign {
            ForeignAction::Redact => {
                let (out, findings) = self.rules.redact(&bytes);
                let foreign: Vec<Arc<str>> = findings.into_iter().map(|f| f.rule).collect();
                if foreign.is_empty() {
                    return Ok(Cleared { bytes, foreign });
                }
                Ok(Cleared { bytes: Cow::Owned(out.into_owned()), foreign })
            }
            ForeignAction::Block => match self.rules.find(&bytes).into_iter().next() {
                Some(finding) => Err(Blocked::Foreign(finding.rule)),
                None => Ok(Cleared { bytes, foreign: Vec::new() }),
            },
            ForeignAction::Warn => {
                let foreign = self.rules.find(&bytes).into_iter().map(|f| f.rule).collect();
                Ok(Cleared { bytes, foreign })
            }
        }
    }
}
