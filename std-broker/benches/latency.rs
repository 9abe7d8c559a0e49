//! Latency distributions (p50 / p99 / max), kiln-std beside beadie 0.3 and
//! beside floors measured the same way in the same run:
//!
//! - **crossing call**: the one `on_invoke` that crosses the threshold and
//!   hands the compile to the broker (goal p99 ≤ 1 µs after any idle time);
//! - **promotion**: from the start of that call until the entry is visible
//!   to another call, with a compile closure that returns at once, i.e.
//!   excluding compile time (goal p99 ≤ 100 µs after a short gap, ≤ 1 ms
//!   after idle).
//!
//! Each is measured in two scenarios, one after the other:
//!
//! - **short gap**: 200 µs of quiet before each promotion (a recently active
//!   broker, its workers still polling); `KILN_LATENCY_GAP_US`,
//!   `KILN_LATENCY_SAMPLES` (default 2,000);
//! - **idle**: 300 ms of quiet before each (the caller sleeps; kiln-std's
//!   workers poll every 1 ms by then, and nobody wakes them);
//!   `KILN_LATENCY_IDLE_MS`, `KILN_LATENCY_IDLE_SAMPLES` (default 20).
//!
//! After an idle, a thread's first touches of memory are slow whatever it
//! runs (its caches and TLB were reused meanwhile; in a VM a TLB miss walks
//! two page tables), and a thread woken by a timer waits for a free core.
//! The idle scenario therefore also times, after the same sleep:
//!
//! - `floor: timing only`: the two clock reads around nothing;
//! - `floor: 20 pages` and `floor: 73 lines, 20 pages`: trivial operations
//!   with a crossing call's footprint (the lines and pages one crossing
//!   touches, code and data, counted from a valgrind trace) — dependent
//!   loads of one line on each of the 20 pages (the least that footprint
//!   can cost), and of all 73 lines (as if none were prefetched);
//! - `kiln-std, code warm`: the crossing call right after a crossing on a
//!   bead of another, workerless `Beadie` (kiln's code is warm, this
//!   broker's data and the bead are not);
//! - `kiln-std, broker warm`: right after a crossing on another bead of the
//!   same `Beadie` (only the bead is cold);
//! - `floor: polling thread`: promotion's floor, a plain thread polling an
//!   atomic flag with `park_timeout(1 ms)` (kiln's warm poll), the caller
//!   spinning until the thread acknowledges, as the bench spins until the
//!   entry is visible.
//!
//! Run: `cargo bench -p kiln-std --bench latency` (about 90 s; prints a
//! table). Figures of the last run are in BENCHMARKS.md.

use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

extern "C" fn native() -> i64 {
    1
}

fn native_ptr() -> *mut () {
    native as extern "C" fn() -> i64 as *mut ()
}

struct Percentiles {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Percentiles { p50: at(0.50), p99: at(0.99), max: *samples.last().unwrap() }
}

fn print(name: &str, what: &str, p: &Percentiles) {
    println!("{name:<26} {what:<10} p50 {:>10.2?}  p99 {:>10.2?}  max {:>10.2?}", p.p50, p.p99, p.max);
}

/// Measures one promotion: `cross` makes the crossing call, `visible` polls
/// for the entry. Returns (crossing call time, crossing-to-visible time).
fn sample(cross: impl FnOnce(), mut visible: impl FnMut() -> bool) -> (Duration, Duration) {
    let start = Instant::now();
    cross();
    let crossing = start.elapsed();
    let deadline = start + Duration::from_secs(5);
    while !visible() {
        assert!(Instant::now() < deadline, "promotion never completed");
        std::hint::spin_loop();
    }
    (crossing, start.elapsed())
}

/// What runs just before the timed crossing call (after the quiet gap).
#[derive(Clone, Copy, PartialEq)]
enum Warm {
    Nothing,
    /// A crossing on a bead of another `Beadie` without workers.
    Code,
    /// A crossing on another bead of the same `Beadie`.
    Broker,
}

