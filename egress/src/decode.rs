//! Content-Encoding, decoded by the host.
//!
//! The host asks servers for `gzip, deflate, br, zstd` and decodes whatever comes back itself,
//! so the guest never receives a compressed body it could decode a reflected secret from. The
//! header is read the way a client must read it: every `Content-Encoding` header, each a
//! comma-separated list, names compared case-insensitively, codings undone last to first. A
//! coding the host cannot decode is refused, never passed on (the guest could decode it where
//! the scanner cannot look). Every stage is capped, so a decompression bomb costs at most the
//! cap.

use std::io::Read;

use reqwest::header::{CONTENT_ENCODING, HeaderMap};

use crate::EgressError;

/// The value of `Accept-Encoding` the host sends.
pub(crate) const ACCEPT_ENCODING: &str = "gzip, deflate, br, zstd";

/// Undoes every content coding of `body` listed in `headers`, each stage producing at most
/// `limit` bytes; removes `Content-Encoding` (and the now wrong `Content-Length`).
pub(crate) fn decode_body(headers: &mut HeaderMap, mut body: Vec<u8>, limit: usize) -> Result<Vec<u8>, EgressError> {
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| unsupported("a non-ASCII value"))?;
        codings.extend(text.split(',').map(|c| c.trim().to_ascii_lowercase()).filter(|c| !c.is_empty()));
    }
    for coding in codings.iter().rev() {
        body = match coding.as_str() {
            "identity" => continue,
            "gzip" | "x-gzip" => read_capped(flate2::read::MultiGzDecoder::new(&body[..]), limit)?,
            // RFC 9110 `deflate` is zlib; some servers send raw deflate. Try zlib first.
            "deflate" => match read_capped(flate2::read::ZlibDecoder::new(&body[..]), limit) {
                Ok(out) => out,
                Err(EgressError::ResponseTooLarge { limit }) => return Err(EgressError::ResponseTooLarge { limit }),
                Err(_) => read_capped(flate2::read::DeflateDecoder::new(&body[..]), limit)?,
            },
            "br" => read_capped(brotli_decompressor::Decompressor::new(&body[..], 64 * 1024), limit)?,
            "zstd" => {
                let decoder = ruzstd::decoding::StreamingDecoder::new(&body[..])
                    .map_err(|e| EgressError::Upstream(format!("the server sent an invalid zstd body ({e})")))?;
                read_capped(decoder, limit)?
            }
            other => return Err(unsupported(&format!("`{other}`"))),
        };
    }
    headers.remove(CONTENT_ENCODING);
    headers.remove(reqwest::header::CONTENT_LENGTH);
    Ok(body)
}

fn unsupported(what: &str) -> EgressError {
    EgressError::Upstream(format!(
        "the server answered with content coding {what}, which the host cannot decode, so the response was withheld \
         (the host asks for `{ACCEPT_ENCODING}`)"
    ))
}

/// Reads `reader` to the end, failing past `limit` bytes.
fn read_capped(reader: impl Read, limit: usize) -> Result<Vec<u8>, EgressError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| EgressError::Upstream(format!("the server sent a body that does not decode ({e})")))?;
    if out.len() > limit {
        return Err(EgressError::ResponseTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use reqwest::header::HeaderValue;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn codings_are_read_case_insensitively_listed_and_stacked() {
        let body = gzip(&gzip(b"hello"));
        for values in [&["GZIP, gzip"][..], &["identity", "gzip", "Gzip"], &["x-gzip,gzip"]] {
            let mut h = headers(values);
            assert_eq!(decode_body(&mut h, body.clone(), 1024).unwrap(), b"hello", "{values:?}");
            assert!(h.get(CONTENT_ENCODING).is_none());
        }
    }

    #[test]
    fn an_unknown_coding_is_refused() {
        let err = decode_body(&mut headers(&["compress"]), b"x".to_vec(), 1024).unwrap_err();
        assert!(err.to_string().contains("`compress`"), "{err}");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 8 << 20]);
        let err = decode_body(&mut headers(&["gzip"]), bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, EgressError::ResponseTooLarge { .. }), "{err}");
    }

    #[test]
    fn raw_deflate_decodes_too() {
        // (brotli and zstd are covered end to end by the reflection tests.)
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(b"raw deflate").unwrap();
        assert_eq!(decode_body(&mut headers(&["Deflate"]), raw.finish().unwrap(), 1024).unwrap(), b"raw deflate");
    }
}
