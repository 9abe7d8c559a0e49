//! The warm-up storm: many functions crossing their promotion threshold at
//! once, as at a game's or a runtime's startup, run the same way on kiln-std
//! and (feature `beadie`) on beadie 0.3 so the two can be compared.
//!
//! Every call asks the broker for native code and runs it when it gets an
//! entry; otherwise it "interprets" (a function of the same shape, with an
//! optional amount of extra work). A compile is trivial: it hands back a
//! function pointer, after spinning for a fixed time if asked to, so the
//! figures measure the broker (how soon and how many promotions land), not a
//! compiler.
//!
//! The call sequence is planned before the clock starts (one `Vec<u32>` of
//! bead indices per thread), so both brokers see exactly the same calls:
//!
//! - **uniform**: every bead gets `calls` calls; each thread walks all beads
//!   round after round, starting a thread's rounds at a different bead, so
//!   every bead crosses its threshold in the same round: the storm.
//! - **zipf(s)**: `beads × calls` calls in all, each drawn independently
//!   (seeded, so the same every run) with probability ∝ 1 / rank^s; bead 0
//!   is the hottest.
//!
//! "The hottest 10 %" are the tenth of the beads with the most planned
//! calls; among beads with equal counts (all of them, under uniform) those
//! that went native first count, so under uniform it is the time until any
//! tenth of the beads are native.
//!
//! Timing is read once per 256 calls (a clock read per call would cost more
//! than the calls), which is the resolution of the curve.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Calls between two clock reads on a calling thread.
const CHUNK: usize = 256;
/// Marks a bead a thread never saw run native.
const NEVER: u64 = u64::MAX;

/// How calls are spread over the beads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every bead gets the same number of calls, in rounds over all beads.
    Uniform,
    /// Calls drawn with probability ∝ 1 / rank^s (s is the field).
    Zipf(f64),
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distribution::Uniform => write!(f, "uniform"),
            Distribution::Zipf(s) => write!(f, "zipf{s}"),
        }
    }
}

/// What one storm runs.
#[derive(Debug, Clone)]
pub struct StormConfig {
    /// Registered functions.
    pub beads: usize,
    /// Calls per bead (under zipf, the mean: `beads × calls` in all).
    pub calls: u64,
    /// Interpreter threads sharing the calls.
    pub threads: usize,
    /// Time each compile spins before handing back its code.
    pub compile_cost: Duration,
    /// How calls are spread over the beads.
    pub distribution: Distribution,
    /// Threads spinning during the storm, to model a busy machine.
    pub busy: usize,
    /// Width of one bucket of the share-native curve.
    pub bucket: Duration,
    /// Extra steps of arithmetic an interpreted call does (0: an
    /// interpreted call costs what a native one does).
    pub interpret_work: u32,
}

impl Default for StormConfig {
    fn default() -> Self {
        Self {
            beads: 1_000,
            calls: 10_000,
            threads: 2,
            compile_cost: Duration::ZERO,
            distribution: Distribution::Uniform,
            busy: 0,
            bucket: Duration::from_micros(500),
            interpret_work: 0,
        }
    }
}

/// A broker under test, built fresh for every run with its default settings.
pub trait StormBroker: Sync + Sized {
    /// The per-function handle the interpreter keeps.
    type Bead: Send + Sync;
    /// The name printed in the summary line.
    const NAME: &'static str;
    /// A broker with the crate's defaults (threshold, queue, workers).
    fn with_defaults() -> Self;
    /// Registers one function.
    fn register(&self) -> Self::Bead;
    /// One call: the native entry if there is one; a promotion hands the
    /// broker a compile that spins for `compile_cost`.
    fn call(&self, bead: &Self::Bead, compile_cost: Duration) -> Option<*mut ()>;
}

/// The function every compile hands back.
extern "C" fn native_step(x: u64) -> u64 {
    x.wrapping_add(1)
}

/// The entry a compile returns.
pub fn native_entry() -> *mut () {
    native_step as extern "C" fn(u64) -> u64 as *mut ()
}

/// A compile: spins for `cost` (a compiler using its CPU), then returns the
/// entry.
pub fn compile(cost: Duration) -> *mut () {
    if !cost.is_zero() {
        let start = Instant::now();
        while start.elapsed() < cost {
            std::hint::spin_loop();
        }
    }
    native_entry()
}

