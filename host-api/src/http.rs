//! Implementation for the `skillbox:skill/http` interface.
//!
//! A thin adapter: the guest's request goes through the egress pipeline
//! (`skillbox-egress`: allowlists, address checks, injection, redirects,
//! redaction), and every use of a credential is audited with the host,
//! method, status and duration — never the URL's path or query, which may
//! carry data the operator should not have to store.
//!
//! The request's sizes are checked first, before the pipeline parses, scans or
//! copies any part of it: a URL, header list or body over its limit is refused
//! with `limit`, and nothing is sent.

use std::time::Instant;

use skillbox_egress::{EgressError, Exchange, Request, Scanner};
use skillbox_vault::AuditAction;
use wasmtime::component::Resource;

use crate::SkillCtxView;
use crate::bindings::skillbox::skill::http;
use crate::credentials::OpenCredential;
use crate::error::HostError;
use crate::record::Recorder;

/// Longest URL a request may have, in bytes.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Most headers a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Most bytes a request's header names and values may hold together.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest method token (`GET`, `PROPFIND`, ...).
pub const MAX_METHOD_BYTES: usize = 32;

/// The operation name audit rows and tripwires give a `http.send` call.
const OPERATION: &str = "http.send";

impl http::Host for SkillCtxView<'_> {
    async fn send(
        &mut self,
        request: http::Request,
        auth: Option<Resource<OpenCredential>>,
    ) -> Result<http::Response, HostError> {
        let max_body = self.ctx.record.services.egress.config().max_request_body;
        if let Err(message) = check_sizes(&request.method, &request.url, &request.headers, request.body.len(), max_body)
        {
            return Err(self.ctx.refuse(message));
        }
        let method = request.method.clone();
        let request =
            Request { method: request.method, url: request.url, headers: request.headers, body: request.body };
        let mut retried = false;
        loop {
            let table = &*self.table;
            let credential = match &auth {
                Some(handle) => Some(table.get(handle)?),
                None => None,
            };
            if let Some(open) = credential {
                self.ctx.check_still_granted(open, OPERATION)?;
                if retried {
                    self.ctx.reserve_use_row(OPERATION)?;
                }
            }
            let injection = credential.map(|c| c.injection(&self.ctx.record.services)).transpose()?;
            let started = Instant::now();
            let ctx = &mut *self.ctx;
            let network = &ctx.record.invocation.policy.network;
            let result = ctx.record.services.egress.send(network, request.clone(), injection, &ctx.scanner).await;
            let Exchange { response, .. } =
                settle(&ctx.record, &ctx.scanner, credential, OPERATION, &method, started, result)?;
            // A 401 to an OAuth 2 credential: refresh once and send again.
            if response.status == 401
                && !retried
                && let Some(handle) = &auth
            {
                let open = self.table.get_mut(handle)?;
                if self.ctx.refresh_after_401(open).await? {
                    retried = true;
                    continue;
                }
            }
            return Ok(http::Response { status: response.status, headers: response.headers, body: response.body });
        }
    }
}

/// What follows the pipeline, for `http.send` and `wasi:http` alike: a tripwire ends the
/// invocation (recorded, with its audit row); blocked responses and foreign tokens get `leak`
/// rows; refusals get `denied` rows; and a use of `credential` gets its `use` row (host,
/// method, status, duration; never the path or query), which must be written or the response
/// is withheld (fail closed).
pub(crate) fn settle(
    record: &Recorder,
    scanner: &Scanner,
    credential: Option<&OpenCredential>,
    operation: &str,
    method: &str,
    started: Instant,
    result: Result<Exchange, EgressError>,
) -> Result<Exchange, HostError> {
    let name = credential.map(OpenCredential::name);
    let result = match result {
        Err(EgressError::Tripwire { part, credential: hit, view }) => {
            let channel = format!("{operation} {part}");
            return Err(record.trip(&channel, &hit, &view).into());
        }
        Err(EgressError::ResponseBlocked { ref credential, ref view }) => {
            record.record_leak(&response_channel(operation), name.or(Some(credential.as_str())), view, None, "block");
            Err(HostError::from(result.err().expect("matched an error")))
        }
        Err(EgressError::ForeignTokenBlocked { ref rule }) => {
            record.record_leak(&response_channel(operation), name, "raw", Some(rule), "block");
            Err(HostError::from(result.err().expect("matched an error")))
        }
        Ok(exchange) => {
            for rule in &exchange.foreign {
                record.record_leak(&response_channel(operation), name, "raw", Some(rule), scanner.foreign.as_str());
            }
            Ok(exchange)
        }
        Err(other) => Err(HostError::from(other)),
    };

    if let Err(error) = &result
        && error.is_denial()
    {
        record.record_denial(&scanner.secrets, name, operation, error);
    }
    if let Some(open) = credential {
        let mut event = record.audit_event(AuditAction::Use, Some(open.name()), operation);
        event.credential = Some(open.vault_ref().clone());
        event.detail["method"] = method.into();
        event.detail["duration_ms"] = (started.elapsed().as_millis() as u64).into();
        match &result {
            Ok(exchange) => {
                event.detail["host"] = exchange.host.clone().into();
                event.detail["status"] = exchange.response.status.into();
                event.detail["redirects"] = exchange.redirects.into();
                event.detail["credential_sent"] = exchange.credential_sent.into();
            }
            Err(error) => {
                event.success = false;
                event.error = Some(error.message());
            }
        }
        record.audit_use(open.usage(), event)?;
    }
    result
}

/// The audit channel of what came back from `operation` (`http.response`, `wasi:http.response`).
fn response_channel(operation: &str) -> String {
    match operation {
        OPERATION => "http.response".into(),
        other => format!("{other}.response"),
    }
}

/// Refuses a request any part of which is over its limit; the message names sizes only.
pub(crate) fn check_sizes(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: usize,
    max_body: usize,
) -> Result<(), String> {
    let over = |what: &str, size: usize, limit: usize| {
        Err(format!("the request's {what} is {size} bytes, over the {limit}-byte limit; nothing was sent"))
    };
    if method.len() > MAX_METHOD_BYTES {
        return over("method", method.len(), MAX_METHOD_BYTES);
    }
    if url.len() > MAX_URL_BYTES {
        return over("URL", url.len(), MAX_URL_BYTES);
    }
    if headers.len() > MAX_HEADERS {
        return Err(format!(
            "the request has {} headers, over the limit of {MAX_HEADERS}; nothing was sent",
            headers.len()
        ));
    }
    let header_bytes: usize = headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return over("header list", header_bytes, MAX_HEADER_BYTES);
    }
    if body > max_body {
        return over("body", body, max_body);
    }
    Ok(())
}
