//! TFTP packets (RFC 1350, option names of RFC 2347): pure functions over bytes, fuzzed
//! (`fuzz/fuzz_targets/tftp.rs`). Nothing here allocates from a length the peer gives: every
//! field is a slice of the datagram, which the UDP framework already capped.

/// Most RFC 2347 options read from one request; the rest are ignored.
pub const MAX_OPTIONS: usize = 8;
/// Data bytes of a full block (no `blksize` option is ever acknowledged).
pub const BLOCK: usize = 512;

/// TFTP error codes we send.
pub const ERR_NOT_FOUND: u16 = 1;
pub const ERR_DISK_FULL: u16 = 3;
pub const ERR_ILLEGAL: u16 = 4;
pub const ERR_UNKNOWN_TID: u16 = 5;

/// A read or write request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub file: &'a [u8],
    pub mode: &'a [u8],
    /// RFC 2347 options (`blksize`, `tsize`, ...), at most [`MAX_OPTIONS`].
    pub options: Vec<(&'a [u8], &'a [u8])>,
}

/// One TFTP packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: &'a [u8],
    },
    /// Option acknowledgement (servers send it; a client sending it is odd but parsed).
    Oack,
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than an opcode")]
    Short,
    #[error("unknown opcode {0}")]
    Opcode(u16),
    #[error("a request without its NUL-terminated file name and mode")]
    BadRequest,
}

/// Parses one datagram.
pub fn parse(b: &[u8]) -> Result<Packet<'_>, ParseError> {
    let (op, rest) = match b {
        [h, l, rest @ ..] => (u16::from_be_bytes([*h, *l]), rest),
        _ => return Err(ParseError::Short),
    };
    match op {
        1 => request(rest).map(Packet::Rrq),
        2 => request(rest).map(Packet::Wrq),
        3 => match rest {
            [h, l, data @ ..] => Ok(Packet::Data { block: u16::from_be_bytes([*h, *l]), data }),
            _ => Err(ParseError::Short),
        },
        4 => match rest {
            [h, l, ..] => Ok(Packet::Ack { block: u16::from_be_bytes([*h, *l]) }),
            _ => Err(ParseError::Short),
        },
        5 => match rest {
            [h, l, msg @ ..] => {
                let end = msg.iter().position(|c| *c == 0).unwrap_or(msg.len());
                Ok(Packet::Error { code: u16::from_be_bytes([*h, *l]), message: &msg[..end] })
            }
            _ => Err(ParseError::Short),
        },
        6 => Ok(Packet::Oack),
        other => Err(ParseError::Opcode(other)),
    }
}

fn request(b: &[u8]) -> Result<Request<'_>, ParseError> {
    let mut fields = b.split(|c| *c == 0);
    let file = fields.next().filter(|f| !f.is_empty()).ok_or(ParseError::BadRequest)?;
    let mode = fields.next().filter(|m| !m.is_empty()).ok_or(ParseError::BadRequest)?;
    // A request must end with the mode's NUL: `split` yields a last (maybe empty) piece after it.
    if !b.contains(&0) || b.iter().filter(|c| **c == 0).count() < 2 {
        return Err(ParseError::BadRequest);
    }
    let mut options = Vec::new();
    while options.len() < MAX_OPTIONS {
        match (fields.next(), fields.next()) {
            (Some(k), Some(v)) if !k.is_empty() => options.push((k, v)),
            _ => break,
        }
    }
    Ok(Request { file, mode, options })
}

/// An ACK of `block`.
pub fn ack(block: u16) -> Vec<u8> {
    let b = block.to_be_bytes();
    vec![0, 4, b[0], b[1]]
}

/// An ERROR packet with `code` and as much of `message` as fits in `max` bytes (the request's
/// size: the UDP framework sends nothing larger), or `None` when not even an empty message fits.
pub fn error(code: u16, message: &str, max: usize) -> Option<Vec<u8>> {
    let room = max.checked_sub(5)?;
    let c = code.to_be_bytes();
    let mut p = vec![0, 5, c[0], c[1]];
    p.extend_from_slice(&message.as_bytes()[..message.len().min(room)]);
    p.push(0);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_mode_and_options() {
        let p = parse(b"\0\x01boot.bin\0octet\0blksize\x001428\x00tsize\x000\x00").unwrap();
        let Packet::Rrq(r) = p else { panic!("{p:?}") };
        assert_eq!((r.file, r.mode), (&b"boot.bin"[..], &b"octet"[..]));
        assert_eq!(r.options, vec![(&b"blksize"[..], &b"1428"[..]), (&b"tsize"[..], &b"0"[..])]);
        assert!(matches!(parse(b"\0\x02x.sh\0netascii\0"), Ok(Packet::Wrq(_))));
        assert_eq!(parse(b"\0\x02x.sh\0netascii"), Err(ParseError::BadRequest));
        assert_eq!(parse(b"\0\x01\0octet\0"), Err(ParseError::BadRequest));
        assert_eq!(parse(b"\0"), Err(ParseError::Short));
        assert_eq!(parse(b"\0\x09"), Err(ParseError::Opcode(9)));
    }

    #[test]
    fn data_ack_error() {
        assert_eq!(parse(b"\0\x03\0\x01abc").unwrap(), Packet::Data { block: 1, data: b"abc" });
        assert_eq!(parse(b"\0\x04\x01\x00").unwrap(), Packet::Ack { block: 256 });
        assert_eq!(parse(b"\0\x05\0\x01nope\0").unwrap(), Packet::Error { code: 1, message: b"nope" });
        assert_eq!(parse(b"\0\x03\0"), Err(ParseError::Short));
    }

    #[test]
    fn errors_fit_the_room_they_are_given() {
        assert_eq!(error(1, "File not found", 100).unwrap(), b"\0\x05\0\x01File not found\0");
        assert_eq!(error(1, "File not found", 9).unwrap(), b"\0\x05\0\x01File\0");
        assert_eq!(error(1, "File not found", 5).unwrap(), b"\0\x05\0\x01\0");
        assert_eq!(error(1, "File not found", 4), None);
        assert_eq!(ack(513), b"\0\x04\x02\x01");
    }

    #[test]
    fn hostile_input_never_panics() {
        use crate::protocols::hostile::{random_inputs, truncations};
        for b in random_inputs(69, 20_000, 64, false) {
            let mut d = b.clone();
            if let Some(op) = d.get_mut(1) {
                *op %= 8;
            }
            let _ = parse(&b);
            let _ = parse(&d);
        }
        for cut in truncations(b"\0\x02a.sh\0octet\0blksize\x00512\x00") {
            let _ = parse(cut);
        }
    }
}
