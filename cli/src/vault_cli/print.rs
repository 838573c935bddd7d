//! Human output for vault commands (tables on stdout), and `--json`.

use std::process::ExitCode;
use std::time::SystemTime;

use skillbox_vault::{ApiKeyInfo, AuditEntry, AuditSummary, CredentialDetail, CredentialInfo, GrantInfo, GrantStatus};

/// Prints `value` as JSON when `json` is set, else with `human`.
pub fn json_or<T: serde::Serialize + ?Sized>(json: bool, value: &T, human: impl FnOnce(&T)) -> ExitCode {
    if json {
        self::json(value)
    } else {
        human(value)
    }
    ExitCode::SUCCESS
}

pub fn json<T: serde::Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("vault types serialize"));
}

/// `x` as text with control characters, newlines and bidi overrides escaped: names,
/// purposes, hosts and errors can come from a skill or its manifest, and must not forge
/// lines or rewrite the terminal.
fn e(x: impl std::fmt::Display) -> String {
    skillbox_runtime::display::escape(&x.to_string()).into_owned()
}

fn t(x: SystemTime) -> String {
    humantime::format_rfc3339_seconds(x).to_string()
}

fn opt_t(x: Option<SystemTime>) -> String {
    x.map(t).unwrap_or_else(|| "-".into())
}

pub fn cred_list(list: &[CredentialInfo]) {
    if list.is_empty() {
        eprintln!("no credentials (add one with `skillbox cred add NAME --type TYPE --service SERVICE`)");
        return;
    }
    println!(
        "{:<24} {:<11} {:<12} {:<9} {:<14} {:<8} {:>3} {:<6} EXPIRES",
        "NAME", "ENV", "OWNER", "TYPE", "SERVICE", "STATUS", "VER", "FP"
    );
    for c in list {
        println!(
            "{:<24} {:<11} {:<12} {:<9} {:<14} {:<8} {:>3} {:<6} {}",
            e(&c.name),
            c.environment,
            e(&c.owner),
            c.kind,
            e(&c.service),
            c.status,
            c.version,
            c.fingerprint,
            opt_t(c.expires_at)
        );
    }
}

pub fn cred_show(d: &CredentialDetail) {
    let c = &d.info;
    println!("name:         {}", e(&c.name));
    println!("id:           {}", c.id);
    println!("environment:  {}", c.environment);
    println!("owner:        {}", e(&c.owner));
    println!("type:         {}", c.kind);
    println!("service:      {}", e(&c.service));
    if let Some(desc) = &c.description {
        println!("description:  {}", e(desc));
    }
    if !c.scopes.is_empty() {
        println!("scopes:       {}", e(c.scopes.join(", ")));
    }
    match &c.revoked_reason {
        Some(r) => println!("status:       {} ({})", c.status, e(r)),
        None => println!("status:       {}", c.status),
    }
    println!("expires:      {}", opt_t(c.expires_at));
    println!("created:      {}", t(c.created_at));
    println!("updated:      {}", t(c.updated_at));
    println!("last rotated: {}", opt_t(c.last_rotated_at));
    println!("versions:");
    for v in &d.versions {
        println!(
            "  v{:<4} {:<8} {}  key {}  created {}",
            v.version,
            v.status,
            v.fingerprint,
            v.key_id,
            t(v.created_at)
        );
    }
    if d.grants.is_empty() {
        println!("grants:       none (default deny)");
    } else {
        println!("grants:");
        for g in &d.grants {
            println!(
                "  {} as '{}' ({}, {}), by {}, expires {}{}",
                e(&g.skill),
                e(&g.alias),
                g.access,
                g.status,
                e(&g.granted_by),
                opt_t(g.expires_at),
                match (&g.suspended_reason, g.status) {
                    (Some(r), GrantStatus::Suspended) => {
                        format!(": {}; re-enable with `{}`", e(r), e(g.grant_command()))
                    }
                    _ => String::new(),
                }
            );
        }
    }
}

