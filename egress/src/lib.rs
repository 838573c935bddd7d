//! Host-side outbound HTTP for skills: one policy pipeline that decides where a request may go,
//! injects credentials the guest never sees, and keeps secrets out of what comes back.
//!
//! A skill asks for a request as plain data ([`Request`]), optionally naming a credential. The
//! host runs it through [`Egress::send`]:
//!
//! 1. validate the URL, method and headers; `https` only (plain `http` to loopback when the
//!    runtime allows it);
//! 2. allowlist: a credentialed request must target one of that credential's hosts, an
//!    unauthenticated one the manifest's `[network] allow`;
//! 3. tripwire: no guest-written part may contain a secret value in any decoded view (checked
//!    only after the destination, so the check cannot be used as an oracle by sending guesses
//!    to a host that is refused anyway);
//! 4. address check: private, link-local, metadata and other special-purpose addresses are
//!    refused, on the address actually connected to (DNS rebinding cannot swap it);
//! 5. inject the credential on the wire copy of the request;
//! 6. send, following redirects manually: a credential never follows a redirect to another
//!    origin, and each hop is checked again;
//! 7. read the response body up to a size cap; the host owns content negotiation (it sets
//!    `Accept-Encoding` itself and decodes gzip, deflate, br and zstd under the same cap);
//! 8. scan: raw occurrences of a secret are cut out of headers and body; one that survives in a
//!    decoded view (JSON or HTML escapes, percent, base64, hex, compressed, UTF-16) blocks the
//!    response; foreign tokens are handled by the scanner's policy; a response-blind credential
//!    hands back only the status (and headers).
//!
//! The design and its limits are written up in `docs/egress.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), skillbox_egress::EgressError> {
//! use secrecy::SecretString;
//! use skillbox_egress::*;
//!
//! let egress = Egress::new(EgressConfig::default())?;
//! let token = "ghp_example_token_value";
//! let injection = Injection::new(
//!     Auth::Bearer(SecretString::from(token.to_owned())),
//!     vec![HostPattern::parse("api.github.com")?],
//! )?;
//! let scanner = Scanner::secrets(Redactor::new([token]));
//! let request = Request {
//!     method: "GET".into(),
//!     url: "https://api.github.com/repos/o/r/issues".into(),
//!     ..Request::default()
//! };
//! let exchange = egress.send(&Policy::default(), request, Some(&injection), &scanner).await?;
//! assert!(!exchange.response.body.windows(token.len()).any(|w| w == token.as_bytes()));
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod address;
mod auth;
mod decode;
mod error;
mod host;
mod pipeline;
mod streamed;

pub use auth::{Auth, Injection, ResponseScope};
pub use error::{EgressError, RequestPart};
pub use host::HostPattern;
pub use ipnet::IpNet;
pub use pipeline::{Egress, EgressConfig, Exchange, Policy, Request, Response, is_managed_header};
pub use secrecy::SecretString;
pub use skillbox_scan::{
    ForeignAction, Hit, MIN_ENCODED_LEN, MIN_SECRET_LEN, REDACTED, Redactor, Scanner, SecretMatcher, ViewLimits,
};
pub use streamed::BodyReader;
