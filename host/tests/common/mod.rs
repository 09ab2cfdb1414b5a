//! Starting a real host on 127.0.0.1:0 for end-to-end tests, and talking to it over HTTP.

#![allow(dead_code, reason = "each test binary uses only some helpers")]

pub mod cluster;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod workers;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http_spawn::{App, Config};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// How long a test waits for a task to end before it fails; a bound against hangs, never a
/// timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The worker components `make build-guest` builds.
pub fn module(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/guest");
    let path = if name == "default" {
        root.join("http_spawn_guest.wasm")
    } else if name == "report" {
        root.join("http_spawn_report.wasm")
    } else if name == "supervisor" {
        root.join("http_spawn_supervisor.wasm")
    } else if name == "kv" {
        root.join("http_spawn_kv.wasm")
    } else {
        root.join("examples").join(format!("{name}.wasm"))
    };
    assert!(
        path.is_file(),
        "{} is missing: run `make build-guest` first",
        path.display()
    );
    path
}

/// A host serving on a loopback port, stopped when dropped; its HTTP helpers are
/// [`Remote`]'s.
pub struct TestApp {
    remote: Remote,
    pub host: std::sync::Arc<http_spawn::Host>,
    _shutdown: oneshot::Sender<()>,
}

impl std::ops::Deref for TestApp {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}

/// A host's HTTP API, wherever it runs.
pub struct Remote {
    pub base: String,
    pub client: reqwest::Client,
}

/// The host's configuration for the worker at `module` (a path) with command-line `args`, as
/// `http-spawn` would parse it.
/// Unless `args` name them, the compiled-module cache is one shared by the tests, under
/// cargo's scratch directory, never the user's own, and the store is in memory.
pub fn config(module: &str, args: &[&str]) -> Config {
    parse(&[&["--module", module], args].concat())
}

/// The host's configuration from the registry file at `path`, with command-line `args`.
pub fn registry_config(path: &std::path::Path, args: &[&str]) -> Config {
    let path = path.display().to_string();
    parse(&[&["--config", path.as_str()], args].concat())
}

fn parse(args: &[&str]) -> Config {
    let cache = format!("{}/module-cache", env!("CARGO_TARGET_TMPDIR"));
    let mut argv = vec!["http-spawn"];
    if !args.contains(&"--cache-dir") {
        argv.extend(["--cache-dir", &cache]);
    }
    if !args.contains(&"--max-start-lag") {
        // Many hosts share a test process, built for debugging, on a small machine: a test
        // that loads one to see something else must not meet load shedding by chance. The
        // tests of `--max-start-lag` name it.
        argv.extend(["--max-start-lag", "0s"]);
    }
    if !args.contains(&"--store") {
        // Many hosts share a test process: each keeps its tasks in memory unless the test
        // names a store.
        argv.extend(["--store", "memory"]);
    }
    argv.extend(args.iter().copied());
    Config::from_args(argv).expect("test configuration parses")
}

/// A task record's earlier attempts, as (attempt, exit code) pairs.
pub fn numbered_attempts(record: &Value) -> Vec<(u64, i64)> {
    record["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().expect("n"),
                a["exit_code"].as_i64().expect("code"),
            )
        })
        .collect()
}

/// A new empty directory for one test, under cargo's scratch directory.
pub fn temp_dir(label: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// Starts a host running the worker `module` (see [`module`]) with extra command-line `args`.
pub async fn spawn_app(module_name: &str, args: &[&str]) -> TestApp {
    let mut args = args.to_vec();
    if !["default", "report"].contains(&module_name) && !args.contains(&"--max-memory") {
        // The example workers use Rust's std, whose 1 MiB stack outgrows the default cap.
        args.extend(["--max-memory", "16MiB"]);
    }
    if !args.contains(&"--capacity") {
        // Small pools keep many test hosts in one process cheap.
        args.extend(["--capacity", "2000"]);
    }
    let config = config(&module(module_name).display().to_string(), &args);
    start_app(config).await
}

/// Starts a host with `config` on a loopback port.
pub async fn start_app(config: Config) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("local address"));
    let (shutdown, stopped) = oneshot::channel::<()>();
    let app = App::build(&config).expect("host starts");
    let host = std::sync::Arc::clone(app.host());
    tokio::spawn(app.serve_http(listener, async {
        let _ = stopped.await;
    }));
    TestApp {
        remote: Remote::new(base),
        host,
        _shutdown: shutdown,
    }
}

impl Remote {
    /// One value of the host's Prometheus metrics: the first line that starts with `series`
    /// (a name, with its labels if it has any), or none.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// The API at `base`, such as `http://127.0.0.1:8080`.
    pub fn new(base: String) -> Self {
        Self {
            base,
            client: reqwest::Client::new(),
        }
    }

