//! The leak scanner: finds secret values, and their common encodings, in bytes.
//!
//! One [`Redactor`] is built per invocation from every secret value that invocation may touch.
//! The pipeline uses it twice: before sending, to refuse a request whose guest-written parts
//! contain a secret (the guest must never be able to smuggle a secret it obtained somehow), and
//! after receiving, to replace every occurrence in the response with `[REDACTED]` (an echo
//! server must not hand an injected token back to the guest).
//!
//! Each secret is matched raw and, when it is at least [`MIN_ENCODED_LEN`] bytes long, in the
//! encodings a server is likely to reflect it in: base64 (standard and URL-safe alphabets, padded
//! and unpadded, plus the alignment-independent "core" described on [`push_base64_cores`]), hex,
//! and percent-encoding (RFC 3986 unreserved-only, `application/x-www-form-urlencoded`,
//! JavaScript's `encodeURIComponent`, everything but alphanumerics, and every-byte `%XX`).
//! All patterns go into one Aho-Corasick automaton, searched leftmost-longest and
//! ASCII-case-insensitively (so hex and `%2f`/`%2F` match in any case; the price is that text
//! equal to a secret up to ASCII case is redacted too, which errs on the safe side).

use std::borrow::Cow;
use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

/// What a match is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this many bytes are matched raw only, never in encoded form.
///
/// The encoded forms of a very short secret (and especially the base64 cores, which drop up to
/// two characters at each end) are short enough to occur by chance in ordinary text, which
/// would redact innocent responses and refuse innocent requests. Real tokens, keys and
/// passwords are far longer; the raw value is always matched whatever its length.
pub const MIN_ENCODED_LEN: usize = 8;

/// RFC 3986 section 2.3: only `ALPHA / DIGIT / "-" / "." / "_" / "~"` stay unencoded.
const RFC3986_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// ECMAScript `encodeURIComponent`: also leaves `! ' ( ) *` unencoded.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*');

/// Finds and replaces secret values and their encodings.
///
/// Cheap to search (one automaton pass), built once per invocation. It keeps no copy of the
/// secrets in their own buffers: the intermediate pattern buffers are zeroized as soon as the
/// automaton is built. Limitation: the automaton's transition tables necessarily encode the
/// patterns and are owned by `aho-corasick`, which does not zeroize them on drop; they live as
/// long as the `Redactor`.
pub struct Redactor {
    /// `None` when there is nothing to find (no secrets, or only empty ones).
    automaton: Option<AhoCorasick>,
    /// Number of non-empty secrets the automaton was built from (for `Debug` and tests).
    secrets: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print patterns: they are the secrets.
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets)
            .field("patterns", &self.automaton.as_ref().map_or(0, |a| a.patterns_len()))
            .finish()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Self::empty()
    }
}

impl Redactor {
    /// Builds a redactor for the given secret values. Empty values are ignored.
    ///
    /// # Panics
    /// Only if the automaton cannot be built at all, which `aho-corasick` reports only when the
    /// patterns exceed its internal ID space (on the order of 2^31 states: gigabytes of
    /// secrets).
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut count = 0;
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            count += 1;
            push_variants(secret, &mut patterns);
        }
        patterns.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        if patterns.is_empty() {
            return Self::empty();
        }
        let build = |kind: Option<AhoCorasickKind>| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .ascii_case_insensitive(true)
                .kind(kind)
                .build(patterns.iter().map(|p| p.as_slice()))
        };
        // A redactor is built per invocation and per credentialed request, so build
        // cost matters as much as search speed: the automatic choice picks a DFA for
        // small pattern sets, which costs hundreds of microseconds to build (more with
        // ASCII case folding). The contiguous NFA builds in a few and searches these
        // short texts about as fast; the non-contiguous NFA only fails on ID overflow.
        let automaton = build(Some(AhoCorasickKind::ContiguousNFA))
            .or_else(|_| build(Some(AhoCorasickKind::NoncontiguousNFA)))
            .expect("aho-corasick cannot build an automaton for this many secrets");
        // `patterns` drops here and every buffer is zeroized.
        Self { automaton: Some(automaton), secrets: count }
    }

    /// A redactor that finds nothing (for invocations that touch no secret).
    pub fn empty() -> Self {
        Self { automaton: None, secrets: 0 }
    }

    /// True when no secret was given, so nothing will ever be found.
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// Whether `haystack` contains any secret, raw or encoded.
    pub fn contains_secret(&self, haystack: &[u8]) -> bool {
        self.automaton.as_ref().is_some_and(|a| a.is_match(haystack))
    }

    /// `haystack` with every secret occurrence replaced by [`REDACTED`]; borrowed when clean.
    pub fn redact<'a>(&self, haystack: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(automaton) = &self.automaton else {
            return Cow::Borrowed(haystack);
        };
        if !automaton.is_match(haystack) {
            return Cow::Borrowed(haystack);
        }
        let mut out = Vec::with_capacity(haystack.len());
        automaton.replace_all_with_bytes(haystack, &mut out, |_, _, dst| {
            dst.extend_from_slice(REDACTED.as_bytes());
            true
        });
        Cow::Owned(out)
    }

    /// [`Redactor::redact`] for text. A secret given as arbitrary bytes could match inside a
    /// multi-byte character; such remnants are replaced with U+FFFD.
    pub fn redact_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match self.redact(s.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(s),
            Cow::Owned(bytes) => Cow::Owned(match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
    }
}

