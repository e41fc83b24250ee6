//! Offline enrichment with the shipped databases and with configured files.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_admin::enrich::{EnrichError, Enricher, EnrichmentConfig};

#[test]
fn shipped_databases_answer_offline() {
    let en = Enricher::new(&EnrichmentConfig::default()).unwrap();
    let g = en.lookup("8.8.8.8".parse().unwrap());
    assert_eq!((g.country.as_str(), g.asn, g.as_org.as_str()), ("US", Some(15169), "Google LLC"));
    let c = en.lookup("1.1.1.1".parse().unwrap());
    assert_eq!(c.asn, Some(13335));
    assert_eq!(c.country.len(), 2);
    // IPv6 and IPv4-mapped IPv6
    let v6 = en.lookup("2a00:1450:4001::1".parse().unwrap());
    assert_eq!((v6.asn, v6.country.len()), (Some(15169), 2));
    let mapped = en.lookup("::ffff:8.8.8.8".parse().unwrap());
    assert_eq!(mapped, g);
    // special ranges are labelled without a lookup
    for (ip, label) in
        [("192.168.1.10", "private"), ("::1", "private"), ("198.51.100.7", "reserved"), ("224.0.0.1", "reserved")]
    {
        let i = en.lookup(ip.parse().unwrap());
        assert_eq!((i.country.as_str(), i.asn), (label, None), "{ip}");
    }
    let (country_epoch, asn_epoch) = en.build_epochs();
    assert!(country_epoch > 1_700_000_000 && asn_epoch > 1_700_000_000);
}

#[test]
fn configured_files_are_used_and_bad_paths_name_the_key() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let cfg = EnrichmentConfig { country_mmdb: data.join("country.mmdb"), asn_mmdb: data.join("asn.mmdb") };
    let en = Enricher::new(&cfg).unwrap();
    assert_eq!(en.lookup("8.8.8.8".parse().unwrap()).country, "US");
    // a country database used as ASN database: the reader works, fields are simply absent
    let swapped = EnrichmentConfig { country_mmdb: data.join("asn.mmdb"), asn_mmdb: data.join("country.mmdb") };
    let en = Enricher::new(&swapped).unwrap();
    let i = en.lookup("8.8.8.8".parse().unwrap());
    assert_eq!((i.country.as_str(), i.asn), ("unknown", None));
    let bad = EnrichmentConfig { asn_mmdb: "/nonexistent/asn.mmdb".into(), ..Default::default() };
    let err = Enricher::new(&bad).err().unwrap();
    assert!(matches!(err, EnrichError::Open { key: "asn_mmdb", .. }));
    assert!(err.to_string().contains("[enrichment] asn_mmdb"), "{err}");
    let not_mmdb = EnrichmentConfig { country_mmdb: data.join("VERSIONS"), ..Default::default() };
    assert!(Enricher::new(&not_mmdb).is_err());
}
