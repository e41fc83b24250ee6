#![no_main]
//! DoublePulsar framing: TRANS2 SESSION_SETUP requests (opcode from the Timeout, the XORed
//! exec parameters and data) and the in-order reassembly of a sequence of exec chunks.
use drosera_sensor::protocols::smb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = smb::doublepulsar_xor_key(u32::from_le_bytes([
        *data.first().unwrap_or(&0),
        *data.get(1).unwrap_or(&0),
        *data.get(2).unwrap_or(&0),
        *data.get(3).unwrap_or(&0),
    ]));
    let mut upload: Option<smb::Reassembly> = None;
    // The input is several SMB1 messages, each prefixed with a 2-byte length.
    let mut rest = data.get(4..).unwrap_or(&[]);
    while rest.len() >= 2 {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let msg = &rest[2..2 + n];
        rest = &rest[2 + n..];
        let mut owned = msg.to_vec();
        if owned.len() >= 4 {
            owned[..4].copy_from_slice(&[0xff, b'S', b'M', b'B']);
        }
        // Most messages made a TRANS2 SESSION_SETUP (15 words, setup[0] = 0x000e), so the
        // fuzzer spends its time in the parameters, offsets and chunk reassembly.
        if owned.len() >= 63 && owned[5] & 0x80 == 0 {
            owned[4] = 0x32;
            owned[32] = 15;
            owned[61..63].copy_from_slice(&[0x0e, 0x00]);
        }
        if let Ok(smb::Message::Smb1(m)) = smb::parse_message(&owned) {
            if let Ok(Some(r)) = smb::doublepulsar_request(&m, &owned) {
                if let Ok(chunk) = smb::doublepulsar_exec(r.params, key) {
                    let mut d = r.data.to_vec();
                    smb::doublepulsar_xor(&mut d, key);
                    match smb::doublepulsar_step(upload, &chunk, d.len()) {
                        smb::Step::More(next) => upload = Some(next),
                        smb::Step::Complete | smb::Step::Invalid => upload = None,
                    }
                }
            }
        }
    }
});