/// Appends every pattern for one non-empty secret.
fn push_variants(secret: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    out.push(Zeroizing::new(secret.to_vec()));
    if secret.len() < MIN_ENCODED_LEN {
        return;
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        let mut text = Zeroizing::new(String::new());
        engine.encode_string(secret, &mut text);
        out.push(into_bytes(text));
    }
    push_base64_cores(secret, out);

    let mut hex_lower = Zeroizing::new(vec![0u8; secret.len() * 2]);
    // Invariant: the buffer is exactly twice the input length, as `encode_to_slice` requires.
    hex::encode_to_slice(secret, &mut hex_lower).expect("buffer is twice the secret's length");
    let hex_upper = Zeroizing::new(hex_lower.to_ascii_uppercase());
    out.push(hex_lower);
    out.push(hex_upper);

    out.push(percent(secret, RFC3986_UNRESERVED));
    out.push(percent(secret, URI_COMPONENT));
    // Everything but ASCII letters and digits, as many libraries (and Rust's
    // `percent-encoding` with `NON_ALPHANUMERIC`) encode.
    out.push(percent(secret, NON_ALPHANUMERIC));
    out.push(Zeroizing::new(url::form_urlencoded::byte_serialize(secret).flat_map(str::bytes).collect()));
    let mut every_byte = Zeroizing::new(Vec::with_capacity(secret.len() * 3));
    for byte in secret {
        every_byte.push(b'%');
        every_byte.extend_from_slice(hex::encode_upper([*byte]).as_bytes());
    }
    out.push(every_byte);
    // A base64 token (HTTP Basic) reflected inside a query string: `+ / =` get encoded.
    let mut b64 = Zeroizing::new(String::new());
    STANDARD.encode_string(secret, &mut b64);
    out.push(percent(b64.as_bytes(), RFC3986_UNRESERVED));
}

/// Appends the alignment-independent base64 "cores" of `secret`.
///
/// When the secret sits inside a larger text that is base64-encoded whole, its encoding depends
/// on where it starts within a 3-byte group. For each of the three offsets `k`, encode `k` filler
/// bytes followed by the secret and keep only the characters whose 6 bits come entirely from the
/// secret: characters `ceil(8k/6) .. floor(8(k+n)/6)`. Those characters appear verbatim in the
/// encoding of any text containing the secret at that alignment, whatever surrounds it.
fn push_base64_cores(secret: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    let n = secret.len();
    for k in 0..3 {
        let mut shifted = Zeroizing::new(vec![0u8; k]);
        shifted.extend_from_slice(secret);
        let start = (8 * k).div_ceil(6);
        let end = 8 * (k + n) / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let mut text = Zeroizing::new(String::new());
            engine.encode_string(&shifted[..], &mut text);
            out.push(Zeroizing::new(text.as_bytes()[start..end].to_vec()));
        }
    }
}

