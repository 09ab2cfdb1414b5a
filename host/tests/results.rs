//! Issue #24: a client waits for a task's end, with `GET /api/tasks/{pid}/result?wait=N` or a
//! submission's `Prefer: wait=N`, holding no thread of the host while it waits.

mod common;

use std::time::{Duration, Instant};

use common::process::{Binary, threads};
use common::{module, spawn_app, temp_dir};
use serde_json::{Value, json};

/// GET `path`: status, headers and JSON body.
async fn get(remote: &common::Remote, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let answer = remote
        .client
        .get(remote.url(path))
        .send()
        .await
        .expect("request sent");
    let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
    (status, headers, answer.json().await.expect("a JSON body"))
}

/// POST `task` to /api/tasks with `Prefer: prefer`: status, headers and JSON body.
async fn submit_preferring(
    remote: &common::Remote,
    task: Value,
    prefer: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let answer = remote
        .client
        .post(remote.url("/api/tasks"))
        .header("prefer", prefer)
        .json(&task)
        .send()
        .await
        .expect("request sent");
    let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
    (status, headers, answer.json().await.expect("a JSON body"))
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_long_polls_a_task_s_end() {
    let app = spawn_app("default", &[]).await;
    let pid = app.spawn(json!({"name": "polled", "duration": 1})).await;

    // Not ended: 202 at once, with how it stands and when to ask again.
    let (status, headers, body) = get(&app, &format!("/api/tasks/{pid}/result")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert_eq!(body["pid"], pid.as_str(), "{body}");
    assert!(
        matches!(body["status"].as_str(), Some("spawned" | "running")),
        "{body}"
    );
    assert_eq!(body["exit_code"], Value::Null, "{body}");

    // Waited for: 200 as soon as it ends, well before the wait is up.
    let asked = Instant::now();
    let (status, _, body) = get(&app, &format!("/api/tasks/{pid}/result?wait=30")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(body["status"], "exited", "{body}");
    assert_eq!(body["outcome"], "exit", "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
    assert_eq!(body["error"], Value::Null, "{body}");

    // Ended: 200 at once, with or without a wait; a failed task says why.
    let (status, _, again) = get(&app, &format!("/api/tasks/{pid}/result?wait=0")).await;
    assert_eq!((status, &again), (200, &body));
    let sleeper = app.spawn(json!({"name": "killed", "duration": 60})).await;
    app.wait_running(&sleeper).await;
    let (status, _) = app.kill(&sleeper).await;
    assert_eq!(status, 200);
    let (status, _, body) = get(&app, &format!("/api/tasks/{sleeper}/result?wait=5")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "killed", "{body}");
    assert_eq!(body["outcome"], "killed", "{body}");

    // A wait that runs out: 202 after it.
    let long = app.spawn(json!({"name": "long", "duration": 60})).await;
    let asked = Instant::now();
    let (status, headers, body) = get(&app, &format!("/api/tasks/{long}/result?wait=1")).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert_eq!(body["status"], "running", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_wait_or_an_unknown_task_is_a_clear_error() {
    let app = spawn_app("default", &["--max-wait-secs", "5"]).await;
    let pid = app.spawn(json!({"name": "t", "duration": 0})).await;
    for wait in ["6", "-1", "1.5", "abc", "99999999999"] {
        let (status, _, body) = get(&app, &format!("/api/tasks/{pid}/result?wait={wait}")).await;
        assert_eq!(status, 400, "wait={wait}: {body}");
        assert_eq!(
            body["error"], "wait must be 0 to 5 seconds",
            "wait={wait}: {body}"
        );
    }
    let (status, _, body) = get(&app, "/api/tasks/00000000-99/result?wait=1").await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = get(&app, "/api/tasks/not-a-pid/result").await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = get(&app, "/api/tasks/name:nobody/result").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_that_prefers_to_wait_is_answered_with_the_end() {
    let app = spawn_app("default", &["--max-wait-secs", "3"]).await;

    // Ends within the wait: 200 with the end, where it is, and the wait given.
    let asked = Instant::now();
    let (status, headers, body) =
        submit_preferring(&app, json!({"name": "quick", "duration": 1}), "wait=10").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(body["status"], "exited", "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
    let pid = body["pid"].as_str().expect("a pid");
    assert_eq!(
        header(&headers, "location"),
        Some(format!("/api/tasks/{pid}").as_str())
    );
    // Held to --max-wait-secs.
    assert_eq!(header(&headers, "preference-applied"), Some("wait=3"));

    // Not within the wait: the usual 202, after the wait, saying it was given.
    let asked = Instant::now();
    let (status, headers, body) = submit_preferring(
        &app,
        json!({"name": "slow", "duration": 5}),
        "respond-async, wait=1",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(body["status"], "spawned", "{body}");
    assert_eq!(header(&headers, "preference-applied"), Some("wait=1"));
    assert!(header(&headers, "location").is_some());

    // No preference, or one the host cannot read: the seed's contract, at once.
    for prefer in [None, Some("wait=soon"), Some("respond-async")] {
        let mut request = app
            .client
            .post(app.url("/api/tasks"))
            .json(&json!({"name": "seed", "duration": 1}));
        if let Some(prefer) = prefer {
            request = request.header("prefer", prefer);
        }
        let asked = Instant::now();
        let answer = request.send().await.expect("request sent");
        assert_eq!(answer.status(), 202, "{prefer:?}");
        assert!(asked.elapsed() < Duration::from_millis(900), "{prefer:?}");
        assert!(
            answer.headers().get("preference-applied").is_none(),
            "{prefer:?}"
        );
    }
}

/// Many clients waiting on one task add no thread to the host; the task's end answers them
/// all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_clients_hold_no_thread_and_the_end_answers_them_all() {
    const WAITS: usize = 200;
    let dir = temp_dir("results-waits");
    let args = [
        "--store".to_owned(),
        format!("sqlite:{}", dir.join("tasks.db").display()),
        "--module".to_owned(),
        module("default").display().to_string(),
    ];
    let host = Binary::spawn(&args, &[], None);
    host.ready().await;
    let pid = host.spawn(json!({"name": "awaited", "duration": 60})).await;
    host.wait_running(&pid).await;
    let before = threads(host.pid());
    let waits: Vec<_> = (0..WAITS)
        .map(|_| {
            let (client, url) = (
                host.client.clone(),
                host.url(&format!("/api/tasks/{pid}/result?wait=30")),
            );
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = threads(host.pid());
    assert!(
        during <= before + 2,
        "{WAITS} waits took threads: {before} before, {during} during"
    );
    let killed = Instant::now();
    let (status, _) = host.kill(&pid).await;
    assert_eq!(status, 200);
    for wait in waits {
        let answer = wait.await.expect("the wait ran").expect("an answer");
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.expect("a JSON body");
        assert_eq!(body["status"], "killed", "{body}");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
}
