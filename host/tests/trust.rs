//! Bounds and trust end to end (issue #21): what one client, one guest or one web page may make
//! the host do, on the real binary where the host's own log or its process is what is checked.

mod common;

use std::time::Duration;

use common::process::Binary;
use common::temp_dir;
use common::workers::{actor, registry};
use serde_json::json;

/// Issue #21, item 6: text a client or a guest chose reaches the operator's log escaped (no
/// forged line, no terminal escape), and a guest's log calls reach it only up to the task's
/// share, `--max-log-bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_guest_lines_reach_the_host_log_escaped_and_capped() {
    let dir = temp_dir("trust-log");
    let log = dir.join("host.log");
    let args: Vec<String> = [
        "--store",
        "memory",
        "--config",
        &registry(&dir, "").display().to_string(),
        "--max-log-bytes",
        "4096",
        "--log-format",
        "text",
    ]
    .map(String::from)
    .to_vec();
    let host = Binary::spawn_logging(&args, &[("RUST_LOG", "info")], None, Some(&log));
    host.ready().await;
    let forged = "ok\n2026-12-06T00:00:00Z ERROR forged: a line the host never wrote \u{1b}[31m";
    let record = host.run(json!({"name": forged, "duration": 0})).await;
    assert_eq!(record["status"], "exited", "{record}");
    // 300 lookups, each logged as a line of about 40 bytes: three times the task's share.
    let ops: Vec<_> = (0..300)
        .map(|_| json!({"op": "whereis", "name": "nobody"}))
        .collect();
    let chatty = host.run(actor("chatty", json!(ops))).await;
    assert_eq!(chatty["status"], "exited", "{chatty}");
    let pid = chatty["pid"].as_str().expect("a pid").to_owned();
    // The log is written as it goes; what the host wrote by now is there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log).expect("the host's log");
    assert!(!text.contains('\u{1b}'), "a raw escape reached the log");
    assert!(
        !text
            .lines()
            .any(|line| line.starts_with("2026-12-06T00:00:00Z")),
        "a forged line: {text}"
    );
    assert!(text.contains("ok\\n2026-12-06T00:00:00Z"), "{text}");
    let lines = text
        .lines()
        .filter(|line| line.contains(&pid) && line.contains("whereis"))
        .count();
    assert!(
        (1..150).contains(&lines),
        "{lines} of the task's 300 lines reached the host's log"
    );
    assert!(
        text.lines()
            .any(|line| line.contains(&pid) && line.contains("captured log only")),
        "{text}"
    );
    // Its captured log is capped the same, and says how much it dropped.
    let (_, logs) = host.get(&format!("/api/tasks/{pid}/logs")).await;
    assert!(
        logs["dropped_bytes"]
            .as_u64()
            .is_some_and(|dropped| dropped > 0),
        "{logs}"
    );
}
