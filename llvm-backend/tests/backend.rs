//! kiln-llvm end to end: compiled code runs, OSR entries resume a frame,
//! every bad input is a typed error, and kiln-core publishes and frees
//! LLVM units.
#![cfg(feature = "llvm")]

mod common;

use common::{err, sum_def};
use kiln_llvm::inkwell::values::ValueKind;
use kiln_llvm::{FunctionDef, LlvmConfig, LlvmError, ValueType};

#[test]
fn a_loop_runs_natively_and_resumes_through_its_osr_entry() {
    let backend = LlvmConfig::new().build().unwrap();
    let code = backend.compile_function(sum_def()).unwrap();
    // SAFETY: `sum` is `(i64) -> i64`.
    let sum: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code.entry()) };
    assert_eq!(sum(1000), 499_500);
    let osr = code.osr_entry(7).expect("declared at site 7");
    assert_eq!(code.osr_entries().len(), 1);
    assert!(code.osr_entry(8).is_none());
    // SAFETY: the OSR entry takes a pointer to (i, acc, n).
    let resume: extern "C" fn(*const i64) -> i64 = unsafe { std::mem::transmute(osr) };
    let frame = [500i64, (0..500).sum(), 1000];
    assert_eq!(resume(frame.as_ptr()), 499_500);
    assert!(code.code_bytes() >= 4096, "{}", code.code_bytes());
    let stats = backend.stats();
    assert_eq!((stats.live_units, stats.compiled, stats.freed), (1, 1, 0));
    // SAFETY: nothing runs the code any more.
    assert!(unsafe { backend.free(code.handle()) });
    // SAFETY: as above (already freed: refused).
    assert!(!unsafe { backend.free(code.handle()) });
    assert_eq!(backend.stats().live_units, 0);
}

extern "C" fn host_triple(x: i64) -> i64 {
    3 * x
}

/// `f(x) = symbol(x) + 1`, calling the host through `symbol`.
fn calling(symbol: &'static str) -> FunctionDef {
    FunctionDef::new("calls_host", &[ValueType::I64], Some(ValueType::I64), move |cx| {
        let i64_type = cx.context().i64_type();
        let callee = cx.import(symbol, i64_type.fn_type(&[i64_type.into()], false));
        let block = cx.context().append_basic_block(cx.function(), "entry");
        cx.builder().position_at_end(block);
        let x = cx.function().get_nth_param(0).ok_or("no x")?.into_int_value();
        let call = cx.builder().build_call(callee, &[x.into()], "y").map_err(err)?;
        let ValueKind::Basic(y) = call.try_as_basic_value() else { return Err("void call".into()) };
        let y = y.into_int_value();
        let z = cx.builder().build_int_add(y, i64_type.const_int(1, false), "z").map_err(err)?;
        cx.builder().build_return(Some(&z)).map_err(err)?;
        Ok(())
    })
}

#[test]
fn host_symbols_are_called_and_missing_ones_are_named() {
    let backend = LlvmConfig::new().symbol("triple_it", host_triple as *const u8).build().unwrap();
    let code = backend.compile_function(calling("triple_it")).unwrap();
    // SAFETY: `(i64) -> i64`.
    let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code.entry()) };
    assert_eq!(f(14), 43);
    let error = backend.compile_function(calling("kiln_no_such_symbol")).unwrap_err();
    assert_eq!(error, LlvmError::MissingSymbol { function: "calls_host".into(), symbol: "kiln_no_such_symbol".into() });
    assert!(error.to_string().contains("kiln_no_such_symbol"), "{error}");
    // The process's own symbols resolve without registration.
    let libc_abs = backend.compile_function(calling("labs")).unwrap();
    // SAFETY: `labs` is `(long) -> long`.
    let g: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(libc_abs.entry()) };
    assert_eq!(g(-41), 42);
    let stats = backend.stats();
    assert_eq!((stats.compiled, stats.failed, stats.live_units), (2, 1, 2));
    // SAFETY: nothing runs either any more.
    unsafe {
        backend.free(code.handle());
        backend.free(libc_abs.handle());
    }
}

