//! Dropping root after the ports are bound.
//!
//! The sensor is meant to run as an unprivileged user with only `CAP_NET_BIND_SERVICE` (the Pi
//! image's systemd unit does that). When it is started as root anyway, it binds its ports first,
//! gives its data directory to the configured user ([`hand_dir_to`]) and then calls
//! [`drop_privileges`]: supplementary groups, gid and uid switch to the configured user, every
//! capability (bounding set included) is dropped and `no_new_privs` is set, so an exploited
//! handler holds nothing an ordinary user does not.
//!
//! Two traps, both found by a review (issue 19):
//! * The bounding set and `no_new_privs` are per thread. A thread that exists before the drop
//!   keeps its full bounding set, so the drop must happen while the process has exactly one
//!   thread: before the tokio runtime and the store writer exist. [`drop_privileges`] refuses to
//!   run otherwise.
//! * The data directory belongs to the sensor user, who may have planted symlinks or hard links
//!   in it during an earlier (compromised) run. A root `chown` that follows one hands an
//!   arbitrary file to that user. [`hand_dir_to`] opens every entry with `O_NOFOLLOW`, changes
//!   the owner through the open descriptor (`fchown`), never touches a symlink's target and
//!   skips regular files with more than one link.
//!
//! With `heap` (one `mallopt`), the only `unsafe` in the sensor: `prctl` (no_new_privs, the
//! capability bounding set) has no safe wrapper in nix, nix 0.29's `openat` returns a raw
//! descriptor, and the test forks. Every block says why it is sound.
#![allow(unsafe_code)]

use nix::dir::Dir;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{fchown, getegid, geteuid, setgid, setgroups, setuid, Gid, Uid, User};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("config key `sensor.user`: user {0:?} does not exist. Fix: create it (useradd --system {0}) or set sensor.user to an existing unprivileged user")]
    NoSuchUser(String),
    #[error("config key `sensor.user`: refusing to run as root ({0:?} has uid 0). Fix: name an unprivileged user")]
    UserIsRoot(String),
    #[error("cannot drop privileges ({step}): {source}")]
    Syscall { step: &'static str, source: nix::Error },
    #[error("capabilities remain after dropping privileges (CapEff={0}); refusing to serve")]
    CapsRemain(String),
    #[error("privileges must be dropped while the process has one thread, but it has {0}: threads started earlier would keep root's capability bounding set")]
    Threaded(usize),
    #[error("config key `sensor.data_dir`: cannot hand {path} to the sensor user ({step}): {source}. Fix: make it a real directory (not a symlink) that root can write")]
    DataDir { path: String, step: &'static str, source: nix::Error },
}

/// What [`hand_dir_to`] did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HandedOver {
    /// Directories and regular files now owned by the sensor user.
    pub handed: u64,
    /// Entries left alone: symlinks, files with several links, devices, sockets, FIFOs, and
    /// anything deeper than [`HAND_OVER_DEPTH`].
    pub skipped: u64,
}

/// How deep [`hand_dir_to`] descends (the store and the sample area use two levels).
pub const HAND_OVER_DEPTH: usize = 4;

/// When running as root with a configured user: creates `dir` (mode 0700) if it is missing and
/// gives it and what is in it to that user, without following any link (see the module docs).
/// A no-op when not root or when `user` is empty.
pub fn hand_dir_to(dir: &Path, user: &str) -> Result<HandedOver, PrivilegeError> {
    if !geteuid().is_root() || user.is_empty() {
        return Ok(HandedOver::default());
    }
    let u = User::from_name(user)
        .map_err(|source| PrivilegeError::Syscall { step: "look up user", source })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(user.to_string()))?;
    let err = |step, source| PrivilegeError::DataDir { path: dir.display().to_string(), step, source };
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err("create", nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(None, dir, flags, Mode::empty()).map_err(|e| err("open without following links", e))?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    fchown(fd.as_raw_fd(), Some(u.uid), Some(u.gid)).map_err(|e| err("chown", e))?;
    let mut done = HandedOver { handed: 1, skipped: 0 };
    hand_entries(fd, &u, HAND_OVER_DEPTH, &mut done).map_err(|e| err("read", e))?;
    Ok(done)
}

