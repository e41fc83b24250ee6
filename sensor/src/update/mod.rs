//! Signed updates with rollback (issue 22): the files under `data_dir/update/`, the `[update]`
//! config section, and the events that report every step to the admin.
//!
//! WHY two slots and a launcher: a Pi in a hallway cannot be rescued by hand, so a new binary
//! must never replace the one that works until it has proven itself. The running sensor
//! ([`fetch`]) downloads an offered release in bounded chunks (resumable), verifies its signature,
//! architecture, size and sha256, installs it into the *inactive* slot (write, fsync, rename;
//! never a half-installed binary), writes `staged.json` and exits with [`HANDOVER_EXIT`]. The
//! launcher ([`launcher`], `drosera-sensor launch`, the appliance unit's `ExecStart`) then starts
//! the staged slot on trial: if it does not report healthy (ready and its first health event
//! acknowledged by the admin) within `trial_timeout_s`, or exits, the launcher stops it, starts
//! the previous binary again and leaves a report that the old sensor ships as an
//! `update_failed` event. Each trial is counted in `state.json` *before* it starts, so a power
//! cut or a crash in the middle of a trial is a failed trial, never a boot loop.
//!
//! Who writes what: the launcher owns `state.json` and `reports/`; the sensor owns
//! `download.*`, the slots, `staged.json` and `refused.json`. The launcher verifies a slot's
//! binary against its signed manifest again right before running it and runs the verified bytes
//! from a sealed memory file, so a compromised sensor (which owns the data directory) cannot
//! make the launcher run anything unsigned.

pub mod fetch;
pub mod launcher;

use drosera_uplink::event::{Detail, Event};
use drosera_uplink::release::Manifest;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Exit status of a sensor that installed a release and wants the launcher to start it.
pub const HANDOVER_EXIT: i32 = 75;
/// Set by the launcher for its child: the sensor may take updates (someone will start them).
pub const ENV_LAUNCHER: &str = "DROSERA_LAUNCHER";
/// Set by the launcher: the release version the child is (absent: the built-in version).
pub const ENV_RELEASE: &str = "DROSERA_RELEASE_VERSION";
/// Set by the launcher for a trial: the file the child creates once it is healthy.
pub const ENV_TRIAL_FILE: &str = "DROSERA_TRIAL_FILE";
/// Set by the launcher for a trial: `update` or `config`, and what is tried (version or serial).
pub const ENV_TRIAL_KIND: &str = "DROSERA_TRIAL_KIND";
pub const ENV_TRIAL_WHAT: &str = "DROSERA_TRIAL_WHAT";
/// Versions remembered as refused or failed (never fetched or tried again).
pub const MAX_REMEMBERED: usize = 32;
/// Reports waiting for the sensor to ship them.
pub const MAX_REPORTS: usize = 32;
/// Trials of one staged release (a crash or power cut during a trial counts as one).
pub const MAX_TRIALS: u32 = 1;

/// `[update]`: taking signed releases from the admin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateSection {
    /// Take releases the admin offers (they also need the launcher and the public key).
    pub enabled: bool,
    /// The admin's update public key (`update.pub` of the bundle). Empty: `update.pub` beside
    /// `[uplink] ca_cert`; updates are off when that file does not exist.
    pub public_key: PathBuf,
    /// Largest release accepted, bytes (larger offers are refused and reported).
    pub max_bytes: u64,
    /// Bytes asked for in one chunk (1 KiB to 1 MiB).
    pub chunk_bytes: u32,
    /// Seconds a new release has to become healthy before the launcher rolls it back.
    pub trial_timeout_s: u64,
}

impl Default for UpdateSection {
    fn default() -> Self {
        UpdateSection {
            enabled: true,
            public_key: PathBuf::new(),
            max_bytes: 128 << 20,
            chunk_bytes: 256 * 1024,
            trial_timeout_s: 120,
        }
    }
}

