//! The shared store: one PostgreSQL database that several hosts use at once, as a cluster.
//!
//! It keeps what the SQLite store keeps, in the same columns, and what a cluster needs beside
//! it: the hosts (`nodes`, each with a lease it renews), which host holds each unfinished task
//! (`runs`), and what one host asks of a task another holds (`commands`). The schema and its
//! versions are in `schema`; the writer, which commits every pending batch of this host in one
//! transaction (group commit) and fences every write of a task by the host holding it, in
//! `writer`; what the hosts of a cluster do together (leases, claims, reaping the tasks of a
//! lost host) in `cluster`.
//!
//! The store's interface is synchronous, as the host's is: each call is run on the store's own
//! small tokio runtime, where `tokio-postgres` and its pool live, and waited for. Reads use a
//! pool of connections; the writer has one connection of its own.

mod cluster;
mod limits;
mod plan;
mod schema;
mod target;
mod writer;

use std::future::Future;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;

pub use cluster::{Claimed, Command, NodeInfo};
pub use schema::SchemaError;
pub use target::shown_unread;

use super::columns::{attempts_of, checkpoint_of, lines_of, status_of, time};
use super::{
    Change, Cursor, Done, ListQuery, Page, Reading, Remembered, Store, StoreError, StoreStats,
    StoredSchedule, StoredVersion, WorkerVersions,
};
use crate::model::{
    JsonText, LogLine, OnHostLoss, Outcome, Pid, StoredCheckpoint, TaskLogs, TaskRecord, TaskSpec,
};
use target::Target;
use writer::Writer;

/// Connections kept for reads and the cluster's own queries.
const POOL_SIZE: usize = 8;

/// How long a read or a cluster query may take before it counts as failed: a database that
/// does not answer must not hold a request for ever.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a host tells the cluster about itself when it joins.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its name, shown in `GET /api/cluster`.
    pub name: String,
    /// Where its API listens, as others may reach it.
    pub address: String,
    /// How many tasks it runs at once.
    pub capacity: u32,
    /// How long its lease lasts without a heartbeat.
    pub lease: Duration,
    /// A task's mailbox bound (`--max-mailbox-messages`): as many messages again may wait
    /// for it in the store, and no more.
    pub max_messages: usize,
}

/// Why the shared store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0} is not a PostgreSQL connection URL this host can use: {1}")]
    Url(String, String),
    #[error("cannot connect to the database at {0}: {1}")]
    Connect(String, String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("cannot start the store's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("joining the cluster: {0}")]
    Join(String),
    #[error("cannot start the store's writer: {0}")]
    Writer(std::io::Error),
}

/// What the writer and the rest of the store share.
struct Shared {
    /// This host's incarnation in `nodes`: the owner every write of a task is fenced by, and
    /// the boot id of the pids it gives out. A host that lost its lease joins again as a new
    /// one.
    node: AtomicI32,
    /// Changes of tasks an earlier incarnation of this host submitted, not written.
    fenced: AtomicU64,
    /// Bumped when this host loses its lease ([`PgStore::end_queries`]): every query then in
    /// flight ends at once (a task's host call among them), rather than waiting on a database
    /// that may not answer.
    fences: tokio::sync::watch::Sender<u64>,
    /// Told of each task whose start this host wrote while it no longer held it: the host
    /// stops it.
    on_fenced: OnceLock<Box<dyn Fn(Pid) + Send + Sync>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    /// Where the database is, without its password, for logs.
    shown: String,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    writer: Writer,
    shared: Arc<Shared>,
    spec: NodeSpec,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shown)
            .field("node", &self.node())
            .finish_non_exhaustive()
    }
}

/// `error` and what caused it, as one line: a driver's own message (`error performing TLS
/// handshake`) rarely says why.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Reads a column, or says which one could not be read: a database written by hand or by
/// another program must not panic the host.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|error| unavailable(format!("reading column {index}: {error}")))
}

/// The pid whose boot id and sequence number are these columns. Boot ids are the `nodes` ids
/// (positive `INTEGER`s); the casts only reinterpret the bits, both ways.
fn pid_of(boot: i32, seq: i64) -> Pid {
    Pid::new(boot as u32, seq as u64)
}

fn key(pid: Pid) -> (i32, i64) {
    (pid.boot() as i32, pid.seq() as i64)
}

