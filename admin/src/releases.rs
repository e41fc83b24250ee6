//! Signed sensor releases and their staged rollout (issue 22).
//!
//! WHY files next to the config and not database rows: a release is a binary of tens of MiB that
//! is served in chunks straight from disk, and its manifest must sit beside it so the two can be
//! checked together. `release add` signs (sha256 + size + version + arch, see
//! [`drosera_uplink::release`]) with the update key `init` made (`update.key`, mode 0600; only the
//! public half, `update.pub`, goes into sensor bundles). `release rollout` names which sensors
//! take which version, by name or by a stable percentage of names, and the ingest offers it to
//! those sensors when they connect. The version a sensor runs (from its hello) is kept under
//! `dir/running/` for `sensor list`.
//!
//! Limit: with a fleet of admins (`fleet.md`) each admin has its own `dir`; run `release add`
//! and `release rollout` on every admin (or share the folder).

use drosera_uplink::release::{self, Manifest, ReleaseError, SignedConfig};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// `[updates]`: the update key and where releases are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatesConfig {
    /// The ed25519 private key releases are signed with (mode 0600; made by `init`).
    pub key: PathBuf,
    /// Its public half, copied into every sensor bundle.
    pub public_key: PathBuf,
    /// Releases (`VERSION-ARCH/drosera-sensor` + `release.json`), `rollout.json`, `running/`.
    pub dir: PathBuf,
    /// Largest release binary accepted by `release add`, bytes.
    pub max_release_bytes: u64,
    /// Most bytes the ingest sends in one update chunk (sensors ask for at most their own cap).
    pub chunk_bytes: u32,
    /// Seconds between checks of the rollout on an open sensor connection (a new rollout
    /// reaches connected sensors within this; a connecting sensor is checked at once).
    pub check_interval_s: u64,
}

impl Default for UpdatesConfig {
    fn default() -> Self {
        let d = Path::new("/var/lib/drosera-admin");
        UpdatesConfig {
            key: d.join("update.key"),
            public_key: d.join("update.pub"),
            dir: d.join("releases"),
            max_release_bytes: 256 << 20,
            chunk_bytes: 256 * 1024,
            check_interval_s: 300,
        }
    }
}

/// Largest chunk whatever the config says (the sensor reads admin frames under a small cap).
pub const MAX_CHUNK: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReleasesError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error("no update key at {0} (made by `drosera-admin init`; for an admin made before updates existed run `drosera-admin release keygen`)")]
    NoKey(PathBuf),
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{path} has {size} bytes, more than [updates] max_release_bytes = {max}")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("cannot tell the architecture of {0} (not an aarch64 or x86_64 ELF executable); give --arch")]
    UnknownArch(PathBuf),
    #[error("--arch {given} but {path} is an {found} executable")]
    ArchMismatch { path: PathBuf, given: String, found: String },
    #[error("no release {0} (see `drosera-admin release list`)")]
    NoRelease(String),
    #[error("--percent must be between 0 and 100")]
    Percent,
    #[error("{0}")]
    Bad(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleasesError + '_ {
    move |source| ReleasesError::Io { path: path.to_path_buf(), source }
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), ReleasesError> {
    drosera_uplink::tls::write_file_atomic(path, data, mode).map_err(|e| ReleasesError::Bad(e.to_string()))
}

/// Writes a new update key pair (`init`, `release keygen`); never overwrites a key.
pub fn keygen(key: &Path, public: &Path) -> Result<(), ReleasesError> {
    if key.exists() {
        return Err(ReleasesError::Exists(key.to_path_buf()));
    }
    let seed: [u8; 32] = rand::random();
    let (private, public_text) = release::key_files(seed);
    write_atomic(key, private.as_bytes(), 0o600)?;
    write_atomic(public, public_text.as_bytes(), 0o644)
}

/// Which sensors take a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub version: String,
    /// These sensors (by name), or …
    #[serde(default)]
    pub sensors: Vec<String>,
    /// … this share of all sensors (a stable hash of the name), 0 to 100.
    #[serde(default)]
    pub percent: Option<u8>,
}

impl Rollout {
    /// True when `sensor` is in this rollout.
    pub fn targets(&self, sensor: &str) -> bool {
        if self.sensors.iter().any(|s| s == sensor) {
            return true;
        }
        self.percent.is_some_and(|p| bucket(sensor) < u32::from(p))
    }
}

