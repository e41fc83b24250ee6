//! `drosera-sensor launch`: the tiny supervisor that starts the right slot and rolls back.
//!
//! The appliance unit runs `drosera-sensor launch --config …` as its main process (see
//! `docs/appliance.md`); the launcher runs `drosera-sensor run` as its child from the active slot
//! (or, before any update, from its own binary) and:
//! * child exits with [`HANDOVER_EXIT`] → a release is staged: count a trial in `state.json`
//!   (fsynced *before* the start), start the staged slot with [`ENV_TRIAL_FILE`] set;
//! * the trial child creates that file (ready and first health event acknowledged) within
//!   `[update] trial_timeout_s` → the slot becomes active;
//! * it exits first or the time runs out → it is stopped (SIGTERM, then SIGKILL), the version is
//!   marked failed (never tried again), a report is left for the admin and the previous binary
//!   starts again. A staged release whose trials are used up (a power cut during its trial) is
//!   rolled back at the next start, so there is no boot loop;
//! * any other exit of the child ends the launcher with the same status (systemd's `Restart=`
//!   starts it again); SIGTERM/SIGINT are passed to the child, and the launcher waits for it.
//!
//! A slot's binary is checked against its signed manifest (signature, architecture, size,
//! sha256) right before it runs, and the bytes that were checked are what runs: they are copied
//! into a sealed memory file, which is executed through `/proc/self/fd`.

use super::{
    read_json, slot_manifest, write_json, Paths, Pending, PendingConfig, Report, Slot, Staged, StagedConfig, State,
    ENV_LAUNCHER, ENV_RELEASE, ENV_TRIAL_FILE, ENV_TRIAL_KIND, ENV_TRIAL_WHAT, HANDOVER_EXIT, MAX_REMEMBERED,
    MAX_REPORTS, MAX_TRIALS,
};
use crate::config::Config;
use anyhow::Context;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

/// systemd's variable naming the process the watchdog is for (the unit's main process: us).
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// How often a trial looks for its health file.
const POLL: Duration = Duration::from_millis(200);
/// How long a stopped child has to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// What runs: a verified slot or the launcher's own binary.
struct Program {
    /// Keeps the sealed memory file open until the child has started.
    _memfd: Option<OwnedFd>,
    path: PathBuf,
    version: Option<String>,
}

