//! `skillbox cred test NAME`: checks that a credential works, without showing it.
//!
//! - A `database` credential connects the way `sql.query` does (TLS unless loopback, the
//!   privileged-role check; SQLite read-only) and runs `SELECT 1`
//!   ([`skillbox_host_api::check_database`]).
//! - An HTTP credential (`bearer`, `oauth2`, `api_key`, `basic`) sends one `GET` to its test URL
//!   (`cred add/update --test-url`, or `--url`) through the egress pipeline skills use: scheme
//!   and address checks, the credential's hosts (from its grants), injection on the host side,
//!   redirects, the response scanned. It reports the status; 2xx is success.
//! - An `oauth2` credential first proves it can refresh: one refresh (stored as a new version,
//!   with its `refresh` row, single-flight with every other user of the vault), then the request
//!   with the new token.
//!
//! Every test writes a `use` row (purpose `cred test`; the operation, host or database, status
//! and duration in its detail), or a `denied` row when skillbox's own rules refused it. Nothing
//! printed or recorded holds a secret: every line goes through a redactor of the value's
//! secret fields.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use clap::Args;
use secrecy::SecretString;
use serde::Serialize;
use skillbox_host_api::HttpAuth;
use skillbox_oauth::Refresher;
use skillbox_runtime::display::escape;
use skillbox_runtime::egress::{
    Auth, Egress, EgressError, HostPattern, Injection, Policy, Redactor, Request, Scanner, SecretMatcher,
};
use skillbox_vault::{
    AuditAction, AuditEvent, CredentialDetail, CredentialKind, CredentialRef, Database, Environment, SecretValue,
    Status, Vault,
};

use super::{IdOpts, KeyOpts, actor, cref, open_vault_with, usage, vault_err};
use crate::GlobalOpts;
use crate::exit::{self, with_code};

/// The purpose recorded on every row `cred test` writes.
const PURPOSE: &str = "cred test";

/// `skillbox cred test NAME`
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Credential name.
    pub name: String,
    #[command(flatten)]
    pub id: IdOpts,
    /// HTTP credentials: request this URL instead of the recorded test URL (`cred update
    /// --test-url`). Its host must be one the credential may be sent to.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// HTTP credentials: how the credential goes on the request: bearer, basic,
    /// header:NAME[:PREFIX] or query:PARAM [default: as its grants' pinned manifests say; else
    /// bearer for bearer and oauth2, basic for basic].
    #[arg(long, value_name = "STYLE")]
    pub http: Option<String>,
    /// oauth2: do not refresh first (by default the test proves a refresh works: it gets one
    /// new access token, stores it as a new version, and sends the request with it).
    #[arg(long)]
    pub no_refresh: bool,
    /// Allow plain http to loopback (127.0.0.0/8, ::1, localhost) for the test URL and the
    /// token endpoint: local test servers.
    #[arg(long)]
    pub allow_http_loopback: bool,
    /// JSON output: one object saying what was tried and how it went.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: KeyOpts,
}

/// What `cred test` found, printed as text or JSON. Never holds a secret.
#[derive(Debug, Serialize)]
struct Report {
    credential: String,
    kind: CredentialKind,
    environment: Environment,
    owner: String,
    /// True when the credential works.
    ok: bool,
    /// oauth2: the refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<RefreshReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<HttpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<DatabaseReport>,
    /// What went wrong.
    error: Option<String>,
    /// What to do about it.
    hint: Option<String>,
    /// The audit row written: `use` or `denied`.
    audit: &'static str,
}

