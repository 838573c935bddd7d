//! A hostile "service" for the reflection tests, and the attacker's side of them.
//!
//! [`start`] runs a [`TestServer`] whose [`route`] takes the credential a
//! request carried (an `Authorization: Bearer` token, the decoded
//! `Authorization: Basic` `user:pass`, an `X-Api-Key` header or an `api_key`
//! query parameter; for an unauthenticated request, the `q` query parameter)
//! and hands it back in the form the path names, `/reflect/<form>`: raw,
//! escaped, encoded, compressed, split, reversed. [`FORMS`] lists the forms
//! the host's scanner claims to handle; [`BEYOND_MODEL`] lists transformations
//! it does not model (see docs/threat-model.md, "Known limits").
//!
//! [`attacker_views`] decodes bytes the way an attacker who received them
//! would (decompressing wherever a format's magic appears, and trying the
//! formats that have none; base64, base32 and hex runs at every alignment;
//! JSON, HTML, percent and backslash escapes; UTF-16 both ways; nested), and
//! [`Needles`] searches those views for any 12-byte fragment of a secret or of
//! its reverse. Both are independent of the host's scanner on purpose.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::server::{Received, Reply, TestServer};

/// The length of the fragments searched for (the host's `FRAGMENT_LEN`).
pub const FRAGMENT: usize = 12;

/// The forms the host claims to handle: each must reach the guest redacted, decoded and
/// redacted (Content-Encoding), or not at all (`leak-blocked`).
pub const FORMS: &[&str] = &[
    "raw",
    "header",
    "header-base64",
    "gzip-ce",
    "deflate-ce",
    "br-ce",
    "zstd-ce",
    "gzip-gzip-ce",
    "gzip-ce-upper",
    "br-ce-upper",
    "br-ce-list",
    "br-ce-two-headers",
    "deflate-raw-ce",
    "gzip-blob",
    "zlib-blob",
    "zstd-blob",
    "xz-blob",
    "bzip2-blob",
    "json-slash",
    "json-unicode",
    "json-hex",
    "html-entities",
    "html-entities-nosemi",
    "html-entities-padded",
    "html-sol",
    "utf16le",
    "utf16be",
    "utf16le-odd",
    "base64-gzip",
    "base64",
    "base64url",
    "base64-doc",
    "base64-mime",
    "double-base64",
    "utf16le-base64",
    "hex",
    "hex-upper",
    "percent",
    "percent-base64",
    "percent-lower",
    "form-encoded",
    "header-name-hex",
    "nested",
    "gzip-embedded",
    "hex-gzip",
    "header-json-unicode",
    "split-base64",
    "split",
    "reversed",
    "upper",
];

/// Transformations the scanner does not model (no magic bytes, no known encoding): a server
/// that applies them hands the secret to the guest. Kept apart so the gap stays visible.
pub const BEYOND_MODEL: &[&str] = &[
    "br-blob",
    "deflate-raw-blob",
    "base32",
    "hex-spaced",
    "byte-array",
    "split-small",
    "split-headers",
    "rot13",
    "zero-width",
    "base64-wrapped-8",
    "base64x6",
    "utf32le",
    "zip-blob",
    "quoted-printable",
];

/// The Content-Encoding forms and the coding each needs the request to accept.
pub fn content_coding(form: &str) -> Option<&'static str> {
    match form {
        "gzip-ce" | "gzip-gzip-ce" | "gzip-ce-upper" => Some("gzip"),
        "deflate-ce" | "deflate-raw-ce" => Some("deflate"),
        "br-ce" | "br-ce-upper" | "br-ce-list" | "br-ce-two-headers" => Some("br"),
        "zstd-ce" => Some("zstd"),
        _ => None,
    }
}

/// Starts the reflecting server on 127.0.0.1.
pub async fn start() -> TestServer {
    TestServer::start("127.0.0.1", route).await
}

/// `/reflect/<form>`: the request's credential (or its `q` parameter) in that form.
pub fn route(req: &Received) -> Reply {
    let path = req.target.split('?').next().unwrap_or_default();
    let Some(form) = path.strip_prefix("/reflect/") else {
        return Reply::json(404, json!({ "error": "no such route", "path": path }));
    };
    let Some((_, value)) = credential_of(req).or_else(|| query_param(&req.target, "q").map(|q| ("q", q))) else {
        return Reply::json(401, json!({ "error": "no credential to reflect" }));
    };
    reflect(form, &value, req.header("accept-encoding").unwrap_or_default())
}

/// The credential a request carried, with its style (`bearer`, `basic`, `header`, `query`).
/// For Basic auth the value is the decoded `user:pass`.
pub fn credential_of(req: &Received) -> Option<(&'static str, Vec<u8>)> {
    if let Some(auth) = req.header("authorization") {
        if let Some(token) = auth.strip_prefix("Bearer ") {
            return Some(("bearer", token.as_bytes().to_vec()));
        }
        if let Some(basic) = auth.strip_prefix("Basic ") {
            return STANDARD.decode(basic.trim()).ok().map(|pair| ("basic", pair));
        }
    }
    if let Some(key) = req.header("x-api-key") {
        return Some(("header", key.as_bytes().to_vec()));
    }
    query_param(&req.target, "api_key").map(|v| ("query", v))
}

