//! The executor behind `start` and `step`: it keeps the worker's future between steps and
//! polls it once per step, with the step's wake where the pending [`Sleep`](crate::Sleep) or
//! [`Receive`](crate::Receive) finds it. See the crate's documentation for the model.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use core::any::TypeId;
use core::cell::{Cell, UnsafeCell};
use core::future::Future;
use core::pin::Pin;
use core::ptr::null_mut;
use core::task::{Context, Poll, Waker};

use crate::bindings::http_spawn::worker::types::{Next, Spec, Wake};
use crate::{Ctx, Return};

/// What a pending future asked the host for: the step answers it as its `next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `next::sleep(ms)`.
    Sleep(u32),
    /// `next::receive(timeout_ms)`.
    Receive(u32),
    /// `next::await(ticket)`.
    Await(u64),
}

impl Request {
    fn next(self) -> Next {
        match self {
            Self::Sleep(ms) => Next::Sleep(ms),
            Self::Receive(timeout_ms) => Next::Receive(timeout_ms),
            Self::Await(ticket) => Next::Await(ticket),
        }
    }

    /// Whether `wake` answers this request.
    fn answered_by(self, wake: &Wake) -> bool {
        match self {
            Self::Sleep(_) => matches!(wake, Wake::Slept),
            Self::Receive(_) => matches!(
                wake,
                Wake::Message(_) | Wake::Timeout | Wake::Down(_) | Wake::LinkedExit(_)
            ),
            Self::Await(ticket) => matches!(wake, Wake::Replied((t, _)) if *t == ticket),
        }
    }
}

/// What the executor and the pending future pass each other during a poll. `Cell`s, not
/// `RefCell`s: nothing here is ever borrowed, only put and taken, so nothing can panic.
#[derive(Default)]
pub(crate) struct Slot {
    /// The request the future made in this poll, if it made one.
    request: Cell<Option<Request>>,
    /// The step's wake, until the pending future takes it.
    wake: Cell<Option<Wake>>,
    /// Why the future broke the protocol in this poll, if it did; it fails the task.
    fault: Cell<Option<&'static str>>,
}

impl core::fmt::Debug for Slot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

impl Slot {
    /// Records `request` as what this poll asks the host for.
    pub(crate) fn ask(&self, request: Request) {
        if self.request.replace(Some(request)).is_some() {
            self.fault.set(Some(
                "the worker awaited two of the SDK's sleeps, receives or calls at once",
            ));
        }
    }

    /// Takes the step's wake for a future that made `request`. `None` when there is none:
    /// the future was polled again in the step that recorded its request, and keeps waiting.
    pub(crate) fn take_wake(&self, request: Request) -> Option<Wake> {
        match self.wake.take() {
            Some(wake) if request.answered_by(&wake) => Some(wake),
            Some(_) => {
                self.fault.set(Some(
                    "a sleep, receive or call was woken by what another one asked for",
                ));
                None
            }
            None => None,
        }
    }
}

/// One task's future and what the executor knows of it between steps.
///
/// Generic over the future's type rather than holding a `dyn Future`: each poll and the final
/// drop are then direct calls. A call through a vtable is a `call_indirect`, whose first use
/// makes wasmtime initialise the instance's function table lazily, which costs every sleeping
/// task a 4 KiB page of the pool's table memory that it otherwise never touches.
pub(crate) struct Executor<F> {
    /// The worker's `run(ctx)`; `None` once it has ended.
    future: Option<Pin<Box<F>>>,
    /// The slot the future's `Ctx` shares.
    slot: Rc<Slot>,
    /// What the last step asked the host for, which the next wake must answer; `None` before
    /// the first step.
    awaiting: Option<Request>,
}

impl<T: Return, F: Future<Output = Result<T, String>>> Executor<F> {
    /// Creates the future `run(ctx)` for the task `spec` describes, not yet polled.
    pub(crate) fn new<R>(spec: Spec, run: R) -> Self
    where
        R: FnOnce(Ctx) -> F,
    {
        let slot = Rc::new(Slot::default());
        let future = Box::pin(run(Ctx::new(spec, Rc::clone(&slot))));
        Self {
            future: Some(future),
            slot,
            awaiting: None,
        }
    }

    /// Runs one step: hands `wake` to the pending future, polls it once, and says what next.
    pub(crate) fn step(&mut self, wake: Wake) -> Next {
        let Some(future) = self.future.as_mut() else {
            return failed("step called after the task ended");
        };
        let awaited = self.awaiting.take();
        let fits = match awaited {
            None => matches!(wake, Wake::Started),
            Some(request) => request.answered_by(&wake),
        };
        if !fits {
            self.future = None;
            return unasked_wake(&wake, awaited);
        }
        if !matches!(wake, Wake::Started) {
            self.slot.wake.set(Some(wake));
        }

        let poll = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));

        // A wake the future left (it awaited something else first) answers nothing now.
        self.slot.wake.set(None);
        let request = self.slot.request.take();
        if let Some(fault) = self.slot.fault.take() {
            self.future = None;
            return failed(fault);
        }
        match poll {
            Poll::Ready(exit) => {
                self.future = None;
                match exit.map(Return::done) {
                    Ok(Ok(done)) => Next::Done(done),
                    Ok(Err(message)) | Err(message) => Next::Failed(message),
                }
            }
            Poll::Pending => match request {
                Some(request) => {
                    self.awaiting = Some(request);
                    request.next()
                }
                None => {
                    self.future = None;
                    failed(
                        "the worker awaited something other than the SDK's sleep, receive or call",
                    )
                }
            },
        }
    }
}

