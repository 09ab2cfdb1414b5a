//! What the hosts of a cluster do together through the shared store.
//!
//! - **Leases.** A host joins as a new row of `nodes` (its id is the boot id of the pids it
//!   gives out) with a lease it renews at every heartbeat. A renewal succeeds only while the
//!   lease has not run out: a host whose lease expired must join again, as a new incarnation.
//! - **Reaping.** At every heartbeat each host marks `lost` the hosts whose lease expired, and
//!   takes back their unfinished tasks, a batch at a time (`SKIP LOCKED`, so that several
//!   reapers share the work): a task that had started was lost with its attempt and runs again
//!   as a new one (or ends `failed`, `host_lost`, as its `on_host_loss` says or after
//!   [`MAX_HOST_LOSSES`](crate::host) losses); one that had not goes back to the shared queue.
//! - **Claims.** A host with free places takes the oldest tasks of the shared queue
//!   (`FOR UPDATE SKIP LOCKED`), with the messages that were sent to them while they waited.
//! - **Commands.** A kill, a message or an exit signal for a task another host may hold is a
//!   row of `commands` for that task. The host holding the task reads its rows at a short
//!   interval, carries them out, and only then deletes them: a command lives until it is
//!   carried out, whichever host that is (one that claims the task and hands it back leaves
//!   them for the next). A task's end deletes its commands.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use serde::Serialize;
use tokio_postgres::Client;

use super::super::columns::{attempt_json, attempts_of, checkpoint_of, nanos};
use super::super::{Reading, StoreError};
use super::{NodeSpec, RECORD_COLUMN_COUNT, SPEC_COLUMN_COUNT, unavailable};
use super::{PgStore, RECORD_COLUMNS, SPEC_COLUMNS, column, key, pid_of, record_of, spec_of};
use crate::actor::EndNotice;
use crate::model::{OnHostLoss, Outcome, Pid, StoredCheckpoint, TaskEnd, TaskRecord, TaskSpec};

/// Lost hosts' tasks taken back per reaping transaction.
const REAP_BATCH: i64 = 500;

/// A host of the cluster, as `GET /api/cluster` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Its id: also the boot id of the pids it gives out.
    pub id: u32,
    pub name: String,
    /// Where its API listens.
    pub address: String,
    /// How many tasks it runs at once.
    pub capacity: u32,
    /// Tasks it held at its last heartbeat.
    pub live_tasks: u32,
    /// Tasks waiting in its own queue at its last heartbeat.
    pub queued_tasks: u32,
    /// `up`, `left` (shut down) or `lost` (its lease expired).
    pub state: String,
    #[serde(serialize_with = "crate::model::time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: SystemTime,
    #[serde(serialize_with = "crate::model::time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_heartbeat: SystemTime,
    #[serde(serialize_with = "crate::model::time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub lease_until: SystemTime,
}

/// What another host asked of a task this one holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Kill(Pid),
    Message {
        to: Pid,
        sender: Option<Pid>,
        body: Vec<u8>,
    },
    /// `from`, linked to `to`, ended abnormally.
    Exit {
        to: Pid,
        from: Pid,
        notice: EndNotice,
    },
}

/// Tasks of lost hosts taken back one way, as arrays for `unnest`.
#[derive(Default)]
struct Batch {
    boots: Vec<i32>,
    seqs: Vec<i64>,
    /// Their next attempt.
    nexts: Vec<i32>,
    /// The lost attempt's entry in `attempts`, as JSON.
    entries: Vec<String>,
    /// How the lost attempt ended, for people.
    errors: Vec<String>,
}

impl Batch {
    fn push(&mut self, boot: i32, seq: i64, next: i32, entry: String, end: TaskEnd) {
        self.boots.push(boot);
        self.seqs.push(seq);
        self.nexts.push(next);
        self.entries.push(entry);
        self.errors.push(end.error.unwrap_or_default());
    }
}

