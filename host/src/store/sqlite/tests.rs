//! The SQLite store's own tests: its schema and migrations, what its writer writes, and what
//! it keeps in memory.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::read::RECORD_COLUMNS;
use super::schema::SCHEMA;
use super::writer::PRUNE_BATCH;
use super::*;
use crate::model::{LogLine, OnHostLoss, Pid, Status, TaskEnd, TaskEvent, TaskRecord, TaskSpec};

use crate::store::{ListQuery, MemoryStore, Store};

/// The backlog's bound the tests' stores have: far more than any of them writes.
const BACKLOG_BYTES: usize = 64 << 20;

/// A store at `path` that writes each log line with the next commit.
fn open(path: &Path) -> Result<SqliteStore, OpenError> {
    SqliteStore::open(
        path,
        StoreSync::Normal,
        BACKLOG_BYTES,
        Duration::ZERO,
        Duration::ZERO,
    )
}

fn ended_task(seq: u64) -> Vec<Change> {
    let pid = Pid::new(1, seq);
    let record = TaskRecord::spawned(pid, format!("t{seq}"), 0, Arc::from("w"), Arc::from("v"));
    let spec = TaskSpec {
        module_sha256: "00".repeat(32),
        payload: None,
        deadline_secs: 30,
        max_attempts: 1,
        on_host_loss: OnHostLoss::Restart,
        ready_at: None,
        priority: crate::model::DEFAULT_PRIORITY,
    };
    vec![
        Change::Accepted {
            record: Box::new(record),
            spec,
            key: None,
            shared: false,
            limited: false,
        },
        Change::Event(
            pid,
            TaskEvent::Ended {
                at: SystemTime::now(),
                fuel: 0,
                end: TaskEnd::exited(0),
                attempt: 1,
            },
        ),
    ]
}

/// An empty directory of this test's own, under the system's temporary one.
fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("http-spawn-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Makes `path` a store of schema version 1 holding one task, `00000001-1`, as a host of
/// that version left it.
fn version_1_store(path: &Path) {
    let connection = Connection::open(path).expect("open");
    connection.execute_batch(SCHEMA).expect("version 1");
    connection
        .pragma_update(None, "user_version", 1)
        .expect("versioned");
    connection
        .execute(
            "INSERT INTO tasks (boot, seq, spawned_at, name, worker, version, module_sha256,
                duration, deadline_secs, max_attempts, on_host_loss, status)
             VALUES (1, 1, 1000, 'old', 'w', 'v', '', 0, 30, 1, 'restart', 'spawned')",
            [],
        )
        .expect("a task");
}

fn schema_version(path: &Path) -> i64 {
    Connection::open(path)
        .expect("open")
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version")
}

fn child_of(parent: Pid, seq: u64) -> Vec<Change> {
    let mut accepted = ended_task(seq);
    if let Some(Change::Accepted { record, .. }) = accepted.first_mut() {
        record.parent = Some(parent);
    }
    accepted
}

fn children(store: &SqliteStore, parent: Pid) -> Vec<(Pid, Option<Pid>)> {
    let query = ListQuery {
        limit: 100,
        parent: Some(parent),
        ..ListQuery::default()
    };
    let page = store.list(&query).expect("list");
    page.tasks.iter().map(|r| (r.pid, r.parent)).collect()
}

