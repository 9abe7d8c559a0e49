//! Randomized reclamation stress on kiln-core, with a fault-injecting
//! compiler whose code poisons itself on release.
//!
//! Runner threads call, run and change beads (invoke, back-edges and OSR
//! entries, bailout, reload, swap, evict, invalidate, update_core, submit,
//! blacklist); pumper threads run jobs beside them (`pump`, `claim` + run,
//! drop, fail, or compile-and-publish by hand); one host thread declares
//! quiescence following kiln-core's documented rule — a `quiesce` only once
//! every runner has passed a quiescent point since the previous one
//! ([`Quiescence`]). Compiles fail, panic, return "null", hang at a gate the
//! test pulses, run slowly or build bad OSR tables, per a seeded
//! [`FaultPlan`].
//!
//! The run fails if a runner ever finds poison in code it got from kiln
//! (an early free), if kiln releases code twice or hands out an address
//! that is not code, if a bead is left Queued/Compiling after draining, or
//! if the books do not balance (made = released + installed + retiring;
//! after invalidating everything and quiescing, nothing is live).
//!
//! Settings: `KILN_STRESS_SEED`, `KILN_STRESS_OPS`, `KILN_STRESS_THREADS`,
//! `KILN_STRESS_YIELDS` (see `StressConfig`).

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_core::{
    BailoutReason, Bead, BeadState, BlacklistDecay, Broker, Budget, Compiler, JobKind, NoWake, ThresholdDeoptPolicy,
    TierLadder,
};
use kiln_testkit::fault::{
    EVENT_NAMES, FaultKind, FaultPlan, FaultyCompiler, FaultyEvents, PoisonCompiler, Quiescence, Runners, SplitMix64,
    StressConfig, Tally, quiet_injected_panics,
};
use kiln_testkit::poison::{CodeId, PoisonArena};

const BEADS: usize = 256;
const QUEUE: usize = 64;
const RETIRE: usize = 64;
/// OSR sites the runners probe; every compile also carries sites 1 and 2.
const SITES: [u64; 3] = [1, 2, 3];
const PUMPERS: usize = 2;

type Jit = FaultyCompiler<PoisonCompiler>;
type CoreBroker<'a> =
    Broker<&'a Bead, TierLadder<2>, BlacklistDecay<ThresholdDeoptPolicy>, NoWake, &'a FaultyEvents, QUEUE, RETIRE>;

const OPS: &[&str] = &[
    "invoke",
    "native run",
    "backedge",
    "osr run",
    "bailout",
    "reload",
    "invalidate",
    "swap",
    "evict",
    "update_core",
    "submit",
    "blacklist",
    "pump",
    "claim+run",
    "claim+drop",
    "claim+fail",
    "claim+publish",
    "quiesce",
    "caught injected panic",
];
mod op {
    pub(crate) const INVOKE: usize = 0;
    pub(crate) const NATIVE: usize = 1;
    pub(crate) const BACKEDGE: usize = 2;
    pub(crate) const OSR: usize = 3;
    pub(crate) const BAILOUT: usize = 4;
    pub(crate) const RELOAD: usize = 5;
    pub(crate) const INVALIDATE: usize = 6;
    pub(crate) const SWAP: usize = 7;
    pub(crate) const EVICT: usize = 8;
    pub(crate) const UPDATE_CORE: usize = 9;
    pub(crate) const SUBMIT: usize = 10;
    pub(crate) const BLACKLIST: usize = 11;
    pub(crate) const PUMP: usize = 12;
    pub(crate) const CLAIM_RUN: usize = 13;
    pub(crate) const CLAIM_DROP: usize = 14;
    pub(crate) const CLAIM_FAIL: usize = 15;
    pub(crate) const CLAIM_PUBLISH: usize = 16;
    pub(crate) const QUIESCE: usize = 17;
    pub(crate) const CAUGHT_PANIC: usize = 18;
}

