//! The admin's side of sample transfers on one sensor connection (see `drosera_uplink::frame`).
//!
//! WHY a separate state machine: it is the part that reads what a (possibly compromised) sensor
//! sends, so it is kept out of the async connection handler and tested with hand-made frames.
//! It accepts a chunk only when it continues a transfer this connection was told to make
//! (`Want`), at exactly the expected offset, within the announced size, the chunk cap and the
//! sample cap; anything else rejects the transfer and deletes its part file, so nothing
//! half-written is kept. The last chunk's sample is read back whole, its sha256 compared with the
//! name it was offered under (a mismatch is rejected and deleted), then classified and
//! compressed into the store; the database row comes after, through the ingest writer.

use super::classify::Classifier;
use super::config::SamplesConfig;
use super::store::{Digests, SampleStore};
use crate::storage::{NewSample, SampleMatch};
use drosera_uplink::frame::{SampleAnswer, SampleRef, SampleVerdict};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters over all connections (logged; tests read them).
#[derive(Debug, Default)]
pub struct ReceiverCounters {
    pub chunks: AtomicU64,
    pub stored: AtomicU64,
    pub already_had: AtomicU64,
    /// Transfers rejected: bad chunk, hash mismatch, over a cap, store full.
    pub rejected: AtomicU64,
    pub bytes: AtomicU64,
}

/// What every connection's receiver shares.
#[derive(Debug)]
pub struct SampleContext {
    pub cfg: SamplesConfig,
    pub store: SampleStore,
    pub classifier: Classifier,
    pub counters: ReceiverCounters,
    /// Data bytes per chunk on this admin (`min(chunk_bytes, max_frame_bytes - framing)`).
    pub max_chunk: u32,
}

/// A transfer this connection asked for.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    size: u64,
    next: u64,
}

/// What to do after a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkResult {
    /// Written; the next chunk starts here.
    Ack(u64),
    /// The sample is complete in this part file: verify it ([`verify`]).
    Complete(PathBuf),
    /// The transfer is thrown away (part deleted).
    Reject { reason: String, retry: bool },
}

/// One connection's transfers (bounded by `max_offer`).
#[derive(Debug)]
pub struct Receiver {
    ctx: Arc<SampleContext>,
    sensor_id: i64,
    transfers: HashMap<[u8; 32], Transfer>,
}

impl Receiver {
    pub fn new(ctx: Arc<SampleContext>, sensor_id: i64) -> Receiver {
        Receiver { ctx, sensor_id, transfers: HashMap::new() }
    }

    /// Answers an offer: `known` holds the sha256s (hex) the database already has. Transfers of
    /// an earlier offer that were not finished are forgotten (their parts stay for a resume).
    pub fn answer_offer(&mut self, offered: &[SampleRef], known: &HashSet<String>) -> Vec<SampleAnswer> {
        let cfg = &self.ctx.cfg;
        self.transfers.clear();
        let mut parts = self.ctx.store.parts();
        let mut answers = Vec::with_capacity(offered.len().min(cfg.max_offer as usize));
        for s in offered.iter().take(cfg.max_offer as usize) {
            let verdict = if known.contains(&hex::encode(s.sha256)) {
                SampleVerdict::Have
            } else if s.size == 0 || s.size > cfg.max_sample_bytes {
                SampleVerdict::Refuse {
                    reason: format!(
                        "{} bytes is outside 1..={} (samples.max_sample_bytes)",
                        s.size, cfg.max_sample_bytes
                    ),
                    retry: false,
                }
            } else if self.transfers.contains_key(&s.sha256) {
                SampleVerdict::Refuse { reason: "offered twice".into(), retry: true }
            } else {
                let part = self.ctx.store.part_of(&s.sha256, self.sensor_id);
                let have = std::fs::metadata(&part).map(|m| m.len()).ok();
                match have {
                    Some(n) if n < s.size => {
                        self.transfers.insert(s.sha256, Transfer { size: s.size, next: n });
                        SampleVerdict::Want { offset: n }
                    }
                    Some(_) => {
                        // A part as long as the sample (or longer) is stale: start over.
                        let _ = std::fs::remove_file(&part);
                        self.transfers.insert(s.sha256, Transfer { size: s.size, next: 0 });
                        SampleVerdict::Want { offset: 0 }
                    }
                    None if parts >= cfg.max_parts => {
                        SampleVerdict::Refuse { reason: "the admin has too many transfers open".into(), retry: true }
                    }
                    None => {
                        parts += 1;
                        self.transfers.insert(s.sha256, Transfer { size: s.size, next: 0 });
                        SampleVerdict::Want { offset: 0 }
                    }
                }
            };
            answers.push(SampleAnswer { sha256: s.sha256, verdict });
        }
        answers
    }

