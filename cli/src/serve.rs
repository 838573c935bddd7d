//! `skillbox mcp`: serve a directory of skills to MCP clients over stdio.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use skillbox_runtime::{Catalogue, DenyAll, InvocationContext, Runtime};
use skillbox_serve::SkillboxMcp;

use crate::GlobalOpts;
use crate::skills::{runtime_config, tokio_runtime};
use crate::vault_cli;

/// `skillbox mcp --skills DIR`
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// A directory of skills (each a directory holding a skill.toml), or one skill's
    /// directory. Repeatable. Every skill found is one tool.
    #[arg(long = "skills", value_name = "DIR", required = true)]
    skills: Vec<PathBuf>,
    /// The environment whose credentials every call may use.
    #[arg(long = "env", env = "SKILLBOX_ENV", default_value = "dev", value_name = "ENV")]
    environment: String,
    /// The user or tenant every call runs for (selects whose credentials).
    #[arg(long, env = "SKILLBOX_USER", default_value = "default", value_name = "USER")]
    user: String,
    /// Allow plain http to loopback (127.0.0.0/8, ::1, `localhost`), for local test servers;
    /// see `skillbox run --help`.
    #[arg(long)]
    allow_http_loopback: bool,
}

/// Loads the catalogue, then speaks MCP on stdin/stdout until the client disconnects. Logs
/// go to stderr; stdout carries only protocol messages.
pub fn mcp(args: McpArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let mut config = runtime_config(global)?;
    config.egress.allow_http_loopback = args.allow_http_loopback;
    // stdin is the protocol: there is no terminal to ask, so ungranted credentials are
    // denied, with the `skillbox grant` command in the tool's error.
    let vault_file = vault_cli::vault_path(global)?;
    let runtime = if vault_file.exists() {
        Runtime::with_vault(config, Arc::new(vault_cli::open_vault(global)?), Arc::new(DenyAll))?
    } else {
        tracing::warn!(vault = %vault_file.display(), "no vault: tools that open credentials will be refused");
        Runtime::new(config)?
    };
    let context = InvocationContext { user: args.user, environment: args.environment, purpose: "mcp".into() };
    tokio_runtime()?.block_on(async move {
        let (catalogue, skipped) = Catalogue::load(&runtime, &args.skills)?;
        for s in &skipped {
            tracing::warn!(manifest = %s.manifest.display(), "skipped: {}", s.error);
        }
        tracing::info!(tools = catalogue.len(), skipped = skipped.len(), "serving MCP on stdio");
        SkillboxMcp::new(Arc::new(catalogue), context).serve_stdio().await?;
        Ok(ExitCode::SUCCESS)
    })
}
