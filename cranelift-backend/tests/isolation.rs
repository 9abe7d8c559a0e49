//! A host body callback that panics is caught by kiln-cranelift, counted
//! (`CodeStats::panicked`) and reported as a failed compile; under kiln-std
//! the bead keeps interpreting and the backend keeps compiling.

mod common;

use std::ptr;

use common::*;
use cranelift_codegen::ir::types::I64;
use kiln_cranelift::{CraneliftConfig, CraneliftError, FunctionDef};

fn exploding(name: &str) -> FunctionDef {
    FunctionDef::new(name, &[I64], &[I64], |_builder, _cx| panic!("body callback exploded"))
}

#[test]
fn a_panicking_body_callback_is_a_counted_failed_compile() {
    let backend = CraneliftConfig::new().build().expect("host supported");
    let error = backend.compile_function(exploding("exploding")).unwrap_err();
    assert!(
        matches!(&error, CraneliftError::Panicked { function, message } if function == "exploding" && message.contains("exploded")),
        "{error:?}"
    );
    let stats = backend.stats();
    assert_eq!((stats.failed, stats.panicked, stats.live_units), (1, 1, 0));
    // The backend still works.
    let code = backend.compile_function(add_def("after_the_panic", 2)).unwrap();
    // SAFETY: (i64) -> i64, live until freed.
    unsafe {
        assert_eq!(call1(code.entry(), 40), 42);
        assert!(backend.free(code.handle()));
    }
}

#[cfg(feature = "std-adapter")]
#[test]
fn under_kiln_std_a_panicking_body_callback_fails_the_compile_only() {
    use std::time::{Duration, Instant};

    use kiln_std::{BackendAdapter, ThresholdPolicy};

    let backend = CraneliftConfig::new().build().expect("host supported");
    let adapter = BackendAdapter::with_policy(backend, ThresholdPolicy::new(1));
    let bad = adapter.register(ptr::null_mut(), None);
    let good = adapter.register(ptr::null_mut(), None);
    assert_eq!(adapter.on_invoke(&bad, |_| exploding("bad")), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while adapter.beadie().stats().failures == 0 || adapter.on_invoke(&good, |_| add_def("good", 1)).is_none() {
        assert!(Instant::now() < deadline, "the worker stopped serving");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(bad.bead().compiled(), None);
    assert_eq!(adapter.backend().stats().panicked, 1);
    // Caught inside the backend: nothing reached kiln-std as a panic.
    assert_eq!(adapter.beadie().host_panics(), 0);
}

#[test]
fn under_kiln_core_a_panicking_define_callback_is_a_failed_compile() {
    use kiln_core::{AlwaysRecompilePolicy, Bead, Broker, Budget, CompileRequest, NoEvents, NoWake};
    use kiln_cranelift::CraneliftCompiler;

    let beads = [Bead::new(ptr::null_mut()), Bead::new(ptr::without_provenance_mut(1))];
    let broker: Broker<&Bead, kiln_core::ThresholdPolicy, AlwaysRecompilePolicy> =
        Broker::new(kiln_core::ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    let backend = CraneliftConfig::new().build().expect("host supported");
    let mut compiler = CraneliftCompiler::new(backend.clone(), |request: &CompileRequest<'_, &Bead>| {
        if request.bead.core_handle().is_null() {
            panic!("define exploded");
        }
        Ok(add_def("defined", 1))
    });
    for bead in &beads {
        broker.on_invoke(&bead);
    }
    let report = broker.pump(&mut compiler, Budget::unlimited());
    assert_eq!((report.ran, broker.stats().failures, broker.stats().compiles), (2, 1, 1));
    assert_eq!(beads[0].compiled(), None);
    assert!(beads[1].compiled().is_some());
    let stats = backend.stats();
    assert_eq!((stats.failed, stats.panicked), (1, 1));
}
