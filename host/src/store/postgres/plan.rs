//! What the shared store's writer sends for a chunk: its statements, prepared once per
//! connection, and the plan of one commit, pipelined.
//!
//! - The statements of a commit are sent together, without waiting for each answer
//!   (`tokio-postgres` pipelines requests polled together), so a commit costs about three round
//!   trips however many changes it holds: `BEGIN`, the statements, `COMMIT`.
//! - A commit's changes of one kind are gathered into one `unnest` statement: its acceptances
//!   (those without an idempotency key), starts, progress, log lines and ends, so that a commit
//!   runs a handful of statements however many tasks it holds (see [`Plan`]).
//! - A task's log lines ride with the write of its row where there is one: those that follow
//!   its first start go with the start, those of its last commit with its end; the others go
//!   into `log_parts`, one row per task and commit. A task's step, when it ends in the commit,
//!   goes with its end too.
//! - Every write of a task's life is fenced: it applies only while `runs` says this host holds
//!   the task, and an end or a restart only for the attempt it ends. A host that lost its
//!   lease, or was cut off while another took its tasks over, writes nothing over the newer
//!   attempt.
//! - A commit learns its transaction's id first, so that a commit whose answer is lost can be
//!   looked up afterwards (`pg_xact_status`) rather than written twice.

use std::collections::{HashMap, HashSet};

use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::super::backlog::Chunk;
use super::super::columns::{append_lines, attempt_json, checkpoint_meta, nanos};
use super::super::writer::Outcome;
use super::super::{Change, Forward, ScheduleChange, StoreError};
use super::key;
use crate::model::{Pid, TaskEvent};

/// Ended tasks deleted per prune, so that a large prune never holds the writer long.
const PRUNE_BATCH: i64 = 1000;

/// Taken by a prune, so that hosts pruning at once do not wait on each other's rows: the one
/// that does not get it skips its turn.
const PRUNE_LOCK: i64 = 0x6874_7470_7072_756e; // "httpprun"

type Param = Box<dyn ToSql + Sync + Send>;

/// What a statement's count of rows tells.
enum Check {
    Nothing,
    /// A fenced write: no row means this host does not hold the task (or the task ended).
    Fenced,
    /// A prune: a full batch means more is due.
    Prune,
    /// An acceptance with an idempotency key, of the batch at this index: no row means the
    /// key was taken by another request, and the task was not written.
    Keyed(usize),
    /// A message for a task, of the batch at this index: no row means the task has ended, or
    /// its mailbox's bound is reached in the store.
    Delivered(usize),
    /// The commit's starts gathered in one statement, which returns the tasks it started: one
    /// not returned is not held by this host.
    Starts(Vec<Pid>),
    /// The commit's ends gathered in one statement, which returns the tasks it ended, each
    /// with its batch's index: one not returned was not written.
    Ends(Vec<(Pid, usize)>),
}

impl Check {
    /// Whether the statement returns the tasks it wrote, rather than only their count.
    fn returns_tasks(&self) -> bool {
        matches!(self, Check::Starts(_) | Check::Ends(_))
    }
}

struct Op {
    statement: Statement,
    params: Vec<Param>,
    check: Check,
}

/// The statements of one commit: the acceptances first, then what the commit's changes
/// gathered (progress, log lines, bytes of log dropped: one statement each), then every
/// other change in order, with the gathered starts and then the gathered ends last (or
/// before a change of one of their tasks that must follow them: see [`Plan::barrier`]).
/// Gathered changes may go before a later change of the same task: its log lines before its
/// end (which they must: an end closes the task to writes), and its progress before a start or
/// restart of a new attempt, which then shows step 0 until its next progress.
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
    accepts: Accepts,
    starts: Starts,
    ends: Ends,
}

/// The commit's acceptances without an idempotency key, as one multi-row statement's columns.
#[derive(Default)]
struct Accepts {
    boots: Vec<i32>,
    seqs: Vec<i64>,
    spawned_ats: Vec<i64>,
    names: Vec<String>,
    workers: Vec<String>,
    versions: Vec<String>,
    modules: Vec<String>,
    durations: Vec<i32>,
    payloads: Vec<Option<String>>,
    deadlines: Vec<i32>,
    max_attempts: Vec<i32>,
    on_host_loss: Vec<&'static str>,
    statuses: Vec<&'static str>,
    attempts: Vec<i32>,
    parent_boots: Vec<Option<i32>>,
    parent_seqs: Vec<Option<i64>>,
    owners: Vec<Option<i32>>,
    run_ats: Vec<Option<i64>>,
    priorities: Vec<i16>,
    retry_boots: Vec<Option<i32>>,
    retry_seqs: Vec<Option<i64>>,
    schedules: Vec<Option<String>>,
    schedule_ticks: Vec<Option<i64>>,
    keys: Vec<Option<String>>,
    limited: Vec<bool>,
}

