//! Promotions per second: 2,000 beads made hot at once (threshold 1, a
//! 1,024-job queue) and driven by one interpreter thread calling every bead
//! in turn until all of them run native, with 1, 2 and 4 kiln-std workers
//! beside beadie 0.3 (one broker thread, its only setting). Each compile
//! spins for a fixed time: 0 µs (the broker's own cost) and 20 µs (a small
//! compile). Median of 3 rounds.
//!
//! The interpreter thread never sleeps, so on a 2-core machine it competes
//! with the workers for the CPU, as an interpreter would.
//!
//! Run: `cargo bench -p kiln-std --bench throughput` (about 10 s; prints a
//! table). Figures of the last run are in BENCHMARKS.md.

use std::hint::black_box;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BEADS: usize = 2_000;
const ROUNDS: usize = 3;
const QUEUE: usize = 1_024;

extern "C" fn native() -> i64 {
    1
}

fn compile(cost: Duration) -> *mut () {
    let start = Instant::now();
    while start.elapsed() < cost {
        std::hint::spin_loop();
    }
    native as extern "C" fn() -> i64 as *mut ()
}

/// Calls every bead in turn until all returned code; the time from the
/// first call until then.
fn drive<T>(beads: &[T], call: impl Fn(&T) -> Option<*mut ()>) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut native = vec![false; beads.len()];
    let mut left = beads.len();
    let start = Instant::now();
    while left > 0 {
        for (bead, done) in beads.iter().zip(native.iter_mut()) {
            if !*done && call(bead).is_some() {
                *done = true;
                left -= 1;
            }
        }
        assert!(Instant::now() < deadline, "{left} beads never compiled");
    }
    start.elapsed()
}

fn kiln_round(workers: usize, cost: Duration) -> Duration {
    let config = kiln_std::BeadieConfig { workers, queue_capacity: QUEUE, ..kiln_std::BeadieConfig::default() };
    let kiln = kiln_std::Beadie::with_config(kiln_std::ThresholdPolicy::new(1), config);
    let beads: Vec<Arc<kiln_std::Bead>> = (0..BEADS).map(|_| kiln.register(ptr::null_mut(), None)).collect();
    drive(&beads, |bead| kiln.on_invoke(black_box(bead), move |_| compile(cost)))
}

fn beadie_round(cost: Duration) -> Duration {
    let seed = beadie::Beadie::with_policy_and_capacity(beadie::ThresholdPolicy::new(1), QUEUE);
    let beads: Vec<Arc<beadie::Bead>> = (0..BEADS).map(|_| seed.register(ptr::null_mut(), None)).collect();
    drive(&beads, |bead| seed.on_invoke(black_box(bead), move |_| compile(cost)))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo test --benches` lists; there is nothing to list.
    }
    println!("{BEADS} beads hot at once, one interpreter thread, median of {ROUNDS} rounds");
    println!("{:<22} {:>10} {:>16} {:>10} {:>16}", "broker", "compile 0", "promotions/s", "20 µs", "promotions/s");
    let costs = [Duration::ZERO, Duration::from_micros(20)];
    let row = |name: &str, times: [Duration; 2]| {
        print!("{name:<22}");
        for time in times {
            print!(" {:>8.1}ms {:>16.0}", time.as_secs_f64() * 1e3, BEADS as f64 / time.as_secs_f64());
        }
        println!();
    };
    for workers in [1, 2, 4] {
        let times = costs.map(|cost| median((0..ROUNDS).map(|_| kiln_round(workers, cost)).collect()));
        row(&format!("kiln-std, {workers} worker{}", if workers == 1 { "" } else { "s" }), times);
    }
    let times = costs.map(|cost| median((0..ROUNDS).map(|_| beadie_round(cost)).collect()));
    row("beadie 0.3 (1 thread)", times);
}
