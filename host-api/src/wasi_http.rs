//! Standard `wasi:http/outgoing-handler`, held to the same egress policy as our `http`
//! interface, with `transparent` credentials injected by the host.
//!
//! `wasmtime-wasi-http` is built without its default sender, so every request a guest makes
//! through `wasi:http` reaches [`WasiHttpHooks::send_request`] here, and nothing else can send
//! one. The hook runs the request through the same pipeline as `http.send`
//! ([`Egress::send_once`](skillbox_egress::Egress::send_once)): the destination (`[network]
//! allow`, or the hosts of the credential it carries), https only, the address actually
//! connected to, the tripwire over every guest-written part, size and time caps, the host's own
//! content decoding and the response scan. Redirects are handed back, since `wasi:http` clients
//! follow them themselves; each new request comes through here again.
//!
//! A manifest credential with `transparent = true` is opened when the invocation starts, under
//! the same checks as `credentials.open` (declared, granted to this digest and policy, this
//! environment and user, not revoked or suspended), and its secret joins what the invocation
//! scans for. A request whose URL is one of its hosts gets it injected, after a recheck of the
//! grant; every such use is audited. A request to any other host goes out without it (and must
//! be in `[network] allow`); the guest never holds a handle or sees the value.
//!
//! A `401` to a request that carried an `oauth2` credential the host can refresh is answered
//! as `http.send` answers it: the host gets a new access token once (single-flight, stored and
//! audited, through [`refresh_after_401`](crate::credentials::refresh_after_401)), and sends
//! the same request again with it, once; the guest sees only the second answer. The new token
//! replaces the old for the invocation's later requests. A refresh the provider refuses
//! (`invalid_grant`) fails the request with the error `http.send` returns, after marking the
//! credential `needs-reauth` and raising an alert.
//!
//! Bodies: the request body is read whole (up to the request cap) and scanned before anything
//! is sent, so nothing of a request that trips the wire leaves. The response body is handed on
//! as it arrives: the host asks for it uncompressed and scans it chunk by chunk
//! ([`BodyReader`]), holding back what a secret may still be completing in, so one split
//! across chunks is still cut out whole or, encoded, ends the body. A response that comes
//! content-encoded anyway is read, decoded and scanned whole, as for `http.send`.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use skillbox_egress::{BodyReader, EgressError, HostPattern, Injection, Request, Scanner, is_managed_header};
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks,
};

use crate::SkillCtx;
use crate::credentials::{OpenCredential, refresh_after_401, still_granted};
use crate::error::HostError;
use crate::http::{check_sizes, settle};
use crate::record::Recorder;

/// The operation name in audit rows and tripwires.
pub(crate) const OPERATION: &str = "wasi:http";

/// Most `wasi:http` requests one invocation may have in flight at once.
pub const MAX_IN_FLIGHT: usize = 16;

/// The manifest's transparent credentials for one invocation, and its requests in flight.
#[derive(Debug, Default)]
pub(crate) struct Transparent {
    entries: Vec<Entry>,
    in_flight: Arc<AtomicUsize>,
}

/// One `transparent = true` credential: opened, or why it could not be.
#[derive(Debug)]
struct Entry {
    name: String,
    /// Where it goes: the opened credential's hosts (a grant may override the manifest's).
    hosts: Vec<HostPattern>,
    opened: Result<Arc<Current>, String>,
    /// How many refreshes of [`Current`] the invocation's scanner knows the token of.
    remembered: u64,
}

/// An opened transparent credential as the invocation's requests find it now: a request
/// whose `401` made the host refresh it puts the refreshed handle here for the ones after it.
#[derive(Debug)]
struct Current(Mutex<(Arc<OpenCredential>, u64)>);

impl Current {
    /// The handle to use now, and how many times it has been refreshed.
    fn get(&self) -> (Arc<OpenCredential>, u64) {
        let current = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (Arc::clone(&current.0), current.1)
    }

    /// Replaces `old` with `next`; when another request already replaced it, keeps (and
    /// returns) that one instead.
    fn replace(&self, old: &Arc<OpenCredential>, next: OpenCredential) -> Arc<OpenCredential> {
        let mut current = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&current.0, old) {
            *current = (Arc::new(next), current.1 + 1);
        }
        Arc::clone(&current.0)
    }
}

