//! The host's console: what `RUST_LOG` lets through, as text or JSON, coloured only on a
//! terminal, and written by a thread of its own.
//!
//! The threads that run tasks and answer requests format a line and append it to a shared
//! buffer: no allocation, no channel, no wake-up of another thread. The console's thread takes
//! the buffer every [`FLUSH_INTERVAL`] (sooner once [`WAKE_BYTES`] wait) and writes it in one
//! go, so a burst of lines costs one `write` rather than one each. If the output stalls (a
//! full pipe, a slow terminal, a stalled journal), lines wait up to [`BUFFER_BYTES`]; past that
//! they are dropped and counted (`http_spawn_log_lines_dropped_total`) rather than slowing
//! tasks. The first design, `tracing-appender`'s channel, woke the console's thread for each
//! line: 64 µs of host CPU per seed task, four times the budget of issue #22. The text format
//! is [`Text`], the default format's lines at half its cost per line.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// How often the console's thread writes what waits.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// What may wait before the console's thread is woken early.
const WAKE_BYTES: usize = 1 << 20;
/// What may wait at most: past it, lines are dropped.
const BUFFER_BYTES: usize = 16 << 20;

/// The console installed in this process, for its count of dropped lines.
static CONSOLE: OnceLock<Arc<Shared>> = OnceLock::new();
/// How long a stopping host waits for the console's last write: an output that stalls (a full
/// pipe nobody reads) must not keep the process from exiting.
const LAST_WRITE_PATIENCE: Duration = Duration::from_secs(5);

