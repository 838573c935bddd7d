//! `skillbox mcp` and `skillbox serve`: a directory of skills served to agents, over MCP
//! on stdio, or over HTTP (MCP at `/mcp`, REST under `/v1`) behind API keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skillbox_runtime::{Catalogue, DenyAll, InvocationContext, Runtime, RuntimeConfig};
use skillbox_serve::{LiveCatalogue, ServeOptions, SkillboxMcp, VaultKeys};

use crate::GlobalOpts;
use crate::skills::{runtime_config, tokio_runtime};
use crate::vault_cli;

/// `skillbox mcp --skills DIR`
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// A directory of skills (each a directory holding a skill.toml), or one skill's
    /// directory. Repeatable; added to `[serve] skills` in skillbox.toml. Every skill found
    /// is one tool.
    #[arg(long = "skills", value_name = "DIR")]
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
    let dirs = skill_dirs(&config, &args.skills)?;
    // stdin is the protocol: there is no terminal to ask, so ungranted credentials are
    // denied, with the `skillbox grant` command in the tool's error.
    let vault_at = vault_cli::vault_location(global)?;
    let runtime = if vault_cli::vault_exists(&vault_at) {
        Runtime::with_vault(config, Arc::new(vault_cli::open_vault(global)?), Arc::new(DenyAll))?
    } else {
        tracing::warn!(vault = %vault_at, "no vault: tools that open credentials will be refused");
        Runtime::new(config)?
    };
    let context = InvocationContext {
        user: args.user,
        environment: args.environment,
        purpose: "mcp".into(),
        actor: Some(vault_cli::actor()),
    };
    tokio_runtime()?.block_on(async move {
        let catalogue = load_catalogue(&runtime, &dirs)?;
        tracing::info!(tools = catalogue.len(), "serving MCP on stdio");
        let live = LiveCatalogue::new(catalogue);
        reload_on_sighup(live.clone(), runtime, dirs);
        SkillboxMcp::new(live, context).serve_stdio().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The skill directories: the config file's `[serve] skills`, then `--skills`.
fn skill_dirs(config: &RuntimeConfig, flags: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = config.skills.iter().chain(flags).cloned().collect();
    if dirs.is_empty() {
        return Err(crate::exit::with_code(
            crate::exit::USAGE,
            anyhow::anyhow!(
                "no skills to serve: pass --skills DIR, or list them in skillbox.toml as `[serve] skills = [\"DIR\"]`"
            ),
        ));
    }
    Ok(dirs)
}

/// On every SIGHUP, loads the skill directories again and serves what they hold now; a
/// failed reload (two skills with one name, say) is logged and the current tools stay.
fn reload_on_sighup(live: Arc<LiveCatalogue>, runtime: Runtime, dirs: Vec<PathBuf>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
        while hangups.recv().await.is_some() {
            let (runtime, dirs) = (runtime.clone(), dirs.clone());
            match tokio::task::spawn_blocking(move || load_catalogue(&runtime, &dirs)).await {
                Ok(Ok(catalogue)) => {
                    tracing::info!(tools = catalogue.len(), "SIGHUP: skills reloaded");
                    live.replace(catalogue);
                }
                Ok(Err(e)) => tracing::error!("SIGHUP: reloading the skills failed, still serving the old ones: {e:#}"),
                Err(e) => tracing::error!("SIGHUP: the reload task failed: {e}"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (live, runtime, dirs);
}

/// The tools below `dirs`; skills that cannot load are named on stderr and left out.
fn load_catalogue(runtime: &Runtime, dirs: &[PathBuf]) -> anyhow::Result<Catalogue> {
    let (catalogue, skipped) = Catalogue::load(runtime, dirs)?;
    for s in &skipped {
        tracing::warn!(manifest = %s.manifest.display(), "skipped: {}", s.error);
    }
    Ok(catalogue)
}

/// `skillbox serve --skills DIR`
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A directory of skills (each a directory holding a skill.toml), or one skill's
    /// directory. Repeatable; added to `[serve] skills` in skillbox.toml.
    #[arg(long = "skills", value_name = "DIR")]
    skills: Vec<PathBuf>,
    /// The address to listen on. A non-loopback address needs --tls-cert/--tls-key (or
    /// --insecure-listen).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A name clients reach the server by (the certificate's, say), accepted in /mcp's Host
    /// and Origin checks besides localhost and the listen address. Repeatable.
    #[arg(long = "host-name", value_name = "NAME")]
    host_names: Vec<String>,
    /// Listen on a non-loopback address without TLS, for a network you trust or behind a
    /// TLS-terminating proxy.
    #[arg(long)]
    insecure_listen: bool,
    /// Skills that may run at once [default: 2 × CPU cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_concurrent: Option<u32>,
    /// Calls that may wait for a free slot; beyond it, callers get 429 (busy).
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_queue: usize,
    /// How long calls in flight may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// Allow plain http to loopback for skills (local test servers); see `skillbox run --help`.
    #[arg(long)]
    allow_http_loopback: bool,
}

/// Serves HTTP until SIGTERM or Ctrl-C, then lets calls in flight finish within the grace
/// period.
pub fn serve(args: ServeArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() && !args.insecure_listen && args.tls_cert.is_none() {
        return Err(crate::exit::with_code(
            crate::exit::USAGE,
            anyhow::anyhow!(
                "refusing to listen on {} without TLS: API keys would cross the network in clear. \
                 Give --tls-cert and --tls-key, listen on loopback behind a TLS-terminating proxy, \
                 or pass --insecure-listen if the network is trusted",
                args.listen
            ),
        ));
    }
    let mut config: RuntimeConfig = runtime_config(global)?;
    config.egress.allow_http_loopback = args.allow_http_loopback;
    let dirs = skill_dirs(&config, &args.skills)?;
    let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2);
    let max_concurrent = args.max_concurrent.unwrap_or(2 * cores);
    config.max_concurrent = max_concurrent;
    let vault =
        Arc::new(vault_cli::open_vault(global).context(
            "skillbox serve needs the vault: API keys live there (create one with `skillbox apikey create`)",
        )?);
    let runtime = Runtime::with_vault(config, vault.clone(), Arc::new(DenyAll))?;
    tokio_runtime()?.block_on(async move {
        let catalogue = load_catalogue(&runtime, &dirs)?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(skillbox_serve::tls::server_config(cert, key)?),
            _ => None,
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let listen = listener.local_addr()?;
        let options = ServeOptions {
            listen,
            max_concurrent: max_concurrent as usize,
            max_queue: args.max_queue,
            host_names: args.host_names.clone(),
        };
        let tools = catalogue.len();
        let live = LiveCatalogue::new(catalogue);
        reload_on_sighup(live.clone(), runtime.clone(), dirs.clone());
        let router = skillbox_serve::router(live, Arc::new(VaultKeys::new(vault)), &options);
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!("skillbox serving {tools} skills on {scheme}://{listen} (MCP at /mcp, REST at /v1)");
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(());
        };
        let server = match tls {
            Some(config) => tokio::spawn(skillbox_serve::serve(
                skillbox_serve::TlsListener::new(listener, config)?,
                router,
                shutdown,
            )),
            None => tokio::spawn(skillbox_serve::serve(listener, router, shutdown)),
        };
        // After the signal, calls in flight get the grace period to finish.
        let finished = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(args.shutdown_grace).await;
        };
        tokio::select! {
            result = server => { result.context("the server task failed")??; }
            () = finished => tracing::warn!("calls still running after the shutdown grace period were cut off"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: no new calls; waiting for calls in flight");
}
