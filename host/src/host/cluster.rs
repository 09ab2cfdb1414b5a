//! The host as one of a cluster: several hosts on one PostgreSQL database (`--store
//! postgres://…`), any of which accepts a task and answers for any pid.
//!
//! Four threads per host keep it in the cluster:
//! - the **heartbeat** renews the lease;
//! - the **lease guard** holds the host's own deadline: the last renewal's send time, plus the
//!   lease, less one heartbeat. It is a timer of its own, so that a renewal that hangs (a
//!   database that stalls) cannot delay it. At the deadline the host fences its writes, ends
//!   the store calls in flight, and stops every task: a running step is interrupted within an
//!   epoch tick. Another host may take the tasks over only once the lease ran out in the
//!   database, at least one heartbeat later;
//! - the **chores** take back the tasks of hosts whose lease expired, follow the worker
//!   versions other hosts installed, and tell this host's tasks of the ends of tasks they
//!   monitor on other hosts;
//! - the **poll** carries out what other hosts asked of this host's tasks (kills, messages)
//!   and, while this host has free places, claims tasks from the shared queue.
//!
//! Both only poll: no `NOTIFY` on any write (it would serialise every commit). A kill or a
//! message for a task on another host therefore waits up to one `--cluster-poll` there.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::{Host, MAX_HOST_LOSSES};
use crate::actor::{EndNotice, Entry, Placement, SendError};
use crate::config::{Config, FlowLimits};
use crate::ledger::{EndWaiters, EndWatch, Ending};
use crate::model::{Outcome, Pid, TaskEnd};
use crate::registry::VersionError;
use crate::sched::Job;
use crate::store::{Claimed, Command, NodeInfo, PgStore};

/// Tasks claimed from the shared queue at most per poll.
const CLAIM_BATCH: u32 = 256;

/// The host's place in a cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) store: Arc<PgStore>,
    heartbeat: Duration,
    lease: Duration,
    poll: Duration,
    /// The most tasks the shared queue may hold before new ones are refused (`429`).
    max_queue: u64,
    /// Tasks waiting in the shared queue, as last seen (and counted up by this host's own
    /// acceptances since).
    waiting: AtomicU64,
    /// False while this host has lost its lease and not joined again: it accepts nothing.
    serving: AtomicBool,
    /// Set when the host begins to shut down: it claims nothing more, but goes on renewing
    /// its lease (its running tasks have their grace period) and taking kills.
    leaving: AtomicBool,
    /// Set once every task of the host has ended: the threads stop.
    left: AtomicBool,
    /// Set when the host is drained (`POST /api/cluster/nodes/{name}/drain`): it claims
    /// nothing more, and the tasks accepted here wait in the shared queue for other hosts.
    draining: AtomicBool,
    /// Monitors this host's tasks hold on tasks other hosts hold (or that wait in the shared
    /// queue), by target.
    remote: Mutex<HashMap<Pid, Remote>>,
    /// Waits for the ends of tasks that may run on other hosts (`Host::await_end`).
    ends: Arc<EndWaiters>,
    /// Heartbeats since the last look for strays, and the strays it found.
    strays: Mutex<(u32, HashSet<Pid>)>,
    /// The linked exits told here lately, `(to, from)`, oldest first: one comes both as a
    /// command from the host where `from` ended and from this host's own check of the tasks it
    /// watches on others, and is told once.
    exits_told: Mutex<ExitsTold>,
    /// Commands carried out here and not yet deleted from the store (the delete failed):
    /// never carried out twice.
    delivered: Mutex<Vec<i64>>,
    /// The moment this host must have stopped its tasks by, unless it renews its lease.
    deadline: LeaseDeadline,
    /// The workers' limits, by worker, as this host follows them: those of its registry file,
    /// or those set over the API. They decide which tasks it accepts as limited.
    pub(super) limits: Mutex<Arc<HashMap<String, FlowLimits>>>,
    /// Those of its registry file alone: a claim reads the ones set over the API from the
    /// store itself.
    pub(super) file_limits: Arc<HashMap<String, FlowLimits>>,
    /// Tasks of workers with limits waiting in the shared queue, as last seen (and counted up
    /// by this host's acceptances since): while there are any, every poll claims them.
    pub(super) limited_waiting: AtomicU64,
    /// Turns of the claims of limited tasks: which worker's go first.
    pub(super) limited_turn: std::sync::atomic::AtomicUsize,
}

/// The host's own deadline for its lease, and a wake-up for the guard when it moves.
#[derive(Debug)]
struct LeaseDeadline {
    at: Mutex<Instant>,
    moved: Condvar,
}