/// The form-decoded value of query parameter `name` in a request target.
pub fn query_param(target: &str, name: &str) -> Option<Vec<u8>> {
    let query = target.split_once('?')?.1;
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| form_decode(v))
}

fn form_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The reply handing `value` back in `form`; `accept` is the request's Accept-Encoding.
/// A Content-Encoding form the request did not accept answers 406, so a test sees that the
/// host did not ask for it.
pub fn reflect(form: &str, value: &[u8], accept: &str) -> Reply {
    let text = String::from_utf8_lossy(value).into_owned();
    let doc = json!({ "credential": text }).to_string().into_bytes();
    // What compressed forms compress: the credential beside enough compressible text that every
    // compressor codes the literals (entropy-codes them) rather than storing the input verbatim.
    let packed = json!({ "credential": text, "padding": filler(2048) }).to_string().into_bytes();
    let reply = |content_type: &str, body: Vec<u8>| Reply {
        status: 200,
        headers: vec![("content-type".into(), content_type.into())],
        body,
    };
    let data = |data: String| reply("application/json", json!({ "data": data }).to_string().into_bytes());
    if let Some(coding) = content_coding(form) {
        let accepted = accept.split(',').any(|c| c.split(';').next().unwrap_or_default().trim() == coding);
        if !accepted {
            return Reply::json(
                406,
                json!({ "error": format!("the request did not accept {coding}"), "accept": accept }),
            );
        }
        let (header, body) = match form {
            "gzip-ce" => ("gzip", gzip(&packed)),
            "deflate-ce" => ("deflate", zlib(&packed)),
            "br-ce" => ("br", brotli(&packed)),
            "zstd-ce" => ("zstd", zstd(&packed)),
            "gzip-gzip-ce" => ("gzip, gzip", gzip(&gzip(&packed))),
            // Spellings and lists an HTTP client may not decode: the body then passes through
            // compressed, and brotli and raw deflate have no magic bytes to find it by.
            "gzip-ce-upper" => ("GZIP", gzip(&packed)),
            "br-ce-upper" => ("BR", brotli(&packed)),
            "br-ce-list" => ("identity, br", brotli(&packed)),
            "br-ce-two-headers" => ("identity", brotli(&packed)),
            "deflate-raw-ce" => ("deflate", deflate_raw(&packed)),
            _ => unreachable!("content_coding lists only these"),
        };
        let mut r = reply("application/json", body);
        r.headers.push(("content-encoding".into(), header.into()));
        if form == "br-ce-two-headers" {
            r.headers.push(("content-encoding".into(), "br".into()));
        }
        return r;
    }
    match form {
        "raw" => reply("application/json", doc),
        "header" => {
            let mut r = reply("application/json", b"{}".to_vec());
            r.headers.push(("x-reflected".into(), text.clone()));
            r.headers.push(("set-cookie".into(), format!("session={text}; Path=/")));
            r
        }
        "header-base64" => {
            let mut r = reply("application/json", b"{}".to_vec());
            r.headers.push(("x-reflected".into(), STANDARD.encode(value)));
            r
        }
        "gzip-blob" => reply("application/octet-stream", gzip(&packed)),
        "zlib-blob" => reply("application/octet-stream", zlib(&packed)),
        "zstd-blob" => reply("application/octet-stream", zstd(&packed)),
        "xz-blob" => reply("application/octet-stream", xz(&packed)),
        "bzip2-blob" => reply("application/octet-stream", bzip2(&packed)),
        "json-slash" => reply("application/json", String::from_utf8_lossy(&doc).replace('/', "\\/").into_bytes()),
        "json-unicode" => {
            let escaped: String = text.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
            reply("application/json", format!("{{\"credential\":\"{escaped}\"}}").into_bytes())
        }
        "json-hex" => {
            let escaped: String = value.iter().map(|b| format!("\\x{b:02x}")).collect();
            reply("text/javascript", format!("var credential = \"{escaped}\";").into_bytes())
        }
        "html-entities" => {
            let escaped: String = value
                .iter()
                .enumerate()
                .map(|(i, b)| if i % 2 == 0 { format!("&#x{b:x};") } else { format!("&#{b};") })
                .collect();
            reply("text/html", format!("<p>{escaped}</p>").into_bytes())
        }
        "html-entities-nosemi" => {
            // HTML5 decodes numeric references without the semicolon (a parse error, not a stop).
            let escaped: String = value.iter().map(|b| format!("&#{b}")).collect();
            reply("text/html", format!("<p>{escaped} </p>").into_bytes())
        }
        "html-entities-padded" => {
            let escaped: String = value
                .iter()
                .enumerate()
                .map(|(i, b)| if i % 2 == 0 { format!("&#x{b:06x};") } else { format!("&#{b:07};") })
                .collect();
            reply("text/html", format!("<p>{escaped}</p>").into_bytes())
        }
        "html-sol" => {
            // Only the `/` escaped, with the HTML5 named reference.
            reply("text/html", format!("<p>{}</p>", text.replace('/', "&sol;")).into_bytes())
        }
        "utf16le" => reply("text/plain; charset=utf-16le", utf16(&doc, false)),
        "utf16le-odd" => reply("application/octet-stream", [b"!".as_slice(), &utf16(&doc, false)].concat()),
        "utf16be" => reply("text/plain; charset=utf-16be", utf16(&doc, true)),
        "base64-gzip" => data(STANDARD.encode(gzip(&packed))),
        "base64" => data(STANDARD.encode(value)),
        "base64url" => data(URL_SAFE_NO_PAD.encode(value)),
        "base64-doc" => data(STANDARD.encode(&doc)),
        "base64-mime" => {
            let encoded = STANDARD.encode(&doc);
            let lines: Vec<&str> =
                encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
            reply("text/plain", lines.join("\r\n").into_bytes())
        }
        "double-base64" => data(STANDARD.encode(STANDARD.encode(value))),
        "utf16le-base64" => data(STANDARD.encode(utf16(value, false))),
        "hex" => data(hex::encode(value)),
        "hex-upper" => data(hex::encode_upper(value)),
        "percent" => data(value.iter().map(|b| format!("%{b:02X}")).collect()),
        "percent-base64" => data(STANDARD.encode(value).bytes().map(|b| format!("%{b:02X}")).collect()),
        "percent-lower" => data(value.iter().map(|b| format!("%{b:02x}")).collect()),
        "form-encoded" => {
            reply("application/x-www-form-urlencoded", format!("credential={}", form_encode(value)).into_bytes())
        }
        "header-name-hex" => {
            let mut r = reply("application/json", b"{}".to_vec());
            r.headers.push((format!("x-{}", hex::encode(value)), "1".into()));
            r
        }
        "nested" => {
            // A JSON API returning base64 of gzip of JSON whose credential is \u-escaped, with
            // the base64's `/` escaped as `\/` as some JSON encoders do.
            let escaped: String = text.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
            let inner = format!("{{\"credential\":\"{escaped}\",\"padding\":\"{}\"}}", filler(2048));
            let encoded = STANDARD.encode(gzip(inner.as_bytes())).replace('/', "\\/");
            reply("application/json", format!("{{\"data\":\"{encoded}\"}}").into_bytes())
        }
        "gzip-embedded" => {
            // A container: text, then a gzip member, then more text.
            let mut body = b"header: skillbox export v1\n".to_vec();
            body.extend_from_slice(&gzip(&packed));
            body.extend_from_slice(b"\ntrailer\n");
            reply("application/octet-stream", body)
        }
        "hex-gzip" => data(hex::encode(gzip(&packed))),
        "header-json-unicode" => {
            let mut r = reply("application/json", b"{}".to_vec());
            r.headers.push(("x-reflected".into(), text.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()));
            r
        }
        "split-base64" => {
            let parts: Vec<String> = value.chunks(FRAGMENT).map(|c| STANDARD.encode(c)).collect();
            reply("application/json", json!({ "parts": parts }).to_string().into_bytes())
        }
        "split" => {
            // Overlapping parts of FRAGMENT bytes, each a separate string.
            let mut parts = Vec::new();
            let mut start = 0;
            while start < value.len() {
                let end = (start + FRAGMENT).min(value.len());
                parts.push(String::from_utf8_lossy(&value[end.saturating_sub(FRAGMENT)..end]).into_owned());
                if end == value.len() {
                    break;
                }
                start += FRAGMENT / 2;
            }
            reply("application/json", json!({ "parts": parts }).to_string().into_bytes())
        }
        "reversed" => data(text.chars().rev().collect()),
        "upper" => data(text.to_ascii_uppercase()),
        // Beyond the model.
        "br-blob" => reply("application/octet-stream", brotli(&packed)),
        "deflate-raw-blob" => reply("application/octet-stream", deflate_raw(&packed)),
        "base32" => data(base32(value)),
        "hex-spaced" => data(value.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")),
        "byte-array" => reply("application/json", json!({ "bytes": value }).to_string().into_bytes()),
        "split-small" => {
            let parts: Vec<String> = value.chunks(5).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            reply("application/json", json!({ "parts": parts }).to_string().into_bytes())
        }
        "rot13" => data(text.chars().map(rot13).collect()),
        "split-headers" => {
            let mut r = reply("application/json", b"{}".to_vec());
            for (i, part) in value.chunks(8).enumerate() {
                r.headers.push((format!("x-part-{i}"), String::from_utf8_lossy(part).into_owned()));
            }
            r
        }
        "zero-width" => data(text.chars().flat_map(|c| [c, '\u{200b}']).collect()),
        "base64-wrapped-8" => {
            let encoded = STANDARD.encode(value);
            let lines: Vec<&str> =
                encoded.as_bytes().chunks(8).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
            reply("text/plain", lines.join("\n").into_bytes())
        }
        "base64x6" => data(
            (0..6).fold(value.to_vec(), |v, _| STANDARD.encode(v).into_bytes()).into_iter().map(char::from).collect(),
        ),
        "zip-blob" => reply("application/zip", zip("credential.json", &packed)),
        "quoted-printable" => data(value.iter().map(|b| format!("={b:02X}")).collect()),
        "utf32le" => reply(
            "text/plain; charset=utf-32le",
            String::from_utf8_lossy(&doc).chars().flat_map(|c| (c as u32).to_le_bytes()).collect(),
        ),
        _ => Reply::json(404, json!({ "error": format!("unknown form {form:?}") })),
    }
}

/// `application/x-www-form-urlencoded` encoding.
pub fn form_encode(value: &[u8]) -> String {
    value
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => (b as char).to_string(),
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// gzip (one member, best compression).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip in memory");
    e.finish().expect("gzip in memory")
}

/// zlib (what HTTP calls `deflate`).
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("zlib in memory");
    e.finish().expect("zlib in memory")
}

