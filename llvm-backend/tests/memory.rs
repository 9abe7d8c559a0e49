//! Code memory: 10,000 units compiled and released through kiln-core leave
//! resident memory flat, and live units are counted exactly.
//!
//! Each cycle promotes one bead, compiles `sum` (normal entry and an OSR
//! entry) into a unit of its own, runs it, retires it (`reload`) and
//! declares quiescence; kiln-core releases code two quiesces after it was
//! retired, which removes the unit's ORC resource tracker. Run with
//! `--nocapture` to see the figures.
#![cfg(feature = "llvm")]

use kiln_core::{AlwaysRecompilePolicy, Bead, Broker, Budget, CompileRequest, NoEvents, NoWake, ThresholdPolicy};
use kiln_llvm::{FunctionDef, LlvmCompiler, LlvmConfig, ValueType};

/// Resident set size in bytes (Linux).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|pages| pages.parse().ok()).expect("statm");
    pages * 4096
}

/// `f(x) = x * 3 + 1`, with an OSR entry (so each unit links two symbols
/// and carries a table).
fn small_def() -> FunctionDef {
    FunctionDef::new("small", &[ValueType::I64], Some(ValueType::I64), |cx| {
        let err = |error: kiln_llvm::inkwell::builder::BuilderError| error.to_string();
        let i64_type = cx.context().i64_type();
        let block = cx.context().append_basic_block(cx.function(), "entry");
        cx.builder().position_at_end(block);
        let x = match cx.entry() {
            kiln_llvm::Entry::Normal => cx.function().get_nth_param(0).ok_or("no x")?.into_int_value(),
            kiln_llvm::Entry::Osr { .. } => {
                let frame = cx.function().get_nth_param(0).ok_or("no frame")?.into_pointer_value();
                cx.builder().build_load(i64_type, frame, "x").map_err(err)?.into_int_value()
            }
        };
        let y = cx.builder().build_int_mul(x, i64_type.const_int(3, false), "y").map_err(err)?;
        let z = cx.builder().build_int_add(y, i64_type.const_int(1, false), "z").map_err(err)?;
        cx.builder().build_return(Some(&z)).map_err(err)?;
        Ok(())
    })
    .osr_entry(0, &[ValueType::Ptr])
}

/// The tests measure one process's RSS: they must not run side by side.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cycles() -> u32 {
    std::env::var("KILN_LLVM_CYCLES").ok().and_then(|cycles| cycles.parse().ok()).unwrap_or(10_000)
}

#[test]
fn ten_thousand_units_compiled_and_released_leave_rss_flat() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let cycles = cycles();
    let backend = LlvmConfig::new().build().unwrap();
    let bead = Bead::new(std::ptr::null_mut());
    let broker: Broker<&Bead, ThresholdPolicy, AlwaysRecompilePolicy> =
        Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    let mut compiler = LlvmCompiler::new(backend.clone(), |_request: &CompileRequest<'_, &Bead>| Ok(small_def()));
    let warmup = 200.min(cycles);
    let mut baseline = 0;
    let started = std::time::Instant::now();
    for cycle in 1..=cycles {
        assert!(broker.on_invoke(&&bead).is_none());
        broker.pump(&mut compiler, Budget::unlimited());
        let entry = broker.on_invoke(&&bead).expect("compiled");
        // SAFETY: `(i64) -> i64`, installed until the reload below.
        let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(entry.as_ptr()) };
        assert_eq!(f(cycle as i64), 3 * cycle as i64 + 1);
        broker.reload(&&bead).expect("reload");
        broker.quiesce(&mut compiler);
        // Exact books: the installed unit plus the retired ones kiln-core
        // has not released yet (released two quiesces after retirement).
        let stats = backend.stats();
        assert_eq!(stats.live_units, compiler.live_units(), "cycle {cycle}");
        assert!(stats.live_units <= 2, "cycle {cycle}: {} live units", stats.live_units);
        assert_eq!(stats.compiled - stats.freed, stats.live_units as u64);
        if cycle == warmup {
            baseline = resident_bytes();
        }
        if cycle % 2_000 == 0 {
            println!("cycle {cycle:>6}: RSS {:.2} MB, {} live units", resident_bytes() as f64 / 1e6, stats.live_units);
        }
    }
    let growth = resident_bytes() as i64 - baseline as i64;
    let per_cycle = growth as f64 / f64::from(cycles - warmup);
    println!(
        "{cycles} units compiled and released in {:.1} s; RSS {:+.3} MB from cycle {warmup} ({per_cycle:+.1} B per cycle)",
        started.elapsed().as_secs_f64(),
        growth as f64 / 1e6,
    );
    // One leaked page per unit would be 4 KB per cycle.
    assert!(per_cycle < 256.0, "resident memory grows by {per_cycle:.0} B per unit: code is not returned");
    broker.invalidate(&&bead).unwrap();
    for _ in 0..3 {
        broker.quiesce(&mut compiler);
    }
    assert_eq!((backend.stats().live_units, compiler.live_units()), (0, 0));
}

#[test]
fn live_units_cost_about_two_pages_each() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let backend = LlvmConfig::new().build().unwrap();
    let units = 500;
    // Warm LLVM's own caches first.
    let warm = backend.compile_function(small_def()).unwrap();
    let before = resident_bytes();
    let codes: Vec<_> = (0..units).map(|_| backend.compile_function(small_def()).unwrap()).collect();
    let per_unit = (resident_bytes() - before) / units;
    println!(
        "{units} live units: {per_unit} B of RSS per unit ({} B of code each, page-rounded)",
        codes[0].code_bytes()
    );
    assert_eq!(backend.stats().live_units, units + 1);
    assert_eq!(backend.stats().resident_bytes, (units + 1) * codes[0].code_bytes());
    assert!(per_unit < 64 * 1024, "{per_unit} B per live unit");
    for code in codes.into_iter().chain([warm]) {
        // SAFETY: nothing runs these units any more.
        assert!(unsafe { backend.free(code.handle()) });
    }
    assert_eq!(backend.stats().live_units, 0);
}
