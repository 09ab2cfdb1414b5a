//! Case 3, overload: the seed's k6 profile (k6.js, seed durations of 1–5 s) at arrival rates
//! far past what a host with a small `--capacity` and `--max-queue` can take. Every answer
//! must be a 202, or a 429/503 carrying Retry-After; the host must stay up; and every accepted
//! task must complete: the host ends exactly as many tasks as k6 saw accepted, each exited 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::api;
use crate::host::Host;
use crate::{Args, DRAIN_PATIENCE, Verdict, guest, progress, repo_root};

/// Places and wait-queue room of the overloaded host: about 30 of the seed's 1–5 s tasks a
/// second, against an arrival rate of thousands.
const CAPACITY: u32 = 100;
const MAX_QUEUE: u32 = 100;
const START_RATE: u32 = 500;
const PEAK_RATE: u32 = 2000;

/// The path of a real k6, installed by scripts/ensure-k6.sh if missing.
fn k6_binary() -> anyhow::Result<PathBuf> {
    let output = Command::new(repo_root().join("scripts/ensure-k6.sh"))
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/ensure-k6.sh")?;
    if !output.status.success() {
        bail!("k6 is not available");
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let k6 = k6_binary()?;
    let ramp = args.scaled(10.0, 2.0).round();
    let hold = args.scaled(20.0, 3.0).round();
    let cool = 2.0;
    let store = dir.join("tasks.db");
    let host_args: Vec<String> = [
        "--module",
        &guest("default").display().to_string(),
        "--store",
        &format!("sqlite:{}", store.display()),
        "--capacity",
        &CAPACITY.to_string(),
        "--max-queue",
        &MAX_QUEUE.to_string(),
        // Every accepted task is read back; none is forgotten before.
        "--max-history",
        "1000000",
    ]
    .map(String::from)
    .to_vec();
    let mut host = Host::start(dir, &host_args, args.host_args.as_deref())?;
    progress(
        "overload",
        &format!(
            "k6.js from {START_RATE}/s to {PEAK_RATE}/s ({ramp} s ramp, {hold} s hold) against \
             --capacity {CAPACITY} --max-queue {MAX_QUEUE}"
        ),
    );
    let summary_path = dir.join("k6-summary.json");
    let k6_log = std::fs::File::create(dir.join("k6.log"))?;
    // `timeout` bounds k6 (and whatever it started) should it hang.
    let bound = (ramp + hold + cool + 60.0) as u64;
    let status = Command::new("timeout")
        .arg(format!("{bound}s"))
        .arg(&k6)
        .args(["run", "--quiet"])
        .arg(repo_root().join("k6.js"))
        .env("BASE_URL", format!("http://{}", host.addr))
        .env("EXPECT_OVERLOAD", "1")
        .env("START_RATE", START_RATE.to_string())
        .env("PEAK_RATE", PEAK_RATE.to_string())
        .env("RAMP", format!("{ramp}s"))
        .env("HOLD", format!("{hold}s"))
        .env("COOL", format!("{cool}s"))
        .env("SUMMARY_JSON", &summary_path)
        .stdout(k6_log.try_clone()?)
        .stderr(k6_log)
        .status()
        .context("running k6")?;
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_path).context("k6 wrote no summary")?,
    )?;
    let count = |name: &str| {
        summary["metrics"][name]["values"]["count"]
            .as_f64()
            .unwrap_or(0.0) as u64
    };
    let (accepted, refused) = (count("tasks_spawned"), count("tasks_rejected"));
    let (others, bare) = (
        count("tasks_errored"),
        count("refusals_without_retry_after"),
    );
    let (too_many, unavailable) = (count("answers_429"), count("answers_503"));

    let mut verdict = Verdict::default();
    verdict.check(status.success(), || {
        format!("k6 exited {status} (see k6.log)")
    });
    verdict.check(others == 0, || {
        format!("{others} answers neither 202 nor 429/503")
    });
    verdict.check(bare == 0, || format!("{bare} refusals without Retry-After"));
    verdict.check(refused > 0, || {
        "no refusal: the host was never overloaded".into()
    });
    verdict.check(host.up(), || {
        format!("the host went down: {}", host.log_tail())
    });
    progress(
        "overload",
        &format!("{accepted} accepted; waiting for every task to end"),
    );
    let health = host.wait_idle(DRAIN_PATIENCE)?;
    let records = api::list_tasks(host.addr, accepted as usize + 10_000)?;
    let ended = records.iter().filter(|r| r.ended()).count() as u64;
    let exited_0 = records.iter().filter(|r| r.exited_0()).count() as u64;
    verdict.check(
        ended == accepted && exited_0 == accepted && records.len() as u64 == accepted,
        || {
            format!(
                "k6 saw {accepted} accepted; the host lists {} tasks, {ended} ended, {exited_0} exited 0",
                records.len()
            )
        },
    );
    verdict.check(
        health.tasks.spawned == accepted && health.tasks.exited_ok == accepted,
        || {
            format!(
                "the host counts {} spawned, {} exited 0 of {accepted} accepted",
                health.tasks.spawned, health.tasks.exited_ok
            )
        },
    );
    let rps = summary["metrics"]["http_reqs"]["values"]["rate"]
        .as_f64()
        .unwrap_or(0.0);
    verdict.figure(format!(
        "{} requests ({rps:.0}/s) to --capacity {CAPACITY} --max-queue {MAX_QUEUE}: {accepted} \
         × 202, {too_many} × 429, {unavailable} × 503, {others} other; {bare} refusals without \
         Retry-After",
        accepted + refused + others
    ));
    verdict.figure(format!(
        "{exited_0} of {accepted} accepted tasks exited 0; host up"
    ));
    Ok(verdict)
}
