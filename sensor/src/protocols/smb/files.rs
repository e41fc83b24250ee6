//! Files a logged-in attacker opens on a disk share, and the bytes written to them.
//!
//! WHY: psexec-style tools and worms drop their binary with SMB1 or SMB2 WRITEs after a tree
//! connect to `ADMIN$`, `C$` or a share, then run it. The written bytes are the sample, so each
//! file opened for writing gets a `Session::capture("smb-write")` on its first write, and CLOSE
//! (or the end of the connection) records it, named `SHARE\path`.
//!
//! Assembly rule (chosen for boundedness and simplicity): writes must be contiguous — each
//! starting where the last one ended, which is what smbclient, impacket and Windows' copy do,
//! even with several writes in flight (they arrive in offset order on the one TCP stream). The
//! first write that does not continue the file (a gap, or a rewrite of bytes already kept) ends
//! the capture: what came before it is recorded, marked truncated, and later bytes are dropped
//! (the client is still told its writes succeeded). Memory stays bounded: at most
//! [`MAX_OPEN_FILES`] per connection, and each capture streams into the sample area (it keeps
//! only the payload prefix in memory); the bytes themselves are bounded by the session's input
//! cap and the sample cap.

use crate::capture::PayloadCapture;

/// Files one connection may hold open at once (then STATUS_TOO_MANY_OPENED_FILES). Each one
/// written to holds a capture (its payload prefix, up to `limits.max_payload`, and the sample
/// writer's buffer), so this stays small: file drops open one file at a time.
pub const MAX_OPEN_FILES: usize = 4;
/// Longest file name kept (in characters).
pub const MAX_NAME: usize = 260;

/// Where a write of `len` bytes at `offset` lands in a file whose first `next` bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// It continues the file: keep it.
    Append,
    /// It leaves a gap or rewrites kept bytes: the capture ends before it.
    Gap,
}

/// The contiguity rule (pure, fuzzed).
pub fn place_write(next: u64, offset: u64, len: usize) -> Placement {
    if offset == next && offset.checked_add(len as u64).is_some() {
        Placement::Append
    } else {
        Placement::Gap
    }
}

/// One open file.
pub(crate) struct OpenFile {
    /// `SHARE\path` (the sample's name).
    pub name: String,
    pub writable: bool,
    pub directory: bool,
    capture: Option<PayloadCapture>,
    /// Bytes kept so far (the next contiguous offset).
    next: u64,
    /// A write broke contiguity: nothing more is kept.
    gap: bool,
}

impl OpenFile {
    /// The capture to record, if anything was written (marked truncated after a gap).
    pub(crate) fn finish(self) -> Option<(PayloadCapture, String)> {
        let mut capture = self.capture?;
        if self.gap {
            capture.mark_truncated();
        }
        Some((capture, self.name))
    }

    /// Bytes kept so far.
    pub(crate) fn size(&self) -> u64 {
        self.next
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// Kept (or dropped after a gap): the client is told it succeeded.
    Done,
    /// This write broke contiguity (the capture ends before it).
    Gap,
    NotWritable,
    NoSuchFile,
}

/// The open files of one connection (bounded by [`MAX_OPEN_FILES`]).
#[derive(Default)]
pub(crate) struct Files {
    open: Vec<(u64, OpenFile)>,
    next_id: u64,
}

impl Files {
    /// Opens `name`; None when [`MAX_OPEN_FILES`] are open. Ids start at 1 and never repeat
    /// within a connection (SMB1 uses the low 16 bits, which stay unique among open files).
    pub(crate) fn open(&mut self, name: String, writable: bool, directory: bool) -> Option<u64> {
        if self.open.len() >= MAX_OPEN_FILES {
            return None;
        }
        let mut id = self.next_id.wrapping_add(1);
        // Skip 0 and ids whose low 16 bits are in use (SMB1 FIDs), and 0xffff (invalid FID).
        while id as u16 == 0 || id as u16 == 0xffff || self.open.iter().any(|(o, _)| *o as u16 == id as u16) {
            id = id.wrapping_add(1);
        }
        self.next_id = id;
        let name: String = name.chars().take(MAX_NAME).collect();
        self.open.push((id, OpenFile { name, writable, directory, capture: None, next: 0, gap: false }));
        Some(id)
    }

