//! Which IP addresses a skill's request may connect to, and the DNS resolver that enforces it.
//!
//! The check runs on the address the connection will actually use, not on the name: names are
//! resolved by [`FilteringResolver`], which reqwest calls for every new connection and which
//! returns only permitted addresses. There is no window between "check" and "connect" in which
//! a second DNS answer (DNS rebinding) could swap the target. reqwest does not call a resolver
//! for IP-literal hosts, so the pipeline checks those directly with [`check_ip`].
//!
//! The rules depend on the scheme, so each scheme has its own client and resolver
//! ([`AddressRules`]). Over `https`, refused unless listed in `allowed_private`: loopback,
//! 0.0.0.0/8, RFC 1918, CGNAT 100.64/10, link-local 169.254/16 (cloud metadata lives at
//! 169.254.169.254), IETF protocol assignments 192.0.0/24, documentation and benchmarking
//! ranges, multicast, 240/4 and broadcast; for IPv6 the unspecified and loopback addresses,
//! fe80::/10, deprecated site-local fec0::/10, ULA fc00::/7, multicast, discard 100::/64,
//! documentation 2001:db8::/32 and 3fff::/20, Teredo 2001::/32; addresses that embed an IPv4
//! address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 64:ff9b::/96, 6to4
//! 2002::/16) are judged by the embedded IPv4 address. Plain `http` (only under
//! `allow_http_loopback`) goes to loopback and nowhere else, and a name only when every address
//! it resolves to is loopback.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Where one scheme's connections may go.
#[derive(Debug, Clone)]
pub(crate) enum AddressRules {
    /// `https`: public unicast addresses, and the ranges the operator opened
    /// (`allowed_private`). Loopback only when one of those ranges covers it.
    Public {
        /// The operator's `allowed_private` ranges.
        allowed_private: Vec<IpNet>,
    },
    /// Plain `http` under `allow_http_loopback`: loopback addresses (127.0.0.0/8, ::1, and
    /// their IPv4-mapped forms) and nothing else; a name only when *every* address it resolves
    /// to is loopback.
    LoopbackOnly,
}

/// `Ok` when a connection to `ip` is permitted, else the kind of address it is.
pub(crate) fn check_ip(ip: IpAddr, rules: &AddressRules) -> Result<(), &'static str> {
    let allowed_private = match rules {
        AddressRules::LoopbackOnly if is_loopback(ip) => return Ok(()),
        AddressRules::LoopbackOnly => return Err("non-loopback"),
        AddressRules::Public { allowed_private } => allowed_private,
    };
    let embedded = match ip {
        IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unspecified() => embedded_v4(v6).map(IpAddr::V4),
        _ => None,
    };
    // An operator who allows 10.1.0.0/16 also allows ::ffff:10.1.2.3, which reaches the same host.
    if allowed_private.iter().any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4))) {
        return Ok(());
    }
    match special_kind(ip) {
        None => Ok(()),
        Some(kind) => Err(kind),
    }
}

/// Whether a connection to `ip` stays on this machine: 127.0.0.0/8, ::1, or ::ffff:127.x.y.z.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The kind of special-purpose address `ip` is, or `None` for ordinary public unicast.
fn special_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_kind_v4(v4),
        IpAddr::V6(v6) => special_kind_v6(v6),
    }
}

fn special_kind_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata (link-local)",
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (RFC 1918)",
        (172, 16..=31, _) => "private (RFC 1918)",
        (192, 168, _) => "private (RFC 1918)",
        (100, 64..=127, _) => "shared (CGNAT 100.64.0.0/10)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn special_kind_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return special_kind_v4(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xfc00..=0xfdff => "unique local (fc00::/7)",
        0xff00..=0xffff => "multicast",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] == 0 => "Teredo tunnel",
        0x3fff if s[1] <= 0x0fff => "documentation",
        // The rest of ::/8 (other than the embedded-IPv4 forms above) is reserved.
        0x0000..=0x00ff => "reserved (::/8)",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // IPv4-compatible ::a.b.c.d (deprecated; :: and ::1 are handled before this)
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        // NAT64 well-known prefix 64:ff9b::/96
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 6to4 2002:AABB:CCDD::/48
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// Whether `host` is a name that must resolve to loopback only (RFC 6761 section 6.3).
pub(crate) fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost")
}

/// Raised by [`FilteringResolver`] when a name resolves to no permitted address (or, under
/// [`AddressRules::LoopbackOnly`], to any refused one); the
/// pipeline finds it in reqwest's error source chain and reports `AddressNotAllowed`.
#[derive(Debug)]
pub(crate) struct AddressRefused {
    pub(crate) host: String,
    pub(crate) addr: IpAddr,
    pub(crate) reason: &'static str,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves to a refused address ({}, {})", self.host, self.addr, self.reason)
    }
}

