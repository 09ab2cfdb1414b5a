//! Bounds and trust end to end (issue #21): what one client, one guest or one web page may make
//! the host do, on the real binary where the host's own log or its process is what is checked.

mod common;

use std::time::Duration;

use common::process::Binary;
use common::workers::{actor, logged, registry};
use common::{PATIENCE, registry_config, start_app, temp_dir};
use serde_json::{Value, json};

/// Issue #21, item 6: text a client or a guest chose reaches the operator's log escaped (no
/// forged line, no terminal escape), and a guest's log calls reach it only up to the task's
/// share, `--max-log-bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_guest_lines_reach_the_host_log_escaped_and_capped() {
    let dir = temp_dir("trust-log");
    let log = dir.join("host.log");
    let args: Vec<String> = [
        "--store",
        "memory",
        "--config",
        &registry(&dir, "").display().to_string(),
        "--max-log-bytes",
        "4096",
        "--log-format",
        "text",
    ]
    .map(String::from)
    .to_vec();
    let mut host = Binary::spawn_logging(&args, &[("RUST_LOG", "info")], None, Some(&log));
    host.ready().await;
    let forged = "ok\n2026-12-06T00:00:00Z ERROR forged: a line the host never wrote \u{1b}[31m";
    let record = host.run(json!({"name": forged, "duration": 0})).await;
    assert_eq!(record["status"], "exited", "{record}");
    // 300 lookups, each logged as a line of about 40 bytes: three times the task's share.
    let ops: Vec<_> = (0..300)
        .map(|_| json!({"op": "whereis", "name": "nobody"}))
        .collect();
    let chatty = host.run(actor("chatty", json!(ops))).await;
    assert_eq!(chatty["status"], "exited", "{chatty}");
    let pid = chatty["pid"].as_str().expect("a pid").to_owned();
    // Its captured log is capped the same, and says how much it dropped.
    let (_, logs) = host.get(&format!("/api/tasks/{pid}/logs")).await;
    assert!(
        logs["dropped_bytes"]
            .as_u64()
            .is_some_and(|dropped| dropped > 0),
        "{logs}"
    );
    // A graceful stop writes whatever the console still holds.
    host.stop();
    let text = std::fs::read_to_string(&log).expect("the host's log");
    assert!(!text.contains('\u{1b}'), "a raw escape reached the log");
    assert!(
        !text
            .lines()
            .any(|line| line.starts_with("2026-12-06T00:00:00Z")),
        "a forged line: {text}"
    );
    assert!(text.contains("ok\\n2026-12-06T00:00:00Z"), "{text}");
    let lines = text
        .lines()
        .filter(|line| line.contains(&pid) && line.contains("whereis"))
        .count();
    assert!(
        (1..150).contains(&lines),
        "{lines} of the task's 300 lines reached the host's log"
    );
    assert!(
        text.lines()
            .any(|line| line.contains(&pid)
                && line.contains("its further lines are not written here")),
        "{text}"
    );
}

/// The line of op `op` at or after `from` in `lines`, and its index: there must be one.
fn line_of<'a>(lines: &'a [Value], op: &str, from: usize) -> (usize, &'a Value) {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, line)| line["op"] == op)
        .unwrap_or_else(|| panic!("no {op} line after {from}: {lines:?}"))
}

