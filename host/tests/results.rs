//! Issue #24: a task returns a result with its end, kept in every store and shown in its
//! record, its `exit` event and `/result`; a client waits for a task's end, with
//! `GET /api/tasks/{pid}/result?wait=N` or a submission's `Prefer: wait=N`, holding no thread
//! of the host while it waits.

mod common;

use std::time::{Duration, Instant};

use common::process::{Binary, threads};
use common::workers::{actor, registry};
use common::{module, read_events, registry_config, spawn_app, start_app, temp_dir};
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

/// A task that returns a result: it shows in `/result`, in the record, in the `exit` event
/// and in a monitor's `down` notice, as the JSON the task gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_returns_a_result_kept_with_its_end() {
    let dir = temp_dir("results");
    let app = start_app(registry_config(&registry(&dir, ""), &[])).await;
    let result = json!({"sum": 42, "parts": [40, 2], "note": "é \"quoted\""});
    let pid = app
        .spawn(actor(
            "adder",
            json!([{"op": "sleep", "ms": 200}, {"op": "exit", "code": 0, "result": result}]),
        ))
        .await;
    let watcher = app
        .spawn(actor(
            "watcher",
            json!([{"op": "monitor", "pid": pid}, {"op": "receive", "timeout_ms": 30_000}]),
        ))
        .await;

    let (status, _, body) = get(&app, &format!("/api/tasks/{pid}/result?wait=30")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "exited", "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
    assert_eq!(body["result"], result, "{body}");
    let (_, record) = app.get(&format!("/api/tasks/{pid}")).await;
    assert_eq!(record["result"], result, "{record}");

    // The terminal event of an ended task's stream carries it too.
    let events = app
        .client
        .get(app.url(&format!("/api/tasks/{pid}/events")))
        .send()
        .await
        .expect("request sent");
    let events = read_events(events, |name, _| name == "exit").await;
    let (_, exit) = events.last().expect("an exit event");
    assert_eq!(exit["result"], result, "{exit}");

    // The monitor's `down` carries the result.
    app.wait_end(&watcher).await;
    let lines = common::workers::logged(&app, &watcher).await;
    let down = lines
        .iter()
        .find(|line| line["op"] == "receive")
        .expect("the receive's line");
    assert_eq!(down["got"], "down", "{down}");
    assert_eq!(down["end"]["result"], result, "{down}");

    // A task that returns none shows `null`, as one that has not ended does.
    let plain = app.run(actor("plain", json!([]))).await;
    assert_eq!(plain["result"], Value::Null, "{plain}");
    assert!(
        plain
            .as_object()
            .is_some_and(|record| record.contains_key("result")),
        "{plain}"
    );
}

/// A result past `--max-result-bytes`, or one that is not JSON, fails the task: never a cut
/// or a broken result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_or_not_json_fails_the_task() {
    let dir = temp_dir("results-bounded");
    let app = start_app(registry_config(
        &registry(&dir, ""),
        &["--max-result-bytes", "64KiB"],
    ))
    .await;
    let fits = app
        .run(actor(
            "fits",
            json!([{"op": "exit", "code": 0, "result_bytes": 65_536}]),
        ))
        .await;
    assert_eq!(fits["status"], "exited", "{fits}");
    assert_eq!(
        fits["result"].as_str().map(str::len),
        Some(65_534),
        "{fits}"
    );

    let large = app
        .run(actor(
            "large",
            json!([{"op": "exit", "code": 0, "result_bytes": 65_537}]),
        ))
        .await;
    assert_eq!(large["status"], "failed", "{large}");
    assert_eq!(large["outcome"], "result_too_large", "{large}");
    assert_eq!(large["result"], Value::Null, "{large}");
    let error = large["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("65537 bytes") && error.contains("65536"),
        "{large}"
    );

    // Not JSON, or JSON no reader could take as a value (a number out of range).
    for raw in ["{\"sum\": ", "1e400"] {
        let broken = app
            .run(actor(
                "broken",
                json!([{"op": "exit", "code": 0, "raw_result": raw}]),
            ))
            .await;
        assert_eq!(broken["status"], "failed", "{raw}: {broken}");
        assert_eq!(broken["outcome"], "bad_result", "{raw}: {broken}");
        assert_eq!(broken["result"], Value::Null, "{raw}: {broken}");
    }
}

