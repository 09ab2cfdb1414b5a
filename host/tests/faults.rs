//! Store faults end to end, on the real binary with SQLite and with a real PostgreSQL (a host
//! alone on its own database): text a store cannot hold, changes a store refuses, a database
//! that turns read-only, a store locked for long under load, a commit whose answer is lost, an
//! idempotency key past its time, and a graceful shutdown racing acceptances. In every case
//! no accepted task loses its end and none runs twice.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::postgres::execute as sql;
use common::process::Binary;
use common::proxy::{Proxy, port_of};
use common::workers::{Storm, actor, messages, registry};
use common::{PATIENCE, postgres, spawn_app, temp_dir};
use serde_json::{Value, json};

/// A host on the SQLite file `dir/tasks.db`.
async fn sqlite_host(dir: &Path, args: &[&str]) -> Binary {
    let store = format!("sqlite:{}", dir.join("tasks.db").display());
    let mut argv: Vec<String> = [
        "--store",
        &store,
        "--config",
        &registry(dir, "").display().to_string(),
        "--shutdown-grace-secs",
        "1",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    argv.extend(args.iter().map(ToString::to_string));
    let host = Binary::spawn(&argv, &[], None);
    host.ready().await;
    host
}

/// A host alone on the PostgreSQL database at `url`: a cluster of one, its heartbeats fast.
async fn pg_host(url: &str, args: &[&str]) -> Binary {
    let dir = temp_dir("faults-pg");
    let mut argv: Vec<String> = [
        "--store",
        url,
        "--node-name",
        "solo",
        "--config",
        &registry(&dir, "").display().to_string(),
        "--shutdown-grace-secs",
        "1",
        "--cluster-poll",
        "50ms",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if !args.contains(&"--lease") {
        argv.extend(["--lease", "4s", "--heartbeat", "200ms"].map(String::from));
    }
    argv.extend(args.iter().map(ToString::to_string));
    let host = Binary::spawn(&argv, &[], None);
    host.ready().await;
    host
}

/// What the writer's connection to PostgreSQL says it is (`application_name`).
const WRITER_CONNECTION: &str = "http-spawn writer";

/// Ends every connection to `url`'s database but the caller's: the host reconnects.
fn drop_connections(url: &str) {
    let database = url
        .rsplit('/')
        .next()
        .and_then(|path| path.split('?').next())
        .expect("a database name")
        .to_owned();
    sql(
        url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ),
    );
}

/// Waits until the host reads its store again after [`drop_connections`]: a read that meets a
/// pooled connection the server ended answers `503` (with `Retry-After`), once per such
/// connection.
async fn reads_again(host: &Binary) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = host.get("/api/tasks?limit=1").await;
        if status == 200 {
            return;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "reads never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tasks the host has started, every attempt counted, from its metrics.
async fn started(host: &Binary) -> f64 {
    let text = host
        .client
        .get(host.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|line| line.starts_with("http_spawn_tasks_started_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_name_is_refused_with_400_on_every_store() {
    let url = postgres::fresh_database("nul_name");
    let pg = pg_host(&url, &[]).await;
    let dir = temp_dir("faults-nul-name");
    let sqlite = sqlite_host(&dir, &[]).await;
    let memory = spawn_app("default", &[]).await;
    for host in [&*pg, &*sqlite, &*memory] {
        let answer = host.submit(json!({"name": "a\u{0}b", "duration": 0})).await;
        assert_eq!(answer.status(), 400, "{}", host.base);
        let body: Value = answer.json().await.expect("JSON");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("NUL")),
            "{body}"
        );
        host.assert_good_task_exits_0().await;
    }
}

/// A guest's NUL bytes (in what it prints and in its error) are escaped where they are
/// captured: its end is recorded, once, on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_nul_bytes_are_escaped_and_its_end_is_kept() {
    let url = postgres::fresh_database("nul_guest");
    let pg = pg_host(&url, &[]).await;
    let dir = temp_dir("faults-nul-guest");
    let sqlite = sqlite_host(&dir, &[]).await;
    for host in [&pg, &sqlite] {
        let pid = host
            .spawn(actor(
                "nul",
                json!([
                    {"op": "print", "text": "before\u{0}after"},
                    {"op": "fail", "message": "bad\u{0}end"}
                ]),
            ))
            .await;
        let record = host.wait_end(&pid).await;
        assert_eq!(record["status"], "failed", "{record}");
        assert_eq!(record["outcome"], "guest_error", "{record}");
        assert_eq!(record["error"], "bad\u{FFFD}end", "{record}");
        let lines = messages(host, &pid).await;
        assert!(
            lines.iter().any(|line| line == "before\u{FFFD}after"),
            "{lines:?}"
        );
        // Long enough for a lost end to be found as a stray and run again.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(started(host).await, 1.0, "it ran once");
        let (_, again) = host.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(again, record, "its end stands");
    }
}

/// What the store refuses for its content costs that change alone: a log line is dropped and
/// counted, an end is written with its error text replaced, an acceptance is answered `422`;
/// the other changes of the same commit are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_store_refuses_costs_itself_alone_never_an_end() {
    let url = postgres::fresh_database("refused");
    let pg = pg_host(&url, &[]).await;
    // A task's lines are kept a few at a time, in one value (with its start, in `log_parts`,
    // with its end), each message as UTF-8: a marked line is one whose NUL before `poison`
    // was stored as U+FFFD.
    sql(
        &url,
        "ALTER TABLE log_parts ADD CONSTRAINT no_marked_line
            CHECK (position('\\xefbfbd706f69736f6e'::bytea IN lines) = 0);
         ALTER TABLE tasks ADD CONSTRAINT no_marked_head
            CHECK (position('\\xefbfbd706f69736f6e'::bytea IN log_head) = 0);
         ALTER TABLE tasks ADD CONSTRAINT no_marked_tail
            CHECK (position('\\xefbfbd706f69736f6e'::bytea IN log_tail) = 0);
         ALTER TABLE tasks ADD CONSTRAINT no_marked_error CHECK (error NOT LIKE '%poison%');
         ALTER TABLE tasks ADD CONSTRAINT no_marked_name CHECK (name NOT LIKE '%poison%');",
    );
    let dir = temp_dir("faults-refused");
    let sqlite = sqlite_host(&dir, &[]).await;
    {
        let db = rusqlite::Connection::open(dir.join("tasks.db")).expect("open the store");
        db.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        // Every change of a task is first written to the journal, one value per commit, with
        // the task's whole row: a marked line, error or name there is refused with whatever
        // shares its commit. A line or error is marked by the NUL the guest wrote before
        // `poison` (stored as U+FFFD), which the submitted script holds only escaped.
        db.execute_batch(
            "CREATE TRIGGER no_marked_change BEFORE INSERT ON journal
                WHEN instr(NEW.changes, CAST(char(65533) || 'poison' AS BLOB)) > 0
                    OR instr(NEW.changes, CAST('a poison name' AS BLOB)) > 0
                BEGIN SELECT RAISE(ABORT, 'marked'); END;",
        )
        .expect("add the triggers");
    }
    for host in [&pg, &sqlite] {
        // Submitted together, so that their changes share commits.
        let script = json!([
            {"op": "print", "text": "fine 1"},
            {"op": "print", "text": "a \u{0}poison line"},
            {"op": "print", "text": "fine 2"},
            // With `repeat`, the actor's own line about it gives the length, not the text.
            {"op": "fail", "message": "a \u{0}poison end", "repeat": 1}
        ]);
        let (marked, good, refused) = tokio::join!(
            host.spawn(actor("marked", script)),
            host.spawn(json!({"name": "good", "duration": 1})),
            host.submit(json!({"name": "a poison name", "duration": 0})),
        );
        assert_eq!(refused.status(), 422, "{}", host.base);
        let body: Value = refused.json().await.expect("JSON");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("refused")),
            "{body}"
        );
        let record = host.wait_end(&marked).await;
        assert_eq!(record["status"], "failed", "{record}");
        assert_eq!(record["outcome"], "guest_error", "{record}");
        let error = record["error"].as_str().expect("an error");
        assert!(
            !error.contains("poison") && error.contains("refused"),
            "{record}"
        );
        let lines = messages(host, &marked).await;
        assert!(lines.contains(&"fine 1".to_owned()), "{lines:?}");
        assert!(lines.contains(&"fine 2".to_owned()), "{lines:?}");
        assert!(
            !lines.iter().any(|line| line.contains("poison")),
            "{lines:?}"
        );
        let good = host.wait_end(&good).await;
        assert_eq!(good["status"], "exited", "{good}");
        let refused_lines = host
            .metric("http_spawn_store_refused_changes_total{change=\"log_line\"}")
            .await;
        // The printed line.
        assert_eq!(refused_lines, Some(1.0), "{}", host.base);
        host.assert_good_task_exits_0().await;
    }
}