/// Starts gathered into one statement, until a later change of one of their tasks must
/// follow them (see [`Plan::barrier`]).
#[derive(Default)]
struct Starts {
    pids: Vec<Pid>,
    /// Where each task is in the columns.
    index: HashMap<Pid, usize>,
    boots: Vec<i32>,
    seqs: Vec<i64>,
    ats: Vec<i64>,
    steps: Vec<i32>,
    fuels: Vec<i64>,
    /// The lines that followed each start in the commit.
    heads: Vec<Option<Vec<u8>>>,
}

/// Ends gathered into one statement, written after the starts gathered with them.
#[derive(Default)]
struct Ends {
    pids: Vec<(Pid, usize)>,
    tasks: HashSet<Pid>,
    boots: Vec<i32>,
    seqs: Vec<i64>,
    statuses: Vec<&'static str>,
    outcomes: Vec<&'static str>,
    exit_codes: Vec<Option<i32>>,
    errors: Vec<Option<String>>,
    results: Vec<Option<String>>,
    ats: Vec<i64>,
    fuels: Vec<i64>,
    attempt_json: Vec<String>,
    attempts: Vec<i32>,
    /// The lines of each task since its last write, written with its end.
    tails: Vec<Option<Vec<u8>>>,
    /// The step each task reached in the commit, if it stepped: written with its end rather
    /// than apart.
    steps: Vec<Option<i32>>,
}

/// A commit's log lines, each task's as one value in `columns::lines_blob`'s form: those that
/// follow a task's start in the commit go with the start, those of a task that ends in it with
/// the end (both rewrite its row in `tasks` anyway); the others, a row per task in `log_parts`.
#[derive(Default)]
struct Lines {
    /// Lines of a task not (yet) known to go with its start or its end.
    loose: HashMap<Pid, Vec<u8>>,
    /// Lines for `log_parts`, a task's in order; tasks in the order they came.
    parts: Vec<(Pid, Vec<u8>)>,
    part_of: HashMap<Pid, usize>,
}