/// A result is written with the task's end: a host killed with SIGKILL right after the end
/// reads it back from its store's journal, and one stopped cleanly from the task's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_survives_a_crash_and_a_restart_of_the_host() {
    let dir = temp_dir("results-durable");
    let registry = registry(&dir, "");
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    let args: Vec<String> = [
        "--config",
        &registry.display().to_string(),
        "--store",
        &store,
        "--shutdown-grace-secs",
        "1",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let mut host = Binary::spawn(&args, &[], None);
    host.ready().await;
    let result = json!({"kept": [1, 2, 3], "as": "given"});
    let pid = host
        .spawn(actor(
            "durable",
            json!([{"op": "exit", "code": 7, "result": result}]),
        ))
        .await;
    let ended = host.wait_end(&pid).await;
    assert_eq!(ended["result"], result, "{ended}");
    assert_eq!(ended["exit_code"], 7, "{ended}");
    host.crash();

    let mut host = Binary::spawn(&args, &[], None);
    host.ready().await;
    let (status, record) = host.get(&format!("/api/tasks/{pid}")).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["result"], result, "after a crash: {record}");
    host.stop();

    let host = Binary::spawn(&args, &[], None);
    host.ready().await;
    let (_, _, body) = get(&host, &format!("/api/tasks/{pid}/result")).await;
    assert_eq!(body["result"], result, "after a clean restart: {body}");
}

/// Issue #24, item 5: a task spawns a child and awaits its end and result (`ctx.exec`, Wippy's
/// `process.exec`); what else reaches its mailbox meanwhile waits, in order, for the receives
/// that follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_awaits_its_child_s_end_and_result() {
    let dir = temp_dir("results-exec");
    let app = start_app(registry_config(&registry(&dir, ""), &[])).await;
    let result = json!({"computed": [1, 2, 3]});
    let child = json!({"script": [
        {"op": "receive", "timeout_ms": 30_000},
        {"op": "exit", "code": 0, "result": result},
    ]});
    let parent = app
        .spawn(actor(
            "parent",
            json!([
                {"op": "exec", "worker": "actor", "name": "child", "payload": child},
                {"op": "receive", "timeout_ms": 5_000},
                {"op": "receive", "timeout_ms": 100},
            ]),
        ))
        .await;
    // The child, once it runs: the parent awaits it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let child = loop {
        let (_, page) = app.get(&format!("/api/tasks?parent={parent}")).await;
        if let Some(pid) = page["tasks"][0]["pid"].as_str() {
            break pid.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no child: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    app.wait_running(&child).await;
    let post = |to: String, body: Value| {
        let request = app
            .client
            .post(app.url(&format!("/api/tasks/{to}/messages")));
        async move {
            let answer = request.json(&body).send().await.expect("request sent");
            assert_eq!(answer.status(), 202);
        }
    };
    post(parent.clone(), json!("meanwhile")).await;
    post(child.clone(), json!("go")).await;

    let record = app.wait_end(&parent).await;
    assert_eq!(record["status"], "exited", "{record}");
    let lines = common::workers::logged(&app, &parent).await;
    let exec = lines
        .iter()
        .find(|line| line["op"] == "exec")
        .expect("exec");
    assert_eq!(exec["ok"], true, "{exec}");
    assert_eq!(exec["end"]["pid"], child.as_str(), "{exec}");
    assert_eq!(exec["end"]["status"], "exited", "{exec}");
    assert_eq!(exec["end"]["result"], result, "{exec}");
    let received: Vec<&Value> = lines
        .iter()
        .filter(|line| line["op"] == "receive")
        .collect();
    assert_eq!(received.len(), 2, "{lines:?}");
    assert_eq!(received[0]["got"], "message", "kept for it: {lines:?}");
    assert_eq!(received[0]["body"], "meanwhile", "{lines:?}");
    assert_eq!(received[1]["got"], "timeout", "nothing else: {lines:?}");
}
