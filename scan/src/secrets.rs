//! Secret matchers: one per credential, searched raw and in every view.
//!
//! A [`SecretMatcher`] is built once per credential version and shared: it holds one
//! Aho-Corasick automaton over everything that betrays the secret in text:
//!
//! - the value itself and its reverse;
//! - every fragment of [`FRAGMENT_LEN`] bytes of the value and of its reverse, so a secret handed
//!   back in overlapping pieces is still found (the whole value when it is shorter);
//! - the encodings a server is likely to reflect it in, so they can be cut out in place: base64
//!   (standard and URL-safe, padded and unpadded, plus the alignment-independent "cores" of
//!   [`push_base64_cores`]), hex, and the common percent-encodings.
//!
//! Searches are ASCII-case-insensitive (so hex and `%2f`/`%2F` match in any case; text equal to a
//! secret up to ASCII case is treated as the secret, which errs on the safe side).
//!
//! Secrets shorter than [`MIN_SECRET_LEN`] cannot be searched for in free text without false
//! alarms: they are matched only as whole values (between non-alphanumeric bytes), only for
//! redaction, and never reported as a hit (so they never block or trip the wire on their own).
//!
//! A [`Redactor`] is the set of matchers one invocation has opened; the decoded views
//! ([`crate::views`]) run over it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

use crate::ScanError;
use crate::fragments::{Entry, FragmentTable, hash_window};
use crate::views::{self, ViewLimits};

/// What a match is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this many bytes are matched only as whole values, never encoded or in
/// fragments, and never trip the wire: their encodings are short enough to occur by chance.
pub const MIN_SECRET_LEN: usize = 8;

/// Former name of [`MIN_SECRET_LEN`].
pub const MIN_ENCODED_LEN: usize = MIN_SECRET_LEN;

/// Length of the fragments searched for: any run of this many bytes of a secret (or of its
/// reverse) counts as the secret. Shorter pieces are not searched for (see the threat model).
pub const FRAGMENT_LEN: usize = 12;

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

/// How a hit relates to the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HitKind {
    /// The whole value.
    Whole,
    /// The whole value, reversed.
    Reverse,
    /// A fragment of [`FRAGMENT_LEN`] bytes of the value or of its reverse.
    Fragment,
    /// A known encoding of the value (base64, hex, percent).
    Encoded,
}

impl HitKind {
    /// Lowercase name, for audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            HitKind::Whole => "whole",
            HitKind::Reverse => "reverse",
            HitKind::Fragment => "fragment",
            HitKind::Encoded => "encoded",
        }
    }
}

/// Where a secret was found: which credential (by label, never the value), in which view
/// (`raw`, or a chain such as `base64>gzip`), and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The label of the matcher that hit (a credential's name).
    pub label: Arc<str>,
    /// The view the secret was found in: `raw`, or decoders joined by `>`.
    pub view: String,
    /// Whole value, reverse, fragment or encoding.
    pub kind: HitKind,
}

/// Finds one credential's secret values in bytes. Build once per credential version; share
/// with [`Arc`].
///
/// Fragments (and so whole values and reverses of secrets of at least [`FRAGMENT_LEN`] bytes)
/// are found by the rolling hash of [`crate::fragments`]; shorter secrets' whole values and
/// every secret's encodings by Aho-Corasick automata. It keeps no copy of the secrets in
/// buffers of its own: pattern buffers are zeroized once the automata are built. Limitation:
/// the automata's transition tables necessarily encode the patterns and are owned by
/// `aho-corasick`, which does not zeroize them on drop.
pub struct SecretMatcher {
    label: Arc<str>,
    /// Every window of every secret of at least [`FRAGMENT_LEN`] bytes, and of its reverse.
    windows: FragmentTable,
    /// Whole value and reverse of secrets of [`MIN_SECRET_LEN`]..[`FRAGMENT_LEN`] bytes
    /// (ASCII case-insensitive).
    exact: Option<AhoCorasick>,
    exact_kinds: Vec<HitKind>,
    /// Encodings of every secret of at least [`MIN_SECRET_LEN`] bytes (case-sensitive: base64
    /// is; hex and percent-encodings are listed in both cases).
    encoded: Option<AhoCorasick>,
    /// Whole values of secrets shorter than [`MIN_SECRET_LEN`] bytes.
    short: Option<AhoCorasick>,
    /// Longest pattern, for the overlap of chunked scans.
    max_pattern: usize,
    secrets: usize,
}

impl fmt::Debug for SecretMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print patterns: they are the secrets.
        f.debug_struct("SecretMatcher").field("label", &self.label).field("secrets", &self.secrets).finish()
    }
}

