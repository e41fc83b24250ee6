//! The sample area: whole files that attackers deliver, kept on disk until the admin has them.
//!
//! WHY a separate area and not the event store: a sample is up to `max_sample_bytes` (16 MiB by
//! default) and must never be held whole in memory, so it is streamed to a file while it
//! arrives ([`SampleWriter`]); the event store keeps only the [`Detail::Sample`] event that
//! names it by sha256. The area has its own byte and file caps, and it never takes disk space
//! the event store may still need: its effective cap is
//! `min(cap_bytes, area bytes + free disk - store reserve - what the store may still grow)`.
//!
//! Layout under `data_dir/samples/`:
//! * `<sha256 hex>` — one kept sample, mode 0400, content-addressed (so the same bytes from many
//!   sessions or sensors are one file). Never executable, never opened by anything but the
//!   writer that hashed it and the shipper that sends it.
//! * `tmp/<n>.part` — a sample being received, mode 0600. On finish it is fsynced and renamed
//!   to its hash (or deleted when that hash is already there); at start every leftover part is
//!   deleted (a part is never a sample).
//!
//! Every delivered file ends in exactly one [`SampleOutcome`]: kept, already kept, or why not
//! (too large, area full, paused, disabled, failed), which the caller records as an event. A
//! sample the area could not keep is therefore never silent. Kept samples stay until the
//! shipper reports that the admin has stored them ([`SampleArea::remove_shipped`]); the area
//! never evicts an unshipped sample to make room for a new one.

use crate::config::SamplesSection;
use drosera_uplink::event::{to_hex, SampleOutcome};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Name of the area's directory inside `data_dir`.
pub const SAMPLES_DIR: &str = "samples";
/// Disk space is reserved in steps of this many bytes while a sample arrives.
const RESERVE_STEP: u64 = 1024 * 1024;
/// Writes are gathered into this many bytes before they reach the file.
const WRITE_BUFFER: usize = 64 * 1024;

/// Errors of opening the area (writing a sample never returns an error: it ends in an outcome).
#[derive(Debug, thiserror::Error)]
pub enum SampleAreaError {
    #[error("sample area {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One kept sample, as the shipper sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptSample {
    pub sha256: [u8; 32],
    pub size: u64,
}

/// Bytes of disk the area may still fill, asked each time it reserves space: the free disk
/// minus what the event store may still claim (its reserve, and its room up to its cap). See
/// [`disk_room`].
pub type DiskRoom = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The production [`DiskRoom`]: free disk on `dir`'s filesystem minus `store_claim()`.
pub fn disk_room(dir: PathBuf, store_claim: impl Fn() -> u64 + Send + Sync + 'static) -> DiskRoom {
    Arc::new(move || crate::store::dir_free_bytes(&dir).unwrap_or(0).saturating_sub(store_claim()))
}

/// Live counters (health and tests read them).
#[derive(Debug, Default)]
pub struct SampleCounters {
    pub kept: AtomicU64,
    pub already_kept: AtomicU64,
    pub not_kept: AtomicU64,
    pub shipped: AtomicU64,
}

struct AreaState {
    /// Kept samples by hash (bounded by `max_files`).
    files: BTreeMap<[u8; 32], u64>,
    /// Bytes of kept samples.
    kept_bytes: u64,
    /// Bytes reserved by writers still receiving (each reserves before it writes)...
    reserved: u64,
    /// ...of which this many are already written to their part files.
    written: u64,
    /// Writers currently receiving.
    writers: usize,
    next_part: u64,
}

/// The bounded sample area. Cheap to share (`Arc`).
pub struct SampleArea {
    dir: PathBuf,
    tmp: PathBuf,
    cfg: SamplesSection,
    room: DiskRoom,
    state: Mutex<AreaState>,
    pub counters: SampleCounters,
}

impl std::fmt::Debug for SampleArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleArea").field("dir", &self.dir).finish()
    }
}