#[derive(Debug, Serialize)]
struct RefreshReport {
    ok: bool,
    /// True when the token was still good and was refreshed only to prove it can be.
    forced: bool,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct HttpReport {
    method: &'static str,
    url: String,
    /// How the credential was put on the request.
    auth: String,
    /// Where it may go (from its grants, or the test URL's host when no grant says).
    hosts: Vec<String>,
    /// `host[:port]` of the final URL.
    host: Option<String>,
    status: Option<u16>,
    redirects: u32,
    credential_sent: bool,
    /// True after a `401` made the host refresh an oauth2 token and send again.
    retried_after_401: bool,
    duration_ms: u64,
}

#[derive(Debug, Serialize)]
struct DatabaseReport {
    target: String,
    statement: &'static str,
    /// Why the role counts as privileged (allowed by the credential); empty otherwise.
    privileges: Vec<String>,
    duration_ms: u64,
}

/// How a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Works,
    /// skillbox's own rules refused it (a host the credential may not go to, plain http
    /// without --allow-http-loopback, a privileged role): exit 4, a `denied` row.
    Denied,
    /// It was tried and did not work: exit 6.
    Failed,
}

pub fn test(global: &GlobalOpts, a: TestArgs) -> anyhow::Result<ExitCode> {
    let r = cref(&a.name, &a.id)?;
    let vault = open_vault_with(global, a.key.key_file.as_deref())?;
    let detail = vault.show(&r).map_err(vault_err)?;
    let info = &detail.info;
    if info.status == Status::Revoked {
        return Err(with_code(
            exit::DENIED,
            anyhow::anyhow!(
                "credential '{}' in {} is revoked ({}): skills cannot use it, so there is nothing to test; store a \
                 new value with `skillbox cred rotate {}{}`",
                escape(&r.name),
                r.environment,
                escape(info.revoked_reason.as_deref().unwrap_or("no reason recorded")),
                escape(&r.name),
                flags(&r)
            ),
        ));
    }
    if let Some(at) = info.expires_at.filter(|t| *t <= SystemTime::now()) {
        return Err(with_code(
            exit::DENIED,
            anyhow::anyhow!(
                "credential '{}' in {} expired at {}: skills are refused it; store a new value with `skillbox cred \
                 rotate {}{} --expires WHEN`",
                escape(&r.name),
                r.environment,
                humantime::format_rfc3339_seconds(at),
                escape(&r.name),
                flags(&r)
            ),
        ));
    }
    let plan = plan(&r, &detail, &a)?;
    let mut config = crate::skills::runtime_config(global)?;
    config.egress.allow_http_loopback = a.allow_http_loopback;
    let runtime = crate::skills::tokio_runtime()?;
    // Only now is the value decrypted (a `read` row, purpose `cred test`).
    let value = vault.reveal(&r, &actor(), Some(PURPOSE)).map_err(vault_err)?;
    let mut redactor = Redactor::empty();
    redactor.push(Arc::new(SecretMatcher::new(&r.name, value.secret_fields())));
    let mut report = Report {
        credential: r.name.clone(),
        kind: info.kind,
        environment: r.environment,
        owner: r.owner.clone(),
        ok: false,
        refresh: None,
        http: None,
        database: None,
        error: None,
        hint: None,
        audit: "use",
    };
    let (outcome, event) = match plan {
        Plan::Database => runtime.block_on(test_database(&r, &value, &mut report)),
        Plan::Http(http) => runtime.block_on(test_http(
            global,
            &vault,
            &info.id,
            &r,
            value,
            &http,
            &a,
            &config,
            &mut redactor,
            &mut report,
        ))?,
    };
    report.ok = outcome == Outcome::Works;
    if outcome == Outcome::Denied {
        report.audit = "denied";
    }
    // Everything printed or recorded goes through the redactor (the value, and any token a
    // refresh brought): belt and braces, since no message should hold one in the first place.
    let clean = |text: &str| String::from_utf8_lossy(&redactor.redact(text.as_bytes())).into_owned();
    report.error = report.error.as_deref().map(clean);
    report.hint = report.hint.as_deref().map(clean);
    let mut event = event;
    event.error = report.error.clone();
    event.detail = serde_json::from_str(&clean(&event.detail.to_string())).unwrap_or(event.detail);
    vault.record(&event).map_err(vault_err)?;
    if a.json {
        let text = clean(&serde_json::to_string_pretty(&report).expect("a report serializes"));
        println!("{text}");
    } else {
        print_report(&report, &clean);
    }
    Ok(match outcome {
        Outcome::Works => ExitCode::SUCCESS,
        Outcome::Denied => ExitCode::from(exit::DENIED),
        Outcome::Failed => ExitCode::from(exit::CRED_TEST_FAILED),
    })
}