impl Lines {
    /// `pid`'s loose lines go to `log_parts`, before any that come after them.
    fn settle(&mut self, pid: Pid) {
        let Some(blob) = self.loose.remove(&pid) else {
            return;
        };
        match self.part_of.get(&pid) {
            Some(&at) => self.parts[at].1.extend_from_slice(&blob),
            None => {
                self.part_of.insert(pid, self.parts.len());
                self.parts.push((pid, blob));
            }
        }
    }
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
            accepts: Accepts::default(),
            starts: Starts::default(),
            ends: Ends::default(),
        }
    }

    /// Writes the gathered starts and then the gathered ends, as the next statements.
    fn flush_lives(&mut self) {
        let node = self.node;
        if !self.starts.pids.is_empty() {
            let starts = std::mem::take(&mut self.starts);
            let statement = self.statements.started.clone();
            self.push(
                &statement,
                vec![
                    Box::new(starts.boots),
                    Box::new(starts.seqs),
                    Box::new(starts.ats),
                    Box::new(starts.steps),
                    Box::new(starts.fuels),
                    Box::new(node),
                    Box::new(starts.heads),
                ],
                Check::Starts(starts.pids),
            );
        }
        if !self.ends.pids.is_empty() {
            let ends = std::mem::take(&mut self.ends);
            let statement = self.statements.ended.clone();
            self.push(
                &statement,
                vec![
                    Box::new(ends.boots),
                    Box::new(ends.seqs),
                    Box::new(ends.statuses),
                    Box::new(ends.outcomes),
                    Box::new(ends.exit_codes),
                    Box::new(ends.errors),
                    Box::new(ends.ats),
                    Box::new(ends.fuels),
                    Box::new(ends.attempt_json),
                    Box::new(ends.attempts),
                    Box::new(node),
                    Box::new(ends.tails),
                    Box::new(ends.steps),
                    Box::new(ends.results),
                ],
                Check::Ends(ends.pids),
            );
        }
    }

    /// Before a change of `pid` that must follow its gathered start or end (a restart, or a
    /// second start after one): writes what was gathered first.
    fn barrier(&mut self, pid: Pid) {
        if self.starts.index.contains_key(&pid) || self.ends.tasks.contains(&pid) {
            self.flush_lives();
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
        let loose: Vec<Pid> = self.lines.loose.keys().copied().collect();
        for pid in loose {
            self.lines.settle(pid);
        }
        for (at, (pid, _)) in self.ends.pids.iter().enumerate() {
            if let Some((step, _)) = self.progress.remove(pid) {
                self.ends.steps[at] = Some(step as i32);
            }
        }
        self.flush_lives();
        self.flush_accepts();
        let tail = std::mem::take(&mut self.ops);
        self.gathered();
        let mut ops = std::mem::take(&mut self.head);
        ops.append(&mut self.ops);
        ops.extend(tail);
        ops
    }

    /// The acceptances without a key, as one statement at the head.
    fn flush_accepts(&mut self) {
        if self.accepts.boots.is_empty() {
            return;
        }
        let a = std::mem::take(&mut self.accepts);
        let statement = self.statements.accept.clone();
        self.push_head(
            &statement,
            vec![
                Box::new(a.boots),
                Box::new(a.seqs),
                Box::new(a.spawned_ats),
                Box::new(a.names),
                Box::new(a.workers),
                Box::new(a.versions),
                Box::new(a.modules),
                Box::new(a.durations),
                Box::new(a.payloads),
                Box::new(a.deadlines),
                Box::new(a.max_attempts),
                Box::new(a.on_host_loss),
                Box::new(a.statuses),
                Box::new(a.attempts),
                Box::new(a.parent_boots),
                Box::new(a.parent_seqs),
                Box::new(a.owners),
                Box::new(a.run_ats),
                Box::new(a.priorities),
                Box::new(a.retry_boots),
                Box::new(a.retry_seqs),
                Box::new(a.schedules),
                Box::new(a.schedule_ticks),
                Box::new(a.keys),
                Box::new(a.limited),
            ],
            Check::Nothing,
        );
    }

    /// The statements of what was gathered, into `ops`.
    fn gathered(&mut self) {
        let node = self.node;
        if !self.lines.parts.is_empty() {
            let lines = std::mem::take(&mut self.lines);
            let (mut boots, mut seqs, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
            for (pid, blob) in lines.parts {
                let (boot, seq) = key(pid);
                boots.push(boot);
                seqs.push(seq);
                blobs.push(blob);
            }
            let statement = self.statements.lines.clone();
            self.push(
                &statement,
                vec![
                    Box::new(boots),
                    Box::new(seqs),
                    Box::new(blobs),
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
                limited,
            } => {
                let (boot, seq) = key(record.pid);
                let parent = record.parent.map(key);
                let retry_of = record.retry_of.map(key);
                let owner: Option<i32> = (!shared).then_some(node);
                let Some(idempotency) = idempotency else {
                    let a = &mut self.accepts;
                    a.boots.push(boot);
                    a.seqs.push(seq);
                    a.spawned_ats.push(nanos(record.spawned_at));
                    a.names.push(record.name.clone());
                    a.workers.push(record.worker.to_string());
                    a.versions.push(record.version.to_string());
                    a.modules.push(spec.module_sha256.clone());
                    a.durations.push(record.duration as i32);
                    a.payloads.push(spec.payload.clone());
                    a.deadlines.push(spec.deadline_secs as i32);
                    a.max_attempts.push(spec.max_attempts as i32);
                    a.on_host_loss.push(spec.on_host_loss.as_str());
                    a.statuses.push(record.status.as_str());
                    a.attempts.push(record.attempt as i32);
                    a.parent_boots.push(parent.map(|(boot, _)| boot));
                    a.parent_seqs.push(parent.map(|(_, seq)| seq));
                    a.owners.push(owner);
                    a.run_ats.push(record.run_at.map(nanos));
                    a.priorities.push(i16::from(spec.priority));
                    a.retry_boots.push(retry_of.map(|(boot, _)| boot));
                    a.retry_seqs.push(retry_of.map(|(_, seq)| seq));
                    a.schedules.push(record.schedule.clone());
                    a.schedule_ticks.push(record.schedule_tick.map(nanos));
                    a.keys.push(record.concurrency_key.clone());
                    a.limited.push(*limited);
                    return;
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
                // Claimed in the acceptance's own statement: of two requests with one key on
                // two hosts, one writes its task, the other is told.
                params.push(Box::new(idempotency.key.clone()));
                params.push(Box::new(idempotency.body_sha256.clone()));
                params.push(Box::new(nanos(idempotency.stale_before)));
                params.push(Box::new(record.run_at.map(nanos)));
                params.push(Box::new(i16::from(spec.priority)));
                params.push(Box::new(retry_of.map(|(boot, _)| boot)));
                params.push(Box::new(retry_of.map(|(_, seq)| seq)));
                params.push(Box::new(record.schedule.clone()));
                params.push(Box::new(record.schedule_tick.map(nanos)));
                params.push(Box::new(record.concurrency_key.clone()));
                params.push(Box::new(*limited));
                let statement = s.accept_keyed.clone();
                self.push_head(&statement, params, Check::Keyed(pending));
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
                        let body = notice.to_json().to_string();
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
            Change::Schedule(change) => self.add_schedule(change),
            Change::WorkerPaused { name, paused } => {
                let statement = if *paused {
                    &s.worker_paused
                } else {
                    &s.worker_resumed
                };
                self.push(statement, vec![Box::new(name.clone())], Check::Nothing);
            }
            Change::WorkerLimits { name, limits } => match limits {
                Some(limits) => self.push(
                    &s.worker_limits_set,
                    vec![
                        Box::new(name.clone()),
                        Box::new(limits.to_json()),
                        Box::new(limits.any()),
                    ],
                    Check::Nothing,
                ),
                None => self.push(
                    &s.worker_limits_unset,
                    vec![Box::new(name.clone())],
                    Check::Nothing,
                ),
            },
            Change::Checkpoint(row) => {
                let (boot, seq) = key(row.pid);
                let image = row
                    .taken
                    .as_ref()
                    .and_then(|taken| taken.image.as_deref())
                    .map(<[u8]>::to_vec);
                // Fenced as the task's other writes are: a host that lost the task to
                // another (its lease ran out) writes over no checkpoint of the new holder's.
                // Written while no host holds it (accepted, handed on) or once it ended.
                self.push(
                    &s.checkpoint,
                    vec![
                        Box::new(boot),
                        Box::new(seq),
                        Box::new(checkpoint_meta(row)),
                        Box::new(image),
                        Box::new(self.node),
                    ],
                    Check::Fenced,
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

    fn add_schedule(&mut self, change: &ScheduleChange) {
        let s = self.statements;
        let (statement, params): (&Statement, Vec<Param>) = match change {
            ScheduleChange::Put(schedule) => (
                &s.schedule_put,
                vec![
                    Box::new(schedule.name.clone()),
                    Box::new(schedule.definition.clone()),
                    Box::new(schedule.paused),
                    Box::new(nanos(schedule.created_at)),
                    Box::new(schedule.last_tick.map(nanos)),
                ],
            ),
            ScheduleChange::Delete(name) => (&s.schedule_delete, vec![Box::new(name.clone())]),
            ScheduleChange::Pause { name, paused, from } => (
                &s.schedule_pause,
                vec![
                    Box::new(name.clone()),
                    Box::new(*paused),
                    Box::new(from.map(nanos)),
                ],
            ),
            ScheduleChange::Ticked { name, tick, pid } => {
                let pid = pid.map(key);
                (
                    &s.schedule_ticked,
                    vec![
                        Box::new(name.clone()),
                        Box::new(nanos(*tick)),
                        Box::new(pid.map(|(boot, _)| boot)),
                        Box::new(pid.map(|(_, seq)| seq)),
                    ],
                )
            }
        };
        self.push(statement, params, Check::Nothing);
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
                let blob = match self.starts.index.get(&pid).copied() {
                    Some(at) => self.starts.heads[at].get_or_insert_with(Vec::new),
                    None => self.lines.loose.entry(pid).or_default(),
                };
                append_lines(blob, lines);
                if *dropped_bytes > 0 {
                    self.dropped.insert(pid, *dropped_bytes);
                }
            }
            TaskEvent::Started { at, steps, fuel } => {
                self.progress.remove(&pid);
                self.barrier(pid);
                self.lines.settle(pid);
                let starts = &mut self.starts;
                starts.heads.push(None);
                starts.index.insert(pid, starts.pids.len());
                starts.pids.push(pid);
                starts.boots.push(boot);
                starts.seqs.push(seq);
                starts.ats.push(nanos(*at));
                starts.steps.push(*steps as i32);
                starts.fuels.push(*fuel as i64);
            }
            TaskEvent::Restarting {
                at,
                fuel,
                end,
                next_attempt,
                ready_at,
            } => {
                self.progress.remove(&pid);
                self.barrier(pid);
                self.lines.settle(pid);
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
                if self.ends.tasks.contains(&pid) {
                    self.flush_lives();
                }
                let tail = self.lines.loose.remove(&pid);
                let ends = &mut self.ends;
                ends.tails.push(tail);
                ends.steps.push(None);
                ends.tasks.insert(pid);
                ends.pids.push((pid, pending));
                ends.boots.push(boot);
                ends.seqs.push(seq);
                ends.statuses.push(end.status.as_str());
                ends.outcomes.push(end.outcome.as_str());
                ends.exit_codes.push(end.exit_code);
                ends.errors.push(end.error.clone());
                ends.results
                    .push(end.result.as_ref().map(|result| result.as_str().to_owned()));
                ends.ats.push(nanos(*at));
                ends.fuels.push(*fuel as i64);
                ends.attempt_json.push(attempt_json(0, end, *at));
                ends.attempts.push(*attempt as i32);
            }
        }
    }
}

/// What a statement of a commit answered.
enum Answer {
    /// The rows it wrote.
    Count(u64),
    /// The tasks it wrote, by key.
    Tasks(HashSet<(i32, i64)>),
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
        async move {
            if op.check.returns_tasks() {
                let rows = tx.query(statement, &params).await?;
                let written = rows
                    .iter()
                    .map(|row| Ok((row.try_get::<_, i32>(0)?, row.try_get::<_, i64>(1)?)))
                    .collect::<Result<HashSet<_>, tokio_postgres::Error>>()?;
                Ok(Answer::Tasks(written))
            } else {
                tx.execute(statement, &params).await.map(Answer::Count)
            }
        }
    }));
    let (xid, counts) = futures_util::future::try_join(xid, counts).await?;
    flight.xid = Some(xid.try_get(0)?);
    flight.commit_sent = true;
    tx.commit().await?;
    let mut outcome = Outcome::default();
    for (op, answer) in ops.iter().zip(counts) {
        let written = match answer {
            Answer::Tasks(written) => {
                match &op.check {
                    Check::Starts(pids) => {
                        for pid in pids.iter().filter(|pid| !written.contains(&key(**pid))) {
                            outcome.fenced += 1;
                            outcome.fenced_starts.push(*pid);
                        }
                    }
                    Check::Ends(pids) => {
                        for (_, pending) in
                            pids.iter().filter(|(pid, _)| !written.contains(&key(*pid)))
                        {
                            outcome.fenced += 1;
                            outcome.refused.push((*pending, StoreError::Fenced));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            Answer::Count(count) => count,
        };
        match op.check {
            Check::Nothing | Check::Starts(_) | Check::Ends(_) => {}
            Check::Fenced if written == 0 => outcome.fenced += 1,
            Check::Fenced => {}
            Check::Prune if written >= PRUNE_BATCH as u64 => {
                outcome.prune_more = chunk.changes().find_map(|(_, change)| change.prune_again());
            }
            Check::Prune => {}
            Check::Keyed(pending) if written == 0 => {
                outcome.refused.push((pending, StoreError::KeyTaken));
            }
            Check::Delivered(pending) if written == 0 => {
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
    schedule_put: Statement,
    schedule_delete: Statement,
    schedule_pause: Statement,
    schedule_ticked: Statement,
    worker_paused: Statement,
    worker_resumed: Statement,
    worker_limits_set: Statement,
    worker_limits_unset: Statement,
    checkpoint: Statement,
}

impl Statements {
    pub(super) async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let xid = client.prepare("SELECT pg_current_xact_id()::text").await?;
        let accept = client
            .prepare(
                "WITH v AS (
                    SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::text[],
                        $5::text[], $6::text[], $7::text[], $8::integer[], $9::text[],
                        $10::integer[], $11::integer[], $12::text[], $13::text[], $14::integer[],
                        $15::integer[], $16::bigint[], $17::integer[], $18::bigint[],
                        $19::smallint[], $20::integer[], $21::bigint[], $22::text[],
                        $23::bigint[], $24::text[], $25::boolean[])
                    AS v(boot, seq, spawned_at, name, worker, version, module_sha256, duration,
                        payload, deadline_secs, max_attempts, on_host_loss, status, attempt,
                        parent_boot, parent_seq, owner, run_at, priority, retry_of_boot,
                        retry_of_seq, schedule, schedule_tick, concurrency_key, limited)),
                 task AS (
                    INSERT INTO tasks (boot, seq, spawned_at, name, worker, version,
                        module_sha256, duration, payload, deadline_secs, max_attempts,
                        on_host_loss, status, attempt, parent_boot, parent_seq, run_at,
                        ready_at, priority, retry_of_boot, retry_of_seq, schedule, schedule_tick,
                        concurrency_key)
                    SELECT boot, seq, spawned_at, name, worker, version, module_sha256, duration,
                        payload, deadline_secs, max_attempts, on_host_loss, status, attempt,
                        parent_boot, parent_seq, run_at, run_at, priority, retry_of_boot,
                        retry_of_seq, schedule, schedule_tick, concurrency_key
                    FROM v)
                 INSERT INTO runs (boot, seq, owner, attempt, spawned_at, ready_at, priority,
                    limited, worker, concurrency_key)
                 SELECT boot, seq, owner, attempt, spawned_at, run_at, priority, limited,
                    CASE WHEN limited THEN worker END,
                    CASE WHEN limited THEN coalesce(concurrency_key, '') END
                 FROM v",
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
                        on_host_loss, status, attempt, parent_boot, parent_seq, run_at,
                        ready_at, priority, retry_of_boot, retry_of_seq, schedule, schedule_tick,
                        concurrency_key)
                    SELECT $1::integer, $2::bigint, $3::bigint, $4::text, $5::text, $6::text,
                        $7::text, $8::integer, $9::text, $10::integer, $11::integer, $12::text,
                        $13::text, $14::integer, $15::integer, $16::bigint, $21::bigint,
                        $21::bigint, $22::smallint, $23::integer, $24::bigint, $25::text,
                        $26::bigint, $27::text
                    WHERE EXISTS (SELECT 1 FROM key)
                    RETURNING boot, seq, spawned_at, attempt, ready_at, priority)
                 INSERT INTO runs (boot, seq, owner, attempt, spawned_at, ready_at, priority,
                    limited, worker, concurrency_key)
                 SELECT boot, seq, $17::integer, attempt, spawned_at, ready_at, priority,
                    $28::boolean, CASE WHEN $28::boolean THEN $5::text END,
                    CASE WHEN $28::boolean THEN coalesce($27::text, '') END
                 FROM task",
            )
            .await?;
        // The statements that write many tasks find each task's rows by key, one at a time,
        // in subqueries, and then write the rows by the `ctid`s so found: a join would be
        // planned as the tables were when the statement was prepared (empty, at a host's
        // first start: a scan of the whole table) and could keep that plan long after they
        // have grown. A row updated meanwhile by another host has a new `ctid`, and is not
        // written: the fence holds.
        // A start also writes the lines that followed it in the commit: into the task's row
        // if it is the task's first (they are its first lines), into `log_parts` otherwise
        // (after the earlier attempts' lines). Every part of the statement reads the rows as
        // they were before it, so `started_at` tells which.
        let started = client
            .prepare(
                "WITH v AS MATERIALIZED (
                    SELECT v.*, (SELECT t.ctid FROM tasks t
                        WHERE t.boot = v.boot AND t.seq = v.seq) AS tid
                    FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::integer[],
                        $5::bigint[], $7::bytea[]) AS v(boot, seq, at, steps, fuel, head)
                    WHERE (SELECT r.owner FROM runs r
                        WHERE r.boot = v.boot AND r.seq = v.seq) = $6),
                 again AS (
                    INSERT INTO log_parts (boot, seq, lines)
                    SELECT v.boot, v.seq, v.head FROM v
                    WHERE v.head IS NOT NULL AND (SELECT t.started_at IS NOT NULL FROM tasks t
                        WHERE t.ctid = v.tid))
                 UPDATE tasks t SET status = 'running', started_at = v.at, steps = v.steps,
                    fuel = v.fuel, ready_at = NULL,
                    log_head = CASE WHEN t.started_at IS NULL THEN v.head ELSE t.log_head END
                 FROM v
                 WHERE t.ctid = ANY (ARRAY(SELECT tid FROM v)) AND t.ctid = v.tid
                    AND t.ended_at IS NULL
                 RETURNING t.boot, t.seq",
            )
            .await?;
        let progress = client
            .prepare(
                "WITH v AS MATERIALIZED (
                    SELECT v.*, (SELECT t.ctid FROM tasks t
                        WHERE t.boot = v.boot AND t.seq = v.seq) AS tid
                    FROM unnest($1::integer[], $2::bigint[], $3::integer[], $4::bigint[])
                        AS v(boot, seq, step, fuel)
                    WHERE (SELECT r.owner FROM runs r
                        WHERE r.boot = v.boot AND r.seq = v.seq) = $5)
                 UPDATE tasks t SET step = v.step, fuel = v.fuel
                 FROM v
                 WHERE t.ctid = ANY (ARRAY(SELECT tid FROM v)) AND t.ctid = v.tid
                    AND t.ended_at IS NULL",
            )
            .await?;
        let lines = client
            .prepare(
                "INSERT INTO log_parts (boot, seq, lines)
                 SELECT v.boot, v.seq, v.lines
                 FROM unnest($1::integer[], $2::bigint[], $3::bytea[])
                    WITH ORDINALITY AS v(boot, seq, lines, n)
                 WHERE (SELECT r.owner FROM runs r WHERE r.boot = v.boot AND r.seq = v.seq) = $4
                 ORDER BY v.n",
            )
            .await?;
        let dropped = client
            .prepare(
                "WITH v AS MATERIALIZED (
                    SELECT v.*, (SELECT t.ctid FROM tasks t
                        WHERE t.boot = v.boot AND t.seq = v.seq) AS tid
                    FROM unnest($1::integer[], $2::bigint[], $3::bigint[]) AS v(boot, seq, bytes)
                    WHERE (SELECT r.owner FROM runs r
                        WHERE r.boot = v.boot AND r.seq = v.seq) = $4)
                 UPDATE tasks t SET logs_dropped_bytes = v.bytes
                 FROM v
                 WHERE t.ctid = ANY (ARRAY(SELECT tid FROM v)) AND t.ctid = v.tid
                    AND t.ended_at IS NULL",
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
        // An end applies only to the attempt it ends, of a task this host holds: its row in
        // `runs` goes, with the commands left for it, and the tasks written are returned.
        let ended = client
            .prepare(
                "WITH v AS MATERIALIZED (
                    SELECT v.*,
                        (SELECT r.ctid FROM runs r WHERE r.boot = v.boot AND r.seq = v.seq
                            AND r.attempt = v.attempt) AS run,
                        (SELECT t.ctid FROM tasks t WHERE t.boot = v.boot AND t.seq = v.seq)
                            AS tid
                    FROM unnest($1::integer[], $2::bigint[], $3::text[], $4::text[],
                        $5::integer[], $6::text[], $7::bigint[], $8::bigint[], $9::text[],
                        $10::integer[], $12::bytea[], $13::integer[], $14::text[])
                    AS v(boot, seq, status, outcome, exit_code, error, at, fuel, attempt_json,
                        attempt, tail, step, result)),
                 run AS (
                    DELETE FROM runs r
                    WHERE r.ctid = ANY (ARRAY(SELECT run FROM v))
                        AND r.owner IS NOT DISTINCT FROM $11
                    RETURNING r.boot, r.seq),
                 sent AS (
                    DELETE FROM commands c
                    WHERE c.ctid = ANY (ARRAY(
                        SELECT unnest(ARRAY(SELECT c.ctid FROM commands c
                            WHERE c.boot = run.boot AND c.seq = run.seq))
                        FROM run)))
                 UPDATE tasks t SET status = v.status, outcome = v.outcome,
                    exit_code = v.exit_code, error = v.error, result = v.result,
                    ended_at = v.at, fuel = v.fuel, ready_at = NULL, log_tail = v.tail, step = COALESCE(v.step, t.step),
                    attempts = CASE WHEN jsonb_array_length(t.attempts) > 0
                        THEN t.attempts || jsonb_build_array(
                            jsonb_set(v.attempt_json::jsonb, '{attempt}', to_jsonb(t.attempt)))
                        ELSE t.attempts END
                 FROM v
                 WHERE t.ctid = ANY (ARRAY(SELECT v.tid FROM v
                        JOIN run ON run.boot = v.boot AND run.seq = v.seq))
                    AND t.ctid = v.tid AND t.ended_at IS NULL AND t.attempt = v.attempt
                 RETURNING t.boot, t.seq",
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
        // A prune deletes the oldest ended tasks, as many as are past `--max-history` or
        // older than the history's age (`$3`), at most `$4`: both are the first ones in the
        // order of their ends, read from its index.
        let prune = client
            .prepare(
                "WITH turn AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1) AS mine),
                 doomed AS MATERIALIZED (
                    SELECT boot, seq FROM tasks WHERE ended_at IS NOT NULL
                    ORDER BY ended_at
                    LIMIT CASE WHEN (SELECT mine FROM turn) THEN GREATEST(0, LEAST($4,
                        GREATEST(
                            (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE ended_at < $3
                                LIMIT $4) expired),
                            (SELECT count(*) FROM tasks WHERE ended_at IS NOT NULL) - $2)))
                        ELSE 0 END),
                 lines AS (DELETE FROM logs WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)),
                 parts AS (
                    DELETE FROM log_parts WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)),
                 kept AS (
                    DELETE FROM checkpoints WHERE (boot, seq) IN (SELECT boot, seq FROM doomed))
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
        let schedule_put = client
            .prepare(
                "INSERT INTO schedules (name, definition, paused, created_at, last_tick)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition,
                    paused = EXCLUDED.paused",
            )
            .await?;
        let schedule_delete = client
            .prepare("DELETE FROM schedules WHERE name = $1")
            .await?;
        let schedule_pause = client
            .prepare(
                "UPDATE schedules SET paused = $2,
                    last_tick = GREATEST(last_tick, $3::bigint)
                 WHERE name = $1",
            )
            .await?;
        // Of two hosts that handled one tick, the first to write it is kept, unless the other
        // says which task it created (the first skipped it).
        let schedule_ticked = client
            .prepare(
                "UPDATE schedules SET last_tick = $2,
                    last_boot = COALESCE($3, last_boot), last_seq = COALESCE($4, last_seq)
                 WHERE name = $1 AND (last_tick IS NULL OR last_tick < $2
                    OR (last_tick = $2 AND $3::integer IS NOT NULL))",
            )
            .await?;
        let worker_paused = client
            .prepare("INSERT INTO paused_workers (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .await?;
        let worker_resumed = client
            .prepare("DELETE FROM paused_workers WHERE name = $1")
            .await?;
        // A worker given limits has its tasks counted under them from now on, those hosts hold
        // and those waiting alike: their rows become limited.
        let worker_limits_set = client
            .prepare(
                "WITH kept AS (
                    INSERT INTO worker_limits (name, limits) VALUES ($1, $2)
                    ON CONFLICT (name) DO UPDATE SET limits = EXCLUDED.limits)
                 UPDATE runs r SET limited = true, worker = t.worker,
                    concurrency_key = coalesce(t.concurrency_key, '')
                 FROM tasks t
                 WHERE $3::boolean AND NOT r.limited AND t.boot = r.boot AND t.seq = r.seq
                    AND t.worker = $1",
            )
            .await?;
        let worker_limits_unset = client
            .prepare("DELETE FROM worker_limits WHERE name = $1")
            .await?;
        let checkpoint = client
            .prepare(
                "INSERT INTO checkpoints (boot, seq, meta, image)
                 SELECT $1, $2, $3, $4
                 WHERE NOT EXISTS (SELECT 1 FROM runs
                    WHERE boot = $1 AND seq = $2 AND owner IS NOT NULL AND owner <> $5)
                 ON CONFLICT (boot, seq) DO UPDATE SET meta = EXCLUDED.meta,
                    image = EXCLUDED.image",
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
            schedule_put,
            schedule_delete,
            schedule_pause,
            schedule_ticked,
            worker_paused,
            worker_resumed,
            worker_limits_set,
            worker_limits_unset,
            checkpoint,
        })
    }
}
