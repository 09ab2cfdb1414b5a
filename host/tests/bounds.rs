//! Bounds end to end (issue #21, items 1 to 3), on the real binary: what one request and the
//! guests it starts may make the host spawn, copy and hold. Every wait is a poll bounded by
//! [`PATIENCE`]; no test asserts a timing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::process::Binary;
use common::workers::{actor, logged, registry};
use common::{PATIENCE, Remote, temp_dir};
use serde_json::{Value, json};

/// A host on the in-memory store with the registry `registry` and more `args`.
async fn start(registry: PathBuf, args: &[&str]) -> Binary {
    let mut all = vec![
        "--store".to_owned(),
        "memory".to_owned(),
        "--config".to_owned(),
        registry.display().to_string(),
    ];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    let host = Binary::spawn(&all, &[], None);
    host.ready().await;
    host
}

/// The registry `make run` starts with, as shipped.
fn shipped_registry() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../http-spawn.toml")
}

/// The JSON lines `pid` logged, once `done` holds for them.
async fn wait_logged(node: &Remote, pid: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let lines = logged(node, pid).await;
        if done(&lines) {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pid} never logged what was awaited: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The line of op `op` in `lines`: there must be one.
fn line<'a>(lines: &'a [Value], op: &str) -> &'a Value {
    lines
        .iter()
        .find(|line| line["op"] == op)
        .unwrap_or_else(|| panic!("no {op} line: {lines:?}"))
}

/// The pid in a record or a line.
fn pid_of(value: &Value) -> String {
    value["pid"].as_str().expect("a pid").to_owned()
}

/// The lines of supervisor events `event`.
fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["event"] == event).collect()
}

