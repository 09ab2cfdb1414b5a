//! A cluster end to end: real `http-spawn` processes on loopback sharing one PostgreSQL
//! database (a fresh one per test, from `common::postgres`), each with an API token, a short
//! lease and fast polls. Accepting on one host and reading, killing, messaging and streaming
//! through the others; overflow into the shared queue; a host killed with SIGKILL under load;
//! a host cut off from the database by a proxy in the test; worker uploads and rollbacks
//! reaching every host; monitors across hosts; the schema's version.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::cluster::{ADMIN_TOKEN, spawn_host};
use common::process::Binary;
use common::proxy::{Proxy, port_of};
use common::workers::{actor, logged, messages};
use common::{
    PATIENCE, Remote, assert_one_task_per_tick, module, numbered_attempts, postgres, read_events,
    time_of,
};
use serde_json::{Value, json};

/// Every host's API token; requests without it get `401`.
const TOKEN: &str = "cluster-test-token-0123456789abcdef";

/// One host of the cluster: the real binary (see [`Binary`]), with its name.
struct Node {
    binary: Binary,
    name: String,
}

impl Node {
    /// Starts host `name` on database `url`, with `args` added, and waits until it answers.
    async fn start(url: &str, name: &str, args: &[&str]) -> Self {
        Self::start_with(url, name, args, "").await
    }

    /// [`Node::start`], with `workers` added to its registry file (see
    /// [`common::workers::registry`]).
    async fn start_with(url: &str, name: &str, args: &[&str], workers: &str) -> Self {
        let node = Self::spawn_with(url, name, args, workers);
        node.binary.ready().await;
        node
    }

    fn spawn(url: &str, name: &str, args: &[&str]) -> Self {
        Self::spawn_with(url, name, args, "")
    }

    fn spawn_with(url: &str, name: &str, args: &[&str], workers: &str) -> Self {
        Self {
            binary: spawn_host(url, name, TOKEN, workers, args),
            name: name.to_owned(),
        }
    }

    /// Its id in the cluster, from `GET /api/cluster`.
    async fn id(&self) -> u64 {
        let (status, cluster) = self.get("/api/cluster").await;
        assert_eq!(status, 200, "{cluster}: {}", self.name);
        cluster["node"].as_u64().expect("a node id")
    }
}

impl std::ops::Deref for Node {
    type Target = Binary;

