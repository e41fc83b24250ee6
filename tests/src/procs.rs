//! The processes under test: spawn with logs, kill -9, graceful stop, restart, readiness.
//!
//! WHY a restartable wrapper: faults replace the process behind a name (kill -9 then start again)
//! while samplers keep watching "the sensor", so the current pid lives in a shared cell.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command that can be started, killed and started again.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Prepended to the command line (for example `qemu-aarch64 -L /usr/aarch64-linux-gnu`).
    wrapper: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
    /// The running pid, shared with samplers.
    pub pid: Arc<Mutex<Option<u32>>>,
    pub starts: u32,
    pub kills: u32,
    /// Exits nobody asked for (crashes), with their status.
    pub unexpected_exits: Vec<String>,
}

impl Proc {
    pub fn new(name: &str, program: &Path, args: &[&str], log: PathBuf) -> Proc {
        Proc {
            name: name.to_string(),
            program: program.to_path_buf(),
            args: args.iter().map(OsString::from).collect(),
            env: Vec::new(),
            wrapper: Vec::new(),
            log,
            child: None,
            pid: Arc::new(Mutex::new(None)),
            starts: 0,
            kills: 0,
            unexpected_exits: Vec::new(),
        }
    }

    pub fn env(mut self, k: &str, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn wrapper(mut self, w: &[&str]) -> Self {
        self.wrapper = w.iter().map(OsString::from).collect();
        self
    }

    pub fn start(&mut self) -> Result<()> {
        if self.running() {
            bail!("{} is already running", self.name);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening log {}", self.log.display()))?;
        let mut cmd = if self.wrapper.is_empty() {
            Command::new(&self.program)
        } else {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(&self.program);
            c
        };
        cmd.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        *self.pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(child.id());
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// True while the child runs; records an exit nobody asked for.
    pub fn running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else { return false };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.unexpected_exits.push(format!("{} exited by itself: {status}", self.name));
                self.forget();
                false
            }
            Err(_) => false,
        }
    }

    fn forget(&mut self) {
        self.child = None;
        *self.pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
        }
        self.forget();
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status text.
    pub fn stop(&mut self, grace: Duration) -> String {
        let Some(mut child) = self.child.take() else { return "not running".into() };
        // The pid of a child we spawned and have not reaped yet.
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let until = Instant::now() + grace;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = child.kill();
                    let s = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    break format!("did not stop in {grace:?}; killed ({s})");
                }
            }
        };
        self.forget();
        status
    }

    pub fn current_pid(&self) -> Option<u32> {
        *self.pid.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last `n` lines of the log, for error messages.
    /// Backtrace frames are left out: a failed start prints its error first and then a long
    /// backtrace, which would otherwise push the error itself out of the tail.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut in_backtrace = false;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                if l.eq_ignore_ascii_case("stack backtrace:") {
                    in_backtrace = true;
                } else if in_backtrace && !l.starts_with(char::is_whitespace) {
                    in_backtrace = false;
                }
                !in_backtrace
            })
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `ready` every `every` until it holds; fails when `p` exits first or `timeout` passes
/// (`what` names the awaited state in the error, with the log tail).
fn wait_until(
    p: &mut Proc,
    what: &str,
    timeout: Duration,
    every: Duration,
    mut ready: impl FnMut(&Proc) -> bool,
) -> Result<()> {
    let until = Instant::now() + timeout;
    loop {
        if ready(p) {
            return Ok(());
        }
        if !p.running() {
            let how = p.unexpected_exits.last().cloned().unwrap_or_default();
            bail!("{} exited before {what} ({how}); log tail:\n{}", p.name, p.log_tail(20));
        }
        if Instant::now() > until {
            bail!("{} not {what} after {timeout:?}; log tail:\n{}", p.name, p.log_tail(20));
        }
        std::thread::sleep(every);
    }
}

/// Waits until `addr` accepts a TCP connection, while `p` keeps running.
pub fn wait_listening(p: &mut Proc, addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_until(p, &format!("listening on {addr}"), timeout, Duration::from_millis(100), |_| {
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
    })
}

/// How many lines of `p`'s log start with `prefix`.
pub fn count_log_lines(p: &Proc, prefix: &str) -> usize {
    std::fs::read_to_string(&p.log).map(|t| t.lines().filter(|l| l.starts_with(prefix)).count()).unwrap_or(0)
}

/// Waits until `p`'s log holds more than `before` lines starting with `prefix` (the sensor prints
/// `ready ...` once every service is bound). Unlike [`wait_listening`] this opens no connection,
/// so it adds nothing to what the sensor records.
pub fn wait_log_line(p: &mut Proc, prefix: &str, before: usize, timeout: Duration) -> Result<()> {
    wait_until(p, &format!("printing {prefix:?}"), timeout, Duration::from_millis(50), |p| {
        count_log_lines(p, prefix) > before
    })
}

/// A free port on 127.0.0.1 for a service under test, below the kernel's ephemeral range
/// (see [`drosera_admin::testpg::free_test_port`] for why).
pub fn free_port() -> Result<u16> {
    Ok(drosera_admin::testpg::free_test_port()?)
}

/// Runs a command to completion; its stdout on success, an error with stderr otherwise.
pub fn run(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Raises this process's open-file soft limit to its hard limit (children inherit it): 2,000
/// concurrent connections need more than the usual 1,024 descriptors on both ends.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 0 };
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    hard
}