/// A stable 0..100 bucket of a sensor name (the same on every admin and every run).
pub fn bucket(sensor: &str) -> u32 {
    let d = <sha2::Sha256 as sha2::Digest>::digest(sensor.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 100
}

fn release_dir(cfg: &UpdatesConfig, version: &str, arch: &str) -> PathBuf {
    cfg.dir.join(format!("{version}-{arch}"))
}

/// Signs `binary` as `version` and stores it; returns the manifest.
pub fn add(cfg: &UpdatesConfig, binary: &Path, version: &str, arch: Option<&str>) -> Result<Manifest, ReleasesError> {
    if !release::valid_version(version) {
        return Err(ReleaseError::BadVersion(version.to_string()).into());
    }
    let key_text = std::fs::read_to_string(&cfg.key).map_err(|_| ReleasesError::NoKey(cfg.key.clone()))?;
    let key = release::parse_private_key(&key_text)?;
    let size = std::fs::metadata(binary).map_err(io(binary))?.len();
    if size > cfg.max_release_bytes {
        return Err(ReleasesError::TooLarge { path: binary.to_path_buf(), size, max: cfg.max_release_bytes });
    }
    let mut data = Vec::with_capacity(size as usize);
    std::fs::File::open(binary)
        .map_err(io(binary))?
        .take(cfg.max_release_bytes)
        .read_to_end(&mut data)
        .map_err(io(binary))?;
    let found = release::elf_arch(&data);
    let arch = match (arch, found) {
        (Some(a), Some(f)) if a != f => {
            return Err(ReleasesError::ArchMismatch { path: binary.into(), given: a.into(), found: f.into() })
        }
        (Some(a), _) => a.to_string(),
        (None, Some(f)) => f.to_string(),
        (None, None) => return Err(ReleasesError::UnknownArch(binary.to_path_buf())),
    };
    let manifest = Manifest::sign(&key, version, &arch, &data)?;
    let dir = release_dir(cfg, version, &arch);
    if dir.exists() {
        return Err(ReleasesError::Exists(dir));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    write_atomic(&dir.join("drosera-sensor"), &data, 0o644)?;
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ReleasesError::Bad(e.to_string()))?;
    // The manifest last: a release without one is not offered.
    write_atomic(&dir.join("release.json"), &json, 0o644)?;
    Ok(manifest)
}

/// Every stored release, by version then architecture.
pub fn list(cfg: &UpdatesConfig) -> Result<Vec<Manifest>, ReleasesError> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&cfg.dir) else { return Ok(out) };
    for e in rd.flatten() {
        if let Ok(m) = read_manifest(&e.path().join("release.json")) {
            out.push(m);
        }
    }
    out.sort_by(|a, b| (&a.version, &a.arch).cmp(&(&b.version, &b.arch)));
    Ok(out)
}

fn read_manifest(path: &Path) -> Result<Manifest, ReleasesError> {
    let mut text = String::new();
    std::fs::File::open(path).map_err(io(path))?.take(64 * 1024).read_to_string(&mut text).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| ReleasesError::Bad(format!("{}: {e}", path.display())))
}

/// Starts rolling `version` out to `sensors` or `percent` % of the sensors (replaces the
/// previous rollout).
pub fn rollout(
    cfg: &UpdatesConfig,
    version: &str,
    sensors: Vec<String>,
    percent: Option<u8>,
) -> Result<Rollout, ReleasesError> {
    if percent.is_some_and(|p| p > 100) {
        return Err(ReleasesError::Percent);
    }
    if sensors.is_empty() && percent.is_none() {
        return Err(ReleasesError::Bad("name the sensors (--sensors a,b) or a share (--percent P)".into()));
    }
    if !list(cfg)?.iter().any(|m| m.version == version) {
        return Err(ReleasesError::NoRelease(version.to_string()));
    }
    let r = Rollout { version: version.to_string(), sensors, percent };
    let json = serde_json::to_vec_pretty(&r).map_err(|e| ReleasesError::Bad(e.to_string()))?;
    write_atomic(&cfg.dir.join("rollout.json"), &json, 0o644)?;
    Ok(r)
}

