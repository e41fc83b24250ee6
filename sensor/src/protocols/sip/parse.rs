//! SIP requests (RFC 3261) and Digest credentials (RFC 2617): pure functions over bytes,
//! fuzzed (`fuzz/fuzz_targets/sip.rs`). Every field is a slice of the message, whose size the
//! caller capped (a datagram, or a TCP message read under the session's caps).

/// Most header lines read from one message (the rest are ignored).
pub const MAX_HEADERS: usize = 64;
/// Longest message head (request line and headers) parsed.
pub const MAX_HEAD: usize = 16 * 1024;

/// One parsed request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    /// Every header line kept, in order: (name as sent, value).
    pub headers: Vec<(&'a str, &'a str)>,
    /// Bytes of the head, its blank line included (the body, if any, follows).
    pub head_len: usize,
}

/// Why a message is not a SIP request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the head has not ended yet")]
    Incomplete,
    #[error("not a SIP/2.0 request line")]
    RequestLine,
    #[error("not text")]
    NotText,
}

/// A header's long name for its compact form (RFC 3261 7.3.3).
fn long_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "f" => "from",
        "t" => "to",
        "v" => "via",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        _ => name,
    }
}

impl<'a> Request<'a> {
    /// The first header called `name` (long form, any case; compact forms match too).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| long_name(n).eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    /// Every header called `name`, in order.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &'a str> + '_ {
        let name = name.to_string();
        self.headers.iter().filter(move |(n, _)| long_name(n).eq_ignore_ascii_case(&name)).map(|(_, v)| *v)
    }

    /// The body's announced length (0 when absent or unreadable).
    pub fn content_length(&self) -> usize {
        self.header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

/// Parses a request head from the start of `b` (a datagram or what a TCP stream holds so far).
pub fn parse_request(b: &[u8]) -> Result<Request<'_>, ParseError> {
    let window = &b[..b.len().min(MAX_HEAD)];
    let end = find(window, b"\r\n\r\n").map(|p| p + 4).or_else(|| find(window, b"\n\n").map(|p| p + 2));
    let head_len = end.ok_or(ParseError::Incomplete)?;
    let text = std::str::from_utf8(&b[..head_len]).map_err(|_| ParseError::NotText)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (method, uri, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(uri), Some("SIP/2.0")) = (method, uri, version) else {
        return Err(ParseError::RequestLine);
    };
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_alphabetic()) || uri.is_empty() {
        return Err(ParseError::RequestLine);
    }
    let mut headers = Vec::new();
    for line in lines.take(MAX_HEADERS) {
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim(), v.trim()));
        }
    }
    Ok(Request { method, uri, headers, head_len })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `tag` parameter of a From/To value.
pub fn tag(value: &str) -> Option<&str> {
    value.split(';').skip(1).find_map(|p| p.trim().strip_prefix("tag="))
}

/// A Digest `Authorization` header's parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Digest {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: String,
    pub cnonce: String,
    pub nc: String,
    pub qop: String,
}

/// Parses `Digest k="v", k=v, ...`; `None` for other schemes or without a username.
pub fn parse_digest(value: &str) -> Option<Digest> {
    let (scheme, rest) = value.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut d = Digest::default();
    let mut s = rest;
    for _ in 0..32 {
        s = s.trim_start_matches([' ', ',', '\t']);
        let Some((key, after)) = s.split_once('=') else { break };
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(e) => (&q[..e], &q[e + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(e) => (after[..e].trim(), &after[e..]),
                None => (after.trim(), ""),
            }
        };
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "username" => &mut d.username,
            "realm" => &mut d.realm,
            "nonce" => &mut d.nonce,
            "uri" => &mut d.uri,
            "response" => &mut d.response,
            "algorithm" => &mut d.algorithm,
            "cnonce" => &mut d.cnonce,
            "nc" => &mut d.nc,
            "qop" => &mut d.qop,
            _ => {
                s = next;
                continue;
            }
        };
        *slot = val.to_string();
        s = next;
    }
    (!d.username.is_empty()).then_some(d)
}

/// The digest as a hashcat mode 11400 line (`$sip$*server*client*user*realm*method*
/// uri_prefix*uri_resource*uri_suffix*nonce*cnonce*nc*qop*MD5*response`), which hashcat turns
/// back into `MD5(MD5(user:realm:password):nonce[:nc:cnonce:qop]:MD5(method:uri))`. The URI is
/// split as hashcat rebuilds it: `prefix:resource[:suffix]`. `None` when a field would break
/// the format (a `*` in it) or the response is not 32 hex digits.
pub fn hashcat_11400(d: &Digest, method: &str, server: &str, client: &str) -> Option<String> {
    let (prefix, rest) = d.uri.split_once(':')?;
    let (resource, suffix) = match rest.rsplit_once(':') {
        Some((r, s)) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => (r, s),
        _ => (rest, ""),
    };
    let fields = [
        server,
        client,
        &d.username,
        &d.realm,
        method,
        prefix,
        resource,
        suffix,
        &d.nonce,
        &d.cnonce,
        &d.nc,
        &d.qop,
        "MD5",
        &d.response,
    ];
    if fields.iter().any(|f| f.contains('*') || f.contains(['\r', '\n'])) {
        return None;
    }
    if d.response.len() != 32 || !d.response.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("$sip${}", fields.iter().map(|f| format!("*{f}")).collect::<String>()))
}

