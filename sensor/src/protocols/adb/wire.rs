//! The ADB transport: 24-byte message headers and the messages a device sends.
//!
//! Every message is `command, arg0, arg1, data_length, data_check, magic` (six little-endian
//! u32, `magic = !command`) followed by `data_length` bytes. [`parse_header`] checks the magic,
//! the command and the length against the cap we advertised before anything is read or
//! allocated. Pure functions: fuzzed (`fuzz/fuzz_targets/adb_message.rs`).

/// `CNXN`: connect, with the system identity string.
pub const A_CNXN: u32 = 0x4e58_4e43;
/// `AUTH`: token / signature / public key.
pub const A_AUTH: u32 = 0x4854_5541;
/// `OPEN`: open a stream to a service (`shell:...`, `sync:`, ...).
pub const A_OPEN: u32 = 0x4e45_504f;
/// `OKAY`: stream ready / data acknowledged.
pub const A_OKAY: u32 = 0x5941_4b4f;
/// `CLSE`: stream closed.
pub const A_CLSE: u32 = 0x4553_4c43;
/// `WRTE`: stream data.
pub const A_WRTE: u32 = 0x4554_5257;
/// `SYNC`: obsolete transport sync.
pub const A_SYNC: u32 = 0x434e_5953;
/// `STLS`: switch to TLS (wireless debugging, Android 11+).
pub const A_STLS: u32 = 0x534c_5453;

/// The protocol version a device of the persona's Android speaks.
pub const A_VERSION: u32 = 0x0100_0001;
/// Below this version the data checksum is required.
pub const A_VERSION_SKIP_CHECKSUM: u32 = 0x0100_0001;
/// Largest message payload we accept (Android 7's `MAX_PAYLOAD`); also what we advertise.
pub const MAX_PAYLOAD: u32 = 256 * 1024;

/// A malformed message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad magic")]
    Magic,
    #[error("unknown command {0:#010x}")]
    Command(u32),
    #[error("payload of {0} bytes is over the limit")]
    TooLong(u32),
}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub command: u32,
    pub arg0: u32,
    pub arg1: u32,
    pub data_length: u32,
}

fn u32_at(b: &[u8; 24], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses and checks a header; `max` is the payload limit in force.
pub fn parse_header(b: &[u8; 24], max: u32) -> Result<Header, WireError> {
    let command = u32_at(b, 0);
    if u32_at(b, 20) != !command {
        return Err(WireError::Magic);
    }
    if ![A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_SYNC, A_STLS].contains(&command) {
        return Err(WireError::Command(command));
    }
    let data_length = u32_at(b, 12);
    if data_length > max {
        return Err(WireError::TooLong(data_length));
    }
    Ok(Header { command, arg0: u32_at(b, 4), arg1: u32_at(b, 8), data_length })
}

/// A whole message; the checksum (sum of the data bytes) is set for protocol versions that
/// still check it, 0 otherwise, as adbd does.
pub fn message(command: u32, arg0: u32, arg1: u32, data: &[u8], version: u32) -> Vec<u8> {
    let check = if version < A_VERSION_SKIP_CHECKSUM {
        data.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)))
    } else {
        0
    };
    let mut v = Vec::with_capacity(24 + data.len());
    for x in [command, arg0, arg1, data.len() as u32, check, !command] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// The printable name of a command (`CNXN`), for records.
pub fn command_name(command: u32) -> String {
    String::from_utf8_lossy(&command.to_le_bytes()).into_owned()
}

/// The service an `OPEN` names (its payload up to the first NUL).
pub fn service_name(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmap_probe_parses_and_our_answer_matches_its_signature() {
        // nmap's adbConnect probe.
        let probe = b"CNXN\0\0\0\x01\0\x10\0\0\x07\0\0\0\x32\x02\0\0\xbc\xb1\xa7\xb1host::\0";
        let h = parse_header(probe[..24].try_into().unwrap(), MAX_PAYLOAD).unwrap();
        assert_eq!((h.command, h.arg0, h.arg1, h.data_length), (A_CNXN, 0x0100_0000, 4096, 7));
        assert_eq!(service_name(&probe[24..]), "host::");
        let m = message(A_CNXN, 0x0100_0000, 4096, b"device::x", 0x0100_0000);
        assert_eq!(&m[..12], b"CNXN\0\0\0\x01\0\x10\0\0");
        assert_eq!(&m[20..24], b"\xbc\xb1\xa7\xb1");
        assert_eq!(
            u32::from_le_bytes(m[16..20].try_into().unwrap()),
            b"device::x".iter().map(|&b| b as u32).sum::<u32>()
        );
        assert_eq!(u32::from_le_bytes(message(A_OKAY, 1, 2, b"ab", A_VERSION)[16..20].try_into().unwrap()), 0);
        assert_eq!(command_name(A_WRTE), "WRTE");
    }

    #[test]
    fn bad_headers_are_refused_before_reading_data() {
        let mut h = message(A_WRTE, 1, 2, &[], A_VERSION);
        h[12..16].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert_eq!(parse_header(h[..24].try_into().unwrap(), MAX_PAYLOAD), Err(WireError::TooLong(MAX_PAYLOAD + 1)));
        h[20] ^= 1;
        assert_eq!(parse_header(h[..24].try_into().unwrap(), MAX_PAYLOAD), Err(WireError::Magic));
        let junk = message(0x2054_4547, 0, 0, &[], A_VERSION); // "GET "
        assert!(matches!(parse_header(junk[..24].try_into().unwrap(), MAX_PAYLOAD), Err(WireError::Command(_))));
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0xadb0_5555_0000_0001, 20_000, 64, false) {
            let mut h = [0u8; 24];
            let n = b.len().min(24);
            h[..n].copy_from_slice(&b[..n]);
            if let Ok(hdr) = parse_header(&h, MAX_PAYLOAD) {
                assert!(hdr.data_length <= MAX_PAYLOAD);
            }
            let _ = service_name(&b);
        }
    }
}