/// The current rollout, if any.
pub fn current_rollout(cfg: &UpdatesConfig) -> Option<Rollout> {
    let path = cfg.dir.join("rollout.json");
    let mut text = String::new();
    std::fs::File::open(&path).ok()?.take(1 << 20).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// What a sensor's hello says it runs: (version, arch) from `drosera-sensor VERSION (ARCH)`.
pub fn parse_software(software: &str) -> Option<(String, Option<String>)> {
    let mut words = software.split_whitespace();
    if words.next()? != "drosera-sensor" {
        return None;
    }
    let version = words.next().filter(|v| release::valid_version(v))?.to_string();
    let arch = words
        .next()
        .and_then(|a| a.strip_prefix('(')?.strip_suffix(')'))
        .filter(|a| release::ARCHES.contains(a))
        .map(str::to_string);
    Some((version, arch))
}

/// The release to offer a sensor that runs `version` on `arch`, with the path of its binary.
pub fn offer_for(cfg: &UpdatesConfig, sensor: &str, version: &str, arch: &str) -> Option<(Manifest, PathBuf)> {
    let r = current_rollout(cfg)?;
    if r.version == version || !r.targets(sensor) {
        return None;
    }
    let dir = release_dir(cfg, &r.version, arch);
    let m = read_manifest(&dir.join("release.json")).ok()?;
    // The manifest's own arch is not checked here: the sensor checks it against its own (a
    // release misfiled under another arch's folder is refused and reported there).
    (m.version == r.version).then(|| (m, dir.join("drosera-sensor")))
}

/// Bytes of a release binary at `offset` (at most `max`; empty past the end).
pub fn read_chunk(path: &Path, offset: u64, max: u32) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut data = Vec::with_capacity(max.min(MAX_CHUNK) as usize);
    f.take(u64::from(max.min(MAX_CHUNK))).read_to_end(&mut data)?;
    Ok(data)
}