#[test]
fn invalid_ir_is_a_verifier_error_not_an_abort() {
    let backend = LlvmConfig::new().build().unwrap();
    // A block without a terminator.
    let def = FunctionDef::new("unterminated", &[], Some(ValueType::I64), |cx| {
        let block = cx.context().append_basic_block(cx.function(), "entry");
        cx.builder().position_at_end(block);
        Ok(())
    });
    let error = backend.compile_function(def).unwrap_err();
    assert!(matches!(&error, LlvmError::Verifier { function, .. } if function == "unterminated"), "{error:?}");
    // A return of the wrong type.
    let def = FunctionDef::new("wrong_type", &[], Some(ValueType::I64), |cx| {
        let block = cx.context().append_basic_block(cx.function(), "entry");
        cx.builder().position_at_end(block);
        let value = cx.context().i32_type().const_int(1, false);
        cx.builder().build_return(Some(&value)).map_err(err)?;
        Ok(())
    });
    assert!(matches!(backend.compile_function(def).unwrap_err(), LlvmError::Verifier { .. }));
    assert_eq!(backend.stats().failed, 2);
    assert_eq!(backend.stats().live_units, 0);
}

#[test]
fn builder_errors_panics_and_bad_definitions_are_typed() {
    let backend = LlvmConfig::new().build().unwrap();
    let failing = FunctionDef::new("failing", &[], None, |_cx| Err("no body today".to_owned()));
    assert_eq!(
        backend.compile_function(failing).unwrap_err(),
        LlvmError::Build { function: "failing".into(), message: "no body today".into() }
    );
    let panicking = FunctionDef::new("panicking", &[], None, |_cx| panic!("body builder bug"));
    let error = backend.compile_function(panicking).unwrap_err();
    assert_eq!(error, LlvmError::Panicked { function: "panicking".into(), message: "body builder bug".into() });
    let twice = sum_def().osr_entry(7, &[ValueType::Ptr]);
    assert!(matches!(backend.compile_function(twice).unwrap_err(), LlvmError::InvalidDefinition { .. }));
    let stats = backend.stats();
    assert_eq!((stats.failed, stats.panicked, stats.live_units), (3, 1, 0));
}

#[test]
fn the_same_function_compiles_into_many_live_units() {
    // ORC needs unique names per JITDylib: units are tagged with their id.
    let backend = LlvmConfig::new().opt_level(1).build().unwrap();
    let codes: Vec<_> = (0..3).map(|_| backend.compile_function(sum_def()).unwrap()).collect();
    for code in &codes {
        // SAFETY: `(i64) -> i64`.
        let sum: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code.entry()) };
        assert_eq!(sum(10), 45);
    }
    assert_eq!(backend.stats().live_units, 3);
    for code in codes {
        // SAFETY: nothing runs it any more.
        assert!(unsafe { backend.free(code.handle()) });
    }
    assert_eq!(backend.stats().freed, 3);
}

#[test]
fn a_budget_evicts_the_coldest_core_units_and_refuses_oversized_ones() {
    use kiln_core::{AlwaysRecompilePolicy, Bead, BeadState, Broker, Budget, NoEvents, NoWake, ThresholdPolicy};
    use kiln_llvm::LlvmCompiler;

    let backend = LlvmConfig::new().code_budget(2 * 4096).build().unwrap();
    let beads: Vec<Bead> = (0..3).map(|_| Bead::new(std::ptr::null_mut())).collect();
    let broker: Broker<&Bead, ThresholdPolicy, AlwaysRecompilePolicy> =
        Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    let mut compiler =
        LlvmCompiler::new(backend.clone(), |_request: &kiln_core::CompileRequest<'_, &Bead>| Ok(sum_def()));
    for bead in &beads {
        assert!(broker.on_invoke(&bead).is_none());
        broker.pump(&mut compiler, Budget::unlimited());
        let entry = broker.on_invoke(&bead).expect("compiled");
        // SAFETY: `(i64) -> i64`, installed.
        let sum: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(entry.as_ptr()) };
        assert_eq!(sum(4), 6);
    }
    // Three one-page units in a two-page budget: the first (coldest, oldest) goes.
    assert_eq!(compiler.evict(&broker), 1);
    assert_eq!(beads[0].state(), BeadState::Interpreted);
    assert_eq!(beads[2].state(), BeadState::Compiled(0));
    for _ in 0..3 {
        broker.quiesce(&mut compiler);
    }
    let stats = backend.stats();
    assert_eq!((stats.evicted, stats.live_units, compiler.live_units()), (1, 2, 2));

    let tiny = LlvmConfig::new().code_budget(100).build().unwrap();
    assert!(matches!(tiny.compile_function(sum_def()).unwrap_err(), LlvmError::OverBudget { budget: 100, .. }));
}
