//! The real `http-spawn` binary as a child process on a free loopback port: started, waited
//! for, stopped with SIGTERM or SIGKILL, and killed (if it still runs) when dropped. The
//! durability, cluster and fault tests each add the flags of their own setting.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{PATIENCE, Remote};

/// One running host.
pub struct Binary {
    child: Child,
    remote: Remote,
}

/// A free loopback address for a host to listen on.
fn free_listen_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    format!("127.0.0.1:{port}")
}

impl Binary {
    /// Starts the binary with `args` (its listen address and module cache are added), the
    /// environment `env`, and requests carrying `token` when one is given. `RUST_LOG` is
    /// `warn` unless `env` says otherwise.
    pub fn spawn(args: &[String], env: &[(&str, &str)], token: Option<&str>) -> Self {
        Self::spawn_logging(args, env, token, None)
    }

    /// [`Binary::spawn`], the host's log (its stdout) written to `log` when given.
    pub fn spawn_logging(
        args: &[String],
        env: &[(&str, &str)],
        token: Option<&str>,
        log: Option<&std::path::Path>,
    ) -> Self {
        let stdout = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("the host's log")),
            None => Stdio::null(),
        };
        Self::spawn_to(args, env, token, stdout)
    }

    /// [`Binary::spawn`], its stdout a pipe the caller holds: one it never reads fills, and
    /// the host's console then has nowhere to write.
    pub fn spawn_piped(args: &[String], env: &[(&str, &str)]) -> (Self, std::process::ChildStdout) {
        let mut host = Self::spawn_to(args, env, None, Stdio::piped());
        let stdout = host.child.stdout.take().expect("the host's stdout");
        (host, stdout)
    }

    fn spawn_to(args: &[String], env: &[(&str, &str)], token: Option<&str>, stdout: Stdio) -> Self {
        let listen = free_listen_address();
        let cache = format!("{}/module-cache", env!("CARGO_TARGET_TMPDIR"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_http-spawn"));
        command
            .args(["--listen", &listen, "--cache-dir", &cache])
            .args(args)
            .env("RUST_LOG", "warn")
            // As for the hosts in the test process (see `common::parse`): a debug build on a
            // small machine must not meet load shedding by chance in a test of something
            // else. A test's own `--max-start-lag` or environment wins.
            .env("HTTP_SPAWN_MAX_START_LAG", "0s")
            .stdout(stdout)
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("the binary starts");
        let base = format!("http://{listen}");
        let remote = match token {
            Some(token) => Remote::with_token(base, token),
            None => Remote::new(base),
        };
        Self { child, remote }
    }

    /// Waits until the host answers `GET /api/health`.
    pub async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let answer = self
                .remote
                .client
                .get(self.remote.url("/api/health"))
                .send()
                .await;
            if answer.is_ok_and(|answer| answer.status() == 200) {
                return;
            }
            assert!(self.running(), "the host exited before it answered");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the host did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process still runs: not yet exited (a zombie until it is reaped).
    pub fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|stat| {
                let (_, after) = stat.rsplit_once(") ")?;
                after.chars().next()
            })
            .is_some_and(|state| state != 'Z' && state != 'X')
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the host records nothing more.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and returns at once: the graceful shutdown runs on.
    pub fn terminate(&self) {
        // SAFETY: kill takes a pid this test spawned and has not reaped, and a signal number.
        let sent = unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM sent");
    }

    /// Waits for the host to exit, at most [`PATIENCE`]: its exit status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("the host's status") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the host did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the graceful shutdown that follows, which must exit 0.
    pub fn stop(&mut self) {
        self.terminate();
        let status = self.wait_exit();
        assert!(status.success(), "a graceful shutdown exits 0: {status}");
    }

    /// The host's resident memory, in bytes, from `/proc`.
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the host's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .expect("VmRSS")
    }

    /// One value of the host's Prometheus metrics: the first line that starts with `series`
    /// (a name, with its labels if it has any), or none.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.remote.metric(series).await
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::Deref for Binary {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}

/// How many threads process `pid` runs, from `/proc/<pid>/status`.
pub fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("a Threads: line")
}
