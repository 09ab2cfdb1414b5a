//! The shared store's writer: one task on the store's runtime with one connection of its own.
//! It takes every batch pending, writes them in one transaction (group commit), then tells each
//! submitter.
//!
//! - The statements of a commit are sent together, without waiting for each answer
//!   (`tokio-postgres` pipelines requests polled together), so a commit costs about three round
//!   trips however many changes it holds: `BEGIN`, the statements, `COMMIT`.
//! - Progress and log lines, the changes a task makes at every step, are gathered across the
//!   commit into one `unnest` statement each, written after the commit's acceptances and before
//!   its other changes (see [`Plan`]).
//! - Every write of a task's life is fenced: it applies only while `runs` says this host
//!   (`Shared::node`) holds the task, and an end or a restart only for the attempt it ends. A
//!   host that lost its lease, or was cut off while another took its tasks over, writes
//!   nothing over the newer attempt.
//! - When a commit fails for the connection, the changes of running tasks are kept and tried
//!   again on a new connection; acceptances are refused (their clients get `503`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::try_join_all;
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::super::columns::{attempt_json, nanos, source_name};
use super::super::{Change, Done, Forward, StoreError};
use super::{Shared, key, unavailable};
use crate::model::{Pid, TaskEvent};

/// How long a failed commit waits before the writer tries its changes again.
const RETRY_WAIT: Duration = Duration::from_millis(200);

/// Ended tasks deleted per prune, so that a large prune never holds the writer long.
const PRUNE_BATCH: i64 = 1000;

/// Taken by a prune, so that hosts pruning at once do not wait on each other's rows: the one
/// that does not get it skips its turn.
const PRUNE_LOCK: i64 = 0x6874_7470_7072_756e; // "httpprun"

/// Writes waiting for the writer.
struct Pending {
    batch: Vec<Change>,
    done: Option<Done>,
    /// The host's id in the cluster when the batch was submitted: a batch of an earlier
    /// incarnation (the host lost its lease since) writes nothing of its tasks.
    node: i32,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    closed: bool,
}

/// The handle the store keeps: where batches go.
pub(super) struct Writer {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    shared: Arc<Shared>,
    /// Disconnected once the writer has stopped.
    stopped: Mutex<std::sync::mpsc::Receiver<()>>,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Writer {
    pub(super) fn start(
        handle: &tokio::runtime::Handle,
        config: tokio_postgres::Config,
        shared: Arc<Shared>,
    ) -> Self {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let wake = Arc::new(Notify::new());
        let (stopped_sender, stopped) = std::sync::mpsc::channel();
        {
            let (queue, wake, shared) =
                (Arc::clone(&queue), Arc::clone(&wake), Arc::clone(&shared));
            handle.spawn(async move {
                write_loop(&queue, &wake, &config, &shared).await;
                drop(stopped_sender);
            });
        }
        Self {
            queue,
            wake,
            shared,
            stopped: Mutex::new(stopped),
        }
    }

    pub(super) fn submit(&self, batch: Vec<Change>, done: Option<Done>) {
        if batch.is_empty() && done.is_none() {
            return;
        }
        let node = self.shared.node.load(Ordering::Acquire);
        lock(&self.queue)
            .pending
            .push_back(Pending { batch, done, node });
        self.wake.notify_one();
    }

    /// Asks the writer to stop once what is pending is written (or found unwritable).
    pub(super) fn close(&self) {
        lock(&self.queue).closed = true;
        self.wake.notify_one();
    }

    /// Waits at most `timeout` for the writer to stop.
    pub(super) fn wait_closed(&self, timeout: Duration) {
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = stopped.recv_timeout(timeout);
    }
}

/// The writer's connection, with its statements prepared on it.
struct Connection {
    client: Client,
    statements: Statements,
}

async fn connect(config: &tokio_postgres::Config) -> Result<Connection, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "the store writer's connection ended");
        }
    });
    // The writer touches a few rows of large tables by their primary key, through prepared
    // statements whose generic plans may be made while the tables are still empty: hash joins
    // and bitmap scans chosen then would scan whole tables once they have grown. Only nested
    // loops over index lookups are right for it.
    client
        .batch_execute(
            "SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_bitmapscan = off",
        )
        .await?;
    let statements = Statements::prepare(&client).await?;
    Ok(Connection { client, statements })
}

/// How long a commit may take before its connection counts as lost: a database that stops
/// answering (a network that drops packets rather than refusing them) must not hold the
/// writer, and every acceptance waiting on it, until TCP gives up.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Times a commit that hit a deadlock or a serialisation failure is tried again at once,
/// before it counts as a failure of the store.
const CONFLICT_RETRIES: u32 = 3;