/// A ZIP archive with one deflated entry (its data is raw deflate: no gzip or zlib magic).
pub fn zip(name: &str, data: &[u8]) -> Vec<u8> {
    let deflated = deflate_raw(data);
    let crc = crc32(data);
    let mut local = b"PK\x03\x04".to_vec();
    for v in [20u16, 0, 8, 0, 0] {
        local.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, deflated.len() as u32, data.len() as u32] {
        local.extend_from_slice(&v.to_le_bytes());
    }
    local.extend_from_slice(&(name.len() as u16).to_le_bytes());
    local.extend_from_slice(&0u16.to_le_bytes());
    local.extend_from_slice(name.as_bytes());
    local.extend_from_slice(&deflated);
    let mut central = b"PK\x01\x02".to_vec();
    for v in [20u16, 20, 0, 8, 0, 0] {
        central.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, deflated.len() as u32, data.len() as u32] {
        central.extend_from_slice(&v.to_le_bytes());
    }
    for v in [name.len() as u16, 0, 0, 0, 0] {
        central.extend_from_slice(&v.to_le_bytes());
    }
    central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
    central.extend_from_slice(&0u32.to_le_bytes()); // offset of the local header
    central.extend_from_slice(name.as_bytes());
    let mut end = b"PK\x05\x06".to_vec();
    for v in [0u16, 0, 1, 1] {
        end.extend_from_slice(&v.to_le_bytes());
    }
    end.extend_from_slice(&(central.len() as u32).to_le_bytes());
    end.extend_from_slice(&(local.len() as u32).to_le_bytes());
    end.extend_from_slice(&0u16.to_le_bytes());
    [local, central, end].concat()
}

