//! Enrollment: the admin's own certificate authority, its server certificate, and sensor bundles.
//!
//! WHY a private CA: sensors and admin authenticate each other with nothing but files this
//! command writes, offline, with no public CA or DNS involved; the sensor trusts only this CA and
//! the admin accepts only certificates it signed (and still enrolled, see [`crate::sensors`]).
//!
//! The CA certificate is reconstructed for signing from its key and subject name (read back from
//! `ca.pem`): an issuer is identified by its distinguished name and verified with its public key,
//! so nothing else about the original certificate object is needed. Every private key is written
//! with mode 0600 (atomically), and existing keys are never overwritten.

use crate::clock::now_ms;
use crate::config::AdminConfig;
use crate::sensors::{self, SensorError};
use drosera_uplink::tls::{self, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Certificates are valid this long (revocation, not expiry, is how a sensor is retired).
const VALIDITY_DAYS: i64 = 365 * 30;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot create {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} already exists; refusing to overwrite it (choose another directory)")]
    Exists(PathBuf),
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("--admin {0:?} is not host:port (for example admin.example.net:7443)")]
    BadAddress(String),
    #[error("--db-url: {0}")]
    BadUrl(String),
    #[error("--server-name does not apply with --join: the fleet's first admin's server certificate is used (give every name to its `init`)")]
    JoinNames,
}

/// What `drosera-admin init` needs.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    pub dir: PathBuf,
    /// `host:port` sensors will connect to; its host is added to the server certificate.
    pub admin: Option<String>,
    /// Ingest listen address (default `0.0.0.0:` + the port of `admin`, or 7443).
    pub listen: Option<SocketAddr>,
    /// Dashboard listen address (default `127.0.0.1:9080`).
    pub dashboard_listen: Option<SocketAddr>,
    /// `[database] url` (default: SQLite `admin.db` in the directory).
    pub db_url: Option<String>,
    /// More names of this admin for the server certificate.
    pub server_names: Vec<String>,
    /// The folder of a fleet's first admin: copy its CA and server certificate.
    pub join: Option<PathBuf>,
}

/// Splits `host:port` (also `[v6]:port`).
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

fn validity(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(VALIDITY_DAYS);
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.distinguished_name.push(DnType::OrganizationName, "Drosera");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut p);
    p
}

fn write_public(path: &Path, data: &str) -> Result<(), EnrollError> {
    Ok(tls::write_file_atomic(path, data.as_bytes(), 0o644)?)
}

