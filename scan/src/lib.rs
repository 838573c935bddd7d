//! The leak scanner: finds secrets in normalised views of bytes, and foreign tokens by rule.
//!
//! Two questions are asked of every byte string that crosses the sandbox boundary:
//!
//! - **Does it hold one of our secrets?** A [`SecretMatcher`] per opened credential finds the
//!   value, its reverse, every [`FRAGMENT_LEN`]-byte fragment of either, and its common
//!   encodings. [`Redactor`] (the set one invocation holds) searches the raw bytes, where hits
//!   are cut out in place, and every decoded [view](views) of them (JSON and HTML unescaped,
//!   percent-decoded, base64 and hex runs decoded, compressed blobs inflated, UTF-16 read;
//!   nested), where hits cannot be cut out and the caller blocks instead.
//! - **Does it hold somebody else's secret?** [`rules::RuleSet`] finds well-known token formats
//!   (GitHub, AWS, Stripe, private keys, JWTs, ...) with a keyword pre-filter, a linear-time
//!   regex and an entropy threshold.
//!
//! [`stream::StreamScanner`] runs the same search over a body that arrives in chunks.
//!
//! ```
//! use skillbox_scan::{HitKind, Redactor, ViewLimits};
//!
//! let token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
//! let scanner = Redactor::new([token]);
//! // Raw: cut out in place.
//! assert_eq!(scanner.redact_str(&format!("token {token}")), "token [REDACTED]");
//! // Every character JSON-escaped: found in the `json` view, so the caller must block.
//! let escaped: String = token.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
//! let hit = scanner.scan(escaped.as_bytes(), &ViewLimits::default()).unwrap().unwrap();
//! assert_eq!((hit.view.as_str(), hit.kind), ("json", HitKind::Fragment));
//! // Reversed: found raw.
//! let reversed: String = token.chars().rev().collect();
//! assert_eq!(scanner.find(reversed.as_bytes()).unwrap().kind, HitKind::Reverse);
//! //! ```

#![deny(missing_docs)]

mod fragments;
pub mod policy;
pub mod rules;
mod secrets;
pub mod stream;
pub mod views;

pub use policy::{Blocked, Cleared, ForeignAction, Scanner};
pub use secrets::{FRAGMENT_LEN, Hit, HitKind, MIN_ENCODED_LEN, MIN_SECRET_LEN, REDACTED, Redactor, SecretMatcher};
pub use views::ViewLimits;

/// Everything that can go wrong building or running a scanner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// An operator-supplied token rule is not valid.
    #[error("token rule `{id}` is not valid: {reason}")]
    Rule {
        /// The rule's id (or `(unnamed)`).
        id: String,
        /// What is wrong with it, and how to fix it.
        reason: String,
    },
    /// A rules file could not be parsed.
    #[error("rules file is not valid TOML: {reason}")]
    RulesFile {
        /// The parser's message.
        reason: String,
    },
    /// Decoding the input would produce more bytes than the scan may examine (a decompression
    /// bomb, or nesting too deep to follow); the input cannot be cleared, so it is refused.
    #[error(
        "the data decodes to more than the scanner's limit of {limit} bytes, so it cannot be checked for secrets and was refused"
    )]
    TooLarge {
        /// The limit that was hit.
        limit: usize,
    },
    /// A decoder the scanner does not have was asked for.
    #[error("`{what}` is not a compression format the scanner can decode")]
    Unsupported {
        /// What was asked for.
        what: String,
    },
}
