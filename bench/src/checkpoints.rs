//! Section 11 of `make bench`: checkpoints (issue #26), each figure beside its baseline in the
//! same run.
//!
//! (a) In-process: a task of the default worker (`no_std`, 1 MiB cap) and of the `actor` test
//!     worker (`std`, 16 MiB cap), each started and stepped once, then checkpointed, dropped
//!     and resumed: the image's bytes (the guest's state, the part of it that differs from a
//!     fresh instance's, and the image as stored), capture and restore
//!     µs (p50, p99), beside a task's start (instantiate, `start`, first step).
//! (b) The seed load (durations 1-5 s, closed loop, 64 connections) on SQLite `full` with the
//!     default worker's policy `off`, `every 30s` and `every step`, in rotating order: accepted
//!     and completed tasks/s, host and store-writer CPU per task, each against `off`.
//!
//! Alone: `./target/release/http-spawn-bench --only 11` (about a minute on 2 cores), `--quick`
//! for fewer rounds. It needs `make build-guest` and the release host built.

use serde_json::{Value, json};

use super::{Measured, Report, guest, measure_store, median};

pub(super) fn section(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 11. Checkpoints (issue #26)\n");
    let rounds = if quick { 200 } else { 2_000 };
    report.line(&format!(
        "(a) In-process, {rounds} tasks each: started and stepped once (the baseline), then \
         checkpointed to stored bytes, dropped, and resumed into a fresh instance.\n"
    ));
    let mut rows = Vec::new();
    let mut inprocess = serde_json::Map::new();
    let workers: [(&str, &str, usize, Option<&str>); 2] = [
        ("default (no_std)", "default", 1 << 20, None),
        (
            "actor (std)",
            "actor",
            16 << 20,
            Some(r#"{"script": [{"op": "sleep", "ms": 3600000}]}"#),
        ),
    ];
    for (label, name, max_memory, payload) in workers {
        let bytes = std::fs::read(guest(name))?;
        let figures = http_spawn::bench_checkpoints(&bytes, max_memory, payload, 3600, rounds)?;
        let us = |values: &[u64], q: f64| {
            let mut sorted: Vec<f64> = values.iter().map(|&ns| ns as f64 / 1e3).collect();
            sorted.sort_by(f64::total_cmp);
            sorted[((sorted.len() - 1) as f64 * q).round() as usize]
        };
        let row = [
            us(&figures.start_ns, 0.5),
            us(&figures.capture_ns, 0.5),
            us(&figures.capture_ns, 0.99),
            us(&figures.restore_ns, 0.5),
            us(&figures.restore_ns, 0.99),
        ];
        rows.push(vec![
            label.to_owned(),
            figures.image_bytes.to_string(),
            figures.kept_bytes.to_string(),
            figures.stored_bytes.to_string(),
            format!("{:.1}", row[0]),
            format!("{:.1}", row[1]),
            format!("{:.1}", row[2]),
            format!("{:.1}", row[3]),
            format!("{:.1}", row[4]),
        ]);
        inprocess.insert(
            name.to_owned(),
            json!({
                "image_bytes": figures.image_bytes,
                "kept_bytes": figures.kept_bytes,
                "stored_bytes": figures.stored_bytes,
                "start_p50_us": row[0],
                "capture_p50_us": row[1],
                "capture_p99_us": row[2],
                "restore_p50_us": row[3],
                "restore_p99_us": row[4],
            }),
        );
    }
    report.table(
        &[
            "worker",
            "state bytes",
            "differing from a fresh instance",
            "stored bytes",
            "start p50 µs (baseline)",
            "capture p50 µs",
            "capture p99 µs",
            "restore p50 µs",
            "restore p99 µs",
        ],
        &rows,
    );

    let secs = if quick { 3 } else { 5 };
    let load_rounds = if quick { 1 } else { 3 };
    report.line(&format!(
        "\n(b) The seed load (durations 1-5 s, a step a second, closed loop, 64 connections, \
         {secs} s) on SQLite `full`, the default worker's `checkpoint` policy as named, \
         {load_rounds} rounds in rotating order; medians, ratios against `off` round by round.\n"
    ));
    let dir = std::env::temp_dir().join(format!("http-spawn-bench-ck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let policies = ["off", "every 30s", "every step"];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut runs: Vec<Vec<Measured>> = policies.iter().map(|_| Vec::new()).collect();
    for round in 0..load_rounds {
        for turn in 0..policies.len() {
            let at = (turn + round) % policies.len();
            let registry = dir.join(format!("registry-{round}-{at}.toml"));
            std::fs::write(
                &registry,
                format!(
                    "[workers.default]\nmodule = \"{}\"\ncheckpoint = \"{}\"\n",
                    guest("default").display(),
                    policies[at]
                ),
            )?;
            let store = format!(
                "sqlite:{}",
                dir.join(format!("ck-{round}-{at}.db")).display()
            );
            let registry = registry.display().to_string();
            let args = ["--store", store.as_str(), "--config", registry.as_str()];
            runs[at].push(measure_store(&runtime, "host", &args, secs)?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut rows = Vec::new();
    let mut load = serde_json::Map::new();
    for (at, policy) in policies.iter().enumerate() {
        let these = &runs[at];
        let of = |field: &dyn Fn(&Measured) -> f64| {
            let mut values: Vec<f64> = these.iter().map(field).collect();
            median(&mut values)
        };
        let against = |field: &dyn Fn(&Measured) -> f64| {
            let mut ratios: Vec<f64> = these
                .iter()
                .zip(&runs[0])
                .map(|(run, off)| field(run) / field(off).max(f64::MIN_POSITIVE))
                .collect();
            median(&mut ratios)
        };
        let writer = |run: &Measured| run.writer_us.unwrap_or(0.0);
        let ok: u64 = these
            .iter()
            .map(|run| run.totals["tasks"]["exited_ok"].as_u64().unwrap_or(0))
            .sum();
        let accepted: u64 = these.iter().map(|run| run.outcome.accepted).sum();
        let figures = [
            of(&|run| run.rate),
            against(&|run| run.rate),
            of(&|run| run.completed),
            of(&|run| run.cpu_us),
            against(&|run| run.cpu_us),
            of(&writer),
            against(&writer),
        ];
        rows.push(vec![
            (*policy).to_owned(),
            format!("{:.0}", figures[0]),
            format!("{:.2}×", figures[1]),
            format!("{:.0}", figures[2]),
            format!("{:.1}", figures[3]),
            format!("{:.2}×", figures[4]),
            format!("{:.1}", figures[5]),
            format!("{:.2}×", figures[6]),
            format!("{ok}/{accepted}"),
        ]);
        load.insert(
            (*policy).to_owned(),
            json!({
                "accepted_per_sec": figures[0],
                "accepted_vs_off": figures[1],
                "completed_per_sec": figures[2],
                "host_cpu_us": figures[3],
                "host_cpu_vs_off": figures[4],
                "writer_us": figures[5],
                "writer_vs_off": figures[6],
                "exited_ok": ok,
                "accepted": accepted,
            }),
        );
    }
    report.table(
        &[
            "policy",
            "accepted/s",
            "÷ off",
            "completed/s",
            "host CPU µs/task",
            "÷ off",
            "writer CPU µs/task",
            "÷ off",
            "exited 0 / accepted",
        ],
        &rows,
    );
    Ok(json!({"in_process": inprocess, "seed_load": load}))
}
