//! Heap per registered bead and allocations per call, kiln-std beside
//! beadie 0.3 in the same binary, counted by a global allocator that counts
//! every thread's allocations (so a broker thread's share is included).
//!
//! Run: `cargo bench -p kiln-std --bench memory` (a few seconds; prints a
//! table). The guarded kiln-only figure is `std-broker/tests/allocations.rs`.
//!
//! Rows: a bead registered through `Beadie`, `BackendAdapter` (`BoundBead`)
//! and a two-tier `TieredAdapter`; a `Beadie` bead after its compile was
//! installed, without and with a 4-entry OSR table; and 1,000,000 beads
//! through `Beadie::register`. Each is live heap bytes after the step, net of
//! the vector holding the handles (reserved before counting), divided by the
//! number of beads; the chain's slot is included. Per-call rows use a
//! compile closure that captures its function's id, as a real one would. The floor is kiln-core's
//! bead (`size_of::<kiln_core::Bead>()`), the part no layer can shed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct CountingAllocator;

// Relaxed throughout: the counters are read after the counted work was
// joined or observed complete, and exact interleaving does not matter.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting touches only two static atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations and net live bytes (all threads) during `f`.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64, i64) {
    let (allocations, bytes) = (ALLOCATIONS.load(Ordering::Relaxed), LIVE_BYTES.load(Ordering::Relaxed));
    let result = f();
    (result, ALLOCATIONS.load(Ordering::Relaxed) - allocations, LIVE_BYTES.load(Ordering::Relaxed) - bytes)
}

extern "C" fn native() -> i64 {
    1
}

fn native_ptr() -> *mut () {
    native as extern "C" fn() -> i64 as *mut ()
}

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

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "the beads never compiled");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A power of two, so the chain's vector is exactly full: its growth slack
/// does not count against the beads.
const BEADS: usize = 4_096;
const OSR_ENTRIES: u64 = 4;

/// Live heap bytes per bead after `register` made `count` beads into a
/// vector reserved beforehand.
fn per_bead<T>(count: usize, mut register: impl FnMut() -> T) -> (f64, f64, Vec<T>) {
    let mut beads = Vec::with_capacity(count);
    let ((), allocations, bytes) = counted(|| {
        for _ in 0..count {
            beads.push(register());
        }
    });
    (bytes as f64 / count as f64, allocations as f64 / count as f64, beads)
}

struct Row {
    what: &'static str,
    kiln: (f64, f64),
    beadie: (f64, f64),
}

fn registered() -> Vec<Row> {
    let mut rows = Vec::new();
    let kiln = kiln_std::Beadie::new();
    let seed = beadie::Beadie::new();
    let (kb, ka, _k) = per_bead(BEADS, || kiln.register(ptr::null_mut(), None));
    let (bb, ba, _b) = per_bead(BEADS, || seed.register(ptr::null_mut(), None));
    rows.push(Row { what: "Beadie::register", kiln: (kb, ka), beadie: (bb, ba) });

    let kiln = kiln_std::BackendAdapter::new(NativeBackend);
    let seed = beadie::BackendAdapter::new(NativeBackend);
    let (kb, ka, _k) = per_bead(BEADS, || kiln.register(ptr::null_mut(), None));
    let (bb, ba, _b) = per_bead(BEADS, || seed.register(ptr::null_mut(), None));
    rows.push(Row { what: "BackendAdapter::register (BoundBead)", kiln: (kb, ka), beadie: (bb, ba) });

    let kiln = kiln_std::TieredAdapter::new(vec![
        Box::new(kiln_std::ThresholdPolicy::new(1)) as Box<dyn kiln_std::HotnessPolicy>,
        Box::new(kiln_std::ThresholdPolicy::new(3)),
    ]);
    let seed = beadie::TieredAdapter::new(vec![
        Box::new(beadie::ThresholdPolicy::new(1)) as Box<dyn beadie::HotnessPolicy>,
        Box::new(beadie::ThresholdPolicy::new(3)),
    ]);
    let (kb, ka, _k) = per_bead(BEADS, || kiln.register(ptr::null_mut(), None));
    let (bb, ba, _b) = per_bead(BEADS, || seed.register(ptr::null_mut(), None));
    rows.push(Row { what: "TieredAdapter::register (2 tiers)", kiln: (kb, ka), beadie: (bb, ba) });
    rows
}

