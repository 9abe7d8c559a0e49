//! The backend end to end: standalone and under a kiln-core broker (as a
//! kiln-std `JitBackend`: `std_adapter.rs`).

mod common;

use std::ptr;

use common::*;
use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::types::{I32, I64};
use kiln_core::{
    AlwaysRecompilePolicy, Bead, BeadState, Broker, Budget, CompileRequest, JobKind, NoEvents, NoWake, ThresholdPolicy,
};
use kiln_cranelift::{ConfigError, CraneliftBackend, CraneliftCompiler, CraneliftConfig, CraneliftError, FunctionDef};

fn backend() -> CraneliftBackend {
    CraneliftConfig::new().build().expect("host supported")
}

#[test]
fn compiles_and_calls_a_function() {
    let backend = backend();
    let code = backend.compile_function(add_def("add_five", 5)).unwrap();
    // SAFETY: `add_def` is (i64) -> i64; the code is live until freed below.
    assert_eq!(unsafe { call1(code.entry(), 37) }, 42);
    assert!(code.code_bytes() >= 4096);
    let fib = backend.compile_function(fib_def()).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { call1(fib.entry(), 20) }, 6765);
    assert_eq!(backend.stats().live_units, 2);
    // SAFETY: nothing runs either function any more.
    unsafe {
        assert!(backend.free(code.handle()));
        assert!(backend.free(fib.handle()));
        assert!(!backend.free(code.handle()), "a second free is refused");
    }
    let stats = backend.stats();
    assert_eq!((stats.live_units, stats.resident_bytes, stats.compiled, stats.freed), (0, 0, 2, 2));
}

#[test]
fn calls_through_an_osr_entry() {
    let backend = backend();
    let code = backend.compile_function(sum_def()).unwrap();
    assert_eq!(code.osr_entries().len(), 1);
    let osr = code.osr_entry(SUM_LOOP).expect("declared");
    assert_eq!(code.osr_entry(SUM_LOOP + 1), None);
    // SAFETY: the normal entry is (i64) -> i64, the OSR entry (i64, i64, i64) -> i64.
    unsafe {
        assert_eq!(call1(code.entry(), 10), 45);
        // Resume at i = 5 with acc = 10 (= 0+1+2+3+4): the same answer.
        assert_eq!(call3(osr, 5, 10, 10), 45);
        backend.free(code.handle());
    }
}

#[test]
fn a_bad_config_names_the_flag() {
    let error = CraneliftConfig::new().set("opt_levels", "speed").build().unwrap_err();
    assert_eq!(error, ConfigError::UnknownFlag { flag: "opt_levels".into() });
    let error = CraneliftConfig::new().opt_level("ludicrous").build().unwrap_err();
    assert!(error.to_string().contains("opt_level") && error.to_string().contains("ludicrous"), "{error}");
}

#[test]
fn invalid_ir_is_a_failed_compile() {
    let backend = backend();
    // Returns an i32 from a function declared to return an i64: the
    // verifier's job.
    let wrong_type = FunctionDef::new("wrong_type", &[I64], &[I64], |builder, _cx| {
        let block = builder.create_block();
        builder.append_block_params_for_function_params(block);
        builder.switch_to_block(block);
        builder.seal_block(block);
        let x = builder.ins().iconst(I32, 1);
        builder.ins().return_(&[x]);
        Ok(())
    });
    let error = backend.compile_function(wrong_type).unwrap_err();
    assert!(matches!(&error, CraneliftError::Codegen { function, .. } if function == "wrong_type"), "{error:?}");

    // A block left without a terminator: the frontend panics in debug
    // builds, the verifier refuses it in release builds.
    let unfinished = FunctionDef::new("unfinished", &[I64], &[I64], |builder, _cx| {
        let block = builder.create_block();
        builder.append_block_params_for_function_params(block);
        builder.switch_to_block(block);
        Ok(())
    });
    let error = backend.compile_function(unfinished).unwrap_err();
    assert!(matches!(&error, CraneliftError::Panicked { .. } | CraneliftError::Codegen { .. }), "{error:?}");

    let refused = FunctionDef::new("refused", &[], &[], |_builder, _cx| Err("unsupported construct".into()));
    let error = backend.compile_function(refused).unwrap_err();
    assert_eq!(error, CraneliftError::Build { function: "refused".into(), message: "unsupported construct".into() });

    let twice = add_def("twice", 1).osr_entry(3, &[I64]).osr_entry(3, &[I64]);
    assert!(matches!(backend.compile_function(twice), Err(CraneliftError::InvalidDefinition { .. })));

    let unknown_symbol = FunctionDef::new("calls_nowhere", &[], &[I64], |builder, cx| {
        let block = builder.create_block();
        builder.switch_to_block(block);
        builder.seal_block(block);
        let nowhere = cx.import(builder, "kiln_no_such_symbol_anywhere", &[], &[I64])?;
        let call = builder.ins().call(nowhere, &[]);
        let result = builder.inst_results(call)[0];
        builder.ins().return_(&[result]);
        Ok(())
    });
    assert!(matches!(backend.compile_function(unknown_symbol), Err(CraneliftError::Module { .. })));

    let stats = backend.stats();
    assert_eq!((stats.failed, stats.live_units, stats.resident_bytes), (5, 0, 0));
    // The backend still works.
    let code = backend.compile_function(add_def("after_failures", 2)).unwrap();
    // SAFETY: (i64) -> i64, live until freed.
    unsafe {
        assert_eq!(call1(code.entry(), 40), 42);
        backend.free(code.handle());
    }
}

