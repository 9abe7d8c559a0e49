//! Fault-injecting compilers and backends.
//!
//! A [`FaultPlan`] says which faults happen where: at chosen points ("the
//! 3rd compile panics", [`FaultPlan::at`]) or at random from a `u64` seed
//! with a probability per kind ([`FaultPlan::random`]). The decision for the
//! n-th opportunity at a [`Site`] is a pure function of the seed, the site
//! and n ([`FaultPlan::decide`]), so a seeded plan is reproducible: which
//! thread happens to take the n-th compile may vary between runs, the
//! sequence of faults does not.
//!
//! The plan is consulted by wrappers around real (or fake) code producers:
//!
//! - [`FaultyCompiler`]: a kiln-core [`Compiler`](kiln_core::Compiler)
//!   around another one (here a [`PoisonCompiler`], or kiln-cranelift's);
//! - [`FaultyBackend`]: a kiln-std [`JitBackend`](kiln_std::JitBackend)
//!   around another one (a [`PoisonBackend`], or kiln-cranelift's);
//! - [`panicking_on_invalidate`] and [`FaultyEvents`]: kiln-std's
//!   `on_invalidate` hook and kiln-core's `Events`, panicking on plan.
//!
//! The stress tests' shared pieces live here too: [`StressConfig`] (seed,
//! operations, threads, injected yields from the environment),
//! [`Quiescence`] (host-declared quiescence following kiln's rule) and
//! [`Tally`] (operation counters), with [`SplitMix64`] as the seeded PRNG.
//!
//! Every injected fault is counted by kind ([`FaultPlan::injected`]), so a
//! run can report "faults injected: N by kind". Injected panics carry
//! [`INJECTED_PANIC`] in their message; [`quiet_injected_panics`] keeps
//! them out of the test output.

mod backend;
mod compiler;
mod hooks;
mod stress;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub use backend::{FABRICATED_SITES, FaultyBackend, PoisonBackend, PoisonDef};
pub use compiler::{FaultyCompiler, PoisonCompiler};
pub use hooks::{EVENT_NAMES, FaultyEvents, InvalidateProbe, panicking_on_invalidate};
pub use stress::{Quiescence, RunnerOut, Runners, StressConfig, Tally, env_u64};

/// Every injected panic's message starts with this.
pub const INJECTED_PANIC: &str = "kiln-testkit injected panic";

/// Where a fault can strike: each site counts its own opportunities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// A compile (kiln-core `Compiler::compile`, kiln-std `JitBackend::compile*`).
    Compile,
    /// A release of code (`Compiler::release`, `JitBackend::release`).
    Release,
    /// A bead's `on_invalidate` hook.
    Invalidate,
    /// A kiln-core `Events` hook.
    Event,
}

impl Site {
    const ALL: [Site; 4] = [Site::Compile, Site::Release, Site::Invalidate, Site::Event];

    fn index(self) -> usize {
        self as usize
    }
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The compile returns an error.
    Fail,
    /// The compile panics.
    Panic,
    /// The compile returns a null entry (kiln-std). kiln-core's `Compiled`
    /// cannot hold a null entry, so there it is an error saying so.
    Null,
    /// The compile blocks until the plan's [`Gate`] lets it go, then
    /// compiles normally.
    Hang,
    /// The compile sleeps [`FaultPlan::slow_for`], then compiles normally.
    Slow,
    /// The OSR entries come back in descending site order (kiln-std sorts
    /// them). kiln-core's `OsrTable` refuses them at construction, so there
    /// the compiler frees its code and fails.
    UnsortedOsr,
    /// The OSR entries repeat a site (kiln must refuse the code and release
    /// it at once).
    DuplicateOsr,
    /// The release frees the code, then panics.
    ReleasePanic,
    /// A bead's `on_invalidate` hook panics.
    InvalidatePanic,
    /// A kiln-core `Events` hook panics.
    EventPanic,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Fail,
        FaultKind::Panic,
        FaultKind::Null,
        FaultKind::Hang,
        FaultKind::Slow,
        FaultKind::UnsortedOsr,
        FaultKind::DuplicateOsr,
        FaultKind::ReleasePanic,
        FaultKind::InvalidatePanic,
        FaultKind::EventPanic,
    ];

    /// Where this fault strikes.
    pub fn site(self) -> Site {
        match self {
            Self::ReleasePanic => Site::Release,
            Self::InvalidatePanic => Site::Invalidate,
            Self::EventPanic => Site::Event,
            _ => Site::Compile,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Panic => "panic",
            Self::Null => "null",
            Self::Hang => "hang",
            Self::Slow => "slow",
            Self::UnsortedOsr => "unsorted-osr",
            Self::DuplicateOsr => "duplicate-osr",
            Self::ReleasePanic => "release-panic",
            Self::InvalidatePanic => "invalidate-panic",
            Self::EventPanic => "event-panic",
        }
    }
}

