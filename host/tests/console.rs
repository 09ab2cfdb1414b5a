//! The console (issue #22) as the Wippy example's user reads it: start the real binary with the
//! default `RUST_LOG=info`, spawn three tasks, and read what it printed. Each task event is
//! there once: the host's own spawn and end, and the worker's lines with the task's pid and
//! name, in text and in JSON; no colour codes when the output is not a terminal; and a console
//! nobody reads slows no task.

mod common;

use std::collections::BTreeMap;

use common::process::Binary;
use common::workers::{actor, registry};
use common::{module, temp_dir};
use serde_json::{Value, json};

/// One line of the console, as a test reads it.
#[derive(Debug)]
struct Line {
    message: String,
    pid: Option<String>,
    name: Option<String>,
    /// Every other field, as written.
    fields: BTreeMap<String, String>,
}

/// The console of a host that ran the three tasks of the example (durations 1, 2 and 3) to
/// their end and stopped, in `format`: the pids and every line.
async fn three_tasks(format: &str) -> (Vec<String>, Vec<Line>, String) {
    let dir = temp_dir(&format!("console-{format}"));
    let log = dir.join("console.log");
    let worker = module("default").display().to_string();
    let args: Vec<String> = [
        "--store",
        "memory",
        "--module",
        &worker,
        "--log-format",
        format,
    ]
    .map(String::from)
    .to_vec();
    let mut host = Binary::spawn_logging(&args, &[("RUST_LOG", "info")], None, Some(&log));
    host.ready().await;
    let mut pids = Vec::new();
    for (n, duration) in [1, 2, 3].into_iter().enumerate() {
        pids.push(
            host.spawn(json!({"name": format!("task-{}", n + 1), "duration": duration}))
                .await,
        );
    }
    for pid in &pids {
        assert_eq!(host.wait_end(pid).await["exit_code"], 0);
    }
    // A graceful stop writes whatever the console's thread still holds.
    host.stop();
    let text = std::fs::read_to_string(&log).expect("the console");
    let lines = text
        .lines()
        .map(|line| match format {
            "json" => json_line(line),
            _ => text_line(line),
        })
        .collect();
    (pids, lines, text)
}

fn json_line(line: &str) -> Line {
    let value: Value =
        serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
    let text = |key: &str| {
        value
            .get(key)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_owned))
    };
    let fields = value
        .as_object()
        .expect("an object")
        .iter()
        .map(|(key, v)| (key.clone(), v.as_str().map_or(v.to_string(), str::to_owned)))
        .collect();
    Line {
        message: text("message").expect("a message"),
        pid: text("pid"),
        name: text("name"),
        fields,
    }
}

/// A text line: `TIMESTAMP LEVEL TARGET: MESSAGE pid=... key=value ...`. The host writes a
/// task's fields from `pid` on; what comes before is the message, the worker's own
/// `key=value` words included.
fn text_line(line: &str) -> Line {
    let rest = line.split_once(": ").map_or(line, |(_, rest)| rest);
    let (message, fields) = match rest.find(" pid=") {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let fields: BTreeMap<String, String> = fields
        .split(' ')
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    Line {
        message: message.to_owned(),
        pid: fields.get("pid").cloned(),
        name: fields.get("name").cloned(),
        fields,
    }
}

/// The lines of task `pid`.
fn events_of<'a>(lines: &'a [Line], pid: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|line| line.pid.as_deref() == Some(pid))
        .collect()
}

/// How often each message came, the worker's own with their numbers cut (`Worker progress
/// step=2 total=3` counts as `Worker progress`).
fn counts(lines: &[&Line]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let event = ["Worker started", "Worker progress"]
            .into_iter()
            .find(|event| line.message.starts_with(event))
            .map_or(line.message.clone(), str::to_owned);
        *counts.entry(event).or_insert(0) += 1;
    }
    counts
}

/// What each of the three tasks must have printed, and nothing more: the task of duration `d`
/// logs `d` progress lines.
fn assert_each_event_once(pids: &[String], lines: &[Line]) {
    for (n, pid) in pids.iter().enumerate() {
        let mine = events_of(lines, pid);
        let expected: BTreeMap<String, usize> = [
            ("Task process spawned", 1),
            ("Worker started", 1),
            ("Worker progress", n + 1),
            ("Worker done, exiting", 1),
            ("Task process ended", 1),
        ]
        .into_iter()
        .map(|(event, count)| (event.to_owned(), count))
        .collect();
        assert_eq!(counts(&mine), expected, "{pid}: {mine:#?}");
        let name = format!("task-{}", n + 1);
        for line in &mine {
            // Every line names its task; none carries the host's step beside the worker's.
            assert_eq!(line.name.as_deref(), Some(name.as_str()), "{line:?}");
            assert!(!line.fields.contains_key("step"), "{line:?}");
        }
        let ended = mine
            .iter()
            .find(|line| line.message == "Task process ended")
            .expect("an end line");
        assert_eq!(
            ended.fields.get("status").map(String::as_str),
            Some("exited")
        );
        assert_eq!(ended.fields.get("exit_code").map(String::as_str), Some("0"));
        assert!(
            ended
                .fields
                .get("ran")
                .is_some_and(|ran| ran.ends_with('s')),
            "{ended:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_each_task_event_once() {
    let (pids, lines, text) = three_tasks("text").await;
    assert_each_event_once(&pids, &lines);
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_console_shows_each_task_event_once() {
    let (pids, lines, _) = three_tasks("json").await;
    assert_each_event_once(&pids, &lines);
    for line in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(line.fields.contains_key(field), "{field} missing: {line:?}");
        }
    }
}

/// A console that cannot be written (a pipe nobody reads, a stalled terminal or journal) does
/// not slow the tasks: the host drops the lines it cannot hand over, and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_console_drops_lines_and_slows_no_task() {
    let dir = temp_dir("console-stalled");
    let args: Vec<String> = [
        "--store",
        "memory",
        "--config",
        &registry(&dir, "").display().to_string(),
        "--max-log-bytes",
        "1048576",
    ]
    .map(String::from)
    .to_vec();
    // Held, never read: once the pipe's 64 KiB are full, a write to it would wait forever.
    let (host, _stdout) = Binary::spawn_piped(&args, &[("RUST_LOG", "info")]);
    host.ready().await;
    // 200 tasks of 1,000 lines each: about 26 MB, more than the console buffers (16 MiB).
    let ops: Vec<_> = (0..1000)
        .map(|_| json!({"op": "whereis", "name": "nobody"}))
        .collect();
    let mut pids = Vec::new();
    for n in 0..200 {
        pids.push(host.spawn(actor(&format!("chatty-{n}"), json!(ops))).await);
    }
    for pid in &pids {
        let record = host.wait_end(pid).await;
        assert_eq!(record["status"], "exited", "{record}");
    }
    let dropped = host
        .metric("http_spawn_log_lines_dropped_total")
        .await
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "no console line was dropped");
}
