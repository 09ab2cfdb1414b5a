//! Issue #24: calls. An HTTP client calls a task (`POST /api/tasks/{pid}/calls`) and gets its
//! answer; a task calls another (`ctx.call`); a call that the callee does not answer ends in
//! time with what happened, and leaves nothing behind. Also: the example `kv` actor, and a
//! worker built against 0.2.0 running beside 0.3.0 ones.
//!
//! Most tasks run the scriptable `actor` test worker (guest/workers/examples/actor.rs), which
//! logs one JSON line per op. Every wait is bounded by [`common::PATIENCE`]; no test asserts a
//! timing.

mod common;

use std::time::Duration;

use common::workers::{actor, logged, registry};
use common::{PATIENCE, TestApp, registry_config, start_app, temp_dir};
use serde_json::{Value, json};

/// A host with the default, `actor`, `kv` and `v02` workers, with command-line `args`.
async fn calls_app(args: &[&str]) -> TestApp {
    let more = r#"
[workers.kv]
module = "{module:kv}"

[workers.v02]
module = "{module:v02}"
max_memory = "16MiB"
"#;
    let mut args = args.to_vec();
    args.extend(["--capacity", "64"]);
    start_app(registry_config(&registry(&temp_dir("calls"), more), &args)).await
}

/// POSTs `body` (JSON text) as a call to `target` with `query`: status, content type, body.
async fn call_raw(app: &TestApp, target: &str, query: &str, body: &str) -> (u16, String, String) {
    let answer = app
        .client
        .post(app.url(&format!("/api/tasks/{target}/calls{query}")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, answer.text().await.expect("a body"))
}

/// Calls `target` with `body`: status and the answer's JSON.
async fn call(app: &TestApp, target: &str, body: Value) -> (u16, Value) {
    let (status, _, text) = call_raw(app, target, "?timeout=10", &body.to_string()).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json)
}