/// How many faults of each kind a plan injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    counts: [u64; FaultKind::ALL.len()],
}

impl FaultCounts {
    /// Faults of `kind` injected.
    pub fn of(&self, kind: FaultKind) -> u64 {
        self.counts[kind.index()]
    }

    /// All faults injected.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &FaultCounts) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.total())?;
        let mut first = true;
        for kind in FaultKind::ALL {
            let count = self.of(kind);
            if count > 0 {
                write!(f, "{}{} {count}", if first { "" } else { ", " }, kind.name())?;
                first = false;
            }
        }
        write!(f, ")")
    }
}

/// A gate that hung compiles wait at until the test lets them go.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    waiting: AtomicUsize,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    /// Bumped by `pulse`: lets go of everyone waiting now.
    pulses: u64,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until the gate opens or is pulsed.
    pub fn wait(&self) {
        let mut state = self.state();
        let pulse = state.pulses;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        while !state.open && state.pulses == pulse {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// Lets go of every compile waiting now; later ones wait again.
    pub fn pulse(&self) {
        self.state().pulses += 1;
        self.changed.notify_all();
    }

    /// Opens the gate for good (until [`close`](Self::close)).
    pub fn open(&self) {
        self.state().open = true;
        self.changed.notify_all();
    }

    /// Closes the gate: later hung compiles wait again.
    pub fn close(&self) {
        self.state().open = false;
    }

    /// Compiles waiting at the gate now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Which faults happen where. See the module docs.
#[derive(Debug)]
pub struct FaultPlan {
    /// `(kind, n)`: the n-th opportunity (1-based) at `kind.site()` faults.
    chosen: Vec<(FaultKind, u64)>,
    seed: u64,
    /// Per kind: probability × 2^32 per opportunity at its site.
    thresholds: [u64; FaultKind::ALL.len()],
    slow: Duration,
    yields: AtomicBool,
    opportunities: [AtomicU64; Site::ALL.len()],
    injected: [AtomicU64; FaultKind::ALL.len()],
    gate: Gate,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self::none()
    }
}

impl FaultPlan {
    /// A plan that injects nothing (add faults with [`at`](Self::at) and
    /// [`random`](Self::random)).
    pub fn none() -> Self {
        Self {
            chosen: Vec::new(),
            seed: 0,
            thresholds: [0; FaultKind::ALL.len()],
            slow: Duration::from_micros(200),
            yields: AtomicBool::new(false),
            opportunities: Default::default(),
            injected: Default::default(),
            gate: Gate::new(),
        }
    }

    /// A plan drawing faults at random from `seed`; give each kind its
    /// probability with [`with_probability`](Self::with_probability).
    pub fn random(seed: u64) -> Self {
        Self { seed, ..Self::none() }
    }

    /// The `n`-th opportunity (counting from 1) at `kind`'s site injects
    /// `kind` ("the 3rd compile panics": `at(FaultKind::Panic, 3)`). Chosen
    /// points win over random draws.
    pub fn at(mut self, kind: FaultKind, n: u64) -> Self {
        self.chosen.push((kind, n));
        self
    }

    /// Each opportunity at `kind`'s site injects `kind` with `probability`
    /// (0.0 ..= 1.0). Kinds of one site are drawn from one number, so their
    /// probabilities add up (at most one fault per opportunity).
    pub fn with_probability(mut self, kind: FaultKind, probability: f64) -> Self {
        let probability = probability.clamp(0.0, 1.0);
        self.thresholds[kind.index()] = (probability * (1u64 << 32) as f64) as u64;
        self
    }

    /// How long a [`FaultKind::Slow`] compile takes (default 200 µs).
    pub fn slow_for(mut self, duration: Duration) -> Self {
        self.slow = duration;
        self
    }

    /// Injected yields: every faulty compiler, backend and hook yields to
    /// the scheduler between its steps.
    pub fn yielding(self, yields: bool) -> Self {
        self.yields.store(yields, Ordering::Relaxed);
        self
    }

    /// The seed of the random draws.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The gate [`FaultKind::Hang`] compiles wait at.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Whether injected yields are on.
    pub fn yields(&self) -> bool {
        self.yields.load(Ordering::Relaxed)
    }

    /// An injected yield, if they are on.
    pub fn step(&self) {
        if self.yields() {
            std::thread::yield_now();
        }
    }

    /// How long a slow compile takes.
    pub fn slow_duration(&self) -> Duration {
        self.slow
    }

    /// The fault for the `n`-th opportunity (from 1) at `site`, without
    /// counting anything: a pure function of the plan, `site` and `n`.
    pub fn decide(&self, site: Site, n: u64) -> Option<FaultKind> {
        if let Some(&(kind, _)) = self.chosen.iter().find(|&&(kind, at)| kind.site() == site && at == n) {
            return Some(kind);
        }
        let draw = mix(self.seed ^ mix((site.index() as u64) << 56 ^ n)) >> 32;
        let mut bound = 0;
        for kind in FaultKind::ALL.into_iter().filter(|kind| kind.site() == site) {
            bound += self.thresholds[kind.index()];
            if draw < bound {
                return Some(kind);
            }
        }
        None
    }

    /// Takes the next opportunity at `site`: returns the fault to inject,
    /// if any, and counts it as injected.
    pub fn next(&self, site: Site) -> Option<FaultKind> {
        let n = self.opportunities[site.index()].fetch_add(1, Ordering::Relaxed) + 1;
        let fault = self.decide(site, n);
        if let Some(kind) = fault {
            self.injected[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
        fault
    }

    /// Opportunities taken so far at `site`.
    pub fn opportunities(&self, site: Site) -> u64 {
        self.opportunities[site.index()].load(Ordering::Relaxed)
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> FaultCounts {
        let mut counts = FaultCounts::default();
        for kind in FaultKind::ALL {
            counts.counts[kind.index()] = self.injected[kind.index()].load(Ordering::Relaxed);
        }
        counts
    }

    /// Panics with an injected-panic message naming `what`.
    pub(crate) fn panic(&self, what: &str) -> ! {
        panic!("{INJECTED_PANIC}: {what} (seed {:#x})", self.seed)
    }
}

/// splitmix64's finalizer: a well-mixed 64-bit hash of `x`.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small seeded generator (splitmix64), for tests that need a stream of
/// random numbers reproducible from a seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0.wrapping_sub(0x9E37_79B9_7F4A_7C15))
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }
}

/// Injected panics raised on kiln's own threads (named `kiln-*`), counted by
/// the hook [`quiet_injected_panics`] installs.
static ON_KILN_THREADS: AtomicU64 = AtomicU64::new(0);
/// Of those, the panics of a faulty `release`.
static RELEASES_ON_KILN_THREADS: AtomicU64 = AtomicU64::new(0);

/// Installs (once per process) a panic hook that keeps injected panics out
/// of the output (counting those raised on kiln's worker threads) and
/// passes every other panic to the previous hook.
pub fn quiet_injected_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !is_injected(info.payload()) {
                previous(info);
            } else if std::thread::current().name().is_some_and(|name| name.starts_with("kiln-")) {
                ON_KILN_THREADS.fetch_add(1, Ordering::Relaxed);
                if panic_message(info.payload()).contains("release") {
                    RELEASES_ON_KILN_THREADS.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    });
}

/// Injected panics raised on kiln's worker threads so far (caught by kiln
/// or not), if [`quiet_injected_panics`] was installed.
pub fn injected_panics_on_kiln_threads() -> u64 {
    ON_KILN_THREADS.load(Ordering::Relaxed)
}

/// Of [`injected_panics_on_kiln_threads`], the panics of a faulty
/// `release` (kiln runs releases outside any `catch_unwind` today, so each
/// of these unwound through a worker's reclamation step).
pub fn release_panics_on_kiln_threads() -> u64 {
    RELEASES_ON_KILN_THREADS.load(Ordering::Relaxed)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("")
}

/// Whether a panic payload is one of the plan's injected panics.
pub fn is_injected(payload: &(dyn std::any::Any + Send)) -> bool {
    panic_message(payload).starts_with(INJECTED_PANIC)
}

/// A [`PoisonArena`](crate::poison::PoisonArena) had no room for more code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaFull;

impl fmt::Display for ArenaFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the poison arena is full")
    }
}

