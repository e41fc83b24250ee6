//! memcached's text protocol and its UDP frame header: pure functions over bytes, fuzzed
//! (`fuzz/fuzz_targets/memcached.rs`). A storage command's value length is read as a number
//! and checked against a cap by the caller before anything is read or allocated for it.

/// Most keys recorded from one `get` (the rest are counted, not kept).
pub const MAX_KEYS: usize = 32;
/// Longest key memcached accepts (longer ones are a client error).
pub const MAX_KEY: usize = 250;
/// Bytes of memcached's UDP frame header (request id, sequence, total, reserved).
pub const UDP_HEADER: usize = 8;

/// One command line, split.
#[derive(Debug, PartialEq, Eq)]
pub struct Command<'a> {
    /// Lower-cased command name (`get`, `set`, `stats`, ...).
    pub name: String,
    /// Keys named (at most [`MAX_KEYS`]).
    pub keys: Vec<&'a str>,
    /// Keys past [`MAX_KEYS`], not kept.
    pub more_keys: usize,
    /// For storage commands: the value's length in bytes as the client announced it.
    pub value_len: Option<u64>,
    /// The words after the command name (for `stats ARG`, `verbosity N`).
    pub args: Vec<&'a str>,
    pub noreply: bool,
}

/// Why a line is not a memcached command.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error("a storage command without a valid byte count")]
    BadLength,
    #[error("not text")]
    NotText,
}

/// True for the commands followed by a data block (`set key flags exptime bytes`).
pub fn is_storage(name: &str) -> bool {
    matches!(name, "set" | "add" | "replace" | "append" | "prepend" | "cas")
}

/// Splits one command line (without its CRLF).
pub fn parse_line(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotText)?;
    let mut words = text.split_ascii_whitespace();
    let name = words.next().ok_or(ParseError::Empty)?.to_ascii_lowercase();
    let rest: Vec<&str> = words.take(MAX_KEYS + 8).collect();
    let noreply = rest.last() == Some(&"noreply");
    let mut cmd = Command { name, keys: Vec::new(), more_keys: 0, value_len: None, args: Vec::new(), noreply };
    match cmd.name.as_str() {
        "get" | "gets" | "gat" | "gats" => {
            let skip = usize::from(cmd.name.starts_with("gat"));
            let keys: Vec<&str> = rest.iter().skip(skip).copied().collect();
            cmd.more_keys = keys.len().saturating_sub(MAX_KEYS);
            cmd.keys = keys.into_iter().take(MAX_KEYS).collect();
        }
        n if is_storage(n) => {
            let key = rest.first().ok_or(ParseError::BadLength)?;
            let len = rest.get(3).and_then(|b| b.parse::<u64>().ok()).ok_or(ParseError::BadLength)?;
            cmd.keys.push(key);
            cmd.value_len = Some(len);
        }
        "delete" | "incr" | "decr" | "touch" => cmd.keys.extend(rest.first()),
        _ => cmd.args = rest.into_iter().take(8).collect(),
    }
    Ok(cmd)
}

/// memcached's UDP frame header.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct UdpHeader {
    pub request_id: u16,
    pub sequence: u16,
    pub total: u16,
}

/// Splits a UDP datagram into its frame header and the text after it.
pub fn udp_frame(d: &[u8]) -> Option<(UdpHeader, &[u8])> {
    let h = d.get(..UDP_HEADER)?;
    let header = UdpHeader {
        request_id: u16::from_be_bytes([h[0], h[1]]),
        sequence: u16::from_be_bytes([h[2], h[3]]),
        total: u16::from_be_bytes([h[4], h[5]]),
    };
    Some((header, &d[UDP_HEADER..]))
}

/// The first line of `text` (without CRLF) and what follows it; `None` without a line end.
pub fn split_line(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = text.iter().position(|c| *c == b'\n')?;
    let line = &text[..at];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, &text[at + 1..]))
}

/// A UDP reply to `request_id`: the header (one datagram of one) and as much of `body` as fits
/// in `max` bytes (the request's size: the framework sends nothing larger), cut mid-line if
/// need be, like a datagram cut short on its way.
pub fn udp_reply(request_id: u16, body: &[u8], max: usize) -> Option<Vec<u8>> {
    let room = max.checked_sub(UDP_HEADER)?;
    let cut = body.len().min(room);
    if cut == 0 {
        return None;
    }
    let id = request_id.to_be_bytes();
    let mut out = vec![id[0], id[1], 0, 0, 0, 1, 0, 0];
    out.extend_from_slice(&body[..cut]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_keys_and_lengths() {
        let c = parse_line(b"get a b c").unwrap();
        assert_eq!((c.name.as_str(), c.keys), ("get", vec!["a", "b", "c"]));
        let c = parse_line(b"SET k 0 900 5 noreply").unwrap();
        assert_eq!((c.name.as_str(), c.keys, c.value_len, c.noreply), ("set", vec!["k"], Some(5), true));
        assert_eq!(parse_line(b"set k 0 0"), Err(ParseError::BadLength));
        assert_eq!(parse_line(b"set k 0 0 -1"), Err(ParseError::BadLength));
        assert_eq!(parse_line(b"  "), Err(ParseError::Empty));
        let c = parse_line(b"stats slabs").unwrap();
        assert_eq!(c.args, vec!["slabs"]);
        let many = format!("get {}", (0..100).map(|i| i.to_string()).collect::<Vec<_>>().join(" "));
        let c = parse_line(many.as_bytes()).unwrap();
        assert_eq!(c.keys.len(), MAX_KEYS);
        assert!(c.more_keys > 0);
    }

    #[test]
    fn udp_frames_and_replies_that_fit() {
        let d = b"\x12\x34\x00\x00\x00\x01\x00\x00stats\r\n";
        let (h, text) = udp_frame(d).unwrap();
        assert_eq!((h.request_id, h.total, text), (0x1234, 1, &b"stats\r\n"[..]));
        assert_eq!(udp_frame(b"\x00\x01"), None);
        let r = udp_reply(0x1234, b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n", 26).unwrap();
        assert_eq!(r, b"\x12\x34\x00\x00\x00\x01\x00\x00STAT pid 1\r\nSTAT u");
        assert_eq!(udp_reply(1, b"END\r\n", 8), None);
        assert_eq!(split_line(b"get a\r\nrest"), Some((&b"get a"[..], &b"rest"[..])));
    }

    #[test]
    fn hostile_input_never_panics() {
        use crate::protocols::hostile::random_inputs;
        for b in random_inputs(11211, 20_000, 96, true) {
            let _ = parse_line(&b);
            let _ = udp_frame(&b);
            let _ = split_line(&b);
            let _ = udp_reply(1, &b, b.len());
        }
    }
}
