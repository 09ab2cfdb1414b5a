//! Flow control per worker: how many of its tasks run at once (`max_running`), how many of
//! one concurrency key (`per_key_running`), and how many start per period (`rate`, per key
//! when the task has one). A task over a limit is not refused: it waits, holding no place,
//! and starts when its worker (or key) is under the limit again.
//!
//! A task is checked as it is about to start, on its scheduler thread. Over a concurrency
//! limit, it is held here, by key; when a task of the worker ends, the held tasks that may now
//! run are handed back, round robin between keys (one key's backlog never starves another
//! key), counted at once so that nothing overtakes them. Over its rate, it waits among the
//! scheduled tasks until its turn, its start already counted in the bucket. Every worker's
//! running tasks are counted (a lock and a map lookup per start and per end), so that limits
//! set over the API while tasks run count those already running.
//!
//! This is a single host's counting. In a cluster, a limited worker's tasks are counted in
//! the shared store for all hosts together, and claimed under their limits there
//! (`store::postgres::limits`); this host then counts nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{FlowLimits, Rate, WorkerConfig};
use crate::model::Pid;

/// The longest a task waits for its rate's turn: as long as the longest wait for a time
/// (`--max-schedule-ahead` is at most 100 years).
const FURTHEST_TURN: Duration = Duration::from_secs(100 * 366 * 86_400);

/// What a task about to start may do.
#[derive(Debug)]
pub enum Gate<T> {
    /// Start now; it is counted as running.
    Go(T),
    /// Wait, held here, until a task of its worker ends.
    Held,
    /// Wait until this instant for its rate (its start is counted).
    Until(T, Instant),
}

/// A task as the limits see it.
pub trait Limited {
    fn pid(&self) -> Pid;
    fn worker(&self) -> &Arc<str>;
    fn key(&self) -> Option<&Arc<str>>;
    /// Whether it was counted already: handed back after it was held, or given its turn by
    /// the rate.
    fn counted(&self) -> (bool, bool);
    fn count(&mut self, running: bool, rated: bool);
}

#[derive(Debug)]
struct Gauge<T> {
    max_running: Option<u32>,
    per_key: Option<u32>,
    rate: Option<Rate>,
    running: u32,
    by_key: HashMap<Arc<str>, u32>,
    /// Held tasks by key (`None`: no key), and the keys with held tasks in turn.
    held: HashMap<Option<Arc<str>>, VecDeque<T>>,
    turns: VecDeque<Option<Arc<str>>>,
    /// Token buckets by key: tokens (may go below zero: starts promised), last refill.
    buckets: HashMap<Option<Arc<str>>, (f64, Instant)>,
}

impl<T> Gauge<T> {
    fn new(limits: FlowLimits) -> Self {
        Self {
            max_running: limits.max_running,
            per_key: limits.per_key_running,
            rate: limits.rate,
            running: 0,
            by_key: HashMap::new(),
            held: HashMap::new(),
            turns: VecDeque::new(),
            buckets: HashMap::new(),
        }
    }

    fn limited(&self) -> bool {
        self.max_running.is_some() || self.per_key.is_some() || self.rate.is_some()
    }
}

/// Every worker's running tasks, and the limits of those that have any.
#[derive(Debug)]
pub struct Limits<T> {
    workers: Mutex<HashMap<Arc<str>, Gauge<T>>>,
    /// False on a host of a cluster, where the shared store counts: nothing is counted here.
    on: bool,
}

impl<T: Limited> Limits<T> {
    /// The limits `workers` set (none for a worker without any), counting every worker's
    /// tasks; or, given none (a host of a cluster), nothing counted here.
    pub fn new(workers: Option<&[WorkerConfig]>) -> Self {
        let map: HashMap<Arc<str>, Gauge<T>> = workers
            .unwrap_or_default()
            .iter()
            .map(|w| (Arc::from(w.name.as_str()), Gauge::new(w.limits())))
            .collect();
        Self {
            on: workers.is_some(),
            workers: Mutex::new(map),
        }
    }

