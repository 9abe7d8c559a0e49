//! Randomized reclamation stress on kiln-std, in each reclamation mode,
//! with fault-injecting backends and closures whose code poisons itself
//! when released.
//!
//! Variants (one `#[test]` each):
//!
//! - `std_unmanaged`: nobody declares quiescence; nothing may be released,
//!   everything retired is parked.
//! - `std_host_quiesce`: a host thread calls `Beadie::quiesce` following
//!   the rule (every runner passed a quiescent point since the previous one).
//! - `std_registered`: every runner registers and reports `quiescent()`;
//!   the worker reclaims.
//! - `std_registered_host_pump`: as above, reload-heavy, plus a host thread
//!   reloading in a loop and two host threads calling
//!   `beadie().pump(Budget::jobs(0..3))` — three reclaimers.
//! - `std_switch_to_host_quiesce`: episodes that start unmanaged and switch
//!   to host quiescence halfway (the first `quiesce` is made while runners
//!   run, as the rule allows: it may free nothing retired before it).
//! - `std_release_panics`: registered mode with a backend whose `release`
//!   panics now and then.
//! - `std_closures`: a plain `Beadie` with compile closures (`on_invoke`,
//!   `on_invoke_osr`, `on_backedge`, `submit`, swaps, eager installs),
//!   host quiescence.
//! - `std_oversubscribed_with_injected_yields`: host quiescence, 8 runners,
//!   yields between every two steps.
//! - `std_drop_with_hung_compile`: dropping a `Beadie` whose worker hangs in
//!   a compile must return, and wait at most `shutdown_timeout` once.
//!
//! A run fails on an early free (poison seen by a runner), a double or
//! unknown release, a bead left Queued/Compiling after the workers drained,
//! books that do not balance (kiln-std: compiled = released + installed +
//! retiring + parked; the backend: live objects = kiln-std's compiled −
//! released; after invalidating everything and quiescing, only parked code
//! is live), or an `on_invalidate` hook that did not run exactly once.
//!
//! Settings: `KILN_STRESS_SEED`, `KILN_STRESS_OPS`, `KILN_STRESS_THREADS`,
//! `KILN_STRESS_YIELDS` (see `StressConfig`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use kiln_std::{
    AlwaysRecompilePolicy, BackendAdapter, BailoutInfo, Bead, BeadState, Beadie, BeadieConfig, BoundBead, Budget,
    OsrCompileResult, OsrEntry, ThresholdPolicy,
};
use kiln_testkit::fault::{
    FABRICATED_SITES, FaultKind, FaultPlan, FaultyBackend, InvalidateProbe, PoisonBackend, PoisonDef, Quiescence,
    Runners, Site, SplitMix64, StressConfig, Tally, injected_panics_on_kiln_threads, panicking_on_invalidate,
    quiet_injected_panics, release_panics_on_kiln_threads,
};
use kiln_testkit::poison::PoisonArena;

const BEADS: usize = 128;
/// Host threads calling `beadie().pump(..)` in the host-pump variant.
const HOST_PUMPS: usize = 2;
/// OSR sites the runners look up (the backend compiles 1 and 2 with every
/// function; the last one is where bad-OSR faults put fabricated entries).
const SITES: [u64; 4] = [1, 2, 3, FABRICATED_SITES[0]];

type Backend = FaultyBackend<PoisonBackend>;
type Adapter = BackendAdapter<Backend>;

const OPS: &[&str] = &[
    "invoke",
    "native run",
    "osr lookup",
    "osr run",
    "bailout",
    "reload",
    "invalidate",
    "eager compile",
    "swap",
    "evict",
    "update_core",
    "tick",
    "blacklist",
    "submit",
    "backedge",
    "host pump",
    "host quiesce",
    "caught injected panic",
    "host reload",
];
mod op {
    pub(crate) const INVOKE: usize = 0;
    pub(crate) const NATIVE: usize = 1;
    pub(crate) const OSR_LOOKUP: usize = 2;
    pub(crate) const OSR: usize = 3;
    pub(crate) const BAILOUT: usize = 4;
    pub(crate) const RELOAD: usize = 5;
    pub(crate) const INVALIDATE: usize = 6;
    pub(crate) const EAGER: usize = 7;
    pub(crate) const SWAP: usize = 8;
    pub(crate) const EVICT: usize = 9;
    pub(crate) const UPDATE_CORE: usize = 10;
    pub(crate) const TICK: usize = 11;
    pub(crate) const BLACKLIST: usize = 12;
    pub(crate) const SUBMIT: usize = 13;
    pub(crate) const BACKEDGE: usize = 14;
    pub(crate) const HOST_PUMP: usize = 15;
    pub(crate) const HOST_QUIESCE: usize = 16;
    pub(crate) const CAUGHT_PANIC: usize = 17;
    pub(crate) const HOST_RELOAD: usize = 18;
}

