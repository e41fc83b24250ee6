//! One way to capture a payload: an HTTP body, an FTP upload, the bytes a blackhole port
//! received, an SMB exploit transaction.
//!
//! WHY one type: every capture does the same three things (hash everything that arrives, count
//! it, keep a bounded prefix) and ends in the same [`Detail::Payload`]. Written out in each
//! protocol handler it was four slightly different copies; here the caps are enforced once, and
//! a delivered file (an upload, a body, a dropped binary) is also streamed into the bounded
//! sample area by the same type ([`PayloadCapture::with_sample`], made by `Session::capture`),
//! so its callers only ever call [`PayloadCapture::update`] as bytes arrive and
//! [`PayloadCapture::finish`] at the end.
//!
//! Bounded: memory is at most the `keep` bytes the caller allows (the session's payload cap,
//! 0 while the governor pauses payloads); the hash state is constant-size whatever the payload.

use crate::samples::SampleWriter;
use drosera_uplink::event::{Detail, MAX_PAYLOAD_PREFIX};
use sha2::{Digest, Sha256};

/// Who computes the hash: the capture itself, or the sample writer that also keeps the bytes
/// (so a file is hashed once, not twice).
enum Hashing {
    Own(Sha256),
    Sample { writer: Box<SampleWriter>, source: &'static str },
}

/// An incremental capture of one payload.
pub(crate) struct PayloadCapture {
    hashing: Hashing,
    size: u64,
    kept: Vec<u8>,
    keep: usize,
    truncated: bool,
}

/// A finished capture: the payload event and, for a delivered file, its sample event.
pub(crate) struct Captured {
    pub payload: Detail,
    pub sample: Option<Detail>,
}

impl PayloadCapture {
    /// A capture that hashes and counts everything it is given and keeps the first `keep` bytes.
    pub(crate) fn new(keep: usize) -> PayloadCapture {
        PayloadCapture { hashing: Hashing::Own(Sha256::new()), size: 0, kept: Vec::new(), keep, truncated: false }
    }

    /// A capture of a whole delivered file: as [`new`](Self::new), and every byte also goes to
    /// `writer` (the sample area), which does the hashing. `source` names the channel. The file
    /// itself is in the sample area, so memory keeps only the prefix its event carries (at most
    /// [`MAX_PAYLOAD_PREFIX`] of `keep`): fifty 16 MiB uploads at once must not hold fifty
    /// payload caps in memory.
    pub(crate) fn with_sample(keep: usize, writer: SampleWriter, source: &'static str) -> PayloadCapture {
        PayloadCapture {
            hashing: Hashing::Sample { writer: Box::new(writer), source },
            size: 0,
            kept: Vec::new(),
            keep: keep.min(MAX_PAYLOAD_PREFIX),
            truncated: false,
        }
    }

    /// Adds the next bytes of the payload.
    pub(crate) fn update(&mut self, data: &[u8]) {
        match &mut self.hashing {
            Hashing::Own(h) => h.update(data),
            Hashing::Sample { writer, .. } => writer.write(data),
        }
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
    #[allow(dead_code)] // no handler looks into its payload since HTTP forms are not captures
    pub(crate) fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// True when every byte received was also kept.
    #[allow(dead_code)] // as `kept`
    pub(crate) fn kept_all(&self) -> bool {
        self.kept.len() as u64 == self.size
    }

    /// Records that the payload was cut short: the hash and size cover only what was captured.
    pub(crate) fn mark_truncated(&mut self) {
        self.truncated = true;
    }

    /// Records that the delivery ended before the whole file arrived (the client left or went
    /// idle, a limit ended the session): the payload is truncated and, for a file, the part
    /// received is not kept as a sample (its event says `Incomplete`, unless it was already too
    /// large).
    pub(crate) fn mark_incomplete(&mut self) {
        self.truncated = true;
        if let Hashing::Sample { writer, .. } = &mut self.hashing {
            writer.cut_short();
        }
    }

    /// Ends the capture: the payload event, named `name` (the attacker's file name, a path, or
    /// empty), and for a file the sample event saying whether the sample area kept it. A file
    /// larger than the sample cap is hashed up to the cap only, and its payload is marked
    /// truncated (the hash does not cover all of it).
    pub(crate) fn finish(self, name: impl Into<String>) -> Captured {
        let name = name.into();
        let mut prefix = self.kept;
        prefix.truncate(MAX_PAYLOAD_PREFIX);
        let (sha256, truncated, sample) = match self.hashing {
            Hashing::Own(h) => (h.finalize().into(), self.truncated, None),
            Hashing::Sample { writer, source } => {
                let r = writer.finish();
                let sample = Detail::Sample {
                    sha256: r.sha256,
                    size: self.size,
                    name: name.clone(),
                    source: source.to_string(),
                    outcome: r.outcome,
                };
                let cut = matches!(
                    r.outcome,
                    drosera_uplink::event::SampleOutcome::TooLarge | drosera_uplink::event::SampleOutcome::Incomplete
                );
                (r.sha256, self.truncated || cut, Some(sample))
            }
        };
        Captured { payload: Detail::Payload { sha256, size: self.size, name, prefix, truncated }, sample }
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
        let (sha, size, name, prefix, truncated) = parts(c.finish("x.bin").payload);
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
        let (sha, size, _, prefix, truncated) = parts(c.finish(String::new()).payload);
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(b"abc")));
        assert_eq!((size, prefix.len(), truncated), (3, 0, true));
        let mut whole = PayloadCapture::new(16);
        whole.update(b"abc");
        assert!(whole.kept_all());
    }
}