impl PgStore {
    /// Connects to the database at `url`, creates or migrates the schema, joins the cluster as
    /// `spec` describes, and starts the writer, whose backlog is bounded to `backlog_bytes`
    /// (see [`super::backlog`]).
    pub fn open(url: &str, spec: NodeSpec, backlog_bytes: usize) -> Result<Self, OpenError> {
        let mut target =
            Target::parse(url).map_err(|error| OpenError::Url(target::shown_unread(url), error))?;
        let shown = target.shown.clone();
        // A database that stops answering (a network that drops packets rather than refusing
        // them) is noticed within seconds, not when TCP gives up minutes later.
        target
            .config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10))
            .application_name("http-spawn");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-pg")
            .enable_all()
            .build()
            .map_err(OpenError::Runtime)?;
        let handle = runtime.handle().clone();
        let connected = Self::connect(&handle, &target, &spec, &shown);
        let (pool, joined) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                // Dropping a runtime may block, which an async caller must not.
                runtime.shutdown_background();
                return Err(error);
            }
        };
        let shared = Arc::new(Shared {
            node: AtomicI32::new(joined),
            fenced: AtomicU64::new(0),
            fences: tokio::sync::watch::Sender::new(0),
            on_fenced: OnceLock::new(),
        });
        let writer = match Writer::start(
            target,
            Arc::clone(&shared),
            backlog_bytes,
            spec.max_messages,
        ) {
            Ok(writer) => writer,
            Err(error) => {
                runtime.shutdown_background();
                return Err(OpenError::Writer(error));
            }
        };
        tracing::info!(database = %shown, node = joined, name = %spec.name,
            "joined the cluster");
        Ok(Self {
            shown,
            runtime: Mutex::new(Some(runtime)),
            handle,
            pool,
            writer,
            shared,
            spec,
        })
    }

    /// The pool, the schema brought to this host's version, and this host joined: its id.
    fn connect(
        handle: &tokio::runtime::Handle,
        target: &Target,
        spec: &NodeSpec,
        shown: &str,
    ) -> Result<(Pool, i32), OpenError> {
        let pool = {
            let _entered = handle.enter();
            let manager = Manager::from_config(
                target.config.clone(),
                target.tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(QUERY_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|error| OpenError::Connect(shown.to_owned(), with_causes(&error)))?
        };
        let (client_pool, spec, shown) = (pool.clone(), spec.clone(), shown.to_owned());
        let joined = run_on(handle, async move {
            let mut client = client_pool
                .get()
                .await
                .map_err(|error| OpenError::Connect(shown, with_causes(&error)))?;
            schema::migrate(&mut client).await?;
            cluster::join(&client, &spec)
                .await
                .map_err(|error| OpenError::Join(error.to_string()))
        })
        .map_err(|error| OpenError::Join(error.to_string()))??;
        Ok((pool, joined))
    }

    /// This host's incarnation: its id in `nodes`, and the boot id of the pids it gives out.
    pub fn node(&self) -> u32 {
        self.shared.node.load(Ordering::Acquire) as u32
    }

    /// What this host told the cluster about itself.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Calls `stop` with each task whose start this host wrote while it no longer held it.
    pub fn on_fenced(&self, stop: impl Fn(Pid) + Send + Sync + 'static) {
        let _ = self.shared.on_fenced.set(Box::new(stop));
    }

    /// Runs `query` with a pooled connection on the store's runtime, and waits for it, at most
    /// [`QUERY_TIMEOUT`].
    fn query<T, F, Fut>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.query_within(QUERY_TIMEOUT, query)
    }

    /// [`PgStore::query`], at most `timeout`.
    fn query_within<T, F, Fut>(&self, timeout: Duration, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        run_on(&self.handle, self.bounded(timeout, query))?
    }

    /// [`PgStore::query`] for a caller on another async runtime (an HTTP handler's): the query
    /// runs on the store's runtime, and the caller awaits its answer, holding no thread.
    fn query_async<T, F, Fut>(&self, query: F) -> Reading<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let answer = self.handle.spawn(self.bounded(QUERY_TIMEOUT, query));
        Box::pin(async move {
            answer
                .await
                .map_err(|_| StoreError::Unavailable("the store has stopped".into()))?
        })
    }

    /// `query` with a pooled connection, given up after `timeout` or once this host is fenced
    /// out (a fence from the call on ends it): the future the store's runtime runs.
    fn bounded<T, F, Fut>(
        &self,
        timeout: Duration,
        query: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let pool = self.pool.clone();
        let mut fenced = self.shared.fences.subscribe();
        async move {
            let work = async move {
                let client = pool.get().await.map_err(unavailable)?;
                query(client).await
            };
            tokio::select! {
                answer = tokio::time::timeout(timeout, work) => match answer {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Unavailable(
                        "the database did not answer in time".into(),
                    )),
                },
                _ = fenced.changed() => Err(StoreError::Unavailable(
                    "this host has lost its lease in the cluster".into(),
                )),
            }
        }
    }
}

