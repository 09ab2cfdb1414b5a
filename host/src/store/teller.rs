//! The thread that tells a writer's submitters how their writes went, so that the writer goes
//! on to its next commit at once.
//!
//! A commit's callbacks answer the HTTP clients waiting for their `202`, hand accepted tasks to
//! the scheduler and wake whoever waits; and the chunk's changes are freed after them. On the
//! writer's thread that was a sixth of its time under the seed's load, time in which it could
//! not gather and commit the next chunk. Here they run on a thread of their own, in the order
//! the writer hands them on (commit order, failures included), each after its commit. The
//! writer hands on one batch per commit and never waits for the teller.
//!
//! **Flushing.** A store whose commits reach the disk only when flushed (SQLite's log with
//! `--store-sync full`) gives the teller its [`Flush`]: the teller takes every batch handed on
//! so far, flushes once, and only then tells them. A commit is so answered only once it is on
//! the disk, while the writer goes on to the next commit instead of waiting for the disk (group
//! commit, as PostgreSQL's and InnoDB's logs do it). A flush that fails stops the host: the
//! kernel may have dropped the writes it could not flush while reads still see them, so
//! nothing the store holds past that point can be trusted; the host started again reads back
//! what reached the disk, and no `202` was given for what did not.

use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use super::StoreError;
use super::backlog::Pending;

/// What a writer hands on at once: each batch with its answer.
type Told = Vec<(Pending, Result<(), StoreError>)>;

/// Makes what the writer has committed so far durable, before its submitters are told.
pub(super) type Flush = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// The exit status of a host whose store could not flush its log (`EX_IOERR`).
const FLUSH_FAILED: i32 = 74;

/// A writer's teller: its thread, stopped and joined once the writer drops it, after it has
/// told everything it was handed.
pub(super) struct Teller {
    sender: Option<mpsc::Sender<Told>>,
    thread: Option<JoinHandle<()>>,
    /// The store's name and its flush, shared with the thread: whoever tells, flushes first.
    flush: Option<(&'static str, Arc<Mutex<Flush>>)>,
}

impl Teller {
    /// Starts the thread (`store-teller`), which runs `flush` before it tells, if given. If
    /// it cannot start, the writer of `store` tells its submitters itself, flushing first.
    pub(super) fn start(store: &'static str, flush: Option<Flush>) -> Self {
        let (sender, receiver) = mpsc::channel::<Told>();
        let flush = flush.map(|flush| (store, Arc::new(Mutex::new(flush))));
        let theirs = flush.clone();
        let spawned = std::thread::Builder::new()
            .name("store-teller".into())
            .spawn(move || {
                while let Ok(mut told) = receiver.recv() {
                    // Everything handed on meanwhile shares the flush.
                    while let Ok(more) = receiver.try_recv() {
                        told.extend(more);
                    }
                    if let Some((store, flush)) = &theirs {
                        flushed(store, flush);
                    }
                    finish(told);
                }
            });
        let thread = spawned
            .inspect_err(|error| {
                tracing::warn!(%error, store, "the store's teller thread did not start; its \
                    writer tells submitters itself");
            })
            .ok();
        Self {
            sender: thread.is_some().then_some(sender),
            thread,
            flush,
        }
    }

    /// Hands on `told`, to be told after everything handed on before it.
    pub(super) fn tell(&self, told: Told) {
        if told.is_empty() {
            return;
        }
        let told = match &self.sender {
            Some(sender) => match sender.send(told) {
                Ok(()) => return,
                Err(mpsc::SendError(told)) => told,
            },
            None => told,
        };
        // No thread (it did not start, or is gone): told here, but never before a flush.
        if let Some((store, flush)) = &self.flush {
            flushed(store, flush);
        }
        finish(told);
    }