/// A database that turns read-only (a failover) is the store's environment, not the changes'
/// fault: the host refuses new tasks meanwhile, and keeps the ends of the running ones until
/// the database takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_keeps_every_end_until_it_takes_writes_again() {
    let url = postgres::fresh_database("read_only");
    let host = pg_host(&url, &["--lease", "60s", "--heartbeat", "1s"]).await;
    let mut pids = Vec::new();
    for i in 0..20 {
        pids.push(
            host.spawn(json!({"name": format!("t{i}"), "duration": 1}))
                .await,
        );
    }
    for pid in &pids {
        host.wait_running(pid).await;
    }
    let database = url.rsplit('/').next().expect("a database").to_owned();
    // Set from the server's own database: every new session of this one is read-only now.
    sql(
        &postgres::base_url(),
        &format!("ALTER DATABASE \"{database}\" SET default_transaction_read_only = on"),
    );
    drop_connections(&url);
    // Every task ends meanwhile; new ones are refused once the store has failed a write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = host.submit(json!({"name": "refused", "duration": 0})).await;
    assert_eq!(refused.status(), 503);
    sql(
        &postgres::base_url(),
        &format!("ALTER DATABASE \"{database}\" RESET default_transaction_read_only"),
    );
    drop_connections(&url);
    reads_again(&host).await;
    for pid in &pids {
        let record = host.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["attempt"], 1, "{record}");
        let done = messages(&host, pid)
            .await
            .iter()
            .filter(|line| line.contains("Worker done"))
            .count();
        assert_eq!(done, 1, "{pid}");
    }
    assert_eq!(started(&host).await, 20.0, "none ran twice");
    host.assert_good_task_exits_0().await;
}

