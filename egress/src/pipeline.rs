//! The policy pipeline every outbound request from a skill goes through.
//!
//! [`Egress::send`] runs, in order: the destination ([`parse_url`], [`check_scheme`],
//! [`check_allowlist`]), the tripwire ([`tripwire`]: only now, so a refused destination answers
//! the same whatever the request holds), validation ([`prepare`]), address check
//! ([`check_literal`] here, [`FilteringResolver`] for names), injection ([`Applied::apply`]),
//! transmission with manual redirects ([`Egress::transmit`], [`next_hop`]), a capped body read
//! ([`read_capped`]) and the response scan ([`scan_response`]). The request and response types are plain data so that
//! both the WIT `http.send` host function and, later, standard `wasi:http` requests feed the same
//! pipeline.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::IpNet;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::{Host, Url};

use crate::address::{AddressRules, FilteringResolver, Lookup, check_ip, find_refusal, is_loopback};
use crate::auth::Applied;
use crate::auth::ResponseScope;
use crate::decode;
use crate::host::display_host;
use crate::streamed::BodyReader;
use crate::{EgressError, HostPattern, Injection, RequestPart, Scanner};
use skillbox_scan::{Blocked, Cleared};

/// Runtime-wide settings for outbound HTTP. Set by the operator, never by a skill.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Permit plain `http` to loopback, and nothing more: to URLs whose host is a loopback
    /// literal (127.0.0.0/8, `[::1]`) or `localhost`, connecting only to loopback addresses (a
    /// name is refused when any address it resolves to is not loopback), redirects included.
    /// Loopback over `https` stays refused (unless `allowed_private` opens it), and so does
    /// plain `http` to anything else. For tests and local development
    /// (`skillbox run --allow-http-loopback`).
    pub allow_http_loopback: bool,
    /// Private or special-purpose ranges an operator explicitly opens (e.g. an internal API at
    /// `10.1.0.0/16`). Everything else in those classes stays refused.
    pub allowed_private: Vec<IpNet>,
    /// Limit for one whole exchange, all redirects and the body read included. Default 30 s.
    pub timeout: Duration,
    /// Largest request body accepted from a skill. Default 10 MiB.
    pub max_request_body: usize,
    /// Largest response body handed back to a skill. Default 10 MiB.
    pub max_response_body: usize,
    /// Most redirects followed for one request. Default 5.
    pub max_redirects: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            allow_http_loopback: false,
            allowed_private: Vec::new(),
            timeout: Duration::from_secs(30),
            max_request_body: 10 * 1024 * 1024,
            max_response_body: 10 * 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// What a skill may reach without a credential: the manifest's `[network] allow`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Hosts unauthenticated requests (and redirects that dropped a credential) may go to.
    pub network_allow: Vec<HostPattern>,
}

/// An outbound request as the guest wrote it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// HTTP method token, e.g. `GET`.
    pub method: String,
    /// Absolute `https://` (or loopback `http://`) URL.
    pub url: String,
    /// Header name/value pairs; repeated names are kept in order.
    pub headers: Vec<(String, String)>,
    /// Request body (may be empty).
    pub body: Vec<u8>,
}

/// A response as handed back to the guest, already redacted.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Header name/value pairs in the order received (values decoded lossily as UTF-8).
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// The outcome of [`Egress::send`]: the response plus facts for the audit log.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The final (after redirects) response, redacted.
    pub response: Response,
    /// The URL that produced the response, as the guest would see it (no injected query
    /// parameter; redacted).
    pub final_url: String,
    /// `host[:port]` of the final URL (port only when not the default).
    pub host: String,
    /// Number of redirects followed.
    pub redirects: u32,
    /// Whether the credential went out on at least one hop.
    pub credential_sent: bool,
    /// Ids of the foreign-token rules that matched the response (handled by the scanner's
    /// policy: redacted, or left under `warn`).
    pub foreign: Vec<String>,
    /// True when raw occurrences of a secret were cut out of the response.
    pub redacted: bool,
    /// Wall time of the whole exchange.
    pub elapsed: Duration,
}

/// How a response body reaches the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Read, decoded and scanned whole, in the [`Exchange`].
    Whole,
    /// Through a [`BodyReader`] when the body is not content-encoded; else whole.
    Stream,
}