/// A task's record, without its log lines.
async fn read_record(
    client: deadpool_postgres::Object,
    pid: Pid,
) -> Result<Option<TaskRecord>, StoreError> {
    let (boot, seq) = key(pid);
    let sql = format!("SELECT {RECORD_COLUMNS} FROM tasks WHERE boot = $1 AND seq = $2");
    let statement = client.prepare_cached(&sql).await.map_err(unavailable)?;
    let row = client
        .query_opt(&statement, &[&boot, &seq])
        .await
        .map_err(unavailable)?;
    row.as_ref().map(record_of).transpose()
}

/// A task's captured log: the lines written with its first start, those in `logs` (written by
/// hosts before schema version 3), those in `log_parts`, those written with its end.
async fn read_logs(
    client: deadpool_postgres::Object,
    pid: Pid,
) -> Result<Option<TaskLogs>, StoreError> {
    let (boot, seq) = key(pid);
    // One statement, so that the parts are read as of one moment.
    let kept = client
        .prepare_cached(
            "SELECT t.logs_dropped_bytes, t.log_head, t.log_tail,
                ARRAY(SELECT p.lines FROM log_parts p WHERE p.boot = t.boot AND p.seq = t.seq
                    ORDER BY p.id)
             FROM tasks t WHERE t.boot = $1 AND t.seq = $2",
        )
        .await
        .map_err(unavailable)?;
    let Some(row) = client
        .query_opt(&kept, &[&boot, &seq])
        .await
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    let dropped_bytes = column::<i64>(&row, 0)? as u64;
    let head = column::<Option<Vec<u8>>>(&row, 1)?;
    let tail = column::<Option<Vec<u8>>>(&row, 2)?;
    let parts = column::<Vec<Vec<u8>>>(&row, 3)?;
    let legacy = client
        .prepare_cached(
            "SELECT at, source, message FROM logs WHERE boot = $1 AND seq = $2 ORDER BY id",
        )
        .await
        .map_err(unavailable)?;
    let legacy = client
        .query(&legacy, &[&boot, &seq])
        .await
        .map_err(unavailable)?;
    let mut lines = Vec::new();
    if let Some(head) = head {
        lines_of(&head, &mut lines);
    }
    for row in &legacy {
        lines.push(LogLine {
            at: time(column(row, 0)?),
            source: super::columns::source_of(&column::<String>(row, 1)?),
            message: column(row, 2)?,
        });
    }
    for part in &parts {
        lines_of(part, &mut lines);
    }
    if let Some(tail) = tail {
        lines_of(&tail, &mut lines);
    }
    Ok(Some(TaskLogs {
        lines,
        dropped_bytes,
    }))
}

