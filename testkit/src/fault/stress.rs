//! What the stress tests share: their settings from the environment and
//! host-declared quiescence (QSBR) for runner threads.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::fault::is_injected;

/// A stress run's settings, read from the environment so that any run can
/// be repeated exactly:
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `KILN_STRESS_SEED` | seed of the operations and the fault plan (decimal or `0x` hex) | per test |
/// | `KILN_STRESS_OPS` | operations in total, over all runner threads | per test |
/// | `KILN_STRESS_THREADS` | runner threads | per test (≥ 4) |
/// | `KILN_STRESS_YIELDS` | `1`: injected yields between every two steps | off |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StressConfig {
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Operations in total.
    pub ops: u64,
    /// Runner threads.
    pub threads: usize,
    /// Injected yields.
    pub yields: bool,
}

impl StressConfig {
    /// The settings from the environment, with these defaults for what is
    /// not set.
    pub fn from_env(seed: u64, ops: u64, threads: usize) -> Self {
        Self {
            seed: env_u64("KILN_STRESS_SEED").unwrap_or(seed),
            ops: env_u64("KILN_STRESS_OPS").unwrap_or(ops),
            threads: env_u64("KILN_STRESS_THREADS").map_or(threads, |threads| threads.max(1) as usize),
            yields: env_u64("KILN_STRESS_YIELDS").is_some_and(|yields| yields != 0),
        }
    }

    /// The command line that repeats this run of `test` (the name of a
    /// `--test` target and a test function).
    pub fn repeat_command(&self, target: &str, test: &str) -> String {
        format!(
            "KILN_STRESS_SEED={:#x} KILN_STRESS_OPS={} KILN_STRESS_THREADS={} KILN_STRESS_YIELDS={} \
             cargo test -p kiln-testkit --test {target} -- --exact {test} --nocapture",
            self.seed,
            self.ops,
            self.threads,
            u8::from(self.yields)
        )
    }
}

impl StressConfig {
    /// Fails the run of `test` if anything in `failures` went wrong, naming
    /// the seed and the command line (`repeat`) that runs it again.
    pub fn assert_passed(&self, test: &str, repeat: &str, failures: &[String]) {
        assert!(
            failures.is_empty(),
            "{test} failed (seed {:#x}):\n  - {}\nrepeat: {repeat}",
            self.seed,
            failures.join("\n  - ")
        );
    }
}

/// The runner threads still running: the threads that serve them
/// (quiescers, pumps, reloaders) stop once the last runner is out.
#[derive(Debug)]
pub struct Runners(AtomicUsize);

impl Runners {
    /// `threads` runners, all running.
    pub fn new(threads: usize) -> Self {
        Self(AtomicUsize::new(threads))
    }

    /// Whether a runner still runs.
    pub fn running(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0 // pairs with the Release in `RunnerOut::drop`
    }

    /// Counts the calling runner out when the result drops, at the end of
    /// its run or in a panic.
    pub fn out_on_drop(&self) -> RunnerOut<'_> {
        RunnerOut(&self.0)
    }
}

/// Counts one runner out of its [`Runners`] when dropped.
#[derive(Debug)]
pub struct RunnerOut<'a>(&'a AtomicUsize);