/// Tasks the host accepted of worker `worker`, by its metrics.
async fn spawned(host: &Binary, worker: &str) -> f64 {
    host.metric(&format!(
        "http_spawn_tasks_spawned_total{{worker=\"{worker}\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

/// Item 1: the storm the review made of one request to the shipped `supervisor` (restarts
/// without bound, in a period of 0 s) is refused before any child starts; the strongest
/// payload the supervisor accepts makes a bounded number of tasks and gives up; and the other
/// clients' tasks keep their history meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_storm_from_one_request_is_refused_or_bounded() {
    let host = start(shipped_registry(), &[]).await;
    let mut others = Vec::new();
    for n in 0..20 {
        others.push(
            host.spawn(json!({"name": format!("other-{n}"), "duration": 0}))
                .await,
        );
    }
    for pid in &others {
        assert_eq!(host.wait_end(pid).await["status"], "exited");
    }
    let failing = |n: usize| {
        (0..n)
            .map(|i| json!({"name": format!("c{i}"), "duration": 0, "payload": {"exit_code": 1}}))
            .collect::<Vec<_>>()
    };

    let storm = host
        .run(json!({
            "name": "storm", "worker": "supervisor", "duration": 5,
            "payload": {"intensity": 1_000_000_000u64, "period_secs": 0, "children": failing(4)},
        }))
        .await;
    assert_eq!(storm["status"], "failed", "{storm}");
    let error = storm["error"].as_str().expect("an error");
    assert!(error.contains("intensity must be at most 100"), "{error}");
    assert_eq!(spawned(&host, "default").await, 20.0, "no child started");
    for (payload, why) in [
        (
            json!({"period_secs": 0}),
            "period_secs must be from 1 to 3600",
        ),
        (
            json!({"backoff_ms": 60_000}),
            "backoff_ms must be at most 10000",
        ),
        (json!({"children": failing(101)}), "at most 100 children"),
    ] {
        let record = host
            .run(json!({"name": "bad", "worker": "supervisor", "payload": payload}))
            .await;
        assert_eq!(record["status"], "failed", "{record}");
        assert!(
            record["error"].as_str().expect("error").contains(why),
            "{record}"
        );
    }

    // The most it accepts: 100 restarts an hour, none waiting. Four children failing at once
    // make 104 tasks, then the supervisor gives up.
    let strongest = host
        .run(json!({
            "name": "strongest", "worker": "supervisor", "duration": 60,
            "payload": {"intensity": 100, "period_secs": 3600, "backoff_ms": 0,
                        "children": failing(4)},
        }))
        .await;
    assert_eq!(strongest["status"], "failed", "{strongest}");
    let error = strongest["error"].as_str().expect("an error");
    assert!(
        error.contains("more than 100 restarts within 3600 s"),
        "{error}"
    );
    assert_eq!(spawned(&host, "default").await, 20.0 + 104.0);

    // Restarts wait their backoff: 50 ms, then 100, 200 and 400, for four restarts.
    let patient = host
        .spawn(json!({
            "name": "patient", "worker": "supervisor", "duration": 60,
            "payload": {"intensity": 3, "period_secs": 3600, "backoff_ms": 50,
                        "children": failing(1)},
        }))
        .await;
    let end = host.wait_end(&patient).await;
    assert_eq!(end["status"], "failed", "{end}");
    let lines = logged(&host, &patient).await;
    let waits: Vec<&Value> = events(&lines, "child_failed")
        .iter()
        .map(|line| &line["restart_in_ms"])
        .collect();
    assert_eq!(
        waits,
        [&json!(50), &json!(100), &json!(200), &Value::Null],
        "{lines:?}"
    );

    for pid in &others {
        let (status, record) = host.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(
            status, 200,
            "another client's task kept its history: {record}"
        );
    }
}

/// Item 1, the host's side: a task tree (a task submitted over HTTP and what it spawned, and
/// they spawned) holds at most `--max-descendants` live tasks and spawns at most
/// `--max-spawns-per-sec` a second (in bursts of ten seconds' worth); past either a guest is
/// told `full`, and the metrics count why. Another tree keeps its own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_tree_spawns_within_its_budget_and_is_then_told_full() {
    let dir = temp_dir("bounds-spawns");
    let host = start(
        registry(&dir, ""),
        &["--max-descendants", "6", "--max-spawns-per-sec", "1"],
    )
    .await;
    let sleeper = json!({"script": [{"op": "sleep", "ms": 60_000}]});
    // A child that spawns a grandchild, which counts in the root's tree, then says so.
    let parent = json!({"script": [
        {"op": "spawn", "worker": "actor", "name": "grandchild", "payload": sleeper},
        {"op": "send", "to": "$parent", "body": "spawned"},
        {"op": "sleep", "ms": 60_000},
    ]});
    let root = host
        .spawn(actor(
            "root",
            json!([
                {"op": "spawn", "worker": "actor", "name": "parent", "payload": parent},
                {"op": "receive", "timeout_ms": 60_000},
                {"op": "spawn_many", "count": 100, "worker": "actor", "name": "child",
                 "payload": sleeper},
                {"op": "sleep", "ms": 60_000},
            ]),
        ))
        .await;
    let lines = wait_logged(&host, &root, |lines| {
        lines.iter().any(|line| line["op"] == "spawn_many")
    })
    .await;
    assert_eq!(line(&lines, "receive")["body"], "spawned", "{lines:?}");
    let many = line(&lines, "spawn_many");
    assert_eq!(many["ok"], false, "{many}");
    assert_eq!(many["error"], "full", "{many}");
    // Six in all: the parent, its grandchild and four children.
    assert_eq!(many["spawned"], 4, "{many}");
    let refused = host
        .metric("http_spawn_spawns_refused_total{reason=\"descendants\"}")
        .await;
    assert_eq!(refused, Some(1.0));

    // Another request's tree has its own budget.
    let other = host
        .run(actor(
            "other",
            json!([{"op": "spawn_many", "count": 3, "worker": "actor", "name": "c"}]),
        ))
        .await;
    assert_eq!(other["status"], "exited", "{other}");
    let lines = logged(&host, &pid_of(&other)).await;
    assert_eq!(line(&lines, "spawn_many")["spawned"], 3, "{lines:?}");
    drop(host);

    // Room for many descendants, one spawn a second: a burst of ten, then `full` at once.
    let host = start(
        registry(&dir, ""),
        &["--max-descendants", "1000", "--max-spawns-per-sec", "1"],
    )
    .await;
    let burst = host
        .run(actor(
            "burst",
            json!([{"op": "spawn_many", "count": 100, "worker": "actor", "name": "quick"}]),
        ))
        .await;
    let lines = logged(&host, &pid_of(&burst)).await;
    let many = line(&lines, "spawn_many");
    assert_eq!(
        (&many["error"], &many["spawned"]),
        (&json!("full"), &json!(10))
    );
    let rate = host
        .metric("http_spawn_spawns_refused_total{reason=\"rate\"}")
        .await;
    assert_eq!(rate, Some(1.0));
}

/// Item 2: a task's error is cut where its end is built (a few KiB, marked), and a watcher that
/// monitors it a thousand times holds one monitor and gets one `down`: the host's memory grows
/// by a fraction of what a thousand copies of the error would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_error_is_cut_and_reaches_a_watcher_once() {
    let dir = temp_dir("bounds-errors");
    // Room for the watcher's script and its log of a thousand lines.
    let host = start(
        registry(&dir, ""),
        &["--max-body-bytes", "262144", "--max-log-bytes", "1048576"],
    )
    .await;
    let target = host
        .spawn(actor(
            "target",
            json!([
                {"op": "receive", "timeout_ms": 60_000},
                {"op": "fail", "message": "é", "repeat": 122_000},
            ]),
        ))
        .await;
    host.wait_running(&target).await;
    let before = host.resident_bytes();
    let mut script: Vec<Value> = (0..1000)
        .map(|_| json!({"op": "monitor", "pid": target}))
        .collect();
    script.push(json!({"op": "send", "to": target, "body": "go"}));
    // The down, however long the target takes to fail; then anything more that came.
    script.push(json!({"op": "receive", "timeout_ms": 60_000}));
    script.push(json!({"op": "receive_all", "timeout_ms": 1000}));
    let watcher = host.run(actor("watcher", json!(script))).await;
    assert_eq!(watcher["status"], "exited", "{watcher}");

    let cut = "(cut, 244000 bytes in all)";
    let record = host.wait_end(&target).await;
    assert_eq!(record["outcome"], "guest_error", "{record}");
    let error = record["error"].as_str().expect("an error");
    assert!(error.ends_with(cut), "{}", &error[error.len() - 80..]);
    assert!(error.len() <= 4096 + 64, "{} bytes", error.len());
    assert!(error.starts_with("éé"), "cut at a character boundary");

    let lines = logged(&host, &pid_of(&watcher)).await;
    let received: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            (line["op"] == "receive" || line["op"] == "receive_all")
                && line.get("got").is_some_and(|got| got != "timeout")
        })
        .collect();
    assert_eq!(
        received.len(),
        1,
        "one down for a thousand monitor calls: {:?}",
        &lines[lines.len().saturating_sub(3)..]
    );
    assert_eq!(received[0]["got"], "down");
    assert_eq!(received[0]["end"]["error"], error);
    let grown = host.resident_bytes().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "the host grew by {} MiB (a thousand copies would be 233 MiB)",
        grown >> 20
    );
}