/// Raw deflate, without any header (no magic bytes).
pub fn deflate_raw(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("deflate in memory");
    e.finish().expect("deflate in memory")
}

/// Brotli (no magic bytes).
pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
        w.write_all(data).expect("brotli in memory");
    }
    out
}

/// Zstandard.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// `n` letters from `a`-`p`, pseudo-random but fixed: 4 bits of entropy per byte, so it is
/// compressible, and few repeats, so a compressor sees it as literals.
pub fn filler(n: usize) -> String {
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (b'a' + ((x >> 16) & 15) as u8) as char
        })
        .collect()
}

/// xz: one block holding one LZMA2 chunk of range-coded LZMA (lzma-rs's own xz writer stores
/// the data in uncompressed chunks, which would show the credential verbatim).
pub fn xz(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 21, "one LZMA2 chunk");
    let mut lzma = Vec::new();
    let options = lzma_rs::compress::Options { unpacked_size: lzma_rs::compress::UnpackedSize::SkipWritingToHeader };
    lzma_rs::lzma_compress_with_options(&mut std::io::BufReader::new(data), &mut lzma, &options)
        .expect("lzma in memory");
    // Properties (1 byte, lc=3 lp=0 pb=2) and dictionary size (4 bytes), then the range coder.
    assert_eq!(lzma[0], 0x5d);
    let packed = &lzma[5..];
    assert!(packed.len() <= 1 << 16, "one LZMA2 chunk");
    let (u, p) = (data.len() - 1, packed.len() - 1);
    let mut chunk = vec![0xe0 | (u >> 16) as u8, (u >> 8) as u8, u as u8, (p >> 8) as u8, p as u8, 0x5d];
    chunk.extend_from_slice(packed);
    chunk.push(0x00); // end of the LZMA2 stream

    let flags = [0x00, 0x00]; // no check
    let mut out = vec![0xfd, b'7', b'z', b'X', b'Z', 0x00];
    out.extend_from_slice(&flags);
    out.extend_from_slice(&crc32(&flags).to_le_bytes());
    // Block header: size 8, one filter (LZMA2, dictionary property 22), padding, CRC32.
    let header = [0x02, 0x00, 0x21, 0x01, 22, 0, 0, 0];
    out.extend_from_slice(&header);
    out.extend_from_slice(&crc32(&header).to_le_bytes());
    out.extend_from_slice(&chunk);
    let unpadded = header.len() + 4 + chunk.len();
    out.resize(out.len() + (4 - unpadded % 4) % 4, 0);
    // Index: one record (unpadded size, uncompressed size), padding, CRC32.
    let mut index = vec![0x00];
    for n in [1, unpadded as u64, data.len() as u64] {
        let mut n = n;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                index.push(byte);
                break;
            }
            index.push(byte | 0x80);
        }
    }
    index.resize(index.len() + (4 - index.len() % 4) % 4, 0);
    let index_crc = crc32(&index);
    index.extend_from_slice(&index_crc.to_le_bytes());
    out.extend_from_slice(&index);
    // Footer: CRC32 of (backward size, flags), backward size, flags, magic.
    let mut footer = (((index.len() / 4) - 1) as u32).to_le_bytes().to_vec();
    footer.extend_from_slice(&flags);
    out.extend_from_slice(&crc32(&footer).to_le_bytes());
    out.extend_from_slice(&footer);
    out.extend_from_slice(b"YZ");
    out
}