impl StdError for AddressRefused {}

/// Finds an [`AddressRefused`] anywhere in an error's source chain.
pub(crate) fn find_refusal<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a AddressRefused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<AddressRefused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

/// Where a [`FilteringResolver`] gets its answers: the system resolver, or (in this crate's
/// unit tests) a fixed table, so tests can make a name resolve to any address. The filter runs
/// on the answers either way.
#[derive(Debug, Clone, Default)]
pub(crate) enum Lookup {
    /// `getaddrinfo` through tokio.
    #[default]
    System,
    /// Names mapped to addresses; a name not listed has no addresses.
    #[cfg(test)]
    Fixed(Arc<Vec<(String, Vec<IpAddr>)>>),
}

impl Lookup {
    async fn addresses(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            // Port 0: reqwest replaces it with the URL's port.
            Lookup::System => Ok(tokio::net::lookup_host((host, 0)).await?.collect()),
            #[cfg(test)]
            Lookup::Fixed(table) => Ok(table
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(host))
                .flat_map(|(_, ips)| ips.iter().map(|ip| SocketAddr::new(*ip, 0)))
                .collect()),
        }
    }
}

/// A DNS resolver that only ever hands reqwest permitted addresses.
#[derive(Debug, Clone)]
pub(crate) struct FilteringResolver {
    pub(crate) rules: Arc<AddressRules>,
    pub(crate) lookup: Lookup,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = Arc::clone(&self.rules);
        let lookup = self.lookup.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = lookup.addresses(&host).await?;
            let localhost = is_localhost_name(&host);
            // Plain http: one refused address refuses the name. (Connecting only to the
            // loopback ones would be as safe, but a name that also points off the machine is
            // not what the operator opened.)
            let all_or_nothing = matches!(*rules, AddressRules::LoopbackOnly);
            let mut permitted: Vec<SocketAddr> = Vec::new();
            let mut first_refusal = None;
            for addr in resolved {
                let verdict = if localhost && !is_loopback(addr.ip()) {
                    Err("non-loopback (a localhost name must resolve to loopback)")
                } else {
                    check_ip(addr.ip(), &rules)
                };
                match verdict {
                    Ok(()) => permitted.push(addr),
                    Err(reason) => {
                        first_refusal.get_or_insert((addr.ip(), reason));
                    }
                }
            }
            if permitted.is_empty() || (all_or_nothing && first_refusal.is_some()) {
                return Err(match first_refusal {
                    Some((addr, reason)) => Box::new(AddressRefused { host, addr, reason }) as Box<_>,
                    None => format!("{host} has no addresses").into(),
                });
            }
            tracing::trace!(%host, addresses = permitted.len(), "resolved");
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allowed: &[&str]) -> AddressRules {
        AddressRules::Public { allowed_private: allowed.iter().map(|n| n.parse().unwrap()).collect() }
    }

    fn refused(ip: &str, r: &AddressRules) -> bool {
        check_ip(ip.parse().unwrap(), r).is_err()
    }

    #[test]
    fn special_purpose_addresses_are_refused() {
        let r = rules(&[]);
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "169.254.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fec0::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(refused(ip, &r), "{ip} was permitted");
        }
    }

    #[test]
    fn public_addresses_are_permitted() {
        let r = rules(&[]);
        for ip in ["1.1.1.1", "140.82.112.3", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(!refused(ip, &r), "{ip} was refused");
        }
    }

    #[test]
    fn plain_http_rules_permit_loopback_and_nothing_else() {
        let r = AddressRules::LoopbackOnly;
        for ip in ["127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"] {
            assert!(!refused(ip, &r), "{ip} was refused");
        }
        for ip in ["1.1.1.1", "10.0.0.1", "169.254.169.254", "0.0.0.0", "::", "::127.0.0.1", "64:ff9b::7f00:1"] {
            assert!(refused(ip, &r), "{ip} was permitted");
        }
    }

    #[test]
    fn https_rules_refuse_loopback_unless_an_operator_range_covers_it() {
        assert!(refused("127.0.0.1", &rules(&[])));
        assert!(refused("::1", &rules(&["10.0.0.0/8"])));
        assert!(!refused("127.0.0.1", &rules(&["127.0.0.0/8"])));
    }

    #[test]
    fn allowed_private_ranges_open_exactly_those() {
        let r = rules(&["10.1.0.0/16", "fd12::/16"]);
        assert!(!refused("10.1.2.3", &r));
        assert!(refused("10.2.0.1", &r));
        assert!(!refused("fd12::5", &r));
        assert!(refused("fd13::5", &r));
    }

    #[test]
    fn localhost_names() {
        assert!(is_localhost_name("localhost"));
        assert!(is_localhost_name("LocalHost."));
        assert!(is_localhost_name("a.localhost"));
        assert!(!is_localhost_name("localhost.example.com"));
    }
}
