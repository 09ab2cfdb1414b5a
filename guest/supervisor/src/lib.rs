//! The `supervisor` worker: an OTP-style supervisor. It starts the children its payload lists,
//! watches them, and restarts the ones that fail:
//!
//! ```json
//! {"strategy": "one_for_one" | "one_for_all", "intensity": 3, "period_secs": 5,
//!  "backoff_ms": 100,
//!  "children": [{"worker": "default", "name": "a", "duration": 5, "payload": {}}, ...]}
//! ```
//!
//! `strategy` defaults to `one_for_one`, `intensity` to 3, `period_secs` to 5 and `backoff_ms`
//! to 100; a child's `worker` to the host's default worker and `duration` to 0. The payload is
//! checked before anything starts: `intensity` at most 100, `period_secs` from 1 to 3,600,
//! `backoff_ms` at most 10,000, at most 100 children. A payload outside those bounds fails the
//! supervisor at once, with the reason: one request cannot turn it into a spawn storm.
//!
//! Children are *transient*, as OTP calls it: one that exits with code 0 is done and stays
//! done; one that ends any other way is restarted: alone under `one_for_one`; under
//! `one_for_all` the supervisor kills its other live children and starts every child that is
//! not done again. A restart waits its backoff first: `backoff_ms` for the first restart within
//! the period, twice that for the second, and so on up to 30 s (`0` restarts at once). More
//! than `intensity` restarts within `period_secs` and the supervisor gives up: it fails, and its
//! links take the children still running down with it. Once every child is done, it exits 0.
//!
//! Each child is both linked and monitored, on purpose. The link makes the supervisor's own end
//! (a kill, a failure) end its children too, so none outlives it unsupervised; the supervisor
//! traps exits, so a child's end never takes it down. The monitor is what tells it about a
//! child's *normal* end, which a link keeps quiet. An abnormal end therefore arrives twice, as
//! a `linked-exit` and as a `down`; the supervisor acts on the `down`s only.
//!
//! It logs one JSON line per event: `child_started`, `child_exited` (done), `child_failed`
//! (with `restart_in_ms`), `child_restarted` (with the new pid and the strategy),
//! `intensity_exceeded` and `all_done`.
//!
//! Built with `std` for its clock (WASI's monotonic clock, which the host allows) and
//! serde_json, and with a 64 KiB stack (see `build.rs`), so that it fits the host's default
//! 1 MiB memory cap.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use http_spawn_sdk::{Child, Ctx, End, Exit, Received, SpawnError, Spec};
use serde::Deserialize;
use serde_json::{Value, json};

/// How long one wait for the mailbox lasts; the supervisor waits again when it runs out.
const RECEIVE_MS: u32 = 60_000;
/// The most restarts a period may hold.
const MAX_INTENSITY: usize = 100;
/// The shortest and the longest period, in seconds.
const PERIODS_SECS: std::ops::RangeInclusive<u64> = 1..=3600;
/// The longest first backoff, and the longest any backoff grows to, in milliseconds.
const MAX_BACKOFF_MS: u64 = 10_000;
const BACKOFF_CAP_MS: u64 = 30_000;
/// The most children one supervisor starts.
const MAX_CHILDREN: usize = 100;

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Strategy {
    #[default]
    OneForOne,
    OneForAll,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
        }
    }
}

/// The payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    strategy: Strategy,
    #[serde(default = "default_intensity")]
    intensity: usize,
    #[serde(default = "default_period_secs")]
    period_secs: u64,
    #[serde(default = "default_backoff_ms")]
    backoff_ms: u64,
    #[serde(default)]
    children: Vec<ChildSpec>,
}