/// What will be tried, decided from metadata alone (before anything is decrypted).
enum Plan {
    Database,
    Http(HttpPlan),
}

struct HttpPlan {
    url: String,
    style: HttpAuth,
    /// Where the style came from, for the report.
    style_source: &'static str,
    hosts: Vec<String>,
}

fn plan(r: &CredentialRef, detail: &CredentialDetail, a: &TestArgs) -> anyhow::Result<Plan> {
    let info = &detail.info;
    let name = escape(&r.name);
    match info.kind {
        CredentialKind::Database => {
            if a.url.is_some() || a.http.is_some() {
                return Err(usage(anyhow::anyhow!(
                    "--url and --http apply to HTTP credentials; '{name}' is a database credential (it is tested \
                     by connecting and running SELECT 1)"
                )));
            }
            return Ok(Plan::Database);
        }
        CredentialKind::ApiKey | CredentialKind::Bearer | CredentialKind::OAuth2 | CredentialKind::Basic => {}
        CredentialKind::HmacKey => {
            return Err(usage(anyhow::anyhow!(
                "credential '{name}' is an hmac_key: it never leaves the host (skills get only the MACs it makes), so \
                 there is no service to test it against"
            )));
        }
        other => {
            return Err(usage(anyhow::anyhow!(
                "credential '{name}' is a {other} credential, which the host does not send over HTTP or to a \
                 database, so `cred test` cannot try it"
            )));
        }
    }
    let url = match a.url.clone().or_else(|| info.test_url.clone()) {
        Some(url) => url,
        None => {
            return Err(usage(anyhow::anyhow!(
                "credential '{name}' has no test URL: record one with `skillbox cred update {name}{} --test-url \
                 https://...` (a URL of the service that answers 2xx only to a valid credential), or pass --url URL",
                flags(r)
            )));
        }
    };
    let (style, style_source) = match &a.http {
        Some(text) => (parse_style(text)?, "--http"),
        None => pinned_style(r, detail)?,
    };
    let mut hosts: Vec<String> = detail.grants.iter().filter_map(|g| g.pinned_hosts()).flatten().collect();
    hosts.sort();
    hosts.dedup();
    if hosts.is_empty() {
        // No grant says where it may go: the operator's own test URL is the one place.
        hosts.push(authority(&url).ok_or_else(|| {
            usage(anyhow::anyhow!(
                "the test URL `{}` names no host: record a URL like https://api.example.com/v1/me",
                escape(&url)
            ))
        })?);
    }
    Ok(Plan::Http(HttpPlan { url, style, style_source, hosts }))
}

/// `--http`: bearer, basic, header:NAME[:PREFIX] or query:PARAM.
fn parse_style(text: &str) -> anyhow::Result<HttpAuth> {
    let bad = || {
        usage(anyhow::anyhow!(
            "--http {}: give bearer, basic, header:NAME[:PREFIX] (like header:X-Api-Key) or query:PARAM (like \
             query:key)",
            escape(text)
        ))
    };
    Ok(match text.split_once(':') {
        None if text == "bearer" => HttpAuth::Bearer,
        None if text == "basic" => HttpAuth::Basic,
        Some(("header", rest)) => {
            let (name, prefix) = rest.split_once(':').unwrap_or((rest, ""));
            if name.is_empty() {
                return Err(bad());
            }
            HttpAuth::Header { name: name.to_owned(), prefix: prefix.to_owned() }
        }
        Some(("query", param)) if !param.is_empty() => HttpAuth::Query { param: param.to_owned() },
        _ => return Err(bad()),
    })
}

