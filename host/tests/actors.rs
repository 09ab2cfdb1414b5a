//! Tasks as actors, end to end over HTTP and between tasks: messages and mailboxes, ordering,
//! monitors, links, spawning children, names, the records and lists that show them, the
//! supervisor worker, kills and deadlines during `receive`, and 0.1.0 workers beside 0.2.0 ones.
//!
//! Most tasks here run the scriptable `actor` test worker (guest/workers/examples/actor.rs):
//! its payload is a script of ops, and it logs one JSON line per op, which the tests read back
//! from `GET /api/tasks/{pid}/logs`. Every wait is a poll bounded by [`PATIENCE`]; no test
//! asserts a timing.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{PATIENCE, TestApp, module, read_events, registry_config, start_app, temp_dir};
use serde_json::{Value, json};

/// A host whose registry holds the workers these tests run (`default`, `actor`, `legacy` and
/// `supervisor`), with command-line `args`.
async fn actors_app(args: &[&str]) -> TestApp {
    let registry = temp_dir("actors").join("http-spawn.toml");
    std::fs::write(
        &registry,
        format!(
            r#"
[workers.default]
module = "{default}"

# The test workers use Rust's std, whose 1 MiB stack outgrows the default cap.
[workers.actor]
module = "{actor}"
max_memory = "16MiB"

[workers.legacy]
module = "{legacy}"
max_memory = "16MiB"

[workers.supervisor]
module = "{supervisor}"
"#,
            default = module("default").display(),
            actor = module("actor").display(),
            legacy = module("legacy").display(),
            supervisor = module("supervisor").display(),
        ),
    )
    .expect("write the registry file");
    let mut args = args.to_vec();
    if !args.contains(&"--capacity") {
        // Small pools keep many test hosts in one process cheap.
        args.extend(["--capacity", "64"]);
    }
    start_app(registry_config(&registry, &args)).await
}

/// A submission of the `actor` worker running `script`.
fn actor(name: &str, script: Value) -> Value {
    json!({"name": name, "worker": "actor", "duration": 0, "payload": {"script": script}})
}

/// The `payload` of an `actor` child running `script`, for `spawn` ops and supervisors.
fn script(ops: Value) -> Value {
    json!({"script": ops})
}

/// Submits an `actor` task running `script`, and returns its pid.
async fn start_actor(app: &TestApp, name: &str, script: Value) -> String {
    app.spawn(actor(name, script)).await
}

/// The task's record, which must exist.
async fn record(app: &TestApp, pid: &str) -> Value {
    let (status, record) = app.get(&format!("/api/tasks/{pid}")).await;
    assert_eq!(status, 200, "task {pid}: {record}");
    record
}

/// The JSON lines the task logged, in order (lines that are not JSON objects left out).
async fn logged(app: &TestApp, pid: &str) -> Vec<Value> {
    let (status, logs) = app.get(&format!("/api/tasks/{pid}/logs")).await;
    assert_eq!(status, 200, "logs of {pid}: {logs}");
    logs["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|line| line["message"].as_str())
        .filter_map(|message| serde_json::from_str::<Value>(message).ok())
        .filter(Value::is_object)
        .collect()
}

/// The task's JSON lines once `done` holds of them; `what` says what the test waits for.
async fn wait_logged(
    app: &TestApp,
    pid: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let lines = logged(app, pid).await;
        if done(&lines) {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {pid} never logged {what}: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lines an actor logged for `op`.
fn ops<'a>(lines: &'a [Value], op: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["op"] == op).collect()
}

/// The one line an actor logged for `op`.
fn one<'a>(lines: &'a [Value], op: &str) -> &'a Value {
    match ops(lines, op).as_slice() {
        [line] => line,
        other => panic!("expected one {op:?} line, got {other:?} in {lines:?}"),
    }
}

/// What an actor received, in order, whatever op received it.
fn received(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|line| line.get("got").is_some())
        .collect()
}

/// The message bodies an actor received, in order.
fn bodies(lines: &[Value]) -> Vec<Value> {
    received(lines)
        .into_iter()
        .filter(|line| line["got"] == "message")
        .map(|line| line["body"].clone())
        .collect()
}

/// The supervisor's log lines of `event`.
fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["event"] == event).collect()
}

fn str_of(value: &Value) -> String {
    value.as_str().expect("a string").to_owned()
}

/// The pid `spawn` logged.
fn spawned(line: &Value) -> String {
    assert_eq!(line["ok"], true, "spawned: {line}");
    str_of(&line["pid"])
}

/// A pid this host never gave out: `pid`'s boot prefix with a sequence number far ahead.
fn never_existed(pid: &str) -> String {
    let (boot, _) = pid.split_once('-').expect("pids are <boot>-<seq>");
    format!("{boot}-fffffff")
}

/// POSTs `body` with `content_type` (none: no header) to the mailbox of `target` (a pid or
/// `name:<name>`): the status, the `Retry-After` header and the JSON answer.
async fn post_raw(
    app: &TestApp,
    target: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Option<String>, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/api/tasks/{target}/messages")))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().expect("ASCII header").to_owned());
    (
        status,
        retry_after,
        response.json().await.expect("JSON body"),
    )
}

/// POSTs `message` as JSON to the mailbox of `target`: the status and the JSON answer.
async fn post(app: &TestApp, target: &str, message: &Value) -> (u16, Value) {
    let (status, _, body) =
        post_raw(app, target, Some("application/json"), message.to_string()).await;
    (status, body)
}

/// Opens the all-tasks event stream, subscribed once this returns.
async fn all_events(app: &TestApp) -> reqwest::Response {
    let response = app
        .client
        .get(app.url("/api/events"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    response
}

/// Reads `stream` until `count` events of `kind` came, in the background: what it returns are
/// those events' data.
fn collect(
    stream: reqwest::Response,
    kind: &'static str,
    count: usize,
) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let events = read_events(stream, |name, _| {
            name == kind && seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == count
        })
        .await;
        events
            .into_iter()
            .filter(|(name, _)| name == kind)
            .map(|(_, data)| data)
            .collect()
    })
}

