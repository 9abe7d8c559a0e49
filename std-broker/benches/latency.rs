//! Latency distributions (p50 / p99 / max), kiln-std beside beadie 0.3:
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
//! - **idle**: 300 ms of quiet before each (kiln-std's workers poll every
//!   1 ms by then, and nobody wakes them; before issue 14 they were parked
//!   deeply after 200 ms and the crossing call paid the unpark);
//!   `KILN_LATENCY_IDLE_MS`, `KILN_LATENCY_IDLE_SAMPLES` (default 20:
//!   12 s for both brokers).
//!
//! Run: `cargo bench -p kiln-std --bench latency` (about 15 s; prints a
//! table). Figures of the last run are in BENCHMARKS.md.

use std::ptr;
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
    println!("{name:<12} {what:<10} p50 {:>10.2?}  p99 {:>10.2?}  max {:>10.2?}", p.p50, p.p99, p.max);
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

/// Crossing and promotion times of `samples` promotions on kiln-std, then
/// on beadie 0.3, each after `gap` of quiet.
fn scenario(samples: usize, gap: Duration) -> Vec<(&'static str, Percentiles, Percentiles)> {
    let mut results = Vec::new();

    let kiln = kiln_std::Beadie::with_policy(kiln_std::ThresholdPolicy::new(2));
    let (mut crossing, mut promotion) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let bead = kiln.register(ptr::null_mut(), None);
        kiln.on_invoke(&bead, |_| native_ptr());
        std::thread::sleep(gap); // the broker goes idle
        let (c, p) = sample(
            || {
                kiln.on_invoke(&bead, |_| native_ptr());
            },
            || kiln.on_invoke(&bead, |_| native_ptr()).is_some(),
        );
        crossing.push(c);
        promotion.push(p);
    }
    results.push(("kiln-std", percentiles(crossing), percentiles(promotion)));

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
    results.push(("beadie 0.3", percentiles(crossing), percentiles(promotion)));
    results
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo test --benches` lists; there is nothing to list.
    }
    let samples = env_or("KILN_LATENCY_SAMPLES", 2_000) as usize;
    let gap = Duration::from_micros(env_or("KILN_LATENCY_GAP_US", 200));
    let idle_samples = env_or("KILN_LATENCY_IDLE_SAMPLES", 20) as usize;
    let idle = Duration::from_millis(env_or("KILN_LATENCY_IDLE_MS", 300));
    for (samples, gap, scenario_name) in [(samples, gap, "short gap"), (idle_samples, idle, "idle")] {
        if samples == 0 {
            continue;
        }
        let results = scenario(samples, gap);
        println!("{scenario_name}: {samples} promotions each, {gap:?} of quiet before each, compile returns at once");
        for (name, crossing, promotion) in &results {
            print(name, "crossing", crossing);
            print(name, "promotion", promotion);
        }
        println!();
    }
}
