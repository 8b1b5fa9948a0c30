//! The client address of a request, resolved from what the connection
//! showed, never from what a client wrote.
//!
//! A host that already knows the client address passes it as
//! `context.ip`. A host in front of which proxies may sit passes instead
//! `context.peer` (the address the connection came from) and
//! `context.forwarded_for` (the `X-Forwarded-For` header as received,
//! several headers joined with `,`). The engine then takes:
//!
//! - the peer itself when the peer is not one of the manifest's
//!   `[network] trusted_proxies`: a client that writes `X-Forwarded-For`
//!   cannot choose its own address (and so cannot move to fresh lockout
//!   counters, nor pose as an internal address);
//! - when the peer is a trusted proxy, the right-most address of the
//!   header that is not itself a trusted proxy (each proxy appends what it
//!   saw; only the part written by trusted proxies is believed), or the
//!   left-most when every hop is trusted.
//!
//! `ip` together with `peer`, a `forwarded_for` without `peer`, an entry
//! that is not an address, or more than [`MAX_FORWARDED_HOPS`] entries is
//! a clear error naming the field (the decision is a deny).

use crate::error::RequestError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Most entries accepted in `context.forwarded_for`.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// `[network]` of the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Proxies whose `X-Forwarded-For` entries are believed: addresses or
    /// CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.10`).
    pub trusted_proxies: Vec<String>,
}

/// An address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `a.b.c.d`, `a.b.c.d/n`, `v6`, `v6/n`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not an address or CIDR range", truncate(text)))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "`{}`: the prefix length must be 0 to {max}",
                        truncate(text)
                    ));
                }
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn truncate(s: &str) -> String {
    crate::request::truncate(s)
}

impl NetworkSection {
    /// Check every entry (at load).
    pub fn validate(&self) -> Result<Vec<Cidr>, String> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, t)| Cidr::parse(t).map_err(|e| format!("trusted_proxies[{i}]: {e}")))
            .collect()
    }
}

/// Where the client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No address at all.
    None,
    /// `context.ip`, as the host resolved it.
    Ip,
    /// The connection's peer (no trusted proxy in front).
    Peer,
    /// `X-Forwarded-For`, written by trusted proxies.
    Forwarded,
}

/// The resolved client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The address, canonical text; `None` when the request gave none.
    pub ip: Option<String>,
    /// Where it came from.
    pub source: Source,
    /// The request carried `forwarded_for` that was not believed (the peer
    /// is not a trusted proxy).
    pub forwarded_ignored: bool,
}