/// Who declares quiescence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Unmanaged,
    HostQuiesce,
    Registered,
    /// Unmanaged for the first half of each episode, then host quiescence.
    SwitchToHostQuiesce,
}

/// One variant.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    mode: Mode,
    /// A host thread calls `beadie().pump(Budget::jobs(0..3))` beside the worker.
    host_pump: bool,
    /// Reloads are 10% of the operations instead of 1.5%.
    reload_heavy: bool,
    /// A host thread reloads random beads in a loop.
    reloader: bool,
    /// `JitBackend::release` panics (after releasing) 2% of the time.
    release_panics: bool,
    /// Compile closures on a plain `Beadie` instead of a backend.
    closures: bool,
    /// Runners hold code longer (and yield while running it), widening the
    /// window in which an early release shows.
    long_runs: bool,
    /// Fresh `Beadie`s the operations are spread over.
    episodes: u64,
}

impl Scenario {
    const fn new(name: &'static str, mode: Mode) -> Self {
        Self {
            name,
            mode,
            host_pump: false,
            reload_heavy: false,
            reloader: false,
            release_panics: false,
            closures: false,
            long_runs: false,
            episodes: 1,
        }
    }
}

fn plan(seed: u64, scenario: &Scenario, yields: bool) -> FaultPlan {
    let plan = FaultPlan::random(seed)
        .with_probability(FaultKind::Fail, 0.04)
        .with_probability(FaultKind::Panic, 0.03)
        .with_probability(FaultKind::Null, 0.03)
        .with_probability(FaultKind::Hang, 0.01)
        .with_probability(FaultKind::Slow, 0.02)
        .with_probability(FaultKind::UnsortedOsr, 0.03)
        .with_probability(FaultKind::DuplicateOsr, 0.02)
        .with_probability(FaultKind::InvalidatePanic, 0.3)
        .slow_for(Duration::from_micros(100))
        .yielding(yields);
    if scenario.release_panics { plan.with_probability(FaultKind::ReleasePanic, 0.02) } else { plan }
}

/// What one episode's threads share.
struct Episode<'a> {
    config: StressConfig,
    scenario: Scenario,
    ops_per_runner: u64,
    plan: &'a Arc<FaultPlan>,
    /// Code made by backends (released through `JitBackend::release`).
    arena: &'a Arc<PoisonArena>,
    /// Code made by closures and swaps (kiln-std never hands it back).
    closure_arena: &'a Arc<PoisonArena>,
    adapter: Option<&'a Adapter>,
    beadie: &'a Beadie,
    bound: &'a [BoundBead<Backend>],
    beads: Vec<Arc<Bead>>,
    quiescence: Quiescence,
    /// The host declares quiescence now (host modes; after the switch).
    host_declares: AtomicBool,
    runners: Runners,
    progress: AtomicU64,
    ops: &'a Tally,
}

