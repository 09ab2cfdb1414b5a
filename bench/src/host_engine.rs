//! The host's engine settings (host/src/runtime/engine.rs, `engine_config`) rebuilt in the
//! bench, so that section 4 can turn signal-based traps back on and see what the host gives up
//! by keeping them off. The host's own engine is not configurable this way on purpose: its
//! settings are what let 100,000 tasks live under `vm.max_map_count`, and they stay fixed.
//!
//! A copy can drift from the original; section 4 therefore also runs the copy with signals off
//! beside the host's own engine, and the two should agree.

use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, EngineWeak, Instance, InstanceAllocationStrategy, Module,
    PoolingAllocationConfig, Store,
};

/// How the copy of the host's engine differs from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Exactly the host's settings: slots of the memory cap, no guard regions, no signal
    /// handlers. The control that checks the copy against the host's own engine.
    SignalsOff,
    /// The host's slots, signal-based traps on: bounds are still checked explicitly (the slot
    /// is no larger than the memory), so what changes is the rest of the code generation
    /// (traps by fault rather than by branch, Cranelift's Spectre mitigations back on) and the
    /// unused end of a slot going back to `PROT_NONE` when the next instance takes it.
    SignalsOn,
    /// Signal-based traps on with wasmtime's default reservation and guard regions (4 GiB and
    /// 32 MiB on x86-64), so bounds checks are elided: what plain wasmtime's compute speed
    /// costs in address space and mappings.
    Guarded,
}

impl Layout {
    pub const ALL: [Self; 3] = [Self::SignalsOff, Self::SignalsOn, Self::Guarded];

    /// The layout as section 4's table and results name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::SignalsOff => "signals off",
            Self::SignalsOn => "signals on",
            Self::Guarded => "signals on, guarded",
        }
    }
}

/// Core instances, memories and tables of one worker, and a table's elements: the host's
/// `MAX_*` constants.
const CORE_INSTANCES_PER_COMPONENT: u32 = 4;
const MEMORIES_PER_COMPONENT: u32 = 1;
const TABLES_PER_COMPONENT: u32 = 2;
const TABLE_ELEMENTS: usize = 4096;
/// The host's `KEEP_RESIDENT_BYTES`.
const KEEP_RESIDENT_BYTES: usize = 64 * 1024;
/// Bytes of a wasm page.
const WASM_PAGE_BYTES: usize = 64 * 1024;
/// The host's `EPOCH_TICK`.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// The host's engine configuration for `capacity` live instances of at most `max_memory_bytes`
/// each, fuel and epoch interruption on, laid out as `layout` says. The host adds one spare
/// instance to its capacity; `capacity` here is the pool's whole size.
pub fn config(layout: Layout, capacity: u32, max_memory_bytes: usize) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(capacity)
        .total_core_instances(capacity * CORE_INSTANCES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(capacity * MEMORIES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_tables(capacity * TABLES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .table_elements(TABLE_ELEMENTS)
        .max_memory_size(max_memory_bytes)
        .total_stacks(0)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_may_move(false)
        .memory_init_cow(false)
        .signals_based_traps(layout != Layout::SignalsOff);
    if layout != Layout::Guarded {
        config
            .memory_reservation(max_memory_bytes as u64)
            .memory_guard_size(0)
            .memory_reservation_for_growth(0)
            .guard_before_linear_memory(false);
    }
    config
}

/// Makes every memory slot of the pool read-write end to end once, as the host does at start
/// (`warm_up_pool`): without it even the host's own layout costs mappings per live instance,
/// and the mapping counts of section 4 would not be the host's.
pub fn warm_up(engine: &Engine, capacity: u32, max_memory_bytes: usize) -> wasmtime::Result<()> {
    let module = Module::new(
        engine,
        memory_only_module(max_memory_bytes / WASM_PAGE_BYTES),
    )?;
    let mut store = Store::new(engine, ());
    // Fuel and epochs are on; instantiating a module without a start function uses neither.
    store.set_fuel(u64::MAX)?;
    store.set_epoch_deadline(u64::MAX / 2);
    for _ in 0..capacity * MEMORIES_PER_COMPONENT {
        Instance::new(&mut store, &module, &[])?;
    }
    Ok(())
}

/// Advances the engine's epoch every tick while anything still holds the engine, as the host's
/// ticker does.
pub fn start_epoch_ticker(engine: EngineWeak) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}

/// The binary of `(module (memory <pages>))`.
fn memory_only_module(pages: usize) -> Vec<u8> {
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
    module.extend([5, (2 + min.len()) as u8, 1, 0]);
    module.extend(min);
    module
}