/// Crossing and promotion times of `samples` kiln-std promotions, each
/// after `gap` of quiet and `warm`.
fn kiln(samples: usize, gap: Duration, warm: Warm) -> (Percentiles, Percentiles) {
    let kiln = kiln_std::Beadie::with_policy(kiln_std::ThresholdPolicy::new(2));
    let other = kiln_std::Beadie::with_config(
        kiln_std::ThresholdPolicy::new(2),
        kiln_std::BeadieConfig { workers: 0, ..kiln_std::BeadieConfig::default() },
    );
    let (mut crossing, mut promotion) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let bead = kiln.register(ptr::null_mut(), None);
        let sibling = match warm {
            Warm::Nothing => None,
            Warm::Code => Some(other.register(ptr::null_mut(), None)),
            Warm::Broker => Some(kiln.register(ptr::null_mut(), None)),
        };
        let owner = if warm == Warm::Code { &other } else { &kiln };
        kiln.on_invoke(&bead, |_| native_ptr());
        if let Some(sibling) = &sibling {
            owner.on_invoke(sibling, |_| native_ptr());
        }
        std::thread::sleep(gap); // the broker goes idle
        if let Some(sibling) = &sibling {
            owner.on_invoke(sibling, |_| native_ptr());
        }
        let (c, p) = sample(
            || {
                kiln.on_invoke(&bead, |_| native_ptr());
            },
            || kiln.on_invoke(&bead, |_| native_ptr()).is_some(),
        );
        crossing.push(c);
        promotion.push(p);
        // The workerless broker's queue is drained here, off the clock.
        other.pump(kiln_std::Budget::unlimited());
    }
    (percentiles(crossing), percentiles(promotion))
}

/// The same on beadie 0.3.
fn beadie(samples: usize, gap: Duration) -> (Percentiles, Percentiles) {
    let seed = beadie::Beadie::with_policy(beadie::ThresholdPolicy::new(2));
    let (mut crossing, mut promotion) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let bead = seed.register(ptr::null_mut(), None);
        seed.on_invoke(&bead, |_| native_ptr());
        std::thread::sleep(gap);
        let (c, p) = sample(
            || {
                seed.on_invoke(&bead, |_| native_ptr());
            },
            || seed.on_invoke(&bead, |_| native_ptr()).is_some(),
        );
        crossing.push(c);
        promotion.push(p);
    }
    (percentiles(crossing), percentiles(promotion))
}

/// Cache lines and pages one crossing call touches (kiln-std, release, counted
/// from a valgrind trace of `path_count crossing`): 46 lines of code on 8
/// pages and 27 lines of data on 12 (the stack included).
const CROSSING_LINES: usize = 73;
const CROSSING_PAGES: usize = 20;

/// A chain of `count` cache lines spread over [`CROSSING_PAGES`] pages, linked
/// in a scrambled order: each holds the index of the next, so every load
/// waits for the one before (as code is fetched one line after another).
struct Walk {
    buffer: Vec<usize>,
    head: usize,
}

impl Walk {
    const PAGE: usize = 4096 / 8;
    const LINE: usize = 64 / 8;

    fn new(count: usize) -> Self {
        let mut buffer = vec![0usize; 256 * Self::PAGE];
        let lines: Vec<usize> = (0..count)
            .map(|i| (i % CROSSING_PAGES) * 12 * Self::PAGE + (i * 7 % (Self::PAGE / Self::LINE)) * Self::LINE)
            .collect();
        let mut order: Vec<usize> = (0..count).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (i * 2_654_435_761) % (i + 1));
        }
        for pair in order.windows(2) {
            buffer[lines[pair[0]]] = lines[pair[1]];
        }
        buffer[lines[order[count - 1]]] = usize::MAX;
        Self { buffer, head: lines[order[0]] }
    }

    fn walk(&self) {
        let mut at = self.head;
        while self.buffer[at] != usize::MAX {
            at = std::hint::black_box(self.buffer[at]);
        }
    }
}

