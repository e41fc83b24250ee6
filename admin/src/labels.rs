//! Labels on source addresses: your own tests (`self`), the internet's research scanners
//! (`research`) and any name of your own, so the report counts only what attacks you.
//!
//! WHY: a field report found three quarters of its "attacks" were the operator's own nmap runs,
//! and much of the rest of any honeypot's traffic is research scanners (Censys, Shodan,
//! Shadowserver, university projects). Both are visible and harmless; counted as attacks they
//! bury the real attackers in every top list.
//!
//! Where a label comes from, most specific first:
//! 1. the admin's own labels (`drosera-admin label add CIDR --as self|research|NAME`), kept in
//!    the database; of several that contain an address the longest prefix wins;
//! 2. the bundled research-scanner list (`admin/data/research-scanners.toml`, compiled in; no
//!    network at build or run time): published address ranges, then ASNs, looked up in the
//!    shipped ASN database ([`crate::enrich`]).
//!
//! How it is counted: `self` and `research` are [`Class`]es. Folding adds a labelled event to
//! the ordinary aggregate rows *and* to its class's rows (the same tables, under a negative
//! sensor id: [`class_sensor`]), so a report can take a class out of every number by
//! subtraction, exactly, without reading raw events (`analytics`). Any other label name is shown
//! on the attacker's rows and in exports but still counted as an attack. Changing labels (or the
//! bundled list, by an upgrade) rebuilds the class rows from the raw events still kept
//! ([`crate::analytics::relabel`]).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::OnceLock;

/// Longest label name (a custom label is shown in every attacker row).
pub const MAX_LABEL_LEN: usize = 32;
/// Longest note kept with a label.
pub const MAX_NOTE_LEN: usize = 200;

/// `[labels]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// Most address labels the admin keeps (`label add` past it is refused, naming this key).
    pub max_labels: u32,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        LabelsConfig { max_labels: 4096 }
    }
}

/// A label: one of the two that take traffic out of the attack numbers, or a name of your own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// Your own machines: tests, scans, monitoring. Excluded from the report by default.
    SelfTest,
    /// Research scanners. Shown separately, excluded from the attack numbers by default.
    Research,
    /// Any other name (lower case letters, digits, `-`, `_`): shown, still counted as attacks.
    Custom(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("bad label {0:?}: use self, research, or a name of 1 to 32 lower-case letters, digits, '-' or '_'")]
    BadLabel(String),
    #[error("bad address or network {0:?}: use an address (203.0.113.7, 2001:db8::1) or a CIDR (203.0.113.0/24)")]
    BadCidr(String),
    #[error("the note is longer than {MAX_NOTE_LEN} characters")]
    NoteTooLong,
    #[error("there are already {0} labels, the most `[labels] max_labels` allows; remove some or raise it")]
    Full(u32),
}

impl Label {
    pub fn parse(s: &str) -> Result<Label, LabelError> {
        match s {
            "self" => Ok(Label::SelfTest),
            "research" => Ok(Label::Research),
            _ if !s.is_empty()
                && s.len() <= MAX_LABEL_LEN
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') =>
            {
                Ok(Label::Custom(s.to_string()))
            }
            _ => Err(LabelError::BadLabel(s.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Label::SelfTest => "self",
            Label::Research => "research",
            Label::Custom(s) => s,
        }
    }

    /// The class the aggregates keep apart for this label, if any.
    pub fn class(&self) -> Option<Class> {
        match self {
            Label::SelfTest => Some(Class::SelfTest),
            Label::Research => Some(Class::Research),
            Label::Custom(_) => None,
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Label {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Label, LabelError> {
        Label::parse(s)
    }
}

/// The labels kept apart in the aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    SelfTest = 1,
    Research = 2,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::SelfTest, Class::Research];

    pub fn label(self) -> Label {
        match self {
            Class::SelfTest => Label::SelfTest,
            Class::Research => Label::Research,
        }
    }
}

/// The sensor id under which the aggregates keep `class`'s share of `sensor_id`'s rows
/// (`sensor_id` 0: of the all-sensors rows). Always negative, so never a real sensor.
pub fn class_sensor(sensor_id: i64, class: Class) -> i64 {
    -(sensor_id.saturating_mul(4).saturating_add(class as i64))
}

/// Parses an address or a CIDR; the network is normalised (host bits cleared).
pub fn parse_cidr(s: &str) -> Result<IpNet, LabelError> {
    let t = s.trim();
    let net = match t.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(t.parse::<IpAddr>().map_err(|_| LabelError::BadCidr(s.to_string()))?),
    };
    Ok(canonical_net(net.trunc()))
}

/// An IPv4-mapped IPv6 network as its IPv4 network (sensors report IPv4 peers either way).
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if let Some(v4) = n.addr().to_ipv4_mapped() {
            if n.prefix_len() >= 96 {
                if let Ok(x) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(x.trunc());
                }
            }
        }
    }
    net
}

