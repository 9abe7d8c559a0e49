//! Latency distributions (p50 / p99 / max), kiln-std beside beadie 0.3:
//!
//! - **crossing call**: the one `on_invoke` that crosses the threshold and
//!   hands the compile to the broker (goal p99 ≤ 1 µs);
//! - **promotion**: from the start of that call until the entry is visible
//!   to another call, with an idle broker and a compile closure that returns
//!   at once, i.e. excluding compile time (goal p99 ≤ 100 µs).
//!
//! Run: `cargo bench -p kiln-std --bench latency` (prints a table).

use std::ptr;
use std::time::{Duration, Instant};

const SAMPLES: usize = 2_000;

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
    let mut results = Vec::new();

    let kiln = kiln_std::Beadie::with_policy(kiln_std::ThresholdPolicy::new(2));
    let (mut crossing, mut promotion) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        let bead = kiln.register(ptr::null_mut(), None);
        kiln.on_invoke(&bead, |_| native_ptr());
        std::thread::sleep(Duration::from_micros(200)); // the broker goes idle
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
    for _ in 0..SAMPLES {
        let bead = seed.register(ptr::null_mut(), None);
        seed.on_invoke(&bead, |_| native_ptr());
        std::thread::sleep(Duration::from_micros(200));
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

    println!("{SAMPLES} promotions each, idle broker, compile returns at once");
    for (name, crossing, promotion) in &results {
        print(name, "crossing", crossing);
        print(name, "promotion", promotion);
    }
}
