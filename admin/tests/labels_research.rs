//! The bundled research-scanner list with the shipped ASN database: an address of a listed
//! scanner's range or ASN is labelled research, an admin's own label wins over the list, and
//! addresses of neither have no label.
// Tests may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_admin::enrich::Enricher;
use drosera_admin::labels::{Label, LabelRecord, Labeler};

fn label(l: &Labeler, en: &Enricher, ip: &str) -> Option<Label> {
    let addr = ip.parse().unwrap();
    l.label(addr, || en.lookup(addr).asn)
}

#[test]
fn research_scanners_are_labelled_by_range_and_by_asn() {
    let en = Enricher::new(&Default::default()).unwrap();
    let l = Labeler::new(&[], true);
    // In a listed range (Censys) and in a listed ASN only (Censys AS398324 over IPv6, Driftnet
    // AS211298): both research.
    for ip in ["162.142.125.7", "2602:80d:1000::1", "87.236.176.9", "64.62.197.10"] {
        assert_eq!(label(&l, &en, ip), Some(Label::Research), "{ip}");
    }
    assert_eq!(en.lookup("2602:80d:1000::1".parse().unwrap()).asn, Some(398324), "the shipped mmdb's Censys ASN");
    // Neither listed: Google, Cloudflare, a documentation address.
    for ip in ["8.8.8.8", "1.1.1.1", "203.0.113.9"] {
        assert_eq!(label(&l, &en, ip), None, "{ip}");
    }
    // The admin's own label wins over the list.
    let own =
        [LabelRecord { cidr: "2602:80d:1000::/48".into(), label: "self".into(), note: String::new(), created_ms: 0 }];
    assert_eq!(label(&Labeler::new(&own, true), &en, "2602:80d:1000::1"), Some(Label::SelfTest));
}
