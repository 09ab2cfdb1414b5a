//! The shared store's side of the writer ([`crate::store::writer`]): a thread of its own with a
//! connection of its own, which commits each chunk, fences what an earlier incarnation of this
//! host submitted, reads PostgreSQL's error codes as causes, and settles a commit whose answer
//! was lost by asking the database what became of its transaction.
//!
//! The thread drives its connection itself, on a single-threaded runtime of its own: a commit's
//! requests, answers and wake-ups all happen on the one thread, with no hand-off between
//! threads at each answer (which, measured, cost a host about a quarter more CPU per task than
//! the writer as a task of the store's shared runtime).
//!
//! - **Causes.** A value the database refuses (class 22, data exception: a NUL in `text`, a
//!   string too long), a constraint (class 23), a program limit (class 54) and an error raised
//!   by a trigger (class P0) are the content's fault. A deadlock or a serialisation failure is
//!   a conflict. Everything else is the environment's: a connection lost or refused (class
//!   08), a full disk or no memory (class 53), an administrator's shutdown (class 57), an I/O
//!   error (class 58), a read-only database after a failover (25006), a timeout.
//! - **Lost answers.** Each commit learns its transaction's id before it sends `COMMIT`. When a
//!   commit fails after that, a new connection ends the old one's session
//!   (`pg_terminate_backend`) and asks `pg_xact_status`: a commit that was written is not
//!   written again.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::target::Target;

use super::super::backlog::{Backlog, Chunk};
use super::super::writer::{Backend, Failure, Fault, Outcome, Writer as SharedWriter, WriterStats};
use super::super::{Change, Done, StoreError};
use super::plan::{Flight, Statements, commit};
use super::{Shared, key};

/// How long a commit may take before its connection counts as lost: a database that stops
/// answering (a network that drops packets rather than refusing them) must not hold the
/// writer, and every acceptance waiting on it, until TCP gives up.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long finding out what became of a commit whose answer was lost may take at once.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the writer's connection says it is, in `pg_stat_activity`.
const APPLICATION_NAME: &str = "http-spawn writer";

/// The handle the store keeps: where batches go, and the writer's thread.
pub(super) struct Writer {
    backlog: Arc<Backlog>,
    stats: Arc<WriterStats>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(
        mut target: Target,
        shared: Arc<Shared>,
        backlog_bytes: usize,
        max_messages: usize,
    ) -> std::io::Result<Self> {
        target.config.application_name(APPLICATION_NAME);
        let backlog = Arc::new(Backlog::new(backlog_bytes));
        let stats = Arc::new(WriterStats::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let backend = PgBackend {
            runtime,
            target,
            shared: Arc::clone(&shared),
            connection: None,
            max_messages: i64::try_from(max_messages).unwrap_or(i64::MAX),
            flight: None,
        };
        let thread = {
            let (backlog, stats) = (Arc::clone(&backlog), Arc::clone(&stats));
            std::thread::Builder::new()
                .name("store-pg-writer".into())
                .spawn(move || SharedWriter::new(&backlog, backend, &stats, "postgres").run())?
        };
        Ok(Self {
            backlog,
            stats,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(super) fn submit(&self, batch: Vec<Change>, done: Option<Done>) {
        let node = self.shared.node.load(Ordering::Acquire);
        self.backlog.submit(batch, done, node);
    }

    pub(super) fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    pub(super) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Asks the writer to stop once what is pending is written (or found unwritable).
    pub(super) fn close(&self) {
        self.backlog.close();
    }

    /// Waits at most `timeout` for the writer to stop.
    pub(super) fn wait_closed(&self, timeout: Duration) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(thread) = thread else {
            return;
        };
        // The last handle may go with a callback the writer runs: it cannot wait for itself.
        if thread.thread().id() == std::thread::current().id() {
            return;
        }
        let deadline = std::time::Instant::now() + timeout;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

/// The writer's connection, with its statements prepared on it.
struct Connection {
    client: Client,
    statements: Statements,
    /// Its session's process id on the server: what to end should a commit's answer be lost.
    backend_pid: i32,
}

/// A commit whose answer may have been lost, and the session it was sent on.
struct Unsettled {
    flight: Flight,
    backend_pid: i32,
}

struct PgBackend {
    /// The writer thread's own runtime, which drives its connection while a commit runs.
    runtime: tokio::runtime::Runtime,
    target: Target,
    shared: Arc<Shared>,
    connection: Option<Connection>,
    max_messages: i64,
    /// The last commit that failed after it was sent, until it is settled.
    flight: Option<Unsettled>,
}

async fn connect(target: &Target) -> Result<Connection, tokio_postgres::Error> {
    let (client, connection) = target.config.connect(target.tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "the store writer's connection ended");
        }
    });
    // The writer touches a few rows of large tables by their primary key, through prepared
    // statements whose generic plans may be made while the tables are still empty: hash joins
    // and bitmap scans chosen then would scan whole tables once they have grown, and so would
    // a sequential scan, which costs next to nothing while a table is empty. Only nested loops
    // over index lookups (or `ctid`s found by them) are right for it.
    client
        .batch_execute(
            "SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_bitmapscan = off;
             SET enable_seqscan = off",
        )
        .await?;
    let backend_pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    let statements = Statements::prepare(&client).await?;
    Ok(Connection {
        client,
        statements,
        backend_pid,
    })
}

/// What a database error tells of its cause.
fn fault(error: &tokio_postgres::Error) -> Fault {
    let Some(code) = error.code() else {
        return Fault::Environment;
    };
    if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE {
        return Fault::Conflict;
    }
    match code.code().get(..2) {
        Some("22" | "23" | "54" | "P0") => Fault::Content,
        _ => Fault::Environment,
    }
}

/// A failure, for people: the database's code and message, never the values of the change
/// (PostgreSQL's detail may quote the row).
fn failure(error: &tokio_postgres::Error, ambiguous: bool) -> Failure {
    let message = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    };
    Failure {
        fault: fault(error),
        message,
        ambiguous,
    }
}

impl PgBackend {
    /// Runs `work` on this thread's runtime.
    fn block_on<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }
}