impl LeaseDeadline {
    fn lock(&self) -> MutexGuard<'_, Instant> {
        self.at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves the deadline to `at` (never back: a renewal that answers late counts from when
    /// it was sent, and an earlier one may have answered since).
    fn extend(&self, at: Instant) {
        let mut deadline = self.lock();
        if at > *deadline {
            *deadline = at;
            self.moved.notify_all();
        }
    }

    /// Waits until the deadline has passed, or at most `most`: whether it has.
    fn wait(&self, most: Duration) -> bool {
        let deadline = self.lock();
        let now = Instant::now();
        if now >= *deadline {
            return true;
        }
        let left = deadline.saturating_duration_since(now).min(most);
        let deadline = self
            .moved
            .wait_timeout(deadline, left)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
        Instant::now() >= *deadline
    }
}

/// What became of a command another host (or this one) stored for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CarriedOut {
    /// Done: it is deleted from the store.
    Done,
    /// Not now (the task's mailbox is full): looked at again at the next poll.
    Later,
    /// The task is not this host's: left for the host that holds it, or claims it.
    NotHere,
}

/// Heartbeats between two looks for tasks `runs` says this host holds and it does not run.
const STRAY_CHECK_BEATS: u32 = 30;

/// Whether `host` has begun to shut down.
fn cluster_leaving(host: &Host) -> bool {
    host.cluster
        .as_ref()
        .is_some_and(|cluster| cluster.leaving.load(Ordering::Acquire))
}

/// The monitors and links held on one task of another host.
#[derive(Debug)]
struct Remote {
    /// The host holding it when it was first watched (`None`: it waited in the queue).
    holder: Option<u32>,
    /// Tasks here monitoring it, once per `monitor`.
    watchers: Vec<Pid>,
    /// Tasks here linked to it.
    links: Vec<Pid>,
    /// Checks that found neither its `runs` row nor its record: an acceptance not yet
    /// written. After [`UNSEEN_CHECKS`] it counts as never accepted.
    unseen: u32,
}

/// Linked exits remembered, so that one that comes two ways is told once.
const EXITS_REMEMBERED: usize = 4096;

/// The linked exits told lately, `(to, from)`: in order, and to look up.
type ExitsTold = (VecDeque<(Pid, Pid)>, HashSet<(Pid, Pid)>);

/// Checks of the remote watches a task may be unseen for (its acceptance not yet written)
/// before its watchers are told it does not exist.
const UNSEEN_CHECKS: u32 = 5;

/// How a task here watches a task of another host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watch {
    Monitor,
    Link,
}

impl Cluster {
    /// Whether the exit of `from` is news to `to`: true once per pair (as far as the last
    /// [`EXITS_REMEMBERED`] go).
    fn first_exit(&self, to: Pid, from: Pid) -> bool {
        let mut told = self
            .exits_told
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (order, set) = &mut *told;
        if !set.insert((to, from)) {
            return false;
        }
        order.push_back((to, from));
        if order.len() > EXITS_REMEMBERED
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
        true
    }

    /// The cluster's side of a host that joined it at `joined` (when it asked to).
    pub(crate) fn new(store: Arc<PgStore>, config: &Config, joined: Instant) -> Self {
        let file_limits: Arc<HashMap<String, FlowLimits>> = Arc::new(
            config
                .workers
                .iter()
                .filter(|worker| worker.limits().any())
                .map(|worker| (worker.name.clone(), worker.limits()))
                .collect(),
        );
        Self {
            store,
            heartbeat: config.heartbeat,
            lease: config.lease,
            poll: config.cluster_poll.max(Duration::from_millis(1)),
            max_queue: config.max_queue as u64,
            waiting: AtomicU64::new(0),
            serving: AtomicBool::new(true),
            leaving: AtomicBool::new(false),
            left: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            remote: Mutex::new(HashMap::new()),
            ends: Arc::default(),
            strays: Mutex::new((0, HashSet::new())),
            exits_told: Mutex::new((VecDeque::new(), HashSet::new())),
            delivered: Mutex::new(Vec::new()),
            // The join that just happened set the lease in the database, from a moment after
            // this host asked for it.
            deadline: LeaseDeadline {
                at: Mutex::new(joined + config.lease.saturating_sub(config.heartbeat)),
                moved: Condvar::new(),
            },
            limits: Mutex::new(Arc::clone(&file_limits)),
            file_limits,
            limited_waiting: AtomicU64::new(0),
            limited_turn: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn remote(&self) -> MutexGuard<'_, HashMap<Pid, Remote>> {
        self.remote
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this host holds its lease and may accept tasks.
    pub(crate) fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Whether the shared queue has room for one more task; counts it if so.
    pub(crate) fn queue_one(&self) -> bool {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.max_queue).then_some(waiting + 1)
            })
            .is_ok()
    }

    /// Tasks waiting in the shared queue, as last seen.
    pub(crate) fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }

    /// The hosts of the cluster.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeInfo>, crate::store::StoreError> {
        self.store.nodes().await
    }
}