/// A task of a lost host, taken back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    /// Whether its attempt had started, and was lost with the host.
    pub lost: bool,
    /// It ended (`failed`, `host_lost`) rather than running again.
    pub ended: bool,
}

/// A task claimed from the shared queue: its record, what it needs to run, and what was sent
/// to it while it waited (messages, exits of linked tasks, a kill), oldest first, by id: each
/// stays in the store until [`PgStore::ack_commands`] is told it was carried out.
#[derive(Debug)]
pub struct Claimed {
    pub record: TaskRecord,
    pub spec: TaskSpec,
    pub commands: Vec<(i64, Command)>,
    /// Its checkpoint row, if it has one: its own policy, and the image a task taken back from
    /// a lost host resumes from.
    pub checkpoint: Option<StoredCheckpoint>,
}

impl Command {
    /// The task it is for.
    pub fn to(&self) -> Pid {
        match self {
            Self::Kill(to) | Self::Message { to, .. } | Self::Exit { to, .. } => *to,
        }
    }
}

/// The commands of rows `id, boot, seq, kind, sender_boot, sender_seq, body`, oldest first,
/// with their ids.
fn commands_of(rows: &[tokio_postgres::Row]) -> Result<Vec<(i64, Command)>, StoreError> {
    let mut commands = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = column(row, 0)?;
        let to = pid_of(column(row, 1)?, column(row, 2)?);
        let kind: String = column(row, 3)?;
        let sender = match (
            column::<Option<i32>>(row, 4)?,
            column::<Option<i64>>(row, 5)?,
        ) {
            (Some(boot), Some(seq)) => Some(pid_of(boot, seq)),
            _ => None,
        };
        let body = column::<Option<Vec<u8>>>(row, 6)?.unwrap_or_default();
        let command = match (kind.as_str(), sender) {
            ("kill", _) => Command::Kill(to),
            ("message", sender) => Command::Message { to, sender, body },
            ("exit", Some(from)) => Command::Exit {
                to,
                from,
                notice: notice_of(from, &body),
            },
            (other, _) => {
                tracing::warn!(kind = other, "a command of an unknown kind is dropped");
                continue;
            }
        };
        commands.push((id, command));
    }
    commands.sort_by_key(|(id, _)| *id);
    Ok(commands)
}

/// The end notice of task `pid` as an `exit` command carries it.
fn notice_of(pid: Pid, body: &[u8]) -> EndNotice {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    EndNotice::from_json(pid, &value)
}

/// Joins the cluster as a new incarnation of `spec.name`: an earlier one of the same name is
/// gone (this host replaces it), and its tasks are taken back at the next reaping.
pub(super) async fn join(client: &Client, spec: &NodeSpec) -> Result<i32, tokio_postgres::Error> {
    let lease_ms = i64::try_from(spec.lease.as_millis()).unwrap_or(i64::MAX);
    let replaced = client
        .execute(
            "UPDATE nodes SET state = 'lost' WHERE name = $1 AND state = 'up'",
            &[&spec.name],
        )
        .await?;
    if replaced > 0 {
        tracing::warn!(name = %spec.name,
            "an earlier host of this name had not left the cluster; its tasks are taken back");
    }
    let row = client
        .query_one(
            "INSERT INTO nodes (name, address, capacity, lease_until)
             VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond') RETURNING id",
            &[
                &spec.name,
                &spec.address,
                &i32::try_from(spec.capacity).unwrap_or(i32::MAX),
                &(lease_ms as f64),
            ],
        )
        .await?;
    row.try_get(0)
}

