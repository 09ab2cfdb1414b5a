//! A task's actor calls (`send`, `spawn`, `monitor`, `link`, `unlink`, `kill`, `register`,
//! `whereis`, and 0.3.0's `call` and `reply`), as the 0.2.0 and 0.3.0 bindings take them: each
//! forwarded to the `actor` kernel, whose
//! [`Answer`] is given at once in the common case (a pid this host holds), or is a future,
//! polled here on the spot ([`now`]). One that must read the host's store, or on a host of a
//! cluster ask the shared database, holds the task's scheduler thread until it answers, since
//! the contract's calls are synchronous. (Running a task on a fiber would let such a call park
//! the task instead, but wasmtime keeps a fiber stack in every store that ever ran on one: see
//! BENCHMARKS.md, section 15.)

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use std::time::Duration;

use super::bindings::{v2, v3};
use super::process::TaskState;
use crate::actor::{
    Answer, ChildError, ChildRequest, Kernel, NameError, ReplyError, SendError, WatchError,
};
use crate::model::LogSource;

/// The answer, waited for on this thread if it must be.
pub(crate) fn answer<T>(answer: Answer<'_, T>) -> T {
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

/// The calls 0.2.0 and 0.3.0 share, for the contract whose generated module is `$wit`
/// (their types are alike, but each contract's own), followed by `$extra`, the calls only
/// that contract has.
macro_rules! actor_calls {
    ($version:ident, $wit:path, $send_error:ident, { $($extra:tt)* }) => {
        mod $version {
            use $wit as wit;

            use super::$send_error as send_error;
            use super::*;

            impl wit::host::Host for TaskState {
                fn log(&mut self, level: wit::types::Level, message: String) {
                    let level = match level {
                        wit::types::Level::Trace => LogSource::Trace,
                        wit::types::Level::Debug => LogSource::Debug,
                        wit::types::Level::Info => LogSource::Info,
                        wit::types::Level::Warn => LogSource::Warn,
                        wit::types::Level::Error => LogSource::Error,
                    };
                    self.log_line(level, message);
                }

                fn self_pid(&mut self) -> String {
                    self.pid.to_string()
                }

                fn send(&mut self, to: String, body: String) -> Result<(), wit::types::SendError> {
                    let pid = self.pid;
                    let kernel = self.sending().map_err(send_error)?;
                    answer(kernel.send(pid, to, body)).map_err(send_error)
                }

                fn spawn(&mut self, child: wit::types::Child) -> Result<String, wit::types::SpawnError> {
                    use wit::types::SpawnError as E;
                    let kernel = self.kernel().ok_or(E::Full)?;
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
                        Err(ChildError::Full) => Err(E::Full),
                        Err(ChildError::ShuttingDown) => Err(E::ShuttingDown),
                        Err(ChildError::UnknownWorker(name)) => Err(E::UnknownWorker(name)),
                        Err(ChildError::Refused(why)) => Err(E::Refused(why)),
                    }
                }

                fn monitor(&mut self, target: String) -> Result<(), wit::types::WatchError> {
                    let kernel = self.kernel().ok_or(wit::types::WatchError::BadPid)?;
                    answer(kernel.monitor(self.pid, target)).map_err(watch_error)
                }

                fn link(&mut self, target: String) -> Result<(), wit::types::WatchError> {
                    let kernel = self.kernel().ok_or(wit::types::WatchError::BadPid)?;
                    answer(kernel.link(self.pid, target)).map_err(watch_error)
                }

                fn unlink(&mut self, target: String) -> Result<(), wit::types::WatchError> {
                    let kernel = self.kernel().ok_or(wit::types::WatchError::BadPid)?;
                    answer(kernel.unlink(self.pid, target)).map_err(watch_error)
                }

                fn kill(&mut self, target: String) -> Result<(), wit::types::SendError> {
                    let kernel = self.kernel().ok_or(SendError::NoSuchProcess).map_err(send_error)?;
                    answer(kernel.kill(self.pid, target)).map_err(send_error)
                }

                fn trap_exits(&mut self, on: bool) {
                    if let Some(kernel) = self.kernel() {
                        kernel.trap_exits(self.pid, on);
                    }
                }

                fn register(&mut self, name: String) -> Result<(), wit::types::NameError> {
                    use wit::types::NameError as E;
                    let kernel = self.kernel().ok_or(E::Invalid)?;
                    answer(kernel.register(self.pid, name)).map_err(|error| match error {
                        NameError::Invalid => E::Invalid,
                        NameError::Taken => E::Taken,
                        NameError::AlreadyNamed => E::AlreadyNamed,
                    })
                }

                fn whereis(&mut self, name: String) -> Option<String> {
                    let kernel = self.kernel()?;
                    answer(kernel.whereis(self.pid, name)).map(|pid| pid.to_string())
                }

                $($extra)*
            }

            fn watch_error(error: WatchError) -> wit::types::WatchError {
                match error {
                    WatchError::BadPid => wit::types::WatchError::BadPid,
                    WatchError::TooMany => wit::types::WatchError::TooMany,
                }
            }
        }
    };
}

