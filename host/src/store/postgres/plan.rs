//! What the shared store's writer sends for a chunk: its statements, prepared once per
//! connection, and the plan of one commit, pipelined.
//!
//! - The statements of a commit are sent together, without waiting for each answer
//!   (`tokio-postgres` pipelines requests polled together), so a commit costs about three round
//!   trips however many changes it holds: `BEGIN`, the statements, `COMMIT`.
//! - Progress and log lines, the changes a task makes at every step, are gathered across the
//!   commit into one `unnest` statement each, written after the commit's acceptances and before
//!   its other changes (see [`Plan`]).
//! - Every write of a task's life is fenced: it applies only while `runs` says this host holds
//!   the task, and an end or a restart only for the attempt it ends. A host that lost its
//!   lease, or was cut off while another took its tasks over, writes nothing over the newer
//!   attempt.
//! - A commit learns its transaction's id first, so that a commit whose answer is lost can be
//!   looked up afterwards (`pg_xact_status`) rather than written twice.

use std::collections::HashMap;

use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::super::backlog::Chunk;
use super::super::columns::{attempt_json, nanos, source_name};
use super::super::writer::Outcome;
use super::super::{Change, Forward, StoreError};
use super::key;
use crate::model::{Pid, TaskEvent};

/// Ended tasks deleted per prune, so that a large prune never holds the writer long.
const PRUNE_BATCH: i64 = 1000;

/// Taken by a prune, so that hosts pruning at once do not wait on each other's rows: the one
/// that does not get it skips its turn.
const PRUNE_LOCK: i64 = 0x6874_7470_7072_756e; // "httpprun"

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
    /// A task's end, of the batch at this index: no row means this host does not hold the
    /// task (or it has ended): the end was not written.
    Ended(usize),
    /// A message for a task, of the batch at this index: no row means the task has ended, or
    /// its mailbox's bound is reached in the store.
    Delivered(usize),
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
pub(super) struct Plan<'a> {
    statements: &'a Statements,
    node: i32,
    /// A task's mailbox bound: messages waiting for it in the store past it are refused.
    max_messages: i64,
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
    fn new(statements: &'a Statements, node: i32, max_messages: i64) -> Self {
        Self {
            statements,
            node,
            max_messages,
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
                    params.push(Box::new(nanos(idempotency.stale_before)));
                }
                let statement = statement.clone();
                self.push_head(&statement, params, check);
            }
            Change::Event(pid, event) => self.add_event(pending, *pid, event),
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
                                Box::new(self.max_messages),
                            ],
                            Check::Delivered(pending),
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

    fn add_event(&mut self, pending: usize, pid: Pid, event: &TaskEvent) {
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
                    Check::Ended(pending),
                );
            }
        }
    }
}

/// A commit on its way: what is known of it should its answer be lost.
#[derive(Debug, Default)]
pub(super) struct Flight {
    /// Its transaction's id, once the database told it.
    pub xid: Option<String>,
    /// Whether `COMMIT` was sent: from then on, it may have been written.
    pub commit_sent: bool,
}

/// Writes `chunk` in one transaction, its statements pipelined, with `node` as the writer's id
/// and `max_messages` as a mailbox's bound; `flight` learns the transaction's id, and when
/// `COMMIT` is sent.
pub(super) async fn commit(
    client: &mut Client,
    statements: &Statements,
    node: i32,
    max_messages: i64,
    chunk: &Chunk,
    flight: &mut Flight,
) -> Result<Outcome, tokio_postgres::Error> {
    let mut plan = Plan::new(statements, node, max_messages);
    for (pending, change) in chunk.changes() {
        plan.add(pending, change);
    }
    for (pid, progress) in &chunk.progress {
        plan.progress.entry(*pid).or_insert(*progress);
    }
    let ops = plan.finish();
    let tx = client.transaction().await?;
    let xid = tx.query_one(&statements.xid, &[]);
    let counts = try_join_all(ops.iter().map(|op| {
        let params: Vec<&(dyn ToSql + Sync)> = op
            .params
            .iter()
            .map(|param| &**param as &(dyn ToSql + Sync))
            .collect();
        let statement = &op.statement;
        let tx = &tx;
        async move { tx.execute(statement, &params).await }
    }));
    let (xid, counts) = futures_util::future::try_join(xid, counts).await?;
    flight.xid = Some(xid.try_get(0)?);
    flight.commit_sent = true;
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
            Check::Ended(pending) if count == 0 => {
                outcome.fenced += 1;
                outcome.refused.push((pending, StoreError::Fenced));
            }
            Check::Started(_) | Check::Fenced | Check::Ended(_) => {}
            Check::Prune if count >= PRUNE_BATCH as u64 => {
                outcome.prune_more = chunk.changes().find_map(|(_, change)| change.prune_again());
            }
            Check::Prune => {}
            Check::Keyed(pending) if count == 0 => {
                outcome.refused.push((pending, StoreError::KeyTaken));
            }
            Check::Delivered(pending) if count == 0 => {
                outcome.refused.push((pending, StoreError::NotDelivered));
            }
            Check::Keyed(_) | Check::Delivered(_) => {}
        }
    }
    Ok(outcome)
}

/// The writer's statements, prepared once per connection.
pub(super) struct Statements {
    /// The transaction's id, as text.
    xid: Statement,
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
    pub(super) async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let xid = client.prepare("SELECT pg_current_xact_id()::text").await?;
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
                    ON CONFLICT (key) DO UPDATE SET body_sha256 = EXCLUDED.body_sha256,
                        boot = EXCLUDED.boot, seq = EXCLUDED.seq,
                        created_at = EXCLUDED.created_at
                    WHERE idempotency.created_at < $20
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
                    RETURNING 1),
                 sent AS (
                    DELETE FROM commands WHERE boot = $1 AND seq = $2
                        AND EXISTS (SELECT 1 FROM run))
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
                    RETURNING 1),
                 sent AS (
                    DELETE FROM commands WHERE (boot, seq) IN (SELECT boot, seq FROM waiting))
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
                 WHERE boot = $1 AND seq = $2
                    AND (SELECT count(*) FROM commands
                         WHERE boot = $1 AND seq = $2 AND kind = 'message') < $6",
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
                 DELETE FROM commands c WHERE NOT EXISTS
                    (SELECT 1 FROM runs r WHERE r.boot = c.boot AND r.seq = c.seq)
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
            xid,
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
