//! kiln-std's `BackendAdapter` on `LlvmBackend`: a hot function and a hot
//! loop are compiled on kiln-std's broker thread, run, and freed once
//! retired and quiesced (`JitBackend::release`): no unit stays live.
#![cfg(all(feature = "llvm", feature = "kiln-std"))]

mod common;

use std::ptr;
use std::time::{Duration, Instant};

use common::{SUM_LOOP, sum_def};
use kiln_llvm::LlvmConfig;
use kiln_std::{BackendAdapter, ThresholdPolicy};

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