/// Issue #20, item 4: a task answered `202` as the host begins to shut down runs, after the
/// restart if not before; none ends `failed` for the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_answered_202_around_a_sigterm_runs() {
    let dir = temp_dir("faults-sigterm");
    // The history keeps every task the storm can submit in its 2 s: the oldest ended ones must
    // not be pruned (the default keeps 10,000) before the test reads them back.
    let args = ["--capacity", "64", "--max-history", "1000000"];
    let mut host = sqlite_host(&dir, &args).await;
    let storm = Storm::start(&host.base, None, 16);
    tokio::time::sleep(Duration::from_secs(2)).await;
    host.terminate();
    let status = tokio::task::block_in_place(|| host.wait_exit());
    assert!(status.success(), "{status}");
    let accepted = storm.stop().await;
    assert!(accepted.len() > 100, "load before the SIGTERM");
    let host = sqlite_host(&dir, &args).await;
    let mut seen = HashSet::new();
    for pid in &accepted {
        assert!(seen.insert(pid), "{pid} answered twice");
        let record = host.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["exit_code"], 0, "{record}");
    }
}

/// Issue #20, item 7: an idempotency key past `--idempotency-ttl` but not yet pruned is free
/// for a new request, with any body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_idempotency_key_is_taken_anew_before_it_is_pruned() {
    let url = postgres::fresh_database("expired_key");
    let host = pg_host(&url, &[]).await;
    let send = |body: Value| {
        host.client
            .post(host.url("/api/tasks"))
            .header("idempotency-key", "expiring-key")
            .json(&body)
            .send()
    };
    let first = send(json!({"name": "first", "duration": 0}))
        .await
        .expect("sent");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("JSON");
    // Aged past any TTL, and kept from the pruner, which needs this lock.
    let (hold, holding) = tokio::sync::oneshot::channel::<()>();
    let (held, locked) = std::sync::mpsc::channel();
    let holder = {
        let url = url.clone();
        std::thread::spawn(move || {
            postgres::block_on(async move {
                let client = postgres::connect(&url).await;
                client
                    .batch_execute(
                        "SELECT pg_advisory_lock(7526768903514649966);
                         UPDATE idempotency SET created_at = 0;",
                    )
                    .await
                    .expect("lock and age");
                let _ = held.send(());
                let _ = holding.await;
            });
        })
    };
    locked.recv().expect("held");
    let second = send(json!({"name": "second", "duration": 0}))
        .await
        .expect("sent");
    assert_eq!(second.status(), 202, "{:?}", second.text().await);
    let second: Value = second.json().await.expect("JSON");
    assert_ne!(second["pid"], first["pid"]);
    let _ = hold.send(());
    holder.join().expect("holder");
}

/// Issue #20, item 7: a commit whose answer never came back (the database carried it out) is
/// not written a second time when the writer tries again: each log line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_writes_nothing_twice() {
    let url = postgres::fresh_database("lost_answer");
    let proxy = Proxy::start(port_of(&url)).await;
    let host = pg_host(&proxy.url(&url), &["--lease", "120s", "--heartbeat", "1s"]).await;
    let mut script = Vec::new();
    for i in 0..40 {
        script.push(json!({"op": "print", "text": format!("line {i}")}));
        script.push(json!({"op": "sleep", "ms": 50}));
    }
    let pid = host.spawn(actor("lines", Value::Array(script))).await;
    host.wait_running(&pid).await;
    // The writer's next commit is carried out and its answer lost: the writer gives it up
    // after its timeout, and tries again on a new connection.
    proxy.lose_next_commit_answer(WRITER_CONNECTION);
    let record = host.wait_end(&pid).await;
    assert_eq!(record["status"], "exited", "{record}");
    let lines = messages(&host, &pid).await;
    for i in 0..40 {
        let text = format!("line {i}");
        let count = lines.iter().filter(|line| **line == text).count();
        assert_eq!(count, 1, "{text}: {lines:?}");
    }
    assert_eq!(started(&host).await, 1.0, "it ran once");
}

