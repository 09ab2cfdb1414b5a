//! Cluster faults end to end (issue #20), on real hosts sharing a fresh PostgreSQL database:
//! a host whose database connection stalls stops every task (compute-bound steps and steps
//! waiting on the database included) before another host may take it over; kills, messages and
//! exit signals live until the host holding their task carries them out; a full mailbox on
//! another host is `429`; and tasks answered `202` as a host shuts down run elsewhere.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cluster::{ADMIN_TOKEN, start_host};
use common::postgres::{execute as sql, key_of};
use common::process::Binary;
use common::proxy::{Proxy, port_of};
use common::workers::{Storm, actor, logged};
use common::{PATIENCE, Remote, module, postgres};
use serde_json::{Value, json};

const TOKEN: &str = "cluster-faults-token-0123456789ab";

/// The registry file: the default worker, the scriptable actor, and `spin`, whose step spins
/// on a fuel budget that lasts far longer than any test.
const SPIN: &str = r#"
[workers.spin]
module = "{module:spin}"
max_memory = "16MiB"
fuel_per_step = 1000000000000000
"#;

/// Host `name` of the cluster on the database at `url`, with `args` added.
async fn node(url: &str, name: &str, args: &[&str]) -> Binary {
    start_host(url, name, TOKEN, SPIN, args).await
}

/// Its id in the cluster.
async fn id_of(node: &Remote) -> u64 {
    let (status, cluster) = node.get("/api/cluster").await;
    assert_eq!(status, 200, "{cluster}");
    cluster["node"].as_u64().expect("a node id")
}

/// Waits until `pid` shows on `node` as running on host `id`; its record then.
async fn wait_running_on(node: &Remote, pid: &str, id: u64) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, record) = node.get(&format!("/api/tasks/{pid}")).await;
        if record["status"] == "running" && record["node"] == id {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pid} never ran on host {id}: {record}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A record's time (`2026-12-06T13:57:31.564Z`), as the host's clock read it.
fn instant_of(text: &str) -> SystemTime {
    let number = |range: std::ops::Range<usize>| -> i64 {
        text.get(range)
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 time: {text}"))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second, millis) = (
        number(11..13),
        number(14..16),
        number(17..19),
        number(20..23),
    );
    // Days since the epoch of a civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    UNIX_EPOCH
        + Duration::from_secs(u64::try_from(seconds).expect("after 1970"))
        + Duration::from_millis(u64::try_from(millis).expect("millis"))
}