impl Episode<'_> {
    fn catching<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        self.ops.catching(op::CAUGHT_PANIC, f)
    }

    fn running(&self) -> bool {
        self.runners.running()
    }

    fn execute(&self, arena: &PoisonArena, entry: *mut (), rng: &mut SplitMix64) {
        let work = match (self.scenario.long_runs, rng.chance(5_000)) {
            (_, true) => 5_000,
            (true, false) => 100 + rng.below(1_000) as u32,
            (false, false) => 8 + rng.below(48) as u32,
        };
        let _ = arena.execute(entry, work); // counted by the arena, judged at the end
    }

    /// Runs code kiln handed out, from whichever arena made it.
    fn run_code(&self, entry: *mut (), rng: &mut SplitMix64) {
        if self.closure_arena.id_of(entry).is_some() {
            self.execute(self.closure_arena, entry, rng);
        } else {
            self.execute(self.arena, entry, rng);
        }
    }

    /// A compile closure's result under the plan (closures variant).
    fn closure_code(plan: &FaultPlan, arena: &PoisonArena, sites: &[u64]) -> OsrCompileResult {
        plan.step();
        let fault = plan.next(Site::Compile);
        match fault {
            Some(FaultKind::Panic) => panic!("{}: compile closure", kiln_testkit::fault::INJECTED_PANIC),
            Some(FaultKind::Null | FaultKind::Fail) => {
                return OsrCompileResult { entry: std::ptr::null_mut(), osr: Vec::new() };
            }
            Some(FaultKind::Hang) => plan.gate().wait(),
            Some(FaultKind::Slow) => std::thread::sleep(plan.slow_duration()),
            _ => {}
        }
        let Some(code) = arena.make(sites) else {
            return OsrCompileResult { entry: std::ptr::null_mut(), osr: Vec::new() };
        };
        let entry = code.entry.as_ptr();
        let mut osr = code.osr;
        match fault {
            Some(FaultKind::UnsortedOsr) => {
                osr.extend(FABRICATED_SITES.map(|site| OsrEntry { site, code: entry }));
                osr.sort_by_key(|entry| std::cmp::Reverse(entry.site));
            }
            Some(FaultKind::DuplicateOsr) => {
                let twice = OsrEntry { site: FABRICATED_SITES[0], code: entry };
                osr.extend([twice, twice]);
            }
            _ => {}
        }
        OsrCompileResult { entry, osr }
    }

    fn entry_closure(&self) -> impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static {
        let (plan, arena) = (Arc::clone(self.plan), Arc::clone(self.closure_arena));
        move |_| Self::closure_code(&plan, &arena, &[]).entry
    }

    fn osr_closure(&self) -> impl FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static {
        let (plan, arena) = (Arc::clone(self.plan), Arc::clone(self.closure_arena));
        move |_| Self::closure_code(&plan, &arena, &[1, 2])
    }

    fn runner(&self, index: usize, barrier: &Barrier) {
        // Even if a kiln call panics through the runner, it counts as gone.
        let _out = self.runners.out_on_drop();
        let mut rng = SplitMix64::new(self.config.seed ^ (0x1000 + index as u64).wrapping_mul(0x9E37_79B9));
        let registered = (self.scenario.mode == Mode::Registered).then(|| self.beadie.register_thread());
        barrier.wait();
        let reloads = if self.scenario.reload_heavy { 100_000 } else { 15_000 };
        let mut until_quiescent = 0;
        for n in 0..self.ops_per_runner {
            self.plan.step();
            let slot = rng.below(BEADS as u64) as usize;
            let roll = rng.below(1_000_000);
            // A panic of the plan may come through any kiln call (a release
            // hook run by a reclamation step on this thread, say).
            self.catching(|| self.operation(slot, roll, reloads, &mut rng));
            if until_quiescent == 0 {
                self.quiescence.quiescent(index);
                if let Some(thread) = &registered {
                    thread.quiescent();
                }
                until_quiescent = rng.below(8);
            } else {
                until_quiescent -= 1;
            }
            if n % 64 == 63 {
                self.progress.fetch_add(64, Ordering::Relaxed);
                std::thread::yield_now(); // let the worker and the host threads in
            }
        }
        self.quiescence.offline(index);
        drop(registered);
    }

    fn operation(&self, slot: usize, roll: u64, reloads: u64, rng: &mut SplitMix64) {
        let rng = &mut *rng;
        let bead = &self.beads[slot];
        match roll {
            0..650_000 => {
                self.ops.bump(op::INVOKE);
                let entry = match (self.adapter, rng.below(3)) {
                    (Some(adapter), _) => adapter.on_invoke(&self.bound[slot], |_| PoisonDef { sites: vec![1, 2] }),
                    (None, 0) => self.beadie.on_invoke(bead, self.entry_closure()),
                    (None, _) => self.beadie.on_invoke_osr(bead, self.osr_closure()),
                };
                if let Some(entry) = entry {
                    self.ops.bump(op::NATIVE);
                    self.run_code(entry, rng);
                }
            }
            650_000..760_000 => {
                let site = SITES[rng.below(SITES.len() as u64) as usize];
                let entry = if self.adapter.is_none() && rng.chance(500_000) {
                    self.ops.bump(op::BACKEDGE);
                    self.beadie.on_backedge(bead, site, self.osr_closure())
                } else {
                    self.ops.bump(op::OSR_LOOKUP);
                    bead.osr_entry(site)
                };
                if let Some(entry) = entry {
                    self.ops.bump(op::OSR);
                    self.run_code(entry, rng);
                }
            }
            760_000..790_000 => {
                self.ops.bump(op::BAILOUT);
                let info = BailoutInfo { guard_id: 1, pc_offset: 0, generation: bead.generation() };
                bead.on_bailout(info, &AlwaysRecompilePolicy);
            }
            790_000..800_000 => {
                self.ops.bump(op::EVICT);
                bead.evict(1 + rng.below(64) as u32);
            }
            800_000..820_000 => {
                self.ops.bump(op::UPDATE_CORE);
                bead.update_core(std::ptr::without_provenance_mut(0x1000 + rng.below(1 << 20) as usize * 8));
            }
            820_000..840_000 => {
                self.ops.bump(op::TICK);
                bead.tick();
            }
            840_000..860_000 => match self.adapter {
                Some(_) => {
                    self.ops.bump(op::EAGER);
                    let def = PoisonDef { sites: if rng.chance(500_000) { vec![1, 2, 3] } else { Vec::new() } };
                    self.catching(|| self.bound[slot].compile(def));
                }
                None => {
                    self.ops.bump(op::SWAP);
                    let sites: &[u64] = if rng.chance(500_000) { &[1, 2, 3] } else { &[] };
                    if let Some(code) = self.closure_arena.make(sites) {
                        match rng.below(3) {
                            0 => drop(bead.swap_compiled(code.entry.as_ptr())),
                            1 => drop(bead.swap_compiled_with_osr(code.entry.as_ptr(), code.osr)),
                            _ => drop(bead.eager_install(code.entry.as_ptr())),
                        }
                    }
                }
            },
            860_000..870_000 if self.adapter.is_none() => {
                self.ops.bump(op::SUBMIT);
                if rng.chance(500_000) {
                    self.beadie.submit(bead, self.entry_closure());
                } else {
                    self.beadie.submit_osr(bead, self.osr_closure());
                }
            }
            870_000..870_500 => {
                self.ops.bump(op::BLACKLIST);
                bead.blacklist();
            }
            870_500..870_650 => {
                self.ops.bump(op::INVALIDATE);
                self.catching(|| bead.invalidate());
            }
            _ if roll >= 1_000_000 - reloads => {
                self.ops.bump(op::RELOAD);
                bead.reload();
            }
            _ => {
                self.ops.bump(op::INVOKE);
                if let Some(adapter) = self.adapter {
                    let _ = adapter.on_invoke(&self.bound[slot], |_| PoisonDef::default());
                } else {
                    let _ = self.beadie.on_invoke(bead, self.entry_closure());
                }
            }
        }
    }

    fn quiescer(&self) {
        while self.running() {
            self.plan.step();
            let declared = self.host_declares.load(Ordering::Acquire) // pairs with the Release at the switch
                && self.quiescence.try_declare(|| {
                    self.catching(|| self.beadie.quiesce());
                });
            if declared {
                self.ops.bump(op::HOST_QUIESCE);
            } else {
                std::thread::yield_now();
            }
        }
    }

    fn reloader(&self) {
        let mut rng = SplitMix64::new(self.config.seed ^ 0x4000);
        while self.running() {
            self.plan.step();
            self.ops.bump(op::HOST_RELOAD);
            let bead = &self.beads[rng.below(BEADS as u64) as usize];
            self.catching(|| bead.reload());
            if rng.chance(20_000) {
                std::thread::yield_now();
            }
        }
    }

    fn host_pump(&self, index: usize) {
        let mut rng = SplitMix64::new(self.config.seed ^ (0x3000 + index as u64));
        while self.running() {
            self.plan.step();
            self.ops.bump(op::HOST_PUMP);
            // Mostly `jobs(0)`: no compile, just the reclamation step after it.
            let jobs = if rng.chance(800_000) { 0 } else { 1 + rng.below(2) as u32 };
            self.catching(|| self.beadie.pump(Budget::jobs(jobs)));
            if rng.chance(20_000) {
                std::thread::yield_now(); // now and then, so the runners get on
            }
        }
    }
}

