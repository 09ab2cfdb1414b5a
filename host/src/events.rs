//! Live task events for Server-Sent Events subscribers.
//!
//! The ledger publishes every change here once the store has it, as JSON built just before,
//! but only while someone listens. Publishing never waits: a subscriber that falls behind the channel's buffer
//! skips ahead (and is told how many events it missed), so a slow client can slow neither tasks
//! nor the host.

use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
                };
                one(record.pid, "spawned", json!(data))
            }
            Change::Event(_, TaskEvent::Ended { .. })
            | Change::Prune { .. }
            | Change::Forward { .. }
            | Change::Module { .. }
            | Change::Worker { .. } => Vec::new(),
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
}
