//! The HTTP contract, end to end on 127.0.0.1: the seed's 202 body, every 4xx, limits in
//! obeyed/violated pairs, and tasks that run to their exit.

mod common;

use common::{TestApp, spawn_app};
use futures::future::join_all;
use serde_json::{Value, json};

async fn post_raw(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut request = app.client.post(app.url("/api/tasks")).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("errors are JSON too");
    (status, body)
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().expect("an error message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_answers_202_with_the_seed_body() {
    let app = spawn_app("default", &[]).await;
    let response = app
        .submit(json!({"name": "generate-report", "duration": 5}))
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let body: Value = response.json().await.expect("JSON");
    let pid = body["pid"].as_str().expect("pid");
    assert_eq!(body["name"], "generate-report");
    assert_eq!(body["status"], "spawned");
    assert_eq!(
        body["message"],
        format!("Process {pid} will run for 5 seconds")
    );
    assert_eq!(location, format!("/api/tasks/{pid}"));
    assert!(
        pid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "URL-safe {pid}"
    );

    let (status, record) = app.get(&location).await;
    assert_eq!(status, 200);
    assert_eq!(record["pid"], pid);
    assert_eq!(record["name"], "generate-report");
    assert_eq!(record["duration"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_defaults_to_3_seconds_and_pids_are_unique() {
    let app = spawn_app("default", &[]).await;
    let mut pids = std::collections::HashSet::new();
    for _ in 0..20 {
        let response = app.submit(json!({"name": "report"})).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("JSON");
        let pid = body["pid"].as_str().expect("pid").to_owned();
        assert_eq!(
            body["message"],
            format!("Process {pid} will run for 3 seconds")
        );
        assert!(pids.insert(pid), "pid reused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_400_with_a_reason() {
    let app = spawn_app("default", &["--max-duration-secs", "60"]).await;
    for (body, reason) in [
        ("{not json", "invalid JSON"),
        ("", "invalid JSON"),
        ("[1]", "JSON object"),
        ("{}", "name is required"),
        (r#"{"duration": 5}"#, "name is required"),
        (r#"{"name": ""}"#, "must not be empty"),
        (r#"{"name": 42}"#, "name must be a string"),
        (r#"{"name": ["a"]}"#, "name must be a string"),
        (r#"{"name": "x", "duration": -1}"#, "non-negative integer"),
        (r#"{"name": "x", "duration": 2.5}"#, "non-negative integer"),
        (r#"{"name": "x", "duration": "5"}"#, "non-negative integer"),
        (r#"{"name": "x", "duration": 61}"#, "at most 60 seconds"),
    ] {
        let (status, answer) = post_raw(&app, Some("application/json"), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(error_of(&answer).contains(reason), "{body}: {answer}");
    }
    let long_name = "n".repeat(257);
    let (status, answer) = post_raw(
        &app,
        Some("application/json"),
        json!({"name": long_name}).to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("at most 256 bytes"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_gets_415() {
    let app = spawn_app("default", &[]).await;
    let body = r#"{"name": "report"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (status, answer) = post_raw(&app, content_type, body).await;
        assert_eq!(status, 415, "{content_type:?}: {answer}");
        assert!(error_of(&answer).contains("application/json"));
    }
    let (status, _) = post_raw(&app, Some("application/json; charset=utf-8"), body).await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_obeyed_and_violated() {
    let app = spawn_app("default", &["--max-body-bytes", "256"]).await;
    let sized = |len: usize| {
        let skeleton = json!({"name": "report", "duration": 0, "payload": ""}).to_string();
        json!({"name": "report", "duration": 0, "payload": "p".repeat(len - skeleton.len())})
            .to_string()
    };
    let (status, _) = post_raw(&app, Some("application/json"), sized(256)).await;
    assert_eq!(status, 202, "a body at the limit is accepted");
    let (status, answer) = post_raw(&app, Some("application/json"), sized(257)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(error_of(&answer).contains("256 bytes"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_limit_obeyed_and_violated() {
    let app = spawn_app("default", &["--max-duration-secs", "5"]).await;
    assert_eq!(
        app.submit(json!({"name": "r", "duration": 5}))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.submit(json!({"name": "r", "duration": 6}))
            .await
            .status(),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_pids_and_methods_get_json_errors() {
    let app = spawn_app("default", &[]).await;
    for path in [
        "/nope",
        "/api/tasks/00000000-1",
        "/api/tasks/not-a-pid",
        "/api/tasks/00000000-1/logs",
    ] {
        let (status, answer) = app.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!error_of(&answer).is_empty());
    }
    let response = app
        .client
        .delete(app.url("/api/health"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 405);
    let answer: Value = response.json().await.expect("JSON");
    assert!(error_of(&answer).contains("DELETE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_its_steps_and_exits_0() {
    let app = spawn_app("default", &[]).await;
    let record = app.run(json!({"name": "report", "duration": 2})).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["outcome"], "exit");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["error"], Value::Null);
    assert_eq!(record["step"], 2);
    assert_eq!(record["steps"], 2);
    assert!(record["fuel_consumed"].as_u64().expect("fuel") > 0);
    for field in ["spawned_at", "started_at", "ended_at"] {
        assert!(record[field].is_string(), "{field} recorded: {record}");
    }
    let pid = record["pid"].as_str().expect("pid");
    let (status, logs) = app.get(&format!("/api/tasks/{pid}/logs")).await;
    assert_eq!(status, 200);
    let messages: Vec<&str> = logs["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| line["message"].as_str().expect("message"))
        .collect();
    // The default worker logs what the seed's worker.lua logs.
    assert_eq!(
        messages,
        [
            "Worker started steps=2",
            "Worker progress step=1 total=2",
            "Worker progress step=2 total=2",
            "Worker done, exiting",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_reaches_the_guest() {
    let app = spawn_app("default", &[]).await;
    let record = app
        .run(json!({"name": "report", "duration": 0, "payload": {"exit_code": 3}}))
        .await;
    assert_eq!(record["status"], "exited");
    assert_eq!(record["exit_code"], 3);
    let record = app
        .run(json!({"name": "report", "duration": 0, "payload": {"exit_code": "x"}}))
        .await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["outcome"], "guest_error");
    assert!(
        record["error"]
            .as_str()
            .expect("error")
            .contains("exit_code must be an integer")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_tasks_all_exit_0() {
    let app = spawn_app("default", &[]).await;
    let submissions = (0..1000).map(|i| {
        let app = &app;
        async move {
            app.spawn(json!({"name": format!("task-{i}"), "duration": 1}))
                .await
        }
    });
    let pids = join_all(submissions).await;
    let ends = join_all(pids.iter().map(|pid| app.wait_end(pid))).await;
    for record in ends {
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["exit_code"], 0, "{record}");
        assert_eq!(record["step"], 1, "{record}");
    }
    let (_, health) = app.get("/api/health").await;
    assert_eq!(health["live"], 0, "every place given back: {health}");
    assert_eq!(health["tasks"]["spawned"], 1000, "{health}");
    assert_eq!(health["tasks"]["exited_ok"], 1000, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_obeyed_and_violated() {
    let app = spawn_app("default", &["--capacity", "2", "--max-queue", "0"]).await;
    let first = app.spawn(json!({"name": "a", "duration": 1})).await;
    let _second = app.spawn(json!({"name": "b", "duration": 1})).await;
    let response = app.submit(json!({"name": "c", "duration": 1})).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer: Value = response.json().await.expect("JSON");
    assert!(error_of(&answer).contains("full"), "{answer}");
    app.wait_end(&first).await;
    let third = app.spawn(json!({"name": "c", "duration": 0})).await;
    assert_eq!(app.wait_end(&third).await["exit_code"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_history_is_bounded() {
    let app = spawn_app("default", &["--max-history", "2"]).await;
    let mut pids = Vec::new();
    for i in 0..3 {
        let pid = app
            .spawn(json!({"name": format!("t{i}"), "duration": 0}))
            .await;
        app.wait_end(&pid).await;
        pids.push(pid);
    }
    assert_eq!(app.get(&format!("/api/tasks/{}", pids[0])).await.0, 404);
    assert_eq!(app.get(&format!("/api/tasks/{}", pids[2])).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_newest_first_filtered_and_paged() {
    let app = spawn_app("default", &[]).await;
    let mut pids = Vec::new();
    for i in 0..5 {
        let name = if i % 2 == 0 { "even" } else { "odd" };
        let duration = if i == 4 { 3600 } else { 0 };
        pids.push(app.spawn(json!({"name": name, "duration": duration})).await);
    }
    for pid in &pids[..4] {
        app.wait_end(pid).await;
    }
    let listed = |page: &Value| -> Vec<String> {
        page["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["pid"].as_str().expect("pid").to_owned())
            .collect()
    };
    let newest_first: Vec<String> = pids.iter().rev().cloned().collect();

    let (status, page) = app.get("/api/tasks?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(listed(&page), newest_first[..2]);
    let next = page["next"].as_str().expect("a next page");
    let (_, page) = app.get(&format!("/api/tasks?limit=2&before={next}")).await;
    assert_eq!(listed(&page), newest_first[2..4]);
    let next = page["next"].as_str().expect("a last page");
    let (_, page) = app.get(&format!("/api/tasks?limit=2&before={next}")).await;
    assert_eq!(listed(&page), newest_first[4..]);
    assert_eq!(page["next"], Value::Null);

    let (_, page) = app.get("/api/tasks?name=odd").await;
    assert_eq!(listed(&page), [pids[3].clone(), pids[1].clone()]);
    let (_, page) = app.get("/api/tasks?status=running").await;
    assert_eq!(listed(&page), [pids[4].clone()]);

    for bad in [
        "status=sleepy",
        "limit=0",
        "limit=100000",
        "limit=x",
        "before=nope",
    ] {
        let (status, answer) = app.get(&format!("/api/tasks?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(!error_of(&answer).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_starts_before_a_task_named_by_its_pid() {
    let app = spawn_app("default", &[]).await;
    let mut pids = Vec::new();
    for _ in 0..3 {
        pids.push(app.spawn(json!({"name": "paged", "duration": 0})).await);
    }
    let (status, page) = app.get(&format!("/api/tasks?before={}", pids[2])).await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<&str> = page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["pid"].as_str().expect("pid"))
        .collect();
    assert_eq!(listed, [pids[1].as_str(), pids[0].as_str()]);

    // A pid the host never gave out names no place in the listing.
    let unknown = format!("{}-fffff", &pids[0][..8]);
    let (status, answer) = app.get(&format!("/api/tasks?before={unknown}")).await;
    assert_eq!(status, 400, "{answer}");
    assert!(error_of(&answer).contains("no task with pid"), "{answer}");
}

/// Issue #21, item 4: a web page the user visits cannot drive a host without API tokens. One
/// that rebinds its own name to 127.0.0.1 sends that name as `Host`: `421`. One that posts
/// across sites sends its `Origin` (or `Sec-Fetch-Site: cross-site`): `403`. No page frames the
/// dashboard, and no answer is sniffed for another type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_cannot_drive_a_host_without_tokens() {
    let app = spawn_app("default", &[]).await;
    let port = app.base.rsplit(':').next().expect("a port").to_owned();
    let body = json!({"name": "from a page", "duration": 0});
    for host in ["evil.example", &format!("evil.example:{port}"), "10.0.0.1"] {
        let answer = app
            .client
            .get(app.url("/api/tasks"))
            .header("host", host)
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), 421, "{host}");
        assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
        let answer = app
            .client
            .post(app.url("/api/tasks"))
            .header("host", host)
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), 421, "{host}");
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let answer = app
            .client
            .get(app.url("/api/tasks"))
            .header("host", host.as_str())
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), 200, "{host}");
    }
    let cross_site = [
        ("origin", "http://evil.example".to_owned()),
        ("origin", "null".to_owned()),
        (
            "origin",
            format!(
                "http://127.0.0.1:{}",
                port.parse::<u16>().expect("port") + 1
            ),
        ),
        ("sec-fetch-site", "cross-site".to_owned()),
    ];
    for (name, value) in &cross_site {
        let answer = app
            .client
            .post(app.url("/api/tasks"))
            .header(*name, value)
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), 403, "{name}: {value}");
        let refused: Value = answer.json().await.expect("JSON");
        assert!(error_of(&refused).contains("cross-site"), "{refused}");
    }
    // The dashboard's own page posts with its own origin; an API client sends none.
    let answer = app
        .client
        .post(app.url("/api/tasks"))
        .header("origin", app.base.as_str())
        .header("sec-fetch-site", "same-origin")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
    let page = app.client.get(app.url("/")).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["content-security-policy"],
        "frame-ancestors 'none'"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let (_, page) = app.get("/api/tasks").await;
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(1), "{page}");
}

/// With API tokens the token guards every request: any `Host` is served, as behind a proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_tokens_serves_any_name() {
    let app = spawn_app(
        "default",
        &["--api-token", "0123456789abcdef0123456789abcdef"],
    )
    .await;
    let answer = app
        .client
        .get(app.url("/api/tasks"))
        .header("host", "tasks.example")
        .bearer_auth("0123456789abcdef0123456789abcdef")
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 200);
}
