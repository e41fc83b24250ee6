//! The framed protocol spoken over one long-lived TLS connection between a sensor and its admin.
//!
//! ```text
//! sensor                                   admin
//!   Hello{sensor, versions}        ──▶
//!                                  ◀──     HelloAck{schema, high_water_seq, limits} | Refused{reason}
//!   Batch{first,last,codec,payload} ──▶    (stored with the high-water mark in one transaction)
//!   Batch ... (a few in flight)    ──▶
//!                                  ◀──     Ack{upto_seq} | Rejected{first,last,reason}
//!   Ping                           ──▶     (when idle, keeps the connection and "last contact")
//!                                  ◀──     Pong
//! ```
//!
//! # Samples (protocol version 2)
//!
//! ```text
//!                                  ◀──     SampleTerms{max_chunk, max_offer, max_sample}  (after HelloAck)
//!   SampleOffer{[(sha256, size)]}  ──▶     (at most max_offer kept samples)
//!                                  ◀──     SampleAnswers{[(sha256, Want{offset} | Have | Refuse)]}
//!   SampleChunk{sha256, offset, size, data} ──▶   (one per shipper turn, a few unacknowledged)
//!                                  ◀──     SampleAck{sha256, next_offset} | SampleStored | SampleRejected
//! ```
//!
//! WHY offers first: one copy per fleet. The admin answers `Have` for a sample any sensor already
//! delivered, so the sensor deletes its copy without sending a byte. `Want{offset}` resumes a
//! transfer the admin holds a part of (after a cut). Chunks go in order; the admin verifies the
//! sha256 at the end and answers `SampleStored` only after its database has the sample, and only
//! then does the sensor delete it (exactly-once effect, like events).
//!
//! Version fallback: an admin accepts hellos of versions [`MIN_PROTOCOL_VERSION`] to
//! [`PROTOCOL_VERSION`] and sends `SampleTerms` only to sensors of version
//! [`SAMPLES_SINCE_VERSION`] or newer; a sensor enables samples only once it has `SampleTerms`.
//! An admin of version 1 refuses a version-2 hello with "protocol version 2 is not supported
//! (admin speaks 1)": the sensor then says version 1 in its next hellos and ships events only.
//! The sample frames are appended variants, so the version-1 frames encode as before.
//!
//! # Signed updates (protocol version 3)
//!
//! ```text
//!                                  ◀──     UpdateOffer{manifest}   (after HelloAck, when a rollout names this sensor)
//!   UpdateWant{version, offset, max_bytes} ──▶   (a few outstanding; resumes from the part file's length)
//!                                  ◀──     UpdateChunk{version, offset, data}   (empty data: no more bytes)
//!                                  ◀──     ConfigOffer{signed config}   (after HelloAck, when one was pushed)
//! ```
//!
//! The sensor verifies the manifest's signature and architecture before it asks for a byte, and
//! the binary's size and sha256 before it installs it; the outcome reaches the admin as events.
//! Fallback is the same as for version 2: an admin of version 2 refuses a version-3 hello
//! ("... (admin speaks 2)") and the sensor then says the version the admin speaks.
//!
//! On the wire every frame is a 4-byte big-endian length followed by that many bytes of a
//! postcard-encoded [`Frame`]. WHY so simple: the length is checked against a cap *before* a
//! byte of body is allocated or read, and postcard then decodes from a buffer that is already
//! bounded, so a hostile peer can neither make us allocate nor panic. Anything malformed is a
//! [`FrameError`], after which the connection is closed.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of this framing protocol, sent in [`Frame::Hello`].
pub const PROTOCOL_VERSION: u16 = 3;

/// Oldest hello version an admin still accepts (version 1: events only).
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// First protocol version that carries samples.
pub const SAMPLES_SINCE_VERSION: u16 = 2;

/// First protocol version that carries signed updates.
pub const UPDATES_SINCE_VERSION: u16 = 3;