/// The HTTP style the credential's grants pinned (from the skills' manifests), else the one its
/// kind implies.
fn pinned_style(r: &CredentialRef, detail: &CredentialDetail) -> anyhow::Result<(HttpAuth, &'static str)> {
    let mut styles: Vec<HttpAuth> = Vec::new();
    for grant in &detail.grants {
        let Some(policy) = grant.policy.as_deref() else { continue };
        let Ok(policy) = serde_json::from_str::<serde_json::Value>(policy) else { continue };
        let Some(http) = policy.get("http").filter(|v| !v.is_null()) else { continue };
        if let Ok(style) = serde_json::from_value::<HttpAuth>(http.clone())
            && !styles.contains(&style)
        {
            styles.push(style);
        }
    }
    let name = escape(&r.name);
    match styles.len() {
        1 => return Ok((styles.remove(0), "its grants")),
        0 => {}
        _ => {
            return Err(usage(anyhow::anyhow!(
                "the skills granted '{name}' send it in different ways ({}); say which to test with --http bearer, \
                 basic, header:NAME[:PREFIX] or query:PARAM",
                styles.iter().map(style_text).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    match detail.info.kind {
        CredentialKind::Bearer | CredentialKind::OAuth2 => Ok((HttpAuth::Bearer, "its kind")),
        CredentialKind::Basic => Ok((HttpAuth::Basic, "its kind")),
        kind => Err(usage(anyhow::anyhow!(
            "credential '{name}' is an {kind} and no grant records how it is sent (a skill's manifest says it with \
             `http = ...`): pass --http bearer, basic, header:NAME[:PREFIX] (like header:X-Api-Key) or query:PARAM"
        ))),
    }
}

fn style_text(style: &HttpAuth) -> String {
    match style {
        HttpAuth::Bearer => "bearer".into(),
        HttpAuth::Basic => "basic".into(),
        HttpAuth::Header { name, prefix } if prefix.is_empty() => format!("header:{name}"),
        HttpAuth::Header { name, prefix } => format!("header:{name}:{prefix}"),
        HttpAuth::Query { param } => format!("query:{param}"),
    }
}

/// Refuses a test URL the vault would refuse (`cred add --test-url` checks it before the
/// credential is stored, so a bad URL does not leave a credential half set up).
pub fn check_test_url(url: &str) -> anyhow::Result<()> {
    let bad = |reason: &str| usage(anyhow::anyhow!("--test-url {}: {reason}", escape(url)));
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("must be at most 2048 characters, without spaces or control characters"));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(bad("must start with https:// (or http:// for a loopback test server)"));
    }
    match url.split_once("://").and_then(|(_, rest)| rest.split(['/', '?', '#']).next()) {
        Some(a) if a.contains('@') => Err(bad(
            "must not hold a user name or password (it is stored and shown in clear); the credential supplies them",
        )),
        Some(a) if !a.is_empty() => Ok(()),
        _ => Err(bad("names no host (give a URL like https://api.example.com/v1/me)")),
    }
}

/// `host[:port]` of an http(s) URL, as a host pattern takes it (no user info).
fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty() && !authority.contains('@')).then(|| authority.to_owned())
}

/// ` --env E --owner O` when they are not the defaults.
fn flags(r: &CredentialRef) -> String {
    let mut flags = String::new();
    if r.environment != Environment::Dev {
        flags += &format!(" --env {}", r.environment);
    }
    if r.owner != skillbox_vault::DEFAULT_OWNER {
        flags += &format!(" --owner {}", escape(&r.owner));
    }
    flags
}

/// An audit event about `r` by this operator.
fn event(r: &CredentialRef, action: AuditAction, detail: serde_json::Value, success: bool) -> AuditEvent {
    let mut event = AuditEvent::new(action, actor());
    event.credential = Some(r.clone());
    event.purpose = Some(PURPOSE.to_owned());
    event.detail = detail;
    event.success = success;
    event
}

async fn test_database(r: &CredentialRef, value: &SecretValue, report: &mut Report) -> (Outcome, AuditEvent) {
    let Some(database) = value.as_database() else { unreachable!("a database credential holds a database value") };
    let started = Instant::now();
    let check = skillbox_host_api::check_database(&r.name, database).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let outcome = match (&check.error, check.denied) {
        (None, _) => Outcome::Works,
        (Some(_), true) => Outcome::Denied,
        (Some(_), false) => Outcome::Failed,
    };
    let mut detail = serde_json::json!({
        "operation": "sql.query",
        "statement": "SELECT 1",
        "database": check.target,
        "duration_ms": duration_ms,
        "test": true,
    });
    if !check.privileges.is_empty() {
        detail["privileged_role"] = true.into();
        detail["role_privileges"] = check.privileges.clone().into();
    }
    report.error = check.error.clone();
    if outcome == Outcome::Failed {
        report.hint = Some(match database {
            Database::Sqlite { .. } => format!(
                "check that the file exists and is readable by this user, then store the right path with `skillbox \
                 cred rotate {}{} --value-stdin`",
                r.name,
                flags(r)
            ),
            _ => format!(
                "check the host, port, database, user and password at the server, then store the right ones with \
                 `skillbox cred rotate {}{} --value-stdin`",
                r.name,
                flags(r)
            ),
        });
    }
    report.database =
        Some(DatabaseReport { target: check.target, statement: "SELECT 1", privileges: check.privileges, duration_ms });
    let action = if outcome == Outcome::Denied { AuditAction::Denied } else { AuditAction::Use };
    (outcome, event(r, action, detail, outcome == Outcome::Works))
}

#[allow(clippy::too_many_arguments)]
async fn test_http(
    global: &GlobalOpts,
    vault: &Vault,
    id: &str,
    r: &CredentialRef,
    mut value: SecretValue,
    plan: &HttpPlan,
    a: &TestArgs,
    config: &skillbox_runtime::RuntimeConfig,
    redactor: &mut Redactor,
    report: &mut Report,
) -> anyhow::Result<(Outcome, AuditEvent)> {
    let hosts = plan
        .hosts
        .iter()
        .map(|h| HostPattern::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(anyhow::anyhow!("credential '{}': {e}", escape(&r.name))))?;
    let mut detail = serde_json::json!({ "operation": "http.send", "method": "GET", "test": true });
    let refresher =
        Refresher::new(a.allow_http_loopback).map_err(|e| anyhow::anyhow!("cannot build the OAuth 2 client: {e}"))?;
    let mut refreshed = false;

    // oauth2: prove a refresh works (one new token, stored as a new version), then use it.
    if value.kind() == CredentialKind::OAuth2 && !a.no_refresh {
        let forced = !Refresher::needs_refresh(&value);
        match refresher.fresh(vault, id, r, &value, forced).await {
            Ok(fresh) => {
                if let Some(fresh) = fresh {
                    value = fresh;
                    redactor.push(Arc::new(SecretMatcher::new(&r.name, value.secret_fields())));
                }
                refreshed = true;
                detail["refreshed"] = true.into();
                report.refresh = Some(RefreshReport { ok: true, forced, error: None });
            }
            Err(e) => {
                let (message, hint) = refresh_failed(global, vault, r, &e).await;
                detail["refreshed"] = false.into();
                report.refresh = Some(RefreshReport { ok: false, forced, error: Some(message.clone()) });
                report.error = Some(message);
                report.hint = Some(hint);
                return Ok((Outcome::Failed, event(r, AuditAction::Use, detail, false)));
            }
        }
    }

    let egress = Egress::new(config.egress.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut http = HttpReport {
        method: "GET",
        url: plan.url.clone(),
        auth: format!("{} (from {})", style_text(&plan.style), plan.style_source),
        hosts: plan.hosts.clone(),
        host: None,
        status: None,
        redirects: 0,
        credential_sent: false,
        retried_after_401: false,
        duration_ms: 0,
    };
    let started = Instant::now();
    let outcome = loop {
        let injection = match auth(&value, &plan.style)
            .and_then(|auth| Injection::named(&r.name, auth, hosts.clone()).map_err(|e| e.to_string()))
        {
            Ok(injection) => injection,
            Err(message) => {
                report.error = Some(format!("credential '{}' cannot be sent over HTTP: {message}", r.name));
                report.hint = Some("pass another --http style, or store a value that fits it".into());
                break Outcome::Failed;
            }
        };
        let scanner = Scanner {
            secrets: redactor.clone(),
            rules: config.scan.rules.clone(),
            foreign: config.scan.foreign,
            limits: config.scan.limits,
        };
        let request = Request { method: "GET".into(), url: plan.url.clone(), ..Request::default() };
        match egress.send(&Policy::default(), request, Some(&injection), &scanner).await {
            Ok(exchange) => {
                let status = exchange.response.status;
                http.host = Some(exchange.host.clone());
                http.status = Some(status);
                http.redirects = exchange.redirects;
                http.credential_sent = exchange.credential_sent;
                // A 401 to an oauth2 credential not refreshed yet: refresh once and send again,
                // as the host does for a skill.
                if status == 401
                    && !refreshed
                    && let SecretValue::OAuth2(token) = &value
                    && token.can_refresh()
                {
                    refreshed = true;
                    match refresher.fresh(vault, id, r, &value, true).await {
                        Ok(Some(fresh)) => {
                            value = fresh;
                            redactor.push(Arc::new(SecretMatcher::new(&r.name, value.secret_fields())));
                            http.retried_after_401 = true;
                            detail["refreshed"] = true.into();
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let (message, hint) = refresh_failed(global, vault, r, &e).await;
                            report.refresh = Some(RefreshReport { ok: false, forced: true, error: Some(message) });
                            report.hint = Some(hint);
                        }
                    }
                }
                if (200..300).contains(&status) {
                    break Outcome::Works;
                }
                report.error = Some(match status {
                    401 | 403 => format!("the server refused the credential: HTTP {status}"),
                    _ => format!("the server answered HTTP {status}, not 2xx"),
                });
                if report.hint.is_none() {
                    report.hint = Some(match status {
                        401 | 403 => format!(
                            "the credential is wrong, expired or lacks the scope this URL needs: get a new one from \
                             the issuer and store it with `skillbox cred rotate {}{}`",
                            r.name,
                            flags(r)
                        ),
                        _ => format!(
                            "check that the test URL is an endpoint that answers 2xx to a valid credential (record \
                             another with `skillbox cred update {}{} --test-url URL`)",
                            r.name,
                            flags(r)
                        ),
                    });
                }
                break Outcome::Failed;
            }
            Err(e) => {
                let (outcome, message, hint) = egress_failure(r, plan, &e);
                report.error = Some(message);
                report.hint = hint;
                break outcome;
            }
        }
    };
    http.duration_ms = started.elapsed().as_millis() as u64;
    detail["duration_ms"] = http.duration_ms.into();
    if let Some(host) = &http.host {
        detail["host"] = host.clone().into();
    } else if let Some(host) = authority(&plan.url) {
        detail["host"] = host.into();
    }
    if let Some(status) = http.status {
        detail["status"] = status.into();
        detail["redirects"] = http.redirects.into();
        detail["credential_sent"] = http.credential_sent.into();
    }
    report.http = Some(http);
    let action = if outcome == Outcome::Denied { AuditAction::Denied } else { AuditAction::Use };
    Ok((outcome, event(r, action, detail, outcome == Outcome::Works)))
}

/// The credential as the host would inject it in `style` (as `http.send` does for a skill).
fn auth(value: &SecretValue, style: &HttpAuth) -> Result<Auth, String> {
    let (primary, secondary): (SecretString, Option<SecretString>) = match value {
        SecretValue::ApiKey(k) => (k.key.clone(), k.secret.clone()),
        SecretValue::Bearer(t) | SecretValue::OAuth2(t) => (t.access_token.clone(), None),
        SecretValue::Basic(b) => (b.password.clone(), None),
        other => return Err(format!("a {} value is not sent over HTTP", other.kind())),
    };
    Ok(match style {
        HttpAuth::Bearer => Auth::Bearer(primary),
        HttpAuth::Basic => match value {
            SecretValue::Basic(basic) => {
                Auth::Basic { username: SecretString::from(basic.username.clone()), password: basic.password.clone() }
            }
            _ => Auth::Basic { username: primary, password: secondary.unwrap_or_else(|| SecretString::from("")) },
        },
        HttpAuth::Header { name, prefix } => {
            Auth::Header { name: name.clone(), prefix: prefix.clone(), value: primary }
        }
        HttpAuth::Query { param } => Auth::Query { param: param.clone(), value: primary },
    })
}

/// A pipeline refusal or failure: its outcome, message and what to do.
fn egress_failure(r: &CredentialRef, plan: &HttpPlan, e: &EgressError) -> (Outcome, String, Option<String>) {
    let name = &r.name;
    match e {
        EgressError::CredentialHostNotAllowed { host, allowed } => (
            Outcome::Denied,
            format!(
                "the test URL's host {host} is not one credential '{name}' may be sent to (its grants allow: {}); \
                 nothing was sent",
                allowed.join(", ")
            ),
            Some(format!(
                "record a test URL on one of those hosts with `skillbox cred update {name}{} --test-url URL` (or \
                 pass --url), or, if {host} is right, give the grant that host: `skillbox grant SKILL {name} --hosts \
                 {host}`",
                flags(r)
            )),
        ),
        EgressError::SchemeNotAllowed { .. } | EgressError::AddressNotAllowed { .. } => (
            Outcome::Denied,
            format!("{e}; nothing was sent"),
            Some(
                "for a test server on this machine pass --allow-http-loopback (plain http to 127.0.0.0/8, ::1 and \
                 localhost only); anything else must be https to a public address"
                    .into(),
            ),
        ),
        EgressError::Tripwire { .. } | EgressError::SecretInRequest { .. } => (
            Outcome::Denied,
            "the test URL holds the credential's own secret; nothing was sent".into(),
            Some(format!(
                "record a test URL without it (`skillbox cred update {name}{} --test-url URL`): skillbox adds the \
                 credential itself",
                flags(r)
            )),
        ),
        EgressError::BadRequest { .. } => (
            Outcome::Failed,
            format!("the test URL `{}` cannot be requested: {e}", plan.url),
            Some(format!("record a valid one with `skillbox cred update {name}{} --test-url URL`", flags(r))),
        ),
        EgressError::RedirectNotAllowed { .. } => (
            Outcome::Failed,
            e.to_string(),
            Some(format!(
                "record the URL the service finally answers at as the test URL (`skillbox cred update {name}{} \
                 --test-url URL`)",
                flags(r)
            )),
        ),
        _ => (Outcome::Failed, e.to_string(), None),
    }
}

/// A failed oauth2 refresh, as the host treats it: `invalid_grant` marks the credential
/// `needs-reauth`; both raise an alert. Returns the message and what to do.
async fn refresh_failed(
    global: &GlobalOpts,
    vault: &Vault,
    r: &CredentialRef,
    e: &skillbox_oauth::Error,
) -> (String, String) {
    use skillbox_runtime::alerts::AlertKind;
    let message = e.to_string();
    let kind = match e {
        skillbox_oauth::Error::InvalidGrant { code, .. } => {
            if let Err(e) = vault.mark_needs_reauth(r, &format!("refresh refused ({code})"), skillbox_oauth::ACTOR) {
                eprintln!("warning: could not mark '{}' as needing re-authorization: {e}", escape(&r.name));
            }
            AlertKind::NeedsReauth
        }
        _ => AlertKind::RefreshFailed,
    };
    alert(global, kind, r, &message).await;
    let hint = match e {
        skillbox_oauth::Error::InvalidGrant { .. } => {
            format!("sign in again: `skillbox oauth login {}{}`", r.name, flags(r))
        }
        skillbox_oauth::Error::NotRefreshable { .. } => format!(
            "store the token endpoint with a refresh token (or client id and secret) with `skillbox cred rotate {}{} \
             --value-stdin`, or test without refreshing: --no-refresh",
            r.name,
            flags(r)
        ),
        _ => "check that the token endpoint is reachable (plain http only to loopback, with --allow-http-loopback)"
            .into(),
    };
    (message, hint)
}

/// Raises `kind` about `r` through the configured sinks and waits for their deliveries.
async fn alert(global: &GlobalOpts, kind: skillbox_runtime::alerts::AlertKind, r: &CredentialRef, message: &str) {
    use skillbox_runtime::alerts::{Alert, Alerts, Subject};
    let deliver = async || -> anyhow::Result<Vec<String>> {
        let config = crate::skills::runtime_config(global)?;
        let alerts = Alerts::new(config.alerts, None)?;
        let subject = Subject {
            credential: Some(r.name.clone()),
            user: Some(r.owner.clone()),
            environment: Some(r.environment.as_str().to_owned()),
            ..Subject::default()
        };
        let alert = Alert::new(kind, subject, message.to_owned()).detail(serde_json::json!({ "source": PURPOSE }));
        let reports = alerts.deliver_now(&alert).await;
        Ok(reports.iter().filter(|r| !r.ok).map(ToString::to_string).collect())
    };
    match deliver().await {
        Ok(failed) => {
            for failure in failed {
                eprintln!("warning: the alert was not delivered: {}", escape(&failure));
            }
        }
        Err(e) => eprintln!("warning: the alert could not be sent: {e:#}"),
    }
}

fn print_report(report: &Report, clean: &dyn Fn(&str) -> String) {
    let p = |text: String| println!("{}", escape(&clean(&text)));
    let verdict = if report.ok { "works" } else { "FAILED" };
    p(format!(
        "credential '{}' ({}, {}, owner '{}'): {verdict}",
        report.credential, report.kind, report.environment, report.owner
    ));
    if let Some(refresh) = &report.refresh {
        p(match (refresh.ok, refresh.forced) {
            (true, true) => {
                "  refresh:  ok (the token was still good; refreshed once to prove it can be, and stored)".to_owned()
            }
            (true, false) => "  refresh:  ok (the token was expired or due; a new one was stored)".to_owned(),
            (false, _) => "  refresh:  failed".to_owned(),
        });
    }
    if let Some(http) = &report.http {
        p(match http.status {
            Some(s) => format!("  request:  {} {} -> HTTP {s} in {} ms", http.method, http.url, http.duration_ms),
            None => format!("  request:  {} {} -> no response", http.method, http.url),
        });
        p(format!("  auth:     {}; may go to {}", http.auth, http.hosts.join(", ")));
        if http.redirects > 0 {
            p(format!("  redirects: {} (credential sent: {})", http.redirects, http.credential_sent));
        }
        if http.retried_after_401 {
            p("  retried once after a 401 with a refreshed token".to_owned());
        }
    }
    if let Some(db) = &report.database {
        p(format!("  database: {} -> {} in {} ms", db.target, db.statement, db.duration_ms));
        if !db.privileges.is_empty() {
            p(format!(
                "  note:     the role is privileged ({}), allowed by the credential; every use is audited as such",
                db.privileges.join(", ")
            ));
        }
    }
    if let Some(error) = &report.error {
        p(format!("  error:    {error}"));
    }
    if let Some(hint) = &report.hint {
        p(format!("  fix:      {hint}"));
    }
    p(format!("  recorded: a `{}` audit row (purpose `{PURPOSE}`)", report.audit));
}
