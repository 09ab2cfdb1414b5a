//! A short hostile mix, end to end over HTTP: a few hundred tasks submitted at once to one
//! host, one in ten to a hostile worker (each kind of host/tests/sandbox.rs in turn), the rest
//! good short tasks on the default worker. Every task must end as its kind says and the host
//! must still answer. `make reliability` runs the long version of this, at thousands a second.

mod common;

use std::path::{Path, PathBuf};

use common::{module, registry_config, start_app, temp_dir};
use serde_json::{Value, json};

/// A hostile worker, the fuel its registry entry gives it, and the end each of its tasks must
/// have (sandbox.rs's).
struct Hostile {
    worker: &'static str,
    fuel_per_step: u64,
    status: &'static str,
    outcome: &'static str,
    /// What the recorded error must contain.
    error: Option<&'static str>,
}

const HOSTILE: [Hostile; 7] = [
    Hostile {
        worker: "spin",
        fuel_per_step: 2_000_000,
        status: "failed",
        outcome: "out_of_fuel",
        error: Some("out of fuel in step 0"),
    },
    Hostile {
        worker: "membomb",
        fuel_per_step: 500_000_000,
        status: "failed",
        outcome: "memory_limit",
        error: Some("16777216"),
    },
    Hostile {
        worker: "recurse",
        fuel_per_step: 500_000_000,
        status: "failed",
        outcome: "stack_overflow",
        error: None,
    },
    Hostile {
        worker: "panic",
        fuel_per_step: 20_000_000,
        status: "failed",
        outcome: "panic",
        error: Some("the worker gave up on purpose"),
    },
    Hostile {
        worker: "abort",
        fuel_per_step: 20_000_000,
        status: "failed",
        outcome: "trap",
        error: Some("unreachable"),
    },
    Hostile {
        worker: "sleeper",
        fuel_per_step: 20_000_000,
        status: "failed",
        outcome: "trap",
        error: Some("next::sleep"),
    },
    Hostile {
        worker: "chatty",
        fuel_per_step: 500_000_000,
        status: "exited",
        outcome: "exit",
        error: None,
    },
];

/// Tasks in the mix: 28 hostile (four of each kind), 252 good.
const TASKS: usize = 280;

/// The registry: the default worker and every hostile one with a 16 MiB cap (their Rust std
/// reserves a 1 MiB stack).
fn registry(dir: &Path) -> PathBuf {
    let mut text = format!(
        "[workers.default]\nmodule = {:?}\n",
        module("default").display().to_string()
    );
    for kind in &HOSTILE {
        text.push_str(&format!(
            "\n[workers.{}]\nmodule = {:?}\nmax_memory = \"16MiB\"\nfuel_per_step = {}\n",
            kind.worker,
            module(kind.worker).display().to_string(),
            kind.fuel_per_step
        ));
    }
    let path = dir.join("http-spawn.toml");
    std::fs::write(&path, text).expect("write the registry");
    path
}

/// Task `index` of the mix: its hostile kind (`None` for a good task) and its request.
fn task(index: usize) -> (Option<&'static Hostile>, Value) {
    if index % 10 == 9 {
        let kind = &HOSTILE[(index / 10) % HOSTILE.len()];
        let body = json!({"name": "hostile", "duration": 0, "worker": kind.worker});
        (Some(kind), body)
    } else {
        (None, json!({"name": "good-task", "duration": index % 2}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_mix_ends_every_task_as_its_kind_and_the_host_stays_up() {
    let dir = temp_dir("hostile-mix");
    let config = registry_config(&registry(&dir), &["--capacity", "300"]);
    let app = start_app(config).await;

    let submissions = (0..TASKS).map(|index| {
        let (kind, body) = task(index);
        let app = &app;
        async move { (kind, app.spawn(body).await) }
    });
    let accepted = futures::future::join_all(submissions).await;

    let mut hostile_seen = [0; HOSTILE.len()];
    for (kind, pid) in &accepted {
        let record = app.wait_end(pid).await;
        match kind {
            None => {
                assert_eq!(record["worker"], "default", "{record}");
                assert_eq!(record["status"], "exited", "a good task: {record}");
                assert_eq!(record["exit_code"], 0, "a good task: {record}");
            }
            Some(kind) => {
                assert_eq!(record["worker"], kind.worker, "{record}");
                assert_eq!(record["status"], kind.status, "{record}");
                assert_eq!(record["outcome"], kind.outcome, "{record}");
                if kind.status == "exited" {
                    assert_eq!(record["exit_code"], 0, "{record}");
                }
                if let Some(part) = kind.error {
                    let error = record["error"].as_str().unwrap_or_default();
                    assert!(error.contains(part), "{part:?} missing: {record}");
                }
                if kind.worker == "chatty" {
                    let dropped = record["logs_dropped_bytes"].as_u64().expect("dropped");
                    assert!(dropped > 0, "the flood was capped: {record}");
                }
                let index = HOSTILE
                    .iter()
                    .position(|h| h.worker == kind.worker)
                    .expect("a known kind");
                hostile_seen[index] += 1;
            }
        }
    }
    assert!(
        hostile_seen.iter().all(|&n| n >= 4),
        "every kind ran: {hostile_seen:?}"
    );

    let (status, health) = app.get("/api/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["live"], 0, "{health}");
    assert_eq!(health["tasks"]["ended"], TASKS, "{health}");
    app.assert_good_task_exits_0().await;
}