/// Item 3: a mailbox holds `--max-mailbox-bytes`, every mailbox together
/// `--max-mailboxes-bytes` (HTTP senders get `429`, guests `mailbox_full`); a step sends at most
/// `--max-sends-per-step` messages; a guest gives a child a payload no bigger than a request's
/// body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_hold_their_bytes_and_a_step_its_sends() {
    let dir = temp_dir("bounds-mailboxes");
    let host = start(
        registry(&dir, ""),
        &[
            "--max-mailbox-bytes",
            "64KiB",
            "--max-mailboxes-bytes",
            "90KiB",
            "--max-sends-per-step",
            "50",
        ],
    )
    .await;
    let sleeping = json!([{"op": "sleep", "ms": 60_000}]);
    let (a, b) = (
        host.spawn(actor("a", sleeping.clone())).await,
        host.spawn(actor("b", sleeping.clone())).await,
    );
    host.wait_running(&a).await;
    host.wait_running(&b).await;
    let post = |to: String, bytes: usize| {
        let request = host
            .client
            .post(host.url(&format!("/api/tasks/{to}/messages")))
            .json(&json!({"pad": "x".repeat(bytes)}));
        async move { request.send().await.expect("sent").status().as_u16() }
    };
    // 10 KB messages: six fit a's 64 KiB, the seventh does not.
    for n in 0..6 {
        assert_eq!(post(a.clone(), 10_000).await, 202, "message {n}");
    }
    assert_eq!(
        post(a.clone(), 10_000).await,
        429,
        "a's mailbox is full of bytes"
    );
    // b has room of its own, but all mailboxes hold 90 KiB: three more fit, not four.
    for n in 0..3 {
        assert_eq!(post(b.clone(), 10_000).await, 202, "message {n}");
    }
    assert_eq!(
        post(b.clone(), 10_000).await,
        429,
        "every mailbox is full of bytes"
    );
    let held = host
        .metric("http_spawn_mailboxes_bytes")
        .await
        .expect("gauge");
    assert!(held > 90_000.0 && held <= 92_160.0, "{held}");

    // A guest is refused alike.
    let sender = host
        .run(actor(
            "sender",
            json!([{"op": "send_many", "to": b, "count": 10, "pad": 10_000}]),
        ))
        .await;
    let lines = logged(&host, &pid_of(&sender)).await;
    let many = line(&lines, "send_many");
    assert_eq!(
        (&many["error"], &many["sent"]),
        (&json!("mailbox_full"), &json!(0))
    );
    // An end gives back what its mailbox held.
    host.kill(&a).await;
    host.wait_end(&a).await;
    assert_eq!(post(b.clone(), 10_000).await, 202);

    // A step sends its share; the next step sends again.
    let c = host.spawn(actor("c", sleeping.clone())).await;
    host.wait_running(&c).await;
    let sender = host
        .run(actor(
            "sender",
            json!([
                {"op": "send_many", "to": c, "count": 80},
                {"op": "sleep", "ms": 1},
                {"op": "send_many", "to": c, "count": 80},
            ]),
        ))
        .await;
    let lines = logged(&host, &pid_of(&sender)).await;
    let sent: Vec<&Value> = lines
        .iter()
        .filter(|line| line["op"] == "send_many")
        .map(|line| &line["sent"])
        .collect();
    assert_eq!(sent, [&json!(50), &json!(50)], "{lines:?}");

    // A child's payload is bounded as a request's body (64 KiB by default).
    let parent = host
        .run(actor(
            "parent",
            json!([
                {"op": "spawn", "worker": "actor", "name": "big", "payload_bytes": 70_000},
                {"op": "spawn", "worker": "actor", "name": "fits", "payload_bytes": 60_000},
            ]),
        ))
        .await;
    let lines = logged(&host, &pid_of(&parent)).await;
    let spawns: Vec<&Value> = lines.iter().filter(|line| line["op"] == "spawn").collect();
    assert_eq!(spawns[0]["error"], "refused", "{:?}", spawns[0]);
    let detail = spawns[0]["detail"].as_str().expect("detail");
    assert!(detail.contains("at most 65536 bytes"), "{detail}");
    assert_eq!(spawns[1]["ok"], true, "{:?}", spawns[1]);
}