/// Signs `toml` as the next config of `sensor` (its serial one more than the last pushed) and
/// keeps it in `dir/configs/NAME.json`; the ingest offers it to the sensor, which validates it
/// like `check-config` and applies it on trial (rolled back if it does not become healthy).
pub fn push_config(cfg: &UpdatesConfig, sensor: &str, file: &Path) -> Result<SignedConfig, ReleasesError> {
    if !drosera_uplink::tls::valid_sensor_name(sensor) {
        return Err(ReleasesError::Bad(format!("{sensor:?} is not a valid sensor name")));
    }
    let key_text = std::fs::read_to_string(&cfg.key).map_err(|_| ReleasesError::NoKey(cfg.key.clone()))?;
    let key = release::parse_private_key(&key_text)?;
    let mut text = String::new();
    std::fs::File::open(file)
        .map_err(io(file))?
        .take(release::MAX_CONFIG_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(io(file))?;
    let serial = config_for(cfg, sensor).map(|c| c.serial).unwrap_or(0) + 1;
    let signed = SignedConfig::sign(&key, sensor, serial, &text)?;
    let dir = cfg.dir.join("configs");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let json = serde_json::to_vec_pretty(&signed).map_err(|e| ReleasesError::Bad(e.to_string()))?;
    write_atomic(&dir.join(format!("{sensor}.json")), &json, 0o600)?;
    Ok(signed)
}

/// The config last pushed to `sensor`, if any.
pub fn config_for(cfg: &UpdatesConfig, sensor: &str) -> Option<SignedConfig> {
    if !drosera_uplink::tls::valid_sensor_name(sensor) {
        return None;
    }
    let path = cfg.dir.join("configs").join(format!("{sensor}.json"));
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(2 * release::MAX_CONFIG_BYTES as u64).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Remembers the software a sensor said it runs (for `sensor list`).
pub fn record_running(cfg: &UpdatesConfig, sensor: &str, software: &str) {
    if !drosera_uplink::tls::valid_sensor_name(sensor) {
        return;
    }
    let dir = cfg.dir.join("running");
    let text: String = software.chars().filter(|c| !c.is_control()).take(200).collect();
    let path = dir.join(sensor);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return;
    }
    if let Err(e) =
        std::fs::create_dir_all(&dir).map_err(io(&dir)).and_then(|_| write_atomic(&path, text.as_bytes(), 0o644))
    {
        tracing::warn!(sensor, error = %e, "cannot record the sensor's version");
    }
}

/// The version a sensor last said it runs.
pub fn running(cfg: &UpdatesConfig, sensor: &str) -> Option<String> {
    if !drosera_uplink::tls::valid_sensor_name(sensor) {
        return None;
    }
    let text = std::fs::read_to_string(cfg.dir.join("running").join(sensor)).ok()?;
    Some(parse_software(&text).map(|(v, _)| v).unwrap_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_rollout_offer() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = UpdatesConfig {
            key: dir.path().join("update.key"),
            public_key: dir.path().join("update.pub"),
            dir: dir.path().join("releases"),
            ..Default::default()
        };
        let bin = dir.path().join("bin");
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1];
        elf.resize(64, 0);
        elf[18] = 62;
        std::fs::write(&bin, &elf).unwrap();
        assert!(matches!(add(&cfg, &bin, "0.2.0", None), Err(ReleasesError::NoKey(_))));
        keygen(&cfg.key, &cfg.public_key).unwrap();
        assert!(matches!(keygen(&cfg.key, &cfg.public_key), Err(ReleasesError::Exists(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&cfg.key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(matches!(add(&cfg, &bin, "0.2.0", Some("aarch64")), Err(ReleasesError::ArchMismatch { .. })));
        let m = add(&cfg, &bin, "0.2.0", None).unwrap();
        assert_eq!(m.arch, "x86_64");
        let public = release::parse_public_key(&std::fs::read_to_string(&cfg.public_key).unwrap()).unwrap();
        m.verify(&public, "x86_64").unwrap();
        assert!(matches!(add(&cfg, &bin, "0.2.0", None), Err(ReleasesError::Exists(_))));
        assert!(matches!(rollout(&cfg, "9.9", vec!["pi".into()], None), Err(ReleasesError::NoRelease(_))));
        assert!(offer_for(&cfg, "pi", "0.1.0", "x86_64").is_none());
        rollout(&cfg, "0.2.0", vec!["pi".into()], None).unwrap();
        let (o, path) = offer_for(&cfg, "pi", "0.1.0", "x86_64").unwrap();
        assert_eq!(o, m);
        assert_eq!(read_chunk(&path, 60, 10).unwrap().len(), 4);
        assert!(read_chunk(&path, 64, 10).unwrap().is_empty());
        assert!(offer_for(&cfg, "pi", "0.2.0", "x86_64").is_none(), "already runs it");
        assert!(offer_for(&cfg, "other", "0.1.0", "x86_64").is_none(), "not in the rollout");
        assert!(offer_for(&cfg, "pi", "0.1.0", "aarch64").is_none(), "no build for that arch");
        rollout(&cfg, "0.2.0", vec![], Some(100)).unwrap();
        assert!(offer_for(&cfg, "other", "0.1.0", "x86_64").is_some());
        rollout(&cfg, "0.2.0", vec![], Some(0)).unwrap();
        assert!(offer_for(&cfg, "other", "0.1.0", "x86_64").is_none());
        assert!(matches!(rollout(&cfg, "0.2.0", vec![], Some(101)), Err(ReleasesError::Percent)));
        let share = (0..1000).filter(|i| bucket(&format!("pi-{i}")) < 30).count();
        assert!((200..400).contains(&share), "{share}");
        let toml = dir.path().join("pi.toml");
        std::fs::write(&toml, "[sensor]\nname = \"pi\"\n").unwrap();
        assert_eq!(push_config(&cfg, "pi", &toml).unwrap().serial, 1);
        let c = push_config(&cfg, "pi", &toml).unwrap();
        assert_eq!(c.serial, 2);
        c.verify(&public, "pi").unwrap();
        assert_eq!(config_for(&cfg, "pi"), Some(c));
        assert!(config_for(&cfg, "other").is_none());
        record_running(&cfg, "pi", "drosera-sensor 0.2.0 (x86_64)");
        assert_eq!(running(&cfg, "pi").as_deref(), Some("0.2.0"));
        assert_eq!(running(&cfg, "../x"), None);
    }

    #[test]
    fn software_strings() {
        assert_eq!(parse_software("drosera-sensor 0.2.0 (aarch64)"), Some(("0.2.0".into(), Some("aarch64".into()))));
        assert_eq!(parse_software("drosera-sensor 0.1.0"), Some(("0.1.0".into(), None)));
        assert_eq!(parse_software("drosera-sensor 0.1.0 (mips)"), Some(("0.1.0".into(), None)));
        assert_eq!(parse_software("other 1"), None);
        assert_eq!(parse_software(""), None);
    }
}
