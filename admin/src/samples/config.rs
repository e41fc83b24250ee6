//! `[samples]`: where the admin keeps malware samples and the caps on them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[samples]` config section. Every key has a default (see `drosera-admin.example.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplesConfig {
    /// Take samples from sensors. Off: sensors keep shipping events and keep their samples.
    pub enabled: bool,
    /// The sample store: `store/` (zstd-compressed samples by sha256, mode 0600) and `parts/`
    /// (transfers in progress). Relative to the config file's folder.
    pub dir: PathBuf,
    /// Cap on the compressed bytes of all stored samples; a sample that would pass it is refused
    /// (reported to the sensor, logged, counted, recorded). 0 = no cap.
    pub max_bytes: u64,
    /// Largest sample accepted, bytes (offers of larger ones are refused).
    pub max_sample_bytes: u64,
    /// Samples not seen for this many days are deleted (file and row; sightings stay). 0 = keep.
    pub retention_days: u32,
    /// Most data bytes in one chunk (the sensor sends at most this; also bounded by
    /// `ingest.max_frame_bytes`).
    pub chunk_bytes: u32,
    /// Most samples a sensor may offer at once.
    pub max_offer: u32,
    /// Transfers in progress (part files) at once over all sensors; more offers are answered
    /// "later".
    pub max_parts: usize,
    /// Samples verified (hashed, classified, compressed) at once over all connections; each
    /// holds one sample (up to `max_sample_bytes`) in memory.
    pub max_concurrent_verifies: usize,
    /// Rejected transfers remembered in the database (newest kept).
    pub max_rejections_kept: u32,
}

impl Default for SamplesConfig {
    fn default() -> Self {
        SamplesConfig {
            enabled: true,
            dir: PathBuf::from("/var/lib/drosera-admin/samples"),
            max_bytes: 10 << 30,
            max_sample_bytes: 64 << 20,
            retention_days: 365,
            chunk_bytes: 256 * 1024,
            max_offer: 64,
            max_parts: 64,
            max_concurrent_verifies: 2,
            max_rejections_kept: 10_000,
        }
    }
}