impl SecretMatcher {
    /// Builds a matcher for `secrets` (one credential's secret fields), reported as `label`.
    /// Empty values are ignored.
    ///
    /// # Panics
    /// Only if an automaton cannot be built at all, which `aho-corasick` reports only when the
    /// patterns exceed its internal ID space (gigabytes of secrets).
    pub fn new<I, S>(label: &str, secrets: I) -> SecretMatcher
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut windows = Vec::new();
        let mut exact: Vec<(Zeroizing<Vec<u8>>, HitKind)> = Vec::new();
        let mut encoded: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut short: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut count = 0;
        let mut max_pattern = 0;
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            count += 1;
            max_pattern = max_pattern.max(secret.len());
            if secret.len() < MIN_SECRET_LEN {
                short.push(Zeroizing::new(secret.to_vec()));
                continue;
            }
            let mut reverse = Zeroizing::new(secret.to_vec());
            reverse.reverse();
            if secret.len() >= FRAGMENT_LEN {
                for (source, kind) in [(secret, HitKind::Fragment), (reverse.as_slice(), HitKind::Reverse)] {
                    windows.extend(source.windows(FRAGMENT_LEN).map(|w| Entry {
                        hash: hash_window(w),
                        owner: 0,
                        kind,
                    }));
                }
            } else {
                exact.push((Zeroizing::new(secret.to_vec()), HitKind::Whole));
                exact.push((reverse, HitKind::Reverse));
            }
            push_encodings(secret, &mut encoded);
        }
        exact.sort_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()).then(a.1.cmp(&b.1)));
        exact.dedup_by(|a, b| a.0.as_slice() == b.0.as_slice());
        for list in [&mut encoded, &mut short] {
            list.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
            list.dedup_by(|a, b| a.as_slice() == b.as_slice());
        }
        max_pattern = max_pattern.max(encoded.iter().map(|p| p.len()).max().unwrap_or(0));
        SecretMatcher {
            label: label.into(),
            windows: FragmentTable::new(windows),
            exact: automaton(exact.iter().map(|p| p.0.as_slice()), true),
            exact_kinds: exact.iter().map(|p| p.1).collect(),
            encoded: automaton(encoded.iter().map(|p| p.as_slice()), false),
            short: automaton(short.iter().map(|p| p.as_slice()), true),
            max_pattern,
            secrets: count,
        }
        // The pattern lists drop here and every buffer is zeroized.
    }

    /// The label hits are reported with.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// True when the matcher was built from no (non-empty) secret.
    pub fn is_empty(&self) -> bool {
        self.secrets == 0
    }

    /// The first reportable occurrence (fragment, reverse, whole value or encoding of a secret
    /// of at least [`MIN_SECRET_LEN`] bytes) in `haystack`.
    pub fn find(&self, haystack: &[u8]) -> Option<HitKind> {
        self.windows.first(haystack).map(|e| e.kind).or_else(|| self.find_exact(haystack, true))
    }

    /// Hits of the automata (not the fragment windows); the encodings only when asked.
    fn find_exact(&self, haystack: &[u8], encodings: bool) -> Option<HitKind> {
        if let Some(m) = self.exact.as_ref().and_then(|a| a.find(haystack)) {
            return Some(self.exact_kinds[m.pattern().as_usize()]);
        }
        let encoded = self.encoded.as_ref().filter(|_| encodings)?;
        encoded.find(haystack).map(|_| HitKind::Encoded)
    }

    /// Appends the byte ranges of every automaton occurrence in `haystack` (not the fragment
    /// windows, not short secrets) to `out`, unsorted.
    fn ranges(&self, haystack: &[u8], out: &mut Vec<Range<usize>>) {
        for automaton in [&self.exact, &self.encoded].into_iter().flatten() {
            out.extend(automaton.find_iter(haystack).map(|m| m.range()));
        }
    }

    /// Appends the ranges of whole-value occurrences of short secrets.
    fn short_ranges(&self, haystack: &[u8], out: &mut Vec<Range<usize>>) {
        if let Some(short) = &self.short {
            // Only where the value stands alone: no ASCII alphanumeric byte on either side.
            let word = |i: Option<&u8>| i.is_some_and(u8::is_ascii_alphanumeric);
            let mut at = 0;
            while let Some(m) = short.find(Input::new(haystack).range(at..)) {
                at = m.start() + 1;
                let before = m.start().checked_sub(1).and_then(|i| haystack.get(i));
                if !word(before) && !word(haystack.get(m.end())) {
                    out.push(m.range());
                    at = m.end();
                }
            }
        }
    }
}