impl SkillCtx {
    /// Opens the manifest's `transparent` credentials, as `credentials.open` would, for the
    /// `wasi:http` requests of this invocation. The runtime calls it before the guest runs,
    /// for components that import `wasi:http/outgoing-handler`. A credential that cannot be
    /// opened is remembered with its refusal, which a request to its hosts then gets: such a
    /// request is never sent without the credential.
    pub async fn open_transparent(&mut self) {
        let declared: Vec<_> =
            self.record.invocation.policy.credentials.iter().filter(|c| c.transparent).cloned().collect();
        for decl in declared {
            let opened = match self.before_open(&decl.name) {
                Ok(()) => {
                    let opened = self.open_credential(&decl.name).await;
                    if opened.is_err() {
                        self.no_handle_opened(&decl.name);
                    }
                    opened
                }
                Err(error) => Err(error),
            };
            let entry = match opened {
                Ok(open) => {
                    self.remember_open(&open);
                    let hosts = open.hosts().to_vec();
                    let current = Current(Mutex::new((Arc::new(open), 0)));
                    Entry { name: decl.name, hosts, opened: Ok(Arc::new(current)), remembered: 0 }
                }
                Err(error) => {
                    if error.is_denial() {
                        self.record.deny(error.message());
                    }
                    Entry { name: decl.name, hosts: decl.hosts, opened: Err(error.message()), remembered: 0 }
                }
            };
            self.transparent.entries.push(entry);
        }
    }

    /// Everything decided before a request leaves the store: limits, which credential (if
    /// any) it carries, and whether that credential is still granted.
    fn plan(&mut self, request: &http::Request<WasiBody>) -> Result<Plan, Error> {
        let refuse = |message: String| Error::InternalError(Some(message));
        if let Some(tripped) = self.record.tripped() {
            return Err(refuse(format!("{tripped}; nothing more is sent")));
        }
        self.count_call().map_err(|e| refuse(e.to_string()))?;
        let in_flight = InFlight::enter(&self.transparent.in_flight).ok_or_else(|| {
            let message = format!(
                "the skill has {MAX_IN_FLIGHT} wasi:http requests in flight, the most one invocation may; wait for one to finish"
            );
            refuse(self.refuse(message).message())
        })?;
        let url = url::Url::parse(&request.uri().to_string()).map_err(|e| refuse(format!("bad request URL: {e}")))?;
        let matching: Vec<usize> = (self.transparent.entries.iter().enumerate())
            .filter(|(_, e)| e.hosts.iter().any(|p| p.matches_url(&url)))
            .map(|(i, _)| i)
            .collect();
        let credential = match matching.as_slice() {
            [] => None,
            [index] => match &self.transparent.entries[*index].opened {
                Ok(current) => {
                    let current = Arc::clone(current);
                    let (open, refreshes) = current.get();
                    // Refreshed by an earlier request's `401`: the invocation's scanner (which
                    // later requests copy) learns the new token too.
                    if refreshes != self.transparent.entries[*index].remembered {
                        self.remember_open(&open);
                        self.transparent.entries[*index].remembered = refreshes;
                    }
                    Some((current, open))
                }
                Err(refusal) => {
                    let entry = &self.transparent.entries[*index];
                    return Err(refuse(format!(
                        "not sent: this request would carry credential `{}`, which could not be opened: {refusal}",
                        entry.name
                    )));
                }
            },
            several => {
                let names: Vec<&str> = several.iter().map(|i| self.transparent.entries[*i].name.as_str()).collect();
                return Err(refuse(format!(
                    "not sent: the transparent credentials {names:?} all match this URL's host, so the host cannot tell which to add; give them hosts that do not overlap"
                )));
            }
        };
        let credential = match credential {
            Some((current, open)) => {
                self.check_still_granted(&open, OPERATION).map_err(|e| refuse(e.message()))?;
                let injection = open.shared_injection(&self.record.services).map_err(|e| refuse(e.message()))?;
                self.reserve_use_row(OPERATION).map_err(|e| refuse(e.message()))?;
                Some(Carried { current, open, injection })
            }
            None => None,
        };
        Ok(Plan { record: Arc::clone(&self.record), scanner: self.scanner.clone(), credential, _in_flight: in_flight })
    }
}

/// One request's share of the invocation, owned by the task that sends it.
struct Plan {
    record: Arc<Recorder>,
    scanner: Scanner,
    credential: Option<Carried>,
    _in_flight: InFlight,
}

