//! Deterministic instruction counts for the hot paths, for `ci/callgrind.sh`.
//!
//! Runs `N` calls of each hot operation and of its floor, each loop in an
//! `#[inline(never)]` function named `kiln_count_*`, so callgrind can count
//! exactly one loop at a time (`--toggle-collect`, one loop per run). The
//! compiled and the counting `on_invoke` share `kiln_count_on_invoke`: the
//! bead, not the code, picks the path. Every loop has the
//! same harness: the handle is read through `black_box` each iteration (so
//! nothing is hoisted) and the result is written through `black_box`; the
//! `kiln_count_harness` loop is that harness alone, so a count minus the
//! harness count is what the operation itself costs.
//!
//! Run alone, it prints nothing and exits 0; `ci/callgrind.sh` does the rest.
//! An argument names one loop to run (`compiled`, `compiled_floor`, `cold`,
//! `cold_floor`, `pending`, `backedge`, `harness`); without one, all run.

use core::hint::black_box;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use kiln_core::{Bead, Broker, CodeHandle, Compiled, NoEvents, NoWake, ThresholdDeoptPolicy, ThresholdPolicy};

/// Calls per loop.
const N: u64 = 1_000_000;

/// The broker every loop uses: beads held by `&Bead`, tier 0 final.
type CountBroker<'a> = Broker<&'a Bead, ThresholdPolicy, ThresholdDeoptPolicy, NoWake, NoEvents>;

/// Stands in for JIT-compiled code; never called.
extern "C" fn native_code() {}

fn native_ptr() -> *mut () {
    native_code as extern "C" fn() as *mut ()
}

/// The compiled path's floor: one pointer alone in a cache line.
#[repr(C, align(64))]
struct EntryLine {
    entry: AtomicPtr<()>,
}

/// The cold path's floor: one counter alone in a cache line.
#[repr(C, align(64))]
struct CounterLine {
    count: AtomicU32,
}

/// The floor's slow path: out of line and opaque, like `invoke_slow`.
#[cold]
#[inline(never)]
fn entry_line_slow() -> Option<NonNull<()>> {
    black_box(None)
}

/// The harness alone: read the handle, pass something on.
#[inline(never)]
fn kiln_count_harness(handle: &&Bead) {
    for _ in 0..N {
        let handle: &&Bead = black_box(handle);
        black_box(*handle);
    }
}

/// `on_invoke`: runs the compiled path on a bead whose final-tier code is
/// installed, the counting path on a bead that is counting. One function for
/// both (the machine code is the same; the bead decides the path), so the
/// compiler cannot merge two identical loops under one name.
#[inline(never)]
fn kiln_count_on_invoke<'a>(broker: &CountBroker<'a>, handle: &&'a Bead) {
    for _ in 0..N {
        black_box(broker.on_invoke(black_box(handle)));
    }
}

/// The compiled path's floor: Acquire load, null test, branch to a cold path.
#[inline(never)]
fn kiln_count_compiled_floor(line: &&EntryLine) {
    for _ in 0..N {
        let line: &&EntryLine = black_box(line);
        let entry = match NonNull::new(line.entry.load(Ordering::Acquire)) {
            Some(entry) => Some(entry),
            None => entry_line_slow(),
        };
        black_box(entry);
    }
}

/// The cold path's floor: a bare Relaxed `fetch_add`.
#[inline(never)]
fn kiln_count_cold_floor(line: &&CounterLine) {
    for _ in 0..N {
        let line: &&CounterLine = black_box(line);
        black_box(line.count.fetch_add(1, Ordering::Relaxed));
    }
}

/// `on_backedge` on a bead without OSR code, counting.
#[inline(never)]
fn kiln_count_backedge<'a>(broker: &CountBroker<'a>, handle: &&'a Bead) {
    for _ in 0..N {
        black_box(broker.on_backedge(black_box(handle), black_box(7)));
    }
}

fn main() {
    let only = std::env::args().nth(1);
    let runs = |name: &str| only.as_deref().is_none_or(|only| only == name);

    let compiled_bead = Bead::new(ptr::null_mut());
    let cold_bead = Bead::new(ptr::null_mut());
    let compiled_broker: CountBroker<'_> =
        Broker::new(ThresholdPolicy::new(1_000), ThresholdDeoptPolicy::default(), NoWake, NoEvents);
    let counting_broker: CountBroker<'_> =
        Broker::new(ThresholdPolicy::new(u32::MAX), ThresholdDeoptPolicy::default(), NoWake, NoEvents);

    let compiled = &compiled_bead;
    let code = Compiled::new(native_ptr(), CodeHandle::from_raw(1).unwrap()).unwrap();
    // Tier 0 is ThresholdPolicy's final tier: the one-load path.
    compiled_broker.swap_compiled(&compiled, code, 0).unwrap();
    assert_eq!(compiled_broker.on_invoke(&compiled).map(NonNull::as_ptr), Some(native_ptr()));

    // Arm both countdowns (the first call and back-edge ask the policy). The
    // policy never promotes; kiln caps a countdown at 65,536, so the slow
    // path re-arms it every 65,536 calls: ~0.002 instructions per call on
    // average, below the 0.01 the figures are rounded to.
    let cold = &cold_bead;
    assert_eq!(counting_broker.on_invoke(&cold), None);
    assert_eq!(counting_broker.on_backedge(&cold, 7), None);

    // A bead promoted at its first call whose job stays queued (nothing
    // pumps): kiln re-checks the state every 64 calls while a compile is
    // pending, so this loop shows that re-check's share of a call.
    let pending_bead = Bead::new(ptr::null_mut());
    let pending_broker: CountBroker<'_> =
        Broker::new(ThresholdPolicy::new(1), ThresholdDeoptPolicy::default(), NoWake, NoEvents);
    let pending = &pending_bead;
    assert_eq!(pending_broker.on_invoke(&pending), None);
    assert_eq!(pending_bead.state(), kiln_core::BeadState::Queued);

    let entry_line = &EntryLine { entry: AtomicPtr::new(native_ptr()) };
    let counter_line = &CounterLine { count: AtomicU32::new(0) };

    if runs("harness") {
        kiln_count_harness(&cold);
    }
    if runs("compiled") {
        kiln_count_on_invoke(&compiled_broker, &compiled);
    }
    if runs("compiled_floor") {
        kiln_count_compiled_floor(&entry_line);
    }
    if runs("cold") {
        kiln_count_on_invoke(&counting_broker, &cold);
    }
    if runs("cold_floor") {
        kiln_count_cold_floor(&counter_line);
    }
    if runs("pending") {
        kiln_count_on_invoke(&pending_broker, &pending);
    }
    if runs("backedge") {
        kiln_count_backedge(&counting_broker, &cold);
    }

    // The counting bead was never promoted: it is still counting.
    assert_eq!(cold_bead.state(), kiln_core::BeadState::Interpreted);
}
