//! Approval on first use: who decides when a skill asks for a credential nobody granted.
//!
//! The runtime asks an [`Approver`] only for credentials the manifest
//! declares and the vault holds but no grant covers. The CLI asks the person
//! at the terminal; without a terminal it denies; embedders plug in their
//! own (a chat prompt, a policy engine).

/// What an approver decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Allow for this invocation only.
    Once,
    /// Allow now and record a grant, so later runs need no approval.
    Always,
    /// Refuse.
    Deny,
}

/// The question put to an approver. Holds no secret.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    /// The skill asking (manifest name).
    pub skill: String,
    /// SHA-256 of its component.
    pub skill_digest: String,
    /// The credential name the skill declared and opened.
    pub credential: String,
    /// The declared kind (`bearer`, `hmac_key`, ...).
    pub kind: String,
    /// Hosts the credential would be sent to (empty for signing and SQL).
    pub hosts: Vec<String>,
    /// The manifest's stated purpose for the credential.
    pub purpose: String,
    /// The user the skill runs for.
    pub user: String,
    /// The environment of the run.
    pub environment: String,
}

/// Decides whether an ungranted credential may be used.
pub trait Approver: Send + Sync + std::fmt::Debug {
    /// Decides `request`. May block (for example on a prompt): the runtime
    /// calls it from a blocking-friendly thread.
    fn approve(&self, request: &ApprovalRequest) -> Approval;
}

/// Denies everything: the default, and what the CLI uses without a terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl Approver for DenyAll {
    fn approve(&self, _request: &ApprovalRequest) -> Approval {
        Approval::Deny
    }
}
