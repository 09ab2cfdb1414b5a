//! Prometheus metrics: every metric's name, type and help text in [`METRICS`], recorded through
//! the `metrics` crate's API into a Prometheus recorder that this host owns (not the process
//! global one, so that several hosts in one process, as in the tests, keep their own counts),
//! and rendered by `metrics-exporter-prometheus` at `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use self::series::{Family, Histograms, METHODS, RouteSeries, WorkerSeries};

use crate::model::{Outcome, TaskEnd};

mod series;

/// What a metric is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind, unit and help text.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

const fn spec(name: &'static str, kind: Kind, unit: Option<Unit>, help: &'static str) -> Spec {
    Spec {
        name,
        kind,
        unit,
        help,
    }
}

pub const TASKS_SPAWNED: &str = "http_spawn_tasks_spawned_total";
pub const TASKS_STARTED: &str = "http_spawn_tasks_started_total";
pub const TASKS_ENDED: &str = "http_spawn_tasks_ended_total";
pub const TASK_RESTARTS: &str = "http_spawn_task_restarts_total";
pub const MEMORY_LIMIT_KILLS: &str = "http_spawn_memory_limit_kills_total";
pub const FUEL_CONSUMED: &str = "http_spawn_fuel_consumed_total";
pub const TASKS_RUNNING: &str = "http_spawn_tasks_running";
pub const TASKS_QUEUED: &str = "http_spawn_tasks_queued";
pub const TASKS_SCHEDULED: &str = "http_spawn_tasks_scheduled";
pub const CAPACITY: &str = "http_spawn_capacity";
pub const TASK_DURATION: &str = "http_spawn_task_duration_seconds";
pub const SPAWN_TO_START: &str = "http_spawn_spawn_to_start_seconds";
pub const INSTANTIATION: &str = "http_spawn_instantiation_seconds";
pub const POOL_COMPONENT_INSTANCES: &str = "http_spawn_pool_component_instances";
pub const POOL_CORE_INSTANCES: &str = "http_spawn_pool_core_instances";
pub const POOL_MEMORIES: &str = "http_spawn_pool_memories";
pub const POOL_TABLES: &str = "http_spawn_pool_tables";
pub const POOL_UNUSED_WARM_MEMORIES: &str = "http_spawn_pool_unused_warm_memories";
pub const POOL_UNUSED_MEMORY_RESIDENT: &str = "http_spawn_pool_unused_memory_resident_bytes";
pub const MODULE_LOADS: &str = "http_spawn_module_loads_total";
pub const WORKER_INSTALLS: &str = "http_spawn_worker_installs_total";
pub const EVENT_SUBSCRIBERS: &str = "http_spawn_event_subscribers";
pub const STORE_COMMITS: &str = "http_spawn_store_commits_total";
pub const STORE_BATCHES: &str = "http_spawn_store_batches_total";
pub const STORE_HEALTHY: &str = "http_spawn_store_healthy";
pub const STORE_LOG_LINES_SHED: &str = "http_spawn_store_log_lines_shed_total";
pub const STORE_FENCED_WRITES: &str = "http_spawn_store_fenced_writes_total";
pub const STORE_BACKLOG_CHANGES: &str = "http_spawn_store_backlog_changes";
pub const STORE_BACKLOG_BYTES: &str = "http_spawn_store_backlog_bytes";
pub const STORE_WRITE_FAILURES: &str = "http_spawn_store_write_failures_total";
pub const STORE_REFUSED_CHANGES: &str = "http_spawn_store_refused_changes_total";
pub const CLUSTER_QUEUED: &str = "http_spawn_cluster_queued_tasks";
pub const MESSAGES: &str = "http_spawn_messages_total";
pub const MAILBOXES_BYTES: &str = "http_spawn_mailboxes_bytes";
pub const CALLS: &str = "http_spawn_calls_total";
pub const CALL_REPLIES_LATE: &str = "http_spawn_call_replies_late_total";
pub const SPAWNS_REFUSED: &str = "http_spawn_spawns_refused_total";
pub const TASKS_REFUSED_LATE: &str = "http_spawn_tasks_refused_late_total";
pub const LOG_LINES_DROPPED: &str = "http_spawn_log_lines_dropped_total";
pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
pub const HTTP_CONNECTIONS: &str = "http_connections_open";
pub const HTTP_CONNECTIONS_REFUSED: &str = "http_connections_refused_total";