impl Host {
    /// Starts the heartbeat and poll threads of a host of a cluster.
    pub(super) fn join_cluster(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        // Renewed at once: starting (loading and compiling workers) may have taken a good part
        // of the lease.
        self.beat(cluster);
        let weak = Arc::downgrade(self);
        {
            let host = Weak::clone(&weak);
            cluster.store.on_fenced(move |pid| {
                if let Some(host) = host.upgrade() {
                    tracing::warn!(pid = %pid, "another host holds this task now; stopping it here");
                    host.scheduler.end(
                        pid,
                        TaskEnd::failed(
                            Outcome::HostLost,
                            "another host of the cluster holds this task now".into(),
                        ),
                    );
                }
            });
        }
        {
            let weak = Weak::clone(&weak);
            let interval = cluster.heartbeat;
            std::thread::Builder::new()
                .name("cluster-heartbeat".into())
                .spawn(move || every(&weak, interval, |host, cluster| host.beat(cluster)))?;
        }
        {
            let weak = Weak::clone(&weak);
            let interval = cluster.heartbeat;
            std::thread::Builder::new()
                .name("cluster-lease-guard".into())
                .spawn(move || lease_guard(&weak, interval))?;
        }
        {
            let weak = Weak::clone(&weak);
            let interval = cluster.heartbeat;
            std::thread::Builder::new()
                .name("cluster-chores".into())
                .spawn(move || every(&weak, interval, |host, cluster| host.chores(cluster)))?;
        }
        let interval = cluster.poll;
        std::thread::Builder::new()
            .name("cluster-poll".into())
            .spawn(move || every(&weak, interval, |host, cluster| host.poll(cluster)))?;
        Ok(())
    }

    /// Stops every task this host runs, without recording their ends (the store refuses them
    /// now): the lease is lost, and another host may be running them already.
    fn lose_lease(&self, cluster: &Cluster, why: &str) {
        if !cluster.serving.swap(false, Ordering::AcqRel) {
            return;
        }
        // The writes first (the ends recorded next are refused), then the tasks, then the
        // queries in flight: a host call ended so returns to a task that is stopping already,
        // and makes no other.
        cluster.store.fence();
        self.scheduler.stop_all(TaskEnd::failed(
            Outcome::HostLost,
            "this host lost its lease in the cluster".into(),
        ));
        cluster.store.end_queries();
        tracing::error!(
            reason = why,
            "this host lost its lease in the cluster: it stops its tasks (other hosts run them \
             again) and accepts nothing until it has joined again"
        );
        cluster.remote().clear();
    }

    /// One heartbeat: renews the lease (or joins again), moving the host's own deadline.
    fn beat(&self, cluster: &Cluster) {
        let live = self.live();
        let queued = self.queued();
        // The lease runs from when the database renewed it, which is after this: counting
        // from here, this host never thinks it holds a lease the others think expired.
        let sent = Instant::now();
        let margin = cluster.lease.saturating_sub(cluster.heartbeat);
        match cluster.store.heartbeat(live, queued) {
            Ok((true, waiting, limited)) => {
                cluster.deadline.extend(sent + margin);
                // Limited tasks are not counted against --max-queue: held by their limits,
                // they take no place, as on one host.
                cluster.waiting.store(waiting, Ordering::Release);
                cluster.limited_waiting.store(limited, Ordering::Release);
            }
            Ok((false, _, _)) => {
                self.lose_lease(cluster, "its lease expired");
                let sent = Instant::now();
                match cluster.store.rejoin() {
                    Ok(boot) => {
                        self.pids.set_boot(boot);
                        cluster.deadline.extend(sent + margin);
                        cluster.serving.store(true, Ordering::Release);
                    }
                    Err(error) => tracing::warn!(%error, "joining the cluster again failed"),
                }
            }
            Err(error) => tracing::warn!(%error, "renewing the lease failed"),
        }
    }

    /// The cluster's chores, at every heartbeat but apart from it, so that none of them can
    /// delay a renewal: taking back lost hosts' tasks, following worker versions installed
    /// on other hosts (which may compile), and the monitors and links across hosts.
    fn chores(&self, cluster: &Cluster) {
        if !cluster.serving() {
            return;
        }
        match cluster.store.reap(MAX_HOST_LOSSES) {
            Ok(reaped) if !reaped.is_empty() => {
                let rerun = reaped
                    .iter()
                    .filter(|task| task.lost && !task.ended)
                    .count();
                let ended = reaped.iter().filter(|task| task.ended).count();
                tracing::warn!(
                    tasks = reaped.len(),
                    rerun,
                    ended,
                    requeued = reaped.len() - rerun - ended,
                    "took back the unfinished tasks of lost hosts: those that had started run \
                     again as new attempts (or ended failed, host_lost), the others wait in the \
                     shared queue"
                );
                cluster
                    .waiting
                    .fetch_add((reaped.len() - ended) as u64, Ordering::AcqRel);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "taking back the tasks of lost hosts failed"),
        }
        self.prune_limit_keys(cluster);
        self.workers.follow_store();
        if let Err(error) = self.follow_limits() {
            tracing::debug!(%error, "reading the workers' limits failed");
        }
        if let Err(error) = self.follow_paused() {
            tracing::debug!(%error, "reading the paused workers failed");
        }
        self.check_remote_monitors(cluster);
        self.check_strays(cluster);
    }

