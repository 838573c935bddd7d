//! Scanning a body that arrives in chunks.
//!
//! [`StreamScanner`] holds back the tail of what it has seen, so a secret split across two
//! chunks is still found whole: raw occurrences are cut out before any byte of them is
//! released, and the decoded views run over each new chunk together with the last
//! [`VIEW_OVERLAP`] bytes before it, so an encoded secret that straddles a chunk boundary is
//! found too (as long as its encoded form is shorter than the overlap; a compressed blob that
//! spans chunks is inflated only from the chunk where its magic bytes are: see the threat
//! model).

use crate::secrets::replace;
use crate::{Hit, Redactor, ScanError, ViewLimits};

/// Bytes of earlier chunks that the decoded views see again with each new chunk.
pub const VIEW_OVERLAP: usize = 8 * 1024;

/// Why a stream must be stopped.
#[derive(Debug)]
pub enum StreamStop {
    /// A secret was found in a decoded view: it cannot be cut out, so the stream is blocked.
    Hit(Hit),
    /// The data could not be examined within the limits; refused.
    Error(ScanError),
}

/// Redacts and checks a stream chunk by chunk.
#[derive(Debug)]
pub struct StreamScanner {
    redactor: Redactor,
    limits: ViewLimits,
    /// Raw bytes received but not yet released (a match may still be completing).
    pending: Vec<u8>,
    /// The tail of what was already released (redacted), for the views' overlap.
    seen: Vec<u8>,
    keep: usize,
}

impl StreamScanner {
    /// A scanner for one stream, searching for the secrets of `redactor`.
    pub fn new(redactor: Redactor, limits: ViewLimits) -> StreamScanner {
        // A match of length at most `max` that starts before `len - keep` ends inside the
        // buffer; one byte more settles the whole-value check of short secrets.
        let keep = redactor.max_pattern_len();
        StreamScanner { redactor, limits, pending: Vec::new(), seen: Vec::new(), keep }
    }

    /// Feeds the next chunk; returns the bytes that are now safe to hand on (raw hits already
    /// replaced), possibly empty while a match may still be completing.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, StreamStop> {
        self.pending.extend_from_slice(chunk);
        let limit = self.pending.len().saturating_sub(self.keep);
        self.release(limit)
    }

    /// Ends the stream; returns the rest.
    pub fn finish(mut self) -> Result<Vec<u8>, StreamStop> {
        let len = self.pending.len();
        self.release(len)
    }

    /// Releases `pending[..limit]`, extended to the end of any match that starts before it.
    fn release(&mut self, limit: usize) -> Result<Vec<u8>, StreamStop> {
        if self.redactor.is_empty() {
            return Ok(self.pending.drain(..).collect());
        }
        let ranges = self.redactor.ranges(&self.pending);
        let cut = ranges.iter().filter(|r| r.start < limit).fold(limit, |cut, r| cut.max(r.end));
        let inside: Vec<_> = ranges.into_iter().filter(|r| r.start < cut).collect();
        let out = replace(&self.pending[..cut], &inside);
        self.pending.drain(..cut);
        // Views over the overlap plus what is released now (held-back bytes are seen next time,
        // with this overlap before them).
        let mut window = std::mem::take(&mut self.seen);
        window.extend_from_slice(&out);
        match self.redactor.scan(&window, &self.limits) {
            Ok(None) => {}
            Ok(Some(hit)) => return Err(StreamStop::Hit(hit)),
            Err(e) => return Err(StreamStop::Error(e)),
        }
        let start = window.len().saturating_sub(VIEW_OVERLAP);
        self.seen = window.split_off(start);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5";

    fn run(chunks: &[&[u8]]) -> Result<Vec<u8>, StreamStop> {
        let mut s = StreamScanner::new(Redactor::new([TOKEN]), ViewLimits::default());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.push(c)?);
        }
        out.extend(s.finish()?);
        Ok(out)
    }

    #[test]
    fn a_secret_split_across_chunks_is_redacted() {
        let text = format!("before {TOKEN} after");
        for split in 0..text.len() {
            let (a, b) = text.as_bytes().split_at(split);
            let out = run(&[a, b]).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), "before [REDACTED] after", "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte_is_the_same_as_whole() {
        let text = format!("x{TOKEN}y{TOKEN}z");
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        assert_eq!(run(&chunks).unwrap(), b"x[REDACTED]y[REDACTED]z");
    }

    #[test]
    fn an_encoded_secret_split_across_chunks_is_blocked() {
        let escaped: String = TOKEN.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let text = format!("{{\"a\":\"{escaped}\"}}");
        let (a, b) = text.as_bytes().split_at(text.len() / 2);
        assert!(matches!(run(&[a, b]), Err(StreamStop::Hit(_))));
    }

    #[test]
    fn clean_streams_pass_unchanged() {
        let text = "nothing secret here, just text ".repeat(1000);
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(777).collect();
        assert_eq!(run(&chunks).unwrap(), text.as_bytes());
    }
}
