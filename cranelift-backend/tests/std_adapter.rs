//! The kiln-std adapter (feature `std-adapter`) end to end: kiln-std's
//! `BackendAdapter` compiling with `CraneliftBackend`, OSR entries, and the
//! code budget evicting after a compile, never inside it.

mod common;

use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::types::{I32, I64};
use kiln_cranelift::{CraneliftBackend, CraneliftConfig, CraneliftError, FunctionDef};
use kiln_std::{BackendAdapter, JitBackend};

fn backend() -> CraneliftBackend {
    CraneliftConfig::new().build().expect("host supported")
}

fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

#[test]
fn kiln_std_adapter_compiles_hot_functions() {
    let adapter = BackendAdapter::with_policy(backend(), kiln_std::ThresholdPolicy::new(10));
    let bound = adapter.register(ptr::null_mut(), None);
    let call = || adapter.on_invoke(&bound, |_bead| fib_def());
    assert!(wait_until(|| call().is_some()));
    let entry = call().unwrap();
    // SAFETY: `fib_def` is (i64) -> i64, installed.
    assert_eq!(unsafe { call1(entry, 20) }, 6765);
    assert_eq!(adapter.backend().stats().live_units, 1);
    // Retire it and declare quiescence: the module is freed.
    bound.reload();
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    assert!(wait_until(|| adapter.backend().stats().live_units == 0));
}

#[test]
fn kiln_std_failed_compile_keeps_interpreting() {
    let adapter = BackendAdapter::with_policy(backend(), kiln_std::ThresholdPolicy::new(1));
    let bound = adapter.register(ptr::null_mut(), None);
    let broken = || {
        FunctionDef::new("broken", &[I64], &[I64], |builder, _cx| {
            let block = builder.create_block();
            builder.switch_to_block(block);
            builder.seal_block(block);
            let x = builder.ins().iconst(I32, 1);
            builder.ins().return_(&[x]);
            Ok(())
        })
    };
    assert_eq!(adapter.on_invoke(&bound, move |_| broken()), None);
    assert!(wait_until(|| adapter.beadie().stats().failures == 1));
    assert_eq!(bound.bead().compiled(), None);
    assert_eq!(adapter.backend().stats().failed, 1);
}

#[test]
fn kiln_std_publishes_prepared_osr_entries() {
    let adapter = Arc::new(BackendAdapter::with_policy(backend(), kiln_std::ThresholdPolicy::new(1)));
    let bound = adapter.register(ptr::null_mut(), None);
    let backend = adapter.backend().clone();
    adapter.on_invoke_osr(&bound, move |_bead| backend.prepare(sum_def()));
    assert!(wait_until(|| bound.bead().compiled().is_some()));
    let osr = bound.bead().osr_entry(SUM_LOOP).expect("published with the entry");
    // SAFETY: `sum_def`'s OSR entry is (i, acc, n) -> i64, installed.
    assert_eq!(unsafe { call3(osr, 5, 10, 10) }, 45);
    // Entry and OSR entry are one unit, freed together.
    assert_eq!(adapter.backend().stats().live_units, 1);
}

#[test]
fn kiln_std_publishes_osr_entries_compiled_with_the_function() {
    let adapter = BackendAdapter::with_policy(backend(), kiln_std::ThresholdPolicy::new(1));
    let bound = adapter.register(ptr::null_mut(), None);
    // No `prepare`: `compile_with_osr` hands the loop entries to kiln-std.
    adapter.on_invoke_osr(&bound, |_bead| kiln_std::OsrBuild { def: sum_def(), osr: Vec::new() });
    assert!(wait_until(|| bound.bead().compiled().is_some()));
    let osr = bound.bead().osr_entry(SUM_LOOP).expect("published with the entry");
    // SAFETY: `sum_def`'s OSR entry is (i, acc, n) -> i64, installed.
    assert_eq!(unsafe { call3(osr, 5, 10, 10) }, 45);
    assert_eq!(adapter.backend().stats().live_units, 1);
}