impl Config {
    /// Whether it stays within the bounds the module's documentation gives.
    fn check(&self) -> Result<(), String> {
        if self.intensity > MAX_INTENSITY {
            return Err(format!("intensity must be at most {MAX_INTENSITY}"));
        }
        if !PERIODS_SECS.contains(&self.period_secs) {
            return Err(format!(
                "period_secs must be from {} to {}",
                PERIODS_SECS.start(),
                PERIODS_SECS.end()
            ));
        }
        if self.backoff_ms > MAX_BACKOFF_MS {
            return Err(format!("backoff_ms must be at most {MAX_BACKOFF_MS}"));
        }
        if self.children.len() > MAX_CHILDREN {
            return Err(format!("at most {MAX_CHILDREN} children"));
        }
        Ok(())
    }
}

fn default_intensity() -> usize {
    3
}

fn default_period_secs() -> u64 {
    5
}

fn default_backoff_ms() -> u64 {
    100
}

/// One child, as the payload lists it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChildSpec {
    worker: Option<String>,
    name: String,
    #[serde(default)]
    duration: u32,
    payload: Option<Value>,
}

/// The payload read; none is a supervisor of no children, which exits 0 at once (the host's
/// smoke run of a new module starts it so).
fn config(spec: &Spec) -> Result<Config, String> {
    let payload = spec.payload.as_deref().unwrap_or("{}");
    let config: Config =
        serde_json::from_str(payload).map_err(|e| format!("the supervisor's payload: {e}"))?;
    config
        .check()
        .map_err(|e| format!("the supervisor's payload: {e}"))?;
    Ok(config)
}

fn plan(spec: &Spec) -> Result<u32, String> {
    config(spec).map(|_| 0)
}

/// A child and, while it runs, its pid; while it waits to be restarted, when.
struct Slot {
    child: Child,
    pid: Option<String>,
    due: Option<Instant>,
}

fn spawn_error(e: SpawnError) -> String {
    match e {
        SpawnError::Full => "the host is full".to_owned(),
        SpawnError::ShuttingDown => "the host is shutting down".to_owned(),
        SpawnError::UnknownWorker(worker) => format!("no worker named {worker:?}"),
        SpawnError::Refused(why) => format!("refused: {why}"),
    }
}

struct Supervisor {
    ctx: Ctx,
    strategy: Strategy,
    intensity: usize,
    period: Duration,
    backoff_ms: u64,
    slots: Vec<Slot>,
    /// When each restart within the last `period` happened, oldest first.
    restarts: VecDeque<Instant>,
}

impl Supervisor {
    fn event(&self, event: Value) {
        self.ctx.info(&event.to_string());
    }

    /// Starts child `i`, linked and monitored; a spawn error ends the supervisor.
    fn start(&mut self, i: usize) -> Result<String, String> {
        let slot = &mut self.slots[i];
        let pid = self
            .ctx
            .spawn(&slot.child)
            .map_err(|e| format!("starting child {:?}: {}", slot.child.name, spawn_error(e)))?;
        slot.pid = Some(pid.clone());
        Ok(pid)
    }

    fn restart(&mut self, i: usize) -> Result<(), String> {
        self.slots[i].due = None;
        let pid = self.start(i)?;
        let name = &self.slots[i].child.name;
        let strategy = self.strategy.name();
        self.event(
            json!({"event": "child_restarted", "name": name, "pid": pid, "strategy": strategy}),
        );
        Ok(())
    }

