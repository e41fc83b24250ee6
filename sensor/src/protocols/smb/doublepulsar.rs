//! DoublePulsar, the SMB implant EternalBlue installs: its wire format, decoded.
//!
//! WHY: after EternalBlue, worms (WannaCry and its descendants) talk to the implant over the
//! same SMB connection: a ping to learn whether it is there and which XOR key it uses, then an
//! "exec" upload of the payload (a DLL or shellcode) in chunks. A host that answers like an
//! implanted one receives that payload, which is the sample this module recovers.
//!
//! The format, as the public analyses describe it (zerosum0x0's, Countercept's detection and
//! C2-decryption scripts, Metasploit's `doublepulsar_rce`):
//! * Every command is a TRANS2 request with subcommand SESSION_SETUP (0x000e). The command is
//!   hidden in its `Timeout` field: the sum of its four bytes, mod 256 — 0x23 ping, 0xc8 exec,
//!   0x77 kill.
//! * The implant answers with the multiplex id of the request plus a status (0x10 success,
//!   0x20 invalid parameters, 0x30 allocation failure; unchanged means "no implant"). Its
//!   answer to a ping carries a 32-bit value in the first half of the SMB signature field, from
//!   which the XOR key is derived ([`xor_key`]), and the architecture in the second half (0 for
//!   x86, anything else x64).
//! * An exec carries 12 parameter bytes — total size, chunk size and chunk offset (u32 LE
//!   each), XORed with the key — and the chunk, XORed with the key repeated from its start.
//!
//! Everything here is pure; the handler in `smb1` keeps the state and streams the decrypted
//! chunks into the sample area. Chunks must arrive in order (each at the offset where the last
//! ended), as every known client sends them; anything else is answered "invalid parameters".

use super::SmbError;

/// Opcodes (the byte sum of `Timeout`).
pub const PING: u8 = 0x23;
pub const EXEC: u8 = 0xc8;
pub const KILL: u8 = 0x77;

/// Status values added to the multiplex id of the request.
pub const STATUS_SUCCESS: u16 = 0x10;
pub const STATUS_INVALID_PARAMS: u16 = 0x20;

/// Trans2 subcommand the implant hooks.
pub const TRANS2_SESSION_SETUP: u16 = 0x000e;

/// The command hidden in a TRANS2 `Timeout`.
pub fn opcode(timeout: u32) -> u8 {
    timeout.to_le_bytes().iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// The XOR key an implant uses, from the 32-bit value its ping answer carries.
pub fn xor_key(s: u32) -> u32 {
    let high = ((s & 0xff00) | (s << 16)) << 8;
    let low = ((s >> 16) | (s & 0x00ff_0000)) >> 8;
    s.wrapping_mul(2) ^ (high | low)
}

/// XORs `data` with `key` (little-endian bytes, repeated from the start of `data`).
pub fn xor(data: &mut [u8], key: u32) {
    let k = key.to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// The decrypted parameters of one exec chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecChunk {
    pub total: u32,
    pub chunk: u32,
    pub offset: u32,
}

/// Decrypts the 12 parameter bytes of an exec.
pub fn parse_exec(params: &[u8], key: u32) -> Result<ExecChunk, SmbError> {
    let p = params.get(..12).ok_or(SmbError::Truncated)?;
    let mut p: [u8; 12] = p.try_into().map_err(|_| SmbError::Truncated)?;
    xor(&mut p, key);
    let word = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    Ok(ExecChunk { total: word(0), chunk: word(4), offset: word(8) })
}

/// Where an upload stands: how much of its `total` bytes arrived, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reassembly {
    pub total: u32,
    pub next: u32,
}

/// What one exec chunk does to an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep the chunk; more are expected.
    More(Reassembly),
    /// Keep the chunk; the upload is complete.
    Complete,
    /// Not the next chunk of this upload (or inconsistent): answer "invalid parameters".
    Invalid,
}

/// Places the chunk `c` (with `data_len` bytes of data) after `current`, the upload so far
/// (None: no upload in progress). A chunk at offset 0 starts a new upload.
pub fn step(current: Option<Reassembly>, c: &ExecChunk, data_len: usize) -> Step {
    if c.chunk as usize != data_len || c.chunk == 0 {
        return Step::Invalid;
    }
    let base = match current {
        _ if c.offset == 0 => Reassembly { total: c.total, next: 0 },
        Some(r) if r.total == c.total && r.next == c.offset => r,
        _ => return Step::Invalid,
    };
    let Some(end) = c.offset.checked_add(c.chunk) else { return Step::Invalid };
    if end > base.total {
        return Step::Invalid;
    }
    if end == base.total {
        Step::Complete
    } else {
        Step::More(Reassembly { total: base.total, next: end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_and_key_match_the_public_tools() {
        // nmap's smb-double-pulsar-backdoor and Countercept's ping use Timeout 0x00a4d9a6.
        assert_eq!(opcode(0x00a4_d9a6), PING);
        // Metasploit's generator: low byte = op - byte1 - byte2, bytes 1 and 2 random.
        let k: u32 = 0x0037_c100;
        let t = (EXEC.wrapping_sub(0x37).wrapping_sub(0xc1) as u32) | k;
        assert_eq!(opcode(t), EXEC);
        // Values of Metasploit's calculate_doublepulsar_xor_key.
        assert_eq!(xor_key(0x90df_e779), 0x5858_1162);
        assert_eq!(xor_key(0x1234_5678), 0x5c3e_98e2);
        assert_eq!(xor_key(0xffff_ffff), 1);
    }

    #[test]
    fn exec_parameters_and_data_decrypt() {
        let key = xor_key(0x1234_5678);
        let mut params = [5000u32, 4096, 0].iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
        xor(&mut params, key);
        assert_eq!(parse_exec(&params, key).unwrap(), ExecChunk { total: 5000, chunk: 4096, offset: 0 });
        assert_eq!(parse_exec(&params[..11], key), Err(SmbError::Truncated));
        let mut data = b"MZ\x90\x00payload".to_vec();
        xor(&mut data, key);
        assert_ne!(&data[..2], b"MZ");
        xor(&mut data, key);
        assert_eq!(&data[..], b"MZ\x90\x00payload");
    }

    #[test]
    fn chunks_reassemble_in_order_only() {
        let c = |total, chunk, offset| ExecChunk { total, chunk, offset };
        let Step::More(r) = step(None, &c(10, 4, 0), 4) else { panic!() };
        assert_eq!(r, Reassembly { total: 10, next: 4 });
        assert_eq!(step(Some(r), &c(10, 4, 0), 4), Step::More(Reassembly { total: 10, next: 4 }), "restart");
        assert_eq!(step(Some(r), &c(10, 4, 8), 4), Step::Invalid, "gap");
        assert_eq!(step(Some(r), &c(11, 4, 4), 4), Step::Invalid, "other total");
        assert_eq!(step(Some(r), &c(10, 4, 4), 3), Step::Invalid, "chunk size lies");
        let Step::More(r) = step(Some(r), &c(10, 4, 4), 4) else { panic!() };
        assert_eq!(step(Some(r), &c(10, 4, 8), 4), Step::Invalid, "past the total");
        assert_eq!(step(Some(r), &c(10, 2, 8), 2), Step::Complete);
        assert_eq!(step(None, &c(4096, 4096, 0), 4096), Step::Complete, "one-shot (Metasploit)");
        assert_eq!(step(None, &c(u32::MAX, 8, u32::MAX - 4), 8), Step::Invalid);
        assert_eq!(step(None, &c(0, 0, 0), 0), Step::Invalid);
    }
}
