//! Workers' limits counted across a cluster (issue #25): `max_running`, `per_key_running` and
//! `rate` hold for all hosts together, and a host killed or cut off never lets a key run one
//! task too many.
//!
//! A task of a worker with limits is accepted into the shared queue as `limited`, whatever
//! place the host that took it has free, with its worker and its key ('' for none) in its row
//! of `runs`. Such a task starts only through [`PgStore::claim_limited`]: in one transaction, a
//! host holding the worker's advisory lock counts the worker's limited rows that hosts hold
//! (a row is held from its claim until its task's end deletes it, through restarts, and, when
//! its host is lost, until the reaper takes it back after the lease ran out: the count never
//! drops while a task may still run), then takes, key by key in turn, what its limits leave
//! room for. Keys take turns by when each last started, kept in `limit_keys` with its rate's
//! tokens, so that one key's backlog never starves another's; a rate refills its tokens from
//! that last start. A limited task scheduled for later moves into the queue once due.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::super::columns::nanos;
use super::super::{Reading, StoreError};
use super::cluster::{Claimed, read_claimed};
use super::{PgStore, column, unavailable};
use crate::config::FlowLimits;

/// The class of the advisory locks taken while a worker's limited tasks are claimed (the key
/// is the worker name's hash).
const LIMITS_LOCK: i32 = 0x6c69_6d74; // "limt"

/// Scheduled limited tasks moved into the queue per claim, once due.
const DUE_BATCH: i64 = 1_000;

/// A key of a worker, as a claim sees it: the tasks of it that run, when one last started, and
/// its rate's tokens then.
struct Key {
    name: String,
    running: u32,
    last_start: Option<i64>,
    tokens: Option<f64>,
}

impl Key {
    /// Its rate's tokens at `now` (none without a rate); starts are counted off as they go.
    fn tokens(&self, limits: &FlowLimits, now: i64) -> Option<f64> {
        let rate = limits.rate?;
        let full = f64::from(rate.starts);
        let (Some(tokens), Some(last)) = (self.tokens, self.last_start) else {
            return Some(full);
        };
        let per_token = rate.per.as_secs_f64() / full;
        let elapsed = (now - last).max(0) as f64 / 1e9;
        Some((tokens + elapsed / per_token).min(full))
    }
}

