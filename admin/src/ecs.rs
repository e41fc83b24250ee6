//! Events in Elastic Common Schema (ECS 8) field names, for SIEMs: `drosera-admin export
//! --format ecs` writes one document per stored event as a JSON line, and the hpfeeds publisher
//! (`crate::hpfeeds`) sends the same documents.
//!
//! WHY ECS: Elastic, OpenSearch, Wazuh and most SIEM pipelines map these names without a custom
//! parser, so an operator can ship the file (or the feed) with a stock Filebeat/Logstash input.
//! Every ECS field used is a standard one (`source.ip`, `user.name`, `url.full`, ...);
//! what ECS has no field for (the password tried, the session, the detail's raw fields) goes
//! under the custom `drosera.*` namespace, as ECS asks of custom fields.
//!
//! Built from an [`ExportRow`] (the same read as every export), so the stored and the streamed
//! documents are the same shape.

use crate::storage::ExportRow;
use serde_json::{json, Map, Value};

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11.0";

/// ECS `event.category` of a stored kind.
fn category(kind: &str) -> &'static [&'static str] {
    match kind {
        "login" => &["authentication"],
        "exploit" => &["intrusion_detection"],
        "payload" | "sample" | "download_offered" => &["malware"],
        "http_request" => &["web"],
        "health" | "eviction_gap" | "eviction_summary" | "rollup" | "store_recovered" => &["host"],
        _ => &["network"],
    }
}

/// Inserts `value` at a dotted `path` of `m`, creating objects on the way.
fn put(m: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            m.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let child = m.entry(head.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(c) = child {
                put(c, rest, value);
            }
        }
    }
}