#[test]
fn kiln_std_budget_evicts_through_the_bead() {
    let backend = CraneliftConfig::new().code_budget(4096).eviction_pause(500).build().unwrap();
    let adapter = BackendAdapter::with_policy(backend, kiln_std::ThresholdPolicy::new(1));
    let first = adapter.register(ptr::null_mut(), None);
    let second = adapter.register(ptr::null_mut(), None);
    assert!(wait_until(|| adapter.on_invoke(&first, |_| add_def("first", 1)).is_some()));
    assert!(wait_until(|| adapter.on_invoke(&second, |_| add_def("second", 2)).is_some()));
    // The second compile needed the only page: the first went back.
    assert!(wait_until(|| first.bead().compiled().is_none()));
    assert_eq!(first.bead().state(), kiln_std::BeadState::Interpreted);
    assert_eq!(first.bead().bailout_count(), 0, "an eviction is not a bailout");
    assert_eq!(adapter.backend().stats().evicted, 1);
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    assert!(wait_until(|| adapter.backend().stats().live_units == 1));
    // Paused: the next calls interpret without recompiling.
    for _ in 0..100 {
        assert_eq!(adapter.on_invoke(&first, |_| add_def("first", 1)), None);
    }
    assert_eq!(adapter.backend().stats().compiled, 2);
    let _: fn(&CraneliftBackend, &Arc<kiln_std::Bead>, FunctionDef) -> Result<*mut (), CraneliftError> =
        <CraneliftBackend as JitBackend>::compile;
}

/// [`CraneliftBackend`] as kiln-std sees it, watching one bead: after the
/// backend's compile returned — still inside kiln's compile — it notes
/// whether the watched bead's code was taken away meanwhile.
struct Watching {
    inner: CraneliftBackend,
    watched: std::sync::Mutex<Option<Arc<kiln_std::Bead>>>,
    evicted_inside_a_compile: std::sync::atomic::AtomicBool,
}

impl JitBackend for Watching {
    type FunctionDef = FunctionDef;
    type Error = CraneliftError;