/// One `X-Forwarded-For` entry: an address, `v4:port` or `[v6]:port`.
fn hop(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = e.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// Resolve the client address of a request context.
pub fn resolve(
    trusted: &[Cidr],
    ctx: &crate::request::RequestContext,
) -> Result<Client, RequestError> {
    let Some(peer) = &ctx.peer else {
        if ctx.forwarded_for.is_some() {
            return Err(RequestError::field(
                "context.forwarded_for",
                "needs `context.peer` (the address the connection came from): X-Forwarded-For alone is never believed",
            ));
        }
        return Ok(Client {
            source: if ctx.ip.is_some() {
                Source::Ip
            } else {
                Source::None
            },
            ip: ctx.ip.clone(),
            forwarded_ignored: false,
        });
    };
    if ctx.ip.is_some() {
        return Err(RequestError::field(
            "context.peer",
            "give `ip` (resolved by the host) or `peer` with `forwarded_for` (resolved by the engine), not both",
        ));
    }
    let peer_ip = hop(peer).ok_or_else(|| {
        RequestError::field(
            "context.peer",
            format!("`{}` is not an IPv4 or IPv6 address", truncate(peer)),
        )
    })?;
    let peer_ip = canonical(peer_ip);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let Some(header) = ctx
        .forwarded_for
        .as_deref()
        .filter(|h| !h.trim().is_empty())
    else {
        return Ok(Client {
            ip: Some(peer_ip.to_string()),
            source: Source::Peer,
            forwarded_ignored: false,
        });
    };
    if !is_trusted(peer_ip) {
        return Ok(Client {
            ip: Some(peer_ip.to_string()),
            source: Source::Peer,
            forwarded_ignored: true,
        });
    }
    let entries: Vec<&str> = header.split(',').collect();
    if entries.len() > MAX_FORWARDED_HOPS {
        return Err(RequestError::field(
            "context.forwarded_for",
            format!(
                "{} entries, over the limit of {MAX_FORWARDED_HOPS}",
                entries.len()
            ),
        ));
    }
    let mut hops = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        match hop(e) {
            Some(ip) => hops.push(canonical(ip)),
            None => {
                return Err(RequestError::field(
                    "context.forwarded_for",
                    format!(
                        "entry {} `{}` is not an IPv4 or IPv6 address",
                        i + 1,
                        truncate(e.trim())
                    ),
                ));
            }
        }
    }
    let client = hops
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer_ip);
    Ok(Client {
        ip: Some(client.to_string()),
        source: Source::Forwarded,
        forwarded_ignored: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestContext;

    fn ctx(peer: Option<&str>, xff: Option<&str>) -> RequestContext {
        RequestContext {
            peer: peer.map(str::to_string),
            forwarded_for: xff.map(str::to_string),
            ..RequestContext::default()
        }
    }

    fn trusted() -> Vec<Cidr> {
        ["10.0.0.0/8", "2001:db8::/32", "192.0.2.10"]
            .iter()
            .filter_map(|t| Cidr::parse(t).ok())
            .collect()
    }

    fn ip(r: Result<Client, RequestError>) -> Option<String> {
        r.ok().and_then(|c| c.ip)
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let c = resolve(
            &trusted(),
            &ctx(Some("198.51.100.66"), Some("10.9.9.9, 203.0.113.7")),
        );
        assert_eq!(
            c.map(|c| (c.ip, c.source, c.forwarded_ignored)),
            Ok((Some("198.51.100.66".into()), Source::Peer, true))
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted();
        // client → proxy 10.1.1.1 → proxy 10.2.2.2 (the peer)
        assert_eq!(
            ip(resolve(
                &t,
                &ctx(Some("10.2.2.2"), Some("203.0.113.7, 10.1.1.1"))
            )),
            Some("203.0.113.7".into())
        );
        // A spoofed left-most entry is not believed.
        assert_eq!(
            ip(resolve(
                &t,
                &ctx(Some("10.2.2.2"), Some("1.2.3.4, 203.0.113.7"))
            )),
            Some("203.0.113.7".into())
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            ip(resolve(
                &t,
                &ctx(Some("10.2.2.2"), Some("10.3.3.3,10.1.1.1"))
            )),
            Some("10.3.3.3".into())
        );
        // Ports and brackets, IPv4-mapped peers.
        assert_eq!(
            ip(resolve(
                &t,
                &ctx(
                    Some("::ffff:10.2.2.2"),
                    Some("[2001:db9::1]:443, 192.0.2.10:80")
                )
            )),
            Some("2001:db9::1".into())
        );
    }

    #[test]
    fn contradictions_and_junk_are_errors_naming_the_field() {
        let t = trusted();
        let field = |r: Result<Client, RequestError>| r.err().map(|e| e.field);
        assert_eq!(
            field(resolve(&t, &ctx(None, Some("1.2.3.4")))),
            Some("context.forwarded_for".into())
        );
        let mut both = ctx(Some("10.0.0.1"), None);
        both.ip = Some("1.2.3.4".into());
        assert_eq!(field(resolve(&t, &both)), Some("context.peer".into()));
        assert_eq!(
            field(resolve(&t, &ctx(Some("10.0.0.1"), Some("1.2.3.4, evil")))),
            Some("context.forwarded_for".into())
        );
        let many = vec!["1.2.3.4"; MAX_FORWARDED_HOPS + 1].join(",");
        assert_eq!(
            field(resolve(&t, &ctx(Some("10.0.0.1"), Some(&many)))),
            Some("context.forwarded_for".into())
        );
    }

    #[test]
    fn cidr_ranges_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").ok();
        assert!(
            c.is_some_and(|c| c.contains("10.255.0.1".parse().unwrap_or(IpAddr::V4(0.into()))))
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .is_ok_and(|c| c.contains("8.8.8.8".parse().unwrap_or(IpAddr::V4(0.into()))))
        );
    }
}
