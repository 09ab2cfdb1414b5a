//! A task's actor calls (`send`, `spawn`, `monitor`, `link`, `unlink`, `kill`, `register`,
//! `whereis`), as the 0.2.0 binding takes them: each forwarded to the `actor` kernel, whose
//! [`Answer`] is given at once in the common case (a pid this host holds), or is a future,
//! polled here on the spot ([`now`]). One that must read the host's store, or on a host of a
//! cluster ask the shared database, holds the task's scheduler thread until it answers, since
//! the contract's calls are synchronous. (Running a task on a fiber would let such a call park
//! the task instead, but wasmtime keeps a fiber stack in every store that ever ran on one: see
//! BENCHMARKS.md, section 15.)

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::bindings::v2;
use super::process::TaskState;
use crate::actor::{Answer, ChildError, ChildRequest, Kernel, NameError, SendError, WatchError};

use v2::http_spawn::worker::types as wit;

/// The answer, waited for on this thread if it must be.
fn answer<T>(answer: Answer<'_, T>) -> T {
    match answer {
        Answer::Now(answer) => answer,
        Answer::Later(future) => now(future),
    }
}

/// Polls `call` to its end on this thread, which waits (parked) if it must.
pub(super) fn now<T>(call: impl Future<Output = T>) -> T {
    let mut call = std::pin::pin!(call);
    // Most calls answer on the first poll, which needs no waker of its own.
    if let Poll::Ready(answer) = call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return answer;
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(answer) = call.as_mut().poll(&mut cx) {
            return answer;
        }
        std::thread::park();
    }
}

/// Wakes the thread that waits in [`now`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl TaskState {
    /// The host, for an actor call; none for a task that is being stopped (killed, or every
    /// task of its host, which lost its lease), which makes no more of them.
    fn kernel(&self) -> Option<&dyn Kernel> {
        if self.interrupts.contains(self.pid) {
            return None;
        }
        self.kernel.as_deref()
    }
}

impl v2::http_spawn::worker::host::Host for TaskState {
    fn log(&mut self, level: wit::Level, message: String) {
        self.log_line(level, message);
    }

    fn self_pid(&mut self) -> String {
        self.pid.to_string()
    }

    fn send(&mut self, to: String, body: String) -> Result<(), wit::SendError> {
        // A step sends its share, then waits for its next step: it cannot fill every
        // mailbox of the host in one go.
        if self.sends_left == 0 {
            return Err(wit::SendError::MailboxFull);
        }
        self.sends_left -= 1;
        let kernel = self.kernel().ok_or(wit::SendError::NoSuchProcess)?;
        answer(kernel.send(self.pid, to, body)).map_err(send_error)
    }

    fn spawn(&mut self, child: wit::Child) -> Result<String, wit::SpawnError> {
        let kernel = self.kernel().ok_or(wit::SpawnError::Full)?;
        let request = ChildRequest {
            worker: child.worker,
            name: child.name,
            duration_secs: child.duration_secs,
            payload: child.payload,
            link: child.link,
            monitor: child.monitor,
        };
        match answer(kernel.spawn(self.pid, request)) {
            Ok(pid) => Ok(pid.to_string()),
            Err(ChildError::Full) => Err(wit::SpawnError::Full),
            Err(ChildError::ShuttingDown) => Err(wit::SpawnError::ShuttingDown),
            Err(ChildError::UnknownWorker(name)) => Err(wit::SpawnError::UnknownWorker(name)),
            Err(ChildError::Refused(why)) => Err(wit::SpawnError::Refused(why)),
        }
    }

    fn monitor(&mut self, target: String) -> Result<(), wit::WatchError> {
        let kernel = self.kernel().ok_or(wit::WatchError::BadPid)?;
        answer(kernel.monitor(self.pid, target)).map_err(watch_error)
    }

    fn link(&mut self, target: String) -> Result<(), wit::WatchError> {
        let kernel = self.kernel().ok_or(wit::WatchError::BadPid)?;
        answer(kernel.link(self.pid, target)).map_err(watch_error)
    }

    fn unlink(&mut self, target: String) -> Result<(), wit::WatchError> {
        let kernel = self.kernel().ok_or(wit::WatchError::BadPid)?;
        answer(kernel.unlink(self.pid, target)).map_err(watch_error)
    }

    fn kill(&mut self, target: String) -> Result<(), wit::SendError> {
        let kernel = self.kernel().ok_or(wit::SendError::NoSuchProcess)?;
        answer(kernel.kill(self.pid, target)).map_err(send_error)
    }

    fn trap_exits(&mut self, on: bool) {
        if let Some(kernel) = self.kernel() {
            kernel.trap_exits(self.pid, on);
        }
    }

    fn register(&mut self, name: String) -> Result<(), wit::NameError> {
        let kernel = self.kernel().ok_or(wit::NameError::Invalid)?;
        answer(kernel.register(self.pid, name)).map_err(|error| match error {
            NameError::Invalid => wit::NameError::Invalid,
            NameError::Taken => wit::NameError::Taken,
            NameError::AlreadyNamed => wit::NameError::AlreadyNamed,
        })
    }

    fn whereis(&mut self, name: String) -> Option<String> {
        let kernel = self.kernel()?;
        answer(kernel.whereis(self.pid, name)).map(|pid| pid.to_string())
    }
}

fn send_error(error: SendError) -> wit::SendError {
    match error {
        SendError::NoSuchProcess => wit::SendError::NoSuchProcess,
        SendError::Ended => wit::SendError::Ended,
        SendError::MailboxFull => wit::SendError::MailboxFull,
        SendError::TooLarge => wit::SendError::TooLarge,
        SendError::BadPid => wit::SendError::BadPid,
        // The contract has no case for it; like a full mailbox, it may pass if tried later.
        SendError::Unavailable => wit::SendError::MailboxFull,
    }
}

fn watch_error(error: WatchError) -> wit::WatchError {
    match error {
        WatchError::BadPid => wit::WatchError::BadPid,
        WatchError::TooMany => wit::WatchError::TooMany,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending on its first poll, after waking its waker: answers on the next.
    struct OnceMore(bool);

    impl Future for OnceMore {
        type Output = u32;

        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.0 {
                return Poll::Ready(7);
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn now_answers_a_call_that_waits_once() {
        assert_eq!(now(OnceMore(false)), 7);
        assert_eq!(now(std::future::ready(3)), 3);
    }
}