/// Issue #20, item 2: a host cut off by a stalled (not closed) connection stops every task it
/// runs before the database lets another host take them over: a sleeping task, a step spinning
/// on a vast fuel budget, and a step waiting in a host call on the stalled database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_stops_every_task_before_another_host_takes_it_over() {
    let url = postgres::fresh_database("stalled");
    let proxy = Proxy::start(port_of(&url)).await;
    // A margin of a whole second between b's deadline and the lease's expiry: the suite runs
    // many hosts on two cores, where a host's threads may wait a few hundred milliseconds.
    let lease = ["--lease", "4s", "--heartbeat", "1s"];
    let a = node(&url, "a", &lease).await;
    // A step that spins holds its scheduler thread: one thread for each task here.
    let b = node(
        &proxy.url(&url),
        "b",
        &[&lease[..], &["--worker-threads", "8"]].concat(),
    )
    .await;
    let (a_id, b_id) = (id_of(&a).await, id_of(&b).await);
    let target = a
        .spawn(json!({"name": "target", "duration": 60, "worker": "default"}))
        .await;
    wait_running_on(&b, &target, a_id).await;
    let mut pids = Vec::new();
    for i in 0..4 {
        pids.push(
            b.spawn(json!({"name": format!("sleeper{i}"), "duration": 30}))
                .await,
        );
    }
    pids.push(
        b.spawn(json!({"name": "spinner", "worker": "spin", "deadline": 120}))
            .await,
    );
    // Looks a name up without end, in one step: each lookup asks the database.
    pids.push(
        b.spawn(actor(
            "asker",
            json!([{"op": "whereis_many", "name": "nobody", "count": 1_000_000_000u64}]),
        ))
        .await,
    );
    for pid in &pids {
        wait_running_on(&a, pid, b_id).await;
    }
    proxy.stall();
    let stalled_at = SystemTime::now();
    let stopped_at = loop {
        let (_, health) = b.get("/api/health").await;
        if health["live"] == 0 {
            break SystemTime::now();
        }
        assert!(
            stalled_at.elapsed().is_ok_and(|waited| waited < PATIENCE),
            "b kept its tasks: {health}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut first_start = None;
    for pid in &pids {
        let record = wait_running_on(&a, pid, a_id).await;
        assert_eq!(record["attempt"], 2, "{record}");
        let started = instant_of(record["started_at"].as_str().expect("started"));
        assert!(
            stopped_at < started,
            "{pid} started on a before b had stopped it: {record}"
        );
        first_start = Some(first_start.map_or(started, |first: SystemTime| first.min(started)));
    }
    let (stop, margin) = (
        stopped_at.duration_since(stalled_at).unwrap_or_default(),
        first_start
            .and_then(|first| first.duration_since(stopped_at).ok())
            .unwrap_or_default(),
    );
    eprintln!(
        "b stopped every task {stop:?} after the stall, {margin:?} before a started the first"
    );
    proxy.restore();
    for pid in &pids {
        let _ = a.kill(pid).await;
    }
    let _ = a.kill(&target).await;
}

/// Issue #20, item 5: a message sent to a task waiting in the shared queue outlives a claim
/// that hands the task back (its module could not be read then): the host that runs it
/// delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_outlives_a_claim_that_hands_its_task_back() {
    let url = postgres::fresh_database("handed_back");
    let a = node(&url, "a", &["--capacity", "1"]).await;
    let b = node(&url, "b", &["--capacity", "1"]).await;
    let mut longs = Vec::new();
    for (host, name) in [(&a, "long-a"), (&b, "long-b")] {
        let pid = host
            .spawn(json!({"name": name, "duration": 120, "worker": "default"}))
            .await;
        host.wait_running(&pid).await;
        longs.push(pid);
    }
    // Every place is taken: it waits in the shared queue, and its message in the store.
    let receiver = a
        .spawn(actor(
            "receiver",
            json!([{"op": "receive", "timeout_ms": 20_000}]),
        ))
        .await;
    let sent = a
        .client
        .post(a.url(&format!("/api/tasks/{receiver}/messages")))
        .json(&json!({"kept": true}))
        .send()
        .await
        .expect("posted");
    assert_eq!(sent.status(), 202);
    // Two newer versions of the worker: the receiver's is neither current nor previous any
    // more, so the host that claims it reads its bytes from the store.
    let mut newest = String::new();
    for replacement in ["default", "exit7"] {
        let answer = a
            .client
            .put(a.url("/api/workers/actor"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/wasm")
            .body(std::fs::read(module(replacement)).expect("module bytes"))
            .send()
            .await
            .expect("uploaded");
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.expect("JSON");
        newest = body["worker"]["current"]["sha256"]
            .as_str()
            .expect("sha256")
            .to_owned();
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, worker) = b.get("/api/workers/actor").await;
        if worker["current"]["sha256"] == newest.as_str() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b never followed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sql(&url, "ALTER TABLE modules RENAME TO modules_away");
    // b gets a place: it claims the receiver, cannot read its module, hands it back, and
    // does so again at every poll.
    let (status, _) = b.kill(&longs[1]).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sql(&url, "ALTER TABLE modules_away RENAME TO modules");
    let record = b.wait_end(&receiver).await;
    assert_eq!(record["status"], "exited", "{record}");
    let got = logged(&b, &receiver)
        .await
        .into_iter()
        .find(|line| line["op"] == "receive")
        .expect("it received");
    assert_eq!(got["got"], "message", "{got}");
    assert_eq!(got["body"], json!({"kept": true}), "{got}");
    let _ = a.kill(&longs[0]).await;
}

/// Issue #20, item 5: a kill for a task the store says this host holds, which it does not run
/// (a claim whose answer was lost), waits for the task: the host that runs it next kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_for_a_task_its_host_does_not_run_waits_for_it() {
    let url = postgres::fresh_database("kill_stray");
    let a = node(&url, "a", &["--capacity", "1"]).await;
    let a_id = id_of(&a).await;
    let long = a.spawn(json!({"name": "long", "duration": 120})).await;
    a.wait_running(&long).await;
    let stray = a.spawn(json!({"name": "stray", "duration": 0})).await;
    let (boot, seq) = key_of(&stray);
    sql(
        &url,
        &format!("UPDATE runs SET owner = {a_id} WHERE boot = {boot} AND seq = {seq}"),
    );
    let (status, _) = a.kill(&stray).await;
    assert!(status == 200 || status == 202, "{status}");
    // Found as a stray (two looks, 30 heartbeats apart), handed back, claimed by a once its
    // place is free, and killed there.
    let (status, _) = a.kill(&long).await;
    assert_eq!(status, 200);
    let record = a.wait_end(&stray).await;
    assert_eq!(record["status"], "killed", "{record}");
    assert_eq!(record["started_at"], Value::Null, "it never ran: {record}");
}

/// Issue #20, item 5: a task's mailbox bound holds across hosts: past it, and past as many
/// messages again waiting in the store, a message is refused with `429`; none accepted is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_on_another_host_is_429_and_no_message_is_lost() {
    let url = postgres::fresh_database("full_remote");
    let args = ["--max-mailbox-messages", "4"];
    let a = node(&url, "a", &args).await;
    let b = node(&url, "b", &args).await;
    let b_id = id_of(&b).await;
    let receiver = b
        .spawn(actor(
            "receiver",
            json!([
                {"op": "sleep", "ms": 4000},
                {"op": "receive_all", "timeout_ms": 2000}
            ]),
        ))
        .await;
    wait_running_on(&a, &receiver, b_id).await;
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..20 {
        let answer = a
            .client
            .post(a.url(&format!("/api/tasks/{receiver}/messages")))
            .json(&json!({"seq": i}))
            .send()
            .await
            .expect("posted");
        match answer.status().as_u16() {
            202 => accepted += 1,
            429 => {
                assert!(answer.headers().contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("message {i}: {other}"),
        }
        // Time for b to take what it can into the mailbox.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused > 0, "the bound holds across hosts");
    assert!(accepted <= 8, "{accepted} accepted");
    let record = a.wait_end(&receiver).await;
    assert_eq!(record["status"], "exited", "{record}");
    let lines = logged(&a, &receiver).await;
    // One line per message received, then one with the count.
    let count = lines
        .iter()
        .filter(|line| line["op"] == "receive_all")
        .find_map(|line| line["count"].as_u64())
        .expect("a count");
    assert_eq!(count, accepted, "every accepted message arrived: {lines:?}");
}

/// Issue #20, item 5: a message for a task that waits in the shared queue is kept however long
/// the task waits: no prune takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_a_long_waiting_task_is_never_pruned() {
    let url = postgres::fresh_database("old_command");
    let a = node(&url, "a", &["--capacity", "1"]).await;
    let long = a.spawn(json!({"name": "long", "duration": 120})).await;
    a.wait_running(&long).await;
    let receiver = a
        .spawn(actor(
            "receiver",
            json!([{"op": "receive", "timeout_ms": 20_000}]),
        ))
        .await;
    let sent = a
        .client
        .post(a.url(&format!("/api/tasks/{receiver}/messages")))
        .json(&json!({"waited": "long"}))
        .send()
        .await
        .expect("posted");
    assert_eq!(sent.status(), 202);
    // As if it had waited two hours; the pruner runs every second.
    sql(
        &url,
        "UPDATE commands SET created_at = now() - interval '2 hours'",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = a.kill(&long).await;
    assert_eq!(status, 200);
    let record = a.wait_end(&receiver).await;
    assert_eq!(record["status"], "exited", "{record}");
    let got = logged(&a, &receiver)
        .await
        .into_iter()
        .find(|line| line["op"] == "receive")
        .expect("it received");
    assert_eq!(got["body"], json!({"waited": "long"}), "{got}");
}

/// Issue #20, item 4, in a cluster: a task answered `202` by a host that begins to shut down
/// goes back to the shared queue, and another host runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_answered_202_as_a_host_shuts_down_runs_elsewhere() {
    let url = postgres::fresh_database("cluster_sigterm");
    let a = node(&url, "a", &[]).await;
    let mut b = node(&url, "b", &["--capacity", "8"]).await;
    let storm = Storm::start(&b.base, Some(TOKEN), 16);
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.terminate();
    let status = tokio::task::block_in_place(|| b.wait_exit());
    assert!(status.success(), "{status}");
    let accepted = storm.stop().await;
    assert!(accepted.len() > 50, "load before the SIGTERM");
    let mut seen = HashSet::new();
    for pid in &accepted {
        assert!(seen.insert(pid), "{pid} answered twice");
        let record = a.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["exit_code"], 0, "{record}");
    }
}
