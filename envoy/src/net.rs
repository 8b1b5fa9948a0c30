//! Client addresses: the downstream peer, and `x-forwarded-for` only when
//! the peer is a trusted proxy.

use std::net::{IpAddr, SocketAddr};

/// An address block (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parse `ADDR` or `ADDR/BITS`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        let (a, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { addr, bits })
    }

    /// Whether `ip` lies in the block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a.get(..full) != b.get(..full) {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The address part of Envoy's `source.address` (`127.0.0.1:5000`,
/// `[::1]:5000`), or `None` for a pipe or anything unreadable.
pub fn peer_ip(source_address: &str) -> Option<IpAddr> {
    if let Ok(sa) = source_address.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    source_address.parse::<IpAddr>().ok().map(canonical)
}

/// The client address: the peer, or — when the peer is a trusted proxy —
/// the right-most address in `x-forwarded-for` that is not trusted (the
/// left-most if all are). Entries that are not addresses end the walk:
/// nothing left of them can be believed.
pub fn client_ip(peer: Option<IpAddr>, xff: Option<&str>, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let (Some(xff), true) = (xff, is_trusted(peer)) else {
        return Some(peer);
    };
    let mut client = peer;
    for hop in xff.rsplit(',') {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// One `x-forwarded-for` entry: an address, maybe with a port or brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.2.3.4")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.9.9.9")), "v4-mapped v6 is v4");
        let c = Cidr::parse("192.168.1.0/25").unwrap();
        assert!(c.contains(ip("192.168.1.127")));
        assert!(!c.contains(ip("192.168.1.128")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn xff_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = Some(ip("10.1.1.1"));
        // The right-most untrusted hop is the client; left of it may be forged.
        assert_eq!(
            client_ip(peer, Some("1.2.3.4, 203.0.113.7, 10.0.0.2"), &trusted),
            Some(ip("203.0.113.7"))
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(Some(ip("198.51.100.1")), Some("1.2.3.4"), &trusted),
            Some(ip("198.51.100.1"))
        );
        // No trusted proxies configured: never believed.
        assert_eq!(client_ip(peer, Some("1.2.3.4"), &[]), peer);
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_ip(peer, Some("1.2.3.4, junk, 10.0.0.3"), &trusted),
            Some(ip("10.0.0.3"))
        );
        assert_eq!(
            client_ip(peer, Some("[2001:db8::1]:443"), &trusted),
            Some(ip("2001:db8::1"))
        );
    }

    #[test]
    fn peer_addresses() {
        assert_eq!(peer_ip("127.0.0.1:5000"), Some(ip("127.0.0.1")));
        assert_eq!(peer_ip("[::1]:5000"), Some(ip("::1")));
        assert_eq!(peer_ip("/tmp/sock"), None);
    }
}
