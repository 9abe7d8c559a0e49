//! Latency distributions (p50 / p99 / max), kiln-std beside beadie 0.3:
//!
//! - **crossing call**: the one `on_invoke` that crosses the threshold and
//!   hands the compile to the broker (goal p99 ≤ 1 µs);
//! - **promotion**: from the start of that call until the entry is visible
//!   to another call, with an idle broker and a compile closure that returns
//!   at once, i.e. excluding compile time (goal p99 ≤ 100 µs).
//!
//! Run: `cargo bench -p kiln-std --bench latency` (prints a table).
//! `KILN_LATENCY_GAP_US` sets the idle gap before each promotion (default
//! 200 µs: a recently active broker, polling); above 200 ms the workers are
//! in deep sleep and the crossing call pays the unpark. `KILN_LATENCY_SAMPLES`
//! sets the sample count (default 2,000).
//!
//! Measured here (2-vCPU VM, other processes niced): gap 200 µs — kiln-std
//! crossing p50 0.14 µs / p99 0.48 µs, promotion p50 18.8 µs / p99 36.2 µs;
//! beadie 0.3 crossing 6.7 / 15.4 µs, promotion 21.7 µs / 3.31 ms.
//! Gap 300 ms (deep sleep, 30 samples): kiln-std crossing p50 10 µs (the
//! unpark syscall), promotion p50 3.9 ms; beadie 0.3 11.5 µs and 3.1 ms —
//! waking a thread whose vCPU went idle costs milliseconds on this VM.

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

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo test --benches` lists; there is nothing to list.
    }
    let samples = env_or("KILN_LATENCY_SAMPLES", 2_000) as usize;
    let gap = Duration::from_micros(env_or("KILN_LATENCY_GAP_US", 200));
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

    println!("{samples} promotions each, idle gap {gap:?} before each, compile returns at once");
    for (name, crossing, promotion) in &results {
        print(name, "crossing", crossing);
        print(name, "promotion", promotion);
    }
}