/// Builds the automaton for a pattern set; `None` when it is empty.
fn automaton<'a>(patterns: impl Iterator<Item = &'a [u8]> + Clone, fold_case: bool) -> Option<AhoCorasick> {
    if patterns.clone().next().is_none() {
        return None;
    }
    let build = |kind: Option<AhoCorasickKind>| {
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(fold_case)
            .kind(kind)
            .build(patterns.clone())
    };
    // Matchers are built once per credential version and cached, so the encodings (the bulk
    // of the patterns, case-sensitive) can afford the automatic choice: a DFA with a
    // prefilter, which searches several times faster than an NFA. The case-folded sets are a
    // handful of short patterns; the contiguous NFA builds fastest for them. The
    // non-contiguous NFA only fails on ID overflow.
    let first = if fold_case { Some(AhoCorasickKind::ContiguousNFA) } else { None };
    Some(
        build(first)
            .or_else(|_| build(Some(AhoCorasickKind::NoncontiguousNFA)))
            .expect("aho-corasick cannot build an automaton for this many secrets"),
    )
}

/// The secrets one invocation may touch: a set of shared matchers, searched raw (for redaction
/// in place) and in decoded views (for blocking and the tripwire).
#[derive(Clone, Default)]
pub struct Redactor {
    matchers: Vec<Arc<SecretMatcher>>,
    /// The windows of every matcher in one table (`owner` = index in `matchers`), so the
    /// fragment search is one pass however many credentials are open.
    windows: Arc<FragmentTable>,
    /// Indices of matchers whose short secrets are left alone (see
    /// [`Redactor::without_short`]).
    skip_short: Vec<usize>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor").field("matchers", &self.matchers).finish()
    }
}

