//! A task's captured log: its `log` calls and whatever it writes to stdout and stderr, kept up
//! to a byte cap. A guest may write without end; the host keeps the first `max_bytes` and counts
//! the rest, and writing never fails, since a Rust guest panics when a print fails.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::model::{LogLine, LogSource, storable};

/// A rust guest's panic hook writes `panicked at <place>:` and then the message to stderr;
/// the host keeps this much of stderr's tail to report the message even when the log is full.
const STDERR_TAIL_BYTES: usize = 2048;

/// Guests rarely write a line longer than this; longer ones are split so that a guest that
/// never writes a newline cannot grow a pending line without bound.
const MAX_LINE_BYTES: usize = 8192;

#[derive(Debug, Default)]
struct Inner {
    /// Lines not yet handed to the process table.
    fresh: Vec<LogLine>,
    /// Partial lines of stdout and stderr, waiting for their newline, by [`Stream`].
    pending: [Vec<u8>; 2],
    kept_bytes: usize,
    dropped_bytes: u64,
    stderr_tail: Vec<u8>,
}

/// One of the two output streams a guest writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn source(self) -> LogSource {
        match self {
            Self::Stdout => LogSource::Stdout,
            Self::Stderr => LogSource::Stderr,
        }
    }
}

/// The capture of one task, shared by its store and the WASI streams handed to the guest.
#[derive(Debug, Clone)]
pub struct Capture {
    inner: Arc<Mutex<Inner>>,
    max_bytes: usize,
}

impl Capture {
    /// A capture that keeps at most `max_bytes` of messages.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::default(),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a line the guest logged.
    pub fn line(&self, source: LogSource, message: String) {
        self.lock().push(self.max_bytes, source, message);
    }

    /// Lines recorded since the last call, and the running total of discarded bytes.
    pub fn take(&self) -> (Vec<LogLine>, u64) {
        let mut inner = self.lock();
        (std::mem::take(&mut inner.fresh), inner.dropped_bytes)
    }

    /// Ends any partial stdout or stderr line, as when the task ends.
    pub fn flush_partial(&self) {
        let mut inner = self.lock();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut inner.pending[stream as usize]);
            if !rest.is_empty() {
                let message = String::from_utf8_lossy(&rest).into_owned();
                inner.push(self.max_bytes, stream.source(), message);
            }
        }
    }

    /// The message of the last panic a Rust guest printed to stderr, if any.
    pub fn panic_message(&self) -> Option<String> {
        let inner = self.lock();
        let tail = String::from_utf8_lossy(&inner.stderr_tail);
        let (_, after) = tail.rsplit_once("panicked at ")?;
        // `panicked at src/lib.rs:10:5:\nmessage\nnote: ...`
        let (place, rest) = after.split_once(":\n").unwrap_or((after, ""));
        let message = rest
            .lines()
            .take_while(|line| !line.starts_with("note: "))
            .collect::<Vec<_>>()
            .join("\n");
        Some(if message.is_empty() {
            format!("panicked at {}", place.trim())
        } else {
            format!("{message} (at {})", place.trim())
        })
    }

    /// The stream to hand the guest as its stdout.
    pub fn stdout(&self) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            stream: Stream::Stdout,
        }
    }

    /// The stream to hand the guest as its stderr.
    pub fn stderr(&self) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            stream: Stream::Stderr,
        }
    }

    fn write(&self, stream: Stream, mut bytes: &[u8]) {
        let mut inner = self.lock();
        if stream == Stream::Stderr {
            let tail = &mut inner.stderr_tail;
            tail.extend_from_slice(&bytes[bytes.len().saturating_sub(STDERR_TAIL_BYTES)..]);
            let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
            tail.drain(..excess);
        }
        let source = stream.source();
        let stream = stream as usize;
        while !bytes.is_empty() {
            let room = MAX_LINE_BYTES - inner.pending[stream].len();
            let (line_end, consumed) = match bytes.iter().position(|&b| b == b'\n') {
                Some(newline) if newline <= room => (Some(newline), newline + 1),
                _ if bytes.len() >= room => (Some(room), room),
                _ => (None, bytes.len()),
            };
            match line_end {
                Some(end) => {
                    let mut line = std::mem::take(&mut inner.pending[stream]);
                    line.extend_from_slice(&bytes[..end]);
                    let message = String::from_utf8_lossy(&line).into_owned();
                    inner.push(self.max_bytes, source, message);
                }
                None => inner.pending[stream].extend_from_slice(bytes),
            }
            bytes = &bytes[consumed..];
        }
    }
}

impl Inner {
    fn push(&mut self, max_bytes: usize, source: LogSource, message: String) {
        if self.kept_bytes + message.len() > max_bytes {
            self.dropped_bytes += message.len() as u64;
            return;
        }
        self.kept_bytes += message.len();
        self.fresh.push(LogLine {
            at: SystemTime::now(),
            source,
            message: storable(message),
        });
    }
}

/// A guest's stdout or stderr: always ready, never full, never failing.
#[derive(Debug)]
pub struct CaptureStream {
    capture: Capture,
    stream: Stream,
}

/// How much the guest may write per `check-write`; any positive figure works, as writes never
/// block and the cap is applied by the capture.
const WRITE_BUDGET: usize = 64 * 1024;

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.capture.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.capture.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CaptureStream {
            capture: self.capture.clone(),
            stream: self.stream,
        })
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(CaptureStream {
            capture: self.capture.clone(),
            stream: self.stream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_caps_bytes() {
        let capture = Capture::new(10);
        capture.write(Stream::Stdout, b"hello\nwor");
        capture.write(Stream::Stdout, b"ld\nthis line is dropped\n");
        capture.line(LogSource::Info, "tail".into());
        let (lines, dropped) = capture.take();
        let messages: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["hello", "world"]);
        assert_eq!(dropped, "this line is dropped".len() as u64 + 4);
    }

    #[test]
    fn a_line_without_newline_is_split_and_flushed() {
        let capture = Capture::new(usize::MAX);
        capture.write(Stream::Stderr, &vec![b'x'; MAX_LINE_BYTES + 5]);
        capture.flush_partial();
        let (lines, _) = capture.take();
        let lengths: Vec<_> = lines.iter().map(|l| l.message.len()).collect();
        assert_eq!(lengths, [MAX_LINE_BYTES, 5]);
    }

    #[test]
    fn finds_a_rust_panic_message_in_stderr() {
        let capture = Capture::new(0);
        capture.write(
            Stream::Stderr,
            b"\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom\nnote: run with RUST_BACKTRACE\n",
        );
        assert_eq!(
            capture.panic_message().as_deref(),
            Some("boom (at src/lib.rs:10:5)")
        );
        assert_eq!(Capture::new(0).panic_message(), None);
    }
}
