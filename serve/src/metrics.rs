//! Counters for `GET /metrics`, in the Prometheus text format: calls, failures by class and
//! time spent, per skill.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use skillbox_runtime::Error as RunError;

/// Per-skill counters.
#[derive(Debug, Default, Clone)]
struct SkillStats {
    calls: u64,
    seconds: f64,
    /// Failures by class (`denied`, `tripwire`, `limit`, `input`, `failed`).
    failures: BTreeMap<&'static str, u64>,
}

/// What the server has done since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    skills: Mutex<BTreeMap<String, SkillStats>>,
    busy: std::sync::atomic::AtomicU64,
}

/// The class of a failed call, as metrics and HTTP statuses group them.
pub(crate) fn class(error: &RunError) -> &'static str {
    match error {
        RunError::InputSchema { .. } | RunError::InvalidInput(_) => "input",
        RunError::Denied { .. } => "denied",
        RunError::Tripwire { .. } => "tripwire",
        e if e.is_limit() => "limit",
        RunError::SkillFailed { .. } | RunError::Trap { .. } | RunError::InvalidOutput { .. } => "failed",
        _ => "error",
    }
}

impl Metrics {
    /// Records one call of `skill`.
    pub fn record(&self, skill: &str, took: Duration, error: Option<&RunError>) {
        let mut skills = self.skills.lock().unwrap_or_else(|p| p.into_inner());
        let stats = skills.entry(skill.to_owned()).or_default();
        stats.calls += 1;
        stats.seconds += took.as_secs_f64();
        if let Some(e) = error {
            *stats.failures.entry(class(e)).or_default() += 1;
        }
    }

    /// Records a call turned away because the server was at capacity.
    pub fn record_busy(&self) {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The Prometheus text exposition; `in_flight` is how many calls are running or waiting.
    pub fn render(&self, in_flight: usize) -> String {
        let skills = self.skills.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP skillbox_invocations_total Skill invocations, by skill.");
        let _ = writeln!(out, "# TYPE skillbox_invocations_total counter");
        for (name, s) in &skills {
            let _ = writeln!(out, "skillbox_invocations_total{{skill=\"{name}\"}} {}", s.calls);
        }
        let _ = writeln!(out, "# HELP skillbox_invocation_seconds_total Time spent in invocations, by skill.");
        let _ = writeln!(out, "# TYPE skillbox_invocation_seconds_total counter");
        for (name, s) in &skills {
            let _ = writeln!(out, "skillbox_invocation_seconds_total{{skill=\"{name}\"}} {}", s.seconds);
        }
        let _ = writeln!(
            out,
            "# HELP skillbox_failures_total Failed invocations, by skill and class (denied, tripwire, limit, input, failed, error)."
        );
        let _ = writeln!(out, "# TYPE skillbox_failures_total counter");
        for (name, s) in &skills {
            for (class, n) in &s.failures {
                let _ = writeln!(out, "skillbox_failures_total{{skill=\"{name}\",class=\"{class}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP skillbox_busy_total Calls refused because the server was at capacity.");
        let _ = writeln!(out, "# TYPE skillbox_busy_total counter");
        let _ = writeln!(out, "skillbox_busy_total {}", self.busy.load(std::sync::atomic::Ordering::Relaxed));
        let _ = writeln!(out, "# HELP skillbox_in_flight Calls running or waiting for a slot.");
        let _ = writeln!(out, "# TYPE skillbox_in_flight gauge");
        let _ = writeln!(out, "skillbox_in_flight {in_flight}");
        out
    }
}
