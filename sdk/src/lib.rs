//! Write an http-spawn worker as an `async fn`: this crate drives the step protocol of
//! `wit/worker.wit` (`http-spawn:worker@0.3.0`) for you.
//!
//! ```no_run
//! // In the worker's crate (`crate-type = ["cdylib"]`), which starts with
//! // `#![cfg_attr(target_arch = "wasm32", no_std)]`:
//! use http_spawn_sdk::{Ctx, Exit};
//!
//! async fn run(ctx: Ctx) -> Exit {
//!     ctx.info("working");
//!     ctx.sleep(1_000).await;
//!     Ok(0)
//! }
//!
//! http_spawn_sdk::worker!(run);
//! ```
//!
//! # Execution model
//!
//! The host calls `start(spec)` once, then `step(wake)` again and again, and between two steps
//! the instance keeps nothing but its linear memory: no thread, no stack. So the worker's state
//! must live in memory, and an `async fn` is exactly that: its future is a struct holding every
//! local that lives across an `.await`.
//!
//! - `start` runs the worker's optional `plan` (its `Ok` is the step count the host reports as
//!   progress, its `Err` fails the task before step 1), then creates the future `run(ctx)` and
//!   keeps it, boxed, in a static cell in the guest's memory. A component instance is
//!   single-threaded, so one cell holds the one task.
//! - `step(wake)` puts the wake where the pending [`Sleep`], [`Receive`] or [`Call`] can find
//!   it and polls the future once, with a waker that does nothing: the host, not a waker,
//!   decides when the next poll comes.
//! - A [`Sleep`], [`Receive`] or [`Call`] records its request (`next::sleep(ms)`,
//!   `next::receive(ms)`, `next::await(ticket)`) on its first poll and is `Pending`; the step
//!   answers that request. On its next poll it takes the wake and is `Ready`.
//! - When the future is `Ready`, the step answers `done` for `Ok(value)` (an exit code, or a
//!   result: see [`Return`]) and `failed(message)` for `Err(message)`.
//!
//! Only the SDK's own [`Sleep`], [`Receive`] and [`Call`] can be awaited, one at a time: there
//! is no other event for a future to wait on. A future that is `Pending` without having asked for
//! anything fails the task with a message saying so, and so does awaiting two at once (a
//! `join` or `select` of them). A wake the pending future did not ask for is a host bug, and
//! fails the task with a message naming both.
//!
//! # `no_std` and `std`
//!
//! The crate is `no_std`. Without the `std` feature, on wasm32 it provides the worker's global
//! allocator (a bump allocator, see [Memory](#memory)) and a panic handler that traps: such
//! a worker imports nothing from WASI and runs in one 64 KiB page of linear memory, if it keeps
//! a small stack (the default worker's `build.rs` sets 2 KiB) and avoids `core::fmt`, whose
//! tables and code every instance would copy in. Hence [`text`] to build log lines and
//! [`payload`] to read the payload, both without `core::fmt`.
//!
//! With the `std` feature the worker links `std`: its general allocator and its panics, which
//! print to stderr (the host captures it into the task's log), and WASI imports the host links
//! with nothing granted. A worker crate that is not `no_std` must enable it, or its panic
//! handler clashes with this crate's.
//!
//! # Memory
//!
//! The `no_std` allocator is a bump arena that gives space back only when the most recent
//! allocation is freed. A worker that frees what it allocates in a step before the next step
//! (a log line, a received message) runs forever in the same few hundred bytes; one that keeps
//! allocations across many steps (a growing map of peers, say) wants the `std` feature.

#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
mod arena;
#[cfg(any(test, all(target_arch = "wasm32", not(feature = "std"))))]
mod bump;
#[doc(hidden)]
pub mod checkpoint;
mod ctx;
mod done;
mod executor;
pub mod payload;
pub mod text;

