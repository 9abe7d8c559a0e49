//! kiln-std's compiled fast path beside kiln-core's raw path and beadie
//! 0.3's, in the same run, on one thread and with a second thread calling
//! the same bead. Goal: kiln-std ≤ 1.1× the raw path.
//!
//! Run: `cargo bench -p kiln-std --bench fast_path`.
//!
//! Measured (criterion medians, 2-vCPU EPYC VM, rustc 1.95; ±10 % drift on
//! this shared machine):
//!
//! | fast path (compiled)            | 1 thread | 2 threads |
//! |---|---|---|
//! | kiln-core raw, `Option<NonNull>`  | 0.557 ns | 0.649 ns |
//! | kiln-core raw, `Option<*mut ()>`  | 0.839 ns | – |
//! | kiln-std `Beadie::on_invoke`      | 0.830 ns (0.99× raw, same signature) | 0.823 ns |
//! | kiln-std `BackendAdapter` (`BoundBead`) | 0.818 ns (0.98×) | – |
//! | kiln-std `TieredAdapter`, top tier | 0.823 ns (0.98×) | – |
//! | beadie 0.3 `Beadie`               | 0.821 ns | 0.863 ns |
//! | beadie 0.3 `BoundBead`            | 3.54 ns | – |
//! | beadie 0.3 `TieredAdapter`        | 4.70 ns | – |
//!
//! The seed API returns `Option<*mut ()>` (two words, no niche), which the
//! harness pays for on every iteration: compare kiln-std with the raw path
//! returning the same type.

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

/// A backend whose "compile" hands out `native`.
struct NativeBackend;

impl kiln_std::JitBackend for NativeBackend {
    type FunctionDef = ();
    type Error = std::convert::Infallible;
    fn compile(&self, _bead: &Arc<kiln_std::Bead>, _def: ()) -> Result<*mut (), Self::Error> {
        Ok(native_ptr())
    }
}

impl beadie::JitBackend for NativeBackend {
    type FunctionDef = ();
    type Error = std::convert::Infallible;
    fn compile(&self, _bead: &Arc<beadie::Bead>, _def: ()) -> Result<*mut (), Self::Error> {
        Ok(native_ptr())
    }
}

/// Compiled beads behind every front door: kiln-core raw, kiln-std's
/// `Beadie`, `BoundBead` and two-tier `TieredAdapter` (at its top tier), and
/// beadie 0.3's same three.
struct Fixture {
    raw_bead: &'static kiln_core::Bead,
    raw: RawBroker<'static>,
    kiln: kiln_std::Beadie,
    kiln_bead: Arc<kiln_std::Bead>,
    kiln_adapter: kiln_std::BackendAdapter<NativeBackend>,
    kiln_bound: kiln_std::BoundBead<NativeBackend>,
    kiln_tiered: kiln_std::TieredAdapter,
    kiln_tiered_bound: kiln_std::TieredBound,
    beadie: beadie::Beadie,
    beadie_bead: Arc<beadie::Bead>,
    beadie_adapter: beadie::BackendAdapter<NativeBackend>,
    beadie_bound: beadie::BoundBead<NativeBackend>,
    beadie_tiered: beadie::TieredAdapter,
    beadie_tiered_bound: beadie::TieredBound,
}

fn two_tiers_kiln() -> kiln_std::TieredAdapter {
    kiln_std::TieredAdapter::new(vec![
        Box::new(kiln_std::ThresholdPolicy::new(1)) as Box<dyn kiln_std::HotnessPolicy>,
        Box::new(kiln_std::ThresholdPolicy::new(3)),
    ])
}

fn two_tiers_beadie() -> beadie::TieredAdapter {
    beadie::TieredAdapter::new(vec![
        Box::new(beadie::ThresholdPolicy::new(1)) as Box<dyn beadie::HotnessPolicy>,
        Box::new(beadie::ThresholdPolicy::new(3)),
    ])
}

