//! Observability over HTTP: Prometheus metrics that count exactly what happened, an OpenAPI
//! document that describes every route the host serves, and structured JSON logs from the real
//! binary.

mod common;

use std::collections::HashMap;

use common::{TestApp, module, start_app, temp_dir};
use serde_json::json;

/// `GET /metrics` as a map from `name{labels}` to value.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("text");
    well_formed(&text);
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Checks what a Prometheus scraper relies on: each family's lines together under one `# TYPE`,
/// and each histogram's buckets cumulative, ending in `+Inf` at its `_count`.
fn well_formed(text: &str) {
    let mut typed = HashMap::new();
    let mut family = String::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} typed twice"
            );
            family = name.to_owned();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().expect("a sample's name");
        let base = match typed.get(&family).map(String::as_str) {
            Some("histogram") => ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name),
            _ => name,
        };
        assert_eq!(base, family, "{line} outside its family's lines");
    }
    let mut last: HashMap<String, f64> = HashMap::new();
    for line in text.lines().filter(|line| line.contains("_bucket{")) {
        let (key, value) = line.rsplit_once(' ').expect("a sample");
        let value: f64 = value.parse().expect("a count");
        let (series, le) = key.rsplit_once(",le=").expect("le last");
        let previous = last.insert(series.to_owned(), value).unwrap_or(0.0);
        assert!(value >= previous, "{line}: buckets are cumulative");
        if le == "\"+Inf\"}" {
            let count = series.replacen("_bucket{", "_count{", 1) + "}";
            let count_line = format!("{count} {value}");
            assert!(
                text.lines().any(|line| line == count_line),
                "{count_line} missing"
            );
        }
    }
}

