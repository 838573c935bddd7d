//! `cred update`, `cred due`, `cred rotate --generate` and `cred compromised`: the credential
//! lifecycle commands. Thin glue over `skillbox_vault::Vault::{update, due, rotate_generated,
//! compromised}`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use secrecy::ExposeSecret;
use skillbox_vault::{Charset, CompromiseReport, CredentialUpdate, DueItem, DueReason, Generate};

use super::{IdOpts, KeyOpts, ValueOpts, actor, cref, open_vault_with, parse_when, print, usage, vault_err};
use crate::GlobalOpts;
use skillbox_runtime::display::escape;

/// `skillbox cred due` exits with this code when something is overdue (a rotation past due, an
/// expired credential) or needs re-authorization, so cron can mail the output.
pub const ATTENTION: u8 = 5;

/// A duration like `90d`, `12h`, `30m` (humantime), for flag `flag`.
pub fn parse_duration(flag: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s)
        .map_err(|_| usage(anyhow::anyhow!("{flag} {}: not a duration; give one like 90d, 12h or 30m", escape(s))))
}

/// `cred rotate --generate` and its options.
#[derive(Debug, Clone, Args)]
pub struct GenerateOpts {
    /// Store a random value instead of reading one (for secrets you own: HMAC keys,
    /// passwords, API keys you issue). Never printed unless --show-once.
    #[arg(long, conflicts_with_all = ["value_stdin", "value_file"])]
    pub generate: bool,
    /// Length of the generated value, in characters (16-4096).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub length: usize,
    /// Characters of the generated value: alnum, hex, base64url or printable.
    #[arg(long, value_name = "SET", default_value = "alnum")]
    pub charset: String,
    /// The field to generate, for values with several (default: key, access_token or password;
    /// required for custom).
    #[arg(long, value_name = "NAME")]
    pub field: Option<String>,
    /// Print the generated value once, alone on stdout (a warning goes to stderr).
    #[arg(long)]
    pub show_once: bool,
}

impl GenerateOpts {
    /// Refuses generation options given without `--generate`.
    pub fn refuse_without_generate(&self) -> anyhow::Result<()> {
        let given = [
            ("--length", self.length != 32),
            ("--charset", self.charset != "alnum"),
            ("--field", self.field.is_some()),
            ("--show-once", self.show_once),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(usage(anyhow::anyhow!("{flag} applies only with --generate")));
        }
        Ok(())
    }
}

/// `skillbox cred update NAME ...`
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Credential name.
    pub name: String,
    #[command(flatten)]
    pub id: IdOpts,
    /// Rotation schedule: a duration like 90d, 12h or 30m.
    #[arg(long, value_name = "DURATION", conflicts_with = "no_rotate")]
    pub rotate_every: Option<String>,
    /// Remove the rotation schedule.
    #[arg(long)]
    pub no_rotate: bool,
    /// The URL `skillbox cred test` sends one request to (http or https; no user or password in it).
    #[arg(long, value_name = "URL", conflicts_with = "no_test_url")]
    pub test_url: Option<String>,
    /// Remove the test URL.
    #[arg(long)]
    pub no_test_url: bool,
    /// Free-text description.
    #[arg(long)]
    pub description: Option<String>,
    /// Print the credential's metadata as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: KeyOpts,
}

/// `skillbox cred due`
#[derive(Debug, Args)]
pub struct DueArgs {
    /// How far ahead to look: a duration like 14d.
    #[arg(long, value_name = "DURATION", default_value = "14d")]
    pub within: String,
    /// JSON output (a list of items).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: KeyOpts,
}

/// `skillbox cred compromised NAME --reason ...`
#[derive(Debug, Args)]
pub struct CompromisedArgs {
    /// Credential name.
    pub name: String,
    #[command(flatten)]
    pub id: IdOpts,
    /// What happened (recorded; never put the secret here).
    #[arg(long)]
    pub reason: String,
    /// JSON output: what was done and the usage summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: KeyOpts,
}