/// Whether the pipeline follows redirects itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirects {
    /// Follow them (checking every hop), as the WIT `http.send` promises.
    Follow,
    /// Hand the 3xx back to the caller, who decides (standard `wasi:http`).
    HandBack,
}

/// The outbound HTTP client and its policy pipeline; build one per runtime and share it.
///
/// Invariant: `https` goes only through `client`, plain `http` only through `http_client`,
/// whose resolver hands out loopback addresses only, so the scheme decides the address rules.
pub struct Egress {
    /// `https` only (reqwest refuses other schemes on it); resolver under `rules`.
    client: reqwest::Client,
    /// Plain `http` to loopback; present only under `allow_http_loopback`.
    http_client: Option<reqwest::Client>,
    config: EgressConfig,
    /// The `https` address rules (plain `http` is always [`AddressRules::LoopbackOnly`]).
    rules: Arc<AddressRules>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A validated request moving through the pipeline.
#[derive(Debug)]
struct Prepared {
    /// The credentials whose short secret the guest wrote into the request itself (see
    /// [`Redactor::without_short`](crate::Redactor::without_short)).
    wrote_short: Vec<usize>,
    method: Method,
    /// The URL the guest asked for (no credential, no fragment).
    url: Url,
    headers: HeaderMap,
    body: Bytes,
}

impl Egress {
    /// Builds the shared clients: rustls with the webpki roots, no proxy (a proxy would connect
    /// on our behalf and bypass the address check), no automatic redirects (the pipeline
    /// follows them itself), and the filtering DNS resolver; one for `https`, and one for plain
    /// `http` to loopback when `allow_http_loopback` is set.
    pub fn new(config: EgressConfig) -> Result<Self, EgressError> {
        Self::with_lookup(config, Lookup::System)
    }

    /// [`Egress::new`] with the resolver's answers taken from `lookup`.
    pub(crate) fn with_lookup(config: EgressConfig, lookup: Lookup) -> Result<Self, EgressError> {
        let rules = Arc::new(AddressRules::Public { allowed_private: config.allowed_private.clone() });
        let build = |rules: Arc<AddressRules>, https_only: bool| {
            reqwest::Client::builder()
                .use_rustls_tls()
                .https_only(https_only)
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .referer(false)
                .timeout(config.timeout)
                .connect_timeout(config.timeout.min(Duration::from_secs(10)))
                .dns_resolver(Arc::new(FilteringResolver { rules, lookup: lookup.clone() }))
                .build()
                .map_err(|e| EgressError::Setup(error_text(&e)))
        };
        let client = build(Arc::clone(&rules), true)?;
        let http_client = match config.allow_http_loopback {
            true => Some(build(Arc::new(AddressRules::LoopbackOnly), false)?),
            false => None,
        };
        Ok(Self { client, http_client, config, rules })
    }