/// Why a request looks like SIPVicious (`svmap`, `svwar`, `svcrack`), if it does: its
/// User-Agent (`friendly-scanner`, `sipvicious`, ...) or its From tag (SIPVicious builds tags as
/// the hex of `text 0x01 decimal-random`, its `createTag`).
pub fn sipvicious(r: &Request<'_>) -> Option<&'static str> {
    let ua = r.header("user-agent").unwrap_or_default().to_ascii_lowercase();
    if ua.contains("friendly-scanner") || ua.contains("sipvicious") {
        return Some("user-agent");
    }
    let t = r.header("from").and_then(tag)?;
    let raw = hex::decode(t).ok()?;
    let at = raw.iter().rposition(|c| *c == 1)?;
    let (text, digits) = (&raw[..at], &raw[at + 1..]);
    let looks = !text.is_empty()
        && text.iter().all(|c| c.is_ascii_graphic())
        && (1..=10).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit);
    looks.then_some("from-tag")
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.1.1:40000;branch=z9hG4bK.1;rport\r\n\
        f: <sip:alice@127.0.0.1>;tag=abc\r\n\
        To: <sip:alice@127.0.0.1>\r\nCall-ID: 1@h\r\nCSeq: 2 REGISTER\r\n\
        Authorization: Digest username=\"alice\", realm=\"asterisk\", nonce=\"0011\", \
        uri=\"sip:127.0.0.1:5060\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n\
        User-Agent: sipsak 0.9.8\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn a_register_with_its_digest() {
        let r = parse_request(REGISTER).unwrap();
        assert_eq!((r.method, r.uri, r.head_len), ("REGISTER", "sip:127.0.0.1:5060", REGISTER.len()));
        assert_eq!(r.header("From"), Some("<sip:alice@127.0.0.1>;tag=abc"));
        assert_eq!(r.header("from").and_then(tag), Some("abc"));
        let d = parse_digest(r.header("authorization").unwrap()).unwrap();
        assert_eq!((d.username.as_str(), d.realm.as_str(), d.nonce.as_str()), ("alice", "asterisk", "0011"));
        let line = hashcat_11400(&d, "REGISTER", "127.0.0.1", "127.0.1.1").unwrap();
        assert_eq!(
            line,
            "$sip$*127.0.0.1*127.0.1.1*alice*asterisk*REGISTER*sip*127.0.0.1*5060*0011****MD5*0123456789abcdef0123456789abcdef"
        );
        assert_eq!(parse_request(&REGISTER[..40]), Err(ParseError::Incomplete));
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Err(ParseError::RequestLine));
    }

    /// The line cracks: the password's digest, computed as a client does, is the one hashcat
    /// rebuilds from the line's fields.
    #[test]
    fn the_hashcat_line_rebuilds_the_digest() {
        use md5::{Digest as _, Md5};
        let md5 = |s: String| hex::encode(Md5::digest(s.as_bytes()));
        for uri in ["sip:192.0.2.1", "sip:100@192.0.2.1:5060", "sip:example.net;transport=udp"] {
            let ha1 = md5("bob:asterisk:secret".into());
            let ha2 = md5(format!("REGISTER:{uri}"));
            let response = md5(format!("{ha1}:n0nce:{ha2}"));
            let d = Digest {
                username: "bob".into(),
                realm: "asterisk".into(),
                nonce: "n0nce".into(),
                uri: uri.into(),
                response: response.clone(),
                ..Digest::default()
            };
            let line = hashcat_11400(&d, "REGISTER", "s", "c").unwrap();
            let f: Vec<&str> = line.split('*').collect();
            let rebuilt =
                if f[8].is_empty() { format!("{}:{}", f[6], f[7]) } else { format!("{}:{}:{}", f[6], f[7], f[8]) };
            assert_eq!(rebuilt, uri);
            let again = md5(format!(
                "{}:{}:{}",
                md5(format!("{}:{}:secret", f[3], f[4])),
                f[9],
                md5(format!("{}:{rebuilt}", f[5]))
            ));
            assert_eq!(again, f[14]);
        }
    }

    #[test]
    fn sipvicious_is_recognised() {
        let r = parse_request(b"OPTIONS sip:100@1.2.3.4 SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n").unwrap();
        assert_eq!(sipvicious(&r), Some("user-agent"));
        let r =
            parse_request(b"OPTIONS sip:100@1.2.3.4 SIP/2.0\r\nFrom: <sip:100@1.2.3.4>;tag=3132330131393238\r\n\r\n")
                .unwrap();
        assert_eq!(sipvicious(&r), Some("from-tag"));
        let r = parse_request(REGISTER).unwrap();
        assert_eq!(sipvicious(&r), None);
    }

    #[test]
    fn hostile_input_never_panics() {
        use crate::protocols::hostile::{random_inputs, truncations};
        for b in random_inputs(5060, 20_000, 200, true) {
            let mut m = b"INVITE sip:x SIP/2.0\r\nAuthorization: Digest ".to_vec();
            m.extend_from_slice(&b);
            m.extend_from_slice(b"\r\n\r\n");
            for input in [&b[..], &m[..]] {
                if let Ok(r) = parse_request(input) {
                    let _ = sipvicious(&r);
                    if let Some(d) = r.header("authorization").and_then(parse_digest) {
                        let _ = hashcat_11400(&d, r.method, "s", "c");
                    }
                }
            }
        }
        for cut in truncations(REGISTER) {
            let _ = parse_request(cut);
        }
    }
}
