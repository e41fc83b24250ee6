//! The sample store on disk: content-addressed, zstd-compressed, private.
//!
//! Layout under `[samples] dir`:
//! * `store/<first two hex digits>/<sha256>.zst` — one sample, zstd-compressed, mode 0600. The
//!   file is written under `tmp/` and renamed into place, so a reader never sees half of one.
//! * `parts/<sha256>-<sensor id>.part` — a transfer in progress (mode 0600); its length is the
//!   offset a resumed transfer continues from. One per (sample, sensor), so two sensors sending
//!   the same sample never write into one file.
//! * `tmp/` — files being compressed; emptied at start.
//!
//! WHY compressed and renamed: a sample is never executable and never opened except to hash,
//! classify, compress and serve it; compressed it cannot be run by accident either, and the
//! store's byte cap counts what the disk really holds.

use sha2::Digest;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// zstd level for stored samples.
const LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sample store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0:?} is not a sha256 (64 hex digits)")]
    BadHash(String),
    #[error("stored sample {path} decompresses to more than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("sample {0} is not in the store")]
    Missing(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// The three digests of a sample, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: String,
    pub sha1: String,
}

impl Digests {
    pub fn of(bytes: &[u8]) -> Digests {
        Digests {
            sha256: hex::encode(sha2::Sha256::digest(bytes)),
            md5: hex::encode(md5::Md5::digest(bytes)),
            sha1: hex::encode(sha1::Sha1::digest(bytes)),
        }
    }
}

/// True for 64 lowercase hex digits (the only form a hash takes in a path).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The sample store's folders.
#[derive(Debug)]
pub struct SampleStore {
    dir: PathBuf,
    next_tmp: AtomicU64,
}

impl SampleStore {
    /// Opens (creating, mode 0700) the store under `dir`; empties `tmp/`.
    pub fn open(dir: &Path) -> Result<SampleStore, StoreError> {
        for d in [dir.to_path_buf(), dir.join("store"), dir.join("parts"), dir.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(io(&d))?;
        }
        let tmp = dir.join("tmp");
        for e in std::fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        Ok(SampleStore { dir: dir.to_path_buf(), next_tmp: AtomicU64::new(0) })
    }

    /// The store under `dir` for reading only (the dashboard, the CLI): nothing is created and
    /// `tmp/` is left alone, so a reader never deletes what a running admin is writing.
    pub fn reader(dir: &Path) -> SampleStore {
        SampleStore { dir: dir.to_path_buf(), next_tmp: AtomicU64::new(0) }
    }

    /// Where sample `sha256` (hex) is stored.
    pub fn path_of(&self, sha256: &str) -> Result<PathBuf, StoreError> {
        if !is_sha256_hex(sha256) {
            return Err(StoreError::BadHash(sha256.to_string()));
        }
        Ok(self.dir.join("store").join(&sha256[..2]).join(format!("{sha256}.zst")))
    }

    /// The part file of a transfer of `sha256` from sensor `sensor_id`.
    pub fn part_of(&self, sha256: &[u8; 32], sensor_id: i64) -> PathBuf {
        self.dir.join("parts").join(format!("{}-{sensor_id}.part", hex::encode(sha256)))
    }

    /// Part files now.
    pub fn parts(&self) -> usize {
        std::fs::read_dir(self.dir.join("parts")).map(|d| d.flatten().count()).unwrap_or(0)
    }

    /// Compresses `bytes` into the store as `sha256`; returns the compressed size.
    pub fn put(&self, sha256: &str, bytes: &[u8]) -> Result<u64, StoreError> {
        let dest = self.path_of(sha256)?;
        let parent = dest.parent().map(Path::to_path_buf).unwrap_or_else(|| self.dir.join("store"));
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let tmp = self.dir.join("tmp").join(format!("{}.zst", self.next_tmp.fetch_add(1, Ordering::Relaxed)));
        let result = (|| {
            let f =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
            let mut enc = zstd::stream::write::Encoder::new(f, LEVEL).map_err(io(&tmp))?;
            enc.write_all(bytes).map_err(io(&tmp))?;
            let f = enc.finish().map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            let len = f.metadata().map_err(io(&tmp))?.len();
            std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
            Ok(len)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// The bytes of a stored sample, at most `max` (a corrupt file cannot balloon memory).
    pub fn get(&self, sha256: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(sha256)?;
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::Missing(sha256.into())),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let dec = zstd::stream::read::Decoder::new(f).map_err(io(&path))?;
        let mut out = Vec::new();
        dec.take(max.saturating_add(1)).read_to_end(&mut out).map_err(io(&path))?;
        if out.len() as u64 > max {
            return Err(StoreError::TooLarge { path, max });
        }
        Ok(out)
    }

    /// The first `n` bytes of a stored sample (fewer if it is shorter); only those are
    /// decompressed (the dashboard's preview).
    pub fn head(&self, sha256: &str, n: usize) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(sha256)?;
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::Missing(sha256.into())),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let dec = zstd::stream::read::Decoder::new(f).map_err(io(&path))?;
        let mut out = Vec::with_capacity(n.min(1 << 16));
        dec.take(n as u64).read_to_end(&mut out).map_err(io(&path))?;
        Ok(out)
    }

    /// Deletes a stored sample's file (missing is fine).
    pub fn remove(&self, sha256: &str) {
        if let Ok(p) = self.path_of(sha256) {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "cannot delete a stored sample");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_round_trip_private_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SampleStore::open(dir.path()).unwrap();
        let bytes = b"\x7fELF and then some".repeat(100);
        let d = Digests::of(&bytes);
        let n = store.put(&d.sha256, &bytes).unwrap();
        assert!(n > 0 && n < bytes.len() as u64);
        let p = store.path_of(&d.sha256).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(store.get(&d.sha256, 1 << 20).unwrap(), bytes);
        assert!(matches!(store.get(&d.sha256, 10), Err(StoreError::TooLarge { .. })));
        assert!(matches!(store.get(&"0".repeat(64), 10), Err(StoreError::Missing(_))));
        assert_eq!(store.head(&d.sha256, 7).unwrap(), &bytes[..7]);
        assert_eq!(store.head(&d.sha256, 1 << 20).unwrap(), bytes);
        assert!(matches!(store.path_of("../../etc/passwd"), Err(StoreError::BadHash(_))));
        assert_eq!(d.md5.len(), 32);
        assert_eq!(d.sha1.len(), 40);
        store.remove(&d.sha256);
        assert!(!p.exists());
    }
}