/// What the tasks `boots`, `seqs` just claimed in `tx` need to run: their records and specs,
/// in the order accepted, and what was sent to them while they waited.
pub(super) async fn read_claimed(
    tx: &tokio_postgres::Transaction<'_>,
    boots: &[i32],
    seqs: &[i64],
) -> Result<Vec<Claimed>, StoreError> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS}, {SPEC_COLUMNS},
            (SELECT meta FROM checkpoints c WHERE c.boot = tasks.boot AND c.seq = tasks.seq),
            (SELECT image FROM checkpoints c WHERE c.boot = tasks.boot AND c.seq = tasks.seq)
         FROM tasks
         WHERE (boot, seq) IN (SELECT * FROM unnest($1::integer[], $2::bigint[]))
         ORDER BY spawned_at, boot, seq"
    );
    let rows = tx
        .query(&sql, &[&boots, &seqs])
        .await
        .map_err(unavailable)?;
    let sent = tx
        .query(
            "SELECT id, boot, seq, kind, sender_boot, sender_seq, body FROM commands
             WHERE (boot, seq) IN (SELECT * FROM unnest($1::integer[], $2::bigint[]))",
            &[&boots, &seqs],
        )
        .await
        .map_err(unavailable)?;
    let sent = commands_of(&sent)?;
    rows.iter()
        .map(|row| {
            let record = record_of(row)?;
            let spec = spec_of(row, RECORD_COLUMN_COUNT)?;
            let commands = sent
                .iter()
                .filter(|(_, command)| command.to() == record.pid)
                .cloned()
                .collect();
            let at = RECORD_COLUMN_COUNT + SPEC_COLUMN_COUNT;
            let checkpoint = column::<Option<String>>(row, at)?.and_then(|meta| {
                checkpoint_of(
                    record.pid,
                    &meta,
                    column::<Option<Vec<u8>>>(row, at + 1).ok()?,
                )
            });
            Ok(Claimed {
                record,
                spec,
                commands,
                checkpoint,
            })
        })
        .collect()
}