/// Why a commit failed.
#[derive(Debug)]
enum Failed {
    Database(tokio_postgres::Error),
    /// It took longer than [`COMMIT_TIMEOUT`].
    TimedOut,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Database(error) => error.fmt(f),
            Self::TimedOut => write!(f, "the database did not answer a commit in time"),
        }
    }
}

impl Failed {
    /// A change the database refuses for what it is, not for the connection or the moment.
    fn refused(&self) -> bool {
        matches!(self, Self::Database(error) if error.as_db_error().is_some() && !transient(error))
    }

    /// A deadlock or serialisation failure: the same commit may pass at once.
    fn conflict(&self) -> bool {
        use tokio_postgres::error::SqlState;
        matches!(self, Self::Database(error) if error.code().is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        }))
    }
}

/// Writes `changes` with `node` as the writer's id, on `connection` (opened if need be).
async fn try_commit(
    connection: &mut Option<Connection>,
    config: &tokio_postgres::Config,
    node: i32,
    changes: &[(usize, &Change)],
) -> Result<Outcome, Failed> {
    if connection
        .as_ref()
        .is_none_or(|open| open.client.is_closed())
    {
        *connection = None;
        let open = tokio::time::timeout(COMMIT_TIMEOUT, connect(config))
            .await
            .map_err(|_| Failed::TimedOut)?
            .map_err(Failed::Database)?;
        *connection = Some(open);
    }
    let Some(open) = connection.as_mut() else {
        return Err(Failed::TimedOut);
    };
    match tokio::time::timeout(COMMIT_TIMEOUT, commit(open, node, changes)).await {
        Ok(result) => result.map_err(Failed::Database),
        Err(_) => {
            // The connection may be mid-transaction: never reuse it.
            *connection = None;
            Err(Failed::TimedOut)
        }
    }
}

async fn write_loop(
    queue: &Mutex<Queue>,
    wake: &Notify,
    config: &tokio_postgres::Config,
    shared: &Shared,
) {
    let mut retry: Vec<Pending> = Vec::new();
    let mut connection: Option<Connection> = None;
    let mut conflicts = 0;
    loop {
        let mut taken = std::mem::take(&mut retry);
        let closed = loop {
            {
                let mut queue = lock(queue);
                taken.extend(queue.pending.drain(..));
                if !taken.is_empty() || queue.closed {
                    break queue.closed;
                }
            }
            wake.notified().await;
        };
        if taken.is_empty() {
            return;
        }
        let node = shared.node.load(Ordering::Acquire);
        taken = fence(shared, taken, node);
        if taken.is_empty() {
            continue;
        }
        let changes: Vec<(usize, &Change)> = taken
            .iter()
            .enumerate()
            .flat_map(|(index, pending)| pending.batch.iter().map(move |change| (index, change)))
            .collect();
        let failed = match try_commit(&mut connection, config, node, &changes).await {
            Ok(outcome) => {
                drop(changes);
                conflicts = 0;
                committed(shared, taken, outcome, queue);
                continue;
            }
            Err(failed) => failed,
        };
        drop(changes);
        if failed.conflict() && conflicts < CONFLICT_RETRIES {
            // Another host's transaction crossed this one: try again at once, acceptances
            // included, without counting the store as failing.
            conflicts += 1;
            tracing::debug!(error = %failed, "a commit met a conflict; trying it again");
            retry = taken;
            continue;
        }
        conflicts = 0;
        if failed.refused() {
            // A change the database refuses for what it is, not for the connection: write each
            // batch alone, so that one bad change cannot hold up the others.
            tracing::error!(error = %failed, "a commit failed; writing its batches one at a time");
            for pending in taken {
                let changes: Vec<(usize, &Change)> =
                    pending.batch.iter().map(|change| (0, change)).collect();
                let result = try_commit(&mut connection, config, node, &changes).await;
                drop(changes);
                match result {
                    Ok(outcome) => committed(shared, vec![pending], outcome, queue),
                    Err(error) if error.refused() => {
                        tracing::error!(%error, changes = ?pending.batch, "changes refused");
                        finish(pending, Err(unavailable(error)));
                    }
                    Err(_) => retry.push(pending),
                }
            }
            continue;
        }
        if shared.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(error = %failed, "the shared task store cannot write; new tasks are \
                refused until it can, and the changes of running tasks are kept and tried again");
        }
        let error = unavailable(failed);
        for pending in taken {
            if keeps(&pending) {
                retry.push(pending);
            } else {
                finish(pending, Err(error.clone()));
            }
        }
        if closed {
            tracing::error!(
                kept = retry.len(),
                "the host stops with changes the store could not take"
            );
            return;
        }
        tokio::time::sleep(RETRY_WAIT).await;
    }
}