/// The interpreter's version of `native_step`, with `work` extra steps.
#[inline(never)]
fn interpret(x: u64, work: u32) -> u64 {
    let mut state = black_box(x);
    for _ in 0..work {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    }
    black_box(state).wrapping_add(1)
}

/// kiln-std's `Beadie` with its defaults.
#[derive(Debug)]
pub struct KilnStd(kiln_std::Beadie);

impl StormBroker for KilnStd {
    type Bead = Arc<kiln_std::Bead>;
    const NAME: &'static str = "kiln-std";
    fn with_defaults() -> Self {
        KilnStd(kiln_std::Beadie::new())
    }
    fn register(&self) -> Self::Bead {
        self.0.register(std::ptr::null_mut(), None)
    }
    #[inline]
    fn call(&self, bead: &Self::Bead, compile_cost: Duration) -> Option<*mut ()> {
        self.0.on_invoke(bead, move |_| compile(compile_cost))
    }
}

/// beadie 0.3's `Beadie` with its defaults.
#[cfg(feature = "beadie")]
pub struct Beadie03(beadie::Beadie);

#[cfg(feature = "beadie")]
impl std::fmt::Debug for Beadie03 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Beadie03")
    }
}

#[cfg(feature = "beadie")]
impl StormBroker for Beadie03 {
    type Bead = Arc<beadie::Bead>;
    const NAME: &'static str = "beadie-0.3";
    fn with_defaults() -> Self {
        Beadie03(beadie::Beadie::new())
    }
    fn register(&self) -> Self::Bead {
        self.0.register(std::ptr::null_mut(), None)
    }
    #[inline]
    fn call(&self, bead: &Self::Bead, compile_cost: Duration) -> Option<*mut ()> {
        self.0.on_invoke(bead, move |_| compile(compile_cost))
    }
}

/// The calls of one storm, planned before it starts.
#[derive(Debug)]
pub struct Plan {
    /// Bead indices each thread calls, in order.
    pub per_thread: Vec<Vec<u32>>,
    /// Planned calls per bead, all threads together.
    pub calls_per_bead: Vec<u64>,
}

impl Plan {
    /// Plans the calls `config` describes.
    pub fn new(config: &StormConfig) -> Self {
        assert!(config.beads > 0 && config.threads > 0, "a storm needs beads and threads");
        assert!(config.beads <= u32::MAX as usize, "bead indices are u32");
        let per_thread = match config.distribution {
            Distribution::Uniform => uniform(config),
            Distribution::Zipf(s) => zipf(config, s),
        };
        let mut calls_per_bead = vec![0u64; config.beads];
        for calls in &per_thread {
            for &bead in calls {
                calls_per_bead[bead as usize] += 1;
            }
        }
        Plan { per_thread, calls_per_bead }
    }

    /// The hottest tenth of the beads (at least one), hottest first; among
    /// equals, the one `first_native` says went native first comes first.
    fn hottest_tenth(&self, first_native: &[u64]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.calls_per_bead.len()).collect();
        order.sort_by_key(|&bead| (std::cmp::Reverse(self.calls_per_bead[bead]), first_native[bead], bead));
        order.truncate(order.len().div_ceil(10));
        order
    }
}

fn uniform(config: &StormConfig) -> Vec<Vec<u32>> {
    let beads = config.beads as u64;
    let threads = config.threads as u64;
    (0..threads)
        .map(|thread| {
            // Rounds over all beads; a thread's share of each bead's calls.
            let rounds = config.calls / threads + u64::from(thread < config.calls % threads);
            let offset = thread * beads / threads;
            let mut calls = Vec::with_capacity((rounds * beads) as usize);
            for _ in 0..rounds {
                calls.extend((0..beads).map(|i| ((i + offset) % beads) as u32));
            }
            calls
        })
        .collect()
}

