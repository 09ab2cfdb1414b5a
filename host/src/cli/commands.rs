//! What each client subcommand does: the requests it makes and what it prints.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Command;
use super::client::{Auth, Client, Failure};
use super::output::{self, Format};
use super::sse::{SseEvent, SseParser};

/// Exit codes of `spawn --wait`, beside the task's own exit code (documented in README).
pub const EXIT_FAILED: i32 = 70;
pub const EXIT_KILLED: i32 = 137;
pub const EXIT_STILL_RUNNING: i32 = 124;
pub const EXIT_ERROR_WAITING: i32 = 125;

/// The longest single wait asked of the host (its `--max-wait-secs` is 60 by default).
const WAIT_CHUNK: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// The task's name.
    name: String,
    /// Its duration in seconds, for workers that take one.
    #[arg(long)]
    duration: Option<u32>,
    /// The worker to run (the default worker if none).
    #[arg(long)]
    worker: Option<String>,
    /// The payload: JSON, or @file to read it from a file (@- for stdin).
    #[arg(long)]
    payload: Option<String>,
    /// `off`, `every step` or `every <duration>`.
    #[arg(long)]
    checkpoint: Option<String>,
    /// 0 to 9, 9 first.
    #[arg(long)]
    priority: Option<u8>,
    /// Its wall-clock limit in seconds from its start.
    #[arg(long)]
    deadline: Option<u32>,
    /// `never` or `on-failure`.
    #[arg(long)]
    restart: Option<String>,
    /// Start it this many seconds from now.
    #[arg(long)]
    delay: Option<u64>,
    /// Wait for its end (at most SECS seconds, if given), print it and exit with the task's
    /// exit code: 70 if it failed, 137 if it was killed, 124 if it had not ended in time, 125
    /// if the wait itself failed.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "0")]
    wait: Option<f64>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only tasks in this state (`spawned`, `scheduled`, `running`, `exited`, `failed`,
    /// `killed`).
    #[arg(long, conflicts_with = "all")]
    status: Option<String>,
    /// Only tasks of this worker.
    #[arg(long)]
    worker: Option<String>,
    /// Only tasks with this name.
    #[arg(long)]
    name: Option<String>,
    /// Every task, whatever its state (the newest first), not only the running ones.
    #[arg(short, long)]
    all: bool,
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Lists the workers and their current versions.
    Ls,
    /// Uploads a component as a worker's new version (admin).
    Deploy {
        name: String,
        /// The `.wasm` component.
        file: std::path::PathBuf,
    },
    /// Makes a worker's previous version current again (admin).
    Rollback { name: String },
    /// Holds a worker's new tasks until it is resumed (admin).
    Pause { name: String },
    /// Starts what a paused worker held (admin).
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Lists the schedules.
    Ls,
    /// Adds a schedule: a task submitted at each tick of a cron expression.
    Add {
        name: String,
        /// A cron expression (`*/5 * * * *`).
        #[arg(long)]
        cron: String,
        /// The task to submit, as `POST /api/tasks` takes it: JSON, or @file.
        #[arg(long)]
        task: String,
        /// An IANA time zone (UTC if none).
        #[arg(long)]
        timezone: Option<String>,
        /// `skip`, `allow` or `cancel_previous`.
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Pauses a schedule: no ticks until resumed.
    Pause { name: String },
    /// Resumes a paused schedule.
    Resume { name: String },
    /// Removes a schedule.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Has host NAME checkpoint its tasks that take checkpoints and hand them to the others
    /// (admin).
    Drain { name: String },
}

/// Runs `command`: the exit code.
pub async fn run(client: &Client, format: Format, command: Command) -> Result<i32, Failure> {
    match command {
        Command::Spawn(args) => spawn(client, format, args).await,
        Command::Ps(args) => ps(client, format, args).await,
        Command::Get { pid } => {
            let (_, record) = client
                .json(Method::GET, &task_path(&pid, ""), None, Auth::Api)
                .await?;
            print(format, &record, output::print_fields);
            Ok(0)
        }
        Command::Logs { pid, follow } => logs(client, format, &pid, follow).await,
        Command::Kill { pid } => {
            let (status, record) = client
                .json(Method::DELETE, &task_path(&pid, ""), None, Auth::Api)
                .await?;
            print(format, &record, |record| {
                let how = if status == StatusCode::ACCEPTED {
                    "kill asked (not yet recorded)".to_owned()
                } else {
                    output::text(&record["status"])
                };
                println!("{} {how}", output::text(&record["pid"]));
            });
            Ok(0)
        }
        Command::Send { pid, message } => {
            let body = json_argument("message", &message)?;
            let (_, answer) = client
                .json(
                    Method::POST,
                    &task_path(&pid, "/messages"),
                    Some(&body),
                    Auth::Api,
                )
                .await?;
            print(format, &answer, |answer| {
                println!("{}", output::text(&answer["pid"]));
            });
            Ok(0)
        }
        Command::Call {
            pid,
            message,
            timeout,
        } => call(client, format, &pid, &message, timeout).await,
        Command::Events => {
            follow(client, "/api/events", |event| {
                print_event(format, &event);
                true
            })
            .await?;
            Ok(0)
        }
        Command::Workers(command) => workers(client, format, command).await,
        Command::Schedules(command) => schedules(client, format, command).await,
        Command::Cluster { command } => cluster(client, format, command).await,
        Command::Health => {
            let (_, health) = client
                .json(Method::GET, "/api/health", None, Auth::Api)
                .await?;
            print(format, &health, output::print_fields);
            Ok(0)
        }
        Command::Top(args) => super::top::run(client, args).await,
        // Handled before a runtime is made.
        Command::Serve { .. } | Command::Completions { .. } => Ok(0),
    }
}

/// Prints `value` as `format` says: its JSON, or as `human` prints it.
fn print(format: Format, value: &Value, human: impl FnOnce(&Value)) {
    match format {
        Format::Json => output::print_json(value),
        Format::Table => human(value),
    }
}

/// The path of task `pid`'s route `rest` (`""`, `/logs`, ...); `pid` may be `name:<name>`.
fn task_path(pid: &str, rest: &str) -> String {
    format!("/api/tasks/{}{rest}", segment(pid))
}

/// `text` made safe as one segment of a URL's path.
fn segment(text: &str) -> String {
    let mut safe = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            safe.push(char::from(byte));
        } else {
            safe.push_str(&format!("%{byte:02X}"));
        }
    }
    safe
}

