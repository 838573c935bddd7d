//! The runtime config file, `skillbox.toml`: the operator's settings for every skill it runs.
//!
//! Found via `--config FILE` or `SKILLBOX_CONFIG`, else `$XDG_CONFIG_HOME/skillbox/skillbox.toml`
//! when it exists. Every table is optional; unknown keys are errors (a misspelt setting must
//! not silently fall back to a default).
//!
//! ```toml
//! [scan]
//! foreign = "redact"          # redact | block | warn: foreign tokens in skill traffic
//! rules = "my-rules.toml"     # extra token rules ([[rule]] id, description, keywords, regex, min_entropy)
//! max_decoded = "64MiB"       # most bytes the decoded views of one text may produce
//!
//! [[scan.rule]]               # or rules inline
//! id = "acme-key"
//! description = "ACME API key"
//! keywords = ["acme_"]
//! regex = "acme_[A-Za-z0-9]{32}"
//! min_entropy = 3.0
//!
//! [tripwire]
//! threshold = 3               # tripwires by one skill build ...
//! window = "24h"              # ... within this window suspend its grants
//!
//! [limits]                    # caps on what any skill.toml's [limits] may ask for
//! max_memory = "256MiB"       # default 512MiB (at most 4GiB)
//! max_timeout = "30s"         # default 60s (at most 1h)
//! fuel = 1000000000           # default: no fuel cap
//!
//! [serve]                     # for `skillbox mcp` and `skillbox serve`
//! skills = ["skills"]         # skill directories (relative to this file), besides --skills
//!
//! [alerts]                    # see docs/alerts.md
//! burst = { count = 10, window = "5m" }   # denials per skill or user that make a burst
//! first_use = true            # alert when a credential is used by a new skill, host or user
//! queue = 1024                # alerts waiting for delivery; more are dropped (and counted)
//! drain = "5s"                # how long a finishing process waits for deliveries
//!
//! [[alerts.webhook]]
//! url = "https://hooks.example.com/skillbox"   # http only to a loopback receiver
//! secret_file = "webhook.key" # the HMAC key (relative to this file); or secret_env = "NAME"
//! retries = 5                 # on network errors, timeouts, 408, 429 and 5xx
//! timeout = "10s"             # per attempt
//! backoff = "1s"              # first retry delay; doubles, with jitter, up to 60s
//! min_severity = "info"       # info | warning | critical
//!
//! [[alerts.command]]
//! argv = ["/usr/local/bin/page-oncall", "--team", "sec"]   # alert JSON on stdin, no shell
//! timeout = "10s"
//! min_severity = "warning"
//! ```
//!
//! A skill whose manifest asks for more than a cap runs at the cap, with a warning.
//! `skillbox run --max-memory/--max-timeout/--fuel` override the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use skillbox_egress::ForeignAction;
use skillbox_scan::rules::{Rule, RuleSet};

use crate::RuntimeConfig;
use crate::error::{Error, Result};
use crate::manifest::{parse_memory_named, parse_timeout_named};

