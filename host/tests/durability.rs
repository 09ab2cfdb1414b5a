//! The durable store end to end: the real binary stopped (gracefully or with SIGKILL) and
//! started again on the same SQLite file, idempotent retries, a store that cannot write, and
//! the store files a host refuses at start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::Binary;
use common::workers::messages;
use common::{PATIENCE, module, spawn_app, temp_dir};
use serde_json::{Value, json};

/// The admin token the binary is started with, where a test swaps workers.
const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The real binary on the SQLite file `dir/tasks.db`, running the default worker, with `args`
/// added; once it answers.
async fn start(dir: &Path, args: &[&str]) -> Binary {
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    let module = module("default").display().to_string();
    let mut argv: Vec<String> = [
        "--store",
        &store,
        "--module",
        &module,
        "--shutdown-grace-secs",
        "1",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if !args.contains(&"--capacity") {
        argv.extend(["--capacity", "500"].map(String::from));
    }
    argv.extend(args.iter().map(ToString::to_string));
    let host = Binary::spawn(&argv, &[("HTTP_SPAWN_ADMIN_TOKEN", ADMIN_TOKEN)], None);
    host.ready().await;
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_history_logs_and_worker_versions() {
    let dir = temp_dir("durable-restart");
    let mut host = start(&dir, &[]).await;
    let pid = host.spawn(json!({"name": "before", "duration": 2})).await;
    // Progress is kept in memory while the task runs, and shows all the same.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, record) = host.get(&format!("/api/tasks/{pid}")).await;
        if record["step"].as_u64().is_some_and(|step| step >= 1) {
            assert_eq!(record["status"], "running", "{record}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress: {record}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended = host.wait_end(&pid).await;
    assert_eq!(
        ended["step"], 2,
        "the last step is written with the end: {ended}"
    );
    let logged = messages(&host, &pid).await;
    assert!(!logged.is_empty(), "the task logged");

    let (_, default) = host.get("/api/workers/default").await;
    let report = std::fs::read(module("report")).expect("the report worker");
    let swapped = host
        .client
        .put(host.url("/api/workers/default"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/wasm")
        .body(report)
        .send()
        .await
        .expect("request sent");
    assert_eq!(swapped.status(), 200);
    let (_, uploaded) = host.get("/api/workers/default").await;
    host.stop();

    let mut host = start(&dir, &[]).await;
    let (status, again) = host.get(&format!("/api/tasks/{pid}")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, ended, "the record is as it was");
    assert_eq!(messages(&host, &pid).await, logged, "and so are its logs");
    let (_, listed) = host.get("/api/tasks").await;
    assert_eq!(listed["tasks"][0]["pid"], pid.as_str(), "{listed}");

    let (_, worker) = host.get("/api/workers/default").await;
    assert_eq!(
        worker["current"]["version"], uploaded["current"]["version"],
        "the uploaded version is still current: {worker}"
    );
    assert_eq!(worker["current"]["source"], "upload", "{worker}");
    assert_eq!(
        worker["previous"]["version"], default["current"]["version"],
        "and the rollback target is still there: {worker}"
    );
    let rolled_back = host
        .client
        .post(host.url("/api/workers/default/rollback"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(rolled_back.status(), 200);
    let (_, worker) = host.get("/api/workers/default").await;
    assert_eq!(worker["current"]["version"], default["current"]["version"]);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_no_accepted_task_and_reruns_only_the_unfinished() {
    let dir = temp_dir("durable-crash");
    // Room for 100 at once: the rest wait in the queue when the host dies.
    let mut host = start(&dir, &["--capacity", "100"]).await;
    // Every fourth ends at once, the others (1 to 3 s) are still running or waiting for a
    // place when the host dies; every fifth asks to fail rather than run again.
    let mut pids = Vec::new();
    for i in 0..300u32 {
        let mut body =
            json!({"name": format!("t{i}"), "duration": if i % 4 == 0 { 0 } else { 1 + i % 3 }});
        if i % 5 == 0 {
            body["on_host_loss"] = json!("fail");
        }
        pids.push((host.spawn(body).await, i % 5 == 0));
    }
    host.wait_end(&pids[296].0).await;
    // What had ended before the crash, as the host then showed it.
    let mut ended_before = Vec::new();
    for (pid, _) in &pids {
        let (_, record) = host.get(&format!("/api/tasks/{pid}")).await;
        if matches!(record["status"].as_str(), Some("exited" | "failed")) {
            ended_before.push((pid.clone(), record));
        }
    }
    host.crash();

    let mut host = start(&dir, &["--capacity", "100"]).await;
    let mut reran = 0;
    for (pid, fail_on_loss) in &pids {
        let record = host.wait_end(pid).await;
        if let Some((_, before)) = ended_before.iter().find(|(ended, _)| ended == pid) {
            assert_eq!(&record, before, "an ended task is never run again");
            continue;
        }
        let lost = record["attempts"]
            .as_array()
            .is_some_and(|attempts| attempts.iter().any(|a| a["outcome"] == "host_lost"));
        if *fail_on_loss && (lost || record["outcome"] == "host_lost") {
            assert_eq!(record["status"], "failed", "{record}");
            assert_eq!(record["outcome"], "host_lost", "{record}");
        } else {
            assert_eq!(record["status"], "exited", "{record}");
            assert_eq!(record["exit_code"], 0, "{record}");
            reran += usize::from(lost);
        }
    }
    assert!(reran > 0, "the crash came while tasks ran");
    let (_, health) = host.get("/api/health").await;
    assert_eq!(health["live"], 0, "{health}");
    eprintln!(
        "{} ended before the crash, {reran} ran again after it",
        ended_before.len()
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_task_that_asked_to_fail_ends_failed_host_lost() {
    let dir = temp_dir("durable-fail");
    let mut host = start(&dir, &[]).await;
    let pid = host
        .spawn(json!({"name": "once", "duration": 60, "on_host_loss": "fail"}))
        .await;
    let again = host.spawn(json!({"name": "again", "duration": 60})).await;
    host.wait_running(&pid).await;
    host.wait_running(&again).await;
    host.crash();

    let mut host = start(&dir, &[]).await;
    let record = host.wait_end(&pid).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["outcome"], "host_lost", "{record}");
    let (_, rerun) = host.get(&format!("/api/tasks/{again}")).await;
    assert_eq!(rerun["attempt"], 2, "{rerun}");
    assert_eq!(rerun["attempts"][0]["outcome"], "host_lost", "{rerun}");
    assert_ne!(rerun["status"], "failed", "{rerun}");
    let (status, _) = host.kill(&again).await;
    assert_eq!(status, 200);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_a_retry_with_the_first_pid() {
    let dir = temp_dir("durable-idempotency");
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    let app = spawn_app("default", &["--store", &store, "--idempotency-ttl", "2s"]).await;
    let submit = |key: &'static str, body: Value| {
        let request = app
            .client
            .post(app.url("/api/tasks"))
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let answer = request.send().await.expect("request sent");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.expect("JSON body"))
        }
    };
    let body = json!({"name": "pay", "duration": 0});
    let (status, first) = submit("order-1", body.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, retry) = submit("order-1", body.clone()).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry["pid"], first["pid"], "the same task");
    assert_eq!(app.host.totals().spawned, 1, "nothing else was started");

    let (status, other) = submit("order-1", json!({"name": "pay", "duration": 1})).await;
    assert_eq!(status, 422, "{other}");
    let too_long: &'static str = Box::leak("k".repeat(256).into_boxed_str());
    let (status, refused) = submit(too_long, body.clone()).await;
    assert_eq!(status, 400, "{refused}");

    // Past its time to live, a key is a new request.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, later) = submit("order-1", body).await;
    assert_eq!(status, 202, "{later}");
    assert_ne!(later["pid"], first["pid"]);
}

/// Mounts a tmpfs of `size` at `dir` for the life of the value; `None` where this process may
/// not mount (not root), which the caller reports.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_the_host_recovers_by_itself() {
    let dir = temp_dir("durable-full");
    let Some(_tmpfs) = Tmpfs::mount(&dir, "4m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; run the suite as root (as CI does)");
        return;
    };
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    let app = spawn_app("default", &["--store", &store]).await;
    let before = app.spawn(json!({"name": "before", "duration": 0})).await;
    app.wait_end(&before).await;

    // Fill the file system to the last byte.
    let filler = dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let mut refused = None;
    for i in 0..200 {
        let answer = app
            .submit(
                json!({"name": format!("full-{i}"), "duration": 0, "payload": "x".repeat(4000)}),
            )
            .await;
        if answer.status() == 503 {
            assert!(answer.headers().contains_key("retry-after"));
            refused = Some(answer.json::<Value>().await.expect("JSON body"));
            break;
        }
        assert_eq!(answer.status(), 202, "accepted until the disk is full");
    }
    let refused = refused.expect("a full disk refuses new tasks with 503");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("store")),
        "{refused}"
    );

    std::fs::remove_file(&filler).expect("room again");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let pid = loop {
        let answer = app.submit(json!({"name": "after", "duration": 0})).await;
        if answer.status() == 202 {
            let body: Value = answer.json().await.expect("JSON body");
            break body["pid"].as_str().expect("pid").to_owned();
        }
        assert_eq!(answer.status(), 503);
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let record = app.wait_end(&pid).await;
    assert_eq!(record["status"], "exited", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_store_and_a_second_host_are_refused_at_start() {
    let dir = temp_dir("durable-refused");
    let path = dir.join("tasks.db");
    let store = format!("sqlite:{}", path.display());
    let config = common::config(
        &module("default").display().to_string(),
        &["--store", &store, "--capacity", "64"],
    );

    let first = http_spawn::Host::start(&config).expect("the first host starts");
    let error = http_spawn::Host::start(&config).expect_err("the file is taken");
    let message = format!("{error:#}");
    assert!(
        message.contains("in use by another running host"),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    first.shutdown(Duration::from_secs(1));
    drop(first);

    let corrupt = dir.join("corrupt.db");
    std::fs::write(&corrupt, vec![0x5a; 8192]).expect("write garbage");
    let config = common::config(
        &module("default").display().to_string(),
        &[
            "--store",
            &format!("sqlite:{}", corrupt.display()),
            "--capacity",
            "64",
        ],
    );
    let error = http_spawn::Host::start(&config).expect_err("garbage is no store");
    let message = format!("{error:#}");
    assert!(message.contains("corrupt"), "{message}");
    assert!(
        message.contains(&corrupt.display().to_string()),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_tasks_keep_their_order_and_history_is_pruned() {
    let dir = temp_dir("durable-order");
    let args = ["--capacity", "1", "--max-history", "2"];
    let mut host = start(&dir, &args).await;
    let first = host.spawn(json!({"name": "first", "duration": 60})).await;
    host.wait_running(&first).await;
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(
            host.spawn(json!({"name": format!("w{i}"), "duration": 0}))
                .await,
        );
    }
    host.crash();

    let mut host = start(&dir, &args).await;
    let (status, _) = host.kill(&first).await;
    assert_eq!(status, 200, "the first task ran again, and holds the place");
    let mut started = Vec::new();
    for pid in &waiting {
        let record = host.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        started.push(record["started_at"].as_str().expect("started").to_owned());
    }
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(
        started, sorted,
        "they started in the order they were accepted"
    );

    // Of the four ended tasks, the store keeps the newest two.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, listed) = host.get("/api/tasks").await;
        let kept = listed["tasks"].as_array().expect("tasks").len();
        if kept == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never pruned: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = host.get(&format!("/api/tasks/{first}")).await;
    assert_eq!(status, 404, "the oldest end is forgotten");
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_host_keeps_dying_is_not_run_again_without_end() {
    let dir = temp_dir("durable-losses");
    let mut host = start(&dir, &[]).await;
    let pid = host.spawn(json!({"name": "doomed", "duration": 600})).await;
    host.wait_running(&pid).await;
    // The first two losses run it again.
    for loss in 1..=2 {
        host.crash();
        host = start(&dir, &[]).await;
        let (_, record) = host.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(record["attempt"], loss + 1, "{record}");
        host.wait_running(&pid).await;
    }
    // The third ends it.
    host.crash();
    let mut host = start(&dir, &[]).await;
    let record = host.wait_end(&pid).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["outcome"], "host_lost", "{record}");
    let attempts = record["attempts"].as_array().map_or(0, Vec::len);
    assert_eq!(attempts, 3, "every loss is recorded: {record}");
    host.stop();
}