/// A JSON argument: the text itself, or `@file` read from a file (`@-`: stdin).
fn json_argument(what: &str, argument: &str) -> Result<Value, Failure> {
    let text = match argument.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin())
            .map_err(|error| Failure::new(format!("reading the {what} from stdin: {error}")))?,
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| Failure::new(format!("reading the {what} from {path}: {error}")))?,
        None => argument.to_owned(),
    };
    serde_json::from_str(&text)
        .map_err(|error| Failure::new(format!("the {what} is not JSON: {error}")))
}

async fn spawn(client: &Client, format: Format, args: SpawnArgs) -> Result<i32, Failure> {
    let mut body = json!({"name": args.name});
    let fields = [
        ("duration", args.duration.map(Value::from)),
        ("worker", args.worker.map(Value::from)),
        ("checkpoint", args.checkpoint.map(Value::from)),
        ("priority", args.priority.map(Value::from)),
        ("deadline", args.deadline.map(Value::from)),
        ("restart", args.restart.map(Value::from)),
        ("delay", args.delay.map(Value::from)),
    ];
    for (field, value) in fields {
        if let Some(value) = value {
            body[field] = value;
        }
    }
    if let Some(payload) = &args.payload {
        body["payload"] = json_argument("payload", payload)?;
    }
    let (_, accepted) = client
        .json(Method::POST, "/api/tasks", Some(&body), Auth::Api)
        .await?;
    let pid = output::text(&accepted["pid"]);
    let Some(wait) = args.wait else {
        print(format, &accepted, |_| println!("{pid}"));
        return Ok(0);
    };
    // `--wait` alone waits for as long as the task takes.
    let until = if wait > 0.0 {
        Some(Instant::now() + seconds("--wait", wait)?)
    } else if wait == 0.0 {
        None
    } else {
        return Err(Failure::new("--wait must be a number of seconds"));
    };
    let end = match wait_for_end(client, &pid, until).await {
        Ok(end) => end,
        Err(failure) => {
            return Err(Failure {
                code: EXIT_ERROR_WAITING,
                ..failure
            });
        }
    };
    print(format, &end, output::print_fields);
    Ok(exit_code(&end))
}

