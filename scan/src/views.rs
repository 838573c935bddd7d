//! Decoded views: the same bytes as a reader who decodes them would see them.
//!
//! A secret can come back to a skill in a form that no list of encodings anticipates, so the
//! scanner does not enumerate encodings of the secret: it decodes the text instead, and
//! searches every decoded form for the secret, its reverse and its fragments. Each view is one
//! row of [`VIEWS`]: a name, a cheap pre-filter that says whether the view can apply at all
//! (most bodies have no escapes, no long base64 run, no magic bytes, and pay for nothing), and a
//! decoder that returns zero or more decoded texts. Views nest: the output of one is fed to all
//! of them again (base64 of gzip of JSON-escaped text is found), down to
//! [`ViewLimits::max_depth`], and the bytes decoded in one scan are capped by
//! [`ViewLimits::max_bytes`] so a decompression bomb is refused rather than inflated.
//!
//! To add a view: write `applies` and `decode` and add a row to [`VIEWS`].

use std::io::Read;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::ScanError;
use crate::secrets::{FRAGMENT_LEN, Hit};

/// How far one scan may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewLimits {
    /// How many decoders may be chained (`base64>gzip>json` is 3).
    pub max_depth: usize,
    /// Most bytes all decoders together may produce in one scan; beyond it the scan fails
    /// (closed).
    pub max_bytes: usize,
}

impl Default for ViewLimits {
    fn default() -> Self {
        ViewLimits { max_depth: 4, max_bytes: 64 * 1024 * 1024 }
    }
}

/// One decoded view: when it applies, and how to decode.
#[derive(Debug)]
pub struct View {
    /// Short name, used in hit reports (`base64`, `gzip`...).
    pub name: &'static str,
    /// Cheap test: can this view produce anything for these bytes?
    pub applies: fn(&[u8]) -> bool,
    /// The decoded texts; may consume from `budget` (bytes it may still produce).
    pub decode: fn(&[u8], &mut Budget) -> Result<Vec<Vec<u8>>, ScanError>,
}

/// Bytes the decoders of one scan may still produce.
#[derive(Debug)]
pub struct Budget {
    left: usize,
}

impl Budget {
    /// Takes `n` bytes from the budget, failing when it runs out.
    fn take(&mut self, n: usize) -> Result<(), ScanError> {
        self.left = self.left.checked_sub(n).ok_or(ScanError::TooLarge { limit: self.left })?;
        Ok(())
    }
}

/// Every view, in the order they are tried.
pub const VIEWS: &[View] = &[
    View { name: "json", applies: has_backslash, decode: json_unescape },
    View { name: "html", applies: has_entity, decode: html_unescape },
    View { name: "percent", applies: has_percent, decode: percent_decode },
    View { name: "base64", applies: has_base64_run, decode: base64_runs },
    View { name: "hex", applies: has_hex_run, decode: hex_runs },
    View { name: "utf16", applies: has_utf16_text, decode: utf16 },
    View { name: "compressed", applies: has_magic, decode: decompress_blobs },
];

/// Searches every view of `haystack` (not the raw bytes themselves) with `find`.
pub(crate) fn search(
    haystack: &[u8],
    limits: &ViewLimits,
    find: &dyn Fn(&[u8], &str) -> Option<Hit>,
) -> Result<Option<Hit>, ScanError> {
    let mut budget = Budget { left: limits.max_bytes };
    let mut path = Vec::new();
    visit(haystack, limits.max_depth, &mut budget, &mut path, find)
}

fn visit(
    bytes: &[u8],
    depth: usize,
    budget: &mut Budget,
    path: &mut Vec<&'static str>,
    find: &dyn Fn(&[u8], &str) -> Option<Hit>,
) -> Result<Option<Hit>, ScanError> {
    if depth == 0 || bytes.len() < FRAGMENT_LEN.min(8) {
        return Ok(None);
    }
    for view in VIEWS {
        if !(view.applies)(bytes) {
            continue;
        }
        let outputs = (view.decode)(bytes, budget)?;
        path.push(view.name);
        for out in outputs {
            if out.as_slice() == bytes {
                continue;
            }
            if let Some(hit) = find(&out, &path.join(">")) {
                return Ok(Some(hit));
            }
            if let Some(hit) = visit(&out, depth - 1, budget, path, find)? {
                return Ok(Some(hit));
            }
        }
        path.pop();
    }
    Ok(None)
}

/// Separates decoded pieces that were not adjacent in the input, so no fragment spans two.
const SEPARATOR: u8 = 0;