    /// The address rules for `url`'s scheme.
    fn rules_for(&self, url: &Url) -> &AddressRules {
        match url.scheme() {
            "http" => &AddressRules::LoopbackOnly,
            _ => &self.rules,
        }
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    /// Sends `request` through the whole pipeline.
    ///
    /// `injection` is the credential the guest passed as `auth`, if any; `scanner` holds every
    /// secret value the invocation may touch and the foreign-token policy.
    ///
    /// Errors never contain a secret value the guest did not write itself: refusals made before
    /// the tripwire (a malformed URL, a refused destination) echo the guest's own text
    /// unredacted, because redacting it would tell the guest that a guess was right; every later
    /// error passes through the redactor, since it may hold server-supplied text.
    pub async fn send(
        &self,
        policy: &Policy,
        request: Request,
        injection: Option<&Injection>,
        scanner: &Scanner,
    ) -> Result<Exchange, EgressError> {
        let (exchange, _) =
            self.send_with(policy, request, injection, scanner, Redirects::Follow, Delivery::Whole).await?;
        Ok(exchange)
    }

    /// [`Egress::send`] for one hop, with the body handed on as it arrives: for standard
    /// `wasi:http` clients. A redirect is handed back (scanned like any response) instead of
    /// followed, since such clients follow redirects themselves: each new request they make
    /// comes through the whole pipeline again, so a credential is added to it only if its own
    /// URL is one of the credential's hosts. When the response is not content-encoded and the
    /// whole body may be read, the body is not in the returned [`Exchange`] but in the
    /// [`BodyReader`], which scans it chunk by chunk as the caller pulls it; otherwise the body
    /// is read, decoded and scanned whole, as [`Egress::send`] does.
    pub async fn send_streamed(
        &self,
        policy: &Policy,
        request: Request,
        injection: Option<&Injection>,
        scanner: &Scanner,
    ) -> Result<(Exchange, Option<BodyReader>), EgressError> {
        self.send_with(policy, request, injection, scanner, Redirects::HandBack, Delivery::Stream).await
    }

    async fn send_with(
        &self,
        policy: &Policy,
        request: Request,
        injection: Option<&Injection>,
        scanner: &Scanner,
        redirects: Redirects,
        delivery: Delivery,
    ) -> Result<(Exchange, Option<BodyReader>), EgressError> {
        let started = Instant::now();
        // The invocation's secrets plus what this credential puts on the wire, in one scanner
        // that every step below uses.
        let scanner = &match injection {
            Some(i) => Scanner { secrets: scanner.secrets.with(i.applied().material.clone()), ..scanner.clone() },
            None => scanner.clone(),
        };
        let redact = |text: &str| -> String { scanner.secrets.redact_str(text).into_owned() };

        // 1-3: destination first, then the tripwire; nothing here has contacted a server.
        let prepared = self.admit(policy, request, injection, scanner)?;
        let outcome = tokio::time::timeout(
            self.config.timeout,
            self.exchange(
                policy,
                prepared,
                injection.map(|i| (i, i.applied())),
                scanner,
                started,
                (redirects, delivery),
            ),
        )
        .await
        .unwrap_or(Err(EgressError::Timeout { after: self.config.timeout }));
        match outcome {
            Ok((mut exchange, body)) => {
                exchange.final_url = redact(&exchange.final_url);
                exchange.host = redact(&exchange.host);
                Ok((exchange, body))
            }
            Err(error) => {
                let error = error.map_text(redact);
                tracing::debug!(%error, "egress refused or failed");
                Err(error)
            }
        }
    }

    /// Steps 1-3: where the request goes, then whether it carries a secret.
    fn admit(
        &self,
        policy: &Policy,
        request: Request,
        injection: Option<&Injection>,
        scanner: &Scanner,
    ) -> Result<Prepared, EgressError> {
        let url = parse_url(&request.url)?;
        check_scheme(&url, &self.config)?;
        check_allowlist(&url, policy, injection)?;
        tripwire(&request, &url, scanner)?;
        let wrote_short = short_secrets_written(&request, scanner);
        let mut prepared = prepare(request, url, &self.config)?;
        prepared.wrote_short = wrote_short;
        Ok(prepared)
    }

    async fn exchange(
        &self,
        policy: &Policy,
        mut prepared: Prepared,
        credential: Option<(&Injection, &Applied)>,
        scanner: &Scanner,
        started: Instant,
        (follow, delivery): (Redirects, Delivery),
    ) -> Result<(Exchange, Option<BodyReader>), EgressError> {
        let secret = |bytes: &[u8]| scanner.secrets.contains_secret(bytes);
        let scope = credential.map_or(ResponseScope::Full, |(i, _)| i.response());
        let credential_origin = prepared.url.origin();
        let mut credential = credential;
        let mut credential_sent = false;
        let mut redirects = 0u32;
        loop {
            // 4. Address check for IP literals (names: the resolver).
            check_literal(&prepared.url, self.rules_for(&prepared.url))?;
            // 5. Inject, on the wire copy only. The host owns content negotiation: it decodes
            //    what it asks for, so the guest never sees a compressed body it could hide a
            //    reflected secret in.
            let mut wire_url = prepared.url.clone();
            let mut wire_headers = prepared.headers.clone();
            // Streamed bodies are scanned as they arrive, so they are asked for uncompressed.
            let accept = match delivery {
                Delivery::Whole => decode::ACCEPT_ENCODING,
                Delivery::Stream => "identity",
            };
            wire_headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accept));
            if let Some((_, applied)) = credential {
                applied.apply(&mut wire_url, &mut wire_headers);
                credential_sent = true;
            }
            // 6. Send this hop.
            let response = self.transmit(&prepared, wire_url, wire_headers).await?;
            let status = response.status();
            tracing::debug!(host = %display_host(&prepared.url), status = status.as_u16(), redirects, "egress hop");

            let location = response.headers().get(header::LOCATION).cloned();
            if let (true, Some(location), Redirects::Follow) = (is_redirect(status), location, follow) {
                if redirects as usize >= self.config.max_redirects {
                    return Err(EgressError::TooManyRedirects { limit: self.config.max_redirects });
                }
                redirects += 1;
                let next = next_hop(&prepared.url, &location, &secret)?;
                check_scheme(&next, &self.config)?;
                if credential.is_some() && next.origin() != credential_origin {
                    // Never carry the credential (or guest auth material) to another origin.
                    credential = None;
                    for name in [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION] {
                        prepared.headers.remove(name);
                    }
                }
                if credential.is_none() && !policy.network_allow.iter().any(|p| p.matches_url(&next)) {
                    return Err(EgressError::RedirectNotAllowed {
                        host: display_host(&next),
                        allowed: patterns(&policy.network_allow),
                    });
                }
                rewrite_method(&mut prepared, status);
                prepared.url = next;
                continue;
            }

            // 7. Read the body with a cap (a response-blind credential's body is never read).
            let mut headers = response.headers().clone();
            let streamable = delivery == Delivery::Stream
                && scope == ResponseScope::Full
                && !headers.contains_key(header::CONTENT_ENCODING)
                && response.content_length().is_none_or(|n| n <= self.config.max_response_body as u64);
            if streamable {
                // Headers now; the body as the caller pulls it (see `BodyReader`). Framing
                // headers describe the wire, and redaction may change the length.
                headers.remove(header::CONTENT_LENGTH);
                let scanner = if prepared.wrote_short.is_empty() {
                    scanner.clone()
                } else {
                    Scanner { secrets: scanner.secrets.without_short(&prepared.wrote_short), ..scanner.clone() }
                };
                let scanned = scan_response(status, &headers, Vec::new(), scope, &scanner)?;
                let deadline = tokio::time::Instant::from_std(started + self.config.timeout);
                let body = BodyReader::new(response, &scanner, self.config.max_response_body, deadline);
                let exchange = Exchange {
                    response: scanned.response,
                    final_url: prepared.url.to_string(),
                    host: display_host(&prepared.url),
                    redirects,
                    credential_sent,
                    foreign: scanned.foreign,
                    redacted: scanned.redacted,
                    elapsed: started.elapsed(),
                };
                return Ok((exchange, Some(body)));
            }
            let body = match scope {
                ResponseScope::Full => {
                    let raw = read_capped(response, self.config.max_response_body).await?;
                    decode::decode_body(&mut headers, raw, self.config.max_response_body)?
                }
                ResponseScope::Headers | ResponseScope::Status => {
                    headers.remove(header::CONTENT_ENCODING);
                    Vec::new()
                }
            };
            // 8. Scan.
            // A short secret the guest wrote itself is not redacted from the answer: the echo
            // of a right guess must look like the echo of a wrong one.
            let unredacted;
            let scanner = if prepared.wrote_short.is_empty() {
                scanner
            } else {
                unredacted =
                    Scanner { secrets: scanner.secrets.without_short(&prepared.wrote_short), ..scanner.clone() };
                &unredacted
            };
            let scanned = scan_response(status, &headers, body, scope, scanner)?;
            let exchange = Exchange {
                response: scanned.response,
                final_url: prepared.url.to_string(),
                host: display_host(&prepared.url),
                redirects,
                credential_sent,
                foreign: scanned.foreign,
                redacted: scanned.redacted,
                elapsed: started.elapsed(),
            };
            return Ok((exchange, None));
        }
    }

