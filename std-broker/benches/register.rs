//! Registration: the cost of `Beadie::register` per bead, kiln-std beside
//! beadie 0.3 and beside two floors (kiln-core's 64-byte-aligned bead in a
//! `Box`, the least a heap-allocated bead can cost, and 64 unaligned bytes
//! in a `Box`, which shows what the alignment costs), then 1,000,000 beads registered and
//! dropped (median of 3 rounds each; goal: ≤ 100 ms to register them).
//!
//! Run: `cargo bench -p kiln-std --bench register` (about 40 s). The million
//! runs only under `cargo bench` (not `cargo test --benches`). Heap per bead
//! is `memory.rs`; instructions per bead `ci/callgrind_std.sh`.

use std::hint::black_box;
use std::ptr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};

const MILLION: usize = 1_000_000;
const ROUNDS: usize = 3;

/// Times `iters` registrations into a vector reserved beforehand, on a
/// fresh broker each sample; building and dropping are not timed.
fn timed_registrations<B, T>(iters: u64, broker: impl Fn() -> B, register: impl Fn(&B) -> T) -> Duration {
    let broker = broker();
    let mut beads = Vec::with_capacity(iters as usize);
    let start = Instant::now();
    for _ in 0..iters {
        beads.push(register(&broker));
    }
    let elapsed = start.elapsed();
    black_box(&beads);
    drop(beads);
    drop(broker);
    elapsed
}

fn register(c: &mut Criterion) {
    let mut group = c.benchmark_group("register");
    group.bench_function("floor_boxed_core_bead", |b| {
        b.iter_custom(|iters| {
            timed_registrations(iters, || (), |()| Box::new(kiln_core::Bead::new(black_box(ptr::null_mut()))))
        })
    });
    // The same 64 bytes at 8-byte alignment: what the cache-line alignment
    // of the bead costs the allocator.
    group.bench_function("floor_boxed_64_bytes_unaligned", |b| {
        b.iter_custom(|iters| timed_registrations(iters, || (), |()| Box::new(black_box([0u64; 8]))))
    });
    group.bench_function("kiln_std", |b| {
        b.iter_custom(|iters| {
            timed_registrations(iters, kiln_std::Beadie::new, |beadie| {
                beadie.register(black_box(ptr::null_mut()), None)
            })
        })
    });
    group.bench_function("beadie_0_3", |b| {
        b.iter_custom(|iters| {
            timed_registrations(iters, beadie::Beadie::new, |beadie| beadie.register(black_box(ptr::null_mut()), None))
        })
    });
    group.finish();
}

/// Registers a million beads on a fresh broker, then drops the handles and
/// the broker (whose chain frees the beads): (register, drop) times.
fn million_once<B, T>(broker: impl Fn() -> B, register: impl Fn(&B) -> T) -> (Duration, Duration) {
    let broker = broker();
    let mut beads = Vec::with_capacity(MILLION);
    let start = Instant::now();
    for _ in 0..MILLION {
        beads.push(register(&broker));
    }
    let registered = start.elapsed();
    let start = Instant::now();
    drop(beads);
    drop(broker);
    (registered, start.elapsed())
}

/// Runs `f` on a thread with a 1 GiB stack: beadie 0.3's chain drops its
/// beads recursively, and a million of them overflow an 8 MiB main stack.
fn on_deep_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(f)
        .expect("a thread with a deep stack")
        .join()
        .expect("the million-bead round panicked")
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn million() {
    println!("1,000,000 beads through Beadie::register, median of {ROUNDS} rounds (goal: register <= 100 ms)");
    let mut kiln = Vec::new();
    let mut seed = Vec::new();
    // Alternating, so load from elsewhere falls on both.
    for _ in 0..ROUNDS {
        kiln.push(on_deep_stack(|| {
            million_once(kiln_std::Beadie::new, |beadie| beadie.register(ptr::null_mut(), None))
        }));
        seed.push(on_deep_stack(|| million_once(beadie::Beadie::new, |beadie| beadie.register(ptr::null_mut(), None))));
    }
    for (name, rounds) in [("kiln-std", kiln), ("beadie 0.3", seed)] {
        let register = median(rounds.iter().map(|round| round.0).collect());
        let drop = median(rounds.iter().map(|round| round.1).collect());
        println!(
            "{name:<11} register {:7.1} ms ({:5.1} ns/bead)   drop {:7.1} ms",
            register.as_secs_f64() * 1e3,
            register.as_nanos() as f64 / MILLION as f64,
            drop.as_secs_f64() * 1e3
        );
    }
    println!();
}

criterion_group! {
    name = benches;
    // Short runs: the whole file stays under a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = register
}

fn main() {
    // Criterion's samples drop beadie brokers holding up to a million beads
    // too: everything runs on the deep stack.
    on_deep_stack(|| {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not,
        // and runs each criterion bench once as a test.
        if std::env::args().any(|arg| arg == "--bench") {
            million();
        }
        benches();
        Criterion::default().configure_from_args().final_summary();
    });
}