/// The bound these tests give a store's backlog: small, so that the load below goes past it.
const BACKLOG_BOUND_BYTES: u64 = 1 << 20;

/// A lock held on the store for `held`: PostgreSQL's `log_parts` table (where the lines of a
/// running task go), or SQLite's whole file.
enum Lock<'a> {
    Postgres(&'a str),
    Sqlite(&'a Path),
}

impl Lock<'_> {
    /// Takes the lock on a thread of its own, returns once it is held, releases it after
    /// `held`.
    fn hold(&self, held: Duration) -> std::thread::JoinHandle<()> {
        let (taken, locked) = std::sync::mpsc::channel();
        let thread = match self {
            Lock::Postgres(url) => {
                let url = (*url).to_owned();
                std::thread::spawn(move || {
                    postgres::block_on(async move {
                        let mut client = postgres::connect(&url).await;
                        let tx = client.transaction().await.expect("a transaction");
                        tx.batch_execute("LOCK TABLE log_parts IN ACCESS EXCLUSIVE MODE")
                            .await
                            .expect("the lock");
                        let _ = taken.send(());
                        tokio::time::sleep(held).await;
                        tx.rollback().await.expect("released");
                    });
                })
            }
            Lock::Sqlite(path) => {
                let path = path.join("tasks.db");
                std::thread::spawn(move || {
                    let db = rusqlite::Connection::open(path).expect("open the store");
                    db.busy_timeout(Duration::from_secs(30))
                        .expect("busy timeout");
                    db.execute_batch("BEGIN IMMEDIATE").expect("the lock");
                    let _ = taken.send(());
                    std::thread::sleep(held);
                    db.execute_batch("ROLLBACK").expect("released");
                })
            }
        };
        locked.recv().expect("the lock is held");
        thread
    }
}

/// Issue #20, item 3: a store locked for long under load keeps the host's backlog within
/// `--store-backlog` (log lines are shed, nothing else), and its memory with it; once the lock
/// goes, the backlog drains, and every task ends once.
async fn a_locked_store_keeps_the_backlog_bound(host: &Binary, lock: Lock<'_>) {
    let chatter = json!([{"op": "chatter", "bytes": 500, "count": 400, "every_ms": 50}]);
    let mut pids = Vec::new();
    for i in 0..40 {
        pids.push(
            host.spawn(actor(&format!("chatter{i}"), chatter.clone()))
                .await,
        );
    }
    for pid in &pids {
        host.wait_running(pid).await;
    }
    let before = host.resident_bytes();
    let holder = lock.hold(Duration::from_secs(20));
    let (mut backlog, mut resident) = (0f64, before);
    while !holder.is_finished() {
        let bytes = host
            .metric("http_spawn_store_backlog_bytes")
            .await
            .expect("the backlog gauge");
        backlog = backlog.max(bytes);
        resident = resident.max(host.resident_bytes());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    holder.join().expect("the lock's thread");
    eprintln!(
        "{}: backlog at most {backlog} bytes; resident {before} → at most {resident} bytes",
        host.base
    );
    // What waits is the bound, and a little more: the ends, starts and other changes that are
    // never shed, at most a few per live task.
    assert!(
        backlog <= (2 * BACKLOG_BOUND_BYTES) as f64,
        "the backlog grew to {backlog} bytes"
    );
    assert!(
        resident < before + (64 << 20),
        "resident memory grew from {before} to {resident} bytes"
    );
    let shed = host
        .metric("http_spawn_store_log_lines_shed_total")
        .await
        .unwrap_or(0.0);
    assert!(shed > 0.0, "log lines were shed while the store was locked");
    for pid in &pids {
        let record = host.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
    }
    assert_eq!(started(host).await, 40.0, "none ran twice");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while host.metric("http_spawn_store_backlog_changes").await != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.assert_good_task_exits_0().await;
}

const BOUND_ARGS: [&str; 4] = ["--store-backlog", "1MiB", "--max-log-bytes", "4194304"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_locked_for_long_under_load_keeps_its_backlog_bound() {
    let dir = temp_dir("faults-locked");
    let host = sqlite_host(&dir, &BOUND_ARGS).await;
    a_locked_store_keeps_the_backlog_bound(&host, Lock::Sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_table_locked_for_long_under_load_keeps_the_backlog_bound() {
    let url = postgres::fresh_database("locked");
    let mut args = BOUND_ARGS.to_vec();
    args.extend(["--lease", "60s", "--heartbeat", "1s"]);
    let host = pg_host(&url, &args).await;
    a_locked_store_keeps_the_backlog_bound(&host, Lock::Postgres(&url)).await;
}
