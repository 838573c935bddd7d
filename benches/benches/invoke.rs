//! Invocation cost: a warm `Skill::invoke` of `hello` against bare wasmtime
//! (`InstancePre` instantiate + call of the same component on the same
//! engine) in the same run, and loading a component from the compile cache
//! against compiling it.
//!
//! Run with `cargo bench -p skillbox-benches --bench invoke`. The ratio of
//! the two `invoke` medians is the runtime's per-call overhead (fresh store,
//! empty WASI context, limits, stdio capture, JSON checks).

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;

use skillbox_host_api::{HostServices, Invocation, SkillCtx, SkillCtxView, SkillPre, SkillView};
use skillbox_runtime::{Runtime, RuntimeConfig};
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const INPUT: &str = r#"{"name":"Ada"}"#;

/// The least state a store needs to run a skill: WASI and the skill imports.
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
    skill: SkillCtx,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl SkillView for Bare {
    fn skill(&mut self) -> SkillCtxView<'_> {
        SkillCtxView { ctx: &mut self.skill, table: &mut self.table }
    }
}

fn invoke(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime =
        Runtime::new(RuntimeConfig { cache_dir: Some(cache.path().to_owned()), ..RuntimeConfig::default() }).unwrap();
    let skill = runtime.load(skillbox_tests::HELLO).unwrap();

    // Bare wasmtime on the same engine, so both run identical machine code.
    let engine = runtime.engine().clone();
    let component = Component::from_file(&engine, skillbox_tests::HELLO_COMPONENT).unwrap();
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    skillbox_host_api::add_to_linker(&mut linker).unwrap();
    let pre = SkillPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let services = Arc::new(HostServices::new(Default::default()).unwrap());

    let mut group = c.benchmark_group("invoke");
    group.bench_function("skillbox", |b| {
        b.to_async(&tokio).iter(|| async { skill.invoke(INPUT).await.unwrap() });
    });
    group.bench_function("bare-wasmtime", |b| {
        b.to_async(&tokio).iter(|| async {
            let state = Bare {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
                skill: SkillCtx::new(Invocation::anonymous("hello"), services.clone()),
            };
            let mut store = Store::new(&engine, state);
            store.set_fuel(u64::MAX).unwrap();
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            instance.call_run(&mut store, INPUT).await.unwrap().unwrap()
        });
    });
    group.finish();
}

fn load(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let cached =
        Runtime::new(RuntimeConfig { cache_dir: Some(cache.path().to_owned()), ..RuntimeConfig::default() }).unwrap();
    cached.load(skillbox_tests::HELLO).unwrap(); // fill the cache
    let uncached = Runtime::new(RuntimeConfig { cache_dir: None, ..RuntimeConfig::default() }).unwrap();

    let mut group = c.benchmark_group("load");
    group.sample_size(20);
    group.bench_function("from-cache", |b| b.iter(|| cached.load(skillbox_tests::HELLO).unwrap()));
    group.bench_function("compile", |b| b.iter(|| uncached.load(skillbox_tests::HELLO).unwrap()));
    group.finish();
}

criterion_group!(benches, invoke, load);
criterion_main!(benches);
