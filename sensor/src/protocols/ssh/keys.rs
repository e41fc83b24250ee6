//! The SSH host keys: RSA 3072, ECDSA nistp256 and Ed25519, the three a Debian 12 sshd
//! generates at install time.
//!
//! WHY all three: a server that offers only an Ed25519 key is unlike any stock OpenSSH or
//! dropbear, and `nmap --script ssh-hostkey` shows the difference at once. WHY persisted: a host
//! key that changes at every restart is another tell (and makes every returning attacker's
//! client complain). With `host_key = PATH` in the config, the Ed25519 key comes from the seed
//! in PATH (as before, so existing sensors keep their key) and the others from `PATH.rsa` and
//! `PATH.ecdsa` (OpenSSH private key format); each file is created on first use, mode 0600,
//! written atomically. Without a path the keys live for this run only.
//!
//! RSA key generation takes a while (seconds on a Pi), so it runs on a blocking thread, once
//! per path and process.

use russh::keys::ssh_key::private::{EcdsaKeypair, Ed25519Keypair, RsaKeypair};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{EcdsaCurve, PrivateKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// RSA host key size (OpenSSH's default since 8.x).
const RSA_BITS: usize = 3072;

/// The three host keys of a sensor.
pub(super) struct HostKeys {
    pub rsa: PrivateKey,
    pub ecdsa: PrivateKey,
    pub ed25519: PrivateKey,
}

type Cells = Mutex<HashMap<Option<PathBuf>, Arc<tokio::sync::OnceCell<Arc<HostKeys>>>>>;

/// The host keys for `path` (loaded or created once per process).
pub(super) async fn host_keys(path: Option<&Path>) -> Arc<HostKeys> {
    static CELLS: OnceLock<Cells> = OnceLock::new();
    let cell = {
        let mut cells = CELLS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        cells.entry(path.map(Path::to_path_buf)).or_default().clone()
    };
    let path = path.map(Path::to_path_buf);
    cell.get_or_init(|| async move {
        let loaded = tokio::task::spawn_blocking(move || load_or_create(path.as_deref())).await;
        Arc::new(match loaded {
            Ok(keys) => keys,
            // The blocking task panicked (it should not): keys for this run, made here.
            Err(_) => load_or_create(None),
        })
    })
    .await
    .clone()
}

/// Loads (or creates) the keys of `path`; without a path, or when a file cannot be used, the
/// key is made for this run only (and the problem logged).
fn load_or_create(path: Option<&Path>) -> HostKeys {
    let ed_seed = path.and_then(|p| {
        load_or_create_seed(p)
            .map_err(|e| tracing::warn!(path = %p.display(), error = %e, "cannot use the SSH host key seed; using a key for this run only"))
            .ok()
    });
    let ed25519 = PrivateKey::from(Ed25519Keypair::from_seed(&ed_seed.unwrap_or_else(rand::random)));
    let rsa = keyed_file(path, "rsa", || {
        RsaKeypair::random(&mut russh::keys::key::safe_rng(), RSA_BITS).map(PrivateKey::from)
    });
    let ecdsa = keyed_file(path, "ecdsa", || {
        EcdsaKeypair::random(&mut russh::keys::key::safe_rng(), EcdsaCurve::NistP256).map(PrivateKey::from)
    });
    HostKeys { rsa, ecdsa, ed25519 }
}

/// The key in `PATH.ext` (created with `make` when missing), or a new one for this run.
fn keyed_file(
    path: Option<&Path>,
    ext: &str,
    make: impl Fn() -> russh::keys::ssh_key::Result<PrivateKey>,
) -> PrivateKey {
    let file = path.map(|p| {
        let mut name = p.as_os_str().to_owned();
        name.push(".");
        name.push(ext);
        PathBuf::from(name)
    });
    if let Some(f) = &file {
        match load_or_create_key(f, &make) {
            Ok(k) => return k,
            Err(e) => {
                tracing::warn!(path = %f.display(), error = %e, "cannot use the SSH host key file; using a key for this run only")
            }
        }
    }
    // A key for this run: generation only fails on a broken random source, which would make
    // every other key fail as well; an Ed25519 key keeps the server answering meanwhile.
    make().unwrap_or_else(|_| PrivateKey::from(Ed25519Keypair::from_seed(&rand::random())))
}

fn load_or_create_key(
    path: &Path,
    make: &dyn Fn() -> russh::keys::ssh_key::Result<PrivateKey>,
) -> Result<PrivateKey, std::io::Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.trim()).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = make().map_err(std::io::Error::other)?;
            let text = key.to_openssh(LineEnding::LF).map_err(std::io::Error::other)?;
            drosera_uplink::tls::write_file_atomic(path, text.as_bytes(), 0o600).map_err(std::io::Error::other)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// Reads the 32-byte Ed25519 seed (hex) from `path`, creating it (0600) if absent.
pub(super) fn load_or_create_seed(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(std::io::Error::other)?;
            bytes.try_into().map_err(|_| std::io::Error::other("host key seed must be 32 bytes of hex"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            drosera_uplink::tls::write_file_atomic(path, hex::encode(seed).as_bytes(), 0o600)
                .map_err(std::io::Error::other)?;
            Ok(seed)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::Algorithm;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_host_key_seed_is_created_private_once_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_key.seed");
        let seed = load_or_create_seed(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_seed(&path).unwrap(), seed, "a restart keeps the host key");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
        std::fs::write(&path, "not hex").unwrap();
        assert!(load_or_create_seed(&path).is_err());
    }

    #[test]
    fn three_keys_are_created_private_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_key.seed");
        let a = load_or_create(Some(&path));
        assert!(a.rsa.algorithm().is_rsa());
        assert_eq!(a.ecdsa.algorithm(), Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 });
        assert_eq!(a.ed25519.algorithm(), Algorithm::Ed25519);
        match a.rsa.key_data() {
            russh::keys::ssh_key::private::KeypairData::Rsa(k) => {
                assert_eq!(k.public().n().as_positive_bytes().map(|b| b.len() * 8), Some(RSA_BITS));
            }
            other => panic!("not RSA: {other:?}"),
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["ssh_host_key.seed", "ssh_host_key.seed.ecdsa", "ssh_host_key.seed.rsa"]);
        for n in &names {
            assert_eq!(std::fs::metadata(dir.path().join(n)).unwrap().permissions().mode() & 0o777, 0o600, "{n}");
        }
        let b = load_or_create(Some(&path));
        for (x, y) in [(&a.rsa, &b.rsa), (&a.ecdsa, &b.ecdsa), (&a.ed25519, &b.ed25519)] {
            assert_eq!(x.public_key(), y.public_key(), "a restart keeps every host key");
        }
    }
}