/// Hands every entry of the open directory `dir` to `u`, descending `depth` more levels.
fn hand_entries(dir: OwnedFd, u: &User, depth: usize, done: &mut HandedOver) -> nix::Result<()> {
    let mut d = Dir::from_fd(dir.into_raw_fd())?;
    let dfd: RawFd = d.as_raw_fd();
    let names: Vec<std::ffi::CString> = d
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        // O_NOFOLLOW: a symlink fails with ELOOP and is left alone; O_NONBLOCK: a FIFO does not
        // block the open (it is skipped after fstat).
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = match openat(Some(dfd), name.as_c_str(), flags, Mode::empty()) {
            // SAFETY: `openat` just returned this descriptor and nothing else owns it.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(e) => {
                tracing::warn!(entry = ?name, error = %e, "data dir entry left alone (a symlink or unreadable)");
                done.skipped += 1;
                continue;
            }
        };
        let st = fstat(fd.as_raw_fd())?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR && depth > 0 {
            fchown(fd.as_raw_fd(), Some(u.uid), Some(u.gid))?;
            done.handed += 1;
            hand_entries(fd, u, depth - 1, done)?;
        } else if kind == SFlag::S_IFREG && st.st_nlink == 1 {
            fchown(fd.as_raw_fd(), Some(u.uid), Some(u.gid))?;
            done.handed += 1;
        } else {
            tracing::warn!(entry = ?name, nlink = st.st_nlink, "data dir entry left alone (hard-linked, special or too deep)");
            done.skipped += 1;
        }
    }
    Ok(())
}

/// The number of threads of this process (from /proc; 1 when /proc cannot be read).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|rd| rd.count()).unwrap_or(1)
}

/// Threads the process had before it started any of its own (see [`record_startup_threads`]).
static STARTUP_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Records how many threads exist before the program starts any: 1 natively, 2 under
/// qemu-user (the arm64 tests), whose emulator keeps a thread of its own. `main` calls it
/// first; [`drop_privileges`] then refuses if there are more, i.e. threads of ours.
pub fn record_startup_threads() {
    let _ = STARTUP_THREADS.set(thread_count());
}

/// What happened, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not root: nothing to drop (capabilities granted by systemd stay as they are).
    NotRoot,
    /// Root, kept on purpose (`sensor.user = ""`).
    KeptRoot,
    /// Switched to this uid/gid with no capabilities left.
    To { uid: u32, gid: u32 },
}

/// Drops root to `user`; a no-op when not running as root. An empty `user` keeps root (for
/// throw-away test machines only; logged as a warning).
pub fn drop_privileges(user: &str) -> Result<Dropped, PrivilegeError> {
    if !geteuid().is_root() {
        return Ok(Dropped::NotRoot);
    }
    if user.is_empty() {
        tracing::warn!("running as root because sensor.user is empty; set sensor.user on real deployments");
        return Ok(Dropped::KeptRoot);
    }
    let u = User::from_name(user)
        .map_err(|source| PrivilegeError::Syscall { step: "look up user", source })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(user.to_string()))?;
    if u.uid.is_root() {
        return Err(PrivilegeError::UserIsRoot(user.to_string()));
    }
    let threads = thread_count();
    if threads > STARTUP_THREADS.get().copied().unwrap_or(1) {
        return Err(PrivilegeError::Threaded(threads));
    }
    // Drop every capability from the bounding set while we still hold CAP_SETPCAP.
    for cap in 0..=63 {
        // SAFETY: prctl with PR_CAPBSET_DROP takes integer arguments only; EINVAL past the
        // last capability is expected and ignored.
        unsafe {
            libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
        }
    }
    setgroups(&[u.gid]).map_err(|source| PrivilegeError::Syscall { step: "setgroups", source })?;
    setgid(u.gid).map_err(|source| PrivilegeError::Syscall { step: "setgid", source })?;
    setuid(u.uid).map_err(|source| PrivilegeError::Syscall { step: "setuid", source })?;
    // SAFETY: integer-only prctl.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    if setuid(Uid::from_raw(0)).is_ok() || geteuid().is_root() {
        return Err(PrivilegeError::CapsRemain("could regain root".into()));
    }
    let eff = effective_caps();
    if eff.as_deref().is_some_and(|c| c.trim_start_matches('0').is_empty()) || eff.is_none() {
        Ok(Dropped::To { uid: u.uid.as_raw(), gid: Gid::as_raw(getegid()) })
    } else {
        Err(PrivilegeError::CapsRemain(eff.unwrap_or_default()))
    }
}

