//! Section 8 of `make bench`: hosts sharing one PostgreSQL database as a cluster (issue #14),
//! beside one host on the SQLite store, in the same run.
//!
//! (a) One, two and three release hosts on one PostgreSQL database (a fresh one each time,
//!     `--store postgres://…`), and one host on SQLite with `--store-sync full`, under the same
//!     load: the bench's generator, its 64 keep-alive connections split evenly over the hosts,
//!     closed loop, the default worker with duration 1 (one sleeping step). Configurations
//!     alternate within each round; every figure is the median over the rounds.
//! (b) What each completed task cost the database, read from PostgreSQL's own statistics, and
//!     from PostgreSQL's CPU the tasks/s one PostgreSQL core would carry. On 2 cores the hosts
//!     compete with each other, with the generator and with the database, so accepted/s does
//!     not carry to bigger machines; the database's cost per task does.
//! (c) A kill across hosts: a long task accepted and running on host A, `DELETE` on host B,
//!     timed until B answers `200` (B polls the shared store for the end; A takes the kill at
//!     its next `--cluster-poll`). Idle, on two hosts, and under the load of (a). Beside it a
//!     message round trip across hosts: the `actor` example's `ping` on B against its `echo`
//!     on A, timed inside the pinging guest.
//!
//! The PostgreSQL server is `DATABASE_URL`'s when that is set. Otherwise the section starts its
//! own with `scripts/postgres.sh` under target/postgres-bench (apart from the test suite's),
//! durable (`POSTGRES_DURABLE=1`: fsync and synchronous commit on, as SQLite's `full` is) and
//! with pg_stat_statements preloaded for statement counts, and stops it at the end if it
//! started it.
//!
//! Alone: `./target/release/http-spawn-bench --only 8` (about 2 minutes on 2 cores),
//! `--quick` for one short round. It needs `make build-guest` and the release host built.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_spawn_bench::loadgen::{self, Durations, Load, Outcome};
use http_spawn_bench::procfs;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

use super::actors::{actor_lines, start_actor, wait_ended};
use super::{Report, Server, get, guest, health, median, metric, post, repo_root, request};

/// The generator's connections in all, as in sections 3 and 6, split over the hosts.
const CONNECTIONS: usize = 64;
/// Each task sleeps one step of this long: a start, a step and an end, each written apart.
const TASK_SECS: u32 = 1;
/// Enough places that no host of (a) queues: the shared queue is not what is measured.
const CAPACITY: &str = "20000";
/// How long the bench waits for the tasks of a run to end before it reports what it has.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long a task of the kill probe would run if the kill did not land.
const PROBE_TASK_SECS: u32 = 600;
/// The host's own bound on how long `DELETE` waits for an end before it answers `202`.
const KILL_WAIT_MS: f64 = 2_000.0;
/// Round trips of the cross-host ping before the measured ones.
const PING_WARM_UP: u32 = 5;
/// Statements shown in (b)'s account of PostgreSQL's execution time.
const TOP_STATEMENTS: i64 = 5;
/// Characters of a statement's text shown there.
const STATEMENT_CHARS: usize = 90;