/// The ECS document of one stored event (`label`: its source address's label, if any).
pub fn document(r: &ExportRow<'_>, label: Option<&str>) -> Value {
    let fields = r.detail();
    let f = |k: &str| fields.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let internal = r.transport == "internal";
    let mut m = Map::new();
    put(&mut m, "@timestamp", crate::export::rfc3339(r.time_ms).into());
    put(&mut m, "ecs.version", ECS_VERSION.into());
    put(&mut m, "event.kind", if r.kind == "exploit" { "alert" } else { "event" }.into());
    put(&mut m, "event.category", json!(category(r.kind)));
    put(&mut m, "event.action", r.kind.into());
    put(&mut m, "event.dataset", "drosera.events".into());
    put(&mut m, "event.module", "drosera".into());
    put(&mut m, "event.provider", r.protocol.into());
    put(&mut m, "event.sequence", r.seq.into());
    put(&mut m, "event.duration", (r.duration_ms.saturating_mul(1_000_000)).into());
    put(&mut m, "observer.name", r.sensor.into());
    put(&mut m, "observer.type", "honeypot".into());
    put(&mut m, "observer.vendor", "Drosera".into());
    put(&mut m, "observer.product", "drosera-sensor".into());
    if !internal {
        put(&mut m, "source.ip", r.src_ip.into());
        put(&mut m, "source.port", r.src_port.into());
        put(&mut m, "source.bytes", r.bytes_in.into());
        put(&mut m, "destination.port", r.dst_port.into());
        put(&mut m, "destination.bytes", r.bytes_out.into());
        put(&mut m, "network.transport", r.transport.into());
        put(&mut m, "network.protocol", r.protocol.into());
        if !r.country.is_empty() {
            put(&mut m, "source.geo.country_iso_code", r.country.into());
        }
        if let Some(asn) = r.asn {
            put(&mut m, "source.as.number", asn.into());
        }
        if !r.as_org.is_empty() {
            put(&mut m, "source.as.organization.name", r.as_org.into());
        }
    }
    if let Some(u) = r.username {
        put(&mut m, "user.name", u.into());
    }
    if r.kind == "login" {
        put(&mut m, "event.outcome", if f("success") == Some("true") { "success" } else { "failure" }.into());
    }
    if let Some(u) = r.url {
        put(&mut m, "url.full", u.into());
    }
    if let Some(h) = r.payload_sha256 {
        put(&mut m, "file.hash.sha256", h.into());
    }
    if r.kind == "http_request" {
        for (k, ecs) in [
            ("method", "http.request.method"),
            ("path", "url.path"),
            ("query", "url.query"),
            ("host", "url.domain"),
            ("user_agent", "user_agent.original"),
        ] {
            if let Some(v) = f(k) {
                put(&mut m, ecs, v.into());
            }
        }
    }
    if r.kind == "command" {
        if let Some(line) = f("line") {
            put(&mut m, "process.command_line", line.into());
        }
    }
    // What the exploit rules derived: CVEs as `vulnerability.id`, the rest under drosera.
    if let Some(d) = r.derived_object() {
        let cves: Vec<Value> = d
            .get("exploits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("cve").and_then(Value::as_str))
            .flat_map(|c| c.split(',').map(str::trim).filter(|c| !c.is_empty()).map(Value::from).collect::<Vec<_>>())
            .collect();
        if !cves.is_empty() {
            put(&mut m, "vulnerability.id", Value::Array(cves));
            put(&mut m, "event.kind", "alert".into());
        }
        put(&mut m, "drosera.derived", Value::Object(d));
    }
    if r.kind == "exploit" {
        if let Some(c) = f("cve") {
            put(&mut m, "vulnerability.id", json!([c]));
        }
    }
    if let Some(l) = label {
        put(&mut m, "labels.drosera_label", l.into());
    }
    if let Some(p) = r.password {
        put(&mut m, "drosera.password", p.into());
    }
    if let Some(p) = r.recovered {
        put(&mut m, "drosera.recovered_password", p.into());
    }
    put(&mut m, "drosera.kind", r.kind.into());
    put(&mut m, "drosera.session_id", r.session_id.into());
    put(&mut m, "drosera.count", r.count.into());
    put(&mut m, "drosera.fields", Value::Object(fields));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(kind: &'a str, fields: &'a str) -> ExportRow<'a> {
        ExportRow {
            time_ms: 1_700_000_000_123,
            src_ip: "203.0.113.7",
            src_port: 40000,
            dst_port: 3306,
            protocol: "mysql",
            transport: "tcp",
            sensor: "pi-1",
            country: "NL",
            asn: Some(64500),
            as_org: "Example AS",
            kind,
            session_id: 9,
            duration_ms: 12,
            bytes_in: 100,
            bytes_out: 200,
            count: 1,
            username: Some("root"),
            password: Some("00ff"),
            payload_sha256: None,
            url: None,
            fields,
            seq: 42,
            derived: None,
            recovered: Some("letmein"),
        }
    }

    #[test]
    fn a_login_has_ecs_names_and_its_recovered_password() {
        let d = document(&row("login", r#"{"success":"false","hash_format":"mysql-native-hex"}"#), Some("research"));
        assert_eq!(d["@timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(d["event"]["category"], json!(["authentication"]));
        assert_eq!(d["event"]["outcome"], "failure");
        assert_eq!(d["event"]["duration"], 12_000_000);
        assert_eq!(d["source"]["ip"], "203.0.113.7");
        assert_eq!(d["source"]["as"]["number"], 64500);
        assert_eq!(d["source"]["geo"]["country_iso_code"], "NL");
        assert_eq!(d["destination"]["port"], 3306);
        assert_eq!(d["observer"]["name"], "pi-1");
        assert_eq!(d["user"]["name"], "root");
        assert_eq!(d["drosera"]["recovered_password"], "letmein");
        assert_eq!(d["drosera"]["fields"]["hash_format"], "mysql-native-hex");
        assert_eq!(d["labels"]["drosera_label"], "research");
    }

    #[test]
    fn derived_cves_become_vulnerability_ids_and_an_alert() {
        let mut r = row("http_request", r#"{"method":"GET","path":"/shell","user_agent":"x"}"#);
        r.derived = Some(r#"{"exploits":[{"name":"GPON","cve":"CVE-2018-10561, CVE-2018-10562"}],"downloads":[]}"#);
        let d = document(&r, None);
        assert_eq!(d["vulnerability"]["id"], json!(["CVE-2018-10561", "CVE-2018-10562"]));
        assert_eq!(d["event"]["kind"], "alert");
        assert_eq!(d["http"]["request"]["method"], "GET");
        assert_eq!(d["url"]["path"], "/shell");
        assert_eq!(d["user_agent"]["original"], "x");
        assert!(d.get("labels").is_none());
    }
}