/// The transparent credential a request carries.
struct Carried {
    /// Where the invocation's requests find it (replaced after a refresh).
    current: Arc<Current>,
    /// The handle this request is sent with.
    open: Arc<OpenCredential>,
    injection: Arc<Injection>,
}

impl Plan {
    /// Reads the body, runs the pipeline, records the outcome, and builds the guest's response.
    async fn run(mut self, request: http::Request<WasiBody>) -> Result<http::Response<WasiBody>, Error> {
        let record = Arc::clone(&self.record);
        let egress = &record.services.egress;
        let config = egress.config();
        let (parts, body) = request.into_parts();
        let body =
            match tokio::time::timeout(config.timeout, Limited::new(body, config.max_request_body).collect()).await {
                Err(_) => return Err(Error::ConnectionTimeout),
                Ok(Err(_)) => return Err(Error::HttpRequestBodySize(Some(config.max_request_body as u64))),
                Ok(Ok(collected)) => collected.to_bytes(),
            };
        let mut headers = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            // The host frames the body itself (and wasmtime checked the guest's length).
            if name == CONTENT_LENGTH {
                continue;
            }
            let value = value.to_str().map_err(|_| {
                Error::InternalError(Some(format!("the value of header `{name}` is not visible ASCII; not sent")))
            })?;
            headers.push((name.as_str().to_owned(), value.to_owned()));
        }
        let method = parts.method.as_str().to_owned();
        let url = parts.uri.to_string();
        if let Err(message) = check_sizes(&method, &url, &headers, body.len(), config.max_request_body) {
            return Err(Error::InternalError(Some(message)));
        }
        let mut request = Request { method: method.clone(), url, headers, body: body.to_vec() };
        // Kept for the one resend a `401` may call for, when the credential can be refreshed.
        let mut resend = self.credential.as_ref().filter(|c| c.open.refreshable()).map(|_| request.clone());
        let (exchange, reader) = loop {
            let started = Instant::now();
            let (open, injection) = match &self.credential {
                Some(carried) => (Some(&*carried.open), Some(&*carried.injection)),
                None => (None, None),
            };
            let network = &record.invocation.policy.network;
            let (result, reader) = match egress.send_streamed(network, request, injection, &self.scanner).await {
                Ok((exchange, reader)) => (Ok(exchange), reader),
                Err(error) => (Err(error), None),
            };
            let exchange =
                settle(&self.record, &self.scanner, open, OPERATION, &method, started, result).map_err(guest_error)?;
            // A 401 to an OAuth 2 credential: refresh once and send again (as `http.send` does).
            if exchange.response.status == 401
                && let Some(again) = resend.take()
                && self.refresh_after_401().await.map_err(guest_error)?
            {
                drop(reader);
                request = again;
                continue;
            }
            break (exchange, reader);
        };
        let open = self.credential.as_ref().map(|c| &*c.open);
        let response = exchange.response;
        let mut builder = http::Response::builder().status(response.status);
        for (name, value) in &response.headers {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
            // Hop-by-hop and framing headers describe the wire, not the body handed over
            // (which the host decoded and may have redacted).
            if is_managed_header(&name) {
                continue;
            }
            if let Ok(value) = HeaderValue::from_str(value) {
                builder = builder.header(name, value);
            }
        }
        let body = match reader {
            Some(reader) => {
                let name = open.map(|o| o.name().to_owned());
                streamed_body(reader, Arc::clone(&self.record), self.scanner.foreign.as_str(), name)
            }
            None => {
                builder = builder.header(CONTENT_LENGTH, response.body.len());
                Full::new(Bytes::from(response.body)).map_err(|never| match never {}).boxed_unsync()
            }
        };
        builder.body(body).map_err(|e| Error::InternalError(Some(format!("could not build the response: {e}"))))
    }

    /// After a `401` to this request's credential: a refreshed handle for it (the one an
    /// earlier request of the invocation already got, or a new token), checked and with its
    /// audit row reserved as for any use, and its token added to what this request scans for.
    /// `Ok(false)`: it cannot be refreshed, so the `401` stands.
    async fn refresh_after_401(&mut self) -> Result<bool, HostError> {
        let Some(carried) = &self.credential else { return Ok(false) };
        let (latest, _) = carried.current.get();
        let next = if Arc::ptr_eq(&latest, &carried.open) {
            match refresh_after_401(&self.record, &self.scanner.secrets, &carried.open, OPERATION).await? {
                Some(value) => carried.current.replace(&carried.open, carried.open.with_value(value)),
                None => return Ok(false),
            }
        } else {
            latest
        };
        next.remember_in(&self.record.services, &mut self.scanner.secrets);
        still_granted(&self.record, &self.scanner.secrets, &next, OPERATION)?;
        let injection = next.shared_injection(&self.record.services)?;
        if !self.record.ledger().reserve() {
            return Err(HostError::limit(format!(
                "{OPERATION} was not sent again after a 401: this invocation has caused {} audit rows, the most one may, and a credential is never used unaudited; do less per invocation",
                crate::limits::MAX_AUDIT_ROWS
            )));
        }
        let current = Arc::clone(&carried.current);
        self.credential = Some(Carried { current, open: next, injection });
        Ok(true)
    }
}

