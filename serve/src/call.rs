//! One call of a tool, as one caller: the part MCP and REST share. Traced in a span naming
//! the skill, the user and the caller's key fingerprint, timed, counted in the metrics.

use std::sync::Arc;

use serde_json::Value;
use skillbox_runtime::{Approver, Error as RunError, InvocationContext, Output, Tool};
use tracing::Instrument;

use crate::caller::Caller;
use crate::metrics::Metrics;

/// Runs `tool` with `input` as `caller` (in `context`: the caller's, or the server's own over
/// stdio), asking `approver` (if any) about ungranted credentials, and records the call in
/// `stats` (if any).
pub(crate) async fn run(
    tool: &Tool,
    input: &Value,
    caller: &Caller,
    context: &InvocationContext,
    approver: Option<Arc<dyn Approver>>,
    stats: Option<&Metrics>,
) -> Result<Output, RunError> {
    let span = tracing::info_span!("call", skill = %tool.name, user = %caller.user, caller = %caller.fingerprint);
    async {
        let started = std::time::Instant::now();
        let outcome = match approver {
            Some(approver) => tool.invoke_approved_by(input, context, approver).await,
            None => tool.invoke(input, context).await,
        };
        let took = started.elapsed();
        match &outcome {
            Ok(_) => tracing::info!(took_ms = took.as_millis() as u64, "call done"),
            Err(error) => tracing::info!(took_ms = took.as_millis() as u64, "call failed: {error}"),
        }
        if let Some(stats) = stats {
            stats.record(&tool.name, took, outcome.as_ref().err());
        }
        outcome
    }
    .instrument(span)
    .await
}

/// The `isError` text for a failed call: what happened, for the agent and the human reading
/// along, with the operator's fix when there is one (the runtime's errors carry it).
pub(crate) fn failure_text(skill: &str, error: &RunError) -> String {
    let lead = match error {
        RunError::InputSchema { .. } | RunError::InvalidInput(_) => {
            "The input was rejected before the skill ran; fix the arguments to match the tool's input schema."
        }
        RunError::Denied { .. } => {
            "The skill was refused access to a credential. Only an operator can change that (with the command \
             below); ask them, and do not retry until they have."
        }
        RunError::Tripwire { .. } => {
            "The skill was stopped: it tried to send, return or log a secret. Do not retry it."
        }
        RunError::TimeLimit { .. }
        | RunError::MemoryLimit { .. }
        | RunError::FuelLimit { .. }
        | RunError::HostLimit { .. } => "The skill hit a limit and was stopped.",
        RunError::SkillFailed { .. } => "The skill reported an error.",
        _ => "The skill could not run.",
    };
    format!("{lead}\n{skill}: {error}")
}