    /// One poll: what other hosts asked of this host's tasks, then claims from the shared
    /// queue while places are free.
    fn poll(&self, cluster: &Cluster) {
        if !cluster.serving() {
            return;
        }
        self.commands(cluster);
        self.settle_ends(cluster);
        let free = self
            .capacity()
            .saturating_sub(self.live())
            .saturating_sub(u32::try_from(self.queued()).unwrap_or(u32::MAX));
        if free == 0 || cluster.leaving.load(Ordering::Acquire) {
            return;
        }
        let free = free.saturating_sub(self.claim_limited(cluster, free.min(CLAIM_BATCH)));
        if free == 0 {
            return;
        }
        if cluster.waiting() == 0 {
            // Another host may have queued a task since this one's heartbeat counted the
            // queue: one index probe tells.
            match cluster.store.queue_waiting() {
                Ok(true) => cluster.waiting.store(1, Ordering::Release),
                Ok(false) => return,
                Err(error) => {
                    tracing::debug!(%error, "looking at the shared queue failed");
                    return;
                }
            }
        }
        let asked = free.min(CLAIM_BATCH);
        match cluster.store.claim(asked) {
            Ok(claimed) => {
                let got = claimed.len() as u64;
                let _ =
                    cluster
                        .waiting
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                            // All asked for were there: more may be; else the queue is empty
                            // (until the next heartbeat counts it again).
                            Some(if got < u64::from(asked) {
                                0
                            } else {
                                waiting.saturating_sub(got).max(1)
                            })
                        });
                for task in claimed {
                    self.run_claimed(task);
                }
            }
            Err(error) => tracing::debug!(%error, "claiming from the shared queue failed"),
        }
    }

    /// Carries out what was asked of the tasks this host holds, oldest first, and deletes
    /// from the store what was carried out. A message that finds its task's mailbox full waits
    /// in the store, and so do the later ones for that task, so that they arrive in order.
    fn commands(&self, cluster: &Cluster) {
        let mut delivered = cluster
            .delivered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match cluster.store.pending_commands(&delivered) {
            Ok(commands) => {
                let mut full: HashSet<Pid> = HashSet::new();
                for (id, command) in commands {
                    let to = command.to();
                    let message = matches!(command, Command::Message { .. });
                    if message && full.contains(&to) {
                        continue;
                    }
                    match self.carry_out(command) {
                        CarriedOut::Done => delivered.push(id),
                        CarriedOut::Later => {
                            full.insert(to);
                        }
                        CarriedOut::NotHere => {}
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "reading commands failed"),
        }
        match cluster.store.ack_commands(&delivered) {
            Ok(()) => delivered.clear(),
            Err(error) => tracing::debug!(%error, "deleting the commands carried out failed"),
        }
    }

    fn carry_out(&self, command: Command) -> CarriedOut {
        let to = command.to();
        if !self.actors.holds(to) {
            return CarriedOut::NotHere;
        }
        match command {
            Command::Kill(pid) => {
                tracing::info!(pid = %pid, "Killing task, as another host asked");
                self.scheduler.kill(pid);
            }
            Command::Message { to, sender, body } => {
                let body = String::from_utf8_lossy(&body).into_owned();
                match self.put_carried(sender, to, body) {
                    Ok(()) => {}
                    Err(SendError::MailboxFull) => return CarriedOut::Later,
                    // It ended since the look above: its mailbox went with it, as in Erlang.
                    Err(error) => {
                        tracing::debug!(pid = %to, ?error, "a stored message not delivered");
                    }
                }
            }
            Command::Exit { to, from, notice } => self.linked_exit(to, from, notice),
        }
        CarriedOut::Done
    }

    /// Runs a task claimed from the shared queue: accepted by any host, or taken back from a
    /// lost one.
    pub(super) fn run_claimed(&self, claimed: Claimed) {
        let Claimed {
            record,
            spec,
            commands,
            checkpoint: row,
        } = claimed;
        let pid = record.pid;
        let host_losses = record
            .attempts
            .iter()
            .filter(|attempt| attempt.outcome == Outcome::HostLost)
            .count() as u32;
        let version = match self.workers.version_of(&record.worker, &spec.module_sha256) {
            Ok(version) => version,
            Err(VersionError::Store(error)) => {
                // Its bytes could not be read now: another host (or this one, later) runs it.
                tracing::warn!(pid = %pid, %error, "a claimed task's module could not be read \
                    now; it goes back to the shared queue");
                self.give_back(pid);
                return;
            }
            Err(error) => {
                tracing::error!(pid = %pid, worker = %record.worker, %error,
                    "a claimed task's module version cannot be loaded");
                let end = TaskEnd::failed(
                    Outcome::InstantiationFailed,
                    format!("its module version could not be loaded on this host: {error}"),
                );
                self.ledger.ended(
                    pid,
                    &record.worker,
                    &record.name.as_str().into(),
                    Ending::unstarted(end, record.attempt),
                    SystemTime::now(),
                    None,
                    || {},
                );
                return;
            }
        };
        let attempt = record.attempt;
        let placement = Placement::root(pid, record.parent, self.scope_of(&record.worker));
        // Its own checkpoint policy, or its worker's; a task taken back from a lost host is
        // still running, and goes on from its checkpoint.
        let checkpoint = self.checkpoint_policy(row.as_ref(), &record.worker);
        let resume = if record.status == crate::model::Status::Running {
            super::resumable(row, &record)
        } else {
            None
        };
        let mut job = Job::again(
            record,
            spec,
            version,
            attempt,
            host_losses,
            Instant::now(),
            checkpoint,
        );
        job.resume = resume;
        if cluster_leaving(self) {
            // Claimed as the host began to shut down: another host runs it.
            self.give_back(pid);
            return;
        }
        self.actors.enter_placed(pid, placement);
        tracing::info!(pid = %pid, attempt = job.attempt, "Task claimed from the shared queue");
        // What was sent to it while it waited: in its mailbox before its first receive. A
        // message the mailbox has no room for stays in the store for the next poll.
        let mut carried = Vec::with_capacity(commands.len());
        let mut full = false;
        for (id, command) in commands {
            if full && matches!(command, Command::Message { .. }) {
                continue;
            }
            match self.carry_out(command) {
                CarriedOut::Done => carried.push(id),
                CarriedOut::Later => full = true,
                CarriedOut::NotHere => {}
            }
        }
        if let Err(job) = self.scheduler.readmit(job) {
            // Admission closed since the look above: another host runs it, and carries out
            // what was asked of it.
            self.actors
                .ended(job.pid, &TaskEnd::host_lost(job.attempt), drop);
            self.scheduler.forget_kill(pid);
            self.give_back(pid);
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster
                .delivered
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(carried);
        }
    }

    /// Gives back the tasks `runs` says this host holds and it does not run: a claim or an
    /// acceptance the database committed though its answer was lost. A task is given back only
    /// when two looks [`STRAY_CHECK_BEATS`] apart both find it, the second after everything
    /// this host submitted before it is written (an end still on its way is no stray).
    fn check_strays(&self, cluster: &Cluster) {
        let mut strays = cluster
            .strays
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        strays.0 += 1;
        if strays.0 < STRAY_CHECK_BEATS {
            return;
        }
        strays.0 = 0;
        if !strays.1.is_empty() && self.store.wait(Vec::new()).is_err() {
            return;
        }
        let Ok(held) = cluster.store.held_here() else {
            return;
        };
        let found: HashSet<Pid> = held
            .into_iter()
            .filter(|pid| !self.actors.holds(*pid))
            .collect();
        let again: Vec<Pid> = found.intersection(&strays.1).copied().collect();
        strays.1 = found;
        if again.is_empty() {
            return;
        }
        tracing::warn!(
            tasks = again.len(),
            "tasks the store says this host holds, which it \
            does not run (a claim or an acceptance whose answer was lost): back to the queue"
        );
        if let Ok(count) = cluster.store.hand_back(&again) {
            cluster.waiting.fetch_add(count, Ordering::AcqRel);
        }
        for pid in &again {
            strays.1.remove(pid);
        }
    }

    /// Puts `pid`, claimed by this host and not started, back in the shared queue.
    fn give_back(&self, pid: Pid) {
        if let Some(cluster) = &self.cluster
            && let Err(error) = cluster.store.hand_back(&[pid])
        {
            tracing::warn!(pid = %pid, %error, "could not give a claimed task back; it is taken \
                back when this host's lease expires");
        }
    }

    /// Resolves the waits for the ends of tasks that may run on other hosts, for those that
    /// have ended: one query for them all, each `--cluster-poll`, only while someone waits.
    fn settle_ends(&self, cluster: &Cluster) {
        let pids = cluster.ends.pids();
        if pids.is_empty() {
            return;
        }
        match cluster.store.holders(&pids) {
            // A task no host holds and none waits for has ended.
            Ok(holders) => {
                for pid in pids.into_iter().filter(|pid| !holders.contains_key(pid)) {
                    cluster.ends.ended(pid);
                }
            }
            Err(error) => tracing::debug!(%error, "looking for ended tasks failed"),
        }
    }

    /// A wait for `pid`'s end wherever it runs: resolved by the cluster's poll once the
    /// store shows it ended.
    pub(super) fn watch_remote_end(&self, pid: Pid) -> Option<EndWatch> {
        self.cluster.as_ref().map(|cluster| cluster.ends.watch(pid))
    }

    /// Monitors or links `target`, which another host holds or which waits in the shared
    /// queue, for `watcher`: whether it is such a task (else the caller acts as for an ended
    /// one).
    pub(super) async fn watch_remote(&self, watcher: Pid, target: Pid, how: Watch) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let holder = match cluster.store.holder_async(target).await {
            Ok(Some(holder)) => holder,
            Ok(None) => return false,
            // Not known now: watched as a task of another host, which the next check of the
            // remote watches settles.
            Err(_) => None,
        };
        self.watch_at(cluster, watcher, target, how, holder)
    }

    /// Monitors or links `target`, a child just put in the shared queue, for `watcher`.
    pub(super) fn watch_queued(&self, watcher: Pid, target: Pid, how: Watch) -> bool {
        match &self.cluster {
            Some(cluster) => self.watch_at(cluster, watcher, target, how, None),
            None => false,
        }
    }

    fn watch_at(
        &self,
        cluster: &Cluster,
        watcher: Pid,
        target: Pid,
        how: Watch,
        holder: Option<u32>,
    ) -> bool {
        if how == Watch::Link && self.actors.link_remote(watcher, target).is_err() {
            return false;
        }
        let mut remote = cluster.remote();
        let entry = remote.entry(target).or_insert(Remote {
            holder,
            watchers: Vec::new(),
            links: Vec::new(),
            unseen: 0,
        });
        match how {
            Watch::Monitor => {
                self.actors.monitor_remote(watcher, target);
                entry.watchers.push(watcher);
            }
            Watch::Link if !entry.links.contains(&watcher) => entry.links.push(watcher),
            Watch::Link => {}
        }
        true
    }

    /// Forgets a link from `pid` to a task of another host.
    pub(super) fn unlink_remote(&self, pid: Pid, target: Pid) {
        if let Some(cluster) = &self.cluster
            && let Some(remote) = cluster.remote().get_mut(&target)
        {
            remote.links.retain(|linked| *linked != pid);
        }
    }

    /// `from`, linked to `to` (a task here), ended abnormally as `notice` says: `to` is told, if
    /// it traps exits, or killed.
    fn linked_exit(&self, to: Pid, from: Pid, notice: EndNotice) {
        if !notice.is_abnormal() {
            return;
        }
        if let Some(cluster) = &self.cluster
            && !cluster.first_exit(to, from)
        {
            return;
        }
        let Some(trapping) = self.actors.traps_exits(to) else {
            return;
        };
        self.actors.unlink(to, from);
        self.events
            .linked_exit(to, from, notice.outcome_str(), trapping);
        if !trapping {
            self.scheduler
                .end(to, TaskEnd::linked_exit(from, &notice.describe()));
        } else if self.actors.notify(to, Entry::LinkedExit(Arc::new(notice))) == Some(true) {
            self.scheduler.wake(to);
        }
    }

    /// Tells the watchers of tasks on other hosts that ended, or whose host was lost, their
    /// `down`.
    fn check_remote_monitors(&self, cluster: &Cluster) {
        let targets: Vec<(Pid, Option<u32>)> = {
            let mut remote = cluster.remote();
            // Watches of tasks here that have ended meanwhile go with them.
            remote.retain(|target, remote| {
                remote
                    .watchers
                    .retain(|watcher| self.actors.holds(*watcher));
                remote
                    .links
                    .retain(|linked| self.actors.linked(*linked, *target));
                !remote.watchers.is_empty() || !remote.links.is_empty()
            });
            remote
                .iter()
                .map(|(pid, remote)| (*pid, remote.holder))
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let pids: Vec<Pid> = targets.iter().map(|(pid, _)| *pid).collect();
        let Ok(holders) = cluster.store.holders(&pids) else {
            return;
        };
        // The hosts that held a task that has moved since: lost, or still up (a drain) or gone
        // after handing their tasks back (a shutdown).
        let moved_from: Vec<u32> = targets
            .iter()
            .filter_map(|(pid, was)| match (was, holders.get(pid)) {
                (Some(was), Some(now)) if *now != Some(*was) => Some(*was),
                _ => None,
            })
            .collect();
        let lost = if moved_from.is_empty() {
            HashSet::new()
        } else {
            match cluster.store.lost_nodes(&moved_from) {
                Ok(lost) => lost,
                Err(_) => return,
            }
        };
        for (target, was) in targets {
            let notice = match holders.get(&target) {
                // Still held where it was, or claimed from the queue, or handed on by a host
                // that is not lost (a drain, a shutdown): live, held where it is now.
                Some(now) if *now == was || was.is_none_or(|was| !lost.contains(&was)) => {
                    if *now != was
                        && let Some(remote) = cluster.remote().get_mut(&target)
                    {
                        remote.holder = *now;
                    }
                    continue;
                }
                // Its host was lost: the attempt the monitor watched is gone with it.
                Some(_) => Arc::new(EndNotice::of(
                    target,
                    &TaskEnd::failed(Outcome::HostLost, "its host was lost".into()),
                )),
                None => match self.end_of(target) {
                    Ok(notice) if notice.status.is_some() => notice,
                    Ok(_) | Err(_) => {
                        // Not written yet (a child just accepted), or the store unreadable:
                        // look again at the next check, a few times.
                        let mut remote = cluster.remote();
                        if let Some(entry) = remote.get_mut(&target)
                            && entry.unseen < UNSEEN_CHECKS
                        {
                            entry.unseen += 1;
                            continue;
                        }
                        Arc::new(EndNotice::unknown(target))
                    }
                },
            };
            let Some(remote) = cluster.remote().remove(&target) else {
                continue;
            };
            for watcher in remote.watchers {
                if !self.actors.holds(watcher) {
                    continue;
                }
                self.events.down(watcher, target, notice.outcome_str());
                if self.actors.down_remote(watcher, Arc::clone(&notice)) == Some(true) {
                    self.scheduler.wake(watcher);
                }
            }
            for linked in remote.links {
                if self.actors.linked(linked, target) {
                    self.linked_exit(linked, target, (*notice).clone());
                }
            }
        }
    }
}

/// Calls `work` every `interval` while the host lives in the cluster.
fn every(host: &Weak<Host>, interval: Duration, mut work: impl FnMut(&Host, &Cluster)) {
    loop {
        std::thread::sleep(interval);
        let Some(host) = host.upgrade() else {
            return;
        };
        let Some(cluster) = host.cluster.clone() else {
            return;
        };
        if cluster.left.load(Ordering::Acquire) {
            return;
        }
        work(&host, &cluster);
    }
}

/// The lease guard: sleeps until the host's own deadline (waking at least every `interval` to
/// see whether the host still lives), and at the deadline stops the host's tasks, however the
/// renewals fare.
fn lease_guard(host: &Weak<Host>, interval: Duration) {
    loop {
        let Some(cluster) = host.upgrade().and_then(|host| host.cluster.clone()) else {
            return;
        };
        if cluster.left.load(Ordering::Acquire) {
            return;
        }
        if !cluster.deadline.wait(interval) {
            continue;
        }
        let Some(host) = host.upgrade() else {
            return;
        };
        if cluster.serving() {
            host.lose_lease(&cluster, "it could not renew its lease in time");
        } else {
            // Fenced already; the heartbeat joins again and moves the deadline.
            std::thread::sleep(interval.min(Duration::from_millis(50)));
        }
    }
}

impl Host {
    /// Claims nothing more: the host begins to shut down.
    /// Drains this host: it claims nothing more, new tasks accepted here wait in the shared
    /// queue for the other hosts, and every task it runs that takes checkpoints and waits
    /// between two steps is checkpointed and handed to the shared queue, where another host
    /// claims it and resumes it. Tasks that take none, and tasks in a step, go on here to their
    /// end. `None` for a host alone.
    pub fn drain(&self) -> Option<Drained> {
        let cluster = self.cluster.as_ref()?;
        cluster.draining.store(true, Ordering::Release);
        cluster.leaving.store(true, Ordering::Release);
        // A thread takes the command between two steps; a step is bounded by its fuel.
        let handed = self.scheduler.hand_over_all(Duration::from_secs(60));
        // Their checkpoints are written before another host may claim them.
        if let Err(error) = self.store.wait(Vec::new()) {
            tracing::error!(%error, "the drained tasks' checkpoints were not written; they are \
                taken back with this host's tasks when it is lost or leaves");
            return Some(Drained {
                handed_over: 0,
                running: self.live(),
            });
        }
        // What was delivered to them from the store is in their checkpoints: deleted before
        // another host may claim them and read it again.
        self.ack_delivered(cluster);
        let handed_over = match cluster.store.hand_back(&handed) {
            Ok(count) => count,
            Err(error) => {
                tracing::error!(%error, "the drained tasks could not be put back in the shared \
                    queue; they are taken back when this host is lost or leaves");
                0
            }
        };
        tracing::warn!(
            handed_over,
            running = self.live(),
            "drained: tasks that take checkpoints are handed to the other hosts; the others end \
             here; new tasks wait in the shared queue"
        );
        Some(Drained {
            handed_over,
            running: self.live(),
        })
    }

    /// Drains host `name` of this host's cluster: this one, or another, asked over HTTP with the
    /// admin `token` this request carried (a request `relayed` here is never relayed again).
    pub async fn drain_node(
        self: &Arc<Self>,
        name: &str,
        token: Option<&str>,
        relayed: bool,
    ) -> Result<DrainAnswer, DrainError> {
        let Some((_, own)) = self.node() else {
            return Err(DrainError::NotClustered);
        };
        if own == name {
            let host = Arc::clone(self);
            let drained = tokio::task::spawn_blocking(move || host.drain())
                .await
                .map_err(|error| DrainError::Unreachable(error.to_string()))?
                .ok_or(DrainError::NotClustered)?;
            return Ok(DrainAnswer::Here(drained));
        }
        if relayed {
            return Err(DrainError::NotHere(name.to_owned()));
        }
        let nodes = self.nodes().await.map_err(DrainError::Store)?;
        // A host started again under its name has a row of its own, up, beside the old ones.
        let Some(node) = nodes
            .iter()
            .filter(|node| node.name == name)
            .max_by_key(|node| (node.state == "up", node.id))
        else {
            return Err(DrainError::NoSuchNode(name.to_owned()));
        };
        if node.state != "up" {
            return Err(DrainError::NotUp(name.to_owned(), node.state.clone()));
        }
        let (status, body) = super::relay::relay_drain(&node.address, name, token)
            .await
            .map_err(DrainError::Unreachable)?;
        Ok(DrainAnswer::Relayed(status.as_u16(), body))
    }

    /// Whether this host is drained.
    pub(super) fn draining(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|cluster| cluster.draining.load(Ordering::Acquire))
    }

    pub(super) fn stop_claiming(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.leaving.store(true, Ordering::Release);
        }
    }

    /// Leaves the cluster at a graceful shutdown: hands the tasks waiting for a place here back
    /// to the shared queue. The lease is renewed until every task here has ended.
    pub(super) fn leave_cluster(&self, waiting: Vec<Job>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        cluster.leaving.store(true, Ordering::Release);
        if waiting.is_empty() {
            return;
        }
        let pids: Vec<Pid> = waiting.iter().map(|job| job.pid).collect();
        // Their acceptances (and claims) are written before they are handed back.
        let _ = self.store.wait(Vec::new());
        match cluster.store.hand_back(&pids) {
            Ok(count) => {
                tracing::info!(
                    tasks = count,
                    "handed the tasks waiting here back to the shared queue"
                );
            }
            Err(error) => {
                tracing::error!(%error, "could not hand the waiting tasks back; they are taken \
                    back when this host's lease expires");
            }
        }
        // They go on elsewhere: nobody here is told they ended, and those watching them from
        // here watch them where they go.
        for job in waiting {
            let moved = self.actors.moved(job.pid, job.attempt);
            for caller in moved.wake {
                self.scheduler.wake(caller);
            }
            crate::actor::Kernel::moved(self, job.pid, &moved.watchers, &moved.links);
        }
    }

    /// Puts back in the shared queue the tasks this host accepted as it began to shut down,
    /// which never started here; a host alone keeps them in its store for its next start.
    pub(super) fn hand_back_left(&self, pids: &[Pid]) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        match cluster.store.hand_back(pids) {
            Ok(count) => tracing::info!(
                tasks = count,
                "handed the tasks accepted as the host \
                shut down back to the shared queue"
            ),
            Err(error) => tracing::error!(%error, "could not hand the tasks accepted as the host \
                shut down back; they are taken back when this host's lease expires"),
        }
    }

    /// Deletes from the store the commands carried out here and not yet deleted (those of a
    /// task just claimed wait for the next poll): a task handed on carries them in its
    /// checkpoint, and the host that resumes it must not carry them out again.
    pub(super) fn ack_delivered(&self, cluster: &Cluster) {
        let mut delivered = cluster
            .delivered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if delivered.is_empty() {
            return;
        }
        match cluster.store.ack_commands(&delivered) {
            Ok(()) => delivered.clear(),
            Err(error) => {
                tracing::warn!(%error, "the commands carried out here could not be                 deleted; a task handed on may get them twice")
            }
        }
    }

    /// Marks this host as gone, once every task it ran has ended.
    pub(super) fn left_cluster(&self) {
        if let Some(cluster) = &self.cluster {
            self.ack_delivered(cluster);
        }
        if let Some(cluster) = &self.cluster
            && !cluster.left.swap(true, Ordering::AcqRel)
            && let Err(error) = cluster.store.leave()
        {
            tracing::warn!(%error, "could not mark this host as left; its lease expires instead");
        }
    }
}

/// What came of a drain.
#[derive(Debug)]
pub enum DrainAnswer {
    /// This host was drained.
    Here(Drained),
    /// The host named answered with this status and body.
    Relayed(u16, String),
}

/// Why a host could not be drained.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("this host is not one of a cluster: there is no other host to hand its tasks to")]
    NotClustered,
    #[error("no host of the cluster is named {0:?}")]
    NoSuchNode(String),
    #[error("host {0:?} is {1}, not up")]
    NotUp(String, String),
    #[error("this host is not {0:?}: a drain relayed here is not relayed again")]
    NotHere(String),
    #[error("host could not be reached: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Store(crate::store::StoreError),
}

/// What draining a host did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Drained {
    /// Tasks checkpointed here and handed to the shared queue, for another host to resume.
    pub handed_over: u64,
    /// Tasks still live here: those that take no checkpoints (or were in a step), which end
    /// here.
    pub running: u32,
}
