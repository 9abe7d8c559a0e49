//! kiln-std's `BackendAdapter` on `LlvmBackend`: a hot function and a hot
//! loop are compiled on kiln-std's broker thread, run, and freed once
//! retired and quiesced (`JitBackend::release`): no unit stays live; the
//! code budget evicts after a compile, never inside it.
#![cfg(all(feature = "llvm", feature = "kiln-std"))]

mod common;

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{SUM_LOOP, sum_def};
use kiln_llvm::{FunctionDef, LlvmBackend, LlvmConfig, LlvmError};
use kiln_std::{BackendAdapter, Bead, BeadState, BeadieConfig, Budget, JitBackend, ThresholdPolicy};

/// Polls `condition` for up to 30 s (LLVM compiles on a loaded machine).
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn hot_calls_and_hot_loops_compile_on_kiln_std_and_are_freed() {
    let adapter = BackendAdapter::with_policy(LlvmConfig::new().build().unwrap(), ThresholdPolicy::new(10));
    // The host declares quiescence from the start (managed reclamation).
    adapter.beadie().quiesce();

    let called = adapter.register(ptr::null_mut(), None);
    let mut code = None;
    wait_until("the hot function's code", || {
        code = adapter.on_invoke(&called, |_bead| sum_def());
        code.is_some()
    });
    // SAFETY: `sum_def` is `(i64) -> i64`, installed until the reload below.
    let sum: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code.unwrap()) };
    assert_eq!(sum(10), 45);

    let looping = adapter.register(ptr::null_mut(), None);
    let mut osr = None;
    wait_until("the OSR entry", || {
        osr = adapter.on_backedge(&looping, SUM_LOOP, |_bead| sum_def());
        osr.is_some()
    });
    // SAFETY: the OSR entry takes a pointer to (i, acc, n).
    let resume: extern "C" fn(*const i64) -> i64 = unsafe { std::mem::transmute(osr.unwrap()) };
    assert_eq!(resume([5i64, 10, 10].as_ptr()), 45);
    assert_eq!(adapter.backend().stats().live_units, 2);

    assert!(called.reload().will_recompile());
    assert!(looping.reload().will_recompile());
    adapter.beadie().quiesce();
    adapter.beadie().quiesce();
    let stats = adapter.backend().stats();
    assert_eq!((stats.live_units, stats.compiled, stats.freed), (0, 2, 2), "{stats:?}");
}

/// [`LlvmBackend`] as kiln-std sees it, watching one bead: after the
/// backend's compile returned — still inside kiln's compile — it notes
/// whether the watched bead's code was taken away meanwhile.
struct Watching {
    inner: LlvmBackend,
    watched: Mutex<Option<Arc<Bead>>>,
    evicted_inside_a_compile: AtomicBool,
}

impl JitBackend for Watching {
    type FunctionDef = FunctionDef;
    type Error = LlvmError;

    fn compile(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<*mut (), LlvmError> {
        let watched = self.watched.lock().unwrap().clone();
        let before = watched.as_ref().and_then(|watched| watched.compiled());
        let entry = self.inner.compile(bead, def)?;
        let after = watched.as_ref().and_then(|watched| watched.compiled());
        if before.is_some() && after.is_none() {
            self.evicted_inside_a_compile.store(true, Ordering::Relaxed);
        }
        Ok(entry)
    }

    fn after_compile(&self, bead: &Arc<Bead>) {
        self.inner.after_compile(bead);
    }

    fn release(&self, code: *mut ()) {
        self.inner.release(code);
    }
}

#[test]
fn the_budget_evicts_kiln_std_beads_after_the_compile_not_inside_it() {
    // Room for one one-page unit: the second compile needs the first one's page.
    let backend = LlvmConfig::new().code_budget(4096).eviction_pause(500).build().unwrap();
    let watching =
        Watching { inner: backend, watched: Mutex::default(), evicted_inside_a_compile: AtomicBool::new(false) };
    let config = BeadieConfig { workers: 0, ..BeadieConfig::default() };
    let adapter = BackendAdapter::with_config(watching, ThresholdPolicy::new(1), config);
    let (first, second) = (adapter.register(ptr::null_mut(), None), adapter.register(ptr::null_mut(), None));
    adapter.on_invoke(&first, |_bead| sum_def());
    adapter.beadie().pump(Budget::unlimited());
    assert!(first.bead().compiled().is_some());
    *adapter.backend().watched.lock().unwrap() = Some(Arc::clone(first.bead()));

    adapter.on_invoke(&second, |_bead| sum_def());
    adapter.beadie().pump(Budget::unlimited());
    assert!(
        !adapter.backend().evicted_inside_a_compile.load(Ordering::Relaxed),
        "a compile evicted another bead: it must only choose it, and evict once the compile is over"
    );
    // Evicted by the post-compile hook, after the pump returned.
    assert!(second.bead().compiled().is_some(), "the new function is installed");
    assert_eq!(first.bead().compiled(), None, "the cold function went back to the interpreter");
    assert_eq!(first.bead().state(), BeadState::Interpreted);
    assert_eq!(first.bead().bailout_count(), 0, "an eviction is not a bailout");
    assert_eq!(adapter.backend().inner.stats().evicted, 1);
    // Once released, the memory is back within the budget.
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    let stats = adapter.backend().inner.stats();
    assert_eq!((stats.live_units, stats.resident_bytes, stats.evicting_bytes), (1, 4096, 0), "{stats:?}");
}