actor_calls!(contract_v2, super::v2::http_spawn::worker, send_error_v2, {
});

/// A 0.2.0 task makes no calls: its errors have no case for one that went to another host.
fn send_error_v2(error: SendError) -> v2::http_spawn::worker::types::SendError {
    use v2::http_spawn::worker::types::SendError as E;
    match error {
        SendError::NoSuchProcess => E::NoSuchProcess,
        SendError::Ended => E::Ended,
        SendError::MailboxFull => E::MailboxFull,
        SendError::TooLarge => E::TooLarge,
        SendError::BadPid => E::BadPid,
        // The contract has no case for it; like a full mailbox, it may pass if tried later.
        SendError::Unavailable | SendError::Elsewhere => E::MailboxFull,
    }
}

fn send_error_v3(error: SendError) -> v3::http_spawn::worker::types::SendError {
    use v3::http_spawn::worker::types::SendError as E;
    match error {
        SendError::NoSuchProcess => E::NoSuchProcess,
        SendError::Ended => E::Ended,
        SendError::MailboxFull => E::MailboxFull,
        SendError::TooLarge => E::TooLarge,
        SendError::BadPid => E::BadPid,
        SendError::Elsewhere => E::Elsewhere,
        // Like a full mailbox, it may pass if tried later.
        SendError::Unavailable => E::MailboxFull,
    }
}

actor_calls!(contract_v3, super::v3::http_spawn::worker, send_error_v3, {
    fn call(
        &mut self,
        to: String,
        body: String,
        timeout_ms: u32,
    ) -> Result<u64, wit::types::SendError> {
        let pid = self.pid;
        let kernel = self.sending().map_err(send_error)?;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        answer(kernel.call(pid, to, body, timeout)).map_err(send_error)
    }

    fn reply(&mut self, reply_to: u64, body: String) -> Result<(), wit::types::ReplyError> {
        use wit::types::ReplyError as E;
        let kernel = self.kernel().ok_or(E::NoSuchCall)?;
        kernel
            .reply(self.pid, reply_to, body)
            .map_err(|error| match error {
                ReplyError::NoSuchCall => E::NoSuchCall,
                ReplyError::TooLarge => E::TooLarge,
            })
    }
});

impl TaskState {
    /// The host, for a send or a call: one more of the step's share, which is refused (as to
    /// a full mailbox) once spent. A step sends its share, then waits for its next step: it
    /// cannot fill every mailbox of the host in one go.
    fn sending(&mut self) -> Result<&dyn Kernel, SendError> {
        if self.sends_left == 0 {
            return Err(SendError::MailboxFull);
        }
        self.sends_left -= 1;
        self.kernel().ok_or(SendError::NoSuchProcess)
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
