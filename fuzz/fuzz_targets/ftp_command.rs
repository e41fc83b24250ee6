#![no_main]
use drosera_sensor::protocols::ftp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ftp::parse_command(data);
    let _ = ftp::raw_argument(data);
    // The passive range and announced address come from the config, but their arithmetic must
    // hold for any values (a range given backwards, one port, the whole port space).
    if data.len() >= 6 {
        let first = u16::from_le_bytes([data[0], data[1]]);
        let last = u16::from_le_bytes([data[2], data[3]]);
        let turn = u16::from_le_bytes([data[4], data[5]]) as usize;
        for port in ftp::passive_order(first, last, turn).take(64) {
            assert!((first.min(last)..=first.max(last)).contains(&port));
        }
    }
    if data.len() >= 16 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&data[..16]);
        let v6 = std::net::IpAddr::from(a);
        let v4 = std::net::IpAddr::from([data[0], data[1], data[2], data[3]]);
        let _ = ftp::pasv_address(Some(v4), v6);
        if let Some(ip) = ftp::pasv_address(None, v6) {
            let _ = ftp::pasv_reply(ip, u16::from_le_bytes([data[4], data[5]]));
        }
    }
});
