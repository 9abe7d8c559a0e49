//! The paths a call takes when it gets no native code, and the OSR lookup:
//! kiln-std beside beadie 0.3 and beside their floors, in the same run.
//!
//! - **blacklisted**: `on_invoke` on a blacklisted bead;
//! - **waiting**: `on_invoke` on a bead whose compile is running (its
//!   closure holds the broker's only worker) and on one queued behind it;
//! - **osr_entry**: `Bead::osr_entry` with 1, 8 and 64 entries, the site in
//!   the middle; floor: a binary search of the same sorted slice;
//! - **cold**: `on_invoke` below the threshold (the counting path) on 1 and
//!   on 2 threads calling the same bead; floor: a Relaxed `fetch_add` on one
//!   shared counter.
//!
//! The compiled path is in `fast_path.rs`.
//!
//! Run: `cargo bench -p kiln-std --bench paths` (about 50 s). Figures of
//! the last run are in BENCHMARKS.md.

use std::hint::black_box;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

extern "C" fn native() -> i64 {
    1
}

fn native_ptr() -> *mut () {
    native as extern "C" fn() -> i64 as *mut ()
}

/// Holds the "running" compiles until the bench ends.
static RELEASE_COMPILES: AtomicBool = AtomicBool::new(false);

/// A compile that blocks its worker until [`RELEASE_COMPILES`].
fn blocking_compile() -> *mut () {
    while !RELEASE_COMPILES.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(1));
    }
    native_ptr()
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "the fixture never reached its state");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Times `iters` calls of `op` while a second thread calls `op` too.
fn against_second_thread<R>(iters: u64, op: impl Fn() -> R + Sync) -> Duration {
    let stop = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Release: pairs with the Acquire load below, so timing starts
            // once this thread runs.
            started.store(true, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..16 {
                    black_box(op());
                }
            }
        });
        // Acquire: pairs with the Release store above.
        while !started.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        for _ in 0..iters {
            black_box(op());
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        elapsed
    })
}

fn blacklisted(c: &mut Criterion) {
    let kiln = kiln_std::Beadie::with_policy(kiln_std::ThresholdPolicy::new(1_000));
    let kiln_bead = kiln.register(ptr::null_mut(), None);
    kiln_bead.blacklist();
    let seed = beadie::Beadie::with_policy(beadie::ThresholdPolicy::new(1_000));
    let seed_bead = seed.register(ptr::null_mut(), None);
    seed_bead.blacklist();
    assert!(kiln_bead.is_blacklisted() && seed_bead.is_blacklisted());
    // Past the threshold first: a blacklisted bead's calls above it are the
    // ones that would promote it.
    for _ in 0..2_000 {
        kiln.on_invoke(&kiln_bead, |_| native_ptr());
        seed.on_invoke(&seed_bead, |_| native_ptr());
    }
    let entry = AtomicPtr::new(ptr::null_mut::<()>());

    let mut group = c.benchmark_group("blacklisted");
    // The floor: the entry check every path starts with.
    group.bench_function("floor_acquire_load", |b| b.iter(|| black_box(&entry).load(Ordering::Acquire)));
    // The closures capture their function, as a real one does (boxing a
    // closure that captures nothing allocates nothing).
    let function = 7u64;
    group.bench_function("kiln_std", |b| {
        b.iter(|| {
            kiln.on_invoke(black_box(&kiln_bead), move |_| {
                black_box(function);
                native_ptr()
            })
        })
    });
    group.bench_function("beadie_0_3", |b| {
        b.iter(|| {
            seed.on_invoke(black_box(&seed_bead), move |_| {
                black_box(function);
                native_ptr()
            })
        })
    });
    group.finish();
    assert!(kiln_bead.compiled().is_none() && seed_bead.compiled().is_none());
}

fn waiting(c: &mut Criterion) {
    // One worker each (both defaults): bead `compiling` holds it, bead
    // `queued` waits behind it.
    let kiln = kiln_std::Beadie::with_policy(kiln_std::ThresholdPolicy::new(1));
    let kiln_compiling = kiln.register(ptr::null_mut(), None);
    let kiln_queued = kiln.register(ptr::null_mut(), None);
    let seed = beadie::Beadie::with_policy(beadie::ThresholdPolicy::new(1));
    let seed_compiling = seed.register(ptr::null_mut(), None);
    let seed_queued = seed.register(ptr::null_mut(), None);
    wait_until(|| {
        kiln.on_invoke(&kiln_compiling, |_| blocking_compile());
        kiln_compiling.state() == kiln_std::BeadState::Compiling
    });
    wait_until(|| {
        seed.on_invoke(&seed_compiling, |_| blocking_compile());
        seed_compiling.state() == beadie::BeadState::Compiling
    });
    wait_until(|| {
        kiln.on_invoke(&kiln_queued, |_| native_ptr());
        kiln_queued.state() == kiln_std::BeadState::Queued
    });
    wait_until(|| {
        seed.on_invoke(&seed_queued, |_| native_ptr());
        seed_queued.state() == beadie::BeadState::Queued
    });
    let counter = AtomicU64::new(0);

    let mut group = c.benchmark_group("waiting");
    group.bench_function("floor_relaxed_fetch_add", |b| b.iter(|| black_box(&counter).fetch_add(1, Ordering::Relaxed)));
    group.bench_function("kiln_std_compiling", |b| {
        b.iter(|| kiln.on_invoke(black_box(&kiln_compiling), |_| native_ptr()))
    });
    group.bench_function("beadie_0_3_compiling", |b| {
        b.iter(|| seed.on_invoke(black_box(&seed_compiling), |_| native_ptr()))
    });
    group.bench_function("kiln_std_queued", |b| b.iter(|| kiln.on_invoke(black_box(&kiln_queued), |_| native_ptr())));
    group.bench_function("beadie_0_3_queued", |b| b.iter(|| seed.on_invoke(black_box(&seed_queued), |_| native_ptr())));
    group.finish();
    // Still waiting: the figures above were the waiting path.
    assert_eq!(kiln_compiling.state(), kiln_std::BeadState::Compiling);
    assert_eq!(seed_compiling.state(), beadie::BeadState::Compiling);
    assert_eq!(kiln_queued.state(), kiln_std::BeadState::Queued);
    assert_eq!(seed_queued.state(), beadie::BeadState::Queued);
    RELEASE_COMPILES.store(true, Ordering::Relaxed);
}

