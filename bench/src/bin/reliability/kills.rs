//! What the cases that kill their host mid-stream share (schedules, limits): a release host on
//! a SQLite store with a registry file, a paced stream of submissions in three runs with a
//! SIGKILL between each two, the host left down a while and started again on the same store,
//! and the pids every `202` gave.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_spawn_bench::loadgen::{self, Bodies, Plan, Run};

use crate::host::Host;
use crate::{Args, Verdict};

/// A stream of submissions through two SIGKILLs.
pub struct Stream {
    /// The host's registry file, written before it starts.
    pub registry: String,
    /// Submissions per second, over `connections`.
    pub rate: f64,
    pub connections: usize,
    /// How long each of the three runs lasts.
    pub phase: Duration,
    /// How long the host stays down at each kill.
    pub down: Duration,
    pub body: Bodies,
}

/// What came of it: the three runs, the host that runs after the last restart, and when the
/// host was down (from its kill to its new start).
pub struct Streamed {
    pub runs: Vec<Run>,
    pub host: Host,
    pub downtimes: Vec<(SystemTime, SystemTime)>,
}

impl Stream {
    /// Runs the stream in `dir`, the host's store and log there.
    pub fn run(self, args: &Args, dir: &Path) -> anyhow::Result<Streamed> {
        let file = dir.join("http-spawn.toml");
        std::fs::write(&file, &self.registry)?;
        let store = dir.join("tasks.db");
        let host_args: Vec<String> = [
            "--config",
            &file.display().to_string(),
            "--store",
            &format!("sqlite:{}", store.display()),
            // Every accepted task is read back; none is forgotten before.
            "--max-history",
            "1000000",
        ]
        .map(String::from)
        .to_vec();
        let runtime = crate::runtime()?;
        let plan = |addr| Plan {
            headers: None,
            addr,
            connections: self.connections,
            duration: self.phase,
            rate: Some(self.rate),
            count: None,
            keep_pids: true,
            stop: None,
            target: None,
            body: Arc::clone(&self.body),
        };
        let mut runs = Vec::new();
        let mut downtimes = Vec::new();
        let mut host = Host::start(dir, &host_args, args.host_args.as_deref())?;
        for _ in 0..2 {
            runs.push(runtime.block_on(loadgen::run_plan(plan(host.addr))));
            host.crash()?;
            let killed = SystemTime::now();
            std::thread::sleep(self.down);
            downtimes.push((killed, SystemTime::now()));
            host = Host::start(dir, &host_args, args.host_args.as_deref())?;
        }
        runs.push(runtime.block_on(loadgen::run_plan(plan(host.addr))));
        Ok(Streamed {
            runs,
            host,
            downtimes,
        })
    }
}

/// The pids every `202` of `runs` gave, in order; a miss in `verdict` for any other answer.
pub fn accepted<'a>(runs: &'a [Run], verdict: &mut Verdict) -> Vec<&'a str> {
    let samples = || runs.iter().flat_map(|run| &run.samples);
    let others = samples().filter(|s| !matches!(s.status, 0 | 202)).count();
    verdict.check(others == 0, || format!("{others} answers other than 202"));
    samples().filter_map(|s| s.pid.as_deref()).collect()
}