fn failed(message: &str) -> Next {
    Next::Failed(String::from(message))
}

/// The failure for a wake that does not answer what the task asked for: a host bug, named in
/// full, built without `core::fmt`.
fn unasked_wake(wake: &Wake, awaited: Option<Request>) -> Next {
    let mut message = String::from("host bug: woke the task with `");
    message.push_str(match wake {
        Wake::Started => "started",
        Wake::Slept => "slept",
        Wake::Message(_) => "message",
        Wake::Timeout => "timeout",
        Wake::Down(_) => "down",
        Wake::LinkedExit(_) => "linked-exit",
        Wake::Replied(_) => "replied",
    });
    message.push_str(match awaited {
        None => "` before its first step",
        Some(Request::Sleep(_)) => "` while it slept",
        Some(Request::Receive(_)) => "` while it waited for its mailbox",
        Some(Request::Await(_)) => "` while it awaited another call",
    });
    Next::Failed(message)
}

/// The one task of this instance: its executor, boxed and type-erased (the type of an
/// `async fn`'s future cannot be named in a static), with the type it was created with.
struct Task(UnsafeCell<(*mut (), Option<TypeId>)>);

// SAFETY: a component instance runs one thread, and the host never calls an export while
// another is running, so at most one `&mut` to the cell's contents exists at a time: the one
// `start` or `step` takes for its own duration. Nothing calls these exports outside a component.
unsafe impl Sync for Task {}

static TASK: Task = Task(UnsafeCell::new((null_mut(), None)));

/// The task interface's `start`: runs `plan`, then keeps the future `run(ctx)` for the steps.
pub fn start<P, R, F, T>(spec: Spec, plan: P, run: R) -> Result<u32, String>
where
    P: FnOnce(&Spec) -> Result<u32, String>,
    R: FnOnce(Ctx) -> F,
    F: Future<Output = Result<T, String>> + 'static,
    T: Return,
{
    let steps = plan(&spec)?;
    let executor = Box::into_raw(Box::new(Executor::new(spec, run)));
    // SAFETY: see `Task`.
    let task = unsafe { &mut *TASK.0.get() };
    let previous = core::mem::replace(task, (executor.cast(), Some(TypeId::of::<F>())));
    if previous.1 == Some(TypeId::of::<F>()) {
        // SAFETY: a box of an `Executor<F>` (the type id says so), and no longer in the cell.
        drop(unsafe { Box::from_raw(previous.0.cast::<Executor<F>>()) });
    }
    Ok(steps)
}