/// A store a version-1 host left is migrated in place: its tasks are kept, with no
/// parent, and it takes and lists tasks with one from then on.
#[test]
fn a_version_1_store_is_migrated_in_place() {
    let dir = scratch("migrate");
    let path = dir.join("tasks.db");
    version_1_store(&path);
    let old = Pid::new(1, 1);
    let store = open(&path).expect("migrated");
    let kept = store.get(old).expect("get").expect("the old task is kept");
    assert_eq!((kept.name.as_str(), kept.parent), ("old", None));
    assert!(children(&store, old).is_empty());

    store
        .wait(
            [child_of(old, 2), ended_task(3), child_of(old, 4)]
                .into_iter()
                .flatten()
                .collect(),
        )
        .expect("written");
    assert_eq!(
        store.get(Pid::new(1, 2)).expect("get").map(|r| r.parent),
        Some(Some(old))
    );
    assert_eq!(
        children(&store, old),
        [(Pid::new(1, 4), Some(old)), (Pid::new(1, 2), Some(old))]
    );
    drop(store);

    assert_eq!(schema_version(&path), SCHEMA_VERSION);
    let store = open(&path).expect("reopened");
    assert_eq!(
        children(&store, old).len(),
        2,
        "a migrated store opens as it is"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `SCHEMA` is version 1 as hosts of that version wrote it, and every store is built
/// from it: a change to it is a new migration instead.
#[test]
fn version_1_is_as_released() {
    use sha2::{Digest as _, Sha256};
    assert_eq!(
        format!("{:x}", Sha256::digest(SCHEMA)),
        "eaa29227bc1d7ede883cbdb0a88aa4542e13f98242e93cc80ac6bdb0819731fc"
    );
}

/// A store of a newer schema than this host's is refused, not written.
#[test]
fn a_newer_store_is_refused() {
    let dir = scratch("newer");
    let path = dir.join("tasks.db");
    version_1_store(&path);
    Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("versioned");
    let refused = open(&path);
    assert!(matches!(refused, Err(OpenError::Newer { found, .. }) if found == SCHEMA_VERSION + 1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Listing a task's children reads the parent index, not every task.
#[test]
fn children_are_listed_through_the_parent_index() {
    let dir = scratch("parent-index");
    let path = dir.join("tasks.db");
    drop(open(&path).expect("created"));
    let connection = Connection::open(&path).expect("open");
    let plan: Vec<String> = connection
        .prepare(&format!(
            "EXPLAIN QUERY PLAN SELECT {RECORD_COLUMNS} FROM tasks WHERE 1 = 1
             AND parent_boot = ?1 AND parent_seq = ?2
             ORDER BY spawned_at DESC, boot DESC, seq DESC LIMIT ?3"
        ))
        .expect("plan")
        .query_map(params![1, 1, 101], |row| row.get(3))
        .expect("plan")
        .collect::<rusqlite::Result<_>>()
        .expect("plan");
    assert!(
        plan.iter().any(|step| step.contains("tasks_by_parent")),
        "{plan:?}"
    );
    drop(connection);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until every task journaled has been written to its row, as each is a moment after
/// it ends.
fn settled(store: &SqliteStore) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.unwritten.len() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} still journaled only",
            store.unwritten.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kept(store: &SqliteStore) -> usize {
    let query = ListQuery {
        limit: 10_000,
        ..ListQuery::default()
    };
    store.list(&query).expect("list").tasks.len()
}

/// More ended tasks than one prune deletes (as when more than a batch end each second):
/// one prune asked for is followed by as many as it takes, without waiting a second each.
#[test]
fn a_prune_far_behind_catches_up_by_itself() {
    let dir = std::env::temp_dir().join(format!("http-spawn-prune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = open(&dir.join("tasks.db")).expect("open");
    let total = 2 * PRUNE_BATCH as u64 + 500;
    let batch: Vec<Change> = (1..=total).flat_map(ended_task).collect();
    store.wait(batch).expect("written");
    assert_eq!(kept(&store), total as usize);
    // A prune deletes rows: the tasks' rows are written a moment after they end.
    settled(&store);
    store
        .wait(vec![Change::Prune {
            max_history: 10,
            ended_before: UNIX_EPOCH,
            keys_before: UNIX_EPOCH,
        }])
        .expect("pruned");
    // The follow-ups go through the writer on their own; a bound against a hang only.
    let deadline = Instant::now() + Duration::from_secs(60);
    while kept(&store) > 10 {
        assert!(Instant::now() < deadline, "still {} kept", kept(&store));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(kept(&store), 10);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A writer too far behind sheds the log lines of running tasks, and only those: their
/// submitters are told, the lines are counted, and every other change is written.
#[test]
fn a_writer_too_far_behind_sheds_log_lines_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("http-spawn-shed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pid = Pid::new(1, 1);
    let logs = |message: &str| {
        Change::Event(
            pid,
            TaskEvent::Logs {
                lines: vec![crate::model::LogLine {
                    at: SystemTime::now(),
                    source: crate::model::LogSource::Info,
                    message: message.into(),
                }],
                dropped_bytes: 0,
            },
        )
    };
    let mut changes = ended_task(1);
    let end = changes.pop().expect("the end");
    // As if the writer were always behind: a bound that an end and its last line just fit
    // in, and that a line alone is past half of.
    let bound =
        super::super::backlog::cost_bytes(&logs("kept")) + super::super::backlog::cost_bytes(&end);
    let store = SqliteStore::open(
        &dir.join("tasks.db"),
        StoreSync::Normal,
        bound,
        Duration::ZERO,
        Duration::ZERO,
    )
    .expect("open");
    store.wait(changes).expect("accepted");
    store.wait(vec![logs("shed")]).expect("told it is done");
    // An end keeps its last lines while they fit within the bound.
    store.wait(vec![logs("kept"), end]).expect("ended");
    let kept: Vec<String> = store
        .logs(pid)
        .expect("read")
        .expect("the task")
        .lines
        .into_iter()
        .map(|line| line.message)
        .collect();
    assert_eq!(kept, ["kept"]);
    assert_eq!(store.stats().log_lines_shed, 1);
    let record = store.get(pid).expect("read").expect("the task");
    assert_eq!(record.status, crate::model::Status::Exited);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #20, item 7: a read that finds every reader busy waits off the async runtime's
/// worker that asked, so that the other tasks of that worker go on meanwhile.
#[test]
fn a_read_waiting_for_a_reader_does_not_hold_its_async_worker() {
    let dir = scratch("busy-readers");
    let store = Arc::new(open(&dir.join("tasks.db")).expect("open"));
    let busy: Vec<_> = store
        .readers
        .iter()
        .map(|reader| reader.lock().expect("a reader"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a runtime");
    let reading = Arc::clone(&store);
    runtime.spawn(async move {
        let _ = reading.get(Pid::new(1, 1));
    });
    let (ran, other_ran) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = ran.send(());
    });
    // A bound against a hang, not a timing: the other task runs at once, or never while
    // the readers are busy.
    let went_on = other_ran.recv_timeout(Duration::from_secs(10)).is_ok();
    drop(busy);
    runtime.shutdown_timeout(Duration::from_secs(10));
    assert!(
        went_on,
        "the worker was held by a read waiting for a reader"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn logs(pid: Pid, messages: &[&str], dropped_bytes: u64) -> Change {
    Change::Event(
        pid,
        TaskEvent::Logs {
            lines: messages
                .iter()
                .map(|message| LogLine {
                    at: SystemTime::now(),
                    source: crate::model::LogSource::Info,
                    message: (*message).into(),
                })
                .collect(),
            dropped_bytes,
        },
    )
}

fn messages(store: &dyn Store, pid: Pid) -> Vec<String> {
    store
        .logs(pid)
        .expect("read")
        .map(|logs| logs.lines.into_iter().map(|line| line.message).collect())
        .unwrap_or_default()
}

/// Values of log lines written for `pid` (rows of `log_parts`, and its row's `log`), read
/// past the store.
fn log_rows(path: &Path, pid: Pid) -> i64 {
    let (boot, seq) = key(pid);
    Connection::open(path)
        .expect("open")
        .query_row(
            "SELECT (SELECT COUNT(*) FROM log_parts WHERE boot = ?1 AND seq = ?2)
                + (SELECT COUNT(log) FROM tasks WHERE boot = ?1 AND seq = ?2)",
            params![boot, seq],
            |row| row.get(0),
        )
        .expect("count")
}

/// Issue #23: a running task's lines are kept in memory and shown at once; they are written
/// with its end, all in one row.
#[test]
fn a_running_tasks_lines_are_shown_at_once_and_written_with_its_end() {
    let dir = scratch("kept-lines");
    let path = dir.join("tasks.db");
    let store = SqliteStore::open(
        &path,
        StoreSync::Normal,
        BACKLOG_BYTES,
        Duration::from_secs(600),
        Duration::ZERO,
    )
    .expect("open");
    let mut task = ended_task(1);
    let end = task.pop().expect("the end");
    let pid = Pid::new(1, 1);
    store.wait(task).expect("accepted");
    store.wait(vec![logs(pid, &["one"], 0)]).expect("kept");
    store
        .wait(vec![logs(pid, &["two", "three"], 7)])
        .expect("kept");
    assert_eq!(messages(&store, pid), ["one", "two", "three"]);
    assert_eq!(
        store.logs(pid).expect("read").expect("task").dropped_bytes,
        7
    );
    assert_eq!(log_rows(&path, pid), 0, "nothing written before the end");
    assert!(store.kept.bytes() > 0);

    store.wait(vec![end]).expect("ended");
    assert_eq!(messages(&store, pid), ["one", "two", "three"]);
    settled(&store);
    assert_eq!(log_rows(&path, pid), 1, "the lines in one value");
    assert_eq!(
        Connection::open(&path)
            .expect("open")
            .query_row("SELECT COUNT(*) FROM log_parts", [], |row| row
                .get::<_, i64>(0))
            .expect("count"),
        0,
        "written in the end's row"
    );
    assert_eq!(messages(&store, pid), ["one", "two", "three"]);
    assert_eq!(
        store
            .get(pid)
            .expect("read")
            .expect("task")
            .logs_dropped_bytes,
        7
    );
    assert_eq!(store.kept.bytes(), 0);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lines kept past the flush interval are written by themselves; those kept when the store
/// closes are written before it does.
#[test]
fn kept_lines_are_written_once_due_and_when_the_store_closes() {
    let dir = scratch("flushed-lines");
    let path = dir.join("tasks.db");
    let store = SqliteStore::open(
        &path,
        StoreSync::Normal,
        BACKLOG_BYTES,
        Duration::from_millis(100),
        Duration::ZERO,
    )
    .expect("open");
    let (first, second) = (Pid::new(1, 1), Pid::new(1, 2));
    let mut accepted = ended_task(1);
    accepted.truncate(1);
    let mut other = ended_task(2);
    other.truncate(1);
    store
        .wait(accepted.into_iter().chain(other).collect())
        .expect("accepted");
    store.wait(vec![logs(first, &["due"], 0)]).expect("kept");
    // A bound against a hang, not a timing: the flusher writes it within a few ticks.
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_rows(&path, first) == 0 {
        assert!(Instant::now() < deadline, "the kept line was never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(messages(&store, first), ["due"], "shown once");
    drop(store);

    let store = SqliteStore::open(
        &path,
        StoreSync::Normal,
        BACKLOG_BYTES,
        Duration::from_secs(600),
        Duration::ZERO,
    )
    .expect("reopened");
    store
        .wait(vec![logs(second, &["at close"], 0)])
        .expect("kept");
    assert_eq!(log_rows(&path, second), 0);
    drop(store);
    assert_eq!(log_rows(&path, second), 1);
    let store = open(&path).expect("reopened");
    assert_eq!(messages(&store, second), ["at close"]);
    assert_eq!(messages(&store, first), ["due"]);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A version-2 store's log lines, one row each, are carried into version 3's rows in order.
#[test]
fn a_version_2_stores_lines_are_migrated_in_order() {
    let dir = scratch("migrate-lines");
    let path = dir.join("tasks.db");
    version_1_store(&path);
    {
        let connection = Connection::open(&path).expect("open");
        for (at, message) in [(3, "first"), (1, "second"), (2, "third")] {
            connection
                .execute(
                    "INSERT INTO logs (boot, seq, at, source, message) VALUES (1, 1, ?1, 'warn', ?2)",
                    params![at, message],
                )
                .expect("a line");
        }
    }
    let store = open(&path).expect("migrated");
    let logs = store.logs(Pid::new(1, 1)).expect("read").expect("the task");
    let read: Vec<_> = logs
        .lines
        .iter()
        .map(|line| (line.message.as_str(), line.source, time_nanos(line.at)))
        .collect();
    use crate::model::LogSource::Warn;
    assert_eq!(
        read,
        [("first", Warn, 3), ("second", Warn, 1), ("third", Warn, 2)]
    );
    assert_eq!(log_rows(&path, Pid::new(1, 1)), 1);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn time_nanos(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

/// Issue #23: after a crash, the journal is read back into the tasks' rows, passing over the
/// entries a row already holds: a task written while another kept the journal's rows comes
/// back from its later entries only (each line once), and a task never written comes back
/// whole. The journal is empty afterwards.
#[test]
fn the_journal_read_back_passes_over_what_was_written() {
    use super::journal::{self, Image};
    let dir = scratch("journal-replay");
    let path = dir.join("tasks.db");
    drop(open(&path).expect("create"));
    let line = |message: &str| LogLine {
        at: UNIX_EPOCH + Duration::from_secs(7),
        source: crate::model::LogSource::Stdout,
        message: message.into(),
    };
    let image = |seq: u64, status: Status| {
        let pid = Pid::new(1, seq);
        let mut record = TaskRecord::spawned(pid, format!("t{seq}"), 3, "w".into(), "v".into());
        record.status = status;
        if status.is_terminal() {
            record.exit_code = Some(0);
            record.outcome = Some(crate::model::Outcome::Exit);
            record.ended_at = Some(SystemTime::now());
        }
        let Some(Change::Accepted { spec, .. }) = ended_task(seq).into_iter().next() else {
            unreachable!("an acceptance first");
        };
        Image { record, spec }
    };
    let blob = |messages: &[&str]| {
        let lines: Vec<LogLine> = messages.iter().map(|m| line(m)).collect();
        crate::store::columns::lines_blob(&lines)
    };
    let mut connection = Connection::open(&path).expect("open");
    let append = |entries: &[(&Image, &[&str])]| -> i64 {
        let mut value = journal::begin();
        for (image, lines) in entries {
            journal::put(&mut value, image, &blob(lines));
        }
        connection
            .execute("INSERT INTO journal (changes) VALUES (?1)", params![value])
            .expect("journal");
        connection.last_insert_rowid()
    };
    let (a, b) = (Pid::new(1, 1), Pid::new(1, 2));
    append(&[
        (&image(1, Status::Spawned), &["a1"]),
        (&image(2, Status::Spawned), &["b1"]),
    ]);
    let through = append(&[(&image(1, Status::Running), &["a2"])]);
    append(&[
        (&image(1, Status::Exited), &["a3"]),
        (&image(2, Status::Running), &["b2"]),
    ]);
    // Task a's row was written through the second journal row; task b's never was.
    let tx = connection.transaction().expect("tx");
    super::writer::write_row(
        &tx,
        &image(1, Status::Running),
        &blob(&["a1", "a2"]),
        through,
    )
    .expect("a's row");
    tx.commit().expect("commit");
    assert_eq!(
        super::writer::replay(&mut connection).expect("read back"),
        2
    );
    let left: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM journal WHERE length(changes) > 1",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(left, 0, "the journal is emptied");
    drop(connection);
    let store = open(&path).expect("open");
    assert_eq!(
        store.get(a).expect("read").expect("a").status,
        Status::Exited
    );
    assert_eq!(
        store.get(b).expect("read").expect("b").status,
        Status::Running
    );
    assert_eq!(messages(&store, a), ["a1", "a2", "a3"]);
    assert_eq!(messages(&store, b), ["b1", "b2"]);
    let unfinished: Vec<Pid> = store
        .unfinished()
        .expect("read")
        .iter()
        .map(|(record, _)| record.pid)
        .collect();
    assert_eq!(unfinished, [b]);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #23: the journal holds a task's acceptance as its row and its later changes as
/// events. Read back after a crash, each event is folded into what came before it: the row
/// written earlier (a task that ran past its write), or the acceptance journaled. A stale
/// event of a task already ended and written changes nothing, and its row keeps its log.
#[test]
fn journaled_events_are_folded_into_the_rows_written_before() {
    use super::journal::{self, Image};
    let dir = scratch("journal-events");
    let path = dir.join("tasks.db");
    drop(open(&path).expect("create"));
    let at = UNIX_EPOCH + Duration::from_secs(7);
    let logs = |messages: &[&str]| TaskEvent::Logs {
        lines: messages
            .iter()
            .map(|message| LogLine {
                at,
                source: crate::model::LogSource::Stdout,
                message: (*message).into(),
            })
            .collect(),
        dropped_bytes: 0,
    };
    let image = |seq: u64| {
        let Some(Change::Accepted { record, spec, .. }) = ended_task(seq).into_iter().next() else {
            unreachable!("an acceptance first");
        };
        Image {
            record: *record,
            spec,
        }
    };
    let started = TaskEvent::Started {
        at,
        steps: 3,
        fuel: 1,
    };
    let ended = TaskEvent::Ended {
        at: at + Duration::from_secs(1),
        fuel: 9,
        end: TaskEnd::exited(0),
        attempt: 1,
    };
    let (a, b, c) = (Pid::new(1, 1), Pid::new(1, 2), Pid::new(1, 3));
    let mut connection = Connection::open(&path).expect("open");
    // Task a ran past its write: its row holds its start and first line.
    let mut running = image(1);
    let mut lines = Vec::new();
    assert!(journal::fold(&mut running, &mut lines, &started, &[]));
    // Task c ended and was written with its log.
    let mut done = image(3);
    let mut done_lines = Vec::new();
    for event in [&started, &logs(&["c1"]), &ended] {
        let mut value = journal::begin();
        let range = journal::put_event(&mut value, c, event);
        journal::fold(&mut done, &mut done_lines, event, &value[range]);
    }
    let tx = connection.transaction().expect("tx");
    let a_lines = crate::store::columns::lines_blob(&[LogLine {
        at,
        source: crate::model::LogSource::Stdout,
        message: "a1".into(),
    }]);
    super::writer::write_row(&tx, &running, &a_lines, 0).expect("a's row");
    super::writer::write_row(&tx, &done, &done_lines, 0).expect("c's row");
    tx.commit().expect("commit");
    // The journal: b accepted, then events of all three, c's after its end.
    let mut value = journal::begin();
    journal::put(&mut value, &image(2), &[]);
    for (pid, event) in [
        (b, &started),
        (a, &logs(&["a2"])),
        (b, &logs(&["b1", "b2"])),
        (a, &ended),
        (c, &logs(&["late"])),
        (
            b,
            &TaskEvent::Progress {
                step: 2,
                steps: 3,
                fuel: 5,
            },
        ),
    ] {
        journal::put_event(&mut value, pid, event);
    }
    connection
        .execute("INSERT INTO journal (changes) VALUES (?1)", params![value])
        .expect("journal");
    // a and b are written; c is not, as the event changes nothing.
    assert_eq!(
        super::writer::replay(&mut connection).expect("read back"),
        2
    );
    drop(connection);
    let store = open(&path).expect("open");
    let read = |pid| store.get(pid).expect("read").expect("the task");
    assert_eq!(read(a).status, Status::Exited);
    assert_eq!(read(a).fuel_consumed, 9);
    assert_eq!(messages(&store, a), ["a1", "a2"]);
    assert_eq!(read(b).status, Status::Running);
    assert_eq!((read(b).step, read(b).fuel_consumed), (2, 5));
    assert_eq!(messages(&store, b), ["b1", "b2"]);
    assert_eq!(read(c).status, Status::Exited);
    assert_eq!(messages(&store, c), ["c1"], "an ended task's log is kept");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #23: tasks whose rows cannot be written (here a trigger refuses every new row) stay
/// journaled and readable, and are written once the fault is gone; the writer tries again by
/// itself, without a new commit to prompt it.
#[test]
fn tasks_whose_rows_cannot_be_written_stay_journaled_until_they_can() {
    let dir = scratch("rows-refused");
    let path = dir.join("tasks.db");
    let store = open(&path).expect("open");
    let db = Connection::open(&path).expect("open");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db.execute_batch(
        "CREATE TRIGGER no_rows BEFORE INSERT ON tasks BEGIN SELECT RAISE(ABORT, 'no'); END;",
    )
    .expect("the trigger");
    let batch: Vec<Change> = (1..=20).flat_map(ended_task).collect();
    store.wait(batch).expect("journaled");
    // Past the second an ended task waits, and a few tries.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(store.unwritten.len(), 20, "none written");
    assert!(
        store.healthy(),
        "a few tasks held are no reason to refuse more"
    );
    assert_eq!(kept(&store), 20);
    assert_eq!(
        store
            .get(Pid::new(1, 7))
            .expect("read")
            .expect("the task")
            .status,
        Status::Exited
    );
    db.execute_batch("DROP TRIGGER no_rows;").expect("dropped");
    settled(&store);
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM tasks", [], |row| row.get(0))
        .expect("count");
    assert_eq!(rows, 20);
    assert_eq!(kept(&store), 20);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #23: lists and logs read while tasks move from the journal to their rows see each
/// task once, and none written before the read began is missing.
#[test]
fn reads_while_tasks_move_to_their_rows_see_each_task_once() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = scratch("moving-reads");
    let store = Arc::new(open(&dir.join("tasks.db")).expect("open"));
    let committed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, committed, done) = (store.clone(), committed.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let before = committed.load(Ordering::SeqCst);
                let query = ListQuery {
                    limit: 100_000,
                    ..ListQuery::default()
                };
                let listed = store.list(&query).expect("list").tasks;
                let mut pids: Vec<Pid> = listed.iter().map(|record| record.pid).collect();
                pids.sort();
                pids.dedup();
                assert_eq!(pids.len(), listed.len(), "a task listed twice");
                assert!(
                    listed.len() >= before,
                    "{} listed, {before} written",
                    listed.len()
                );
                if let Some(first) = pids.first() {
                    assert_eq!(messages(&*store, *first), ["ended"], "{first}'s log");
                }
                reads += 1;
            }
            reads
        })
    };
    for round in 0..30u64 {
        let batch: Vec<Change> = (1..=100)
            .flat_map(|n| {
                let seq = round * 100 + n;
                let mut changes = ended_task(seq);
                changes.insert(1, logs(Pid::new(1, seq), &["ended"], 0));
                changes
            })
            .collect();
        store.wait(batch).expect("written");
        committed.fetch_add(100, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
    settled(&store);
    done.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("the reader");
    assert!(reads > 10, "{reads} reads");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

mod same_as_memory {
    //! The writer folds a task's changes of one commit together (issue #23): whatever the
    //! order of events and however they fall into commits, the SQLite store reads back what
    //! the in-memory store does.

    use proptest::prelude::*;

    use super::*;
    use crate::model::{Status, TaskEnd};

    #[derive(Debug, Clone)]
    enum Op {
        Start,
        Progress(u32),
        Log(u8),
        Restart {
            stale: bool,
        },
        End {
            stale: bool,
            code: i32,
        },
        /// Submit what came so far as one batch.
        Cut,
        /// Wait until everything submitted is written.
        Sync,
        /// Close the store and open it again: having written every task's row, or (`crash`)
        /// leaving them in the journal, as a host killed would.
        Reopen {
            crash: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => Just(Op::Start),
            2 => (0u32..10).prop_map(Op::Progress),
            3 => (1u8..4).prop_map(Op::Log),
            // A restart is always of the attempt running: the store forgets the progress it
            // keeps at any restart (the host sends no stale ones).
            1 => Just(Op::Restart { stale: false }),
            2 => (any::<bool>(), -2i32..3).prop_map(|(stale, code)| Op::End { stale, code }),
            2 => Just(Op::Cut),
            1 => Just(Op::Sync),
            1 => any::<bool>().prop_map(|crash| Op::Reopen { crash }),
        ]
    }

    /// Each task's ops, interleaved by the index that picks whose turn it is.
    fn plan() -> impl Strategy<Value = Vec<(usize, Op)>> {
        proptest::collection::vec((0usize..3, op()), 0..40)
    }

    /// What the test believes of a task: its current attempt, and whether it runs (the host
    /// reports progress only then).
    #[derive(Clone, Copy)]
    struct Believed {
        attempt: u32,
        running: bool,
        /// A stale end made the store forget the progress it kept (as it always has: the
        /// next step shows it again).
        progress_forgotten: bool,
        ended: bool,
    }

    /// A change of task `pid`, given what the test believes of it.
    fn change(pid: Pid, op: &Op, believed: &mut Believed, serial: &mut u64) -> Option<Change> {
        let at = UNIX_EPOCH + Duration::from_secs(1_000_000 + *serial);
        *serial += 1;
        let fuel = *serial;
        let event = match *op {
            // An attempt starts once, and reports progress only once started.
            Op::Start if believed.running || believed.ended => return None,
            Op::Progress(_) if !believed.running || believed.ended => return None,
            Op::Start => {
                believed.running = true;
                TaskEvent::Started { at, steps: 4, fuel }
            }
            Op::Progress(step) => {
                believed.progress_forgotten = false;
                TaskEvent::Progress {
                    step,
                    steps: 4,
                    fuel,
                }
            }
            Op::Log(count) => TaskEvent::Logs {
                lines: (0..count)
                    .map(|index| LogLine {
                        at,
                        source: crate::model::LogSource::Stdout,
                        message: format!("{pid} line {fuel}.{index}"),
                    })
                    .collect(),
                dropped_bytes: fuel,
            },
            Op::Restart { stale } => {
                let next_attempt = believed.attempt + if stale { 5 } else { 1 };
                if !stale {
                    believed.attempt += 1;
                    believed.running = false;
                }
                TaskEvent::Restarting {
                    at,
                    fuel,
                    end: TaskEnd::failed(crate::model::Outcome::Trap, format!("trap {fuel}")),
                    next_attempt,
                    ready_at: at,
                }
            }
            Op::End { stale, code } => {
                believed.progress_forgotten |= stale;
                believed.ended |= !stale;
                TaskEvent::Ended {
                    at,
                    fuel,
                    end: TaskEnd::exited(code),
                    attempt: believed.attempt + if stale { 3 } else { 0 },
                }
            }
            Op::Cut | Op::Sync | Op::Reopen { .. } => return None,
        };
        Some(Change::Event(pid, event))
    }

    fn accepted(pid: Pid) -> Change {
        let mut changes = ended_task(pid.seq());
        changes.truncate(1);
        let mut change = changes.pop().expect("the acceptance");
        if let Change::Accepted { record, .. } = &mut change {
            record.spawned_at = UNIX_EPOCH + Duration::from_secs(pid.seq());
        }
        change
    }

    fn fields(record: &TaskRecord) -> String {
        format!(
            "{:?} step {} steps {} exit {:?} outcome {:?} error {:?} started {:?} ended {:?} \
             fuel {} attempt {} attempts {:?} dropped {}",
            record.status,
            record.step,
            record.steps,
            record.exit_code,
            record.outcome,
            record.error,
            record.started_at,
            record.ended_at,
            record.fuel_consumed,
            record.attempt,
            record.attempts,
            record.logs_dropped_bytes
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn reads_back_what_the_memory_store_does(plan in plan(), kept in any::<bool>()) {
            let dir = scratch("same-as-memory");
            let flush = if kept { Duration::from_secs(600) } else { Duration::ZERO };
            let open = || SqliteStore::open(
                &dir.join("tasks.db"), StoreSync::Normal, BACKLOG_BYTES, flush, Duration::ZERO,
            ).expect("open");
            let mut sqlite = open();
            let memory = MemoryStore::new(100);
            let pids: Vec<Pid> = (1..=3).map(|seq| Pid::new(1, seq)).collect();
            let mut believed = [Believed { attempt: 1, running: false, progress_forgotten: false, ended: false }; 3];
            let mut serial = 0;
            // Every task is accepted in the first batch, with what comes before the first cut.
            let mut batch: Vec<Change> = pids.iter().map(|pid| accepted(*pid)).collect();
            for (task, op) in &plan {
                match op {
                    Op::Cut | Op::Sync => {
                        let taken = std::mem::take(&mut batch);
                        let copy = copy_of(&taken);
                        sqlite.submit(taken, None);
                        memory.submit(copy, None);
                        if matches!(op, Op::Sync) {
                            sqlite.wait(Vec::new()).expect("written");
                        }
                    }
                    &Op::Reopen { crash } => {
                        let taken = std::mem::take(&mut batch);
                        let copy = copy_of(&taken);
                        sqlite.wait(taken).expect("written");
                        memory.wait(copy).expect("written");
                        sqlite.unwritten.left_at_close.store(crash, std::sync::atomic::Ordering::Relaxed);
                        drop(sqlite);
                        sqlite = open();
                        // The progress kept in memory is gone, as after a crash.
                        for believed in &mut believed {
                            believed.progress_forgotten = true;
                        }
                    }
                    op => batch.extend(change(pids[*task], op, &mut believed[*task], &mut serial)),
                }
            }
            let copy = copy_of(&batch);
            sqlite.wait(batch).expect("written");
            memory.wait(copy).expect("written");
            for (pid, believed) in pids.iter().zip(believed) {
                let mut read = sqlite.get(*pid).expect("read").expect("the task");
                let expected = memory.get(*pid).expect("read").expect("the task");
                // Progress is shown for running tasks only (the host reports none before a
                // start, but the test's plans do).
                if read.status == Status::Spawned || believed.progress_forgotten {
                    read.step = expected.step;
                    if !read.status.is_terminal() {
                        read.fuel_consumed = expected.fuel_consumed;
                    }
                }
                prop_assert_eq!(fields(&read), fields(&expected));
                prop_assert_eq!(messages(&sqlite, *pid), messages(&memory, *pid));
            }
            // Lists too, a page of two at a time, whether a task is written yet or not.
            for status in [None, Some(Status::Running), Some(Status::Exited), Some(Status::Spawned)] {
                prop_assert_eq!(listing(&sqlite, status), listing(&memory, status));
            }
            drop(sqlite);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Every task `store` lists with `status`, following the cursor a page of two at a time.
    fn listing(store: &dyn Store, status: Option<Status>) -> Vec<(Pid, Status)> {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let query = ListQuery {
                status,
                before,
                limit: 2,
                ..ListQuery::default()
            };
            let page = store.list(&query).expect("list");
            seen.extend(page.tasks.iter().map(|record| (record.pid, record.status)));
            match page.next {
                Some(next) => before = Some(next),
                None => return seen,
            }
        }
    }

    /// A second copy of `batch`, for the other store.
    fn copy_of(batch: &[Change]) -> Vec<Change> {
        batch
            .iter()
            .map(|change| match change {
                Change::Accepted {
                    record,
                    spec,
                    key,
                    shared,
                    limited,
                } => Change::Accepted {
                    record: record.clone(),
                    spec: spec.clone(),
                    key: key.clone(),
                    shared: *shared,
                    limited: *limited,
                },
                Change::Event(pid, event) => Change::Event(*pid, copy_event(event)),
                _ => unreachable!("only tasks' changes here"),
            })
            .collect()
    }

    fn copy_event(event: &TaskEvent) -> TaskEvent {
        match event {
            &TaskEvent::Started { at, steps, fuel } => TaskEvent::Started { at, steps, fuel },
            &TaskEvent::Progress { step, steps, fuel } => TaskEvent::Progress { step, steps, fuel },
            TaskEvent::Logs {
                lines,
                dropped_bytes,
            } => TaskEvent::Logs {
                lines: lines.clone(),
                dropped_bytes: *dropped_bytes,
            },
            TaskEvent::Restarting {
                at,
                fuel,
                end,
                next_attempt,
                ready_at,
            } => TaskEvent::Restarting {
                at: *at,
                fuel: *fuel,
                end: end.clone(),
                next_attempt: *next_attempt,
                ready_at: *ready_at,
            },
            TaskEvent::Ended {
                at,
                fuel,
                end,
                attempt,
            } => TaskEvent::Ended {
                at: *at,
                fuel: *fuel,
                end: end.clone(),
                attempt: *attempt,
            },
        }
    }
}

/// An awaited read that finds every reader taken waits for one without holding its thread
/// (other work on that thread goes on), and answers once a reader is let go.
#[tokio::test(flavor = "current_thread")]
async fn an_awaited_read_waits_for_a_reader_without_holding_the_thread() {
    let dir = scratch("awaited-read");
    let store = Arc::new(open(&dir.join("tasks.db")).expect("open"));
    store.wait(ended_task(1)).expect("written");
    let (taken, go) = (
        Arc::new(std::sync::Barrier::new(READERS + 1)),
        Arc::new(std::sync::Barrier::new(READERS + 1)),
    );
    let holders: Vec<_> = (0..READERS)
        .map(|_| {
            let (store, taken, go) = (Arc::clone(&store), Arc::clone(&taken), Arc::clone(&go));
            std::thread::spawn(move || {
                store.read(|_| {
                    taken.wait();
                    go.wait();
                })
            })
        })
        .collect();
    taken.wait();

    let mut read = store.get_async(Pid::new(1, 1));
    let waited = tokio::time::timeout(Duration::from_millis(50), &mut read).await;
    assert!(waited.is_err(), "no reader was free");
    let other = tokio::spawn(async { "ran" });
    assert_eq!(
        other.await.expect("joined"),
        "ran",
        "the thread was not held"
    );

    go.wait();
    let record = read.await.expect("read").expect("the task");
    assert_eq!(record.status, Status::Exited);
    for holder in holders {
        holder.join().expect("a holder");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #23: with `full`, the writer's connection commits without waiting for the disk only
/// when its log is flushed before anyone is told (group commit): `NORMAL` comes with a flush
/// of the `-wal` file, and a database not in WAL mode keeps SQLite's own `FULL` and gets no
/// flush. Were the two parted, a `202` could come before its task is on the disk.
#[test]
fn group_commit_lowers_the_sync_only_with_a_flush_of_the_log() {
    let dir = scratch("group-commit");
    let synchronous = |connection: &Connection| -> i64 {
        connection
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .expect("synchronous")
    };
    // In WAL mode: NORMAL (1), and a flush that flushes the log once there is one.
    let wal = Connection::open(dir.join("wal.db")).expect("open");
    configure(&wal, StoreSync::Full).expect("configure");
    assert_eq!(synchronous(&wal), 2, "FULL before");
    let mut flush = group_commit(&wal).expect("group commit").expect("a flush");
    assert_eq!(synchronous(&wal), 1, "NORMAL with the flush");
    wal.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .expect("a commit");
    assert!(dir.join("wal.db-wal").exists(), "the log the flush flushes");
    flush().expect("flushed");
    // Not in WAL mode: no flush, and SQLite's own FULL stays.
    let rollback = Connection::open(dir.join("rollback.db")).expect("open");
    rollback
        .pragma_update(None, "synchronous", "FULL")
        .expect("FULL");
    assert!(group_commit(&rollback).expect("group commit").is_none());
    assert_eq!(synchronous(&rollback), 2, "FULL stays without a flush");
    drop((wal, rollback));
    let _ = std::fs::remove_dir_all(&dir);
}