/// The books of one episode, read when the workers have settled.
#[derive(Debug, Default, Clone, Copy)]
struct Books {
    compiled: u64,
    released: u64,
    installed: u64,
    retiring: u64,
    parked: u64,
}

impl Books {
    fn read(beadie: &Beadie, beads: &[Arc<Bead>]) -> Self {
        let (compiled, released) = beadie.code_counts();
        Books {
            compiled,
            released,
            installed: beads.iter().filter(|bead| bead.compiled().is_some()).count() as u64,
            retiring: u64::from(beadie.stats().retire_depth),
            parked: beadie.parked_code() as u64,
        }
    }

    fn balanced(&self) -> bool {
        self.compiled == self.released + self.installed + self.retiring + self.parked
    }
}

/// Waits (bounded) until `done`; false if it never happened.
fn settle(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..600 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

struct Outcome {
    failures: Vec<String>,
    stuck: usize,
    /// Code objects neither released nor parked at the end.
    leaked: u64,
}

#[allow(clippy::too_many_arguments)]
fn episode(
    config: StressConfig,
    scenario: Scenario,
    number: u64,
    plan: &Arc<FaultPlan>,
    arena: &Arc<PoisonArena>,
    closure_arena: &Arc<PoisonArena>,
    ops: &Tally,
) -> Outcome {
    let policy = ThresholdPolicy::new(12).osr_threshold(30);
    let adapter;
    let closures_beadie;
    let (beadie, adapter_ref) = if scenario.closures {
        let config = BeadieConfig { workers: 2, queue_capacity: 64, ..BeadieConfig::default() };
        closures_beadie = Beadie::with_config(policy, config);
        (&closures_beadie, None)
    } else {
        adapter = BackendAdapter::with_policy(
            FaultyBackend::new(PoisonBackend::new(Arc::clone(arena)), Arc::clone(plan)),
            policy,
        );
        (adapter.beadie(), Some(&adapter))
    };
    let probes: Vec<Arc<InvalidateProbe>> = (0..BEADS).map(|_| Arc::new(InvalidateProbe::new())).collect();
    let hook = |index: usize| Some(panicking_on_invalidate(Arc::clone(plan), Arc::clone(&probes[index])));
    let core = |index: usize| std::ptr::without_provenance_mut(0x1000 + index * 8);
    let bound: Vec<BoundBead<Backend>> = match adapter_ref {
        Some(adapter) => (0..BEADS).map(|i| adapter.register(core(i), hook(i))).collect(),
        None => Vec::new(),
    };
    let beads: Vec<Arc<Bead>> = match adapter_ref {
        Some(_) => bound.iter().map(|bound| Arc::clone(bound.bead())).collect(),
        None => (0..BEADS).map(|i| beadie.register(core(i), hook(i))).collect(),
    };
    if scenario.mode == Mode::HostQuiesce {
        beadie.quiesce(); // managed from the start: nothing is retired yet
    }
    // Earlier episodes' code that kiln-std kept (parked, never handed back).
    let baseline = arena.report().live();
    let episode_seed = config.seed ^ number.wrapping_mul(0xA24B_AED4_963E_E407);
    let run = Episode {
        config: StressConfig { seed: episode_seed, ..config },
        scenario,
        ops_per_runner: config.ops / scenario.episodes / config.threads as u64,
        plan,
        arena,
        closure_arena,
        adapter: adapter_ref,
        beadie,
        bound: &bound,
        beads,
        quiescence: Quiescence::new(config.threads),
        host_declares: AtomicBool::new(scenario.mode == Mode::HostQuiesce),
        runners: Runners::new(config.threads),
        progress: AtomicU64::new(0),
        ops,
    };
    // Hung compiles wait at the gate again (the last episode left it open
    // for its workers to drain).
    plan.gate().close();
    let barrier = Barrier::new(config.threads);
    let host_quiesces = matches!(scenario.mode, Mode::HostQuiesce | Mode::SwitchToHostQuiesce);
    std::thread::scope(|scope| {
        let (run, barrier) = (&run, &barrier);
        for index in 0..config.threads {
            scope.spawn(move || run.runner(index, barrier));
        }
        if host_quiesces {
            scope.spawn(move || run.quiescer());
        }
        if scenario.reloader {
            scope.spawn(move || run.reloader());
        }
        if scenario.host_pump {
            for index in 0..HOST_PUMPS {
                scope.spawn(move || run.host_pump(index));
            }
        }
        let half = run.ops_per_runner * config.threads as u64 / 2;
        while run.running() {
            std::thread::sleep(Duration::from_micros(500));
            plan.gate().pulse();
            if scenario.mode == Mode::SwitchToHostQuiesce
                && !run.host_declares.load(Ordering::Relaxed)
                && run.progress.load(Ordering::Relaxed) >= half
            {
                // The host's first declaration, made while runners run: it
                // covers nothing retired before it (it has no predecessor).
                run.catching(|| beadie.quiesce());
                run.ops.bump(op::HOST_QUIESCE);
                run.quiescence.next_epoch();
                run.host_declares.store(true, Ordering::Release); // pairs with the Acquire in `quiescer`
            }
        }
        // Open until the next episode starts: the workers still drain.
        plan.gate().open();
    });

    let mut failures = Vec::new();
    let in_flight = |bead: &Arc<Bead>| {
        matches!(bead.kiln_bead().state(), kiln_core::BeadState::Queued | kiln_core::BeadState::Compiling)
    };
    // The workers drain what is queued; nobody else pumps now.
    settle(|| !run.beads.iter().any(in_flight));
    let stuck = run.beads.iter().filter(|bead| in_flight(bead)).count();
    if stuck > 0 {
        failures.push(format!(
            "episode {number}: {stuck} beads stuck Queued/Compiling after the workers drained (queue {})",
            beadie.stats().queue_depth
        ));
    }
    let books = || Books::read(beadie, &run.beads);
    if !settle(|| books().balanced()) {
        failures.push(format!("episode {number}: kiln-std's books do not balance: {:?}", books()));
    }
    if !scenario.closures {
        let live = |books: Books| (arena.report().live() - baseline, books.compiled - books.released);
        if !settle(|| {
            let (backend_live, std_live) = live(books());
            backend_live == std_live
        }) {
            let (backend_live, std_live) = live(books());
            failures.push(format!(
                "episode {number}: the backend holds {backend_live} live code objects, kiln-std {std_live} ({:?})",
                books()
            ));
        }
    }

    // Invalidate everything; quiesce as the mode does; only parked code may stay.
    for bead in &run.beads {
        run.catching(|| bead.invalidate());
    }
    if host_quiesces {
        for _ in 0..3 {
            run.catching(|| beadie.quiesce());
        }
    }
    // Managed: released after quiescence; unmanaged: parked by the workers'
    // reclamation steps.
    if !settle(|| books().retiring == 0) {
        failures.push(format!("episode {number}: retired code never released: {:?}", books()));
    }
    let end = books();
    let leaked = (end.compiled - end.released).saturating_sub(end.parked);
    if end.compiled - end.released != end.parked {
        failures.push(format!("episode {number}: after invalidating all and quiescing: {end:?}"));
    }
    let backend_live = arena.report().live() - baseline;
    if !scenario.closures && backend_live != end.parked {
        failures.push(format!(
            "episode {number}: {backend_live} backend code objects live after invalidating all, {} parked",
            end.parked
        ));
    }
    let hook_runs: Vec<u64> = probes.iter().map(|probe| probe.runs()).filter(|&runs| runs != 1).collect();
    if !hook_runs.is_empty() {
        failures.push(format!(
            "episode {number}: {} on_invalidate hooks did not run exactly once: {hook_runs:?}",
            hook_runs.len()
        ));
    }
    drop(run);
    Outcome { failures, stuck, leaked }
}

fn stress(scenario: Scenario, config: StressConfig) {
    quiet_injected_panics();
    let started = Instant::now();
    let plan = Arc::new(plan(config.seed, &scenario, config.yields));
    let cells = (config.ops as usize).max(1 << 16) * 4;
    let arena = Arc::new(PoisonArena::new(cells, config.seed).keep_going());
    let closure_arena = Arc::new(PoisonArena::new(cells, config.seed).keep_going());
    arena.set_yield_while_running(config.yields || scenario.long_runs);
    closure_arena.set_yield_while_running(config.yields || scenario.long_runs);
    let ops = Tally::new(OPS);
    let mut failures = Vec::new();
    let (mut stuck, mut leaked) = (0, 0);
    for number in 0..scenario.episodes {
        let outcome = episode(config, scenario, number, &plan, &arena, &closure_arena, &ops);
        failures.extend(outcome.failures);
        stuck += outcome.stuck;
        leaked += outcome.leaked;
    }
    let report = arena.report();
    let closure_report = closure_arena.report();
    for (name, report, arena) in [("backend", report, &arena), ("closure", closure_report, &closure_arena)] {
        if report.early_frees > 0 {
            let (id, before) = arena.first_early_free().unwrap();
            failures.push(format!(
                "{} early frees of {name} code: released code executed (first: object {id}, poison seen {})",
                report.early_frees,
                if before { "before running" } else { "while running" }
            ));
        }
        if report.double_releases + report.unknown_releases + report.foreign_entries + report.exhausted > 0 {
            failures.push(format!("{name} arena: {report}"));
        }
    }
    if closure_report.released > 0 {
        failures.push(format!("kiln-std handed {} closure-made objects to a release hook", closure_report.released));
    }
    let name = scenario.name;
    println!(
        "== {name}: seed {:#x}, {} runner threads, yields {}, {:?}",
        config.seed, config.threads, config.yields, scenario
    );
    println!("   runner ops {}, all ops {} in {:.2?}", config.ops, ops, started.elapsed());
    println!("   faults injected: {}", plan.injected());
    println!(
        "   injected panics on kiln threads (all tests of this process): {}, of them in release: {}",
        injected_panics_on_kiln_threads(),
        release_panics_on_kiln_threads()
    );
    println!("   backend: {report}");
    println!("   closures: {closure_report}");
    println!("   early frees {}, leaks {leaked}, stuck beads {stuck}", report.early_frees + closure_report.early_frees);
    for failure in &failures {
        println!("   FAIL: {failure}");
    }
    config.assert_passed(name, &config.repeat_command("stress_std", name), &failures);
}

/// Default operations: short in debug builds, ≥ 10⁶ in release.
fn default_ops() -> u64 {
    if cfg!(debug_assertions) { 200_000 } else { 1_000_000 }
}

fn config(seed: u64) -> StressConfig {
    StressConfig::from_env(seed, default_ops(), 4)
}

#[test]
fn std_unmanaged() {
    stress(Scenario::new("std_unmanaged", Mode::Unmanaged), config(0x5EED_57D0_0001));
}

#[test]
fn std_host_quiesce() {
    stress(Scenario::new("std_host_quiesce", Mode::HostQuiesce), config(0x5EED_57D0_0002));
}

#[test]
fn std_registered() {
    stress(Scenario::new("std_registered", Mode::Registered), config(0x5EED_57D0_0003));
}

#[test]
fn std_registered_host_pump() {
    let scenario = Scenario {
        host_pump: true,
        reloader: true,
        reload_heavy: true,
        long_runs: true,
        ..Scenario::new("std_registered_host_pump", Mode::Registered)
    };
    stress(scenario, config(0x5EED_57D0_0004));
}

#[test]
fn std_switch_to_host_quiesce() {
    // Many short episodes: each has one switch. (No host pumps here: in
    // unmanaged mode each `pump` advances the epoch, which would shrink the
    // slice of code the first declaration can release to microseconds;
    // `std_switch_directed` pumps once, on purpose.)
    let scenario = Scenario {
        episodes: 48,
        reload_heavy: true,
        long_runs: true,
        ..Scenario::new("std_switch_to_host_quiesce", Mode::SwitchToHostQuiesce)
    };
    stress(scenario, config(0x5EED_57D0_0005));
}

#[test]
fn std_release_panics() {
    let scenario = Scenario { release_panics: true, ..Scenario::new("std_release_panics", Mode::Registered) };
    stress(scenario, config(0x5EED_57D0_0006));
}

#[test]
fn std_closures() {
    let scenario = Scenario { closures: true, ..Scenario::new("std_closures", Mode::HostQuiesce) };
    stress(scenario, config(0x5EED_57D0_0007));
}

#[test]
fn std_oversubscribed_with_injected_yields() {
    let base = StressConfig::from_env(0x5EED_57D0_0008, default_ops() / 2, 8);
    let config = StressConfig { threads: base.threads.max(8), yields: true, ..base };
    stress(Scenario::new("std_oversubscribed_with_injected_yields", Mode::HostQuiesce), config);
}

/// Counts kiln's "still compiling after ...; detached" shutdown warnings.
struct ShutdownWarnings(AtomicU64);

impl log::Log for ShutdownWarnings {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn && record.args().to_string().contains("still compiling after") {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

static SHUTDOWN_WARNINGS: ShutdownWarnings = ShutdownWarnings(AtomicU64::new(0));

#[test]
fn std_drop_with_hung_compile() {
    quiet_injected_panics();
    let _ = log::set_logger(&SHUTDOWN_WARNINGS);
    log::set_max_level(log::LevelFilter::Warn);
    let plan = Arc::new(FaultPlan::none().at(FaultKind::Hang, 1));
    let arena = Arc::new(PoisonArena::new(64, 0));
    let timeout = Duration::from_millis(100);
    let config = BeadieConfig { workers: 1, queue_capacity: 8, shutdown_timeout: timeout };
    let beadie = Beadie::with_config(ThresholdPolicy::new(1), config);
    let bead = beadie.register(std::ptr::null_mut(), None);
    let (hung_plan, hung_arena) = (Arc::clone(&plan), Arc::clone(&arena));
    beadie.on_invoke(&bead, move |_| Episode::closure_code(&hung_plan, &hung_arena, &[]).entry);
    while plan.gate().waiting() == 0 {
        std::thread::yield_now();
    }
    let warnings_before = SHUTDOWN_WARNINGS.0.load(Ordering::Relaxed);
    // Drop on another thread; if it does not return while the compile is
    // hung, the gate is opened after a long grace (so the test ends) and the
    // test fails.
    let dropped = Arc::new(Mutex::new(None::<Duration>));
    let dropper = {
        let dropped = Arc::clone(&dropped);
        std::thread::spawn(move || {
            let started = Instant::now();
            drop(beadie);
            *dropped.lock().unwrap() = Some(started.elapsed());
        })
    };
    let mut returned_while_hung = false;
    for _ in 0..1_000 {
        if dropper.is_finished() {
            returned_while_hung = plan.gate().waiting() == 1;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    plan.gate().open();
    dropper.join().unwrap();
    let took = dropped.lock().unwrap().unwrap();
    let waits = SHUTDOWN_WARNINGS.0.load(Ordering::Relaxed) - warnings_before;
    println!(
        "== std_drop_with_hung_compile: drop took {took:.2?} with shutdown_timeout {timeout:?}; \
         timed-out shutdown waits logged: {waits}; returned while the compile hung: {returned_while_hung}"
    );
    assert!(returned_while_hung, "dropping the Beadie waited for the hung compile to end");
    assert!(
        waits <= 1,
        "drop waited out shutdown_timeout {waits} times (drop took {took:.2?} for a {timeout:?} timeout)"
    );
    drop(bead);
    let _ = BeadState::Compiling;
}

/// The unmanaged → managed switch, step by step: a runner holds code, the
/// code is retired while the `Beadie` is unmanaged, a `pump` runs a
/// reclamation step, and then the host makes its first `quiesce` — which
/// must not free code retired before it (it has no predecessor; see
/// RECLAMATION.md, "Changing who declares quiescence"). Repeated on fresh
/// `Beadie`s; any release of the held code before the runner lets go is an
/// early free.
#[test]
fn std_switch_directed() {
    const ROUNDS: usize = 8;
    let arena = Arc::new(PoisonArena::new(1 << 12, 0).keep_going());
    let mut early = 0;
    for _ in 0..ROUNDS {
        let adapter = BackendAdapter::with_policy(PoisonBackend::new(Arc::clone(&arena)), ThresholdPolicy::new(1));
        let bound = adapter.register(std::ptr::null_mut(), None);
        let compiled = settle(|| adapter.on_invoke(&bound, |_| PoisonDef::default()).is_some());
        assert!(compiled, "the worker never compiled");
        let (holding, go) = (Barrier::new(2), Barrier::new(2));
        std::thread::scope(|scope| {
            let runner = scope.spawn(|| {
                // A compiled call that runs for a while: it holds the entry.
                let entry = adapter.on_invoke(&bound, |_| PoisonDef::default()).expect("compiled");
                let before = arena.execute(entry, 0);
                holding.wait();
                go.wait();
                (before, arena.execute(entry, 0))
            });
            holding.wait();
            // The host (holding no code itself): retire, one reclamation
            // step while unmanaged, then its first declaration.
            assert_eq!(bound.reload(), kiln_std::ReloadOutcome::WillRecompile);
            adapter.beadie().pump(Budget::jobs(0));
            adapter.beadie().quiesce();
            go.wait();
            let (before, after) = runner.join().unwrap();
            assert!(before.is_ok());
            if after.is_err() {
                early += 1;
            }
        });
    }
    println!("== std_switch_directed: {early} early frees in {ROUNDS} switches");
    println!("   early frees {early}, leaks 0, stuck beads 0");
    assert_eq!(
        early, 0,
        "the first quiesce after unmanaged mode freed code a runner was still running, {early} of {ROUNDS} times"
    );
}

/// A backend whose first `release` panics (after freeing), in registered
/// mode, step by step: the release runs on the worker's reclamation step.
/// Afterwards the `Beadie` must still compile (a bead promoted later must
/// not stay Queued) and its books must balance.
#[test]
fn std_release_panic_directed() {
    quiet_injected_panics();
    let arena = Arc::new(PoisonArena::new(1 << 12, 0).keep_going());
    let plan = Arc::new(FaultPlan::none().at(FaultKind::ReleasePanic, 1));
    let backend = FaultyBackend::new(PoisonBackend::new(Arc::clone(&arena)), Arc::clone(&plan));
    let adapter = BackendAdapter::with_policy(backend, ThresholdPolicy::new(1));
    let thread = adapter.beadie().register_thread();
    let first = adapter.register(std::ptr::null_mut(), None);
    assert!(settle(|| adapter.on_invoke(&first, |_| PoisonDef::default()).is_some()), "the worker never compiled");
    assert_eq!(first.reload(), kiln_std::ReloadOutcome::WillRecompile);
    // Report quiescent points until the worker released the retired code.
    let released = settle(|| {
        thread.quiescent();
        arena.report().released == 1
    });
    assert!(released, "retired code was never released");
    let second = adapter.register(std::ptr::null_mut(), None);
    let compiled = settle(|| adapter.on_invoke(&second, |_| PoisonDef::default()).is_some());
    let (compiled_objects, released_objects) = adapter.beadie().code_counts();
    println!(
        "== std_release_panic_directed: release panics on kiln threads {}; a later promotion compiled: {compiled}; \
         kiln-std compiled {compiled_objects}, released {released_objects}, state of the later bead {:?}",
        release_panics_on_kiln_threads(),
        second.bead().state()
    );
    let installed = [&first, &second].iter().filter(|bound| bound.bead().compiled().is_some()).count() as u64;
    println!(
        "   early frees {}, leaks {}, stuck beads {}",
        arena.report().early_frees,
        (compiled_objects - released_objects)
            .saturating_sub(installed + u64::from(adapter.beadie().stats().retire_depth)),
        u8::from(!compiled)
    );
    assert!(
        compiled,
        "after a panicking release the worker compiles no more: the bead stays {:?}",
        second.bead().state()
    );
    assert_eq!(released_objects, 1, "the panicking release is not counted released by kiln-std");
}