impl Redactor {
    /// A redactor over one unlabelled matcher built from `secrets`. Empty values are ignored.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Self::empty().with(Arc::new(SecretMatcher::new("", secrets)))
    }

    /// A redactor that finds nothing (for invocations that touch no secret).
    pub fn empty() -> Self {
        Self { matchers: Vec::new(), windows: Arc::default(), skip_short: Vec::new() }
    }

    /// This set plus `matcher` (cheap: matchers are shared; the window table is merged).
    pub fn with(&self, matcher: Arc<SecretMatcher>) -> Self {
        let mut out = self.clone();
        out.push(matcher);
        out
    }

    /// Adds `matcher` to this set.
    pub fn push(&mut self, matcher: Arc<SecretMatcher>) {
        if matcher.is_empty() || self.matchers.iter().any(|m| Arc::ptr_eq(m, &matcher)) {
            return;
        }
        self.matchers.push(matcher);
        self.windows = Arc::new(FragmentTable::merge(self.matchers.iter().map(|m| &m.windows)));
    }

    /// True when no secret was given, so nothing will ever be found.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// The same set, but not redacting the short secrets (shorter than [`MIN_SECRET_LEN`]) of
    /// the credentials in `written`, as [`Redactor::short_written`] found them. For a response
    /// to a request in which the guest itself wrote such a value: redacting the echo would tell
    /// the guest its guess was right, and it already knows what it wrote.
    pub fn without_short(&self, written: &[usize]) -> Redactor {
        Redactor { skip_short: written.to_vec(), ..self.clone() }
    }

    /// The same set, redacting no secret shorter than [`MIN_SECRET_LEN`] at all: for what the
    /// guest hands its caller. The guest can only know such a value by guessing it (responses
    /// redact it unless the guest wrote it itself), and a redacted guess would confirm it.
    pub fn without_any_short(&self) -> Redactor {
        Redactor { skip_short: (0..self.matchers.len()).collect(), ..self.clone() }
    }

    /// Which credentials (matcher indices) have a secret shorter than [`MIN_SECRET_LEN`] in
    /// `haystack` as a whole value, raw or in any decoded view. When the text cannot be
    /// examined, every credential with a short secret counts (then nothing short is redacted,
    /// so no answer depends on a guess).
    pub fn short_written(&self, haystack: &[u8], limits: &ViewLimits) -> Vec<usize> {
        let with_short: Vec<usize> = (0..self.matchers.len()).filter(|&i| self.matchers[i].short.is_some()).collect();
        with_short
            .into_iter()
            .filter(|&i| {
                let matcher = &self.matchers[i];
                let holds = |bytes: &[u8]| {
                    let mut ranges = Vec::new();
                    matcher.short_ranges(bytes, &mut ranges);
                    !ranges.is_empty()
                };
                let hit = |bytes: &[u8], view: &str| {
                    holds(bytes).then(|| Hit {
                        label: matcher.label.clone(),
                        view: view.to_owned(),
                        kind: HitKind::Whole,
                    })
                };
                holds(haystack) || !matches!(views::search(haystack, limits, &hit), Ok(None))
            })
            .collect()
    }

    /// Longest pattern of any matcher: the overlap a chunked scan must keep.
    pub fn max_pattern_len(&self) -> usize {
        self.matchers.iter().map(|m| m.max_pattern).max().unwrap_or(0)
    }

    /// The first reportable hit in `haystack` as it is (the raw view).
    pub fn find(&self, haystack: &[u8]) -> Option<Hit> {
        self.find_in_view(haystack, "raw")
    }

    /// The first hit in `haystack`; in decoded views (`view` other than `raw`) the encodings
    /// are not searched for, since the views decode them.
    pub(crate) fn find_in_view(&self, haystack: &[u8], view: &str) -> Option<Hit> {
        let hit = |m: &SecretMatcher, kind| Hit { label: m.label.clone(), view: view.to_owned(), kind };
        if let Some(e) = self.windows.first(haystack) {
            return Some(hit(&self.matchers[e.owner as usize], e.kind));
        }
        let raw = view == "raw";
        self.matchers.iter().find_map(|m| m.find_exact(haystack, raw).map(|kind| hit(m, kind)))
    }

    /// The first reportable hit in `haystack` raw or in any decoded view (JSON and HTML
    /// unescaped, percent-decoded, base64 and hex runs decoded, compressed blobs inflated,
    /// UTF-16 read), nested up to the limits.
    ///
    /// An error means the input could not be fully examined within `limits` (a decompression
    /// bomb, say); callers must treat it as a hit (fail closed).
    pub fn scan(&self, haystack: &[u8], limits: &ViewLimits) -> Result<Option<Hit>, ScanError> {
        if self.is_empty() {
            return Ok(None);
        }
        if let Some(hit) = self.find(haystack) {
            return Ok(Some(hit));
        }
        views::search(haystack, limits, &|bytes, view| self.find_in_view(bytes, view))
    }

    /// Whether `haystack` contains any secret in the raw view (short whole values included).
    /// One pass: [`Redactor::ranges`] covers everything [`Redactor::find`] reports.
    pub fn contains_secret(&self, haystack: &[u8]) -> bool {
        !self.ranges(haystack).is_empty()
    }

    /// The merged, sorted byte ranges of every raw-view occurrence in `haystack`.
    pub fn ranges(&self, haystack: &[u8]) -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        self.windows.ranges(haystack, &mut ranges);
        for (i, matcher) in self.matchers.iter().enumerate() {
            matcher.ranges(haystack, &mut ranges);
            if !self.skip_short.contains(&i) {
                matcher.short_ranges(haystack, &mut ranges);
            }
        }
        merge(ranges)
    }

    /// `haystack` with every raw-view occurrence replaced by [`REDACTED`]; borrowed when clean.
    pub fn redact<'a>(&self, haystack: &'a [u8]) -> Cow<'a, [u8]> {
        let ranges = self.ranges(haystack);
        if ranges.is_empty() {
            return Cow::Borrowed(haystack);
        }
        Cow::Owned(replace(haystack, &ranges))
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

/// Sorts ranges and merges the ones that overlap or touch.
fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// `haystack` with each of the sorted, disjoint `ranges` replaced by [`REDACTED`].
pub(crate) fn replace(haystack: &[u8], ranges: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut copied = 0;
    for r in ranges {
        out.extend_from_slice(&haystack[copied..r.start]);
        out.extend_from_slice(REDACTED.as_bytes());
        copied = r.end;
    }
    out.extend_from_slice(&haystack[copied..]);
    out
}

/// Appends the encodings of `secret` a server is likely to reflect it in.
fn push_encodings(secret: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    let first = out.len();
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
    // The automaton is case-sensitive (base64 is): percent-encodings also in lowercase hex.
    let lowered: Vec<_> = out[first..].iter().filter(|p| p.contains(&b'%')).map(|p| lower_percent(p)).collect();
    out.extend(lowered);
}

/// `%2F` -> `%2f`: the hex digits after each `%` lowercased, nothing else.
fn lower_percent(pattern: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(pattern.to_vec());
    for i in 0..out.len() {
        if out[i] == b'%' {
            for j in i + 1..(i + 3).min(out.len()) {
                out[j] = out[j].to_ascii_lowercase();
            }
        }
    }
    out
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
        assert!(r.contains_secret(b"xx abc xx"));
        assert!(!r.contains_secret(b"xxabcxx"), "a short secret is matched only as a whole value");
        assert_eq!(r.find(b"xx abc xx"), None, "a short secret is never reported as a hit");
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
