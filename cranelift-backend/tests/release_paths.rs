//! Every route into kiln-std has a release path: OSR code compiled because
//! a loop got hot (`BackendAdapter::on_backedge`, through
//! `JitBackend::compile_with_osr`) and code a closure compiled
//! (`Beadie::on_backedge_code` with a `NativeCode` release hook) reach
//! Cranelift's `free` once retired and quiesced: no unit stays live.

mod common;

use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kiln_cranelift::{CraneliftBackend, CraneliftConfig};
use kiln_std::{BackendAdapter, Bead, NativeCode, ThresholdPolicy};

fn backend() -> CraneliftBackend {
    CraneliftConfig::new().build().expect("host supported")
}

/// Polls `condition` for up to 20 s (Cranelift compiles in debug builds
/// on a loaded machine can be slow).
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn osr_code_compiled_through_the_backedge_route_is_freed() {
    let adapter = BackendAdapter::with_policy(backend(), ThresholdPolicy::new(10));
    // The host declares quiescence from the start (managed reclamation).
    adapter.beadie().quiesce();
    let bound = adapter.register(ptr::null_mut(), None);
    let mut osr = None;
    wait_until("the OSR entry", || {
        osr = adapter.on_backedge(&bound, SUM_LOOP, |_bead| sum_def());
        osr.is_some()
    });
    // SAFETY: `sum_def`'s OSR entry is (i, acc, n) -> i64 and stays
    // installed until the reload below.
    assert_eq!(unsafe { call3(osr.unwrap(), 5, 10, 10) }, 45);
    assert_eq!(adapter.backend().stats().live_units, 1);

    assert!(bound.reload().will_recompile());
    adapter.beadie().quiesce();
    adapter.beadie().quiesce();
    let stats = adapter.backend().stats();
    assert_eq!((stats.live_units, stats.compiled, stats.freed), (0, 1, 1), "{stats:?}");
    assert_eq!(adapter.beadie().code_counts(), (1, 1));
}

/// A closure compile of `sum_def` through the standalone API, whose code
/// goes back to Cranelift through a `NativeCode` release hook.
fn sum_with_release(jit: CraneliftBackend) -> impl FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static {
    move |_bead| {
        let code = jit.compile_function(sum_def()).expect("sum compiles");
        let handle = code.handle();
        NativeCode::new(code.entry()).with_osr(code.osr_entries().to_vec()).on_release(move |_entry| {
            // SAFETY: kiln runs the hook once, after the code was retired
            // and quiescence declared: nothing runs it any more.
            assert!(unsafe { jit.free(handle) });
        })
    }
}

#[test]
fn closure_compiled_osr_code_with_a_release_hook_is_freed() {
    let adapter = BackendAdapter::with_policy(backend(), ThresholdPolicy::new(10));
    let beadie = adapter.beadie();
    beadie.quiesce();
    let bead = beadie.register(ptr::null_mut(), None);
    wait_until("the OSR entry", || {
        let jit = CraneliftBackend::clone(adapter.backend());
        beadie.on_backedge_code(&bead, SUM_LOOP, sum_with_release(jit)).is_some()
    });
    assert_eq!(adapter.backend().stats().live_units, 1);

    bead.reload();
    beadie.quiesce();
    beadie.quiesce();
    let stats = adapter.backend().stats();
    assert_eq!((stats.live_units, stats.freed), (0, 1), "{stats:?}");
    assert_eq!(beadie.host_panics(), 0);
}