/// Waits for task `pid`'s end until `until` (none: for as long as it takes): the answer of
/// `/result`, ended or not.
async fn wait_for_end(
    client: &Client,
    pid: &str,
    until: Option<Instant>,
) -> Result<Value, Failure> {
    // Waits the host holds, as long as its `--max-wait-secs` allows; a host that allows none
    // is asked again every half second.
    let mut longest = WAIT_CHUNK;
    loop {
        let left = until.map_or(longest, |until| {
            until.saturating_duration_since(Instant::now())
        });
        // Whole seconds, as the host takes them: a fraction left is waited as a second.
        let chunk = Duration::from_secs(left.min(longest).as_secs_f64().ceil() as u64);
        let path = format!("{}?wait={}", task_path(pid, "/result"), chunk.as_secs());
        let answer = client
            .json_within(
                Method::GET,
                &path,
                None,
                Auth::Api,
                chunk + Duration::from_secs(30),
            )
            .await;
        let (status, end) = match answer {
            Ok(answer) => answer,
            Err(failure) if failure.message.starts_with("400: ") && !longest.is_zero() => {
                longest = Duration::ZERO;
                continue;
            }
            Err(failure) => return Err(failure),
        };
        if status == StatusCode::OK || until.is_some_and(|until| Instant::now() >= until) {
            return Ok(end);
        }
        if chunk.is_zero() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `secs` (a flag's value) as a duration, or why it is not one.
pub fn seconds(flag: &str, secs: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|duration| duration.as_secs() <= 366 * 24 * 3600)
        .ok_or_else(|| Failure::new(format!("{flag} must be a number of seconds up to a year")))
}

/// The exit code `spawn --wait` leaves with for the task's end `end`.
pub fn exit_code(end: &Value) -> i32 {
    match end["status"].as_str() {
        Some("exited") => {
            let code = end["exit_code"].as_i64().unwrap_or(0);
            match i32::try_from(code & 0xff) {
                Ok(0) if code != 0 => 1,
                Ok(code) => code,
                Err(_) => 1,
            }
        }
        Some("failed") => EXIT_FAILED,
        Some("killed") => EXIT_KILLED,
        _ => EXIT_STILL_RUNNING,
    }
}

async fn ps(client: &Client, format: Format, args: PsArgs) -> Result<i32, Failure> {
    let status = match (&args.status, args.all) {
        (Some(status), _) => Some(status.as_str()),
        (None, true) => None,
        (None, false) => Some("running"),
    };
    let mut query = vec![format!("limit={}", args.limit)];
    for (key, value) in [
        ("status", status),
        ("worker", args.worker.as_deref()),
        ("name", args.name.as_deref()),
    ] {
        if let Some(value) = value {
            query.push(format!("{key}={}", segment(value)));
        }
    }
    let (_, page) = client
        .json(
            Method::GET,
            &format!("/api/tasks?{}", query.join("&")),
            None,
            Auth::Api,
        )
        .await?;
    print(format, &page, |page| {
        let now = SystemTime::now();
        let mut table = output::table(&["pid", "name", "worker", "status", "step", "age"]);
        for task in page["tasks"].as_array().into_iter().flatten() {
            let step = match (task["step"].as_u64(), task["steps"].as_u64()) {
                (Some(step), Some(steps)) if steps > 0 => format!("{step}/{steps}"),
                (Some(step), _) => step.to_string(),
                _ => "-".to_owned(),
            };
            table.add_row(vec![
                comfy_table::Cell::new(output::text(&task["pid"])),
                comfy_table::Cell::new(output::text(&task["name"])),
                comfy_table::Cell::new(output::text(&task["worker"])),
                output::status_cell(task["status"].as_str().unwrap_or("-")),
                comfy_table::Cell::new(step),
                comfy_table::Cell::new(output::age(&task["spawned_at"], now)),
            ]);
        }
        output::print_table(&table);
    });
    Ok(0)
}

/// One line of a task's log as people read it.
fn print_line(line: &Value) {
    let source = line["source"].as_str().unwrap_or("");
    let at = output::text(&line["at"]);
    let message = output::text(&line["message"]);
    if source.is_empty() || source == "log" {
        println!("{at} {message}");
    } else {
        println!("{at} [{source}] {message}");
    }
}

async fn logs(client: &Client, format: Format, pid: &str, follow: bool) -> Result<i32, Failure> {
    if !follow {
        let (_, logs) = client
            .json(Method::GET, &task_path(pid, "/logs"), None, Auth::Api)
            .await?;
        print(format, &logs, |logs| {
            logs["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .for_each(print_line);
        });
        return Ok(0);
    }
    // The stream first, then what was logged before it: a line in both is printed once.
    let request = client.request(Method::GET, &task_path(pid, "/events"), Auth::Api, None);
    let mut stream = client.send(request).await?;
    let mut parser = SseParser::default();
    let mut pending: Vec<SseEvent> = Vec::new();
    // Until the stream's first event (`state`): the host has subscribed this client.
    while pending.is_empty() {
        match stream
            .chunk()
            .await
            .map_err(|error| client.unreached(&error))?
        {
            Some(bytes) => pending.extend(parser.feed(&bytes)),
            None => return Ok(0),
        }
    }
    let (_, logs) = client
        .json(Method::GET, &task_path(pid, "/logs"), None, Auth::Api)
        .await?;
    let show = |line: &Value| match format {
        Format::Json => println!("{line}"),
        Format::Table => print_line(line),
    };
    // The lines read, each once: a line the stream brings again is one of them, matched once
    // (a task may log the same line twice in a millisecond).
    let mut read: HashMap<(String, String, String), usize> = HashMap::new();
    let key = |line: &Value| {
        (
            output::text(&line["at"]),
            output::text(&line["source"]),
            output::text(&line["message"]),
        )
    };
    for line in logs["lines"].as_array().into_iter().flatten() {
        show(line);
        *read.entry(key(line)).or_default() += 1;
    }
    let mut act = |event: SseEvent| -> bool {
        match event.event.as_str() {
            "log" => {
                if let Ok(line) = serde_json::from_str::<Value>(&event.data) {
                    match read.get_mut(&key(&line)) {
                        Some(count) if *count > 0 => *count -= 1,
                        _ => show(&line),
                    }
                }
                true
            }
            "exit" => false,
            _ => true,
        }
    };
    for event in pending {
        if !act(event) {
            return Ok(0);
        }
    }
    if pump(client, &mut stream, &mut parser, act).await? {
        return Ok(0);
    }
    Err(Failure::new(format!(
        "the host closed the stream before task {pid} ended"
    )))
}

/// Follows the SSE stream at `path`, calling `act` with each event until it says to stop or
/// the stream ends.
async fn follow(
    client: &Client,
    path: &str,
    act: impl FnMut(SseEvent) -> bool,
) -> Result<(), Failure> {
    let request = client.request(Method::GET, path, Auth::Api, None);
    let mut stream = client.send(request).await?;
    pump(client, &mut stream, &mut SseParser::default(), act).await?;
    Ok(())
}

/// Reads `stream` through `parser`, calling `act` with each event: true once `act` says to
/// stop, false if the stream ends first.
async fn pump(
    client: &Client,
    stream: &mut reqwest::Response,
    parser: &mut SseParser,
    mut act: impl FnMut(SseEvent) -> bool,
) -> Result<bool, Failure> {
    while let Some(bytes) = stream
        .chunk()
        .await
        .map_err(|error| client.unreached(&error))?
    {
        for event in parser.feed(&bytes) {
            if !act(event) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// An event of `/api/events`: one line for people, `{event, data}` for scripts.
fn print_event(format: Format, event: &SseEvent) {
    let data: Value =
        serde_json::from_str(&event.data).unwrap_or(Value::String(event.data.clone()));
    match format {
        Format::Json => println!("{}", json!({"event": event.event, "data": data})),
        Format::Table => {
            let pid = output::text(&data["pid"]);
            let mut rest = data.clone();
            if let Value::Object(fields) = &mut rest {
                fields.remove("pid");
            }
            println!("{:<12} {pid} {rest}", event.event);
        }
    }
}

async fn call(
    client: &Client,
    format: Format,
    pid: &str,
    message: &str,
    timeout: f64,
) -> Result<i32, Failure> {
    let body = json_argument("call", message)?;
    let within = seconds("--timeout", timeout)?;
    if within.is_zero() {
        return Err(Failure::new(
            "--timeout must be a positive number of seconds",
        ));
    }
    let path = format!("{}?timeout={timeout}", task_path(pid, "/calls"));
    let request = client
        .request(
            Method::POST,
            &path,
            Auth::Api,
            Some(within + Duration::from_secs(30)),
        )
        .json(&body);
    let answer = client.send(request).await?;
    let text = answer
        .text()
        .await
        .map_err(|error| Failure::new(format!("reading the answer: {error}")))?;
    match (format, serde_json::from_str::<Value>(&text)) {
        (Format::Json, Ok(value)) => output::print_json(&value),
        (Format::Json, Err(_)) => println!("{}", Value::String(text)),
        (Format::Table, _) => println!("{text}"),
    }
    Ok(0)
}

async fn workers(client: &Client, format: Format, command: WorkersCommand) -> Result<i32, Failure> {
    let (path, method, auth, body) = match &command {
        WorkersCommand::Ls => {
            let (_, list) = client
                .json(Method::GET, "/api/workers", None, Auth::Api)
                .await?;
            print(format, &list, |list| {
                let now = SystemTime::now();
                let mut table = output::table(&[
                    "name",
                    "version",
                    "size",
                    "checkpoint",
                    "paused",
                    "installed",
                ]);
                for worker in list["workers"].as_array().into_iter().flatten() {
                    let current = &worker["current"];
                    let mut name = output::text(&worker["name"]);
                    if worker["default"] == true {
                        name.push_str(" (default)");
                    }
                    table.add_row(vec![
                        name,
                        output::text(&current["version"]),
                        output::text(&current["size_bytes"]),
                        output::text(&worker["checkpoint"]),
                        output::text(&worker["paused"]),
                        output::age(&current["installed_at"], now),
                    ]);
                }
                output::print_table(&table);
            });
            return Ok(0);
        }
        WorkersCommand::Deploy { name, file } => {
            let bytes = std::fs::read(file)
                .map_err(|error| Failure::new(format!("reading {}: {error}", file.display())))?;
            (
                format!("/api/workers/{}", segment(name)),
                Method::PUT,
                Auth::Admin,
                Some(bytes),
            )
        }
        WorkersCommand::Rollback { name } => (
            format!("/api/workers/{}/rollback", segment(name)),
            Method::POST,
            Auth::Admin,
            None,
        ),
        WorkersCommand::Pause { name } => (
            format!("/api/workers/{}/pause", segment(name)),
            Method::POST,
            Auth::Admin,
            None,
        ),
        WorkersCommand::Resume { name } => (
            format!("/api/workers/{}/resume", segment(name)),
            Method::POST,
            Auth::Admin,
            None,
        ),
    };
    let mut request = client.request(method, &path, auth, Some(Duration::from_secs(120)));
    if let Some(bytes) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(bytes);
    }
    let answer = client.send(request).await?;
    let answer: Value = answer
        .json()
        .await
        .map_err(|error| Failure::new(format!("reading the answer: {error}")))?;
    print(format, &answer, |answer| {
        // `deploy` answers `{changed, worker}`; the others the worker.
        let worker = if answer["worker"].is_object() {
            &answer["worker"]
        } else {
            answer
        };
        let mut line = format!(
            "{} {}",
            output::text(&worker["name"]),
            output::text(&worker["current"]["version"])
        );
        if answer["changed"] == false {
            line.push_str(" (unchanged)");
        }
        if worker["paused"] == true {
            line.push_str(" paused");
        }
        println!("{line}");
    });
    Ok(0)
}

async fn schedules(
    client: &Client,
    format: Format,
    command: SchedulesCommand,
) -> Result<i32, Failure> {
    let (method, path, body) = match command {
        SchedulesCommand::Ls => {
            let (_, list) = client
                .json(Method::GET, "/api/schedules", None, Auth::Api)
                .await?;
            print(format, &list, |list| {
                let mut table =
                    output::table(&["name", "cron", "timezone", "paused", "last tick", "next"]);
                for schedule in list["schedules"].as_array().into_iter().flatten() {
                    table.add_row(vec![
                        output::text(&schedule["name"]),
                        output::text(&schedule["cron"]),
                        output::text(&schedule["timezone"]),
                        output::text(&schedule["paused"]),
                        output::text(&schedule["last_tick"]),
                        output::text(&schedule["next"][0]),
                    ]);
                }
                output::print_table(&table);
            });
            return Ok(0);
        }
        SchedulesCommand::Add {
            name,
            cron,
            task,
            timezone,
            overlap,
        } => {
            let mut body =
                json!({"name": name, "cron": cron, "task": json_argument("task", &task)?});
            if let Some(timezone) = timezone {
                body["timezone"] = timezone.into();
            }
            if let Some(overlap) = overlap {
                body["overlap"] = overlap.into();
            }
            (Method::POST, "/api/schedules".to_owned(), Some(body))
        }
        SchedulesCommand::Pause { name } => (
            Method::POST,
            format!("/api/schedules/{}/pause", segment(&name)),
            None,
        ),
        SchedulesCommand::Resume { name } => (
            Method::POST,
            format!("/api/schedules/{}/resume", segment(&name)),
            None,
        ),
        SchedulesCommand::Rm { name } => (
            Method::DELETE,
            format!("/api/schedules/{}", segment(&name)),
            None,
        ),
    };
    let (_, answer) = client.json(method, &path, body.as_ref(), Auth::Api).await?;
    print(format, &answer, |answer| {
        if answer.is_object() {
            output::print_fields(answer);
        }
    });
    Ok(0)
}

async fn cluster(
    client: &Client,
    format: Format,
    command: Option<ClusterCommand>,
) -> Result<i32, Failure> {
    if let Some(ClusterCommand::Drain { name }) = command {
        let (_, drained) = client
            .json_within(
                Method::POST,
                &format!("/api/cluster/nodes/{}/drain", segment(&name)),
                None,
                Auth::Admin,
                Duration::from_secs(120),
            )
            .await?;
        print(format, &drained, output::print_fields);
        return Ok(0);
    }
    let (_, cluster) = client
        .json(Method::GET, "/api/cluster", None, Auth::Api)
        .await?;
    print(format, &cluster, |cluster| {
        if cluster["clustered"] != true {
            println!("a host alone (not a cluster)");
            return;
        }
        let now = SystemTime::now();
        let mut table = output::table(&[
            "node",
            "name",
            "state",
            "address",
            "live",
            "queued",
            "capacity",
            "heartbeat",
        ]);
        for node in cluster["nodes"].as_array().into_iter().flatten() {
            let mut name = output::text(&node["name"]);
            if node["id"] == cluster["node"] {
                name.push_str(" *");
            }
            table.add_row(vec![
                output::text(&node["id"]),
                name,
                output::text(&node["state"]),
                output::text(&node["address"]),
                output::text(&node["live_tasks"]),
                output::text(&node["queued_tasks"]),
                output::text(&node["capacity"]),
                format!("{} ago", output::age(&node["last_heartbeat"], now)),
            ]);
        }
        output::print_table(&table);
    });
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_s_end_gives_the_exit_code() {
        let end = |status: &str, code: Value| json!({"status": status, "exit_code": code});
        assert_eq!(exit_code(&end("exited", json!(0))), 0);
        assert_eq!(exit_code(&end("exited", json!(7))), 7);
        assert_eq!(exit_code(&end("exited", json!(256))), 1);
        assert_eq!(exit_code(&end("exited", json!(-1))), 255);
        assert_eq!(exit_code(&end("failed", Value::Null)), EXIT_FAILED);
        assert_eq!(exit_code(&end("killed", Value::Null)), EXIT_KILLED);
        assert_eq!(exit_code(&end("running", Value::Null)), EXIT_STILL_RUNNING);
    }

    #[test]
    fn path_segments_are_escaped_but_names_keep_their_colon() {
        assert_eq!(segment("6f1c2a9e-1"), "6f1c2a9e-1");
        assert_eq!(segment("name:cache"), "name:cache");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
    }
}