    /// The API at `base`, every request carrying `token` as `Authorization: Bearer`.
    pub fn with_token(base: String, token: &str) -> Self {
        use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
        headers.insert(AUTHORIZATION, value);
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("an HTTP client");
        Self { base, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as JSON to /api/tasks.
    pub async fn submit(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/tasks"))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs to `path` with the admin token `token`: the status and the JSON body.
    pub async fn admin_post(&self, path: &str, token: &str) -> (u16, Value) {
        let answer = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        let status = answer.status().as_u16();
        (status, answer.json().await.expect("a JSON body"))
    }

    /// POSTs `body` as JSON to `path`: the status and the JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = answer.status().as_u16();
        (status, answer.json().await.expect("a JSON body"))
    }

    /// POSTs each body of `cases` to `path` and checks it is refused with `400` and an error
    /// that says its reason.
    pub async fn assert_refused(&self, path: &str, cases: &[(Value, &str)]) {
        for (body, reason) in cases {
            let (status, answer) = self.post(path, body.clone()).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert!(
                answer["error"].as_str().is_some_and(|e| e.contains(reason)),
                "{body}: {answer}"
            );
        }
    }

    /// The tasks schedule `name` created, oldest first.
    pub async fn schedule_tasks(&self, name: &str) -> Vec<Value> {
        let (status, page) = self
            .get(&format!("/api/tasks?schedule={name}&limit=1000"))
            .await;
        assert_eq!(status, 200, "{page}");
        let mut tasks = page["tasks"].as_array().expect("tasks").clone();
        tasks.reverse();
        tasks
    }

    /// Waits until schedule `name` has created at least `n` tasks: them, oldest first.
    pub async fn wait_schedule_tasks(&self, name: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let tasks = self.schedule_tasks(name).await;
            if tasks.len() >= n {
                return tasks;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} made {} of {n} tasks",
                tasks.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for each of `pids` to end, each exited 0: their records, in order.
    pub async fn wait_exits_0<'a>(&self, pids: impl IntoIterator<Item = &'a String>) -> Vec<Value> {
        let mut ended = Vec::new();
        for pid in pids {
            let record = self.wait_end(pid).await;
            assert_eq!(record["exit_code"], 0, "{record}");
            ended.push(record);
        }
        ended
    }

    /// Submits a task that must be accepted, and returns its pid.
    pub async fn spawn(&self, body: Value) -> String {
        let response = self.submit(body).await;
        assert_eq!(response.status(), 202, "task accepted");
        let body: Value = response.json().await.expect("JSON body");
        body["pid"].as_str().expect("pid").to_owned()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// DELETE /api/tasks/{pid}: the status code and body.
    pub async fn kill(&self, pid: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.url(&format!("/api/tasks/{pid}")))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Waits until the task is running.
    pub async fn wait_running(&self, pid: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (_, record) = self.get(&format!("/api/tasks/{pid}")).await;
            if record["status"] == "running" {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never ran: {record}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The task's record once it has ended.
    pub async fn wait_end(&self, pid: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, record) = self.get(&format!("/api/tasks/{pid}")).await;
            assert_eq!(status, 200, "task {pid} known: {record}");
            if matches!(
                record["status"].as_str(),
                Some("exited" | "failed" | "killed")
            ) {
                return record;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {pid} did not end: {record}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs one task to its end.
    pub async fn run(&self, body: Value) -> Value {
        let pid = self.spawn(body).await;
        self.wait_end(&pid).await
    }

    /// Runs a task named `good` (which every test worker treats as "behave") to its end and
    /// checks it exited 0: the host is up and other tasks are untouched.
    pub async fn assert_good_task_exits_0(&self) {
        let record = self.run(json!({"name": "good", "duration": 0})).await;
        assert_eq!(record["status"], "exited", "{record}");
        assert_eq!(record["exit_code"], 0, "{record}");
    }
}

/// Reads SSE events (name, data) from `response` until the stream ends, `stop` says so, or
/// patience runs out.
pub async fn read_events(
    mut response: reqwest::Response,
    stop: impl Fn(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    name = rest.trim().to_owned();
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push_str(rest.trim_start());
                }
            }
            if name.is_empty() {
                continue; // a keep-alive comment
            }
            let data: Value = serde_json::from_str(&data).expect("event data is JSON");
            let done = stop(&name, &data);
            events.push((name, data));
            if done {
                return events;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events arrive within patience")
            .expect("stream readable");
        match chunk {
            Some(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            None => return events,
        }
    }
}

/// A record's time field (RFC 3339) as a system time.
pub fn time_of(record: &Value, field: &str) -> std::time::SystemTime {
    let text = record[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field}: {record}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|_| panic!("{field} {text:?}"))
}

/// Each of schedule `name`'s `tasks` names it, and no tick made two of them.
pub fn assert_one_task_per_tick(name: &str, tasks: &[Value]) {
    let mut ticks: Vec<std::time::SystemTime> = tasks
        .iter()
        .map(|task| {
            assert_eq!(task["schedule"], name, "{task}");
            time_of(task, "schedule_tick")
        })
        .collect();
    let n = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick fired twice: {tasks:?}");
}

/// When each of `tasks` (records) ran its last attempt: (start, end, its concurrency key).
pub fn intervals(tasks: &[Value]) -> Vec<(SystemTime, SystemTime, String)> {
    tasks
        .iter()
        .map(|task| {
            (
                time_of(task, "started_at"),
                time_of(task, "ended_at"),
                task["concurrency_key"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The most of `intervals` (those `keep` keeps) that ran at one moment.
pub fn most_at_once(
    intervals: &[(SystemTime, SystemTime, String)],
    keep: impl Fn(&str) -> bool,
) -> usize {
    intervals
        .iter()
        .filter(|(_, _, key)| keep(key))
        .map(|(start, _, _)| {
            intervals
                .iter()
                .filter(|(s, e, key)| keep(key) && s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0)
}
