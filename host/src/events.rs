//! Live task events for Server-Sent Events subscribers.
//!
//! The ledger publishes every change here once the store has it, as JSON built just before,
//! but only while someone listens. Publishing never waits: a subscriber that falls behind the channel's buffer
//! skips ahead (and is told how many events it missed), so a slow client can slow neither tasks
//! nor the host.
//!
//! Streams are bounded so that no client holds them all: `--max-subscribers` in all, of which
//! one client (an address) holds at most `--max-subscribers-per-client`; and beside them
//! [`DASHBOARD_STREAMS`] kept for the host's own dashboard (a stream its page opens), of which
//! one client holds at most [`DASHBOARD_STREAMS_PER_CLIENT`]. A client that opens stream after
//! stream gets `429` while the dashboard, and everyone else, still gets theirs.

use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::{broadcast, watch};

use crate::model::time::format as at;
use crate::model::{Pid, TaskEnd, TaskEvent, TaskRecord};
use crate::store::Change;

/// Events buffered per subscriber before it starts skipping.
const CHANNEL_CAPACITY: usize = 4096;

/// One published event.
#[derive(Debug, Clone)]
pub struct Published {
    pub pid: Pid,
    /// `spawned`, `started`, `progress`, `log`, `restart`, `exit`, or, for actors, `message`,
    /// `down` and `linked_exit`.
    pub kind: &'static str,
    /// The event as JSON, serialised once for every subscriber.
    pub data: Arc<str>,
}

/// Streams kept for the dashboard beside `--max-subscribers`.
pub const DASHBOARD_STREAMS: usize = 32;
/// Of those, what one client holds at most (its tabs).
pub const DASHBOARD_STREAMS_PER_CLIENT: usize = 8;

/// How many streams there may be.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// In all, beside the dashboard's.
    pub max: usize,
    /// Of those, per client.
    pub per_client: usize,
}

/// Which places a stream takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pool {
    Shared,
    Dashboard,
}

/// The places taken, in all and by client.
#[derive(Debug, Default)]
struct Places {
    shared: usize,
    dashboard: usize,
    by_client: HashMap<(IpAddr, Pool), usize>,
}

/// Why no stream was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefused {
    /// Every place is taken.
    Full,
    /// This client holds its share.
    ClientFull,
}

/// The broadcast side, with bounds on subscribers.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Published>,
    /// Flips to true when the host shuts down, ending every stream.
    closed: watch::Sender<bool>,
    places: Arc<Mutex<Places>>,
    /// Streams open, for the metrics.
    subscribers: Arc<AtomicUsize>,
    limits: StreamLimits,
}

/// A subscription; dropping it frees its place.
#[derive(Debug)]
pub struct Subscription {
    pub receiver: broadcast::Receiver<Published>,
    /// Changes to true when the host shuts down.
    pub closed: watch::Receiver<bool>,
    places: Arc<Mutex<Places>>,
    subscribers: Arc<AtomicUsize>,
    place: (IpAddr, Pool),
}

