//! UPnP (SSDP on 1900/udp, description and control over HTTP on `description_port`/tcp): a
//! home router's miniupnpd, whose port mappings attackers abuse to reach inside a network or to
//! turn the router into a proxy.
//!
//! SSDP `M-SEARCH` is recorded (`Command`: the search target) and answered with the shortest
//! believable reply that fits the request (status, `LOCATION`, `ST`, then `USN`, `EXT` and
//! `SERVER` while they fit; the UDP framework sends nothing larger): SSDP is one of the largest
//! reflection vectors there is. `LOCATION` points at the description port, where this module
//! serves the device description (`/rootDesc.xml`), the service description and SOAP control:
//! `AddPortMapping` and `DeletePortMapping` are recorded as `Exploit`s
//! (`upnp-addportmapping`, `upnp-deleteportmapping`, every argument in `extra`) and answered
//! with success; nothing is ever mapped or forwarded. Every HTTP request is an `HttpRequest`.
//!
//! Bounded by the `[upnp]` config section ([`UpnpSection`]): `max_requests` per connection,
//! SOAP bodies of at most `max_body_bytes`; request lines and headers by the session's caps.

pub mod parse;

use crate::config::{ServiceSection, UpnpSection};
use crate::protocols::http;
use crate::session::{Session, SessionResult};
use crate::udp::Exchange;
use drosera_uplink::event::{CloseReason, Detail};
use std::net::{IpAddr, SocketAddr};

/// Headers read per request.
const MAX_HEADERS: usize = 64;
/// What miniupnpd on a small Linux router says it is.
pub const SERVER: &str = "Linux/4.14 UPnP/1.1 MiniUPnPd/2.1";
/// The device's UUID (fixed, like a real device's).
const UUID: &str = "c3b2a1d0-7e5f-4a6b-9c8d-1e2f3a4b5c6d";
/// Where the device description lives.
pub const DESCRIPTION_PATH: &str = "/rootDesc.xml";
const CONTROL_PATH: &str = "/ctl/IPConn";
const WANIP: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";

/// The SSDP reply to a search for `target`, pointing at `location`: the fields in order of
/// need, as many as fit in `max` bytes (`None` when not even the first three fit).
pub fn ssdp_reply(target: &str, location: &str, max: usize) -> Option<Vec<u8>> {
    let st = if target.is_empty() || target == "ssdp:all" { "upnp:rootdevice" } else { target };
    let mut out = format!("HTTP/1.1 200 OK\r\nLOCATION: {location}\r\nST: {st}\r\n");
    if out.len() + 2 > max {
        return None;
    }
    for optional in [
        format!("USN: uuid:{UUID}::{st}\r\n"),
        "EXT:\r\n".into(),
        format!("SERVER: {SERVER}\r\n"),
        "CACHE-CONTROL: max-age=120\r\n".into(),
    ] {
        if out.len() + optional.len() + 2 <= max {
            out.push_str(&optional);
        }
    }
    out.push_str("\r\n");
    Some(out.into_bytes())
}

/// The address a peer reaches us at on `port`: the bound address, or for a socket bound to
/// every address the one the kernel routes to the peer from (a connected UDP socket sends
/// nothing; it only asks the routing table).
fn reachable_at(bind: IpAddr, peer: SocketAddr, port: u16) -> SocketAddr {
    if !bind.is_unspecified() {
        return SocketAddr::new(bind, port);
    }
    let any: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.unwrap_or(peer);
    let ip = std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(peer).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(bind);
    SocketAddr::new(ip, port)
}

/// One SSDP datagram.
pub(crate) fn datagram(x: &mut Exchange, svc: &ServiceSection, data: &[u8]) -> Option<Vec<u8>> {
    let s = parse::parse_ssdp(data)?;
    x.emit(Detail::Command { line: format!("{} {}", s.method, s.target) });
    if !s.user_agent.is_empty() {
        x.emit(Detail::Fingerprint {
            kind: "ssdp-client".into(),
            value: s.user_agent.to_string(),
            extra: vec![("man".into(), s.man.to_string())],
        });
    }
    if s.method != "M-SEARCH" {
        return None;
    }
    let port = svc.upnp_description_port()?;
    let location = format!("http://{}{DESCRIPTION_PATH}", reachable_at(svc.bind, x.peer, port));
    ssdp_reply(s.target, &location, data.len())
}

