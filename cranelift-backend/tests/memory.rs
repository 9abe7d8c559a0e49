//! Code memory comes back: a freed module is unmapped, resident memory
//! drops when units are freed, and it plateaus over compile → retire →
//! quiesce cycles through a kiln-core broker.
//!
//! These tests watch the whole process's mappings and RSS, so they run one
//! at a time (`SERIAL`) in a test binary of their own. The 10,000-cycle run
//! is `cargo run --release -p kiln-examples --example code_memory`.

mod common;

use std::ptr;
use std::sync::Mutex;

use common::*;
use kiln_core::{AlwaysRecompilePolicy, Bead, Broker, Budget, CompileRequest, NoEvents, NoWake, ThresholdPolicy};
use kiln_cranelift::{CraneliftCompiler, CraneliftConfig};

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn a_freed_module_is_unmapped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let backend = CraneliftConfig::new().build().unwrap();
    let code = backend.compile_function(add_def("short_lived", 1)).unwrap();
    let entry = code.entry() as usize;
    assert!(is_mapped_executable(entry));
    // SAFETY: nothing runs the code.
    unsafe { backend.free(code.handle()) };
    // Executable only: the test harness may spawn a thread (or the
    // allocator map an arena) in the freed range as soon as it is free, but
    // nothing else in this binary maps code while `SERIAL` is held.
    assert!(!is_mapped_executable(entry), "the code page is still mapped executable after free");
}

#[test]
fn freeing_units_returns_resident_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let backend = CraneliftConfig::new().build().unwrap();
    // Warm up allocator and Cranelift caches first.
    let warm = backend.compile_function(add_def("warm", 1)).unwrap();
    // SAFETY: nothing runs it.
    unsafe { backend.free(warm.handle()) };
    let before = resident_bytes();
    let units: Vec<_> = (0..400).map(|k| backend.compile_function(add_def("held", k)).unwrap()).collect();
    let held = resident_bytes();
    // 400 units of at least one written page each.
    assert!(held >= before + 360 * 4096, "RSS {before} -> {held}: code pages not resident?");
    for unit in &units {
        // SAFETY: nothing runs these units.
        unsafe { backend.free(unit.handle()) };
    }
    let after = resident_bytes();
    println!("RSS: {before} B before, {held} B holding 400 units, {after} B after freeing them");
    assert!(held - after >= 360 * 4096, "freeing 400 units returned only {} B", held - after);
}

#[test]
fn resident_memory_plateaus_over_compile_retire_quiesce_cycles() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let backend = CraneliftConfig::new().build().unwrap();
    let bead = Bead::new(ptr::null_mut());
    let broker: Broker<&Bead, ThresholdPolicy, AlwaysRecompilePolicy> =
        Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    let mut compiler =
        CraneliftCompiler::new(backend.clone(), |_request: &CompileRequest<'_, &Bead>| Ok(add_def("cycle", 1)));
    let mut cycle = |round: i64| {
        assert_eq!(broker.on_invoke(&&bead), None);
        broker.pump(&mut compiler, Budget::unlimited());
        let entry = broker.on_invoke(&&bead).expect("compiled");
        // SAFETY: `add_def` is (i64) -> i64; installed until the reload.
        assert_eq!(unsafe { call1(entry.as_ptr(), round) }, round + 1);
        broker.reload(&&bead).unwrap();
        broker.quiesce(&mut compiler);
    };
    for round in 0..300 {
        cycle(round);
    }
    let warm = resident_bytes();
    let cycles = 1_500;
    for round in 0..cycles {
        cycle(round);
    }
    let end = resident_bytes();
    let stats = backend.stats();
    println!(
        "RSS after 300 warm-up cycles: {warm} B; after {cycles} more: {end} B ({:+} B); live units {}, peak resident code {} B",
        end as i64 - warm as i64,
        stats.live_units,
        stats.peak_resident_bytes
    );
    // Two quiesces release retired code: at most the current unit and the
    // two retired in the last epochs are alive.
    assert!(stats.live_units <= 3, "{stats:?}");
    assert_eq!(stats.compiled, 1_800);
    // A leak of one page per cycle would be 6 MB here.
    assert!(end <= warm + 1024 * 1024, "RSS grew from {warm} B to {end} B over {cycles} cycles");
}