fn lock(places: &Mutex<Places>) -> MutexGuard<'_, Places> {
    places
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut places = lock(&self.places);
        match self.place.1 {
            Pool::Shared => places.shared -= 1,
            Pool::Dashboard => places.dashboard -= 1,
        }
        if let Some(held) = places.by_client.get_mut(&self.place) {
            *held -= 1;
            if *held == 0 {
                places.by_client.remove(&self.place);
            }
        }
        self.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EventBus {
    /// A bus that admits streams within `limits`.
    pub fn new(limits: StreamLimits) -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            sender,
            closed: watch::Sender::new(false),
            places: Arc::default(),
            subscribers: Arc::default(),
            limits,
        }
    }

    /// Streams open now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Subscribes `client` to every event from now on, if it may: a stream the dashboard opens
    /// (`dashboard`) takes one of the places kept for it first.
    pub fn subscribe(
        &self,
        client: IpAddr,
        dashboard: bool,
    ) -> Result<Subscription, StreamRefused> {
        let pool = {
            let mut places = lock(&self.places);
            let held =
                |places: &Places, pool| places.by_client.get(&(client, pool)).copied().unwrap_or(0);
            let pool = if dashboard
                && places.dashboard < DASHBOARD_STREAMS
                && held(&places, Pool::Dashboard) < DASHBOARD_STREAMS_PER_CLIENT
            {
                places.dashboard += 1;
                Pool::Dashboard
            } else if places.shared >= self.limits.max {
                return Err(StreamRefused::Full);
            } else if held(&places, Pool::Shared) >= self.limits.per_client {
                return Err(StreamRefused::ClientFull);
            } else {
                places.shared += 1;
                Pool::Shared
            };
            *places.by_client.entry((client, pool)).or_insert(0) += 1;
            pool
        };
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        Ok(Subscription {
            receiver: self.sender.subscribe(),
            closed: self.closed.subscribe(),
            places: Arc::clone(&self.places),
            subscribers: Arc::clone(&self.subscribers),
            place: (client, pool),
        })
    }

    /// Ends every stream, so that open ones do not hold the HTTP server's shutdown.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Whether anyone listens: events are built only then.
    pub fn listening(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// The events `change` publishes, built as JSON; call only while someone listens. An end
    /// is published as `exit` by the ledger, with [`EventBus::exit_of`].
    pub fn prepare(&self, change: &Change) -> Vec<Published> {
        let one = |pid, kind, data: Value| vec![published(pid, kind, &data)];
        match change {
            Change::Accepted { record, .. } => {
                let data = Spawned {
                    pid: record.pid,
                    name: &record.name,
                    worker: &record.worker,
                    version: &record.version,
                    duration: record.duration,
                    at: at(record.spawned_at),
                    status: record.status,
                };
                one(record.pid, "spawned", json!(data))
            }
            Change::Event(_, TaskEvent::Ended { .. })
            | Change::Prune { .. }
            | Change::Forward { .. }
            | Change::Module { .. }
            | Change::Worker { .. }
            | Change::Schedule(_)
            | Change::WorkerPaused { .. }
            | Change::WorkerLimits { .. }
            | Change::Checkpoint(_) => Vec::new(),
            Change::Event(
                pid,
                TaskEvent::Restarting {
                    at: when,
                    end,
                    next_attempt,
                    ..
                },
            ) => one(
                *pid,
                "restart",
                json!({
                    "pid": pid,
                    "outcome": end.outcome,
                    "exit_code": end.exit_code,
                    "error": end.error,
                    "next_attempt": next_attempt,
                    "at": at(*when),
                }),
            ),
            Change::Event(
                pid,
                TaskEvent::Started {
                    at: when, steps, ..
                },
            ) => one(
                *pid,
                "started",
                json!({"pid": pid, "steps": steps, "at": at(*when)}),
            ),
            Change::Event(pid, TaskEvent::Progress { step, steps, .. }) => one(
                *pid,
                "progress",
                json!({"pid": pid, "step": step, "steps": steps}),
            ),
            Change::Event(pid, TaskEvent::Logs { lines, .. }) => lines
                .iter()
                .map(|line| {
                    let data = json!({
                        "pid": pid,
                        "source": line.source,
                        "message": line.message,
                        "at": at(line.at),
                    });
                    published(*pid, "log", &data)
                })
                .collect(),
        }
    }

    /// Sends events prepared before their change was recorded.
    pub fn send(&self, events: Vec<Published>) {
        for event in events {
            // An error only means nobody listens any more.
            let _ = self.sender.send(event);
        }
    }

    /// Publishes an event that is not a change of the store, built only while someone listens.
    fn publish(&self, pid: Pid, kind: &'static str, data: impl FnOnce() -> Value) {
        if self.listening() {
            self.send(vec![published(pid, kind, &data())]);
        }
    }

    /// A message of `bytes` bytes, from task `sender` or (none) an HTTP client, was put in
    /// `to`'s mailbox.
    pub fn message(&self, to: Pid, sender: Option<Pid>, bytes: usize) {
        self.publish(
            to,
            "message",
            || json!({"pid": to, "sender": sender, "bytes": bytes}),
        );
    }

    /// `watcher` was told that `ended`, which it monitors, ended with `outcome`.
    pub fn down(&self, watcher: Pid, ended: Pid, outcome: &'static str) {
        self.publish(
            watcher,
            "down",
            || json!({"pid": watcher, "down": ended, "outcome": outcome}),
        );
    }

    /// `linked`, linked to `pid`, ended abnormally with `outcome`: `pid` was sent a notice
    /// (`trapped`) or is being killed.
    pub fn linked_exit(&self, pid: Pid, linked: Pid, outcome: &'static str, trapped: bool) {
        self.publish(
            pid,
            "linked_exit",
            || json!({"pid": pid, "linked": linked, "outcome": outcome, "trapped": trapped}),
        );
    }

    /// Publishes the end of the task whose record is `record`.
    /// The `exit` event of task `pid` (`name`, of `worker`), which ended `at` as `end` says;
    /// the same as [`exit_data`] makes of its record once the end is written.
    pub fn exit_of(
        &self,
        pid: Pid,
        name: &str,
        worker: &str,
        end: &TaskEnd,
        at: SystemTime,
    ) -> Published {
        let data = json!({
            "pid": pid,
            "name": name,
            "worker": worker,
            "status": end.status,
            "outcome": end.outcome,
            "exit_code": end.exit_code,
            "error": end.error,
            "result": end.result,
            "at": self::at(at),
        });
        published(pid, "exit", &data)
    }
}