/// Runs the launcher until its child stops for good; returns the exit code to leave with.
pub async fn launch(config_path: &Path) -> anyhow::Result<i32> {
    let cfg = Config::load(config_path)?;
    let paths = Paths::new(&cfg.sensor.data_dir);
    let key = cfg.update.load_key(cfg.uplink.as_ref().map(|u| u.ca_cert.as_path())).map_err(anyhow::Error::msg)?;
    let trial_timeout = Duration::from_secs(cfg.update.trial_timeout_s);
    let self_exe = std::env::current_exe().context("cannot find the launcher's own binary")?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    std::fs::create_dir_all(&paths.dir).with_context(|| format!("cannot create {}", paths.dir.display()))?;
    loop {
        let mut state: State = read_json(&paths.state());
        adopt_staged(&paths, &mut state)?;
        // Something on trial runs if it has trials left; otherwise it is rolled back now.
        let trial = match (state.pending.clone(), state.pending_config.clone()) {
            (Some(p), _) if p.trials < MAX_TRIALS => {
                state.pending = Some(Pending { trials: p.trials + 1, ..p.clone() });
                write_json(&paths.state(), &state).context("cannot count the trial in state.json")?;
                Some(Trial::Release(p))
            }
            (Some(p), _) => {
                fail(
                    &paths,
                    &mut state,
                    &Trial::Release(p),
                    "the launcher stopped during its trial (power cut or crash)",
                )?;
                continue;
            }
            (None, Some(c)) if c.trials < MAX_TRIALS => {
                state.pending_config = Some(PendingConfig { trials: c.trials + 1, ..c.clone() });
                write_json(&paths.state(), &state).context("cannot count the trial in state.json")?;
                Some(Trial::Config(c))
            }
            (None, Some(c)) => {
                fail(
                    &paths,
                    &mut state,
                    &Trial::Config(c),
                    "the launcher stopped during its trial (power cut or crash)",
                )?;
                continue;
            }
            (None, None) => None,
        };
        let _ = std::fs::remove_file(paths.trial_file());
        let release_slot = match &trial {
            Some(Trial::Release(p)) => Some(p.slot),
            _ => state.active,
        };
        let program = match release_slot {
            Some(slot) => match verified(&paths, slot, key.as_ref()) {
                Ok(prog) => prog,
                Err(e) => {
                    let reason = format!("the slot's binary does not verify: {e:#}");
                    if let Some(t @ Trial::Release(_)) = &trial {
                        fail(&paths, &mut state, t, &reason)?;
                        continue;
                    }
                    tracing::error!(%reason, ?slot, "running the installed binary instead");
                    state.active = None;
                    write_json(&paths.state(), &state)?;
                    Program { _memfd: None, path: self_exe.clone(), version: None }
                }
            },
            None => Program { _memfd: None, path: self_exe.clone(), version: None },
        };
        // The config: one on trial, else the last pushed one that proved healthy, else the file
        // the unit names.
        let config = match &trial {
            Some(Trial::Config(_)) => paths.config_staged(),
            _ => super::running_config(&paths, &state, config_path),
        };
        let mut cmd = child_command(&program, &config, trial.as_ref(), &paths);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            // A slot that cannot even be started (e.g. a kernel refusing to run memory files) is
            // a failed trial, or drops back to the installed binary; never a restart loop.
            Err(e) if program.version.is_some() || trial.is_some() => {
                let reason = format!("cannot start it: {e}");
                match &trial {
                    Some(t) => fail(&paths, &mut state, t, &reason)?,
                    None => {
                        tracing::error!(%reason, "the active slot cannot start; running the installed binary");
                        state.active = None;
                        write_json(&paths.state(), &state)?;
                    }
                }
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot start {}", program.path.display())),
        };
        drop(program);
        tracing::info!(pid = child.id(), config = %config.display(), trial = %trial.as_ref().map(|t| t.describe().1).unwrap_or_default(), "sensor started");

        if let Some(t) = &trial {
            let deadline = Instant::now() + trial_timeout;
            let outcome = loop {
                if paths.trial_file().exists() {
                    break Ok(());
                }
                if Instant::now() >= deadline {
                    break Err(format!("not healthy within [update] trial_timeout_s = {}", trial_timeout.as_secs()));
                }
                tokio::select! {
                    st = child.wait() => {
                        if paths.trial_file().exists() {
                            break Ok(());
                        }
                        break Err(format!("exited before it was healthy ({})", describe(st.ok())));
                    }
                    _ = tokio::time::sleep(POLL) => {}
                    _ = term.recv() => return stop(&mut child).await,
                    _ = int.recv() => return stop(&mut child).await,
                }
            };
            match (outcome, t) {
                (Ok(()), Trial::Release(p)) => {
                    state.active = Some(p.slot);
                    state.pending = None;
                    write_json(&paths.state(), &state)?;
                    tracing::warn!(version = %p.version, slot = ?p.slot, "release healthy; it is the active slot now");
                }
                (Ok(()), Trial::Config(c)) => {
                    std::fs::rename(paths.config_staged(), paths.config_active())
                        .context("cannot keep the pushed config that proved healthy")?;
                    state.config_active = Some(c.serial);
                    state.pending_config = None;
                    write_json(&paths.state(), &state)?;
                    tracing::warn!(serial = c.serial, "pushed config healthy; it is the config now");
                }
                (Err(reason), t) => {
                    let _ = stop(&mut child).await;
                    fail(&paths, &mut state, t, &reason)?;
                    continue;
                }
            }
        }
        let status = tokio::select! {
            st = child.wait() => st?,
            _ = term.recv() => return stop(&mut child).await,
            _ = int.recv() => return stop(&mut child).await,
        };
        if status.code() == Some(HANDOVER_EXIT) {
            tracing::info!("the sensor staged a release or a config; starting it");
            continue;
        }
        tracing::warn!(status = %describe(Some(status)), "sensor exited");
        return Ok(status.code().unwrap_or(1));
    }
}

