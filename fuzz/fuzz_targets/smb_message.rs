#![no_main]
use drosera_sensor::protocols::smb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = smb::parse_message(data) {
        match m {
            smb::Message::Smb1(s) => {
                let _ = smb::smb1_dialects(&s.bytes);
                let _ = smb::parse_smb1_session_setup(&s);
                let _ = smb::is_ms17_010_probe(&s);
                let _ = smb::is_doublepulsar_ping(&s);
                let _ = smb::smb1_security_blob(&s);
                let _ = smb::parse_trans(&s, data);
            }
            smb::Message::Smb2(s) => {
                let _ = smb::smb2_dialects(&s);
                if let Ok(blob) = smb::smb2_session_setup_blob(&s) {
                    if let Some(n) = smb::find_ntlmssp(blob) {
                        let _ = smb::parse_ntlm_authenticate(n);
                    }
                }
            }
        }
    }
    if let Some(n) = smb::find_ntlmssp(data) {
        if let Ok(a) = smb::parse_ntlm_authenticate(n) {
            let _ = a.hashcat_5600(&[0; 8]);
            let _ = smb::ntlmv2_proves(&a, &[0; 8], "admin");
            let _ = smb::ntlmv1_proves(&a, &[0; 8], "admin");
        }
    }
});