fn published(pid: Pid, kind: &'static str, data: &Value) -> Published {
    Published {
        pid,
        kind,
        data: data.to_string().into(),
    }
}

/// The JSON of a task's terminal event, from its record.
pub fn exit_data(record: &TaskRecord) -> Value {
    json!({
        "pid": record.pid,
        "name": record.name,
        "worker": record.worker,
        "status": record.status,
        "outcome": record.outcome,
        "exit_code": record.exit_code,
        "error": record.error,
        "result": record.result,
        "at": record.ended_at.map(at),
    })
}

#[derive(Serialize)]
struct Spawned<'a> {
    pid: Pid,
    name: &'a str,
    worker: &'a str,
    version: &'a str,
    duration: u32,
    at: String,
    /// `scheduled` for a task accepted to run later, else `spawned`.
    status: crate::model::Status,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn no_client_holds_every_stream_and_the_dashboard_keeps_its_own() {
        let bus = EventBus::new(StreamLimits {
            max: 3,
            per_client: 2,
        });
        let (greedy, other): (IpAddr, IpAddr) = (
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(10, 0, 0, 2).into(),
        );
        let held: Vec<_> = (0..2)
            .map(|_| bus.subscribe(greedy, false).expect("a place"))
            .collect();
        assert_eq!(
            bus.subscribe(greedy, false).err(),
            Some(StreamRefused::ClientFull)
        );
        let third = bus.subscribe(other, false).expect("another client's place");
        assert_eq!(bus.subscribe(other, false).err(), Some(StreamRefused::Full));
        // The dashboard, from the greedy client's own address, still gets its streams.
        let tabs: Vec<_> = (0..DASHBOARD_STREAMS_PER_CLIENT)
            .map(|_| bus.subscribe(greedy, true).expect("a dashboard place"))
            .collect();
        assert_eq!(
            bus.subscribe(greedy, true).err(),
            Some(StreamRefused::Full),
            "past its share of the dashboard's places, a shared one; none is left"
        );
        assert_eq!(bus.subscribers(), 3 + DASHBOARD_STREAMS_PER_CLIENT);
        drop(held);
        drop(tabs);
        drop(third);
        assert_eq!(bus.subscribers(), 0);
        assert!(
            lock(&bus.places).by_client.is_empty(),
            "every place given back"
        );
        assert!(bus.subscribe(greedy, false).is_ok());
    }
}