extern "C" fn host_triple(x: i64) -> i64 {
    3 * x
}

#[test]
fn generated_code_calls_host_symbols() {
    let backend = CraneliftConfig::new().symbol("host_triple", host_triple as *const u8).build().unwrap();
    let def = FunctionDef::new("calls_host", &[I64], &[I64], |builder, cx| {
        let block = builder.create_block();
        builder.append_block_params_for_function_params(block);
        builder.switch_to_block(block);
        builder.seal_block(block);
        let x = builder.block_params(block)[0];
        let triple = cx.import(builder, "host_triple", &[I64], &[I64])?;
        let call = builder.ins().call(triple, &[x]);
        let y = builder.inst_results(call)[0];
        builder.ins().return_(&[y]);
        Ok(())
    });
    let code = backend.compile_function(def).unwrap();
    // SAFETY: (i64) -> i64, live until freed.
    unsafe {
        assert_eq!(call1(code.entry(), 14), 42);
        backend.free(code.handle());
    }
}

// ---------------------------------------------------------------- kiln-core

type CoreBroker<'a> = Broker<&'a Bead, ThresholdPolicy, AlwaysRecompilePolicy>;

#[test]
fn kiln_core_publishes_and_releases_through_the_compiler() {
    let bead = Bead::new(ptr::null_mut());
    let broker: CoreBroker<'_> = Broker::new(ThresholdPolicy::new(10), AlwaysRecompilePolicy, NoWake, NoEvents);
    let backend = backend();
    let mut compiler = CraneliftCompiler::new(backend.clone(), |_request: &CompileRequest<'_, &Bead>| Ok(fib_def()));
    let mut native = 0;
    for _ in 0..20 {
        if let Some(entry) = broker.on_invoke(&&bead) {
            // SAFETY: `fib_def` is (i64) -> i64 and stays installed.
            assert_eq!(unsafe { call1(entry.as_ptr(), 15) }, 610);
            native += 1;
        }
        broker.pump(&mut compiler, Budget::unlimited());
    }
    assert_eq!(bead.state(), BeadState::Compiled(0));
    assert_eq!(native, 10);
    assert_eq!(compiler.live_units(), 1);
    broker.reload(&&bead).unwrap();
    for _ in 0..3 {
        broker.quiesce(&mut compiler);
    }
    assert_eq!(compiler.live_units(), 0);
    assert_eq!(backend.stats().live_units, 0);
}

#[test]
fn kiln_core_osr_job_publishes_the_loop_entry() {
    let bead = Bead::new(ptr::null_mut());
    let broker: CoreBroker<'_> =
        Broker::new(ThresholdPolicy::new(1_000_000).osr_threshold(50), AlwaysRecompilePolicy, NoWake, NoEvents);
    let backend = backend();
    let mut compiler = CraneliftCompiler::new(backend.clone(), |request: &CompileRequest<'_, &Bead>| {
        assert_eq!(request.kind, JobKind::Osr { site: SUM_LOOP });
        Ok(sum_def())
    });
    // An "interpreter" running sum(1000), probing kiln at each back-edge.
    let n = 1_000;
    let (mut i, mut acc) = (0, 0);
    assert_eq!(broker.on_invoke(&&bead), None);
    let result = loop {
        if i >= n {
            break acc;
        }
        acc += i;
        i += 1;
        if let Some(osr) = broker.on_backedge(&&bead, SUM_LOOP) {
            // SAFETY: the OSR entry of `sum_def` is (i, acc, n) -> i64; the
            // code stays installed.
            break unsafe { call3(osr.as_ptr(), i, acc, n) };
        }
        broker.pump(&mut compiler, Budget::unlimited());
    };
    assert_eq!(result, (0..n).sum::<i64>());
    assert!(i < n, "the loop should have left the interpreter early (i = {i})");
    assert!(bead.osr_entry(SUM_LOOP).is_some());
}

