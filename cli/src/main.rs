//! `skillbox`: run WebAssembly skills under limits, and manage the credentials they may use.
//!
//! The binary is glue: parsing (clap), prompts, and output formatting live
//! here; everything that does work is in the `skillbox-runtime` and
//! `skillbox-vault` libraries.

mod alerts_cli;
mod approve;
mod exit;
mod new;
mod oauth_cli;
mod serve;
mod skills;
mod vault_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run WebAssembly skills with capability-scoped secrets.
#[derive(Debug, Parser)]
#[command(name = "skillbox", version, about, long_about = None, after_help = exit::EXIT_CODES_HELP)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, clap::Args)]
pub struct GlobalOpts {
    /// More output on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The credential vault file [default: $XDG_DATA_HOME/skillbox/vault.db].
    #[arg(long, env = "SKILLBOX_VAULT", global = true, value_name = "PATH")]
    pub vault: Option<PathBuf>,
    /// Where the vault is kept, overriding --vault: a file path, sqlite:PATH, or
    /// postgres://USER@HOST/DB for a store shared by several hosts. Give a password in
    /// SKILLBOX_STORE or PGPASSWORD, never on the command line.
    #[arg(long, env = "SKILLBOX_STORE", global = true, value_name = "URL")]
    pub store: Option<String>,
    /// Where compiled components are cached [default: $XDG_CACHE_HOME/skillbox/components].
    #[arg(long, env = "SKILLBOX_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile components afresh instead of using the cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// The runtime config file [default: $XDG_CONFIG_HOME/skillbox/skillbox.toml, if present].
    #[arg(long, env = "SKILLBOX_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a skill once: JSON input in (--input, --input-file or stdin), JSON result out.
    Run(skills::RunArgs),
    /// Show a skill's manifest and its component's imports and exports.
    Inspect(skills::InspectArgs),
    /// Run the build command from a skill's manifest.
    Build(skills::BuildArgs),
    /// Create a new skill directory from a template (Rust or Python), ready to build and run.
    New(new::NewArgs),
    /// Serve a directory of skills to an MCP client over stdio (each skill is a tool).
    Mcp(serve::McpArgs),
    /// Serve a directory of skills over HTTP: MCP at /mcp, REST at /v1, behind API keys.
    Serve(serve::ServeArgs),
    /// Check the alert sinks of the config file: `skillbox alerts test`.
    Alerts(alerts_cli::AlertsArgs),
    /// OAuth 2 sign-in: `skillbox oauth login NAME` stores an oauth2 credential's first tokens.
    #[command(subcommand)]
    Oauth(oauth_cli::OauthCommand),
    #[command(flatten)]
    Vault(vault_cli::VaultCommands),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    let result = match cli.command {
        Command::Run(args) => skills::run(args, &cli.global),
        Command::Inspect(args) => skills::inspect(args, &cli.global),
        Command::Build(args) => skills::build(args),
        Command::New(args) => new::new(args),
        Command::Mcp(args) => serve::mcp(args, &cli.global),
        Command::Serve(args) => serve::serve(args, &cli.global),
        Command::Alerts(args) => alerts_cli::run(args, &cli.global),
        Command::Oauth(command) => oauth_cli::run(command, &cli.global),
        Command::Vault(cmd) => vault_cli::run(cmd, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(error) => exit::report(&error),
    }
}

/// Logs go to stderr so stdout carries only results. Skill log lines
/// (target `skill`) show at info by default: they are the skill's output.
///
/// Every field, the message included, is [escaped](skillbox_runtime::display::escape): log
/// lines carry skill-controlled text (its log calls, stdio, the names it opens), and tracing's
/// formatter would otherwise pass newlines, ANSI sequences and bidi overrides straight to the
/// terminal, letting a skill forge log lines.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::field::MakeExt;

    use skillbox_runtime::display::escape;
    let default = match verbose {
        0 => "warn,skill=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        match field.name() {
            "message" => write!(writer, "{}", escape(&text)),
            name => write!(writer, "{name}={}", escape(&text)),
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
