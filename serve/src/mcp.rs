//! The MCP server: `tools/list` from the catalogue, `tools/call` through the runtime.
//!
//! Protocol errors (an unknown tool name) are JSON-RPC errors; everything that happens once a
//! skill is chosen — input that fails its schema, a denial, a limit, a tripwire, a skill's own
//! error — is an `isError` result whose text says what happened and, where an operator must
//! act, the command to run. Both the stateless protocol revision and the older `initialize`
//! one are served (rmcp negotiates). A client that can show forms is asked about an
//! ungranted credential ([`crate::approval`]).

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpTool,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::Value;
use skillbox_runtime::{InvocationContext, Tool};

use crate::Error;
use crate::approval::ElicitApprover;
use crate::call::failure_text;
use crate::caller::Caller;
use crate::live::LiveCatalogue;

/// What the server tells clients about itself.
const INSTRUCTIONS: &str = "Each tool is a sandboxed skill. Credentials are used on the host and never appear in \
     results. When a tool reports that access was denied, an operator must grant it with the `skillbox grant` \
     command the message names; there is no tool for that.";

/// An MCP server over a skill catalogue.
///
/// Over stdio every call runs as the one user and environment the server was started for.
/// Over HTTP ([`SkillboxMcp::for_http`]) every call runs as the [`Caller`] its API key
/// names, which the HTTP layer puts in the request's extensions; a request without one is
/// refused.
#[derive(Debug, Clone)]
pub struct SkillboxMcp {
    catalogue: Arc<LiveCatalogue>,
    /// Who calls when no API key says (stdio); `None` over HTTP.
    context: Option<InvocationContext>,
    stats: Option<Arc<crate::metrics::Metrics>>,
}

impl SkillboxMcp {
    /// Serves `catalogue`; every call runs with `context` (the operator's `--user`/`--env`).
    pub fn new(catalogue: Arc<LiveCatalogue>, context: InvocationContext) -> SkillboxMcp {
        SkillboxMcp { catalogue, context: Some(context), stats: None }
    }

    /// Serves `catalogue` behind the HTTP layer: each call as its request's [`Caller`].
    pub fn for_http(catalogue: Arc<LiveCatalogue>, stats: Arc<crate::metrics::Metrics>) -> SkillboxMcp {
        SkillboxMcp { catalogue, context: None, stats: Some(stats) }
    }

    /// Who this request runs as, and in what context: the API key's caller (the key as the
    /// audit actor) over HTTP, else the server's own context (the operator's account).
    fn caller(&self, context: &RequestContext<RoleServer>) -> Option<(Caller, InvocationContext)> {
        let from_key = context.extensions.get::<http::request::Parts>().and_then(|p| p.extensions.get::<Caller>());
        match (from_key, &self.context) {
            (Some(caller), _) => Some((caller.clone(), caller.context())),
            (None, Some(ctx)) => Some((Caller::local(ctx), ctx.clone())),
            (None, None) => None,
        }
    }

    /// Serves MCP on this process's stdin and stdout until the client goes away.
    pub async fn serve_stdio(self) -> Result<(), Error> {
        let running = self.serve(rmcp::transport::stdio()).await.map_err(|e| Error::Session(e.to_string()))?;
        running.waiting().await.map_err(|e| Error::Session(e.to_string()))?;
        Ok(())
    }

    /// The MCP description of `tool`.
    fn describe(tool: &Tool) -> McpTool {
        let object = |v: &Value| -> Arc<JsonObject> { Arc::new(v.as_object().cloned().unwrap_or_default()) };
        let mut described = McpTool::new(tool.name.clone(), tool.description.clone(), object(tool.input.value()));
        if let Some(output) = &tool.output {
            described = described.with_raw_output_schema(object(output.value()));
        }
        described
    }

    /// Runs one call: `Err` only for protocol errors (no such tool, no caller). `approver`
    /// asks the client about ungranted credentials when it can show a form.
    async fn call(
        &self,
        request: CallToolRequestParams,
        caller: Option<(Caller, InvocationContext)>,
        approver: Option<ElicitApprover>,
    ) -> Result<CallToolResult, McpError> {
        let Some((caller, invocation)) = caller else {
            return Err(McpError::invalid_request("this request carries no API key", None));
        };
        let catalogue = self.catalogue.current();
        let Some(tool) = catalogue.get(&request.name).filter(|t| caller.may_call(&t.name)) else {
            return Err(McpError::invalid_params(
                format!("there is no tool named `{}`; call tools/list for the tools this server has", request.name),
                None,
            ));
        };
        let input = Value::Object(request.arguments.unwrap_or_default());
        let approver = approver.map(|a| Arc::new(a) as Arc<dyn skillbox_runtime::Approver>);
        let outcome = crate::call::run(tool, &input, &caller, &invocation, approver, self.stats.as_deref()).await;
        Ok(match outcome {
            Ok(output) => match serde_json::from_str::<Value>(&output.json) {
                Ok(value) => CallToolResult::structured(value),
                Err(_) => CallToolResult::success(vec![ContentBlock::text(output.json)]),
            },
            Err(error) => CallToolResult::error(vec![ContentBlock::text(failure_text(&tool.name, &error))]),
        })
    }
}

impl ServerHandler for SkillboxMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build())
            .with_server_info(Implementation::new("skillbox", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = self.caller(&context);
        let visible = |t: &&Tool| caller.as_ref().is_some_and(|(c, _)| c.may_call(&t.name));
        let catalogue = self.catalogue.current();
        Ok(ListToolsResult::with_all_items(catalogue.tools().filter(visible).map(Self::describe).collect()))
    }

    /// From now on, tell this client whenever the catalogue is replaced (`SIGHUP`).
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut changes = self.catalogue.subscribe();
        let peer = context.peer;
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if peer.notify_tool_list_changed().await.is_err() {
                    break; // the client is gone
                }
            }
        });
    }

    fn get_tool(&self, name: &str) -> Option<McpTool> {
        self.catalogue.current().get(name).map(Self::describe)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&context);
        let approver = ElicitApprover::for_peer(&context.peer);
        self.call(request, caller, approver).await.map(CallToolResponse::from)
    }
}