impl SampleArea {
    /// Opens (creating) `data_dir/samples`, deletes leftover parts and indexes kept samples.
    /// `room` tells how much more disk the area may fill (see [`disk_room`]).
    pub fn open(data_dir: &Path, cfg: SamplesSection, room: DiskRoom) -> Result<Arc<SampleArea>, SampleAreaError> {
        let dir = data_dir.join(SAMPLES_DIR);
        let tmp = dir.join("tmp");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SampleAreaError::Io { path, source }
        };
        for d in [&dir, &tmp] {
            std::fs::create_dir_all(d).map_err(io(d))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(io(d))?;
        }
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let mut files = BTreeMap::new();
        let mut kept_bytes = 0;
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let Some(hash) = entry.file_name().to_str().and_then(parse_hex32) else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                files.insert(hash, meta.len());
                kept_bytes += meta.len();
            }
        }
        Ok(Arc::new(SampleArea {
            dir,
            tmp,
            cfg,
            room,
            state: Mutex::new(AreaState { files, kept_bytes, reserved: 0, written: 0, writers: 0, next_part: 0 }),
            counters: SampleCounters::default(),
        }))
    }

    fn state(&self) -> MutexGuard<'_, AreaState> {
        // A panic while holding this lock cannot leave the plain counters inconsistent enough
        // to matter more than losing the area; keep going with the inner value.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Per-sample cap in bytes.
    pub fn max_sample_bytes(&self) -> u64 {
        self.cfg.max_sample_bytes
    }

    /// Starts receiving one sample. `paused` is true while the memory governor says to keep no
    /// payloads. The writer always exists, so that the caller can hash what it receives and
    /// record an outcome even when nothing is kept.
    pub fn begin(self: &Arc<Self>, paused: bool) -> SampleWriter {
        let mut w = SampleWriter::blank(Some(self.clone()));
        if !self.cfg.enabled {
            w.refused = Some(SampleOutcome::Disabled);
            return w;
        }
        if paused {
            w.refused = Some(SampleOutcome::Paused);
            return w;
        }
        let part = {
            let mut st = self.state();
            if st.writers >= self.cfg.max_writers {
                drop(st);
                w.refused = Some(SampleOutcome::Paused);
                return w;
            }
            st.writers += 1;
            st.next_part += 1;
            self.tmp.join(format!("{}.part", st.next_part))
        };
        w.registered = true;
        // The part file is created with the first write-out: a small sample that turns out to
        // be one already kept (a print job or a dropper sent again) never touches the disk.
        w.part = part;
        w
    }

    /// Reserves `n` more bytes for a writer, or says why not.
    fn reserve(&self, n: u64) -> Result<(), SampleOutcome> {
        let room = (self.room)();
        let mut st = self.state();
        // What the area will hold once every reservation is written, against its cap and against
        // what is on disk now plus the room left (written parts already took their share of it).
        let future = st.kept_bytes + st.reserved + n;
        let disk_limit = st.kept_bytes + st.written + room;
        if future > self.cfg.cap_bytes.min(disk_limit) {
            return Err(SampleOutcome::AreaFull);
        }
        st.reserved += n;
        Ok(())
    }

    /// Kept samples, oldest hash order (the shipper offers them to the admin).
    pub fn kept(&self, limit: usize) -> Vec<KeptSample> {
        self.state().files.iter().take(limit).map(|(h, s)| KeptSample { sha256: *h, size: *s }).collect()
    }

    /// Number and bytes of kept samples.
    pub fn usage(&self) -> (usize, u64) {
        let st = self.state();
        (st.files.len(), st.kept_bytes)
    }

    /// Path of a kept sample (for the shipper, which opens it read-only).
    pub fn path_of(&self, sha256: &[u8; 32]) -> Option<PathBuf> {
        self.state().files.contains_key(sha256).then(|| self.dir.join(to_hex(sha256)))
    }

    /// The admin has stored this sample (or already had it): delete the local copy.
    pub fn remove_shipped(&self, sha256: &[u8; 32]) {
        let removed = {
            let mut st = self.state();
            let size = st.files.remove(sha256);
            if let Some(s) = size {
                st.kept_bytes -= s;
            }
            size.is_some()
        };
        if removed {
            let path = self.dir.join(to_hex(sha256));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a shipped sample");
            }
            self.counters.shipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self, outcome: SampleOutcome) {
        let c = match outcome {
            SampleOutcome::Kept => &self.counters.kept,
            SampleOutcome::AlreadyKept => &self.counters.already_kept,
            _ => &self.counters.not_kept,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What became of one delivered file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleResult {
    /// sha256 of everything received (for `TooLarge`: of the first `max_sample_bytes`).
    pub sha256: [u8; 32],
    /// Bytes received (for `TooLarge`, counting stops at the cap plus one).
    pub size: u64,
    pub outcome: SampleOutcome,
}

/// One sample being received: hashes everything, streams it to a part file while the area has
/// room, and ends in a [`SampleResult`]. Dropping it unfinished deletes the part.
pub struct SampleWriter {
    /// `None` for a writer that keeps nothing ([`SampleWriter::not_kept`]).
    area: Option<Arc<SampleArea>>,
    file: Option<std::fs::File>,
    part: PathBuf,
    buf: Vec<u8>,
    hasher: Sha256,
    size: u64,
    reserved: u64,
    /// Bytes of this sample in its part file.
    written: u64,
    registered: bool,
    /// Set once the sample cannot be kept any more (it is still hashed).
    refused: Option<SampleOutcome>,
}

impl SampleWriter {
    /// A writer without an area: it hashes and counts, and ends in `outcome` (for a sensor or a
    /// test without a sample area).
    pub fn not_kept(outcome: SampleOutcome) -> SampleWriter {
        let mut w = SampleWriter::blank(None);
        w.refused = Some(outcome);
        w
    }

    fn blank(area: Option<Arc<SampleArea>>) -> SampleWriter {
        SampleWriter {
            area,
            file: None,
            part: PathBuf::new(),
            buf: Vec::new(),
            hasher: Sha256::new(),
            size: 0,
            reserved: 0,
            written: 0,
            registered: false,
            refused: None,
        }
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True while the bytes are still being kept (callers may stop reading early otherwise).
    pub fn keeping(&self) -> bool {
        self.refused.is_none()
    }

    /// Adds received bytes. Never fails: a problem turns into the final outcome.
    pub fn write(&mut self, data: &[u8]) {
        let cap = self.area.as_ref().map_or(u64::MAX - 1, |a| a.cfg.max_sample_bytes);
        if self.size > cap {
            return;
        }
        // Hash (and keep) at most the cap; one byte past it marks the sample too large.
        let within = ((cap - self.size) as usize).min(data.len());
        self.hasher.update(&data[..within]);
        self.size += data.len().min(within + 1) as u64;
        if self.size > cap {
            // Too large wins over a full area: it would never be kept, and it says that the
            // hash covers only the first `cap` bytes.
            if self.refused == Some(SampleOutcome::AreaFull) {
                self.refused = None;
            }
            self.refuse(SampleOutcome::TooLarge);
            return;
        }
        if self.refused.is_some() {
            return;
        }
        let Some(area) = self.area.clone() else { return };
        while self.size > self.reserved {
            if let Err(outcome) = area.reserve(RESERVE_STEP) {
                self.refuse(outcome);
                return;
            }
            self.reserved += RESERVE_STEP;
        }
        self.buf.extend_from_slice(&data[..within]);
        if self.buf.len() >= WRITE_BUFFER {
            self.write_out();
        }
    }

    fn write_out(&mut self) {
        if self.file.is_none() && self.registered {
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&self.part) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    tracing::warn!(path = %self.part.display(), error = %e, "cannot create a sample file");
                    self.refuse(SampleOutcome::Failed);
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_all(&self.buf) {
                self.buf.clear();
                tracing::warn!(path = %self.part.display(), error = %e, "cannot write a sample");
                self.refuse(if e.raw_os_error() == Some(libc::ENOSPC) {
                    SampleOutcome::AreaFull
                } else {
                    SampleOutcome::Failed
                });
                return;
            }
            self.written += self.buf.len() as u64;
            if let Some(area) = &self.area {
                area.state().written += self.buf.len() as u64;
            }
        }
        self.buf.clear();
    }

    /// The delivery ended before the whole file arrived: what arrived is hashed but not kept
    /// (a partial file is not a sample), and the outcome says `Incomplete` (unless an outcome,
    /// such as `TooLarge`, was already decided).
    pub fn cut_short(&mut self) {
        self.refuse(SampleOutcome::Incomplete);
    }

    /// Stops keeping this sample (it is still hashed to the end); releases the disk at once.
    fn refuse(&mut self, outcome: SampleOutcome) {
        if self.refused.is_none() {
            self.refused = Some(outcome);
        }
        self.discard();
    }

    fn discard(&mut self) {
        self.buf = Vec::new();
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.part);
        }
        if let (Some(area), true) = (&self.area, self.reserved > 0 || self.written > 0) {
            let mut st = area.state();
            st.reserved -= self.reserved.min(st.reserved);
            st.written -= self.written.min(st.written);
            self.reserved = 0;
            self.written = 0;
        }
    }

    /// Ends the sample: renames the part to its hash (durably) or says why it was not kept.
    pub fn finish(mut self) -> SampleResult {
        let sha256: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        let outcome = match self.refused {
            Some(o) => o,
            // Already kept: nothing more to write and no fsync (a part written out while the
            // bytes arrived is removed below; the rename's lock checks again for a race).
            None if self.already_kept(&sha256) => SampleOutcome::AlreadyKept,
            None => {
                self.write_out();
                match self.refused {
                    Some(o) => o,
                    None => self.commit(&sha256),
                }
            }
        };
        if outcome != SampleOutcome::Kept {
            self.discard();
        }
        if let Some(area) = &self.area {
            area.count(outcome);
        }
        SampleResult { sha256, size: self.size, outcome }
    }

    /// True when the area already holds sample `sha256`.
    fn already_kept(&self, sha256: &[u8; 32]) -> bool {
        self.area.as_ref().is_some_and(|a| a.state().files.contains_key(sha256))
    }

    /// Makes the part the kept sample `sha256` (or drops it as a duplicate).
    fn commit(&mut self, sha256: &[u8; 32]) -> SampleOutcome {
        let Some(area) = self.area.clone() else { return SampleOutcome::Failed };
        let Some(file) = self.file.take() else { return SampleOutcome::Failed };
        // Durable and read-only before it gets its name: a kept sample is never half-written.
        if let Err(e) = file.sync_all().and_then(|_| file.set_permissions(std::fs::Permissions::from_mode(0o400))) {
            tracing::warn!(path = %self.part.display(), error = %e, "cannot keep a sample");
            let _ = std::fs::remove_file(&self.part);
            return SampleOutcome::Failed;
        }
        drop(file);
        let final_path = area.dir.join(to_hex(sha256));
        {
            // Check and rename under one lock, so two sessions with the same bytes make one file.
            let mut st = area.state();
            if st.files.contains_key(sha256) {
                drop(st);
                let _ = std::fs::remove_file(&self.part);
                return SampleOutcome::AlreadyKept;
            }
            if st.files.len() >= area.cfg.max_files {
                drop(st);
                let _ = std::fs::remove_file(&self.part);
                return SampleOutcome::AreaFull;
            }
            if let Err(e) = std::fs::rename(&self.part, &final_path) {
                drop(st);
                tracing::warn!(path = %final_path.display(), error = %e, "cannot keep a sample");
                let _ = std::fs::remove_file(&self.part);
                return SampleOutcome::Failed;
            }
            st.reserved -= self.reserved.min(st.reserved);
            st.written -= self.written.min(st.written);
            self.reserved = 0;
            self.written = 0;
            st.kept_bytes += self.size;
            st.files.insert(*sha256, self.size);
        }
        // The rename itself survives a power cut once the directory is synced.
        if let Err(e) = std::fs::File::open(&area.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(path = %area.dir.display(), error = %e, "cannot sync the sample directory");
        }
        SampleOutcome::Kept
    }
}