/// Everything the threads of one run share.
struct Run<'r, 'a> {
    config: StressConfig,
    broker: &'r CoreBroker<'a>,
    beads: &'a [Bead],
    arena: &'a Arc<PoisonArena>,
    plan: &'a Arc<FaultPlan>,
    jit: Jit,
    quiescence: Quiescence,
    runners: Runners,
    ops: Tally,
    /// Self-check: the host declares quiescence without waiting for the
    /// runners (breaking kiln-core's rule), so the run must see early frees.
    break_the_rule: bool,
}

impl Run<'_, '_> {
    /// Runs `f`, catching injected panics (counted); any other panic goes on.
    fn catching<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        self.ops.catching(op::CAUGHT_PANIC, f)
    }

    fn execute(&self, entry: NonNull<()>, rng: &mut SplitMix64) {
        let work = if self.break_the_rule || rng.chance(5_000) { 5_000 } else { 8 + rng.below(48) as u32 };
        // Failures are counted by the arena (it keeps going) and fail the run at its end.
        let _ = self.arena.execute(entry.as_ptr(), work);
    }

    fn runner(&self, index: usize) {
        // Even if a kiln call panics through the runner, it counts as gone.
        let _out = self.runners.out_on_drop();
        let mut rng = SplitMix64::new(self.config.seed ^ (0x1000 + index as u64).wrapping_mul(0x9E37_79B9));
        let mut jit = self.jit.clone();
        let ops = self.config.ops / self.config.threads as u64;
        let mut until_quiescent = 0;
        for _ in 0..ops {
            self.plan.step();
            let bead = &self.beads[rng.below(BEADS as u64) as usize];
            let roll = rng.below(1_000_000);
            // A panic of the plan may come through any kiln call (an event hook).
            self.catching(|| match roll {
                0..700_000 => {
                    self.ops.bump(op::INVOKE);
                    if let Some(entry) = self.broker.on_invoke(&bead) {
                        self.ops.bump(op::NATIVE);
                        self.execute(entry, &mut rng);
                    }
                }
                700_000..830_000 => {
                    self.ops.bump(op::BACKEDGE);
                    let site = SITES[rng.below(SITES.len() as u64) as usize];
                    if let Some(entry) = self.broker.on_backedge(&bead, site) {
                        self.ops.bump(op::OSR);
                        self.execute(entry, &mut rng);
                    }
                }
                830_000..860_000 => {
                    self.ops.bump(op::BAILOUT);
                    let reason = BailoutReason::Guard { guard_id: rng.below(4) as u32, pc_offset: 0 };
                    let _ = self.broker.record_bailout(&bead, reason);
                }
                860_000..875_000 => {
                    self.ops.bump(op::RELOAD);
                    let _ = self.broker.reload(&bead);
                }
                875_000..875_150 => {
                    self.ops.bump(op::INVALIDATE);
                    let _ = self.broker.invalidate(&bead);
                }
                875_150..900_000 => {
                    self.ops.bump(op::SWAP);
                    let sites: &[u64] = if rng.chance(500_000) { &SITES } else { &[] };
                    let Ok(code) = jit.inner().make(sites) else { return };
                    let tier = rng.below(2) as u8;
                    let swapped = if rng.chance(500_000) {
                        self.broker.swap_compiled_with_osr(&bead, code, tier)
                    } else {
                        self.broker.swap_compiled(&bead, code, tier)
                    };
                    if let Err(refused) = swapped {
                        // Never published: the host frees it at once.
                        free(&mut jit, refused.into_value().into_handle());
                    }
                }
                900_000..910_000 => {
                    self.ops.bump(op::EVICT);
                    let _ = self.broker.evict(&bead, core::num::NonZeroU32::new(1 + rng.below(64) as u32).unwrap());
                }
                910_000..930_000 => {
                    self.ops.bump(op::UPDATE_CORE);
                    bead.update_core(core::ptr::without_provenance_mut(0x1000 + rng.below(1 << 20) as usize * 8));
                }
                930_000..940_000 => {
                    self.ops.bump(op::SUBMIT);
                    let kind = if rng.chance(300_000) {
                        JobKind::Osr { site: SITES[rng.below(SITES.len() as u64) as usize] }
                    } else {
                        JobKind::Invoke
                    };
                    let _ = self.broker.submit(&bead, rng.below(2) as u8, kind);
                }
                940_000..941_000 => {
                    self.ops.bump(op::BLACKLIST);
                    let _ = self.broker.blacklist(&bead);
                }
                _ => {
                    self.ops.bump(op::INVOKE);
                    let _ = self.broker.on_invoke(&bead); // not run: the runner keeps no pointer
                }
            });
            if until_quiescent == 0 {
                self.quiescence.quiescent(index);
                until_quiescent = rng.below(8);
            } else {
                until_quiescent -= 1;
            }
        }
        self.quiescence.offline(index);
    }

    fn running(&self) -> bool {
        self.runners.running()
    }

    fn pumper(&self, index: usize) {
        let mut rng = SplitMix64::new(self.config.seed ^ (0x2000 + index as u64).wrapping_mul(0x9E37_79B9));
        let mut jit = self.jit.clone();
        while self.running() {
            self.plan.step();
            let roll = rng.below(100);
            if roll < 40 {
                self.ops.bump(op::PUMP);
                let jobs = rng.below(4) as u32;
                self.catching(|| self.broker.pump(&mut jit, Budget::jobs(jobs)));
            } else {
                let Ok(job) = self.broker.claim() else {
                    std::thread::yield_now();
                    continue;
                };
                self.plan.step();
                // A panic of the plan may come through any kiln call (an event hook).
                self.catching(|| match roll {
                    40..=74 => {
                        self.ops.bump(op::CLAIM_RUN);
                        job.run(&mut jit);
                    }
                    75..=84 => {
                        self.ops.bump(op::CLAIM_DROP);
                        drop(job);
                    }
                    85..=89 => {
                        self.ops.bump(op::CLAIM_FAIL);
                        job.fail();
                    }
                    _ => {
                        self.ops.bump(op::CLAIM_PUBLISH);
                        // Compile by hand, then publish (a stale result comes back to free).
                        let compiled = self.catching(|| jit.compile(&job.request()));
                        if let Some(Ok(compiled)) = compiled {
                            self.plan.step();
                            if let Err(stale) = job.publish(compiled, None) {
                                free(&mut jit, stale.into_handle());
                            }
                        }
                    }
                });
            }
        }
    }

    fn quiescer(&self) {
        let mut jit = self.jit.clone();
        while self.running() {
            self.plan.step();
            let declared = if self.break_the_rule {
                // Two declarations back to back: whatever was retired before
                // them is released at once.
                self.catching(|| self.broker.quiesce(&mut jit));
                self.catching(|| self.broker.quiesce(&mut jit));
                true
            } else {
                self.quiescence.try_declare(|| {
                    self.catching(|| self.broker.quiesce(&mut jit));
                })
            };
            if declared {
                self.ops.bump(op::QUIESCE);
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Hands code that was never published back to the compiler.
fn free(jit: &mut Jit, code: kiln_core::CodeHandle) {
    <Jit as Compiler<&Bead>>::release(jit, code);
}

fn plan(seed: u64, yields: bool, panicking_hooks: bool) -> FaultPlan {
    let plan = FaultPlan::random(seed)
        .with_probability(FaultKind::Fail, 0.05)
        .with_probability(FaultKind::Panic, 0.03)
        .with_probability(FaultKind::Null, 0.02)
        .with_probability(FaultKind::Hang, 0.01)
        .with_probability(FaultKind::Slow, 0.02)
        .with_probability(FaultKind::UnsortedOsr, 0.02)
        .with_probability(FaultKind::DuplicateOsr, 0.02)
        .slow_for(Duration::from_micros(100))
        .yielding(yields);
    if panicking_hooks {
        plan.with_probability(FaultKind::ReleasePanic, 0.01).with_probability(FaultKind::EventPanic, 0.001)
    } else {
        plan
    }
}

fn stress(test: &str, config: StressConfig, break_the_rule: bool, panicking_hooks: bool) {
    quiet_injected_panics();
    let started = Instant::now();
    let plan = Arc::new(plan(config.seed, config.yields, panicking_hooks));
    // Room for every compile and swap (≤ 4 cells each); untouched pages cost nothing.
    let arena = Arc::new(PoisonArena::new((config.ops as usize).max(1 << 16) * 4, config.seed).keep_going());
    arena.set_yield_while_running(config.yields);
    let events = FaultyEvents::new(Arc::clone(&plan));
    let beads: Vec<Bead> = (0..BEADS).map(|i| Bead::new(core::ptr::without_provenance_mut(0x1000 + i * 8))).collect();
    let mut policy = TierLadder::new([8, 40]);
    policy.osr_threshold = 24;
    let deopt = BlacklistDecay::new(ThresholdDeoptPolicy::new(3), core::num::NonZeroU32::new(200).unwrap());
    let broker: CoreBroker<'_> = Broker::new(policy, deopt, NoWake, &events);
    let jit = FaultyCompiler::new(PoisonCompiler::new(Arc::clone(&arena)).with_sites(&[1, 2]), Arc::clone(&plan));
    let run = Run {
        config,
        broker: &broker,
        beads: &beads,
        arena: &arena,
        plan: &plan,
        jit,
        quiescence: Quiescence::new(config.threads),
        runners: Runners::new(config.threads),
        ops: Tally::new(OPS),
        break_the_rule,
    };

    std::thread::scope(|scope| {
        let run = &run;
        for index in 0..config.threads {
            scope.spawn(move || run.runner(index));
        }
        for index in 0..PUMPERS {
            scope.spawn(move || run.pumper(index));
        }
        scope.spawn(move || run.quiescer());
        // Hung compiles wait at the gate until the next pulse.
        while run.running() {
            std::thread::sleep(Duration::from_micros(500));
            plan.gate().pulse();
        }
        plan.gate().open();
    });
    let ran_for = started.elapsed();

    // Drain: no runner holds code any more, so the host may quiesce freely.
    let mut jit = run.jit.clone();
    let in_flight = |bead: &Bead| matches!(bead.state(), BeadState::Queued | BeadState::Compiling);
    for _ in 0..1_000 {
        if broker.queue_len() == 0 && !beads.iter().any(in_flight) {
            break;
        }
        run.catching(|| broker.pump(&mut jit, Budget::unlimited()));
        run.catching(|| broker.quiesce(&mut jit));
    }
    let stuck = beads.iter().filter(|bead| in_flight(bead)).count();

    let mut failures = Vec::new();
    if stuck > 0 {
        failures.push(format!("{stuck} beads stuck Queued/Compiling after draining (queue {})", broker.queue_len()));
    }
    let installed = beads.iter().filter(|bead| bead.compiled().is_some()).count() as u64;
    let stats = broker.stats();
    let report = arena.report();
    if report.live() != installed + u64::from(stats.retire_depth) && !panicking_hooks {
        failures.push(format!(
            "books: {} live code objects, but {installed} installed + {} retiring",
            report.live(),
            stats.retire_depth
        ));
    }

    // Invalidate everything and quiesce: every object must come back.
    for bead in &beads {
        while run.catching(|| broker.invalidate(&bead)) == Some(Err(kiln_core::KilnError::RetireFull)) {
            run.catching(|| broker.quiesce(&mut jit));
        }
    }
    for _ in 0..3 {
        run.catching(|| broker.quiesce(&mut jit));
    }
    let report = arena.report();
    // kiln-core's documented contract for hooks that panic anyway: the rest
    // of that batch is leaked, never freed early (and the books may differ).
    if report.live() != 0 && !panicking_hooks {
        failures
            .push(format!("leak: {} code objects never released after invalidating all and quiescing", report.live()));
    }
    if report.early_frees > 0 {
        let (id, before): (CodeId, bool) = arena.first_early_free().unwrap();
        failures.push(format!(
            "{} early frees: released code executed (first: object {id}, poison seen {})",
            report.early_frees,
            if before { "before running" } else { "while running" }
        ));
    }
    if report.double_releases + report.unknown_releases + report.foreign_entries + report.exhausted > 0 {
        failures.push(format!("arena: {report}"));
    }
    let stats = broker.stats();
    let released_events = events.counts()[EVENT_NAMES.iter().position(|name| *name == "released").unwrap()];
    if released_events != u64::from(stats.released) && !panicking_hooks {
        failures.push(format!("Events::released ran {released_events} times for {} releases", stats.released));
    }

    println!("== {test}: seed {:#x}, {} runner threads, yields {}", config.seed, config.threads, config.yields);
    println!(
        "   runner ops {}, all ops {} in {:.2?} (+ drain {:.2?})",
        config.ops,
        run.ops,
        ran_for,
        started.elapsed() - ran_for
    );
    println!("   faults injected: {}", plan.injected());
    println!("   {report}");
    println!(
        "   kiln-core: promotions {}, compiles {}, failures {}, stale {}+{}, abandoned {}, retired {}, released {}, \
         quiesces declared {}",
        stats.promotions,
        stats.compiles,
        stats.failures,
        stats.stale_jobs,
        stats.stale_results,
        stats.abandoned,
        stats.retired,
        stats.released,
        run.quiescence.declared()
    );
    if break_the_rule {
        // Expected here: kept out of ci/stress.sh's totals of real failures.
        println!("   self-check, the host broke the rule: {} early frees caught", report.early_frees);
    } else if panicking_hooks {
        println!("   leaked by panicking hooks (kiln-core's documented contract): {}", report.live());
        println!("   early frees {}, leaks 0, stuck beads {stuck}", report.early_frees);
    } else {
        println!("   early frees {}, leaks {}, stuck beads {stuck}", report.early_frees, report.live());
    }
    config.assert_passed(test, &config.repeat_command("stress_core", test), &failures);
}

/// Default operations: short in debug builds, ≥ 10⁶ in release.
fn default_ops() -> u64 {
    if cfg!(debug_assertions) { 1_000_000 } else { 2_000_000 }
}

#[test]
fn core_host_quiesce() {
    stress("core_host_quiesce", StressConfig::from_env(0x5EED_C0DE_0001, default_ops(), 4), false, false);
}

#[test]
fn core_oversubscribed_with_injected_yields() {
    let base = StressConfig::from_env(0x5EED_C0DE_0002, default_ops() / 2, 8);
    stress(
        "core_oversubscribed_with_injected_yields",
        StressConfig { threads: base.threads.max(8), yields: true, ..base },
        false,
        false,
    );
}

/// The harness can fail: a host that quiesces without waiting for its
/// runners breaks kiln-core's rule, and code is then released while
/// runners still run it — the run must report early frees.
#[test]
#[should_panic(expected = "early frees")]
fn core_rule_violation_is_caught() {
    let base = StressConfig::from_env(0x5EED_C0DE_0003, default_ops() / 4, 4);
    stress("core_rule_violation_is_caught", StressConfig { yields: true, ..base }, true, false);
}

/// `Compiler::release` and `Events` hooks must not panic (kiln-core's
/// documented contract); when they do anyway — releases and event hooks
/// that panic now and then, the host catching what reaches it — the rest of
/// that batch is leaked, but nothing may ever be freed early.
#[test]
fn core_panicking_hooks_leak_but_never_free_early() {
    stress(
        "core_panicking_hooks_leak_but_never_free_early",
        StressConfig::from_env(0x5EED_C0DE_0004, default_ops() / 2, 4),
        false,
        true,
    );
}
