//! Exports: JSON lines readable by pandas (MHN-style analysis), CSV, filters.

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, Query};
use drosera_admin::export::{export, Format, CSV_COLUMNS};

fn exported(c: &dyn drosera_admin::storage::Storage, q: &Query, f: Format) -> (u64, String) {
    let mut out = Vec::new();
    let n = export(c, q, f, &mut out).unwrap();
    (n, String::from_utf8(out).unwrap())
}

#[test]
fn jsonl_has_the_mhn_fields_and_detail_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let (n, text) = exported(&*c, &Query::default(), Format::Jsonl);
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
    assert_eq!(payload["size"], "1234");
    // a detail field named like a common one is prefixed
    let scan_like = rows.iter().find(|r| r["kind"] == "rollup").unwrap();
    assert_eq!(scan_like["connections"], "100");
    assert_eq!(scan_like["count"], 100);

    // filters: sensor and exact time bounds
    let q = Query { sensor: Some("s2".into()), ..Default::default() };
    assert_eq!(exported(&*c, &q, Format::Jsonl).0, 6);
    let q = Query { since_ms: Some(T0 + HOUR + 60_000), until_ms: Some(T0 + HOUR + 61_000), sensor: None };
    assert_eq!(exported(&*c, &q, Format::Jsonl).0, 1, "until is exclusive, exact to the ms");
}

#[test]
fn csv_has_a_header_and_one_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let (n, text) = exported(&*c, &Query::default(), Format::Csv);
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

/// The analysis people ran on MHN's session export, unchanged, on ours.
#[test]
fn pandas_reads_the_jsonl_export() {
    let python = "/usr/bin/python3";
    let has_pandas =
        std::process::Command::new(python).args(["-c", "import pandas"]).status().map(|s| s.success()).unwrap_or(false);
    if !has_pandas {
        if std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("python3-pandas is required (scripts/install-deps.sh installs it)");
        }
        eprintln!("skipping: python3 with pandas not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let path = dir.path().join("events.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    export(&*c, &Query::default(), Format::Jsonl, &mut f).unwrap();
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