pub fn grants(list: &[GrantInfo]) {
    if list.is_empty() {
        eprintln!("no grants (grant one with `skillbox grant SKILL CREDENTIAL --env ENV`)");
        return;
    }
    println!(
        "{:<20} {:<20} {:<20} {:<11} {:<10} {:<6} {:<9} {:<20} {:<14} {:<14} {:<8} HOSTS",
        "SKILL", "AS", "CREDENTIAL", "ENV", "OWNER", "ACCESS", "STATUS", "EXPIRES", "DIGEST", "POLICY", "RESPONSE"
    );
    for g in list {
        let digest = match (&g.skill_digest, g.any_digest) {
            (_, true) => "any".to_string(),
            (Some(d), _) => d[..12.min(d.len())].to_string(),
            (None, _) => "first use".to_string(),
        };
        let policy = g.policy_digest().map_or_else(|| "first use".to_string(), |d| d[..12].to_string());
        // The hosts the credential may go to: the operator's override, else the pinned manifest's.
        let hosts = match (&g.hosts, g.pinned_hosts()) {
            (Some(h), _) => format!("{} (--hosts)", e(h.join(","))),
            (None, Some(h)) if h.is_empty() => "(none)".to_string(),
            (None, Some(h)) => e(h.join(",")),
            (None, None) => "(manifest, pinned on first use)".to_string(),
        };
        println!(
            "{:<20} {:<20} {:<20} {:<11} {:<10} {:<6} {:<9} {:<20} {:<14} {:<14} {:<8} {}",
            e(&g.skill),
            e(&g.alias),
            e(&g.credential_name),
            g.environment,
            e(&g.owner),
            g.access,
            g.status,
            opt_t(g.expires_at),
            digest,
            policy,
            g.response.map(|m| m.as_str()).unwrap_or("-"),
            hosts
        );
    }
    // Why each suspended grant is off, and how to turn it back on.
    let suspended: Vec<&GrantInfo> = list.iter().filter(|g| g.status == GrantStatus::Suspended).collect();
    if !suspended.is_empty() {
        println!();
        for g in suspended {
            println!(
                "suspended {}: {} as '{}' in {}: {}; re-enable with `{}`",
                opt_t(g.suspended_at),
                e(&g.skill),
                e(&g.alias),
                g.environment,
                e(g.suspended_reason.as_deref().unwrap_or("no reason recorded")),
                e(g.grant_command())
            );
        }
    }
}

pub fn apikeys(list: &[ApiKeyInfo]) {
    if list.is_empty() {
        eprintln!("no API keys (create one with `skillbox apikey create NAME --user USER --env ENV`)");
        return;
    }
    println!(
        "{:<20} {:<12} {:<12} {:<11} {:<20} {:<20} {:<20} {:<20} STATUS",
        "NAME", "FINGERPRINT", "USER", "ENV", "SKILLS", "CREATED", "EXPIRES", "LAST-USED"
    );
    for k in list {
        println!(
            "{:<20} {:<12} {:<12} {:<11} {:<20} {:<20} {:<20} {:<20} {}",
            e(&k.name),
            k.fingerprint,
            e(&k.owner),
            k.environment,
            k.skills.as_ref().map_or_else(|| "(all)".to_string(), |s| e(s.join(","))),
            t(k.created_at),
            opt_t(k.expires_at),
            opt_t(k.last_used_at),
            k.status
        );
    }
}

pub fn audit_rows(rows: &[AuditEntry]) {
    for r in rows {
        println!(
            "{:>6} {} {:<10} {:<4} actor={} skill={} cred={} env={}{}{}",
            r.id,
            t(r.ts),
            r.action,
            if r.success { "ok" } else { "FAIL" },
            e(&r.actor),
            e(r.skill.as_deref().unwrap_or("-")),
            e(r.credential_name.as_deref().unwrap_or("-")),
            r.environment.map(|env| env.as_str()).unwrap_or("-"),
            release_summary(r),
            r.error.as_deref().map(|err| format!(" error={}", e(err))).unwrap_or_default()
        );
    }
}

/// For a `release` row: how many times the handle was used and how long it was held.
fn release_summary(r: &AuditEntry) -> String {
    if r.action != skillbox_vault::AuditAction::Release {
        return String::new();
    }
    let n = |key: &str| r.detail[key].as_u64().map_or_else(|| "?".to_owned(), |v| v.to_string());
    format!(" uses={} held={}ms", n("uses"), n("held_ms"))
}

pub fn summary(s: &AuditSummary) {
    println!("rows: {}  successes: {}  failures: {}  last: {}", s.total, s.successes, s.failures, opt_t(s.last_at));
    for (title, map) in [("by action", &s.by_action), ("by skill", &s.by_skill), ("by credential", &s.by_credential)] {
        println!("{title}:");
        for (k, n) in map {
            println!("  {:<24} {n}", e(k));
        }
    }
}
