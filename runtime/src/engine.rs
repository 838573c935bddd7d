//! The one wasmtime `Engine` a runtime uses, and the thread that ticks its epoch.
//!
//! Settings that are engine-wide (and so must hold for every skill) live
//! here: the component model, async support for host calls, epoch
//! interruption for wall-clock deadlines, fuel for optional instruction
//! budgets, and the pooling allocator, which halves per-call cost by reusing
//! pre-reserved memory slots instead of mapping fresh ones.

use std::time::Duration;

use wasmtime::{Config, Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::{Error, Result};
use crate::manifest::MAX_MEMORY;

/// How often the epoch advances; a deadline is noticed within one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Builds the engine. `max_instances` sizes the pooling allocator and so
/// bounds how many invocations can be live at once.
/// `max_memory` is the operator's memory cap: no instance's memory grows past it.
pub(crate) fn build_engine(max_instances: u32, max_memory: u64) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Fuel is compiled into every function, so it is on for all skills;
    // skills without a fuel limit get u64::MAX. Measured cost is in the noise.
    config.consume_fuel(true);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(max_instances, max_memory)));
    Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))
}

fn pooling(max_instances: u32, max_memory: u64) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    // A Rust wasip2 component holds its main module plus a few small shims (3 core
    // instances, 1 memory, 2 tables). A Python component from componentize-py
    // (sample-skills/py-*) links CPython, libc and its runtime as separate modules:
    // 14 core instances, still 1 memory (206 pages to start) and 2 tables (the
    // larger 5,682 elements, under the pool's default 20,000 per table); every
    // native extension module a Python skill bundles adds one more core instance.
    // Live core instances are only counted (their state is allocated on demand),
    // so the per-invocation allowance is generous: a pool full of Python skills
    // runs out of component slots, not core instances, and a Python skill with a
    // few dozen extension modules still instantiates.
    pool.total_component_instances(max_instances);
    pool.total_core_instances(max_instances * 32);
    pool.total_memories(max_instances * 2);
    pool.total_tables(max_instances * 8);
    pool.total_stacks(max_instances);
    pool.max_memories_per_component(4);
    pool.max_tables_per_component(16);
    pool.max_core_instances_per_component(64);
    // The operator's cap bounds every instance (rounded up to whole 64 KiB wasm pages); the
    // per-store limiter enforces each skill's own, possibly smaller, effective limit.
    const PAGE: u64 = 64 * 1024;
    let max_memory = max_memory.clamp(PAGE, MAX_MEMORY).div_ceil(PAGE) * PAGE;
    pool.max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
    pool
}

/// Advances an engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker;

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> EpochTicker {
        let weak: EngineWeak = engine.weak();
        std::thread::Builder::new()
            .name("skillbox-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker
    }
}