/// What of `taken` may be written with `node` as the writer's id. A host that lost its lease
/// (`node` 0) accepts nothing until it has joined again: a task accepted then would belong to
/// no host. A batch submitted by an earlier incarnation keeps only what is no task's life (a
/// forward, a module, a worker's versions, a prune): its tasks' events are another host's to
/// write now, and its acceptances are refused.
fn fence(shared: &Shared, taken: Vec<Pending>, node: i32) -> Vec<Pending> {
    let mut kept = Vec::with_capacity(taken.len());
    for mut pending in taken {
        let accepts = pending
            .batch
            .iter()
            .any(|change| matches!(change, Change::Accepted { .. }));
        if accepts && (node == 0 || pending.node != node) {
            finish(
                pending,
                Err(StoreError::Unavailable(
                    "this host has lost its lease in the cluster; retry on another".into(),
                )),
            );
            continue;
        }
        if pending.node != node {
            let before = pending.batch.len();
            pending
                .batch
                .retain(|change| !matches!(change, Change::Event(..)));
            shared
                .fenced
                .fetch_add((before - pending.batch.len()) as u64, Ordering::Relaxed);
            pending.node = node;
        }
        kept.push(pending);
    }
    kept
}

/// Whether a database error may pass if the same commit is tried again.
fn transient(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    error.code().is_some_and(|code| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::QUERY_CANCELED,
        ]
        .contains(code)
    })
}

/// Whether a batch that could not be written is kept to try again: the changes of a running
/// task's life, and forwards. Anything a submitter waits for fails at once.
fn keeps(pending: &Pending) -> bool {
    // An empty batch is a barrier someone waits for (a shutdown): it fails, never waits on.
    !pending.batch.is_empty()
        && pending
            .batch
            .iter()
            .all(|change| matches!(change, Change::Event(..) | Change::Forward { .. }))
}

/// What a commit found beside writing.
#[derive(Default)]
struct Outcome {
    /// Tasks whose start this host wrote while it did not hold them.
    fenced_starts: Vec<Pid>,
    /// Writes of tasks this host did not hold.
    fenced: u64,
    /// A prune deleted a full batch: more may be due.
    prune_more: Option<Change>,
    /// Batches (by index) whose acceptance found its idempotency key taken.
    key_taken: Vec<usize>,
}

fn committed(shared: &Shared, taken: Vec<Pending>, outcome: Outcome, queue: &Mutex<Queue>) {
    shared.commits.fetch_add(1, Ordering::Relaxed);
    shared
        .batches
        .fetch_add(taken.len() as u64, Ordering::Relaxed);
    shared.fenced.fetch_add(outcome.fenced, Ordering::Relaxed);
    if !shared.healthy.swap(true, Ordering::AcqRel) {
        tracing::info!("the shared task store takes writes again");
    }
    if let Some(prune) = outcome.prune_more {
        lock(queue).pending.push_back(Pending {
            batch: vec![prune],
            done: None,
            node: shared.node.load(Ordering::Acquire),
        });
    }
    for (index, pending) in taken.into_iter().enumerate() {
        let result = if outcome.key_taken.contains(&index) {
            Err(StoreError::KeyTaken)
        } else {
            Ok(())
        };
        finish(pending, result);
    }
    if !outcome.fenced_starts.is_empty() {
        tracing::warn!(
            tasks = outcome.fenced_starts.len(),
            "tasks started here that another host holds now: they are stopped here"
        );
        if let Some(stop) = shared.on_fenced.get() {
            for pid in outcome.fenced_starts {
                stop(pid);
            }
        }
    }
}

/// Tells `pending`'s submitter how its write went.
fn finish(pending: Pending, result: Result<(), StoreError>) {
    super::super::tell(pending.done, result);
}

type Param = Box<dyn ToSql + Sync + Send>;

/// What a statement's count of rows tells.
#[derive(Clone, Copy)]
enum Check {
    Nothing,
    /// A task's start: no row means this host does not hold it.
    Started(Pid),
    /// A fenced write: no row means this host does not hold the task (or the task ended).
    Fenced,
    /// A prune: a full batch means more is due.
    Prune,
    /// An acceptance with an idempotency key, of the batch at this index: no row means the
    /// key was taken by another request, and the task was not written.
    Keyed(usize),
}