fn write_secret(path: &Path, data: &str) -> Result<(), EnrollError> {
    if path.exists() {
        return Err(EnrollError::Exists(path.to_path_buf()));
    }
    Ok(tls::write_file_atomic(path, data.as_bytes(), 0o600)?)
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), EnrollError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    b.create(dir).map_err(|source| EnrollError::Io { path: dir.to_path_buf(), source })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Creates the CA, the server certificate and `DIR/drosera-admin.toml`; returns the config path.
pub fn init(opts: &InitOptions) -> Result<PathBuf, EnrollError> {
    let dir = absolute(&opts.dir);
    let config_path = dir.join("drosera-admin.toml");
    for p in [dir.join("ca.key"), dir.join("server.key"), dir.join("update.key"), config_path.clone()] {
        if p.exists() {
            return Err(EnrollError::Exists(p));
        }
    }
    let admin = match &opts.admin {
        Some(a) => Some(split_host_port(a).ok_or_else(|| EnrollError::BadAddress(a.clone()))?),
        None => None,
    };
    let port = admin.as_ref().map(|(_, p)| *p).unwrap_or(7443);
    let listen = opts.listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)));
    let dashboard = opts.dashboard_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9080)));
    if let Some(url) = &opts.db_url {
        crate::storage::parse_url(url).map_err(EnrollError::BadUrl)?;
    }
    if opts.join.is_some() && !opts.server_names.is_empty() {
        return Err(EnrollError::JoinNames);
    }
    create_dir(&dir, 0o700)?;
    match &opts.join {
        Some(first) => join_fleet(first, &dir)?,
        None => new_ca(&dir, admin.as_ref().map(|(h, _)| h.as_str()), &opts.server_names)?,
    }
    let public = opts.admin.clone().unwrap_or_default();
    let database = match &opts.db_url {
        Some(url) => format!("url = {}", toml::Value::String(url.clone())),
        None => "path = \"admin.db\"".to_string(),
    };
    let text = format!(
        "# drosera-admin configuration written by `drosera-admin init`.\n\
         # Every key and its default: see drosera-admin.example.toml. Relative paths are relative to this file.\n\n\
         [database]\n{database}\n\n\
         [tls]\nca_cert = \"ca.pem\"\nca_key = \"ca.key\"\ncert = \"server.pem\"\nkey = \"server.key\"\n\n\
         [ingest]\nlisten = \"{listen}\"\n# host:port written into sensor bundles\npublic_address = \"{public}\"\n\n\
         [dashboard]\nlisten = \"{dashboard}\"\n\n\
         [samples]\n# malware samples from sensors: zstd-compressed, mode 0600\ndir = \"samples\"\n\n\
         [updates]\n# signed sensor releases: update.key (0600) signs, update.pub goes into bundles\n\
         key = \"update.key\"\npublic_key = \"update.pub\"\ndir = \"releases\"\n"
    );
    // The update key before the config: a config is only written for a complete admin folder.
    // A fleet shares one update key (sensors trust one public key), like its CA.
    let shared_key = opts.join.as_ref().map(|first| first.join("update.key")).filter(|k| k.is_file());
    match shared_key {
        Some(key) => {
            let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|source| EnrollError::Io { path: p, source });
            let first = key.parent().map(Path::to_path_buf).unwrap_or_default();
            write_secret(&dir.join("update.key"), &read(key)?)?;
            write_public(&dir.join("update.pub"), &read(first.join("update.pub"))?)?;
        }
        None => crate::releases::keygen(&dir.join("update.key"), &dir.join("update.pub")).map_err(|e| {
            EnrollError::Io { path: dir.join("update.key"), source: std::io::Error::other(e.to_string()) }
        })?,
    }
    write_public(&config_path, &text)?;
    #[cfg(unix)]
    if opts.db_url.is_some() {
        // The URL may hold the database password.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| EnrollError::Io { path: config_path.clone(), source })?;
    }
    // Create the database now, so `sensor add` and `serve` find it.
    let cfg = AdminConfig::load(&config_path).map_err(|e| EnrollError::Io {
        path: config_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    crate::storage::open(&cfg.database)?;
    Ok(config_path)
}

/// A new CA and a server certificate for `localhost`, the loopback addresses, `admin_host` and
/// `names`, written into `dir`.
fn new_ca(dir: &Path, admin_host: Option<&str>, names: &[String]) -> Result<(), EnrollError> {
    let ca_key = KeyPair::generate()?;
    let ca_name = format!("Drosera admin CA {:08x}", rand::random::<u32>());
    let ca_cert = ca_params(&ca_name).self_signed(&ca_key)?;

    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    for host in admin_host.into_iter().chain(names.iter().map(String::as_str)) {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !host.is_empty() && !sans.iter().any(|s| s == host) {
            sans.push(host.to_string());
        }
    }
    let mut sp = CertificateParams::new(sans)?;
    sp.distinguished_name = DistinguishedName::new();
    sp.distinguished_name.push(DnType::CommonName, "drosera-admin");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.use_authority_key_identifier_extension = true;
    validity(&mut sp);
    let server_key = KeyPair::generate()?;
    let server_cert = sp.signed_by(&server_key, &ca_cert, &ca_key)?;

    write_secret(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_public(&dir.join("ca.pem"), &ca_cert.pem())?;
    write_secret(&dir.join("server.key"), &server_key.serialize_pem())?;
    write_public(&dir.join("server.pem"), &server_cert.pem())?;
    Ok(())
}

/// Copies the fleet's CA (with its key, so this admin can enroll sensors too) and its server
/// certificate from the first admin's folder `first` into `dir`.
fn join_fleet(first: &Path, dir: &Path) -> Result<(), EnrollError> {
    let read = |name: &str| {
        let p = first.join(name);
        std::fs::read_to_string(&p).map_err(|source| EnrollError::Io { path: p, source })
    };
    let (ca, server) = (read("ca.pem")?, read("server.pem")?);
    let server_key = tls::read_private_key_pem(&first.join("server.key"))?;
    // The CA key is optional: without it this admin ingests but cannot enroll.
    if first.join("ca.key").exists() {
        write_secret(&dir.join("ca.key"), &tls::read_private_key_pem(&first.join("ca.key"))?)?;
    }
    write_public(&dir.join("ca.pem"), &ca)?;
    write_secret(&dir.join("server.key"), &server_key)?;
    write_public(&dir.join("server.pem"), &server)?;
    // The copied files must still make a working server configuration.
    tls::server_config(&dir.join("ca.pem"), &dir.join("server.pem"), &dir.join("server.key"))?;
    Ok(())
}

/// The files of a sensor bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub uplink_toml: PathBuf,
    pub admin: String,
}

/// What `drosera-admin sensor add` needs.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    pub name: String,
    pub out: PathBuf,
    /// `host:port` the sensor connects to, or several (the admins of a fleet, in the order the
    /// sensor tries them); default: `[ingest] public_address`.
    pub admins: Vec<String>,
    /// Directory the bundle will live in on the sensor (default: the absolute `out`).
    pub install_dir: Option<PathBuf>,
}

