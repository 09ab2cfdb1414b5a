//! Hostile guests, end to end over HTTP: each is stopped and recorded with the right outcome,
//! the host stays up, and a good task run beside it on the same host exits 0. Every limit is
//! tested obeyed and violated with the same worker.

mod common;

use common::{TestApp, spawn_app};
use serde_json::{Value, json};

/// Runs a hostile task (named `bad`) and a good one beside it on the same host; returns the
/// hostile task's record once the good one has exited 0.
async fn hostile(app: &TestApp, payload: Value) -> Value {
    let bad = app
        .spawn(json!({"name": "bad", "duration": 0, "payload": payload}))
        .await;
    let good = app.spawn(json!({"name": "good", "duration": 0})).await;
    let good = app.wait_end(&good).await;
    assert_eq!(good["status"], "exited", "{good}");
    assert_eq!(good["exit_code"], 0, "{good}");
    let record = app.wait_end(&bad).await;
    app.assert_good_task_exits_0().await;
    record
}

fn error_of(record: &Value) -> &str {
    record["error"].as_str().unwrap_or_default()
}

async fn logs(app: &TestApp, pid: &Value) -> Value {
    let pid = pid.as_str().expect("pid");
    let (status, logs) = app.get(&format!("/api/tasks/{pid}/logs")).await;
    assert_eq!(status, 200);
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_obeyed_and_violated() {
    let app = spawn_app("spin", &["--fuel-per-step", "5000000"]).await;
    let record = hostile(&app, json!({"iterations": 1000})).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 0);

    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["outcome"], "out_of_fuel");
    assert!(
        error_of(&record).contains("out of fuel in step 0"),
        "{record}"
    );
    assert!(
        record["fuel_consumed"].as_u64().expect("fuel") >= 5_000_000,
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cap_obeyed_and_violated() {
    let app = spawn_app(
        "membomb",
        &["--max-memory", "16MiB", "--fuel-per-step", "500000000"],
    )
    .await;
    let record = hostile(&app, json!({"mib": 4})).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 0);

    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(
        record["outcome"], "memory_limit",
        "a limit kill, not a guest bug: {record}"
    );
    assert!(error_of(&record).contains("16777216"), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_obeyed_and_violated() {
    let app = spawn_app("recurse", &["--fuel-per-step", "500000000"]).await;
    let record = hostile(&app, json!({"depth": 1000})).await;
    assert_eq!(record["status"], "exited", "{record}");

    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["outcome"], "stack_overflow", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_panic_is_recorded_with_its_message() {
    let app = spawn_app("panic", &[]).await;
    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["outcome"], "panic", "{record}");
    assert!(
        error_of(&record).contains("the worker gave up on purpose"),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_trap_is_recorded_as_a_trap() {
    let app = spawn_app("abort", &[]).await;
    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["outcome"], "trap", "{record}");
    assert!(error_of(&record).contains("unreachable"), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_code_is_recorded() {
    let app = spawn_app("exit7", &[]).await;
    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["outcome"], "exit");
    assert_eq!(record["exit_code"], 7);
    assert_eq!(record["step"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reaches_no_file_environment_or_argument() {
    // SAFETY of the claim: the host process itself has an environment and files to find.
    assert!(std::env::vars().next().is_some());
    let app = spawn_app("snoop", &["--fuel-per-step", "500000000"]).await;
    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "exited", "nothing leaked: {record}");
    assert_eq!(record["exit_code"], 0);
    let logs = logs(&app, &record["pid"]).await;
    let text = logs["lines"].to_string();
    for denied in ["read /etc/passwd: denied", "env: empty", "args: empty"] {
        assert!(text.contains(denied), "{denied:?} missing from {logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_captured_and_capped() {
    let app = spawn_app(
        "chatty",
        &["--max-log-bytes", "4096", "--fuel-per-step", "500000000"],
    )
    .await;
    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 0);
    let logs = logs(&app, &record["pid"]).await;
    let lines = logs["lines"].as_array().expect("lines");
    let kept: usize = lines
        .iter()
        .map(|l| l["message"].as_str().expect("message").len())
        .sum();
    assert!(kept <= 4096, "kept {kept} bytes");
    assert!(lines.iter().any(|l| l["source"] == "stdout"), "{logs}");
    let dropped = logs["dropped_bytes"].as_u64().expect("dropped");
    assert!(dropped > 2 * 256 * 1023, "the rest was counted: {dropped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_wasi_sleep_is_refused() {
    let app = spawn_app("sleeper", &[]).await;
    let record = hostile(&app, Value::Null).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["outcome"], "trap", "{record}");
    assert!(error_of(&record).contains("next::sleep"), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_broken_module_is_a_start_up_error() {
    let config = |module: &str| common::config(module, &["--capacity", "4"]);
    let missing =
        http_spawn::Host::start(&config("/nonexistent/worker.wasm")).expect_err("missing module");
    assert!(
        missing.to_string().contains("make build-guest"),
        "{missing}"
    );
    let junk = std::env::temp_dir().join(format!("http-spawn-junk-{}.wasm", std::process::id()));
    std::fs::write(&junk, b"\0asm junk").expect("write");
    let broken =
        http_spawn::Host::start(&config(&junk.display().to_string())).expect_err("junk module");
    assert!(
        broken
            .to_string()
            .contains("not a usable WebAssembly component"),
        "{broken}"
    );
    let _ = std::fs::remove_file(junk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_too_big_for_the_memory_cap_is_a_start_up_error() {
    let module = common::module("exit7").display().to_string();
    let config = common::config(&module, &["--max-memory", "1MiB", "--capacity", "4"]);
    let error = http_spawn::Host::start(&config).expect_err("a std worker needs more than 1 MiB");
    let message = format!("{error:#}");
    assert!(message.contains("(--max-memory)"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_imports_sockets_is_a_start_up_error() {
    let module = common::module("netprobe").display().to_string();
    let config = common::config(&module, &["--max-memory", "16MiB", "--capacity", "4"]);
    let error = http_spawn::Host::start(&config).expect_err("sockets are not part of the world");
    let message = format!("{error:#}");
    assert!(message.contains("imports wasi:sockets/"), "{message}");
    assert!(
        message.contains("\"default\""),
        "names the worker: {message}"
    );
}