impl Backend for PgBackend {
    /// What of `chunk` may be written with this host's id now. A host that lost its lease
    /// (id 0) accepts nothing until it has joined again: a task accepted then would belong to
    /// no host. A batch submitted by an earlier incarnation keeps only what is no task's life
    /// (a forward, a module, a worker's versions, a prune): its tasks' events are another
    /// host's to write now, and its acceptances are refused.
    fn prepare(&mut self, chunk: &mut Chunk) {
        let node = self.shared.node.load(Ordering::Acquire);
        let mut kept = Vec::with_capacity(chunk.pendings.len());
        for mut pending in std::mem::take(&mut chunk.pendings) {
            let accepts = pending
                .batch
                .iter()
                .any(|change| matches!(change, Change::Accepted { .. }));
            if accepts && (node == 0 || pending.node != node) {
                pending.finish(Err(StoreError::Unavailable(
                    "this host has lost its lease in the cluster; retry on another".into(),
                )));
                continue;
            }
            if pending.node != node {
                let before = pending.batch.len();
                pending
                    .batch
                    .retain(|change| !matches!(change, Change::Event(..)));
                self.shared
                    .fenced
                    .fetch_add((before - pending.batch.len()) as u64, Ordering::Relaxed);
                pending.node = node;
            }
            kept.push(pending);
        }
        chunk.pendings = kept;
        if node == 0 {
            chunk.progress.clear();
        }
    }

    fn commit(&mut self, chunk: &Chunk) -> Result<Outcome, Failure> {
        let node = self.shared.node.load(Ordering::Acquire);
        let (target, max_messages) = (self.target.clone(), self.max_messages);
        let mut connection = self.connection.take();
        let mut flight = Flight::default();
        let result = self.block_on(async {
            let open = match connection.as_mut() {
                Some(open) if !open.client.is_closed() => open,
                _ => {
                    let opened = tokio::time::timeout(COMMIT_TIMEOUT, connect(&target))
                        .await
                        .map_err(|_| Failure::environment("connecting to the database timed out"))?
                        .map_err(|error| failure(&error, false))?;
                    connection.insert(opened)
                }
            };
            let Connection {
                client, statements, ..
            } = open;
            let write = commit(client, statements, node, max_messages, chunk, &mut flight);
            match tokio::time::timeout(COMMIT_TIMEOUT, write).await {
                Ok(result) => result.map_err(|error| failure(&error, flight.commit_sent)),
                Err(_) => Err(Failure {
                    fault: Fault::Environment,
                    message: "the database did not answer a commit in time".into(),
                    ambiguous: flight.commit_sent,
                }),
            }
        });
        match &result {
            Err(error) if error.fault == Fault::Environment => {
                // The connection may be mid-transaction, or gone: never reused.
                if error.ambiguous
                    && let (Some(xid), Some(open)) = (flight.xid.take(), connection.as_ref())
                {
                    self.flight = Some(Unsettled {
                        flight: Flight {
                            xid: Some(xid),
                            commit_sent: true,
                        },
                        backend_pid: open.backend_pid,
                    });
                }
            }
            _ => self.connection = connection,
        }
        result
    }

