//! A response body handed on as it arrives, scanned chunk by chunk.
//!
//! [`BodyReader`] reads the body of an uncompressed response one network chunk at a time and
//! releases only what the scanner has cleared: [`StreamScanner`] holds back the bytes a secret
//! may still be completing in, so a raw secret split across two chunks is cut out whole, and
//! its decoded views see each chunk with the 8 KiB before it, so an encoded one that straddles
//! a boundary is still found (which ends the body with [`EgressError::ResponseBlocked`]).
//! Foreign-token rules run over each released chunk with the last 4 KiB released before it; a
//! foreign token that straddles bytes already handed on cannot be cut out any more, so it ends
//! the body (`ForeignTokenBlocked`) whatever the policy. The size cap and the exchange's deadline
//! hold for the body as for a buffered one.

use std::borrow::Cow;

use bytes::Bytes;
use skillbox_scan::stream::{StreamScanner, StreamStop};

use crate::{EgressError, Scanner};

/// Released bytes the foreign-token rules see again before each new chunk.
const FOREIGN_OVERLAP: usize = 4 * 1024;

/// The body of a response, read and scanned as the caller pulls it.
pub struct BodyReader {
    response: reqwest::Response,
    /// `None` once the body has ended (or failed).
    stream: Option<StreamScanner>,
    scanner: Scanner,
    /// The end of what was released, for the foreign-token rules' overlap.
    tail: Vec<u8>,
    read: usize,
    limit: usize,
    deadline: tokio::time::Instant,
    /// Rule ids of the foreign tokens found so far (redacted, or left under `warn`).
    foreign: Vec<String>,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader").field("read", &self.read).field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl BodyReader {
    pub(crate) fn new(
        response: reqwest::Response,
        scanner: &Scanner,
        limit: usize,
        deadline: tokio::time::Instant,
    ) -> BodyReader {
        BodyReader {
            response,
            stream: Some(StreamScanner::new(scanner.secrets.clone(), scanner.limits)),
            scanner: scanner.clone(),
            tail: Vec::new(),
            read: 0,
            limit,
            deadline,
            foreign: Vec::new(),
        }
    }

    /// The next cleared piece of the body; `Ok(None)` at its end. After an error the body is
    /// over: what was released before it was clean, the rest is never handed on.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, EgressError> {
        let result = self.pull().await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    /// Rule ids of the foreign tokens found in the body so far; taking them clears the list.
    pub fn take_foreign(&mut self) -> Vec<String> {
        std::mem::take(&mut self.foreign)
    }

    async fn pull(&mut self) -> Result<Option<Bytes>, EgressError> {
        loop {
            let Some(stream) = self.stream.as_mut() else { return Ok(None) };
            let chunk = tokio::time::timeout_at(self.deadline, self.response.chunk())
                .await
                .map_err(|_| EgressError::Upstream("timed out reading the response body".into()))?
                .map_err(|e| EgressError::Upstream(crate::pipeline::error_text(&e.without_url())))?;
            let released = match chunk {
                Some(chunk) => {
                    self.read += chunk.len();
                    if self.read > self.limit {
                        return Err(EgressError::ResponseTooLarge { limit: self.limit });
                    }
                    stream.push(&chunk)
                }
                None => self.stream.take().expect("checked above").finish(),
            }
            .map_err(stopped)?;
            if released.is_empty() {
                continue;
            }
            return self.foreign_pass(released).map(|out| Some(Bytes::from(out)));
        }
    }

    /// Applies the foreign-token policy to `released`, seen after the tail of what went before.
    fn foreign_pass(&mut self, released: Vec<u8>) -> Result<Vec<u8>, EgressError> {
        let mut window = std::mem::take(&mut self.tail);
        let before = window.len();
        window.extend_from_slice(&released);
        let cleared = self.scanner.foreign(Cow::Borrowed(&window)).map_err(crate::pipeline::blocked)?;
        if cleared.bytes.get(..before) != Some(&window[..before]) {
            // A match reaching back into bytes already handed on: it cannot be cut out.
            let rule = cleared.foreign.first().map(ToString::to_string).unwrap_or_default();
            return Err(EgressError::ForeignTokenBlocked { rule });
        }
        self.foreign.extend(cleared.foreign.iter().map(ToString::to_string));
        let out = cleared.bytes[before..].to_vec();
        let mut tail = window[..before].to_vec();
        tail.extend_from_slice(&out);
        let start = tail.len().saturating_sub(FOREIGN_OVERLAP);
        self.tail = tail.split_off(start);
        Ok(out)
    }
}

fn stopped(stop: StreamStop) -> EgressError {
    match stop {
        StreamStop::Hit(hit) => EgressError::ResponseBlocked { credential: hit.label.to_string(), view: hit.view },
        StreamStop::Error(e) => EgressError::Unscannable { reason: e.to_string() },
    }
}
