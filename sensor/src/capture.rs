//! One way to capture a payload: an HTTP body, an FTP upload, the bytes a blackhole port
//! received, an SMB exploit transaction.
//!
//! WHY one type: every capture does the same three things (hash everything that arrives, count
//! it, keep a bounded prefix) and ends in the same [`Detail::Payload`]. Written out in each
//! protocol handler it was four slightly different copies; here the caps are enforced once, and
//! the sample-capture work (writing the bytes to a bounded sample file as well) extends this one
//! type without touching its callers, which only ever call [`PayloadCapture::update`] as bytes
//! arrive and [`PayloadCapture::finish`] at the end.
//!
//! Bounded: memory is at most the `keep` bytes the caller allows (the session's payload cap,
//! 0 while the governor pauses payloads); the hash state is constant-size whatever the payload.

use drosera_uplink::event::{Detail, MAX_PAYLOAD_PREFIX};
use sha2::{Digest, Sha256};

/// An incremental capture of one payload.
pub(crate) struct PayloadCapture {
    hasher: Sha256,
    size: u64,
    kept: Vec<u8>,
    keep: usize,
    truncated: bool,
}

impl PayloadCapture {
    /// A capture that hashes and counts everything it is given and keeps the first `keep` bytes.
    pub(crate) fn new(keep: usize) -> PayloadCapture {
        PayloadCapture { hasher: Sha256::new(), size: 0, kept: Vec::new(), keep, truncated: false }
    }

    /// Adds the next bytes of the payload.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.size += data.len() as u64;
        let room = self.keep.saturating_sub(self.kept.len());
        if room > 0 {
            self.kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    /// Bytes received so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The kept prefix (at most `keep` bytes), for handlers that look into the payload.
    pub(crate) fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// True when every byte received was also kept.
    pub(crate) fn kept_all(&self) -> bool {
        self.kept.len() as u64 == self.size
    }

    /// Records that the payload was cut short: the hash and size cover only what was captured.
    pub(crate) fn mark_truncated(&mut self) {
        self.truncated = true;
    }

    /// The payload event, named `name` (the attacker's file name, a path, or empty).
    pub(crate) fn finish(self, name: impl Into<String>) -> Detail {
        let mut prefix = self.kept;
        prefix.truncate(MAX_PAYLOAD_PREFIX);
        Detail::Payload {
            sha256: self.hasher.finalize().into(),
            size: self.size,
            name: name.into(),
            prefix,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(d: Detail) -> ([u8; 32], u64, String, Vec<u8>, bool) {
        match d {
            Detail::Payload { sha256, size, name, prefix, truncated } => (sha256, size, name, prefix, truncated),
            other => panic!("not a payload: {other:?}"),
        }
    }

    #[test]
    fn hashes_everything_in_pieces_and_keeps_a_bounded_prefix() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut c = PayloadCapture::new(6000);
        for piece in data.chunks(777) {
            c.update(piece);
        }
        assert_eq!(c.size(), 10_000);
        assert_eq!(c.kept(), &data[..6000]);
        assert!(!c.kept_all());
        let (sha, size, name, prefix, truncated) = parts(c.finish("x.bin"));
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!((size, name.as_str(), truncated), (10_000, "x.bin", false));
        assert_eq!(prefix, &data[..MAX_PAYLOAD_PREFIX], "the event carries at most MAX_PAYLOAD_PREFIX bytes");
    }

    #[test]
    fn keeping_nothing_still_hashes_and_truncation_is_the_callers_call() {
        let mut c = PayloadCapture::new(0);
        c.update(b"abc");
        assert!(c.kept().is_empty() && !c.kept_all());
        c.mark_truncated();
        let (sha, size, _, prefix, truncated) = parts(c.finish(String::new()));
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(b"abc")));
        assert_eq!((size, prefix.len(), truncated), (3, 0, true));
        let mut whole = PayloadCapture::new(16);
        whole.update(b"abc");
        assert!(whole.kept_all());
    }
}
