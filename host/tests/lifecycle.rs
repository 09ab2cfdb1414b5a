//! Killing tasks and shutting down, end to end over HTTP: every accepted task ends with
//! exactly one recorded end, whatever arrives when.

mod common;

use std::time::Duration;

use common::{numbered_attempts, spawn_app};
use futures::future::join_all;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_task_is_killed_at_once_and_its_place_given_back() {
    let app = spawn_app("default", &["--capacity", "1", "--max-queue", "0"]).await;
    let pid = app.spawn(json!({"name": "long", "duration": 3600})).await;
    app.wait_running(&pid).await;
    assert_eq!(
        app.submit(json!({"name": "refused"})).await.status(),
        429,
        "host full"
    );

    let (status, record) = app.kill(&pid).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["status"], "killed");
    assert_eq!(record["outcome"], "killed");
    assert!(record["ended_at"].is_string());

    // The store is gone and its place free: the one place serves a new task.
    assert_eq!(app.host.live(), 0);
    let next = app.run(json!({"name": "next", "duration": 0})).await;
    assert_eq!(next["exit_code"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_ended_task_is_409_and_an_unknown_one_404() {
    let app = spawn_app("default", &[]).await;
    let record = app.run(json!({"name": "quick", "duration": 0})).await;
    let pid = record["pid"].as_str().expect("pid");
    let (status, answer) = app.kill(pid).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("already ended")
    );
    let (_, again) = app.get(&format!("/api/tasks/{pid}")).await;
    assert_eq!(again["status"], "exited", "the recorded end is kept");

    for unknown in ["00000000-1", "nonsense"] {
        let (status, _) = app.kill(unknown).await;
        assert_eq!(status, 404, "{unknown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_submits_kills_and_subscriptions_at_once_each_task_ends_exactly_once() {
    let app = spawn_app("default", &[]).await;
    // Watch every event while it all happens: each task must end exactly once there too.
    let stream = app
        .client
        .get(app.url("/api/events"))
        .send()
        .await
        .expect("stream opened");
    let exits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&exits);
    let watcher = tokio::spawn(common::read_events(stream, move |name, _| {
        // A lagging reader missed events: it stops, and only the no-duplicates check holds.
        name == "lagged"
            || (name == "exit" && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 300)
    }));
    let pids = join_all((0..300).map(|i| {
        let app = &app;
        async move {
            app.spawn(json!({"name": format!("t{i}"), "duration": i % 3}))
                .await
        }
    }))
    .await;
    // Kill every other task while they start, sleep and exit.
    let kills = join_all(pids.iter().step_by(2).map(|pid| app.kill(pid))).await;
    for (status, answer) in &kills {
        assert!(matches!(status, 200 | 202 | 409), "{status}: {answer}");
    }
    let ends = join_all(pids.iter().map(|pid| app.wait_end(pid))).await;
    for (index, record) in ends.iter().enumerate() {
        let expected: &[&str] = if index % 2 == 0 {
            &["killed", "exited"]
        } else {
            &["exited"]
        };
        let status = record["status"].as_str().expect("status");
        assert!(expected.contains(&status), "{record}");
    }
    let totals = app.host.totals();
    assert_eq!(totals.spawned, 300);
    assert_eq!(
        totals.ended, 300,
        "each task ended exactly once: {totals:?}"
    );
    assert_eq!(app.host.live(), 0);

    let events = watcher.await.expect("the watcher finished");
    let mut exits_by_pid = std::collections::HashMap::<String, usize>::new();
    for (name, data) in &events {
        if name == "exit" {
            *exits_by_pid
                .entry(data["pid"].as_str().expect("pid").to_owned())
                .or_default() += 1;
        }
    }
    if !events.iter().any(|(name, _)| name == "lagged") {
        assert_eq!(exits_by_pid.len(), 300, "an exit event for every task");
    }
    assert!(
        exits_by_pid.values().all(|&n| n == 1),
        "no task ended twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_tasks_lets_short_ones_finish_and_kills_the_rest() {
    let app = spawn_app("default", &[]).await;
    let short = app.spawn(json!({"name": "short", "duration": 1})).await;
    let long = app.spawn(json!({"name": "long", "duration": 3600})).await;
    app.wait_running(&long).await;

    let host = std::sync::Arc::clone(&app.host);
    let shutdown = tokio::task::spawn_blocking(move || host.shutdown(Duration::from_secs(3)));
    // New submissions are refused while the running tasks drain.
    let mut refused = false;
    for _ in 0..100 {
        let response = app.submit(json!({"name": "late"})).await;
        if response.status() == 503 {
            assert!(response.headers().contains_key("retry-after"));
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "a submission during shutdown is refused");
    shutdown.await.expect("shutdown completes");

    let (_, short) = app.get(&format!("/api/tasks/{short}")).await;
    assert_eq!(
        short["status"], "exited",
        "finished within the grace: {short}"
    );
    let (_, long) = app.get(&format!("/api/tasks/{long}")).await;
    assert_eq!(long["status"], "killed", "killed after the grace: {long}");
    let totals = app.host.totals();
    assert_eq!(
        totals.ended, totals.spawned,
        "every accepted task has an end: {totals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_its_shutdown_signal_then_returns() {
    let module = common::module("default").display().to_string();
    let config = common::config(
        &module,
        &["--capacity", "100", "--shutdown-grace-secs", "1"],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http_spawn::run(listener, config, async {
        let _ = signalled.await;
    }));
    let client = reqwest::Client::new();
    let mut accepted = None;
    for _ in 0..200 {
        let sent = client
            .post(format!("{base}/api/tasks"))
            .json(&json!({"name": "long", "duration": 3600}))
            .send()
            .await;
        if let Ok(response) = sent {
            accepted = Some(response.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(accepted, Some(202));
    // An open event stream must not hold the shutdown.
    let stream = client
        .get(format!("{base}/api/events"))
        .send()
        .await
        .expect("stream opened");
    assert_eq!(stream.status(), 200);
    let _ = signal.send(());
    let ended = tokio::time::timeout(common::PATIENCE, server)
        .await
        .expect("run returns after the grace")
        .expect("the server task did not panic");
    assert!(ended.is_ok(), "{ended:?}");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_bound_task_is_killed_mid_step() {
    // Fuel enough for minutes of spinning: only the kill can stop this step.
    let app = spawn_app("spin", &["--fuel-per-step", "1000000000000"]).await;
    let pid = app.spawn(json!({"name": "bad", "duration": 0})).await;
    app.wait_running(&pid).await;
    let (status, record) = app.kill(&pid).await;
    assert_eq!(status, 200, "killed within the wait: {record}");
    assert_eq!(record["status"], "killed", "{record}");
    assert_eq!(record["outcome"], "killed", "{record}");
    app.assert_good_task_exits_0().await;
}

/// The voluntary context switches of the epoch-ticker thread of process `pid` so far.
fn ticker_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc readable");
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "epoch-ticker")
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|count| count.trim().parse::<u64>().ok())
        })
        .sum()
}

/// An idle host's epoch ticker parks (it woke ~500 times a second, guest code running or
/// not), and a step that begins after it parked is still interrupted mid-step by a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_host_s_ticker_sleeps_and_still_wakes_for_a_running_step() {
    let spin = common::module("spin").display().to_string();
    let args = [
        "--store",
        "memory",
        "--module",
        &spin,
        "--max-memory",
        "16MiB",
        "--fuel-per-step",
        "1000000000000",
    ]
    .map(str::to_owned);
    let host = common::process::Binary::spawn(&args, &[], None);
    host.ready().await;
    // The module's smoke run at start was the last guest code; ~100 ms later the ticker parks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ticker_switches(host.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let woken = ticker_switches(host.pid()) - before;
    assert!(
        woken < 10,
        "the ticker woke {woken} times in a second of idleness"
    );

    let pid = host.spawn(json!({"name": "bad", "duration": 0})).await;
    host.wait_running(&pid).await;
    let (status, record) = host.kill(&pid).await;
    assert_eq!(status, 200, "killed within the wait: {record}");
    assert_eq!(record["outcome"], "killed", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_obeyed_and_violated() {
    let app = spawn_app("default", &[]).await;
    let kept = app
        .run(json!({"name": "kept", "duration": 1, "deadline": 10}))
        .await;
    assert_eq!(kept["status"], "exited", "{kept}");

    let sleeper = app
        .run(json!({"name": "late", "duration": 600, "deadline": 1}))
        .await;
    assert_eq!(sleeper["status"], "failed", "{sleeper}");
    assert_eq!(sleeper["outcome"], "deadline_exceeded", "{sleeper}");
    assert!(
        sleeper["error"]
            .as_str()
            .expect("error")
            .contains("deadline"),
        "{sleeper}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_a_guest_stuck_in_a_loop() {
    let app = spawn_app("spin", &["--fuel-per-step", "1000000000000"]).await;
    let record = app
        .run(json!({"name": "bad", "duration": 0, "deadline": 1}))
        .await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["outcome"], "deadline_exceeded", "{record}");
    app.assert_good_task_exits_0().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_beyond_capacity_wait_in_order_and_past_the_queue_get_429() {
    let app = spawn_app("default", &["--capacity", "1", "--max-queue", "2"]).await;
    let first = app.spawn(json!({"name": "first", "duration": 1})).await;
    let second = app.spawn(json!({"name": "second", "duration": 0})).await;
    let third = app.spawn(json!({"name": "third", "duration": 0})).await;
    let refused = app.submit(json!({"name": "fourth"})).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let (_, health) = app.get("/api/health").await;
    assert_eq!(
        (health["live"].as_u64(), health["queued"].as_u64()),
        (Some(1), Some(2)),
        "{health}"
    );
    let (_, waiting) = app.get(&format!("/api/tasks/{second}")).await;
    assert_eq!(
        waiting["status"], "spawned",
        "waits without an instance: {waiting}"
    );

    let ends = [
        app.wait_end(&first).await,
        app.wait_end(&second).await,
        app.wait_end(&third).await,
    ];
    for end in &ends {
        assert_eq!(end["exit_code"], 0, "{end}");
    }
    let started = |record: &Value| record["started_at"].as_str().expect("started").to_owned();
    assert!(
        started(&ends[0]) <= started(&ends[1]) && started(&ends[1]) <= started(&ends[2]),
        "in order: {ends:?}"
    );
    assert!(
        ends[1]["started_at"].as_str() >= ends[0]["ended_at"].as_str(),
        "the second waited for the first's place"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_task_can_be_killed_and_shutdown_ends_the_queue() {
    let app = spawn_app("default", &["--capacity", "1", "--max-queue", "5"]).await;
    let running = app
        .spawn(json!({"name": "running", "duration": 3600}))
        .await;
    app.wait_running(&running).await;
    let waiting = app.spawn(json!({"name": "waiting", "duration": 0})).await;
    let (status, record) = app.kill(&waiting).await;
    assert_eq!(
        (status, record["status"].as_str()),
        (200, Some("killed")),
        "{record}"
    );
    assert_eq!(record["started_at"], Value::Null, "it never ran");

    let left = app
        .spawn(json!({"name": "left waiting", "duration": 0}))
        .await;
    let host = std::sync::Arc::clone(&app.host);
    tokio::task::spawn_blocking(move || host.shutdown(Duration::from_millis(200)))
        .await
        .expect("shutdown completes");
    for pid in [&running, &left] {
        let (_, record) = app.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(record["status"], "killed", "{record}");
    }
    let totals = app.host.totals();
    assert_eq!(
        totals.ended, totals.spawned,
        "every accepted task has one end: {totals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_each_attempt_in_a_fresh_store_and_records_it() {
    let app = spawn_app("exit7", &[]).await;
    let record = app
        .run(json!({"name": "flaky", "duration": 0, "restart": "on-failure", "max_attempts": 3}))
        .await;
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 7);
    assert_eq!(record["attempt"], 3, "{record}");
    assert_eq!(
        numbered_attempts(&record),
        [(1, 7), (2, 7), (3, 7)],
        "{record}"
    );
    // Each attempt started its own instance: the worker slept its one step every time.
    assert_eq!(app.host.totals().started, 3);
    assert_eq!(app.host.totals().ended, 1, "one task, one end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_exit_is_never_restarted() {
    let app = spawn_app("default", &[]).await;
    let record = app
        .run(json!({"name": "fine", "duration": 0, "restart": "on-failure", "max_attempts": 5}))
        .await;
    assert_eq!(record["status"], "exited");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["attempt"], 1, "{record}");
    assert!(record.get("attempts").is_none(), "{record}");
    assert_eq!(app.host.totals().started, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_to_restart_can_be_killed() {
    let app = spawn_app("spin", &["--fuel-per-step", "1000000"]).await;
    let pid = app
        .spawn(json!({"name": "bad", "duration": 0, "restart": "on-failure", "max_attempts": 10}))
        .await;
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let (_, record) = app.get(&format!("/api/tasks/{pid}")).await;
        if record["attempt"].as_u64() >= Some(3) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never restarted: {record}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, record) = app.kill(&pid).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["status"], "killed", "{record}");
    let attempts = record["attempts"].as_array().expect("attempts");
    assert!(
        attempts
            .iter()
            .take(2)
            .all(|a| a["outcome"] == "out_of_fuel"),
        "{record}"
    );
    assert_eq!(
        attempts.last().map(|a| &a["outcome"]),
        Some(&json!("killed")),
        "{record}"
    );
    assert_eq!(app.host.live(), 0, "the place is given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_that_overtakes_its_spawn_still_kills() {
    // One scheduler thread, kept busy by a compute step, so that a new task's spawn can still
    // wait in the thread's inbox when its kill arrives and finds nothing to end.
    let dir = common::temp_dir("overtaken-kill");
    let registry = dir.join("http-spawn.toml");
    std::fs::write(
        &registry,
        format!(
            "[workers.default]\nmodule = \"{}\"\n\n[workers.spin]\nmodule = \"{}\"\n\
             max_memory = \"16MiB\"\nfuel_per_step = 4_000_000_000\n",
            common::module("default").display(),
            common::module("spin").display(),
        ),
    )
    .expect("write the registry");
    let config = common::registry_config(&registry, &["--worker-threads", "1"]);
    let app = common::start_app(config).await;
    for _ in 0..3 {
        let busy = json!({"name": "busy", "worker": "spin", "payload": {"iterations": 20_000_000}});
        let busy = app.spawn(busy).await;
        let victim = app.spawn(json!({"name": "victim", "duration": 30})).await;
        let (status, record) = app.kill(&victim).await;
        assert!(status == 200 || status == 202, "{status} {record}");
        let record = app.wait_end(&victim).await;
        assert_eq!(
            record["status"], "killed",
            "the kill was not lost: {record}"
        );
        assert_eq!(app.wait_end(&busy).await["exit_code"], 0);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue #23, item 7: while a task accepted longer than `--max-start-lag` ago still waits to
/// start, new submissions wait for the host to catch up (up to ten times the lag), then get
/// `429` with `Retry-After`, instead of adding work it cannot start; every task it accepted
/// runs, and once it has caught up it takes new ones again. (1 ms on one scheduler thread:
/// any backlog at all is past it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_behind_refuses_new_tasks_until_it_has_caught_up() {
    let app = spawn_app(
        "default",
        &["--max-start-lag", "1ms", "--worker-threads", "1"],
    )
    .await;
    let app = std::sync::Arc::new(app);
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None::<(Option<String>, Value)>));
    // Submitters in parallel until one is refused as late; bounded in time and count.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let submitters = (0..32).map(|_| {
        let (app, refused) = (std::sync::Arc::clone(&app), std::sync::Arc::clone(&refused));
        async move {
            let mut accepted = Vec::new();
            for _ in 0..500 {
                if std::time::Instant::now() > deadline
                    || refused.lock().expect("not poisoned").is_some()
                {
                    break;
                }
                let response = app.submit(json!({"name": "burst", "duration": 0})).await;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let body: Value = response.json().await.expect("JSON body");
                match status {
                    202 => accepted.push(body["pid"].as_str().expect("pid").to_owned()),
                    429 => {
                        *refused.lock().expect("not poisoned") = Some((retry_after, body));
                    }
                    other => panic!("answered {other}: {body}"),
                }
            }
            accepted
        }
    });
    let accepted: Vec<String> = join_all(submitters).await.into_iter().flatten().collect();
    let (retry_after, body) = refused
        .lock()
        .expect("not poisoned")
        .take()
        .expect("a submission refused while the host was behind");
    assert!(retry_after.is_some(), "a 429 carries Retry-After: {body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("--max-start-lag")),
        "{body}"
    );
    for pid in &accepted {
        let record = app.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
    }
    // Caught up: nothing waits to start, so nothing is late.
    let pid = app.spawn(json!({"name": "after", "duration": 0})).await;
    assert_eq!(app.wait_end(&pid).await["status"], "exited");
    let late = app.metric("http_spawn_tasks_refused_late_total").await;
    assert!(late.is_some_and(|late| late >= 1.0), "{late:?}");
}