impl Drop for SampleWriter {
    fn drop(&mut self) {
        self.discard();
        if let (Some(area), true) = (&self.area, self.registered) {
            let mut st = area.state();
            st.writers = st.writers.saturating_sub(1);
        }
    }
}

/// Parses 64 lower-case hex digits.
fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SamplesSection {
        SamplesSection { cap_bytes: 8 * 1024 * 1024, max_sample_bytes: 3 * 1024 * 1024, ..SamplesSection::default() }
    }

    fn area(dir: &Path, cfg: SamplesSection) -> Arc<SampleArea> {
        SampleArea::open(dir, cfg, Arc::new(|| u64::MAX / 4)).unwrap()
    }

    fn receive(a: &Arc<SampleArea>, bytes: &[u8]) -> SampleResult {
        let mut w = a.begin(false);
        for chunk in bytes.chunks(7000) {
            w.write(chunk);
        }
        w.finish()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_sample_is_kept_whole_read_only_and_by_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let a = area(dir.path(), cfg());
        let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let r = receive(&a, &bytes);
        assert_eq!(r.outcome, SampleOutcome::Kept);
        assert_eq!(r.size, bytes.len() as u64);
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(r.sha256, want);
        let path = a.path_of(&want).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(mode(&path), 0o400);
        assert_eq!(mode(&dir.path().join(SAMPLES_DIR)), 0o700);
        assert_eq!(a.usage(), (1, bytes.len() as u64));
        assert_eq!(std::fs::read_dir(dir.path().join("samples/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn the_same_bytes_twice_are_one_file_and_one_more_sighting() {
        let dir = tempfile::tempdir().unwrap();
        let a = area(dir.path(), cfg());
        assert_eq!(receive(&a, b"\x7fELF same").outcome, SampleOutcome::Kept);
        assert_eq!(receive(&a, b"\x7fELF same").outcome, SampleOutcome::AlreadyKept);
        assert_eq!(a.usage().0, 1);
        assert_eq!(a.counters.already_kept.load(Ordering::Relaxed), 1);
        // A small repeat never reaches the disk: no part file while it arrives.
        let tmp = dir.path().join("samples/tmp");
        let mut w = a.begin(false);
        w.write(b"\x7fELF same");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "a part file for bytes still in memory");
        assert_eq!(w.finish().outcome, SampleOutcome::AlreadyKept);
        // A large repeat (written out while it arrived) is dropped, its part removed.
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        assert_eq!(receive(&a, &big).outcome, SampleOutcome::Kept);
        assert_eq!(receive(&a, &big).outcome, SampleOutcome::AlreadyKept);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(a.usage().0, 2);
    }

    #[test]
    fn too_large_is_hashed_up_to_the_cap_and_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = area(dir.path(), cfg());
        let cap = cfg().max_sample_bytes as usize;
        let bytes = vec![0x41u8; cap + 10_000];
        let r = receive(&a, &bytes);
        assert_eq!(r.outcome, SampleOutcome::TooLarge);
        assert_eq!(r.size, cap as u64 + 1);
        let want: [u8; 32] = Sha256::digest(&bytes[..cap]).into();
        assert_eq!(r.sha256, want);
        assert_eq!(a.usage(), (0, 0));
        // Exactly the cap is still kept.
        assert_eq!(receive(&a, &bytes[..cap]).outcome, SampleOutcome::Kept);
    }

    #[test]
    fn an_oversized_file_into_a_full_area_is_too_large_and_a_cut_one_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let a = area(dir.path(), SamplesSection { cap_bytes: 4 * 1024 * 1024, ..cfg() });
        for i in 0..4u8 {
            assert_eq!(receive(&a, &vec![i; 1024 * 1024]).outcome, SampleOutcome::Kept);
        }
        let big = vec![9u8; cfg().max_sample_bytes as usize + 1];
        let r = receive(&a, &big);
        assert_eq!(r.outcome, SampleOutcome::TooLarge, "not area_full: it could never be kept");
        assert_eq!(r.sha256, <[u8; 32]>::from(Sha256::digest(&big[..big.len() - 1])));
        assert_eq!(receive(&a, &[1u8; 10]).outcome, SampleOutcome::AreaFull);
        // Cut short: hashed, not kept, nothing left on disk.
        let dir2 = tempfile::tempdir().unwrap();
        let roomy = area(dir2.path(), cfg());
        let mut w = roomy.begin(false);
        w.write(&[3u8; 100_000]);
        w.cut_short();
        w.write(&[3u8; 10]);
        let r = w.finish();
        assert_eq!(r.outcome, SampleOutcome::Incomplete);
        assert_eq!(r.sha256, <[u8; 32]>::from(Sha256::digest([3u8; 100_010])));
        assert_eq!(roomy.usage(), (0, 0));
        assert_eq!(roomy.counters.not_kept.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_area_cap_refuses_new_samples_and_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let a = area(dir.path(), cfg());
        let mut outcomes = Vec::new();
        for i in 0..6u8 {
            outcomes.push(receive(&a, &vec![i; 2 * 1024 * 1024]).outcome);
        }
        // 8 MiB cap, reserved in 1 MiB steps: four 2 MiB samples fit, then none.
        assert_eq!(outcomes.iter().filter(|o| **o == SampleOutcome::Kept).count(), 4, "{outcomes:?}");
        assert_eq!(outcomes[5], SampleOutcome::AreaFull);
        let (_, bytes) = a.usage();
        assert!(bytes <= cfg().cap_bytes);
        // Shipping one frees room for the next.
        let first = a.kept(1)[0];
        a.remove_shipped(&first.sha256);
        assert_eq!(receive(&a, &[9u8; 1000]).outcome, SampleOutcome::Kept);
    }

    #[test]
    fn the_store_claim_leaves_the_event_store_its_room() {
        let dir = tempfile::tempdir().unwrap();
        // A disk with 2.5 MiB left beyond the store's claim, which the area's own files use up
        // as they are written (measured from the area's directory, so other writers on this
        // machine's disk do not matter).
        let samples = dir.path().join(SAMPLES_DIR);
        let room = move || {
            let on_disk: u64 = walk_sizes(&samples);
            (5 * RESERVE_STEP / 2).saturating_sub(on_disk)
        };
        let a = SampleArea::open(dir.path(), cfg(), Arc::new(room)).unwrap();
        assert_eq!(receive(&a, &[1u8; 1000]).outcome, SampleOutcome::Kept);
        // 1000 bytes on disk + 2 MiB reserved for the next fits in 2.5 MiB; 3 MiB does not.
        assert_eq!(receive(&a, &vec![2u8; 3 * 1024 * 1024]).outcome, SampleOutcome::AreaFull);
        assert_eq!(receive(&a, &vec![3u8; 2 * 1024 * 1024 - 2000]).outcome, SampleOutcome::Kept);
        assert_eq!(receive(&a, &[4u8; 1000]).outcome, SampleOutcome::AreaFull);
    }

    fn walk_sizes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk_sizes(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    #[test]
    fn paused_disabled_and_writer_cap_are_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let a = area(dir.path(), cfg());
        let mut w = a.begin(true);
        w.write(b"abc");
        let r = w.finish();
        assert_eq!(r.outcome, SampleOutcome::Paused);
        assert_eq!(r.sha256, <[u8; 32]>::from(Sha256::digest(b"abc")));
        let off = area(dir.path(), SamplesSection { enabled: false, ..cfg() });
        assert_eq!(receive(&off, b"abc").outcome, SampleOutcome::Disabled);
        let one = area(dir.path(), SamplesSection { max_writers: 1, ..cfg() });
        let busy = one.begin(false);
        assert_eq!(receive(&one, b"abc").outcome, SampleOutcome::Paused);
        drop(busy);
        assert_eq!(receive(&one, b"abc").outcome, SampleOutcome::Kept);
    }

    #[test]
    fn an_unfinished_sample_leaves_nothing_and_a_restart_reindexes() {
        let dir = tempfile::tempdir().unwrap();
        let a = area(dir.path(), cfg());
        let mut w = a.begin(false);
        w.write(&[5u8; 100_000]);
        w.write_out();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path().join("samples/tmp")).unwrap().count(), 0);
        let r = receive(&a, b"keep me");
        drop(a);
        // A part left by a crash is deleted at start; the kept sample is found again.
        std::fs::write(dir.path().join("samples/tmp/9.part"), b"half").unwrap();
        let a = area(dir.path(), cfg());
        assert_eq!(a.kept(10), vec![KeptSample { sha256: r.sha256, size: 7 }]);
        assert_eq!(std::fs::read_dir(dir.path().join("samples/tmp")).unwrap().count(), 0);
    }
}
