//! Implementation for the `skillbox:skill/log` interface.
//!
//! Guest log lines go to `tracing` under the target `skill`, with the skill's
//! name as a field, so an operator filters them like any other host output
//! (`RUST_LOG=skill=debug`). Lines past the invocation's log budget
//! ([`MAX_LOG_LINES`](crate::limits::MAX_LOG_LINES),
//! [`MAX_LOG_BYTES`](crate::limits::MAX_LOG_BYTES)) are dropped and counted
//! before they get here.

use crate::bindings::skillbox::skill::{log, types};
use crate::error::HostError;
use crate::{MAX_LOG_MESSAGE, SkillCtxView};

impl log::Host for SkillCtxView<'_> {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let message = truncate_at_char_boundary(&message, MAX_LOG_MESSAGE);
        // A skill cannot read secrets; one that logs a secret got it somehow and is stopped.
        self.ctx.check_outbound("log", message.as_bytes()).map_err(wasmtime::Error::new)?;
        let message = match self.ctx.clean_foreign("log", message) {
            Ok(message) => message,
            Err(rule) => format!("[log line withheld: it contained a token matching rule `{rule}`]").into(),
        };
        let skill = self.ctx.skill_name();
        match level {
            log::Level::Trace => tracing::trace!(target: "skill", skill, "{message}"),
            log::Level::Debug => tracing::debug!(target: "skill", skill, "{message}"),
            log::Level::Info => tracing::info!(target: "skill", skill, "{message}"),
            log::Level::Warn => tracing::warn!(target: "skill", skill, "{message}"),
            log::Level::Error => tracing::error!(target: "skill", skill, "{message}"),
        }
        Ok(())
    }
}

/// `types` declares only types; bindgen asks how our Rust error becomes the WIT one.
impl types::Host for SkillCtxView<'_> {
    fn convert_error(&mut self, error: HostError) -> wasmtime::Result<types::Error> {
        match error {
            HostError::Guest(e) => Ok(e),
            HostError::Trap(e) => Err(e),
        }
    }
}

/// Cuts `text` to at most `max` bytes without splitting a UTF-8 sequence.
pub fn truncate_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate_at_char_boundary;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_at_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_at_char_boundary("héllo", 3), "hé");
        assert_eq!(truncate_at_char_boundary("abc", 10), "abc");
    }
}
