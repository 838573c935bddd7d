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
        Ok(self)
    }
}