    fn landed(&mut self, chunk: &Chunk) -> Result<Option<Outcome>, Failure> {
        let Some(unsettled) = self.flight.take() else {
            // Nothing was sent that could have been written.
            return Ok(None);
        };
        let Some(xid) = unsettled.flight.xid.clone() else {
            return Ok(None);
        };
        let keyed: Vec<(usize, (i32, i64))> = chunk
            .changes()
            .filter_map(|(index, change)| match change {
                Change::Accepted {
                    record,
                    key: Some(_),
                    ..
                } => Some((index, key(record.pid))),
                _ => None,
            })
            .collect();
        let target = self.target.clone();
        let backend_pid = unsettled.backend_pid;
        let settled = self.block_on(async {
            let work = settle(&target, backend_pid, &xid, &keyed);
            tokio::time::timeout(SETTLE_TIMEOUT, work).await
        });
        match settled {
            Ok(Ok(Some(written))) => {
                tracing::warn!(
                    xid,
                    "a commit whose answer was lost had been written; it is not written again"
                );
                let refused = keyed
                    .into_iter()
                    .filter(|(_, key)| !written.contains(key))
                    .map(|(index, _)| (index, StoreError::KeyTaken))
                    .collect();
                Ok(Some(Outcome {
                    refused,
                    ..Outcome::default()
                }))
            }
            Ok(Ok(None)) => Ok(None),
            Ok(Err(error)) => {
                self.flight = Some(unsettled);
                Err(failure(&error, true))
            }
            Err(_) => {
                self.flight = Some(unsettled);
                Err(Failure {
                    fault: Fault::Environment,
                    message: "could not find out in time whether a commit was written".into(),
                    ambiguous: true,
                })
            }
        }
    }

    fn committed(&mut self, outcome: &Outcome) {
        if outcome.fenced_starts.is_empty() {
            return;
        }
        tracing::warn!(
            tasks = outcome.fenced_starts.len(),
            "tasks started here that another host holds now: they are stopped here"
        );
        if let Some(stop) = self.shared.on_fenced.get() {
            for pid in &outcome.fenced_starts {
                stop(*pid);
            }
        }
    }
}

/// Whether transaction `xid`, sent on session `backend_pid`, was written: that session is
/// ended first, so that it cannot be written later. When it was, which of the keyed
/// acceptances (by key) are in the store: the others found their key taken.
async fn settle(
    target: &Target,
    backend_pid: i32,
    xid: &str,
    keyed: &[(usize, (i32, i64))],
) -> Result<Option<HashSet<(i32, i64)>>, tokio_postgres::Error> {
    let Connection { client, .. } = connect(target).await?;
    client
        .execute("SELECT pg_terminate_backend($1)", &[&backend_pid])
        .await?;
    let status = loop {
        let row = client
            .query_one("SELECT pg_xact_status($1::text::xid8)::text", &[&xid])
            .await?;
        let status: Option<String> = row.try_get(0)?;
        if status.as_deref() != Some("in progress") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if status.as_deref() != Some("committed") {
        return Ok(None);
    }
    let (boots, seqs): (Vec<i32>, Vec<i64>) = keyed.iter().map(|(_, key)| *key).unzip();
    let rows = client
        .query(
            "SELECT boot, seq FROM tasks
             WHERE (boot, seq) IN (SELECT * FROM unnest($1::integer[], $2::bigint[]))",
            &[&boots, &seqs],
        )
        .await?;
    let mut written = HashSet::with_capacity(rows.len());
    for row in rows {
        written.insert((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(Some(written))
}