/// The version an admin's refusal says it speaks ("... (admin speaks N)"), if any.
pub fn refusal_speaks(reason: &str) -> Option<u16> {
    let rest = &reason[reason.find(VERSION_REFUSAL_MARK)? + VERSION_REFUSAL_MARK.len()..];
    rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The words a version-1 admin's refusal of a newer hello contains (its message is fixed:
/// "protocol version N is not supported (admin speaks 1)").
pub const VERSION_REFUSAL_MARK: &str = "is not supported (admin speaks";

/// Default bytes of sample data in one [`Frame::SampleChunk`].
pub const DEFAULT_SAMPLE_CHUNK: u32 = 256 * 1024;

/// Default cap on one frame (a batch frame carries the compressed payload).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Cap on frames that are not batches (hello, acks, pings): they are tiny.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// One message of the protocol.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame from the sensor. `sensor` must match the name in its client certificate.
    Hello {
        sensor: String,
        protocol_version: u16,
        schema_version: u16,
        software: String,
    },
    /// The admin accepted the sensor. The sensor downgrades events to `schema_version` and keeps
    /// batches within the two limits.
    HelloAck {
        schema_version: u16,
        high_water_seq: u64,
        max_batch_events: u32,
        max_batch_bytes: u32,
    },
    /// Events with sequence numbers in `first_seq..=last_seq` (gaps allowed: evicted events).
    Batch {
        first_seq: u64,
        last_seq: u64,
        count: u32,
        codec: u8,
        payload: Vec<u8>,
    },
    /// Everything up to `upto_seq` is committed at the admin; the sensor may free it.
    Ack {
        upto_seq: u64,
    },
    /// The batch is invalid and will never be accepted; the sensor keeps it aside and moves on.
    Rejected {
        first_seq: u64,
        last_seq: u64,
        reason: String,
    },
    /// The admin refuses this connection (revoked, name mismatch, version); it closes next.
    Refused {
        reason: String,
    },
    Ping,
    Pong,
    // --- protocol version 2 (appended; never reorder) ---
    /// The admin takes samples on this connection, within these caps. Sent right after the hello
    /// ack to sensors of version [`SAMPLES_SINCE_VERSION`] or newer.
    SampleTerms {
        /// Most data bytes in one chunk.
        max_chunk_bytes: u32,
        /// Most samples in one offer.
        max_offer: u32,
        /// Largest sample the admin keeps.
        max_sample_bytes: u64,
    },
    /// Kept samples the sensor could send.
    SampleOffer {
        samples: Vec<SampleRef>,
    },
    /// One answer per offered sample, in the offer's order.
    SampleAnswers {
        answers: Vec<SampleAnswer>,
    },
    /// `data` is the sample's bytes at `offset..offset + data.len()`; `size` is its whole size.
    SampleChunk {
        sha256: [u8; 32],
        offset: u64,
        size: u64,
        data: Vec<u8>,
    },
    /// The admin wrote a chunk; it expects `next_offset` next.
    SampleAck {
        sha256: [u8; 32],
        next_offset: u64,
    },
    /// The admin verified and stored the sample (its database has it): the sensor may delete it.
    SampleStored {
        sha256: [u8; 32],
    },
    /// The admin threw this transfer away (bad chunk, hash mismatch, over a cap). With `retry`
    /// the sensor offers it again later (from offset 0); without, it drops and reports it.
    SampleRejected {
        sha256: [u8; 32],
        reason: String,
        retry: bool,
    },
    // --- protocol version 3 (appended; never reorder) ---
    /// A signed release the admin wants this sensor to run.
    UpdateOffer {
        manifest: crate::release::Manifest,
    },
    /// The sensor asks for bytes of the offered release from `offset` (at most `max_bytes`).
    UpdateWant {
        version: String,
        offset: u64,
        max_bytes: u32,
    },
    /// Bytes of the release at `offset`; empty when the admin has no more (a truncated file).
    UpdateChunk {
        version: String,
        offset: u64,
        data: Vec<u8>,
    },
    /// A signed sensor config the admin wants this sensor to run (`sensor config push`).
    ConfigOffer {
        config: crate::release::SignedConfig,
    },
}

/// One offered sample.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleRef {
    pub sha256: [u8; 32],
    pub size: u64,
}

/// What the admin wants of one offered sample.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SampleAnswer {
    pub sha256: [u8; 32],
    pub verdict: SampleVerdict,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum SampleVerdict {
    /// Send it, starting at `offset` (the admin holds the bytes before it from an earlier cut).
    Want { offset: u64 },
    /// The fleet already has it: delete the local copy.
    Have,
    /// Not now (`retry`: offer it again later) or never (drop and report it).
    Refuse { reason: String, retry: bool },
}

impl Frame {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::HelloAck { .. } => "hello_ack",
            Frame::Batch { .. } => "batch",
            Frame::Ack { .. } => "ack",
            Frame::Rejected { .. } => "rejected",
            Frame::Refused { .. } => "refused",
            Frame::Ping => "ping",
            Frame::Pong => "pong",
            Frame::SampleTerms { .. } => "sample_terms",
            Frame::SampleOffer { .. } => "sample_offer",
            Frame::SampleAnswers { .. } => "sample_answers",
            Frame::SampleChunk { .. } => "sample_chunk",
            Frame::SampleAck { .. } => "sample_ack",
            Frame::SampleStored { .. } => "sample_stored",
            Frame::SampleRejected { .. } => "sample_rejected",
            Frame::UpdateOffer { .. } => "update_offer",
            Frame::UpdateWant { .. } => "update_want",
            Frame::UpdateChunk { .. } => "update_chunk",
            Frame::ConfigOffer { .. } => "config_offer",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the cap of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `frame` with its length prefix.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    let body = postcard::to_stdvec(frame).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len =
        u32::try_from(body.len()).map_err(|_| FrameError::TooLarge { len: body.len(), max: u32::MAX as usize })?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// Decodes one frame body (without the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    let (frame, rest) = postcard::take_from_bytes::<Frame>(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!("{} bytes after the frame", rest.len())));
    }
    Ok(frame)
}

