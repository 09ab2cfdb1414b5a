//! The worker registry over HTTP: named workers from a registry file, hot swap with every
//! check before publishing, rollback, the admin token, module files watched on disk, and the
//! compiled-module cache across restarts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{PATIENCE, TestApp, module, spawn_app, start_app, temp_dir};
use serde_json::{Value, json};

const TOKEN: &str = "test-admin-token";

/// PUTs `bytes` as a new version of worker `name`, with `token` if any.
async fn put_module(
    app: &TestApp,
    name: &str,
    bytes: Vec<u8>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .client
        .put(app.url(&format!("/api/workers/{name}")))
        .header("content-type", "application/wasm")
        .body(bytes);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn rollback(app: &TestApp, name: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/api/workers/{name}/rollback")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

fn bytes_of(name: &str) -> Vec<u8> {
    std::fs::read(module(name)).expect("module readable")
}

/// The version (short SHA-256) the registry would give these bytes.
async fn version_of(app: &TestApp, worker: &str) -> String {
    let (status, info) = app.get(&format!("/api/workers/{worker}")).await;
    assert_eq!(status, 200, "{info}");
    info["current"]["version"]
        .as_str()
        .expect("version")
        .to_owned()
}

async fn logs_text(app: &TestApp, pid: &str) -> String {
    let (status, logs) = app.get(&format!("/api/tasks/{pid}/logs")).await;
    assert_eq!(status, 200, "{logs}");
    logs["lines"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_reaches_new_tasks_while_old_ones_finish_on_their_version() {
    let app = spawn_app("default", &["--admin-token", TOKEN]).await;
    let old = version_of(&app, "default").await;
    let mut sleeping = Vec::new();
    for n in 0..3 {
        let pid = app
            .spawn(json!({"name": format!("old-{n}"), "duration": 2}))
            .await;
        app.wait_running(&pid).await;
        sleeping.push(pid);
    }

    let (status, body) = put_module(&app, "default", bytes_of("report"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    let new = body["worker"]["current"]["version"]
        .as_str()
        .expect("version")
        .to_owned();
    assert_ne!(new, old);
    assert_eq!(body["worker"]["current"]["source"], "upload");
    assert_eq!(body["worker"]["previous"]["version"], old.as_str());

    let fresh = app.spawn(json!({"name": "fresh", "duration": 1})).await;
    for pid in &sleeping {
        let record = app.wait_end(pid).await;
        assert_eq!(record["exit_code"], 0, "{record}");
        assert_eq!(
            record["version"],
            old.as_str(),
            "an old task keeps its version"
        );
        assert!(
            logs_text(&app, pid).await.contains("Worker done, exiting"),
            "ran the default worker"
        );
    }
    let record = app.wait_end(&fresh).await;
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["worker"], "default");
    assert_eq!(
        record["version"],
        new.as_str(),
        "a new task gets the new version"
    );
    assert!(
        logs_text(&app, &fresh)
            .await
            .contains("report fresh complete"),
        "ran the report worker"
    );

    // The same bytes again change nothing.
    let (status, body) = put_module(&app, "default", bytes_of("report"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], false);
    assert_eq!(body["worker"]["previous"]["version"], old.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_modules_leave_the_current_version_serving() {
    // Room for the std-built test components, so each is refused for what it is.
    let app = spawn_app(
        "default",
        &["--admin-token", TOKEN, "--max-memory", "16MiB"],
    )
    .await;
    let serving = version_of(&app, "default").await;
    let mut core_module = b"\0asm\x01\0\0\0".to_vec();
    core_module.extend([0u8; 0]);
    for (bytes, status, reason) in [
        (b"not wasm at all".to_vec(), 400, "magic number"),
        (core_module, 400, "core wasm module"),
        (bytes_of("otherworld"), 422, "fits no `worker` world"),
        (bytes_of("netprobe"), 422, "imports wasi:sockets/"),
    ] {
        let (got, body) = put_module(&app, "default", bytes, Some(TOKEN)).await;
        assert_eq!(got, status, "{body}");
        let error = body["error"].as_str().expect("an error message");
        assert!(error.contains(reason), "{reason:?} not in {error:?}");

        let (_, info) = app.get("/api/workers/default").await;
        assert_eq!(
            info["current"]["version"],
            serving.as_str(),
            "still serving: {info}"
        );
        assert!(info["previous"].is_null(), "nothing was published: {info}");
        assert_eq!(info["last_error"]["source"], "upload");
        assert!(
            info["last_error"]["error"]
                .as_str()
                .expect("error")
                .contains(reason)
        );
        let record = app.run(json!({"name": "after", "duration": 0})).await;
        assert_eq!(record["exit_code"], 0, "{record}");
        assert_eq!(record["version"], serving.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_token() {
    let closed = spawn_app("default", &[]).await;
    let (status, body) = put_module(&closed, "default", bytes_of("report"), Some(TOKEN)).await;
    assert_eq!(status, 403, "no token configured: disabled: {body}");
    assert!(body["error"].as_str().expect("error").contains("disabled"));
    assert_eq!(rollback(&closed, "default", Some(TOKEN)).await.0, 403);

    let app = spawn_app(
        "default",
        // Above the report worker's size (about 23 KB), far below the default.
        &["--admin-token", TOKEN, "--max-module-bytes", "30000"],
    )
    .await;
    let response = app
        .client
        .put(app.url("/api/workers/default"))
        .header("content-type", "application/wasm")
        .body(bytes_of("report"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 401);
    assert!(
        response.headers().contains_key("www-authenticate"),
        "401 says how to authenticate"
    );
    let (status, _) = put_module(&app, "default", bytes_of("report"), Some("wrong")).await;
    assert_eq!(status, 403);
    let (status, _) = rollback(&app, "default", Some("wrong")).await;
    assert_eq!(status, 403);
    let (status, body) = put_module(&app, "default", vec![0; 30_001], Some(TOKEN)).await;
    assert_eq!(status, 413, "over --max-module-bytes: {body}");
    let response = app
        .client
        .put(app.url("/api/workers/default"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(bytes_of("report"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 415);
    let (status, body) = put_module(&app, "nobody", bytes_of("report"), Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = put_module(&app, "default", bytes_of("report"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_previous_version_and_back() {
    let app = spawn_app("default", &["--admin-token", TOKEN]).await;
    let original = version_of(&app, "default").await;
    let (status, body) = rollback(&app, "default", Some(TOKEN)).await;
    assert_eq!(status, 409, "nothing to roll back to: {body}");
    let (status, body) = rollback(&app, "nobody", Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = put_module(&app, "default", bytes_of("report"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let swapped = body["worker"]["current"]["version"]
        .as_str()
        .expect("version")
        .to_owned();

    let (status, body) = rollback(&app, "default", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current"]["version"], original.as_str());
    assert_eq!(body["previous"]["version"], swapped.as_str());
    let record = app
        .run(json!({"name": "after-rollback", "duration": 0}))
        .await;
    assert_eq!(record["version"], original.as_str(), "{record}");

    let (status, body) = rollback(&app, "default", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["current"]["version"],
        swapped.as_str(),
        "a second rollback undoes the first"
    );
    let record = app
        .run(json!({"name": "forward-again", "duration": 0}))
        .await;
    assert_eq!(record["version"], swapped.as_str(), "{record}");
}

/// Replaces `path` the way a build or a deploy does: a new file renamed over the old one.
fn replace_file(path: &Path, bytes: &[u8]) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, bytes).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

/// Waits until worker `name` shows `predicate`, or fails after [`PATIENCE`].
async fn wait_worker(app: &TestApp, name: &str, predicate: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, info) = app.get(&format!("/api/workers/{name}")).await;
        if predicate(&info) {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker never got there: {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_file_changed_on_disk_is_checked_and_picked_up() {
    let dir = temp_dir("watch");
    let watched = dir.join("worker.wasm");
    std::fs::copy(module("default"), &watched).expect("copy");
    let registry = dir.join("http-spawn.toml");
    std::fs::write(&registry, "[workers.default]\nmodule = \"worker.wasm\"\n").expect("write");
    let config = common::registry_config(&registry, &["--watch-interval-ms", "25"]);
    let app = start_app(config).await;
    let original = version_of(&app, "default").await;

    replace_file(&watched, &bytes_of("report"));
    let info = wait_worker(&app, "default", |info| {
        info["current"]["version"] != original.as_str()
    })
    .await;
    assert_eq!(info["current"]["source"], "file");
    assert_eq!(info["previous"]["version"], original.as_str());
    let record = app.run(json!({"name": "from-disk", "duration": 0})).await;
    assert_eq!(record["version"], info["current"]["version"], "{record}");
    assert!(
        logs_text(&app, record["pid"].as_str().expect("pid"))
            .await
            .contains("complete")
    );

    // A broken file is refused, with the reason shown, and the good version keeps serving.
    replace_file(&watched, b"half a module");
    let broken = wait_worker(&app, "default", |info| !info["last_error"].is_null()).await;
    assert_eq!(broken["last_error"]["source"], "file");
    assert_eq!(broken["current"]["version"], info["current"]["version"]);
    let record = app.run(json!({"name": "still-fine", "duration": 0})).await;
    assert_eq!(record["exit_code"], 0, "{record}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_takes_compiled_modules_from_the_cache() {
    let cache = temp_dir("cache");
    let cache_arg = cache.display().to_string();
    let default = module("default").display().to_string();
    let args = ["--cache-dir", cache_arg.as_str(), "--capacity", "8"];
    let first = start_app(common::config(&default, &args)).await;
    let (_, info) = first.get("/api/workers/default").await;
    assert_eq!(info["current"]["origin"], "compiled", "{info}");
    drop(first);
    let artifacts = std::fs::read_dir(&cache).expect("cache dir").count();
    assert_eq!(artifacts, 1, "one compiled artifact kept");

    let second = start_app(common::config(&default, &args)).await;
    let (_, info) = second.get("/api/workers/default").await;
    assert_eq!(
        info["current"]["origin"], "cache",
        "no recompilation: {info}"
    );
    let record = second.run(json!({"name": "cached", "duration": 0})).await;
    assert_eq!(record["exit_code"], 0, "{record}");
    let _ = std::fs::remove_dir_all(cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_file_declares_named_workers_with_their_own_limits() {
    let dir = temp_dir("registry");
    let registry = dir.join("http-spawn.toml");
    std::fs::write(
        &registry,
        format!(
            r#"
[server]
max_queue = 50

[workers.default]
module = "{default}"

[workers.report]
module = "{report}"
max_duration_secs = 2
fuel_per_step = 3_000_000
restart = "on-failure"
max_attempts = 2
"#,
            default = module("default").display(),
            report = module("report").display(),
        ),
    )
    .expect("write");
    let config = common::registry_config(&registry, &[]);
    assert_eq!(config.max_queue, 50, "server settings come from the file");
    let app = start_app(config).await;

    let (_, list) = app.get("/api/workers").await;
    let names: Vec<&str> = list["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["default", "report"]);
    let report = &list["workers"][1];
    assert_eq!(report["fuel_per_step"], 3_000_000);
    assert_eq!(report["restart"], "on-failure");

    let record = app
        .run(json!({"name": "q3", "duration": 1, "worker": "report"}))
        .await;
    assert_eq!(record["worker"], "report");
    assert_eq!(record["version"], report["current"]["version"]);
    assert_eq!(record["exit_code"], 0, "{record}");
    let record = app.run(json!({"name": "plain", "duration": 0})).await;
    assert_eq!(record["worker"], "default");

    let response = app.submit(json!({"name": "x", "worker": "nobody"})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("default, report"),
        "{body}"
    );
    let response = app
        .submit(json!({"name": "x", "worker": "report", "duration": 3}))
        .await;
    assert_eq!(
        response.status(),
        400,
        "over the report worker's max_duration_secs"
    );

    // The worker's restart policy applies when the request names none: a start error is
    // retried once (max_attempts = 2); a request may still turn it off.
    let bad =
        json!({"name": "bad", "duration": 0, "worker": "report", "payload": {"rows": "many"}});
    let record = app.run(bad.clone()).await;
    assert_eq!(record["outcome"], "guest_error", "{record}");
    assert_eq!(record["attempt"], 2, "{record}");
    assert!(
        record["fuel_consumed"].as_u64() > Some(0),
        "a failed start's fuel is recorded: {record}"
    );
    let mut once = bad;
    once["restart"] = json!("never");
    let record = app.run(once).await;
    assert_eq!(record["attempt"], 1, "{record}");

    let (_, listed) = app.get("/api/tasks?worker=report").await;
    let tasks = listed["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 3, "{listed}");
    assert!(tasks.iter().all(|t| t["worker"] == "report"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_with_the_same_size_and_time_is_still_noticed() {
    let dir = temp_dir("watch-same-stamp");
    let watched = dir.join("worker.wasm");
    let original = bytes_of("default");
    std::fs::write(&watched, &original).expect("write");
    let registry = dir.join("http-spawn.toml");
    std::fs::write(&registry, "[workers.default]\nmodule = \"worker.wasm\"\n").expect("write");
    let app = start_app(common::registry_config(
        &registry,
        &["--watch-interval-ms", "25"],
    ))
    .await;
    let serving = version_of(&app, "default").await;

    // The same module but one letter of its `producers` section: as valid, as long, another
    // digest. It lands with the old file's modification time, as `cp -p` or `rsync -t` do.
    let at = original
        .windows(5)
        .position(|w| w == b"rustc")
        .expect("the producers section names rustc");
    let mut twin = original.clone();
    twin[at] = b'R';
    let modified = std::fs::metadata(&watched)
        .and_then(|m| m.modified())
        .expect("mtime");
    let temp = dir.join("worker.wasm.new");
    std::fs::write(&temp, &twin).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&temp)
        .and_then(|file| file.set_modified(modified))
        .expect("set the old mtime");
    std::fs::rename(&temp, &watched).expect("rename");

    let info = wait_worker(&app, "default", |info| {
        info["current"]["version"] != serving.as_str()
    })
    .await;
    assert_eq!(info["current"]["source"], "file", "{info}");
    assert_eq!(info["current"]["size_bytes"], original.len(), "{info}");
    let _ = std::fs::remove_dir_all(dir);
}
