//! Issue #25 over HTTP: tasks that run later (`run_at`, `delay`), priorities in the wait
//! queue, retries of ended tasks, schedules, paused workers, and concurrency and rate limits,
//! on the memory store and across SIGKILLs on SQLite (the cluster's in `cluster.rs`).

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::process::Binary;
use common::{
    PATIENCE, assert_one_task_per_tick, intervals, module, most_at_once, spawn_app, temp_dir,
    time_of as time,
};
use serde_json::{Value, json};

/// POSTs `body` to `path` as JSON: the status and the JSON body.
async fn post(remote: &common::Remote, path: &str, body: Value) -> (u16, Value) {
    remote.post(path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_later_holding_no_place_until_its_time() {
    let app = spawn_app("default", &["--capacity", "1"]).await;
    // Scheduled tasks take no place: with one place, a running task and two scheduled ones.
    let (status, accepted) = post(
        &app,
        "/api/tasks",
        json!({"name": "later", "duration": 0, "delay": 1.5}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "scheduled", "{accepted}");
    let later = accepted["pid"].as_str().expect("a pid").to_owned();
    // In two seconds, written at an offset of +02:00.
    let asked = SystemTime::now() + Duration::from_secs(2);
    let utc = humantime::format_rfc3339_millis(asked + Duration::from_secs(7200)).to_string();
    let run_at = format!("{}+02:00", utc.trim_end_matches('Z'));
    let (status, accepted) = post(
        &app,
        "/api/tasks",
        json!({"name": "at", "duration": 0, "run_at": run_at}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let at_pid = accepted["pid"].as_str().expect("a pid").to_owned();
    let running = app.spawn(json!({"name": "now", "duration": 1})).await;
    app.wait_running(&running).await;

    let (_, record) = app.get(&format!("/api/tasks/{later}")).await;
    assert_eq!(record["status"], "scheduled", "{record}");
    assert_eq!(record["started_at"], Value::Null, "{record}");
    let run_at = time(&record, "run_at");
    let (_, listed) = app.get("/api/tasks?status=scheduled").await;
    let pids: Vec<&str> = listed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|task| task["pid"].as_str())
        .collect();
    assert_eq!(pids, [at_pid.as_str(), later.as_str()], "{listed}");
    assert_eq!(app.metric("http_spawn_tasks_scheduled").await, Some(2.0));
    assert_eq!(app.metric("http_spawn_tasks_running").await, Some(1.0));

    for pid in [&later, &at_pid] {
        let ended = app.wait_end(pid).await;
        assert_eq!(ended["status"], "exited", "{ended}");
        assert!(
            time(&ended, "started_at") >= time(&ended, "run_at"),
            "started before its time: {ended}"
        );
    }
    let (_, record) = app.get(&format!("/api/tasks/{later}")).await;
    assert_eq!(
        time(&record, "run_at"),
        run_at,
        "run_at stays in the record"
    );
    let (_, record) = app.get(&format!("/api/tasks/{at_pid}")).await;
    let kept = time(&record, "run_at");
    let off = kept
        .duration_since(asked)
        .or_else(|_| asked.duration_since(kept))
        .expect("a difference");
    assert!(
        off < Duration::from_millis(2),
        "{record}: {kept:?} {asked:?}"
    );
    assert_eq!(app.metric("http_spawn_tasks_scheduled").await, Some(0.0));

    // A time past, or a delay of 0, is now.
    let (status, accepted) = post(
        &app,
        "/api/tasks",
        json!({"name": "past", "duration": 0, "run_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "spawned", "{accepted}");
    let ended = app.wait_end(accepted["pid"].as_str().expect("a pid")).await;
    assert_eq!(ended["run_at"], Value::Null, "{ended}");
    assert_eq!(ended["exit_code"], 0, "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_task_is_killed_at_once_and_bounded_and_bad_times_are_refused() {
    let app = spawn_app("default", &["--max-scheduled", "2"]).await;
    let first = app
        .spawn(json!({"name": "a", "duration": 0, "delay": 3600}))
        .await;
    app.spawn(json!({"name": "b", "duration": 0, "delay": 3600}))
        .await;
    let (status, refused) = post(
        &app,
        "/api/tasks",
        json!({"name": "c", "duration": 0, "delay": 3600}),
    )
    .await;
    assert_eq!(status, 429, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("--max-scheduled")),
        "{refused}"
    );
    // A task to run now still runs.
    app.assert_good_task_exits_0().await;

    let (status, killed) = app.kill(&first).await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["status"], "killed", "{killed}");
    assert_eq!(killed["started_at"], Value::Null, "{killed}");
    // Its place among the scheduled is free again.
    app.spawn(json!({"name": "c", "duration": 0, "delay": 3600}))
        .await;

    app.assert_refused(
        "/api/tasks",
        &[
            (json!({"name": "x", "run_at": "tomorrow"}), "RFC 3339"),
            (json!({"name": "x", "run_at": 7}), "RFC 3339"),
            (
                json!({"name": "x", "run_at": "2026-13-01T00:00:00Z"}),
                "RFC 3339",
            ),
            (json!({"name": "x", "delay": -1}), "non-negative"),
            (json!({"name": "x", "delay": "5"}), "non-negative"),
            (
                json!({"name": "x", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}),
                "not both",
            ),
            (
                json!({"name": "x", "delay": 400 * 86_400}),
                "at most 365 days ahead",
            ),
            (
                json!({"name": "x", "run_at": "9999-01-01T00:00:00Z"}),
                "at most",
            ),
            (json!({"name": "x", "priority": 10}), "priority"),
            (json!({"name": "x", "priority": -1}), "priority"),
            (json!({"name": "x", "priority": 4.5}), "priority"),
            (json!({"name": "x", "priority": "9"}), "priority"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_goes_to_the_highest_priority_first_then_the_oldest() {
    let app = spawn_app("default", &["--capacity", "1"]).await;
    let blocker = app.spawn(json!({"name": "blocker", "duration": 1})).await;
    app.wait_running(&blocker).await;
    let mut waiting = Vec::new();
    let tasks = [
        ("low", Some(1)),
        ("plain", None),
        ("high", Some(9)),
        ("high2", Some(9)),
    ];
    for (name, priority) in tasks {
        // A second each, so that each starts a second after the one before it.
        let mut body = json!({"name": name, "duration": 1});
        if let Some(priority) = priority {
            body["priority"] = json!(priority);
        }
        waiting.push((name, app.spawn(body).await));
    }
    let mut started = Vec::new();
    for (name, pid) in &waiting {
        let ended = app.wait_end(pid).await;
        let expected = match *name {
            "low" => 1,
            "high" | "high2" => 9,
            _ => 5,
        };
        assert_eq!(ended["priority"], expected, "{ended}");
        started.push((time(&ended, "started_at"), *name));
    }
    started.sort();
    let order: Vec<&str> = started.into_iter().map(|(_, name)| name).collect();
    assert_eq!(order, ["high", "high2", "plain", "low"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_task_is_retried_once_and_in_bulk_by_filters() {
    // A worker whose tasks panic, but for those named `good`.
    let app = spawn_app("panic", &[]).await;
    let failed = app
        .run(
            json!({"name": "panic", "duration": 0, "priority": 7, "payload": {"n": 1},
            "deadline": 20}),
        )
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let of = failed["pid"].as_str().expect("a pid");

    let (status, retried) = post(&app, &format!("/api/tasks/{of}/retry"), json!(null)).await;
    assert_eq!(status, 202, "{retried}");
    let retry = retried["pid"].as_str().expect("a pid").to_owned();
    assert_ne!(retry, of);
    let ended = app.wait_end(&retry).await;
    assert_eq!(ended["retry_of"], of, "{ended}");
    assert_eq!(ended["name"], "panic", "{ended}");
    assert_eq!(ended["priority"], 7, "{ended}");
    assert_eq!(ended["status"], "failed", "{ended}");
    assert_eq!(ended["outcome"], "panic", "{ended}");
    // Asked again: the same retry, nothing new runs.
    let (status, again) = post(&app, &format!("/api/tasks/{of}/retry"), json!(null)).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["pid"], retry.as_str(), "{again}");

    // A task not ended cannot be retried; an unknown one is not found.
    let live = app
        .spawn(json!({"name": "good", "duration": 0, "delay": 3600}))
        .await;
    let (status, answer) = post(&app, &format!("/api/tasks/{live}/retry"), json!(null)).await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = post(&app, "/api/tasks/00000001-999999/retry", json!(null)).await;
    assert_eq!(status, 404, "{answer}");
    app.kill(&live).await;

    // In bulk: the failed tasks (by default), newest first. `of` was retried already: its
    // entry names the same retry.
    let other = app.run(json!({"name": "panic", "duration": 0})).await;
    let other = other["pid"].as_str().expect("a pid");
    let (status, bulk) = post(&app, "/api/tasks/retry", json!({"worker": "default"})).await;
    assert_eq!(status, 200, "{bulk}");
    assert_eq!(bulk["count"], 3, "{bulk}");
    let first = bulk["retried"].as_array().expect("retried").clone();
    let ofs: Vec<&str> = first.iter().filter_map(|r| r["of"].as_str()).collect();
    assert_eq!(ofs, [other, retry.as_str(), of], "{bulk}");
    assert_eq!(first[2]["pid"], retry.as_str(), "{bulk}");
    assert_eq!(bulk["pids"].as_array().map(Vec::len), Some(3), "{bulk}");
    for entry in &first {
        app.wait_end(entry["pid"].as_str().expect("a pid")).await;
    }
    // Again: the three retried before answer the same retries; only the two new retries,
    // which failed too, run again.
    let (_, twice) = post(&app, "/api/tasks/retry", json!({})).await;
    assert_eq!(twice["count"], 5, "{twice}");
    let again: Vec<(String, String)> = twice["retried"]
        .as_array()
        .expect("retried")
        .iter()
        .map(|r| (r["of"].to_string(), r["pid"].to_string()))
        .collect();
    for entry in &first {
        let pair = (entry["of"].to_string(), entry["pid"].to_string());
        assert!(again.contains(&pair), "{pair:?} in {twice}");
    }

    // Filters: killed ones only, by outcome, after a time, and a limit.
    let (_, killed) = post(&app, "/api/tasks/retry", json!({"status": "killed"})).await;
    assert_eq!(killed["count"], 1, "{killed}");
    assert_eq!(killed["retried"][0]["of"], live.as_str(), "{killed}");
    let good = app
        .wait_end(killed["pids"][0].as_str().expect("a pid"))
        .await;
    assert_eq!(good["status"], "exited", "the retry runs now: {good}");
    assert_eq!(good["run_at"], Value::Null, "{good}");
    let (_, limited) = post(
        &app,
        "/api/tasks/retry",
        json!({"outcome": "panic", "limit": 2}),
    )
    .await;
    assert_eq!(limited["count"], 2, "{limited}");
    let (_, none) = post(&app, "/api/tasks/retry", json!({"outcome": "out_of_fuel"})).await;
    assert_eq!(none["count"], 0, "{none}");
    let future = "2100-01-01T00:00:00Z";
    let (_, none) = post(&app, "/api/tasks/retry", json!({"ended_after": future})).await;
    assert_eq!(none["count"], 0, "{none}");
    app.assert_refused(
        "/api/tasks/retry",
        &[
            (json!({"status": "running"}), "status"),
            (json!({"outcome": "nope"}), "outcome"),
            (json!({"limit": 0}), "limit"),
            (json!({"limit": 10_001}), "limit"),
            (json!({"ended_after": "yesterday"}), "ended_after"),
            (json!({"worker": 5}), "worker"),
            (json!([]), "object"),
        ],
    )
    .await;
}

/// The real binary on the SQLite file `dir/tasks.db`.
async fn start(dir: &Path) -> Binary {
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    let module = module("default").display().to_string();
    let argv: Vec<String> = ["--store", &store, "--module", &module, "--capacity", "100"]
        .iter()
        .map(ToString::to_string)
        .collect();
    let host = Binary::spawn(&argv, &[], None);
    host.ready().await;
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_task_survives_a_sigkill_and_runs_at_its_time() {
    let dir = temp_dir("scheduled-crash");
    let mut host = start(&dir).await;
    let soon = host
        .spawn(
            json!({"name": "soon", "duration": 0, "delay": 3, "priority": 8,
            "concurrency_key": "tenant-1"}),
        )
        .await;
    let missed = host
        .spawn(json!({"name": "missed", "duration": 0, "delay": 0.5}))
        .await;
    let far = host
        .spawn(json!({"name": "far", "duration": 0, "delay": 3600}))
        .await;
    // A 202 is on disk: SIGKILL at once, before `missed` is due.
    host.crash();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let host = start(&dir).await;
    // Missed while the host was down: it runs at once after the start.
    let ended = host.wait_end(&missed).await;
    assert_eq!(ended["status"], "exited", "{ended}");
    let (_, record) = host.get(&format!("/api/tasks/{soon}")).await;
    assert_eq!(record["status"], "scheduled", "{record}");
    assert_eq!(record["priority"], 8, "{record}");
    assert_eq!(record["concurrency_key"], "tenant-1", "{record}");
    let ended = host.wait_end(&soon).await;
    assert_eq!(ended["status"], "exited", "{ended}");
    assert!(
        time(&ended, "started_at") >= time(&ended, "run_at"),
        "{ended}"
    );
    let (_, record) = host.get(&format!("/api/tasks/{far}")).await;
    assert_eq!(record["status"], "scheduled", "{record}");
    assert_eq!(host.metric("http_spawn_tasks_scheduled").await, Some(1.0));

    // A retry survives too, with what it retries.
    let (status, retried) = post(&host, &format!("/api/tasks/{missed}/retry"), json!(null)).await;
    assert_eq!(status, 202, "{retried}");
    let retry = retried["pid"].as_str().expect("a pid").to_owned();
    host.wait_end(&retry).await;
    let mut host = host;
    host.stop();
    let host = start(&dir).await;
    let (_, record) = host.get(&format!("/api/tasks/{retry}")).await;
    assert_eq!(record["retry_of"], missed.as_str(), "{record}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // The far one waits still, and is killed at once.
    let (status, killed) = host.kill(&far).await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["status"], "killed", "{killed}");
    assert!(tokio::time::Instant::now() < deadline);
}

/// The tasks schedule `name` created, oldest first.
async fn ticked(remote: &common::Remote, name: &str) -> Vec<Value> {
    remote.schedule_tasks(name).await
}

/// Waits until schedule `name` has created at least `n` tasks: them, oldest first.
async fn wait_ticks(remote: &common::Remote, name: &str, n: usize) -> Vec<Value> {
    remote.wait_schedule_tasks(name, n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_its_ticks_once_each_and_pauses_resumes_and_goes() {
    let app = spawn_app("default", &[]).await;
    let (status, created) = post(
        &app,
        "/api/schedules",
        json!({"name": "every2", "cron": "*/2 * * * * *", "timezone": "Europe/Berlin",
            "task": {"name": "tick", "duration": 0, "priority": 8}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["overlap"], "skip", "{created}");
    assert_eq!(created["catch_up"], "latest", "{created}");
    let next: Vec<SystemTime> = created["next"]
        .as_array()
        .expect("next")
        .iter()
        .map(|at| humantime::parse_rfc3339(at.as_str().expect("a time")).expect("RFC 3339"))
        .collect();
    assert_eq!(next.len(), 5, "{created}");
    for pair in next.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]).ok(),
            Some(Duration::from_secs(2))
        );
    }

    let tasks = wait_ticks(&app, "every2", 3).await;
    assert_one_task_per_tick("every2", &tasks);
    for task in &tasks {
        let ended = app.wait_end(task["pid"].as_str().expect("a pid")).await;
        assert_eq!(ended["exit_code"], 0, "{ended}");
        assert_eq!(ended["priority"], 8, "{ended}");
        assert!(
            time(&ended, "started_at") >= time(&ended, "schedule_tick"),
            "{ended}"
        );
    }
    let (_, shown) = app.get("/api/schedules/every2").await;
    assert!(
        shown["tasks"].as_array().is_some_and(|t| t.len() >= 3),
        "{shown}"
    );
    assert!(shown["last_pid"].is_string(), "{shown}");
    let (_, all) = app.get("/api/schedules").await;
    assert_eq!(all["schedules"][0]["name"], "every2", "{all}");

    // Paused: no tick fires, and none of those passed fires on resuming.
    let (status, paused) = post(&app, "/api/schedules/every2/pause", json!(null)).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true, "{paused}");
    assert_eq!(paused["next"], json!([]), "{paused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ticked(&app, "every2").await.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        ticked(&app, "every2").await.len(),
        before,
        "fired while paused"
    );
    let (status, resumed) = post(&app, "/api/schedules/every2/resume", json!(null)).await;
    assert_eq!(status, 200, "{resumed}");
    let resumed_at = SystemTime::now();
    let tasks = wait_ticks(&app, "every2", before + 1).await;
    assert!(
        time(&tasks[before], "schedule_tick") + Duration::from_millis(10) >= resumed_at,
        "a tick passed while paused fired: {}",
        tasks[before]
    );

    let answer = app
        .client
        .delete(app.url("/api/schedules/every2"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 204);
    let (status, _) = app.get("/api/schedules/every2").await;
    assert_eq!(status, 404);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = ticked(&app, "every2").await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ticked(&app, "every2").await.len(),
        gone,
        "fired once removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_waits_for_the_last_task_and_bad_schedules_are_refused() {
    let app = spawn_app("default", &[]).await;
    for (name, overlap) in [("skipping", "skip"), ("allowing", "allow")] {
        let (status, created) = post(
            &app,
            "/api/schedules",
            json!({"name": name, "cron": "* * * * * *", "overlap": overlap,
                "task": {"name": name, "duration": 3}}),
        )
        .await;
        assert_eq!(status, 201, "{created}");
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for name in ["skipping", "allowing"] {
        let (_, _) = app
            .client
            .post(app.url(&format!("/api/schedules/{name}/pause")))
            .send()
            .await
            .map(|answer| (answer.status(), ()))
            .expect("request sent");
    }
    let skipping = ticked(&app, "skipping").await;
    let allowing = ticked(&app, "allowing").await;
    assert_one_task_per_tick("skipping", &skipping);
    assert_one_task_per_tick("allowing", &allowing);
    // A 3-s task a second: skip lets one run at a time, allow one a tick.
    assert!(
        (1..=2).contains(&skipping.len()),
        "{} tasks with overlap skip",
        skipping.len()
    );
    assert!(
        allowing.len() >= 3,
        "{} tasks with overlap allow",
        allowing.len()
    );

    let (status, answer) = post(
        &app,
        "/api/schedules",
        json!({"name": "allowing", "cron": "* * * * *", "task": {"name": "x"}}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    app
        .assert_refused(
            "/api/schedules",
            &[
        (json!({"cron": "* * * * *", "task": {"name": "x"}}), "name"),
        (
            json!({"name": "a b", "cron": "* * * * *", "task": {"name": "x"}}),
            "name",
        ),
        (
            json!({"name": "n", "task": {"name": "x"}}),
            "cron is required",
        ),
        (
            json!({"name": "n", "cron": "61 * * * *", "task": {"name": "x"}}),
            "cron",
        ),
        (
            json!({"name": "n", "cron": "every minute", "task": {"name": "x"}}),
            "cron",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "timezone": "Mars/Olympus", "task": {"name": "x"}}),
            "timezone",
        ),
        (json!({"name": "n", "cron": "* * * * *"}), "task"),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"duration": 1}}),
            "task: name",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"name": "x", "worker": "nope"}}),
            "task",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"name": "x", "delay": 5}}),
            "run_at or delay",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"name": "x"}, "overlap": "queue"}),
            "overlap",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"name": "x"}, "catch_up": "all"}),
            "catch_up",
        ),
        (json!([]), "object"),
            ],
        )
        .await;
    let (status, _) = app.get("/api/schedules/nope").await;
    assert_eq!(status, 404);
    let (status, _) = post(&app, "/api/schedules/nope/pause", json!(null)).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_survive_a_sigkill_and_ticks_missed_meanwhile_catch_up_or_not() {
    let dir = temp_dir("schedules-crash");
    let mut host = start(&dir).await;
    for (name, catch_up) in [("latest", "latest"), ("none", "none")] {
        let (status, created) = post(
            &host,
            "/api/schedules",
            json!({"name": name, "cron": "*/2 * * * * *", "catch_up": catch_up,
                "task": {"name": name, "duration": 0}}),
        )
        .await;
        assert_eq!(status, 201, "{created}");
    }
    wait_ticks(&host, "latest", 1).await;
    host.crash();
    let down = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let host = start(&dir).await;
    let up = SystemTime::now();
    wait_ticks(&host, "latest", 3).await;
    wait_ticks(&host, "none", 2).await;
    let latest = ticked(&host, "latest").await;
    let none = ticked(&host, "none").await;
    assert_one_task_per_tick("latest", &latest);
    assert_one_task_per_tick("none", &none);
    let missed = |tasks: &[Value]| {
        tasks
            .iter()
            .filter(|task| {
                let tick = time(task, "schedule_tick");
                tick > down + Duration::from_millis(10) && tick + Duration::from_millis(10) < up
            })
            .count()
    };
    // Two or three ticks passed while it was down: `latest` fired the last of them once,
    // `none` none of them.
    assert_eq!(missed(&latest), 1, "{latest:?}");
    assert_eq!(missed(&none), 0, "{none:?}");
    let (_, shown) = host.get("/api/schedules/latest").await;
    assert_eq!(shown["catch_up"], "latest", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_accepts_tasks_and_starts_them_once_resumed() {
    const TOKEN: &str = "test-admin-token";
    let app = spawn_app("default", &["--admin-token", TOKEN, "--capacity", "2"]).await;
    let running = app.spawn(json!({"name": "running", "duration": 2})).await;
    app.wait_running(&running).await;

    let (status, paused) = app.admin_post("/api/workers/default/pause", TOKEN).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true, "{paused}");
    // Accepted, not started, holding no place: more than the places wait.
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(
            app.spawn(json!({"name": format!("held{i}"), "duration": 0}))
                .await,
        );
    }
    let later = app
        .spawn(json!({"name": "due", "duration": 0, "delay": 0.3}))
        .await;
    held.push(later);
    tokio::time::sleep(Duration::from_millis(800)).await;
    for pid in &held {
        let (_, record) = app.get(&format!("/api/tasks/{pid}")).await;
        assert!(
            matches!(record["status"].as_str(), Some("spawned" | "scheduled")),
            "{record}"
        );
    }
    let (_, worker) = app.get("/api/workers/default").await;
    assert_eq!(worker["paused"], true, "{worker}");
    assert_eq!(worker["held"], 5, "{worker}");
    // The running task goes on; one held is killed at once.
    let ended = app.wait_end(&running).await;
    assert_eq!(ended["exit_code"], 0, "{ended}");
    let (status, killed) = app.kill(&held[0]).await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["status"], "killed", "{killed}");

    let (status, resumed) = app.admin_post("/api/workers/default/resume", TOKEN).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["paused"], false, "{resumed}");
    for pid in &held[1..] {
        let ended = app.wait_end(pid).await;
        assert_eq!(ended["exit_code"], 0, "{ended}");
    }
    // Admin only, and a worker that exists.
    let answer = app
        .client
        .post(app.url("/api/workers/default/pause"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 401);
    let (status, _) = app.admin_post("/api/workers/nope/pause", TOKEN).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_a_restart() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let dir = temp_dir("paused-restart");
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    let module = module("default").display().to_string();
    let argv: Vec<String> = [
        "--store",
        &store,
        "--module",
        &module,
        "--admin-token",
        TOKEN,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let mut host = Binary::spawn(&argv, &[], None);
    host.ready().await;
    let (status, _) = host.admin_post("/api/workers/default/pause", TOKEN).await;
    assert_eq!(status, 200);
    let pid = host.spawn(json!({"name": "held", "duration": 0})).await;
    host.crash();
    let host = Binary::spawn(&argv, &[], None);
    host.ready().await;
    let (_, worker) = host.get("/api/workers/default").await;
    assert_eq!(worker["paused"], true, "{worker}");
    assert_eq!(worker["held"], 1, "{worker}");
    let (_, record) = host.get(&format!("/api/tasks/{pid}")).await;
    assert_eq!(record["status"], "spawned", "{record}");
    let (status, _) = host.admin_post("/api/workers/default/resume", TOKEN).await;
    assert_eq!(status, 200);
    let ended = host.wait_end(&pid).await;
    assert_eq!(ended["exit_code"], 0, "{ended}");
}

/// A host on a registry file with `workers` (`{module:default}` stands for the default
/// worker's module).
async fn with_workers(label: &str, workers: &str) -> common::TestApp {
    let dir = temp_dir(label);
    let text = workers.replace("{module:default}", &module("default").display().to_string());
    let path = dir.join("http-spawn.toml");
    std::fs::write(&path, text).expect("write the registry file");
    common::start_app(common::registry_config(&path, &[])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_hold_tasks_and_keys_take_turns() {
    let app = with_workers(
        "limits",
        r#"
[workers.default]
module = "{module:default}"
max_running = 3
per_key_running = 1
"#,
    )
    .await;
    let mut pids = Vec::new();
    for (key, n) in [("a", 5), ("b", 2), ("c", 2)] {
        for i in 0..n {
            let body = json!({"name": format!("{key}{i}"), "duration": 1, "concurrency_key": key});
            pids.push(app.spawn(body).await);
        }
    }
    for i in 0..2 {
        pids.push(
            app.spawn(json!({"name": format!("free{i}"), "duration": 1}))
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, worker) = app.get("/api/workers/default").await;
    assert_eq!(worker["max_running"], 3, "{worker}");
    assert_eq!(worker["per_key_running"], 1, "{worker}");
    assert_eq!(worker["limited"]["running"], 3, "{worker}");
    assert_eq!(worker["limited"]["waiting"], 8, "{worker}");
    // A held task is killed at once.
    let (status, killed) = app.kill(&pids[4]).await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["status"], "killed", "{killed}");
    let ended = app
        .wait_exits_0(pids.iter().filter(|pid| **pid != pids[4]))
        .await;
    let runs = intervals(&ended);
    assert!(most_at_once(&runs, |_| true) <= 3, "{runs:?}");
    for key in ["a", "b", "c"] {
        assert_eq!(most_at_once(&runs, |k| k == key), 1, "key {key}: {runs:?}");
    }
    // Round robin: b and c did not wait for a's backlog, which ran last.
    let last_of = |key: &str| {
        runs.iter()
            .filter(|(_, _, k)| k == key)
            .map(|(start, _, _)| *start)
            .max()
    };
    assert!(last_of("b") < last_of("a"), "{runs:?}");
    assert!(last_of("c") < last_of("a"), "{runs:?}");
    let (_, worker) = app.get("/api/workers/default").await;
    assert_eq!(worker["limited"]["running"], 0, "{worker}");
    assert_eq!(worker["limited"]["waiting"], 0, "{worker}");

    app.assert_refused(
        "/api/tasks",
        &[
            (
                json!({"name": "x", "concurrency_key": ""}),
                "concurrency_key",
            ),
            (
                json!({"name": "x", "concurrency_key": 5}),
                "concurrency_key",
            ),
            (
                json!({"name": "x", "concurrency_key": "k".repeat(257)}),
                "concurrency_key",
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_spaces_starts_per_key_and_refuses_nothing() {
    let app = with_workers(
        "rate",
        r#"
[workers.default]
module = "{module:default}"
rate = "4/1s"
"#,
    )
    .await;
    let (_, worker) = app.get("/api/workers/default").await;
    assert_eq!(worker["rate"], "4/1s", "{worker}");
    // Eight without a key: four start at once, then one every 250 ms.
    let mut pids = Vec::new();
    for i in 0..8 {
        pids.push(
            app.spawn(json!({"name": format!("r{i}"), "duration": 0}))
                .await,
        );
    }
    // Four of each of two keys: each key its own bucket.
    let mut keyed = Vec::new();
    for key in ["x", "y"] {
        for i in 0..4 {
            let body = json!({"name": format!("{key}{i}"), "duration": 0, "concurrency_key": key});
            keyed.push(app.spawn(body).await);
        }
    }
    let mut starts: Vec<_> = app
        .wait_exits_0(&pids)
        .await
        .iter()
        .map(|record| time(record, "started_at"))
        .collect();
    starts.sort();
    let span = starts[7].duration_since(starts[0]).expect("in order");
    assert!(
        span >= Duration::from_millis(900),
        "eight starts in {span:?}"
    );
    let mut keyed_starts = Vec::new();
    for pid in &keyed {
        let record = app.wait_end(pid).await;
        keyed_starts.push(time(&record, "started_at"));
    }
    keyed_starts.sort();
    let span = keyed_starts[7]
        .duration_since(keyed_starts[0])
        .expect("in order");
    assert!(
        span < Duration::from_millis(700),
        "two keys' four starts took {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_whose_worker_is_gone_says_why_its_ticks_are_skipped() {
    let dir = temp_dir("schedule-worker-gone");
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    let with_actor = common::workers::registry(&dir, "");
    let start = |config: String| {
        let argv: Vec<String> = ["--store", &store, "--config", &config]
            .iter()
            .map(ToString::to_string)
            .collect();
        Binary::spawn(&argv, &[], None)
    };
    let mut host = start(with_actor.display().to_string());
    host.ready().await;
    let (status, created) = post(
        &host,
        "/api/schedules",
        json!({"name": "acting", "cron": "@daily",
            "task": {"name": "a", "worker": "actor", "duration": 0}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(created.get("error").is_none(), "{created}");
    host.stop();
    // Started again without the worker the schedule's task names.
    let alone = dir.join("alone.toml");
    std::fs::write(
        &alone,
        format!(
            "[workers.default]\nmodule = {:?}\n",
            module("default").display().to_string()
        ),
    )
    .expect("write the registry file");
    let host = start(alone.display().to_string());
    host.ready().await;
    let (status, shown) = host.get("/api/schedules/acting").await;
    assert_eq!(status, 200, "{shown}");
    assert!(
        shown["error"].as_str().is_some_and(|e| e.contains("actor")),
        "{shown}"
    );
    let (_, all) = host.get("/api/schedules").await;
    assert_eq!(all["schedules"][0]["name"], "acting", "{all}");
    assert!(all["schedules"][0]["error"].is_string(), "{all}");
}