#[test]
fn compiler_clones_compile_in_parallel_and_share_their_units() {
    let beads: Vec<Bead> = (0..8).map(|_| Bead::new(ptr::null_mut())).collect();
    let broker: CoreBroker<'_> = Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    let backend = backend();
    let compiler = CraneliftCompiler::new(backend.clone(), |_request| Ok(fib_def()));
    for bead in &beads {
        assert_eq!(broker.on_invoke(&bead), None);
    }
    // Two threads, one clone each, claim and compile until the queue is empty.
    let ran: Vec<u32> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (broker, mut compiler) = (&broker, compiler.clone());
                scope.spawn(move || broker.pump(&mut compiler, Budget::unlimited()).published)
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().unwrap()).collect()
    });
    assert_eq!(ran.iter().sum::<u32>(), 8);
    for bead in &beads {
        let entry = bead.compiled().expect("published");
        // SAFETY: `fib_def` is (i64) -> i64 and stays installed.
        assert_eq!(unsafe { call1(entry.as_ptr(), 10) }, 55);
    }
    // Every clone sees every unit; any clone releases any unit.
    assert_eq!((compiler.live_units(), compiler.clone().live_units()), (8, 8));
    for bead in &beads {
        broker.invalidate(&bead).unwrap();
    }
    let mut releaser = compiler.clone();
    for _ in 0..3 {
        broker.quiesce(&mut releaser);
    }
    assert_eq!((compiler.live_units(), backend.stats().live_units), (0, 0));
}

#[test]
fn budget_evicts_the_coldest_kiln_core_code() {
    // Room for two units of one page each.
    let backend = CraneliftConfig::new().code_budget(2 * 4096).eviction_pause(100).build().unwrap();
    let beads = [Bead::new(ptr::null_mut()), Bead::new(ptr::null_mut()), Bead::new(ptr::null_mut())];
    let broker: CoreBroker<'_> = Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    let mut compiler =
        CraneliftCompiler::new(backend.clone(), |_request: &CompileRequest<'_, &Bead>| Ok(add_def("add", 1)));
    fn call<'a>(broker: &CoreBroker<'a>, bead: &'a Bead) -> Option<i64> {
        let entry = broker.on_invoke(&bead);
        // SAFETY: every bead's code is `add_def` ((i64) -> i64), installed.
        entry.map(|entry| unsafe { call1(entry.as_ptr(), 1) })
    }
    let call = |bead| call(&broker, bead);
    // Compile beads 0 and 1 (each compile sweeps the use bits).
    for bead in &beads[..2] {
        assert_eq!(call(bead), None);
        broker.pump(&mut compiler, Budget::unlimited());
        assert!(bead.compiled().is_some());
    }
    // Bead 0 runs, bead 1 does not: bead 1 is the coldest when bead 2's
    // compile needs the room, although bead 0 is the oldest.
    assert_eq!(call(&beads[0]), Some(2));
    assert_eq!(call(&beads[2]), None);
    broker.pump(&mut compiler, Budget::unlimited());
    assert_eq!(compiler.evict(&broker), 1);
    assert!(beads[1].compiled().is_none(), "the cold function went back to the interpreter");
    assert_eq!(beads[1].state(), BeadState::Interpreted);
    assert_eq!(beads[1].bailout_count(), 0, "an eviction is not a bailout");
    assert!(beads[0].compiled().is_some() && beads[2].compiled().is_some());
    assert_eq!(backend.stats().evicted, 1);
    // Its memory comes back once kiln releases it.
    assert_eq!(backend.stats().evicting_bytes, 4096);
    for _ in 0..3 {
        broker.quiesce(&mut compiler);
    }
    let stats = backend.stats();
    assert_eq!((stats.live_units, stats.resident_bytes, stats.evicting_bytes), (2, 8192, 0));
    // The evicted function is promoted again only after the pause.
    for _ in 0..50 {
        assert_eq!(call(&beads[1]), None);
        broker.pump(&mut compiler, Budget::unlimited());
    }
    assert_eq!(backend.stats().compiled, 3);
}

#[test]
#[allow(deprecated)]
fn the_former_error_name_is_the_same_type() {
    let error: kiln_cranelift::CompileError = CraneliftError::ForeignDefinition;
    assert_eq!(error.function(), None);
    assert_eq!(error.to_string(), "the prepared definition belongs to another backend");
}

#[test]
fn a_function_larger_than_the_budget_fails_to_compile() {
    let backend = CraneliftConfig::new().code_budget(100).build().unwrap();
    let error = backend.compile_function(add_def("too_big", 1)).unwrap_err();
    assert!(matches!(error, CraneliftError::OverBudget { needed: 4096, budget: 100, .. }), "{error:?}");
    assert_eq!(backend.stats().resident_bytes, 0);
}
