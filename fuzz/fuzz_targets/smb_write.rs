#![no_main]
//! What a file drop sends: SMB1 TREE_CONNECT_ANDX / NT_CREATE_ANDX / WRITE_ANDX, SMB2
//! compounds with CREATE / WRITE, and the contiguity rule that assembles the written file.
use drosera_sensor::protocols::smb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let next = 0u64;
    match smb::parse_message(data) {
        Ok(smb::Message::Smb1(m)) => {
            let _ = smb::parse_tree_connect(&m);
            let _ = smb::parse_nt_create(&m);
            if let Ok(w) = smb::parse_write_andx(&m, data) {
                let _ = smb::place_write(next, w.offset, w.data.len());
            }
        }
        Ok(smb::Message::Smb2(_)) => {
            if let Ok(parts) = smb::smb2_split_compound(data) {
                for part in parts {
                    if let Ok(smb::Message::Smb2(m)) = smb::parse_message(part) {
                        let _ = smb::smb2_parse_create(&m);
                        if let Ok(w) = smb::smb2_parse_write(&m) {
                            let _ = smb::place_write(next, w.offset, w.data.len());
                        }
                    }
                }
            }
        }
        Err(_) => {}
    }
});