/// Writes `frame` and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> Result<(), FrameError> {
    let buf = encode(frame)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Truncated) };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    decode_body(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Frame> {
        vec![
            Frame::Hello { sensor: "pi-1".into(), protocol_version: 1, schema_version: 1, software: "0.1".into() },
            Frame::HelloAck { schema_version: 1, high_water_seq: 99, max_batch_events: 5, max_batch_bytes: 6 },
            Frame::Batch { first_seq: 1, last_seq: 9, count: 9, codec: 1, payload: vec![1, 2, 3] },
            Frame::Ack { upto_seq: 9 },
            Frame::Rejected { first_seq: 1, last_seq: 2, reason: "bad".into() },
            Frame::Refused { reason: "revoked".into() },
            Frame::Ping,
            Frame::Pong,
            Frame::SampleTerms { max_chunk_bytes: 262_144, max_offer: 64, max_sample_bytes: 1 << 24 },
            Frame::SampleOffer { samples: vec![SampleRef { sha256: [7; 32], size: 10 }] },
            Frame::SampleAnswers {
                answers: vec![
                    SampleAnswer { sha256: [1; 32], verdict: SampleVerdict::Want { offset: 5 } },
                    SampleAnswer { sha256: [2; 32], verdict: SampleVerdict::Have },
                    SampleAnswer {
                        sha256: [3; 32],
                        verdict: SampleVerdict::Refuse { reason: "full".into(), retry: false },
                    },
                ],
            },
            Frame::SampleChunk { sha256: [9; 32], offset: 0, size: 3, data: vec![1, 2, 3] },
            Frame::SampleAck { sha256: [9; 32], next_offset: 3 },
            Frame::SampleStored { sha256: [9; 32] },
            Frame::SampleRejected { sha256: [9; 32], reason: "mismatch".into(), retry: true },
            Frame::UpdateOffer {
                manifest: crate::release::Manifest {
                    version: "0.2.0".into(),
                    arch: "aarch64".into(),
                    size: 9,
                    sha256: "ab".repeat(32),
                    signature: "cd".repeat(64),
                },
            },
            Frame::UpdateWant { version: "0.2.0".into(), offset: 3, max_bytes: 1024 },
            Frame::UpdateChunk { version: "0.2.0".into(), offset: 3, data: vec![1, 2] },
            Frame::ConfigOffer {
                config: crate::release::SignedConfig {
                    sensor: "pi-1".into(),
                    serial: 2,
                    toml: "[sensor]\n".into(),
                    signature: "ef".repeat(64),
                },
            },
        ]
    }

    #[test]
    fn version_1_frames_keep_their_encoding() {
        // The variants a version-1 peer knows are encoded by index; appending must not move them.
        assert_eq!(encode(&Frame::Ping).unwrap()[4..], [6]);
        assert_eq!(encode(&Frame::Pong).unwrap()[4..], [7]);
        assert_eq!(encode(&Frame::Ack { upto_seq: 1 }).unwrap()[4..], [3, 1]);
    }

    #[test]
    fn refusals_say_which_version_the_admin_speaks() {
        assert_eq!(refusal_speaks("protocol version 3 is not supported (admin speaks 2)"), Some(2));
        assert_eq!(refusal_speaks("protocol version 2 is not supported (admin speaks 1)"), Some(1));
        assert_eq!(refusal_speaks("revoked"), None);
        assert_eq!(refusal_speaks("is not supported (admin speaks"), None);
    }

    #[tokio::test]
    async fn round_trip_over_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        for f in all() {
            write_frame(&mut a, &f).await.unwrap();
        }
        drop(a);
        for f in all() {
            assert_eq!(read_frame(&mut b, DEFAULT_MAX_FRAME).await.unwrap(), Some(f));
        }
        assert_eq!(read_frame(&mut b, DEFAULT_MAX_FRAME).await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // Claims 4 GiB; nothing follows. Must fail at once, not wait for or allocate the body.
        a.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        let e = read_frame(&mut b, 1024).await.unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { len: 0xffff_ffff, max: 1024 }), "{e}");
    }

    #[tokio::test]
    async fn truncated_and_empty_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(read_frame(&mut b, 1024).await, Err(FrameError::Truncated)));
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        assert!(matches!(read_frame(&mut b, 1024).await, Err(FrameError::Truncated)));
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 0]).await.unwrap();
        assert!(matches!(read_frame(&mut b, 1024).await, Err(FrameError::Empty)));
    }

    #[test]
    fn hostile_bodies_return_errors() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        assert!(decode_body(&[200]).is_err());
        assert!(decode_body(b"GET / HTTP/1.1\r\n\r\n").is_err());
        // A batch whose payload claims 2^40 bytes.
        assert!(decode_body(&[2, 1, 9, 9, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]).is_err());
        let goods: Vec<Vec<u8>> = all().iter().map(|f| encode(f).unwrap()[4..].to_vec()).collect();
        for i in 0..20_000 {
            let mut b = goods[i % goods.len()].clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.gen();
            }
            b.truncate(rng.gen_range(0..=b.len()));
            let _ = decode_body(&b);
        }
    }
}
