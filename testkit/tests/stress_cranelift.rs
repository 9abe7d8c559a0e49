//! Randomized reclamation stress with real code: kiln-std compiles tiny
//! Cranelift functions (each returns a constant of its own) through a
//! fault-injecting backend, while runner threads call them through the
//! entries kiln hands out and the host declares quiescence following the
//! rule.
//!
//! Released code cannot be poisoned here (kiln-cranelift unmaps it), so
//! releases are tracked beside the backend: a wrapper records every entry
//! the backend compiled and every entry kiln released. A runner calls an
//! entry only if it is still live, checks the constant it returns, and
//! checks it is still live afterwards — an entry kiln hands out after
//! releasing it, or releases while it runs, is an early free. The books
//! are checked against kiln-cranelift's `CodeStats` (units compiled,
//! freed, live) and kiln-std's `code_counts()`.
//!
//! Needs feature `cranelift`. Settings: `KILN_STRESS_SEED`,
//! `KILN_STRESS_OPS`, `KILN_STRESS_THREADS`, `KILN_STRESS_YIELDS`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cranelift_codegen::ir::{InstBuilder, types::I64};
use kiln_cranelift::{CraneliftBackend, CraneliftConfig, CraneliftError, FunctionDef};
use kiln_std::{
    AlwaysRecompilePolicy, BackendAdapter, BailoutInfo, Bead, BoundBead, JitBackend, OsrEntry, ThresholdPolicy,
};
use kiln_testkit::fault::{
    FABRICATED_SITES, FaultKind, FaultPlan, FaultyBackend, Quiescence, Runners, SplitMix64, StressConfig, Tally,
    quiet_injected_panics,
};

const BEADS: usize = 64;

/// Every entry the backend compiled and kiln has not released, with the
/// constant its function returns.
#[derive(Debug)]
struct Tracked {
    inner: CraneliftBackend,
    live: RwLock<HashMap<usize, i64>>,
    compiled: AtomicU64,
    released: AtomicU64,
    unknown_releases: AtomicU64,
}

/// Calls a compiled `() -> i64` function.
///
/// # Safety
///
/// 1. `entry` is the live entry of a function compiled from [`constant`].
unsafe fn call(entry: usize) -> i64 {
    // SAFETY: (1) the signature is `extern "C" fn() -> i64` and the code is mapped.
    let function: extern "C" fn() -> i64 = unsafe { std::mem::transmute(entry) };
    function()
}

impl JitBackend for Tracked {
    type FunctionDef = FunctionDef;
    type Error = CraneliftError;

    fn compile(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<*mut (), CraneliftError> {
        self.compile_with_osr(bead, def).map(|(entry, _)| entry)
    }

    fn compile_with_osr(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<(*mut (), Vec<OsrEntry>), CraneliftError> {
        let (entry, osr) = self.inner.compile_with_osr(bead, def)?;
        if !entry.is_null() {
            // SAFETY: (1) just compiled from `constant`, not yet handed to kiln.
            let value = unsafe { call(entry as usize) };
            self.live.write().unwrap().insert(entry as usize, value);
            self.compiled.fetch_add(1, Ordering::Relaxed);
        }
        Ok((entry, osr))
    }

    fn after_compile(&self, bead: &Arc<Bead>) {
        self.inner.after_compile(bead);
    }

    fn release(&self, code: *mut ()) {
        if self.live.write().unwrap().remove(&(code as usize)).is_none() {
            self.unknown_releases.fetch_add(1, Ordering::Relaxed);
        }
        self.released.fetch_add(1, Ordering::Relaxed);
        self.inner.release(code);
    }
}

type Backend = FaultyBackend<Tracked>;

/// A function returning `value`.
fn constant(value: i64) -> FunctionDef {
    FunctionDef::new("constant", &[], &[I64], move |builder, _cx| {
        let block = builder.create_block();
        builder.switch_to_block(block);
        builder.seal_block(block);
        let result = builder.ins().iconst(I64, value);
        builder.ins().return_(&[result]);
        Ok(())
    })
}

const OPS: &[&str] = &[
    "invoke",
    "native call",
    "osr lookup",
    "osr call",
    "reload",
    "bailout",
    "evict",
    "invalidate",
    "eager compile",
    "update_core",
    "host quiesce",
    "caught injected panic",
];
mod op {
    pub(crate) const INVOKE: usize = 0;
    pub(crate) const CALL: usize = 1;
    pub(crate) const OSR_LOOKUP: usize = 2;
    pub(crate) const OSR_CALL: usize = 3;
    pub(crate) const RELOAD: usize = 4;
    pub(crate) const BAILOUT: usize = 5;
    pub(crate) const EVICT: usize = 6;
    pub(crate) const INVALIDATE: usize = 7;
    pub(crate) const EAGER: usize = 8;
    pub(crate) const UPDATE_CORE: usize = 9;
    pub(crate) const QUIESCE: usize = 10;
    pub(crate) const CAUGHT_PANIC: usize = 11;
}

struct Run<'a> {
    config: StressConfig,
    adapter: &'a BackendAdapter<Backend>,
    bound: &'a [BoundBead<Backend>],
    plan: &'a Arc<FaultPlan>,
    quiescence: Quiescence,
    runners: Runners,
    next_constant: AtomicI64,
    early_before: AtomicU64,
    early_during: AtomicU64,
    wrong_results: AtomicU64,
    ops: Tally,
}

impl Run<'_> {
    fn tracked(&self) -> &Tracked {
        self.adapter.backend().inner()
    }