/// `CAP_NET_RAW` (linux/capability.h).
const CAP_NET_RAW: u32 = 13;

/// True if `CAP_NET_RAW` is in this process's permitted set (from /proc).
pub fn holds_net_raw() -> bool {
    cap_mask("CapPrm:").is_some_and(|m| m & (1 << CAP_NET_RAW) != 0)
}

/// Gives up `CAP_NET_RAW` for good (ambient, inheritable, effective and permitted sets), after
/// scan detection opened its packet socket. The appliance unit starts the sensor as its own user
/// with `CAP_NET_RAW` in its ambient set ([`drop_privileges`] then has no root to drop), so
/// without this an exploited handler could sniff or forge packets. A no-op when the capability
/// is not held (root drops everything in [`drop_privileges`] anyway). Checked afterwards.
pub fn drop_net_raw() -> Result<bool, PrivilegeError> {
    if !holds_net_raw() {
        return Ok(false);
    }
    // SAFETY: integer-only prctl; EINVAL on kernels without ambient capabilities is harmless.
    unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_LOWER, CAP_NET_RAW as libc::c_ulong, 0, 0);
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut hdr = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two `Data` (version 3) into `data`; both pointers are valid.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) } != 0 {
        return Err(PrivilegeError::Syscall { step: "capget", source: nix::Error::last() });
    }
    let bit = 1u32 << CAP_NET_RAW;
    data[0].effective &= !bit;
    data[0].permitted &= !bit;
    data[0].inheritable &= !bit;
    let hdr = Header { version: VERSION_3, pid: 0 };
    // SAFETY: capset reads the header and two `Data`; both pointers are valid.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) } != 0 {
        return Err(PrivilegeError::Syscall { step: "capset (drop CAP_NET_RAW)", source: nix::Error::last() });
    }
    if holds_net_raw() {
        return Err(PrivilegeError::CapsRemain("CAP_NET_RAW is still permitted".into()));
    }
    Ok(true)
}