/// A page of records matching `query`, newest first.
async fn read_page(
    client: deadpool_postgres::Object,
    query: ListQuery,
) -> Result<Page, StoreError> {
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM tasks WHERE TRUE");
    let mut args: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
    let mut arg = |sql: &mut String,
                   clause: &str,
                   value: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(status) = query.status {
        arg(&mut sql, " AND status = ?", Box::new(status.as_str()));
    }
    if let Some(name) = query.name.clone() {
        arg(&mut sql, " AND name = ?", Box::new(name));
    }
    if let Some(worker) = query.worker.clone() {
        arg(&mut sql, " AND worker = ?", Box::new(worker));
    }
    if let Some(parent) = query.parent {
        let (boot, seq) = key(parent);
        arg(&mut sql, " AND parent_boot = ?", Box::new(boot));
        arg(&mut sql, " AND parent_seq = ?", Box::new(seq));
    }
    if let Some(schedule) = query.schedule.clone() {
        arg(&mut sql, " AND schedule = ?", Box::new(schedule));
    }
    if let Some(before) = query.before {
        let (boot, seq) = key(before.pid);
        arg(
            &mut sql,
            " AND (spawned_at, boot, seq) < (?",
            Box::new(before.at as i64),
        );
        arg(&mut sql, ", ?", Box::new(boot));
        arg(&mut sql, ", ?)", Box::new(seq));
    }
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    arg(
        &mut sql,
        " ORDER BY spawned_at DESC, boot DESC, seq DESC LIMIT ?",
        Box::new(limit.saturating_add(1)),
    );
    let statement = client.prepare_cached(&sql).await.map_err(unavailable)?;
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|arg| &**arg as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = client
        .query(&statement, &params)
        .await
        .map_err(unavailable)?;
    let mut tasks = rows
        .iter()
        .map(record_of)
        .collect::<Result<Vec<_>, StoreError>>()?;
    let more = tasks.len() > query.limit;
    tasks.truncate(query.limit);
    let next = if more {
        tasks.last().map(Cursor::of)
    } else {
        None
    };
    Ok(Page { tasks, next })
}

/// What an idempotency key was first used for.
async fn read_remembered(
    client: deadpool_postgres::Object,
    key: String,
) -> Result<Option<Remembered>, StoreError> {
    let statement = client
        .prepare_cached("SELECT body_sha256, boot, seq, created_at FROM idempotency WHERE key = $1")
        .await
        .map_err(unavailable)?;
    let row = client
        .query_opt(&statement, &[&key])
        .await
        .map_err(unavailable)?;
    row.map(|row| {
        Ok(Remembered {
            body_sha256: column(&row, 0)?,
            pid: pid_of(column(&row, 1)?, column(&row, 2)?),
            at: time(column(&row, 3)?),
        })
    })
    .transpose()
}

/// Runs `work` on the runtime behind `handle` and waits for it on this thread, which may be
/// inside another runtime (an HTTP handler) or none (a scheduler thread).
fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = sender.send(work.await);
    });
    let wait = || {
        receiver
            .recv()
            .map_err(|_| StoreError::Unavailable("the store has stopped".into()))
    };
    // A slow database then holds this request, not every request queued behind it on this
    // thread.
    super::blocking(wait)
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.writer.close();
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(runtime) = runtime {
            // The writer's last commit, then the runtime; never blocks an async caller for
            // long, and never panics in one.
            self.writer.wait_closed(Duration::from_secs(5));
            runtime.shutdown_background();
        }
    }
}

const RECORD_COLUMNS: &str = "boot, seq, spawned_at, name, worker, version, status, duration,
    step, steps, exit_code, outcome, error, started_at, ended_at, fuel, attempt, attempts::text,
    logs_dropped_bytes, parent_boot, parent_seq,
    (SELECT owner FROM runs r WHERE r.boot = tasks.boot AND r.seq = tasks.seq), result,
    run_at, priority, retry_of_boot, retry_of_seq, schedule, schedule_tick, concurrency_key";

/// How many columns [`RECORD_COLUMNS`] names: where the columns selected after them start.
const RECORD_COLUMN_COUNT: usize = 30;