/// Waits until `name` is registered.
async fn registered(app: &TestApp, name: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = app.get(&format!("/api/names/{name}")).await;
        if status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_calls_the_kv_actor_and_gets_its_answers_and_its_result() {
    let app = calls_app(&[]).await;
    let kv = app
        .spawn(json!({"name": "kv", "worker": "kv", "duration": 60, "payload": {"name": "cache"}}))
        .await;
    registered(&app, "cache").await;

    let (status, answer) = call(
        &app,
        "name:cache",
        json!({"op": "put", "key": "a", "value": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"ok": true, "previous": null}));
    let (status, answer) = call(&app, &kv, json!({"op": "put", "key": "b", "value": 2})).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"ok": true, "previous": null}))
    );
    let (status, answer) = call(&app, "name:cache", json!({"op": "get", "key": "a"})).await;
    assert_eq!((status, &answer), (200, &json!({"value": {"n": 1}})));
    let (status, answer) = call(&app, "name:cache", json!({"op": "keys"})).await;
    assert_eq!((status, &answer), (200, &json!({"keys": ["a", "b"]})));
    let (status, answer) = call(&app, "name:cache", json!({"op": "nope"})).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");

    // A message is not a call: it is taken, and answers nothing.
    let sent = app
        .client
        .post(app.url("/api/tasks/name:cache/messages"))
        .json(&json!({"op": "get", "key": "a"}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(sent.status(), 202);

    // "stop" ends it; its entries are its result.
    let (status, answer) = call(&app, "name:cache", json!("stop")).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"ok": true, "stopping": true}))
    );
    let record = app.wait_end(&kv).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(
        record["result"],
        json!({"entries": {"a": {"n": 1}, "b": 2}}),
        "{record}"
    );
    let (status, answer) = call(&app, &kv, json!({"op": "keys"})).await;
    assert_eq!(status, 409, "an ended task takes no calls: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_answered_ends_in_time_with_what_happened() {
    let app = calls_app(&[]).await;

    // The callee takes the call and sleeps past the caller's timeout, then answers: the late
    // answer is dropped and counted.
    let slow = app
        .spawn(actor(
            "slow",
            json!([
                {"op": "receive", "timeout_ms": 30_000},
                {"op": "sleep", "ms": 1_500},
                {"op": "reply", "body": "late"},
            ]),
        ))
        .await;
    app.wait_running(&slow).await;
    let (status, _, text) = call_raw(&app, &slow, "?timeout=0.3", "{\"q\": 1}").await;
    assert_eq!(status, 504, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["reason"], "timeout", "{body}");
    assert_eq!(body["pid"], slow.as_str(), "{body}");
    assert!(body.get("ended").is_none(), "{body}");
    app.wait_end(&slow).await;
    let lines = logged(&app, &slow).await;
    let reply = lines
        .iter()
        .find(|line| line["op"] == "reply")
        .expect("reply");
    assert_eq!(reply["ok"], true, "the task's reply was taken: {reply}");
    let late = app
        .metric("http_spawn_call_replies_late_total")
        .await
        .unwrap_or_default();
    assert!(late >= 1.0, "the late reply is counted: {late}");

    // The callee ends without answering: the caller learns how it ended.
    let quits = app
        .spawn(actor(
            "quits",
            json!([{"op": "receive", "timeout_ms": 30_000}, {"op": "exit", "code": 3}]),
        ))
        .await;
    app.wait_running(&quits).await;
    let (status, _, text) = call_raw(&app, &quits, "?timeout=20", "[1, 2]").await;
    assert_eq!(status, 504, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["reason"], "ended", "{body}");
    assert_eq!(body["ended"]["status"], "exited", "{body}");
    assert_eq!(body["ended"]["exit_code"], 3, "{body}");

    // An attempt that fails and is restarted answers the calls it took with its end: the next
    // attempt knows nothing of them.
    let mut restarted = actor(
        "restarted",
        json!([{"op": "receive", "timeout_ms": 30_000}, {"op": "fail", "message": "again"}]),
    );
    restarted["restart"] = json!("on-failure");
    restarted["max_attempts"] = json!(2);
    let restarted = app.spawn(restarted).await;
    app.wait_running(&restarted).await;
    let (status, _, text) = call_raw(&app, &restarted, "?timeout=20", "3").await;
    assert_eq!(status, 504, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["reason"], "ended", "{body}");
    assert_eq!(body["ended"]["outcome"], "guest_error", "{body}");
    assert_eq!(body["ended"]["error"], "again", "{body}");

    // Calls still in the mailbox of a task that ends are answered too.
    let sleeper = app
        .spawn(actor("sleeper", json!([{"op": "sleep", "ms": 60_000}])))
        .await;
    app.wait_running(&sleeper).await;
    let caller = {
        let app_url = app.url(&format!("/api/tasks/{sleeper}/calls?timeout=30"));
        let client = app.client.clone();
        tokio::spawn(async move {
            let answer = client
                .post(app_url)
                .json(&json!({"q": 2}))
                .send()
                .await
                .expect("request sent");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.expect("JSON"))
        })
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.get(&format!("/api/tasks/{sleeper}")).await.1["actor"]["mailbox"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = app.kill(&sleeper).await;
    assert_eq!(status, 200);
    let (status, body) = caller.await.expect("the caller");
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["reason"], "ended", "{body}");
    assert_eq!(body["ended"]["outcome"], "killed", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_clear_errors() {
    let app = calls_app(&["--max-message-bytes", "64", "--max-mailbox-messages", "1"]).await;
    let sleeper = app
        .spawn(actor("sleeper", json!([{"op": "sleep", "ms": 60_000}])))
        .await;
    app.wait_running(&sleeper).await;
    for query in [
        "?timeout=0",
        "?timeout=-1",
        "?timeout=61",
        "?timeout=abc",
        "?timeout=nan",
    ] {
        let (status, _, text) = call_raw(&app, &sleeper, query, "1").await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(text.contains("timeout must be"), "{query}: {text}");
    }
    let (status, _, text) = call_raw(&app, &sleeper, "", "not json").await;
    assert_eq!(status, 400, "{text}");
    let long = format!("\"{}\"", "x".repeat(80));
    let (status, _, text) = call_raw(&app, &sleeper, "", &long).await;
    assert_eq!(status, 413, "{text}");
    let (status, _, text) = call_raw(&app, "00000000-99", "", "1").await;
    assert_eq!(status, 404, "{text}");
    let (status, _, text) = call_raw(&app, "name:nobody", "", "1").await;
    assert_eq!(status, 404, "{text}");
    let wrong_type = app
        .client
        .post(app.url(&format!("/api/tasks/{sleeper}/calls")))
        .header("content-type", "text/plain")
        .body("1")
        .send()
        .await
        .expect("request sent");
    assert_eq!(wrong_type.status(), 415);

    // One message fills its mailbox: the next call is refused, not queued.
    let (status, _, text) = call_raw(&app, &sleeper, "?timeout=0.2", "1").await;
    assert_eq!(status, 504, "the first waits, unanswered: {text}");
    let (status, _, text) = call_raw(&app, &sleeper, "?timeout=0.2", "2").await;
    assert_eq!(status, 429, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_calls_another_and_awaits_its_answer() {
    let app = calls_app(&[]).await;
    let server = app
        .spawn(actor(
            "server",
            json!([{"op": "register", "name": "echoes"}, {"op": "serve", "timeout_ms": 30_000}]),
        ))
        .await;
    registered(&app, "echoes").await;
    let caller = app
        .spawn(actor(
            "caller",
            json!([
                {"op": "call", "to": "name:echoes", "body": {"n": 1}, "timeout_ms": 10_000},
                {"op": "call", "to": server, "body": [2], "timeout_ms": 10_000},
                {"op": "call", "to": "name:nobody", "body": 3, "timeout_ms": 10_000},
                {"op": "call", "to": "$self", "body": 4, "timeout_ms": 200},
                {"op": "call", "to": "name:echoes", "body": "stop", "timeout_ms": 10_000},
            ]),
        ))
        .await;
    let record = app.wait_end(&caller).await;
    assert_eq!(record["status"], "exited", "{record}");
    let calls: Vec<Value> = logged(&app, &caller)
        .await
        .into_iter()
        .filter(|line| line["op"] == "call")
        .collect();
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert_eq!(calls[0]["answer"], json!({"n": 1}), "{calls:?}");
    assert_eq!(calls[1]["answer"], json!([2]), "{calls:?}");
    assert_eq!(calls[2]["error"], "no_such_process", "{calls:?}");
    // A task that calls itself cannot answer while it awaits: its own call times out.
    assert_eq!(calls[3]["error"], "timeout", "{calls:?}");
    assert_eq!(calls[4]["answer"], "stop", "{calls:?}");
    let served = app.wait_end(&server).await;
    assert_eq!(served["status"], "exited", "{served}");
    let summary = logged(&app, &server)
        .await
        .into_iter()
        .rfind(|line| line["op"] == "serve" && line["until"].is_string())
        .expect("the serve's summary");
    assert_eq!(summary["answered"], 3, "{summary}");
    assert_eq!(summary["until"], "stop", "{summary}");

    // The callee ends before it answers: the caller is told how.
    let quitter = app
        .spawn(actor(
            "quitter",
            json!([{"op": "receive", "timeout_ms": 30_000}, {"op": "fail", "message": "no"}]),
        ))
        .await;
    app.wait_running(&quitter).await;
    let caller = app
        .spawn(actor(
            "caller2",
            json!([{"op": "call", "to": quitter, "body": 1, "timeout_ms": 20_000}]),
        ))
        .await;
    app.wait_end(&caller).await;
    let line = logged(&app, &caller)
        .await
        .into_iter()
        .find(|line| line["op"] == "call")
        .expect("the call's line");
    assert_eq!(line["error"], "ended", "{line}");
    assert_eq!(line["end"]["status"], "failed", "{line}");
    assert_eq!(line["end"]["outcome"], "guest_error", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_2_0_worker_runs_beside_0_3_0_ones_and_cannot_answer_a_call() {
    let app = calls_app(&[]).await;
    // Messages reach it as before.
    let old = app
        .spawn(json!({"name": "old", "worker": "v02", "duration": 30}))
        .await;
    app.wait_running(&old).await;
    let sent = app
        .client
        .post(app.url(&format!("/api/tasks/{old}/messages")))
        .json(&json!({"hello": "0.2.0"}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(sent.status(), 202);
    let record = app.wait_end(&old).await;
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["result"], Value::Null, "{record}");
    let (_, logs) = app.get(&format!("/api/tasks/{old}/logs")).await;
    assert!(
        logs.to_string()
            .contains(r#"v0.2 worker got {\"hello\":\"0.2.0\"}"#),
        "{logs}"
    );

    // A call reaches it as a plain message; it ends without answering, which the caller is
    // told.
    let old = app
        .spawn(json!({"name": "old2", "worker": "v02", "duration": 30}))
        .await;
    app.wait_running(&old).await;
    let (status, body) = call(&app, &old, json!({"q": 1})).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["reason"], "ended", "{body}");
    assert_eq!(body["ended"]["exit_code"], 0, "{body}");
}