fn percent(bytes: &[u8], set: &'static AsciiSet) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() * 3));
    for piece in percent_encoding::percent_encode(bytes, set) {
        out.extend_from_slice(piece.as_bytes());
    }
    out
}

/// Moves a string's buffer into a byte vector without copying it (so one zeroize covers it).
fn into_bytes(mut text: Zeroizing<String>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(std::mem::take(&mut *text).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny deterministic generator: the test must be reproducible without extra crates.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes_upto(&mut self, min: usize, extra: usize) -> Vec<u8> {
            let len = min + self.below(extra);
            self.bytes(len)
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    const SECRET: &str = "s3cr3t/t0ken+with=specials&more~";

    #[test]
    fn raw_secret_is_found_and_replaced() {
        let r = Redactor::new([SECRET]);
        let text = format!("before {SECRET} after");
        assert!(r.contains_secret(text.as_bytes()));
        assert_eq!(r.redact_str(&text), "before [REDACTED] after");
        assert!(matches!(r.redact_str("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn encoded_forms_are_found() {
        let r = Redactor::new([SECRET]);
        let s = SECRET.as_bytes();
        let forms = [
            STANDARD.encode(s),
            STANDARD_NO_PAD.encode(s),
            URL_SAFE.encode(s),
            URL_SAFE_NO_PAD.encode(s),
            hex::encode(s),
            hex::encode_upper(s),
            percent_encoding::utf8_percent_encode(SECRET, RFC3986_UNRESERVED).to_string(),
            percent_encoding::utf8_percent_encode(SECRET, NON_ALPHANUMERIC).to_string().to_lowercase(),
            url::form_urlencoded::byte_serialize(s).collect(),
        ];
        for form in forms {
            let text = format!("x{form}y");
            assert!(r.contains_secret(text.as_bytes()), "not found: {form}");
            assert!(!r.redact_str(&text).contains(&form), "not redacted: {form}");
        }
    }

    #[test]
    fn full_base64_is_redacted_including_padding() {
        let r = Redactor::new([SECRET]);
        let text = format!("Basic {}", STANDARD.encode(SECRET));
        assert_eq!(r.redact_str(&text), "Basic [REDACTED]");
    }

    #[test]
    fn short_secrets_match_raw_only() {
        let r = Redactor::new(["abc"]);
        assert!(r.contains_secret(b"xxabcxx"));
        assert!(!r.contains_secret(STANDARD.encode("abc").as_bytes()));
        assert!(!r.contains_secret(b"616263"));
    }

    #[test]
    fn empty_redactor_finds_nothing() {
        let r = Redactor::new([""]);
        assert!(r.is_empty());
        assert!(!r.contains_secret(b""));
        assert!(!Redactor::empty().contains_secret(b"anything"));
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let r = Redactor::new([SECRET]);
        assert!(!format!("{r:?}").contains("s3cr3t"));
    }

    #[test]
    fn random_secrets_embedded_then_base64_encoded_whole_are_found() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..600 {
            let secret = rng.bytes_upto(MIN_ENCODED_LEN, 40);
            let before = rng.bytes_upto(0, 50);
            let after = rng.bytes_upto(0, 50);
            let mut text = before.clone();
            text.extend_from_slice(&secret);
            text.extend_from_slice(&after);
            let r = Redactor::new([&secret]);
            let engines = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD];
            let encoded = engines[round % 4].encode(&text);
            assert!(r.contains_secret(encoded.as_bytes()), "round {round}: offset {}", before.len());
            // Hex of the whole text is byte-aligned, so the plain hex pattern must hit too.
            assert!(r.contains_secret(hex::encode(&text).as_bytes()), "round {round}: hex");
            // After redaction, decoding what is left must not reveal the secret.
            let redacted = r.redact(encoded.as_bytes()).into_owned();
            assert!(!r.contains_secret(&redacted));
        }
    }

    #[test]
    fn random_text_without_the_secret_is_left_alone() {
        let mut rng = XorShift(42);
        let secret = rng.bytes(24);
        let r = Redactor::new([&secret]);
        for _ in 0..200 {
            let text = STANDARD.encode(rng.bytes(200));
            assert!(!r.contains_secret(text.as_bytes()));
        }
    }
}