    /// Counts a restart: how long it waits, or `Err` when it is one too many for the period.
    fn count_restart(&mut self) -> Result<Duration, String> {
        let now = Instant::now();
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) > self.period)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() <= self.intensity {
            // The n-th restart within the period waits 2^(n-1) backoffs, up to the cap.
            let doublings = u32::try_from(self.restarts.len() - 1)
                .unwrap_or(u32::MAX)
                .min(16);
            let ms = (self.backoff_ms << doublings).min(BACKOFF_CAP_MS.max(self.backoff_ms));
            return Ok(Duration::from_millis(ms));
        }
        Err(format!(
            "more than {} restarts within {} s: the supervisor gives up",
            self.intensity,
            self.period.as_secs()
        ))
    }

    /// Acts on a `down` notice.
    fn down(&mut self, end: End) -> Result<(), String> {
        // A down of a pid no slot holds is one this supervisor already replaced: a child it
        // killed itself under `one_for_all`.
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.pid.as_deref() == Some(&end.pid))
        else {
            return Ok(());
        };
        self.slots[i].pid = None;
        let name = &self.slots[i].child.name;
        if end.status == "exited" && end.exit_code == Some(0) {
            self.event(json!({"event": "child_exited", "name": name, "pid": end.pid}));
            return Ok(());
        }
        let counted = self.count_restart();
        let name = &self.slots[i].child.name;
        let mut failed = json!({
            "event": "child_failed", "name": name, "pid": end.pid, "status": end.status,
            "outcome": end.outcome, "exit_code": end.exit_code, "error": end.error,
        });
        if let Ok(wait) = counted {
            failed["restart_in_ms"] = json!(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        }
        self.event(failed);
        let wait = counted.inspect_err(|_| {
            let (intensity, period_secs) = (self.intensity, self.period.as_secs());
            self.event(json!({
                "event": "intensity_exceeded", "intensity": intensity, "period_secs": period_secs,
            }));
        })?;
        let due = Some(Instant::now() + wait);
        match self.strategy {
            Strategy::OneForOne => self.slots[i].due = due,
            Strategy::OneForAll => {
                for j in 0..self.slots.len() {
                    if let Some(pid) = self.slots[j].pid.take() {
                        // A child that ended meanwhile answers with an error; either way its
                        // down notice now names a pid no slot holds.
                        let _ = self.ctx.kill(&pid);
                        self.slots[j].due = due;
                    }
                }
                self.slots[i].due = due;
            }
        }
        Ok(())
    }

    /// Restarts the children whose backoff has passed.
    fn restart_due(&mut self) -> Result<(), String> {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].due.is_some_and(|due| due <= now) {
                self.restart(i)?;
            }
        }
        Ok(())
    }

    /// How long to wait for the mailbox: until the next restart is due, if one waits.
    fn receive_ms(&self) -> u32 {
        let now = Instant::now();
        self.slots
            .iter()
            .filter_map(|slot| slot.due)
            .min()
            .map_or(RECEIVE_MS, |due| {
                let ms = due.saturating_duration_since(now).as_millis();
                // At least 1: 0 would only look at the mailbox, and never wait.
                u32::try_from(ms).unwrap_or(RECEIVE_MS).clamp(1, RECEIVE_MS)
            })
    }

    /// Whether a child runs or waits to be restarted.
    fn supervising(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.pid.is_some() || slot.due.is_some())
    }
}

async fn run(ctx: Ctx) -> Exit {
    let config = config(ctx.spec())?;
    let slots = config
        .children
        .into_iter()
        .map(|c| Slot {
            child: Child {
                worker: c.worker,
                name: c.name,
                duration_secs: c.duration,
                payload: c.payload.as_ref().map(Value::to_string),
                link: true,
                monitor: true,
            },
            pid: None,
            due: None,
        })
        .collect();
    let mut supervisor = Supervisor {
        ctx,
        strategy: config.strategy,
        intensity: config.intensity,
        period: Duration::from_secs(config.period_secs),
        backoff_ms: config.backoff_ms,
        slots,
        restarts: VecDeque::new(),
    };
    supervisor.ctx.trap_exits(true);
    for i in 0..supervisor.slots.len() {
        let pid = supervisor.start(i)?;
        let name = &supervisor.slots[i].child.name;
        supervisor.event(json!({"event": "child_started", "name": name, "pid": pid}));
    }
    while supervisor.supervising() {
        match supervisor.ctx.receive(supervisor.receive_ms()).await {
            Some(Received::Down(end)) => supervisor.down(end)?,
            // A linked child's abnormal end, which its `down` reports too; and messages,
            // which a supervisor takes none of.
            Some(Received::LinkedExit(_) | Received::Message(_)) | None => {}
        }
        supervisor.restart_due()?;
    }
    supervisor.event(json!({"event": "all_done"}));
    Ok(0)
}

http_spawn_sdk::worker!(run, plan = plan);
