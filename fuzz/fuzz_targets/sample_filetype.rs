#![no_main]
//! The admin's sample file-type detector: attacker bytes (ELF/PE/Mach-O headers with hostile
//! offsets, truncated archives, odd text) must never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = drosera_admin::samples::filetype::detect(data);
    assert!(!t.description.is_empty());
});