pub fn update(global: &GlobalOpts, a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let r = cref(&a.name, &a.id)?;
    let mut change = CredentialUpdate::default();
    if let Some(d) = &a.rotate_every {
        change.rotate_every = Some(Some(parse_duration("--rotate-every", d)?));
    } else if a.no_rotate {
        change.rotate_every = Some(None);
    }
    if let Some(u) = a.test_url {
        change.test_url = Some(Some(u));
    } else if a.no_test_url {
        change.test_url = Some(None);
    }
    if let Some(d) = a.description {
        change.description = Some(Some(d));
    }
    let vault = open_vault_with(global, a.key.key_file.as_deref())?;
    let info = vault.update(&r, &change, &actor()).map_err(vault_err)?;
    if a.json {
        print::json(&info);
    } else {
        let schedule = match (info.rotate_every, info.rotation_due_at) {
            (Some(every), Some(due)) => format!(
                "rotate every {}, next due {}",
                humantime::format_duration(every),
                humantime::format_rfc3339_seconds(due)
            ),
            _ => "no rotation schedule".into(),
        };
        let test = info.test_url.as_deref().map(|u| format!(", test URL {}", escape(u))).unwrap_or_default();
        eprintln!("updated '{}' in {}: {schedule}{test}", escape(&info.name), info.environment);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn due(global: &GlobalOpts, a: DueArgs) -> anyhow::Result<ExitCode> {
    let within = parse_duration("--within", &a.within)?;
    let vault = std::sync::Arc::new(open_vault_with(global, a.key.key_file.as_deref())?);
    let items = vault.due(within).map_err(vault_err)?;
    if a.json {
        print::json(&items);
    } else {
        print_due(&items, &a.within);
    }
    alert_due(global, &items, &vault);
    Ok(if items.iter().any(|i| i.overdue) { ExitCode::from(ATTENTION) } else { ExitCode::SUCCESS })
}

fn what_to_run(i: &DueItem) -> String {
    let c = &i.credential;
    let mut flags = String::new();
    if c.environment != skillbox_vault::Environment::Dev {
        flags += &format!(" --env {}", c.environment);
    }
    if c.owner != skillbox_vault::DEFAULT_OWNER {
        flags += &format!(" --owner {}", c.owner);
    }
    match (i.reason, c.kind) {
        (DueReason::NeedsReauth, skillbox_vault::CredentialKind::OAuth2) => {
            format!("skillbox oauth login {}{flags}", c.name)
        }
        (_, skillbox_vault::CredentialKind::HmacKey | skillbox_vault::CredentialKind::Basic) => {
            format!("skillbox cred rotate {}{flags} --generate", c.name)
        }
        _ => format!("skillbox cred rotate {}{flags}", c.name),
    }
}

fn print_due(items: &[DueItem], within: &str) {
    if items.is_empty() {
        eprintln!("nothing due within {}", escape(within));
        return;
    }
    println!("{:<24} {:<11} {:<12} {:<13} {:<21} {:<8} RUN", "NAME", "ENV", "OWNER", "WHAT", "DUE", "STATE");
    for i in items {
        let c = &i.credential;
        let due = i.due_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_else(|| "-".into());
        let state = if i.overdue { "OVERDUE" } else { "due" };
        println!(
            "{:<24} {:<11} {:<12} {:<13} {:<21} {:<8} {}",
            escape(&c.name),
            c.environment,
            escape(&c.owner),
            i.reason,
            due,
            state,
            escape(&what_to_run(i))
        );
        if let (DueReason::NeedsReauth, Some(why)) = (i.reason, &c.needs_reauth) {
            println!("    needs re-authorization: {}", escape(why));
        }
    }
}

pub fn rotate_generated(
    global: &GlobalOpts,
    name: &str,
    id: &IdOpts,
    expires: Option<String>,
    value: &ValueOpts,
    g: &GenerateOpts,
    key: &KeyOpts,
) -> anyhow::Result<ExitCode> {
    super::input::refuse_argv_secrets(value)?;
    if value.allow_short_secret || value.allow_privileged_role {
        return Err(usage(anyhow::anyhow!(
            "--allow-short-secret and --allow-privileged-role do not apply to --generate"
        )));
    }
    let charset: Charset = g.charset.parse().map_err(usage)?;
    let r = cref(name, id)?;
    let expires_at = expires.as_deref().map(|e| parse_when(e, true)).transpose()?;
    let vault = open_vault_with(global, key.key_file.as_deref())?;
    let generate = Generate { length: g.length, charset, field: g.field.clone() };
    let (info, secret) = vault.rotate_generated(&r, &generate, expires_at, &actor()).map_err(vault_err)?;
    if g.show_once {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", secret.expose_secret())?;
        out.flush()?;
        eprintln!(
            "warning: the generated value was printed above and will not be shown again: store it where it is \
             needed now, and clear it from your terminal's scrollback"
        );
    }
    drop(secret);
    eprintln!(
        "rotated '{}' in {} to a generated {}-character {} value: now version {} (fingerprint {}){}",
        escape(&info.name),
        info.environment,
        generate.length,
        charset,
        info.version,
        info.fingerprint,
        if g.show_once { "" } else { "; the value was not shown (use --show-once to see it)" }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn compromised(global: &GlobalOpts, a: CompromisedArgs) -> anyhow::Result<ExitCode> {
    let r = cref(&a.name, &a.id)?;
    let vault = std::sync::Arc::new(open_vault_with(global, a.key.key_file.as_deref())?);
    let report = vault.compromised(&r, &a.reason, &actor()).map_err(vault_err)?;
    alert_compromise(global, &report, &vault);
    if a.json {
        print::json(&report);
    } else {
        print_compromise(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Raises a `rotation-due`, `expiry-due` or `needs-reauth` alert for each item (run `cred due`
/// from cron and the alerts arrive at the configured sinks), waiting for their deliveries. Each
/// is also an `alert` audit row.
fn alert_due(global: &GlobalOpts, items: &[DueItem], vault: &std::sync::Arc<skillbox_vault::Vault>) {
    use skillbox_runtime::alerts::{Alert, AlertKind, Alerts, Subject};
    if items.is_empty() {
        return;
    }
    let deliver = || -> anyhow::Result<Vec<String>> {
        let config = crate::skills::runtime_config(global)?;
        let alerts = Alerts::new(config.alerts, Some(vault.clone()))?;
        let runtime = crate::skills::tokio_runtime()?;
        let mut failed = Vec::new();
        for item in items {
            let c = &item.credential;
            let kind = match item.reason {
                DueReason::Rotation => AlertKind::RotationDue,
                DueReason::Expiry => AlertKind::ExpiryDue,
                _ => AlertKind::NeedsReauth,
            };
            let subject = Subject {
                credential: Some(c.name.clone()),
                user: Some(c.owner.clone()),
                environment: Some(c.environment.as_str().to_owned()),
                ..Subject::default()
            };
            let message = format!("credential '{}': {} (run `{}`)", c.name, item.reason, what_to_run(item));
            let detail = serde_json::json!({ "reason": item.reason, "due_at": item.due_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()), "overdue": item.overdue });
            let alert = Alert::new(kind, subject, message).detail(detail);
            failed
                .extend(runtime.block_on(alerts.deliver_now(&alert)).iter().filter(|r| !r.ok).map(ToString::to_string));
        }
        Ok(failed)
    };
    match deliver() {
        Ok(failed) => {
            for failure in failed {
                eprintln!("warning: a due alert was not delivered: {}", escape(&failure));
            }
        }
        Err(e) => eprintln!("warning: the due alerts could not be sent: {e:#}"),
    }
}

/// Raises the `compromise` alert through the sinks of the runtime config and waits for their
/// deliveries (the command exits next). A sink that fails is reported on stderr; the
/// credential is revoked whatever happens to the alert.
fn alert_compromise(global: &GlobalOpts, report: &CompromiseReport, vault: &std::sync::Arc<skillbox_vault::Vault>) {
    use skillbox_runtime::alerts::{Alert, AlertKind, Alerts, Subject};
    let deliver = || -> anyhow::Result<Vec<String>> {
        let config = crate::skills::runtime_config(global)?;
        let alerts = Alerts::new(config.alerts, Some(vault.clone()))?;
        let c = &report.credential;
        let subject = Subject {
            credential: Some(c.name.clone()),
            user: Some(c.owner.clone()),
            environment: Some(c.environment.as_str().to_owned()),
            ..Subject::default()
        };
        let message = format!("credential '{}' was declared compromised: {}", c.name, report.reason);
        let detail = serde_json::json!({
            "reason": report.reason,
            "versions_revoked": report.versions_revoked,
            "grants_suspended": report.grants_suspended.len(),
            "actor": report.actor,
        });
        let alert = Alert::new(AlertKind::Compromise, subject, message).detail(detail);
        let reports = crate::skills::tokio_runtime()?.block_on(alerts.deliver_now(&alert));
        Ok(reports.iter().filter(|r| !r.ok).map(ToString::to_string).collect())
    };
    match deliver() {
        Ok(failed) => {
            for failure in failed {
                eprintln!("warning: the compromise alert was not delivered: {}", escape(&failure));
            }
        }
        Err(e) => eprintln!("warning: the compromise alert could not be sent: {e:#}"),
    }
}

fn print_compromise(rep: &CompromiseReport) {
    let c = &rep.credential;
    println!(
        "credential '{}' ({}, {}, owner '{}') declared compromised by {}: {}",
        escape(&c.name),
        c.kind,
        c.environment,
        escape(&c.owner),
        escape(&rep.actor),
        escape(&rep.reason)
    );
    println!("  revoked: the credential and {} version(s); no skill can use it now", rep.versions_revoked);
    if rep.grants_suspended.is_empty() {
        println!("  grants suspended: none (no active grant)");
    } else {
        println!("  grants suspended: {}", rep.grants_suspended.len());
        for g in &rep.grants_suspended {
            println!("    {} as '{}' in {} ({})", escape(&g.skill), escape(&g.alias), g.environment, escape(&g.owner));
        }
    }
    println!("  recorded: audit row {} (compromise)", rep.audit_id);
    println!();
    println!("who used it since {} (from the audit log):", humantime::format_rfc3339_seconds(rep.usage_since));
    if rep.usage.is_empty() {
        println!("  nobody: no reads or uses recorded");
    } else {
        println!(
            "  {:<20} {:<14} {:<14} {:<24} {:>5} {:>5} {:>5}  {:<20} {:<20}",
            "SKILL", "DIGEST", "USER", "HOST", "OPENS", "USES", "FAIL", "FIRST", "LAST"
        );
        for u in &rep.usage {
            println!(
                "  {:<20} {:<14} {:<14} {:<24} {:>5} {:>5} {:>5}  {:<20} {:<20}",
                escape(u.skill.as_deref().unwrap_or("(operator)")),
                u.digest.as_deref().map(|d| &d[..d.len().min(12)]).unwrap_or("-"),
                escape(&u.actor),
                escape(u.host.as_deref().unwrap_or("-")),
                u.opens,
                u.uses,
                u.failures,
                humantime::format_rfc3339_seconds(u.first).to_string(),
                humantime::format_rfc3339_seconds(u.last).to_string(),
            );
        }
    }
    println!();
    println!("next: revoke or rotate the secret at its issuer (and anything derived from it downstream), then");
    let mut flags = String::new();
    if c.environment != skillbox_vault::Environment::Dev {
        flags += &format!(" --env {}", c.environment);
    }
    if c.owner != skillbox_vault::DEFAULT_OWNER {
        flags += &format!(" --owner {}", escape(&c.owner));
    }
    println!("  store the new value: skillbox cred rotate {}{flags}", escape(&c.name));
    for g in &rep.grants_suspended {
        println!("  re-grant:            {}", escape(&g.grant_command()));
    }
}