    fn deref(&self) -> &Binary {
        &self.binary
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Binary {
        &mut self.binary
    }
}

/// Three hosts on a fresh database.
async fn three(hint: &str, args: &[&str]) -> (String, Node, Node, Node) {
    let url = postgres::fresh_database(hint);
    // One after the other: the first creates the schema.
    let a = Node::start(&url, "a", args).await;
    let b = Node::start(&url, "b", args).await;
    let c = Node::start(&url, "c", args).await;
    (url, a, b, c)
}

/// What a task of the actor worker logged of its `receive`.
async fn received(node: &Remote, pid: &str) -> Value {
    logged(node, pid)
        .await
        .into_iter()
        .find(|line| line["op"] == "receive")
        .expect("the task logged its receive")
}

/// Uploads `bytes` as worker `default` on `node`, with the admin token: the answer's body.
async fn upload(node: &Node, bytes: Vec<u8>) -> Value {
    let answer = node
        .client
        .put(node.url("/api/workers/default"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .expect("uploaded");
    assert_eq!(answer.status(), 200);
    answer.json().await.expect("JSON")
}

/// Waits until `pid` shows on `node` as held by host `id`, running.
async fn wait_running_on(node: &Remote, pid: &str, id: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, record) = node.get(&format!("/api/tasks/{pid}")).await;
        if record["status"] == "running" && record["node"] == id {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pid} never ran on host {id}: {record}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_exited_0(record: &Value) {
    assert_eq!(record["status"], "exited", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_host_answers_for_any_task() {
    let (_url, a, b, c) = three("any_host", &[]).await;
    let (a_id, b_id, c_id) = (a.id().await, b.id().await, c.id().await);
    let (_, cluster) = c.get("/api/cluster").await;
    let nodes = cluster["nodes"].as_array().expect("nodes");
    let names: HashSet<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, HashSet::from(["a", "b", "c"]), "{cluster}");
    for node in nodes {
        assert_eq!(node["state"], "up", "{node}");
        assert_eq!(node["capacity"], 64, "{node}");
        assert!(
            node["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))
        );
    }

    // Accepted on a, where there is room: it runs there; b and c read it, its log and its
    // events, and b kills it.
    let pid = a.spawn(json!({"name": "long", "duration": 30})).await;
    wait_running_on(&b, &pid, a_id).await;
    let (status, record) = c.get(&format!("/api/tasks/{pid}")).await;
    assert_eq!(
        (status, record["node"].as_u64()),
        (200, Some(a_id)),
        "{record}"
    );
    let events = c
        .client
        .get(c.url(&format!("/api/tasks/{pid}/events")))
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    let streamed = tokio::spawn(read_events(events, |name, _| name == "exit"));
    // Lists cover the whole cluster.
    let other = b.spawn(json!({"name": "short", "duration": 1})).await;
    for node in [&a, &b, &c] {
        let (_, page) = node.get("/api/tasks?limit=10").await;
        let pids: HashSet<&str> = page["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter_map(|task| task["pid"].as_str())
            .collect();
        assert!(
            pids.contains(pid.as_str()) && pids.contains(other.as_str()),
            "{page}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (status, killed) = b.kill(&pid).await;
    assert_eq!(status, 200, "the kill reached a and its end b: {killed}");
    assert_eq!(killed["status"], "killed", "{killed}");
    assert!(
        killed.get("node").is_none(),
        "an ended task has no host: {killed}"
    );
    let events = streamed.await.expect("the stream ends after exit");
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"state"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"exit"), "{kinds:?}");
    assert!(
        kinds.contains(&"log") && kinds.contains(&"progress"),
        "{kinds:?}"
    );
    assert_eq!(events.last().expect("exit").1["status"], "killed");
    let lines = messages(&c, &pid).await;
    assert!(
        lines.iter().any(|line| line.contains("Worker started")),
        "{lines:?}"
    );
    assert_exited_0(&a.wait_end(&other).await);
    // A second kill, through the third host: the task has ended.
    let (status, _) = c.kill(&pid).await;
    assert_eq!(status, 409);

    // A message through c to a task b runs, and its answer.
    let receiver = b
        .spawn(actor(
            "receiver",
            json!([{"op": "receive", "timeout_ms": 20_000}]),
        ))
        .await;
    wait_running_on(&a, &receiver, b_id).await;
    let answer = c
        .client
        .post(c.url(&format!("/api/tasks/{receiver}/messages")))
        .json(&json!({"hello": "from c"}))
        .send()
        .await
        .expect("posted");
    assert_eq!(answer.status(), 202);
    assert_exited_0(&c.wait_end(&receiver).await);
    let got = received(&a, &receiver).await;
    assert_eq!(got["got"], "message", "{got}");
    assert_eq!(got["body"], json!({"hello": "from c"}), "{got}");
    let _ = c_id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_are_refused_and_a_newer_schema_stops_a_host() {
    let url = postgres::fresh_database("token");
    let a = Node::start(&url, "a", &[]).await;
    let anonymous = Remote::new(a.base.clone());
    let answer = anonymous
        .client
        .get(anonymous.url("/api/cluster"))
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 401);
    let answer = anonymous.submit(json!({"name": "x", "duration": 0})).await;
    assert_eq!(answer.status(), 401);
    let wrong = Remote::with_token(a.base.clone(), "not-the-token-0123456789abcdef");
    let answer = wrong.submit(json!({"name": "x", "duration": 0})).await;
    assert_eq!(answer.status(), 401);
    assert_eq!(a.get("/api/cluster").await.0, 200);

    // A database written by a newer http-spawn: a host refuses it at start.
    postgres::block_on({
        let url = url.clone();
        async move {
            let client = postgres::connect(&url).await;
            client
                .batch_execute(
                    "UPDATE http_spawn_meta SET value = '999' WHERE key = 'schema_version'",
                )
                .await
                .expect("schema version set");
        }
    });
    let mut newer = Node::spawn(&url, "newer", &[]);
    let status = tokio::task::block_in_place(|| newer.wait_exit());
    assert!(!status.success(), "a host refuses a newer schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_host_overflows_to_the_others() {
    let url = postgres::fresh_database("overflow");
    let a = Node::start(&url, "a", &["--capacity", "2"]).await;
    // Together with a's two places, fewer than the tasks: some wait in the shared queue.
    let b = Node::start(&url, "b", &["--capacity", "4"]).await;
    let c = Node::start(&url, "c", &["--capacity", "4"]).await;
    let a_id = a.id().await;
    let mut pids = Vec::new();
    for i in 0..12 {
        pids.push(
            a.spawn(json!({"name": format!("t{i}"), "duration": 2}))
                .await,
        );
    }
    // Watch where they run: a holds at most two; the rest run on b and c.
    let mut hosts: HashMap<String, u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hosts.len() < pids.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all ran: {hosts:?}"
        );
        for pid in &pids {
            let (_, record) = c.get(&format!("/api/tasks/{pid}")).await;
            if record["status"] == "running"
                && let Some(node) = record["node"].as_u64()
            {
                hosts.insert(pid.clone(), node);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in &pids {
        assert_exited_0(&b.wait_end(pid).await);
    }
    let on_a = hosts.values().filter(|node| **node == a_id).count();
    let elsewhere: HashSet<u64> = hosts
        .values()
        .copied()
        .filter(|node| *node != a_id)
        .collect();
    assert!(on_a <= 4, "a has two places: {hosts:?}");
    assert_eq!(elsewhere.len(), 2, "both b and c took some: {hosts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_under_load_loses_no_task_and_none_ends_twice() {
    let (_url, a, b, mut c) = three("sigkill", &["--capacity", "8"]).await;
    let c_id = c.id().await;
    // Submitted through every host, more than the cluster has places: some wait.
    let mut pids = Vec::new();
    for i in 0..45 {
        let node = [&a, &b, &c][i % 3];
        pids.push(
            node.spawn(json!({"name": format!("load{i}"), "duration": 2}))
                .await,
        );
    }
    // Once c runs some of them, SIGKILL it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let held_by_c = loop {
        let mut held = Vec::new();
        for pid in &pids {
            let (_, record) = a.get(&format!("/api/tasks/{pid}")).await;
            if record["node"] == c_id && record["status"] == "running" {
                held.push(pid.clone());
            }
        }
        if held.len() >= 4 {
            break held;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "c never ran its share"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    c.crash();
    for pid in &pids {
        let record = a.wait_end(pid).await;
        assert_exited_0(&record);
        // One successful run: the guest said it was done exactly once.
        let lines = messages(&b, pid).await;
        let done = lines
            .iter()
            .filter(|line| line.contains("Worker done"))
            .count();
        assert_eq!(done, 1, "{pid}: {lines:?}");
    }
    for pid in &held_by_c {
        let (_, record) = b.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(record["attempt"], 2, "{record}");
        assert_eq!(record["attempts"][0]["outcome"], "host_lost", "{record}");
    }
    let (_, cluster) = a.get("/api/cluster").await;
    let lost = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|node| node["name"] == "c")
        .expect("c is listed")
        .clone();
    assert_eq!(lost["state"], "lost", "{cluster}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_stops_its_tasks_and_writes_nothing_over_the_new_attempts() {
    let url = postgres::fresh_database("cut_off");
    let proxy = Proxy::start(port_of(&url)).await;
    let a = Node::start(&url, "a", &[]).await;
    let b = Node::start(&proxy.url(&url), "b", &[]).await;
    let (a_id, b_id) = (a.id().await, b.id().await);
    let mut pids = Vec::new();
    for i in 0..4 {
        pids.push(
            b.spawn(json!({"name": format!("cut{i}"), "duration": 6}))
                .await,
        );
    }
    for pid in &pids {
        wait_running_on(&a, pid, b_id).await;
    }
    proxy.cut();
    // Within a lease, a takes the tasks over as new attempts...
    for pid in &pids {
        wait_running_on(&a, pid, a_id).await;
    }
    // ...and b, which could not renew its lease, stops them.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, health) = b.get("/api/health").await;
        if health["live"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b kept its tasks: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While cut off it accepts nothing.
    let refused = b.submit(json!({"name": "refused", "duration": 0})).await;
    assert_eq!(refused.status(), 503);
    proxy.restore();
    for pid in &pids {
        let record = a.wait_end(pid).await;
        assert_exited_0(&record);
        assert_eq!(record["attempt"], 2, "{record}");
        assert_eq!(record["attempts"][0]["outcome"], "host_lost", "{record}");
        let lines = messages(&a, pid).await;
        let done = lines
            .iter()
            .filter(|line| line.contains("Worker done"))
            .count();
        assert_eq!(done, 1, "{pid}: {lines:?}");
    }
    // b joined again, as a new incarnation, and serves; what it wrote for the old attempts
    // was refused.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = b.submit(json!({"name": "after", "duration": 0})).await;
        if answer.status() == 202 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(b.id().await, b_id, "b is a new incarnation");
    let metrics = b
        .client
        .get(b.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let fenced: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("http_spawn_store_fenced_writes_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the fenced writes are counted");
    assert!(fenced > 0.0, "{metrics}");
    for pid in &pids {
        let (_, record) = a.get(&format!("/api/tasks/{pid}")).await;
        assert_exited_0(&record);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_and_a_rollback_on_one_host_reach_the_others() {
    let (_url, a, b, c) = three("workers", &[]).await;
    let version = |info: &Value| {
        info["current"]["version"]
            .as_str()
            .expect("version")
            .to_owned()
    };
    let (_, before) = b.get("/api/workers/default").await;
    let bytes = std::fs::read(module("report")).expect("the report worker");
    let installed = upload(&a, bytes).await;
    let new = version(&installed["worker"]);
    assert_ne!(new, version(&before));
    for node in [&b, &c] {
        wait_version(node, &new).await;
    }
    let record = c.run(json!({"name": "new", "duration": 0})).await;
    assert_eq!(record["version"], new, "{record}");
    // A rollback on c: a and b follow.
    let answer = c
        .client
        .post(c.url("/api/workers/default/rollback"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("rolled back");
    assert_eq!(answer.status(), 200);
    for node in [&a, &b] {
        wait_version(node, &version(&before)).await;
    }
    let record = a.run(json!({"name": "old", "duration": 0})).await;
    assert_eq!(record["version"], version(&before), "{record}");
}

async fn wait_version(node: &Node, version: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, info) = node.get("/api/workers/default").await;
        if info["current"]["version"] == version {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never got {version}: {info}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_across_hosts_gets_its_down_and_host_lost_when_the_host_dies() {
    let url = postgres::fresh_database("monitor");
    let a = Node::start(&url, "a", &[]).await;
    let mut b = Node::start(&url, "b", &[]).await;
    let b_id = b.id().await;
    // A task on b ends normally: the watcher on a gets its down, with how it ended.
    let target = b.spawn(json!({"name": "target", "duration": 2})).await;
    wait_running_on(&a, &target, b_id).await;
    let watcher = a
        .spawn(actor(
            "watcher",
            json!([{"op": "monitor", "pid": target}, {"op": "receive", "timeout_ms": 20_000}]),
        ))
        .await;
    assert_exited_0(&b.wait_end(&watcher).await);
    let down = received(&a, &watcher).await;
    assert_eq!(down["got"], "down", "{down}");
    assert_eq!(down["end"]["pid"], target.as_str(), "{down}");
    assert_eq!(down["end"]["status"], "exited", "{down}");

    // A task on b when b dies: the watcher gets down, host_lost.
    let target = b.spawn(json!({"name": "doomed", "duration": 4})).await;
    wait_running_on(&a, &target, b_id).await;
    let watcher = a
        .spawn(actor(
            "watcher2",
            json!([{"op": "monitor", "pid": target}, {"op": "receive", "timeout_ms": 30_000}]),
        ))
        .await;
    a.wait_running(&watcher).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.crash();
    assert_exited_0(&a.wait_end(&watcher).await);
    let down = received(&a, &watcher).await;
    assert_eq!(down["got"], "down", "{down}");
    assert_eq!(down["end"]["outcome"], "host_lost", "{down}");
    // The task itself carries on, on a, as a new attempt.
    let record = a.wait_end(&target).await;
    assert_eq!(record["attempt"], 2, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_links_reach_across_hosts() {
    let url = postgres::fresh_database("links");
    let a = Node::start(&url, "a", &[]).await;
    let b = Node::start(&url, "b", &[]).await;
    let b_id = b.id().await;
    // A name registered on b is the whole cluster's.
    let keeper = b
        .spawn(actor(
            "keeper",
            json!([{"op": "register", "name": "keeper"}, {"op": "receive", "timeout_ms": 30_000}]),
        ))
        .await;
    wait_running_on(&a, &keeper, b_id).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, named) = a.get("/api/names/keeper").await;
        if status == 200 {
            assert_eq!(named["pid"], keeper.as_str(), "{named}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never named: {named}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, names) = a.get("/api/names").await;
    assert!(
        names["names"]
            .as_array()
            .expect("names")
            .iter()
            .any(|n| n["name"] == "keeper"),
        "{names}"
    );
    // The same name taken on a, while b's task lives: refused.
    let rival = a
        .run(actor(
            "rival",
            json!([{"op": "register", "name": "keeper"}]),
        ))
        .await;
    let lines = logged(&a, rival["pid"].as_str().expect("pid")).await;
    let register = lines
        .iter()
        .find(|line| line["op"] == "register")
        .expect("tried");
    assert_eq!(register["ok"], false, "{register}");
    assert_eq!(register["error"], "taken", "{register}");

    // A task on a links to it by name and fails: the keeper, which does not trap exits, is
    // killed on b, linked_exit.
    let failing = a
        .spawn(actor(
            "failing",
            json!([{"op": "link", "pid": "name:keeper"}, {"op": "sleep", "ms": 200},
                   {"op": "fail", "message": "boom"}]),
        ))
        .await;
    assert_eq!(a.wait_end(&failing).await["status"], "failed");
    let record = a.wait_end(&keeper).await;
    assert_eq!(record["status"], "killed", "{record}");
    assert_eq!(record["outcome"], "linked_exit", "{record}");

    // The other way: a task on b fails; the task on a that trapped exits is told.
    let doomed = b
        .spawn(actor(
            "doomed",
            json!([{"op": "sleep", "ms": 1_000}, {"op": "fail", "message": "bust"}]),
        ))
        .await;
    wait_running_on(&a, &doomed, b_id).await;
    let trapper = a
        .spawn(actor(
            "trapper",
            json!([{"op": "trap_exits", "on": true}, {"op": "link", "pid": doomed},
                   {"op": "receive", "timeout_ms": 20_000}]),
        ))
        .await;
    assert_exited_0(&b.wait_end(&trapper).await);
    let got = received(&b, &trapper).await;
    assert_eq!(got["got"], "linked_exit", "{got}");
    assert_eq!(got["end"]["pid"], doomed.as_str(), "{got}");
    assert_eq!(got["end"]["status"], "failed", "{got}");
}

/// Issue #24: a client waits through any host for the end of a task another host runs: the
/// host it asks finds the end in the shared store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_through_any_host_for_a_task_s_end() {
    let url = postgres::fresh_database("wait_across");
    let a = Node::start(&url, "a", &[]).await;
    let b = Node::start(&url, "b", &[]).await;
    let b_id = b.id().await;
    let pid = b.spawn(json!({"name": "there", "duration": 1})).await;
    wait_running_on(&a, &pid, b_id).await;
    let asked = std::time::Instant::now();
    let answer = a
        .client
        .get(a.url(&format!("/api/tasks/{pid}/result?wait=20")))
        .send()
        .await
        .expect("asked");
    assert_eq!(answer.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["status"], "exited", "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
}

/// Issue #24: a call through any host reaches its task on the host that holds it (relayed),
/// and a result is written to the shared store with the end: a client waiting through another
/// host gets it, and so does a monitor on another host in its `down`. A task's own call
/// reaches only the tasks of its host: one for another host's task is refused, clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_any_host_reaches_its_task_and_a_result_every_host() {
    let url = postgres::fresh_database("result_across");
    let a = Node::start(&url, "a", &[]).await;
    let b = Node::start(&url, "b", &[]).await;
    let b_id = b.id().await;
    let result = json!({"answer": 42, "from": "b"});
    let there = b
        .spawn(actor(
            "there",
            json!([
                {"op": "register", "name": "there"},
                {"op": "serve", "timeout_ms": 20_000},
                {"op": "exit", "code": 0, "result": result},
            ]),
        ))
        .await;
    wait_running_on(&a, &there, b_id).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while a.get("/api/names/there").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never named");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for target in [there.as_str(), "name:there"] {
        let answer = a
            .client
            .post(a.url(&format!("/api/tasks/{target}/calls?timeout=10")))
            .json(&json!({"q": target}))
            .send()
            .await
            .expect("asked");
        assert_eq!(answer.status(), 200, "a call through host a");
        let body: Value = answer.json().await.expect("JSON");
        assert_eq!(body, json!({"q": target}), "answered on host b");
    }
    let caller = a
        .run(actor(
            "caller",
            json!([
                {"op": "monitor", "pid": there},
                {"op": "call", "to": "name:there", "body": 1, "timeout_ms": 5_000},
                {"op": "send", "to": "name:there", "body": "stop"},
                {"op": "receive", "timeout_ms": 20_000},
            ]),
        ))
        .await;
    let caller = caller["pid"].as_str().expect("a pid").to_owned();
    let lines = logged(&a, &caller).await;
    let call = lines
        .iter()
        .find(|line| line["op"] == "call")
        .expect("call");
    assert_eq!(call["error"], "elsewhere", "{call}");
    let down = lines
        .iter()
        .find(|line| line["op"] == "receive")
        .expect("receive");
    assert_eq!(down["got"], "down", "{down}");
    assert_eq!(down["end"]["result"], result, "{down}");

    let answer = a
        .client
        .get(a.url(&format!("/api/tasks/{there}/result?wait=20")))
        .send()
        .await
        .expect("asked");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["result"], result, "{body}");
    let (_, record) = a.get(&format!("/api/tasks/{there}")).await;
    assert_eq!(record["result"], result, "{record}");
}

/// Issue #24: a call relayed to the host that holds its task, which dies before the task
/// answers, is answered `504` with the outcome `host_lost`, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_host_dies_before_the_answer_ends_host_lost() {
    let url = postgres::fresh_database("call_host_lost");
    let a = Node::start(&url, "a", &[]).await;
    let mut b = Node::start(&url, "b", &[]).await;
    let b_id = b.id().await;
    let taker = b
        .spawn(actor(
            "taker",
            json!([{"op": "receive", "timeout_ms": 30_000}, {"op": "sleep", "ms": 60_000}]),
        ))
        .await;
    wait_running_on(&a, &taker, b_id).await;
    let call = {
        let url = a.url(&format!("/api/tasks/{taker}/calls?timeout=30"));
        let client = a.client.clone();
        tokio::spawn(async move {
            let answer = client
                .post(url)
                .json(&json!({"q": 1}))
                .send()
                .await
                .expect("asked");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.expect("JSON"))
        })
    };
    // The task has taken the call when it logs its receive.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !logged(&b, &taker)
        .await
        .iter()
        .any(|line| line["op"] == "receive")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.binary.crash();
    let (status, body) = call.await.expect("the caller");
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["reason"], "ended", "{body}");
    assert_eq!(body["ended"]["outcome"], "host_lost", "{body}");
}

/// A task's own send to a task another host holds, by name: the name is looked up in the
/// store, the message handed to the store for the holder, and the send answered once it is
/// written, on the sender's scheduler thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_sends_to_a_named_task_on_another_host() {
    let url = postgres::fresh_database("send_across");
    let a = Node::start(&url, "a", &[]).await;
    let b = Node::start(&url, "b", &[]).await;
    let b_id = b.id().await;
    let inbox = b
        .spawn(actor(
            "inbox",
            json!([{"op": "register", "name": "inbox"}, {"op": "receive", "timeout_ms": 20_000}]),
        ))
        .await;
    wait_running_on(&a, &inbox, b_id).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while a.get("/api/names/inbox").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never named");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sender = a
        .run(actor(
            "sender",
            json!([{"op": "send", "to": "name:inbox", "body": {"hello": "across"}}]),
        ))
        .await;
    let sender = sender["pid"].as_str().expect("a pid").to_owned();
    let lines = logged(&a, &sender).await;
    let sent = lines
        .iter()
        .find(|line| line["op"] == "send")
        .expect("sent");
    assert_eq!(sent["ok"], true, "{sent}");
    assert_exited_0(&b.wait_end(&inbox).await);
    let got = received(&b, &inbox).await;
    assert_eq!(got["got"], "message", "{got}");
    assert_eq!(got["sender"], sender.as_str(), "{got}");
    assert_eq!(got["body"], json!({"hello": "across"}), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_bytes_that_do_not_match_their_sha256_are_never_run() {
    let url = postgres::fresh_database("damaged");
    let a = Node::start(&url, "a", &[]).await;
    let (_, before) = a.get("/api/workers/default").await;
    let installed = upload(
        &a,
        std::fs::read(module("report")).expect("the report worker"),
    )
    .await;
    let sha256 = installed["worker"]["current"]["sha256"]
        .as_str()
        .expect("sha256")
        .to_owned();
    // The uploaded version's bytes, damaged in the database: a host that has to fetch them
    // refuses them, and keeps running the version it has.
    postgres::block_on({
        let url = url.clone();
        async move {
            let client = postgres::connect(&url).await;
            // A valid worker, but not the one the SHA-256 names.
            let damaged = std::fs::read(module("supervisor")).expect("other bytes");
            client
                .execute(
                    "UPDATE modules SET bytes = $1 WHERE sha256 = $2",
                    &[&damaged, &sha256],
                )
                .await
                .expect("damaged");
        }
    });
    let b = Node::start(&url, "b", &[]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, info) = b.get("/api/workers/default").await;
    assert_eq!(
        info["current"]["version"], before["current"]["version"],
        "b runs the version it could check: {info}"
    );
    assert_exited_0(&b.run(json!({"name": "checked", "duration": 0})).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_overflows_to_the_shared_queue_stays_linked_and_monitored() {
    let url = postgres::fresh_database("overflow_child");
    // a's one place goes to the parent: its children wait in the shared queue, and b runs them.
    let a = Node::start(&url, "a", &["--capacity", "1"]).await;
    let b = Node::start(&url, "b", &[]).await;
    let b_id = b.id().await;
    let parent = a
        .spawn(actor(
            "parent",
            json!([
                {"op": "spawn", "worker": "default", "name": "linked", "duration": 1,
                 "link": true},
                {"op": "spawn", "worker": "default", "name": "watched", "duration": 1,
                 "monitor": true},
                {"op": "receive", "timeout_ms": 20_000},
            ]),
        ))
        .await;
    let record = b.wait_end(&parent).await;
    assert_exited_0(&record);
    let lines = logged(&b, &parent).await;
    let spawned: Vec<String> = lines
        .iter()
        .filter(|line| line["op"] == "spawn")
        .map(|line| line["pid"].as_str().expect("a child").to_owned())
        .collect();
    assert_eq!(spawned.len(), 2, "{lines:?}");
    for child in &spawned {
        let record = b.wait_end(child).await;
        assert_exited_0(&record);
        assert!(
            record["pid"].as_str().is_some_and(|pid| !pid.is_empty()),
            "{record}"
        );
    }
    let down = lines
        .iter()
        .find(|line| line["op"] == "receive")
        .expect("received");
    assert_eq!(down["got"], "down", "{down}");
    assert_eq!(down["end"]["pid"], spawned[1].as_str(), "{down}");
    assert_eq!(
        down["end"]["status"], "exited",
        "the child ran, on b: {down}"
    );
    let _ = b_id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_sent_while_the_task_s_host_is_dead_lands_where_it_runs_next() {
    let url = postgres::fresh_database("kill_dead_host");
    let a = Node::start(&url, "a", &[]).await;
    let mut b = Node::start(&url, "b", &[]).await;
    let b_id = b.id().await;
    let pid = b.spawn(json!({"name": "orphan", "duration": 8})).await;
    wait_running_on(&a, &pid, b_id).await;
    b.crash();
    // Before b's lease runs out: nobody holds the task now. The kill waits for whoever does.
    let (status, _) = a.kill(&pid).await;
    assert!(status == 200 || status == 202, "{status}");
    let record = a.wait_end(&pid).await;
    assert_eq!(record["status"], "killed", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_from_the_database_still_shuts_down() {
    let url = postgres::fresh_database("shutdown_cut_off");
    let proxy = Proxy::start(port_of(&url)).await;
    let a = Node::start(&proxy.url(&url), "a", &[]).await;
    let pid = a.spawn(json!({"name": "running", "duration": 30})).await;
    a.wait_running(&pid).await;
    proxy.cut();
    let mut a = a;
    a.terminate();
    // Bounded by the test's patience: a hang fails it.
    tokio::task::block_in_place(|| a.wait_exit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_to_two_hosts_at_once_makes_one_task() {
    let url = postgres::fresh_database("idempotency");
    let a = Node::start(&url, "a", &[]).await;
    let b = Node::start(&url, "b", &[]).await;
    let submit = |node: &Node, key: String| {
        let request = node
            .client
            .post(node.url("/api/tasks"))
            .header("idempotency-key", key)
            .json(&json!({"name": "once", "duration": 0}));
        async move {
            let answer = request.send().await.expect("sent");
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.expect("JSON");
            (status, body["pid"].as_str().map(str::to_owned))
        }
    };
    for round in 0..20 {
        let key = format!("same-key-{round}");
        let ((status_a, pid_a), (status_b, pid_b)) =
            tokio::join!(submit(&a, key.clone()), submit(&b, key.clone()));
        // Both are answered as the first and its repeat: one pid. (A repeat that finds the
        // first still being answered on the same host would get 409; not so across hosts.)
        assert_eq!((status_a, status_b), (202, 202), "round {round}");
        assert_eq!(pid_a, pid_b, "round {round}: one task");
    }
    let (_, page) = a.get("/api/tasks?name=once&limit=100").await;
    assert_eq!(page["tasks"].as_array().expect("tasks").len(), 20, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_in_the_store_by_a_host_that_does_not_run_it_is_given_back() {
    let url = postgres::fresh_database("strays");
    // One place: a long task takes it, so the next waits in the shared queue.
    let a = Node::start(&url, "a", &["--capacity", "1"]).await;
    let a_id = a.id().await;
    let long = a.spawn(json!({"name": "long", "duration": 60})).await;
    a.wait_running(&long).await;
    let stray = a.spawn(json!({"name": "stray", "duration": 0})).await;
    // As if a's claim of it had been committed and its answer lost: the store says a holds
    // it, and a does not run it.
    postgres::block_on({
        let (url, stray) = (url.clone(), stray.clone());
        async move {
            let (boot, seq) = stray.split_once('-').expect("a pid");
            let boot = i32::from_str_radix(boot, 16).expect("hex");
            let seq = i64::from_str_radix(seq, 16).expect("hex");
            let client = postgres::connect(&url).await;
            let moved = client
                .execute(
                    "UPDATE runs SET owner = $1 WHERE boot = $2 AND seq = $3",
                    &[&(a_id as i32), &boot, &seq],
                )
                .await
                .expect("moved");
            assert_eq!(moved, 1);
        }
    });
    let (status, _) = a.kill(&long).await;
    assert_eq!(status, 200);
    // Two looks for strays later (30 heartbeats of 200 ms each), it is back in the queue, and
    // a, which has a free place now, runs it.
    assert_exited_0(&a.wait_end(&stray).await);
}

/// The writer gathers a commit's acceptances, starts and ends into one statement each, and
/// writes a task's lines with its start and its end (issue #23): tasks that fail at once and
/// restart, several attempts within one commit, beside tasks that start and end within one and
/// tasks of two steps, keep every attempt and every line in order, and end once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_restarts_ends_and_lines_written_together_keep_their_order() {
    let url = postgres::fresh_database("gathered");
    let a = Node::start_with(
        &url,
        "a",
        &[],
        "\n[workers.exit7]\nmodule = \"{module:exit7}\"\nmax_memory = \"16MiB\"\n",
    )
    .await;
    let mut failing = Vec::new();
    let mut fine = Vec::new();
    for i in 0..16 {
        failing.push(
            a.spawn(
                json!({"name": format!("flaky{i}"), "worker": "exit7", "duration": 0,
                "restart": "on-failure", "max_attempts": 3}),
            )
            .await,
        );
        fine.push(
            a.spawn(json!({"name": format!("fine{i}"), "duration": 0}))
                .await,
        );
    }
    for pid in &failing {
        let record = a.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["exit_code"], 7, "{record}");
        assert_eq!(record["attempt"], 3, "{record}");
        assert_eq!(
            numbered_attempts(&record),
            [(1, 7), (2, 7), (3, 7)],
            "{record}"
        );
    }
    for pid in &fine {
        let record = a.wait_end(pid).await;
        assert_exited_0(&record);
        assert!(record["started_at"].is_string(), "{record}");
        let lines = messages(&a, pid).await;
        assert!(
            lines.iter().any(|line| line.contains("Worker done")),
            "{pid}: {lines:?}"
        );
    }
    // A task of two steps logs with its start, with its first step and with its end: its
    // lines come back in order from wherever each was kept, and its last step with its end.
    let mut stepping = Vec::new();
    for i in 0..8 {
        stepping.push(
            a.spawn(json!({"name": format!("steps{i}"), "duration": 2}))
                .await,
        );
    }
    for pid in &stepping {
        let record = a.wait_end(pid).await;
        assert_exited_0(&record);
        assert_eq!(
            (record["step"].as_u64(), record["steps"].as_u64()),
            (Some(2), Some(2)),
            "{record}"
        );
        let lines = messages(&a, pid).await;
        let expected = [
            "Worker started steps=2",
            "Worker progress step=1",
            "Worker progress step=2",
            "Worker done, exiting",
        ];
        assert_eq!(lines.len(), expected.len(), "{pid}: {lines:?}");
        for (line, start) in lines.iter().zip(expected) {
            assert!(line.starts_with(start), "{pid}: {lines:?}");
        }
    }
    let (_, page) = a.get("/api/tasks?status=exited&limit=100").await;
    assert_eq!(
        page["tasks"].as_array().map(Vec::len),
        Some(40),
        "every task is listed once by its status: {page}"
    );
}

/// The shared store keeps the history it is told (`--max-history`): the oldest ended tasks go,
/// with their lines; the newest stay, and so does a task still running, however old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_history_keeps_the_newest_ended_tasks_and_every_live_one() {
    let url = postgres::fresh_database("history");
    let a = Node::start(&url, "a", &["--max-history", "3"]).await;
    let live = a.spawn(json!({"name": "live", "duration": 60})).await;
    let mut pids = Vec::new();
    for i in 0..8 {
        let pid = a
            .spawn(json!({"name": format!("h{i}"), "duration": 0}))
            .await;
        a.wait_end(&pid).await;
        pids.push(pid);
    }
    // Pruned once a second.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for pid in &pids[..5] {
        loop {
            let (status, _) = a.get(&format!("/api/tasks/{pid}")).await;
            if status == 404 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pid} was never pruned"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, _) = a.get(&format!("/api/tasks/{pid}/logs")).await;
        assert_eq!(status, 404, "{pid}'s lines went with it");
    }
    for pid in &pids[5..] {
        let (status, record) = a.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(status, 200, "{pid}");
        assert_exited_0(&record);
        assert!(!messages(&a, pid).await.is_empty(), "{pid}");
    }
    let (status, record) = a.get(&format!("/api/tasks/{live}")).await;
    assert_eq!(
        (status, record["status"].as_str()),
        (200, Some("running")),
        "{record}"
    );
}

/// A database written by a host of schema version 1 (lines a row each in `logs`, indexes of
/// `tasks` by status, name and worker) is migrated forward at start: its tasks read as before,
/// their lines with them, new tasks log where version 3 keeps lines, and the history's bound
/// counts the old tasks with the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_schema_version_1_is_migrated_with_its_tasks_and_lines() {
    let url = postgres::fresh_database("migrated");
    let mut old = Vec::new();
    {
        let mut a = Node::start(&url, "a", &[]).await;
        for i in 0..3 {
            let pid = a
                .spawn(json!({"name": format!("old{i}"), "duration": 0}))
                .await;
            a.wait_end(&pid).await;
            old.push(pid);
        }
        a.binary.stop();
    }
    // Version 1's shape, with the old tasks' lines as version 1 wrote them.
    let mut legacy = String::new();
    for pid in &old {
        let (boot, seq) = postgres::key_of(pid);
        for n in 1..=2 {
            legacy.push_str(&format!(
                "INSERT INTO logs (boot, seq, at, source, message)
                 VALUES ({boot}, {seq}, {n}, 'info', 'legacy line {n}');"
            ));
        }
    }
    postgres::execute(
        &url,
        &format!(
            "DROP TABLE log_parts;
             ALTER TABLE tasks DROP COLUMN log_head, DROP COLUMN log_tail, DROP COLUMN result,
                DROP COLUMN run_at, DROP COLUMN priority, DROP COLUMN retry_of_boot,
                DROP COLUMN retry_of_seq, DROP COLUMN schedule, DROP COLUMN schedule_tick,
                DROP COLUMN concurrency_key;
             DROP TABLE schedules;
             DROP TABLE paused_workers;
             DROP TABLE limit_keys;
             DROP TABLE worker_limits;
             DROP TABLE checkpoints;
             ALTER TABLE runs DROP COLUMN limited, DROP COLUMN worker,
                DROP COLUMN concurrency_key;
             DROP INDEX IF EXISTS runs_queue;
             ALTER TABLE runs DROP COLUMN priority;
             DROP INDEX IF EXISTS runs_due;
             CREATE INDEX runs_queue ON runs (spawned_at, boot, seq) WHERE owner IS NULL;
             CREATE INDEX tasks_by_status ON tasks (status, spawned_at, boot, seq);
             CREATE INDEX tasks_by_name ON tasks (name, spawned_at, boot, seq);
             CREATE INDEX tasks_by_worker ON tasks (worker, spawned_at, boot, seq);
             {legacy}
             UPDATE http_spawn_meta SET value = '1' WHERE key = 'schema_version';"
        ),
    );
    let b = Node::start(&url, "b", &["--max-history", "4"]).await;
    for pid in &old {
        let (status, record) = b.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(status, 200, "{pid}");
        assert_exited_0(&record);
        assert_eq!(
            messages(&b, pid).await,
            ["legacy line 1", "legacy line 2"],
            "{pid}"
        );
    }
    let mut new = Vec::new();
    for i in 0..3 {
        let pid = b
            .spawn(json!({"name": format!("new{i}"), "duration": 1}))
            .await;
        b.wait_end(&pid).await;
        new.push(pid);
    }
    for pid in &new {
        let lines = messages(&b, pid).await;
        assert!(
            lines
                .first()
                .is_some_and(|line| line.starts_with("Worker started"))
                && lines
                    .last()
                    .is_some_and(|line| line == "Worker done, exiting"),
            "{pid}: {lines:?}"
        );
    }
    // Six ended, four kept: the two oldest go.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for pid in &old[..2] {
        while b.get(&format!("/api/tasks/{pid}")).await.0 != 404 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pid} was never pruned"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for pid in old[2..].iter().chain(&new) {
        assert_eq!(b.get(&format!("/api/tasks/{pid}")).await.0, 200, "{pid}");
    }
}

/// POSTs `body` to `path` on `node`: the status and the JSON body.
async fn post(node: &Remote, path: &str, body: Value) -> (u16, Value) {
    node.post(path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_tasks_wait_in_the_store_the_queue_goes_by_priority_and_retries_reach_any_host() {
    let url = postgres::fresh_database("scheduling");
    let a = Node::start(&url, "a", &["--capacity", "1"]).await;
    let b = Node::start(&url, "b", &["--capacity", "1"]).await;

    // Scheduled through one host: every host shows it waiting, with no host holding it, and
    // a kill through another ends it at once.
    let (status, accepted) = post(
        &a,
        "/api/tasks",
        json!({"name": "later", "duration": 0, "delay": 1.5, "priority": 7,
            "concurrency_key": "tenant-1"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "scheduled", "{accepted}");
    let later = accepted["pid"].as_str().expect("a pid").to_owned();
    let killed = a
        .spawn(json!({"name": "never", "duration": 0, "delay": 3600}))
        .await;
    let (_, record) = b.get(&format!("/api/tasks/{later}")).await;
    assert_eq!(record["status"], "scheduled", "{record}");
    assert_eq!(record["priority"], 7, "{record}");
    assert_eq!(record["concurrency_key"], "tenant-1", "{record}");
    assert!(record.get("node").is_none(), "{record}");
    let (status, record) = b.kill(&killed).await;
    assert!(status == 200 || status == 202, "{record}");
    let record = a.wait_end(&killed).await;
    assert_eq!(record["status"], "killed", "{record}");
    assert_eq!(record["started_at"], Value::Null, "{record}");
    let ended = b.wait_end(&later).await;
    assert_exited_0(&ended);
    assert!(
        time_of(&ended, "started_at") >= time_of(&ended, "run_at"),
        "{ended}"
    );

    // Both places taken (b's for longer): what waits in the shared queue starts on a, one
    // at a time, highest priority first, then in the order accepted.
    let long = b.spawn(json!({"name": "long", "duration": 8})).await;
    wait_running_on(&b, &long, b.id().await).await;
    let short = a.spawn(json!({"name": "short", "duration": 1})).await;
    wait_running_on(&a, &short, a.id().await).await;
    let mut waiting = Vec::new();
    for (name, priority) in [("low", 1), ("plain", 5), ("high", 9)] {
        let pid = a
            .spawn(json!({"name": name, "duration": 1, "priority": priority}))
            .await;
        waiting.push((name, pid));
    }
    let mut started = Vec::new();
    for (name, pid) in &waiting {
        let ended = b.wait_end(pid).await;
        assert_exited_0(&ended);
        started.push((time_of(&ended, "started_at"), *name));
    }
    started.sort();
    let order: Vec<&str> = started.into_iter().map(|(_, name)| name).collect();
    assert_eq!(order, ["high", "plain", "low"]);

    // A task that failed on one host is retried through the other.
    let failed = a
        .run(json!({"name": "late", "duration": 3, "deadline": 1}))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let of = failed["pid"].as_str().expect("a pid");
    let (status, retried) = post(&b, &format!("/api/tasks/{of}/retry"), json!(null)).await;
    assert_eq!(status, 202, "{retried}");
    let retry = retried["pid"].as_str().expect("a pid");
    let ended = a.wait_end(retry).await;
    assert_eq!(ended["retry_of"], of, "{ended}");
    assert_eq!(ended["outcome"], "deadline_exceeded", "{ended}");
    let (_, again) = post(&a, &format!("/api/tasks/{of}/retry"), json!(null)).await;
    assert_eq!(again["pid"], retry, "{again}");
}

/// The tasks schedule `name` created, oldest first, through `node`.
async fn schedule_tasks(node: &Remote, name: &str) -> Vec<Value> {
    node.schedule_tasks(name).await
}

/// Waits until schedule `name` has made `n` tasks, then checks that no tick made two.
async fn ticks_once_each(node: &Remote, name: &str, n: usize) -> Vec<Value> {
    let tasks = node.wait_schedule_tasks(name, n).await;
    assert_one_task_per_tick(name, &tasks);
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_runs_the_schedules_and_each_tick_fires_once_even_when_a_host_dies() {
    let url = postgres::fresh_database("cron");
    let file = r#"
[schedules.pulse]
cron = "*/2 * * * * *"
task = { name = "pulse", duration = 0 }
"#;
    let mut a = Node::start_with(&url, "a", &[], file).await;
    let b = Node::start_with(&url, "b", &[], file).await;
    let c = Node::start_with(&url, "c", &[], file).await;
    let (status, created) = post(
        &b,
        "/api/schedules",
        json!({"name": "made", "cron": "* * * * * *", "overlap": "allow",
            "task": {"name": "made", "duration": 0}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, shown) = a.get("/api/schedules/made").await;
    assert_eq!(shown["cron"], "* * * * * *", "{shown}");
    let made = ticks_once_each(&c, "made", 4).await;
    // A pid starts with the id of the host that accepted it: the ticks go to whichever host
    // saw them first.
    let accepted_by: HashSet<&str> = made
        .iter()
        .filter_map(|task| task["pid"].as_str()?.split('-').next())
        .collect();
    assert!(!accepted_by.is_empty(), "{made:?}");
    let before = ticks_once_each(&c, "pulse", 3).await.len();
    a.crash();
    ticks_once_each(&c, "pulse", before + 3).await;
    ticks_once_each(&b, "made", made.len() + 4).await;
    for task in schedule_tasks(&b, "made").await {
        let ended = b.wait_end(task["pid"].as_str().expect("a pid")).await;
        assert_exited_0(&ended);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_through_one_host_is_paused_on_every_host() {
    let url = postgres::fresh_database("paused");
    let a = Node::start(&url, "a", &[]).await;
    let b = Node::start(&url, "b", &[]).await;
    let answer = a
        .client
        .post(a.url("/api/workers/default/pause"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 200);
    // b follows at its next heartbeat.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while b.get("/api/workers/default").await.1["paused"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never saw the pause"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = b.spawn(json!({"name": "held", "duration": 0})).await;
    let also = a.spawn(json!({"name": "also", "duration": 0})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for pid in [&held, &also] {
        let (_, record) = a.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(record["status"], "spawned", "{record}");
    }
    let answer = b
        .client
        .post(b.url("/api/workers/default/resume"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(answer.status(), 200);
    for pid in [&held, &also] {
        assert_exited_0(&a.wait_end(pid).await);
    }
}
