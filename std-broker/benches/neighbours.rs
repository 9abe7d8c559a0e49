//! False sharing between neighbouring beads: two threads, each calling its
//! own bead, with the two beads registered one after the other (heap
//! neighbours) or 4,096 registrations apart. Two workloads: both beads
//! counting (each call writes its bead's countdown), and one bead compiled
//! (each call reads its entry) beside one counting. If neighbours share a
//! cache line where one writes, the neighbour rows are slower than the
//! far-apart rows.
//!
//! Run: `cargo bench -p kiln-std --bench neighbours` (a few seconds; prints
//! ns per call, median of 7 rounds). This measurement decided the bead's
//! alignment (see ARCHITECTURE.md, "Memory per bead").

use std::hint::black_box;
use std::ptr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kiln_std::{Bead, Beadie, BeadieConfig, ThresholdPolicy};

const CALLS: u64 = 20_000_000;
const ROUNDS: usize = 7;

extern "C" fn native() -> i64 {
    1
}

fn native_ptr() -> *mut () {
    native as extern "C" fn() -> i64 as *mut ()
}

/// A broker that never promotes by itself (no workers, a huge threshold).
fn counting_beadie() -> Arc<Beadie> {
    Arc::new(Beadie::with_config(
        ThresholdPolicy::new(u32::MAX / 2),
        BeadieConfig { workers: 0, ..BeadieConfig::default() },
    ))
}

/// Two beads `gap` registrations apart (0: heap neighbours).
fn pair(beadie: &Beadie, gap: usize) -> (Arc<Bead>, Arc<Bead>, Vec<Arc<Bead>>) {
    let first = beadie.register(ptr::null_mut(), None);
    let spacers = (0..gap).map(|_| beadie.register(ptr::null_mut(), None)).collect();
    let second = beadie.register(ptr::null_mut(), None);
    (first, second, spacers)
}

/// Nanoseconds per call with two threads calling one bead each at once.
fn two_threads(beadie: &Arc<Beadie>, beads: [Arc<Bead>; 2]) -> f64 {
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = beads
        .into_iter()
        .map(|bead| {
            let (beadie, barrier) = (Arc::clone(beadie), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..CALLS {
                    black_box(beadie.on_invoke(black_box(&bead), |_| native_ptr()));
                }
                start.elapsed()
            })
        })
        .collect();
    let slowest = threads.into_iter().map(|t| t.join().expect("caller panicked")).max().unwrap_or(Duration::ZERO);
    slowest.as_nanos() as f64 / CALLS as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn round(gap: usize, one_compiled: bool) -> f64 {
    let beadie = counting_beadie();
    let (first, second, _spacers) = pair(&beadie, gap);
    if one_compiled {
        assert!(first.eager_install(native_ptr()));
    }
    two_threads(&beadie, [first, second])
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    println!(
        "two threads, one bead each, ns per call (median of {ROUNDS}; size_of::<Bead>() = {} B, align {} B)",
        size_of::<Bead>(),
        align_of::<Bead>()
    );
    for (what, one_compiled) in [("both counting", false), ("compiled beside counting", true)] {
        // Alternating, so load from elsewhere falls on both.
        let (mut near, mut far) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            near.push(round(0, one_compiled));
            far.push(round(4_096, one_compiled));
        }
        println!("{what:<26} neighbours {:6.2}   4,096 apart {:6.2}", median(near), median(far));
    }
}