/// The config file's name in `$XDG_CONFIG_HOME/skillbox/`.
pub const CONFIG_FILE: &str = "skillbox.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    scan: ScanTable,
    #[serde(default)]
    tripwire: TripwireTable,
    #[serde(default)]
    limits: LimitsTable,
    #[serde(default)]
    serve: ServeTable,
    #[serde(default)]
    alerts: AlertsTable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsTable {
    #[serde(default)]
    webhook: Vec<WebhookTable>,
    #[serde(default)]
    command: Vec<CommandTable>,
    burst: Option<BurstTable>,
    first_use: Option<bool>,
    queue: Option<usize>,
    drain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BurstTable {
    count: u32,
    window: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookTable {
    url: String,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    /// Only to refuse it with a better message than "unknown field".
    secret: Option<toml::Value>,
    retries: Option<u32>,
    timeout: Option<String>,
    backoff: Option<String>,
    min_severity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandTable {
    argv: Vec<String>,
    timeout: Option<String>,
    min_severity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeTable {
    #[serde(default)]
    skills: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsTable {
    max_memory: Option<String>,
    max_timeout: Option<String>,
    fuel: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanTable {
    foreign: Option<ForeignAction>,
    rules: Option<PathBuf>,
    #[serde(default, rename = "rule")]
    inline: Vec<Rule>,
    max_decoded: Option<bytesize::ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TripwireTable {
    threshold: Option<u32>,
    #[serde(default, with = "humantime_serde_opt")]
    window: Option<Duration>,
}

/// `"24h"`-style durations.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration like \"24h\": {e}")))
    }
}

impl RuntimeConfig {
    /// The default config file, if the operator has one.
    pub fn default_file() -> Option<PathBuf> {
        let path = dirs::config_dir()?.join("skillbox").join(CONFIG_FILE);
        path.exists().then_some(path)
    }

    /// Applies the settings in the config file at `path` on top of `self`.
    pub fn apply_file(mut self, path: &Path) -> Result<RuntimeConfig> {
        let bad = |message: String| Error::Config { path: path.to_owned(), message };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let file: File = toml::from_str(&text).map_err(|e| bad(e.to_string().trim_end().to_owned()))?;
        let scan = &mut self.scan;
        if let Some(foreign) = file.scan.foreign {
            scan.foreign = foreign;
        }
        let mut extra = file.scan.inline;
        if let Some(rules) = file.scan.rules {
            let rules = path.parent().unwrap_or(Path::new(".")).join(rules);
            let text = std::fs::read_to_string(&rules)
                .map_err(|e| bad(format!("[scan] rules: cannot read {}: {e}", rules.display())))?;
            extra.extend(RuleSet::parse_rules_file(&text).map_err(|e| bad(format!("[scan] rules: {e}")))?);
        }
        if !extra.is_empty() {
            scan.rules = scan.rules.with_rules(extra).map_err(|e| bad(format!("[scan] {e}")))?;
        }
        if let Some(max) = file.scan.max_decoded {
            scan.limits.max_bytes = usize::try_from(max.as_u64()).unwrap_or(usize::MAX);
        }
        if let Some(threshold) = file.tripwire.threshold {
            if threshold == 0 {
                return Err(bad("[tripwire] threshold must be at least 1".into()));
            }
            scan.tripwire_threshold = threshold;
        }
        if let Some(window) = file.tripwire.window {
            scan.tripwire_window = window;
        }
        let limits = &mut self.limits;
        if let Some(text) = &file.limits.max_memory {
            limits.max_memory = parse_memory_named("[limits] max_memory", text).map_err(bad)?;
        }
        if let Some(text) = &file.limits.max_timeout {
            limits.max_timeout = parse_timeout_named("[limits] max_timeout", text).map_err(bad)?;
        }
        if let Some(fuel) = file.limits.fuel {
            if fuel == 0 {
                return Err(bad("[limits] fuel must be more than 0 (or leave it out for no fuel cap)".into()));
            }
            limits.fuel = Some(fuel);
        }
        let base = path.parent().unwrap_or(Path::new("."));
        self.skills.extend(file.serve.skills.iter().map(|dir| base.join(dir)));
        self.alerts = alerts_config(file.alerts, base).map_err(bad)?;
        Ok(self)
    }
}

/// A positive duration like `"5m"`, for the setting `what`.
fn duration(what: &str, text: &str) -> std::result::Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{what} must be more than 0")),
        Err(e) => Err(format!("{what}: `{text}` is not a duration like \"10s\" or \"5m\": {e}")),
    }
}

/// The `[alerts]` table, checked; paths are relative to the config file's directory `base`.
fn alerts_config(table: AlertsTable, base: &Path) -> std::result::Result<skillbox_alerts::AlertsConfig, String> {
    use skillbox_alerts::{AlertsConfig, CommandConfig, KeySource, Severity, WebhookConfig};
    let severity = |what: &str, text: &Option<String>| -> std::result::Result<Severity, String> {
        text.as_deref().map_or(Ok(Severity::Info), |t| t.parse().map_err(|e| format!("{what} min_severity: {e}")))
    };
    let mut config = AlertsConfig::default();
    if let Some(burst) = table.burst {
        if burst.count == 0 {
            return Err("[alerts] burst.count must be at least 1".into());
        }
        config.burst = skillbox_alerts::BurstConfig {
            count: burst.count,
            window: duration("[alerts] burst.window", &burst.window)?,
        };
    }
    if let Some(first_use) = table.first_use {
        config.first_use = first_use;
    }
    if let Some(queue) = table.queue {
        if !(1..=1_000_000).contains(&queue) {
            return Err(format!("[alerts] queue must be between 1 and 1000000 (got {queue})"));
        }
        config.queue = queue;
    }
    if let Some(drain) = &table.drain {
        config.drain = humantime::parse_duration(drain)
            .map_err(|e| format!("[alerts] drain: `{drain}` is not a duration like \"5s\": {e}"))?;
    }
    for (i, hook) in table.webhook.into_iter().enumerate() {
        let what = format!("[[alerts.webhook]] #{}", i + 1);
        if hook.secret.is_some() {
            return Err(format!(
                "{what}: the HMAC key is never written in the config file; put it in a file \
                 (secret_file = \"PATH\") or an environment variable (secret_env = \"NAME\")"
            ));
        }
        let url: url::Url = hook.url.parse().map_err(|e| format!("{what} url `{}`: {e}", hook.url))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(format!(
                    "{what} url `{url}`: plain http is only allowed to a receiver on this machine (127.0.0.1, ::1, localhost); use https"
                ));
            }
            other => return Err(format!("{what} url `{url}`: the scheme must be https (not `{other}`)")),
        }
        let key = match (hook.secret_file, hook.secret_env) {
            (Some(file), None) => KeySource::File(base.join(file)),
            (None, Some(name)) if !name.is_empty() => KeySource::Env(name),
            (None, Some(_)) => return Err(format!("{what} secret_env must name a variable")),
            (Some(_), Some(_)) => return Err(format!("{what}: give secret_file or secret_env, not both")),
            (None, None) => {
                return Err(format!(
                    "{what}: the HMAC key that signs alerts is missing; add secret_file = \"PATH\" or secret_env = \"NAME\""
                ));
            }
        };
        let mut webhook = WebhookConfig::new(url, key);
        if let Some(retries) = hook.retries {
            if retries > WebhookConfig::MAX_RETRIES {
                return Err(format!("{what} retries must be at most {} (got {retries})", WebhookConfig::MAX_RETRIES));
            }
            webhook.retries = retries;
        }
        if let Some(t) = &hook.timeout {
            webhook.timeout = duration(&format!("{what} timeout"), t)?;
        }
        if let Some(t) = &hook.backoff {
            webhook.backoff = duration(&format!("{what} backoff"), t)?;
        }
        webhook.min_severity = severity(&what, &hook.min_severity)?;
        config.webhooks.push(webhook);
    }
    for (i, command) in table.command.into_iter().enumerate() {
        let what = format!("[[alerts.command]] #{}", i + 1);
        let mut argv = command.argv;
        match argv.first() {
            None => return Err(format!("{what} argv must name a program: argv = [\"/path/to/program\", \"arg\"]")),
            Some(p) if p.is_empty() => return Err(format!("{what} argv's program is empty")),
            // `./notify` and `bin/notify` are relative to the config file; a bare name is looked up in PATH.
            Some(p) if p.contains('/') && Path::new(p).is_relative() => {
                argv[0] = base.join(p).display().to_string();
            }
            Some(_) => {}
        }
        let mut cmd = CommandConfig::new(argv);
        if let Some(t) = &command.timeout {
            cmd.timeout = duration(&format!("{what} timeout"), t)?;
        }
        cmd.min_severity = severity(&what, &command.min_severity)?;
        config.commands.push(cmd);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RuntimeConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, text).unwrap();
        RuntimeConfig::default().apply_file(&path)
    }

    fn error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn alerts_table_is_read_with_paths_relative_to_the_file() {
        let config = load(
            r#"
            [alerts]
            burst = { count = 4, window = "2m" }
            first_use = false
            queue = 16
            drain = "1s"

            [[alerts.webhook]]
            url = "https://hooks.example.com/skillbox"
            secret_file = "webhook.key"
            retries = 2
            timeout = "3s"
            backoff = "250ms"
            min_severity = "warning"

            [[alerts.webhook]]
            url = "http://127.0.0.1:9000/hook"
            secret_env = "HOOK_KEY"

            [[alerts.command]]
            argv = ["bin/notify", "--quiet"]
            "#,
        )
        .unwrap();
        let alerts = &config.alerts;
        assert_eq!((alerts.burst.count, alerts.burst.window), (4, Duration::from_secs(120)));
        assert!(!alerts.first_use);
        assert_eq!((alerts.queue, alerts.drain), (16, Duration::from_secs(1)));
        let hook = &alerts.webhooks[0];
        assert!(
            matches!(&hook.key, skillbox_alerts::KeySource::File(p) if p.ends_with("webhook.key") && p.is_absolute())
        );
        assert_eq!((hook.retries, hook.timeout, hook.backoff), (2, Duration::from_secs(3), Duration::from_millis(250)));
        assert_eq!(hook.min_severity, skillbox_alerts::Severity::Warning);
        assert_eq!(alerts.webhooks[1].key, skillbox_alerts::KeySource::Env("HOOK_KEY".into()));
        assert!(alerts.commands[0].argv[0].ends_with("/bin/notify") && alerts.commands[0].argv[0].starts_with('/'));
        assert_eq!(alerts.commands[0].argv[1], "--quiet");
        assert!(load("").unwrap().alerts.webhooks.is_empty());
    }

    #[test]
    fn bad_alert_settings_are_named() {
        let hook = |extra: &str| format!("[[alerts.webhook]]\nurl = \"https://h.example/x\"\n{extra}");
        assert!(error(&hook("secret = \"abc\"")).contains("never written in the config"));
        assert!(error(&hook("")).contains("secret_file"));
        assert!(error(&hook("secret_file = \"a\"\nsecret_env = \"B\"")).contains("not both"));
        assert!(error(&hook("secret_env = \"K\"\nretries = 99")).contains("at most 20"));
        assert!(error(&hook("secret_env = \"K\"\ntimeout = \"soon\"")).contains("timeout"));
        assert!(error(&hook("secret_env = \"K\"\nmin_severity = \"loud\"")).contains("info, warning or critical"));
        let plain = error("[[alerts.webhook]]\nurl = \"http://hooks.example.com/x\"\nsecret_env = \"K\"");
        assert!(plain.contains("use https"), "{plain}");
        assert!(error("[[alerts.webhook]]\nurl = \"ftp://h/x\"\nsecret_env = \"K\"").contains("scheme"));
        assert!(error("[[alerts.webhook]]\nurl = \"not a url\"\nsecret_env = \"K\"").contains("url"));
        assert!(error("[[alerts.command]]\nargv = []").contains("must name a program"));
        assert!(error("[alerts]\nburst = { count = 0, window = \"5m\" }").contains("at least 1"));
        assert!(error("[alerts]\nburst = { count = 3, window = \"0s\" }").contains("more than 0"));
        assert!(error("[alerts]\nqueue = 0").contains("queue"));
        assert!(error("[alerts]\nsinks = 1").contains("unknown field"));
    }
}
