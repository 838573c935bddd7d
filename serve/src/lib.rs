//! Serves a catalogue of skills to agents: MCP over stdio and HTTP, and a REST API.
//!
//! Each skill found by [`skillbox_runtime::Catalogue`] is one MCP tool. A call goes through
//! exactly what `skillbox run` goes through — the input schema, the skill's grants, the leak
//! scanner, the audit trail — as the user and environment the server was started for. Agents
//! get results and errors they can act on, and no tool that grants or changes anything.

pub mod approval;
mod call;
pub mod caller;
pub mod http;
pub mod live;
pub mod mcp;
pub mod metrics;
mod openapi;
pub mod tls;

pub use caller::{Caller, KeyCheck, VaultKeys};
pub use http::{ServeOptions, router, serve};
pub use live::LiveCatalogue;
pub use mcp::SkillboxMcp;
pub use tls::TlsListener;

/// What can go wrong serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The MCP session could not start or ended with a transport error.
    #[error("MCP session failed: {0}")]
    Session(String),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}
