//! The HTTP server against clients a public port meets: slow or silent ones, oversized heads,
//! more connections than it allows, bodies over the limit written whole before reading, and
//! bodies that stall. Raw sockets on 127.0.0.1, so that nothing in a client library hides what
//! the server does.

mod common;

use std::time::Duration;

use common::{TestApp, spawn_app};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds every wait on the server; a guard against hangs, not a timing assertion.
const BOUND: Duration = Duration::from_secs(20);

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// An answer as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the answer's body is JSON")
    }
}

/// Reads one answer: its head, then `content-length` bytes of body (or to the end).
async fn read_answer(stream: &mut TcpStream) -> std::io::Result<Answer> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(BOUND, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("no answer within the bound"))??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let mut answer = Answer {
        status,
        head,
        body: buffer[head_end..].to_vec(),
    };
    let length: usize = answer
        .header("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    while answer.body.len() < length {
        let n = tokio::time::timeout(BOUND, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("body not complete within the bound"))??;
        if n == 0 {
            break;
        }
        answer.body.extend_from_slice(&chunk[..n]);
    }
    Ok(answer)
}

/// Whether the server closes `stream` (end of stream or reset) within the bound.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = [0_u8; 1024];
    let read = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await.is_ok()
}

async fn get(addr: &str, path: &str, extra_headers: &str) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{extra_headers}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    read_answer(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_disconnected_after_the_read_timeout() {
    let app = spawn_app("default", &["--read-timeout-secs", "1"]).await;
    let addr = addr(&app);
    // Slowloris: a head sent a few bytes at a time, never finished.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream
            .write_all(b"GET /api/health HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            .await
            .expect("write");
        slow.push(stream);
    }
    let dripping = {
        let mut streams = std::mem::take(&mut slow);
        tokio::spawn(async move {
            // Keeps writing a header byte now and then; stops once the server hangs up.
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                for stream in &mut streams {
                    let _ = stream.write_all(b"x").await;
                }
            }
            streams
        })
    };
    // A client that connects and says nothing; and one that stays after its answer.
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    idle.write_all(b"GET /api/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let answer = read_answer(&mut idle).await.expect("an answer");
    assert_eq!(answer.status, 200);
    assert!(
        closed_by_server(&mut silent).await,
        "a silent client is cut off"
    );
    assert!(
        closed_by_server(&mut idle).await,
        "an idle keep-alive is cut off"
    );
    let mut streams = dripping.await.expect("the dripping task");
    for stream in &mut streams {
        assert!(closed_by_server(stream).await, "a slow head is cut off");
    }
    // The host serves as before.
    let answer = get(&addr, "/api/health", "").await.expect("health");
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431() {
    let app = spawn_app("default", &["--max-header-bytes", "8192"]).await;
    let addr = addr(&app);
    // Within the limit: served.
    let fine = format!("x-padding: {}\r\n", "a".repeat(6000));
    let answer = get(&addr, "/api/health", &fine).await.expect("answer");
    assert_eq!(answer.status, 200);
    // Over it: a JSON 431 naming the limit.
    let big = format!("x-padding: {}\r\n", "a".repeat(12_000));
    let answer = get(&addr, "/api/health", &big).await.expect("answer");
    assert_eq!(answer.status, 431);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|error| error.contains("8192")),
        "{answer:?}"
    );
    // Far over it (the 200 KB head of the finding): refused by the parser, still a 431.
    let huge = format!("x-padding: {}\r\n", "a".repeat(200_000));
    let answer = get(&addr, "/api/health", &huge).await.expect("answer");
    assert_eq!(answer.status, 431);
    // Many small headers adding up over the limit count too.
    let many: String = (0..90)
        .map(|i| format!("x-h{i}: {}\r\n", "b".repeat(100)))
        .collect();
    let answer = get(&addr, "/api/health", &many).await.expect("answer");
    assert_eq!(answer.status, 431);
    let answer = get(&addr, "/api/health", "").await.expect("health");
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503_with_retry_after() {
    let app = spawn_app(
        "default",
        &["--max-connections", "4", "--read-timeout-secs", "30"],
    )
    .await;
    let addr = addr(&app);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream
            .write_all(b"GET /api/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write");
        let answer = read_answer(&mut stream).await.expect("served");
        assert_eq!(answer.status, 200);
        held.push(stream);
    }
    // Every place is held (keep-alive): the next connection is told to come back.
    let answer = get(&addr, "/api/health", "").await.expect("an answer");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(answer.json()["error"].as_str().is_some());
    // One place freed: served again (the server notices the close, then frees the place).
    drop(held.pop());
    let served = tokio::time::timeout(BOUND, async {
        loop {
            match get(&addr, "/api/health", "").await {
                Ok(answer) if answer.status == 200 => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    served.await.expect("a freed place serves a new connection");
    // The connection just served may not have given its place back yet: ask until served.
    let metrics = tokio::time::timeout(BOUND, async {
        loop {
            match get(&addr, "/metrics", "").await {
                Ok(answer) if answer.status == 200 => return answer,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("metrics served");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.lines()
            .any(|line| line.starts_with("http_connections_refused_total") && !line.ends_with(" 0")),
        "the refusal is counted"
    );
}

/// Sends a POST whose head says `length` bytes and writes all of them before reading, as
/// Python's urllib does; returns the answer, or the error the client would see.
async fn post_whole_body_then_read(addr: &str, length: usize) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let body = vec![b' '; length];
    tokio::time::timeout(BOUND, stream.write_all(&body))
        .await
        .map_err(|_| std::io::Error::other("the body could not be written within the bound"))??;
    read_answer(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_written_whole_still_gets_its_413() {
    let app = spawn_app("default", &["--max-body-bytes", "1024"]).await;
    let addr = addr(&app);
    // Up to sizes that cannot sit in loopback's socket buffers when the server answers (on
    // this machine a body of about 4 MiB was reset before the discard).
    for length in [4096, 4 * 1024 * 1024, 12 * 1024 * 1024] {
        let answer = post_whole_body_then_read(&addr, length)
            .await
            .unwrap_or_else(|error| panic!("{length} bytes: the client saw {error}"));
        assert_eq!(answer.status, 413, "{length} bytes");
        assert!(
            answer.json()["error"]
                .as_str()
                .is_some_and(|error| error.contains("1024")),
            "{answer:?}"
        );
    }
    // Past --max-discard-bytes the host hangs up rather than read on; it still serves others.
    let _ = post_whole_body_then_read(&addr, 64 * 1024 * 1024).await;
    let answer = get(&addr, "/api/health", "").await.expect("health");
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_with_a_body_left_unread_keeps_the_connection_usable() {
    let app = spawn_app("default", &[]).await;
    let addr = addr(&app);
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // 415: the handler refuses before reading the body; the body is thrown away and the
    // next request on the same connection is served.
    let body = "x".repeat(30_000);
    let request = format!(
        "POST /api/tasks HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let answer = read_answer(&mut stream).await.expect("answer");
    assert_eq!(answer.status, 415);
    stream
        .write_all(b"GET /api/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let answer = read_answer(&mut stream).await.expect("answer");
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_off() {
    let app = spawn_app("default", &["--read-timeout-secs", "1"]).await;
    let addr = addr(&app);
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(
            b"POST /api/tasks HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"name\":",
        )
        .await
        .expect("write");
    // The rest never comes: the host answers 400 or hangs up, and does not wait forever.
    match read_answer(&mut stream).await {
        Ok(answer) => assert_eq!(answer.status, 400, "{answer:?}"),
        Err(error) => assert_ne!(
            error.kind(),
            std::io::ErrorKind::Other,
            "the host neither answered nor hung up: {error}"
        ),
    }
}
