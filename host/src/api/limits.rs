//! What every request is held to before and after its handler: a head no larger than
//! `--max-header-bytes` (a JSON `431`), a body that may not pause longer than
//! `--read-timeout-secs`, and a body the handler left unread thrown away, up to
//! `--max-discard-bytes`, so that the answer reaches the client.
//!
//! Why the discard: a handler that refuses a request (`413` for a body over the limit, `415`,
//! `401`) answers without reading the body. If the connection were then closed with the body
//! still arriving, the kernel would reset it, and a client that writes its whole body before
//! reading (Python's urllib, many SDKs) would see the reset instead of the answer. So the body
//! the handler dropped is read to its end and thrown away, within a bound; past the bound the
//! connection is closed (a client sending that much gets a reset, as from any server).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http_body::{Body as _, Frame, SizeHint};

use super::RequestLimits;
use super::error::ApiError;

/// Bytes a header line costs beyond its name and value: `: ` and CRLF.
const HEADER_LINE_OVERHEAD: usize = 4;

/// Refuses a head over the limit, times the body's pauses, and throws away whatever of the
/// body the handler left.
pub(super) async fn hold_to_limits(
    bounds: &RequestLimits,
    request: Request,
    next: Next,
) -> Response {
    let head = head_bytes(&request);
    if head > bounds.max_header_bytes {
        let mut response = ApiError::HeaderTooLarge {
            limit: bounds.max_header_bytes,
        }
        .into_response();
        close_after(&mut response);
        return response;
    }
    // A body that is known to be empty (a GET, a POST with `content-length: 0`) has nothing to
    // throw away: skip the wrapper.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    // A client that asked to be told before it sends the body is told; it has not sent it,
    // so there is nothing to throw away, and discarding would ask for it.
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let left = Arc::new(Mutex::new(None));
    let request = request.map(|body| {
        Body::new(Watched {
            body: Some(body),
            left: Arc::clone(&left),
            stall: None,
            read_timeout: bounds.read_timeout,
        })
    });
    let mut response = next.run(request).await;
    let unread = left.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(body) = unread
        && (expects_continue || !discard(body, bounds).await)
    {
        close_after(&mut response);
    }
    response
}

/// The head's size as sent, near enough: the request line and every header line.
fn head_bytes(request: &Request) -> usize {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |path| path.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    request.headers().iter().fold(line, |total, (name, value)| {
        total + name.as_str().len() + value.len() + HEADER_LINE_OVERHEAD
    })
}

/// Asks hyper to close the connection once this answer is written.
fn close_after(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Reads `body` to its end and throws it away, within `--max-discard-bytes` and a time bound:
/// twice as long as reading that much at 1 MiB/s would take, and at least the read timeout.
/// Whether it reached the end (so the connection can be kept).
async fn discard(body: Body, bounds: &RequestLimits) -> bool {
    use futures_util::StreamExt as _;
    let budget = bounds.max_discard_bytes;
    let time = bounds
        .read_timeout
        .max(Duration::from_secs((budget as u64 >> 19).max(1)));
    let drained = tokio::time::timeout(time, async {
        let mut read = 0_usize;
        let mut body = body.into_data_stream();
        while let Some(data) = body.next().await {
            let Ok(data) = data else { return false };
            read = read.saturating_add(data.len());
            if read > budget {
                return false;
            }
        }
        true
    })
    .await;
    drained.unwrap_or(false)
}

/// A request body that fails if it pauses longer than `read_timeout`, and that, when its
/// reader drops it before its end, leaves the rest in `left` for [`hold_to_limits`] to throw
/// away. The pause is timed only while the body is waited for: a body that came with its head
/// (most of them) never arms a timer.
struct Watched {
    body: Option<Body>,
    left: Arc<Mutex<Option<Body>>>,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    read_timeout: Duration,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => this.stall = None,
            Poll::Ready(None | Some(Err(_))) => {
                // Ended, or broken: nothing is left to throw away.
                this.body = None;
                this.stall = None;
            }
            Poll::Pending => {
                let timeout = this.read_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_ready() {
                    this.body = None;
                    this.stall = None;
                    return Poll::Ready(Some(Err(axum::Error::new(format!(
                        "the request body paused for more than {} s",
                        timeout.as_secs()
                    )))));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(body) = self.body.take()
            && !body.is_end_stream()
        {
            *self.left.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
        }
    }
}
