#![no_main]
//! The admin's batch check (`ingest::check_batch`): header checks, zstd decompression under a
//! size cap, postcard decode of every event, seq order, clamping.
//!
//! Byte 0 picks the mode: bit 0 set = the rest is the payload as sent (raw zstd, or garbage);
//! clear = the rest is postcard that this target compresses first, so the fuzzer reaches the
//! event decoder instead of stopping at zstd's magic number. Bytes 1..17 are the header.
use drosera_uplink::codec::{DecodeLimits, CODEC_ZSTD_POSTCARD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let mode = data[0];
    let first = u64::from(u32::from_le_bytes([data[1], data[2], data[3], data[4]]));
    let last = first + u64::from(u16::from_le_bytes([data[5], data[6]]));
    let count = u32::from(u16::from_le_bytes([data[7], data[8]]));
    let body = &data[17..];
    let (codec, payload) = if mode & 1 == 0 {
        let Ok(z) = zstd::bulk::compress(body, 1) else { return };
        (CODEC_ZSTD_POSTCARD, z)
    } else {
        (if mode & 2 == 0 { CODEC_ZSTD_POSTCARD } else { mode >> 2 }, body.to_vec())
    };
    // Small caps so the fuzzer explores the limit checks instead of allocating.
    let limits = DecodeLimits { max_decompressed: 1 << 20, max_events: 10_000 };
    let _ = drosera_admin::ingest::check_batch(first, last, count, codec, &payload, "fuzz", limits);
});