    /// Sends one hop; maps reqwest's errors, finding the resolver's refusal in the source chain.
    async fn transmit(
        &self,
        prepared: &Prepared,
        url: Url,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, EgressError> {
        // check_scheme let only loopback http through, and only under allow_http_loopback.
        let client = match url.scheme() {
            "http" => self.http_client.as_ref().ok_or_else(|| EgressError::SchemeNotAllowed {
                scheme: "http".into(),
                host: display_host(&prepared.url),
            })?,
            _ => &self.client,
        };
        let mut builder = client.request(prepared.method.clone(), url).headers(headers);
        if !prepared.body.is_empty() {
            builder = builder.body(prepared.body.clone());
        }
        builder.send().await.map_err(|e| self.map_send_error(e))
    }

    fn map_send_error(&self, error: reqwest::Error) -> EgressError {
        if let Some(refused) = find_refusal(&error) {
            return EgressError::AddressNotAllowed {
                host: refused.host.clone(),
                addr: refused.addr,
                reason: refused.reason,
            };
        }
        if error.is_timeout() {
            return EgressError::Timeout { after: self.config.timeout };
        }
        EgressError::Upstream(error_text(&error.without_url()))
    }
}

/// Headers the HTTP client manages itself; a guest (or a credential) may not set them.
/// (`wasi:http` guests are held to the same list: the host's forbidden-header filter uses it.)
pub fn is_managed_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "http2-settings"
            | "content-length"
    )
}

