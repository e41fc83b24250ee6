#![no_main]
//! The admin's batch check: header checks, zstd decompression under a size cap, postcard decode
//! of every event, seq order, clamping. First byte picks the codec, the next 16 the header.
use drosera_uplink::codec::DecodeLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let codec = data[0];
    let first = u64::from(u32::from_le_bytes([data[1], data[2], data[3], data[4]]));
    let last = first + u64::from(u16::from_le_bytes([data[5], data[6]]));
    let count = u32::from(u16::from_le_bytes([data[7], data[8]]));
    // Small caps so the fuzzer explores the limit checks instead of allocating.
    let limits = DecodeLimits { max_decompressed: 1 << 20, max_events: 10_000 };
    let _ = drosera_admin::ingest::check_batch(first, last, count, codec, &data[17..], "fuzz", limits);
});
