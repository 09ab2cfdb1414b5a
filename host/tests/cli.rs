//! The client subcommands end to end (issue #27): the real binary, run as a user runs it,
//! against a real host with API and admin tokens; `top` and `logs -f` in a terminal (a pty
//! that util-linux's `script` gives them).

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::process::Binary;
use common::{PATIENCE, temp_dir};
use serde_json::Value;

const TOKEN: &str = "cli-test-token-0123456789abcdef0123";
const ADMIN_TOKEN: &str = "cli-admin-token-0123456789abcdef012";

/// The binary as a client of `url`, with both tokens in its environment.
fn client(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_http-spawn"));
    command
        .env("HTTP_SPAWN_URL", url)
        .env("HTTP_SPAWN_TOKEN", TOKEN)
        .env("HTTP_SPAWN_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("NO_COLOR", "1");
    command
}

/// Runs `args` as a client of `url`: its output, once it has exited.
async fn run(url: &str, args: &[&str]) -> Output {
    let mut command = client(url);
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().expect("the client runs"))
        .await
        .expect("joined")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `args`, which must succeed: its stdout.
async fn ok(url: &str, args: &[&str]) -> String {
    let output = run(url, args).await;
    assert!(
        output.status.success(),
        "{args:?}: {:?}\n{}{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Runs `args`, which must fail with `code` and one line on stderr starting with `starts`.
async fn fails(url: &str, args: &[&str], code: i32, starts: &str) {
    let output = run(url, args).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {said}");
    assert_eq!(said.lines().count(), 1, "{args:?}: one line: {said}");
    assert!(said.starts_with(starts), "{args:?}: {said}");
}

/// A host with the default worker and the actor, asking for both tokens.
async fn host() -> Binary {
    let dir = temp_dir("cli");
    let registry = common::workers::registry(&dir, "");
    let args = [
        "--store".to_owned(),
        "memory".to_owned(),
        "--config".to_owned(),
        registry.display().to_string(),
    ];
    let host = Binary::spawn(
        &args,
        &[
            ("HTTP_SPAWN_API_TOKEN", TOKEN),
            ("HTTP_SPAWN_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
        Some(TOKEN),
    );
    host.ready().await;
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_spawned_listed_read_followed_and_killed() {
    let host = host().await;
    let url = host.base.clone();
    let health = ok(&url, &["health"]).await;
    assert!(health.contains("capacity"), "{health}");

    let pid = ok(&url, &["spawn", "demo", "--duration", "2"]).await;
    let pid = pid.trim().to_owned();
    assert!(!pid.is_empty() && !pid.contains(' '), "{pid:?}");
    // Running, or about to: listed among all of them.
    let ps = ok(&url, &["ps", "--all"]).await;
    let header = ps.lines().next().unwrap_or("");
    for column in ["PID", "NAME", "WORKER", "STATUS", "STEP", "AGE"] {
        assert!(header.contains(column), "{ps}");
    }
    assert!(
        ps.lines()
            .any(|line| line.starts_with(&pid) && line.contains("demo")),
        "{ps}"
    );
    // Followed until it ends: every line once, in order.
    let followed = ok(&url, &["logs", "-f", &pid]).await;
    let expected = [
        "Worker started steps=2",
        "Worker progress step=1 total=2",
        "Worker progress step=2 total=2",
        "Worker done, exiting",
    ];
    let said: Vec<&str> = followed
        .lines()
        .filter_map(|line| expected.iter().find(|e| line.ends_with(*e)).copied())
        .collect();
    assert_eq!(said, expected, "{followed}");
    let logs = ok(&url, &["logs", &pid]).await;
    assert_eq!(logs.lines().count(), 4, "{logs}");
    let record: Value =
        serde_json::from_str(&ok(&url, &["-o", "json", "get", &pid]).await).expect("JSON");
    assert_eq!(record["status"], "exited", "{record}");
    let page: Value =
        serde_json::from_str(&ok(&url, &["ps", "--all", "-o", "json"]).await).expect("JSON");
    assert!(
        page["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|task| task["pid"] == pid.as_str())),
        "{page}"
    );
    let listed = ok(&url, &["ps", "--status", "exited", "--name", "demo"]).await;
    assert_eq!(listed.lines().count(), 2, "{listed}");

    // `--wait`: the task's exit code, 70 for a failure, 124 for a task still running.
    let exit7 = r#"{"script":[{"op":"exit","code":7}]}"#;
    let waited = run(
        &url,
        &[
            "spawn",
            "seven",
            "--worker",
            "actor",
            "--payload",
            exit7,
            "--wait",
        ],
    )
    .await;
    assert_eq!(waited.status.code(), Some(7), "{}", stderr(&waited));
    assert!(stdout(&waited).contains("exited"), "{}", stdout(&waited));
    let trap = r#"{"script":[{"op":"trap"}]}"#;
    let waited = run(
        &url,
        &[
            "spawn",
            "trap",
            "--worker",
            "actor",
            "--payload",
            trap,
            "--wait=30",
        ],
    )
    .await;
    assert_eq!(waited.status.code(), Some(70), "{}", stderr(&waited));
    let waited = run(
        &url,
        &[
            "-o",
            "json",
            "spawn",
            "long",
            "--duration",
            "30",
            "--wait",
            "1",
        ],
    )
    .await;
    assert_eq!(waited.status.code(), Some(124), "{}", stderr(&waited));
    let end: Value = serde_json::from_slice(&waited.stdout).expect("JSON");
    let long = end["pid"].as_str().expect("a pid").to_owned();
    let killed = ok(&url, &["kill", &long]).await;
    assert_eq!(killed.trim(), format!("{long} killed"));
    let record: Value =
        serde_json::from_str(&ok(&url, &["get", "-o", "json", &long]).await).expect("JSON");
    assert_eq!(record["status"], "killed", "{record}");
    let got = ok(&url, &["get", &long]).await;
    assert!(
        got.lines()
            .any(|line| line.starts_with("status") && line.ends_with("killed")),
        "{got}"
    );

    // Errors: one line with the host's message, and a non-zero exit.
    fails(&url, &["get", "nope"], 1, "error: 404: ").await;
    fails(&url, &["kill", &long], 1, "error: 409: ").await;
    fails(
        &url,
        &["spawn", "x", "--payload", "{bad"],
        1,
        "error: the payload is not JSON",
    )
    .await;
    // A usage error is clap's, with its usage: exit 2.
    let usage = run(&url, &["spawn", "x", "--duration", "-1"]).await;
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    let mut untokened = client(&url);
    untokened.env_remove("HTTP_SPAWN_TOKEN").arg("ps");
    let output = tokio::task::spawn_blocking(move || untokened.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: 401: "),
        "{}",
        stderr(&output)
    );
    let closed = format!("http://{}", free_address());
    fails(&closed, &["ps"], 1, "error: http://").await;
    fails(
        &url,
        &["--url", "https://example.com", "ps"],
        1,
        "error: --url",
    )
    .await;
}

/// A loopback address nothing listens on.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener.local_addr().expect("its address").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_calls_events_workers_schedules_and_the_cluster() {
    let host = host().await;
    let url = host.base.clone();
    // A message, taken and logged by the actor.
    let receiver = ok(
        &url,
        &[
            "spawn",
            "receiver",
            "--worker",
            "actor",
            "--payload",
            r#"{"script":[{"op":"receive","timeout_ms":20000}]}"#,
        ],
    )
    .await;
    let receiver = receiver.trim();
    assert_eq!(
        ok(&url, &["send", receiver, r#"{"hi":1}"#]).await.trim(),
        receiver
    );
    host.wait_end(receiver).await;
    let lines = common::workers::logged(&host, receiver).await;
    assert!(
        lines
            .iter()
            .any(|line| line["got"] == "message" && line["body"]["hi"] == 1),
        "{lines:?}"
    );
    // A call, answered with its own body.
    let server = ok(
        &url,
        &[
            "spawn",
            "server",
            "--worker",
            "actor",
            "--payload",
            r#"{"script":[{"op":"serve","timeout_ms":20000}]}"#,
        ],
    )
    .await;
    let answer = ok(
        &url,
        &["call", server.trim(), r#"{"ping":true}"#, "--timeout", "10"],
    )
    .await;
    let answer: Value = serde_json::from_str(answer.trim()).expect("JSON");
    assert_eq!(answer["ping"], true, "{answer}");
    fails(&url, &["send", "name:nobody", "1"], 1, "error: 404: ").await;

    // Every task's events as they happen, until interrupted: tasks are submitted until one
    // is seen from its `spawned` to its `exit` (the client's subscription takes a moment).
    let mut events = client(&url);
    events.args(["-o", "json", "events"]).stdout(Stdio::piped());
    let mut events = events.spawn().expect("events runs");
    let out = events.stdout.take().expect("its stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut kinds: std::collections::HashMap<String, Vec<String>> = Default::default();
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let event: Value = serde_json::from_str(&line).expect("a JSON line");
            let pid = event["data"]["pid"].as_str().unwrap_or("").to_owned();
            let seen = kinds.entry(pid.clone()).or_default();
            seen.push(event["event"].as_str().unwrap_or("").to_owned());
            if seen.first().map(String::as_str) == Some("spawned")
                && seen.last().map(String::as_str) == Some("exit")
            {
                return (pid, seen.clone());
            }
        }
        (String::new(), Vec::new())
    });
    let deadline = Instant::now() + PATIENCE;
    let mut submitted = Vec::new();
    while !reader.is_finished() {
        assert!(
            Instant::now() < deadline,
            "no task seen from spawned to exit"
        );
        submitted.push(
            ok(&url, &["spawn", "watched", "--duration", "0"])
                .await
                .trim()
                .to_owned(),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = events.kill();
    let _ = events.wait();
    let (pid, kinds) = reader.join().expect("joined");
    assert!(submitted.contains(&pid), "{pid}: {submitted:?}");
    assert!(kinds.contains(&"started".to_owned()), "{kinds:?}");

    // Workers: listed, deployed, rolled back, paused and resumed (admin).
    let workers = ok(&url, &["workers", "ls"]).await;
    assert!(
        workers
            .lines()
            .any(|line| line.starts_with("default (default)")),
        "{workers}"
    );
    assert!(
        workers.lines().any(|line| line.starts_with("actor ")),
        "{workers}"
    );
    let version_of_actor = |list: &str| -> String {
        let list: Value = serde_json::from_str(list).expect("JSON");
        list["workers"]
            .as_array()
            .and_then(|workers| workers.iter().find(|worker| worker["name"] == "actor"))
            .map(|worker| {
                worker["current"]["version"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .expect("the actor worker")
    };
    let first = version_of_actor(&ok(&url, &["-o", "json", "workers", "ls"]).await);
    fails(&url, &["workers", "rollback", "actor"], 1, "error: 409: ").await;
    let report = common::module("report").display().to_string();
    let deployed = ok(&url, &["workers", "deploy", "actor", &report]).await;
    assert!(deployed.starts_with("actor "), "{deployed}");
    assert!(!deployed.contains(&first), "a new version: {deployed}");
    let rolled = ok(&url, &["workers", "rollback", "actor"]).await;
    assert_eq!(
        rolled.trim(),
        format!("actor {first}"),
        "back to the first version"
    );
    assert!(
        ok(&url, &["workers", "pause", "actor"])
            .await
            .contains("paused")
    );
    assert!(
        !ok(&url, &["workers", "resume", "actor"])
            .await
            .contains("paused")
    );
    let mut no_admin = client(&url);
    no_admin
        .env_remove("HTTP_SPAWN_ADMIN_TOKEN")
        .args(["workers", "pause", "actor"]);
    let output = tokio::task::spawn_blocking(move || no_admin.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).starts_with("error: 403: "),
        "{}",
        stderr(&output)
    );

    // Schedules.
    ok(
        &url,
        &[
            "schedules",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Berlin",
            "--task",
            r#"{"name":"tick","duration":0}"#,
        ],
    )
    .await;
    let listed = ok(&url, &["schedules", "ls"]).await;
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with("nightly") && line.contains("0 3 * * *")),
        "{listed}"
    );
    assert!(
        ok(&url, &["schedules", "pause", "nightly"])
            .await
            .contains("true")
    );
    ok(&url, &["schedules", "resume", "nightly"]).await;
    ok(&url, &["schedules", "rm", "nightly"]).await;
    assert!(!ok(&url, &["schedules", "ls"]).await.contains("nightly"));

    // A host alone, and completions.
    assert!(ok(&url, &["cluster"]).await.contains("a host alone"));
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&url, &["completions", shell]).await;
        assert!(
            script.contains("http-spawn") && script.contains("spawn"),
            "{shell}"
        );
    }
}

/// Runs `args` as a client of `url` in a pty, `keys` written to it once its output contains
/// `ready`: the exit code and everything it drew.
fn in_a_terminal(url: &str, args: &str, ready: &str, keys: &[u8]) -> (Option<i32>, String) {
    let keys = keys.to_vec();
    in_a_terminal_then(url, args, ready, move |stdin| {
        stdin.write_all(&keys).expect("keys written");
        stdin.flush().expect("flushed");
    })
}

/// The process whose arguments are `args` (NUL-separated, as /proc has them), if one runs.
fn process_with(args: &str) -> Option<i32> {
    let wanted = args.replace(' ', "\0");
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(&wanted)
            .then_some(pid)
    })
}

/// [`in_a_terminal`], doing `then` with its stdin once its output contains `ready`.
fn in_a_terminal_then(
    url: &str,
    args: &str,
    ready: &str,
    then: impl FnOnce(&mut std::process::ChildStdin),
) -> (Option<i32>, String) {
    let mut then = Some(then);
    let line = format!("{} {args}", env!("CARGO_BIN_EXE_http-spawn"));
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("HTTP_SPAWN_URL", url)
        .env("HTTP_SPAWN_TOKEN", TOKEN)
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = script.spawn().expect("util-linux's script runs");
    let mut out = child.stdout.take().expect("its stdout");
    let mut stdin = child.stdin.take().expect("its stdin");
    let (sender, drawn) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = out.read(&mut buffer) {
            if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(bytes) = drawn.recv_timeout(Duration::from_millis(50)) {
            seen.extend(bytes);
        }
        if String::from_utf8_lossy(&seen).contains(ready)
            && let Some(then) = then.take()
        {
            then(&mut stdin);
        }
        if let Some(status) = child.try_wait().expect("waited") {
            while let Ok(bytes) = drawn.recv_timeout(Duration::from_millis(200)) {
                seen.extend(bytes);
            }
            return (status.code(), String::from_utf8_lossy(&seen).into_owned());
        }
        assert!(
            Instant::now() < deadline,
            "{args} never ended: {}",
            String::from_utf8_lossy(&seen)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_and_logs_follow_draw_in_a_terminal_and_exit_cleanly() {
    let host = host().await;
    let url = host.base.clone();
    let pid = ok(&url, &["spawn", "shown", "--duration", "60"]).await;
    let pid = pid.trim().to_owned();
    let top_url = url.clone();
    let (code, drawn) = tokio::task::spawn_blocking(move || {
        in_a_terminal(&top_url, "top --interval 0.2", "started/s", b"q")
    })
    .await
    .expect("joined");
    assert_eq!(code, Some(0), "{drawn}");
    assert!(drawn.contains("live 1 / "), "{drawn}");
    assert!(drawn.contains(&pid), "the running task is listed: {drawn}");
    // Its own screen, given back.
    assert!(
        drawn.contains("\x1b[?1049h") && drawn.contains("\x1b[?1049l"),
        "{drawn:?}"
    );

    // SIGTERM ends it as `q` does, its screen given back.
    let top_url = url.clone();
    let (code, drawn) = tokio::task::spawn_blocking(move || {
        in_a_terminal_then(&top_url, "top --interval 0.3", "started/s", |_| {
            let top = process_with("top --interval 0.3").expect("top runs");
            // SAFETY: kill takes a pid and a signal number.
            assert_eq!(unsafe { libc::kill(top, libc::SIGTERM) }, 0);
        })
    })
    .await
    .expect("joined");
    assert_eq!(code, Some(0), "{drawn}");
    assert!(drawn.contains("\x1b[?1049l"), "{drawn:?}");

    ok(&url, &["kill", &pid]).await;
    let pid = ok(&url, &["spawn", "followed", "--duration", "2"]).await;
    let pid = pid.trim().to_owned();
    let (code, drawn) = tokio::task::spawn_blocking(move || {
        in_a_terminal(&url, &format!("logs -f {pid}"), "", b"")
    })
    .await
    .expect("joined");
    assert_eq!(code, Some(0), "{drawn}");
    assert!(drawn.contains("Worker done, exiting"), "{drawn}");
    assert_eq!(drawn.matches("Worker started").count(), 1, "{drawn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_subcommand_lists_the_hosts_and_drains_one() {
    let url = common::postgres::fresh_database("cli_cluster");
    let a = common::cluster::start_host(&url, "a", TOKEN, "", &[]).await;
    let _b = common::cluster::start_host(&url, "b", TOKEN, "", &[]).await;
    let mut command = client(&a.base);
    command
        .env("HTTP_SPAWN_ADMIN_TOKEN", common::cluster::ADMIN_TOKEN)
        .arg("cluster");
    let run_it = |mut command: Command| async move {
        tokio::task::spawn_blocking(move || command.output().expect("runs"))
            .await
            .expect("joined")
    };
    let listed = run_it(command).await;
    let table = stdout(&listed);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let header = table.lines().next().unwrap_or("");
    for column in ["NODE", "NAME", "STATE", "ADDRESS", "LIVE", "HEARTBEAT"] {
        assert!(header.contains(column), "{table}");
    }
    // Both hosts up; the one that answered marked.
    let up: Vec<&str> = table.lines().filter(|line| line.contains(" up ")).collect();
    assert_eq!(up.len(), 2, "{table}");
    assert!(up.iter().any(|line| line.contains("a *")), "{table}");
    let mut drain = client(&a.base);
    drain
        .env("HTTP_SPAWN_ADMIN_TOKEN", common::cluster::ADMIN_TOKEN)
        .args(["cluster", "drain", "b"]);
    let drained = run_it(drain).await;
    assert!(drained.status.success(), "{}", stderr(&drained));
    assert!(
        stdout(&drained).contains("handed_over"),
        "{}",
        stdout(&drained)
    );
}
