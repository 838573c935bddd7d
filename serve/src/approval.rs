//! Approval on first use over MCP: an ungranted credential is put to the client as a form
//! (allow once / always / deny), when the client says it can show one.
//!
//! The form shows the skill, its component digest, the credential, where it would be sent and
//! why — never a secret (the MCP spec forbids asking for secrets in forms, and there is
//! nothing secret to show). The answer goes through the same [`Approver`] path, and the same
//! audit rows, as the terminal prompt. A client without form elicitation, a declined or
//! dismissed form, or one not answered in time is a denial, whose message names the
//! `skillbox grant` command.

use std::time::Duration;

use rmcp::Peer;
use rmcp::model::{ElicitRequestParams, ElicitationAction, ElicitationSchema, EnumSchema};
use rmcp::service::{ElicitationMode, RoleServer};
use skillbox_runtime::display::escape;
use skillbox_runtime::{Approval, ApprovalRequest, Approver};

/// How long a form waits for the human.
const ANSWER_WITHIN: Duration = Duration::from_secs(300);

/// The form: one required choice, `once`, `always` or `deny`.
fn form() -> ElicitationSchema {
    let choice = EnumSchema::builder(vec!["once".into(), "always".into(), "deny".into()])
        .enum_titles(vec![
            "Allow once (this call only)".into(),
            "Allow always (grant it, pinned to this component and policy)".into(),
            "Deny".into(),
        ])
        .expect("one title for each of the three values")
        .title("Decision")
        .build();
    ElicitationSchema::builder().required_enum_schema("decision", choice).build_unchecked()
}

/// Asks the MCP client that made the call.
#[derive(Debug)]
pub struct ElicitApprover {
    peer: Peer<RoleServer>,
    runtime: tokio::runtime::Handle,
}

impl ElicitApprover {
    /// An approver for calls from `peer`, if it supports form elicitation.
    pub fn for_peer(peer: &Peer<RoleServer>) -> Option<ElicitApprover> {
        peer.supported_elicitation_modes()
            .contains(&ElicitationMode::Form)
            .then(|| ElicitApprover { peer: peer.clone(), runtime: tokio::runtime::Handle::current() })
    }
}

/// The question, as the client shows it.
fn message(request: &ApprovalRequest) -> String {
    let hosts = if request.hosts.is_empty() {
        "no network hosts".to_owned()
    } else {
        request.hosts.iter().map(|h| escape(h).into_owned()).collect::<Vec<_>>().join(", ")
    };
    let mut text = format!(
        "skillbox: skill `{}` (component sha256 {}…) asks to use the {} credential `{}` of user `{}` in {}. \
         It would be sent only to: {hosts}.",
        escape(&request.skill),
        &request.skill_digest[..request.skill_digest.len().min(12)],
        escape(&request.kind),
        escape(&request.credential),
        escape(&request.user),
        escape(&request.environment),
    );
    if !request.purpose.is_empty() {
        text += &format!(" Purpose: {}.", escape(&request.purpose));
    }
    text + " Allow it once (this call), always (a grant pinned to this component and policy), or deny?"
}

impl Approver for ElicitApprover {
    /// Runs on a blocking thread (the runtime calls approvers there), so it may wait here.
    fn approve(&self, request: &ApprovalRequest) -> Approval {
        let params = ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message(request),
            requested_schema: form(),
        };
        let asked = self.runtime.block_on(self.peer.create_elicitation_with_timeout(params, Some(ANSWER_WITHIN)));
        let decision = match asked {
            Ok(answer) if matches!(answer.action, ElicitationAction::Accept) => {
                answer.content.as_ref().and_then(|c| c.get("decision")).and_then(|d| d.as_str()).map(str::to_owned)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::info!(skill = %request.skill, credential = %request.credential, "approval not given: {e}");
                None
            }
        };
        match decision.as_deref() {
            Some("once") => Approval::Once,
            Some("always") => Approval::Always,
            _ => Approval::Deny,
        }
    }
}
