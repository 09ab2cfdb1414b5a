//! The engine: fuel metering, epoch interruption, and a pooling allocator laid out so that a
//! live task costs the kernel no memory mapping of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use super::SandboxConfig;
use crate::model::WASM_PAGE_BYTES;

/// Core instances of a worker: a Rust `wasm32-wasip2` component holds three (its module, the
/// WASI adapter and a shim); one more for other toolchains. Instances are only counted by the
/// pool, not reserved, so headroom here is free.
pub(super) const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 4;
/// Linear memories of a worker. Every memory slot costs address space and, once used, kernel
/// mappings, so a worker gets one; a component with more fails to instantiate, recorded.
pub(super) const MAX_MEMORIES_PER_COMPONENT: u32 = 1;
/// Tables of a worker: its function table and the shim's.
pub(super) const MAX_TABLES_PER_COMPONENT: u32 = 2;
/// Elements per table; a Rust worker's function table holds a few hundred.
pub(super) const MAX_TABLE_ELEMENTS: usize = 4096;

/// Bytes of a freed memory or table slot reset in place rather than returned to the kernel.
const KEEP_RESIDENT_BYTES: usize = 64 * 1024;

/// Instances the pool holds beyond the host's capacity: room for a new module's smoke run
/// while every task place is taken. Loads are serialised, so one is enough.
pub(super) const SPARE_INSTANCES: u32 = 1;

/// How often the engine's epoch advances: the latency of a kill or a deadline for a running
/// step, and the interval at which a running step's limits are checked.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Ticks without a guest call beginning, or a running one seeing a tick, after which the
/// ticker parks: ~100 ms.
const IDLE_TICKS: u64 = 50;

/// The process's ticker: every engine that interrupts running steps is ticked by it.
static TICKER: OnceLock<Arc<Ticker>> = OnceLock::new();

/// Advances the epoch of its engines every [`EPOCH_TICK`] while guest code runs, and parks
/// while none has run for [`IDLE_TICKS`]: an idle host then costs no wake-ups (about 500 a
/// second otherwise).
///
/// Epochs only matter to a guest call that is running, which a kill or a deadline interrupts.
/// So each call marks the ticker busy as it begins ([`busy`], from `refuel`), and a call still
/// running marks it again at every tick it sees (the epoch callback). Marking costs two loads
/// and, at most once a tick, a store: nothing shared is written per call. A call that finds the
/// ticker parked wakes it; the ticker parks only after saying so and then finding no mark, so
/// one of the two always sees the other.
#[derive(Default)]
pub(super) struct Ticker {
    engines: Mutex<Vec<EngineWeak>>,
    /// Ticks given so far.
    ticks: AtomicU64,
    /// The tick at which a guest call last began or saw a tick.
    busy_at: AtomicU64,
    parked: AtomicBool,
    thread: Mutex<Option<std::thread::Thread>>,
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker")
            .field("ticks", &self.ticks)
            .field("parked", &self.parked)
            .finish_non_exhaustive()
    }
}

impl Ticker {
    /// Ticks `engine` from now on, for as long as anything else holds it, with the process's
    /// ticker (its thread started on first use).
    pub(super) fn tick_global(engine: &Engine) -> std::io::Result<()> {
        let ticker = TICKER.get_or_init(Arc::default);
        ticker.start()?;
        ticker.tick(engine);
        Ok(())
    }