/// The guest's view of a streamed response body: each piece as the reader clears it. Foreign
/// tokens found and a body cut off by the scan get their `leak` rows as they happen; an error
/// ends the body (the guest's read fails with its reason).
fn streamed_body(
    reader: BodyReader,
    record: Arc<Recorder>,
    policy: &'static str,
    credential: Option<String>,
) -> WasiBody {
    let channel = format!("{OPERATION}.response");
    let state = Some((reader, record, channel, credential));
    let frames = futures_util::stream::unfold(state, move |state| async move {
        let (mut reader, record, channel, credential) = state?;
        let next = reader.next_chunk().await;
        for rule in reader.take_foreign() {
            record.record_leak(&channel, credential.as_deref(), "raw", Some(&rule), policy);
        }
        match next {
            Ok(Some(bytes)) => Some((Ok(Frame::data(bytes)), Some((reader, record, channel, credential)))),
            Ok(None) => None,
            Err(error) => {
                match &error {
                    EgressError::ResponseBlocked { credential: hit, view } => {
                        record.record_leak(&channel, credential.as_deref().or(Some(hit)), view, None, "block");
                    }
                    EgressError::ForeignTokenBlocked { rule } => {
                        record.record_leak(&channel, credential.as_deref(), "raw", Some(rule), "block");
                    }
                    _ => {}
                }
                Some((Err(guest_error(HostError::from(error))), None))
            }
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// A host refusal or failure, as the `wasi:http` error the guest's client reports.
fn guest_error(error: HostError) -> Error {
    Error::InternalError(Some(format!("skillbox: {}", error.message())))
}

/// A slot among the invocation's [`MAX_IN_FLIGHT`] requests, given back on drop.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Option<InFlight> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_IN_FLIGHT).then_some(n + 1))
            .ok()
            .map(|_| InFlight(Arc::clone(count)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Headers a guest may not set: `wasi:http`'s own list and the egress pipeline's managed
/// headers, so a request the hook would refuse is refused when the guest builds it, except
/// `content-length`, which wasmtime checks against the body and the hook then drops.
fn forbidden(name: &HeaderName) -> bool {
    DEFAULT_FORBIDDEN_HEADERS.contains(name) || (is_managed_header(name) && name != CONTENT_LENGTH)
}

impl WasiHttpHooks for SkillCtx {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(forbidden)
    }

    /// The egress client sets `Host` from the URL; a guest-set one is refused.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>,
            > + Send,
    > {
        // Connect and first-byte timeouts a guest asks for are not applied: the operator's
        // egress timeout bounds the whole exchange.
        let plan = self.plan(&request);
        Box::new(async move {
            let response = plan?.run(request).await?;
            Ok((response, Box::new(async { Ok(()) }) as Box<dyn Future<Output = Result<(), Error>> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_headers_cover_wasi_http_and_the_managed_list() {
        for name in ["host", "connection", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"] {
            assert!(forbidden(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-length", "authorization", "accept", "x-api-key"] {
            assert!(!forbidden(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn in_flight_slots_are_bounded_and_given_back() {
        let count = Arc::new(AtomicUsize::new(0));
        let held: Vec<_> = (0..MAX_IN_FLIGHT).map(|_| InFlight::enter(&count).unwrap()).collect();
        assert!(InFlight::enter(&count).is_none());
        drop(held);
        assert_eq!(count.load(Ordering::Acquire), 0);
        assert!(InFlight::enter(&count).is_some());
    }
}
