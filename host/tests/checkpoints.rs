//! Checkpoints end to end (issue #26): a task checkpointed between steps resumes where it was
//! after its host is SIGKILLed and started again, with its pid, its attempt and the state in
//! its memory; a task without a checkpoint, or whose worker cannot be checkpointed, runs again
//! from its start as before; policies are checked and shown in the task's record; a shutdown
//! hands a task on; in a cluster, another host resumes a task its host lost or handed on.

mod common;

use std::time::Duration;

use common::cluster::start_host;
use common::process::Binary;
use common::workers::messages;
use common::{PATIENCE, Remote, spawn_app, temp_dir};
use serde_json::{Value, json};

/// The real binary on the SQLite file in `dir`, with the default worker, the actor and `more`
/// in its registry file: its arguments, to start it again.
fn args(dir: &std::path::Path, more: &str) -> Vec<String> {
    let registry = common::workers::registry(dir, more);
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    [
        "--store",
        &store,
        "--config",
        &registry.display().to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

async fn start(argv: &[String]) -> Binary {
    let host = Binary::spawn(argv, &[], None);
    host.ready().await;
    host
}

/// Waits until task `pid`'s record satisfies `ready`; the record.
async fn wait_for(remote: &Remote, pid: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, record) = remote.get(&format!("/api/tasks/{pid}")).await;
        if ready(&record) {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {record}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many of `lines` are exactly `line`.
fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// Whether a record shows an attempt its host lost.
fn lost_an_attempt(record: &Value) -> bool {
    record["attempts"]
        .as_array()
        .is_some_and(|attempts| attempts.iter().any(|a| a["outcome"] == "host_lost"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_task_resumes_at_its_step_after_a_sigkill() {
    let dir = temp_dir("checkpoint-crash");
    let argv = args(
        &dir,
        r#"
[workers.legacy]
module = "{module:legacy}"
max_memory = "16MiB"
checkpoint = "every step"
"#,
    );
    let mut host = start(&argv).await;
    // The default worker keeps its loop's counter in its future, in its linear memory.
    let counter = host
        .spawn(json!({"name": "counter", "duration": 6, "checkpoint": "every step"}))
        .await;
    let plain = host.spawn(json!({"name": "plain", "duration": 6})).await;
    // A worker of contract 0.1.0 exports no checkpoint interface.
    let old = host
        .spawn(json!({"name": "old", "worker": "legacy", "duration": 4}))
        .await;
    let before = wait_for(&host, &counter, "a checkpoint at step 3", |record| {
        record["checkpoint"]["step"].as_u64() >= Some(3)
    })
    .await;
    assert_eq!(before["checkpoint"]["policy"], "every step", "{before}");
    assert_eq!(before["checkpoint"]["waiting"], "sleep", "{before}");
    assert!(before["checkpoint"]["bytes"].as_u64() > Some(0), "{before}");
    let refused = wait_for(&host, &old, "its checkpoint refused", |record| {
        record["checkpoint"]["refused"].is_string()
    })
    .await;
    assert_eq!(refused["checkpoint"]["policy"], "every step", "{refused}");
    assert!(
        refused["checkpoint"]["refused"]
            .as_str()
            .is_some_and(|reason| reason.contains("does not export")),
        "{refused}"
    );
    let (_, unchecked) = host.get(&format!("/api/tasks/{plain}")).await;
    assert!(unchecked.get("checkpoint").is_none(), "{unchecked}");
    host.crash();

    let mut host = start(&argv).await;
    let record = host.wait_end(&counter).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["step"], 6, "{record}");
    assert_eq!(record["attempt"], 1, "the same attempt went on: {record}");
    assert!(!lost_an_attempt(&record), "{record}");
    let checkpoint = &record["checkpoint"];
    assert_eq!(checkpoint["resumes"], 1, "{record}");
    let from = checkpoint["resumed_from_step"]
        .as_u64()
        .expect("resumed from a step");
    assert!((3..6).contains(&from), "{record}");
    assert!(checkpoint["lost_ms"].as_u64().is_some(), "{record}");
    assert!(checkpoint["resumed_at"].is_string(), "{record}");
    let lines = messages(&host, &counter).await;
    assert_eq!(
        count(&lines, "Worker started steps=6"),
        1,
        "it did not start again: {lines:?}"
    );
    assert_eq!(count(&lines, "Worker done, exiting"), 1, "{lines:?}");
    for step in 1..=6 {
        let line = format!("Worker progress step={step} total=6");
        let seen = count(&lines, &line);
        // Up to its checkpoint, each step ran once; after it, a step the crash cut short
        // runs again (at least once).
        if step <= from {
            assert_eq!(seen, 1, "{line}: {lines:?}");
        } else {
            assert!(seen >= 1, "{line}: {lines:?}");
        }
    }

    // Without a checkpoint, tasks run again from their start, as a new attempt.
    for pid in [&plain, &old] {
        let record = host.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert!(lost_an_attempt(&record), "{record}");
        assert_eq!(record["attempt"], 2, "{record}");
    }
    // (The lines its first attempt logged in its last seconds went with the host.)
    let lines = messages(&host, &plain).await;
    assert!(count(&lines, "Worker started steps=6") >= 1, "{lines:?}");
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_policies_are_checked_and_shown() {
    let app = spawn_app("default", &[]).await;
    for bad in [
        json!("sometimes"),
        json!("every 0s"),
        json!(5),
        json!("every 8 days"),
    ] {
        let (status, body) = app
            .post("/api/tasks", json!({"name": "t", "checkpoint": bad}))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("checkpoint")),
            "{body}"
        );
    }
    // `every <duration>` counts from the start: none in a task shorter than that.
    let pid = app
        .spawn(json!({"name": "t", "duration": 1, "checkpoint": "every 30s"}))
        .await;
    let record = app.wait_end(&pid).await;
    assert_eq!(record["status"], "exited", "{record}");
    let checkpoint = &record["checkpoint"];
    assert_eq!(checkpoint["policy"], "every 30s", "{record}");
    assert!(checkpoint["step"].is_null(), "{record}");
    // Every 500 ms: after each step from the first past half a second on (steps 1 and 2; the
    // third ends the task).
    let pid = app
        .spawn(json!({"name": "t", "duration": 3, "checkpoint": "every 500ms"}))
        .await;
    let record = app.wait_end(&pid).await;
    let checkpoint = &record["checkpoint"];
    assert_eq!(checkpoint["policy"], "every 500ms", "{record}");
    assert_eq!(checkpoint["step"], 2, "{record}");
    assert_eq!(checkpoint["resumes"], 0, "{record}");
    assert!(checkpoint["bytes"].as_u64() > Some(0), "{record}");

    let pid = app.spawn(json!({"name": "t", "duration": 0})).await;
    let record = app.wait_end(&pid).await;
    assert!(record.get("checkpoint").is_none(), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_hands_checkpointed_tasks_on_to_the_next_start() {
    let dir = temp_dir("checkpoint-shutdown");
    let mut argv = args(&dir, "");
    argv.extend(["--shutdown-grace-secs", "0"].map(String::from));
    let mut host = start(&argv).await;
    // It takes no checkpoint before the shutdown (its first would come after an hour): the
    // one it resumes from is taken as the host shuts down.
    let handed = host
        .spawn(json!({"name": "handed", "duration": 6, "checkpoint": "every 1h"}))
        .await;
    let plain = host.spawn(json!({"name": "plain", "duration": 6})).await;
    let before = wait_for(&host, &handed, "step 2", |record| {
        record["step"].as_u64() >= Some(2)
    })
    .await;
    assert!(before["checkpoint"]["step"].is_null(), "{before}");
    host.terminate();
    assert!(host.wait_exit().success(), "a clean exit");

    let mut host = start(&argv).await;
    let record = host.wait_end(&handed).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["attempt"], 1, "{record}");
    assert!(!lost_an_attempt(&record), "{record}");
    let checkpoint = &record["checkpoint"];
    assert_eq!(checkpoint["resumes"], 1, "{record}");
    assert_eq!(checkpoint["handed_over"], true, "{record}");
    assert!(
        checkpoint["resumed_from_step"].as_u64() >= Some(2),
        "{record}"
    );
    // Handed on between two steps, with its lines: no step ran twice, none was lost.
    let lines = messages(&host, &handed).await;
    assert_eq!(count(&lines, "Worker started steps=6"), 1, "{lines:?}");
    for step in 1..=6 {
        let line = format!("Worker progress step={step} total=6");
        assert_eq!(count(&lines, &line), 1, "{line}: {lines:?}");
    }
    // A task that takes no checkpoints is killed at the shutdown, as before.
    let (_, record) = host.get(&format!("/api/tasks/{plain}")).await;
    assert_eq!(record["status"], "killed", "{record}");
    host.stop();

    // Switched off, a task that takes checkpoints is killed too.
    let dir = temp_dir("checkpoint-shutdown-off");
    let mut argv = args(&dir, "");
    argv.extend(
        [
            "--shutdown-grace-secs",
            "0",
            "--checkpoint-on-shutdown",
            "false",
        ]
        .map(String::from),
    );
    let mut host = start(&argv).await;
    let pid = host
        .spawn(json!({"name": "killed", "duration": 6, "checkpoint": "every step"}))
        .await;
    wait_for(&host, &pid, "step 1", |record| {
        record["step"].as_u64() >= Some(1)
    })
    .await;
    host.terminate();
    assert!(host.wait_exit().success(), "a clean exit");
    let mut host = start(&argv).await;
    let (_, record) = host.get(&format!("/api/tasks/{pid}")).await;
    assert_eq!(record["status"], "killed", "{record}");
    host.stop();
}

/// Every cluster host's API token.
const TOKEN: &str = "checkpoint-test-token-0123456789ab";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_of_a_cluster_resumes_a_checkpointed_task_its_host_lost_or_handed_on() {
    let url = common::postgres::fresh_database("checkpoints");
    let a = start_host(&url, "a", TOKEN, "", &[]).await;
    let mut b = start_host(&url, "b", TOKEN, "", &[]).await;
    let (_, cluster) = a.get("/api/cluster").await;
    let a_id = cluster["node"].as_u64().expect("a node id");
    // Accepted by b, which has room: it runs there.
    let crashed = b
        .spawn(json!({"name": "crashed", "duration": 6, "checkpoint": "every step"}))
        .await;
    let before = wait_for(&a, &crashed, "a checkpoint at step 2", |record| {
        record["checkpoint"]["step"].as_u64() >= Some(2)
    })
    .await;
    assert_ne!(before["node"], a_id, "{before}");
    b.crash();
    // a takes it back once b's lease has run out, and resumes it from b's checkpoint.
    let record = a.wait_end(&crashed).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["attempt"], 1, "{record}");
    assert!(!lost_an_attempt(&record), "{record}");
    assert_eq!(record["checkpoint"]["resumes"], 1, "{record}");
    let from = record["checkpoint"]["resumed_from_step"]
        .as_u64()
        .expect("resumed from a step");
    assert!(from >= 2, "{record}");
    let lines = messages(&a, &crashed).await;
    assert_eq!(count(&lines, "Worker started steps=6"), 1, "{lines:?}");
    for step in 1..=from {
        let line = format!("Worker progress step={step} total=6");
        assert_eq!(count(&lines, &line), 1, "{line}: {lines:?}");
    }

    // A host that shuts down hands its task on: another resumes it once it has left.
    let mut c = start_host(&url, "c", TOKEN, "", &[]).await;
    let handed = c
        .spawn(json!({"name": "handed", "duration": 6, "checkpoint": "every 1h"}))
        .await;
    // With what its mailbox holds: sent while it sleeps, taken on the host that resumes it.
    let keeper = c
        .spawn(json!({"name": "keeper", "worker": "actor", "duration": 0,
            "checkpoint": "every 1h", "payload": {"script": [
                {"op": "sleep", "ms": 4000},
                {"op": "receive", "timeout_ms": 20000},
                {"op": "receive", "timeout_ms": 500}]}}))
        .await;
    let (status, answer) = c
        .post(
            &format!("/api/tasks/{keeper}/messages"),
            json!({"kept": true}),
        )
        .await;
    assert!(status == 202 || status == 200, "{status} {answer}");
    wait_for(&a, &handed, "step 2", |record| {
        record["step"].as_u64() >= Some(2)
    })
    .await;
    c.terminate();
    assert!(c.wait_exit().success(), "a clean exit");
    let record = a.wait_end(&handed).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["attempt"], 1, "{record}");
    assert_eq!(record["checkpoint"]["handed_over"], true, "{record}");
    let lines = messages(&a, &handed).await;
    assert_eq!(count(&lines, "Worker started steps=6"), 1, "{lines:?}");
    for step in 1..=6 {
        let line = format!("Worker progress step={step} total=6");
        assert_eq!(count(&lines, &line), 1, "{line}: {lines:?}");
    }
    let record = a.wait_end(&keeper).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["checkpoint"]["handed_over"], true, "{record}");
    let lines = common::workers::logged(&a, &keeper).await;
    assert_eq!(
        received(&lines),
        [
            "message {\"kept\":true} from null".to_owned(),
            "Some(\"timeout\")".to_owned()
        ],
        "{lines:?}"
    );
}

/// `POST path` with the cluster tests' admin token: the status and the JSON answer.
async fn admin_post(remote: &Remote, path: &str) -> (u16, Value) {
    remote.admin_post(path, common::cluster::ADMIN_TOKEN).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_host_hands_its_checkpointed_tasks_to_the_others_under_load() {
    let url = common::postgres::fresh_database("drain");
    let a = start_host(&url, "a", TOKEN, "", &[]).await;
    let b = start_host(&url, "b", TOKEN, "", &[]).await;
    let c = start_host(&url, "c", TOKEN, "", &[]).await;
    let node_of = |cluster: &Value| cluster["node"].as_u64().expect("a node id");
    let b_id = node_of(&b.get("/api/cluster").await.1);
    // Accepted by b, which has room: they run there.
    let mut checkpointed = Vec::new();
    for i in 0..6 {
        let body = json!({"name": format!("moved{i}"), "duration": 5, "checkpoint": "every step"});
        checkpointed.push(b.spawn(body).await);
    }
    let mut plain = Vec::new();
    for i in 0..2 {
        plain.push(
            b.spawn(json!({"name": format!("stays{i}"), "duration": 4}))
                .await,
        );
    }
    for pid in &checkpointed {
        wait_for(&a, pid, "a checkpoint", |record| {
            record["checkpoint"]["step"].as_u64() >= Some(1)
        })
        .await;
    }
    // Refused where it cannot be done.
    assert_eq!(
        admin_post(&a, "/api/cluster/nodes/nobody/drain").await.0,
        404
    );
    // Asked through a, done by b.
    let (status, drained) = admin_post(&a, "/api/cluster/nodes/b/drain").await;
    assert_eq!(status, 200, "{drained}");
    assert_eq!(drained["handed_over"], 6, "{drained}");
    assert!(drained["running"].as_u64() >= Some(2), "{drained}");
    // A task accepted through the drained host runs on another.
    let later = b.spawn(json!({"name": "later", "duration": 1})).await;
    let record = a.wait_end(&later).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_ne!(record["node"], b_id, "{record}");

    for pid in &checkpointed {
        let record = c.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["attempt"], 1, "{record}");
        assert!(!lost_an_attempt(&record), "{record}");
        assert_eq!(record["checkpoint"]["resumes"], 1, "{record}");
        let lines = messages(&a, pid).await;
        assert_eq!(count(&lines, "Worker started steps=5"), 1, "{lines:?}");
        for step in 1..=5 {
            let line = format!("Worker progress step={step} total=5");
            assert_eq!(count(&lines, &line), 1, "{line}: {lines:?}");
        }
    }
    // Tasks that take no checkpoints end where they ran.
    for pid in &plain {
        let record = a.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["attempt"], 1, "{record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_alone_cannot_be_drained() {
    let app = spawn_app("default", &["--admin-token", common::cluster::ADMIN_TOKEN]).await;
    let (status, body) = admin_post(&app, "/api/cluster/nodes/x/drain").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not one of a cluster")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_a_cluster_under_load_runs_no_step_twice() {
    let url = common::postgres::fresh_database("rolling");
    let names = ["a", "b", "c"];
    let mut hosts: Vec<(&str, Binary)> = Vec::new();
    for name in names {
        hosts.push((name, start_host(&url, name, TOKEN, "", &[]).await));
    }
    let mut pids = Vec::new();
    for (round, name) in names.iter().enumerate() {
        // Work on every host, then this one stopped (SIGTERM) and started again.
        for (at, host) in &hosts {
            for i in 0..4 {
                let body = json!({"name": format!("{at}{round}-{i}"), "duration": 4,
                                  "checkpoint": "every step"});
                pids.push(host.spawn(body).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let index = hosts
            .iter()
            .position(|(at, _)| at == name)
            .expect("the host");
        let (_, mut stopping) = hosts.remove(index);
        stopping.terminate();
        assert!(stopping.wait_exit().success(), "{name}: a clean exit");
        hosts.push((name, start_host(&url, name, TOKEN, "", &[]).await));
    }
    let reader = &hosts[0].1;
    let mut resumed = 0;
    for pid in &pids {
        let record = reader.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["exit_code"], 0, "{record}");
        assert_eq!(record["attempt"], 1, "{record}");
        assert!(!lost_an_attempt(&record), "{record}");
        resumed += record["checkpoint"]["resumes"].as_u64().unwrap_or(0);
        let lines = messages(reader, pid).await;
        assert_eq!(count(&lines, "Worker started steps=4"), 1, "{lines:?}");
        for step in 1..=4 {
            let line = format!("Worker progress step={step} total=4");
            assert_eq!(count(&lines, &line), 1, "{pid} {line}: {lines:?}");
        }
    }
    assert!(resumed > 0, "the restarts came while tasks ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_holding_a_call_is_not_checkpointed_and_says_why() {
    // The actor test worker, as the default worker here.
    let app = spawn_app("actor", &[]).await;
    let callee = app
        .spawn(
            // It sleeps: the call waits in its mailbox, unanswered, until the caller gives up.
            json!({"name": "callee", "duration": 0, "payload": {"script": [
            {"op": "sleep", "ms": 5000}]}}),
        )
        .await;
    let caller = app
        .spawn(
            json!({"name": "caller", "duration": 0, "checkpoint": "every step",
            "payload": {"script": [{"op": "call", "to": callee, "body": 1, "timeout_ms": 1000}]}}),
        )
        .await;
    let record = app.wait_end(&caller).await;
    assert_eq!(record["status"], "exited", "{record}");
    let checkpoint = &record["checkpoint"];
    assert!(checkpoint["step"].is_null(), "{record}");
    assert!(
        checkpoint["refused"]
            .as_str()
            .is_some_and(|reason| reason.contains("call")),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_task_has_its_name_and_monitors_back() {
    let dir = temp_dir("checkpoint-name");
    let argv = args(&dir, "");
    let mut host = start(&argv).await;
    // Runs again from its start after the crash (no checkpoint), and ends a few seconds later.
    let target = host
        .spawn(json!({"name": "target", "worker": "actor", "duration": 0,
            "payload": {"script": [{"op": "sleep", "ms": 3000}]}}))
        .await;
    let pid = host
        .spawn(json!({"name": "named", "worker": "actor", "duration": 0,
            "checkpoint": "every step", "payload": {"script": [
                {"op": "register", "name": "keeper"}, {"op": "trap_exits", "on": true},
                {"op": "monitor", "pid": target},
                {"op": "sleep", "ms": 1500}, {"op": "sleep", "ms": 1500},
                {"op": "receive", "timeout_ms": 20000}]}}))
        .await;
    wait_for(&host, &pid, "a checkpoint", |record| {
        record["checkpoint"]["step"].is_u64()
    })
    .await;
    host.crash();

    let mut host = start(&argv).await;
    let record = wait_for(&host, &pid, "resumed", |record| {
        record["checkpoint"]["resumes"] == 1
    })
    .await;
    assert_eq!(record["attempt"], 1, "{record}");
    let (status, holder) = host.get("/api/names/keeper").await;
    assert_eq!(status, 200, "{holder}");
    assert_eq!(holder["pid"], pid.as_str(), "{holder}");
    let (_, live) = host.get(&format!("/api/tasks/{pid}")).await;
    if live["status"] == "running" {
        assert_eq!(live["actor"]["trap_exits"], true, "{live}");
    }
    let record = host.wait_end(&pid).await;
    assert_eq!(record["status"], "exited", "{record}");
    // Monitored again as it resumed: the target's end reached it.
    let lines = common::workers::logged(&host, &pid).await;
    let received = lines
        .iter()
        .find(|line| line["op"] == "receive")
        .expect("a receive line");
    assert_eq!(received["got"], "down", "{lines:?}");
    assert_eq!(received["end"]["pid"], target.as_str(), "{lines:?}");
    host.stop();
}

/// The entries a task's `receive` lines say it got, as `got` and what it got: a message's
/// body, a `down`'s pid.
fn received(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line["op"] == "receive")
        .map(|line| match line["got"].as_str() {
            Some("message") => format!("message {} from {}", line["body"], line["sender"]),
            Some("down") => format!("down {}", line["end"]["pid"].as_str().unwrap_or("?")),
            got => format!("{got:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_carries_the_mailbox_across_a_crash_and_a_hand_over() {
    let dir = temp_dir("checkpoint-mailbox");
    let mut argv = args(&dir, "");
    argv.extend(["--shutdown-grace-secs", "0"].map(String::from));
    for (policy, how) in [("every step", "crash"), ("every 1h", "hand over")] {
        let mut host = start(&argv).await;
        let target = host
            .spawn(json!({"name": "target", "worker": "actor", "duration": 0,
                "payload": {"script": [{"op": "sleep", "ms": 200}]}}))
            .await;
        // Its mailbox fills while it sleeps; it receives only after the host is gone.
        let pid = host
            .spawn(json!({"name": "keeper", "worker": "actor", "duration": 0,
                "checkpoint": policy, "payload": {"script": [
                    {"op": "monitor", "pid": target},
                    {"op": "sleep", "ms": 4000}, {"op": "sleep", "ms": 4000},
                    {"op": "receive", "timeout_ms": 20000},
                    {"op": "receive", "timeout_ms": 20000},
                    {"op": "receive", "timeout_ms": 20000},
                    {"op": "receive", "timeout_ms": 500}]}}))
            .await;
        host.wait_end(&target).await;
        for n in 1..=2 {
            let (status, answer) = host
                .post(&format!("/api/tasks/{pid}/messages"), json!({"n": n}))
                .await;
            assert!(status == 202 || status == 200, "{how}: {status} {answer}");
        }
        if how == "crash" {
            // The checkpoint after its second step holds the `down` and both messages.
            wait_for(&host, &pid, "a checkpoint of its mailbox", |record| {
                record["checkpoint"]["mailbox"] == 3
            })
            .await;
            host.crash();
        } else {
            host.terminate();
            assert!(host.wait_exit().success(), "a clean exit");
        }

        let mut host = start(&argv).await;
        let record = host.wait_end(&pid).await;
        assert_eq!(record["status"], "exited", "{how}: {record}");
        assert_eq!(record["checkpoint"]["resumes"], 1, "{how}: {record}");
        assert_eq!(record["attempt"], 1, "{how}: {record}");
        // Each entry once, in the order it came, and nothing more (the monitor, whose
        // target had ended, is not set again).
        let lines = common::workers::logged(&host, &pid).await;
        assert_eq!(
            received(&lines),
            [
                format!("down {target}"),
                "message {\"n\":1} from null".to_owned(),
                "message {\"n\":2} from null".to_owned(),
                "Some(\"timeout\")".to_owned(),
            ],
            "{how}: {lines:?}"
        );
        host.stop();
    }
}

/// The notices a task's log says it got: `down` or `linked_exit`, the pid and how it ended.
fn told(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line["got"] == "down" || line["got"] == "linked_exit")
        .map(|line| {
            let end = &line["end"];
            format!(
                "{} {} {} {}",
                line["got"].as_str().unwrap_or("?"),
                end["pid"].as_str().unwrap_or("?"),
                end["outcome"].as_str().unwrap_or("?"),
                end["exit_code"]
            )
        })
        .collect()
}

/// A task that monitors `target` and waits for its `down`, then for nothing (so a second
/// `down` would show).
fn watcher(target: &str, checkpoint: &str) -> Value {
    json!({"name": "watcher", "worker": "actor", "duration": 0, "checkpoint": checkpoint,
        "payload": {"script": [{"op": "monitor", "pid": target},
            {"op": "receive", "timeout_ms": 30000}, {"op": "receive", "timeout_ms": 1000}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_handed_on_at_a_shutdown_is_still_monitored_when_both_resume() {
    let dir = temp_dir("checkpoint-watched");
    let mut argv = args(&dir, "");
    argv.extend(["--shutdown-grace-secs", "0"].map(String::from));
    let mut host = start(&argv).await;
    let target = host
        .spawn(json!({"name": "target", "worker": "actor", "duration": 0,
            "checkpoint": "every 1h", "payload": {"script": [{"op": "sleep", "ms": 6000}]}}))
        .await;
    let watching = host.spawn(watcher(&target, "every 1h")).await;
    wait_for(&host, &watching, "monitoring", |record| {
        record["actor"]["monitors"] == 1
    })
    .await;
    host.terminate();
    assert!(host.wait_exit().success(), "a clean exit");

    let mut host = start(&argv).await;
    let record = host.wait_end(&watching).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["checkpoint"]["resumes"], 1, "{record}");
    let target_record = host.wait_end(&target).await;
    assert_eq!(target_record["checkpoint"]["resumes"], 1, "{target_record}");
    // Told once, of the real end, not of the shutdown.
    let lines = common::workers::logged(&host, &watching).await;
    assert_eq!(told(&lines), [format!("down {target} exit 0")], "{lines:?}");
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_task_stays_monitored_and_linked_from_the_host_it_left() {
    let url = common::postgres::fresh_database("drain_watch");
    let a = start_host(&url, "a", TOKEN, "", &[]).await;
    let b = start_host(&url, "b", TOKEN, "", &[]).await;
    // On b: a task that moves, and one that stays and monitors it.
    let target = b
        .spawn(json!({"name": "target", "worker": "actor", "duration": 0,
            "checkpoint": "every step", "payload": {"script": [
                {"op": "sleep", "ms": 4000}, {"op": "sleep", "ms": 2000},
                {"op": "exit", "code": 3}]}}))
        .await;
    let watching = b.spawn(watcher(&target, "off")).await;
    let linked = b
        .spawn(json!({"name": "linked", "worker": "actor", "duration": 0,
            "payload": {"script": [{"op": "trap_exits", "on": true},
                {"op": "link", "pid": target},
                {"op": "receive", "timeout_ms": 30000}, {"op": "receive", "timeout_ms": 1000}]}}))
        .await;
    wait_for(&b, &watching, "monitoring", |record| {
        record["actor"]["monitors"] == 1
    })
    .await;
    wait_for(&b, &linked, "linked", |record| {
        record["actor"]["links"]
            .as_array()
            .is_some_and(|links| links.len() == 1)
    })
    .await;
    let (status, drained) = admin_post(&a, "/api/cluster/nodes/b/drain").await;
    assert_eq!(status, 200, "{drained}");
    assert_eq!(drained["handed_over"], 1, "{drained}");
    let record = a.wait_end(&target).await;
    assert_eq!(record["exit_code"], 3, "{record}");
    assert_eq!(record["checkpoint"]["resumes"], 1, "{record}");
    // The tasks still on b were told of the end where the task went on, and of no other.
    for (pid, got) in [(&watching, "down"), (&linked, "linked_exit")] {
        let record = a.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        let lines = common::workers::logged(&a, pid).await;
        assert_eq!(
            told(&lines),
            [format!("{got} {target} exit 3")],
            "{lines:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_for_a_queued_task_is_received_once_after_a_claim_and_a_drain() {
    let url = common::postgres::fresh_database("drain_commands");
    let a = start_host(&url, "a", TOKEN, "", &[]).await;
    // b takes its commands every 3 s: those carried out as it claims a task are deleted only
    // at its next poll, after the drain below.
    let b = start_host(&url, "b", TOKEN, "", &["--cluster-poll", "3s"]).await;
    // Drained, a puts what it accepts in the shared queue.
    let (status, drained) = admin_post(&a, "/api/cluster/nodes/a/drain").await;
    assert_eq!(status, 200, "{drained}");
    let pid = a
        .spawn(json!({"name": "kept", "worker": "actor", "duration": 0,
            "checkpoint": "every 1h", "payload": {"script": [
                {"op": "sleep", "ms": 3000},
                {"op": "receive", "timeout_ms": 20000},
                {"op": "receive", "timeout_ms": 1000}]}}))
        .await;
    let (status, answer) = a
        .post(&format!("/api/tasks/{pid}/messages"), json!({"once": true}))
        .await;
    assert!(status == 202 || status == 200, "{status} {answer}");
    // b claims it, with the message; drained at once, it hands it on with the message in
    // its checkpoint.
    wait_for(&a, &pid, "running", |record| record["status"] == "running").await;
    let (status, drained) = admin_post(&a, "/api/cluster/nodes/b/drain").await;
    assert_eq!(status, 200, "{drained}");
    assert_eq!(drained["handed_over"], 1, "{drained}");
    // c resumes it: the message comes once, from the checkpoint, not again from the store.
    let c = start_host(&url, "c", TOKEN, "", &[]).await;
    let record = c.wait_end(&pid).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["checkpoint"]["resumes"], 1, "{record}");
    let lines = common::workers::logged(&c, &pid).await;
    assert_eq!(
        received(&lines),
        [
            "message {\"once\":true} from null".to_owned(),
            "Some(\"timeout\")".to_owned()
        ],
        "{lines:?}"
    );
    drop(b);
}