/// CRC-32 (IEEE), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// bzip2.
pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    e.write_all(data).expect("bzip2 in memory");
    e.finish().expect("bzip2 in memory")
}

/// UTF-16 (of UTF-8 text; bytes that are not UTF-8 are replaced), little or big endian.
pub fn utf16(data: &[u8], big_endian: bool) -> Vec<u8> {
    String::from_utf8_lossy(data)
        .encode_utf16()
        .flat_map(|u| if big_endian { u.to_be_bytes() } else { u.to_le_bytes() })
        .collect()
}

/// RFC 4648 base32, unpadded.
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    for &b in data {
        buffer = (buffer << 8) | b as u64;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn rot13(c: char) -> char {
    match c {
        'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
        'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
        _ => c,
    }
}

/// A gzip stream of `members` concatenated members, each `member_bytes` zeros, built without
/// ever holding the inflated data: one member is compressed from a 1 MiB buffer written
/// repeatedly, then repeated. `member_bytes` must be a multiple of 1 MiB.
pub fn gzip_zeros(member_bytes: usize, members: usize) -> Vec<u8> {
    const MIB: usize = 1 << 20;
    assert_eq!(member_bytes % MIB, 0, "whole MiB only");
    let zeros = vec![0u8; MIB];
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..member_bytes / MIB {
        e.write_all(&zeros).expect("gzip in memory");
    }
    let member = e.finish().expect("gzip in memory");
    member.repeat(members)
}

/// A zlib stream of `bytes` zeros (a multiple of 1 MiB), built from a 1 MiB buffer.
pub fn zlib_zeros(bytes: usize) -> Vec<u8> {
    const MIB: usize = 1 << 20;
    let zeros = vec![0u8; MIB];
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..bytes.div_ceil(MIB) {
        e.write_all(&zeros).expect("zlib in memory");
    }
    e.finish().expect("zlib in memory")
}

/// A Zstandard frame of `bytes` zeros made of RLE blocks (4 bytes per 128 KiB), written by hand:
/// magic, a frame header with no content size and a 128 KiB window, then the blocks.
pub fn zstd_zeros(bytes: usize) -> Vec<u8> {
    const BLOCK: usize = 128 * 1024;
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x38];
    let mut left = bytes;
    while left > 0 {
        let size = left.min(BLOCK);
        left -= size;
        let last = u32::from(left == 0);
        let header = last | (1 << 1) | ((size as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

/// The peak resident set size of this process so far (`VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// ---------------------------------------------------------------------------------------------
// The attacker's side.

/// Most bytes [`attacker_views`] produces for one input (it stops decoding beyond this).
pub const VIEW_BUDGET: usize = 256 << 20;
/// Most bytes one decompression may produce.
const INFLATE_CAP: usize = 16 << 20;

/// Every 12-byte fragment of some secrets and of their reverses, ASCII case folded, for one
/// pass over a haystack. Secrets shorter than a fragment are searched whole.
#[derive(Debug, Default)]
pub struct Needles {
    fragments: HashMap<[u8; FRAGMENT], String>,
    whole: Vec<(Vec<u8>, String)>,
}

impl Needles {
    /// Needles for `(label, secret)` pairs.
    pub fn new(secrets: &[(&str, &[u8])]) -> Needles {
        let mut needles = Needles::default();
        for (label, secret) in secrets {
            let secret = secret.to_ascii_lowercase();
            let reversed: Vec<u8> = secret.iter().rev().copied().collect();
            if secret.len() < FRAGMENT {
                needles.whole.push((secret.clone(), format!("the {label}")));
                needles.whole.push((reversed, format!("the {label} reversed")));
                continue;
            }
            for (text, how) in [(&secret, ""), (&reversed, " reversed")] {
                for (at, w) in text.windows(FRAGMENT).enumerate() {
                    let key: [u8; FRAGMENT] = w.try_into().expect("window of FRAGMENT bytes");
                    needles
                        .fragments
                        .entry(key)
                        .or_insert_with(|| format!("bytes {at}..{} of the {label}{how}", at + FRAGMENT));
                }
            }
        }
        needles
    }

    /// What of which secret `haystack` holds, if anything (first hit; ASCII case ignored).
    pub fn find(&self, haystack: &[u8]) -> Option<String> {
        let lower = haystack.to_ascii_lowercase();
        if let Some(hit) = lower.windows(FRAGMENT).find_map(|w| self.fragments.get(w)) {
            return Some(hit.clone());
        }
        self.whole
            .iter()
            .find(|(n, _)| !n.is_empty() && memchr::memmem::find(&lower, n).is_some())
            .map(|(_, l)| l.clone())
    }

    /// Searches what a reply (or a response the guest got) holds: the body, each header (name and
    /// value), and all header values joined in order, each in every view.
    pub fn find_in_reply(&self, headers: &[(String, String)], body: &[u8], depth: usize) -> Option<String> {
        if let Some(hit) = self.find_in_views(body, depth) {
            return Some(format!("body: {hit}"));
        }
        for (name, value) in headers {
            if let Some(hit) = self.find_in_views(format!("{name}: {value}").as_bytes(), depth) {
                return Some(format!("header {name}: {hit}"));
            }
        }
        let joined: String = headers.iter().map(|(_, v)| v.as_str()).collect();
        self.find_in_views(joined.as_bytes(), depth).map(|hit| format!("headers joined: {hit}"))
    }

    /// Searches every [`attacker_views`] view of `haystack`; the hit names the view.
    pub fn find_in_views(&self, haystack: &[u8], depth: usize) -> Option<String> {
        attacker_views(haystack, depth)
            .iter()
            .find_map(|(view, bytes)| self.find(bytes).map(|hit| format!("{hit} (in the {view} view)")))
    }
}

/// `bytes` and everything an attacker could decode from it, to `depth` levels of nesting, as
/// `(path, bytes)`: the input itself is `raw`; decoded texts are named by the decoders applied
/// (`base64>gzip`). Decoding stops when [`VIEW_BUDGET`] bytes have been produced.
pub fn attacker_views(bytes: &[u8], depth: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("raw".to_owned(), bytes.to_vec())];
    let mut seen: HashSet<Vec<u8>> = HashSet::from([bytes.to_vec()]);
    let mut budget = VIEW_BUDGET;
    let mut frontier = vec![("raw".to_owned(), bytes.to_vec())];
    for _ in 0..depth {
        let mut next = Vec::new();
        for (path, input) in &frontier {
            for (name, decoded) in decode_once(input, path == "raw") {
                if decoded.len() < 4 || budget < decoded.len() || !seen.insert(decoded.clone()) {
                    continue;
                }
                budget -= decoded.len();
                let path = if path == "raw" { name.to_owned() } else { format!("{path}>{name}") };
                next.push((path, decoded));
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
        if frontier.is_empty() {
            break;
        }
    }
    out
}

/// One level of decoding: every decoder that applies, each result separately.
fn decode_once(bytes: &[u8], top: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    // JSON: every string (keys too), every string of the document joined, byte arrays.
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        let mut strings = Vec::new();
        let mut arrays = Vec::new();
        collect_json(&value, &mut strings, &mut arrays);
        out.push(("json-joined", strings.concat().into_bytes()));
        out.extend(strings.into_iter().map(|s| ("json", s.into_bytes())));
        out.extend(arrays.into_iter().map(|a| ("json-bytes", a)));
    }
    if bytes.contains(&b'\\') {
        out.push(("unescape", unescape(bytes)));
    }
    if bytes.contains(&b'&') {
        out.push(("html", html_unescape(bytes)));
    }
    if bytes.contains(&b'%') {
        out.push(("percent", percent_decode(bytes)));
    }
    if bytes.contains(&b'=') {
        let as_percent: Vec<u8> = bytes.iter().map(|&b| if b == b'=' { b'%' } else { b }).collect();
        out.push(("quoted-printable", percent_decode(&as_percent)));
    }
    if bytes.iter().any(|b| b.is_ascii_whitespace() || b"\"',:;".contains(b)) {
        // Separators removed: base64 split over lines, hex written byte by byte.
        let joined: Vec<u8> =
            bytes.iter().copied().filter(|b| !(b.is_ascii_whitespace() || b"\"',:;".contains(b))).collect();
        out.push(("joined", joined));
    }
    if bytes.contains(&0) {
        out.push(("utf16-even", bytes.iter().step_by(2).copied().collect()));
        out.push(("utf16-odd", bytes.iter().skip(1).step_by(2).copied().collect()));
    }
    out.extend(base64_runs(bytes).into_iter().map(|d| ("base64", d)));
    out.extend(hex_runs(bytes).into_iter().map(|d| ("hex", d)));
    out.extend(base32_runs(bytes).into_iter().map(|d| ("base32", d)));
    if top && bytes.iter().any(u8::is_ascii_alphabetic) {
        out.push(("rot13", bytes.iter().map(|&b| rot13(b as char) as u8).collect()));
    }
    if memchr::memmem::find(bytes, "\u{200b}".as_bytes()).is_some() {
        out.push((
            "zero-width",
            String::from_utf8_lossy(bytes).replace(['\u{200b}', '\u{200c}', '\u{200d}'], "").into_bytes(),
        ));
    }
    // Base64 of base64 of ...: decode a whole-text base64 run as often as it stays one.
    let mut layers = bytes.trim_ascii().to_vec();
    for _ in 0..16 {
        let is_run = layers.len() >= 12 && layers.iter().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b));
        match is_run.then(|| STANDARD.decode(&layers).ok()).flatten() {
            Some(decoded) => layers = decoded,
            None => break,
        }
    }
    if layers != bytes.trim_ascii() {
        out.push(("base64*", layers));
    }
    out.extend(decompress_all(bytes));
    out.retain(|(_, d)| d.as_slice() != bytes);
    out
}

fn collect_json(value: &Value, strings: &mut Vec<String>, arrays: &mut Vec<Vec<u8>>) {
    match value {
        Value::String(s) => strings.push(s.clone()),
        Value::Array(items) => {
            let bytes: Option<Vec<u8>> = items.iter().map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok())).collect();
            if let Some(bytes) = bytes.filter(|b| !b.is_empty()) {
                arrays.push(bytes);
            }
            items.iter().for_each(|v| collect_json(v, strings, arrays));
        }
        Value::Object(map) => {
            for (k, v) in map {
                strings.push(k.clone());
                collect_json(v, strings, arrays);
            }
        }
        _ => {}
    }
}