/// The child's command line and environment: `run` with the chosen config, the launcher's
/// variables for this start (none left over from an earlier start), and systemd's watchdog
/// handed on.
fn child_command(program: &Program, config: &Path, trial: Option<&Trial>, paths: &Paths) -> Command {
    let mut cmd = Command::new(&program.path);
    cmd.arg("run").arg("--config").arg(config).env(ENV_LAUNCHER, "1");
    for k in [ENV_TRIAL_FILE, ENV_TRIAL_KIND, ENV_TRIAL_WHAT, ENV_RELEASE] {
        cmd.env_remove(k);
    }
    // systemd's watchdog is the child's to ping (the unit has NotifyAccess=all), but
    // WATCHDOG_PID names the launcher: with it the child would think the watchdog is not for
    // it, never ping, and systemd would kill the unit every WatchdogSec (seen on the booted
    // image: the sensor restarted every 60 s).
    cmd.env_remove(WATCHDOG_PID);
    if let Some(v) = &program.version {
        cmd.env(ENV_RELEASE, v);
    }
    if let Some(t) = trial {
        let (kind, what) = t.describe();
        cmd.env(ENV_TRIAL_FILE, paths.trial_file()).env(ENV_TRIAL_KIND, kind).env(ENV_TRIAL_WHAT, what);
    }
    cmd
}

/// What is on trial.
enum Trial {
    Release(Pending),
    Config(PendingConfig),
}

impl Trial {
    /// (kind, what): `update` and the version, or `config` and the serial.
    fn describe(&self) -> (&'static str, String) {
        match self {
            Trial::Release(p) => ("update", p.version.clone()),
            Trial::Config(c) => ("config", c.serial.to_string()),
        }
    }
}

/// Moves `staged.json` (the sensor's request) into the launcher's state.
fn adopt_staged(paths: &Paths, state: &mut State) -> anyhow::Result<()> {
    let staged: Option<Staged> = read_json(&paths.staged());
    if let Some(s) = staged {
        if state.active != Some(s.slot) && !state.failed.contains(&s.version) && state.pending.is_none() {
            state.pending = Some(Pending { slot: s.slot, version: s.version, trials: 0 });
            write_json(&paths.state(), state).context("cannot record the staged release")?;
        }
        let _ = std::fs::remove_file(paths.staged());
    }
    let staged: Option<StagedConfig> = read_json(&paths.config_staged_json());
    if let Some(c) = staged {
        let fresh = c.serial > state.config_active.unwrap_or(0) && !state.failed_configs.contains(&c.serial);
        if fresh && state.pending_config.is_none() && paths.config_staged().is_file() {
            state.pending_config = Some(PendingConfig { serial: c.serial, trials: 0 });
            write_json(&paths.state(), state).context("cannot record the staged config")?;
        }
        let _ = std::fs::remove_file(paths.config_staged_json());
    }
    Ok(())
}

/// A failed trial: remembered (never tried again), reported, dropped.
fn fail(paths: &Paths, state: &mut State, trial: &Trial, reason: &str) -> anyhow::Result<()> {
    let (kind, what) = trial.describe();
    tracing::error!(kind, what, reason, "trial failed; rolling back");
    match trial {
        Trial::Release(p) => {
            state.pending = None;
            if !state.failed.contains(&p.version) {
                state.failed.push(p.version.clone());
            }
            let excess = state.failed.len().saturating_sub(MAX_REMEMBERED);
            state.failed.drain(..excess);
        }
        Trial::Config(c) => {
            state.pending_config = None;
            if !state.failed_configs.contains(&c.serial) {
                state.failed_configs.push(c.serial);
            }
            let excess = state.failed_configs.len().saturating_sub(MAX_REMEMBERED);
            state.failed_configs.drain(..excess);
            let _ = std::fs::remove_file(paths.config_staged());
        }
    }
    write_json(&paths.state(), state).context("cannot record the rollback")?;
    report(paths, &Report { kind: format!("{kind}_failed"), version: what, reason: reason.into() });
    Ok(())
}