/// Waits until a live task holds `name`, and returns its pid.
async fn wait_name(app: &TestApp, name: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = app.get(&format!("/api/names/{name}")).await;
        if status == 200 {
            assert_eq!(body["name"], name, "{body}");
            return str_of(&body["pid"]);
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody registered {name:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the record ended with status `status` and outcome `outcome`.
fn assert_end(record: &Value, status: &str, outcome: &str) {
    assert_eq!(record["status"], status, "{record}");
    assert_eq!(record["outcome"], outcome, "{record}");
}

fn assert_exited_0(record: &Value) {
    assert_end(record, "exited", "exit");
    assert_eq!(record["exit_code"], 0, "{record}");
}

/// Kills a task still live at the end of a test, and checks it ends killed.
async fn kill(app: &TestApp, pid: &str) -> Value {
    let (status, body) = app.kill(pid).await;
    // 200 once it ended within the host's short wait, 202 while its step still runs.
    assert!(matches!(status, 200 | 202), "{status}: {body}");
    let record = app.wait_end(pid).await;
    assert_eq!(record["status"], "killed", "{record}");
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_play_ping_pong_through_a_registered_name() {
    const ROUNDS: usize = 50;
    let app = actors_app(&[]).await;
    let pong = start_actor(
        &app,
        "pong",
        json!([{"op": "register", "name": "pong"}, {"op": "echo", "timeout_ms": 30_000}]),
    )
    .await;
    assert_eq!(wait_name(&app, "pong").await, pong);
    let ping = start_actor(
        &app,
        "ping",
        json!([
            {"op": "ping", "to": "name:pong", "rounds": ROUNDS},
            {"op": "send", "to": "name:pong", "body": "stop"},
        ]),
    )
    .await;

    assert_exited_0(&app.wait_end(&ping).await);
    assert_exited_0(&app.wait_end(&pong).await);
    let lines = logged(&app, &ping).await;
    let line = one(&lines, "ping");
    assert_eq!(line["ok"], true, "{line}");
    assert_eq!(line["rounds"], ROUNDS, "{line}");
    assert_eq!(one(&lines, "send")["ok"], true, "{lines:?}");

    let lines = logged(&app, &pong).await;
    let got = received(&lines);
    assert_eq!(
        got.len(),
        ROUNDS + 1,
        "every ping, then the stop: {lines:?}"
    );
    for (round, line) in got[..ROUNDS].iter().enumerate() {
        assert_eq!(line["got"], "message", "{line}");
        assert_eq!(line["sender"], ping.as_str(), "{line}");
        assert_eq!(line["body"], json!({"ping": round}), "{line}");
        assert_eq!(line["echoed"], true, "{line}");
    }
    assert_eq!(got[ROUNDS]["body"], "stop");
    assert_eq!(got[ROUNDS]["echoed"], false);
    let summary = lines.last().expect("a last line");
    assert_eq!(summary["until"], "stop", "{summary}");
    assert_eq!(summary["count"], ROUNDS + 1, "{summary}");
    assert_eq!(summary["echoed"], ROUNDS, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_message_reaches_a_task_waiting_in_receive() {
    let app = actors_app(&[]).await;
    let pid = start_actor(
        &app,
        "listener",
        json!([
            {"op": "receive", "timeout_ms": 30_000},
            {"op": "receive", "timeout_ms": 30_000},
        ]),
    )
    .await;
    let stream = app
        .client
        .get(app.url(&format!("/api/tasks/{pid}/events")))
        .send()
        .await
        .expect("request sent");
    assert_eq!(stream.status(), 200);

    let message = json!({"hello": ["world", 1], "nested": {"ok": true}});
    let (status, body) = post(&app, &pid, &message).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["pid"], pid.as_str(), "{body}");
    assert_eq!(body["bytes"], message.to_string().len(), "{body}");
    // The task waits for a second message meanwhile, so its stream stays open for the event.
    let events = read_events(stream, |name, _| name == "message").await;
    let (name, data) = events.last().expect("events");
    assert_eq!(name, "message", "{events:?}");
    assert_eq!(data["pid"], pid.as_str(), "{data}");
    assert_eq!(data["sender"], Value::Null, "{data}");
    assert_eq!(data["bytes"], message.to_string().len(), "{data}");

    let (status, body) = post(&app, &pid, &json!("bye")).await;
    assert_eq!(status, 202, "{body}");
    assert_exited_0(&app.wait_end(&pid).await);
    let lines = logged(&app, &pid).await;
    let got = ops(&lines, "receive");
    assert_eq!(got.len(), 2, "{lines:?}");
    assert_eq!(got[0]["got"], "message", "{lines:?}");
    assert_eq!(
        got[0]["sender"],
        Value::Null,
        "an HTTP client is no task: {lines:?}"
    );
    assert_eq!(got[0]["body"], message, "{lines:?}");
    assert_eq!(got[1]["body"], "bye", "{lines:?}");
}

/// A task's stream ends with its `exit`, so a `message` event published after it is lost.
/// `Host::put` (host/src/host/actors.rs) publishes the event only after the message is in the
/// mailbox and the receiver is woken, so under load the receiver's step, its log lines and its
/// exit can be published first: about one task in 40 here on 2 busy cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_event_comes_before_what_the_message_led_to() {
    const TASKS: usize = 40;
    let app = actors_app(&[]).await;
    let stream = all_events(&app).await;
    let mut pids = Vec::new();
    for n in 0..TASKS {
        let script = json!([{"op": "receive", "timeout_ms": 30_000}]);
        pids.push(start_actor(&app, &format!("listener-{n}"), script).await);
    }
    for pid in &pids {
        wait_logged(&app, pid, "its spec", |lines| {
            !ops(lines, "spec").is_empty()
        })
        .await;
        let (status, body) = post(&app, pid, &json!({"to": pid})).await;
        assert_eq!(status, 202, "{body}");
    }
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let events = read_events(stream, |name, _| {
        matches!(name, "message" | "exit")
            && seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == 2 * TASKS
    })
    .await;
    for pid in &pids {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|(_, data)| data["pid"] == pid.as_str())
            .map(|(name, _)| name.as_str())
            .collect();
        let message = kinds.iter().position(|kind| *kind == "message");
        let exit = kinds.iter().position(|kind| *kind == "exit");
        assert!(
            message.is_some() && message < exit,
            "task {pid}: the message event comes before its exit: {kinds:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_with_nothing_coming_times_out() {
    let app = actors_app(&[]).await;
    let record = app
        .run(actor(
            "waiter",
            json!([
                {"op": "receive", "timeout_ms": 100},
                {"op": "receive", "timeout_ms": 0},
            ]),
        ))
        .await;
    assert_exited_0(&record);
    let lines = logged(&app, str_of(&record["pid"]).as_str()).await;
    let got: Vec<&Value> = ops(&lines, "receive")
        .into_iter()
        .map(|line| &line["got"])
        .collect();
    assert_eq!(got, [&json!("timeout"), &json!("timeout")], "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_refuses_and_bad_messages_are_refused_for_what_they_are() {
    let app = actors_app(&["--max-mailbox-messages", "4", "--max-message-bytes", "64"]).await;
    let sleeper = start_actor(&app, "sleeper", json!([{"op": "sleep", "ms": 30_000}])).await;
    app.wait_running(&sleeper).await;

    let too_big = json!("x".repeat(100));
    let (status, body) = post(&app, &sleeper, &too_big).await;
    assert_eq!(status, 413, "{body}");
    for content_type in [Some("text/plain"), None] {
        let (status, _, body) = post_raw(&app, &sleeper, content_type, r#"{"a":1}"#).await;
        assert_eq!(status, 415, "{content_type:?}: {body}");
    }
    let (status, _, body) = post_raw(&app, &sleeper, Some("application/json"), "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(
        record(&app, &sleeper).await["actor"]["mailbox"],
        0,
        "nothing refused was delivered"
    );

    for n in 0..4 {
        let (status, body) = post(&app, &sleeper, &json!({"n": n})).await;
        assert_eq!(status, 202, "message {n}: {body}");
    }
    let (status, retry_after, body) = post_raw(
        &app,
        &sleeper,
        Some("application/json"),
        json!({"n": 4}).to_string(),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!(
        retry_after.parse::<u32>().is_ok(),
        "Retry-After is whole seconds: {retry_after:?}"
    );
    assert_eq!(record(&app, &sleeper).await["actor"]["mailbox"], 4);

    for target in [
        never_existed(&sleeper),
        "name:nobody".to_owned(),
        "not-a-pid".to_owned(),
    ] {
        let (status, body) = post(&app, &target, &json!(1)).await;
        assert_eq!(status, 404, "{target}: {body}");
    }
    let ended = app.run(actor("ended", json!([]))).await;
    let ended = str_of(&ended["pid"]);
    let (status, body) = post(&app, &ended, &json!(1)).await;
    assert_eq!(status, 409, "{body}");

    // A task sending gets the same answers as errors.
    let target = start_actor(&app, "target", json!([{"op": "sleep", "ms": 30_000}])).await;
    let sender = app
        .run(actor(
            "sender",
            json!([
                {"op": "send_many", "to": target, "count": 10},
                {"op": "send", "to": ended, "body": 1},
                {"op": "send", "to": never_existed(&sleeper), "body": 1},
                {"op": "send", "to": "name:nobody", "body": 1},
                {"op": "send", "to": "not-a-pid", "body": 1},
                {"op": "send", "to": sleeper, "body": too_big},
            ]),
        ))
        .await;
    assert_exited_0(&sender);
    let lines = logged(&app, str_of(&sender["pid"]).as_str()).await;
    let line = one(&lines, "send_many");
    assert_eq!(line["ok"], false, "{line}");
    assert_eq!(line["error"], "mailbox_full", "{line}");
    assert_eq!(line["sent"], 4, "{line}");
    let errors: Vec<&Value> = ops(&lines, "send")
        .into_iter()
        .map(|line| &line["error"])
        .collect();
    let expected = [
        "ended",
        "no_such_process",
        "no_such_process",
        "bad_pid",
        "too_large",
    ];
    assert_eq!(
        errors,
        expected.map(Value::from).iter().collect::<Vec<_>>(),
        "{lines:?}"
    );
    assert_eq!(record(&app, &target).await["actor"]["mailbox"], 4);

    kill(&app, &sleeper).await;
    kill(&app, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_sender_arrive_in_the_order_sent() {
    let app = actors_app(&[]).await;
    let receiver = start_actor(
        &app,
        "receiver",
        json!([
            {"op": "receive", "timeout_ms": 30_000},
            {"op": "receive_all", "timeout_ms": 2_000},
        ]),
    )
    .await;
    let sender = start_actor(
        &app,
        "sender",
        json!([{"op": "send_many", "to": receiver, "count": 100}]),
    )
    .await;
    assert_exited_0(&app.wait_end(&sender).await);
    assert_eq!(one(&logged(&app, &sender).await, "send_many")["sent"], 100);
    assert_exited_0(&app.wait_end(&receiver).await);
    let lines = logged(&app, &receiver).await;
    let expected: Vec<Value> = (0..100).map(|seq| json!({"seq": seq})).collect();
    assert_eq!(bodies(&lines), expected, "{lines:?}");
    assert!(
        received(&lines)
            .iter()
            .filter(|line| line["got"] == "message")
            .all(|line| line["sender"] == sender.as_str()),
        "{lines:?}"
    );

    // Over HTTP: an echo without senders to answer logs every message until the stop.
    let listener = start_actor(
        &app,
        "listener",
        json!([{"op": "echo", "timeout_ms": 30_000}]),
    )
    .await;
    for n in 0..20 {
        let (status, body) = post(&app, &listener, &json!({"n": n})).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = post(&app, &listener, &json!("stop")).await;
    assert_eq!(status, 202, "{body}");
    assert_exited_0(&app.wait_end(&listener).await);
    let lines = logged(&app, &listener).await;
    let mut expected: Vec<Value> = (0..20).map(|n| json!({"n": n})).collect();
    expected.push(json!("stop"));
    assert_eq!(bodies(&lines), expected, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_gets_exactly_one_down_for_a_live_an_ended_and_an_unknown_pid() {
    let app = actors_app(&[]).await;
    let ended = app
        .run(actor("ended", json!([{"op": "fail", "message": "gone"}])))
        .await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let ended_pid = str_of(&ended["pid"]);
    let live = start_actor(
        &app,
        "live",
        json!([{"op": "sleep", "ms": 300}, {"op": "exit", "code": 3}]),
    )
    .await;
    let unknown = never_existed(&live);

    let downs = collect(all_events(&app).await, "down", 3);
    let watcher = start_actor(
        &app,
        "watcher",
        json!([
            {"op": "monitor", "pid": live},
            {"op": "monitor", "pid": ended_pid},
            {"op": "monitor", "pid": unknown},
            {"op": "receive", "timeout_ms": 30_000},
            {"op": "receive", "timeout_ms": 30_000},
            {"op": "receive", "timeout_ms": 30_000},
            {"op": "receive_all", "timeout_ms": 1_000},
        ]),
    )
    .await;
    assert_exited_0(&app.wait_end(&watcher).await);
    let live_end = app.wait_end(&live).await;
    assert_end(&live_end, "exited", "exit");
    assert_eq!(live_end["exit_code"], 3);

    let lines = logged(&app, &watcher).await;
    assert!(
        ops(&lines, "monitor").iter().all(|line| line["ok"] == true),
        "{lines:?}"
    );
    let got = received(&lines);
    assert_eq!(got.len(), 3, "one notice per monitor, no more: {lines:?}");
    assert_eq!(one(&lines, "receive_all")["count"], 0, "{lines:?}");
    let ends: HashMap<String, &Value> = got
        .iter()
        .map(|line| {
            assert_eq!(line["got"], "down", "{line}");
            (str_of(&line["end"]["pid"]), &line["end"])
        })
        .collect();
    let end = ends[&live];
    assert_eq!(end["status"], "exited", "{end}");
    assert_eq!(end["outcome"], "exit", "{end}");
    assert_eq!(end["exit_code"], 3, "{end}");
    assert_eq!(end["error"], Value::Null, "{end}");
    let end = ends[&ended_pid];
    for field in ["status", "outcome", "exit_code", "error"] {
        assert_eq!(end[field], ended[field], "{field}: {end} vs {ended}");
    }
    let end = ends[&unknown];
    assert_eq!(end["status"], "unknown", "{end}");
    assert_eq!(end["outcome"], "no_such_process", "{end}");
    assert_eq!(end["exit_code"], Value::Null, "{end}");

    let downs = tokio::time::timeout(PATIENCE, downs)
        .await
        .expect("three down events within patience")
        .expect("the reader ran");
    assert!(
        downs.iter().all(|data| data["pid"] == watcher.as_str()),
        "{downs:?}"
    );
    let seen: BTreeSet<String> = downs.iter().map(|data| str_of(&data["down"])).collect();
    assert_eq!(
        seen,
        BTreeSet::from([live.clone(), ended_pid.clone(), unknown.clone()])
    );
    let outcome = |pid: &str| {
        downs
            .iter()
            .find(|data| data["down"] == pid)
            .map(|data| data["outcome"].clone())
    };
    // The live task's outcome is checked by `a_down_event_names_the_outcome_as_records_do`.
    assert!(outcome(&live).is_some_and(|outcome| outcome.is_string()));
    assert_eq!(outcome(&ended_pid), Some(ended["outcome"].clone()));
    assert_eq!(outcome(&unknown), Some(json!("no_such_process")));
}

/// A `down` event's `outcome` is the outcome's name (`exit`), as in records, in the WIT's
/// `end` and in the `down` event of a pid that had already ended; but for a task that ends
/// while monitored, `Scheduler::follow` (host/src/sched/mod.rs) writes its description
/// instead (`exit code 3`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_event_names_the_outcome_as_records_do() {
    let app = actors_app(&[]).await;
    let downs = collect(all_events(&app).await, "down", 1);
    let watcher = start_actor(
        &app,
        "watcher",
        json!([
            {"op": "spawn", "worker": "actor", "name": "child", "monitor": true,
             "payload": script(json!([{"op": "exit", "code": 3}]))},
            {"op": "receive", "timeout_ms": 30_000},
        ]),
    )
    .await;
    assert_exited_0(&app.wait_end(&watcher).await);
    let child = spawned(one(&logged(&app, &watcher).await, "spawn"));
    let record = app.wait_end(&child).await;
    let downs = tokio::time::timeout(PATIENCE, downs)
        .await
        .expect("a down event within patience")
        .expect("the reader ran");
    assert_eq!(downs[0]["down"], child.as_str(), "{downs:?}");
    assert_eq!(
        downs[0]["outcome"], record["outcome"],
        "{downs:?} vs {record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_linked_child_takes_its_parent_down() {
    let app = actors_app(&[]).await;
    let linked_exits = collect(all_events(&app).await, "linked_exit", 1);
    let parent = start_actor(
        &app,
        "parent",
        json!([
            {"op": "spawn", "worker": "actor", "name": "child", "link": true,
             "payload": script(json!([{"op": "sleep", "ms": 200},
                                      {"op": "fail", "message": "child broke"}]))},
            {"op": "receive", "timeout_ms": 30_000},
        ]),
    )
    .await;
    let record = app.wait_end(&parent).await;
    assert_end(&record, "killed", "linked_exit");
    let child = spawned(one(&logged(&app, &parent).await, "spawn"));
    let error = str_of(&record["error"]);
    assert!(error.contains(&child), "the error names the child: {error}");

    let child_end = app.wait_end(&child).await;
    assert_eq!(child_end["status"], "failed", "{child_end}");
    assert!(
        str_of(&child_end["error"]).contains("child broke"),
        "{child_end}"
    );
    assert_eq!(child_end["parent"], parent.as_str());

    let events = tokio::time::timeout(PATIENCE, linked_exits)
        .await
        .expect("a linked_exit event within patience")
        .expect("the reader ran");
    let event = &events[0];
    assert_eq!(event["pid"], parent.as_str(), "{event}");
    assert_eq!(event["linked"], child.as_str(), "{event}");
    assert_eq!(event["trapped"], false, "{event}");
    assert_eq!(event["outcome"], child_end["outcome"], "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_trapping_exits_gets_a_notice_and_lives_on() {
    let app = actors_app(&[]).await;
    let linked_exits = collect(all_events(&app).await, "linked_exit", 1);
    let parent = start_actor(
        &app,
        "trapper",
        json!([
            {"op": "trap_exits", "on": true},
            {"op": "spawn", "worker": "actor", "name": "child", "link": true,
             "payload": script(json!([{"op": "sleep", "ms": 200}, {"op": "exit", "code": 5}]))},
            {"op": "receive", "timeout_ms": 30_000},
        ]),
    )
    .await;
    assert_exited_0(&app.wait_end(&parent).await);
    let lines = logged(&app, &parent).await;
    let child = spawned(one(&lines, "spawn"));
    let line = one(&lines, "receive");
    assert_eq!(line["got"], "linked_exit", "{line}");
    let end = &line["end"];
    assert_eq!(end["pid"], child.as_str(), "{end}");
    assert_eq!(end["status"], "exited", "{end}");
    assert_eq!(end["outcome"], "exit", "{end}");
    assert_eq!(end["exit_code"], 5, "{end}");

    let events = tokio::time::timeout(PATIENCE, linked_exits)
        .await
        .expect("a linked_exit event within patience")
        .expect("the reader ran");
    let event = &events[0];
    assert_eq!(event["pid"], parent.as_str(), "{event}");
    assert_eq!(event["linked"], child.as_str(), "{event}");
    assert_eq!(event["trapped"], true, "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_0_does_not_propagate_through_a_link_and_a_non_zero_exit_does() {
    let app = actors_app(&[]).await;
    let parent_of = |code: i32| {
        actor(
            &format!("parent-of-{code}"),
            json!([
                {"op": "spawn", "worker": "actor", "name": "child", "link": true,
                 "monitor": true, "payload": script(json!([{"op": "exit", "code": code}]))},
                {"op": "receive", "timeout_ms": 30_000},
                // Long enough for a link's kill to land, were it coming.
                {"op": "sleep", "ms": 300},
            ]),
        )
    };
    let normal = app.spawn(parent_of(0)).await;
    let abnormal = app.spawn(parent_of(2)).await;

    assert_exited_0(&app.wait_end(&normal).await);
    let lines = logged(&app, &normal).await;
    let child = spawned(one(&lines, "spawn"));
    let line = one(&lines, "receive");
    assert_eq!(line["got"], "down", "{line}");
    assert_eq!(line["end"]["pid"], child.as_str(), "{line}");
    assert_eq!(line["end"]["exit_code"], 0, "{line}");
    assert_exited_0(&app.wait_end(&child).await);

    let record = app.wait_end(&abnormal).await;
    assert_end(&record, "killed", "linked_exit");
    let child = spawned(one(&logged(&app, &abnormal).await, "spawn"));
    assert!(
        str_of(&record["error"]).contains(&child),
        "the error names the child: {record}"
    );
    let child_end = app.wait_end(&child).await;
    assert_end(&child_end, "exited", "exit");
    assert_eq!(child_end["exit_code"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_to_an_ended_task_acts_as_if_linked_before_it_ended() {
    let app = actors_app(&[]).await;
    let stream = all_events(&app).await;
    let failed = app
        .run(actor("failed", json!([{"op": "fail", "message": "down"}])))
        .await;
    let failed = str_of(&failed["pid"]);
    let exited = app.run(actor("exited", json!([]))).await;
    let exited = str_of(&exited["pid"]);

    let to_failed = start_actor(
        &app,
        "to-failed",
        json!([{"op": "link", "pid": failed}, {"op": "sleep", "ms": 30_000}]),
    )
    .await;
    let to_exited = start_actor(
        &app,
        "to-exited",
        json!([{"op": "link", "pid": exited}, {"op": "sleep", "ms": 100}]),
    )
    .await;
    let unknown = never_existed(&failed);
    let trapping = start_actor(
        &app,
        "to-unknown",
        json!([
            {"op": "trap_exits", "on": true},
            {"op": "link", "pid": unknown},
            {"op": "receive", "timeout_ms": 30_000},
        ]),
    )
    .await;

    let record = app.wait_end(&to_failed).await;
    assert_end(&record, "killed", "linked_exit");
    assert!(str_of(&record["error"]).contains(&failed), "{record}");
    assert_exited_0(&app.wait_end(&to_exited).await);
    assert_exited_0(&app.wait_end(&trapping).await);
    let line = one(&logged(&app, &trapping).await, "receive").clone();
    assert_eq!(line["got"], "linked_exit", "{line}");
    assert_eq!(line["end"]["pid"], unknown.as_str(), "{line}");
    assert_eq!(line["end"]["status"], "unknown", "{line}");
    assert_eq!(line["end"]["outcome"], "no_such_process", "{line}");
    // One `linked_exit` event for each link to an ended task, as for a link made before.
    let (to_failed_pid, trapping_pid) = (to_failed.clone(), trapping.clone());
    let events = read_events(stream, move |name, data| {
        name == "exit" && data["pid"] == trapping_pid.as_str()
    })
    .await;
    let linked_exits = |pid: &str| {
        events
            .iter()
            .filter(|(name, data)| name == "linked_exit" && data["pid"] == pid)
            .count()
    };
    assert_eq!(linked_exits(&to_failed_pid), 1, "{events:?}");
    assert_eq!(linked_exits(&trapping), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_on_a_full_host_is_refused_at_once() {
    let app = actors_app(&["--capacity", "2", "--max-queue", "0"]).await;
    let parent = start_actor(
        &app,
        "parent",
        json!([
            {"op": "spawn_many", "count": 5, "worker": "actor", "name": "kid",
             "payload": script(json!([{"op": "sleep", "ms": 500}]))},
        ]),
    )
    .await;
    assert_exited_0(&app.wait_end(&parent).await);
    let lines = logged(&app, &parent).await;
    let line = one(&lines, "spawn_many");
    assert_eq!(line["ok"], false, "{line}");
    assert_eq!(line["error"], "full", "{line}");
    assert_eq!(
        line["spawned"], 1,
        "the parent holds one place of two: {line}"
    );
    let kid = str_of(&line["pids"][0]);
    assert_exited_0(&app.wait_end(&kid).await);

    // The places given back, a spawn works again.
    let again = app
        .run(actor(
            "again",
            json!([{"op": "spawn", "worker": "actor", "name": "kid"}]),
        ))
        .await;
    assert_exited_0(&again);
    let kid = spawned(one(
        &logged(&app, str_of(&again["pid"]).as_str()).await,
        "spawn",
    ));
    assert_exited_0(&app.wait_end(&kid).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_task_is_reached_by_its_name_until_it_ends() {
    let app = actors_app(&[]).await;
    let named = start_actor(
        &app,
        "cache",
        json!([
            {"op": "register", "name": "cache"},
            {"op": "receive", "timeout_ms": 30_000},
            {"op": "register", "name": "other"},
        ]),
    )
    .await;
    assert_eq!(wait_name(&app, "cache").await, named);

    let (status, list) = app.get("/api/names").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["names"], json!([{"name": "cache", "pid": named}]));
    let (status, by_name) = app.get("/api/tasks/name:cache").await;
    assert_eq!(status, 200, "{by_name}");
    assert_eq!(by_name["pid"], named.as_str());
    assert_eq!(by_name["actor"]["name"], "cache", "{by_name}");

    let other = app
        .run(actor(
            "other",
            json!([
                {"op": "whereis", "name": "cache"},
                {"op": "register", "name": "cache"},
                {"op": "register", "name": "no spaces allowed"},
            ]),
        ))
        .await;
    assert_exited_0(&other);
    let lines = logged(&app, str_of(&other["pid"]).as_str()).await;
    assert_eq!(one(&lines, "whereis")["pid"], named.as_str(), "{lines:?}");
    let errors: Vec<&Value> = ops(&lines, "register")
        .into_iter()
        .map(|line| &line["error"])
        .collect();
    assert_eq!(errors, [&json!("taken"), &json!("invalid")], "{lines:?}");

    let (status, body) = post(&app, "name:cache", &json!({"via": "name"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["pid"], named.as_str(), "{body}");
    assert_exited_0(&app.wait_end(&named).await);
    let lines = logged(&app, &named).await;
    assert_eq!(bodies(&lines), [json!({"via": "name"})], "{lines:?}");
    let registers: Vec<(Value, Value)> = ops(&lines, "register")
        .into_iter()
        .map(|line| (line["ok"].clone(), line["error"].clone()))
        .collect();
    assert_eq!(
        registers,
        [
            (json!(true), Value::Null),
            (json!(false), json!("already_named"))
        ],
        "{lines:?}"
    );

    // Released with its task.
    assert_eq!(app.get("/api/names/cache").await.0, 404);
    assert_eq!(app.get("/api/names").await.1["names"], json!([]));
    assert_eq!(app.get("/api/tasks/name:cache").await.0, 404);
    assert_eq!(post(&app, "name:cache", &json!(1)).await.0, 404);
    let heir = app
        .run(actor(
            "heir",
            json!([
                {"op": "whereis", "name": "cache"},
                {"op": "register", "name": "cache"},
            ]),
        ))
        .await;
    assert_exited_0(&heir);
    let lines = logged(&app, str_of(&heir["pid"]).as_str()).await;
    assert_eq!(one(&lines, "whereis")["pid"], Value::Null, "{lines:?}");
    assert_eq!(one(&lines, "register")["ok"], true, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_show_parents_children_mailboxes_links_and_monitors() {
    let app = actors_app(&[]).await;
    let waiting = script(json!([{"op": "receive", "timeout_ms": 30_000}]));
    let parent = start_actor(
        &app,
        "parent",
        json!([
            {"op": "spawn", "worker": "actor", "name": "linked", "link": true,
             "payload": waiting},
            {"op": "spawn", "worker": "actor", "name": "watched", "monitor": true,
             "payload": waiting},
            {"op": "spawn", "worker": "actor", "name": "plain", "payload": waiting},
            {"op": "sleep", "ms": 30_000},
        ]),
    )
    .await;
    let bystander = app.run(actor("bystander", json!([]))).await;
    let lines = wait_logged(&app, &parent, "three spawns", |lines| {
        ops(lines, "spawn").len() == 3
    })
    .await;
    let kids: Vec<String> = ops(&lines, "spawn").into_iter().map(spawned).collect();
    let [linked, watched, plain] = &kids[..] else {
        panic!("three spawns: {kids:?}")
    };

    for n in 0..2 {
        let (status, body) = post(&app, &parent, &json!({"n": n})).await;
        assert_eq!(status, 202, "{body}");
    }
    let record = record(&app, &parent).await;
    assert_eq!(record["parent"], Value::Null, "{record}");
    assert_eq!(
        record["actor"],
        json!({"mailbox": 2, "links": [linked], "monitors": 1, "name": null,
               "trap_exits": false}),
        "{record}"
    );
    for kid in &kids {
        let record = self::record(&app, kid).await;
        assert_eq!(record["parent"], parent.as_str(), "{record}");
    }
    assert_eq!(
        self::record(&app, linked).await["actor"]["links"],
        json!([parent])
    );
    assert_eq!(
        self::record(&app, watched).await["actor"]["links"],
        json!([])
    );

    let (status, page) = app.get(&format!("/api/tasks?parent={parent}")).await;
    assert_eq!(status, 200, "{page}");
    let listed: BTreeSet<String> = page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|task| str_of(&task["pid"]))
        .collect();
    assert_eq!(listed, kids.iter().cloned().collect::<BTreeSet<_>>());
    assert!(!listed.contains(bystander["pid"].as_str().expect("pid")));

    let ended = kill(&app, &parent).await;
    assert!(ended.get("actor").is_none(), "no actor once ended: {ended}");
    let record = app.wait_end(linked).await;
    assert_end(&record, "killed", "linked_exit");
    assert!(record.get("actor").is_none(), "{record}");
    for kid in [watched, plain] {
        assert!(
            self::record(&app, kid).await["actor"].is_object(),
            "an unlinked child lives on"
        );
        kill(&app, kid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_for_one_supervisor_restarts_a_crashing_child_alone() {
    let app = actors_app(&[]).await;
    let supervisor = app
        .spawn(json!({
            "name": "sup", "worker": "supervisor", "duration": 0,
            "payload": {"strategy": "one_for_one", "intensity": 100, "period_secs": 60,
                "children": [
                    {"worker": "actor", "name": "flaky",
                     "payload": script(json!([{"op": "sleep", "ms": 200},
                                              {"op": "fail", "message": "crash"}]))},
                    {"worker": "actor", "name": "quick", "payload": script(json!([]))},
                    {"worker": "actor", "name": "steady",
                     "payload": script(json!([{"op": "sleep", "ms": 30_000}]))},
                ]}
        }))
        .await;
    let lines = wait_logged(&app, &supervisor, "two restarts", |lines| {
        events(lines, "child_restarted").len() >= 2 && !events(lines, "child_exited").is_empty()
    })
    .await;
    let started: HashMap<String, String> = events(&lines, "child_started")
        .into_iter()
        .map(|line| (str_of(&line["name"]), str_of(&line["pid"])))
        .collect();
    assert_eq!(started.len(), 3, "{lines:?}");
    let exited = events(&lines, "child_exited");
    assert_eq!(exited.len(), 1, "{lines:?}");
    assert_eq!(exited[0]["name"], "quick");
    assert_eq!(exited[0]["pid"], started["quick"].as_str());
    let failed = events(&lines, "child_failed");
    assert_eq!(failed[0]["name"], "flaky", "{lines:?}");
    assert_eq!(failed[0]["pid"], started["flaky"].as_str(), "{lines:?}");
    assert_eq!(failed[0]["status"], "failed", "{lines:?}");
    let restarted = events(&lines, "child_restarted");
    for line in &restarted {
        assert_eq!(line["name"], "flaky", "only the crashing child: {line}");
        assert_eq!(line["strategy"], "one_for_one", "{line}");
        assert_ne!(line["pid"], started["flaky"].as_str(), "a new task: {line}");
    }
    let first = app.wait_end(&started["flaky"]).await;
    assert_eq!(first["status"], "failed", "{first}");
    assert!(str_of(&first["error"]).contains("crash"), "{first}");
    let again = record(&app, restarted[0]["pid"].as_str().expect("pid")).await;
    assert_eq!(again["parent"], supervisor.as_str(), "{again}");
    assert_exited_0(&app.wait_end(&started["quick"]).await);

    // The supervisor's end takes the children it still runs with it.
    kill(&app, &supervisor).await;
    let steady = app.wait_end(&started["steady"]).await;
    assert_end(&steady, "killed", "linked_exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_past_its_intensity_fails_and_takes_its_children_down() {
    let app = actors_app(&[]).await;
    let supervisor = app
        .spawn(json!({
            "name": "sup", "worker": "supervisor", "duration": 0,
            "payload": {"intensity": 2, "period_secs": 60,
                "children": [
                    {"worker": "actor", "name": "doomed",
                     "payload": script(json!([{"op": "fail", "message": "always"}]))},
                    {"worker": "actor", "name": "bystander",
                     "payload": script(json!([{"op": "sleep", "ms": 30_000}]))},
                ]}
        }))
        .await;
    let record = app.wait_end(&supervisor).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        str_of(&record["error"]).contains("more than 2 restarts"),
        "{record}"
    );
    let lines = logged(&app, &supervisor).await;
    assert_eq!(events(&lines, "child_failed").len(), 3, "{lines:?}");
    assert_eq!(events(&lines, "child_restarted").len(), 2, "{lines:?}");
    let exceeded = events(&lines, "intensity_exceeded");
    assert_eq!(exceeded.len(), 1, "{lines:?}");
    assert_eq!(exceeded[0]["intensity"], 2);
    let bystander = events(&lines, "child_started")
        .into_iter()
        .find(|line| line["name"] == "bystander")
        .map(|line| str_of(&line["pid"]))
        .expect("the bystander started");
    let end = app.wait_end(&bystander).await;
    assert_end(&end, "killed", "linked_exit");
    assert!(str_of(&end["error"]).contains(&supervisor), "{end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_for_all_supervisor_restarts_every_child_when_one_fails() {
    let app = actors_app(&[]).await;
    let supervisor = app
        .spawn(json!({
            "name": "sup", "worker": "supervisor", "duration": 0,
            "payload": {"strategy": "one_for_all", "intensity": 20, "period_secs": 60,
                "children": [
                    {"worker": "actor", "name": "a",
                     "payload": script(json!([{"op": "sleep", "ms": 500},
                                              {"op": "fail", "message": "a broke"}]))},
                    {"worker": "actor", "name": "b",
                     "payload": script(json!([{"op": "sleep", "ms": 30_000}]))},
                ]}
        }))
        .await;
    let lines = wait_logged(&app, &supervisor, "both restarted", |lines| {
        let restarted = events(lines, "child_restarted");
        ["a", "b"]
            .iter()
            .all(|name| restarted.iter().any(|line| line["name"] == *name))
    })
    .await;
    let started: HashMap<String, String> = events(&lines, "child_started")
        .into_iter()
        .map(|line| (str_of(&line["name"]), str_of(&line["pid"])))
        .collect();
    let failed = events(&lines, "child_failed");
    assert_eq!(failed[0]["name"], "a", "{lines:?}");
    for line in events(&lines, "child_restarted") {
        assert_eq!(line["strategy"], "one_for_all", "{line}");
    }
    let first_b = app.wait_end(&started["b"]).await;
    assert_end(&first_b, "killed", "killed");
    assert_eq!(
        app.wait_end(&started["a"]).await["status"],
        "failed",
        "the child that failed"
    );

    kill(&app, &supervisor).await;
    let lines = logged(&app, &supervisor).await;
    let last_b = events(&lines, "child_restarted")
        .into_iter()
        .rev()
        .find(|line| line["name"] == "b")
        .map(|line| str_of(&line["pid"]))
        .expect("b restarted");
    assert_ne!(last_b, started["b"]);
    let end = app.wait_end(&last_b).await;
    assert_end(&end, "killed", "linked_exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_or_a_deadline_ends_a_task_blocked_in_receive() {
    let app = actors_app(&[]).await;
    let blocked = json!([{"op": "receive", "timeout_ms": 60_000}]);
    let killed = start_actor(&app, "killed", blocked.clone()).await;
    // The first step has logged its spec line and asked to receive.
    wait_logged(&app, &killed, "its spec", |lines| {
        !ops(lines, "spec").is_empty()
    })
    .await;
    let record = kill(&app, &killed).await;
    assert_end(&record, "killed", "killed");
    assert!(ops(&logged(&app, &killed).await, "receive").is_empty());

    let mut late = actor("late", blocked.clone());
    late["deadline"] = json!(1);
    let record = app.run(late).await;
    assert_end(&record, "failed", "deadline_exceeded");

    // A restart policy applies as to a sleeping task: each attempt runs out of time.
    let mut again = actor("again", blocked);
    again["deadline"] = json!(1);
    again["restart"] = json!("on-failure");
    again["max_attempts"] = json!(2);
    let record = app.run(again).await;
    assert_end(&record, "failed", "deadline_exceeded");
    assert_eq!(record["attempt"], 2, "{record}");
    let attempts: Vec<&Value> = record["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| &attempt["outcome"])
        .collect();
    assert_eq!(
        attempts,
        [&json!("deadline_exceeded"), &json!("deadline_exceeded")],
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_worker_runs_beside_0_2_0_ones_and_is_watched_like_any_task() {
    let app = actors_app(&[]).await;
    let (status, info) = app.get("/api/workers/legacy").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["name"], "legacy", "{info}");

    let legacy = app
        .spawn(json!({"name": "old", "worker": "legacy", "duration": 2}))
        .await;
    let watcher = start_actor(
        &app,
        "watcher",
        json!([{"op": "monitor", "pid": legacy}, {"op": "receive", "timeout_ms": 30_000}]),
    )
    .await;
    // It has a mailbox, which it never reads.
    let (status, body) = post(&app, &legacy, &json!({"to": "legacy"})).await;
    assert_eq!(status, 202, "{body}");
    let live = record(&app, &legacy).await;
    assert_eq!(live["actor"]["mailbox"], 1, "{live}");

    let record = app.wait_end(&legacy).await;
    assert_exited_0(&record);
    let (_, logs) = app.get(&format!("/api/tasks/{legacy}/logs")).await;
    assert!(
        logs["lines"].to_string().contains("legacy worker finished"),
        "{logs}"
    );
    assert_exited_0(&app.wait_end(&watcher).await);
    let line = one(&logged(&app, &watcher).await, "receive").clone();
    assert_eq!(line["got"], "down", "{line}");
    assert_eq!(line["end"]["pid"], legacy.as_str(), "{line}");
    assert_eq!(line["end"]["status"], "exited", "{line}");
    assert_eq!(line["end"]["exit_code"], 0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawns_children_under_the_same_admission_as_http() {
    let app = actors_app(&[]).await;
    let parent = app
        .run(actor(
            "parent",
            json!([
                {"op": "spawn", "worker": "default", "name": "kid"},
                {"op": "spawn", "worker": "nope", "name": "lost"},
                {"op": "spawn", "worker": "actor", "name": " "},
                {"op": "spawn", "worker": "actor", "name": "forever", "duration": 1_000_000_000},
            ]),
        ))
        .await;
    assert_exited_0(&parent);
    let parent = str_of(&parent["pid"]);
    let lines = logged(&app, &parent).await;
    let spawns = ops(&lines, "spawn");
    let kid = spawned(spawns[0]);
    let errors: Vec<&Value> = spawns[1..].iter().map(|line| &line["error"]).collect();
    assert_eq!(
        errors,
        [
            &json!("unknown_worker"),
            &json!("refused"),
            &json!("refused")
        ],
        "{lines:?}"
    );
    assert_eq!(spawns[1]["detail"], "nope", "{lines:?}");

    let record = app.wait_end(&kid).await;
    assert_exited_0(&record);
    assert_eq!(record["worker"], "default");
    assert_eq!(record["parent"], parent.as_str());
    let (_, page) = app.get("/api/tasks").await;
    let listed = page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|task| task["pid"] == kid.as_str())
        .expect("the child is listed");
    assert_eq!(listed["parent"], parent.as_str(), "{listed}");
    let (_, page) = app.get(&format!("/api/tasks?parent={parent}")).await;
    let children: Vec<&Value> = page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|task| &task["pid"])
        .collect();
    assert_eq!(children, [&json!(kid)], "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_kills_another_and_its_monitor_sees_the_kill() {
    let app = actors_app(&[]).await;
    let killer = app
        .run(actor(
            "killer",
            json!([
                {"op": "spawn", "worker": "actor", "name": "victim", "monitor": true,
                 "payload": script(json!([{"op": "sleep", "ms": 30_000}]))},
                {"op": "kill", "pid": "$child"},
                {"op": "receive", "timeout_ms": 30_000},
            ]),
        ))
        .await;
    assert_exited_0(&killer);
    let lines = logged(&app, str_of(&killer["pid"]).as_str()).await;
    let victim = spawned(one(&lines, "spawn"));
    assert_eq!(one(&lines, "kill")["ok"], true, "{lines:?}");
    let line = one(&lines, "receive");
    assert_eq!(line["got"], "down", "{line}");
    assert_eq!(line["end"]["pid"], victim.as_str(), "{line}");
    assert_eq!(line["end"]["status"], "killed", "{line}");
    assert_eq!(line["end"]["outcome"], "killed", "{line}");
    assert_end(&app.wait_end(&victim).await, "killed", "killed");
}