/// Issue #21, item 9: any task reaches any pid by default (Erlang's model), but a worker held
/// to `actor_scope = "descendants"` reaches only its own descendants, and one held to `"tree"`
/// only its own tree: a task outside is answered as one that does not exist, whether named by
/// pid or by name, for messages, kills, monitors, links and lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_limited_in_scope_reaches_only_its_own_tasks() {
    let dir = temp_dir("trust-scope");
    let path = registry(
        &dir,
        r#"
[workers.confined]
module = "{module:actor}"
max_memory = "16MiB"
actor_scope = "descendants"

[workers.teamed]
module = "{module:actor}"
max_memory = "16MiB"
actor_scope = "tree"
"#,
    );
    let host = start_app(registry_config(&path, &[])).await;
    // A bystander of the default scope, which holds a name and waits.
    let bystander = host
        .spawn(actor(
            "bystander",
            json!([
                {"op": "register", "name": "bystander"},
                {"op": "receive_all", "timeout_ms": 30_000}
            ]),
        ))
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !logged(&host, &bystander)
        .await
        .iter()
        .any(|line| line["op"] == "register")
    {
        assert!(tokio::time::Instant::now() < deadline, "no name registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A grandchild of the default scope that names itself and says so to the root.
    let grandkid = json!({"script": [
        {"op": "register", "name": "grandkid"},
        {"op": "send", "to": "name:boss", "body": "ready"},
        {"op": "receive_all", "timeout_ms": 30_000}
    ]});
    // A child held to its tree: its parent is in reach, the bystander is not.
    let kid = json!({"script": [
        {"op": "whereis", "name": "bystander"},
        {"op": "send", "to": "name:bystander", "body": "hi"},
        {"op": "send", "to": "$parent", "body": "up"},
        {"op": "spawn", "worker": "actor", "name": "grandkid", "payload": grandkid},
        {"op": "receive_all", "timeout_ms": 30_000}
    ]});
    let mut boss = vec![
        json!({"op": "register", "name": "boss"}),
        json!({"op": "whereis", "name": "bystander"}),
        json!({"op": "send", "to": bystander, "body": "hi"}),
        json!({"op": "send", "to": "name:bystander", "body": "hi"}),
        json!({"op": "monitor", "pid": bystander}),
        json!({"op": "link", "pid": bystander}),
        json!({"op": "kill", "pid": bystander}),
        json!({"op": "spawn", "worker": "teamed", "name": "kid", "payload": kid, "monitor": true}),
        json!({"op": "receive", "timeout_ms": 20_000}),
        json!({"op": "receive", "timeout_ms": 20_000}),
        json!({"op": "whereis", "name": "grandkid"}),
        json!({"op": "send", "to": "name:grandkid", "body": "hello"}),
        json!({"op": "monitor", "pid": "name:grandkid"}),
        json!({"op": "kill", "pid": "name:grandkid"}),
        json!({"op": "receive", "timeout_ms": 20_000}),
        json!({"op": "kill", "pid": "$child"}),
        json!({"op": "receive", "timeout_ms": 20_000}),
    ];
    boss.push(json!({"op": "exit", "code": 0}));
    let mut submit = actor("boss", json!(boss));
    submit["worker"] = json!("confined");
    let record = host.run(submit).await;
    assert_eq!(record["status"], "exited", "{record}");
    let pid = record["pid"].as_str().expect("a pid").to_owned();
    let lines = logged(&host, &pid).await;

    // The bystander, by pid or by name, is out of the root's reach.
    let (at, whereis) = line_of(&lines, "whereis", 0);
    assert_eq!(whereis.get("pid"), Some(&Value::Null), "{whereis}");
    let (at, send) = line_of(&lines, "send", at);
    assert_eq!(send["error"], "no_such_process", "{send}");
    let (at, send) = line_of(&lines, "send", at + 1);
    assert_eq!(send["error"], "no_such_process", "{send}");
    let (at, monitor) = line_of(&lines, "monitor", at);
    assert_eq!(monitor["error"], "bad_pid", "{monitor}");
    let (at, link) = line_of(&lines, "link", at);
    assert_eq!(link["error"], "bad_pid", "{link}");
    let (at, kill) = line_of(&lines, "kill", at);
    assert_eq!(kill["error"], "no_such_process", "{kill}");
    let (at, spawn) = line_of(&lines, "spawn", at);
    assert_eq!(spawn["ok"], true, "{spawn}");
    let kid_pid = spawn["pid"].as_str().expect("the kid's pid").to_owned();

    // Its descendants are in reach: the kid's "up" and the grandchild's "ready" arrive, and
    // the grandchild is found, sent to, monitored and killed by name.
    let (at, first) = line_of(&lines, "receive", at);
    let (at, second) = line_of(&lines, "receive", at + 1);
    let mut bodies = [first["body"].clone(), second["body"].clone()];
    bodies.sort_by_key(|body| body.to_string());
    assert_eq!(bodies, [json!("ready"), json!("up")], "{lines:?}");
    let (at, whereis) = line_of(&lines, "whereis", at);
    let grandkid_pid = whereis["pid"].as_str().expect("the grandchild found");
    for op in ["send", "monitor", "kill"] {
        let (_, line) = line_of(&lines, op, at);
        assert_eq!(line["ok"], true, "{line}");
    }
    let (at, down) = line_of(&lines, "receive", at);
    assert_eq!(down["got"], "down", "{down}");
    assert_eq!(down["end"]["pid"], grandkid_pid, "{down}");
    assert_eq!(down["end"]["status"], "killed", "{down}");
    let (_, down) = line_of(&lines, "receive", at + 1);
    assert_eq!(down["got"], "down", "{down}");
    assert_eq!(down["end"]["pid"], kid_pid, "{down}");

    // The kid, held to its tree, reached its parent but not the bystander.
    let kid_lines = logged(&host, &kid_pid).await;
    let (at, whereis) = line_of(&kid_lines, "whereis", 0);
    assert_eq!(whereis.get("pid"), Some(&Value::Null), "{whereis}");
    let (at, send) = line_of(&kid_lines, "send", at);
    assert_eq!(send["error"], "no_such_process", "{send}");
    let (_, send) = line_of(&kid_lines, "send", at + 1);
    assert_eq!(send["ok"], true, "{send}");

    // And the bystander, of the default scope, was never touched.
    untouched(&host, &bystander).await;
}

/// `bystander` still waits, and nothing reached its mailbox; then it is killed.
async fn untouched(host: &common::TestApp, bystander: &str) {
    let (status, record) = host.get(&format!("/api/tasks/{bystander}")).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["status"], "running", "{record}");
    let received: Vec<_> = logged(host, bystander)
        .await
        .into_iter()
        .filter(|line| line.get("got").is_some())
        .collect();
    assert!(received.is_empty(), "{received:?}");
    host.kill(bystander).await;
}