    fn catching<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        self.ops.catching(op::CAUGHT_PANIC, f)
    }

    fn running(&self) -> bool {
        self.runners.running()
    }

    fn factory(&self) -> impl FnOnce(&Arc<Bead>) -> FunctionDef + Send + 'static {
        let value = self.next_constant.fetch_add(1, Ordering::Relaxed);
        move |_| constant(value)
    }

    /// Calls `entry` (from kiln) only if it is live code, and checks it
    /// stayed live while it ran.
    fn call(&self, entry: *mut (), rng: &mut SplitMix64) {
        let entry = entry as usize;
        let Some(expected) = self.tracked().live.read().unwrap().get(&entry).copied() else {
            self.early_before.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // SAFETY: (1) kiln handed the entry out and it was live just now; a
        // release racing with this call is what the test is looking for.
        let value = unsafe { call(entry) };
        if self.config.yields || rng.chance(10_000) {
            std::thread::yield_now(); // "running" a little longer
        }
        if value != expected {
            self.wrong_results.fetch_add(1, Ordering::Relaxed);
        }
        if self.tracked().live.read().unwrap().get(&entry) != Some(&expected) {
            self.early_during.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn runner(&self, index: usize) {
        let _out = self.runners.out_on_drop();
        let mut rng = SplitMix64::new(self.config.seed ^ (0x1000 + index as u64).wrapping_mul(0x9E37_79B9));
        let mut until_quiescent = 0;
        for n in 0..self.config.ops / self.config.threads as u64 {
            self.plan.step();
            let slot = rng.below(BEADS as u64) as usize;
            let roll = rng.below(1_000_000);
            self.catching(|| self.operation(slot, roll, &mut rng));
            if until_quiescent == 0 {
                self.quiescence.quiescent(index);
                until_quiescent = rng.below(8);
            } else {
                until_quiescent -= 1;
            }
            if n % 64 == 63 {
                std::thread::yield_now();
            }
        }
        self.quiescence.offline(index);
    }

    fn operation(&self, slot: usize, roll: u64, rng: &mut SplitMix64) {
        let bound = &self.bound[slot];
        let bead = bound.bead();
        match roll {
            0..800_000 => {
                self.ops.bump(op::INVOKE);
                if let Some(entry) = self.adapter.on_invoke(bound, self.factory()) {
                    self.ops.bump(op::CALL);
                    self.call(entry, rng);
                }
            }
            800_000..850_000 => {
                self.ops.bump(op::OSR_LOOKUP);
                if let Some(entry) = bead.osr_entry(FABRICATED_SITES[rng.below(2) as usize]) {
                    self.ops.bump(op::OSR_CALL);
                    self.call(entry, rng);
                }
            }
            850_000..880_000 => {
                self.ops.bump(op::RELOAD);
                bound.reload();
            }
            880_000..900_000 => {
                self.ops.bump(op::BAILOUT);
                let info = BailoutInfo { guard_id: 0, pc_offset: 0, generation: bead.generation() };
                bead.on_bailout(info, &AlwaysRecompilePolicy);
            }
            900_000..910_000 => {
                self.ops.bump(op::EVICT);
                bead.evict(1 + rng.below(32) as u32);
            }
            910_000..910_200 => {
                self.ops.bump(op::INVALIDATE);
                bead.invalidate();
            }
            910_200..915_000 => {
                self.ops.bump(op::EAGER);
                let value = self.next_constant.fetch_add(1, Ordering::Relaxed);
                let _ = bound.compile(constant(value));
            }
            915_000..935_000 => {
                self.ops.bump(op::UPDATE_CORE);
                bead.update_core(std::ptr::without_provenance_mut(0x1000 + rng.below(1 << 20) as usize * 8));
            }
            _ => {
                self.ops.bump(op::INVOKE);
                let _ = self.adapter.on_invoke(bound, self.factory());
            }
        }
    }

    fn quiescer(&self) {
        while self.running() {
            self.plan.step();
            if self.quiescence.try_declare(|| {
                self.catching(|| self.adapter.beadie().quiesce());
            }) {
                self.ops.bump(op::QUIESCE);
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn settle(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..600 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

#[test]
fn cranelift_host_quiesce() {
    quiet_injected_panics();
    let default_ops = if cfg!(debug_assertions) { 200_000 } else { 1_000_000 };
    let config = StressConfig::from_env(0x5EED_C1F7_0001, default_ops, 4);
    let started = Instant::now();
    let plan = Arc::new(
        FaultPlan::random(config.seed)
            .with_probability(FaultKind::Fail, 0.04)
            .with_probability(FaultKind::Panic, 0.03)
            .with_probability(FaultKind::Null, 0.03)
            .with_probability(FaultKind::Hang, 0.01)
            .with_probability(FaultKind::Slow, 0.02)
            .with_probability(FaultKind::UnsortedOsr, 0.05)
            .with_probability(FaultKind::DuplicateOsr, 0.03)
            .slow_for(Duration::from_micros(200))
            .yielding(config.yields),
    );
    let cranelift = CraneliftConfig::new().opt_level("none").build().expect("a supported host");
    let tracked = Tracked {
        inner: cranelift.clone(),
        live: RwLock::default(),
        compiled: AtomicU64::new(0),
        released: AtomicU64::new(0),
        unknown_releases: AtomicU64::new(0),
    };
    let adapter = BackendAdapter::with_policy(FaultyBackend::new(tracked, Arc::clone(&plan)), ThresholdPolicy::new(16));
    let bound: Vec<BoundBead<Backend>> =
        (0..BEADS).map(|i| adapter.register(std::ptr::without_provenance_mut(0x1000 + i * 8), None)).collect();
    adapter.beadie().quiesce(); // host-managed from the start
    let run = Run {
        config,
        adapter: &adapter,
        bound: &bound,
        plan: &plan,
        quiescence: Quiescence::new(config.threads),
        runners: Runners::new(config.threads),
        next_constant: AtomicI64::new(1),
        early_before: AtomicU64::new(0),
        early_during: AtomicU64::new(0),
        wrong_results: AtomicU64::new(0),
        ops: Tally::new(OPS),
    };
    std::thread::scope(|scope| {
        let run = &run;
        for index in 0..config.threads {
            scope.spawn(move || run.runner(index));
        }
        scope.spawn(move || run.quiescer());
        while run.running() {
            std::thread::sleep(Duration::from_millis(1));
            plan.gate().pulse();
        }
        plan.gate().open();
    });

    let mut failures = Vec::new();
    let beads: Vec<&Arc<Bead>> = bound.iter().map(BoundBead::bead).collect();
    let in_flight = |bead: &&Arc<Bead>| {
        matches!(bead.kiln_bead().state(), kiln_core::BeadState::Queued | kiln_core::BeadState::Compiling)
    };
    settle(|| !beads.iter().any(in_flight));
    let stuck = beads.iter().filter(|bead| in_flight(bead)).count();
    if stuck > 0 {
        failures.push(format!("{stuck} beads stuck Queued/Compiling after the worker drained"));
    }
    let tracked = run.tracked();
    let books = || {
        let (compiled, released) = adapter.beadie().code_counts();
        let stats = cranelift.stats();
        (compiled - released, stats.live_units as u64, tracked.live.read().unwrap().len() as u64)
    };
    if !settle(|| {
        let (std_live, units, live) = books();
        std_live == units && units == live
    }) {
        failures.push(format!("books: kiln-std live, Cranelift live units, tracked live = {:?}", books()));
    }
    for bead in &beads {
        bead.invalidate();
    }
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    let parked = adapter.beadie().parked_code() as u64;
    let stats = cranelift.stats();
    if stats.live_units as u64 != parked {
        failures.push(format!(
            "{} Cranelift units live after invalidating all and quiescing, {parked} parked",
            stats.live_units
        ));
    }
    if stats.freed != tracked.released.load(Ordering::Relaxed) {
        failures.push(format!(
            "Cranelift freed {} units, kiln released {}",
            stats.freed,
            tracked.released.load(Ordering::Relaxed)
        ));
    }
    let early = run.early_before.load(Ordering::Relaxed) + run.early_during.load(Ordering::Relaxed);
    if early > 0 {
        failures.push(format!(
            "early frees: {} entries handed out after release, {} released while running",
            run.early_before.load(Ordering::Relaxed),
            run.early_during.load(Ordering::Relaxed)
        ));
    }
    let wrong = run.wrong_results.load(Ordering::Relaxed);
    let unknown = tracked.unknown_releases.load(Ordering::Relaxed);
    if wrong + unknown > 0 {
        failures
            .push(format!("{wrong} calls returned another function's constant; {unknown} releases of unknown entries"));
    }
    println!(
        "== cranelift_host_quiesce: seed {:#x}, {} runner threads, yields {}",
        config.seed, config.threads, config.yields
    );
    println!("   runner ops {}, all ops {} in {:.2?}", config.ops, run.ops, started.elapsed());
    println!("   faults injected: {}", plan.injected());
    println!(
        "   Cranelift: compiled {}, freed {}, failed {}, live {}; tracked compiled {}, released {}",
        stats.compiled,
        stats.freed,
        stats.failed,
        stats.live_units,
        tracked.compiled.load(Ordering::Relaxed),
        tracked.released.load(Ordering::Relaxed)
    );
    println!(
        "   early frees {early}, leaks {}, stuck beads {stuck}",
        stats.live_units as u64 - parked.min(stats.live_units as u64)
    );
    let repeat =
        format!("{} --features cranelift", config.repeat_command("stress_cranelift", "cranelift_host_quiesce"));
    config.assert_passed("cranelift_host_quiesce", &repeat, &failures);
}
