//! kiln-std's compiled fast path beside kiln-core's raw path and beadie
//! 0.3's, in the same run, on one thread and with a second thread calling
//! the same bead. Goal: kiln-std ≤ 1.1× the raw path.
//!
//! Run: `cargo bench -p kiln-std --bench fast_path`. Figures: see the
//! closing note of the kiln-std issue and README "Performance".

use std::hint::black_box;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

extern "C" fn native() -> i64 {
    1
}

fn native_ptr() -> *mut () {
    native as extern "C" fn() -> i64 as *mut ()
}

type RawBroker<'a> =
    kiln_core::Broker<&'a kiln_core::Bead, kiln_core::ThresholdPolicy, kiln_core::ThresholdDeoptPolicy>;

fn wait_compiled(mut compiled: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !compiled() {
        assert!(Instant::now() < deadline, "never compiled");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Three compiled beads: kiln-core raw, kiln-std, beadie 0.3.
struct Fixture {
    raw_bead: &'static kiln_core::Bead,
    raw: RawBroker<'static>,
    kiln: kiln_std::Beadie,
    kiln_bead: Arc<kiln_std::Bead>,
    beadie: beadie::Beadie,
    beadie_bead: Arc<beadie::Bead>,
}

impl Fixture {
    fn new() -> &'static Self {
        let raw_bead: &'static kiln_core::Bead = Box::leak(Box::new(kiln_core::Bead::new(ptr::null_mut())));
        let raw = kiln_core::Broker::new(
            kiln_core::ThresholdPolicy::new(1),
            kiln_core::ThresholdDeoptPolicy::default(),
            kiln_core::NoPump,
            kiln_core::NoEvents,
        );
        let kiln = kiln_std::Beadie::with_policy(kiln_std::ThresholdPolicy::new(1));
        let kiln_bead = kiln.register(ptr::null_mut(), None);
        let beadie = beadie::Beadie::with_policy(beadie::ThresholdPolicy::new(1));
        let beadie_bead = beadie.register(ptr::null_mut(), None);
        let fixture: &'static Fixture =
            Box::leak(Box::new(Fixture { raw_bead, raw, kiln, kiln_bead, beadie, beadie_bead }));
        let code = kiln_core::Compiled::new(native_ptr(), kiln_core::CodeHandle::from_raw(1).unwrap()).unwrap();
        fixture.raw.swap_compiled(&fixture.raw_bead, code, 0).unwrap();
        for _ in 0..3 {
            fixture.kiln.on_invoke(&fixture.kiln_bead, |_| native_ptr());
            fixture.beadie.on_invoke(&fixture.beadie_bead, |_| native_ptr());
        }
        wait_compiled(|| fixture.kiln_bead.compiled().is_some() && fixture.beadie_bead.compiled().is_some());
        assert!(fixture.raw_call().is_some() && fixture.kiln_call().is_some() && fixture.beadie_call().is_some());
        fixture
    }

    #[inline(always)]
    fn raw_call(&'static self) -> Option<NonNull<()>> {
        let bead: &&'static kiln_core::Bead = black_box(&self.raw_bead);
        self.raw.on_invoke(bead)
    }

    #[inline(always)]
    fn kiln_call(&self) -> Option<*mut ()> {
        self.kiln.on_invoke(black_box(&self.kiln_bead), |_| native_ptr())
    }

    #[inline(always)]
    fn beadie_call(&self) -> Option<*mut ()> {
        self.beadie.on_invoke(black_box(&self.beadie_bead), |_| native_ptr())
    }
}

/// Times `iters` calls of `op` while a second thread calls `op` too.
fn against_second_thread<R>(iters: u64, op: impl Fn() -> R + Sync) -> Duration {
    let stop = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            started.store(true, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..16 {
                    black_box(op());
                }
            }
        });
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

fn fast_path(c: &mut Criterion) {
    let fixture = Fixture::new();
    let mut group = c.benchmark_group("fast_path");
    group.bench_function("kiln_core_raw", |b| b.iter(|| fixture.raw_call()));
    group.bench_function("kiln_std_beadie", |b| b.iter(|| fixture.kiln_call()));
    group.bench_function("beadie_0_3", |b| b.iter(|| fixture.beadie_call()));
    group.finish();

    let mut group = c.benchmark_group("fast_path_2_threads");
    group.bench_function("kiln_core_raw", |b| {
        b.iter_custom(|iters| against_second_thread(iters, || fixture.raw_call()))
    });
    group.bench_function("kiln_std_beadie", |b| {
        b.iter_custom(|iters| against_second_thread(iters, || fixture.kiln_call()))
    });
    group.bench_function("beadie_0_3", |b| {
        b.iter_custom(|iters| against_second_thread(iters, || fixture.beadie_call()))
    });
    group.finish();
}

criterion_group!(benches, fast_path);
criterion_main!(benches);
