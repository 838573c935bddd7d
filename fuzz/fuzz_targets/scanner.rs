//! The leak scanner's views on arbitrary bytes: never panics, stays within its budget, and the
//! properties that make it a defence hold — a secret planted raw is always found, redaction
//! leaves no raw occurrence, and the chunked scanner agrees with the whole-text one.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use skillbox_scan::stream::StreamScanner;
use skillbox_scan::{Redactor, SecretMatcher, ViewLimits};

const SECRET: &[u8] = b"fuzz-s3cret/token+value=0123";

fuzz_target!(|input: (&[u8], u8, bool)| {
    let (data, split, plant) = input;
    let redactor = Redactor::empty().with(Arc::new(SecretMatcher::new("fuzz", [SECRET])));
    let limits = ViewLimits { max_depth: 4, max_bytes: 4 * 1024 * 1024 };
    let mut text = data.to_vec();
    if plant {
        let at = usize::from(split) % (text.len() + 1);
        text.splice(at..at, SECRET.iter().copied());
    }
    let hit = redactor.scan(&text, &limits);
    if plant {
        assert!(redactor.find(&text).is_some(), "a planted secret is found raw");
    }
    let redacted = redactor.redact(&text);
    assert!(redactor.find(&redacted).is_none(), "redaction leaves no raw occurrence");
    drop(hit);
    // Chunked: the same input in two pieces releases no raw occurrence either.
    let cut = usize::from(split) % (text.len() + 1);
    let mut stream = StreamScanner::new(redactor.clone(), limits);
    let mut out = Vec::new();
    if let (Ok(a), Ok(b)) = (stream.push(&text[..cut]), stream.push(&text[cut..])) {
        out.extend(a);
        out.extend(b);
        if let Ok(rest) = stream.finish() {
            out.extend(rest);
            assert!(redactor.find(&out).is_none(), "the chunked scanner leaves no raw occurrence");
        }
    }
});