impl Drop for RunnerOut<'_> {
    fn drop(&mut self) {
        // Release: what the runner did happens before a helper sees it gone.
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// Parses a decimal or `0x`-hexadecimal number from the variable `name`.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim().replace('_', "");
    match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

/// Quiescent-state-based reclamation as the host runs it (the QSBR flavour
/// of liburcu): each runner thread reports the points where it holds no
/// code pointer from kiln ([`quiescent`](Self::quiescent)); the host
/// declares quiescence ([`try_declare`](Self::try_declare)) only when every
/// runner has passed such a point since the previous declaration — kiln's
/// documented rule for `Broker::quiesce` and `Beadie::quiesce`.
///
/// The epoch counts declarations. A runner's report stores the epoch it
/// read; a declaration made when every runner's report is at least the
/// current epoch came after one report of each runner that itself came
/// after the previous declaration ended (the epoch is bumped only then).
#[derive(Debug)]
pub struct Quiescence {
    epoch: AtomicU64,
    seen: Box<[Slot]>,
    declared: AtomicU64,
}

/// One runner's last report, alone on its cache line.
#[derive(Debug)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A report of a runner that runs no more code.
const OFFLINE: u64 = u64::MAX;

impl Quiescence {
    /// Bookkeeping for `runners` threads, none of which reported yet.
    pub fn new(runners: usize) -> Self {
        Self {
            epoch: AtomicU64::new(1),
            seen: (0..runners).map(|_| Slot(AtomicU64::new(0))).collect(),
            declared: AtomicU64::new(0),
        }
    }

    /// Runner `runner` holds no code pointer from kiln now.
    pub fn quiescent(&self, runner: usize) {
        // SeqCst pairs with the SeqCst store in `try_declare`: a report that
        // reads epoch e comes after the declaration that bumped it to e.
        let epoch = self.epoch.load(Ordering::SeqCst);
        // SeqCst pairs with the SeqCst loads in `try_declare`: the host that
        // sees this report sees every load of code this runner did before.
        self.seen[runner].0.store(epoch, Ordering::SeqCst);
    }

    /// Runner `runner` has stopped running code for good.
    pub fn offline(&self, runner: usize) {
        // SeqCst pairs with the loads in `try_declare`, as in `quiescent`.
        self.seen[runner].0.store(OFFLINE, Ordering::SeqCst);
    }

    /// Whether every runner reported since the previous declaration.
    pub fn everyone_reported(&self) -> bool {
        let epoch = self.epoch.load(Ordering::SeqCst);
        // SeqCst pairs with the stores in `quiescent` and `offline`.
        self.seen.iter().all(|slot| slot.0.load(Ordering::SeqCst) >= epoch)
    }

    /// Runs `declare` (the host's `quiesce`) if every runner reported since
    /// the previous declaration, then opens the next epoch. Only one thread
    /// may declare. Returns whether it declared.
    pub fn try_declare(&self, declare: impl FnOnce()) -> bool {
        if !self.everyone_reported() {
            return false;
        }
        declare();
        self.next_epoch();
        true
    }

    /// Opens the next epoch without the check (after a declaration the host
    /// made for reasons of its own, such as its first `quiesce` after a
    /// switch of reclamation mode): from now on every runner must report
    /// again before the next declaration.
    pub fn next_epoch(&self) {
        self.declared.fetch_add(1, Ordering::Relaxed);
        // SeqCst pairs with the load in `quiescent`.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Declarations so far.
    pub fn declared(&self) -> u64 {
        self.declared.load(Ordering::Relaxed)
    }
}

/// Named counters that many threads bump (operations by kind, say).
#[derive(Debug)]
pub struct Tally {
    names: &'static [&'static str],
    counts: Box<[AtomicU64]>,
}

impl Tally {
    /// One counter per name.
    pub fn new(names: &'static [&'static str]) -> Self {
        Self { names, counts: names.iter().map(|_| AtomicU64::new(0)).collect() }
    }

    /// Adds one to counter `index`.
    pub fn bump(&self, index: usize) {
        self.counts[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counter `index` now.
    pub fn get(&self, index: usize) -> u64 {
        self.counts[index].load(Ordering::Relaxed)
    }

    /// Runs `f`; a panic a fault plan injected is caught and counted in
    /// counter `caught` (`None`), any other panic goes on unwinding.
    pub fn catching<R>(&self, caught: usize, f: impl FnOnce() -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => Some(value),
            Err(payload) if is_injected(&*payload) => {
                self.bump(caught);
                None
            }
            Err(payload) => resume_unwind(payload),
        }
    }

    /// All counters added up.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (", self.total())?;
        let mut first = true;
        for (name, count) in self.names.iter().zip(self.counts.iter()) {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                write!(f, "{}{name} {count}", if first { "" } else { ", " })?;
                first = false;
            }
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declaration_needs_a_report_of_every_runner_since_the_previous_one() {
        let quiescence = Quiescence::new(2);
        let mut declared = 0;
        assert!(!quiescence.try_declare(|| declared += 1), "nobody reported");
        quiescence.quiescent(0);
        assert!(!quiescence.try_declare(|| declared += 1), "runner 1 did not report");
        quiescence.quiescent(1);
        assert!(quiescence.try_declare(|| declared += 1));
        assert!(!quiescence.try_declare(|| declared += 1), "reports before the declaration do not count");
        quiescence.quiescent(0);
        quiescence.offline(1);
        assert!(quiescence.try_declare(|| declared += 1), "an offline runner never holds code");
        assert_eq!((declared, quiescence.declared()), (2, 2));
    }

    #[test]
    fn a_tally_counts_by_name() {
        let tally = Tally::new(&["a", "b", "c"]);
        tally.bump(0);
        tally.bump(2);
        tally.bump(2);
        assert_eq!((tally.get(2), tally.total()), (2, 3));
        assert_eq!(tally.to_string(), "3 (a 1, c 2)");
    }

    #[test]
    fn settings_come_from_the_defaults_without_environment() {
        // The variables are not set in `cargo test`'s unit-test runs of this crate.
        if std::env::var_os("KILN_STRESS_OPS").is_none() && std::env::var_os("KILN_STRESS_SEED").is_none() {
            let config = StressConfig::from_env(7, 1_000, 4);
            assert_eq!((config.seed, config.ops), (7, 1_000));
            assert!(config.repeat_command("stress_core", "x").contains("KILN_STRESS_SEED=0x7"));
        }
    }
}
