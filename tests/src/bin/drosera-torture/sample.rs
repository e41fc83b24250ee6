//! Samplers: what `/proc` says about a process (RSS, peak RSS, open descriptors), what the disk
//! says about a store (db + wal + shm), and the least-squares slope of a series.
//!
//! WHY from outside: the sensor's own numbers are what is under test; the kernel's are not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One look at a process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// Seconds since the sampler started.
    pub t: f64,
    pub rss: u64,
    pub hwm: u64,
    pub fds: u64,
}

/// Reads VmRSS and VmHWM (bytes) of `pid`; None if it is gone.
pub fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Number of open file descriptors of `pid`.
pub fn fds_of(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Total size of the store's files in `dir`: every `*.db`, `*.db-wal`, `*.db-shm`, `*.sqlite*`
/// directly in it (quarantined copies in sub-directories are not the live store).
pub fn store_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            (n.ends_with(".db") || n.ends_with(".db-wal") || n.ends_with(".db-shm") || n.contains(".sqlite"))
                && !n.contains("quarantine")
                && !n.contains("corrupt")
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Least-squares slope of `ys` over `xs` (units of y per unit of x); 0 with fewer than 2 points.
pub fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return 0.0;
    }
    let mx = xs[..n].iter().sum::<f64>() / n as f64;
    let my = ys[..n].iter().sum::<f64>() / n as f64;
    let mut num = 0.0;
    let mut den = 0.0;
    for i in 0..n {
        num += (xs[i] - mx) * (ys[i] - my);
        den += (xs[i] - mx) * (xs[i] - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Maxima seen by a background sampler.
#[derive(Clone, Debug, Default)]
pub struct Peaks {
    pub samples: u64,
    pub max_rss: u64,
    pub max_hwm: u64,
    pub max_fds: u64,
    pub max_store: u64,
    /// Samples where the watched pid was not running.
    pub dead_samples: u64,
}

/// Samples a process (whose pid may change across restarts: `pid` is re-read every time) and a
/// store directory every `every` until dropped.
pub struct Sampler {
    stop: CancellationToken,
    peaks: Arc<Mutex<Peaks>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: Arc<Mutex<Option<u32>>>, store_dir: PathBuf, every: Duration) -> Sampler {
        let stop = CancellationToken::new();
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let (s2, p2) = (stop.clone(), peaks.clone());
        let handle = std::thread::spawn(move || {
            while !s2.is_cancelled() {
                let current = pid.lock().map(|g| *g).unwrap_or(None);
                let store = store_bytes(&store_dir);
                let mut p = p2.lock().unwrap_or_else(|e| e.into_inner());
                p.samples += 1;
                p.max_store = p.max_store.max(store);
                match current.and_then(|pid| Some((rss_of(pid)?, fds_of(pid).unwrap_or(0)))) {
                    Some(((rss, hwm), fds)) => {
                        p.max_rss = p.max_rss.max(rss);
                        p.max_hwm = p.max_hwm.max(hwm);
                        p.max_fds = p.max_fds.max(fds);
                    }
                    None => p.dead_samples += 1,
                }
                drop(p);
                std::thread::sleep(every);
            }
        });
        Sampler { stop, peaks, handle: Some(handle) }
    }

    pub fn peaks(&self) -> Peaks {
        self.peaks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn finish(mut self) -> Peaks {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peaks()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A series of process samples taken at a fixed interval (the soak).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub points: Vec<ProcSample>,
}

impl Series {
    pub fn take(&mut self, pid: u32, start: Instant) -> bool {
        match (rss_of(pid), fds_of(pid)) {
            (Some((rss, hwm)), Some(fds)) => {
                self.points.push(ProcSample { t: start.elapsed().as_secs_f64(), rss, hwm, fds });
                true
            }
            _ => false,
        }
    }

    /// (RSS slope in bytes per minute, fd slope in descriptors per minute), skipping the first
    /// `warmup` points (allocator and caches filling up are not a leak).
    pub fn slopes(&self, warmup: usize) -> (f64, f64) {
        let pts = if self.points.len() > warmup + 1 { &self.points[warmup..] } else { &self.points[..] };
        let xs: Vec<f64> = pts.iter().map(|p| p.t / 60.0).collect();
        let rss: Vec<f64> = pts.iter().map(|p| p.rss as f64).collect();
        let fds: Vec<f64> = pts.iter().map(|p| p.fds as f64).collect();
        (slope(&xs, &rss), slope(&xs, &fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        assert!((slope(&xs, &[1.0, 3.0, 5.0, 7.0]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&xs, &[4.0, 4.0, 4.0, 4.0]), 0.0);
        assert_eq!(slope(&[1.0], &[1.0]), 0.0);
    }

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        let (rss, hwm) = rss_of(pid).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(fds_of(pid).unwrap() >= 3);
    }

    #[test]
    fn store_bytes_counts_db_wal_shm_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("events.db"), [0u8; 100]).unwrap();
        std::fs::write(d.path().join("events.db-wal"), [0u8; 10]).unwrap();
        std::fs::write(d.path().join("events.db-shm"), [0u8; 1]).unwrap();
        std::fs::write(d.path().join("notes.txt"), [0u8; 1000]).unwrap();
        assert_eq!(store_bytes(d.path()), 111);
    }
}
