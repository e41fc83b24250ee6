//! Batches on the wire: `zstd(postcard(Vec<Event>))`.
//!
//! WHY this shape: postcard is compact and schema-versioned (see [`crate::event`]), and events in
//! one batch repeat the same sensor name, addresses, ports and time prefixes, which zstd folds
//! away, so a typical connection event costs a few dozen bytes on the wire.
//!
//! Decoding is done by the admin on bytes that crossed the network, so it is written for hostile
//! input: the decompressed size is bounded by a streaming read that stops at the cap (a zstd
//! "bomb" costs at most the cap, never more), the declared event count is checked before any
//! event is decoded, and postcard never allocates beyond the bytes it was given.

use crate::event::Event;
use std::io::Read;

/// Codec identifier carried in every batch frame.
pub const CODEC_ZSTD_POSTCARD: u8 = 1;

/// zstd level used by sensors: fast on a Raspberry Pi and still a good ratio.
pub const DEFAULT_LEVEL: i32 = 3;

/// Caps applied when decoding a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most bytes the payload may decompress to.
    pub max_decompressed: usize,
    /// Most events one batch may hold.
    pub max_events: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_decompressed: 64 * 1024 * 1024, max_events: 100_000 }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("unknown batch codec {0}")]
    UnknownCodec(u8),
    #[error("batch payload is not valid zstd: {0}")]
    Zstd(String),
    #[error("batch decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("batch declares {count} events, more than the limit of {limit}")]
    TooManyEvents { count: u64, limit: usize },
    #[error("batch events cannot be decoded: {0}")]
    Postcard(String),
    #[error("batch has {0} bytes after its last event")]
    TrailingBytes(usize),
}

/// Encodes `events` as one batch payload (postcard, then zstd at `level`).
pub fn encode(events: &[Event], level: i32) -> Result<Vec<u8>, CodecError> {
    let raw = postcard::to_stdvec(events).map_err(|e| CodecError::Postcard(e.to_string()))?;
    zstd::bulk::compress(&raw, level).map_err(|e| CodecError::Zstd(e.to_string()))
}

/// Decodes a batch payload of codec `codec` under `limits`.
pub fn decode(codec: u8, payload: &[u8], limits: DecodeLimits) -> Result<Vec<Event>, CodecError> {
    if codec != CODEC_ZSTD_POSTCARD {
        return Err(CodecError::UnknownCodec(codec));
    }
    let raw = decompress_bounded(payload, limits.max_decompressed)?;
    let (count, _) = read_varint(&raw).ok_or_else(|| CodecError::Postcard("missing event count".into()))?;
    if count > limits.max_events as u64 {
        return Err(CodecError::TooManyEvents { count, limit: limits.max_events });
    }
    let (events, rest) =
        postcard::take_from_bytes::<Vec<Event>>(&raw).map_err(|e| CodecError::Postcard(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(events)
}

/// Decompresses `payload`, failing as soon as the output would exceed `max` bytes.
///
/// Memory stays within about `max` plus a window of at most `max`: the output grows by doubling
/// but never past `max + 1` bytes (a plain `read_to_end` would double an 8 MiB buffer to 16 MiB
/// to hold the one byte that proves a bomb), and a frame that asks for a larger window than `max`
/// is refused before the decoder allocates it (zstd allows windows up to 128 MiB by default; a
/// sensor compresses whole batches, so its window never exceeds the batch).
pub fn decompress_bounded(payload: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    let zstd_err = |e: std::io::Error| CodecError::Zstd(e.to_string());
    let mut decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(zstd_err)?;
    decoder.window_log_max(window_log_for(max)).map_err(zstd_err)?;
    // One byte past the cap tells "exactly the cap" from "more".
    let limit = max.saturating_add(1);
    let mut out: Vec<u8> = Vec::new();
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if out.len() >= limit {
                break;
            }
            let grow = out.len().max(64 * 1024).min(limit - out.len());
            out.reserve_exact(grow);
            out.resize(out.len() + grow, 0);
        }
        match decoder.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(zstd_err(e)),
        }
    }
    out.truncate(filled);
    if filled > max {
        return Err(CodecError::TooLarge { limit: max });
    }
    Ok(out)
}

/// The largest zstd window (as a power of two) a payload capped at `max` bytes can need:
/// the smallest `log` with `2^log >= max`, within zstd's bounds (10..=31).
fn window_log_for(max: usize) -> u32 {
    let log = usize::BITS - max.saturating_sub(1).leading_zeros();
    log.clamp(10, 31)
}