    fn reject(&mut self, sha256: &[u8; 32], reason: String, retry: bool) -> ChunkResult {
        self.transfers.remove(sha256);
        let _ = std::fs::remove_file(self.ctx.store.part_of(sha256, self.sensor_id));
        self.ctx.counters.rejected.fetch_add(1, Ordering::Relaxed);
        ChunkResult::Reject { reason, retry }
    }

    /// Takes one chunk (blocking file I/O: call off the async workers).
    pub fn on_chunk(&mut self, sha256: &[u8; 32], offset: u64, size: u64, data: &[u8]) -> ChunkResult {
        let Some(t) = self.transfers.get(sha256).copied() else {
            // Not asked for (or already thrown away): nothing of it is kept.
            let _ = std::fs::remove_file(self.ctx.store.part_of(sha256, self.sensor_id));
            self.ctx.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return ChunkResult::Reject { reason: "chunk of a sample the admin did not ask for".into(), retry: true };
        };
        if size != t.size {
            return self.reject(sha256, format!("chunk says size {size}, the offer said {}", t.size), true);
        }
        if offset != t.next {
            return self.reject(sha256, format!("chunk at offset {offset}, expected {}", t.next), true);
        }
        if data.is_empty() || data.len() > self.ctx.max_chunk as usize {
            return self.reject(
                sha256,
                format!("chunk of {} bytes (1..={} allowed)", data.len(), self.ctx.max_chunk),
                true,
            );
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > t.size {
            return self.reject(sha256, format!("chunk ends at {end}, past the size {}", t.size), true);
        }
        let part = self.ctx.store.part_of(sha256, self.sensor_id);
        let written = (|| {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&part)?;
            if f.metadata()?.len() != offset {
                return Err(std::io::Error::other("the part file does not end at the chunk's offset"));
            }
            f.write_all(data)?;
            if end == t.size {
                f.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            return self.reject(sha256, format!("cannot write the part: {e}"), true);
        }
        self.ctx.counters.chunks.fetch_add(1, Ordering::Relaxed);
        self.ctx.counters.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if end == t.size {
            self.transfers.remove(sha256);
            return ChunkResult::Complete(part);
        }
        if let Some(t) = self.transfers.get_mut(sha256) {
            t.next = end;
        }
        ChunkResult::Ack(end)
    }
}

/// A verified sample, compressed into the store, waiting for its database row.
#[derive(Debug)]
pub struct Verified {
    pub sample: NewSample,
}

/// Reads a complete part back, checks its sha256 against `sha256`, classifies it and compresses
/// it into the store. The part is deleted in every case. Blocking.
pub fn verify(ctx: &SampleContext, sha256: &[u8; 32], part: &std::path::Path) -> Result<Verified, String> {
    let read = std::fs::metadata(part).and_then(|m| {
        if m.len() > ctx.cfg.max_sample_bytes {
            Err(std::io::Error::other(format!("{} bytes is over samples.max_sample_bytes", m.len())))
        } else {
            std::fs::read(part)
        }
    });
    let _ = std::fs::remove_file(part);
    let bytes = read.map_err(|e| format!("cannot read the part back: {e}"))?;
    let digests = Digests::of(&bytes);
    let want = hex::encode(sha256);
    if digests.sha256 != want {
        return Err(format!("sha256 mismatch: offered as {want}, the bytes hash to {}", digests.sha256));
    }
    let c = ctx.classifier.classify(&bytes);
    let stored_bytes = ctx.store.put(&digests.sha256, &bytes).map_err(|e| e.to_string())?;
    Ok(Verified {
        sample: NewSample {
            sha256: digests.sha256,
            md5: digests.md5,
            sha1: digests.sha1,
            size: bytes.len() as i64,
            stored_bytes: stored_bytes as i64,
            file_type: c.file_type,
            rules_version: ctx.classifier.rules_version(),
            matches: c
                .matches
                .into_iter()
                .map(|m| SampleMatch { namespace: m.namespace, rule: m.rule, tags: m.tags.join(" ") })
                .collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn ctx(dir: &std::path::Path, max_chunk: u32) -> Arc<SampleContext> {
        let cfg = SamplesConfig { dir: dir.to_path_buf(), max_sample_bytes: 1000, max_parts: 2, ..Default::default() };
        Arc::new(SampleContext {
            store: SampleStore::open(dir).unwrap(),
            classifier: Classifier::load(None).unwrap(),
            counters: ReceiverCounters::default(),
            max_chunk,
            cfg,
        })
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(b).into()
    }

    fn parts(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("parts")).unwrap().count()
    }

    fn stored(dir: &std::path::Path) -> usize {
        walk(&dir.join("store"))
    }

    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p).unwrap().flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
    }

    #[test]
    fn in_order_chunks_are_verified_and_stored() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path(), 4);
        let body = b"\x7fELF01234567".to_vec();
        let h = sha(&body);
        let mut r = Receiver::new(ctx.clone(), 1);
        let a = r.answer_offer(&[SampleRef { sha256: h, size: body.len() as u64 }], &HashSet::new());
        assert_eq!(a[0].verdict, SampleVerdict::Want { offset: 0 });
        assert_eq!(r.on_chunk(&h, 0, 12, &body[..4]), ChunkResult::Ack(4));
        assert_eq!(r.on_chunk(&h, 4, 12, &body[4..8]), ChunkResult::Ack(8));
        let ChunkResult::Complete(part) = r.on_chunk(&h, 8, 12, &body[8..]) else { panic!("not complete") };
        let v = verify(&ctx, &h, &part).unwrap();
        assert_eq!(v.sample.sha256, hex::encode(h));
        assert_eq!(v.sample.size, 12);
        assert_eq!(ctx.store.get(&v.sample.sha256, 100).unwrap(), body);
        assert_eq!(parts(dir.path()), 0);
    }

