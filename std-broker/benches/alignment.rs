//! Does a cache-line-aligned bead pay for itself? Two threads each call
//! their own bead, the two beads heap neighbours, in three layouts:
//!
//! - **word**: kiln-std's `Arc<Bead>` allocation today, 96 B (the `Arc`'s
//!   two counts, kiln-core's 64-byte bead, the domain pointer, the chain
//!   link), word-aligned;
//! - **line**: the same with the bead aligned to 64 B, as before issue 14:
//!   a 192-byte allocation through the allocator's aligned path;
//! - **straddling** (the control): two beads placed so that one's
//!   countdown shares a cache line with the other's entry, the false
//!   sharing alignment exists to prevent. If the bench can see false
//!   sharing, this row is the slow one.
//!
//! Two workloads: both beads counting (each call stores its bead's
//! countdown), and one compiled (each call loads its entry) beside one
//! counting; the measured thread calls the first bead `iters` times while
//! a second thread calls the second one until told to stop. Calls go
//! through kiln-core's broker (`on_invoke`), the path kiln-std inlines.
//! The layouts are built here around kiln-core's bead, since kiln-std's own
//! bead has one layout.
//!
//! Run: `cargo bench -p kiln-std --bench alignment` (about 40 s). Figures
//! of the last run are in BENCHMARKS.md ("Bead alignment").

use std::hint::{black_box, spin_loop};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_core::{Bead, Broker, CodeHandle, Compiled, NoEvents, NoWake, ThresholdDeoptPolicy, ThresholdPolicy};

type CoreBroker<'a> = Broker<&'a Bead, ThresholdPolicy, ThresholdDeoptPolicy, NoWake, NoEvents>;

/// kiln-std's `Arc<Bead>` allocation today.
#[repr(C)]
struct Word {
    _counts: [usize; 2],
    bead: Bead,
    _domain: usize,
    _link: usize,
}

/// The same with the bead on a cache line of its own.
#[repr(C)]
struct Line {
    _counts: [usize; 2],
    inner: LineInner,
}

#[repr(C, align(64))]
struct LineInner {
    bead: Bead,
    _domain: usize,
    _link: usize,
}

/// The control: `first`'s countdown (at 64) shares the line 64..128 with
/// `second`'s entry (at 120).
#[repr(C, align(64))]
struct Straddling {
    _pad: [u8; 56],
    first: Bead,
    second: Bead,
}

const _: () = assert!(size_of::<Word>() == 96 && size_of::<Line>() == 192);

extern "C" fn native() {}

fn native_ptr() -> *mut () {
    native as extern "C" fn() as *mut ()
}

/// Two neighbouring heap objects out of a batch (the closest pair), and
/// their distance in bytes.
fn neighbours<T>(make: impl Fn() -> T) -> (Vec<Box<T>>, usize, usize, usize) {
    let batch: Vec<Box<T>> = (0..256).map(|_| Box::new(make())).collect();
    let address = |i: usize| ptr::from_ref(&*batch[i]).addr();
    let (i, distance) =
        (0..batch.len() - 1).map(|i| (i, address(i).abs_diff(address(i + 1)))).min_by_key(|&(_, d)| d).unwrap();
    (batch, i, i + 1, distance)
}

/// A broker that never promotes by itself, with `bead` counting.
fn counting(bead: &Bead) -> CoreBroker<'_> {
    let broker = Broker::new(ThresholdPolicy::new(u32::MAX), ThresholdDeoptPolicy::default(), NoWake, NoEvents);
    assert_eq!(broker.on_invoke(&bead), None);
    broker
}

/// A broker with final-tier code installed on `bead`: the one-load path.
fn compiled(bead: &Bead) -> CoreBroker<'_> {
    let broker = Broker::new(ThresholdPolicy::new(1_000), ThresholdDeoptPolicy::default(), NoWake, NoEvents);
    let code = Compiled::new(native_ptr(), CodeHandle::from_raw(1).unwrap()).unwrap();
    broker.swap_compiled(&bead, code, 0).unwrap();
    assert_eq!(broker.on_invoke(&bead).map(NonNull::as_ptr), Some(native_ptr()));
    broker
}

/// Times `iters` calls of `measured` while a second thread runs `other`.
fn timed_beside(iters: u64, measured: impl Fn() + Sync, other: impl Fn() + Sync) -> Duration {
    const ROUND: u64 = 1_024;
    let (stop, rounds) = (AtomicBool::new(false), AtomicU64::new(0));
    thread::scope(|scope| {
        scope.spawn(|| {
            // Relaxed: a stop flag and a progress gauge; they order no data.
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..ROUND {
                    other();
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        while rounds.load(Ordering::Relaxed) == 0 {
            spin_loop();
        }
        let start = Instant::now();
        for _ in 0..iters {
            measured();
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        elapsed
    })
}

/// One call of `bead`, read through `black_box` as an interpreter reads
/// its function object.
fn call<'a>(broker: &CoreBroker<'a>, bead: &'a Bead) {
    let bead: &&Bead = black_box(&bead);
    black_box(broker.on_invoke(bead));
}

/// Benches the pair `(first, second)` under both workloads.
fn pair<'a>(c: &mut Criterion, layout: &str, first: &'a Bead, second: &'a Bead) {
    let (a, b) = (counting(first), counting(second));
    c.benchmark_group("neighbours_both_counting").bench_function(layout, |bench| {
        bench.iter_custom(|iters| timed_beside(iters, || call(&a, first), || call(&b, second)))
    });
    drop(a);
    let a = compiled(first);
    c.benchmark_group("neighbours_compiled_beside_counting").bench_function(layout, |bench| {
        bench.iter_custom(|iters| timed_beside(iters, || call(&a, first), || call(&b, second)))
    });
}

fn alignment(c: &mut Criterion) {
    let make = || Bead::new(ptr::null_mut());
    let (words, i, j, word_stride) = neighbours(|| Word { _counts: [0; 2], bead: make(), _domain: 0, _link: 0 });
    let (lines, k, l, line_stride) =
        neighbours(|| Line { _counts: [0; 2], inner: LineInner { bead: make(), _domain: 0, _link: 0 } });
    let straddling = Box::new(Straddling { _pad: [0; 56], first: make(), second: make() });
    eprintln!(
        "neighbours {word_stride} B apart (word), {line_stride} B apart (line); straddling: first bead at line offset {}",
        ptr::from_ref(&straddling.first).addr() % 64
    );
    pair(c, "word", &words[i].bead, &words[j].bead);
    pair(c, "line", &lines[k].inner.bead, &lines[l].inner.bead);
    pair(c, "straddling", &straddling.first, &straddling.second);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = alignment
}
criterion_main!(benches);