/// The device description: an Internet gateway with one WAN IP connection service.
fn description(base: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\"><specVersion><major>1</major><minor>1</minor></specVersion>\
<URLBase>{base}</URLBase><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>\
<friendlyName>Wireless Router</friendlyName><manufacturer>TP-LINK</manufacturer><manufacturerURL>http://www.tp-link.com</manufacturerURL>\
<modelDescription>Wireless N Router</modelDescription><modelName>TL-WR841N</modelName><modelNumber>14.0</modelNumber>\
<serialNumber>00000000</serialNumber><UDN>uuid:{UUID}</UDN><serviceList><service>\
<serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId>\
<SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL></service></serviceList>\
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><friendlyName>WANDevice</friendlyName>\
<manufacturer>MiniUPnP</manufacturer><modelName>WAN Device</modelName><UDN>uuid:{UUID}-1</UDN><serviceList><service>\
<serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId>\
<SCPDURL>/WANCfg.xml</SCPDURL><controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL></service></serviceList>\
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><friendlyName>WANConnectionDevice</friendlyName>\
<manufacturer>MiniUPnP</manufacturer><modelName>WAN Connection Device</modelName><UDN>uuid:{UUID}-2</UDN><serviceList><service>\
<serviceType>{WANIP}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><SCPDURL>/WANIPCn.xml</SCPDURL>\
<controlURL>{CONTROL_PATH}</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service></serviceList></device></deviceList>\
</device></deviceList><presentationURL>http://192.168.0.1/</presentationURL></device></root>"
    )
}

/// The SCPD of any service: an empty action list is enough for clients (they call actions by name).
const SCPD: &str = "<?xml version=\"1.0\"?>\r\n<scpd xmlns=\"urn:schemas-upnp-org:service-1-0\"><specVersion><major>1</major><minor>0</minor></specVersion><actionList></actionList><serviceStateTable></serviceStateTable></scpd>";

fn soap_ok(action: &str, service: &str, args: &[(&str, &str)]) -> String {
    let inner: String = args.iter().map(|(k, v)| format!("<{k}>{v}</{k}>")).collect();
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action}Response xmlns:u=\"{service}\">{inner}</u:{action}Response></s:Body></s:Envelope>\r\n"
    )
}

fn soap_fault(code: u16, text: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode><errorDescription>{text}</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n"
    )
}

/// The answer to a SOAP action (status, body) and, for the abused ones, the exploit it records.
pub fn control(action: &str, service: &str, args: &[(String, String)]) -> (&'static str, String, Option<Detail>) {
    let exploit = |name: &str| Some(Detail::Exploit { name: name.into(), cve: String::new(), extra: args.to_vec() });
    match action {
        "AddPortMapping" => ("200 OK", soap_ok(action, service, &[]), exploit("upnp-addportmapping")),
        "AddAnyPortMapping" => {
            let port = args.iter().find(|(k, _)| k == "NewExternalPort").map_or("0", |(_, v)| v.as_str());
            ("200 OK", soap_ok(action, service, &[("NewReservedPort", port)]), exploit("upnp-addportmapping"))
        }
        "DeletePortMapping" => ("200 OK", soap_ok(action, service, &[]), exploit("upnp-deleteportmapping")),
        "GetExternalIPAddress" => {
            ("200 OK", soap_ok(action, service, &[("NewExternalIPAddress", "100.64.12.7")]), None)
        }
        "GetStatusInfo" => (
            "200 OK",
            soap_ok(
                action,
                service,
                &[
                    ("NewConnectionStatus", "Connected"),
                    ("NewLastConnectionError", "ERROR_NONE"),
                    ("NewUptime", "1864211"),
                ],
            ),
            None,
        ),
        "GetConnectionTypeInfo" => (
            "200 OK",
            soap_ok(
                action,
                service,
                &[("NewConnectionType", "IP_Routed"), ("NewPossibleConnectionTypes", "IP_Routed")],
            ),
            None,
        ),
        "GetCommonLinkProperties" => (
            "200 OK",
            soap_ok(
                action,
                service,
                &[
                    ("NewWANAccessType", "Cable"),
                    ("NewLayer1UpstreamMaxBitRate", "100000000"),
                    ("NewLayer1DownstreamMaxBitRate", "100000000"),
                    ("NewPhysicalLinkStatus", "Up"),
                ],
            ),
            None,
        ),
        "GetTotalBytesSent" | "GetTotalBytesReceived" | "GetTotalPacketsSent" | "GetTotalPacketsReceived" => {
            let name = format!("New{}", action.trim_start_matches("Get"));
            ("200 OK", soap_ok(action, service, &[(&name, "1048576")]), None)
        }
        "GetGenericPortMappingEntry" => {
            ("500 Internal Server Error", soap_fault(713, "SpecifiedArrayIndexInvalid"), None)
        }
        "GetSpecificPortMappingEntry" => ("500 Internal Server Error", soap_fault(714, "NoSuchEntryInArray"), None),
        _ => ("500 Internal Server Error", soap_fault(401, "Invalid Action"), None),
    }
}