impl UpdateSection {
    /// Range checks: (key, problem, fix).
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        if !(1024..=1 << 20).contains(&self.chunk_bytes) {
            return Err(("update.chunk_bytes".into(), "must be between 1024 and 1048576".into(), "use 262144".into()));
        }
        if self.max_bytes < 1 << 20 || self.max_bytes > 1 << 30 {
            return Err(("update.max_bytes".into(), "must be between 1 MiB and 1 GiB".into(), "use 134217728".into()));
        }
        if !(5..=3600).contains(&self.trial_timeout_s) {
            return Err(("update.trial_timeout_s".into(), "must be between 5 and 3600".into(), "use 120".into()));
        }
        Ok(())
    }

    /// The public key file in use: `public_key`, or `update.pub` beside the uplink's CA.
    pub fn key_path(&self, ca_cert: Option<&Path>) -> Option<PathBuf> {
        if !self.public_key.as_os_str().is_empty() {
            return Some(self.public_key.clone());
        }
        ca_cert.and_then(Path::parent).map(|d| d.join("update.pub"))
    }

    /// Loads the public key: `Ok(None)` when updates are off or the default file is absent; an
    /// error (naming the key) when a configured or present file is unreadable or not a key.
    pub fn load_key(&self, ca_cert: Option<&Path>) -> Result<Option<ed25519_dalek::VerifyingKey>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(path) = self.key_path(ca_cert) else { return Ok(None) };
        let explicit = !self.public_key.as_os_str().is_empty();
        let text = match read_capped(&path, 4096) {
            Ok(t) => t,
            Err(_) if !explicit && !path.exists() => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "[update] public_key: cannot read {}: {e} (use the update.pub of the sensor's bundle)",
                    path.display()
                ))
            }
        };
        drosera_uplink::release::parse_public_key(&String::from_utf8_lossy(&text)).map(Some).map_err(|e| {
            format!("[update] public_key: {}: {e} (use the update.pub of the sensor's bundle)", path.display())
        })
    }
}

/// The files under `data_dir/update/`.
#[derive(Clone, Debug)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Paths {
        Paths { dir: data_dir.join("update") }
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn staged(&self) -> PathBuf {
        self.dir.join("staged.json")
    }
    pub fn refused(&self) -> PathBuf {
        self.dir.join("refused.json")
    }
    pub fn part(&self) -> PathBuf {
        self.dir.join("download.part")
    }
    pub fn part_manifest(&self) -> PathBuf {
        self.dir.join("download.json")
    }
    pub fn reports(&self) -> PathBuf {
        self.dir.join("reports")
    }
    pub fn trial_file(&self) -> PathBuf {
        self.dir.join("trial-healthy")
    }
    /// A pushed config being validated, staged for a trial, and the one that runs.
    pub fn config_check(&self) -> PathBuf {
        self.dir.join("config-check.toml")
    }
    pub fn config_staged(&self) -> PathBuf {
        self.dir.join("config-staged.toml")
    }
    pub fn config_staged_json(&self) -> PathBuf {
        self.dir.join("config-staged.json")
    }
    pub fn config_active(&self) -> PathBuf {
        self.dir.join("config-active.toml")
    }
    pub fn config_refused(&self) -> PathBuf {
        self.dir.join("config-refused.json")
    }
    pub fn slot(&self, slot: Slot) -> PathBuf {
        self.dir.join(slot.dir_name())
    }
}

/// One of the two install slots.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    fn dir_name(self) -> &'static str {
        match self {
            Slot::A => "slot-a",
            Slot::B => "slot-b",
        }
    }
}

/// The launcher's record (`state.json`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct State {
    /// The slot that runs (none: the installed binary the launcher itself is).
    pub active: Option<Slot>,
    /// A release on trial or about to be.
    pub pending: Option<Pending>,
    /// Versions that failed their trial (never tried again), newest last.
    pub failed: Vec<String>,
    /// The serial of the pushed config that runs (`config-active.toml`; none: the installed one).
    pub config_active: Option<u64>,
    /// A pushed config on trial or about to be.
    pub pending_config: Option<PendingConfig>,
    /// Pushed configs that failed their trial.
    pub failed_configs: Vec<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PendingConfig {
    pub serial: u64,
    pub trials: u32,
}

/// What the sensor asks the launcher to try (`config-staged.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StagedConfig {
    pub serial: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub slot: Slot,
    pub version: String,
    /// Trials started so far (counted before each start).
    pub trials: u32,
}

/// What the sensor asks the launcher to start (`staged.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub slot: Slot,
    pub version: String,
}

/// A launcher's report for the admin (`reports/*.json`), shipped by the next sensor that runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub kind: String,
    pub version: String,
    pub reason: String,
}

/// Reads at most `cap` bytes of a file (files under the data directory are the sensor's, which
/// the launcher does not trust with its memory either).
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)?.take(cap).read_to_end(&mut out)?;
    Ok(out)
}

/// A small JSON file, or its default when absent or unreadable.
pub fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    read_capped(path, 256 * 1024).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Writes a small JSON file atomically (temp, fsync, rename, fsync of the folder).
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?;
    drosera_uplink::tls::write_file_atomic(path, &data, 0o644).map_err(std::io::Error::other)
}

