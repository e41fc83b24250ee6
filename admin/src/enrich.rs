//! Offline enrichment: country and autonomous system for a source IP, from `.mmdb` files.
//!
//! WHY offline: a honeypot's whole value is its list of attacker addresses; sending them one at a
//! time to a web service leaks the sensor's existence and fails without internet. Here every
//! lookup is a read of a local MaxMind-format database through the `maxminddb` crate.
//!
//! Two databases ship inside the binary (see `docs/enrichment.md` for source, date and licence):
//! `admin/data/country.mmdb` (records `{country_code}`) and `admin/data/asn.mmdb` (records laid
//! out like GeoLite2-ASN). The `[enrichment]` config can point to other files instead: GeoLite2
//! or DB-IP country databases (`{country: {iso_code}}`) and GeoLite2-ASN or DB-IP ASN databases
//! work with the same reader.
//!
//! Private, loopback, link-local, documentation and other reserved ranges never reach a database:
//! they are labelled `private` or `reserved`. Addresses no database knows are `unknown`.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The country database shipped with the project (embedded, so the admin works out of the box).
static DEFAULT_COUNTRY: &[u8] = include_bytes!("../data/country.mmdb");
/// The ASN database shipped with the project.
static DEFAULT_ASN: &[u8] = include_bytes!("../data/asn.mmdb");

/// `[enrichment]` config section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichmentConfig {
    /// Country `.mmdb` file; empty = the database shipped inside the binary.
    #[serde(default)]
    pub country_mmdb: PathBuf,
    /// ASN `.mmdb` file; empty = the database shipped inside the binary.
    #[serde(default)]
    pub asn_mmdb: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("cannot open {key} database {path}: {source} (fix the [enrichment] {key} path, or leave it empty for the shipped database)")]
    Open { key: &'static str, path: String, source: maxminddb::MaxMindDBError },
}

/// What enrichment knows about one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpInfo {
    /// ISO 3166-1 alpha-2 code, or `private`, `reserved`, `unknown`.
    pub country: String,
    /// Autonomous system number, if known.
    pub asn: Option<u32>,
    /// Autonomous system organisation, empty if unknown.
    pub as_org: String,
}

type Db = maxminddb::Reader<Vec<u8>>;

/// Both readers, opened once and shared (lookups are read-only).
pub struct Enricher {
    country: Db,
    asn: Db,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    /// ip-location-db layout.
    #[serde(borrow)]
    country_code: Option<&'a str>,
    /// GeoLite2 / DB-IP layout.
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
}

fn open(key: &'static str, path: &Path, default: &'static [u8]) -> Result<Db, EnrichError> {
    let err = |source| EnrichError::Open { key, path: path.display().to_string(), source };
    if path.as_os_str().is_empty() {
        let shipped = PathBuf::from(format!("<shipped {key}>"));
        return maxminddb::Reader::from_source(default.to_vec()).map_err(|source| EnrichError::Open {
            key,
            path: shipped.display().to_string(),
            source,
        });
    }
    maxminddb::Reader::open_readfile(path).map_err(err)
}

impl Enricher {
    pub fn new(cfg: &EnrichmentConfig) -> Result<Enricher, EnrichError> {
        Ok(Enricher {
            country: open("country_mmdb", &cfg.country_mmdb, DEFAULT_COUNTRY)?,
            asn: open("asn_mmdb", &cfg.asn_mmdb, DEFAULT_ASN)?,
        })
    }

    /// Build date of the country and ASN databases (from their metadata), for display.
    pub fn build_epochs(&self) -> (u64, u64) {
        (self.country.metadata.build_epoch, self.asn.metadata.build_epoch)
    }

    /// Looks `ip` up locally. Never fails: unknown addresses are `unknown`.
    pub fn lookup(&self, ip: IpAddr) -> IpInfo {
        let ip = canonical(ip);
        if let Some(label) = special_range(ip) {
            return IpInfo { country: label.to_string(), asn: None, as_org: String::new() };
        }
        let country = match self.country.lookup::<CountryRecord<'_>>(ip) {
            Ok(r) => r
                .country_code
                .or(r.country.and_then(|c| c.iso_code))
                .filter(|c| !c.is_empty())
                .map(|c| c.chars().take(8).collect::<String>().to_ascii_uppercase()),
            Err(_) => None,
        }
        .unwrap_or_else(|| "unknown".to_string());
        let (asn, as_org) = match self.asn.lookup::<AsnRecord<'_>>(ip) {
            Ok(r) => {
                (r.autonomous_system_number, r.autonomous_system_organization.unwrap_or("").chars().take(200).collect())
            }
            Err(_) => (None, String::new()),
        };
        IpInfo { country, asn, as_org }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack listener reports) are looked
/// up as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// `private` for addresses of private networks (RFC 1918, unique-local, loopback, link-local,
/// CGNAT shared space), `reserved` for other special-purpose ranges, `None` for global ones.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    use ipnet::{Ipv4Net, Ipv6Net};
    const PRIVATE_V4: [&str; 4] = ["100.64.0.0/10", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
    const RESERVED_V4: [&str; 9] = [
        "0.0.0.0/8",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "192.88.99.0/24",
    ];
    const PRIVATE_V6: [&str; 2] = ["fc00::/7", "fe80::/10"];
    const RESERVED_V6: [&str; 5] = ["::/128", "100::/64", "2001:db8::/32", "ff00::/8", "64:ff9b:1::/48"];
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() || v4.is_private() || v4.is_link_local() {
                return Some("private");
            }
            if v4.is_broadcast() || v4.is_unspecified() || v4.is_multicast() || v4.is_documentation() {
                return Some("reserved");
            }
            let inside = |nets: &[&str]| nets.iter().filter_map(|n| n.parse::<Ipv4Net>().ok()).any(|n| n.contains(&v4));
            if inside(&PRIVATE_V4) {
                Some("private")
            } else if inside(&RESERVED_V4) {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                return Some("private");
            }
            if v6.is_unspecified() || v6.is_multicast() {
                return Some("reserved");
            }
            let inside = |nets: &[&str]| nets.iter().filter_map(|n| n.parse::<Ipv6Net>().ok()).any(|n| n.contains(&v6));
            if inside(&PRIVATE_V6) {
                Some("private")
            } else if inside(&RESERVED_V6) {
                Some("reserved")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_labelled() {
        for (ip, want) in [
            ("10.1.2.3", Some("private")),
            ("192.168.1.1", Some("private")),
            ("127.0.0.1", Some("private")),
            ("100.64.1.1", Some("private")),
            ("169.254.1.1", Some("private")),
            ("203.0.113.9", Some("reserved")),
            ("240.0.0.1", Some("reserved")),
            ("::1", Some("private")),
            ("fd00::1", Some("private")),
            ("2001:db8::1", Some("reserved")),
            ("8.8.8.8", None),
            ("2a00:1450::1", None),
        ] {
            assert_eq!(special_range(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn mapped_v4_is_canonical() {
        assert_eq!(canonical("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
    }
}
