//! The host's console: what `RUST_LOG` lets through, as text or JSON, coloured only on a
//! terminal, and written by a thread of its own. The threads that run tasks and answer requests
//! format a line into a buffer and hand it over; they never wait on the output. Under overload
//! (a slow terminal, a full pipe, a stalled journal) lines past [`BUFFERED_LINES`] are dropped
//! and counted (`http_spawn_log_lines_dropped_total`) rather than slowing tasks.

use std::io::{BufWriter, IsTerminal as _};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines that may wait for the writer thread.
const BUFFERED_LINES: usize = 65_536;
/// What the writer thread gathers before one write to the output, when lines come faster than
/// it writes them; it writes whatever it has once no line waits.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Lines dropped because the writer thread fell behind.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread: dropping it writes what waits and ends the thread. Hold it until
/// the host has stopped.
#[derive(Debug)]
#[must_use = "the console's last lines are written when this is dropped"]
pub struct Console {
    _guard: WorkerGuard,
}

/// Installs the console on stdout, filtered by `RUST_LOG` (default `info`).
pub fn install(format: LogFormat) -> Console {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a file or a service manager's journal gets plain text.
    let colours = std::io::stdout().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("http-spawn-console")
        .finish(BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            std::io::stdout(),
        ));
    let _ = DROPPED.set(writer.error_counter());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(writer);
    match format {
        LogFormat::Text => logs.init(),
        // Fields at the top level of each object, next to `timestamp`, `level` and `message`.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    Console { _guard: guard }
}

/// Lines the console dropped so far; 0 where it is not installed (tests, an embedding).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}