fn record_of(row: &Row) -> Result<TaskRecord, StoreError> {
    let pid = pid_of(column(row, 0)?, column(row, 1)?);
    let worker: String = column(row, 4)?;
    let version: String = column(row, 5)?;
    let duration: i32 = column(row, 7)?;
    let mut record = TaskRecord::spawned(
        pid,
        column(row, 3)?,
        duration as u32,
        worker.into(),
        version.into(),
    );
    record.spawned_at = time(column(row, 2)?);
    record.status = status_of(&column::<String>(row, 6)?);
    record.step = column::<i32>(row, 8)? as u32;
    record.steps = column::<i32>(row, 9)? as u32;
    record.exit_code = column(row, 10)?;
    record.outcome = column::<Option<String>>(row, 11)?
        .as_deref()
        .and_then(Outcome::parse);
    record.error = column(row, 12)?;
    record.started_at = column::<Option<i64>>(row, 13)?.map(time);
    record.ended_at = column::<Option<i64>>(row, 14)?.map(time);
    record.fuel_consumed = column::<i64>(row, 15)? as u64;
    record.attempt = column::<i32>(row, 16)? as u32;
    record.attempts = attempts_of(&column::<String>(row, 17)?);
    record.logs_dropped_bytes = column::<i64>(row, 18)? as u64;
    record.parent = match (
        column::<Option<i32>>(row, 19)?,
        column::<Option<i64>>(row, 20)?,
    ) {
        (Some(boot), Some(seq)) => Some(pid_of(boot, seq)),
        _ => None,
    };
    record.node = column::<Option<i32>>(row, 21)?.map(|node| node as u32);
    // Checked as it came; text that is not JSON (written by hand) reads as no result.
    record.result = column::<Option<String>>(row, 22)?.and_then(|text| JsonText::parse(text).ok());
    record.run_at = column::<Option<i64>>(row, 23)?.map(time);
    record.priority = priority_of(column(row, 24)?);
    record.retry_of = match (
        column::<Option<i32>>(row, 25)?,
        column::<Option<i64>>(row, 26)?,
    ) {
        (Some(boot), Some(seq)) => Some(pid_of(boot, seq)),
        _ => None,
    };
    record.schedule = column(row, 27)?;
    record.schedule_tick = column::<Option<i64>>(row, 28)?.map(time);
    record.concurrency_key = column(row, 29)?;
    Ok(record)
}

/// A priority as a `SMALLINT` column holds it, within 0 to 9.
fn priority_of(column: i16) -> u8 {
    u8::try_from(column).map_or(0, |p| p.min(crate::model::MAX_PRIORITY))
}

fn spec_of(row: &Row, offset: usize) -> Result<TaskSpec, StoreError> {
    Ok(TaskSpec {
        module_sha256: column(row, offset)?,
        payload: column(row, offset + 1)?,
        deadline_secs: column::<i32>(row, offset + 2)? as u32,
        max_attempts: column::<i32>(row, offset + 3)? as u32,
        on_host_loss: OnHostLoss::parse(&column::<String>(row, offset + 4)?)
            .unwrap_or(OnHostLoss::Restart),
        ready_at: column::<Option<i64>>(row, offset + 5)?.map(time),
        priority: priority_of(column(row, offset + 6)?),
    })
}

/// The spec's columns, after [`RECORD_COLUMNS`].
const SPEC_COLUMNS: &str = "module_sha256, payload, deadline_secs, max_attempts, on_host_loss,
    ready_at, priority";

/// How many columns [`SPEC_COLUMNS`] names.
const SPEC_COLUMN_COUNT: usize = 7;

impl Store for PgStore {
    fn submit(&self, batch: Vec<Change>, done: Option<Done>) {
        self.writer.submit(batch, done);
    }

    fn healthy(&self) -> bool {
        self.writer.stats().healthy.load(Ordering::Acquire)
    }

    fn durable(&self) -> bool {
        true
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::of(self.writer.stats(), self.writer.backlog());
        stats.fenced_writes += self.shared.fenced.load(Ordering::Relaxed);
        stats
    }

    fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        self.query(move |client| read_record(client, pid))
    }

    fn logs(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
        self.query(move |client| read_logs(client, pid))
    }

    fn paused_workers(&self) -> Result<Vec<String>, StoreError> {
        self.query(move |client| async move {
            let statement = client
                .prepare_cached("SELECT name FROM paused_workers ORDER BY name")
                .await
                .map_err(unavailable)?;
            let rows = client.query(&statement, &[]).await.map_err(unavailable)?;
            rows.iter().map(|row| column(row, 0)).collect()
        })
    }

    fn checkpoint(&self, pid: Pid) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.query(move |client| async move {
            let statement = client
                .prepare_cached("SELECT meta, image FROM checkpoints WHERE boot = $1 AND seq = $2")
                .await
                .map_err(unavailable)?;
            let (boot, seq) = key(pid);
            let row = client
                .query_opt(&statement, &[&boot, &seq])
                .await
                .map_err(unavailable)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let meta: String = column(&row, 0)?;
            let image: Option<Vec<u8>> = column(&row, 1)?;
            Ok(checkpoint_of(pid, &meta, image))
        })
    }

    fn worker_limits(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.query(move |client| async move {
            let statement = client
                .prepare_cached("SELECT name, limits FROM worker_limits ORDER BY name")
                .await
                .map_err(unavailable)?;
            let rows = client.query(&statement, &[]).await.map_err(unavailable)?;
            rows.iter()
                .map(|row| Ok((column(row, 0)?, column(row, 1)?)))
                .collect()
        })
    }

    fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        self.query(move |client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT name, definition, paused, created_at, last_tick, last_boot, last_seq
                     FROM schedules ORDER BY name",
                )
                .await
                .map_err(unavailable)?;
            let rows = client.query(&statement, &[]).await.map_err(unavailable)?;
            rows.iter()
                .map(|row| {
                    Ok(StoredSchedule {
                        name: column(row, 0)?,
                        definition: column(row, 1)?,
                        paused: column(row, 2)?,
                        created_at: time(column(row, 3)?),
                        last_tick: column::<Option<i64>>(row, 4)?.map(time),
                        last_pid: match (
                            column::<Option<i32>>(row, 5)?,
                            column::<Option<i64>>(row, 6)?,
                        ) {
                            (Some(boot), Some(seq)) => Some(pid_of(boot, seq)),
                            _ => None,
                        },
                    })
                })
                .collect()
        })
    }

    fn submission(&self, pid: Pid) -> Result<Option<(TaskRecord, TaskSpec)>, StoreError> {
        self.query(move |client| async move {
            let (boot, seq) = key(pid);
            let sql = format!(
                "SELECT {RECORD_COLUMNS}, {SPEC_COLUMNS} FROM tasks WHERE boot = $1 AND seq = $2"
            );
            let statement = client.prepare_cached(&sql).await.map_err(unavailable)?;
            let row = client
                .query_opt(&statement, &[&boot, &seq])
                .await
                .map_err(unavailable)?;
            row.as_ref()
                .map(|row| Ok((record_of(row)?, spec_of(row, RECORD_COLUMN_COUNT)?)))
                .transpose()
        })
    }

    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let query = query.clone();
        self.query(move |client| read_page(client, query))
    }

    fn get_async(&self, pid: Pid) -> Reading<'_, Option<TaskRecord>> {
        self.query_async(move |client| read_record(client, pid))
    }

    fn logs_async(&self, pid: Pid) -> Reading<'_, Option<TaskLogs>> {
        self.query_async(move |client| read_logs(client, pid))
    }

    fn list_async(&self, query: &ListQuery) -> Reading<'_, Page> {
        let query = query.clone();
        self.query_async(move |client| read_page(client, query))
    }

    fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
        let key = key.to_owned();
        self.query(move |client| read_remembered(client, key))
    }

    fn remembered_async(&self, key: &str) -> Reading<'_, Option<Remembered>> {
        let key = key.to_owned();
        self.query_async(move |client| read_remembered(client, key))
    }

    fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sha256 = sha256.to_owned();
        self.query(move |client| async move {
            let statement = client
                .prepare_cached("SELECT bytes FROM modules WHERE sha256 = $1")
                .await
                .map_err(unavailable)?;
            let row = client
                .query_opt(&statement, &[&sha256])
                .await
                .map_err(unavailable)?;
            row.map(|row| column(&row, 0)).transpose()
        })
    }

    fn worker(&self, name: &str) -> Result<Option<WorkerVersions>, StoreError> {
        let name = name.to_owned();
        self.query(move |client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT current, current_source, current_installed_at, previous,
                        previous_source, previous_installed_at, file_sha256
                     FROM workers WHERE name = $1",
                )
                .await
                .map_err(unavailable)?;
            let Some(row) = client
                .query_opt(&statement, &[&name])
                .await
                .map_err(unavailable)?
            else {
                return Ok(None);
            };
            let previous = match column::<Option<String>>(&row, 3)? {
                Some(sha256) => Some(StoredVersion {
                    sha256,
                    source: column::<Option<String>>(&row, 4)?.unwrap_or_default(),
                    installed_at: time(column::<Option<i64>>(&row, 5)?.unwrap_or(0)),
                }),
                None => None,
            };
            Ok(Some(WorkerVersions {
                current: StoredVersion {
                    sha256: column(&row, 0)?,
                    source: column(&row, 1)?,
                    installed_at: time(column(&row, 2)?),
                },
                previous,
                file_sha256: column(&row, 6)?,
            }))
        })
    }
}
