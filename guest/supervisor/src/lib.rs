//! The `supervisor` worker: an OTP-style supervisor. It starts the children its payload lists,
//! watches them, and restarts the ones that fail:
//!
//! ```json
//! {"strategy": "one_for_one" | "one_for_all", "intensity": 3, "period_secs": 5,
//!  "children": [{"worker": "default", "name": "a", "duration": 5, "payload": {}}, ...]}
//! ```
//!
//! `strategy` defaults to `one_for_one`, `intensity` to 3 and `period_secs` to 5; a child's
//! `worker` to the host's default worker and `duration` to 0.
//!
//! Children are *transient*, as OTP calls it: one that exits with code 0 is done and stays
//! done; one that ends any other way is restarted: alone under `one_for_one`; under
//! `one_for_all` the supervisor kills its other live children and starts every child that is
//! not done again. More than `intensity` restarts within `period_secs` and the supervisor gives
//! up: it fails, and its links take the children still running down with it. Once every child
//! is done, it exits 0.
//!
//! Each child is both linked and monitored, on purpose. The link makes the supervisor's own end
//! (a kill, a failure) end its children too, so none outlives it unsupervised; the supervisor
//! traps exits, so a child's end never takes it down. The monitor is what tells it about a
//! child's *normal* end, which a link keeps quiet. An abnormal end therefore arrives twice, as
//! a `linked-exit` and as a `down`; the supervisor acts on the `down`s only.
//!
//! It logs one JSON line per event: `child_started`, `child_exited` (done), `child_failed`,
//! `child_restarted` (with the new pid and the strategy), `intensity_exceeded` and `all_done`.
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
    #[serde(default)]
    children: Vec<ChildSpec>,
}

fn default_intensity() -> usize {
    3
}

fn default_period_secs() -> u64 {
    5
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
    serde_json::from_str(payload).map_err(|e| format!("the supervisor's payload: {e}"))
}

fn plan(spec: &Spec) -> Result<u32, String> {
    config(spec).map(|_| 0)
}

/// A child and, while it runs, its pid; `None` once it is done.
struct Slot {
    child: Child,
    pid: Option<String>,
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
        let pid = self.start(i)?;
        let name = &self.slots[i].child.name;
        let strategy = self.strategy.name();
        self.event(
            json!({"event": "child_restarted", "name": name, "pid": pid, "strategy": strategy}),
        );
        Ok(())
    }

    /// Counts a restart; `Err` when it is one too many for the period.
    fn count_restart(&mut self) -> Result<(), String> {
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
            return Ok(());
        }
        let (intensity, period_secs) = (self.intensity, self.period.as_secs());
        self.event(json!({
            "event": "intensity_exceeded", "intensity": intensity, "period_secs": period_secs,
        }));
        Err(format!(
            "more than {intensity} restarts within {period_secs} s: the supervisor gives up"
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
        self.event(json!({
            "event": "child_failed", "name": name, "pid": end.pid, "status": end.status,
            "outcome": end.outcome, "exit_code": end.exit_code, "error": end.error,
        }));
        self.count_restart()?;
        match self.strategy {
            Strategy::OneForOne => self.restart(i),
            Strategy::OneForAll => {
                let live: Vec<usize> = (0..self.slots.len())
                    .filter(|&j| self.slots[j].pid.is_some())
                    .collect();
                for &j in &live {
                    if let Some(pid) = &self.slots[j].pid {
                        // A child that ended meanwhile answers with an error; either way its
                        // down notice now names a pid no slot holds.
                        let _ = self.ctx.kill(pid);
                    }
                }
                for j in std::iter::once(i).chain(live) {
                    self.restart(j)?;
                }
                Ok(())
            }
        }
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
        })
        .collect();
    let mut supervisor = Supervisor {
        ctx,
        strategy: config.strategy,
        intensity: config.intensity,
        period: Duration::from_secs(config.period_secs),
        slots,
        restarts: VecDeque::new(),
    };
    supervisor.ctx.trap_exits(true);
    for i in 0..supervisor.slots.len() {
        let pid = supervisor.start(i)?;
        let name = &supervisor.slots[i].child.name;
        supervisor.event(json!({"event": "child_started", "name": name, "pid": pid}));
    }
    while supervisor.slots.iter().any(|s| s.pid.is_some()) {
        match supervisor.ctx.receive(RECEIVE_MS).await {
            Some(Received::Down(end)) => supervisor.down(end)?,
            // A linked child's abnormal end, which its `down` reports too; and messages,
            // which a supervisor takes none of.
            Some(Received::LinkedExit(_) | Received::Message(_)) | None => {}
        }
    }
    supervisor.event(json!({"event": "all_done"}));
    Ok(0)
}

http_spawn_sdk::worker!(run, plan = plan);