/// Issues a client certificate for a sensor, enrolls it, and writes its bundle to `opts.out`.
pub fn add_sensor(cfg: &AdminConfig, opts: &AddOptions) -> Result<Bundle, EnrollError> {
    let name = opts.name.as_str();
    if !tls::valid_sensor_name(name) {
        return Err(SensorError::BadName(name.to_string()).into());
    }
    let admins = if opts.admins.is_empty() { vec![cfg.ingest.public_address()] } else { opts.admins.clone() };
    let mut hosts = Vec::new();
    for a in &admins {
        hosts.push(split_host_port(a).ok_or_else(|| EnrollError::BadAddress(a.clone()))?.0);
    }
    // One name for every address, or (different hosts) each address's own host, which the
    // server certificate must then carry (`init --server-name`).
    let server_name = if hosts.iter().all(|h| *h == hosts[0]) { hosts[0].clone() } else { String::new() };
    let admin = admins.join(", ");
    let admin_toml = if admins.len() == 1 {
        toml::Value::String(admins[0].clone()).to_string()
    } else {
        toml::Value::Array(admins.iter().cloned().map(toml::Value::String).collect()).to_string()
    };
    let out = absolute(&opts.out);
    let key_path = out.join("sensor.key");
    if key_path.exists() {
        return Err(EnrollError::Exists(key_path));
    }

    let ca_key = KeyPair::from_pem(&tls::read_private_key_pem(&cfg.tls.ca_key)?)?;
    let ca_der = tls::load_certs(&cfg.tls.ca_cert)?;
    let ca_cn = ca_der.first().map(|c| tls::common_name(c.as_ref())).transpose()?.unwrap_or_default();
    let ca_pem = std::fs::read_to_string(&cfg.tls.ca_cert)
        .map_err(|source| EnrollError::Io { path: cfg.tls.ca_cert.clone(), source })?;
    let ca_cert = ca_params(&ca_cn).self_signed(&ca_key)?;

    let mut p = CertificateParams::new(vec![name.to_string()])?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
    let fingerprint = tls::cert_sha256(cert.der().as_ref());

    // Enroll only once the bundle is written: if writing fails, nothing is enrolled. The name is
    // checked first (so a taken name writes nothing) and again, atomically, when registering.
    let db = crate::storage::open(&cfg.database)?;
    sensors::check_enrollable(&*db, name)?;
    create_dir(&out, 0o700)?;
    let install = opts.install_dir.clone().unwrap_or_else(|| out.clone());
    let bundle = Bundle {
        dir: out.clone(),
        ca_cert: out.join("ca.pem"),
        cert: out.join("sensor.pem"),
        key: key_path,
        uplink_toml: out.join("uplink.toml"),
        admin: admin.clone(),
    };
    write_secret(&bundle.key, &key.serialize_pem())?;
    write_public(&bundle.cert, &cert.pem())?;
    write_public(&bundle.ca_cert, &ca_pem)?;
    // The update public key (never the private one): the sensor finds it beside ca.pem.
    if let Ok(public) = std::fs::read_to_string(&cfg.updates.public_key) {
        write_public(&out.join("update.pub"), &public)?;
    }
    let text = format!(
        "# Uplink for sensor \"{name}\", written by `drosera-admin sensor add`.\n\
         # Copy this folder to {install} on the sensor and append this section to drosera-sensor.toml\n\
         # (whose [sensor] name must be \"{name}\"). Keep sensor.key mode 0600.\n\
         # enrolled: {enrolled} (unix seconds; a sensor with no clock source yet moves its clock forward to it)\n\
         [uplink]\nadmin = {admin_toml}\nserver_name = \"{server_name}\"\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        install.join("ca.pem").display(),
        install.join("sensor.pem").display(),
        install.join("sensor.key").display(),
        install = install.display(),
        enrolled = now_ms() / 1000,
    );
    write_public(&bundle.uplink_toml, &text)?;
    if let Err(e) = sensors::register(&*db, name, &fingerprint, now_ms()) {
        // Enrolled by someone else in the meantime: this bundle's certificate is not the one
        // enrolled and would be refused; do not leave its key behind.
        let _ = std::fs::remove_file(&bundle.key);
        return Err(e.into());
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_add_writes_usable_files() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            dir: dir.path().join("admin"),
            admin: Some("admin.example.net:17443".into()),
            ..Default::default()
        };
        let cfg_path = init(&opts).unwrap();
        assert!(matches!(init(&opts), Err(EnrollError::Exists(_))));
        let cfg = AdminConfig::load(&cfg_path).unwrap();
        assert_eq!(cfg.ingest.listen.port(), 17443);
        // Server config builds (key mode ok, chain ok).
        tls::server_config(&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key).unwrap();
        let b =
            add_sensor(&cfg, &AddOptions { name: "pi-1".into(), out: dir.path().join("pi-1"), ..Default::default() })
                .unwrap();
        tls::client_config(&b.ca_cert, &b.cert, &b.key).unwrap();
        let certs = tls::load_certs(&b.cert).unwrap();
        let id = tls::peer_identity(Some(&certs)).unwrap();
        assert_eq!(id.name, "pi-1");
        let text = std::fs::read_to_string(&b.uplink_toml).unwrap();
        assert!(text.contains("admin = \"admin.example.net:17443\""), "{text}");
        let two = add_sensor(
            &cfg,
            &AddOptions {
                name: "pi-2".into(),
                out: dir.path().join("pi-2"),
                admins: vec!["a1.example.net:7443".into(), "a2.example.net:7443".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&two.uplink_toml).unwrap();
        assert!(text.contains(r#"admin = ["a1.example.net:7443", "a2.example.net:7443"]"#), "{text}");
        assert!(text.contains("server_name = \"\""), "each address's own host: {text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert!(b.dir.join("update.pub").is_file(), "bundles carry the update public key");
            assert!(!b.dir.join("update.key").exists(), "never the private key");
            for k in [&b.key, &cfg.tls.key, &cfg.tls.ca_key, &cfg.updates.key] {
                assert_eq!(std::fs::metadata(k).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
        // A second admin of the fleet: same CA, same server certificate, its own config.
        let second = init(&InitOptions {
            dir: dir.path().join("admin2"),
            join: Some(dir.path().join("admin")),
            db_url: Some("sqlite:other.db".into()),
            ..Default::default()
        })
        .unwrap();
        let cfg2 = AdminConfig::load(&second).unwrap();
        for f in ["ca.pem", "server.pem"] {
            assert_eq!(
                std::fs::read(dir.path().join("admin").join(f)).unwrap(),
                std::fs::read(dir.path().join("admin2").join(f)).unwrap()
            );
        }
        tls::server_config(&cfg2.tls.ca_cert, &cfg2.tls.cert, &cfg2.tls.key).unwrap();
        assert_eq!(
            cfg2.database.backend().unwrap(),
            crate::storage::Backend::Sqlite(dir.path().join("admin2").join("other.db"))
        );
        let names = InitOptions {
            dir: dir.path().join("admin3"),
            join: Some(dir.path().join("admin")),
            server_names: vec!["x".into()],
            ..Default::default()
        };
        assert!(matches!(init(&names), Err(EnrollError::JoinNames)));
        // Same name again: refused, and the existing bundle is untouched.
        let again =
            add_sensor(&cfg, &AddOptions { name: "pi-1".into(), out: dir.path().join("pi-1b"), ..Default::default() });
        assert!(matches!(again, Err(EnrollError::Sensor(crate::sensors::SensorError::Exists(_)))), "{again:?}");
    }
}