/// A capability mask line of /proc/self/status (`CapPrm:`, `CapEff:`).
fn cap_mask(prefix: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The `CapEff` hex mask of this process, from /proc.
fn effective_caps() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_names_the_config_key() {
        if !geteuid().is_root() {
            assert_eq!(drop_privileges("nobody-such-user").unwrap(), Dropped::NotRoot);
            return;
        }
        let err = drop_privileges("no-such-user-drosera").unwrap_err().to_string();
        assert!(err.contains("sensor.user"), "{err}");
        let err = drop_privileges("root").unwrap_err().to_string();
        assert!(err.contains("uid 0"), "{err}");
    }

    /// Root hands the data directory over, entry by entry, and leaves symlinks, hard links and
    /// special files alone, so a compromised sensor's planted links gain it nothing.
    #[test]
    fn hand_over_follows_no_link() {
        use std::os::unix::fs::MetadataExt;
        let Some(nobody) = User::from_name("nobody").ok().flatten().filter(|_| geteuid().is_root()) else {
            assert_eq!(hand_dir_to(Path::new("/nonexistent"), "nobody").unwrap(), HandedOver::default());
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("samples/tmp")).unwrap();
        std::fs::write(data.join("store.db"), "x").unwrap();
        std::fs::write(data.join("samples/tmp/part"), "x").unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only").unwrap();
        std::os::unix::fs::symlink(&secret, data.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), data.join("samples/dirlink")).unwrap();
        std::fs::hard_link(&secret, data.join("hard")).unwrap();
        nix::unistd::mkfifo(&data.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let done = hand_dir_to(&data, "nobody").unwrap();
        // data, samples, samples/tmp, store.db, samples/tmp/part
        assert_eq!(done, HandedOver { handed: 5, skipped: 4 });
        for p in ["", "samples", "samples/tmp", "store.db", "samples/tmp/part"] {
            assert_eq!(std::fs::metadata(data.join(p)).unwrap().uid(), nobody.uid.as_raw(), "{p}");
        }
        assert_eq!(std::fs::metadata(&secret).unwrap().uid(), 0);
        assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), 0);
        // A data directory that is itself a symlink is refused with the key's name.
        let link = dir.path().join("data-link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        let err = hand_dir_to(&link, "nobody").unwrap_err().to_string();
        assert!(err.contains("sensor.data_dir"), "{err}");
        // A missing one is created 0700 and handed over.
        let fresh = dir.path().join("fresh/data");
        hand_dir_to(&fresh, "nobody").unwrap();
        let md = std::fs::metadata(&fresh).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o777), (nobody.uid.as_raw(), 0o700));
    }

    /// A non-root process holding CAP_NET_RAW (as under the appliance unit) gives it up and
    /// cannot open a packet socket afterwards; it keeps its other capabilities.
    #[test]
    fn net_raw_is_dropped_in_a_child_process() {
        if !geteuid().is_root() || User::from_name("nobody").ok().flatten().is_none() {
            eprintln!("skipping: needs root and the user nobody");
            return;
        }
        // SAFETY: the child only makes syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // Become nobody keeping the permitted set (PR_SET_KEEPCAPS), like a unit with
                // User= and AmbientCapabilities=CAP_NET_RAW.
                let nobody = User::from_name("nobody").ok().flatten().map(|u| u.uid).unwrap_or(Uid::from_raw(65534));
                // SAFETY: integer-only prctl.
                unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
                let ok = setuid(nobody).is_ok() && holds_net_raw();
                let packet = || {
                    // SAFETY: plain socket(2); closed right away.
                    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0) };
                    if fd >= 0 {
                        // SAFETY: we own fd.
                        unsafe { libc::close(fd) };
                    }
                    fd >= 0
                };
                let dropped = matches!(drop_net_raw(), Ok(true));
                let ok = ok && dropped && !holds_net_raw() && !packet() && matches!(drop_net_raw(), Ok(false));
                std::process::exit(if ok { 0 } else { 1 });
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn refuses_to_drop_with_threads_running() {
        if !geteuid().is_root() {
            return;
        }
        // The test runner has threads: the drop must refuse rather than half-drop.
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let err = drop_privileges("nobody").unwrap_err();
        assert!(matches!(err, PrivilegeError::Threaded(n) if n > 1), "{err}");
        assert!(geteuid().is_root());
        drop(_tx);
        let _ = t.join();
    }

    #[test]
    fn drops_root_in_a_child_process() {
        if !geteuid().is_root() || User::from_name("nobody").ok().flatten().is_none() {
            eprintln!("skipping: needs root and the user nobody");
            return;
        }
        // Fork so the test runner itself keeps its privileges.
        // SAFETY: the child only calls async-signal-safe-enough code and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // The child has only the forking thread (and, under qemu-user, the emulator's).
                record_startup_threads();
                let ok = matches!(drop_privileges("nobody"), Ok(Dropped::To { .. }))
                    && !geteuid().is_root()
                    && std::net::TcpListener::bind("127.0.0.1:1").is_err();
                std::process::exit(if ok { 0 } else { 1 });
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