    /// Sets `worker`'s limits to `limits` (none: it has none); the held tasks they now leave
    /// room for are handed to `admit`, as [`Limits::done`] does. Whether its rate changed.
    pub fn set(
        &self,
        worker: &Arc<str>,
        limits: FlowLimits,
        admit: impl FnMut(T) -> Result<(), Box<T>>,
    ) -> bool {
        if !self.on {
            return false;
        }
        let mut workers = self.lock();
        let gauge = workers
            .entry(Arc::clone(worker))
            .or_insert_with(|| Gauge::new(FlowLimits::default()));
        gauge.max_running = limits.max_running;
        gauge.per_key = limits.per_key_running;
        let rate_changed = gauge.rate != limits.rate;
        if rate_changed {
            // A new rate starts with full buckets (the tasks waiting for a turn under the old
            // one are checked again: see `Scheduler::set_limits`).
            gauge.buckets.clear();
        }
        gauge.rate = limits.rate;
        hand_out(gauge, admit);
        rate_changed
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Gauge<T>>> {
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides whether `item` starts now, at `now`.
    pub fn check(&self, mut item: T, now: Instant) -> Gate<T> {
        if !self.on {
            return Gate::Go(item);
        }
        let mut workers = self.lock();
        if !workers.contains_key(item.worker()) {
            // A worker uploaded since the start: counted from its first task on.
            let worker = Arc::clone(item.worker());
            workers.insert(worker, Gauge::new(FlowLimits::default()));
        }
        let Some(gauge) = workers.get_mut(item.worker()) else {
            return Gate::Go(item);
        };
        let (running, rated) = item.counted();
        if running {
            return Gate::Go(item);
        }
        let key = item.key().cloned();
        let over = gauge.max_running.is_some_and(|max| gauge.running >= max)
            || key.as_ref().is_some_and(|key| {
                gauge
                    .per_key
                    .is_some_and(|max| gauge.by_key.get(key).copied().unwrap_or(0) >= max)
            });
        if over {
            if !gauge.held.contains_key(&key) || gauge.held[&key].is_empty() {
                gauge.turns.push_back(key.clone());
            }
            gauge.held.entry(key).or_default().push_back(item);
            return Gate::Held;
        }
        if !rated && let Some(rate) = gauge.rate {
            let (tokens, last) = gauge
                .buckets
                .entry(key.clone())
                .or_insert((f64::from(rate.starts), now));
            let per_token = rate.per.as_secs_f64() / f64::from(rate.starts.max(1));
            *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() / per_token)
                .min(f64::from(rate.starts));
            *last = now;
            *tokens -= 1.0;
            if *tokens < 0.0 {
                item.count(false, true);
                // Bounded: a rate's period is at most a year (see `Rate::parse`), but the
                // starts promised before this one may be many.
                let wait = Duration::try_from_secs_f64(-*tokens * per_token)
                    .unwrap_or(Duration::MAX)
                    .min(FURTHEST_TURN);
                return Gate::Until(item, now + wait);
            }
        }
        gauge.running += 1;
        if let Some(key) = key {
            *gauge.by_key.entry(key).or_default() += 1;
        }
        item.count(true, true);
        Gate::Go(item)
    }

    /// A task of `worker` with `key`, counted as running, ended (or never started): the held
    /// tasks that may run now, counted, to `admit`, under the lock (a kill looking here
    /// meanwhile finds them admitted). One `admit` gives back (the host shutting down) stays
    /// held, uncounted.
    pub fn done(
        &self,
        worker: &Arc<str>,
        key: Option<&Arc<str>>,
        admit: impl FnMut(T) -> Result<(), Box<T>>,
    ) {
        let mut workers = self.lock();
        let Some(gauge) = workers.get_mut(worker) else {
            return;
        };
        gauge.running = gauge.running.saturating_sub(1);
        if let Some(key) = key
            && let Some(count) = gauge.by_key.get_mut(key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                gauge.by_key.remove(key);
            }
        }
        hand_out(gauge, admit);
    }

