//! `store.seq`: a reserved ceiling for sequence numbers, kept outside the database.
//!
//! The writer never commits a sequence number above the ceiling stored here, and raises the
//! ceiling (by [`RESERVE`]) *before* it needs to. If the database is ever quarantined, the new
//! store starts above the ceiling, so no sequence number is ever reused even when nothing can be
//! read from the old file. The file has two 16-byte slots (value, value XOR magic) written
//! alternately in place and synced: a torn write damages at most one slot, and overwriting needs
//! no new disk blocks (it works on a full disk).

use super::StoreError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: u64 = 0x6472_6f73_6572_6153; // "drosera S"
/// Sequence numbers reserved per ceiling raise.
pub const RESERVE: u64 = 1 << 20;

#[derive(Debug)]
pub struct SeqFile {
    file: File,
    path: PathBuf,
    ceiling: u64,
    next_slot: u64,
}

impl SeqFile {
    pub fn open(path: &Path) -> Result<SeqFile, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        let mut best: Option<(u64, u64)> = None;
        for slot in 0..2u64 {
            let at = (slot * 16) as usize;
            if n < at + 16 {
                continue;
            }
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&buf[at..at + 8]);
            b.copy_from_slice(&buf[at + 8..at + 16]);
            let (v, check) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
            if v ^ MAGIC == check && best.is_none_or(|(bv, _)| v > bv) {
                best = Some((v, slot));
            }
        }
        let (ceiling, last_slot) = best.unwrap_or((0, 1));
        if n < 32 {
            // Allocate both slots now, so later raises never need new blocks.
            let mut init = [0u8; 32];
            for slot in 0..2usize {
                init[slot * 16..slot * 16 + 8].copy_from_slice(&ceiling.to_le_bytes());
                init[slot * 16 + 8..slot * 16 + 16].copy_from_slice(&(ceiling ^ MAGIC).to_le_bytes());
            }
            file.write_all_at(&init, 0).map_err(|e| StoreError::io(path, e))?;
            file.sync_all().map_err(|e| StoreError::io(path, e))?;
        }
        Ok(SeqFile { file, path: path.to_path_buf(), ceiling, next_slot: (last_slot + 1) % 2 })
    }

    /// The highest sequence number that may have been used.
    pub fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// Makes sure sequence numbers up to `upto` are covered, raising the ceiling durably.
    pub fn ensure(&mut self, upto: u64) -> Result<(), StoreError> {
        if upto <= self.ceiling {
            return Ok(());
        }
        let new = upto.saturating_add(RESERVE);
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(&new.to_le_bytes());
        rec[8..].copy_from_slice(&(new ^ MAGIC).to_le_bytes());
        self.file.write_all_at(&rec, self.next_slot * 16).map_err(|e| StoreError::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| StoreError::io(&self.path, e))?;
        self.ceiling = new;
        self.next_slot = (self.next_slot + 1) % 2;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_survives_reopen_and_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let mut f = SeqFile::open(&p).unwrap();
        assert_eq!(f.ceiling(), 0);
        f.ensure(10).unwrap();
        let c1 = f.ceiling();
        f.ensure(c1 + 5).unwrap();
        let c2 = f.ceiling();
        assert!(c2 > c1);
        drop(f);
        assert_eq!(SeqFile::open(&p).unwrap().ceiling(), c2);
        // Damage the newest slot: the older one still bounds what was used before it.
        let raw = std::fs::read(&p).unwrap();
        let mut bad = raw.clone();
        let newest = if u64::from_le_bytes(raw[0..8].try_into().unwrap()) == c2 { 0 } else { 16 };
        bad[newest] ^= 0xff;
        std::fs::write(&p, &bad).unwrap();
        assert_eq!(SeqFile::open(&p).unwrap().ceiling(), c1);
    }
}