/// What the threads that log and the console's thread share.
#[derive(Debug, Default)]
struct Shared {
    waiting: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    closing: AtomicBool,
    /// The console's thread, to wake early.
    thread: OnceLock<Thread>,
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A panic while appending leaves whole lines or a cut one: still worth writing.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one formatted line, or drops it when too much waits.
    fn append(&self, line: &[u8]) {
        let mut waiting = self.waiting();
        let before = waiting.len();
        if before + line.len() > BUFFER_BYTES {
            drop(waiting);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        waiting.extend_from_slice(line);
        let crossed = before < WAKE_BYTES && waiting.len() >= WAKE_BYTES;
        drop(waiting);
        if crossed && let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// The console's thread: writes what waits, every interval, until the console closes.
    fn write_out(&self, mut output: impl Write) {
        let mut spare = Vec::new();
        loop {
            std::thread::park_timeout(FLUSH_INTERVAL);
            let closing = self.closing.load(Ordering::Acquire);
            std::mem::swap(&mut *self.waiting(), &mut spare);
            if !spare.is_empty() {
                // An output that fails (closed) takes nothing more; the lines are gone.
                let _ = output.write_all(&spare).and_then(|()| output.flush());
                spare.clear();
                if spare.capacity() > WAKE_BYTES {
                    // Given back after a burst: a quiet host holds little.
                    spare.shrink_to(WAKE_BYTES / 16);
                }
            }
            if closing {
                return;
            }
        }
    }
}

/// Where the formatter writes a line: the shared buffer.
#[derive(Debug)]
struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Buffered(Arc<Shared>);

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

/// Keeps the console's thread: dropping it writes what waits and ends the thread. Hold it
/// until the host has stopped.
#[derive(Debug)]
#[must_use = "the console's last lines are written when this is dropped"]
pub struct Console {
    shared: Arc<Shared>,
    /// The console's thread, and word from it that it has written its last lines.
    thread: Option<(JoinHandle<()>, mpsc::Receiver<()>)>,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        if let Some((thread, done)) = self.thread.take() {
            thread.thread().unpark();
            if done.recv_timeout(LAST_WRITE_PATIENCE).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

/// Installs the console on stdout, filtered by `RUST_LOG` (default `info`).
pub fn install(format: LogFormat) -> Console {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a file or a service manager's journal gets plain text.
    let colours = std::io::stdout().is_terminal();
    let shared = Arc::new(Shared::default());
    let (done, written) = mpsc::channel();
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("http-spawn-console".into())
            .spawn(move || {
                shared.write_out(std::io::stdout());
                let _ = done.send(());
            })
    };
    let (thread, writer) = match thread {
        Ok(thread) => {
            let _ = shared.thread.set(thread.thread().clone());
            let _ = CONSOLE.set(Arc::clone(&shared));
            let writer = BoxMakeWriter::new(Buffered(Arc::clone(&shared)));
            (Some((thread, written)), writer)
        }
        Err(error) => {
            // No thread to write the buffer: the threads that log write to stdout themselves.
            eprintln!("http-spawn: no thread for the console ({error}); writing it in place");
            (None, BoxMakeWriter::new(std::io::stdout))
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_timer(Clock)
        .with_writer(writer);
    match format {
        LogFormat::Text => logs.event_format(Text { colours }).init(),
        // Fields at the top level of each object, next to `timestamp`, `level` and `message`.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    Console { shared, thread }
}

/// Lines the console dropped so far; 0 where it is not installed (tests, an embedding).
pub fn dropped_lines() -> u64 {
    CONSOLE
        .get()
        .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
}

/// UTC timestamps in RFC 3339 with microseconds, as `tracing-subscriber`'s own, the date and
/// time of day formatted once a second per thread rather than once a line.
#[derive(Debug, Clone, Copy)]
struct Clock;

thread_local! {
    /// The second last formatted on this thread, and its text up to the seconds.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = SystemTime::now();
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        SECOND.with(|second| {
            let mut second = second.borrow_mut();
            if second.0 != secs {
                let text = humantime::format_rfc3339_seconds(now).to_string();
                second.1.clear();
                second.1.push_str(text.trim_end_matches('Z'));
                second.0 = secs;
            }
            write!(w, "{}.{:06}Z", second.1, since.subsec_micros())
        })
    }
}

/// The text console's line: `TIMESTAMP LEVEL TARGET: SPANS: MESSAGE key=value ...`, as
/// `tracing-subscriber`'s default format writes it, at a third of its cost: each part written
/// once, with no styling calls when there are no colours. Control characters in a field's
/// value are escaped, so no value forges a line or reaches a terminal as an escape.
#[derive(Debug, Clone, Copy)]
struct Text {
    colours: bool,
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        Clock.format_time(&mut writer)?;
        let (level, colour) = match *meta.level() {
            Level::ERROR => ("ERROR", "31"),
            Level::WARN => (" WARN", "33"),
            Level::INFO => (" INFO", "32"),
            Level::DEBUG => ("DEBUG", "34"),
            Level::TRACE => ("TRACE", "35"),
        };
        if self.colours {
            write!(
                writer,
                " \x1b[{colour}m{level}\x1b[0m \x1b[2m{}:\x1b[0m ",
                meta.target()
            )?;
        } else {
            writer.write_char(' ')?;
            writer.write_str(level)?;
            writer.write_char(' ')?;
            writer.write_str(meta.target())?;
            writer.write_str(": ")?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_str(": ")?;
            }
        }
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes an event's fields: the message as it is, the others as ` key=value`.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            // Quoted, its control characters escaped, as `Debug` writes a string.
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let mut out = Escaped(&mut *self.writer);
        self.result = if field.name() == "message" {
            write!(out, "{separator}{value:?}")
        } else {
            write!(out, "{separator}{}={value:?}", field.name())
        };
    }
}

/// Passes text through, its control characters escaped (`\n`, `\u{1b}`).
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl std::fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        // C0 controls and DEL are single bytes; C1 controls (U+0080 to U+009F) begin with
        // 0xc2, which the slow path tells apart from the other characters it begins.
        if !text
            .bytes()
            .any(|byte| byte < 0x20 || byte == 0x7f || byte == 0xc2)
        {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            if c.is_control() {
                write!(self.0, "{}", c.escape_default())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_drops_and_counts_and_the_thread_writes_the_rest() {
        let shared = Arc::new(Shared::default());
        let line = vec![b'x'; 1024];
        for _ in 0..(BUFFER_BYTES / line.len() + 10) {
            shared.append(&line);
        }
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 10);
        shared.closing.store(true, Ordering::Release);
        let mut written = Vec::new();
        shared.write_out(&mut written);
        assert_eq!(written.len(), BUFFER_BYTES);
        assert!(shared.waiting().is_empty());
    }

    /// The lines the text console writes for `events`, each run on it.
    fn text_lines(events: impl FnOnce()) -> String {
        let shared = Arc::new(Shared::default());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(Buffered(Arc::clone(&shared)))
            .event_format(Text { colours: false })
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        let bytes = shared.waiting().clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn a_text_line_reads_as_the_default_format_and_escapes_its_values() {
        let text = text_lines(|| {
            let pid = crate::model::Pid::new(0x893c_0cc7, 1);
            tracing::info!(target: "guest", %pid, name = "task-1", "Worker progress step=1");
            tracing::warn!(
                error = "two\nlines \u{1b}[31m",
                code = 3,
                "Task process ended"
            );
            let span = tracing::debug_span!("request", method = "GET");
            span.in_scope(|| tracing::debug!("inside"));
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let after_time = |line: &str| line.split_once(' ').expect("a timestamp").1.to_owned();
        assert_eq!(
            after_time(lines[0]),
            " INFO guest: Worker progress step=1 pid=893c0cc7-1 name=\"task-1\""
        );
        assert_eq!(
            after_time(lines[1]),
            " WARN http_spawn::logging::tests: Task process ended \
             error=\"two\\nlines \\u{1b}[31m\" code=3"
        );
        assert_eq!(
            after_time(lines[2]),
            "DEBUG http_spawn::logging::tests: request{method=\"GET\"}: inside"
        );
    }

    #[test]
    fn the_clock_writes_rfc3339_with_microseconds() {
        let mut text = String::new();
        Clock
            .format_time(&mut Writer::new(&mut text))
            .expect("a timestamp");
        // 2026-12-06T18:11:25.123456Z
        assert_eq!(text.len(), 27, "{text}");
        assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
        assert!(humantime::parse_rfc3339(&text).is_ok(), "{text}");
    }
}