/// A task held to a scope cannot escape it by spawning a worker of a wider one: the child
/// reaches no further than its parent (the review of #21 found a `descendants` task's child of
/// the default worker reaching any task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_reaches_no_further_than_its_parent() {
    let dir = temp_dir("trust-scope-child");
    let path = registry(
        &dir,
        r#"
[workers.confined]
module = "{module:actor}"
max_memory = "16MiB"
actor_scope = "descendants"
"#,
    );
    let host = start_app(registry_config(&path, &[])).await;
    let bystander = host
        .spawn(actor(
            "bystander",
            json!([{"op": "receive_all", "timeout_ms": 30_000}]),
        ))
        .await;
    // Of the default worker, whose scope is `any`: it tries the bystander, then its parent.
    let kid = json!({"script": [
        {"op": "send", "to": bystander, "body": "escaped"},
        {"op": "send", "to": "$parent", "body": "done"},
        {"op": "exit", "code": 0}
    ]});
    let mut submit = actor(
        "confined",
        json!([
            {"op": "spawn", "worker": "actor", "name": "kid", "payload": kid},
            {"op": "receive", "timeout_ms": 20_000},
            {"op": "exit", "code": 0}
        ]),
    );
    submit["worker"] = json!("confined");
    let record = host.run(submit).await;
    assert_eq!(record["status"], "exited", "{record}");
    let pid = record["pid"].as_str().expect("a pid").to_owned();
    let lines = logged(&host, &pid).await;
    let (at, spawn) = line_of(&lines, "spawn", 0);
    let kid_pid = spawn["pid"].as_str().expect("the kid's pid").to_owned();
    let (_, done) = line_of(&lines, "receive", at);
    assert_eq!(done["body"], "done", "{done}");
    let kid_lines = logged(&host, &kid_pid).await;
    let (at, send) = line_of(&kid_lines, "send", 0);
    assert_eq!(send["error"], "no_such_process", "{send}");
    let (_, send) = line_of(&kid_lines, "send", at + 1);
    assert_eq!(send["ok"], true, "{send}");
    untouched(&host, &bystander).await;
}
