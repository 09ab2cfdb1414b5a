//! Flow control across a cluster (issue #25), on real hosts sharing a fresh PostgreSQL
//! database: a worker's `max_running` and `per_key_running` hold for all hosts together, also
//! while one host is killed with SIGKILL and after the others take its tasks over; keys take
//! turns across hosts; a rate holds for all hosts together; a limited task scheduled for later
//! starts once due; limits set over the API through one host hold on all, counting the tasks
//! already running; a paused worker's limited tasks wait.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::cluster::{ADMIN_TOKEN, start_host};
use common::process::Binary;
use common::{PATIENCE, Remote, intervals, most_at_once, postgres, time_of};
use serde_json::json;

const TOKEN: &str = "cluster-flow-token-0123456789abcd";

/// Workers with limits: `limited` (4 at once, 2 of a key), `rated` (4 starts a second) and
/// `turns` (2 at once).
const LIMITED: &str = r#"
[workers.limited]
module = "{module:default}"
max_running = 4
per_key_running = 2

[workers.rated]
module = "{module:default}"
rate = "4/1s"

[workers.turns]
module = "{module:default}"
max_running = 2
"#;

/// Host `name` of the cluster on the database at `url`.
async fn node(url: &str, name: &str) -> Binary {
    start_host(url, name, TOKEN, LIMITED, &[]).await
}

/// `PUT`s `limits` to `path` on `node` with the admin token; it must be taken.
async fn put_limits(node: &Remote, path: &str, limits: serde_json::Value) {
    let answer = node
        .client
        .put(node.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&limits)
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 200, "{path}");
}