    /// Starts the ticker's thread, once.
    fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let mut thread = lock(&self.thread);
        if thread.is_none() {
            let ticker = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || ticker.run())?;
            *thread = Some(spawned.thread().clone());
        }
        Ok(())
    }

    /// Ticks `engine` from now on, for as long as anything else holds it.
    fn tick(&self, engine: &Engine) {
        lock(&self.engines).push(engine.weak());
        self.busy();
    }

    /// A guest call begins, or a running one saw a tick: keeps the ticker ticking.
    fn busy(&self) {
        let now = self.ticks.load(Ordering::Relaxed);
        if self.busy_at.load(Ordering::Relaxed) != now {
            self.busy_at.store(now, Ordering::SeqCst);
        }
        if self.parked.load(Ordering::SeqCst)
            && let Some(thread) = lock(&self.thread).as_ref()
        {
            thread.unpark();
        }
    }

    fn idle(&self) -> bool {
        let now = self.ticks.load(Ordering::Relaxed);
        now.saturating_sub(self.busy_at.load(Ordering::SeqCst)) > IDLE_TICKS
    }

    fn run(&self) {
        loop {
            {
                let mut engines = lock(&self.engines);
                engines.retain(|engine| match engine.upgrade() {
                    Some(engine) => {
                        engine.increment_epoch();
                        true
                    }
                    None => false,
                });
            }
            self.ticks.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(EPOCH_TICK);
            if self.idle() {
                self.parked.store(true, Ordering::SeqCst);
                if self.idle() {
                    std::thread::park();
                }
                self.parked.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// A guest call begins, or a running one saw a tick: keeps the process's ticker ticking.
pub(super) fn busy() {
    if let Some(ticker) = TICKER.get() {
        ticker.busy();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The engine configuration: fuel metering, and a pooling allocator sized for `capacity` live
/// instances whose memory slots are exactly the task memory cap.
///
/// The pool is laid out so that a live task costs the kernel no memory mapping of its own, which
/// is what lets one host keep 100,000 tasks under the default `vm.max_map_count` of 65530:
/// - no guard regions and no copy-on-write images, so a slot is one anonymous range;
/// - no signals-based traps, so wasmtime checks every bounds explicitly and never turns the
///   unused end of a slot back to `PROT_NONE`; with [`warm_up_pool`] every slot is then
///   read-write end to end and the whole pool stays a single mapping.
///
/// The price: explicit bounds checks on every memory access (about what guard-less slots cost
/// anyway), no guard pages between neighbouring tasks' memories, and Cranelift's Spectre
/// mitigations for heap and table accesses off, which wasmtime requires without signal
/// handlers. Isolation rests on the bounds checks, which wasmtime emits for every access.
pub(super) fn engine_config(config: &SandboxConfig) -> Config {
    laid_out(config, EngineLayout::Host)
}

/// How the engine lays out linear memory and traps. The host always runs [`EngineLayout::Host`];
/// `make bench` builds the others to measure what the host gives up for its density.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineLayout {
    /// Slots of exactly the memory cap, no guard regions, no signal handlers: one kernel
    /// mapping for the whole pool, bounds checked explicitly ([`engine_config`]).
    Host,
    /// The host's slots with signal-based traps on: bounds still checked explicitly (a slot is
    /// no larger than its memory), traps by fault, and the unused end of a slot set back to
    /// `PROT_NONE` when the next instance takes it, which splits the pool's mapping.
    SignalsOn,
    /// Signal-based traps with wasmtime's default reservation and guard regions: bounds checks
    /// elided, for ~2 kernel mappings and ~4 GiB of address space a slot.
    Guarded,
}

/// [`engine_config`] laid out as `layout`.
pub(super) fn laid_out(config: &SandboxConfig, layout: EngineLayout) -> Config {
    let capacity = config.capacity.max(1).saturating_add(SPARE_INSTANCES);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(capacity)
        .total_core_instances(capacity.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .total_memories(capacity.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .total_tables(capacity.saturating_mul(MAX_TABLES_PER_COMPONENT))
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_memory_size(config.max_memory_bytes)
        // Tasks never run on fibers (every call is synchronous), so the pool needs no async
        // stacks; its default of 1,000 would cost two mappings and 2 MiB of address each.
        .total_stacks(0)
        // A freed slot's pages are reset in place (only the dirty ones, found with the
        // PAGEMAP_SCAN ioctl where the kernel has it) instead of being handed back with
        // madvise: no page faults for the next task, and no TLB shootdown across the
        // scheduler threads, which dominated the cost of a short task.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut engine = Config::new();
    engine
        .wasm_component_model(true)
        .consume_fuel(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_may_move(false)
        .memory_init_cow(false)
        .signals_based_traps(layout != EngineLayout::Host)
        .epoch_interruption(config.epoch_interruption);
    if layout != EngineLayout::Guarded {
        engine
            .memory_reservation(config.max_memory_bytes as u64)
            .memory_guard_size(0)
            .memory_reservation_for_growth(0)
            .guard_before_linear_memory(false);
    }
    engine
}

/// Makes every memory slot of the pool read-write end to end, once, at start: it instantiates
/// a memory of the full cap in every slot at the same time, then drops them. Slots never lose
/// that protection afterwards (see [`engine_config`]), so neighbouring slots stay one mapping
/// however tasks come and go. Costs well under a second for 100,000 slots.
pub(super) fn warm_up_pool(engine: &Engine, config: &SandboxConfig) -> wasmtime::Result<()> {
    let slots = config
        .capacity
        .max(1)
        .saturating_add(SPARE_INSTANCES)
        .saturating_mul(MAX_MEMORIES_PER_COMPONENT) as usize;
    let pages = config.max_memory_bytes as u64 / WASM_PAGE_BYTES;
    let module = wasmtime::Module::new(engine, memory_only_module(pages))?;
    let mut store = Store::new(
        engine,
        wasmtime::StoreLimitsBuilder::new()
            .instances(slots)
            .memories(slots)
            .build(),
    );
    store.limiter(|limits| limits);
    // Fuel is on engine-wide; instantiating a module without a start function burns none.
    refuel_any(&mut store);
    for _ in 0..slots {
        wasmtime::Instance::new(&mut store, &module, &[])?;
    }
    drop(store);
    release_freed_heap();
    Ok(())
}

/// Gives the heap the warm-up freed (about a kilobyte per slot) back to the kernel, which
/// glibc's allocator would otherwise keep for the life of the process.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it takes no
    // pointers and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The binary of `(module (memory <pages>))`.
fn memory_only_module(pages: u64) -> Vec<u8> {
    let mut min = Vec::new();
    let mut rest = pages;
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            min.push(byte);
            break;
        }
        min.push(byte | 0x80);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Memory section: one memory, limits with a minimum only.
    module.push(5);
    module.push((2 + min.len()) as u8);
    module.extend([1, 0]);
    module.extend(min);
    module
}

fn refuel_any<T>(store: &mut Store<T>) {
    let _ = store.set_fuel(u64::MAX);
    store.set_epoch_deadline(u64::MAX / 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks_over(ticker: &Ticker, wait: Duration) -> u64 {
        let before = ticker.ticks.load(Ordering::Relaxed);
        std::thread::sleep(wait);
        ticker.ticks.load(Ordering::Relaxed) - before
    }

    #[test]
    fn the_ticker_parks_while_no_guest_runs_and_wakes_for_one() {
        let ticker = Arc::new(Ticker::default());
        ticker.start().expect("a thread");
        let engine = Engine::default();
        ticker.tick(&engine);
        assert!(
            ticks_over(&ticker, Duration::from_millis(40)) > 0,
            "ticks while busy"
        );
        // Idle for longer than IDLE_TICKS: parked, not ticking.
        std::thread::sleep(EPOCH_TICK * (IDLE_TICKS as u32 + 40));
        assert!(ticker.parked.load(Ordering::SeqCst), "parked while idle");
        assert_eq!(ticks_over(&ticker, Duration::from_millis(40)), 0);
        // A call begins: ticking again at once, for a while.
        ticker.busy();
        assert!(
            ticks_over(&ticker, Duration::from_millis(40)) > 0,
            "woken by a call"
        );
        // An engine nobody holds is let go.
        drop(engine);
        ticker.busy();
        std::thread::sleep(EPOCH_TICK * 4);
        assert!(lock(&ticker.engines).is_empty());
    }
}