    /// Takes `pid` out, if it is held; a key left with nothing held loses its turn.
    pub fn unqueue(&self, pid: Pid) -> Option<T> {
        let mut workers = self.lock();
        for gauge in workers.values_mut() {
            let mut found = None;
            for (key, queue) in &mut gauge.held {
                if let Some(index) = queue.iter().position(|item| item.pid() == pid) {
                    found = Some((key.clone(), queue.remove(index), queue.is_empty()));
                    break;
                }
            }
            if let Some((key, item, emptied)) = found {
                if emptied {
                    gauge.held.remove(&key);
                    gauge.turns.retain(|turn| *turn != key);
                }
                return item;
            }
        }
        None
    }

    /// Hands back every task held.
    pub fn drain(&self) -> Vec<T> {
        let mut workers = self.lock();
        let mut all = Vec::new();
        for gauge in workers.values_mut() {
            gauge.turns.clear();
            for (_, queue) in gauge.held.drain() {
                all.extend(queue);
            }
        }
        all
    }

    /// How many of `worker`'s tasks run and wait here.
    pub fn of(&self, worker: &str) -> Option<(u32, usize)> {
        let workers = self.lock();
        let gauge = workers.get(worker).filter(|gauge| gauge.limited())?;
        Some((gauge.running, gauge.held.values().map(VecDeque::len).sum()))
    }
}

