//! Dropping root after the ports are bound.
//!
//! The sensor is meant to run as an unprivileged user with only `CAP_NET_BIND_SERVICE` (the Pi
//! image's systemd unit does that). When it is started as root anyway, it binds its ports first
//! and then calls [`drop_privileges`]: supplementary groups, gid and uid switch to the configured
//! user, every capability (bounding set included) is dropped and `no_new_privs` is set, so an
//! exploited handler holds nothing an ordinary user does not.
//!
//! The only `unsafe` in the sensor: `prctl` (no_new_privs, the capability bounding set) has no
//! safe wrapper in nix, and the test forks. Every block says why it is sound.
#![allow(unsafe_code)]

use nix::unistd::{getegid, geteuid, setgid, setgroups, setuid, Gid, Uid, User};

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