/// Every metric the host exports.
pub const METRICS: &[Spec] = &[
    spec(
        STORE_FENCED_WRITES,
        Kind::Counter,
        None,
        "Writes of a task the shared store refused because this host no longer held it (its \
         lease was lost, or another host took the task over).",
    ),
    spec(
        CLUSTER_QUEUED,
        Kind::Gauge,
        None,
        "Tasks waiting in the cluster's shared queue, as this host last counted them.",
    ),
    spec(
        STORE_LOG_LINES_SHED,
        Kind::Counter,
        None,
        "Log lines of running tasks the store did not write to keep its backlog within \
         --store-backlog (they were still streamed to event subscribers).",
    ),
    spec(
        STORE_BACKLOG_CHANGES,
        Kind::Gauge,
        None,
        "Changes waiting for the store's writer (log lines counted by batch).",
    ),
    spec(
        STORE_BACKLOG_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes of changes waiting for the store's writer, as the --store-backlog bound counts \
         them.",
    ),
    spec(
        STORE_WRITE_FAILURES,
        Kind::Counter,
        None,
        "Commits the store failed, by cause: environment (the store is unavailable; retried \
         after a pause), conflict (retried at once), content (a change the store refuses; it \
         alone is refused).",
    ),
    spec(
        STORE_REFUSED_CHANGES,
        Kind::Counter,
        None,
        "Changes the store refused for their content, by change: log_line (dropped), \
         acceptance (answered 422), error_text (the end written with a note instead), \
         progress (dropped), other (a module, a worker's versions, a message: answered).",
    ),
    spec(
        MESSAGES,
        Kind::Counter,
        None,
        "Messages sent to task mailboxes, by sender (http or task) and result (delivered, \
         mailbox_full, ended, no_such_process, too_large, bad_pid).",
    ),
    spec(
        CALLS,
        Kind::Counter,
        None,
        "Calls made to tasks, by caller (http or task) and result: sent (a task's call reached \
         its callee), answered, ended, timeout (an HTTP client's), or why it was not sent \
         (mailbox_full, ended, no_such_process, too_large, bad_pid, elsewhere).",
    ),
    spec(
        CALL_REPLIES_LATE,
        Kind::Counter,
        None,
        "Answers to calls dropped because nobody waited for them any more: the call had timed \
         out, its HTTP client had gone, or its calling task had ended.",
    ),
    spec(
        MAILBOXES_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes of messages and notices every mailbox holds together (at most \
         --max-mailboxes-bytes of messages).",
    ),
    spec(
        TASKS_REFUSED_LATE,
        Kind::Counter,
        None,
        "Submissions refused (429) because a task accepted more than --max-start-lag before \
         still waited to start, and the host did not catch up while they waited.",
    ),
    spec(
        SPAWNS_REFUSED,
        Kind::Counter,
        None,
        "Children a task was refused (full) because its tree had spawned its share, by reason: \
         rate (--max-spawns-per-sec) or descendants (--max-descendants).",
    ),
    spec(
        LOG_LINES_DROPPED,
        Kind::Counter,
        None,
        "Console lines dropped because the thread that writes them fell behind its output.",
    ),
    spec(
        TASKS_SPAWNED,
        Kind::Counter,
        None,
        "Tasks accepted, by worker.",
    ),
    spec(
        TASKS_STARTED,
        Kind::Counter,
        None,
        "Task attempts instantiated and started, by worker.",
    ),
    spec(
        TASKS_ENDED,
        Kind::Counter,
        None,
        "Tasks ended, by worker, status and outcome (exit, out_of_fuel, killed, ...).",
    ),
    spec(
        TASK_RESTARTS,
        Kind::Counter,
        None,
        "Failed attempts restarted under a task's restart policy, by worker and outcome.",
    ),
    spec(
        MEMORY_LIMIT_KILLS,
        Kind::Counter,
        None,
        "Attempts stopped for growing their memory past the cap, by worker.",
    ),
    spec(
        FUEL_CONSUMED,
        Kind::Counter,
        None,
        "Fuel (about one wasm instruction each) burnt by ended attempts, by worker.",
    ),
    spec(
        TASKS_RUNNING,
        Kind::Gauge,
        None,
        "Tasks holding a place: instantiated, or about to be.",
    ),
    spec(
        TASKS_QUEUED,
        Kind::Gauge,
        None,
        "Accepted tasks waiting for a place.",
    ),
    spec(
        TASKS_SCHEDULED,
        Kind::Gauge,
        None,
        "Tasks accepted to run later (run_at, delay) that wait on this host for their time.",
    ),
    spec(
        CAPACITY,
        Kind::Gauge,
        None,
        "The most tasks that may hold a place at once.",
    ),
    spec(
        TASK_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Wall-clock time from an attempt's start to the task's end, by worker and outcome.",
    ),
    spec(
        SPAWN_TO_START,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time from acceptance (or a restart's backoff) to the guest's start returning, queueing \
         included, by worker.",
    ),
    spec(
        INSTANTIATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time to instantiate a worker and call its start, by worker.",
    ),
    spec(
        POOL_COMPONENT_INSTANCES,
        Kind::Gauge,
        None,
        "Component instances live in the pooling allocator.",
    ),
    spec(
        POOL_CORE_INSTANCES,
        Kind::Gauge,
        None,
        "Core instances live in the pooling allocator.",
    ),
    spec(
        POOL_MEMORIES,
        Kind::Gauge,
        None,
        "Linear memory slots in use in the pooling allocator.",
    ),
    spec(
        POOL_TABLES,
        Kind::Gauge,
        None,
        "Table slots in use in the pooling allocator.",
    ),
    spec(
        POOL_UNUSED_WARM_MEMORIES,
        Kind::Gauge,
        None,
        "Memory slots free but used before (their pages may still be resident).",
    ),
    spec(
        POOL_UNUSED_MEMORY_RESIDENT,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes kept resident in free memory slots.",
    ),
    spec(
        MODULE_LOADS,
        Kind::Counter,
        None,
        "Worker modules loaded, by worker and origin: compiled, or taken from the cache.",
    ),
    spec(
        WORKER_INSTALLS,
        Kind::Counter,
        None,
        "New worker versions offered, by worker, source (upload, file) and result (installed, \
         unchanged, refused).",
    ),
    spec(EVENT_SUBSCRIBERS, Kind::Gauge, None, "Open event streams."),
    spec(
        STORE_COMMITS,
        Kind::Counter,
        None,
        "Transactions the store committed (each takes every batch waiting for it).",
    ),
    spec(
        STORE_BATCHES,
        Kind::Counter,
        None,
        "Batches of changes the store wrote: an acceptance, an event, a task's end.",
    ),
    spec(
        STORE_HEALTHY,
        Kind::Gauge,
        None,
        "1 while the store takes writes; 0 after a failed commit, until one succeeds.",
    ),
    spec(
        HTTP_REQUESTS,
        Kind::Counter,
        None,
        "HTTP requests, by method, matched route and status code.",
    ),
    spec(
        HTTP_REQUEST_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time to answer an HTTP request (to the response head), by method and matched route.",
    ),
    spec(
        HTTP_CONNECTIONS,
        Kind::Gauge,
        None,
        "HTTP connections open (at most --max-connections).",
    ),
    spec(
        HTTP_CONNECTIONS_REFUSED,
        Kind::Counter,
        None,
        "HTTP connections refused with 503 because --max-connections were open.",
    ),
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The host's metrics.
pub struct Metrics {
    /// Counters and gauges, and their exposition.
    recorder: PrometheusRecorder,
    /// Every histogram (the recorder's would keep each sample until its upkeep).
    histograms: Histograms,
    /// Per-task series by worker.
    workers: Family<Arc<str>, WorkerSeries>,
    /// Per-request series by matched route.
    routes: Family<Box<str>, RouteSeries>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn label(key: &'static str, value: impl Into<SharedString>) -> Label {
    Label::new(key, value)
}

fn worker(name: &Arc<str>) -> Label {
    label("worker", SharedString::from_shared(Arc::clone(name)))
}

impl Metrics {
    /// A recorder with every counter and gauge described.
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new().build_recorder();
        for spec in METRICS {
            let (name, help) = (spec.name.into(), SharedString::const_str(spec.help));
            match spec.kind {
                Kind::Counter => recorder.describe_counter(name, spec.unit, help),
                Kind::Gauge => recorder.describe_gauge(name, spec.unit, help),
                // Rendered by `histograms`.
                Kind::Histogram => {}
            }
        }
        Arc::new(Self {
            recorder,
            histograms: Histograms::default(),
            workers: Family::default(),
            routes: Family::default(),
        })
    }

    /// The recorder's counter of `name` with `labels`: a handle to keep, as finding it costs a
    /// key built and hashed.
    fn register_counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>, by: u64) {
        self.register_counter(name, labels).increment(by);
    }

    /// Runs `with` on the per-task series of worker `name`.
    fn worker<R>(&self, name: &Arc<str>, with: impl FnOnce(&WorkerSeries) -> R) -> R {
        self.workers.with(
            &**name,
            || (Arc::clone(name), WorkerSeries::default()),
            with,
        )
    }

    /// Sets a gauge with no labels.
    pub fn gauge(&self, name: &'static str, value: f64) {
        let key = Key::from_static_name(name);
        self.recorder.register_gauge(&key, &METADATA).set(value);
    }

    /// Sets a counter kept elsewhere (by the store) to its total now.
    pub fn total(&self, name: &'static str, value: u64) {
        let key = Key::from_static_name(name);
        self.recorder
            .register_counter(&key, &METADATA)
            .absolute(value);
    }

    /// Sets a counter kept elsewhere, with one label, to its total now.
    pub fn total_of(&self, name: &'static str, key: &'static str, value: &'static str, total: u64) {
        let key = Key::from_parts(name, vec![label(key, value)]);
        self.recorder
            .register_counter(&key, &METADATA)
            .absolute(total);
    }

    /// A task was accepted.
    pub fn spawned(&self, name: &Arc<str>) {
        self.worker(name, |series| {
            series
                .spawned
                .get_or_init(|| self.register_counter(TASKS_SPAWNED, vec![worker(name)]))
                .increment(1);
        });
    }

    /// An attempt was instantiated and started: `instantiation` after its instantiation began,
    /// `since_spawn` after the task was accepted or its restart was due.
    pub fn started(&self, name: &Arc<str>, instantiation: Duration, since_spawn: Duration) {
        self.worker(name, |series| {
            series
                .started
                .get_or_init(|| self.register_counter(TASKS_STARTED, vec![worker(name)]))
                .increment(1);
            let by_worker = [("worker", &**name)];
            series
                .instantiation
                .get_or_init(|| self.histograms.series(INSTANTIATION, &by_worker))
                .record(instantiation);
            series
                .spawn_to_start
                .get_or_init(|| self.histograms.series(SPAWN_TO_START, &by_worker))
                .record(since_spawn);
        });
    }

    /// An attempt ended and will be restarted.
    pub fn restarted(&self, name: &Arc<str>, end: &TaskEnd, fuel: u64) {
        self.attempt_ended(name, end, fuel);
        let labels = vec![worker(name), label("outcome", end.outcome.as_str())];
        self.counter(TASK_RESTARTS, labels, 1);
    }

    /// A task ended; `ran` is how long its last attempt ran, if it started.
    pub fn ended(&self, name: &Arc<str>, end: &TaskEnd, fuel: u64, ran: Option<Duration>) {
        self.attempt_ended(name, end, fuel);
        let (status, outcome) = (end.status, end.outcome);
        self.worker(name, |series| {
            series.ended.with(
                &(status, outcome),
                || {
                    let labels = vec![
                        worker(name),
                        label("status", status.as_str()),
                        label("outcome", outcome.as_str()),
                    ];
                    (
                        (status, outcome),
                        self.register_counter(TASKS_ENDED, labels),
                    )
                },
                |ended| ended.increment(1),
            );
            if let Some(ran) = ran {
                series.ran.with(
                    &outcome,
                    || {
                        let labels = [("worker", &**name), ("outcome", outcome.as_str())];
                        (outcome, self.histograms.series(TASK_DURATION, &labels))
                    },
                    |histogram| histogram.record(ran),
                );
            }
        });
    }

    fn attempt_ended(&self, name: &Arc<str>, end: &TaskEnd, fuel: u64) {
        if fuel > 0 {
            self.worker(name, |series| {
                series
                    .fuel
                    .get_or_init(|| self.register_counter(FUEL_CONSUMED, vec![worker(name)]))
                    .increment(fuel);
            });
        }
        if end.outcome == Outcome::MemoryLimit {
            self.counter(MEMORY_LIMIT_KILLS, vec![worker(name)], 1);
        }
    }

    /// A message was sent to a mailbox, by an HTTP client or a task, with this result.
    pub fn message(&self, from_task: bool, result: &'static str) {
        let from = if from_task { "task" } else { "http" };
        self.counter(
            MESSAGES,
            vec![label("sender", from), label("result", result)],
            1,
        );
    }

    /// A call was made: by a task or an HTTP client (`from_task`), with its `result`.
    pub fn call(&self, from_task: bool, result: &'static str) {
        let from = if from_task { "task" } else { "http" };
        self.counter(
            CALLS,
            vec![label("caller", from), label("result", result)],
            1,
        );
    }

    /// A task's spawn was refused: its tree had spawned its share (`reason`).
    /// A submission was refused: tasks start later than `--max-start-lag`.
    pub fn refused_late(&self) {
        self.counter(TASKS_REFUSED_LATE, Vec::new(), 1);
    }

    pub fn spawn_refused(&self, reason: &'static str) {
        self.counter(SPAWNS_REFUSED, vec![label("reason", reason)], 1);
    }

    /// A worker module was loaded, compiled or from the cache.
    pub fn module_loaded(&self, name: &Arc<str>, origin: &'static str) {
        self.counter(MODULE_LOADS, vec![worker(name), label("origin", origin)], 1);
    }

    /// A new version of a worker was offered.
    pub fn install(&self, name: &Arc<str>, source: &'static str, result: &'static str) {
        let labels = vec![
            worker(name),
            label("source", source),
            label("result", result),
        ];
        self.counter(WORKER_INSTALLS, labels, 1);
    }

    /// An HTTP request was answered. Methods outside the standard ones are counted as
    /// `other`: a client may send any token as a method, and each would be a new series.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let index = METHODS[..METHODS.len() - 1]
            .iter()
            .position(|known| *known == method)
            .unwrap_or(METHODS.len() - 1);
        let method = METHODS[index];
        self.routes.with(
            route,
            || (route.into(), RouteSeries::default()),
            |series| {
                let series = &series.methods[index];
                series.answered.with(
                    &status,
                    || {
                        let labels = vec![
                            label("method", method),
                            label("path", route.to_owned()),
                            label("status", status.to_string()),
                        ];
                        (status, self.register_counter(HTTP_REQUESTS, labels))
                    },
                    |answered| answered.increment(1),
                );
                let labels = [("method", method), ("path", route)];
                series
                    .duration
                    .get_or_init(|| self.histograms.series(HTTP_REQUEST_DURATION, &labels))
                    .record(took);
            },
        );
    }

    /// `open` HTTP connections are open now.
    pub fn http_connections(&self, open: usize) {
        self.gauge(HTTP_CONNECTIONS, open as f64);
    }

    /// A connection over `--max-connections` was refused.
    pub fn http_connection_refused(&self) {
        self.counter(HTTP_CONNECTIONS_REFUSED, Vec::new(), 1);
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        let mut out = self.recorder.handle().render();
        for spec in METRICS.iter().filter(|spec| spec.kind == Kind::Histogram) {
            self.histograms.render(&mut out, spec.name, spec.help);
        }
        out
    }
}
