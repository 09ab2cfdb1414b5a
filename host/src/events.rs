//! Live task events for Server-Sent Events subscribers.
//!
//! [`Notifying`] wraps a process table: every record it inserts and every event it applies is
//! also published on a broadcast channel, as JSON, but only while someone listens. Publishing
//! never waits: a subscriber that falls behind the channel's buffer skips ahead (and is told how
//! many events it missed), so a slow client can slow neither tasks nor the host.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::table::{ListQuery, Page, Pid, ProcessTable, TaskEvent, TaskRecord};

/// Events buffered per subscriber before it starts skipping.
const CHANNEL_CAPACITY: usize = 4096;

/// One published event.
#[derive(Debug, Clone)]
pub struct Published {
    pub pid: Pid,
    /// `spawned`, `started`, `progress`, `log` or `exit`.
    pub kind: &'static str,
    /// The event as JSON, serialised once for every subscriber.
    pub data: Arc<str>,
}

/// The broadcast side, with a bound on subscribers.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Published>,
    /// Flips to true when the host shuts down, ending every stream.
    closed: watch::Sender<bool>,
    subscribers: Arc<AtomicUsize>,
    max_subscribers: usize,
}

/// A subscription; dropping it frees its place.
#[derive(Debug)]
pub struct Subscription {
    pub receiver: broadcast::Receiver<Published>,
    /// Changes to true when the host shuts down.
    pub closed: watch::Receiver<bool>,
    count: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EventBus {
    /// A bus that admits at most `max_subscribers` at once.
    pub fn new(max_subscribers: usize) -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            sender,
            closed: watch::Sender::new(false),
            subscribers: Arc::default(),
            max_subscribers,
        }
    }

    /// Streams open now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Subscribes to every event from now on, if a place is free.
    pub fn subscribe(&self) -> Option<Subscription> {
        self.subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_subscribers).then_some(n + 1)
            })
            .ok()?;
        Some(Subscription {
            receiver: self.sender.subscribe(),
            closed: self.closed.subscribe(),
            count: Arc::clone(&self.subscribers),
        })
    }

    /// Ends every stream, so that open ones do not hold the HTTP server's shutdown.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn listening(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    fn publish(&self, pid: Pid, kind: &'static str, data: Value) {
        let data: Arc<str> = data.to_string().into();
        // An error only means nobody listens any more.
        let _ = self.sender.send(Published { pid, kind, data });
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
        "at": record.ended_at.map(|at| humantime::format_rfc3339_millis(at).to_string()),
    })
}

fn at(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A process table that publishes what it records.
#[derive(Debug)]
pub struct Notifying<T> {
    table: T,
    bus: Arc<EventBus>,
}

impl<T: ProcessTable + std::fmt::Debug> Notifying<T> {
    /// `table`, publishing on `bus`.
    pub fn new(table: T, bus: Arc<EventBus>) -> Self {
        Self { table, bus }
    }
}

#[derive(Serialize)]
struct Spawned<'a> {
    pid: Pid,
    name: &'a str,
    worker: &'a str,
    version: &'a str,
    duration: u32,
    at: String,
}

impl<T: ProcessTable + std::fmt::Debug> ProcessTable for Notifying<T> {
    fn insert(&self, record: TaskRecord) {
        if self.bus.listening() {
            let data = Spawned {
                pid: record.pid,
                name: &record.name,
                worker: &record.worker,
                version: &record.version,
                duration: record.duration,
                at: at(record.spawned_at),
            };
            self.bus.publish(record.pid, "spawned", json!(data));
        }
        self.table.insert(record);
    }

    fn apply(&self, pid: Pid, event: TaskEvent) {
        // Applied first, published after: a subscriber reads the record after subscribing, so
        // it either sees the change in the record or receives the event, never neither.
        let ended = matches!(event, TaskEvent::Ended { .. });
        let published: Vec<(&'static str, Value)> = match &event {
            // Built from the record after it is applied, and only if someone listens.
            TaskEvent::Ended { .. } => Vec::new(),
            _ if !self.bus.listening() => Vec::new(),
            TaskEvent::Restarting {
                at: when,
                end,
                next_attempt,
                ..
            } => vec![(
                "restart",
                json!({
                    "pid": pid,
                    "outcome": end.outcome,
                    "exit_code": end.exit_code,
                    "error": end.error,
                    "next_attempt": next_attempt,
                    "at": at(*when),
                }),
            )],
            TaskEvent::Started {
                at: when, steps, ..
            } => vec![(
                "started",
                json!({"pid": pid, "steps": steps, "at": at(*when)}),
            )],
            TaskEvent::Progress { step, steps, .. } => vec![(
                "progress",
                json!({"pid": pid, "step": step, "steps": steps}),
            )],
            TaskEvent::Logs { lines, .. } => lines
                .iter()
                .map(|line| {
                    let data = json!({
                        "pid": pid,
                        "source": line.source,
                        "message": line.message,
                        "at": at(line.at),
                    });
                    ("log", data)
                })
                .collect(),
        };
        self.table.apply(pid, event);
        if self.bus.listening() {
            for (kind, data) in published {
                self.bus.publish(pid, kind, data);
            }
            if ended && let Some(record) = self.table.get(pid) {
                self.bus.publish(pid, "exit", exit_data(&record));
            }
        }
    }

    fn get(&self, pid: Pid) -> Option<TaskRecord> {
        self.table.get(pid)
    }

    fn list(&self, query: &ListQuery) -> Page {
        self.table.list(query)
    }
}
