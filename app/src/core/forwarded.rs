//! Who the client is: the TCP peer, or, behind reverse proxies the operator
//! trusts (`proxy.trusted_proxies`), the address they forwarded. One rule for
//! the proxy's IP allowlist and the console's sign-in throttle.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address: the TCP peer, or, where the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` address that is not one (the
/// left-most where all are). `None` where that entry is not an address.
/// IPv4-mapped IPv6 addresses are read as the IPv4 address they carry, so
/// that IPv4 lists match a dual-stack listener's peers.
pub fn client_ip(peer: IpAddr, h: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let ip = hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
            .ok()?
            .to_canonical();
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let h = forwarded("198.51.100.7, 10.0.0.6");
        assert_eq!(client_ip(peer, &h, &trusted), "198.51.100.7".parse().ok());
        // Spoofed by a client that is not a proxy: the peer stands.
        assert_eq!(client_ip(outsider, &h, &trusted), Some(outsider));
        assert_eq!(client_ip(peer, &h, &[]), Some(peer));
        // Every hop trusted: the left-most; a garbled hop: nobody.
        assert_eq!(
            client_ip(peer, &forwarded("10.0.0.7"), &trusted),
            "10.0.0.7".parse().ok()
        );
        assert_eq!(client_ip(peer, &forwarded("nonsense"), &trusted), None);
    }

    #[test]
    fn mapped_ipv6_peers_are_their_ipv4_address() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let h = forwarded("::ffff:198.51.100.7");
        assert_eq!(client_ip(mapped, &h, &trusted), "198.51.100.7".parse().ok());
        let lone: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(lone, &HeaderMap::new(), &[]),
            "192.0.2.1".parse().ok()
        );
    }
}