fn value(metrics: &HashMap<String, f64>, key: &str) -> f64 {
    *metrics
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing from /metrics: {metrics:#?}"))
}

/// A host with three workers: the default one, one that spins and one that eats memory.
async fn three_workers() -> TestApp {
    let dir = temp_dir("metrics");
    let registry = dir.join("http-spawn.toml");
    std::fs::write(
        &registry,
        format!(
            r#"
[workers.default]
module = "{default}"

[workers.spin]
module = "{spin}"
max_memory = "16MiB"
fuel_per_step = 2_000_000

[workers.membomb]
module = "{membomb}"
max_memory = "16MiB"
fuel_per_step = 500_000_000
"#,
            default = module("default").display(),
            spin = module("spin").display(),
            membomb = module("membomb").display(),
        ),
    )
    .expect("write the registry");
    start_app(common::registry_config(&registry, &["--capacity", "64"])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_tasks_that_ran() {
    let app = three_workers().await;
    for _ in 0..2 {
        let record = app.run(json!({"name": "good", "duration": 0})).await;
        assert_eq!(record["exit_code"], 0, "{record}");
    }
    let record = app.run(json!({"name": "spin", "worker": "spin"})).await;
    assert_eq!(record["outcome"], "out_of_fuel", "{record}");
    let record = app
        .run(json!({"name": "bomb", "worker": "membomb", "payload": {"mib": 64}}))
        .await;
    assert_eq!(record["outcome"], "memory_limit", "{record}");
    let long = app.spawn(json!({"name": "long", "duration": 60})).await;
    app.wait_running(&long).await;
    let (status, record) = app.kill(&long).await;
    assert_eq!(status, 200, "{record}");
    let refused = app.submit(json!({"name": "x", "worker": "nobody"})).await;
    assert_eq!(refused.status(), 400);
    // Made-up methods are one series, not one each.
    for method in ["BREW", "WHEN"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method token");
        let response = app
            .client
            .request(method, app.url("/api/health"))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 405);
    }

    let metrics = scrape(&app).await;
    for (key, expected) in [
        (r#"http_spawn_tasks_spawned_total{worker="default"}"#, 3.0),
        (r#"http_spawn_tasks_spawned_total{worker="spin"}"#, 1.0),
        (r#"http_spawn_tasks_spawned_total{worker="membomb"}"#, 1.0),
        (r#"http_spawn_tasks_started_total{worker="default"}"#, 3.0),
        (r#"http_spawn_tasks_started_total{worker="spin"}"#, 1.0),
        (
            r#"http_spawn_tasks_ended_total{worker="default",status="exited",outcome="exit"}"#,
            2.0,
        ),
        (
            r#"http_spawn_tasks_ended_total{worker="default",status="killed",outcome="killed"}"#,
            1.0,
        ),
        (
            r#"http_spawn_tasks_ended_total{worker="spin",status="failed",outcome="out_of_fuel"}"#,
            1.0,
        ),
        (
            r#"http_spawn_tasks_ended_total{worker="membomb",status="failed",outcome="memory_limit"}"#,
            1.0,
        ),
        (
            r#"http_spawn_memory_limit_kills_total{worker="membomb"}"#,
            1.0,
        ),
        (
            r#"http_spawn_task_duration_seconds_count{worker="default",outcome="exit"}"#,
            2.0,
        ),
        (
            r#"http_spawn_task_duration_seconds_count{worker="spin",outcome="out_of_fuel"}"#,
            1.0,
        ),
        (
            r#"http_spawn_instantiation_seconds_count{worker="default"}"#,
            3.0,
        ),
        (
            r#"http_spawn_spawn_to_start_seconds_count{worker="default"}"#,
            3.0,
        ),
        ("http_spawn_tasks_running", 0.0),
        ("http_spawn_tasks_queued", 0.0),
        ("http_spawn_capacity", 64.0),
        ("http_spawn_pool_component_instances", 0.0),
        (
            r#"http_requests_total{method="POST",path="/api/tasks",status="202"}"#,
            5.0,
        ),
        (
            r#"http_requests_total{method="POST",path="/api/tasks",status="400"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{method="DELETE",path="/api/tasks/{pid}",status="200"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{method="other",path="/api/health",status="405"}"#,
            2.0,
        ),
        (
            r#"http_request_duration_seconds_count{method="POST",path="/api/tasks"}"#,
            6.0,
        ),
    ] {
        assert_eq!(value(&metrics, key), expected, "{key}");
    }
    assert!(
        !metrics
            .keys()
            .any(|key| key.contains(r#"status="exited",outcome="out_of_fuel""#)),
        "no ended task counted twice"
    );
    // The spinning step burnt its whole budget, and nothing else did it.
    assert!(value(&metrics, r#"http_spawn_fuel_consumed_total{worker="spin"}"#) >= 2_000_000.0);
    let loads: f64 = ["compiled", "cache"]
        .iter()
        .filter_map(|origin| {
            metrics
                .get(&format!(
                    r#"http_spawn_module_loads_total{{worker="default",origin="{origin}"}}"#
                ))
                .copied()
        })
        .sum();
    assert_eq!(loads, 1.0, "the default worker loaded once");
}

/// Replaces each `{parameter}` in an OpenAPI path with a value that exists on this host.
fn concrete(path: &str, pid: &str) -> String {
    path.replace("{pid}", pid).replace("{name}", "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_served() {
    let app = common::spawn_app("default", &[]).await;
    let ended = app.run(json!({"name": "ended", "duration": 0})).await;
    let pid = ended["pid"].as_str().expect("pid").to_owned();

    let (status, document) = app.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        document["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.")
    );
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }

    // Every route the README documents is in the document...
    for (method, path) in [
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks"),
        ("GET", "/api/tasks/{pid}"),
        ("DELETE", "/api/tasks/{pid}"),
        ("GET", "/api/tasks/{pid}/logs"),
        ("GET", "/api/tasks/{pid}/events"),
        ("POST", "/api/tasks/{pid}/messages"),
        ("GET", "/api/names"),
        ("GET", "/api/names/{name}"),
        ("GET", "/api/events"),
        ("GET", "/api/health"),
        ("GET", "/api/workers"),
        ("GET", "/api/workers/{name}"),
        ("PUT", "/api/workers/{name}"),
        ("POST", "/api/workers/{name}/rollback"),
        ("GET", "/metrics"),
        ("GET", "/api/openapi.json"),
        ("POST", "/api/session"),
        ("DELETE", "/api/session"),
        ("GET", "/"),
    ] {
        assert!(
            operations.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    // ...and everything in the document is served: never the "no route" 404 or a 405.
    for (method, path) in &operations {
        let url = app.url(&concrete(path, &pid));
        let request = match method.as_str() {
            "GET" => app.client.get(&url),
            "DELETE" => app.client.delete(&url),
            "PUT" => app
                .client
                .put(&url)
                .header("content-type", "application/wasm"),
            "POST" if path == "/api/tasks" => app
                .client
                .post(&url)
                .json(&json!({"name": "doc", "duration": 0})),
            _ => app.client.post(&url),
        };
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        // Only a 404's body is read: the event stream's never ends.
        let body = if status == 404 {
            response.text().await.unwrap_or_default()
        } else {
            String::new()
        };
        // A 404 of the resource (no task named `default`) is served; the router's own
        // "no route" 404 is not.
        assert!(
            status != 405 && !(status == 404 && body.contains("no route for")),
            "{method} {path}: {status} {body:?}"
        );
        let documented = &paths[path.as_str()][method.to_lowercase()]["responses"];
        assert!(
            documented.get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which its document does not list: {documented}"
        );
    }
    // The check above means something: an unknown path is the fallback's 404.
    let (status, body) = app.get("/api/nowhere").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().expect("error").contains("no route"));
    for schema in [
        "TaskRecord",
        "Page",
        "WorkerInfo",
        "Health",
        "ErrorBody",
        "Outcome",
    ] {
        assert!(
            document["components"]["schemas"].get(schema).is_some(),
            "schema {schema} missing"
        );
    }
}

/// What schemathesis (`make fuzz-api`) found the document missing, pinned here so that a
/// plain `cargo test` notices it missing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_what_the_fuzzer_found() {
    let app = common::spawn_app("default", &[]).await;
    let (status, document) = app.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            let responses = operation["responses"].as_object().expect("responses");
            // Any route may meet the head limit and a host that cannot answer.
            for status in ["431", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not list {status}"
                );
            }
            for status in ["429", "503"] {
                if let Some(response) = responses.get(status) {
                    assert!(
                        response["headers"].get("Retry-After").is_some(),
                        "{method} {path}: {status} without Retry-After"
                    );
                }
            }
        }
    }
    // An upload is raw bytes, not a JSON array of numbers, under either type it is taken as.
    let upload = &paths["/api/workers/{name}"]["put"]["requestBody"]["content"];
    for media_type in ["application/wasm", "application/octet-stream"] {
        let schema = &upload[media_type]["schema"]["$ref"];
        assert_eq!(
            schema, "#/components/schemas/ModuleBytes",
            "{media_type}: {upload}"
        );
    }
    assert_eq!(
        document["components"]["schemas"]["ModuleBytes"]["format"],
        "binary"
    );
    // Each event of a stream is described, not the stream as one string.
    for path in ["/api/events", "/api/tasks/{pid}/events"] {
        let schema = &paths[path]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
            ["$ref"];
        assert_eq!(schema, "#/components/schemas/StreamEvent", "{path}");
    }
    // The bounds the handlers enforce.
    let limit = paths["/api/tasks"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|parameter| parameter["name"] == "limit")
        .expect("limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000))
    );
    let accepted = &paths["/api/tasks"]["post"]["responses"]["202"];
    assert!(accepted["headers"].get("Location").is_some(), "{accepted}");
    assert!(accepted["links"].get("GetTask").is_some(), "{accepted}");
}