/// Step 1: the URL, parsed. A parse error echoes the guest's own text, unredacted (see
/// [`Egress::send`]).
fn parse_url(text: &str) -> Result<Url, EgressError> {
    let bad = |reason: String| EgressError::BadRequest { reason };
    let mut url = Url::parse(text).map_err(|e| bad(format!("`{text}` is not an absolute URL ({e})")))?;
    if url.host().is_none() {
        return Err(bad(format!("`{text}` has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("the URL contains a user name or password; pass a credential as `auth` instead".into()));
    }
    url.set_fragment(None);
    Ok(url)
}

/// Step 3, the tripwire: no guest-written part may hold a secret in any decoded view. Runs only
/// once the destination is known to be allowed, so it answers nothing about requests that are
/// refused anyway. A hit ends the invocation (the host turns it into a trap).
fn tripwire(request: &Request, url: &Url, scanner: &Scanner) -> Result<(), EgressError> {
    let check = |part: RequestPart, bytes: &[u8]| -> Result<(), EgressError> {
        match scanner.outbound(bytes) {
            Ok(None) => Ok(()),
            Ok(Some(hit)) => Err(EgressError::Tripwire { part, credential: hit.label.to_string(), view: hit.view }),
            Err(_) => Err(EgressError::Tripwire { part, credential: String::new(), view: "unscannable".into() }),
        }
    };
    check(RequestPart::Method, request.method.as_bytes())?;
    check(RequestPart::Url, request.url.as_bytes())?;
    // The parsed URL is percent-encoded differently from what the guest wrote; check it too.
    check(RequestPart::Url, url.as_str().as_bytes())?;
    for (name, value) in &request.headers {
        check(RequestPart::Header("(name)".into()), name.as_bytes())?;
        check(RequestPart::Header(name.to_ascii_lowercase()), value.as_bytes())?;
    }
    check(RequestPart::Body, &request.body)
}

/// The credentials whose secret shorter than the floor a guest-written part holds, raw or
/// decoded.
fn short_secrets_written(request: &Request, scanner: &Scanner) -> Vec<usize> {
    let parts = std::iter::once(request.method.as_bytes())
        .chain(std::iter::once(request.url.as_bytes()))
        .chain(request.headers.iter().flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()]))
        .chain(std::iter::once(request.body.as_slice()));
    let mut written: Vec<usize> = parts.flat_map(|part| scanner.secrets.short_written(part, &scanner.limits)).collect();
    written.sort_unstable();
    written.dedup();
    written
}

/// Step 4: method and headers validated, body size checked.
fn prepare(request: Request, url: Url, config: &EgressConfig) -> Result<Prepared, EgressError> {
    let bad = |reason: String| EgressError::BadRequest { reason };
    if request.body.len() > config.max_request_body {
        return Err(EgressError::RequestTooLarge { size: request.body.len(), limit: config.max_request_body });
    }
    let method = Method::from_bytes(request.method.as_bytes())
        .map_err(|_| bad(format!("`{}` is not a valid HTTP method", request.method)))?;
    // Compared case-insensitively: `trace` is not `TRACE` to the `http` crate, but a server
    // may well treat it as one.
    if ["CONNECT", "TRACE", "TRACK"].iter().any(|m| request.method.eq_ignore_ascii_case(m)) {
        // TRACE makes the server echo the request, credential included; CONNECT opens a tunnel.
        return Err(bad(format!("method {method} is not allowed")));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(format!("`{name}` is not a valid header name")))?;
        if is_managed_header(&header_name) {
            return Err(bad(format!("header `{header_name}` is set by the host; remove it")));
        }
        if header_name == header::ACCEPT_ENCODING {
            // The host negotiates content encoding itself (and decodes what it asked for).
            continue;
        }
        let header_value = HeaderValue::from_str(value)
            .map_err(|_| bad(format!("the value of header `{header_name}` contains control characters")))?;
        headers.append(header_name, header_value);
    }
    Ok(Prepared { wrote_short: Vec::new(), method, url, headers, body: Bytes::from(request.body) })
}

