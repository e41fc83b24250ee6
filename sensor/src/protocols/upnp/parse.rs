//! SSDP (UPnP discovery over UDP) and the SOAP bodies of UPnP control requests: pure functions
//! over bytes, fuzzed (`fuzz/fuzz_targets/upnp.rs`). Bounded by the caller's datagram or body
//! cap; nothing here allocates from a length the peer gives.

/// Most arguments read from one SOAP action.
pub const MAX_ARGS: usize = 16;
/// Longest argument value kept.
pub const MAX_VALUE: usize = 256;

/// An SSDP request (`M-SEARCH * HTTP/1.1`, `NOTIFY * HTTP/1.1`).
#[derive(Debug, PartialEq, Eq)]
pub struct Ssdp<'a> {
    pub method: &'a str,
    /// The search target (`ST`), or the notification type (`NT`).
    pub target: &'a str,
    pub man: &'a str,
    pub user_agent: &'a str,
}

/// Parses an SSDP datagram; `None` when it is not one.
pub fn parse_ssdp(d: &[u8]) -> Option<Ssdp<'_>> {
    let text = std::str::from_utf8(d).ok()?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next()?;
    let method = first.strip_suffix(" * HTTP/1.1")?;
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_uppercase() || c == b'-') {
        return None;
    }
    let mut s = Ssdp { method, target: "", man: "", user_agent: "" };
    for line in lines.take(32) {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "st" | "nt" => s.target = v,
            "man" => s.man = v,
            "user-agent" => s.user_agent = v,
            _ => {}
        }
    }
    Some(s)
}

/// The action a `SOAPAction` header names (`"urn:...:WANIPConnection:1#AddPortMapping"`):
/// `(service type, action)`.
pub fn soap_action(header: &str) -> Option<(&str, &str)> {
    let h = header.trim().trim_matches('"');
    let (service, action) = h.split_once('#')?;
    (!action.is_empty()).then_some((service, action))
}

/// The `<NewX>value</NewX>`-style arguments of a SOAP action body, in order, at most
/// [`MAX_ARGS`], values cut to [`MAX_VALUE`] bytes (XML entities of the five kinds decoded).
pub fn soap_args(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    // The action element is the first child of Body; its children are the arguments.
    let Some(start) = find_ci(&text, "body>") else { return out };
    let rest = &text[start + 5..];
    let Some(open) = rest.find('<') else { return out };
    let Some(close) = rest[open..].find('>') else { return out };
    let mut s = &rest[open + close + 1..];
    while out.len() < MAX_ARGS {
        let Some(lt) = s.find('<') else { break };
        s = &s[lt + 1..];
        if s.starts_with('/') {
            break; // the action element ends
        }
        let Some(gt) = s.find('>') else { break };
        let tag = &s[..gt];
        let name = tag.split_whitespace().next().unwrap_or_default();
        s = &s[gt + 1..];
        if tag.ends_with('/') {
            out.push((strip_prefix(name.trim_end_matches('/')).to_string(), String::new()));
            continue;
        }
        let end_tag = format!("</{name}>");
        let Some(end) = s.find(&end_tag) else { break };
        let mut value = unescape(&s[..end]);
        if value.len() > MAX_VALUE {
            let mut cut = MAX_VALUE;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
        }
        out.push((strip_prefix(name).to_string(), value));
        s = &s[end + end_tag.len()..];
    }
    out
}

fn strip_prefix(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_lowercase().find(needle)
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m_search_is_read() {
        let d = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\r\n";
        let s = parse_ssdp(d).unwrap();
        assert_eq!(
            (s.method, s.target, s.man),
            ("M-SEARCH", "urn:schemas-upnp-org:device:InternetGatewayDevice:1", "\"ssdp:discover\"")
        );
        assert_eq!(parse_ssdp(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn soap_actions_and_arguments() {
        assert_eq!(
            soap_action("\"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\""),
            Some(("urn:schemas-upnp-org:service:WANIPConnection:1", "AddPortMapping"))
        );
        let body = b"<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
            <u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\"><NewRemoteHost></NewRemoteHost>\
            <NewExternalPort>2222</NewExternalPort><NewProtocol>TCP</NewProtocol><NewInternalPort>22</NewInternalPort>\
            <NewInternalClient>10.0.0.5</NewInternalClient><NewEnabled>1</NewEnabled>\
            <NewPortMappingDescription>a&amp;b</NewPortMappingDescription><NewLeaseDuration>0</NewLeaseDuration>\
            </u:AddPortMapping></s:Body></s:Envelope>";
        let args = soap_args(body);
        assert_eq!(args.len(), 8);
        assert_eq!(args[1], ("NewExternalPort".to_string(), "2222".to_string()));
        assert_eq!(args[6], ("NewPortMappingDescription".to_string(), "a&b".to_string()));
        assert!(soap_args(b"<s:Body><u:GetExternalIPAddress/></s:Body>").is_empty());
    }

    #[test]
    fn hostile_input_never_panics() {
        use crate::protocols::hostile::random_inputs;
        for b in random_inputs(1900, 20_000, 160, true) {
            let _ = parse_ssdp(&b);
            let mut body = b"<s:Body><u:X>".to_vec();
            body.extend_from_slice(&b);
            let _ = soap_args(&body);
            let _ = soap_args(&b);
            let _ = soap_action(&String::from_utf8_lossy(&b));
        }
    }
}