    #[test]
    fn a_cut_transfer_resumes_at_the_parts_length() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path(), 4);
        let body = b"abcdefghij".to_vec();
        let h = sha(&body);
        let offer = [SampleRef { sha256: h, size: 10 }];
        let mut r = Receiver::new(ctx.clone(), 7);
        r.answer_offer(&offer, &HashSet::new());
        assert_eq!(r.on_chunk(&h, 0, 10, b"abcd"), ChunkResult::Ack(4));
        drop(r); // the connection is cut
        let mut r = Receiver::new(ctx.clone(), 7);
        let a = r.answer_offer(&offer, &HashSet::new());
        assert_eq!(a[0].verdict, SampleVerdict::Want { offset: 4 });
        assert_eq!(r.on_chunk(&h, 4, 10, b"efgh"), ChunkResult::Ack(8));
        let ChunkResult::Complete(part) = r.on_chunk(&h, 8, 10, b"ij") else { panic!() };
        assert!(verify(&ctx, &h, &part).is_ok());
        // Another sensor's offer of a known sample: not wanted.
        let known: HashSet<String> = [hex::encode(h)].into();
        let mut r2 = Receiver::new(ctx, 8);
        assert_eq!(r2.answer_offer(&offer, &known)[0].verdict, SampleVerdict::Have);
    }

    #[test]
    fn corrupted_out_of_order_and_oversized_chunks_are_rejected_and_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path(), 4);
        let body = b"abcdefghij".to_vec();
        let h = sha(&body);
        let offer = [SampleRef { sha256: h, size: 10 }];
        let fresh = |r: &mut Receiver| {
            r.answer_offer(&offer, &HashSet::new());
        };
        let mut r = Receiver::new(ctx.clone(), 1);
        let rejected = |c: ChunkResult| matches!(c, ChunkResult::Reject { .. });

        // Out of order: a gap.
        fresh(&mut r);
        assert_eq!(r.on_chunk(&h, 0, 10, b"abcd"), ChunkResult::Ack(4));
        assert!(rejected(r.on_chunk(&h, 8, 10, b"ij")));
        assert_eq!(parts(dir.path()), 0, "the part is deleted");
        // After a rejection, further chunks of it are rejected too (not silently resumed).
        assert!(rejected(r.on_chunk(&h, 4, 10, b"efgh")));
        assert_eq!(parts(dir.path()), 0);

        // A repeated (replayed) chunk.
        fresh(&mut r);
        assert_eq!(r.on_chunk(&h, 0, 10, b"abcd"), ChunkResult::Ack(4));
        assert!(rejected(r.on_chunk(&h, 0, 10, b"abcd")));
        assert_eq!(parts(dir.path()), 0);

        // Oversized chunk, size changed mid-way, past the end.
        fresh(&mut r);
        assert!(rejected(r.on_chunk(&h, 0, 10, b"abcde")));
        fresh(&mut r);
        assert!(rejected(r.on_chunk(&h, 0, 11, b"abcd")));
        fresh(&mut r);
        assert_eq!(r.on_chunk(&h, 0, 10, b"abcd"), ChunkResult::Ack(4));
        assert_eq!(r.on_chunk(&h, 4, 10, b"efgh"), ChunkResult::Ack(8));
        assert!(rejected(r.on_chunk(&h, 8, 10, b"ijk")));
        assert_eq!(parts(dir.path()), 0);

        // A chunk never asked for.
        let other = sha(b"other");
        assert!(rejected(r.on_chunk(&other, 0, 5, b"other")));

        // Corrupted bytes: the sha256 does not match at the end; nothing stored.
        fresh(&mut r);
        assert_eq!(r.on_chunk(&h, 0, 10, b"abcd"), ChunkResult::Ack(4));
        assert_eq!(r.on_chunk(&h, 4, 10, b"eXgh"), ChunkResult::Ack(8));
        let ChunkResult::Complete(part) = r.on_chunk(&h, 8, 10, b"ij") else { panic!() };
        let e = verify(&ctx, &h, &part).unwrap_err();
        assert!(e.contains("mismatch"), "{e}");
        assert_eq!(parts(dir.path()), 0);
        assert_eq!(stored(dir.path()), 0);

        // Offers over the admin's cap are refused for good; empty ones too.
        let a = r.answer_offer(
            &[SampleRef { sha256: h, size: 1001 }, SampleRef { sha256: other, size: 0 }],
            &HashSet::new(),
        );
        assert!(a.iter().all(|a| matches!(a.verdict, SampleVerdict::Refuse { retry: false, .. })));
        assert_eq!(ctx.counters.rejected.load(Ordering::Relaxed), 7, "every rejected chunk is counted");
    }

    #[test]
    fn open_transfers_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path(), 4);
        let mut r = Receiver::new(ctx.clone(), 1);
        let offer: Vec<SampleRef> = (0..3u8).map(|i| SampleRef { sha256: [i; 32], size: 8 }).collect();
        r.answer_offer(&offer, &HashSet::new());
        for i in 0..3u8 {
            let _ = r.on_chunk(&[i; 32], 0, 8, b"abcd");
        }
        assert_eq!(parts(dir.path()), 2, "max_parts = 2");
        let mut r2 = Receiver::new(ctx, 2);
        let a = r2.answer_offer(&[SampleRef { sha256: [9; 32], size: 8 }], &HashSet::new());
        assert!(matches!(a[0].verdict, SampleVerdict::Refuse { retry: true, .. }));
    }
}