fn http_response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\nContent-Length: {}\r\nServer: {SERVER}\r\nExt:\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One TCP connection to the description port: HTTP requests one after the other.
pub(crate) async fn handle(session: &mut Session, _svc: &ServiceSection) -> SessionResult<()> {
    let caps: UpnpSection = session.services().upnp;
    let base = format!("http://{}/", session.local);
    for _ in 0..caps.max_requests {
        let line = session.read_line().await?;
        if line.is_empty() {
            continue;
        }
        let Ok(mut req) = http::parse_request_line(&line) else {
            session.emit(Detail::Command { line: String::from_utf8_lossy(&line).into_owned() });
            session.write_all(&http_response("400 Bad Request", "text/html", "")).await?;
            return Ok(());
        };
        for _ in 0..MAX_HEADERS {
            let h = session.read_line().await?;
            if h.is_empty() {
                break;
            }
            if let Ok(kv) = http::parse_header_line(&h) {
                req.headers.push(kv);
            }
        }
        let len: usize = req.header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        if len > caps.max_body_bytes {
            return Err(CloseReason::ProtocolError);
        }
        let mut body = vec![0u8; len];
        session.read_exact(&mut body).await?;
        session.emit(Detail::HttpRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            host: req.header("host").unwrap_or_default().to_string(),
            user_agent: req.header("user-agent").unwrap_or_default().to_string(),
            body_sha256: None,
            body_len: len as u64,
            extra: req
                .header("soapaction")
                .map(|a| vec![("soapaction".to_string(), a.to_string())])
                .unwrap_or_default(),
        });
        let reply = match (req.method.as_str(), req.path.as_str()) {
            ("GET", DESCRIPTION_PATH) => http_response("200 OK", "text/xml; charset=\"utf-8\"", &description(&base)),
            ("GET", "/WANIPCn.xml" | "/WANCfg.xml" | "/L3F.xml") => {
                http_response("200 OK", "text/xml; charset=\"utf-8\"", SCPD)
            }
            ("POST", p) if p.starts_with("/ctl/") => {
                let action = req.header("soapaction").and_then(parse::soap_action);
                let (service, name) = action.unwrap_or((WANIP, ""));
                let args = parse::soap_args(&body);
                let (status, text, exploit) = control(name, service, &args);
                if let Some(e) = exploit {
                    session.emit(e);
                }
                http_response(status, "text/xml; charset=\"utf-8\"", &text)
            }
            _ => http_response("404 Not Found", "text/html", "<HTML><HEAD><TITLE>404 Not Found</TITLE></HEAD><BODY><H1>Not Found</H1>The requested URL was not found on this server.</BODY></HTML>\r\n"),
        };
        session.write_all(&reply).await?;
        // miniupnpd closes after each response.
        return Ok(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssdp_replies_fit_and_keep_the_location() {
        let loc = "http://192.0.2.1:49152/rootDesc.xml";
        let big = String::from_utf8(ssdp_reply("ssdp:all", loc, 1000).unwrap()).unwrap();
        assert!(big.contains("SERVER: ") && big.contains(&format!("LOCATION: {loc}\r\n")), "{big}");
        for max in [60, 80, 100, 130, 200] {
            if let Some(r) = ssdp_reply("ssdp:all", loc, max) {
                assert!(r.len() <= max, "{max}");
                assert!(String::from_utf8_lossy(&r).contains(loc));
            }
        }
        assert!(ssdp_reply("ssdp:all", loc, 40).is_none());
    }

    #[test]
    fn add_port_mapping_is_an_exploit_with_its_arguments() {
        let args = vec![("NewExternalPort".to_string(), "2222".to_string())];
        let (status, body, exploit) = control("AddPortMapping", WANIP, &args);
        assert_eq!(status, "200 OK");
        assert!(body.contains("AddPortMappingResponse"));
        assert!(
            matches!(exploit, Some(Detail::Exploit { ref name, ref extra, .. }) if name == "upnp-addportmapping" && extra == &args)
        );
        assert!(control("GetExternalIPAddress", WANIP, &[]).2.is_none());
    }
}
