//! `skillbox run`, `inspect` and `build`: the commands that work on a skill directory.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use std::sync::Arc;

use skillbox_runtime::display::{escape, escape_json};
use skillbox_runtime::manifest::{parse_memory_named, parse_timeout_named};
use skillbox_runtime::{Approver, DenyAll, InvocationContext, Manifest, Runtime, RuntimeConfig};

use crate::approve::TerminalApprover;
use crate::vault_cli;

use crate::GlobalOpts;
use crate::exit::{self, with_code};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The skill: its directory or its skill.toml.
    skill: PathBuf,
    /// The input as JSON text.
    #[arg(long, conflicts_with = "input_file", value_name = "JSON")]
    input: Option<String>,
    /// Read the input JSON from this file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
    /// The environment whose credentials the skill may use.
    #[arg(long = "env", env = "SKILLBOX_ENV", default_value = "dev", value_name = "ENV")]
    environment: String,
    /// The user or tenant the skill runs for (selects whose credentials).
    #[arg(long, env = "SKILLBOX_USER", default_value = "default", value_name = "USER")]
    user: String,
    /// Why the skill is run; recorded in the audit trail.
    #[arg(long, default_value = "", value_name = "TEXT")]
    purpose: String,
    /// Allow plain http to loopback, for local test servers: `http://127.x.y.z`, `http://[::1]`
    /// and `http://localhost`, connecting only to loopback addresses (a name that resolves to
    /// any other address is refused), redirects included. Nothing else: loopback over https
    /// stays refused, and so does plain http to any other host. The host must still be one the
    /// skill may reach (a credential's hosts or `[network] allow`).
    #[arg(long)]
    allow_http_loopback: bool,
    /// Cap the skill's memory (e.g. 256MiB): a manifest asking for more runs at this
    /// [default: `[limits] max_memory` in skillbox.toml, else 512MiB].
    #[arg(long, value_name = "SIZE", value_parser = |s: &str| parse_memory_named("--max-memory", s))]
    max_memory: Option<u64>,
    /// Cap the skill's wall-clock time (e.g. 30s): a manifest asking for more runs at this
    /// [default: `[limits] max_timeout` in skillbox.toml, else 60s].
    #[arg(long, value_name = "DURATION", value_parser = |s: &str| parse_timeout_named("--max-timeout", s))]
    max_timeout: Option<std::time::Duration>,
    /// Cap the skill's fuel (wasmtime instruction budget) per invocation
    /// [default: `[limits] fuel` in skillbox.toml, else the manifest's, which defaults to none].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fuel: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The skill: its directory or its skill.toml.
    skill: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The skill: its directory or its skill.toml.
    skill: PathBuf,
}

pub fn run(args: RunArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let input = read_input(&args)?;
    let manifest = Manifest::load(&args.skill)?;
    let mut config = runtime_config(global)?;
    config.egress.allow_http_loopback = args.allow_http_loopback;
    if let Some(max) = args.max_memory {
        config.limits.max_memory = max;
    }
    if let Some(max) = args.max_timeout {
        config.limits.max_timeout = max;
    }
    if let Some(fuel) = args.fuel {
        config.limits.fuel = Some(fuel);
    }
    let runtime = match credential_vault(&manifest, global)? {
        Some(vault) => Runtime::with_vault(config, Arc::new(vault), approver())?,
        None => Runtime::new(config)?,
    };
    let skill = runtime.load_manifest(manifest)?;
    // The audit actor is the operating-system account running the command, not `--user`.
    let context = InvocationContext {
        user: args.user,
        environment: args.environment,
        purpose: args.purpose,
        actor: Some(vault_cli::actor()),
    };
    let output = tokio_runtime()?.block_on(skill.invoke_with(&input, &context))?;
    // JSON lets DEL, C1 controls and bidi overrides stand raw in strings; write them as
    // `\uXXXX` escapes instead (same JSON) so a result cannot drive the terminal.
    print_stdout(&escape_json(&output.json))
}

pub fn inspect(args: InspectArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&args.skill)?;
    let runtime = runtime(global)?;
    let info = runtime.inspect(&manifest)?;
    let effective = runtime.effective_limits(&manifest);
    if args.json {
        let json = serde_json::json!({ "manifest": manifest, "component": info, "effective_limits": effective });
        return print_stdout(&escape_json(&serde_json::to_string_pretty(&json)?));
    }
    let limits = &manifest.limits;
    let show = |l: &skillbox_runtime::Limits| {
        format!(
            "memory {}, timeout {}, fuel {}",
            bytes(l.memory),
            humantime::format_duration(l.timeout),
            l.fuel.map_or("unlimited".to_owned(), |f| f.to_string())
        )
    };
    // Everything from the manifest or the component is escaped: it is the author's text.
    let mut text = String::new();
    let s = &manifest.skill;
    text += &format!("skill        {} {}\n", escape(&s.name), s.version);
    if !s.description.is_empty() {
        text += &format!("description  {}\n", escape(&s.description));
    }
    text += &format!("manifest     {}\n", escape(&manifest.path.display().to_string()));
    text += &format!("component    {} ({} bytes)\n", escape(&info.path.display().to_string()), info.size);
    text += &format!("sha256       {}\n", info.sha256);
    text += &format!("limits       {}\n", show(limits));
    if effective.memory != limits.memory || effective.timeout != limits.timeout || effective.fuel != limits.fuel {
        text += &format!("  effective  {} (the operator's caps)\n", show(&effective));
    }
    if let Some(build) = &manifest.build {
        text += &format!("build        {}\n", escape(&build.command));
    }
    for c in &manifest.credentials {
        text +=
            &format!("credential   {} ({}) for {}\n", escape(&c.name), escape(&c.kind), escape(&c.hosts.join(", ")));
        if !c.purpose.is_empty() {
            text += &format!("  purpose    {}\n", escape(&c.purpose));
        }
    }
    for (title, items) in [("imports", &info.imports), ("exports", &info.exports)] {
        text += &format!("{title}\n");
        for item in items {
            text += &format!("  {:<10} {}\n", item.kind, escape(&item.name));
        }
    }
    print_stdout(text.trim_end())
}