/// The config file the launcher runs when nothing is on trial: the last pushed config that proved
/// healthy (`config-active.toml`, while `state.json` names it and the file exists), else the file
/// the unit names. One function for the launcher and for `drosera-sensor active-config`, which
/// the appliance's firewall setup asks, so the ports the firewall opens and the ports the sensor
/// binds never come from two different files.
pub fn running_config(paths: &Paths, state: &State, installed: &Path) -> PathBuf {
    match state.config_active {
        Some(_) if paths.config_active().is_file() => paths.config_active(),
        _ => installed.to_path_buf(),
    }
}

/// The manifest a slot holds, if any.
pub fn slot_manifest(paths: &Paths, slot: Slot) -> Option<Manifest> {
    let b = read_capped(&paths.slot(slot).join("release.json"), 64 * 1024).ok()?;
    serde_json::from_slice(&b).ok()
}

/// The release version this process is: the launcher says it, else the built-in version.
pub fn running_version() -> String {
    std::env::var(ENV_RELEASE)
        .ok()
        .filter(|v| drosera_uplink::release::valid_version(v))
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

/// What the hello says this sensor runs: `drosera-sensor VERSION (ARCH)`.
pub fn software() -> String {
    format!("drosera-sensor {} ({})", running_version(), std::env::consts::ARCH)
}

/// An update event for the admin (an extension event; the kind again as a field, since admins
/// store an extension's fields).
pub fn event(sensor: &str, kind: &str, version: &str, reason: &str) -> Event {
    Event {
        sensor: sensor.to_string(),
        ..Event::internal(Detail::Extension {
            kind: kind.into(),
            fields: vec![
                ("kind".into(), kind.into()),
                ("version".into(), version.into()),
                ("running".into(), running_version()),
                ("reason".into(), reason.chars().take(500).collect()),
            ],
        })
    }
}

/// Ships the launcher's reports as events (then deletes them).
pub fn ship_reports(paths: &Paths, sensor: &str, sink: &crate::sink::EventSink) {
    let Ok(rd) = std::fs::read_dir(paths.reports()) else { return };
    let mut files: Vec<PathBuf> =
        rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    files.sort();
    for p in files.into_iter().take(MAX_REPORTS) {
        if let Ok(b) = read_capped(&p, 64 * 1024) {
            if let Ok(r) = serde_json::from_slice::<Report>(&b) {
                tracing::warn!(kind = %r.kind, version = %r.version, reason = %r.reason, "update report from the launcher");
                sink.emit(event(sensor, &r.kind, &r.version, &r.reason));
            }
        }
        let _ = std::fs::remove_file(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_ranges_and_key_lookup() {
        let d = UpdateSection::default();
        d.validate().unwrap();
        assert!(UpdateSection { chunk_bytes: 10, ..d.clone() }.validate().is_err());
        assert!(UpdateSection { trial_timeout_s: 1, ..d.clone() }.validate().is_err());
        assert!(UpdateSection { max_bytes: 5, ..d.clone() }.validate().is_err());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        assert_eq!(d.load_key(Some(&ca)), Ok(None), "no update.pub: updates off");
        std::fs::write(dir.path().join("update.pub"), "garbage").unwrap();
        assert!(d.load_key(Some(&ca)).unwrap_err().contains("update.pub"));
        std::fs::write(dir.path().join("update.pub"), drosera_uplink::release::key_files([1; 32]).1).unwrap();
        assert!(d.load_key(Some(&ca)).unwrap().is_some());
        let explicit = UpdateSection { public_key: dir.path().join("nope.pub"), ..d };
        assert!(explicit.load_key(Some(&ca)).unwrap_err().contains("public_key"));
        assert_eq!(UpdateSection { enabled: false, ..explicit }.load_key(Some(&ca)), Ok(None));
    }

    #[test]
    fn running_config_is_the_active_push_only_when_state_and_file_agree() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(&paths.dir).unwrap();
        let installed = Path::new("/etc/drosera/sensor.toml");
        let active = State { config_active: Some(3), ..Default::default() };
        assert_eq!(running_config(&paths, &State::default(), installed), installed);
        assert_eq!(running_config(&paths, &active, installed), installed, "state names it, no file");
        std::fs::write(paths.config_active(), "x").unwrap();
        assert_eq!(running_config(&paths, &State::default(), installed), installed, "file, state does not name it");
        assert_eq!(running_config(&paths, &active, installed), paths.config_active());
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        let s: State = read_json(&p);
        assert_eq!(s, State::default());
        let s = State {
            active: Some(Slot::B),
            pending: Some(Pending { slot: Slot::A, version: "1".into(), trials: 1 }),
            failed: vec!["0.9".into()],
            ..Default::default()
        };
        write_json(&p, &s).unwrap();
        assert_eq!(read_json::<State>(&p), s);
        std::fs::write(&p, "{not json").unwrap();
        assert_eq!(read_json::<State>(&p), State::default());
    }
}