/// The bindings `wit_bindgen` generates for the `worker` world of `wit/worker.wit`. A worker
/// rarely needs them: the crate root re-exports the types a worker handles, and
/// [`worker!`] exports the task interface.
pub mod bindings {
    wit_bindgen::generate!({
        world: "checkpointed",
        path: "../wit",
        // `worker!` expands in the worker's crate, which reaches the generated export macros
        // through `$crate::bindings`.
        pub_export_macro: true,
        default_bindings_module: "http_spawn_sdk::bindings",
    });
}

use alloc::string::String;

pub use bindings::http_spawn::worker::types::{
    Child, Done, End, Level, Message, NameError, ReplyError, SendError, SpawnError, Spec,
    WatchError,
};
pub use ctx::{Call, CallError, Ctx, Exec, ExecError, MAX_KEPT_ASIDE, Receive, Received, Sleep};
#[cfg(feature = "json")]
pub use done::Json;
pub use done::Return;

/// What a worker returns: `Ok(code)` ends the task with that exit code (0 means success),
/// `Err(message)` fails it with that message as its error. A worker that returns a result
/// returns `Result<T, String>` instead, with `T` any [`Return`]: `Json(value)` for a value
/// written as JSON (exit code 0), or a [`Done`] with both.
pub type Exit = Result<i32, String>;

/// Exports `run`, an `async fn(Ctx) -> Result<T, String>` with `T` a [`Return`] (an exit code
/// as [`Exit`] has it, or a result), as the worker of this component.
///
/// `worker!(run)` plans 0 steps. `worker!(run, plan = plan)` calls
/// `fn plan(spec: &Spec) -> Result<u32, String>` in `start`: its `Ok` is the number of steps the
/// host reports as the task's progress (it counts one each time the task wakes from a sleep),
/// its `Err` fails the task before its first step, with that message.
///
/// Use it once, in the worker's `cdylib` crate, which needs no dependency but this crate.
#[macro_export]
macro_rules! worker {
    ($run:path $(,)?) => {
        $crate::worker!($run, plan = $crate::__private::no_plan);
    };
    ($run:path, plan = $plan:path $(,)?) => {
        const _: () = {
            struct Worker;

            impl $crate::__private::Guest for Worker {
                fn start(
                    spec: $crate::Spec,
                ) -> ::core::result::Result<u32, $crate::__private::String> {
                    $crate::__private::start(spec, $plan, $run)
                }

                fn step(wake: $crate::__private::Wake) -> $crate::__private::Next {
                    $crate::__private::step(wake, $run)
                }
            }

            impl $crate::__private::CheckpointGuest for Worker {
                fn locate()
                -> ::core::result::Result<$crate::__private::Extent, $crate::__private::String>
                {
                    $crate::__private::checkpoint::locate()
                }

                fn read(at: u32) -> $crate::__private::Chunk {
                    $crate::__private::checkpoint::read(at)
                }

                fn prepare(
                    extent: $crate::__private::Extent,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::checkpoint::prepare(extent)
                }

                fn write(at: u32, chunk: $crate::__private::Chunk) {
                    $crate::__private::checkpoint::write(at, chunk)
                }
            }

            $crate::bindings::export! { Worker with_types_in $crate::bindings }
        };
    };
}

/// What [`worker!`] expands to refers to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::http_spawn::worker::checkpoint::{
        Chunk, Extent, Guest as CheckpointGuest,
    };
    pub use crate::bindings::exports::http_spawn::worker::task::Guest;
    pub use crate::bindings::http_spawn::worker::types::{Next, Wake};
    pub use crate::checkpoint;
    pub use crate::executor::{start, step};
    pub use alloc::string::String;

    /// The plan of a worker that does not say how many steps it takes.
    pub fn no_plan(_: &crate::Spec) -> Result<u32, String> {
        Ok(0)
    }
}

/// Without `std` nothing could print a panic's message, so a panic traps at once: the task
/// fails with a trap, and the host records it.
#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
