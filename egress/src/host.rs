//! Host patterns: the entries of a manifest's `[network] allow`, a credential's `hosts`, and an
//! operator's `skillbox grant --hosts`.
//!
//! The grammar and matching rules are documented on [`HostPattern`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use url::{Host, Url};

use crate::EgressError;

/// One allowed host, with an optional port.
///
/// Grammar (case-insensitive, surrounding whitespace ignored):
///
/// | pattern               | matches                                                        |
/// |-----------------------|----------------------------------------------------------------|
/// | `api.github.com`      | exactly that name, on the URL scheme's default port (443/80)   |
/// | `api.github.com:8443` | exactly that name, on port 8443 only                           |
/// | `api.github.com:*`    | exactly that name, on any port                                 |
/// | `*.example.com`       | `a.example.com`, `a.b.example.com` (not `example.com`); default port |
/// | `127.0.0.1:8080`      | that IPv4 address (any spelling the URL parser accepts, e.g. `127.1`), port 8080 |
/// | `[::1]:9000`, `::1`   | that IPv6 address; brackets are needed only with a port        |
///
/// Why "no port = default port" rather than "any port": a name such as `api.github.com` in a
/// manifest means the service at its usual address; another port on the same machine may be a
/// different service (an admin interface, a debug server) that the author never meant to reach,
/// and must be named explicitly (`host:port`, or `host:*` to opt into every port).
///
/// Names are compared after the URL parser's normalisation (lower case, IDNA/punycode) with a
/// trailing dot removed; a wildcard may only be the whole leftmost label, and never on an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: PortMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// A normalised domain name, without a trailing dot.
    Name(String),
    /// `*.suffix`: holds the suffix with its leading dot, e.g. `.example.com`.
    Subdomains(String),
    /// An IP address literal.
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMatch {
    /// The URL scheme's default port (443 for https, 80 for http).
    Default,
    /// Exactly this port.
    Exact(u16),
    /// `:*`, any port.
    Any,
}

