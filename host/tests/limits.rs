//! Workers' concurrency and rate limits on one host (issue #25): they hold across a SIGKILL,
//! and they are set over the API (`PUT` and `DELETE /api/workers/{name}/limits`, admin), over
//! the registry file's, counting the tasks already running, releasing what they no longer
//! hold, and outliving a restart. (How held tasks take turns and how a rate spaces starts:
//! `scheduling.rs`; limits across a cluster: `cluster_flow.rs`.)

mod common;

use std::time::Duration;

use common::process::Binary;
use common::{PATIENCE, Remote, intervals, most_at_once, temp_dir};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The real binary on the SQLite file in `dir`, with the default worker and `more` in its
/// registry file, and the admin token: its arguments, to start it again.
fn args(dir: &std::path::Path, more: &str) -> Vec<String> {
    let registry = common::workers::registry(dir, more);
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    [
        "--store",
        &store,
        "--config",
        &registry.display().to_string(),
        "--admin-token",
        ADMIN_TOKEN,
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// Waits until worker `name`'s limits count `running` tasks and hold `waiting` (a task answered
/// `202` reaches its limits on its scheduler thread a moment later).
async fn wait_limited(remote: &Remote, name: &str, running: u64, waiting: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, worker) = remote.get(&format!("/api/workers/{name}")).await;
        if worker["limited"]["running"] == running && worker["limited"]["waiting"] == waiting {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {running} running and {waiting} waiting: {worker}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(argv: &[String]) -> Binary {
    let host = Binary::spawn(argv, &[], None);
    host.ready().await;
    host
}

/// `method` `path` with the admin token and `body` (as JSON, when given): the status and the
/// JSON answer.
async fn admin(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = remote
        .client
        .request(method, remote.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("request sent");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_a_sigkill_and_what_they_held_runs_after_it() {
    let dir = temp_dir("limits-crash");
    let argv = args(
        &dir,
        r#"
[workers.limited]
module = "{module:default}"
max_running = 2
per_key_running = 1
"#,
    );
    let mut host = start(&argv).await;
    let mut pids = Vec::new();
    for (i, key) in ["a", "a", "a", "b", "b", "c"].into_iter().enumerate() {
        let body = json!({"name": format!("{key}{i}"), "duration": 2, "worker": "limited",
            "concurrency_key": key});
        pids.push(host.spawn(body).await);
    }
    wait_limited(&host, "limited", 2, 4).await;
    // SIGKILL with two running and four held: after the restart the limits count again from
    // the tasks recovered, the two lost run again, and no key ever runs two.
    host.crash();
    let mut host = start(&argv).await;
    wait_limited(&host, "limited", 2, 4).await;
    let ended = host.wait_exits_0(&pids).await;
    let lost = ended
        .iter()
        .filter(|record| record["attempts"][0]["outcome"] == "host_lost")
        .count();
    assert_eq!(lost, 2, "{ended:?}");
    let runs = intervals(&ended);
    assert!(most_at_once(&runs, |_| true) <= 2, "{runs:?}");
    for key in ["a", "b", "c"] {
        assert_eq!(most_at_once(&runs, |k| k == key), 1, "key {key}: {runs:?}");
    }
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_set_over_the_api_count_what_runs_release_what_they_held_and_outlive_a_restart() {
    let dir = temp_dir("limits-api");
    let argv = args(&dir, "");
    let mut host = start(&argv).await;
    let (_, worker) = host.get("/api/workers/default").await;
    assert_eq!(worker["limits_from"], "file", "{worker}");
    assert_eq!(worker["max_running"], Value::Null, "{worker}");
    assert!(worker.get("limited").is_none(), "{worker}");
    // Three run before the worker has limits...
    let mut running = Vec::new();
    for i in 0..3 {
        let pid = host
            .spawn(json!({"name": format!("early{i}"), "duration": 2}))
            .await;
        host.wait_running(&pid).await;
        running.push(pid);
    }
    // ...and count once it has: nothing more starts until fewer than two run.
    let (status, set) = admin(
        &host,
        reqwest::Method::PUT,
        "/api/workers/default/limits",
        Some(json!({"max_running": 2, "per_key_running": 1})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["max_running"], 2, "{set}");
    assert_eq!(set["per_key_running"], 1, "{set}");
    assert_eq!(set["rate"], Value::Null, "{set}");
    assert_eq!(set["limits_from"], "api", "{set}");
    assert_eq!(set["limited"]["running"], 3, "{set}");
    let mut later = Vec::new();
    for (i, key) in ["k", "k", "j"].into_iter().enumerate() {
        let body = json!({"name": format!("later{i}"), "duration": 1, "concurrency_key": key});
        later.push(host.spawn(body).await);
    }
    wait_limited(&host, "default", 3, 3).await;
    let ended = host.wait_exits_0(running.iter().chain(&later)).await;
    let runs = intervals(&ended[3..]);
    assert!(most_at_once(&runs, |_| true) <= 2, "{runs:?}");
    assert_eq!(most_at_once(&runs, |k| k == "k"), 1, "{runs:?}");
    // The early tasks counted: none of the later started before two of them had ended.
    let mut early_ends: Vec<_> = intervals(&ended[..3])
        .into_iter()
        .map(|(_, end, _)| end)
        .collect();
    early_ends.sort();
    for (start, _, _) in &runs {
        assert!(*start >= early_ends[1], "{runs:?} {early_ends:?}");
    }

    // Held tasks start once the limits go back to the file's (none).
    let (_, set) = admin(
        &host,
        reqwest::Method::PUT,
        "/api/workers/default/limits",
        Some(json!({"max_running": 1})),
    )
    .await;
    assert_eq!(set["per_key_running"], Value::Null, "{set}");
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            host.spawn(json!({"name": format!("held{i}"), "duration": 3}))
                .await,
        );
    }
    wait_limited(&host, "default", 1, 2).await;
    let (status, unset) = admin(
        &host,
        reqwest::Method::DELETE,
        "/api/workers/default/limits",
        None,
    )
    .await;
    assert_eq!(status, 200, "{unset}");
    assert_eq!(unset["limits_from"], "file", "{unset}");
    assert_eq!(unset["max_running"], Value::Null, "{unset}");
    for pid in &held {
        host.wait_running(pid).await;
    }

    // A new rate checks again at once the tasks waiting for a turn under the old one.
    let (status, _) = admin(
        &host,
        reqwest::Method::PUT,
        "/api/workers/default/limits",
        Some(json!({"rate": "1/1h"})),
    )
    .await;
    assert_eq!(status, 200);
    let mut rated = Vec::new();
    for i in 0..3 {
        rated.push(
            host.spawn(json!({"name": format!("rated{i}"), "duration": 0}))
                .await,
        );
    }
    // One starts; the other two wait an hour and two.
    host.wait_end(&rated[0]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for pid in &rated[1..] {
        let (_, record) = host.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(record["status"], "spawned", "{record}");
    }
    let (status, _) = admin(
        &host,
        reqwest::Method::PUT,
        "/api/workers/default/limits",
        Some(json!({"rate": "10/1s"})),
    )
    .await;
    assert_eq!(status, 200);
    host.wait_exits_0(&rated[1..]).await;

    // Limits set over the API outlive a restart.
    let (status, _) = admin(
        &host,
        reqwest::Method::PUT,
        "/api/workers/default/limits",
        Some(json!({"max_running": 3, "rate": "10/1s"})),
    )
    .await;
    assert_eq!(status, 200);
    host.crash();
    let host = start(&argv).await;
    let (_, worker) = host.get("/api/workers/default").await;
    assert_eq!(worker["max_running"], 3, "{worker}");
    assert_eq!(worker["rate"], "10/1s", "{worker}");
    assert_eq!(worker["limits_from"], "api", "{worker}");

    // Bad input, and admin only.
    for (body, field) in [
        (json!({"max_running": 0}), "max_running"),
        (json!({"per_key_running": -1}), "per_key_running"),
        (json!({"max_running": "2"}), "max_running"),
        (json!({"max_running": 1_000_001}), "max_running"),
        (json!({"rate": "fast"}), "rate"),
        (json!({"rate": 5}), "rate"),
        (json!({"rate": "1/2years"}), "at most a year"),
        (json!({"max_runing": 2}), "max_runing"),
        (json!([1]), "object"),
    ] {
        let (status, answer) = admin(
            &host,
            reqwest::Method::PUT,
            "/api/workers/default/limits",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(field)),
            "{body}: {answer}"
        );
    }
    let (status, _) = admin(
        &host,
        reqwest::Method::PUT,
        "/api/workers/nope/limits",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 404);
    let answer = host
        .client
        .put(host.url("/api/workers/default/limits"))
        .json(&json!({"max_running": 1}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 401);
    let answer = host
        .client
        .put(host.url("/api/workers/default/limits"))
        .bearer_auth(ADMIN_TOKEN)
        .body("max_running=1")
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 415);
    let (_, worker) = host.get("/api/workers/default").await;
    assert_eq!(worker["max_running"], 3, "{worker}");
}