impl std::error::Error for ArenaFull {}

/// What a faulty compiler or backend reports for a failed compile.
#[derive(Debug)]
pub enum FaultError<E> {
    /// An injected fault (`Fail`, kiln-core's `Null`, `UnsortedOsr`,
    /// `DuplicateOsr`).
    Injected(FaultKind),
    /// The wrapped compiler or backend failed by itself.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for FaultError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Injected(kind) => write!(f, "injected fault: {}", kind.name()),
            Self::Inner(error) => write!(f, "{error}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for FaultError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Injected(_) => None,
            Self::Inner(error) => Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_points_fire_exactly_there() {
        let plan = FaultPlan::none().at(FaultKind::Panic, 3).at(FaultKind::ReleasePanic, 1);
        let compiles: Vec<_> = (0..5).map(|_| plan.next(Site::Compile)).collect();
        assert_eq!(compiles, [None, None, Some(FaultKind::Panic), None, None]);
        assert_eq!(plan.next(Site::Release), Some(FaultKind::ReleasePanic));
        assert_eq!(plan.next(Site::Release), None);
        assert_eq!(plan.next(Site::Invalidate), None);
        let injected = plan.injected();
        assert_eq!((injected.of(FaultKind::Panic), injected.of(FaultKind::ReleasePanic), injected.total()), (1, 1, 2));
        assert_eq!(plan.opportunities(Site::Compile), 5);
        assert_eq!(injected.to_string(), "2 (panic 1, release-panic 1)");
    }

    fn random_plan(seed: u64) -> FaultPlan {
        FaultPlan::random(seed)
            .with_probability(FaultKind::Fail, 0.1)
            .with_probability(FaultKind::Panic, 0.05)
            .with_probability(FaultKind::ReleasePanic, 0.2)
    }

    #[test]
    fn a_seeded_plan_is_reproducible_and_near_its_probabilities() {
        let draws = |plan: &FaultPlan| (1..=20_000).map(|n| plan.decide(Site::Compile, n)).collect::<Vec<_>>();
        let a = draws(&random_plan(0xC0FFEE));
        assert_eq!(a, draws(&random_plan(0xC0FFEE)), "same seed, same faults");
        assert_ne!(a, draws(&random_plan(0xC0FFEF)), "another seed, other faults");
        let fails = a.iter().filter(|f| **f == Some(FaultKind::Fail)).count();
        let panics = a.iter().filter(|f| **f == Some(FaultKind::Panic)).count();
        assert!((1_700..2_300).contains(&fails), "{fails} fails of 20,000 at 10%");
        assert!((800..1_200).contains(&panics), "{panics} panics of 20,000 at 5%");
        assert!(a.iter().all(|f| f.is_none_or(|kind| kind.site() == Site::Compile)));
        // `next` follows `decide` and counts what it injected.
        let plan = random_plan(0xC0FFEE);
        let taken: Vec<_> = (0..20_000).map(|_| plan.next(Site::Compile)).collect();
        assert_eq!(taken, a);
        assert_eq!(plan.injected().of(FaultKind::Fail), fails as u64);
    }

    #[test]
    fn the_gate_holds_until_pulsed_or_opened() {
        let gate = std::sync::Arc::new(Gate::new());
        let waiter = {
            let gate = std::sync::Arc::clone(&gate);
            std::thread::spawn(move || gate.wait())
        };
        while gate.waiting() == 0 {
            std::thread::yield_now();
        }
        assert!(!waiter.is_finished());
        gate.pulse();
        waiter.join().unwrap();
        gate.open();
        gate.wait(); // open: returns at once
    }

    #[test]
    fn splitmix_is_reproducible_and_bounded() {
        let mut a = SplitMix64::new(5);
        let mut b = SplitMix64::new(5);
        for _ in 0..1_000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(7) < 7);
            b.below(7);
        }
    }
}
