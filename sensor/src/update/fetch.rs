//! The sensor's side of an update: decide on an offer, download in chunks (resumable), verify,
//! install into the inactive slot and stage it for the launcher.
//!
//! The shipper calls these on its own thread's runtime (file work through `spawn_blocking`);
//! every outcome other than "installed" is a refusal reported as an `update_refused` event and
//! remembered in `refused.json`, so the same release is never fetched again.

use super::{read_json, write_json, Paths, Slot, Staged, StagedConfig, State, MAX_REMEMBERED};
use crate::sink::EventSink;
use drosera_uplink::release::{sha256_hex, Manifest, SignedConfig};
use std::io::{Seek, Write};
use std::sync::Arc;

/// What a sensor needs to take updates.
#[derive(Clone, Debug)]
pub struct Updater {
    pub paths: Paths,
    pub key: ed25519_dalek::VerifyingKey,
    pub max_bytes: u64,
    pub chunk_bytes: u32,
    pub sensor: Arc<str>,
    pub sink: EventSink,
}

/// What to do with an offer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ask for bytes from `offset` (a part file of the same release is resumed).
    Fetch { offset: u64 },
    /// Nothing to do (already refused or failed, already staged, or this very version).
    Ignore,
}

/// Where a chunk leaves the download.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Next(u64),
    /// Verified, installed and staged: hand over to the launcher.
    Installed,
    /// Refused (and reported).
    Refused,
}

impl Updater {
    /// Checks an offer: signature, architecture, size; remembers and reports a refusal.
    pub fn on_offer(&self, m: &Manifest) -> Decision {
        if m.version == super::running_version() {
            return Decision::Ignore;
        }
        let refused: Vec<String> = read_json(&self.paths.refused());
        let state: State = read_json(&self.paths.state());
        if refused.contains(&m.version) || state.failed.contains(&m.version) {
            tracing::debug!(version = %m.version, "offered release was refused or failed before; ignored");
            return Decision::Ignore;
        }
        let staged: Option<Staged> = read_json(&self.paths.staged());
        if staged.is_some_and(|s| s.version == m.version) {
            return Decision::Ignore;
        }
        if let Err(e) = m.verify(&self.key, std::env::consts::ARCH) {
            self.refuse(&m.version, &e.to_string());
            return Decision::Ignore;
        }
        if m.size > self.max_bytes || m.size == 0 {
            self.refuse(&m.version, &format!("{} bytes; [update] max_bytes is {}", m.size, self.max_bytes));
            return Decision::Ignore;
        }
        // Resume a part file of this very release; start over otherwise.
        let had: Option<Manifest> = read_json(&self.paths.part_manifest());
        let part_len = std::fs::metadata(self.paths.part()).map(|m| m.len()).unwrap_or(0);
        if had.as_ref() == Some(m) && part_len <= m.size {
            tracing::info!(version = %m.version, offset = part_len, "resuming a release download");
            return Decision::Fetch { offset: part_len };
        }
        let fresh = std::fs::create_dir_all(&self.paths.dir)
            .and_then(|_| std::fs::File::create(self.paths.part()).map(drop))
            .and_then(|_| write_json(&self.paths.part_manifest(), &Some(m.clone())));
        if let Err(e) = fresh {
            tracing::error!(error = %e, "cannot start a release download; will try at the next offer");
            return Decision::Ignore;
        }
        tracing::info!(version = %m.version, size = m.size, "downloading a release");
        Decision::Fetch { offset: 0 }
    }