/// One label the admin keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelRecord {
    /// The network, normalised (`203.0.113.7/32`).
    pub cidr: String,
    pub label: String,
    pub note: String,
    pub created_ms: i64,
}

/// What `label add` / `label remove` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Adds (or replaces) the label of an address or network; at most `max` labels are kept.
/// The caller applies it to history with `analytics::relabel`.
pub fn add(
    db: &dyn crate::storage::Storage,
    cidr: &str,
    label: &Label,
    note: &str,
    max: u32,
    now_ms: i64,
) -> Result<LabelRecord, LabelsError> {
    let net = parse_cidr(cidr)?;
    if note.chars().count() > MAX_NOTE_LEN {
        return Err(LabelError::NoteTooLong.into());
    }
    let rec =
        LabelRecord { cidr: net.to_string(), label: label.to_string(), note: note.to_string(), created_ms: now_ms };
    if !db.put_label(&rec, max)? {
        return Err(LabelError::Full(max).into());
    }
    Ok(rec)
}

/// Removes the label of an address or network (written as it was added); false if none.
pub fn remove(db: &dyn crate::storage::Storage, cidr: &str) -> Result<bool, LabelsError> {
    Ok(db.remove_label(&parse_cidr(cidr)?.to_string())?)
}

// ---------------------------------------------------------------------------------------------
// The bundled research-scanner list.

/// The file as shipped (see its header for the sources).
pub const RESEARCH_LIST_TOML: &str = include_str!("../data/research-scanners.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResearchFile {
    #[serde(rename = "scanner")]
    scanners: Vec<ResearchScanner>,
}

/// One research scanner: who, where the data came from, its ASNs and ranges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchScanner {
    pub name: String,
    pub url: String,
    pub source: String,
    #[serde(default)]
    pub asns: Vec<u32>,
    #[serde(default)]
    pub ranges: Vec<String>,
    #[serde(default)]
    pub note: String,
}