impl PgStore {
    /// Renews this host's lease and says how it is doing; answers whether the lease was still
    /// held (false: it ran out, and this host must join again), how many tasks wait in the
    /// shared queue, and how many of them are tasks of workers with limits (ready to be
    /// claimed under them).
    pub fn heartbeat(&self, live: u32, queued: usize) -> Result<(bool, u64, u64), StoreError> {
        let node = self.shared.node.load(std::sync::atomic::Ordering::Acquire);
        let lease_ms = self.spec.lease.as_millis() as f64;
        let live = i32::try_from(live).unwrap_or(i32::MAX);
        let queued = i32::try_from(queued).unwrap_or(i32::MAX);
        let within = self.spec.lease / 4;
        self.query_within(within, move |client| async move {
            let statement = client
                .prepare_cached(
                    "WITH beat AS (
                        UPDATE nodes SET heartbeat_at = now(),
                            lease_until = now() + $2 * interval '1 millisecond',
                            live = $3, queued = $4
                        WHERE id = $1 AND state = 'up' AND lease_until > now()
                        RETURNING 1)
                     SELECT (SELECT count(*) FROM beat),
                        (SELECT count(*) FROM runs
                            WHERE owner IS NULL AND ready_at IS NULL AND NOT limited)
                        + (SELECT count(*) FROM runs
                            WHERE owner IS NULL AND ready_at <= $5 AND NOT limited),
                        (SELECT count(*) FROM runs
                            WHERE owner IS NULL AND limited AND ready_at IS NULL)
                        + (SELECT count(*) FROM runs
                            WHERE owner IS NULL AND limited AND ready_at <= $5)",
                )
                .await
                .map_err(unavailable)?;
            // Tasks scheduled to run later, and restarts waiting out their backoff, are not
            // waiting for a place yet: they do not count against --max-queue.
            let now = nanos(SystemTime::now());
            let row = client
                .query_one(&statement, &[&node, &lease_ms, &live, &queued, &now])
                .await
                .map_err(unavailable)?;
            let held = column::<i64>(&row, 0)? == 1;
            let count = |index| column::<i64>(&row, index).map(|n| u64::try_from(n).unwrap_or(0));
            Ok((held, count(1)?, count(2)?))
        })
    }

    /// Stops every write of this host's tasks at once: it has lost its lease, and another host
    /// may run them now. Acceptances are refused until it joins again.
    pub fn fence(&self) {
        self.shared
            .node
            .store(0, std::sync::atomic::Ordering::Release);
    }

    /// Ends every query in flight at once (the lease is lost: a task's host call among them
    /// must not wait on a database that may not answer). Queries started from here on run.
    pub fn end_queries(&self) {
        self.shared.fences.send_modify(|fences| *fences += 1);
    }

    /// Joins the cluster again, as a new incarnation, after the lease was lost: the new boot
    /// id.
    pub fn rejoin(&self) -> Result<u32, StoreError> {
        let spec = self.spec.clone();
        let node = self
            .query(move |client| async move { join(&client, &spec).await.map_err(unavailable) })?;
        self.shared
            .node
            .store(node, std::sync::atomic::Ordering::Release);
        tracing::warn!(node, "joined the cluster again, as a new incarnation");
        Ok(node as u32)
    }

    /// Marks lost the hosts whose lease expired, and takes back a batch of the unfinished
    /// tasks of hosts that are gone (lost, or left with tasks they could not hand back).
    pub fn reap(&self, max_host_losses: u32) -> Result<Vec<Reaped>, StoreError> {
        self.query(move |mut client| async move {
            let tx = client.transaction().await.map_err(unavailable)?;
            let lost = tx
                .query(
                    "UPDATE nodes SET state = 'lost'
                     WHERE state = 'up' AND lease_until < now() RETURNING id, name",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            for row in &lost {
                let id: i32 = column(row, 0)?;
                let name: String = column(row, 1)?;
                tracing::warn!(node = id, %name, "a host's lease expired: it is lost, and its \
                    unfinished tasks are taken back");
            }
            let rows = tx
                .query(
                    "SELECT r.boot, r.seq, t.status, t.attempt, t.attempts::text,
                        t.on_host_loss, t.fuel, c.meta, c.image IS NOT NULL
                     FROM runs r JOIN tasks t ON t.boot = r.boot AND t.seq = r.seq
                        LEFT JOIN checkpoints c ON c.boot = r.boot AND c.seq = r.seq
                     WHERE r.owner IN (SELECT id FROM nodes WHERE state <> 'up')
                     ORDER BY r.spawned_at
                     LIMIT $1
                     FOR UPDATE OF r SKIP LOCKED",
                    &[&REAP_BATCH],
                )
                .await
                .map_err(unavailable)?;
            let now = SystemTime::now();
            let mut reaped = Vec::with_capacity(rows.len());
            // Decided here, written in a few statements over arrays, whatever the batch's size.
            let (mut waiting, mut rerun, mut failed, mut resumed) = (
                Batch::default(),
                Batch::default(),
                Batch::default(),
                Batch::default(),
            );
            for row in &rows {
                let (boot, seq): (i32, i64) = (column(row, 0)?, column(row, 1)?);
                let pid = pid_of(boot, seq);
                let started = column::<String>(row, 2)? == "running";
                let attempt = column::<i32>(row, 3)? as u32;
                let attempts = attempts_of(&column::<String>(row, 4)?);
                let on_host_loss =
                    OnHostLoss::parse(&column::<String>(row, 5)?).unwrap_or(OnHostLoss::Restart);
                let losses = attempts
                    .iter()
                    .filter(|attempt| attempt.outcome == Outcome::HostLost)
                    .count() as u32
                    + u32::from(started);
                let end = TaskEnd::host_lost(attempt);
                let entry = attempt_json(attempt, &end, now);
                // A task with a checkpoint of this attempt goes on from it, on whichever host
                // claims it: the same attempt, still running.
                // One its host handed on at a shutdown goes on whatever `on_host_loss` says.
                let resumable = started
                    && column::<bool>(row, 8)?
                    && column::<Option<String>>(row, 7)?
                        .and_then(|meta| checkpoint_of(pid, &meta, None))
                        .is_some_and(|row| {
                            row.attempt == attempt
                                && row.taken.as_ref().is_some_and(|taken| {
                                    taken.handed_over
                                        || (on_host_loss == OnHostLoss::Restart
                                            && row.crash_resumes < max_host_losses)
                                })
                        });
                let ended = started
                    && !resumable
                    && (on_host_loss == OnHostLoss::Fail || losses >= max_host_losses);
                let batch = match (started, ended, resumable) {
                    (false, _, _) => &mut waiting,
                    (true, _, true) => &mut resumed,
                    (true, true, false) => &mut failed,
                    (true, false, false) => &mut rerun,
                };
                batch.push(boot, seq, attempt as i32 + 1, entry, end);
                reaped.push(Reaped {
                    pid,
                    lost: started && !resumable,
                    ended,
                });
            }
            for back in [&waiting, &resumed] {
                tx.execute(
                    "UPDATE runs SET owner = NULL
                     WHERE (boot, seq) IN (SELECT * FROM unnest($1::integer[], $2::bigint[]))",
                    &[&back.boots, &back.seqs],
                )
                .await
                .map_err(unavailable)?;
            }
            // A task that had started lost its actor with its host: its name goes with it.
            for lost in [&rerun, &failed, &resumed] {
                tx.execute(
                    "DELETE FROM names
                     WHERE (boot, seq) IN (SELECT * FROM unnest($1::integer[], $2::bigint[]))",
                    &[&lost.boots, &lost.seqs],
                )
                .await
                .map_err(unavailable)?;
            }
            tx.execute(
                "WITH run AS (
                    UPDATE runs r SET owner = NULL, attempt = v.next, ready_at = NULL
                    FROM unnest($1::integer[], $2::bigint[], $3::integer[]) AS v(boot, seq, next)
                    WHERE r.boot = v.boot AND r.seq = v.seq)
                 UPDATE tasks t SET status = 'spawned', step = 0, attempt = v.next,
                    attempts = t.attempts || jsonb_build_array(v.entry::jsonb), ready_at = NULL
                 FROM unnest($1::integer[], $2::bigint[], $3::integer[], $4::text[])
                    AS v(boot, seq, next, entry)
                 WHERE t.boot = v.boot AND t.seq = v.seq AND t.ended_at IS NULL",
                &[&rerun.boots, &rerun.seqs, &rerun.nexts, &rerun.entries],
            )
            .await
            .map_err(unavailable)?;
            tx.execute(
                "WITH run AS (
                    DELETE FROM runs
                    WHERE (boot, seq) IN (SELECT * FROM unnest($1::integer[], $2::bigint[])))
                 UPDATE tasks t SET status = 'failed', outcome = 'host_lost', exit_code = NULL,
                    error = v.error, ended_at = $5, ready_at = NULL,
                    attempts = CASE WHEN jsonb_array_length(t.attempts) > 0
                        THEN t.attempts || jsonb_build_array(v.entry::jsonb)
                        ELSE t.attempts END
                 FROM unnest($1::integer[], $2::bigint[], $3::text[], $4::text[])
                    AS v(boot, seq, entry, error)
                 WHERE t.boot = v.boot AND t.seq = v.seq AND t.ended_at IS NULL",
                &[
                    &failed.boots,
                    &failed.seqs,
                    &failed.entries,
                    &failed.errors,
                    &nanos(now),
                ],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(reaped)
        })
    }

    /// Takes up to `count` of the oldest tasks waiting in the shared queue for this host, with
    /// the messages sent to them while they waited.
    pub fn claim(&self, count: u32) -> Result<Vec<Claimed>, StoreError> {
        let node = self.shared.node.load(std::sync::atomic::Ordering::Acquire);
        if node == 0 || count == 0 {
            return Ok(Vec::new());
        }
        let count = i64::from(count);
        self.query(move |mut client| async move {
            let tx = client.transaction().await.map_err(unavailable)?;
            let claimed = tx
                .query(
                    // What waits with no time (from its index in order) and what is due (from
                    // its index by time), each locked as taken, then the first of both by
                    // priority and age: tasks not yet due are never walked past.
                    "WITH ready AS (
                        SELECT boot, seq, priority, spawned_at FROM runs
                        WHERE owner IS NULL AND ready_at IS NULL AND NOT limited
                        ORDER BY priority DESC, spawned_at, boot, seq
                        LIMIT $2 FOR UPDATE SKIP LOCKED),
                     due AS (
                        SELECT boot, seq, priority, spawned_at FROM runs
                        WHERE owner IS NULL AND ready_at <= $3 AND NOT limited
                        ORDER BY ready_at
                        LIMIT $2 FOR UPDATE SKIP LOCKED),
                     c AS (
                        SELECT boot, seq FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) w
                        ORDER BY priority DESC, spawned_at, boot, seq
                        LIMIT $2)
                     UPDATE runs r SET owner = $1
                     FROM c
                     WHERE r.boot = c.boot AND r.seq = c.seq
                        AND EXISTS (SELECT 1 FROM nodes WHERE id = $1 AND state = 'up'
                                    AND lease_until > now())
                     RETURNING r.boot, r.seq",
                    &[&node, &count, &nanos(SystemTime::now())],
                )
                .await
                .map_err(unavailable)?;
            if claimed.is_empty() {
                tx.commit().await.map_err(unavailable)?;
                return Ok(Vec::new());
            }
            let mut boots = Vec::with_capacity(claimed.len());
            let mut seqs = Vec::with_capacity(claimed.len());
            for row in &claimed {
                boots.push(column::<i32>(row, 0)?);
                seqs.push(column::<i64>(row, 1)?);
            }
            let claimed = read_claimed(&tx, &boots, &seqs).await?;
            tx.commit().await.map_err(unavailable)?;
            Ok(claimed)
        })
    }

    /// What was asked of the tasks this host holds, oldest first, with their ids; but those
    /// in `skip` (carried out, and not yet deleted).
    pub fn pending_commands(&self, skip: &[i64]) -> Result<Vec<(i64, Command)>, StoreError> {
        let node = self.shared.node.load(std::sync::atomic::Ordering::Acquire);
        if node == 0 {
            return Ok(Vec::new());
        }
        let skip = skip.to_vec();
        self.query(move |client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT c.id, c.boot, c.seq, c.kind, c.sender_boot, c.sender_seq, c.body
                     FROM commands c JOIN runs r ON r.boot = c.boot AND r.seq = c.seq
                     WHERE r.owner = $1 AND NOT (c.id = ANY($2))",
                )
                .await
                .map_err(unavailable)?;
            let rows = client
                .query(&statement, &[&node, &skip])
                .await
                .map_err(unavailable)?;
            commands_of(&rows)
        })
    }

    /// Deletes the commands `ids`, carried out.
    pub fn ack_commands(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.query(move |client| async move {
            let statement = client
                .prepare_cached("DELETE FROM commands WHERE id = ANY($1)")
                .await
                .map_err(unavailable)?;
            client
                .execute(&statement, &[&ids])
                .await
                .map(drop)
                .map_err(unavailable)
        })
    }

    /// Puts tasks this host holds and has not started back in the shared queue: a host that
    /// shuts down hands its queue back.
    pub fn hand_back(&self, pids: &[Pid]) -> Result<u64, StoreError> {
        let node = self.shared.node.load(std::sync::atomic::Ordering::Acquire);
        let (boots, seqs): (Vec<i32>, Vec<i64>) = pids.iter().map(|pid| key(*pid)).unzip();
        self.query(move |client| async move {
            client
                .execute(
                    "UPDATE runs SET owner = NULL
                     WHERE owner = $1
                        AND (boot, seq) IN (SELECT * FROM unnest($2::integer[], $3::bigint[]))",
                    &[&node, &boots, &seqs],
                )
                .await
                .map_err(unavailable)
        })
    }

    /// Leaves the cluster: this host's row stays, as `left`, for a day.
    pub fn leave(&self) -> Result<(), StoreError> {
        let node = self.shared.node.load(std::sync::atomic::Ordering::Acquire);
        self.query(move |client| async move {
            client
                .execute("UPDATE nodes SET state = 'left' WHERE id = $1", &[&node])
                .await
                .map(drop)
                .map_err(unavailable)
        })
    }

    /// The hosts of the cluster: those up, and those gone within the last hour. Awaited: only
    /// an HTTP handler asks.
    pub fn nodes(&self) -> Reading<'static, Vec<NodeInfo>> {
        self.query_async(move |client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT id, name, address, capacity, live, queued, state, started_at,
                        heartbeat_at, lease_until
                     FROM nodes
                     WHERE state = 'up' OR heartbeat_at > now() - interval '1 hour'
                     ORDER BY id",
                )
                .await
                .map_err(unavailable)?;
            let rows = client.query(&statement, &[]).await.map_err(unavailable)?;
            rows.iter()
                .map(|row| {
                    Ok(NodeInfo {
                        id: column::<i32>(row, 0)? as u32,
                        name: column(row, 1)?,
                        address: column(row, 2)?,
                        capacity: column::<i32>(row, 3)? as u32,
                        live_tasks: column::<i32>(row, 4)? as u32,
                        queued_tasks: column::<i32>(row, 5)? as u32,
                        state: column(row, 6)?,
                        started_at: column(row, 7)?,
                        last_heartbeat: column(row, 8)?,
                        lease_until: column(row, 9)?,
                    })
                })
                .collect()
        })
    }

    /// Gives `name` to `pid` in the whole cluster, unless a live task holds it: whether it did.
    /// Awaited: the task that asks is parked meanwhile, not its thread.
    pub fn register(&self, name: &str, pid: Pid) -> Reading<'static, bool> {
        let (name, (boot, seq)) = (name.to_owned(), key(pid));
        self.query_async(move |client| async move {
            let row = client
                .query_opt(
                    "INSERT INTO names (name, boot, seq) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET boot = EXCLUDED.boot, seq = EXCLUDED.seq
                     WHERE (names.boot, names.seq) = (EXCLUDED.boot, EXCLUDED.seq)
                        OR NOT EXISTS (SELECT 1 FROM runs r
                                       WHERE r.boot = names.boot AND r.seq = names.seq)
                     RETURNING boot",
                    &[&name, &boot, &seq],
                )
                .await
                .map_err(unavailable)?;
            Ok(row.is_some())
        })
    }

    /// The live task holding `name` in the cluster: awaited, holding no thread.
    pub fn whereis_async(&self, name: &str) -> Reading<'static, Option<Pid>> {
        let name = name.to_owned();
        self.query_async(move |client| whereis_in(client, name))
    }

    /// Every name a live task of the cluster holds, by name; awaited (an HTTP handler asks).
    pub fn names(&self) -> Reading<'static, Vec<(String, Pid)>> {
        self.query_async(move |client| async move {
            let rows = client
                .query(
                    "SELECT n.name, n.boot, n.seq FROM names n
                     JOIN runs r ON r.boot = n.boot AND r.seq = n.seq
                     ORDER BY n.name",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|row| Ok((column(row, 0)?, pid_of(column(row, 1)?, column(row, 2)?))))
                .collect()
        })
    }

    /// The unfinished tasks `runs` says this host holds.
    pub fn held_here(&self) -> Result<Vec<Pid>, StoreError> {
        let node = self.shared.node.load(std::sync::atomic::Ordering::Acquire);
        self.query(move |client| async move {
            let rows = client
                .query("SELECT boot, seq FROM runs WHERE owner = $1", &[&node])
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|row| Ok(pid_of(column(row, 0)?, column(row, 1)?)))
                .collect()
        })
    }

    /// Whether any task waits in the shared queue, ready to run.
    pub fn queue_waiting(&self) -> Result<bool, StoreError> {
        self.query(move |client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM runs
                            WHERE owner IS NULL AND ready_at IS NULL AND NOT limited)
                        OR EXISTS (SELECT 1 FROM runs
                            WHERE owner IS NULL AND ready_at <= $1 AND NOT limited)",
                )
                .await
                .map_err(unavailable)?;
            let row = client
                .query_one(&statement, &[&nanos(SystemTime::now())])
                .await
                .map_err(unavailable)?;
            column(&row, 0)
        })
    }

    /// Which host holds each of `pids` now (`None` while it waits in the shared queue); a pid
    /// missing from the answer has ended.
    pub fn holders(&self, pids: &[Pid]) -> Result<HashMap<Pid, Option<u32>>, StoreError> {
        let (boots, seqs): (Vec<i32>, Vec<i64>) = pids.iter().map(|pid| key(*pid)).unzip();
        self.query(move |client| async move {
            let rows = client
                .query(
                    "SELECT boot, seq, owner FROM runs
                     WHERE (boot, seq) IN (SELECT * FROM unnest($1::integer[], $2::bigint[]))",
                    &[&boots, &seqs],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|row| {
                    Ok((
                        pid_of(column(row, 0)?, column(row, 1)?),
                        column::<Option<i32>>(row, 2)?.map(|owner| owner as u32),
                    ))
                })
                .collect()
        })
    }

    /// Which of the hosts `ids` are lost (their lease ran out, or a new incarnation replaced
    /// them), rather than up or gone after handing back their tasks.
    pub fn lost_nodes(&self, ids: &[u32]) -> Result<HashSet<u32>, StoreError> {
        let ids: Vec<i32> = ids.iter().map(|id| *id as i32).collect();
        self.query(move |client| async move {
            let rows = client
                .query(
                    "SELECT id FROM nodes WHERE id = ANY($1::integer[]) AND state = 'lost'",
                    &[&ids],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|row| Ok(column::<i32>(row, 0)? as u32))
                .collect()
        })
    }

    /// Which host holds `pid` now: `Some(None)` while it waits in the shared queue, `None` once
    /// it has ended (or was never accepted). Awaited, holding no thread.
    pub fn holder_async(&self, pid: Pid) -> Reading<'static, Option<Option<u32>>> {
        self.query_async(move |client| holder_in(client, pid))
    }
}

/// The live task holding `name`, read with `client`.
async fn whereis_in(
    client: deadpool_postgres::Object,
    name: String,
) -> Result<Option<Pid>, StoreError> {
    let row = client
        .query_opt(
            "SELECT n.boot, n.seq FROM names n
             JOIN runs r ON r.boot = n.boot AND r.seq = n.seq
             WHERE n.name = $1",
            &[&name],
        )
        .await
        .map_err(unavailable)?;
    row.map(|row| Ok(pid_of(column(&row, 0)?, column(&row, 1)?)))
        .transpose()
}

/// Which host holds `pid` (see [`PgStore::holder`]), read with `client`.
async fn holder_in(
    client: deadpool_postgres::Object,
    pid: Pid,
) -> Result<Option<Option<u32>>, StoreError> {
    let (boot, seq) = key(pid);
    let statement = client
        .prepare_cached("SELECT owner FROM runs WHERE boot = $1 AND seq = $2")
        .await
        .map_err(unavailable)?;
    let row = client
        .query_opt(&statement, &[&boot, &seq])
        .await
        .map_err(unavailable)?;
    row.map(|row| Ok(column::<Option<i32>>(&row, 0)?.map(|owner| owner as u32)))
        .transpose()
}