fn zipf(config: &StormConfig, exponent: f64) -> Vec<Vec<u32>> {
    let mut cumulative = Vec::with_capacity(config.beads);
    let mut total = 0.0;
    for rank in 1..=config.beads {
        total += 1.0 / (rank as f64).powf(exponent);
        cumulative.push(total);
    }
    let all = config.calls * config.beads as u64;
    let threads = config.threads as u64;
    (0..threads)
        .map(|thread| {
            let count = all / threads + u64::from(thread < all % threads);
            // xorshift64*, seeded per thread: the same plan every run.
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (thread + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            (0..count)
                .map(|_| {
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let unit = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
                    let target = unit * total;
                    cumulative.partition_point(|&edge| edge <= target).min(config.beads - 1) as u32
                })
                .collect()
        })
        .collect()
}

/// What one calling thread saw.
#[derive(Debug)]
struct ThreadRecord {
    /// Nanoseconds from the start to this thread's first native call of
    /// each bead ([`NEVER`] if it had none).
    first_native: Vec<u64>,
    /// (native calls, calls) per curve bucket.
    buckets: Vec<(u64, u64)>,
    /// When this thread's last chunk of calls ended.
    end: Duration,
}

/// The figures of one storm on one broker.
#[derive(Debug, Clone)]
pub struct StormRun {
    /// Which broker ran.
    pub broker: &'static str,
    /// Calls made, all threads together.
    pub calls: u64,
    /// Calls that ran native code.
    pub native_calls: u64,
    /// From the start until the last thread made its last call.
    pub wall: Duration,
    /// Until every one of the hottest tenth of the beads had run native
    /// (`None`: some never did).
    pub hottest_tenth_native: Option<Duration>,
    /// Until every bead had run native (`None`: some never did).
    pub all_native: Option<Duration>,
    /// Beads that ran native at least once.
    pub native_beads: usize,
    /// Share of calls that ran native, per bucket of [`StormConfig::bucket`]
    /// (the last bucket may be partial); `None` for a bucket with no calls
    /// (every calling thread was descheduled throughout).
    pub curve: Vec<Option<f64>>,
}

impl StormRun {
    /// Share of all calls that ran native.
    pub fn native_share(&self) -> f64 {
        self.native_calls as f64 / self.calls.max(1) as f64
    }
}

/// Runs the storm once on a fresh `B` (and `config.busy` spinning threads).
pub fn run<B: StormBroker>(config: &StormConfig, plan: &Plan) -> StormRun {
    let broker = B::with_defaults();
    let beads: Vec<B::Bead> = (0..config.beads).map(|_| broker.register()).collect();
    let stop_busy = AtomicBool::new(false);
    let start_gate = Barrier::new(config.threads + 1);
    let start_at: Mutex<Option<Instant>> = Mutex::new(None);
    let records: Vec<ThreadRecord> = std::thread::scope(|scope| {
        for _ in 0..config.busy {
            scope.spawn(|| {
                while !stop_busy.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let callers: Vec<_> = plan
            .per_thread
            .iter()
            .map(|calls| {
                let (broker, beads, start_gate, start_at) = (&broker, &beads, &start_gate, &start_at);
                scope.spawn(move || {
                    start_gate.wait();
                    let start = start_at.lock().expect("the start time is set before the gate opens").expect("set");
                    call_all(broker, beads, calls, config, start)
                })
            })
            .collect();
        *start_at.lock().expect("no thread holds it yet") = Some(Instant::now());
        start_gate.wait();
        let records = callers.into_iter().map(|caller| caller.join().expect("a calling thread panicked")).collect();
        stop_busy.store(true, Ordering::Relaxed);
        records
    });
    summarise::<B>(config, plan, &records)
}

fn call_all<B: StormBroker>(
    broker: &B,
    beads: &[B::Bead],
    calls: &[u32],
    config: &StormConfig,
    start: Instant,
) -> ThreadRecord {
    let bucket_ns = config.bucket.as_nanos().max(1) as u64;
    let mut first_native = vec![NEVER; beads.len()];
    let mut buckets: Vec<(u64, u64)> = Vec::new();
    let mut value = 0u64;
    let mut last = Duration::ZERO;
    for chunk in calls.chunks(CHUNK) {
        let mut native = 0u64;
        for &bead in chunk {
            let bead = bead as usize;
            match broker.call(&beads[bead], config.compile_cost) {
                Some(entry) => {
                    // SAFETY: every compile in this harness returns
                    // `native_entry()`, an `extern "C" fn(u64) -> u64`.
                    let native_fn: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(entry) };
                    value = native_fn(value);
                    native += 1;
                    if first_native[bead] == NEVER {
                        first_native[bead] = start.elapsed().as_nanos() as u64;
                    }
                }
                None => value = interpret(value, config.interpret_work),
            }
        }
        last = start.elapsed();
        let bucket = (last.as_nanos() as u64 / bucket_ns) as usize;
        if buckets.len() <= bucket {
            buckets.resize(bucket + 1, (0, 0));
        }
        buckets[bucket].0 += native;
        buckets[bucket].1 += chunk.len() as u64;
    }
    black_box(value);
    // The last chunk's reading, so the curve ends in the bucket of `end`.
    ThreadRecord { first_native, buckets, end: last }
}

fn summarise<B: StormBroker>(config: &StormConfig, plan: &Plan, records: &[ThreadRecord]) -> StormRun {
    let first_native: Vec<u64> = (0..config.beads)
        .map(|bead| records.iter().map(|record| record.first_native[bead]).min().unwrap_or(NEVER))
        .collect();
    let latest = |beads: &mut dyn Iterator<Item = usize>| {
        let mut latest = 0;
        for bead in beads {
            if first_native[bead] == NEVER {
                return None;
            }
            latest = latest.max(first_native[bead]);
        }
        Some(Duration::from_nanos(latest))
    };
    let hottest = plan.hottest_tenth(&first_native);
    let buckets = records.iter().map(|record| record.buckets.len()).max().unwrap_or(0);
    let mut sums = vec![(0u64, 0u64); buckets];
    for record in records {
        for (sum, (native, calls)) in sums.iter_mut().zip(&record.buckets) {
            sum.0 += native;
            sum.1 += calls;
        }
    }
    StormRun {
        broker: B::NAME,
        calls: sums.iter().map(|sum| sum.1).sum(),
        native_calls: sums.iter().map(|sum| sum.0).sum(),
        wall: records.iter().map(|record| record.end).max().unwrap_or_default(),
        hottest_tenth_native: latest(&mut hottest.into_iter()),
        all_native: latest(&mut (0..config.beads)),
        native_beads: first_native.iter().filter(|&&at| at != NEVER).count(),
        curve: sums.iter().map(|&(native, calls)| (calls > 0).then(|| native as f64 / calls as f64)).collect(),
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "the median of nothing");
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(distribution: Distribution) -> StormConfig {
        StormConfig { beads: 20, calls: 3_000, threads: 2, distribution, ..StormConfig::default() }
    }

    #[test]
    fn a_uniform_plan_gives_every_bead_its_calls() {
        let plan = Plan::new(&small(Distribution::Uniform));
        assert!(plan.calls_per_bead.iter().all(|&calls| calls == 3_000));
        assert_eq!(plan.per_thread[0].len(), 30_000);
        // The second thread starts its rounds half-way through the beads.
        assert_eq!(plan.per_thread[1][0], 10);
    }

    #[test]
    fn a_zipf_plan_is_skewed_and_the_same_every_time() {
        let config = small(Distribution::Zipf(1.0));
        let plan = Plan::new(&config);
        assert_eq!(plan.calls_per_bead.iter().sum::<u64>(), 60_000);
        // Rank 1 gets about 1 / H(20) = 28 % of the calls, rank 20 about 1.4 %.
        assert!(plan.calls_per_bead[0] > 15_000, "{:?}", plan.calls_per_bead);
        assert!(plan.calls_per_bead[19] < 2_000, "{:?}", plan.calls_per_bead);
        assert_eq!(Plan::new(&config).per_thread, plan.per_thread);
    }

    #[test]
    fn the_hottest_tenth_prefers_call_counts_then_earliest_native() {
        let config = small(Distribution::Uniform);
        let plan = Plan::new(&config);
        let mut first_native = vec![500u64; 20];
        first_native[7] = 3;
        first_native[13] = 4;
        assert_eq!(plan.hottest_tenth(&first_native), vec![7, 13]);
    }

    #[test]
    fn a_storm_on_kiln_std_promotes_and_counts_every_call() {
        let config = small(Distribution::Uniform);
        let plan = Plan::new(&config);
        let run = run::<KilnStd>(&config, &plan);
        assert_eq!(run.calls, 60_000);
        // 3,000 calls per bead against a threshold of 1,000: the first 999
        // of each bead are interpreted; the 1,000th crosses the threshold
        // and runs native only if the worker it woke compiled the bead
        // before that call returned (kiln-core's crossing call returns code
        // already installed). So at most 2,001 native calls a bead.
        assert!(run.native_calls <= 20 * 2_001, "{run:?}");
        assert_eq!(run.curve.len(), (run.wall.as_nanos() / config.bucket.as_nanos()) as usize + 1);
        if let Some(all) = run.all_native {
            assert!(run.hottest_tenth_native.expect("all beads went native") <= all);
            assert_eq!(run.native_beads, 20);
        }
    }

    #[test]
    fn the_median_takes_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