/// Step 1 (and every redirect): `https` anywhere; plain `http` only under
/// `allow_http_loopback`, and only to a loopback literal or `localhost`. Where an `http` request
/// then connects is held to [`AddressRules::LoopbackOnly`] (its own client and resolver).
fn check_scheme(url: &Url, config: &EgressConfig) -> Result<(), EgressError> {
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => is_loopback(ip.into()),
        Some(Host::Ipv6(ip)) => is_loopback(ip.into()),
        Some(Host::Domain(name)) => name.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if config.allow_http_loopback && loopback => Ok(()),
        scheme => Err(EgressError::SchemeNotAllowed { scheme: scheme.to_owned(), host: display_host(url) }),
    }
}

/// Step 2: a credential's own hosts, or the manifest's `[network] allow`.
fn check_allowlist(url: &Url, policy: &Policy, injection: Option<&Injection>) -> Result<(), EgressError> {
    match injection {
        Some(injection) if !injection.hosts().iter().any(|p| p.matches_url(url)) => {
            Err(EgressError::CredentialHostNotAllowed { host: display_host(url), allowed: patterns(injection.hosts()) })
        }
        None if !policy.network_allow.iter().any(|p| p.matches_url(url)) => {
            Err(EgressError::HostNotAllowed { host: display_host(url), allowed: patterns(&policy.network_allow) })
        }
        _ => Ok(()),
    }
}

