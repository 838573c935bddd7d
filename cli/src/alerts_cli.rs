//! `skillbox alerts test`: sends a test alert to every sink configured in `[alerts]` of the
//! runtime config file and reports each delivery, so an operator can check a webhook (its URL,
//! its key, the receiver's signature check) and a command before a real alert needs them.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use skillbox_runtime::RuntimeConfig;
use skillbox_runtime::alerts::{Alert, AlertKind, Alerts, Subject};
use skillbox_runtime::display::escape;

use crate::GlobalOpts;
use crate::skills::{print_stdout, runtime_config, tokio_runtime};

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Send a test alert (kind `test`) to every webhook and command in [alerts] and to the log;
    /// report each delivery. Exits 1 when one failed.
    Test {
        /// The alert's message.
        #[arg(long, default_value = "skillbox alerts test: if you can read this, alerts reach you")]
        message: String,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: AlertsArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    match args.command {
        AlertsCommand::Test { message, json } => test(global, message, json),
    }
}

fn test(global: &GlobalOpts, message: String, json: bool) -> anyhow::Result<ExitCode> {
    let file = global.config.clone().or_else(RuntimeConfig::default_file);
    let config = runtime_config(global)?;
    let alerts = Alerts::new(config.alerts, None).context("setting up the alert sinks")?;
    let source = match &file {
        Some(path) => format!("[alerts] of {}", path.display()),
        None => "no config file (--config FILE, SKILLBOX_CONFIG or $XDG_CONFIG_HOME/skillbox/skillbox.toml)".into(),
    };
    if alerts.sink_names().is_empty() && !json {
        eprintln!("no webhook or command in {}: alerts only go to the log", escape(&source));
    }
    let detail = serde_json::json!({ "test": true, "pid": std::process::id() });
    let alert = Alert::new(AlertKind::Test, Subject::default(), message).detail(detail);
    let reports = tokio_runtime()?.block_on(alerts.deliver_now(&alert));
    let failed = reports.iter().filter(|r| !r.ok).count();
    if json {
        let out = serde_json::json!({ "alert": alert, "config": file, "deliveries": reports });
        print_stdout(&serde_json::to_string_pretty(&out)?)?;
    } else {
        let mut text = format!("test alert {} ({})\n", alert.id, escape(&source));
        for report in &reports {
            text += &format!("  {}\n", escape(&report.to_string()));
        }
        text += &match failed {
            0 => "every sink took it".to_owned(),
            n => format!("{n} of {} sinks failed", reports.len()),
        };
        print_stdout(&text)?;
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::SKILL_FAILED) })
}