    /// Appends a chunk at `offset`; at the end verifies and installs.
    pub fn on_chunk(&self, m: &Manifest, offset: u64, data: &[u8]) -> Progress {
        if data.is_empty() {
            self.discard();
            self.refuse(&m.version, &format!("truncated: the admin has only {offset} of {} bytes", m.size));
            return Progress::Refused;
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > m.size {
            self.discard();
            self.refuse(&m.version, &format!("the admin sent {end} bytes of a {}-byte release", m.size));
            return Progress::Refused;
        }
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(self.paths.part())?;
            if f.metadata()?.len() != offset {
                return Err(std::io::Error::other("the part file does not end at this chunk's offset"));
            }
            f.seek(std::io::SeekFrom::Start(offset))?;
            f.write_all(data)?;
            if end == m.size {
                f.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            tracing::error!(error = %e, version = %m.version, "cannot write the release download; starting over later");
            self.discard();
            return Progress::Refused;
        }
        if end < m.size {
            return Progress::Next(end);
        }
        match self.install(m) {
            Ok(slot) => {
                tracing::warn!(version = %m.version, ?slot, "release verified and installed; handing over to the launcher");
                self.sink.emit(super::event(&self.sensor, "update_installed", &m.version, ""));
                Progress::Installed
            }
            Err(reason) => {
                self.discard();
                self.refuse(&m.version, &reason);
                Progress::Refused
            }
        }
    }

    /// Verifies the complete part file and moves it into the inactive slot, then stages it.
    fn install(&self, m: &Manifest) -> Result<Slot, String> {
        let part = self.paths.part();
        let data =
            super::read_capped(&part, self.max_bytes + 1).map_err(|e| format!("cannot read the download: {e}"))?;
        m.check_binary(data.len() as u64, &sha256_hex(&data)).map_err(|e| e.to_string())?;
        drop(data);
        let state: State = read_json(&self.paths.state());
        let slot = state.active.map(Slot::other).unwrap_or(Slot::A);
        let dir = self.paths.slot(slot);
        let io = |e: std::io::Error| format!("cannot install into {}: {e}", dir.display());
        // The manifest goes first: a slot without one is empty, whatever else it holds.
        let _ = std::fs::remove_file(dir.join("release.json"));
        std::fs::create_dir_all(&dir).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
        std::fs::rename(&part, dir.join("drosera-sensor")).map_err(io)?;
        write_json(&dir.join("release.json"), m).map_err(io)?;
        let _ = std::fs::remove_file(self.paths.part_manifest());
        write_json(&self.paths.staged(), &Some(Staged { slot, version: m.version.clone() })).map_err(io)?;
        Ok(slot)
    }

    fn discard(&self) {
        let _ = std::fs::remove_file(self.paths.part());
        let _ = std::fs::remove_file(self.paths.part_manifest());
    }

    /// Checks a pushed config like `check-config` does (and that it keeps this sensor's name,
    /// data directory and uplink) and stages it for a trial. True when staged (hand over).
    pub fn on_config(&self, c: &SignedConfig) -> bool {
        let state: State = read_json(&self.paths.state());
        let refused: Vec<u64> = read_json(&self.paths.config_refused());
        let staged: Option<StagedConfig> = read_json(&self.paths.config_staged_json());
        if c.serial <= state.config_active.unwrap_or(0)
            || refused.contains(&c.serial)
            || state.failed_configs.contains(&c.serial)
            || state.pending_config.as_ref().is_some_and(|p| p.serial == c.serial)
            || staged.is_some_and(|s| s.serial == c.serial)
        {
            return false;
        }
        let serial = c.serial.to_string();
        if let Err(e) = c.verify(&self.key, &self.sensor) {
            self.refuse_config(c.serial, &e.to_string());
            return false;
        }
        match self.check_config(c) {
            Ok(()) => {}
            Err(reason) => {
                let _ = std::fs::remove_file(self.paths.config_check());
                self.refuse_config(c.serial, &reason);
                return false;
            }
        }
        let staged = std::fs::rename(self.paths.config_check(), self.paths.config_staged())
            .and_then(|_| write_json(&self.paths.config_staged_json(), &Some(StagedConfig { serial: c.serial })));
        if let Err(e) = staged {
            tracing::error!(error = %e, "cannot stage a pushed config; it is offered again at the next connection");
            return false;
        }
        tracing::warn!(serial = c.serial, "pushed config valid; handing over to the launcher to try it");
        self.sink.emit(super::event(&self.sensor, "config_installed", &serial, ""));
        true
    }

    fn check_config(&self, c: &SignedConfig) -> Result<(), String> {
        std::fs::create_dir_all(&self.paths.dir).map_err(|e| e.to_string())?;
        let path = self.paths.config_check();
        drosera_uplink::tls::write_file_atomic(&path, c.toml.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        let cfg = crate::config::Config::load(&path).map_err(|e| e.to_string())?;
        if cfg.sensor.name != *self.sensor {
            return Err(format!("[sensor] name is {:?}, this sensor is {:?}", cfg.sensor.name, self.sensor));
        }
        let data_dir = self.paths.dir.parent().unwrap_or(&self.paths.dir);
        if cfg.sensor.data_dir != data_dir {
            return Err(format!(
                "[sensor] data_dir is {}, this sensor's store is in {} (a pushed config cannot move it)",
                cfg.sensor.data_dir.display(),
                data_dir.display()
            ));
        }
        let uplink = cfg.uplink.as_ref().ok_or("a pushed config must keep the [uplink] section")?;
        crate::shipper::check(uplink).map_err(|e| format!("[uplink] cannot start: {e}"))?;
        let key = cfg.update.load_key(Some(&uplink.ca_cert))?;
        if key.is_none() {
            return Err("a pushed config must keep signed updates on (its [update] finds no public key)".into());
        }
        Ok(())
    }

    fn refuse_config(&self, serial: u64, reason: &str) {
        tracing::error!(serial, reason, "pushed config refused");
        let mut refused: Vec<u64> = read_json(&self.paths.config_refused());
        refused.push(serial);
        let excess = refused.len().saturating_sub(MAX_REMEMBERED);
        refused.drain(..excess);
        let _ = std::fs::create_dir_all(&self.paths.dir);
        if let Err(e) = write_json(&self.paths.config_refused(), &refused) {
            tracing::warn!(error = %e, "cannot remember a refused config");
        }
        self.sink.emit(super::event(&self.sensor, "config_refused", &serial.to_string(), reason));
    }

    /// Reports a refused release and never takes it again.
    pub fn refuse(&self, version: &str, reason: &str) {
        tracing::error!(version, reason, "release refused");
        let mut refused: Vec<String> = read_json(&self.paths.refused());
        if !refused.iter().any(|v| v == version) {
            refused.push(version.chars().take(64).collect());
            let excess = refused.len().saturating_sub(MAX_REMEMBERED);
            refused.drain(..excess);
            let _ = std::fs::create_dir_all(&self.paths.dir);
            if let Err(e) = write_json(&self.paths.refused(), &refused) {
                tracing::warn!(error = %e, "cannot remember a refused release");
            }
        }
        self.sink.emit(super::event(&self.sensor, "update_refused", version, reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drosera_uplink::release::{key_files, parse_private_key, parse_public_key};

    fn updater(dir: &std::path::Path) -> (Updater, crate::sink::EventQueue) {
        let (sink, rx) = EventSink::new(64, Arc::new(crate::rollup::RollupTable::new(16)));
        let key = parse_public_key(&key_files([3; 32]).1).unwrap();
        let u = Updater { paths: Paths::new(dir), key, max_bytes: 1 << 20, chunk_bytes: 4, sensor: "pi".into(), sink };
        (u, rx)
    }

    fn kinds(rx: &mut crate::sink::EventQueue) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let drosera_uplink::event::Detail::Extension { kind, .. } = e.detail {
                out.push(kind);
            }
        }
        out
    }

    #[test]
    fn download_resume_install_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let (u, mut rx) = updater(dir.path());
        let key = parse_private_key(&key_files([3; 32]).0).unwrap();
        let arch = std::env::consts::ARCH;
        let m = Manifest::sign(&key, "9.0.0", arch, b"0123456789").unwrap();
        assert_eq!(u.on_offer(&m), Decision::Fetch { offset: 0 });
        assert_eq!(u.on_chunk(&m, 0, b"0123"), Progress::Next(4));
        // A cut: the next offer of the same release resumes at 4.
        assert_eq!(u.on_offer(&m), Decision::Fetch { offset: 4 });
        assert_eq!(u.on_chunk(&m, 4, b"4567"), Progress::Next(8));
        assert_eq!(u.on_chunk(&m, 8, b"89"), Progress::Installed);
        assert_eq!(std::fs::read(u.paths.slot(Slot::A).join("drosera-sensor")).unwrap(), b"0123456789");
        let staged: Option<Staged> = read_json(&u.paths.staged());
        assert_eq!(staged, Some(Staged { slot: Slot::A, version: "9.0.0".into() }));
        assert_eq!(u.on_offer(&m), Decision::Ignore, "already staged");
        assert_eq!(kinds(&mut rx), ["update_installed"]);

        // Wrong key, wrong arch, truncated, altered: refused, reported, never fetched again.
        let other = parse_private_key(&key_files([4; 32]).0).unwrap();
        let wrong_key = Manifest::sign(&other, "9.1", arch, b"x").unwrap();
        assert_eq!(u.on_offer(&wrong_key), Decision::Ignore);
        let wrong_arch =
            Manifest::sign(&key, "9.2", if arch == "x86_64" { "aarch64" } else { "x86_64" }, b"x").unwrap();
        assert_eq!(u.on_offer(&wrong_arch), Decision::Ignore);
        let short = Manifest::sign(&key, "9.3", arch, b"abcdef").unwrap();
        assert_eq!(u.on_offer(&short), Decision::Fetch { offset: 0 });
        assert_eq!(u.on_chunk(&short, 0, b"abc"), Progress::Next(3));
        assert_eq!(u.on_chunk(&short, 3, b""), Progress::Refused);
        assert_eq!(u.on_offer(&short), Decision::Ignore, "remembered");
        let altered = Manifest::sign(&key, "9.4", arch, b"abcdef").unwrap();
        assert_eq!(u.on_offer(&altered), Decision::Fetch { offset: 0 });
        assert_eq!(u.on_chunk(&altered, 0, b"abcdeX"), Progress::Refused);
        assert_eq!(kinds(&mut rx), ["update_refused"; 4]);
        let refused: Vec<String> = read_json(&u.paths.refused());
        assert_eq!(refused, ["9.1", "9.2", "9.3", "9.4"]);
        assert!(!u.paths.part().exists());
    }
}
