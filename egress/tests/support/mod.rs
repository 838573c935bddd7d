//! A minimal HTTP/1.1 server on loopback for the egress tests: checks injected credentials,
//! echoes requests back in every encoding a leak could take, redirects, and misbehaves on
//! demand (huge and slow bodies). One request per connection (`Connection: close`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use percent_encoding::NON_ALPHANUMERIC;
use skillbox_egress::HostPattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bearer token the `/auth/bearer` endpoint expects.
pub const TOKEN: &str = "tok/en+with=special&chars~0123456789";
/// Basic-auth user (an API key, as Stripe uses it) and password.
pub const USER: &str = "sk_test_user_4242424242";
/// Basic-auth password.
pub const PASS: &str = "p@ss:word/0123-xyz";
/// Custom header credential: `X-Api-Key: Key <API_KEY>`.
pub const API_KEY: &str = "apikey-abcdef0123456789";
/// Query credential `api_key=<QUERY_KEY>`; contains a space and reserved characters.
pub const QUERY_KEY: &str = "q s3cret/value+0123";

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// A running test server.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Starts a server on `ip` (a loopback address) and an ephemeral port.
    pub async fn start(ip: &str) -> Server {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let server = Server { addr, seen: Arc::default() };
        let handle = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let handle = handle.clone();
                tokio::spawn(async move { handle.serve(stream).await });
            }
        });
        server
    }

    /// `http://ip:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ip:port` as a host pattern.
    pub fn pattern(&self) -> HostPattern {
        HostPattern::parse(&self.addr.to_string()).unwrap()
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn serve(&self, mut stream: TcpStream) {
        let Some(request) = read_request(&mut stream).await else { return };
        self.seen.lock().unwrap().push(request.clone());
        let response = self.route(&request).await;
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
    }

    async fn route(&self, req: &Seen) -> Vec<u8> {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let auth = req.header("authorization");
        match path {
            "/auth/bearer" => ok_if(auth == [format!("Bearer {TOKEN}").as_str()]),
            "/auth/basic" => ok_if(auth == [format!("Basic {}", STANDARD.encode(format!("{USER}:{PASS}"))).as_str()]),
            "/auth/header" => ok_if(req.header("x-api-key") == [format!("Key {API_KEY}").as_str()]),
            "/auth/query" => {
                let keys: Vec<_> = params.iter().filter(|(k, _)| k == "api_key").map(|(_, v)| v.as_str()).collect();
                ok_if(keys == [QUERY_KEY])
            }
            "/echo" => echo(req),
            "/redirect" => {
                let status: u16 = param("status").and_then(|s| s.parse().ok()).unwrap_or(302);
                response(status, &[("location", &param("to").unwrap_or_default())], b"")
            }
            "/loop" => response(302, &[("location", "/loop")], b""),
            // Redirects to `to` with the received Authorization header in the query, as a
            // hostile server trying to get the token sent elsewhere would.
            "/leak-redirect" => {
                let value = auth.first().copied().unwrap_or_default();
                let to = format!("{}?t={}", param("to").unwrap_or_default(), pct(value.as_bytes()));
                response(302, &[("location", &to)], b"")
            }
            "/big" => {
                let n: usize = param("n").and_then(|s| s.parse().ok()).unwrap_or(0);
                response(200, &[], &vec![b'a'; n])
            }
            // No Content-Length: the body ends when the connection closes.
            "/stream" => {
                let n: usize = param("n").and_then(|s| s.parse().ok()).unwrap_or(0);
                let mut out = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
                out.extend(std::iter::repeat_n(b'b', n));
                out
            }
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                response(200, &[], b"late")
            }
            _ => response(404, &[], b"not found"),
        }
    }
}

fn ok_if(ok: bool) -> Vec<u8> {
    if ok { response(200, &[], b"ok") } else { response(401, &[], b"unauthorized") }
}

fn pct(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, NON_ALPHANUMERIC).to_string()
}

/// Echoes the request back: plain, then base64 and base64url of the whole plain text, then the
/// Authorization header (and every header value) in hex and percent-encoding. The
/// Authorization header is also reflected as response headers, raw and base64.
fn echo(req: &Seen) -> Vec<u8> {
    let mut plain = format!("{} {}\n", req.method, req.target).into_bytes();
    for (name, value) in &req.headers {
        plain.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    plain.push(b'\n');
    plain.extend_from_slice(&req.body);
    let mut body = plain.clone();
    body.extend_from_slice(b"\n--- base64 ---\n");
    body.extend_from_slice(STANDARD.encode(&plain).as_bytes());
    body.extend_from_slice(b"\n--- base64url ---\n");
    body.extend_from_slice(URL_SAFE_NO_PAD.encode(&plain).as_bytes());
    body.extend_from_slice(b"\n--- hex ---\n");
    for (_, value) in &req.headers {
        body.extend_from_slice(format!("{} {}\n", hex::encode(value), hex::encode_upper(value)).as_bytes());
    }
    body.extend_from_slice(b"--- percent ---\n");
    for (_, value) in &req.headers {
        body.extend_from_slice(format!("{}\n", pct(value.as_bytes())).as_bytes());
    }
    let auth = req.header("authorization").first().map(|s| s.to_string()).unwrap_or_default();
    let b64 = STANDARD.encode(&auth);
    response(200, &[("x-echo-authorization", &auth), ("x-echo-authorization-b64", &b64)], &body)
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", body.len()).into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

async fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { method, target, headers, body })
}

/// Asserts that `haystack` reveals `secret` in none of the encodings the echo server uses, and
/// that any base64 section in it, once decoded, does not contain the secret either.
pub fn assert_no_leak(haystack: &[u8], secret: &str, what: &str) {
    let s = secret.as_bytes();
    let forms = [
        secret.to_owned(),
        STANDARD.encode(s),
        URL_SAFE_NO_PAD.encode(s),
        hex::encode(s),
        hex::encode_upper(s),
        pct(s),
        url::form_urlencoded::byte_serialize(s).collect(),
    ];
    let text = String::from_utf8_lossy(haystack);
    for form in forms {
        assert!(!text.contains(&form), "{what}: found {form:?} in:\n{text}");
    }
    // Decode each base64 section independently of the redactor's own logic.
    for (marker, engine) in [("--- base64 ---\n", 0), ("--- base64url ---\n", 1)] {
        let Some(start) = text.find(marker) else { continue };
        let section = text[start + marker.len()..].lines().next().unwrap_or_default();
        let decoded = match engine {
            0 => STANDARD.decode(section),
            _ => URL_SAFE_NO_PAD.decode(section),
        };
        if let Ok(decoded) = decoded {
            let decoded = String::from_utf8_lossy(&decoded);
            assert!(!decoded.contains(secret), "{what}: {marker} section decodes to the secret");
        }
        // Pieces between redactions, decoded at every alignment, must not hold the secret either.
        for piece in section.split("[REDACTED]") {
            for skip in 0..4.min(piece.len()) {
                let p = &piece[skip..];
                let p = &p[..p.len() / 4 * 4];
                let decoded = match engine {
                    0 => STANDARD.decode(p).ok(),
                    _ => URL_SAFE_NO_PAD.decode(p).ok(),
                };
                if let Some(d) = decoded {
                    assert!(!String::from_utf8_lossy(&d).contains(secret), "{what}: a piece decodes to the secret");
                }
            }
        }
    }
}