/// Leaves a report for the next sensor to ship (bounded: past [`MAX_REPORTS`] only logged).
fn report(paths: &Paths, r: &Report) {
    let dir = paths.reports();
    let _ = std::fs::create_dir_all(&dir);
    let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    if n >= MAX_REPORTS {
        tracing::error!(kind = %r.kind, version = %r.version, "too many update reports waiting; this one is only logged");
        return;
    }
    let name = format!("{:016}-{}.json", drosera_uplink::now_ms(), r.kind);
    if let Err(e) = write_json(&dir.join(name), r) {
        tracing::error!(error = %e, "cannot write an update report");
    }
}

/// Checks a slot against its signed manifest and puts the checked bytes into a sealed memory
/// file to run.
fn verified(paths: &Paths, slot: Slot, key: Option<&ed25519_dalek::VerifyingKey>) -> anyhow::Result<Program> {
    let key = key.context("no update public key ([update] public_key / update.pub)")?;
    let m = slot_manifest(paths, slot).context("the slot has no readable release.json")?;
    m.verify(key, std::env::consts::ARCH)?;
    let data = super::read_capped(&paths.slot(slot).join("drosera-sensor"), m.size.saturating_add(1))?;
    m.check_binary(data.len() as u64, &drosera_uplink::release::sha256_hex(&data))?;
    let fd = sealed(&data)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok(Program { _memfd: Some(fd), path, version: Some(m.version) })
}

/// A memory file holding `data`, sealed against any change. Not close-on-exec: the child's
/// `execve` of `/proc/self/fd/N` needs it open (and a script's interpreter reads it the same way).
fn sealed(data: &[u8]) -> anyhow::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::io::Write;
    let fd = memfd_create(c"drosera-sensor", MemFdCreateFlag::MFD_ALLOW_SEALING).context("memfd_create")?;
    let mut f = std::fs::File::from(fd);
    f.write_all(data)?;
    let fd = OwnedFd::from(f);
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).context("sealing the memory file")?;
    Ok(fd)
}

/// SIGTERM to the child, SIGKILL after [`STOP_GRACE`]; the child's exit code.
async fn stop(child: &mut Child) -> anyhow::Result<i32> {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
    let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(st) => st?,
        Err(_) => {
            tracing::error!("the sensor did not stop within 20 s of SIGTERM; killing it");
            child.kill().await?;
            child.wait().await?
        }
    };
    Ok(status.code().unwrap_or(0))
}

fn describe(st: Option<ExitStatus>) -> String {
    st.map(|s| s.to_string()).unwrap_or_else(|| "unknown status".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_child_pings_the_watchdog_the_launcher_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let program = Program { _memfd: None, path: PathBuf::from("/bin/true"), version: Some("1.2".into()) };
        let trial = Trial::Config(PendingConfig { serial: 7, trials: 1 });
        let cmd = child_command(&program, Path::new("/etc/x.toml"), Some(&trial), &paths);
        let envs: Vec<(OsString, Option<OsString>)> =
            cmd.as_std().get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
        // WATCHDOG_PID (the launcher's pid) is removed; WATCHDOG_USEC and NOTIFY_SOCKET are
        // inherited untouched, so the child's own check finds the watchdog is for it.
        assert!(envs.contains(&(WATCHDOG_PID.into(), None)), "{envs:?}");
        assert!(!envs.iter().any(|(k, _)| k == "WATCHDOG_USEC" || k == "NOTIFY_SOCKET"), "{envs:?}");
        assert!(crate::systemd::ping_interval(Some("60000000"), None, 4242).is_some());
        assert!(envs.contains(&(ENV_RELEASE.into(), Some("1.2".into()))), "{envs:?}");
        assert!(envs.contains(&(ENV_TRIAL_KIND.into(), Some("config".into()))), "{envs:?}");
        assert!(envs.contains(&(ENV_TRIAL_WHAT.into(), Some("7".into()))), "{envs:?}");
    }
}
