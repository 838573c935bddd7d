//! Who is calling: the user (tenant), environment and skills an API key fixes.

use skillbox_runtime::InvocationContext;

/// The identity every call made with one API key runs as. The HTTP layer derives it from the
/// key alone (never from the request body), so a key issued for tenant A in `dev` can only
/// run as tenant A in `dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user or tenant whose credentials calls may use.
    pub user: String,
    /// The environment whose credentials calls may use.
    pub environment: String,
    /// The skills the key may call (`None`: all).
    pub skills: Option<Vec<String>>,
    /// The key's fingerprint (never the key), recorded as the caller in audit rows.
    pub fingerprint: String,
}

impl Caller {
    /// The operator's own identity over stdio.
    pub fn local(context: &InvocationContext) -> Caller {
        Caller {
            user: context.user.clone(),
            environment: context.environment.clone(),
            skills: None,
            fingerprint: "stdio".into(),
        }
    }

    /// Whether this caller may see and call `skill`.
    pub fn may_call(&self, skill: &str) -> bool {
        self.skills.as_ref().is_none_or(|list| list.iter().any(|s| s == skill))
    }

    /// Who calls, as the audit trail records it: `apikey:` and the key's fingerprint (never
    /// the key).
    pub fn actor(&self) -> String {
        format!("apikey:{}", self.fingerprint)
    }

    /// The invocation context calls made with the key run with: its user and environment, and
    /// the key (by fingerprint) as the actor of every audit row.
    pub fn context(&self) -> InvocationContext {
        InvocationContext {
            user: self.user.clone(),
            environment: self.environment.clone(),
            purpose: String::new(),
            actor: Some(self.actor()),
        }
    }
}

/// Turns a presented API key into a [`Caller`], or refuses it. Implemented over the vault's
/// API keys by the CLI; refusals carry no detail (the HTTP layer answers 401).
pub trait KeyCheck: Send + Sync + 'static {
    /// The caller `key` identifies, or `None` for an unknown, expired or revoked key.
    fn check(&self, key: &str) -> Option<Caller>;
}

/// API keys checked against the vault ([`skillbox_runtime::vault::Vault::apikey_verify`]):
/// the key's owner, environment and skills become the caller. Every refusal is `None` (the
/// server answers 401 with no detail); one that is not a plain refusal (a forged key row, a
/// vault error) is logged for the operator as well.
#[derive(Debug)]
pub struct VaultKeys(std::sync::Arc<skillbox_runtime::vault::Vault>);

impl VaultKeys {
    /// Checks keys against `vault`.
    pub fn new(vault: std::sync::Arc<skillbox_runtime::vault::Vault>) -> VaultKeys {
        VaultKeys(vault)
    }
}

impl KeyCheck for VaultKeys {
    fn check(&self, key: &str) -> Option<Caller> {
        let info = match self.0.apikey_verify(key) {
            Ok(info) => info,
            Err(skillbox_runtime::vault::Error::ApiKeyRefused) => return None,
            Err(other) => {
                tracing::error!("API key check failed: {other}");
                return None;
            }
        };
        Some(Caller {
            user: info.owner,
            environment: info.environment.as_str().to_owned(),
            skills: info.skills,
            fingerprint: info.fingerprint,
        })
    }
}
