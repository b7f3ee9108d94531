//! Where the server may connect on a tenant's behalf (providers, alert
//! webhooks, later MCP servers): public addresses only, unless the operator
//! sets `allow_private_networks`. Checked when a URL is saved and, in the
//! server's HTTP clients, again when it is connected to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::AppError;

/// Loopback, private, link-local, unique-local, unspecified, CGNAT and the
/// other special-purpose ranges, also written as IPv4-mapped, IPv4-compatible
/// or NAT64 IPv6: nothing a tenant's URL may reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let [.., hi, lo] = s;
    let embedded = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::a.b.c.d (compatible, also :: and ::1), ::ffff:a.b.c.d (mapped), 64:ff9b::a.b.c.d (NAT64).
    if s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xffff) {
        return private_v4(embedded);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return private_v4(embedded);
    }
    ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
}

/// Refuses (400 naming `field`) a URL whose host is, or resolves to, an
/// address `is_private` names, unless private networks are allowed.
pub async fn check_url(field: &str, url: &str, allow_private: bool) -> Result<(), AppError> {
    if allow_private {
        return Ok(());
    }
    let parsed =
        url::Url::parse(url).map_err(|_| AppError::invalid(field, "is not an http(s) URL"))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        // A name that does not resolve now (no DNS here yet, a typo) is
        // saved: the connect-time resolver refuses it if it ever resolves to
        // a private address.
        Some(url::Host::Domain(name)) => {
            let lookup = tokio::net::lookup_host((name, port));
            match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                Ok(Err(_)) | Err(_) => Vec::new(),
            }
        }
        None => return Err(AppError::invalid(field, "has no host")),
    };
    if addrs.iter().any(|ip| is_private(*ip)) {
        return Err(AppError::invalid(
            field,
            "points at a loopback, private or link-local address, which this server does not \
             connect to (the operator's allow_private_networks setting)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_private;

    #[test]
    fn private_ranges_in_every_spelling() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