/// Hands the held tasks `gauge` leaves room for to `admit`, counted, round robin between keys
/// (each key with held tasks gets a turn, while there is room). One `admit` gives back (the
/// host shutting down) stays held, uncounted, and nothing more is tried.
fn hand_out<T: Limited>(gauge: &mut Gauge<T>, mut admit: impl FnMut(T) -> Result<(), Box<T>>) {
    // Keys passed over in a row since the last admission: once every key in turn has been,
    // none has room.
    let mut passed = 0;
    while passed < gauge.turns.len() && gauge.max_running.is_none_or(|max| gauge.running < max) {
        let Some(key) = gauge.turns.pop_front() else {
            break;
        };
        let room = key.as_ref().is_none_or(|key| {
            gauge
                .per_key
                .is_none_or(|max| gauge.by_key.get(key).copied().unwrap_or(0) < max)
        });
        let next = if room {
            gauge.held.get_mut(&key).and_then(VecDeque::pop_front)
        } else {
            None
        };
        let admitted = match next {
            Some(mut item) => {
                item.count(true, true);
                match admit(item) {
                    Ok(()) => {
                        gauge.running += 1;
                        if let Some(key) = &key {
                            *gauge.by_key.entry(Arc::clone(key)).or_default() += 1;
                        }
                        true
                    }
                    Err(item) => {
                        // Admission is closed: it stays held, and nothing more is tried.
                        let mut item = *item;
                        item.count(false, false);
                        gauge.held.entry(key.clone()).or_default().push_front(item);
                        gauge.turns.push_front(key);
                        return;
                    }
                }
            }
            None => false,
        };
        if gauge.held.get(&key).is_some_and(|queue| !queue.is_empty()) {
            gauge.turns.push_back(key);
            passed = if admitted { 0 } else { passed + 1 };
        } else {
            // Nothing left held of it: it leaves the turns, which shrink by one.
            gauge.held.remove(&key);
            if admitted {
                passed = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Item {
        pid: Pid,
        worker: Arc<str>,
        key: Option<Arc<str>>,
        counted: (bool, bool),
    }

    impl Limited for Item {
        fn pid(&self) -> Pid {
            self.pid
        }
        fn worker(&self) -> &Arc<str> {
            &self.worker
        }
        fn key(&self) -> Option<&Arc<str>> {
            self.key.as_ref()
        }
        fn counted(&self) -> (bool, bool) {
            self.counted
        }
        fn count(&mut self, running: bool, rated: bool) {
            self.counted = (running, rated);
        }
    }

    fn limits(max_running: Option<u32>, per_key: Option<u32>, rate: Option<&str>) -> Limits<Item> {
        let mut config = crate::config::Config::from_args(["http-spawn"])
            .expect("the default config")
            .workers
            .remove(0);
        config.max_running = max_running;
        config.per_key_running = per_key;
        config.rate = rate.map(|rate| Rate::parse(rate).expect("a rate"));
        Limits::new(Some(&[config]))
    }

    fn item(seq: u64, key: &str) -> Item {
        Item {
            pid: Pid::new(1, seq),
            worker: Arc::from("default"),
            key: (!key.is_empty()).then(|| Arc::from(key)),
            counted: (false, false),
        }
    }

    #[test]
    fn held_tasks_go_round_robin_between_keys() {
        let limits = limits(Some(1), None, None);
        let now = Instant::now();
        assert!(matches!(limits.check(item(1, "a"), now), Gate::Go(_)));
        for (seq, key) in [(2, "a"), (3, "a"), (4, "b"), (5, "c")] {
            assert!(matches!(limits.check(item(seq, key), now), Gate::Held));
        }
        assert_eq!(limits.of("default"), Some((1, 4)));
        let mut order = Vec::new();
        for _ in 0..4 {
            let mut admitted = Vec::new();
            limits.done(&Arc::from("default"), None, |item| {
                admitted.push(item.pid.seq());
                Ok(())
            });
            assert_eq!(admitted.len(), 1, "one place freed, one task admitted");
            order.extend(admitted);
        }
        assert_eq!(order, [2, 4, 5, 3], "a, b, c, then a again");
        assert!(limits.unqueue(Pid::new(1, 9)).is_none());
    }

    #[test]
    fn a_held_task_killed_does_not_stall_the_keys_after_it() {
        let limits = limits(Some(1), None, None);
        let now = Instant::now();
        assert!(matches!(limits.check(item(1, "r"), now), Gate::Go(_)));
        assert!(matches!(limits.check(item(2, "a"), now), Gate::Held));
        assert!(matches!(limits.check(item(3, "b"), now), Gate::Held));
        assert!(
            limits.unqueue(Pid::new(1, 2)).is_some(),
            "a's task is killed"
        );
        let mut admitted = Vec::new();
        limits.done(&Arc::from("default"), Some(&Arc::from("r")), |item| {
            admitted.push(item.pid.seq());
            Ok(())
        });
        assert_eq!(admitted, [3], "b's task starts as r's ends");
    }

    #[test]
    fn limits_set_later_count_what_runs_and_release_what_they_held() {
        let limits = limits(None, None, None);
        let now = Instant::now();
        for seq in 1..=3 {
            assert!(matches!(limits.check(item(seq, ""), now), Gate::Go(_)));
        }
        let worker: Arc<str> = Arc::from("default");
        let tight = FlowLimits {
            max_running: Some(2),
            ..FlowLimits::default()
        };
        assert!(!limits.set(&worker, tight, |_| panic!("nothing is held")));
        assert_eq!(limits.of("default"), Some((3, 0)));
        assert!(matches!(limits.check(item(4, ""), now), Gate::Held));
        limits.done(&worker, None, |_| panic!("three still ran: no room"));
        let mut admitted = Vec::new();
        let rate_changed = limits.set(&worker, FlowLimits::default(), |item| {
            admitted.push(item.pid.seq());
            Ok(())
        });
        assert!(!rate_changed);
        assert_eq!(admitted, [4], "no limits: what was held starts");
        assert_eq!(limits.of("default"), None, "no limits shown");
    }

    #[test]
    fn a_rate_lets_a_burst_through_then_spaces_starts() {
        let limits = limits(None, None, Some("2/1s"));
        let now = Instant::now();
        assert!(matches!(limits.check(item(1, ""), now), Gate::Go(_)));
        assert!(matches!(limits.check(item(2, ""), now), Gate::Go(_)));
        let Gate::Until(third, at) = limits.check(item(3, ""), now) else {
            panic!("over the rate");
        };
        assert_eq!(at - now, Duration::from_millis(500));
        assert!(
            matches!(limits.check(third, at), Gate::Go(_)),
            "its turn was kept"
        );
        let Gate::Until(_, at) = limits.check(item(4, ""), now) else {
            panic!("over the rate");
        };
        assert_eq!(at - now, Duration::from_secs(1));
        // Another key has a bucket of its own.
        assert!(matches!(limits.check(item(5, "k"), now), Gate::Go(_)));
    }
}