/// The most tasks of worker `limited` the cluster showed running at once, in all and by key,
/// sampled through whichever of `nodes` answers until `stop` is set. Sound: a task's status is
/// `running` only while a host holds it, from after its claim until its end (or, its host
/// lost, until it is taken back), so that each sample sees no more than the store counted.
async fn sample_running(
    nodes: Vec<Remote>,
    stop: Arc<AtomicBool>,
) -> (usize, HashMap<String, usize>, usize) {
    let (mut most, mut by_key, mut samples) = (0, HashMap::<String, usize>::new(), 0);
    while !stop.load(Ordering::Acquire) {
        let mut page = None;
        for node in &nodes {
            let url = node.url("/api/tasks?status=running&worker=limited&limit=100");
            if let Ok(answer) = node.client.get(url).send().await
                && answer.status() == 200
                && let Ok(body) = answer.json::<serde_json::Value>().await
            {
                page = Some(body);
                break;
            }
        }
        let Some(page) = page else {
            continue;
        };
        samples += 1;
        let tasks = page["tasks"].as_array().expect("tasks");
        most = most.max(tasks.len());
        let mut now = HashMap::<String, usize>::new();
        for task in tasks {
            let key = task["concurrency_key"].as_str().unwrap_or("").to_owned();
            *now.entry(key).or_default() += 1;
        }
        for (key, n) in now {
            let seen = by_key.entry(key).or_default();
            *seen = (*seen).max(n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (most, by_key, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_for_all_hosts_together_even_when_one_is_killed() {
    let url = postgres::fresh_database("limits");
    let mut hosts = vec![
        node(&url, "a").await,
        node(&url, "b").await,
        node(&url, "c").await,
    ];
    let (_, worker) = hosts[1].get("/api/workers/limited").await;
    assert_eq!(worker["max_running"], 4, "{worker}");
    assert_eq!(worker["per_key_running"], 2, "{worker}");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_running(
        hosts
            .iter()
            .map(|host| Remote::with_token(host.base.clone(), TOKEN))
            .collect(),
        Arc::clone(&stop),
    ));
    // Submitted through all three hosts, each of which has places free: 6 of key a, then 3
    // of b, 3 of c and 2 without a key.
    let mut pids = Vec::new();
    let mut submissions: Vec<(String, Option<&str>)> = Vec::new();
    for i in 0..6 {
        submissions.push((format!("a{i}"), Some("a")));
    }
    for key in ["b", "c"] {
        for i in 0..3 {
            submissions.push((format!("{key}{i}"), Some(key)));
        }
    }
    submissions.push(("free0".into(), None));
    submissions.push(("free1".into(), None));
    for (i, (name, key)) in submissions.iter().enumerate() {
        let mut body = json!({"name": name, "duration": 2, "worker": "limited"});
        if let Some(key) = key {
            body["concurrency_key"] = json!(key);
        }
        pids.push(hosts[i % 3].spawn(body).await);
    }
    // While the first tasks run, the cluster counts them all: at most 4 run, the rest wait.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let running = loop {
        let (_, worker) = hosts[2].get("/api/workers/limited").await;
        let (_, page) = hosts[2]
            .get("/api/tasks?status=running&worker=limited")
            .await;
        if worker["limited"]["running"] == 4 && page["tasks"].as_array().map(Vec::len) == Some(4) {
            assert_eq!(worker["limited"]["waiting"], 10, "{worker}");
            break page["tasks"].as_array().expect("tasks").clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never 4 running: {worker}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A host that runs some of them dies with them: they count until the others take them
    // over, once its lease ran out, and run them again.
    let mut ids = Vec::new();
    for host in &hosts {
        let (_, cluster) = host.get("/api/cluster").await;
        ids.push(cluster["node"].clone());
    }
    let victim = ids
        .iter()
        .position(|id| running.iter().any(|task| task["node"] == *id))
        .expect("a host runs a task");
    hosts[victim].crash();
    let survivor = &hosts[(victim + 1) % 3];
    let ended = survivor.wait_exits_0(&pids).await;
    let rerun = ended
        .iter()
        .filter(|record| record["attempts"][0]["outcome"] == "host_lost")
        .count();
    assert!(rerun >= 1, "no task was lost with its host: {ended:?}");
    stop.store(true, Ordering::Release);
    let (most, by_key, samples) = sampler.await.expect("the sampler");
    assert!(samples >= 100, "{samples} samples");
    assert!(most <= 4, "{most} ran at once");
    for (key, n) in &by_key {
        let max = if key.is_empty() { 4 } else { 2 };
        assert!(*n <= max, "key {key:?}: {n} at once");
    }
    let runs = intervals(&ended);
    assert!(most_at_once(&runs, |_| true) <= 4, "{runs:?}");
    for key in ["a", "b", "c"] {
        assert!(
            most_at_once(&runs, |k| k == key) <= 2,
            "key {key}: {runs:?}"
        );
    }
    let (_, worker) = survivor.get("/api/workers/limited").await;
    assert_eq!(worker["limited"]["running"], 0, "{worker}");
    assert_eq!(worker["limited"]["waiting"], 0, "{worker}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_holds_for_all_hosts_together_keys_take_turns_and_a_limited_task_can_wait() {
    let url = postgres::fresh_database("rate");
    let a = node(&url, "a").await;
    let b = node(&url, "b").await;
    let c = node(&url, "c").await;
    let hosts = [&a, &b, &c];
    // Twelve at once through three hosts: four start at once, then one every 250 ms, whichever
    // host starts them (each host counting alone would start all twelve at once).
    let mut pids = Vec::new();
    for i in 0..12 {
        let body = json!({"name": format!("r{i}"), "duration": 0, "worker": "rated"});
        pids.push(hosts[i % 3].spawn(body).await);
    }
    let mut starts: Vec<_> = c
        .wait_exits_0(&pids)
        .await
        .iter()
        .map(|record| time_of(record, "started_at"))
        .collect();
    starts.sort();
    let span = starts[11].duration_since(starts[0]).expect("in order");
    assert!(
        span >= Duration::from_millis(1_800),
        "twelve starts in {span:?}"
    );
    for (i, start) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .take_while(|later| {
                later.duration_since(*start).unwrap_or_default() < Duration::from_millis(400)
            })
            .count();
        assert!(within <= 6, "{within} starts within 400 ms: {starts:?}");
    }

    // Keys take turns across hosts: with two places, a backlog of four of key a accepted
    // before two of key b does not make b wait for all of a.
    let mut blockers = Vec::new();
    for (i, host) in hosts.iter().take(2).enumerate() {
        let body = json!({"name": format!("blocker{i}"), "duration": 2, "worker": "turns"});
        blockers.push(host.spawn(body).await);
    }
    let mut turns = Vec::new();
    for (i, key) in ["a", "a", "a", "a", "b", "b"].into_iter().enumerate() {
        let body = json!({"name": format!("{key}{i}"), "duration": 1, "worker": "turns",
            "concurrency_key": key});
        turns.push(hosts[i % 3].spawn(body).await);
    }
    let ended = c.wait_exits_0(blockers.iter().chain(&turns)).await;
    let runs = intervals(&ended);
    assert!(most_at_once(&runs, |_| true) <= 2, "{runs:?}");
    let last_of = |key: &str| {
        runs.iter()
            .filter(|(_, _, k)| k == key)
            .map(|(start, _, _)| *start)
            .max()
    };
    assert!(last_of("b") < last_of("a"), "{runs:?}");

    // A limited task to run later waits in the store, and starts once due.
    let (status, accepted) = a
        .post(
            "/api/tasks",
            json!({"name": "later", "duration": 0, "worker": "limited", "delay": 1,
                "concurrency_key": "k"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "scheduled", "{accepted}");
    let pid = accepted["pid"].as_str().expect("a pid");
    let record = b.wait_end(pid).await;
    assert_eq!(record["exit_code"], 0, "{record}");
    assert!(
        time_of(&record, "started_at") >= time_of(&record, "run_at"),
        "{record}"
    );
    // Limits set over the API through one host hold on every host, each following at its
    // next heartbeat: `rated` now runs one task at a time across the cluster.
    put_limits(&a, "/api/workers/rated/limits", json!({"max_running": 1})).await;
    for host in [&b, &c] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (_, worker) = host.get("/api/workers/rated").await;
            if worker["max_running"] == 1 && worker["limits_from"] == "api" {
                assert_eq!(worker["rate"], serde_json::Value::Null, "{worker}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never followed: {worker}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut one_at_a_time = Vec::new();
    for i in 0..3 {
        let body = json!({"name": format!("one{i}"), "duration": 1, "worker": "rated"});
        one_at_a_time.push(hosts[i % 3].spawn(body).await);
    }
    let ended = c.wait_exits_0(&one_at_a_time).await;
    let runs = intervals(&ended);
    assert_eq!(most_at_once(&runs, |_| true), 1, "{runs:?}");
    let answer = c
        .client
        .delete(c.url("/api/workers/rated/limits"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, worker) = a.get("/api/workers/rated").await;
        if worker["limits_from"] == "file" {
            assert_eq!(worker["max_running"], serde_json::Value::Null, "{worker}");
            assert_eq!(worker["rate"], "4/1s", "{worker}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never followed: {worker}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_set_over_the_api_count_the_tasks_already_running_on_every_host() {
    let url = postgres::fresh_database("limits-api");
    let a = node(&url, "a").await;
    let b = node(&url, "b").await;
    // Two tasks of the default worker (no limits in the file) run, one through each host,
    // and one waits in the shared queue for a time.
    let early = [
        a.spawn(json!({"name": "early0", "duration": 3})).await,
        b.spawn(json!({"name": "early1", "duration": 3})).await,
    ];
    for pid in &early {
        a.wait_running(pid).await;
    }
    let (status, waiting) = a
        .post(
            "/api/tasks",
            json!({"name": "due", "duration": 1, "delay": 0.5}),
        )
        .await;
    assert_eq!(status, 202, "{waiting}");
    put_limits(&b, "/api/workers/default/limits", json!({"max_running": 1})).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, worker) = a.get("/api/workers/default").await;
        if worker["max_running"] == 1 {
            // Both running tasks count, though accepted before the limit.
            assert_eq!(worker["limited"]["running"], 2, "{worker}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never followed: {worker}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = [
        a.spawn(json!({"name": "later0", "duration": 1})).await,
        b.spawn(json!({"name": "later1", "duration": 1})).await,
    ];
    let mut ended = Vec::new();
    for pid in early.iter().chain(&later).chain(std::iter::once(
        &waiting["pid"].as_str().expect("a pid").to_owned(),
    )) {
        let record = b.wait_end(pid).await;
        assert_eq!(record["exit_code"], 0, "{record}");
        ended.push(record);
    }
    // Nothing started until both early tasks had ended; then one at a time.
    let runs = intervals(&ended);
    let early_end = runs[..2]
        .iter()
        .map(|(_, end, _)| *end)
        .max()
        .expect("ends");
    for (start, _, _) in &runs[2..] {
        assert!(*start >= early_end, "{runs:?}");
    }
    assert_eq!(most_at_once(&runs[2..], |_| true), 1, "{runs:?}");
    // A paused worker's limited tasks are not claimed: they wait in the store until it is
    // resumed.
    let pause = |node: &Binary, what: &'static str| {
        let request = node
            .client
            .post(node.url(&format!("/api/workers/default/{what}")))
            .bearer_auth(ADMIN_TOKEN)
            .send();
        async move { request.await.expect("request sent").status().as_u16() }
    };
    assert_eq!(pause(&a, "pause").await, 200);
    let held = b.spawn(json!({"name": "held", "duration": 0})).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, record) = a.get(&format!("/api/tasks/{held}")).await;
    assert_eq!(record["status"], "spawned", "{record}");
    assert_eq!(pause(&b, "resume").await, 200);
    a.wait_exits_0([&held]).await;
}