// ---- Escapes decoded in place: JSON, HTML, percent -----------------------------------------
//
// These views decode escape sequences where they stand and keep everything else. Handing on a
// full copy of the input per view (and per nesting level) would multiply a large input many
// times over, so they hand on only the decoded stretches plus [`CONTEXT`] bytes either side:
// any fragment that the decoding revealed includes at least one decoded byte, so it lies
// within a window, and the context keeps enough of a surrounding encoding (a base64 run with
// one escaped `/`) for the nested views.

/// Bytes of untouched text kept either side of a decoded stretch.
const CONTEXT: usize = 256;

/// Decodes every escape `decode_at` recognises (each starts with `trigger`) and returns the
/// windows around them.
fn decode_in_place(
    bytes: &[u8],
    budget: &mut Budget,
    trigger: u8,
    decode_at: fn(&[u8], usize, &mut Vec<u8>) -> Option<usize>,
) -> Result<Vec<Vec<u8>>, ScanError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while let Some(offset) = memchr::memchr(trigger, &bytes[i..]) {
        out.extend_from_slice(&bytes[i..i + offset]);
        i += offset;
        let start = out.len();
        match decode_at(bytes, i, &mut out) {
            Some(consumed) => {
                i += consumed;
                match changed.last_mut() {
                    Some(last) if start <= last.end + 2 * CONTEXT => last.end = out.len(),
                    _ => changed.push(start..out.len()),
                }
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out.extend_from_slice(&bytes[i..]);
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let mut windows = Vec::new();
    for r in changed {
        let window = &out[r.start.saturating_sub(CONTEXT)..(r.end + CONTEXT).min(out.len())];
        budget.take(window.len() + 1)?;
        windows.extend_from_slice(window);
        windows.push(SEPARATOR);
    }
    Ok(vec![windows])
}

fn has_backslash(bytes: &[u8]) -> bool {
    memchr::memchr(b'\\', bytes).is_some()
}

/// JSON (and JavaScript/Python) string escapes: `\uXXXX` (surrogate pairs included), `\xHH`,
/// `\/`, `\"`, `\\` and the single-letter escapes.
fn json_unescape(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Vec<u8>>, ScanError> {
    decode_in_place(bytes, budget, b'\\', json_escape_at)
}

fn json_escape_at(bytes: &[u8], i: usize, out: &mut Vec<u8>) -> Option<usize> {
    if bytes[i] != b'\\' {
        return None;
    }
    let next = *bytes.get(i + 1)?;
    let simple = match next {
        b'"' | b'\\' | b'/' | b'\'' => Some(next),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    };
    if let Some(byte) = simple {
        out.push(byte);
        return Some(2);
    }
    if next == b'x' {
        let byte = hex::decode(bytes.get(i + 2..i + 4)?).ok()?;
        out.push(byte[0]);
        return Some(4);
    }
    if next != b'u' {
        return None;
    }
    let unit = hex_u16(bytes.get(i + 2..i + 6))?;
    let mut consumed = 6;
    let mut code = u32::from(unit);
    if (0xD800..0xDC00).contains(&unit)
        && bytes.get(i + 6) == Some(&b'\\')
        && bytes.get(i + 7) == Some(&b'u')
        && let Some(low) = hex_u16(bytes.get(i + 8..i + 12))
        && (0xDC00..0xE000).contains(&low)
    {
        code = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
        consumed = 12;
    }
    let ch = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    Some(consumed)
}

fn hex_u16(digits: Option<&[u8]>) -> Option<u16> {
    let digits = std::str::from_utf8(digits?).ok()?;
    u16::from_str_radix(digits, 16).ok()
}

fn has_entity(bytes: &[u8]) -> bool {
    memchr::memchr(b'&', bytes).is_some()
}

/// HTML/XML character references: named (`&amp;`, `&sol;`, ...), decimal and hex.
fn html_unescape(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Vec<u8>>, ScanError> {
    decode_in_place(bytes, budget, b'&', entity_at)
}

/// Longest entity looked at (`&CounterClockwiseContourIntegral;` is 33 bytes).
const MAX_ENTITY: usize = 40;

fn entity_at(bytes: &[u8], i: usize, out: &mut Vec<u8>) -> Option<usize> {
    if bytes[i] != b'&' {
        return None;
    }
    // Numeric references, with or without the `;` (browsers accept both).
    if bytes.get(i + 1) == Some(&b'#') {
        let hex = matches!(bytes.get(i + 2), Some(b'x' | b'X'));
        let start = i + 2 + usize::from(hex);
        let digits = bytes[start..]
            .iter()
            .take(8)
            .take_while(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() })
            .count();
        if digits == 0 {
            return None;
        }
        let text = std::str::from_utf8(&bytes[start..start + digits]).ok()?;
        let code = u32::from_str_radix(text, if hex { 16 } else { 10 }).ok()?;
        let ch = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        let end = start + digits;
        return Some(end + usize::from(bytes.get(end) == Some(&b';')) - i);
    }
    let rest = &bytes[i..bytes.len().min(i + MAX_ENTITY)];
    let end = memchr::memchr(b';', rest)?;
    let entity = std::str::from_utf8(&rest[..=end]).ok()?;
    let decoded = html_escape::decode_html_entities(entity);
    if decoded == entity {
        return None;
    }
    out.extend_from_slice(decoded.as_bytes());
    Some(end + 1)
}

fn has_percent(bytes: &[u8]) -> bool {
    memchr::memchr(b'%', bytes).is_some()
}

/// `%XX` sequences (and `+` as a space right beside one, as forms write it).
fn percent_decode(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Vec<u8>>, ScanError> {
    decode_in_place(bytes, budget, b'%', percent_at)
}

fn percent_at(bytes: &[u8], i: usize, out: &mut Vec<u8>) -> Option<usize> {
    if bytes[i] != b'%' {
        return None;
    }
    let byte = hex::decode(bytes.get(i + 1..i + 3)?).ok()?;
    out.push(byte[0]);
    Some(3)
}

// ---- Runs of base64 / base64url ----------------------------------------------------------------

/// Shortest run decoded: the encoding of one [`FRAGMENT_LEN`]-byte fragment.
const MIN_BASE64_RUN: usize = FRAGMENT_LEN * 4 / 3;

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

fn runs(bytes: &[u8], member: fn(u8) -> bool, min: usize) -> impl Iterator<Item = &[u8]> {
    bytes.split(move |&b| !member(b)).filter(move |run| run.len() >= min)
}

fn has_base64_run(bytes: &[u8]) -> bool {
    has_run(bytes, is_base64_byte, MIN_BASE64_RUN)
}

/// Whether `bytes` has `min` consecutive members (one pass, no allocation).
fn has_run(bytes: &[u8], member: fn(u8) -> bool, min: usize) -> bool {
    let mut run = 0;
    for &b in bytes {
        if member(b) {
            run += 1;
            if run >= min {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Lenient base64: either alphabet (mapped to the standard one first), padding optional,
/// trailing bits ignored.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Every run of base64 characters long enough to hold a fragment, decoded from each of the
/// four alignments (the run may start with characters that are not part of the encoding, as
/// in `token=...` or `Basic...` glued to it). One output per alignment, runs separated.
fn base64_runs(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Vec<u8>>, ScanError> {
    let mut outputs = vec![Vec::new(); 4];
    for run in runs(bytes, is_base64_byte, MIN_BASE64_RUN) {
        let mapped: Vec<u8> = run
            .iter()
            .map(|&b| match b {
                b'-' => b'+',
                b'_' => b'/',
                other => other,
            })
            .collect();
        for (skip, out) in outputs.iter_mut().enumerate() {
            let mut piece = &mapped[skip.min(mapped.len())..];
            // A length of 1 mod 4 is never valid: drop the dangling character.
            if piece.len() % 4 == 1 {
                piece = &piece[..piece.len() - 1];
            }
            if let Ok(decoded) = LENIENT.decode(piece) {
                budget.take(decoded.len() + 1)?;
                out.extend_from_slice(&decoded);
                out.push(SEPARATOR);
            }
        }
    }
    outputs.retain(|o| !o.is_empty());
    Ok(outputs)
}

// ---- Runs of hex digits ----------------------------------------------------------------------

fn has_hex_run(bytes: &[u8]) -> bool {
    has_run(bytes, |b| b.is_ascii_hexdigit(), FRAGMENT_LEN * 2)
}

/// Every run of hex digits long enough to hold a fragment, decoded at both alignments.
fn hex_runs(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Vec<u8>>, ScanError> {
    let mut outputs = vec![Vec::new(); 2];
    for run in runs(bytes, |b| b.is_ascii_hexdigit(), FRAGMENT_LEN * 2) {
        for (skip, out) in outputs.iter_mut().enumerate() {
            let piece = &run[skip..];
            let piece = &piece[..piece.len() / 2 * 2];
            if let Ok(decoded) = hex::decode(piece) {
                budget.take(decoded.len() + 1)?;
                out.extend_from_slice(&decoded);
                out.push(SEPARATOR);
            }
        }
    }
    outputs.retain(|o| !o.is_empty());
    Ok(outputs)
}

// ---- UTF-16 ----------------------------------------------------------------------------------

/// Whether `bytes` has a run of at least [`MIN_UTF16_RUN`] printable ASCII characters in
/// UTF-16 (each followed, or preceded, by a NUL): binary data with stray NULs does not.
fn has_utf16_text(bytes: &[u8]) -> bool {
    let text = |b: &u8| b.is_ascii_graphic() || *b == b' ';
    let mut run = 0;
    for pair in bytes.windows(2) {
        if (pair[1] == 0 && text(&pair[0])) || (pair[0] == 0 && text(&pair[1])) {
            run += 1;
            // Pairs overlap: a run of n characters is about 2n windows.
            if run >= 2 * MIN_UTF16_RUN - 1 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// The bytes read as UTF-16, little- and big-endian, from both byte alignments: only runs of at
/// least 8 code units of printable ASCII are handed on (tokens are ASCII text; the rest of a
/// binary blob read as UTF-16 is noise, and handing it on would multiply large inputs).
/// Shortest run of UTF-16 text handed on.
const MIN_UTF16_RUN: usize = 8;

fn utf16(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Vec<u8>>, ScanError> {
    const MIN_RUN: usize = MIN_UTF16_RUN;
    let mut outputs = Vec::with_capacity(4);
    for skip in 0..2 {
        let body = &bytes[skip.min(bytes.len())..];
        for little in [true, false] {
            let mut out = Vec::new();
            let mut run = String::new();
            let units = body.chunks_exact(2).map(|pair| {
                let pair = [pair[0], pair[1]];
                if little { u16::from_le_bytes(pair) } else { u16::from_be_bytes(pair) }
            });
            for unit in char::decode_utf16(units.chain(std::iter::once(0))) {
                match unit {
                    Ok(c) if c.is_ascii_graphic() || c == ' ' => run.push(c),
                    _ => {
                        if run.chars().count() >= MIN_RUN {
                            budget.take(run.len() + 1)?;
                            out.extend_from_slice(run.as_bytes());
                            out.push(SEPARATOR);
                        }
                        run.clear();
                    }
                }
            }
            if !out.is_empty() {
                outputs.push(out);
            }
        }
    }
    Ok(outputs)
}

// ---- Compressed blobs ---------------------------------------------------------------------

/// Most compressed blobs tried per input (each candidate offset costs a decoder start-up).
const MAX_BLOBS: usize = 32;

/// A compression format recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Gzip,
    Zlib,
    Zstd,
    Xz,
    Bzip2,
}

/// The format whose magic bytes start `bytes`, if any.
fn magic(bytes: &[u8]) -> Option<Format> {
    match bytes {
        [0x1f, 0x8b, 0x08, ..] => Some(Format::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Format::Zstd),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(Format::Xz),
        [b'B', b'Z', b'h', b'1'..=b'9', 0x31, 0x41, 0x59, 0x26, 0x53, 0x59, ..] => Some(Format::Bzip2),
        // zlib: deflate (CM 8) with a window of at most 32 KiB and a valid header check.
        [cmf, flg, ..] if cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 => {
            Some(Format::Zlib)
        }
        _ => None,
    }
}

/// Offsets where a compressed blob may start.
fn blob_starts(bytes: &[u8]) -> impl Iterator<Item = (usize, Format)> + '_ {
    (0..bytes.len()).filter_map(|i| magic(&bytes[i..]).map(|f| (i, f))).take(MAX_BLOBS)
}

fn has_magic(bytes: &[u8]) -> bool {
    blob_starts(bytes).next().is_some()
}

/// Every compressed blob found by its magic bytes, inflated under the budget. What a blob
/// yields before a decoding error is kept (a corrupt tail must not hide its head).
fn decompress_blobs(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Vec<u8>>, ScanError> {
    let mut outputs = Vec::new();
    for (start, format) in blob_starts(bytes) {
        let input = &bytes[start..];
        let out = inflate(format, input, budget.left)?;
        if !out.is_empty() {
            budget.take(out.len())?;
            outputs.push(out);
        }
    }
    Ok(outputs)
}

/// Inflates one blob, producing at most `limit` bytes; more is [`ScanError::TooLarge`].
pub fn inflate_capped(format_name: &str, input: &[u8], limit: usize) -> Result<Vec<u8>, ScanError> {
    let format = match format_name {
        "gzip" => Format::Gzip,
        "zlib" => Format::Zlib,
        "zstd" => Format::Zstd,
        "xz" => Format::Xz,
        "bzip2" => Format::Bzip2,
        other => return Err(ScanError::Unsupported { what: other.to_owned() }),
    };
    inflate(format, input, limit)
}

fn inflate(format: Format, input: &[u8], limit: usize) -> Result<Vec<u8>, ScanError> {
    let mut out = Vec::new();
    let cap = limit as u64 + 1;
    let result = match format {
        Format::Gzip => flate2::read::MultiGzDecoder::new(input).take(cap).read_to_end(&mut out).map(drop),
        Format::Zlib => flate2::read::ZlibDecoder::new(input).take(cap).read_to_end(&mut out).map(drop),
        Format::Bzip2 => bzip2::read::MultiBzDecoder::new(input).take(cap).read_to_end(&mut out).map(drop),
        Format::Zstd => match ruzstd::decoding::StreamingDecoder::new(input) {
            Ok(decoder) => decoder.take(cap).read_to_end(&mut out).map(drop),
            Err(_) => Ok(()),
        },
        Format::Xz => {
            let mut reader = std::io::BufReader::new(input);
            let mut writer = CappedWriter { out: &mut out, cap: cap as usize };
            lzma_rs::xz_decompress(&mut reader, &mut writer).map_err(|e| std::io::Error::other(e.to_string()))
        }
    };
    if out.len() > limit {
        return Err(ScanError::TooLarge { limit });
    }
    // A decoding error after some output keeps the output; before any, there was no blob.
    let _ = result;
    Ok(out)
}

/// A writer that stops accepting bytes past `cap` (for decoders that write rather than read).
struct CappedWriter<'a> {
    out: &'a mut Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.cap.saturating_sub(self.out.len());
        if room == 0 {
            return Err(std::io::Error::other("decompressed size limit reached"));
        }
        let n = room.min(buf.len());
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

    fn all(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut budget = Budget { left: 1 << 20 };
        let mut outs = Vec::new();
        for view in VIEWS {
            if (view.applies)(bytes) {
                outs.extend((view.decode)(bytes, &mut budget).unwrap());
            }
        }
        outs
    }

    fn contains(outs: &[Vec<u8>], needle: &[u8]) -> bool {
        outs.iter().any(|o| o.windows(needle.len()).any(|w| w == needle))
    }

    #[test]
    fn json_escapes_are_decoded() {
        let outs = all(br#"{"a":"s3cr3t\/t0ken\u0041\ud83d\ude00\x41"}"#);
        assert!(contains(&outs, "s3cr3t/t0kenA😀A".as_bytes()));
    }

    #[test]
    fn html_entities_are_decoded() {
        let outs = all(b"s3cr&#x33;t&sol;t0&#107;en&amp;");
        assert!(contains(&outs, b"s3cr3t/t0ken&"));
        // Numeric references without the semicolon, as browsers read them.
        let outs = all(b"&#115&#51&#99&#114&#x33t/t0ken");
        assert!(contains(&outs, b"s3cr3t/t0ken"));
    }

    #[test]
    fn base64_runs_are_decoded_at_any_alignment() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let secret = b"the-secret-token-value";
        for prefix in ["", "x", "xy", "xyz"] {
            let text = format!("token={prefix}{}&x=1", URL_SAFE_NO_PAD.encode(secret));
            let outs = all(text.as_bytes());
            assert!(contains(&outs, &secret[3..]), "prefix {prefix:?}");
        }
    }

    #[test]
    fn magic_bytes_are_recognised_and_inflated() {
        use std::io::Write;
        let secret = b"the-secret-token-value";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(secret).unwrap();
        let mut body = b"blob:".to_vec();
        body.extend(gz.finish().unwrap());
        assert!(contains(&all(&body), secret));
    }

    #[test]
    fn zlib_magic_needs_a_valid_header() {
        assert_eq!(magic(b"x^"), Some(Format::Zlib));
        assert_eq!(magic(b"xy"), None);
        assert_eq!(magic(b"hello"), None);
    }

    #[test]
    fn a_bomb_exhausts_the_budget() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        let mut budget = Budget { left: 1 << 20 };
        assert!(matches!(decompress_blobs(&bomb, &mut budget), Err(ScanError::TooLarge { .. })));
    }
}