struct Op {
    statement: Statement,
    params: Vec<Param>,
    check: Check,
}

/// The statements of one commit: the acceptances first, then what the commit's changes
/// gathered (progress, log lines, bytes of log dropped: one statement each), then every
/// other change in order. Gathered changes may go before a later change of the same task:
/// its log lines before its end (which they must: an end closes the task to writes), and its
/// progress before a start or restart of a new attempt, which then shows step 0 until its next
/// progress.
struct Plan<'a> {
    statements: &'a Statements,
    node: i32,
    head: Vec<Op>,
    ops: Vec<Op>,
    progress: HashMap<Pid, (u32, u64)>,
    dropped: HashMap<Pid, u64>,
    lines: Lines,
}

#[derive(Default)]
struct Lines {
    boots: Vec<i32>,
    seqs: Vec<i64>,
    ats: Vec<i64>,
    sources: Vec<&'static str>,
    messages: Vec<String>,
}

impl<'a> Plan<'a> {
    fn new(statements: &'a Statements, node: i32) -> Self {
        Self {
            statements,
            node,
            head: Vec::new(),
            ops: Vec::new(),
            progress: HashMap::new(),
            dropped: HashMap::new(),
            lines: Lines::default(),
        }
    }

    fn push(&mut self, statement: &Statement, params: Vec<Param>, check: Check) {
        self.ops.push(Op {
            statement: statement.clone(),
            params,
            check,
        });
    }

    fn push_head(&mut self, statement: &Statement, params: Vec<Param>, check: Check) {
        self.head.push(Op {
            statement: statement.clone(),
            params,
            check,
        });
    }

    /// The commit's statements, in the order they run.
    fn finish(mut self) -> Vec<Op> {
        let tail = std::mem::take(&mut self.ops);
        self.gathered();
        let mut ops = std::mem::take(&mut self.head);
        ops.append(&mut self.ops);
        ops.extend(tail);
        ops
    }

