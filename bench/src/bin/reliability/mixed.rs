//! What the cases that mix good tasks (label 0) with bad ones (any other label) share: every
//! submission answered 202, every accepted task ended and read back through the API, each
//! judged by its label; the good submissions' p99; medians over rounds.

use std::collections::HashMap;

use anyhow::Context as _;
use http_spawn_bench::loadgen::{self, Run};

use crate::api::{self, Record};
use crate::host::Host;
use crate::{DRAIN_PATIENCE, Verdict, progress};

/// How many accepted tasks of a load ended as their label wants.
pub struct Judged {
    pub good: u64,
    pub bad: u64,
    /// Every record the host listed.
    pub listed: u64,
}

/// Checks that `run` was answered 202 throughout, waits until its tasks end, reads back every
/// record (at most `cap`) and judges each accepted task by `right(label, record)`. Misses go
/// to `verdict`, named by `label`; a task no longer listed is one.
pub fn judge(
    case: &str,
    label: &str,
    host: &Host,
    run: &Run,
    cap: usize,
    verdict: &mut Verdict,
    right: impl Fn(u8, &Record) -> bool,
) -> anyhow::Result<Judged> {
    let answers = run.samples.len() as u64;
    let accepted = run.count(202);
    verdict.check(run.connect_errors == 0 && accepted == answers, || {
        format!(
            "{label}: {} of {answers} submissions not answered 202 (first: {:?}), {} connections refused",
            answers - accepted,
            run.samples.iter().find(|s| s.status != 202).map(|s| s.status),
            run.connect_errors
        )
    });
    progress(
        case,
        &format!("{label}: {accepted} accepted; waiting for every task to end"),
    );
    host.wait_idle(DRAIN_PATIENCE)
        .with_context(|| format!("{label}: the tasks did not end"))?;
    let records = api::list_tasks(host.addr, cap)?;
    let by_pid: HashMap<&str, &Record> = records.iter().map(|r| (r.pid.as_str(), r)).collect();
    let (mut good, mut bad) = (0, 0);
    let mut wrong = Vec::new();
    for sample in &run.samples {
        let Some(pid) = sample.pid.as_deref() else {
            continue;
        };
        let Some(record) = by_pid.get(pid) else {
            wrong.push(format!("{pid}: not listed"));
            continue;
        };
        match (right(sample.label, record), sample.label) {
            (true, 0) => good += 1,
            (true, _) => bad += 1,
            (false, _) => wrong.push(record.summary()),
        }
    }
    verdict.check(wrong.is_empty(), || {
        format!(
            "{label}: {} tasks ended wrong or lost their record, e.g. {}",
            wrong.len(),
            wrong[..wrong.len().min(3)].join(" / ")
        )
    });
    Ok(Judged {
        good,
        bad,
        listed: records.len() as u64,
    })
}

/// The p99 latency of the good submissions answered 202, in ms.
pub fn good_p99_ms(run: &Run) -> f64 {
    let latencies = run
        .samples
        .iter()
        .filter(|s| s.label == 0 && s.status == 202)
        .map(|s| s.latency_us)
        .collect();
    loadgen::percentile_ms(latencies, 0.99)
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