impl HostPattern {
    /// Parses a pattern; see [`HostPattern`] for the grammar.
    pub fn parse(pattern: &str) -> Result<Self, EgressError> {
        let fail =
            |reason: &str| EgressError::InvalidHostPattern { pattern: pattern.to_owned(), reason: reason.into() };
        let text = pattern.trim();
        if text.is_empty() {
            return Err(fail("it is empty"));
        }
        if text.contains("://") || text.contains(['/', '@', '?', '#']) || text.contains(char::is_whitespace) {
            return Err(fail("give a host with an optional port, not a URL"));
        }
        if text.contains('%') {
            // The URL parser would decode it (`%2a` is `*`), so the pattern would not mean what
            // it says. Found by fuzzing.
            return Err(fail("percent-encoding is not allowed in a host pattern; write the name as it is"));
        }
        let (host_text, port_text) = split_port(text).map_err(fail)?;
        let port = match port_text {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(p) => PortMatch::Exact(p.parse().map_err(|_| fail("the port is not a number from 0 to 65535"))?),
        };
        let (wildcard, name) = match host_text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host_text),
        };
        if name.contains('*') {
            return Err(fail("a wildcard may only be the whole leftmost label, as in `*.example.com`"));
        }
        let host = if let Ok(ip) = name.parse::<IpAddr>() {
            HostMatch::Ip(ip)
        } else {
            match Host::parse(name).map_err(|e| fail(&format!("not a valid host name ({e})")))? {
                Host::Domain(domain) => {
                    let domain = domain.strip_suffix('.').unwrap_or(&domain).to_owned();
                    if domain.is_empty() {
                        return Err(fail("the host name is empty"));
                    }
                    // `a..b` or `11..`: an empty label makes a name that URLs spell differently
                    // (`11..` trimmed to `11` would be the IP 0.0.0.11). Found by fuzzing.
                    if domain.split('.').any(str::is_empty) {
                        return Err(fail("the host name has an empty label (`..`)"));
                    }
                    HostMatch::Name(domain)
                }
                Host::Ipv4(ip) => HostMatch::Ip(ip.into()),
                Host::Ipv6(ip) => HostMatch::Ip(ip.into()),
            }
        };
        let host = match (wildcard, host) {
            (false, host) => host,
            (true, HostMatch::Name(suffix)) => {
                // `*.com` or `*.co.uk` would match every site under a public suffix (the
                // Public Suffix List, compiled in by the `psl` crate; unknown TLDs count too).
                if psl::suffix_str(&suffix) == Some(suffix.as_str()) {
                    return Err(fail(&format!(
                        "`*.{suffix}` would match every site under the public suffix `{suffix}`; name the domain, as in `*.example.{suffix}`"
                    )));
                }
                HostMatch::Subdomains(format!(".{suffix}"))
            }
            (true, _) => return Err(fail("a wildcard cannot apply to an IP address")),
        };
        Ok(Self { host, port })
    }

    /// Whether the URL's host and port match this pattern.
    pub fn matches_url(&self, url: &Url) -> bool {
        let Some(host) = url.host() else { return false };
        let Some(port) = url.port_or_known_default() else { return false };
        let default = default_port(url.scheme());
        let port_ok = match self.port {
            PortMatch::Default => Some(port) == default,
            PortMatch::Exact(p) => p == port,
            PortMatch::Any => true,
        };
        port_ok && self.matches_host(&host)
    }

    fn matches_host(&self, host: &Host<&str>) -> bool {
        match (&self.host, host) {
            (HostMatch::Name(want), Host::Domain(got)) => got.trim_end_matches('.').eq_ignore_ascii_case(want),
            (HostMatch::Subdomains(suffix), Host::Domain(got)) => {
                let got = got.trim_end_matches('.');
                got.len() > suffix.len()
                    && got.as_bytes()[got.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
            (HostMatch::Ip(want), Host::Ipv4(got)) => *want == IpAddr::V4(*got),
            (HostMatch::Ip(want), Host::Ipv6(got)) => *want == IpAddr::V6(*got),
            _ => false,
        }
    }
}

/// `host[:port]` of a URL as people write it: the port only when it is not the default.
pub(crate) fn display_host(url: &Url) -> String {
    let host = match url.host() {
        Some(Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(host) => host.to_string(),
        None => String::new(),
    };
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

/// Splits `host[:port]`, `[v6][:port]` or a bare IPv6 address.
fn split_port(text: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("missing `]` after an IPv6 address")?;
        return match after {
            "" => Ok((inside, None)),
            _ => match after.strip_prefix(':') {
                Some(port) if !port.is_empty() => Ok((inside, Some(port))),
                _ => Err("expected `:port` after `]`"),
            },
        };
    }
    match text.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => Ok((text, None)),
        Some((_, "")) => Err("the port after `:` is empty"),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((text, None)),
    }
}

impl FromStr for HostPattern {
    type Err = EgressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for HostPattern {
    /// The canonical spelling, which parses back to the same pattern.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Name(name) => f.write_str(name)?,
            HostMatch::Subdomains(suffix) => write!(f, "*{suffix}")?,
            HostMatch::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostMatch::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        match self.port {
            PortMatch::Default => Ok(()),
            PortMatch::Exact(port) => write!(f, ":{port}"),
            PortMatch::Any => f.write_str(":*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, url: &str) -> bool {
        HostPattern::parse(pattern).unwrap().matches_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn exact_names_match_case_insensitively_on_the_default_port() {
        assert!(m("api.github.com", "https://api.github.com/repos"));
        assert!(m("API.GitHub.com", "https://api.github.COM./x"));
        assert!(m("api.github.com", "https://api.github.com:443/"));
        assert!(!m("api.github.com", "https://api.github.com:8443/"));
        assert!(!m("api.github.com", "https://github.com/"));
        assert!(!m("api.github.com", "https://api.github.com.evil.com/"));
        assert!(!m("github.com", "https://evilgithub.com/"));
    }

    #[test]
    fn ports() {
        assert!(m("127.0.0.1:8080", "http://127.0.0.1:8080/"));
        assert!(!m("127.0.0.1:8080", "http://127.0.0.1:8081/"));
        assert!(!m("127.0.0.1:8080", "http://127.0.0.1/"));
        assert!(m("127.0.0.1:8080", "http://127.1:8080/"));
        assert!(m("example.com:*", "https://example.com:9999/"));
        assert!(m("[::1]:9000", "http://[::1]:9000/"));
        assert!(m("::1", "https://[::1]/"));
        assert!(!m("[::1]:9000", "http://[::2]:9000/"));
        assert!(m("example.com:443", "https://example.com/"));
    }

    #[test]
    fn wildcards_need_at_least_one_more_label() {
        assert!(m("*.example.com", "https://a.example.com/"));
        assert!(m("*.example.com", "https://a.b.EXAMPLE.com/"));
        assert!(!m("*.example.com", "https://example.com/"));
        assert!(!m("*.example.com", "https://badexample.com/"));
        assert!(!m("*.example.com", "https://a.example.com.evil.net/"));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for bad in [
            "",
            "https://x.com",
            "x.com/path",
            "a.*.com",
            "*x.com",
            "*.1.2.3.4",
            "*.com",
            "*.co.uk",
            // Fuzzing regression: `11..` parsed as the name `11`, whose text form is an IP.
            "11..",
            "a..b.com",
            // Fuzzing regression: `%2a` decoded to a `*` inside a name.
            "%2aaaaa22222D",
            "*.github.io",
            "x.com:",
            "x.com:99999",
            "[::1",
            "user@x.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        for p in ["api.github.com", "*.example.com", "127.0.0.1:8080", "[::1]:9000", "x.com:*"] {
            let parsed = HostPattern::parse(p).unwrap();
            assert_eq!(parsed.to_string(), p);
            assert_eq!(HostPattern::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }
}