/// The task interface's `step`. `run` is the worker's `run`, as passed to [`start`]: only its
/// type is used, to find the executor's.
pub fn step<R, F, T>(wake: Wake, run: R) -> Next
where
    R: FnOnce(Ctx) -> F,
    F: Future<Output = Result<T, String>> + 'static,
    T: Return,
{
    let _ = run;
    // SAFETY: see `Task`.
    let (executor, type_id) = unsafe { *TASK.0.get() };
    if executor.is_null() {
        return failed("step called before start");
    }
    if type_id != Some(TypeId::of::<F>()) {
        return failed("step called with another worker than start");
    }
    // SAFETY: the pointer came from `Box::into_raw` of an `Executor<F>` in `start` (the type id
    // says so) and is never freed while it is in the cell; see `Task` for exclusivity.
    unsafe { &mut *executor.cast::<Executor<F>>() }.step(wake)
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;
    use crate::Received;
    use crate::bindings::http_spawn::worker::types::{End, Message};

    fn spec() -> Spec {
        Spec {
            pid: "0000beef-1".to_string(),
            name: "test".to_string(),
            duration_secs: 2,
            payload: None,
            parent: None,
            attempt: 1,
        }
    }

    fn message(body: &str) -> Wake {
        Wake::Message(Message {
            sender: None,
            body: body.to_string(),
            reply_to: None,
        })
    }

    fn end(pid: &str) -> End {
        End {
            pid: pid.to_string(),
            status: "exited".to_string(),
            outcome: "exit".to_string(),
            exit_code: Some(0),
            error: None,
            result: None,
        }
    }

    #[track_caller]
    fn assert_sleep(next: Next, ms: u32) {
        assert!(matches!(next, Next::Sleep(m) if m == ms), "{next:?}");
    }

    #[track_caller]
    fn assert_receive(next: Next, timeout_ms: u32) {
        assert!(
            matches!(next, Next::Receive(t) if t == timeout_ms),
            "{next:?}"
        );
    }

    #[track_caller]
    fn assert_done(next: Next, code: i32) {
        assert!(
            matches!(&next, Next::Done(done) if done.exit_code == code && done.result.is_none()),
            "{next:?}"
        );
    }

    #[track_caller]
    fn assert_failed(next: Next, contains: &str) {
        assert!(
            matches!(&next, Next::Failed(m) if m.contains(contains)),
            "{next:?}"
        );
    }

    #[test]
    fn sleeps_then_exits_with_the_code() {
        let mut task = Executor::new(spec(), |ctx: Ctx| async move {
            for _ in 0..ctx.spec().duration_secs {
                ctx.sleep(1_000).await;
            }
            Ok(7)
        });
        assert_sleep(task.step(Wake::Started), 1_000);
        assert_sleep(task.step(Wake::Slept), 1_000);
        assert_done(task.step(Wake::Slept), 7);
        assert_failed(task.step(Wake::Slept), "after the task ended");
    }

    #[test]
    fn an_error_fails_the_task_with_its_message() {
        let mut task = Executor::new(spec(), |_| async { Err::<i32, _>("no luck".to_string()) });
        assert_failed(task.step(Wake::Started), "no luck");
    }

    #[test]
    fn receive_hands_over_each_kind_of_entry() {
        let mut task = Executor::new(spec(), |ctx: Ctx| async move {
            let mut score = 0;
            if let Some(Received::Message(m)) = ctx.receive(50).await
                && m.body == "hello"
            {
                score += 1;
            }
            if let Some(Received::Down(end)) = ctx.receive(50).await
                && end.pid == "a"
            {
                score += 10;
            }
            if let Some(Received::LinkedExit(end)) = ctx.receive(50).await
                && end.pid == "b"
            {
                score += 100;
            }
            if ctx.receive(0).await.is_none() {
                score += 1_000;
            }
            Ok(score)
        });
        assert_receive(task.step(Wake::Started), 50);
        assert_receive(task.step(message("hello")), 50);
        assert_receive(task.step(Wake::Down(end("a"))), 50);
        assert_receive(task.step(Wake::LinkedExit(end("b"))), 0);
        assert_done(task.step(Wake::Timeout), 1_111);
    }

    #[test]
    fn a_wake_nobody_asked_for_fails_the_task() {
        let mut task = Executor::new(spec(), |ctx: Ctx| async move {
            ctx.sleep(10).await;
            Ok(0)
        });
        assert_sleep(task.step(Wake::Started), 10);
        assert_failed(task.step(message("early")), "`message` while it slept");
        assert_failed(task.step(Wake::Slept), "after the task ended");
    }

    #[test]
    fn a_first_wake_other_than_started_fails_the_task() {
        let mut task = Executor::new(spec(), |_| async { Ok(0) });
        assert_failed(task.step(Wake::Slept), "`slept` before its first step");
    }

    #[test]
    fn awaiting_a_foreign_future_fails_the_task() {
        let mut task = Executor::new(spec(), |_| async {
            core::future::pending::<()>().await;
            Ok(0)
        });
        assert_failed(
            task.step(Wake::Started),
            "other than the SDK's sleep, receive or call",
        );
    }

    #[test]
    fn awaiting_two_at_once_fails_the_task() {
        /// Polls both futures, as a `join` does.
        struct Both<A, B>(A, B);
        impl<A: Future + Unpin, B: Future + Unpin> Future for Both<A, B> {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                let a = Pin::new(&mut self.0).poll(cx).is_ready();
                let b = Pin::new(&mut self.1).poll(cx).is_ready();
                if a && b {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
        let mut task = Executor::new(spec(), |ctx: Ctx| async move {
            Both(ctx.sleep(10), ctx.receive(10)).await;
            Ok(0)
        });
        assert_failed(
            task.step(Wake::Started),
            "two of the SDK's sleeps, receives or calls",
        );
    }

    #[test]
    fn a_future_polled_twice_in_a_step_keeps_waiting() {
        /// Polls its future twice per poll, as a careless combinator might.
        struct Twice<A>(A);
        impl<A: Future + Unpin> Future for Twice<A> {
            type Output = A::Output;
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
                match Pin::new(&mut self.0).poll(cx) {
                    Poll::Ready(out) => Poll::Ready(out),
                    Poll::Pending => Pin::new(&mut self.0).poll(cx),
                }
            }
        }
        let mut task = Executor::new(spec(), |ctx: Ctx| async move {
            Twice(ctx.sleep(10)).await;
            Twice(ctx.receive(20)).await;
            Ok(3)
        });
        assert_sleep(task.step(Wake::Started), 10);
        assert_receive(task.step(Wake::Slept), 20);
        assert_done(task.step(Wake::Timeout), 3);
    }
}
