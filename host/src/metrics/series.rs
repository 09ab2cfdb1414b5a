//! The series recorded once or more per task and per request, kept as handles found by their
//! label values: recording one is a lookup under a read lock and an atomic add, instead of a
//! key built, allocated and hashed in the recorder each time. Histograms are counted into their
//! buckets as they are recorded, and rendered here.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use metrics::Counter;

use crate::model::{Outcome, Status};

/// Upper bounds of the histograms' buckets, in seconds.
pub(super) const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// A Prometheus histogram over [`SECONDS_BUCKETS`], counted as it is recorded.
#[derive(Debug)]
pub(super) struct Histogram {
    /// Observations in each bucket alone (not cumulative); the last holds those above every
    /// bound.
    counts: [AtomicU64; SECONDS_BUCKETS.len() + 1],
    /// The sum of observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub(super) fn record(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = SECONDS_BUCKETS.partition_point(|&bound| bound < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Its lines in the text exposition: cumulative buckets, then sum and count.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let _ = match SECONDS_BUCKETS.get(i) {
                Some(bound) => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
                ),
                None => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                ),
            };
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

/// Every histogram series, by metric name and rendered labels, for the exposition.
#[derive(Debug, Default)]
pub(super) struct Histograms {
    series: RwLock<BTreeMap<(&'static str, String), Arc<Histogram>>>,
}

impl Histograms {
    /// The series of `name` with these labels, made on first use.
    pub(super) fn series(&self, name: &'static str, labels: &[(&str, &str)]) -> Arc<Histogram> {
        let mut rendered = String::new();
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                rendered.push(',');
            }
            let _ = write!(rendered, "{key}=\"{}\"", escape(value));
        }
        let mut series = write(&self.series);
        Arc::clone(
            series
                .entry((name, rendered))
                .or_insert_with(|| Arc::new(Histogram::new())),
        )
    }

    /// The exposition of every series of `name`, with its `# HELP` and `# TYPE` lines; nothing
    /// when it has none yet.
    pub(super) fn render(&self, out: &mut String, name: &'static str, help: &str) {
        let series = read(&self.series);
        let mut of_name = series
            .range((name, String::new())..)
            .take_while(|((n, _), _)| *n == name);
        let Some(((_, labels), first)) = of_name.next() else {
            return;
        };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        first.render(out, name, labels);
        for ((_, labels), histogram) in of_name {
            histogram.render(out, name, labels);
        }
        out.push('\n');
    }
}

/// A label value as the text exposition spells it.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Handles by key, each made on first use.
#[derive(Debug)]
pub(super) struct Family<K, H> {
    handles: RwLock<HashMap<K, H>>,
}

impl<K, H> Default for Family<K, H> {
    fn default() -> Self {
        Self {
            handles: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, H> Family<K, H> {
    /// Runs `with` on the handle of `key`, made by `make` if there is none yet.
    pub(super) fn with<Q, R>(
        &self,
        key: &Q,
        make: impl FnOnce() -> (K, H),
        with: impl FnOnce(&H) -> R,
    ) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(handle) = read(&self.handles).get(key) {
            return with(handle);
        }
        let mut handles = write(&self.handles);
        if let Some(handle) = handles.get(key) {
            return with(handle);
        }
        let (key, handle) = make();
        with(handles.entry(key).or_insert(handle))
    }
}

/// One worker's per-task series, each registered the first time it is recorded, so that
/// `/metrics` shows a series only once it has happened.
#[derive(Debug, Default)]
pub(super) struct WorkerSeries {
    pub(super) spawned: OnceLock<Counter>,
    pub(super) started: OnceLock<Counter>,
    pub(super) fuel: OnceLock<Counter>,
    pub(super) instantiation: OnceLock<Arc<Histogram>>,
    pub(super) spawn_to_start: OnceLock<Arc<Histogram>>,
    /// Ends by status and outcome.
    pub(super) ended: Family<(Status, Outcome), Counter>,
    /// How long attempts that ended ran, by outcome.
    pub(super) ran: Family<Outcome, Arc<Histogram>>,
}

/// The methods counted apart; any other is `other`.
pub(super) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// One matched route's series, by method.
#[derive(Debug, Default)]
pub(super) struct RouteSeries {
    pub(super) methods: [MethodSeries; METHODS.len()],
}

/// Requests of one method on one route.
#[derive(Debug, Default)]
pub(super) struct MethodSeries {
    pub(super) duration: OnceLock<Arc<Histogram>>,
    /// Requests answered, by status code.
    pub(super) answered: Family<u16, Counter>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_its_sum_and_count() {
        let histograms = Histograms::default();
        let series = histograms.series("t_seconds", &[("worker", "a\"b")]);
        series.record(Duration::from_micros(100));
        series.record(Duration::from_millis(3));
        series.record(Duration::from_secs(7200));
        let mut out = String::new();
        histograms.render(&mut out, "t_seconds", "Help.");
        assert!(out.starts_with("# HELP t_seconds Help.\n# TYPE t_seconds histogram\n"));
        let line = |le: &str| format!("t_seconds_bucket{{worker=\"a\\\"b\",le=\"{le}\"}}");
        for (le, count) in [
            ("0.0001", 1),
            ("0.0025", 1),
            ("0.005", 2),
            ("3600", 2),
            ("+Inf", 3),
        ] {
            assert!(
                out.contains(&format!("{} {count}\n", line(le))),
                "{le}: {out}"
            );
        }
        assert!(
            out.contains("t_seconds_sum{worker=\"a\\\"b\"} 7200.0031\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_count{worker=\"a\\\"b\"} 3\n"),
            "{out}"
        );
        let mut none = String::new();
        histograms.render(&mut none, "other_seconds", "Help.");
        assert!(none.is_empty());
    }
}