impl Fixture {
    fn new() -> &'static Self {
        let raw_bead: &'static kiln_core::Bead = Box::leak(Box::new(kiln_core::Bead::new(ptr::null_mut())));
        let raw = kiln_core::Broker::new(
            kiln_core::ThresholdPolicy::new(1),
            kiln_core::ThresholdDeoptPolicy::default(),
            kiln_core::NoWake,
            kiln_core::NoEvents,
        );
        let kiln = kiln_std::Beadie::with_policy(kiln_std::ThresholdPolicy::new(1));
        let kiln_bead = kiln.register(ptr::null_mut(), None);
        let beadie = beadie::Beadie::with_policy(beadie::ThresholdPolicy::new(1));
        let beadie_bead = beadie.register(ptr::null_mut(), None);
        let kiln_adapter = kiln_std::BackendAdapter::with_policy(NativeBackend, kiln_std::ThresholdPolicy::new(1));
        let kiln_bound = kiln_adapter.register(ptr::null_mut(), None);
        let kiln_tiered = two_tiers_kiln();
        let kiln_tiered_bound = kiln_tiered.register(ptr::null_mut(), None);
        let beadie_adapter = beadie::BackendAdapter::with_policy(NativeBackend, beadie::ThresholdPolicy::new(1));
        let beadie_bound = beadie_adapter.register(ptr::null_mut(), None);
        let beadie_tiered = two_tiers_beadie();
        let beadie_tiered_bound = beadie_tiered.register(ptr::null_mut(), None);
        let fixture: &'static Fixture = Box::leak(Box::new(Fixture {
            raw_bead,
            raw,
            kiln,
            kiln_bead,
            kiln_adapter,
            kiln_bound,
            kiln_tiered,
            kiln_tiered_bound,
            beadie,
            beadie_bead,
            beadie_adapter,
            beadie_bound,
            beadie_tiered,
            beadie_tiered_bound,
        }));
        let code = kiln_core::Compiled::new(native_ptr(), kiln_core::CodeHandle::from_raw(1).unwrap()).unwrap();
        fixture.raw.swap_compiled(&fixture.raw_bead, code, 0).unwrap();
        for _ in 0..3 {
            fixture.kiln.on_invoke(&fixture.kiln_bead, |_| native_ptr());
            fixture.beadie.on_invoke(&fixture.beadie_bead, |_| native_ptr());
        }
        wait_compiled(|| fixture.kiln_bead.compiled().is_some() && fixture.beadie_bead.compiled().is_some());
        for _ in 0..3 {
            fixture.kiln_adapter.on_invoke(&fixture.kiln_bound, |_| ());
            fixture.beadie_adapter.on_invoke(&fixture.beadie_bound, |_| ());
        }
        wait_compiled(|| {
            fixture.kiln_bound.bead().compiled().is_some() && fixture.beadie_bound.bead().compiled().is_some()
        });
        // Climb both tiered adapters to their top tier (the one-load path).
        wait_compiled(|| {
            fixture.kiln_tiered.on_invoke(&fixture.kiln_tiered_bound, |_, _| native_ptr());
            fixture.beadie_tiered.on_invoke(&fixture.beadie_tiered_bound, |_, _| native_ptr());
            fixture.kiln_tiered_bound.bead().kiln_bead().fast_entry().is_some()
                && fixture.beadie_tiered_bound.bead().invocation_count() > 100
        });
        assert!(fixture.raw_call().is_some() && fixture.kiln_call().is_some() && fixture.beadie_call().is_some());
        assert!(fixture.kiln_bound_call().is_some() && fixture.beadie_bound_call().is_some());
        assert!(fixture.kiln_tiered_call().is_some() && fixture.beadie_tiered_call().is_some());
        fixture
    }

    #[inline(always)]
    fn kiln_bound_call(&self) -> Option<*mut ()> {
        self.kiln_adapter.on_invoke(black_box(&self.kiln_bound), |_| ())
    }

    #[inline(always)]
    fn beadie_bound_call(&self) -> Option<*mut ()> {
        self.beadie_adapter.on_invoke(black_box(&self.beadie_bound), |_| ())
    }

    #[inline(always)]
    fn kiln_tiered_call(&self) -> Option<*mut ()> {
        self.kiln_tiered.on_invoke(black_box(&self.kiln_tiered_bound), |_, _| native_ptr())
    }

    #[inline(always)]
    fn beadie_tiered_call(&self) -> Option<*mut ()> {
        self.beadie_tiered.on_invoke(black_box(&self.beadie_tiered_bound), |_, _| native_ptr())
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
    // The same raw call returning the seed API's `Option<*mut ()>` (two
    // words, no niche), so the harness handles the same result as below.
    group.bench_function("kiln_core_raw_as_ptr", |b| b.iter(|| fixture.raw_call().map(NonNull::as_ptr)));
    group.bench_function("kiln_std_beadie", |b| b.iter(|| fixture.kiln_call()));
    group.bench_function("beadie_0_3", |b| b.iter(|| fixture.beadie_call()));
    group.bench_function("kiln_std_bound_bead", |b| b.iter(|| fixture.kiln_bound_call()));
    group.bench_function("beadie_0_3_bound_bead", |b| b.iter(|| fixture.beadie_bound_call()));
    group.bench_function("kiln_std_tiered", |b| b.iter(|| fixture.kiln_tiered_call()));
    group.bench_function("beadie_0_3_tiered", |b| b.iter(|| fixture.beadie_tiered_call()));
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