    /// The statements of what was gathered, into `ops`.
    fn gathered(&mut self) {
        let node = self.node;
        if !self.lines.boots.is_empty() {
            let lines = std::mem::take(&mut self.lines);
            let statement = self.statements.lines.clone();
            self.push(
                &statement,
                vec![
                    Box::new(lines.boots),
                    Box::new(lines.seqs),
                    Box::new(lines.ats),
                    Box::new(lines.sources),
                    Box::new(lines.messages),
                    Box::new(node),
                ],
                Check::Nothing,
            );
        }
        if !self.progress.is_empty() {
            let (mut boots, mut seqs, mut steps, mut fuels) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (pid, (step, fuel)) in self.progress.drain() {
                let (boot, seq) = key(pid);
                boots.push(boot);
                seqs.push(seq);
                steps.push(step as i32);
                fuels.push(fuel as i64);
            }
            let statement = self.statements.progress.clone();
            self.push(
                &statement,
                vec![
                    Box::new(boots),
                    Box::new(seqs),
                    Box::new(steps),
                    Box::new(fuels),
                    Box::new(node),
                ],
                Check::Nothing,
            );
        }
        if !self.dropped.is_empty() {
            let (mut boots, mut seqs, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
            for (pid, dropped) in self.dropped.drain() {
                let (boot, seq) = key(pid);
                boots.push(boot);
                seqs.push(seq);
                bytes.push(dropped as i64);
            }
            let statement = self.statements.dropped.clone();
            self.push(
                &statement,
                vec![
                    Box::new(boots),
                    Box::new(seqs),
                    Box::new(bytes),
                    Box::new(node),
                ],
                Check::Nothing,
            );
        }
    }

    fn add(&mut self, pending: usize, change: &Change) {
        let node = self.node;
        let s = self.statements;
        match change {
            Change::Accepted {
                record,
                spec,
                key: idempotency,
                shared,
            } => {
                let (boot, seq) = key(record.pid);
                let parent = record.parent.map(key);
                let owner: Option<i32> = (!shared).then_some(node);
                let (statement, check) = match idempotency {
                    Some(_) => (&s.accept_keyed, Check::Keyed(pending)),
                    None => (&s.accept, Check::Nothing),
                };
                let mut params: Vec<Param> = vec![
                    Box::new(boot),
                    Box::new(seq),
                    Box::new(nanos(record.spawned_at)),
                    Box::new(record.name.clone()),
                    Box::new(record.worker.to_string()),
                    Box::new(record.version.to_string()),
                    Box::new(spec.module_sha256.clone()),
                    Box::new(record.duration as i32),
                    Box::new(spec.payload.clone()),
                    Box::new(spec.deadline_secs as i32),
                    Box::new(spec.max_attempts as i32),
                    Box::new(spec.on_host_loss.as_str()),
                    Box::new(record.status.as_str()),
                    Box::new(record.attempt as i32),
                    Box::new(parent.map(|(boot, _)| boot)),
                    Box::new(parent.map(|(_, seq)| seq)),
                    Box::new(owner),
                ];
                if let Some(idempotency) = idempotency {
                    // Claimed in the acceptance's own statement: of two requests with one key
                    // on two hosts, one writes its task, the other is told.
                    params.push(Box::new(idempotency.key.clone()));
                    params.push(Box::new(idempotency.body_sha256.clone()));
                }
                let statement = statement.clone();
                self.push_head(&statement, params, check);
            }
            Change::Event(pid, event) => self.add_event(*pid, event),
            Change::Forward { to, what } => {
                let (boot, seq) = key(*to);
                match what {
                    Forward::Kill(end) => self.push(
                        &s.forward_kill,
                        vec![
                            Box::new(boot),
                            Box::new(seq),
                            Box::new(end.status.as_str()),
                            Box::new(end.outcome.as_str()),
                            Box::new(end.error.clone()),
                            Box::new(nanos(std::time::SystemTime::now())),
                        ],
                        Check::Nothing,
                    ),
                    Forward::Exit { from, notice } => {
                        let from = key(*from);
                        let body = serde_json::json!({
                            "status": notice.status.map(|status| status.as_str()),
                            "outcome": notice.outcome.map(|outcome| outcome.as_str()),
                            "exit_code": notice.exit_code,
                            "error": notice.error,
                        })
                        .to_string();
                        self.push(
                            &s.forward_exit,
                            vec![
                                Box::new(boot),
                                Box::new(seq),
                                Box::new(from.0),
                                Box::new(from.1),
                                Box::new(body.into_bytes()),
                            ],
                            Check::Nothing,
                        );
                    }
                    Forward::Message { sender, body } => {
                        let sender = sender.map(key);
                        self.push(
                            &s.forward_message,
                            vec![
                                Box::new(boot),
                                Box::new(seq),
                                Box::new(sender.map(|(boot, _)| boot)),
                                Box::new(sender.map(|(_, seq)| seq)),
                                Box::new(body.clone()),
                            ],
                            Check::Nothing,
                        );
                    }
                }
            }
            Change::Prune {
                max_history,
                ended_before,
                keys_before,
            } => {
                let max_history = i64::try_from(*max_history).unwrap_or(i64::MAX);
                self.push(
                    &s.prune,
                    vec![
                        Box::new(PRUNE_LOCK),
                        Box::new(max_history),
                        Box::new(nanos(*ended_before)),
                        Box::new(PRUNE_BATCH),
                    ],
                    Check::Prune,
                );
                self.push(
                    &s.prune_keys,
                    vec![Box::new(nanos(*keys_before)), Box::new(PRUNE_LOCK)],
                    Check::Nothing,
                );
            }
            Change::Module { sha256, bytes } => self.push(
                &s.module,
                vec![Box::new(sha256.clone()), Box::new(bytes.clone())],
                Check::Nothing,
            ),
            Change::Worker { name, versions } => {
                let previous = versions.previous.as_ref();
                self.push(
                    &s.worker,
                    vec![
                        Box::new(name.clone()),
                        Box::new(versions.current.sha256.clone()),
                        Box::new(versions.current.source.clone()),
                        Box::new(nanos(versions.current.installed_at)),
                        Box::new(previous.map(|v| v.sha256.clone())),
                        Box::new(previous.map(|v| v.source.clone())),
                        Box::new(previous.map(|v| nanos(v.installed_at))),
                        Box::new(versions.file_sha256.clone()),
                    ],
                    Check::Nothing,
                );
            }
        }
    }

    fn add_event(&mut self, pid: Pid, event: &TaskEvent) {
        let node = self.node;
        let s = self.statements;
        let (boot, seq) = key(pid);
        match event {
            TaskEvent::Progress { step, fuel, .. } => {
                self.progress.insert(pid, (*step, *fuel));
            }
            TaskEvent::Logs {
                lines,
                dropped_bytes,
            } => {
                for line in lines {
                    self.lines.boots.push(boot);
                    self.lines.seqs.push(seq);
                    self.lines.ats.push(nanos(line.at));
                    self.lines.sources.push(source_name(line.source));
                    self.lines.messages.push(line.message.clone());
                }
                if *dropped_bytes > 0 {
                    self.dropped.insert(pid, *dropped_bytes);
                }
            }
            TaskEvent::Started { at, steps, fuel } => {
                self.progress.remove(&pid);
                self.push(
                    &s.started,
                    vec![
                        Box::new(boot),
                        Box::new(seq),
                        Box::new(nanos(*at)),
                        Box::new(*steps as i32),
                        Box::new(*fuel as i64),
                        Box::new(node),
                    ],
                    Check::Started(pid),
                );
            }
            TaskEvent::Restarting {
                at,
                fuel,
                end,
                next_attempt,
                ready_at,
            } => {
                self.progress.remove(&pid);
                let attempt = next_attempt.saturating_sub(1);
                self.push(
                    &s.restarting,
                    vec![
                        Box::new(boot),
                        Box::new(seq),
                        Box::new(*fuel as i64),
                        Box::new(*next_attempt as i32),
                        Box::new(attempt_json(attempt, end, *at)),
                        Box::new(nanos(*ready_at)),
                        Box::new(attempt as i32),
                        Box::new(node),
                    ],
                    Check::Fenced,
                );
            }
            TaskEvent::Ended {
                at,
                fuel,
                end,
                attempt,
            } => {
                self.push(
                    &s.ended,
                    vec![
                        Box::new(boot),
                        Box::new(seq),
                        Box::new(end.status.as_str()),
                        Box::new(end.outcome.as_str()),
                        Box::new(end.exit_code),
                        Box::new(end.error.clone()),
                        Box::new(nanos(*at)),
                        Box::new(*fuel as i64),
                        Box::new(attempt_json(0, end, *at)),
                        Box::new(*attempt as i32),
                        Box::new(node),
                    ],
                    Check::Fenced,
                );
            }
        }
    }
}

/// Writes `taken` in one transaction, its statements pipelined.
async fn commit(
    connection: &mut Connection,
    node: i32,
    changes: &[(usize, &Change)],
) -> Result<Outcome, tokio_postgres::Error> {
    let mut plan = Plan::new(&connection.statements, node);
    for &(pending, change) in changes {
        plan.add(pending, change);
    }
    let ops = plan.finish();
    let tx = connection.client.transaction().await?;
    let counts = try_join_all(ops.iter().map(|op| {
        let params: Vec<&(dyn ToSql + Sync)> = op
            .params
            .iter()
            .map(|param| &**param as &(dyn ToSql + Sync))
            .collect();
        let statement = &op.statement;
        let tx = &tx;
        async move { tx.execute(statement, &params).await }
    }))
    .await?;
    tx.commit().await?;
    let mut outcome = Outcome::default();
    for (op, count) in ops.iter().zip(counts) {
        match op.check {
            Check::Nothing => {}
            Check::Started(pid) if count == 0 => {
                outcome.fenced += 1;
                outcome.fenced_starts.push(pid);
            }
            Check::Fenced if count == 0 => outcome.fenced += 1,
            Check::Started(_) | Check::Fenced => {}
            Check::Prune if count >= PRUNE_BATCH as u64 => {
                outcome.prune_more = changes.iter().find_map(|(_, change)| match *change {
                    &Change::Prune {
                        max_history,
                        ended_before,
                        keys_before,
                    } => Some(Change::Prune {
                        max_history,
                        ended_before,
                        keys_before,
                    }),
                    _ => None,
                });
            }
            Check::Prune => {}
            Check::Keyed(pending) if count == 0 => outcome.key_taken.push(pending),
            Check::Keyed(_) => {}
        }
    }
    Ok(outcome)
}

/// The writer's statements, prepared once per connection.
struct Statements {
    accept: Statement,
    accept_keyed: Statement,
    started: Statement,
    progress: Statement,
    lines: Statement,
    dropped: Statement,
    restarting: Statement,
    ended: Statement,
    forward_kill: Statement,
    forward_message: Statement,
    forward_exit: Statement,
    prune: Statement,
    prune_keys: Statement,
    module: Statement,
    worker: Statement,
}

/// Whether `runs` says host `$node` holds the task `($1, $2)`: the fence of every write.
const HELD: &str = "EXISTS (SELECT 1 FROM runs r WHERE r.boot = $1 AND r.seq = $2 AND r.owner = ";

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let accept = client
            .prepare(
                "WITH task AS (
                    INSERT INTO tasks (boot, seq, spawned_at, name, worker, version,
                        module_sha256, duration, payload, deadline_secs, max_attempts,
                        on_host_loss, status, attempt, parent_boot, parent_seq)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                    RETURNING boot, seq, spawned_at, attempt)
                 INSERT INTO runs (boot, seq, owner, attempt, spawned_at)
                 SELECT boot, seq, $17::integer, attempt, spawned_at FROM task",
            )
            .await?;
        let accept_keyed = client
            .prepare(
                "WITH key AS (
                    INSERT INTO idempotency (key, body_sha256, boot, seq, created_at)
                    VALUES ($18, $19, $1, $2, $3)
                    ON CONFLICT (key) DO NOTHING
                    RETURNING 1),
                 task AS (
                    INSERT INTO tasks (boot, seq, spawned_at, name, worker, version,
                        module_sha256, duration, payload, deadline_secs, max_attempts,
                        on_host_loss, status, attempt, parent_boot, parent_seq)
                    SELECT $1::integer, $2::bigint, $3::bigint, $4::text, $5::text, $6::text,
                        $7::text, $8::integer, $9::text, $10::integer, $11::integer, $12::text,
                        $13::text, $14::integer, $15::integer, $16::bigint
                    WHERE EXISTS (SELECT 1 FROM key)
                    RETURNING boot, seq, spawned_at, attempt)
                 INSERT INTO runs (boot, seq, owner, attempt, spawned_at)
                 SELECT boot, seq, $17::integer, attempt, spawned_at FROM task",
            )
            .await?;
        let started = client
            .prepare(&format!(
                "UPDATE tasks SET status = 'running', started_at = $3, steps = $4, fuel = $5,
                    ready_at = NULL
                 WHERE boot = $1 AND seq = $2 AND ended_at IS NULL AND {HELD} $6)"
            ))
            .await?;
        let progress = client
            .prepare(
                "UPDATE tasks t SET step = v.step, fuel = v.fuel
                 FROM unnest($1::integer[], $2::bigint[], $3::integer[], $4::bigint[])
                    AS v(boot, seq, step, fuel)
                 WHERE t.boot = v.boot AND t.seq = v.seq AND t.ended_at IS NULL
                    AND (SELECT r.owner FROM runs r WHERE r.boot = v.boot AND r.seq = v.seq) = $5",
            )
            .await?;
        let lines = client
            .prepare(
                "INSERT INTO logs (boot, seq, at, source, message)
                 SELECT v.boot, v.seq, v.at, v.source, v.message
                 FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])
                    WITH ORDINALITY AS v(boot, seq, at, source, message, n)
                 WHERE (SELECT r.owner FROM runs r WHERE r.boot = v.boot AND r.seq = v.seq) = $6
                 ORDER BY v.n",
            )
            .await?;
        let dropped = client
            .prepare(
                "UPDATE tasks t SET logs_dropped_bytes = v.bytes
                 FROM unnest($1::integer[], $2::bigint[], $3::bigint[]) AS v(boot, seq, bytes)
                 WHERE t.boot = v.boot AND t.seq = v.seq AND t.ended_at IS NULL
                    AND (SELECT r.owner FROM runs r WHERE r.boot = v.boot AND r.seq = v.seq) = $4",
            )
            .await?;
        let restarting = client
            .prepare(
                "WITH run AS (
                    UPDATE runs SET attempt = $4, ready_at = $6
                    WHERE boot = $1 AND seq = $2 AND owner = $8 AND attempt = $7
                    RETURNING 1)
                 UPDATE tasks SET status = 'spawned', step = 0, fuel = $3, attempt = $4,
                    attempts = attempts || jsonb_build_array($5::text::jsonb), ready_at = $6
                 WHERE boot = $1 AND seq = $2 AND ended_at IS NULL AND attempt = $7
                    AND EXISTS (SELECT 1 FROM run)",
            )
            .await?;
        let ended = client
            .prepare(
                "WITH run AS (
                    DELETE FROM runs WHERE boot = $1 AND seq = $2 AND owner = $11
                        AND attempt = $10
                    RETURNING 1)
                 UPDATE tasks SET status = $3, outcome = $4, exit_code = $5, error = $6,
                    ended_at = $7, fuel = $8, ready_at = NULL,
                    attempts = CASE WHEN jsonb_array_length(attempts) > 0
                        THEN attempts || jsonb_build_array(
                            jsonb_set($9::text::jsonb, '{attempt}', to_jsonb(attempt)))
                        ELSE attempts END
                 WHERE boot = $1 AND seq = $2 AND ended_at IS NULL AND attempt = $10
                    AND EXISTS (SELECT 1 FROM run)",
            )
            .await?;
        // A task waiting in the shared queue ends here and now (a claim that holds its row is
        // waited for, and wins); any other unfinished one gets a kill, taken by whichever host
        // holds it when it looks, or claims it.
        let forward_kill = client
            .prepare(
                "WITH waiting AS (
                    DELETE FROM runs WHERE boot = $1 AND seq = $2 AND owner IS NULL
                    RETURNING boot, seq),
                 ended AS (
                    UPDATE tasks SET status = $3, outcome = $4, error = $5, ended_at = $6,
                        ready_at = NULL
                    WHERE (boot, seq) IN (SELECT boot, seq FROM waiting) AND ended_at IS NULL
                    RETURNING 1)
                 INSERT INTO commands (boot, seq, kind)
                 SELECT $1, $2, 'kill'
                 WHERE NOT EXISTS (SELECT 1 FROM waiting)
                    AND EXISTS (SELECT 1 FROM runs WHERE boot = $1 AND seq = $2)",
            )
            .await?;
        // For whichever host holds the task when it looks, or claims it; nothing for an
        // ended one.
        let forward_message = client
            .prepare(
                "INSERT INTO commands (boot, seq, kind, sender_boot, sender_seq, body)
                 SELECT boot, seq, 'message', $3, $4, $5 FROM runs
                 WHERE boot = $1 AND seq = $2",
            )
            .await?;
        let forward_exit = client
            .prepare(
                "INSERT INTO commands (boot, seq, kind, sender_boot, sender_seq, body)
                 SELECT boot, seq, 'exit', $3, $4, $5 FROM runs
                 WHERE boot = $1 AND seq = $2",
            )
            .await?;
        let prune = client
            .prepare(
                "WITH doomed AS (
                    SELECT boot, seq FROM tasks
                    WHERE ended_at IS NOT NULL AND (SELECT pg_try_advisory_xact_lock($1))
                      AND (ended_at < $3 OR (boot, seq) IN (
                        SELECT boot, seq FROM tasks WHERE ended_at IS NOT NULL
                        ORDER BY ended_at
                        LIMIT GREATEST(0, LEAST($4,
                            (SELECT count(*) FROM tasks WHERE ended_at IS NOT NULL) - $2))))
                    LIMIT $4),
                 lines AS (DELETE FROM logs WHERE (boot, seq) IN (SELECT boot, seq FROM doomed))
                 DELETE FROM tasks WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)",
            )
            .await?;
        let prune_keys = client
            .prepare(
                "WITH turn AS (SELECT pg_try_advisory_xact_lock($2) AS mine),
                 keys AS (DELETE FROM idempotency WHERE created_at < $1
                    AND (SELECT mine FROM turn)),
                 names AS (DELETE FROM names n WHERE NOT EXISTS
                    (SELECT 1 FROM runs r WHERE r.boot = n.boot AND r.seq = n.seq)
                    AND (SELECT mine FROM turn)),
                 nodes AS (DELETE FROM nodes n WHERE state <> 'up'
                    AND heartbeat_at < now() - interval '1 day'
                    AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.owner = n.id)
                    AND (SELECT mine FROM turn))
                 DELETE FROM commands WHERE created_at < now() - interval '1 hour'
                    AND (SELECT mine FROM turn)",
            )
            .await?;
        let module = client
            .prepare("INSERT INTO modules (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .await?;
        let worker = client
            .prepare(
                "INSERT INTO workers (name, current, current_source, current_installed_at,
                    previous, previous_source, previous_installed_at, file_sha256)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (name) DO UPDATE SET current = EXCLUDED.current,
                    current_source = EXCLUDED.current_source,
                    current_installed_at = EXCLUDED.current_installed_at,
                    previous = EXCLUDED.previous, previous_source = EXCLUDED.previous_source,
                    previous_installed_at = EXCLUDED.previous_installed_at,
                    file_sha256 = EXCLUDED.file_sha256",
            )
            .await?;
        Ok(Self {
            accept,
            accept_keyed,
            started,
            progress,
            lines,
            dropped,
            restarting,
            ended,
            forward_kill,
            forward_message,
            forward_exit,
            prune,
            prune_keys,
            module,
            worker,
        })
    }
}
