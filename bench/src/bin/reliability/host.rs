//! The host under test: the release binary in its own process on a free loopback port, its
//! log in the case's directory, killed (SIGKILL) when dropped, so no case leaves one behind,
//! whether it passes, fails or errs, and killed by the kernel should the suite die.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::api::{self, Health};

/// How long a host may take to answer after it starts: a recovering store included.
const START_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct Host {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Host {
    /// Starts `target/release/http-spawn` with `args` and then `extra` (the suite's
    /// `--host-args`), its log appended to `dir/host.log`, and waits until it answers.
    pub fn start(dir: &Path, args: &[String], extra: Option<&str>) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = dir.join("host.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let binary = crate::repo_root().join("target/release/http-spawn");
        let mut command = Command::new(&binary);
        // SAFETY: the closure runs in the child between fork and exec and calls only prctl,
        // which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                // Should the suite itself be killed, its host goes too. The signal follows
                // the thread that forked, so hosts are started from the main thread only.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command
            .arg("--listen")
            .arg(addr.to_string())
            // The compiled-module cache the repository's scripts share, never the user's own.
            .arg("--cache-dir")
            .arg(crate::repo_root().join("target/module-cache"))
            .args(args)
            .args(extra.unwrap_or_default().split_whitespace())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} (make build)", binary.display()))?;
        let mut host = Self { child, addr, log };
        let deadline = Instant::now() + START_PATIENCE;
        while api::health(addr).is_err() {
            if let Some(status) = host.child.try_wait()? {
                bail!("the host exited at start ({status}): {}", host.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the host did not answer within {START_PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(host)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs and answers `/api/health`.
    pub fn up(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && api::health(self.addr).is_ok()
    }

    /// SIGKILL: the host has no chance to record anything.
    pub fn crash(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Waits (at most `patience`) until no task is live or waiting, and returns the health then.
    pub fn wait_idle(&self, patience: Duration) -> anyhow::Result<Health> {
        let deadline = Instant::now() + patience;
        loop {
            let health = api::health(self.addr)?;
            if health.live == 0 && health.queued == 0 {
                return Ok(health);
            }
            if Instant::now() > deadline {
                bail!(
                    "still {} live and {} waiting after {patience:?}",
                    health.live,
                    health.queued
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of the host's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
