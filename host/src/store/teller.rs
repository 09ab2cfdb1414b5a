//! The thread that tells a writer's submitters how their writes went, so that the writer goes
//! on to its next commit at once.
//!
//! A commit's callbacks answer the HTTP clients waiting for their `202`, hand accepted tasks to
//! the scheduler and wake whoever waits; and the chunk's changes are freed after them. On the
//! writer's thread that was a sixth of its time under the seed's load, time in which it could
//! not gather and commit the next chunk. Here they run on a thread of their own, in the order
//! the writer hands them on (commit order, failures included), each after its commit. The
//! writer hands on one batch per commit and never waits for the teller.

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::StoreError;
use super::backlog::Pending;

/// What a writer hands on at once: each batch with its answer.
type Told = Vec<(Pending, Result<(), StoreError>)>;

/// A writer's teller: its thread, stopped and joined once the writer drops it, after it has
/// told everything it was handed.
pub(super) struct Teller {
    sender: Option<mpsc::Sender<Told>>,
    thread: Option<JoinHandle<()>>,
}

impl Teller {
    /// Starts the thread (`store-teller`). If it cannot start, the writer of `store` tells
    /// its submitters itself, as before.
    pub(super) fn start(store: &str) -> Self {
        let (sender, receiver) = mpsc::channel::<Told>();
        let spawned = std::thread::Builder::new()
            .name("store-teller".into())
            .spawn(move || {
                for told in receiver {
                    finish(told);
                }
            });
        match spawned {
            Ok(thread) => Self {
                sender: Some(sender),
                thread: Some(thread),
            },
            Err(error) => {
                tracing::warn!(%error, store, "the store's teller thread did not start; its \
                    writer tells submitters itself");
                Self {
                    sender: None,
                    thread: None,
                }
            }
        }
    }

    /// Hands on `told`, to be told after everything handed on before it.
    pub(super) fn tell(&self, told: Told) {
        if told.is_empty() {
            return;
        }
        match &self.sender {
            Some(sender) => {
                if let Err(mpsc::SendError(told)) = sender.send(told) {
                    finish(told);
                }
            }
            None => finish(told),
        }
    }

    /// Hands on one batch's answer.
    pub(super) fn tell_one(&self, pending: Pending, result: Result<(), StoreError>) {
        self.tell(vec![(pending, result)]);
    }
}

fn finish(told: Told) {
    for (pending, result) in told {
        pending.finish(result);
    }
}

impl Drop for Teller {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's teller thread panicked");
        }
    }
}