fn osr_entry(c: &mut Criterion) {
    let kiln = kiln_std::Beadie::with_config(
        kiln_std::ThresholdPolicy::new(1_000),
        kiln_std::BeadieConfig { workers: 0, ..kiln_std::BeadieConfig::default() },
    );
    let seed = beadie::Beadie::with_policy(beadie::ThresholdPolicy::new(1_000));
    let mut group = c.benchmark_group("osr_entry");
    for entries in [1u64, 8, 64] {
        let sites: Vec<u64> = (0..entries).map(|index| index * 16).collect();
        let site = sites[sites.len() / 2];
        let kiln_bead = kiln.register(ptr::null_mut(), None);
        assert!(kiln_bead.eager_install(native_ptr()));
        let table = sites.iter().map(|&site| kiln_std::OsrEntry { site, code: native_ptr() }).collect();
        assert!(kiln_bead.swap_compiled_with_osr(native_ptr(), table).is_some());
        let seed_bead = seed.register(ptr::null_mut(), None);
        assert!(seed_bead.eager_install(native_ptr()));
        let table = sites.iter().map(|&site| beadie::OsrEntry { site, code: native_ptr() }).collect();
        assert!(seed_bead.swap_compiled_with_osr(native_ptr(), table).is_some());
        assert!(kiln_bead.osr_entry(site).is_some() && seed_bead.osr_entry(site).is_some());
        let floor: Box<[(u64, usize)]> = sites.iter().map(|&site| (site, native_ptr() as usize)).collect();

        group.bench_function(format!("floor_binary_search/{entries}"), |b| {
            b.iter(|| {
                let table = black_box(&floor);
                let site = black_box(site);
                table.binary_search_by_key(&site, |entry| entry.0).ok().map(|index| table[index].1)
            })
        });
        group.bench_function(format!("kiln_std/{entries}"), |b| {
            b.iter(|| black_box(&kiln_bead).osr_entry(black_box(site)))
        });
        group.bench_function(format!("beadie_0_3/{entries}"), |b| {
            b.iter(|| black_box(&seed_bead).osr_entry(black_box(site)))
        });
    }
    group.finish();
}

fn cold(c: &mut Criterion) {
    // A threshold never reached: every call counts. A fresh bead per sample
    // keeps the count far below it however many calls criterion makes.
    let kiln = kiln_std::Beadie::with_policy(kiln_std::ThresholdPolicy::new(u32::MAX));
    let seed = beadie::Beadie::with_policy(beadie::ThresholdPolicy::new(u32::MAX));
    let counter = AtomicU64::new(0);

    let mut group = c.benchmark_group("cold_1_thread");
    group.bench_function("floor_relaxed_fetch_add", |b| b.iter(|| black_box(&counter).fetch_add(1, Ordering::Relaxed)));
    group.bench_function("kiln_std", |b| {
        b.iter_custom(|iters| {
            let bead = kiln.register(ptr::null_mut(), None);
            let start = Instant::now();
            for _ in 0..iters {
                black_box(kiln.on_invoke(black_box(&bead), |_| native_ptr()));
            }
            let elapsed = start.elapsed();
            assert_eq!(bead.state(), kiln_std::BeadState::Interpreted);
            elapsed
        })
    });
    group.bench_function("beadie_0_3", |b| {
        b.iter_custom(|iters| {
            let bead = seed.register(ptr::null_mut(), None);
            let start = Instant::now();
            for _ in 0..iters {
                black_box(seed.on_invoke(black_box(&bead), |_| native_ptr()));
            }
            let elapsed = start.elapsed();
            assert_eq!(bead.state(), beadie::BeadState::Interpreted);
            elapsed
        })
    });
    group.finish();

    let mut group = c.benchmark_group("cold_2_threads");
    group.bench_function("floor_relaxed_fetch_add", |b| {
        b.iter_custom(|iters| against_second_thread(iters, || black_box(&counter).fetch_add(1, Ordering::Relaxed)))
    });
    group.bench_function("kiln_std", |b| {
        b.iter_custom(|iters| {
            let bead = kiln.register(ptr::null_mut(), None);
            let elapsed = against_second_thread(iters, || kiln.on_invoke(black_box(&bead), |_| native_ptr()));
            assert_eq!(bead.state(), kiln_std::BeadState::Interpreted);
            elapsed
        })
    });
    group.bench_function("beadie_0_3", |b| {
        b.iter_custom(|iters| {
            let bead = seed.register(ptr::null_mut(), None);
            let elapsed = against_second_thread(iters, || seed.on_invoke(black_box(&bead), |_| native_ptr()));
            assert_eq!(bead.state(), beadie::BeadState::Interpreted);
            elapsed
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the default run of this file stays under a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1_500))
        .sample_size(50);
    targets = blacklisted, waiting, osr_entry, cold
}
criterion_main!(benches);
