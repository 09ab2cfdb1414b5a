//! Live events over Server-Sent Events, end to end: their content and order, ended tasks, the
//! all-tasks stream, a client that never reads, and the bound on subscribers.

mod common;

use std::time::Duration;

use common::{PATIENCE, TestApp, read_events, spawn_app};
use serde_json::json;
use tokio::io::AsyncWriteExt;

async fn open(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .send()
        .await
        .expect("request sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stream_has_its_state_progress_logs_and_exit_in_order() {
    let app = spawn_app("default", &[]).await;
    let pid = app.spawn(json!({"name": "report", "duration": 2})).await;
    let response = open(&app, &format!("/api/tasks/{pid}/events")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_events(response, |_, _| false).await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"state"), "{names:?}");
    assert_eq!(
        names.last(),
        Some(&"exit"),
        "the stream ends with the exit: {names:?}"
    );
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, data)| {
            (
                data["step"].as_u64().expect("step"),
                data["steps"].as_u64().expect("steps"),
            )
        })
        .collect();
    assert_eq!(progress, [(1, 2), (2, 2)], "{events:?}");
    let log = events
        .iter()
        .position(|(name, data)| name == "log" && data["message"] == "Worker done, exiting");
    let exit = events.len() - 1;
    assert!(
        log.is_some_and(|log| log < exit),
        "the log line comes before the exit: {events:?}"
    );
    let (_, exit) = &events[exit];
    assert_eq!(exit["status"], "exited");
    assert_eq!(exit["exit_code"], 0);
    assert_eq!(exit["pid"], pid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_task_stream_gives_its_end_and_closes() {
    let app = spawn_app("default", &[]).await;
    let record = app
        .run(json!({"name": "quick", "duration": 0, "payload": {"exit_code": 4}}))
        .await;
    let pid = record["pid"].as_str().expect("pid");
    let events = read_events(
        open(&app, &format!("/api/tasks/{pid}/events")).await,
        |_, _| false,
    )
    .await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["state", "exit"]);
    assert_eq!(events[1].1["exit_code"], 4);
    assert_eq!(
        open(&app, "/api/tasks/00000000-1/events").await.status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_tasks_stream_sees_a_task_from_spawn_to_exit() {
    let app = spawn_app("default", &[]).await;
    let response = open(&app, "/api/events").await;
    assert_eq!(response.status(), 200);
    let pid = app.spawn(json!({"name": "watched", "duration": 1})).await;
    let wanted = pid.clone();
    let events = read_events(response, move |name, data| {
        name == "exit" && data["pid"] == wanted.as_str()
    })
    .await;
    let mine: Vec<&str> = events
        .iter()
        .filter(|(_, data)| data["pid"] == pid.as_str())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        mine,
        [
            "spawned", "started", "log", "progress", "log", "log", "exit"
        ],
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_slows_nothing() {
    let app = spawn_app("default", &[]).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stalled
        .write_all(format!("GET /api/events HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .expect("request written");
    // Thousands of events for a client that never reads a byte.
    let pids = futures::future::join_all((0..1500).map(|i| {
        let app = &app;
        async move {
            app.spawn(json!({"name": format!("t{i}"), "duration": 0}))
                .await
        }
    }))
    .await;
    for pid in &pids {
        assert_eq!(app.wait_end(pid).await["exit_code"], 0);
    }
    assert_eq!(app.host.totals().exited_ok, 1500);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded() {
    let app = spawn_app("default", &["--max-subscribers", "1"]).await;
    let first = open(&app, "/api/events").await;
    assert_eq!(first.status(), 200);
    let refused = open(&app, "/api/events").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    drop(first);
    // The place is freed once the server notices the client left.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let again = open(&app, "/api/events").await;
        if again.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue #21, item 8: one client holds its share of the streams, not all of them; the
/// dashboard keeps places of its own; a stream with nothing to say ends, and its place goes
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_holds_every_stream_and_idle_streams_end() {
    let app = spawn_app(
        "default",
        &[
            "--max-subscribers",
            "6",
            "--max-subscribers-per-client",
            "4",
            "--event-stream-idle",
            "1s",
        ],
    )
    .await;
    // A client that opens stream after stream, from 127.0.0.1.
    let mut greedy = Vec::new();
    for _ in 0..4 {
        let stream = open(&app, "/api/events").await;
        assert_eq!(stream.status(), 200);
        greedy.push(stream);
    }
    let refused = open(&app, "/api/events").await;
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.expect("JSON");
    assert!(
        body["error"].as_str().expect("error").contains("its share"),
        "{body}"
    );
    // Another client (another loopback address) has room.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("a client");
    let theirs = other
        .get(app.url("/api/events"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(theirs.status(), 200, "another client's stream");
    // The dashboard's page, from the greedy client's own address, still gets its stream.
    let dashboard = app
        .client
        .get(app.url("/api/events"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("request sent");
    assert_eq!(dashboard.status(), 200, "the dashboard's own place");

    // Nothing happens on this host: after a second without an event, every stream ends.
    // (`read_events` gives up only after PATIENCE: ending well before it is the host's doing.)
    for stream in greedy.drain(..).chain([theirs, dashboard]) {
        let ended = tokio::time::timeout(PATIENCE / 2, read_events(stream, |_, _| false)).await;
        assert!(ended.is_ok(), "an idle stream ended");
    }
    let again = open(&app, "/api/events").await;
    assert_eq!(again.status(), 200, "their places went back");
}