/// Step 4 for IP-literal hosts, which reqwest connects to without asking the resolver, under
/// the rules of the URL's scheme.
fn check_literal(url: &Url, rules: &AddressRules) -> Result<(), EgressError> {
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => ip.into(),
        Some(Host::Ipv6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    check_ip(ip, rules).map_err(|reason| EgressError::AddressNotAllowed { host: display_host(url), addr: ip, reason })
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Step 6: the URL a redirect points to, resolved against the guest-visible URL (never the
/// wire URL, whose query may hold an injected credential).
fn next_hop(current: &Url, location: &HeaderValue, secret: &dyn Fn(&[u8]) -> bool) -> Result<Url, EgressError> {
    if secret(location.as_bytes()) {
        return Err(EgressError::SecretInRequest { part: RequestPart::RedirectLocation });
    }
    let text = location
        .to_str()
        .map_err(|_| EgressError::Upstream("the server sent a redirect with a non-ASCII Location".into()))?;
    let mut next = current
        .join(text)
        .map_err(|e| EgressError::Upstream(format!("the server sent a redirect to an invalid URL ({e})")))?;
    next.set_fragment(None);
    if !next.username().is_empty() || next.password().is_some() {
        return Err(EgressError::Upstream("the server sent a redirect to a URL with a user name".into()));
    }
    if secret(next.as_str().as_bytes()) {
        return Err(EgressError::SecretInRequest { part: RequestPart::RedirectLocation });
    }
    Ok(next)
}

/// 303 (and 301/302 after anything but GET/HEAD) continue as GET without a body, as browsers
/// do; 307/308 repeat the method and body.
fn rewrite_method(prepared: &mut Prepared, status: StatusCode) {
    let to_get = match status.as_u16() {
        303 => prepared.method != Method::HEAD,
        301 | 302 => prepared.method != Method::GET && prepared.method != Method::HEAD,
        _ => false,
    };
    if to_get {
        prepared.method = Method::GET;
        prepared.body = Bytes::new();
        for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING, header::CONTENT_LANGUAGE, header::CONTENT_LOCATION]
        {
            prepared.headers.remove(name);
        }
    }
}

/// Step 7: read at most `limit` bytes; refuse early on a larger declared length.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, EgressError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(EgressError::ResponseTooLarge { limit });
    }
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                EgressError::Upstream("timed out reading the response body".into())
            } else {
                EgressError::Upstream(error_text(&e.without_url()))
            }
        })?;
        let Some(chunk) = chunk else { return Ok(body) };
        if body.len() + chunk.len() > limit {
            return Err(EgressError::ResponseTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
}

/// A scanned response and what the scan found.
struct Scanned {
    response: Response,
    foreign: Vec<String>,
    redacted: bool,
}

/// Step 8: raw occurrences of a secret are cut out of header values and the body; one that
/// survives in a decoded view blocks the whole response (it cannot be cut out); foreign tokens
/// follow the scanner's policy. Under [`ResponseScope::Headers`] a header that matches anything
/// is dropped instead, and under [`ResponseScope::Status`] no header is handed back at all.
fn scan_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: Vec<u8>,
    scope: ResponseScope,
    scan: &Scanner,
) -> Result<Scanned, EgressError> {
    let mut foreign = Vec::new();
    let mut redacted = false;
    let mut clear = |bytes: &[u8], foreign: &mut Vec<String>| -> Result<Vec<u8>, EgressError> {
        let Cleared { bytes: out, foreign: found } = scan.inbound(bytes).map_err(blocked)?;
        redacted |= matches!(out, std::borrow::Cow::Owned(_)) && found.is_empty();
        foreign.extend(found.iter().map(|r| r.to_string()));
        Ok(out.into_owned())
    };
    let mut out = Vec::with_capacity(headers.len());
    if scope != ResponseScope::Status {
        for (name, value) in headers {
            let name_bytes = name.as_str().as_bytes();
            if scan.secrets.contains_secret(name_bytes) {
                tracing::warn!("dropped a response header whose name contains a secret");
                continue;
            }
            match scope {
                ResponseScope::Headers => {
                    // Response-blind: a header that matches anything is dropped, never patched.
                    let clean = matches!(scan.inbound(value.as_bytes()), Ok(Cleared { bytes: std::borrow::Cow::Borrowed(_), ref foreign }) if foreign.is_empty());
                    if clean {
                        out.push((name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
                    }
                }
                _ => {
                    let value = clear(value.as_bytes(), &mut foreign)?;
                    out.push((name.to_string(), String::from_utf8_lossy(&value).into_owned()));
                }
            }
        }
    }
    let body = if body.is_empty() { body } else { clear(&body, &mut foreign)? };
    Ok(Scanned { response: Response { status: status.as_u16(), headers: out, body }, foreign, redacted })
}

/// A scan refusal as the pipeline's error.
pub(crate) fn blocked(reason: Blocked) -> EgressError {
    match reason {
        Blocked::Secret(hit) => EgressError::ResponseBlocked { credential: hit.label.to_string(), view: hit.view },
        Blocked::Foreign(rule) => EgressError::ForeignTokenBlocked { rule: rule.to_string() },
        Blocked::Unscannable(e) => EgressError::Unscannable { reason: e.to_string() },
    }
}

fn patterns(list: &[HostPattern]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// An error and its sources, joined, for messages people read.
pub(crate) fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    //! `allow_http_loopback` against names resolved through a fixed table, so a name can be made
    //! to resolve anywhere (the checks run on the answers exactly as on the system resolver's).

    use std::net::{IpAddr, SocketAddr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::Redactor;

    /// A loopback HTTP server that answers every request `200 ok` and counts connections.
    async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                });
            }
        });
        (addr, connections)
    }

    /// An egress with `allow_http_loopback` whose resolver answers from `table`; 10.0.0.0/8
    /// is opened as a private range, so only the loopback rule can refuse 10.0.0.1.
    fn egress(table: &[(&str, &[&str])]) -> Egress {
        let table = table
            .iter()
            .map(|(name, ips)| (name.to_string(), ips.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect()))
            .collect();
        let config = EgressConfig {
            allow_http_loopback: true,
            allowed_private: vec!["10.0.0.0/8".parse().unwrap()],
            timeout: Duration::from_secs(5),
            ..EgressConfig::default()
        };
        Egress::with_lookup(config, Lookup::Fixed(Arc::new(table))).unwrap()
    }

    fn allow(patterns: &[&str]) -> Policy {
        Policy { network_allow: patterns.iter().map(|p| HostPattern::parse(p).unwrap()).collect() }
    }

    async fn get(egress: &Egress, policy: &Policy, url: &str) -> Result<Exchange, EgressError> {
        let request = Request { method: "GET".into(), url: url.into(), ..Request::default() };
        egress.send(policy, request, None, &Scanner::secrets(Redactor::new(["unused-secret-value"]))).await
    }

    #[tokio::test]
    async fn plain_http_to_localhost_goes_to_loopback_only() {
        let (addr, connections) = server().await;
        let port = addr.port();
        let policy = allow(&["localhost:*"]);
        let url = format!("http://localhost:{port}/");
        // Resolving to loopback only: permitted.
        let ok = get(&egress(&[("localhost", &["127.0.0.1"])]), &policy, &url).await.unwrap();
        assert_eq!(ok.response.status, 200);
        // Off loopback (public, or a private range the operator opened): refused before connecting.
        for ips in [&["93.184.216.34"][..], &["10.0.0.1"], &["127.0.0.1", "10.0.0.1"], &["10.0.0.1", "127.0.0.1"]] {
            let err = get(&egress(&[("localhost", ips)]), &policy, &url).await.unwrap_err();
            assert!(matches!(err, EgressError::AddressNotAllowed { .. }), "{ips:?}: {err}");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1, "only the loopback-only answer may connect");
    }

    #[tokio::test]
    async fn https_to_loopback_stays_refused_with_the_flag() {
        let (addr, connections) = server().await;
        let port = addr.port();
        let policy = allow(&["localhost:*", "127.0.0.1:*", "api.example.test:*"]);
        let e = egress(&[("localhost", &["127.0.0.1"]), ("api.example.test", &["127.0.0.1"])]);
        for url in [
            format!("https://127.0.0.1:{port}/"),
            format!("https://localhost:{port}/"),
            format!("https://api.example.test:{port}/"),
        ] {
            let err = get(&e, &policy, &url).await.unwrap_err();
            assert!(matches!(err, EgressError::AddressNotAllowed { .. }), "{url}: {err}");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn redirects_from_loopback_http_are_held_to_the_same_rule() {
        let (addr, connections) = server().await;
        let port = addr.port();
        let (redirector, _) =
            redirect_server(vec![format!("http://localhost:{port}/"), format!("https://127.0.0.1:{port}/")]).await;
        let policy = allow(&["localhost:*", "127.0.0.1:*"]);
        let e = egress(&[("localhost", &["127.0.0.1", "10.0.0.1"])]);
        for _ in 0..2 {
            let err = get(&e, &policy, &format!("http://{redirector}/")).await.unwrap_err();
            assert!(matches!(err, EgressError::AddressNotAllowed { .. }), "{err}");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_streamed_body_arrives_before_it_ends_and_a_split_secret_is_cut_out_whole() {
        const SECRET: &str = "streamed-secret-value-0123456789";
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_on, wait) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&head).contains("accept-encoding: identity"));
            let first = format!("{}{}", "a".repeat(1000), &SECRET[..10]);
            let chunk = |part: &str| format!("{:x}\r\n{part}\r\n", part.len());
            let start = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{}", chunk(&first));
            stream.write_all(start.as_bytes()).await.unwrap();
            // The rest only once the client has seen the first part.
            wait.await.unwrap();
            let rest = format!("{}{}", &SECRET[10..], "b".repeat(1000));
            stream.write_all(format!("{}0\r\n\r\n", chunk(&rest)).as_bytes()).await.unwrap();
        });
        let e = egress(&[]);
        let request = Request { method: "GET".into(), url: format!("http://{addr}/"), ..Request::default() };
        let scanner = Scanner::secrets(Redactor::new([SECRET]));
        let (exchange, body) = e.send_streamed(&allow(&["127.0.0.1:*"]), request, None, &scanner).await.unwrap();
        assert_eq!(exchange.response.status, 200);
        let mut body = body.expect("an uncompressed body is streamed");
        let first = body.next_chunk().await.unwrap().unwrap();
        assert!(first.len() >= 900 && first.iter().all(|&b| b == b'a'), "the held-back part may hold the secret");
        go_on.send(()).unwrap();
        let mut all = first.to_vec();
        while let Some(more) = body.next_chunk().await.unwrap() {
            all.extend_from_slice(&more);
        }
        assert_eq!(String::from_utf8(all).unwrap(), format!("{}[REDACTED]{}", "a".repeat(1000), "b".repeat(1000)));
    }

    /// A loopback server whose n-th connection is answered with a 302 to `targets[n]`.
    async fn redirect_server(targets: Vec<String>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        tokio::spawn(async move {
            for target in targets {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        (addr, served)
    }
}