    fn compile(&self, bead: &Arc<kiln_std::Bead>, def: FunctionDef) -> Result<*mut (), CraneliftError> {
        let watched = self.watched.lock().unwrap().clone();
        let before = watched.as_ref().and_then(|watched| watched.compiled());
        let entry = self.inner.compile(bead, def)?;
        let after = watched.as_ref().and_then(|watched| watched.compiled());
        if before.is_some() && after.is_none() {
            self.evicted_inside_a_compile.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(entry)
    }

    fn after_compile(&self, bead: &Arc<kiln_std::Bead>) {
        self.inner.after_compile(bead);
    }

    fn release(&self, code: *mut ()) {
        self.inner.release(code);
    }
}

#[test]
fn kiln_std_budget_evicts_after_the_compile_not_inside_it() {
    // Room for one unit: the second compile needs the first one's page.
    let backend = CraneliftConfig::new().code_budget(4096).eviction_pause(500).build().unwrap();
    let watching = Watching {
        inner: backend,
        watched: std::sync::Mutex::default(),
        evicted_inside_a_compile: std::sync::atomic::AtomicBool::new(false),
    };
    let config = kiln_std::BeadieConfig { workers: 0, ..kiln_std::BeadieConfig::default() };
    let adapter = BackendAdapter::with_config(watching, kiln_std::ThresholdPolicy::new(1), config);
    let (first, second) = (adapter.register(ptr::null_mut(), None), adapter.register(ptr::null_mut(), None));
    adapter.on_invoke(&first, |_| add_def("first", 1));
    adapter.beadie().pump(kiln_std::Budget::unlimited());
    assert!(first.bead().compiled().is_some());
    *adapter.backend().watched.lock().unwrap() = Some(Arc::clone(first.bead()));

    adapter.on_invoke(&second, |_| add_def("second", 2));
    adapter.beadie().pump(kiln_std::Budget::unlimited());
    assert!(
        !adapter.backend().evicted_inside_a_compile.load(std::sync::atomic::Ordering::Relaxed),
        "a compile evicted another bead: it must only choose it, and evict once the compile is over"
    );
    // Evicted by the post-compile hook, after the pump returned.
    assert!(second.bead().compiled().is_some(), "the new function is installed");
    assert_eq!(first.bead().compiled(), None, "the cold function went back to the interpreter");
    assert_eq!(first.bead().state(), kiln_std::BeadState::Interpreted);
    let stats = adapter.backend().inner.stats();
    assert_eq!(stats.evicted, 1);
    assert!(stats.resident_bytes - stats.evicting_bytes <= 4096, "{stats:?}");
    // Once released, the memory is back within the budget.
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    let stats = adapter.backend().inner.stats();
    assert_eq!((stats.live_units, stats.resident_bytes, stats.evicting_bytes), (1, 4096, 0), "{stats:?}");
}

/// kiln-std's ledger and the backend's unit counts, side by side: every
/// unit kiln-std published is one the backend compiled, and every unit
/// kiln-std released is one the backend freed.
fn assert_counts_agree(adapter: &BackendAdapter<CraneliftBackend>) {
    let (published, released) = adapter.beadie().code_counts();
    let stats = adapter.backend().stats();
    assert_eq!(published, stats.compiled, "published by kiln-std vs compiled by the backend: {stats:?}");
    assert_eq!(released, stats.freed, "released by kiln-std vs freed by the backend: {stats:?}");
    assert_eq!((published - released) as usize, stats.live_units, "live units: {stats:?}");
}

#[test]
fn back_edge_osr_through_the_backend_adapter_then_reload_and_quiesce() {
    // A function called once whose loop runs long: only its back-edges
    // count (a tenth of a call each), so the loop is what makes it hot.
    let adapter = BackendAdapter::with_policy(backend(), kiln_std::ThresholdPolicy::new(10));
    let bound = adapter.register(ptr::null_mut(), None);
    let mut osr = None;
    assert!(wait_until(|| {
        osr = adapter.on_backedge(&bound, SUM_LOOP, |_bead| sum_def());
        osr.is_some()
    }));
    // SAFETY: `sum_def`'s OSR entry is (i, acc, n) -> i64, installed and
    // not retired while this thread has not quiesced.
    assert_eq!(unsafe { call3(osr.unwrap(), 5, 10, 10) }, 45);
    let entry = bound.bead().compiled().expect("the entry was published with the OSR table");
    // SAFETY: `sum_def` is (i64) -> i64.
    assert_eq!(unsafe { call1(entry, 10) }, 45);
    assert_eq!(adapter.backend().stats().compiled, 1, "compiled once, by the backend's compile_with_osr");
    assert_counts_agree(&adapter);

    // Reload retires the unit; the next back-edges compile it again.
    assert_eq!(bound.reload(), kiln_std::ReloadOutcome::WillRecompile);
    assert_eq!(bound.bead().osr_entry(SUM_LOOP), None, "the retired table is gone");
    assert!(wait_until(|| adapter.on_backedge(&bound, SUM_LOOP, |_bead| sum_def()).is_some()));
    assert_eq!(adapter.backend().stats().compiled, 2);

    // Two quiesce rounds free the retired unit through `JitBackend::release`.
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    assert!(wait_until(|| adapter.backend().stats().freed == 1));
    assert_eq!(adapter.backend().stats().live_units, 1);
    assert_counts_agree(&adapter);
    assert_eq!(adapter.beadie().parked_code(), 0, "nothing parked: all freed or live");
}

#[test]
fn attached_factory_and_typed_entry_with_cranelift() {
    let adapter = BackendAdapter::with_policy(backend(), kiln_std::ThresholdPolicy::new(10));
    // The definition's source moves into the factory once; calls pass nothing.
    let bound = adapter.register_with("fib", ptr::null_mut(), |_bead| Ok::<_, kiln_std::CompileError>(fib_def()));
    // SAFETY: `fib_def` compiles to an `extern "C" fn(i64) -> i64`, and
    // nothing else is swapped into this bead.
    let fib = unsafe { bound.typed::<extern "C" fn(i64) -> i64>() };
    assert!(wait_until(|| fib.on_invoke().is_some()));
    assert_eq!(fib.on_invoke().map(|native| native(20)), Some(6765));
    assert_eq!(fib.bead().name().as_deref(), Some("fib"));

    // Back to the interpreter and reclaimed: the backend freed the unit.
    fib.bound().reload();
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    assert!(wait_until(|| adapter.backend().stats().freed == 1));
    assert_counts_agree(&adapter);
}