/// Reads a postcard (LEB128) varint u64 from the start of `buf`: value and its length.
fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, b) in buf.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CloseReason, Detail, Priority, Protocol, Transport};
    use std::net::{IpAddr, Ipv4Addr};

    pub(crate) fn conn_event(seq: u64) -> Event {
        Event {
            seq,
            time_ms: 1_700_000_000_000 + seq as i64 * 37,
            sensor: "pi-1".into(),
            transport: Transport::Tcp,
            protocol: Protocol::Telnet,
            src_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, (seq % 200) as u8)),
            src_port: 40_000 + (seq % 20_000) as u16,
            dst_port: 23,
            session_id: seq,
            duration_ms: 12,
            bytes_in: 0,
            bytes_out: 40,
            priority: Priority::Noise,
            detail: Detail::Connection { first_bytes: Vec::new(), closed_by: CloseReason::ClientClosed },
        }
    }

    #[test]
    fn round_trip() {
        let events: Vec<Event> = (1..=1000).map(conn_event).collect();
        let payload = encode(&events, DEFAULT_LEVEL).unwrap();
        let back = decode(CODEC_ZSTD_POSTCARD, &payload, DecodeLimits::default()).unwrap();
        assert_eq!(back, events);
        // Typical connection events compress well below 30 bytes each.
        assert!(payload.len() < 30 * 1000, "payload {} bytes", payload.len());
    }

    #[test]
    fn empty_batch_round_trips() {
        let payload = encode(&[], DEFAULT_LEVEL).unwrap();
        assert!(decode(CODEC_ZSTD_POSTCARD, &payload, DecodeLimits::default()).unwrap().is_empty());
    }

    #[test]
    fn unknown_codec_is_refused() {
        let payload = encode(&[conn_event(1)], DEFAULT_LEVEL).unwrap();
        assert_eq!(decode(9, &payload, DecodeLimits::default()), Err(CodecError::UnknownCodec(9)));
    }

    #[test]
    fn zstd_bomb_is_refused() {
        // 512 MiB of zeros compresses to a few KiB; the decoder must stop at the cap. (Level 3
        // streams with a 2 MiB window, inside the 4 MiB cap: the output cap is what stops it.)
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..512 {
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let limits = DecodeLimits { max_decompressed: 4 << 20, max_events: 100 };
        assert_eq!(decode(CODEC_ZSTD_POSTCARD, &bomb, limits), Err(CodecError::TooLarge { limit: 4 << 20 }));
    }

    #[test]
    fn too_many_events_is_refused_before_decoding() {
        let events: Vec<Event> = (1..=11).map(conn_event).collect();
        let payload = encode(&events, DEFAULT_LEVEL).unwrap();
        let limits = DecodeLimits { max_decompressed: 1 << 20, max_events: 10 };
        assert_eq!(
            decode(CODEC_ZSTD_POSTCARD, &payload, limits),
            Err(CodecError::TooManyEvents { count: 11, limit: 10 })
        );
        // A declared count of 2^60 with no events behind it.
        let mut raw = vec![0x80u8; 8];
        raw.push(0x10);
        let payload = zstd::bulk::compress(&raw, 1).unwrap();
        assert!(matches!(
            decode(CODEC_ZSTD_POSTCARD, &payload, DecodeLimits::default()),
            Err(CodecError::TooManyEvents { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut raw = postcard::to_stdvec(&vec![conn_event(1)]).unwrap();
        raw.extend_from_slice(b"junk");
        let payload = zstd::bulk::compress(&raw, 1).unwrap();
        assert_eq!(decode(CODEC_ZSTD_POSTCARD, &payload, DecodeLimits::default()), Err(CodecError::TrailingBytes(4)));
    }

    #[test]
    fn hostile_bytes_return_errors() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let good_raw = postcard::to_stdvec(&(1..=20).map(conn_event).collect::<Vec<_>>()).unwrap();
        let good = encode(&(1..=20).map(conn_event).collect::<Vec<_>>(), 1).unwrap();
        let limits = DecodeLimits { max_decompressed: 1 << 20, max_events: 1000 };
        for i in 0..5000 {
            // Mutate either the compressed payload or the raw postcard (recompressed), so both the
            // zstd and the postcard layers see garbage.
            let mut buf = if i % 2 == 0 { good.clone() } else { good_raw.clone() };
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..buf.len());
                buf[at] = rng.gen();
            }
            buf.truncate(rng.gen_range(0..=buf.len()));
            let payload = if i % 2 == 0 { buf } else { zstd::bulk::compress(&buf, 1).unwrap() };
            let _ = decode(CODEC_ZSTD_POSTCARD, &payload, limits);
        }
        let random: Vec<u8> = (0..4096).map(|_| rng.gen()).collect();
        assert!(decode(CODEC_ZSTD_POSTCARD, &random, limits).is_err());
    }

    #[test]
    fn window_log_covers_the_cap() {
        assert_eq!(window_log_for(8 << 20), 23);
        assert_eq!(window_log_for((8 << 20) + 1), 24);
        assert_eq!(window_log_for(1), 10);
        assert_eq!(window_log_for(usize::MAX), 31);
    }

    #[test]
    fn a_batch_of_exactly_the_cap_decodes_and_one_byte_more_does_not() {
        let cap = 300_000;
        let exact = zstd::bulk::compress(&vec![7u8; cap], DEFAULT_LEVEL).unwrap();
        assert_eq!(decompress_bounded(&exact, cap).unwrap().len(), cap);
        let over = zstd::bulk::compress(&vec![7u8; cap + 1], DEFAULT_LEVEL).unwrap();
        assert_eq!(decompress_bounded(&over, cap), Err(CodecError::TooLarge { limit: cap }));
    }

    #[test]
    fn a_frame_asking_for_a_window_beyond_the_cap_is_refused_before_decoding() {
        // A streamed frame (no content size) with a 64 MiB window: the decoder would allocate
        // the window even though the cap is 1 MiB.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(26).unwrap();
        enc.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut enc, &vec![1u8; 4 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(matches!(decompress_bounded(&bomb, 1 << 20), Err(CodecError::Zstd(_))));
        // The same bytes under a cap that allows the window decode up to the cap and stop there.
        assert_eq!(decompress_bounded(&bomb, 64 << 20).unwrap().len(), 4 << 20);
    }
}