fn osr_table() -> Vec<(u64, *mut ())> {
    (0..OSR_ENTRIES).map(|site| (site * 16, native_ptr())).collect()
}

/// Registers [`BEADS`] beads, compiles each (promotion at the first call,
/// with or without an OSR table), and returns live bytes per bead once all
/// are compiled.
fn compiled(osr: bool) -> ((f64, f64), (f64, f64)) {
    let policy = || kiln_std::ThresholdPolicy::new(1);
    let config = kiln_std::BeadieConfig { queue_capacity: 1_024, ..kiln_std::BeadieConfig::default() };
    let kiln = kiln_std::Beadie::with_config(policy(), config);
    let mut beads = Vec::with_capacity(BEADS);
    let ((), kiln_allocations, kiln_bytes) = counted(|| {
        for _ in 0..BEADS {
            beads.push(kiln.register(ptr::null_mut(), None));
        }
        wait_until(|| {
            let mut all = true;
            for bead in &beads {
                let entry = if osr {
                    kiln.on_invoke_osr(bead, |_| kiln_std::OsrCompileResult {
                        entry: native_ptr(),
                        osr: osr_table().into_iter().map(|(site, code)| kiln_std::OsrEntry { site, code }).collect(),
                    })
                } else {
                    kiln.on_invoke(bead, |_| native_ptr())
                };
                all &= entry.is_some();
            }
            all
        });
    });
    let seed = beadie::Beadie::with_policy_and_capacity(beadie::ThresholdPolicy::new(1), 1_024);
    let mut seed_beads = Vec::with_capacity(BEADS);
    let ((), seed_allocations, seed_bytes) = counted(|| {
        for _ in 0..BEADS {
            seed_beads.push(seed.register(ptr::null_mut(), None));
        }
        wait_until(|| {
            let mut all = true;
            for bead in &seed_beads {
                let entry = if osr {
                    seed.on_invoke_osr(bead, |_| beadie::OsrCompileResult {
                        entry: native_ptr(),
                        osr: osr_table().into_iter().map(|(site, code)| beadie::OsrEntry { site, code }).collect(),
                    })
                } else {
                    seed.on_invoke(bead, |_| native_ptr())
                };
                all &= entry.is_some();
            }
            all
        });
    });
    if osr {
        assert!(beads[0].osr_entry(16).is_some() && seed_beads[0].osr_entry(16).is_some());
    }
    let n = BEADS as f64;
    ((kiln_bytes as f64 / n, kiln_allocations as f64 / n), (seed_bytes as f64 / n, seed_allocations as f64 / n))
}

/// Live heap and times for a million beads registered on `broker`, then
/// dropped with it.
fn million<B, T>(name: &str, broker: B, register: impl Fn(&B) -> T) {
    const MILLION: usize = 1_000_000;
    let mut beads = Vec::with_capacity(MILLION);
    let start = Instant::now();
    let ((), allocations, bytes) = counted(|| {
        for _ in 0..MILLION {
            beads.push(register(&broker));
        }
    });
    let register_time = start.elapsed();
    let start = Instant::now();
    drop(beads);
    drop(broker);
    let drop_time = start.elapsed();
    println!(
        "{name:<11} 1,000,000 beads: live heap {:7.1} MB ({:6.1} B/bead, {:.2} allocations/bead); \
         register {:7.1} ms, drop {:7.1} ms (counting allocator on: see register.rs for times)",
        bytes as f64 / 1e6,
        bytes as f64 / MILLION as f64,
        allocations as f64 / MILLION as f64,
        register_time.as_secs_f64() * 1e3,
        drop_time.as_secs_f64() * 1e3,
    );
}

/// The function a compile closure is for: closures capture it, as a real
/// one captures its function (a closure capturing nothing is zero-sized,
/// and boxing it allocates nothing).
const FUNCTION: u64 = 7;