pub fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&args.skill)?;
    let Some(build) = &manifest.build else {
        return Err(with_code(
            exit::USAGE,
            anyhow::anyhow!(
                "{} has no [build] command; add `[build] command = \"...\"` or build the component yourself",
                manifest.path.display()
            ),
        ));
    };
    eprintln!(
        "building {} in {}: {}",
        escape(&manifest.skill.name),
        escape(&manifest.dir().display().to_string()),
        escape(&build.command)
    );
    let mut command = shell(&build.command);
    // Python skills' componentize-py: one on the user's PATH wins, else the one named by
    // SKILLBOX_COMPONENTIZE_PY or installed next to this executable (target/componentize-py).
    if let Some(path) = crate::new::build_path() {
        command.env("PATH", path);
    }
    // The build command is the skill author's: it gets none of skillbox's own settings
    // (SKILLBOX_MASTER_KEY, SKILLBOX_PASSPHRASE, SKILLBOX_VAULT, ...). Nor the user's
    // CARGO_TARGET_DIR: `skill.component` names a path below the skill's directory, and a
    // target directory elsewhere would leave the component there instead.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SKILLBOX_") || name == "CARGO_TARGET_DIR" {
            command.env_remove(&name);
        }
    }
    let status = command
        .current_dir(manifest.dir())
        .status()
        .with_context(|| format!("cannot start the build command `{}`", escape(&build.command)))?;
    // 127: the shell found no such command.
    if status.code() == Some(127)
        && build.command.contains("componentize-py")
        && crate::new::find_componentize_py().is_none()
    {
        return Err(with_code(exit::USAGE, anyhow::anyhow!(crate::new::componentize_py_missing())));
    }
    if !status.success() {
        return Err(with_code(exit::SKILL_FAILED, anyhow::anyhow!("build command failed ({status})")));
    }
    let component = manifest.component_path();
    if !component.is_file() {
        return Err(with_code(
            exit::USAGE,
            anyhow::anyhow!("the build succeeded but {} does not exist; check `skill.component`", component.display()),
        ));
    }
    eprintln!("built {}", component.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn shell(command: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(command);
    cmd
}

#[cfg(not(unix))]
fn shell(command: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("cmd");
    cmd.arg("/C").arg(command);
    cmd
}

fn read_input(args: &RunArgs) -> anyhow::Result<String> {
    if let Some(input) = &args.input {
        return Ok(input.clone());
    }
    let mut text = String::new();
    match &args.input_file {
        Some(path) if path.as_os_str() != "-" => {
            text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --input-file {}", path.display()))?;
        }
        _ => {
            let mut stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("reading input JSON from stdin (end with Ctrl-D; or pass --input '{{...}}')");
            }
            stdin.read_to_string(&mut text).context("cannot read input from stdin")?;
        }
    }
    Ok(text)
}

pub fn runtime(global: &GlobalOpts) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(runtime_config(global)?)?)
}

pub fn runtime_config(global: &GlobalOpts) -> anyhow::Result<RuntimeConfig> {
    let mut config = RuntimeConfig::default();
    if let Some(file) = global.config.clone().or_else(RuntimeConfig::default_file) {
        config = config.apply_file(&file)?;
    }
    if global.no_cache {
        config.cache_dir = None;
    } else if let Some(dir) = &global.cache_dir {
        config.cache_dir = Some(dir.clone());
    }
    Ok(config)
}

/// The vault, opened only for skills that declare credentials (so running
/// `hello` never asks for a master key). No vault file means no grants:
/// the skill runs and its `open` calls are refused with how to set one up.
fn credential_vault(manifest: &Manifest, global: &GlobalOpts) -> anyhow::Result<Option<skillbox_vault::Vault>> {
    if manifest.credentials.is_empty() {
        return Ok(None);
    }
    let location = vault_cli::vault_location(global)?;
    if !vault_cli::vault_exists(&location) {
        tracing::warn!(vault = %location, "no vault: credentials this skill opens will be refused");
        return Ok(None);
    }
    vault_cli::open_vault(global).map(Some)
}

/// Asks at the terminal when there is one; otherwise denies, and the
/// denial names the `skillbox grant` command to run.
fn approver() -> Arc<dyn Approver> {
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        Arc::new(TerminalApprover)
    } else {
        Arc::new(DenyAll)
    }
}

pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Prints `text` and a newline; a closed pipe (`skillbox run ... | head`) is not an error.
pub fn print_stdout(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}