    /// The open file `id`, if any.
    pub(crate) fn get(&self, id: u64) -> Option<&OpenFile> {
        self.open.iter().find(|(o, _)| *o == id).map(|(_, f)| f)
    }

    /// The id of the open file whose SMB1 FID is `fid`.
    pub(crate) fn by_fid(&self, fid: u16) -> Option<u64> {
        self.open.iter().find(|(o, _)| *o as u16 == fid).map(|(o, _)| *o)
    }

    /// Writes `data` at `offset` into file `id`; `new_capture` makes its capture on the first
    /// byte written.
    pub(crate) fn write(
        &mut self,
        id: u64,
        offset: u64,
        data: &[u8],
        new_capture: impl FnOnce() -> PayloadCapture,
    ) -> WriteOutcome {
        let Some((_, f)) = self.open.iter_mut().find(|(o, _)| *o == id) else { return WriteOutcome::NoSuchFile };
        if !f.writable || f.directory {
            return WriteOutcome::NotWritable;
        }
        if f.gap || data.is_empty() {
            return WriteOutcome::Done;
        }
        match place_write(f.next, offset, data.len()) {
            Placement::Append => {
                f.capture.get_or_insert_with(new_capture).update(data);
                f.next += data.len() as u64;
                WriteOutcome::Done
            }
            Placement::Gap => {
                f.gap = true;
                WriteOutcome::Gap
            }
        }
    }

    /// Closes file `id`.
    pub(crate) fn close(&mut self, id: u64) -> Option<OpenFile> {
        let at = self.open.iter().position(|(o, _)| *o == id)?;
        Some(self.open.swap_remove(at).1)
    }

    /// Every file still open (the connection ends).
    pub(crate) fn take_all(&mut self) -> Vec<OpenFile> {
        std::mem::take(&mut self.open).into_iter().map(|(_, f)| f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_writes_are_kept_and_a_gap_ends_the_capture() {
        let mut files = Files::default();
        let id = files.open("C$\\x.exe".into(), true, false).unwrap();
        assert_eq!(files.write(id, 0, b"MZ", || PayloadCapture::new(100)), WriteOutcome::Done);
        assert_eq!(files.write(id, 2, b"abc", || unreachable!()), WriteOutcome::Done);
        assert_eq!(files.get(id).unwrap().size(), 5);
        assert_eq!(files.write(id, 9, b"zz", || unreachable!()), WriteOutcome::Gap);
        assert_eq!(files.write(id, 5, b"later", || unreachable!()), WriteOutcome::Done, "dropped, still answered");
        let f = files.close(id).unwrap();
        assert_eq!(f.size(), 5);
        let (capture, name) = f.finish().unwrap();
        assert_eq!(name, "C$\\x.exe");
        assert_eq!(capture.kept(), b"MZabc");
        assert!(files.close(id).is_none());
    }

    #[test]
    fn open_files_are_bounded_and_fids_stay_unique() {
        let mut files = Files::default();
        let ids: Vec<u64> = (0..MAX_OPEN_FILES).map(|i| files.open(format!("f{i}"), true, false).unwrap()).collect();
        assert!(files.open("one more".into(), true, false).is_none());
        files.close(ids[3]);
        let again = files.open("again".into(), false, false).unwrap();
        assert!(ids.iter().all(|i| *i as u16 != again as u16));
        assert_eq!(files.by_fid(again as u16), Some(again));
        assert_eq!(files.write(again, 0, b"x", || PayloadCapture::new(1)), WriteOutcome::NotWritable);
        assert_eq!(files.write(999_999, 0, b"x", || PayloadCapture::new(1)), WriteOutcome::NoSuchFile);
        assert_eq!(files.take_all().len(), MAX_OPEN_FILES);
    }

    #[test]
    fn placement() {
        assert_eq!(place_write(0, 0, 10), Placement::Append);
        assert_eq!(place_write(10, 10, 0), Placement::Append);
        assert_eq!(place_write(10, 4, 2), Placement::Gap);
        assert_eq!(place_write(10, 11, 2), Placement::Gap);
        assert_eq!(place_write(u64::MAX, u64::MAX, 2), Placement::Gap);
    }
}