/// A compile closure for `function`.
fn compile_function<T>(function: u64) -> impl FnOnce(&T) -> *mut () + Send + 'static {
    move |_| {
        black_box(function);
        native_ptr()
    }
}

/// Allocations per call on the paths that return no code.
fn per_call() {
    const CALLS: u64 = 10_000;
    let calls = |f: &dyn Fn()| {
        let ((), allocations, _) = counted(|| (0..CALLS).for_each(|_| f()));
        allocations as f64 / CALLS as f64
    };
    let kiln = kiln_std::Beadie::with_config(
        kiln_std::ThresholdPolicy::new(1_000),
        kiln_std::BeadieConfig { workers: 0, ..kiln_std::BeadieConfig::default() },
    );
    let seed = beadie::Beadie::with_policy(beadie::ThresholdPolicy::new(1_000));
    let (kiln_blacklisted, seed_blacklisted) =
        (kiln.register(ptr::null_mut(), None), seed.register(ptr::null_mut(), None));
    kiln_blacklisted.blacklist();
    seed_blacklisted.blacklist();
    // Past the threshold first: a blacklisted bead's calls above it are
    // the ones that would promote it.
    for _ in 0..2_000 {
        kiln.on_invoke(&kiln_blacklisted, |_| native_ptr());
        seed.on_invoke(&seed_blacklisted, |_| native_ptr());
    }
    let (kiln_cold, seed_cold) = (kiln.register(ptr::null_mut(), None), seed.register(ptr::null_mut(), None));
    println!();
    println!("{:<38} {:>12} {:>12}", "allocations per call", "kiln-std", "beadie 0.3");
    println!(
        "{:<38} {:>12.2} {:>12.2}",
        "blacklisted bead (past its threshold)",
        calls(&|| {
            black_box(kiln.on_invoke(&kiln_blacklisted, compile_function(FUNCTION)));
        }),
        calls(&|| {
            black_box(seed.on_invoke(&seed_blacklisted, compile_function(FUNCTION)));
        })
    );
    println!(
        "{:<38} {:>12.2} {:>12.2}",
        "below the threshold (999 calls)",
        {
            let ((), allocations, _) = counted(|| {
                for _ in 0..999 {
                    black_box(kiln.on_invoke(&kiln_cold, compile_function(FUNCTION)));
                }
            });
            allocations as f64 / 999.0
        },
        {
            let ((), allocations, _) = counted(|| {
                for _ in 0..999 {
                    black_box(seed.on_invoke(&seed_cold, compile_function(FUNCTION)));
                }
            });
            allocations as f64 / 999.0
        }
    );
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo test --benches` lists; there is nothing to list.
    }
    let floor = size_of::<kiln_core::Bead>();
    println!("heap per bead, live bytes after the step / beads ({BEADS} beads; floor: kiln-core's bead, {floor} B)");
    println!("{:<40} {:>10} {:>8} {:>12} {:>8}", "step", "kiln-std B", "allocs", "beadie 0.3 B", "allocs");
    let mut rows = registered();
    let (kiln, seed) = compiled(false);
    rows.push(Row { what: "Beadie: registered and compiled", kiln, beadie: seed });
    let (kiln, seed) = compiled(true);
    rows.push(Row { what: "Beadie: compiled with 4 OSR entries", kiln, beadie: seed });
    for row in &rows {
        println!(
            "{:<40} {:>10.1} {:>8.2} {:>12.1} {:>8.2}",
            row.what, row.kiln.0, row.kiln.1, row.beadie.0, row.beadie.1
        );
    }
    per_call();
    println!();
    // beadie 0.3's chain drops its beads recursively: a million of them
    // overflow an 8 MiB main stack. Both run on a thread with a deep stack.
    on_deep_stack(|| million("kiln-std", kiln_std::Beadie::new(), |beadie| beadie.register(ptr::null_mut(), None)));
    on_deep_stack(|| million("beadie 0.3", beadie::Beadie::new(), |beadie| beadie.register(ptr::null_mut(), None)));
}

/// Runs `f` on a thread with a 1 GiB stack (mapped, not heap: not counted).
fn on_deep_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(f)
        .expect("a thread with a deep stack")
        .join()
        .expect("the million-bead run panicked");
}