/// `\uXXXX`, `\xHH`, `\/` and friends, as JSON and JavaScript read them.
fn unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex_at = |at: usize, n: usize| -> Option<u32> {
        let digits = bytes.get(at..at + n)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'u' if hex_at(i + 2, 4).is_some() => {
                    let code = hex_at(i + 2, 4).unwrap_or_default();
                    let c = char::from_u32(code).unwrap_or('\u{fffd}');
                    out.extend_from_slice(c.to_string().as_bytes());
                    i += 6;
                    continue;
                }
                b'x' if hex_at(i + 2, 2).is_some() => {
                    out.push(hex_at(i + 2, 2).unwrap_or_default() as u8);
                    i += 4;
                    continue;
                }
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                other => out.push(other),
            }
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn html_unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // `&name;`, `&#DDD;`, `&#xHH;`, and numeric references without the `;` (HTML5 reads them).
        let window = &bytes[i + 1..bytes.len().min(i + 16)];
        let numeric_end = (window.first() == Some(&b'#')).then(|| {
            let hex = matches!(window.get(1), Some(b'x' | b'X'));
            let digits = &window[if hex { 2 } else { 1 }..];
            let n = digits.iter().take_while(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() }).count();
            (if hex { 2 } else { 1 }) + n
        });
        let entity = (bytes[i] == b'&')
            .then(|| window.iter().position(|&b| b == b';').or(numeric_end))
            .flatten()
            .map(|end| &bytes[i + 1..i + 1 + end]);
        let decoded = entity.and_then(|entity| {
            let text = std::str::from_utf8(entity).ok()?;
            let c = if let Some(hex) = text.strip_prefix("#x").or_else(|| text.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
            } else if let Some(dec) = text.strip_prefix('#') {
                dec.parse().ok().and_then(char::from_u32)
            } else {
                match text {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    "sol" => Some('/'),
                    _ => None,
                }
            }?;
            let semicolon = bytes.get(i + 1 + entity.len()) == Some(&b';');
            Some((c, entity.len() + 1 + usize::from(semicolon)))
        });
        match decoded {
            Some((c, len)) => {
                out.extend_from_slice(c.to_string().as_bytes());
                i += len;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) =
                bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Maximal runs of bytes matching `class`, at least `min` long.
fn runs(bytes: &[u8], min: usize, class: impl Fn(u8) -> bool) -> Vec<&[u8]> {
    bytes.split(|&b| !class(b)).filter(|r| r.len() >= min).collect()
}

/// Every run of base64 (either alphabet) decoded at each of the four character offsets.
fn base64_runs(bytes: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let mut out = Vec::new();
    for run in runs(bytes, 12, |b| b.is_ascii_alphanumeric() || b"+/-_".contains(&b)) {
        let standard: Vec<u8> = run
            .iter()
            .map(|&b| match b {
                b'-' => b'+',
                b'_' => b'/',
                b => b,
            })
            .collect();
        for offset in 0..4 {
            let part = &standard[offset.min(standard.len())..];
            let usable = part.len() - part.len() % 4;
            let tail = part.len() % 4;
            // Keep a trailing 2 or 3 characters (a partial group decodes to 1 or 2 bytes).
            let take = if tail >= 2 { part.len() } else { usable };
            if let Ok(decoded) = LENIENT.decode(&part[..take]) {
                out.push(decoded);
            }
        }
    }
    out
}

/// Every run of hex digits decoded at both nibble alignments.
fn hex_runs(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for run in runs(bytes, 16, |b| b.is_ascii_hexdigit()) {
        for offset in 0..2 {
            let part = &run[offset..];
            let part = &part[..part.len() - part.len() % 2];
            if let Ok(decoded) = hex::decode(part) {
                out.push(decoded);
            }
        }
    }
    out
}

/// Every run of base32 (RFC 4648 alphabet, either case) decoded at each of the eight offsets.
fn base32_runs(bytes: &[u8]) -> Vec<Vec<u8>> {
    let value = |b: u8| match b.to_ascii_uppercase() {
        c @ b'A'..=b'Z' => Some(c - b'A'),
        c @ b'2'..=b'7' => Some(c - b'2' + 26),
        _ => None,
    };
    let mut out = Vec::new();
    for run in runs(bytes, 16, |b| value(b).is_some()) {
        for offset in 0..8.min(run.len()) {
            let (mut buffer, mut bits, mut decoded) = (0u64, 0u32, Vec::new());
            for &c in &run[offset..] {
                buffer = (buffer << 5) | value(c).unwrap_or_default() as u64;
                bits += 5;
                if bits >= 8 {
                    bits -= 8;
                    decoded.push((buffer >> bits) as u8);
                }
            }
            out.push(decoded);
        }
    }
    out
}

/// Decompresses at every offset where a format's magic bytes appear, and tries the formats that
/// have none (raw deflate, brotli) on the whole input. Partial output is kept: an attacker reads
/// whatever a truncated or damaged stream yields.
fn decompress_all(bytes: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let at = |magic: &[u8]| memchr::memmem::find_iter(bytes, magic).take(8).collect::<Vec<_>>();
    for i in at(&[0x1f, 0x8b]) {
        out.push(("gzip", inflate(flate2::read::MultiGzDecoder::new(&bytes[i..]))));
    }
    for i in 0..bytes.len().saturating_sub(1) {
        let (cmf, flg) = (bytes[i], bytes[i + 1]);
        if cmf == 0x78 && (u16::from(cmf) * 256 + u16::from(flg)) % 31 == 0 && out.len() < 64 {
            out.push(("zlib", inflate(flate2::read::ZlibDecoder::new(&bytes[i..]))));
        }
    }
    for i in at(&[0x28, 0xb5, 0x2f, 0xfd]) {
        if let Ok(d) = ruzstd::decoding::StreamingDecoder::new(&bytes[i..]) {
            out.push(("zstd", inflate(d)));
        }
    }
    for i in at(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let mut sink = Capped { out: Vec::new(), cap: INFLATE_CAP };
        let _ = lzma_rs::xz_decompress(&mut std::io::BufReader::new(&bytes[i..]), &mut sink);
        out.push(("xz", sink.out));
    }
    for i in at(b"BZh") {
        out.push(("bzip2", inflate(bzip2::read::MultiBzDecoder::new(&bytes[i..]))));
    }
    for i in at(b"PK\x03\x04") {
        let field = |at: usize| bytes.get(i + at..i + at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
        if let (Some(8), Some(name), Some(extra)) = (field(8), field(26), field(28)) {
            let start = i + 30 + name + extra;
            if start < bytes.len() {
                out.push(("zip", inflate(flate2::read::DeflateDecoder::new(&bytes[start..]))));
            }
        }
    }
    // No magic: an attacker who knows the server just decodes.
    out.push(("deflate-raw", inflate(flate2::read::DeflateDecoder::new(bytes))));
    out.push(("brotli", inflate(brotli::Decompressor::new(bytes, 4096))));
    out.retain(|(_, d)| !d.is_empty());
    out
}

/// Reads at most [`INFLATE_CAP`] bytes, keeping what came before an error.
fn inflate(reader: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut reader = reader.take(INFLATE_CAP as u64);
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A writer that keeps at most `cap` bytes and then fails.
struct Capped {
    out: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.cap - self.out.len();
        if room == 0 {
            return Err(std::io::Error::other("cap reached"));
        }
        let n = buf.len().min(room);
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"Ab3dE6g/Hi9kLm2/No5pQr8/St1vWx4";

    #[test]
    fn every_form_is_found_by_the_attacker() {
        let needles = Needles::new(&[("secret", SECRET)]);
        for form in FORMS.iter().chain(BEYOND_MODEL) {
            let reply = reflect(form, SECRET, "gzip, deflate, br, zstd");
            assert_eq!(reply.status, 200, "{form}");
            let hit = needles.find_in_reply(&reply.headers, &reply.body, 4);
            if let Some(coding) = content_coding(form) {
                assert!(
                    reply.headers.iter().any(|(n, v)| n == "content-encoding" && v.to_lowercase().contains(coding)),
                    "{form}"
                );
            }
            assert!(hit.is_some(), "the attacker's decoders miss the {form} form");
        }
    }

    #[test]
    fn the_search_ignores_other_text() {
        let needles = Needles::new(&[("secret", SECRET)]);
        for text in [&b"{\"credential\":\"[REDACTED]\"}"[..], b"Ab3dE6g/Hi9", b"hello world, nothing here"] {
            assert_eq!(needles.find_in_views(text, 4), None);
        }
    }

    #[test]
    fn bombs_are_small_and_decode_to_what_they_claim() {
        let z = zstd_zeros(3 << 20);
        assert!(z.len() < 200);
        assert_eq!(inflate(ruzstd::decoding::StreamingDecoder::new(z.as_slice()).unwrap()).len(), 3 << 20);
        let g = gzip_zeros(2 << 20, 3);
        assert_eq!(inflate(flate2::read::MultiGzDecoder::new(g.as_slice())).len(), 6 << 20);
    }

    #[test]
    fn compressed_forms_do_not_store_the_value_verbatim() {
        let doc = format!("{{\"credential\":\"{}\",\"padding\":\"{}\"}}", "Ab3dE6g/Hi9kLm2/No5pQr8", filler(2048));
        let needles = Needles::new(&[("secret", b"Ab3dE6g/Hi9kLm2/No5pQr8")]);
        for (name, packed) in [
            ("gzip", gzip(doc.as_bytes())),
            ("zlib", zlib(doc.as_bytes())),
            ("zstd", zstd(doc.as_bytes())),
            ("xz", xz(doc.as_bytes())),
            ("bzip2", bzip2(doc.as_bytes())),
            ("brotli", brotli(doc.as_bytes())),
        ] {
            assert_eq!(needles.find(&packed), None, "{name} stores the value verbatim");
            assert!(needles.find_in_views(&packed, 2).is_some(), "{name} does not decode");
        }
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(xz(doc.as_bytes()).as_slice()), &mut out).unwrap();
        assert_eq!(out, doc.as_bytes());
    }

    #[test]
    fn query_parameters_are_form_decoded() {
        assert_eq!(query_param("/r?a=1&api_key=x%2Fy+z", "api_key").unwrap(), b"x/y z");
        assert_eq!(query_param("/r?api_key=abc%", "api_key").unwrap(), b"abc%");
    }
}