    /// Hands on one batch's answer.
    pub(super) fn tell_one(&self, pending: Pending, result: Result<(), StoreError>) {
        self.tell(vec![(pending, result)]);
    }
}

/// Flushes; stops the host if that fails (see the module's comment).
fn flushed(store: &str, flush: &Mutex<Flush>) {
    let mut flush = flush
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(error) = (*flush)() {
        let message = format!(
            "the {store} store could not flush its log to the disk ({error}); the host stops, so \
             that it gives no 202 for a task the disk may not hold. Started again, it reads back \
             what the disk holds."
        );
        tracing::error!("{message}");
        eprintln!("http-spawn: {message}");
        std::process::exit(FLUSH_FAILED);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// With a flush, every batch is told in the order it was handed on, and only once a flush
    /// that began after it was handed on has ended; batches handed on meanwhile share a flush.
    #[test]
    fn a_batch_is_told_after_a_flush_that_began_after_it_was_handed_on() {
        let begun = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let flush: Flush = {
            let (begun, ended) = (Arc::clone(&begun), Arc::clone(&ended));
            Box::new(move || {
                begun.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                ended.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        };
        let teller = Teller::start("test", Some(flush));
        let (sender, told) = mpsc::channel();
        const BATCHES: usize = 60;
        for batch in 0..BATCHES {
            let handed_on_after = begun.load(Ordering::SeqCst);
            let (sender, ended) = (sender.clone(), Arc::clone(&ended));
            let done: super::super::Done = Box::new(move |result| {
                let flushed = ended.load(Ordering::SeqCst);
                let _ = sender.send((batch, handed_on_after, flushed, result.is_ok()));
            });
            teller.tell_one(Pending::new(Vec::new(), Some(done), 0), Ok(()));
            if batch % 5 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        // Dropped, it tells everything handed on before it stops.
        drop(teller);
        let told: Vec<_> = told.try_iter().collect();
        assert_eq!(told.len(), BATCHES);
        for (at, &(batch, handed_on_after, flushed, ok)) in told.iter().enumerate() {
            assert_eq!(batch, at, "told in order");
            assert!(ok);
            assert!(
                flushed > handed_on_after,
                "batch {batch} was told before a flush begun after it ended \
                 ({handed_on_after} begun before it, {flushed} ended when told)"
            );
        }
        let flushes = ended.load(Ordering::SeqCst);
        assert!(
            flushes < BATCHES,
            "batches share flushes: {flushes} for {BATCHES}"
        );
    }

    /// With no thread (it did not start, or is gone), the writer tells itself, and still
    /// never before a flush.
    #[test]
    fn without_its_thread_a_teller_still_flushes_before_it_tells() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let flush: Flush = {
            let flushes = Arc::clone(&flushes);
            Box::new(move || {
                flushes.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        };
        let teller = Teller {
            sender: None,
            thread: None,
            flush: Some(("test", Arc::new(Mutex::new(flush)))),
        };
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let done: super::super::Done = {
            let (flushes, seen) = (Arc::clone(&flushes), Arc::clone(&seen));
            Box::new(move |_| seen.store(flushes.load(Ordering::SeqCst), Ordering::SeqCst))
        };
        teller.tell_one(Pending::new(Vec::new(), Some(done), 0), Ok(()));
        assert_eq!(seen.load(Ordering::SeqCst), 1, "told after one flush");
    }

    /// Without a flush, batches are told in order, each once.
    #[test]
    fn without_a_flush_batches_are_told_in_order() {
        let teller = Teller::start("test", None);
        let (sender, told) = mpsc::channel();
        for batch in 0..100 {
            let sender = sender.clone();
            let done: super::super::Done = Box::new(move |result| {
                let _ = sender.send((batch, result.is_err()));
            });
            let result = if batch % 3 == 0 {
                Err(StoreError::Unavailable("down".into()))
            } else {
                Ok(())
            };
            teller.tell(vec![(Pending::new(Vec::new(), Some(done), 0), result)]);
        }
        drop(teller);
        let told: Vec<_> = told.try_iter().collect();
        let expected: Vec<_> = (0..100).map(|batch| (batch, batch % 3 == 0)).collect();
        assert_eq!(told, expected);
    }
}
