//! The egress pipeline against real HTTP servers on loopback: injection, allowlists, address
//! checks, redirects, leak checks, redaction and limits (issue 4's attack table, HTTP rows).
//!
//! No test sends traffic anywhere but 127.0.0.1 and 127.0.0.2: the non-loopback addresses below
//! appear only as literals that the pipeline must refuse before connecting.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use skillbox_egress::*;
use support::{API_KEY, PASS, QUERY_KEY, Server, TOKEN, USER, assert_no_leak};

fn egress(allow_loopback: bool) -> Egress {
    Egress::new(EgressConfig {
        allow_http_loopback: allow_loopback,
        timeout: Duration::from_secs(5),
        ..EgressConfig::default()
    })
    .unwrap()
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn bearer(hosts: Vec<HostPattern>) -> Injection {
    Injection::new(Auth::Bearer(secret(TOKEN)), hosts).unwrap()
}

fn scanner() -> Scanner {
    Scanner::secrets(Redactor::new([TOKEN, USER, PASS, API_KEY, QUERY_KEY]))
}

fn get(url: &str) -> Request {
    Request { method: "GET".into(), url: url.into(), ..Request::default() }
}

fn allow(patterns: &[HostPattern]) -> Policy {
    Policy { network_allow: patterns.to_vec() }
}

/// The whole response as one byte string, headers included, for leak assertions.
fn everything(exchange: &Exchange) -> Vec<u8> {
    let mut all = exchange.final_url.clone().into_bytes();
    for (name, value) in &exchange.response.headers {
        all.extend_from_slice(format!("\n{name}: {value}").as_bytes());
    }
    all.push(b'\n');
    all.extend_from_slice(&exchange.response.body);
    all
}

#[tokio::test]
async fn bearer_is_injected_and_accepted() {
    let a = Server::start("127.0.0.1").await;
    let injection = bearer(vec![a.pattern()]);
    let ex = egress(true).send(&Policy::default(), get(&a.url("/auth/bearer")), Some(&injection), &scanner()).await;
    let ex = ex.unwrap();
    assert_eq!(ex.response.status, 200);
    assert!(ex.credential_sent);
    assert_eq!(ex.host, a.addr.to_string());
    assert_eq!(a.seen()[0].header("authorization").len(), 1);
}

#[tokio::test]
async fn basic_is_injected_and_accepted() {
    let a = Server::start("127.0.0.1").await;
    let injection =
        Injection::new(Auth::Basic { username: secret(USER), password: secret(PASS) }, vec![a.pattern()]).unwrap();
    let ex = egress(true).send(&Policy::default(), get(&a.url("/auth/basic")), Some(&injection), &scanner()).await;
    assert_eq!(ex.unwrap().response.status, 200);
}

#[tokio::test]
async fn custom_header_is_injected_and_replaces_the_guests() {
    let a = Server::start("127.0.0.1").await;
    let injection = Injection::new(
        Auth::Header { name: "X-Api-Key".into(), prefix: "Key ".into(), value: secret(API_KEY) },
        vec![a.pattern()],
    )
    .unwrap();
    let mut request = get(&a.url("/auth/header"));
    request.headers.push(("x-api-key".into(), "guest-value".into()));
    let ex = egress(true).send(&Policy::default(), request, Some(&injection), &scanner()).await;
    assert_eq!(ex.unwrap().response.status, 200);
    assert_eq!(a.seen()[0].header("x-api-key").len(), 1);
}

#[tokio::test]
async fn query_parameter_is_injected_and_hidden_from_final_url() {
    let a = Server::start("127.0.0.1").await;
    let injection =
        Injection::new(Auth::Query { param: "api_key".into(), value: secret(QUERY_KEY) }, vec![a.pattern()]).unwrap();
    let ex = egress(true)
        .send(&Policy::default(), get(&a.url("/auth/query?api_key=guest&x=1")), Some(&injection), &scanner())
        .await
        .unwrap();
    assert_eq!(ex.response.status, 200);
    assert!(ex.final_url.ends_with("/auth/query?api_key=guest&x=1"), "{}", ex.final_url);
}

#[tokio::test]
async fn guest_authorization_header_is_replaced_by_the_credential() {
    let a = Server::start("127.0.0.1").await;
    let mut request = get(&a.url("/auth/bearer"));
    request.headers.push(("Authorization".into(), "Bearer guest-made-up".into()));
    let ex = egress(true).send(&Policy::default(), request, Some(&bearer(vec![a.pattern()])), &scanner()).await;
    assert_eq!(ex.unwrap().response.status, 200);
    assert_eq!(a.seen()[0].header("authorization"), [format!("Bearer {TOKEN}").as_str()]);
}

#[tokio::test]
async fn unauthenticated_request_carries_no_credential() {
    let a = Server::start("127.0.0.1").await;
    let ex = egress(true).send(&allow(&[a.pattern()]), get(&a.url("/auth/bearer")), None, &scanner()).await.unwrap();
    assert_eq!(ex.response.status, 401);
    assert!(!ex.credential_sent);
}

#[tokio::test]
async fn credential_refused_for_a_host_outside_its_hosts() {
    let a = Server::start("127.0.0.1").await;
    let other = HostPattern::parse("api.github.com").unwrap();
    let err = egress(true)
        .send(&allow(&[a.pattern()]), get(&a.url("/echo")), Some(&bearer(vec![other])), &scanner())
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::CredentialHostNotAllowed { .. }), "{err}");
    assert!(err.to_string().contains("skillbox grant"), "{err}");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn credential_refused_for_an_allowed_host_that_is_not_its_own() {
    let a = Server::start("127.0.0.1").await;
    let b = Server::start("127.0.0.2").await;
    let policy = allow(&[a.pattern(), b.pattern()]);
    let err = egress(true)
        .send(&policy, get(&b.url("/echo")), Some(&bearer(vec![a.pattern()])), &scanner())
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::CredentialHostNotAllowed { .. }), "{err}");
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn unauthenticated_host_outside_network_allow_is_refused() {
    let a = Server::start("127.0.0.1").await;
    let err = egress(true).send(&Policy::default(), get(&a.url("/echo")), None, &scanner()).await.unwrap_err();
    assert!(matches!(err, EgressError::HostNotAllowed { .. }), "{err}");
    assert!(err.to_string().contains("[network] allow"), "{err}");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn same_origin_redirect_keeps_the_credential() {
    let a = Server::start("127.0.0.1").await;
    let ex = egress(true)
        .send(
            &Policy::default(),
            get(&a.url("/redirect?to=/auth/bearer")),
            Some(&bearer(vec![a.pattern()])),
            &scanner(),
        )
        .await
        .unwrap();
    assert_eq!(ex.response.status, 200);
    assert_eq!(ex.redirects, 1);
}

#[tokio::test]
async fn cross_origin_redirect_drops_the_credential() {
    let a = Server::start("127.0.0.1").await;
    let b = Server::start("127.0.0.2").await;
    let to = url::form_urlencoded::byte_serialize(b.url("/auth/bearer").as_bytes()).collect::<String>();
    let ex = egress(true)
        .send(
            &allow(&[b.pattern()]),
            get(&a.url(&format!("/redirect?to={to}"))),
            Some(&bearer(vec![a.pattern()])),
            &scanner(),
        )
        .await
        .unwrap();
    assert_eq!(ex.response.status, 401, "the other host must not receive the token");
    assert_eq!(ex.host, b.addr.to_string());
    assert!(b.seen()[0].header("authorization").is_empty());
}

#[tokio::test]
async fn redirect_to_a_host_not_allowed_is_refused() {
    let a = Server::start("127.0.0.1").await;
    let b = Server::start("127.0.0.2").await;
    let to = url::form_urlencoded::byte_serialize(b.url("/echo").as_bytes()).collect::<String>();
    for injection in [Some(bearer(vec![a.pattern()])), None] {
        let err = egress(true)
            .send(&allow(&[a.pattern()]), get(&a.url(&format!("/redirect?to={to}"))), injection.as_ref(), &scanner())
            .await
            .unwrap_err();
        assert!(matches!(err, EgressError::RedirectNotAllowed { .. }), "{err}");
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn redirect_location_carrying_the_token_is_not_followed() {
    let a = Server::start("127.0.0.1").await;
    let b = Server::start("127.0.0.2").await;
    let to = url::form_urlencoded::byte_serialize(b.url("/echo").as_bytes()).collect::<String>();
    let err = egress(true)
        .send(
            &allow(&[a.pattern(), b.pattern()]),
            get(&a.url(&format!("/leak-redirect?to={to}"))),
            Some(&bearer(vec![a.pattern()])),
            &scanner(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::SecretInRequest { part: RequestPart::RedirectLocation }), "{err}");
    assert_no_leak(format!("{err} {err:?}").as_bytes(), TOKEN, "error");
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn redirect_loop_is_cut_off() {
    let a = Server::start("127.0.0.1").await;
    let err = egress(true).send(&allow(&[a.pattern()]), get(&a.url("/loop")), None, &scanner()).await.unwrap_err();
    assert!(matches!(err, EgressError::TooManyRedirects { limit: 5 }), "{err}");
    assert_eq!(a.hits(), 6);
}

#[tokio::test]
async fn redirect_303_becomes_get_and_307_keeps_method_and_body() {
    let a = Server::start("127.0.0.1").await;
    let post = |status: u16| Request {
        method: "POST".into(),
        url: a.url(&format!("/redirect?status={status}&to=/echo")),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"payload".to_vec(),
    };
    let e = egress(true);
    e.send(&allow(&[a.pattern()]), post(303), None, &scanner()).await.unwrap();
    e.send(&allow(&[a.pattern()]), post(307), None, &scanner()).await.unwrap();
    let seen = a.seen();
    assert_eq!((seen[1].method.as_str(), seen[1].body.as_slice()), ("GET", &b""[..]));
    assert!(seen[1].header("content-type").is_empty());
    assert_eq!((seen[3].method.as_str(), seen[3].body.as_slice()), ("POST", &b"payload"[..]));
}

#[tokio::test]
async fn private_link_local_and_metadata_literals_are_refused_before_connecting() {
    let hosts = [
        "10.0.0.1",
        "192.168.1.1",
        "172.16.5.4",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "[fe80::1]",
        "[fd00::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "127.0.0.1",
        "[::1]",
    ];
    let patterns: Vec<HostPattern> = hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect();
    let e = egress(false);
    for host in hosts {
        let url = format!("https://{host}/latest/meta-data/");
        for injection in [None, Some(bearer(patterns.clone()))] {
            let err = e.send(&allow(&patterns), get(&url), injection.as_ref(), &scanner()).await.unwrap_err();
            assert!(matches!(err, EgressError::AddressNotAllowed { .. }), "{host}: {err}");
        }
    }
    // Loopback being allowed opens loopback (including ::ffff:127.0.0.1) only.
    let e = egress(true);
    for host in hosts.iter().filter(|h| !h.contains("127.0.0.1") && **h != "[::1]") {
        let err = e.send(&allow(&patterns), get(&format!("https://{host}/")), None, &scanner()).await.unwrap_err();
        assert!(matches!(err, EgressError::AddressNotAllowed { .. }), "{host}: {err}");
    }
}

#[tokio::test]
async fn localhost_name_is_refused_when_loopback_is_not_allowed() {
    let a = Server::start("127.0.0.1").await;
    let port = a.addr.port();
    let policy = allow(&[HostPattern::parse(&format!("localhost:{port}")).unwrap()]);
    let err = egress(false)
        .send(&policy, get(&format!("https://localhost:{port}/echo")), None, &scanner())
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::AddressNotAllowed { ref host, .. } if host == "localhost"), "{err}");
    assert_eq!(a.hits(), 0);

    // The same name passes the resolver when loopback is allowed.
    let ex = egress(true).send(&policy, get(&format!("http://localhost:{port}/echo")), None, &scanner()).await;
    assert_eq!(ex.unwrap().response.status, 200);
}

#[tokio::test]
async fn plain_http_is_refused_except_to_allowed_loopback() {
    let a = Server::start("127.0.0.1").await;
    let patterns: Vec<HostPattern> =
        ["example.com", "10.0.0.1", "example.com:21"].iter().map(|h| HostPattern::parse(h).unwrap()).collect();
    let mut policy = allow(&patterns);
    policy.network_allow.push(a.pattern());
    for (allow_loopback, url) in [
        (true, "http://example.com/".to_owned()),
        (true, "http://10.0.0.1/".to_owned()),
        (true, "ftp://example.com/".to_owned()),
        (false, a.url("/echo")),
    ] {
        let err = egress(allow_loopback).send(&policy, get(&url), None, &scanner()).await.unwrap_err();
        assert!(matches!(err, EgressError::SchemeNotAllowed { .. }), "{url}: {err}");
    }
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn echoed_bearer_token_is_redacted_everywhere() {
    let a = Server::start("127.0.0.1").await;
    let ex = egress(true)
        .send(&Policy::default(), get(&a.url("/echo")), Some(&bearer(vec![a.pattern()])), &scanner())
        .await
        .unwrap();
    // The server did get and echo it: the redaction is what hides it.
    assert_eq!(a.seen()[0].header("authorization"), [format!("Bearer {TOKEN}").as_str()]);
    let all = everything(&ex);
    assert_no_leak(&all, TOKEN, "bearer echo");
    assert_no_leak(&all, &format!("Bearer {TOKEN}"), "bearer echo");
    assert!(String::from_utf8_lossy(&all).contains(REDACTED));
    let reflected = ex.response.headers.iter().find(|(n, _)| n == "x-echo-authorization").unwrap();
    assert_eq!(reflected.1, format!("Bearer {REDACTED}"));
}

#[tokio::test]
async fn echoed_token_is_redacted_even_when_the_scanner_is_empty() {
    // The injected material alone must suffice, whatever the runtime passed as scanner.
    let a = Server::start("127.0.0.1").await;
    let ex = egress(true)
        .send(&Policy::default(), get(&a.url("/echo")), Some(&bearer(vec![a.pattern()])), &Scanner::default())
        .await
        .unwrap();
    assert_no_leak(&everything(&ex), TOKEN, "bearer echo, empty scanner");
}

#[tokio::test]
async fn echoed_basic_credentials_are_redacted() {
    let a = Server::start("127.0.0.1").await;
    let injection =
        Injection::new(Auth::Basic { username: secret(USER), password: secret(PASS) }, vec![a.pattern()]).unwrap();
    let ex = egress(true).send(&Policy::default(), get(&a.url("/echo")), Some(&injection), &Scanner::default()).await;
    let all = everything(&ex.unwrap());
    let token = STANDARD.encode(format!("{USER}:{PASS}"));
    for secret in [USER, PASS, token.as_str(), &format!("{USER}:{PASS}")] {
        assert_no_leak(&all, secret, "basic echo");
    }
}

#[tokio::test]
async fn echoed_query_and_header_credentials_are_redacted() {
    let a = Server::start("127.0.0.1").await;
    let query =
        Injection::new(Auth::Query { param: "api_key".into(), value: secret(QUERY_KEY) }, vec![a.pattern()]).unwrap();
    // The echo holds base64 of the form-encoded query string: a form no in-place redaction can
    // cut out, so the whole response is withheld (found in the percent and base64 views).
    let err = egress(true).send(&Policy::default(), get(&a.url("/echo")), Some(&query), &scanner()).await.unwrap_err();
    assert!(a.seen()[0].target.contains("api_key="));
    match &err {
        EgressError::ResponseBlocked { view, .. } => assert!(view.contains("base64"), "{view}"),
        other => panic!("expected ResponseBlocked, got {other}"),
    }
    assert_no_leak(format!("{err} {err:?}").as_bytes(), QUERY_KEY, "query echo error");

    let header = Injection::new(
        Auth::Header { name: "X-Api-Key".into(), prefix: "Key ".into(), value: secret(API_KEY) },
        vec![a.pattern()],
    )
    .unwrap();
    let ex = egress(true).send(&Policy::default(), get(&a.url("/echo")), Some(&header), &scanner()).await.unwrap();
    assert_no_leak(&everything(&ex), API_KEY, "header echo");
}

#[tokio::test]
async fn secrets_written_by_the_guest_trip_the_wire() {
    let a = Server::start("127.0.0.1").await;
    let policy = allow(&[a.pattern()]);
    let pct = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect::<String>();
    let cases = [
        (get(&a.url(&format!("/echo?t={pct}"))), RequestPart::Url),
        (get(&a.url(&format!("/echo/{}", hex::encode(TOKEN)))), RequestPart::Url),
        (
            Request { headers: vec![("X-Note".into(), format!("see {TOKEN}"))], ..get(&a.url("/echo")) },
            RequestPart::Header("x-note".into()),
        ),
        (Request { method: "POST".into(), body: TOKEN.as_bytes().to_vec(), ..get(&a.url("/echo")) }, RequestPart::Body),
        (
            Request {
                method: "POST".into(),
                body: STANDARD.encode(format!("{{\"token\":\"{TOKEN}\"}}")).into_bytes(),
                ..get(&a.url("/echo"))
            },
            RequestPart::Body,
        ),
        (Request { method: "POST".into(), body: PASS.as_bytes().to_vec(), ..get(&a.url("/echo")) }, RequestPart::Body),
    ];
    for (request, part) in cases {
        let err = egress(true).send(&policy, request, None, &scanner()).await.unwrap_err();
        match &err {
            EgressError::Tripwire { part: got, .. } => assert_eq!(got, &part),
            other => panic!("expected Tripwire, got {other}"),
        }
        assert_no_leak(format!("{err} {err:?}").as_bytes(), TOKEN, "error");
    }
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn oversized_responses_are_refused() {
    let a = Server::start("127.0.0.1").await;
    let e = Egress::new(EgressConfig {
        allow_http_loopback: true,
        max_response_body: 64 * 1024,
        timeout: Duration::from_secs(5),
        ..EgressConfig::default()
    })
    .unwrap();
    for path in ["/big?n=100000", "/stream?n=100000"] {
        let err = e.send(&allow(&[a.pattern()]), get(&a.url(path)), None, &scanner()).await.unwrap_err();
        assert!(matches!(err, EgressError::ResponseTooLarge { limit: 65536 }), "{path}: {err}");
    }
    let ok = e.send(&allow(&[a.pattern()]), get(&a.url("/stream?n=65536")), None, &scanner()).await.unwrap();
    assert_eq!(ok.response.body.len(), 65536);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let a = Server::start("127.0.0.1").await;
    let e = Egress::new(EgressConfig { allow_http_loopback: true, max_request_body: 10, ..EgressConfig::default() })
        .unwrap();
    let request = Request { method: "POST".into(), body: vec![b'x'; 11], ..get(&a.url("/echo")) };
    let err = e.send(&allow(&[a.pattern()]), request, None, &scanner()).await.unwrap_err();
    assert!(matches!(err, EgressError::RequestTooLarge { size: 11, limit: 10 }), "{err}");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn slow_servers_time_out() {
    let a = Server::start("127.0.0.1").await;
    let e = Egress::new(EgressConfig {
        allow_http_loopback: true,
        timeout: Duration::from_millis(300),
        ..EgressConfig::default()
    })
    .unwrap();
    let err = e.send(&allow(&[a.pattern()]), get(&a.url("/slow")), None, &scanner()).await.unwrap_err();
    assert!(matches!(err, EgressError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn malformed_or_dangerous_requests_are_refused() {
    let a = Server::start("127.0.0.1").await;
    let policy = allow(&[a.pattern()]);
    let cases = [
        Request { method: "TRACE".into(), ..get(&a.url("/echo")) },
        Request { method: "trace".into(), ..get(&a.url("/echo")) },
        Request { method: "Connect".into(), ..get(&a.url("/echo")) },
        Request { method: "GE T".into(), ..get(&a.url("/echo")) },
        Request { headers: vec![("Host".into(), "evil.example".into())], ..get(&a.url("/echo")) },
        Request { headers: vec![("X-Bad".into(), "a\r\nInjected: 1".into())], ..get(&a.url("/echo")) },
        get(&format!("http://user:pw@{}/echo", a.addr)),
        get("not a url"),
    ];
    for request in cases {
        let err = egress(true).send(&policy, request.clone(), None, &scanner()).await.unwrap_err();
        assert!(matches!(err, EgressError::BadRequest { .. }), "{request:?}: {err}");
    }
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn loopback_is_reached_over_plain_http_only() {
    // A listener that only counts connections: with the flag on, https to loopback (by literal
    // or by `localhost`) must be refused before anything connects.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let patterns: Vec<HostPattern> =
        [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")]
            .iter()
            .map(|h| HostPattern::parse(h).unwrap())
            .collect();
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        let url = format!("https://{host}:{port}/");
        let err = egress(true).send(&allow(&patterns), get(&url), None, &scanner()).await.unwrap_err();
        assert!(matches!(err, EgressError::AddressNotAllowed { .. }), "{url}: {err}");
        assert!(err.to_string().contains("--allow-http-loopback"), "the refusal names the flag's scope: {err}");
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}