pub(super) fn section(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report
        .line("\n## 8. Cluster: hosts on one PostgreSQL, beside one host on SQLite (issue #14)\n");
    let (rounds, secs, idle_kills, pings) = if quick {
        (1, 3, 30, 20)
    } else {
        (3, 4, 100, 50)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("http-spawn-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let postgres = Postgres::start(&runtime)?;
    report.line(&format!(
        "PostgreSQL {}: {}. {}\n",
        postgres.version,
        if postgres.own {
            "the bench's own server (scripts/postgres.sh, target/postgres-bench), fsync and \
             synchronous_commit on"
        } else {
            "DATABASE_URL's server; its CPU and WAL include whatever else it serves"
        },
        if postgres.statements {
            "Statements counted by pg_stat_statements."
        } else {
            "pg_stat_statements is not loaded: statements are not counted, and round trips are \
             estimated from the hosts' writer commits."
        },
    ));
    let mut bench = Bench {
        runtime: &runtime,
        postgres: &postgres,
        dir: &dir,
        databases: 0,
    };

    let setups = [
        Setup::Sqlite,
        Setup::Postgres(1),
        Setup::Postgres(2),
        Setup::Postgres(3),
    ];
    let mut measured: Vec<Vec<Measured>> = setups.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (setup, runs) in setups.iter().zip(&mut measured) {
            runs.push(bench.measure(*setup, secs)?);
        }
    }
    let figures: Vec<Figures> = measured.iter().map(|runs| Figures::of(runs)).collect();
    throughput_table(report, rounds, secs, &setups, &figures);
    let per_core = database_table(report, &postgres, &setups, &figures, &measured);

    let idle = bench.idle(idle_kills, pings)?;
    let loaded: Vec<Kill> = measured
        .iter()
        .flatten()
        .flat_map(|run| run.kills.iter().copied())
        .collect();
    latency_table(report, &idle, &loaded);

    drop(bench);
    let _ = std::fs::remove_dir_all(&dir);
    let runs: Vec<Value> = setups
        .iter()
        .zip(&figures)
        .zip(&measured)
        .map(|((setup, figures), runs)| {
            json!({
                "store": setup.store(), "hosts": setup.hosts(),
                "median": figures.json(),
                "rounds": runs.iter().map(Measured::json).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "rounds": rounds, "secs": secs, "connections": CONNECTIONS,
        "task_duration_secs": TASK_SECS,
        "postgres": {
            "version": postgres.version, "own_server": postgres.own,
            "pg_stat_statements": postgres.statements,
        },
        "runs": runs,
        "tasks_per_sec_per_postgres_core": per_core,
        "kill": {"idle": kill_json(&idle.kills), "under_load": kill_json(&loaded)},
        "message_round_trip": idle.ping,
    }))
}

// ---------------------------------------------------------------------------------------------
// The PostgreSQL server

/// The server the section runs on, and a connection to its `postgres` database for creating
/// databases and reading statistics.
struct Postgres {
    url: String,
    admin: tokio_postgres::Client,
    version: String,
    /// The bench started the server or runs it apart from everything else (not `DATABASE_URL`'s):
    /// server-wide figures (its CPU, its WAL) are the bench's alone.
    own: bool,
    /// Whether this section started it, and so stops it.
    started: bool,
    /// Whether pg_stat_statements answers.
    statements: bool,
    /// The postmaster, when it runs on this machine: its CPU and its children's is the server's.
    postmaster: Option<u32>,
}

/// Where the bench's own server lives, and how it runs: without TLS, so that its figures stay
/// comparable with earlier runs and with builds that had none.
fn bench_server_env() -> [(&'static str, String); 4] {
    [
        (
            "POSTGRES_DIR",
            repo_root()
                .join("target/postgres-bench")
                .display()
                .to_string(),
        ),
        ("POSTGRES_DURABLE", "1".into()),
        ("POSTGRES_TLS", "0".into()),
        (
            "POSTGRES_OPTIONS",
            "-c shared_preload_libraries=pg_stat_statements".into(),
        ),
    ]
}

impl Postgres {
    fn start(runtime: &Runtime) -> anyhow::Result<Self> {
        let script = repo_root().join("scripts/postgres.sh");
        let (url, own, started) = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => (url, false, false),
            _ => {
                let running = Command::new(&script)
                    .arg("url")
                    .envs(bench_server_env())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success());
                let output = Command::new(&script)
                    .arg("start")
                    .envs(bench_server_env())
                    .stderr(Stdio::inherit())
                    .output()
                    .context("running scripts/postgres.sh start")?;
                if !output.status.success() {
                    bail!("scripts/postgres.sh could not start PostgreSQL");
                }
                (
                    String::from_utf8(output.stdout)?.trim().to_owned(),
                    true,
                    !running,
                )
            }
        };
        let admin = runtime.block_on(connect(&url))?;
        let version = runtime
            .block_on(admin.query_one("SHOW server_version", &[]))?
            .try_get::<_, String>(0)?;
        let statements = runtime.block_on(async {
            admin
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .is_ok()
                && admin
                    .query_one("SELECT count(*) FROM pg_stat_statements", &[])
                    .await
                    .is_ok()
        });
        let postmaster = runtime
            .block_on(admin.query_one("SHOW data_directory", &[]))
            .ok()
            .and_then(|row| row.try_get::<_, String>(0).ok())
            .and_then(|data| std::fs::read_to_string(Path::new(&data).join("postmaster.pid")).ok())
            .and_then(|pid_file| pid_file.lines().next()?.trim().parse().ok())
            .filter(|&pid: &u32| procfs::cpu_secs(pid).is_some());
        Ok(Self {
            url,
            admin,
            version,
            own,
            started,
            statements,
            postmaster,
        })
    }

    /// A new, empty database: its name and URL. `hs_` names are the ones `scripts/postgres.sh`
    /// drops when it next starts a server, should a run stop before dropping its own.
    fn create(&self, runtime: &Runtime, n: u32) -> anyhow::Result<(String, String)> {
        let name = format!("hs_bench_{}_{n}", std::process::id());
        runtime.block_on(
            self.admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\"")),
        )?;
        let url = with_database(&self.url, &name);
        Ok((name, url))
    }

    fn drop_database(&self, runtime: &Runtime, name: &str) {
        let dropped = runtime.block_on(
            self.admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")),
        );
        if let Err(error) = dropped {
            eprintln!("could not drop database {name}: {error}");
        }
    }

    /// Waits (bounded) until no session is connected to `database`. A backend writes its last
    /// statistics when it exits, so this comes before the figures of a run are read.
    fn wait_disconnected(&self, runtime: &Runtime, database: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let sessions = runtime
                .block_on(self.admin.query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&database],
                ))
                .ok()
                .and_then(|row| row.try_get::<_, i64>(0).ok());
            if sessions == Some(0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's CPU so far: the postmaster's, its live children's (backends, WAL writer,
    /// checkpointer, autovacuum) and its ended children's; NaN when it runs elsewhere.
    fn cpu_secs(&self) -> f64 {
        self.postmaster
            .and_then(procfs::tree_cpu_secs)
            .unwrap_or(f64::NAN)
    }

    /// What PostgreSQL has counted for `database` so far.
    fn counters(&self, runtime: &Runtime, database: &str) -> anyhow::Result<DbCounters> {
        runtime.block_on(async {
            let row = self
                .admin
                .query_one(
                    "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted
                     FROM pg_stat_database WHERE datname = $1",
                    &[&database],
                )
                .await?;
            let wal = self
                .admin
                .query_one("SELECT wal_bytes::bigint, wal_sync FROM pg_stat_wal", &[])
                .await?;
            let statements = if self.statements {
                let row = self
                    .admin
                    .query_one(
                        // PostgreSQL 15 counts a block's COMMIT (or ROLLBACK), not its BEGIN.
                        "SELECT coalesce(sum(calls) FILTER (WHERE NOT ending), 0)::bigint,
                                coalesce(sum(calls) FILTER (WHERE ending), 0)::bigint
                         FROM (SELECT calls,
                                      upper(trim(query)) IN ('BEGIN', 'COMMIT', 'ROLLBACK')
                                          AS ending
                               FROM pg_stat_statements
                               WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1))
                              AS statements",
                        &[&database],
                    )
                    .await?;
                Some((row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?))
            } else {
                None
            };
            let count = |value: i64| value as f64;
            Ok(DbCounters {
                transactions: count(row.try_get(0)?),
                inserted: count(row.try_get(1)?),
                updated: count(row.try_get(2)?),
                deleted: count(row.try_get(3)?),
                wal_bytes: count(wal.try_get(0)?),
                wal_syncs: count(wal.try_get(1)?),
                statements: statements.map(|(all, _)| count(all)),
                blocks: statements.map(|(_, blocks)| count(blocks)),
            })
        })
    }

    /// The statements that took the most execution time in `database` (pg_stat_statements):
    /// the first `n`, and the execution time of all, in ms.
    fn top_statements(
        &self,
        runtime: &Runtime,
        database: &str,
        n: i64,
    ) -> anyhow::Result<(Vec<Statement>, f64)> {
        runtime.block_on(async {
            let rows = self
                .admin
                .query(
                    "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time,
                            sum(total_exec_time) OVER ()
                     FROM pg_stat_statements
                     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)
                     ORDER BY total_exec_time DESC LIMIT $2",
                    &[&database, &n],
                )
                .await?;
            let all_ms = rows
                .first()
                .map_or(Ok(0.0), |row| row.try_get::<_, f64>(3))?;
            let statements = rows
                .iter()
                .map(|row| {
                    Ok(Statement {
                        text: row.try_get(0)?,
                        calls: row.try_get::<_, i64>(1)? as f64,
                        exec_ms: row.try_get(2)?,
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()?;
            Ok((statements, all_ms))
        })
    }
}

/// One statement's totals in a database, from pg_stat_statements.
#[derive(Debug, Clone)]
struct Statement {
    text: String,
    calls: f64,
    exec_ms: f64,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.started {
            let _ = Command::new(repo_root().join("scripts/postgres.sh"))
                .arg("stop")
                .envs(bench_server_env())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status();
        }
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
    // Its end is not news: the server stops at the end of the section, and a query on a
    // closed connection fails with its own error.
    tokio::spawn(connection);
    Ok(client)
}

/// `url` naming `database` instead of its own; query parameters are kept.
fn with_database(url: &str, database: &str) -> String {
    let (url, query) = url
        .split_once('?')
        .map_or((url, None), |(u, q)| (u, Some(q)));
    let authority = url.find("://").map_or(0, |at| at + 3);
    let base = url[authority..]
        .find('/')
        .map_or(url, |slash| &url[..authority + slash]);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// PostgreSQL's counters for one database (and its server's WAL), at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct DbCounters {
    /// Transactions ended, committed or rolled back: a statement sent alone is one, as is a
    /// `BEGIN` … `COMMIT`.
    transactions: f64,
    inserted: f64,
    updated: f64,
    deleted: f64,
    /// Server-wide.
    wal_bytes: f64,
    /// Server-wide: WAL flushes to disk.
    wal_syncs: f64,
    /// Statements executed, `BEGIN`, `COMMIT` and `ROLLBACK` left out (pg_stat_statements).
    statements: Option<f64>,
    /// Transaction blocks (`BEGIN` … `COMMIT` or `ROLLBACK`), by their ends.
    blocks: Option<f64>,
}

impl DbCounters {
    /// Less `queries` statements the bench sent alone (each its own transaction).
    fn less_queries(mut self, queries: u64) -> Self {
        let queries = queries as f64;
        self.transactions -= queries;
        self.statements = self.statements.map(|statements| statements - queries);
        self
    }

    fn since(&self, before: &Self) -> Self {
        let minus = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        Self {
            transactions: self.transactions - before.transactions,
            inserted: self.inserted - before.inserted,
            updated: self.updated - before.updated,
            deleted: self.deleted - before.deleted,
            wal_bytes: self.wal_bytes - before.wal_bytes,
            wal_syncs: self.wal_syncs - before.wal_syncs,
            statements: minus(self.statements, before.statements),
            blocks: minus(self.blocks, before.blocks),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (a) and (b): the load

/// What one run puts under load.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Setup {
    /// One host, `--store sqlite:… --store-sync full`.
    Sqlite,
    /// This many hosts on one PostgreSQL database.
    Postgres(usize),
}

impl Setup {
    fn store(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite, full",
            Self::Postgres(_) => "postgres",
        }
    }

    fn hosts(self) -> usize {
        match self {
            Self::Sqlite => 1,
            Self::Postgres(hosts) => hosts,
        }
    }
}

/// One run's figures.
#[derive(Debug)]
struct Measured {
    outcome: Outcome,
    /// Tasks of the generator's that ended, and that exited 0.
    completed: u64,
    exited_ok: u64,
    /// From the load's start until every task accepted had ended and (PostgreSQL) its end
    /// was written; `None` if some had not within [`PATIENCE`].
    all_ended_secs: Option<f64>,
    host_cpu_secs: f64,
    postgres_cpu_secs: f64,
    /// The hosts' store writers, summed: commits, batches, fenced writes.
    commits: f64,
    batches: f64,
    fenced: f64,
    /// Log lines the writers did not write because they had fallen behind.
    shed: f64,
    database: Option<DbCounters>,
    /// The statements that took the most of PostgreSQL's execution time, and all of it (ms),
    /// the hosts' start included.
    top: Option<(Vec<Statement>, f64)>,
    kills: Vec<Kill>,
}

impl Measured {
    fn per_task(&self, value: f64) -> f64 {
        value / self.completed.max(1) as f64
    }

    /// Tasks ended per second, the one sleeping second of every task left out: from the
    /// load's start until the last end was written, less [`TASK_SECS`]. Equal to accepted/s when the
    /// hosts keep up; lower when accepted tasks wait to start or to end.
    fn completed_per_sec(&self) -> f64 {
        self.all_ended_secs.map_or(f64::NAN, |secs| {
            self.completed as f64 / (secs - f64::from(TASK_SECS)).max(f64::EPSILON)
        })
    }

    fn json(&self) -> Value {
        let database = self.database.map(|db| {
            json!({
                "transactions": db.transactions, "statements": db.statements,
                "blocks": db.blocks, "rows_inserted": db.inserted,
                "rows_updated": db.updated, "rows_deleted": db.deleted,
                "wal_bytes": db.wal_bytes, "wal_syncs": db.wal_syncs,
            })
        });
        json!({
            "accepted": self.outcome.accepted, "rejected": self.outcome.rejected,
            "errors": self.outcome.errors, "elapsed_secs": self.outcome.elapsed.as_secs_f64(),
            "accepted_per_sec": self.outcome.accepted_per_sec(),
            "p50_ms": self.outcome.percentile_ms(0.5), "p99_ms": self.outcome.percentile_ms(0.99),
            "completed": self.completed, "exited_ok": self.exited_ok,
            "all_ended_secs": self.all_ended_secs,
            "completed_per_sec": self.completed_per_sec(),
            "host_cpu_secs": self.host_cpu_secs, "postgres_cpu_secs": self.postgres_cpu_secs,
            "writer_commits": self.commits, "writer_batches": self.batches,
            "fenced_writes": self.fenced, "log_lines_shed": self.shed, "database": database,
            "top_statements": self.top.as_ref().map(|(statements, all_ms)| json!({
                "all_exec_ms": all_ms,
                "statements": statements.iter().map(|statement| json!({
                    "query": statement.text, "calls": statement.calls,
                    "exec_ms": statement.exec_ms,
                })).collect::<Vec<_>>(),
            })),
            "kills": self.kills.len(),
        })
    }
}

/// A database made for one run.
struct Database {
    name: String,
    url: String,
}

/// What the runs share.
struct Bench<'a> {
    runtime: &'a Runtime,
    postgres: &'a Postgres,
    dir: &'a Path,
    /// Databases created so far, for their names.
    databases: u32,
}

impl Bench<'_> {
    /// Starts `hosts` hosts on a fresh database, each with `extra` arguments: the database's
    /// name and the hosts.
    fn cluster(&mut self, hosts: usize, extra: &[&str]) -> anyhow::Result<(Database, Vec<Server>)> {
        self.databases += 1;
        let (name, url) = self.postgres.create(self.runtime, self.databases)?;
        let servers = (1..=hosts)
            .map(|i| {
                let node = format!("bench-{i}");
                let mut args = vec!["--store", &url, "--node-name", &node];
                args.extend(extra);
                Server::start("host", &args)
            })
            .collect::<anyhow::Result<Vec<_>>>();
        match servers {
            Ok(servers) => Ok((Database { name, url }, servers)),
            Err(error) => {
                self.postgres.drop_database(self.runtime, &name);
                Err(error)
            }
        }
    }

    /// Waits until every task accepted on `database` has its end written there: its `runs`
    /// table, where a task has a row from its acceptance until its end is committed, is empty.
    /// When (from `begun`; `None` if not within [`PATIENCE`]), and how many queries that took.
    fn wait_written(
        &self,
        database: &Database,
        begun: Instant,
    ) -> anyhow::Result<(Option<f64>, u64)> {
        let client = self.runtime.block_on(connect(&database.url))?;
        let deadline = Instant::now() + PATIENCE;
        let mut queries = 0;
        loop {
            queries += 1;
            let unfinished: i64 = self
                .runtime
                .block_on(client.query_one("SELECT count(*) FROM runs", &[]))?
                .try_get(0)?;
            if unfinished == 0 {
                return Ok((Some(begun.elapsed().as_secs_f64()), queries));
            }
            if Instant::now() > deadline {
                return Ok((None, queries));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn measure(&mut self, setup: Setup, secs: u64) -> anyhow::Result<Measured> {
        let (database, hosts) = match setup {
            Setup::Sqlite => {
                let path = self.dir.join("tasks.db");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                let store = format!("sqlite:{}", path.display());
                let args = [
                    "--store",
                    &store,
                    "--store-sync",
                    "full",
                    "--capacity",
                    CAPACITY,
                ];
                (None, vec![Server::start("host", &args)?])
            }
            Setup::Postgres(hosts) => {
                let (database, servers) = self.cluster(hosts, &["--capacity", CAPACITY])?;
                (Some(database), servers)
            }
        };
        let measured = self.load(hosts, database.as_ref(), secs);
        if let Some(database) = &database {
            self.postgres.drop_database(self.runtime, &database.name);
        }
        measured
    }

    /// The load of (a) on `hosts`, with kills across hosts alongside when there are two or
    /// more; the hosts are stopped before PostgreSQL's counters are read.
    fn load(
        &self,
        hosts: Vec<Server>,
        database: Option<&Database>,
        secs: u64,
    ) -> anyhow::Result<Measured> {
        let postgres = self.postgres;
        let counters = |database: Option<&Database>| -> anyhow::Result<Option<DbCounters>> {
            database
                .map(|database| postgres.counters(self.runtime, &database.name))
                .transpose()
        };
        let host_cpu = || hosts.iter().map(Server::cpu_secs).sum::<f64>();
        let db_before = counters(database)?;
        let (host_cpu_before, postgres_cpu_before) = (host_cpu(), postgres.cpu_secs());
        let begun = Instant::now();
        let stop = AtomicBool::new(false);
        let (outcome, kills) = std::thread::scope(|scope| {
            let probe = (hosts.len() >= 2)
                .then(|| scope.spawn(|| probe_kills(hosts[0].addr, hosts[1].addr, None, &stop)));
            let outcome = self.runtime.block_on(generate(&hosts, secs));
            stop.store(true, Ordering::Relaxed);
            let kills = probe.map_or_else(Vec::new, |probe| probe.join().unwrap_or_default());
            (outcome, kills)
        });
        let probed = kills.len() as u64;
        let (mut all_ended_secs, totals) = wait_all_ended(&hosts, outcome.accepted + probed, begun);
        // A host counts a task ended before its writer has written the end; PostgreSQL's
        // writers lag by seconds under this load. SQLite's by milliseconds: its host's count
        // stands.
        let mut queries = 0;
        if let Some(database) = database {
            let (written_secs, polls) = self.wait_written(database, begun)?;
            all_ended_secs = all_ended_secs.and(written_secs);
            queries = polls;
        }
        let (host_cpu_secs, postgres_cpu_secs) = (
            host_cpu() - host_cpu_before,
            postgres.cpu_secs() - postgres_cpu_before,
        );
        let writer = |name: &str| {
            hosts
                .iter()
                .map(|host| metric(&get(host.addr, "/metrics").unwrap_or_default(), name))
                .sum::<f64>()
        };
        let (commits, batches, fenced, shed) = (
            writer("http_spawn_store_commits_total"),
            writer("http_spawn_store_batches_total"),
            writer("http_spawn_store_fenced_writes_total"),
            writer("http_spawn_store_log_lines_shed_total"),
        );
        // Stopping the hosts ends their sessions, and every backend writes its statistics as
        // it exits.
        drop(hosts);
        if let Some(database) = database {
            postgres.wait_disconnected(self.runtime, &database.name);
        }
        let top = match database {
            Some(database) if postgres.statements => {
                Some(postgres.top_statements(self.runtime, &database.name, TOP_STATEMENTS)?)
            }
            _ => None,
        };
        let database = match (counters(database)?, db_before) {
            (Some(after), Some(before)) => Some(after.since(&before).less_queries(queries)),
            _ => None,
        };
        Ok(Measured {
            completed: totals.ended.saturating_sub(probed).min(outcome.accepted),
            exited_ok: totals.exited_ok,
            outcome,
            all_ended_secs,
            host_cpu_secs,
            postgres_cpu_secs,
            commits,
            batches,
            fenced,
            shed,
            database,
            top,
            kills,
        })
    }

    /// (c) on two idle hosts: `kills` kills across them, then `pings` message round trips.
    fn idle(&mut self, kills: usize, pings: u32) -> anyhow::Result<Idle> {
        let registry = self.dir.join("workers.toml");
        std::fs::write(
            &registry,
            format!(
                "[workers.default]\nmodule = {:?}\n\n[workers.actor]\nmodule = {:?}\n\
                 max_memory = \"16MiB\"\n",
                guest("default"),
                guest("actor"),
            ),
        )?;
        let registry = registry.display().to_string();
        let (database, hosts) = self.cluster(2, &["--config", &registry])?;
        let stop = AtomicBool::new(false);
        let kills = probe_kills(hosts[0].addr, hosts[1].addr, Some(kills), &stop);
        // A failed ping is a finding of this section, not a reason to lose the others.
        let ping = ping_across(hosts[0].addr, hosts[1].addr, pings)
            .unwrap_or_else(|error| json!({"rounds": pings, "error": format!("{error:#}")}));
        drop(hosts);
        self.postgres.drop_database(self.runtime, &database.name);
        Ok(Idle { kills, ping })
    }
}

impl Drop for Bench<'_> {
    fn drop(&mut self) {
        // Databases of runs that failed half-way are dropped by name; dropping one twice is
        // harmless.
        for n in 1..=self.databases {
            let name = format!("hs_bench_{}_{n}", std::process::id());
            let _ = self.runtime.block_on(
                self.postgres
                    .admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")),
            );
        }
    }
}

/// The generator at `hosts` for `secs`: [`CONNECTIONS`] split evenly, each connection keeping
/// to one host; the outcomes summed.
async fn generate(hosts: &[Server], secs: u64) -> Outcome {
    let loads: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let connections =
                CONNECTIONS / hosts.len() + usize::from(i < CONNECTIONS % hosts.len());
            tokio::spawn(loadgen::run(Load {
                addr: host.addr,
                connections,
                duration: Duration::from_secs(secs),
                rate: None,
                durations: Durations::Fixed(TASK_SECS),
            }))
        })
        .collect();
    let mut total = Outcome::default();
    for load in loads {
        if let Ok(outcome) = load.await {
            total.accepted += outcome.accepted;
            total.rejected += outcome.rejected;
            total.errors += outcome.errors;
            total.latencies_us.extend(outcome.latencies_us);
            total.elapsed = total.elapsed.max(outcome.elapsed);
        }
    }
    total
}

/// The hosts' totals, summed.
#[derive(Debug, Default)]
struct Totals {
    ended: u64,
    exited_ok: u64,
}

fn totals(hosts: &[Server]) -> Totals {
    let mut totals = Totals::default();
    for host in hosts {
        let health = health(host.addr).unwrap_or(Value::Null);
        totals.ended += health["tasks"]["ended"].as_u64().unwrap_or(0);
        totals.exited_ok += health["tasks"]["exited_ok"].as_u64().unwrap_or(0);
    }
    totals
}

/// Waits until the hosts have ended `tasks` tasks between them: when (from `begun`), and their
/// totals then; `None` for the time if they had not within [`PATIENCE`].
fn wait_all_ended(hosts: &[Server], tasks: u64, begun: Instant) -> (Option<f64>, Totals) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let totals = totals(hosts);
        if totals.ended >= tasks {
            return (Some(begun.elapsed().as_secs_f64()), totals);
        }
        if Instant::now() > deadline {
            return (None, totals);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Medians over the rounds of one setup.
#[derive(Debug)]
struct Figures {
    rounds: usize,
    accepted_per_sec: f64,
    completed_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    accepted: u64,
    exited_ok: u64,
    rejected: u64,
    errors: u64,
    /// Runs in which some accepted task had not ended within [`PATIENCE`].
    unfinished_runs: usize,
    fenced: f64,
    shed: f64,
    host_cpu_us: f64,
    postgres_cpu_us: f64,
    writer_commits: f64,
    transactions: f64,
    statements: f64,
    round_trips: f64,
    rows_written: f64,
    wal_bytes: f64,
    wal_syncs: f64,
}

impl Figures {
    fn of(runs: &[Measured]) -> Self {
        let median_of = |f: &dyn Fn(&Measured) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(f).collect();
            median(&mut values)
        };
        let db = |f: &dyn Fn(&DbCounters) -> f64| {
            median_of(&|run| {
                run.database
                    .as_ref()
                    .map_or(f64::NAN, |db| run.per_task(f(db)))
            })
        };
        Self {
            rounds: runs.len(),
            accepted_per_sec: median_of(&|run| run.outcome.accepted_per_sec()),
            completed_per_sec: median_of(&Measured::completed_per_sec),
            p50_ms: median_of(&|run| run.outcome.percentile_ms(0.5)),
            p99_ms: median_of(&|run| run.outcome.percentile_ms(0.99)),
            accepted: runs.iter().map(|run| run.outcome.accepted).sum(),
            exited_ok: runs.iter().map(|run| run.exited_ok).sum(),
            rejected: runs.iter().map(|run| run.outcome.rejected).sum(),
            errors: runs.iter().map(|run| run.outcome.errors).sum(),
            unfinished_runs: runs
                .iter()
                .filter(|run| run.all_ended_secs.is_none())
                .count(),
            fenced: runs.iter().map(|run| run.fenced).sum(),
            shed: runs.iter().map(|run| run.shed).sum(),
            host_cpu_us: median_of(&|run| run.per_task(run.host_cpu_secs * 1e6)),
            postgres_cpu_us: median_of(&|run| run.per_task(run.postgres_cpu_secs * 1e6)),
            writer_commits: median_of(&|run| run.per_task(run.commits)),
            transactions: db(&|db| db.transactions),
            statements: db(&|db| db.statements.unwrap_or(f64::NAN)),
            round_trips: median_of(&|run| {
                run.database
                    .as_ref()
                    .map_or(f64::NAN, |db| run.per_task(round_trips(db, run.commits)))
            }),
            rows_written: db(&|db| db.inserted + db.updated + db.deleted),
            wal_bytes: db(&|db| db.wal_bytes),
            wal_syncs: db(&|db| db.wal_syncs),
        }
    }

    fn json(&self) -> Value {
        let number = |value: f64| {
            if value.is_finite() {
                json!(value)
            } else {
                Value::Null
            }
        };
        json!({
            "rounds": self.rounds,
            "accepted_per_sec": number(self.accepted_per_sec),
            "completed_per_sec": number(self.completed_per_sec),
            "p50_ms": number(self.p50_ms), "p99_ms": number(self.p99_ms),
            "accepted": self.accepted, "exited_ok": self.exited_ok,
            "rejected": self.rejected, "errors": self.errors,
            "unfinished_runs": self.unfinished_runs, "fenced_writes": self.fenced,
            "log_lines_shed": self.shed,
            "host_cpu_us_per_task": number(self.host_cpu_us),
            "postgres_cpu_us_per_task": number(self.postgres_cpu_us),
            "writer_commits_per_task": number(self.writer_commits),
            "transactions_per_task": number(self.transactions),
            "statements_per_task": number(self.statements),
            "round_trips_per_task": number(self.round_trips),
            "rows_written_per_task": number(self.rows_written),
            "wal_bytes_per_task": number(self.wal_bytes),
            "wal_syncs_per_task": number(self.wal_syncs),
        })
    }
}

/// Round trips to the database, estimated from what it counted: three for each transaction
/// block (the `BEGIN`, its statements sent together, the `COMMIT`), one for each other
/// transaction (a statement sent alone). The writer's group commits are such blocks; without
/// pg_stat_statements they stand for all of them. A block whose statements wait on each other
/// (a claim from the shared queue) costs more: this is a floor.
fn round_trips(db: &DbCounters, writer_commits: f64) -> f64 {
    let blocks = db.blocks.unwrap_or(writer_commits);
    db.transactions + 2.0 * blocks
}

fn throughput_table(
    report: &mut Report,
    rounds: usize,
    secs: u64,
    setups: &[Setup],
    figures: &[Figures],
) {
    report.line(&format!(
        "(a) Throughput: the generator's {CONNECTIONS} keep-alive connections split evenly over \
         the hosts, closed loop, {secs} s, the default worker with duration {TASK_SECS}; median \
         of {rounds} round(s), the setups alternating. Completed/s: tasks ended from the load's \
         start until the last end was written (PostgreSQL: the database's `runs` table empty; \
         SQLite: the host's count), less the {TASK_SECS} s every task sleeps. CPU: user + \
         system over the load and until then, per completed task, of the host \
         processes summed and of the PostgreSQL server (postmaster, backends, WAL writer, \
         checkpointer, autovacuum). All on the same 2 cores.\n"
    ));
    let sqlite = figures[0].accepted_per_sec;
    let mut rows = Vec::new();
    for (setup, figures) in setups.iter().zip(figures) {
        let postgres = *setup != Setup::Sqlite;
        rows.push(vec![
            setup.store().to_owned(),
            setup.hosts().to_string(),
            format!("{:.0}", figures.accepted_per_sec),
            if postgres {
                format!("{:.2}×", figures.accepted_per_sec / sqlite)
            } else {
                String::new()
            },
            format!("{:.0}", figures.completed_per_sec),
            format!("{}/{}", figures.exited_ok, figures.accepted),
            figures.rejected.to_string(),
            figures.errors.to_string(),
            format!("{:.2}", figures.p50_ms),
            format!("{:.2}", figures.p99_ms),
            format!("{:.1}", figures.host_cpu_us),
            if postgres {
                format!("{:.1}", figures.postgres_cpu_us)
            } else {
                String::new()
            },
            if postgres {
                format!("{:.1}", figures.host_cpu_us + figures.postgres_cpu_us)
            } else {
                format!("{:.1}", figures.host_cpu_us)
            },
        ]);
    }
    report.table(
        &[
            "store",
            "hosts",
            "accepted/s",
            "÷ SQLite",
            "completed/s",
            "exit 0 / accepted",
            "429/503",
            "errors",
            "p50 ms",
            "p99 ms",
            "host CPU µs/task",
            "PostgreSQL CPU µs/task",
            "host + PostgreSQL µs/task",
        ],
        &rows,
    );
    for (setup, figures) in setups.iter().zip(figures) {
        if figures.unfinished_runs > 0 {
            report.line(&format!(
                "\n{} with {} host(s): in {} run(s) some accepted task had not ended after \
                 {PATIENCE:?}",
                setup.store(),
                setup.hosts(),
                figures.unfinished_runs
            ));
        }
        if figures.shed > 0.0 {
            report.line(&format!(
                "\n{} with {} host(s): {:.0} log lines shed by writers that had fallen behind \
                 (not in the rows written below)",
                setup.store(),
                setup.hosts(),
                figures.shed
            ));
        }
        if figures.fenced > 0.0 {
            report.line(&format!(
                "\n{} with {} host(s): {:.0} writes fenced (a host wrote for a task it no longer \
                 held)",
                setup.store(),
                setup.hosts(),
                figures.fenced
            ));
        }
    }
}

/// Prints (b); returns the tasks/s one PostgreSQL core carries, from the costliest setup.
fn database_table(
    report: &mut Report,
    postgres: &Postgres,
    setups: &[Setup],
    figures: &[Figures],
    measured: &[Vec<Measured>],
) -> Value {
    report.line(&format!(
        "\n(b) What each completed task cost the database (medians as above). Transactions and \
         rows (inserted + updated + deleted) from pg_stat_database, read after the hosts had \
         disconnected; statements (BEGIN and COMMIT not counted) from pg_stat_statements; \
         writer commits from the hosts' http_spawn_store_commits_total. Round trips are \
         estimated: 3 per BEGIN … COMMIT (the writer pipelines a commit's statements), 1 per \
         statement sent alone; a floor. WAL from pg_stat_wal{}. Tasks/s per core: \
         1,000,000 ÷ PostgreSQL CPU µs/task.\n",
        if postgres.own {
            ""
        } else {
            ", server-wide (DATABASE_URL's server may serve others too)"
        }
    ));
    let optional = |value: f64, digits: usize| {
        if value.is_finite() {
            format!("{value:.digits$}")
        } else {
            String::new()
        }
    };
    let mut rows = Vec::new();
    let mut costliest: f64 = 0.0;
    for (setup, figures) in setups.iter().zip(figures) {
        let postgres_row = *setup != Setup::Sqlite;
        if postgres_row && figures.postgres_cpu_us.is_finite() {
            costliest = costliest.max(figures.postgres_cpu_us);
        }
        rows.push(vec![
            setup.store().to_owned(),
            setup.hosts().to_string(),
            optional(figures.writer_commits, 3),
            optional(1.0 / figures.writer_commits, 1),
            optional(figures.transactions, 3),
            optional(figures.statements, 2),
            optional(figures.round_trips, 2),
            optional(figures.rows_written, 2),
            optional(figures.wal_bytes, 0),
            optional(figures.wal_syncs, 3),
            if postgres_row {
                optional(figures.postgres_cpu_us, 1)
            } else {
                String::new()
            },
            if postgres_row {
                optional(1e6 / figures.postgres_cpu_us, 0)
            } else {
                String::new()
            },
        ]);
    }
    report.table(
        &[
            "store",
            "hosts",
            "writer commits/task",
            "tasks/commit",
            "transactions/task",
            "statements/task",
            "round trips/task (est.)",
            "rows written/task",
            "WAL bytes/task",
            "WAL flushes/task",
            "PostgreSQL CPU µs/task",
            "tasks/s per PostgreSQL core",
        ],
        &rows,
    );
    let last = setups.iter().zip(measured).rev().find_map(|(setup, runs)| {
        let run = runs.last()?;
        Some((setup.hosts(), run, run.top.as_ref()?))
    });
    if let Some((hosts, run, (statements, all_ms))) = last {
        report.line(&format!(
            "\nWhere PostgreSQL's execution time went, {hosts} host(s), last round \
             (pg_stat_statements, the hosts' start included): {:.0} µs of execution per task in \
             all.\n",
            run.per_task(all_ms * 1e3)
        ));
        let rows: Vec<Vec<String>> = statements
            .iter()
            .map(|statement| {
                let mut text: String = statement.text.chars().take(STATEMENT_CHARS).collect();
                if text.len() < statement.text.len() {
                    text.push('…');
                }
                vec![
                    format!("`{}`", text.replace('|', "\\|")),
                    format!("{:.2}", run.per_task(statement.calls)),
                    format!("{:.1}", run.per_task(statement.exec_ms * 1e3)),
                    format!("{:.0} %", statement.exec_ms * 100.0 / all_ms),
                ]
            })
            .collect();
        report.table(
            &["statement", "calls/task", "µs/task", "of all execution"],
            &rows,
        );
    }
    if costliest > 0.0 {
        let per_core = 1e6 / costliest;
        report.line(&format!(
            "\nOne PostgreSQL core carries ≈ {per_core:.0} tasks/s of this load (from the \
             costliest PostgreSQL row above, {costliest:.1} µs of PostgreSQL CPU per task): an \
             estimate from this 2-core machine, where PostgreSQL shares the cores with the hosts \
             and the generator. It assumes the cost per task holds on a bigger machine and that \
             PostgreSQL spreads over its cores; the WAL flush each commit waits for, and the \
             hosts' contention on the same rows, may not."
        ));
        json!(per_core)
    } else {
        Value::Null
    }
}

// ---------------------------------------------------------------------------------------------
// (c) Kills and messages across hosts

/// One kill across hosts: `DELETE`'s status on the other host, and how long it took.
#[derive(Debug, Clone, Copy)]
struct Kill {
    status: u16,
    latency_us: u32,
}

/// Kills across hosts, one at a time, until `count` are done or `stop` is set: a long task
/// accepted by `a` (which runs it), once it runs there, killed through `b`.
fn probe_kills(a: SocketAddr, b: SocketAddr, count: Option<usize>, stop: &AtomicBool) -> Vec<Kill> {
    let mut kills = Vec::new();
    while count.is_none_or(|count| kills.len() < count) && !stop.load(Ordering::Relaxed) {
        match kill_once(a, b) {
            Ok(kill) => kills.push(kill),
            Err(error) => {
                eprintln!("kill probe: {error:#}");
                break;
            }
        }
    }
    kills
}

fn kill_once(a: SocketAddr, b: SocketAddr) -> anyhow::Result<Kill> {
    let body = format!("{{\"name\":\"kill-probe\",\"duration\":{PROBE_TASK_SECS}}}");
    let (status, answer) = post(a, "/api/tasks", &body)?;
    if status != 202 {
        bail!("a probe task was refused: {status} {answer}");
    }
    let answer: Value = serde_json::from_str(&answer)?;
    let pid = answer["pid"].as_str().context("a 202 without a pid")?;
    let path = format!("/api/tasks/{pid}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let record: Option<Value> = get(a, &path).and_then(|body| serde_json::from_str(&body).ok());
        if record.is_some_and(|record| record["status"] == "running") {
            break;
        }
        if Instant::now() > deadline {
            bail!("probe task {pid} did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let begun = Instant::now();
    let (status, answer) = request(b, "DELETE", &path, None)?;
    let latency_us = begun.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    if status != 200 {
        eprintln!("kill probe: DELETE of {pid} through another host answered {status} {answer}");
        // A task left running would hold the wait for every task's end; kill it where it runs.
        let _ = request(a, "DELETE", &path, None);
    }
    Ok(Kill { status, latency_us })
}

/// A message round trip across hosts, `rounds` times after [`PING_WARM_UP`]: the `actor`
/// example's `echo` on `a`, its `ping` on `b`, timed inside the pinger.
fn ping_across(a: SocketAddr, b: SocketAddr, rounds: u32) -> anyhow::Result<Value> {
    let echo = start_actor(a, "echo", &json!([{"op": "echo", "timeout_ms": 60_000}]))?;
    let pinger = start_actor(
        b,
        "ping",
        &json!([
            {"op": "ping", "to": echo, "rounds": PING_WARM_UP},
            {"op": "ping", "to": echo, "rounds": rounds},
        ]),
    )?;
    wait_ended(b, &pinger)?;
    let line = actor_lines(b, &pinger)?
        .into_iter()
        .rfind(|line| line["op"] == "ping")
        .context("the pinger logged no ping line")?;
    if line["ok"] != true || line["rounds"] != rounds {
        bail!("the ping across hosts failed: {line}");
    }
    let ms = |field: &str| line[field].as_f64().unwrap_or(f64::NAN) / 1000.0;
    Ok(json!({
        "rounds": rounds, "p50_ms": ms("p50_us"), "p99_ms": ms("p99_us"), "max_ms": ms("max_us"),
    }))
}

/// What (c) measured on two idle hosts.
#[derive(Debug)]
struct Idle {
    kills: Vec<Kill>,
    ping: Value,
}

fn kill_json(kills: &[Kill]) -> Value {
    let latencies: Vec<u32> = kills.iter().map(|kill| kill.latency_us).collect();
    json!({
        "samples": kills.len(),
        "p50_ms": loadgen::percentile_ms(latencies.clone(), 0.5),
        "p99_ms": loadgen::percentile_ms(latencies.clone(), 0.99),
        "max_ms": loadgen::percentile_ms(latencies, 1.0),
        "within_1s": kills.iter().filter(|kill| kill.status == 200 && kill.latency_us <= 1_000_000).count(),
        "not_200": kills.iter().filter(|kill| kill.status != 200).count(),
    })
}

fn kill_row(label: &str, kills: &[Kill]) -> Vec<String> {
    let figures = kill_json(kills);
    let ms = |field: &str| {
        figures[field]
            .as_f64()
            .map_or_else(String::new, |ms| format!("{ms:.1}"))
    };
    vec![
        label.to_owned(),
        kills.len().to_string(),
        ms("p50_ms"),
        ms("p99_ms"),
        ms("max_ms"),
        format!("{}/{}", figures["within_1s"], kills.len()),
        figures["not_200"].to_string(),
    ]
}

fn latency_table(report: &mut Report, idle: &Idle, loaded: &[Kill]) {
    report.line(&format!(
        "\n(c) Across hosts (issue #14: within 1 s). Kill: a task of {PROBE_TASK_SECS} s \
         accepted by host A and running there, `DELETE /api/tasks/{{pid}}` sent to host B, timed \
         until B answers; B answers 200 once the end shows in the shared store, or 202 after \
         {KILL_WAIT_MS:.0} ms. One kill at a time, on two otherwise idle hosts, and alongside the \
         load of (a) with 2 and 3 hosts. Message: a round trip between two `actor` tasks on two \
         idle hosts (`ping` on B, `echo` on A, each way a message across hosts), timed inside the \
         pinger after {PING_WARM_UP} warm-up rounds; one way is about half. Defaults: \
         --cluster-poll 100ms, --heartbeat 1s.\n"
    ));
    let mut rows = vec![
        kill_row("kill across hosts, idle", &idle.kills),
        kill_row("kill across hosts, under load (2-3 hosts)", loaded),
    ];
    let ms = |field: &str| {
        idle.ping[field]
            .as_f64()
            .map_or_else(String::new, |ms| format!("{ms:.1}"))
    };
    let rounds = idle.ping["rounds"].as_u64().unwrap_or(0);
    let max = idle.ping["max_ms"].as_f64().unwrap_or(f64::NAN);
    rows.push(vec![
        "message round trip across hosts, idle".into(),
        rounds.to_string(),
        ms("p50_ms"),
        ms("p99_ms"),
        ms("max_ms"),
        if max <= 1000.0 {
            format!("{rounds}/{rounds}")
        } else {
            "not all".into()
        },
        String::new(),
    ]);
    if let Some(error) = idle.ping["error"].as_str() {
        rows.pop();
        report.line(&format!(
            "The message round trip across hosts failed: {error}\n"
        ));
    }
    report.table(
        &[
            "across hosts",
            "samples",
            "p50 ms",
            "p99 ms",
            "max ms",
            "within 1 s",
            "not 200",
        ],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_url_names_another_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "hs_b"),
            "postgres://postgres@127.0.0.1:5432/hs_b"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