impl PgStore {
    /// Takes up to `count` limited tasks from the shared queue for this host, as their
    /// workers' limits leave room: those set over the API, read here from the store (so that
    /// no host claims under limits it has not followed yet), else those of this host's
    /// registry file, `file` (a worker in neither has none: its tasks go in turn). A paused
    /// worker's tasks are left waiting. `turn` rotates which worker goes first from one call
    /// to the next.
    pub fn claim_limited(
        &self,
        file: Arc<HashMap<String, FlowLimits>>,
        count: u32,
        turn: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let node = self.shared.node.load(std::sync::atomic::Ordering::Acquire);
        if node == 0 || count == 0 {
            return Ok(Vec::new());
        }
        self.query(move |mut client| async move {
            let tx = client.transaction().await.map_err(unavailable)?;
            let leased = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM nodes WHERE id = $1 AND state = 'up'
                        AND lease_until > now())",
                    &[&node],
                )
                .await
                .map_err(unavailable)?;
            if !column::<bool>(&leased, 0)? {
                return Ok(Vec::new());
            }
            let now = nanos(SystemTime::now());
            tx.execute(
                "UPDATE runs SET ready_at = NULL
                 WHERE (boot, seq) IN (
                    SELECT boot, seq FROM runs
                    WHERE owner IS NULL AND limited AND ready_at <= $1
                    ORDER BY ready_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&now, &DUE_BATCH],
            )
            .await
            .map_err(unavailable)?;
            // The workers with limited tasks waiting, one index probe each.
            let rows = tx
                .query(
                    "WITH RECURSIVE w(worker) AS (
                        (SELECT worker FROM runs
                         WHERE owner IS NULL AND limited AND ready_at IS NULL
                         ORDER BY worker LIMIT 1)
                        UNION ALL
                        SELECT (SELECT r.worker FROM runs r
                                WHERE r.owner IS NULL AND r.limited AND r.ready_at IS NULL
                                    AND r.worker > w.worker
                                ORDER BY r.worker LIMIT 1)
                        FROM w WHERE w.worker IS NOT NULL)
                     SELECT worker FROM w WHERE worker IS NOT NULL",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            let mut workers = rows
                .iter()
                .map(|row| column::<String>(row, 0))
                .collect::<Result<Vec<_>, _>>()?;
            if !workers.is_empty() {
                let paused = tx
                    .query("SELECT name FROM paused_workers", &[])
                    .await
                    .map_err(unavailable)?
                    .iter()
                    .map(|row| column::<String>(row, 0))
                    .collect::<Result<std::collections::HashSet<_>, _>>()?;
                workers.retain(|worker| !paused.contains(worker));
            }
            if workers.is_empty() {
                tx.commit().await.map_err(unavailable)?;
                return Ok(Vec::new());
            }
            let first = turn % workers.len();
            workers.rotate_left(first);
            let mut limits: HashMap<String, FlowLimits> = HashMap::clone(&file);
            for row in tx
                .query(
                    "SELECT name, limits FROM worker_limits WHERE name = ANY($1)",
                    &[&workers],
                )
                .await
                .map_err(unavailable)?
            {
                let name: String = column(&row, 0)?;
                let text: String = column(&row, 1)?;
                match serde_json::from_str(&text)
                    .map_err(|error| error.to_string())
                    .and_then(|value| FlowLimits::from_value(&value))
                {
                    Ok(set) => {
                        limits.insert(name, set);
                    }
                    // Written by a newer host: its tasks wait for a host that can read it.
                    Err(error) => {
                        tracing::warn!(worker = %name, %error, "a worker's limits in the \
                            store cannot be read here; its tasks are left to other hosts");
                        limits.insert(
                            name,
                            FlowLimits {
                                max_running: Some(0),
                                ..FlowLimits::default()
                            },
                        );
                    }
                }
            }
            let (mut boots, mut seqs) = (Vec::new(), Vec::new());
            let mut left = count;
            for worker in &workers {
                if left == 0 {
                    break;
                }
                let spec = limits.get(worker).copied().unwrap_or_default();
                let taken = claim_worker(&tx, node, worker, &spec, left, now).await?;
                left -= taken.len() as u32;
                for (boot, seq) in taken {
                    boots.push(boot);
                    seqs.push(seq);
                }
            }
            let claimed = read_claimed(&tx, &boots, &seqs).await?;
            tx.commit().await.map_err(unavailable)?;
            Ok(claimed)
        })
    }

    /// How many of `worker`'s limited tasks hosts hold (running, or between attempts), and how
    /// many wait in the shared queue, ready to start.
    pub fn limited_of(&self, worker: &str) -> Reading<'static, (u32, usize)> {
        let worker = worker.to_owned();
        self.query_async(move |client| async move {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM runs
                             WHERE owner IS NOT NULL AND limited AND worker = $1),
                        (SELECT count(*) FROM runs
                         WHERE owner IS NULL AND limited AND ready_at IS NULL AND worker = $1)",
                    &[&worker],
                )
                .await
                .map_err(unavailable)?;
            let running = column::<i64>(&row, 0)?;
            let waiting = column::<i64>(&row, 1)?;
            Ok((
                u32::try_from(running).unwrap_or(u32::MAX),
                usize::try_from(waiting).unwrap_or(0),
            ))
        })
    }

    /// Whether any limited task waits in the shared queue ready to start, or due to.
    pub fn limited_queue_waiting(&self) -> Result<bool, StoreError> {
        self.query(move |client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM runs
                            WHERE owner IS NULL AND limited AND ready_at IS NULL)
                        OR EXISTS (SELECT 1 FROM runs
                            WHERE owner IS NULL AND limited AND ready_at <= $1)",
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

    /// Forgets the keys that have not started a task for `idle`: their turn and their rate's
    /// tokens are what a key that never ran has.
    pub fn prune_limit_keys(&self, idle: Duration) -> Result<(), StoreError> {
        let before = nanos(
            SystemTime::now()
                .checked_sub(idle)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        self.query(move |client| async move {
            client
                .execute("DELETE FROM limit_keys WHERE last_start < $1", &[&before])
                .await
                .map(drop)
                .map_err(unavailable)
        })
    }
}

/// Claims up to `left` of `worker`'s waiting tasks for host `node` in `tx`, as `spec` leaves
/// room: none if another host is claiming the worker's tasks now (it holds the lock).
async fn claim_worker(
    tx: &tokio_postgres::Transaction<'_>,
    node: i32,
    worker: &str,
    spec: &FlowLimits,
    left: u32,
    now: i64,
) -> Result<Vec<(i32, i64)>, StoreError> {
    let locked = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
            &[&LIMITS_LOCK, &worker],
        )
        .await
        .map_err(unavailable)?;
    if !column::<bool>(&locked, 0)? {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            "SELECT concurrency_key, count(*) FROM runs
             WHERE owner IS NOT NULL AND limited AND worker = $1
             GROUP BY concurrency_key",
            &[&worker],
        )
        .await
        .map_err(unavailable)?;
    let mut running: HashMap<String, u32> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let key = column::<Option<String>>(row, 0)?.unwrap_or_default();
        let n = u32::try_from(column::<i64>(row, 1)?).unwrap_or(u32::MAX);
        running.insert(key, n);
    }
    let total: u32 = running.values().copied().fold(0, u32::saturating_add);
    let allowed = spec
        .max_running
        .map_or(left, |max| max.saturating_sub(total).min(left));
    if allowed == 0 {
        return Ok(Vec::new());
    }
    // The keys with tasks waiting, one index probe each, with when each last started.
    let rows = tx
        .query(
            "WITH RECURSIVE k(key) AS (
                (SELECT concurrency_key FROM runs
                 WHERE owner IS NULL AND limited AND ready_at IS NULL AND worker = $1
                 ORDER BY concurrency_key LIMIT 1)
                UNION ALL
                SELECT (SELECT r.concurrency_key FROM runs r
                        WHERE r.owner IS NULL AND r.limited AND r.ready_at IS NULL
                            AND r.worker = $1 AND r.concurrency_key > k.key
                        ORDER BY r.concurrency_key LIMIT 1)
                FROM k WHERE k.key IS NOT NULL)
             SELECT k.key, l.last_start, l.tokens FROM k
             LEFT JOIN limit_keys l ON l.worker = $1 AND l.key = k.key
             WHERE k.key IS NOT NULL",
            &[&worker],
        )
        .await
        .map_err(unavailable)?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = column(row, 0)?;
        keys.push(Key {
            running: running.get(&name).copied().unwrap_or(0),
            name,
            last_start: column(row, 1)?,
            tokens: column(row, 2)?,
        });
    }
    // Keys take turns: the one that started a task longest ago (or never) first.
    keys.sort_by(|a, b| {
        (a.last_start.is_some(), a.last_start, &a.name).cmp(&(
            b.last_start.is_some(),
            b.last_start,
            &b.name,
        ))
    });
    let mut names = Vec::with_capacity(keys.len());
    let mut rooms = Vec::with_capacity(keys.len());
    let mut tokens = Vec::with_capacity(keys.len());
    for key in &keys {
        let mut room = spec
            .per_key_running
            .filter(|_| !key.name.is_empty())
            .map_or(allowed, |max| max.saturating_sub(key.running).min(allowed));
        let have = key.tokens(spec, now);
        if let Some(have) = have {
            room = room.min(have.max(0.0).floor() as u32);
        }
        if room > 0 {
            names.push(key.name.clone());
            rooms.push(i64::from(room));
            tokens.push(have);
        }
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // The heads of those keys, as many of each as it has room for, oldest of the highest
    // priority first.
    let rows = tx
        .query(
            "SELECT k.ord, t.boot, t.seq
             FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS k(key, room, ord)
             CROSS JOIN LATERAL (
                SELECT boot, seq, priority, spawned_at FROM runs
                WHERE owner IS NULL AND limited AND ready_at IS NULL AND worker = $1
                    AND concurrency_key = k.key
                ORDER BY priority DESC, spawned_at, boot, seq
                LIMIT k.room FOR UPDATE SKIP LOCKED) t
             ORDER BY k.ord, t.priority DESC, t.spawned_at, t.boot, t.seq",
            &[&worker, &names, &rooms],
        )
        .await
        .map_err(unavailable)?;
    let mut heads: Vec<std::collections::VecDeque<(i32, i64)>> =
        vec![std::collections::VecDeque::new(); names.len()];
    for row in &rows {
        let ord = usize::try_from(column::<i64>(row, 0)?).unwrap_or(0);
        if let Some(queue) = ord.checked_sub(1).and_then(|index| heads.get_mut(index)) {
            queue.push_back((column(row, 1)?, column(row, 2)?));
        }
    }
    // Round robin between the keys, one each in turn, until the worker has no more room.
    let mut taken = Vec::new();
    let mut started = vec![0u32; names.len()];
    'rounds: loop {
        let mut any = false;
        for (index, queue) in heads.iter_mut().enumerate() {
            if taken.len() as u32 >= allowed {
                break 'rounds;
            }
            if let Some(task) = queue.pop_front() {
                taken.push(task);
                started[index] += 1;
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let (boots, seqs): (Vec<i32>, Vec<i64>) = taken.iter().copied().unzip();
    tx.execute(
        "UPDATE runs SET owner = $1
         WHERE (boot, seq) IN (SELECT * FROM unnest($2::integer[], $3::bigint[]))",
        &[&node, &boots, &seqs],
    )
    .await
    .map_err(unavailable)?;
    let mut started_keys = Vec::new();
    let mut left_tokens: Vec<Option<f64>> = Vec::new();
    for (index, n) in started.iter().enumerate() {
        if *n > 0 {
            started_keys.push(names[index].clone());
            left_tokens.push(tokens[index].map(|have| have - f64::from(*n)));
        }
    }
    tx.execute(
        "INSERT INTO limit_keys (worker, key, last_start, tokens)
         SELECT $1, v.key, $4, v.tokens FROM unnest($2::text[], $3::float8[]) AS v(key, tokens)
         ON CONFLICT (worker, key) DO UPDATE
            SET last_start = EXCLUDED.last_start, tokens = EXCLUDED.tokens",
        &[&worker, &started_keys, &left_tokens, &now],
    )
    .await
    .map_err(unavailable)?;
    Ok(taken)
}
