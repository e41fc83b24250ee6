//! Which addresses the fetcher may connect to: public unicast only, unless `[fetcher] allow`
//! names the range.
//!
//! Why a pure function: the fetcher resolves a name once, checks every address here, and then
//! connects to the checked address itself (never the name again), so a DNS answer that changes
//! between check and connect (rebinding) cannot reach the admin's own network. Addresses that
//! embed an IPv4 address (v4-mapped, NAT64, 6to4) are judged by the IPv4 address inside.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public unicast address, or `None` when it is.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let reason = match o {
        [0, ..] => "unspecified/this-network (0.0.0.0/8)",
        [10, ..] => "private (10/8)",
        [100, b, ..] if (64..128).contains(&b) => "carrier-grade NAT (100.64/10)",
        [127, ..] => "loopback (127/8)",
        [169, 254, ..] => "link-local (169.254/16, cloud metadata)",
        [172, b, ..] if (16..32).contains(&b) => "private (172.16/12)",
        [192, 0, 0, _] => "IETF protocol assignments (192.0.0/24)",
        [192, 0, 2, _] => "documentation (192.0.2/24)",
        [192, 88, 99, _] => "6to4 relay anycast (192.88.99/24)",
        [192, 168, ..] => "private (192.168/16)",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18/15)",
        [198, 51, 100, _] => "documentation (198.51.100/24)",
        [203, 0, 113, _] => "documentation (203.0.113/24)",
        [a, ..] if (224..240).contains(&a) => "multicast (224/4)",
        [a, ..] if a >= 240 => "reserved or broadcast (240/4)",
        _ => return None,
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4).or(Some("IPv4-mapped IPv6 (connect to the IPv4 address instead)"));
    }
    let s = ip.segments();
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    if s[0..6] == [0, 0, 0, 0, 0, 0] {
        return Some("IPv4-compatible IPv6 (::/96, deprecated)");
    }
    if s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_reason(embedded);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("local-use NAT64 (64:ff9b:1::/48)");
    }
    if s[0] == 0x2002 {
        let inner = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return v4_reason(inner).map(|_| "6to4 (2002::/16) wrapping a non-public IPv4 address");
    }
    let reason = match s[0] {
        0x2001 if s[1] < 0x200 => "IETF protocol assignments and Teredo (2001::/23)",
        0x2001 if s[1] == 0xdb8 => "documentation (2001:db8::/32)",
        0x3fff if s[1] < 0x1000 => "documentation (3fff::/20)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        a if a & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        a if a & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        a if a & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        a if a & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        a if a & 0xe000 != 0x2000 => "not global unicast (outside 2000::/3)",
        _ => return None,
    };
    Some(reason)
}

/// The address to connect to for `ip` (v4-mapped becomes plain IPv4), or why it is refused.
/// A range in `allow` permits any address in it (tests allow 127.0.0.0/8).
pub fn check(ip: IpAddr, allow: &[IpNet]) -> Result<IpAddr, &'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if allow.iter().any(|net| net.contains(&ip)) {
        return Ok(ip);
    }
    match forbidden_reason(ip) {
        Some(reason) => Err(reason),
        None => Ok(ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_non_public_range() {
        for bad in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(check(ip, &[]).is_err(), "{bad} must be refused");
        }
        for good in
            ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
        {
            let ip: IpAddr = good.parse().unwrap();
            assert!(check(ip, &[]).is_ok(), "{good} must be allowed");
        }
        assert_eq!(check("::ffff:8.8.8.8".parse().unwrap(), &[]).unwrap(), "8.8.8.8".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn allow_list_permits_only_its_range() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(check("127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check("::ffff:127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check("169.254.169.254".parse().unwrap(), &allow).is_err());
        assert!(check("10.0.0.1".parse().unwrap(), &allow).is_err());
    }
}