/// The bundled list, parsed (a bad file is a build defect: a unit test parses it).
pub fn research_scanners() -> &'static [ResearchScanner] {
    static LIST: OnceLock<Vec<ResearchScanner>> = OnceLock::new();
    LIST.get_or_init(|| match toml::from_str::<ResearchFile>(RESEARCH_LIST_TOML) {
        Ok(f) => f.scanners,
        Err(e) => {
            tracing::error!(error = %e, "the bundled research-scanner list does not parse; not used");
            Vec::new()
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Resolving an address to its label.

/// Networks sorted for longest-prefix lookup: a handful of prefix lengths, one sorted vector of
/// (network, value) each, longest first.
#[derive(Debug, Clone)]
struct NetTable<T> {
    by_len: Vec<NetGroup<T>>,
}

/// The networks of one prefix length and family (IPv4 or not), sorted by network address.
type NetGroup<T> = (u8, bool, Vec<(IpNet, T)>);

impl<T> Default for NetTable<T> {
    fn default() -> Self {
        NetTable { by_len: Vec::new() }
    }
}

impl<T: Clone> NetTable<T> {
    fn build(items: Vec<(IpNet, T)>) -> NetTable<T> {
        let mut groups: std::collections::BTreeMap<(u8, bool), Vec<(IpNet, T)>> = Default::default();
        for (net, v) in items {
            groups.entry((net.prefix_len(), net.addr().is_ipv4())).or_default().push((net, v));
        }
        let by_len = groups
            .into_iter()
            .rev()
            .map(|((len, v4), mut nets)| {
                // The first label of a network wins (the caller lists it once anyway).
                nets.sort_by_key(|a| a.0.network());
                nets.dedup_by(|a, b| a.0 == b.0);
                (len, v4, nets)
            })
            .collect();
        NetTable { by_len }
    }

    fn lookup(&self, ip: IpAddr) -> Option<&T> {
        for (len, v4, nets) in &self.by_len {
            if *v4 != ip.is_ipv4() {
                continue;
            }
            let Ok(probe) = IpNet::new(ip, *len) else { continue };
            let key = probe.trunc().network();
            if let Ok(i) = nets.binary_search_by(|(n, _)| n.network().cmp(&key)) {
                return Some(&nets[i].1);
            }
        }
        None
    }
}

/// Resolves addresses to labels: the admin's labels, then the research list's ranges and ASNs.
#[derive(Debug, Clone, Default)]
pub struct Labeler {
    own: NetTable<Label>,
    research_nets: NetTable<()>,
    research_asns: std::collections::HashSet<u32>,
}

impl Labeler {
    /// From the admin's labels (bad rows are skipped) and, if `research_list`, the bundled list.
    pub fn new(own: &[LabelRecord], research_list: bool) -> Labeler {
        let own = own
            .iter()
            .filter_map(|r| Some((parse_cidr(&r.cidr).ok()?, Label::parse(&r.label).ok()?)))
            .collect::<Vec<_>>();
        let mut nets = Vec::new();
        let mut asns = std::collections::HashSet::new();
        if research_list {
            for s in research_scanners() {
                nets.extend(s.ranges.iter().filter_map(|r| parse_cidr(r).ok()).map(|n| (n, ())));
                asns.extend(s.asns.iter().copied());
            }
        }
        Labeler { own: NetTable::build(own), research_nets: NetTable::build(nets), research_asns: asns }
    }

    /// True if no address can have a label.
    pub fn is_empty(&self) -> bool {
        self.own.by_len.is_empty() && self.research_nets.by_len.is_empty() && self.research_asns.is_empty()
    }

    /// The label of `ip`; `asn` is asked only when no range decides.
    pub fn label(&self, ip: IpAddr, asn: impl FnOnce() -> Option<u32>) -> Option<Label> {
        let ip = crate::enrich::canonical(ip);
        if let Some(l) = self.own.lookup(ip) {
            return Some(l.clone());
        }
        if self.research_nets.lookup(ip).is_some() {
            return Some(Label::Research);
        }
        if !self.research_asns.is_empty() {
            if let Some(a) = asn() {
                if self.research_asns.contains(&a) {
                    return Some(Label::Research);
                }
            }
        }
        None
    }

    /// [`Labeler::label`] of an address as stored (text); `None` for an unparsable one.
    pub fn label_str(&self, ip: &str, asn: impl FnOnce() -> Option<u32>) -> Option<Label> {
        self.label(ip.parse().ok()?, asn)
    }
}

/// The labels to take back into the numbers (`--include self,research`, the dashboard switch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Include {
    #[serde(rename = "self")]
    pub self_test: bool,
    pub research: bool,
}

impl Include {
    pub const ALL: Include = Include { self_test: true, research: true };

    /// `self,research`, `self`, `research`, `all`, `none` or "".
    pub fn parse(s: &str) -> Result<Include, LabelError> {
        let mut inc = Include::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "self" => inc.self_test = true,
                "research" => inc.research = true,
                "all" => inc = Include::ALL,
                "none" => inc = Include::default(),
                _ => return Err(LabelError::BadLabel(part.to_string())),
            }
        }
        Ok(inc)
    }

    pub fn includes(&self, c: Class) -> bool {
        match c {
            Class::SelfTest => self.self_test,
            Class::Research => self.research,
        }
    }

    /// The classes taken out of the numbers.
    pub fn excluded(&self) -> impl Iterator<Item = Class> + '_ {
        Class::ALL.into_iter().filter(|c| !self.includes(*c))
    }

    /// As `--include` writes it ("" for none).
    pub fn as_param(&self) -> &'static str {
        match (self.self_test, self.research) {
            (true, true) => "self,research",
            (true, false) => "self",
            (false, true) => "research",
            (false, false) => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cidr: &str, label: &str) -> LabelRecord {
        LabelRecord { cidr: cidr.into(), label: label.into(), note: String::new(), created_ms: 0 }
    }

    #[test]
    fn labels_parse_and_bad_ones_say_what_is_allowed() {
        assert_eq!(Label::parse("self"), Ok(Label::SelfTest));
        assert_eq!(Label::parse("research"), Ok(Label::Research));
        assert_eq!(Label::parse("pentest-2026"), Ok(Label::Custom("pentest-2026".into())));
        for bad in ["", "Self", "a b", "x;drop", &"a".repeat(33)] {
            let e = Label::parse(bad).unwrap_err();
            assert!(e.to_string().contains("use self, research"), "{e}");
        }
        assert_eq!(parse_cidr("203.0.113.7").unwrap().to_string(), "203.0.113.7/32");
        assert_eq!(parse_cidr("203.0.113.77/24").unwrap().to_string(), "203.0.113.0/24");
        assert_eq!(parse_cidr("::ffff:203.0.113.7").unwrap().to_string(), "203.0.113.7/32");
        assert_eq!(parse_cidr("2001:db8::1/32").unwrap().to_string(), "2001:db8::/32");
        assert!(parse_cidr("203.0.113.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn the_longest_prefix_wins_and_own_labels_beat_the_research_list() {
        let l = Labeler::new(
            &[rec("10.0.0.0/8", "lab"), rec("10.1.0.0/16", "self"), rec("10.1.2.3", "pentest"), rec("::1/128", "self")],
            true,
        );
        let at = |s: &str| l.label(s.parse().unwrap(), || None).map(|x| x.to_string());
        assert_eq!(at("10.9.9.9").as_deref(), Some("lab"));
        assert_eq!(at("10.1.9.9").as_deref(), Some("self"));
        assert_eq!(at("10.1.2.3").as_deref(), Some("pentest"));
        assert_eq!(at("::ffff:10.1.9.9").as_deref(), Some("self"));
        assert_eq!(at("::1").as_deref(), Some("self"));
        assert_eq!(at("11.0.0.1"), None);
        // a range of the bundled list (Censys), and an own label over it
        assert_eq!(at("162.142.125.7").as_deref(), Some("research"));
        let own = Labeler::new(&[rec("162.142.125.7", "self")], true);
        assert_eq!(own.label("162.142.125.7".parse().unwrap(), || None), Some(Label::SelfTest));
        // by ASN, when no range decides; the list can be switched off
        let censys_asn = research_scanners().iter().find(|s| s.name == "Censys").unwrap().asns[0];
        assert_eq!(l.label("192.0.2.1".parse().unwrap(), || Some(censys_asn)), Some(Label::Research));
        assert_eq!(Labeler::new(&[], false).label("162.142.125.7".parse().unwrap(), || Some(censys_asn)), None);
    }

    #[test]
    fn the_bundled_list_parses_and_every_entry_cites_its_source() {
        let list = research_scanners();
        assert!(list.len() >= 8, "{}", list.len());
        for s in list {
            assert!(s.source.starts_with("https://"), "{}: {}", s.name, s.source);
            assert!(!s.asns.is_empty() || !s.ranges.is_empty() || !s.note.is_empty(), "{}", s.name);
            for r in &s.ranges {
                assert!(parse_cidr(r).is_ok(), "{}: {r}", s.name);
            }
        }
    }

    #[test]
    fn include_parses_and_class_rows_never_meet_a_sensor() {
        assert_eq!(Include::parse("self,research").unwrap(), Include::ALL);
        assert_eq!(Include::parse("research").unwrap(), Include { self_test: false, research: true });
        assert_eq!(Include::parse("").unwrap(), Include::default());
        assert!(Include::parse("everything").is_err());
        assert_eq!(Include::default().excluded().count(), 2);
        assert_eq!(Include::ALL.excluded().count(), 0);
        let ids: Vec<i64> = [0, 1, 2].iter().flat_map(|s| Class::ALL.map(|c| class_sensor(*s, c))).collect();
        assert!(ids.iter().all(|i| *i < 0));
        let mut d = ids.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), ids.len());
    }
}