/// The crossing call's floors, each after `gap`: timing alone; one line on
/// each of [`CROSSING_PAGES`] pages (the least a crossing's footprint can
/// cost: every page it touches missed once); all [`CROSSING_LINES`] lines
/// on those pages (as if none were prefetched).
fn crossing_floors(samples: usize, gap: Duration) -> [Percentiles; 3] {
    let (pages, lines) = (Walk::new(CROSSING_PAGES), Walk::new(CROSSING_LINES));
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..samples {
        for (which, times) in times.iter_mut().enumerate() {
            std::thread::sleep(gap);
            let start = Instant::now();
            match which {
                0 => {}
                1 => pages.walk(),
                _ => lines.walk(),
            }
            times.push(start.elapsed());
        }
    }
    times.map(percentiles)
}

/// Promotion's floor: a plain thread polling a flag every 1 ms (timer
/// slack 1 µs, as kiln's workers), the caller spinning until it answers.
fn polling_floor(samples: usize, gap: Duration) -> Percentiles {
    let (flag, answer) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicU64::new(0));
    let poller = {
        let (flag, answer, stop) = (Arc::clone(&flag), Arc::clone(&answer), Arc::clone(&stop));
        std::thread::spawn(move || {
            // SAFETY: PR_SET_TIMERSLACK takes one integer and changes only
            // this thread's timer slack.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong) };
            while stop.load(Ordering::Relaxed) == 0 {
                // Release pairs with the caller's Acquire load of `answer`.
                answer.store(flag.load(Ordering::Relaxed), Ordering::Release);
                std::thread::park_timeout(Duration::from_millis(1));
            }
        })
    };
    let mut times = Vec::new();
    for round in 1..=samples as u64 {
        std::thread::sleep(gap);
        let start = Instant::now();
        flag.store(round, Ordering::Relaxed);
        while answer.load(Ordering::Acquire) != round {
            std::hint::spin_loop();
        }
        times.push(start.elapsed());
    }
    stop.store(1, Ordering::Relaxed);
    poller.thread().unpark();
    poller.join().unwrap();
    percentiles(times)
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo test --benches` lists; there is nothing to list.
    }
    let samples = env_or("KILN_LATENCY_SAMPLES", 2_000) as usize;
    let gap = Duration::from_micros(env_or("KILN_LATENCY_GAP_US", 200));
    let idle_samples = env_or("KILN_LATENCY_IDLE_SAMPLES", 20) as usize;
    let idle = Duration::from_millis(env_or("KILN_LATENCY_IDLE_MS", 300));
    if samples > 0 {
        println!("short gap: {samples} promotions each, {gap:?} of quiet before each, compile returns at once");
        let (crossing, promotion) = kiln(samples, gap, Warm::Nothing);
        print("kiln-std", "crossing", &crossing);
        print("kiln-std", "promotion", &promotion);
        let (crossing, promotion) = beadie(samples, gap);
        print("beadie 0.3", "crossing", &crossing);
        print("beadie 0.3", "promotion", &promotion);
        println!();
    }
    if idle_samples > 0 {
        println!("idle: {idle_samples} promotions each, {idle:?} of quiet before each, compile returns at once");
        let (crossing, promotion) = kiln(idle_samples, idle, Warm::Nothing);
        print("kiln-std", "crossing", &crossing);
        print("kiln-std", "promotion", &promotion);
        let (crossing, _) = kiln(idle_samples, idle, Warm::Code);
        print("kiln-std, code warm", "crossing", &crossing);
        let (crossing, _) = kiln(idle_samples, idle, Warm::Broker);
        print("kiln-std, broker warm", "crossing", &crossing);
        let [empty, pages, lines] = crossing_floors(idle_samples, idle);
        print("floor: timing only", "crossing", &empty);
        print("floor: 20 pages", "crossing", &pages);
        print("floor: 73 lines, 20 pages", "crossing", &lines);
        print("floor: polling thread", "promotion", &polling_floor(idle_samples, idle));
        let (crossing, promotion) = beadie(idle_samples, idle);
        print("beadie 0.3", "crossing", &crossing);
        print("beadie 0.3", "promotion", &promotion);
    }
}
