//! Heap use of kiln-std's paths, counted by a global allocator that counts
//! the current thread's allocations: none on any per-call path, and a
//! bounded number of bytes per registered bead.
//!
//! The per-bead figure is guarded against [`BYTES_PER_BEAD_MAX`], the value
//! measured when it was last improved; a change that lowers it lowers the
//! constant in the same commit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

use kiln_std::{
    BackendAdapter, BeadState, Beadie, BeadieConfig, Budget, HotnessPolicy, OsrCompileResult, OsrEntry,
    ThresholdPolicy, TieredAdapter,
};

/// Live heap bytes per registered bead through `Beadie::register`, the
/// chain included: the last measured figure (beadie 0.3's is 96 B). Today:
/// an `Arc<Bead>` of 96 B with its header (kiln-core's 64-byte bead, the
/// domain pointer, the chain link), and nothing else: the chain is linked
/// through the beads.
const BYTES_PER_BEAD_MAX: usize = 96;

/// The same through `BackendAdapter::register` (a `BoundBead`) and a
/// two-tier `TieredAdapter::register` (a `TieredBound`): neither adds heap.
const BYTES_PER_BOUND_BEAD_MAX: usize = 96;
const BYTES_PER_TIERED_BEAD_MAX: usize = 96;

/// A registered bead once compiled code (no OSR entries, no release hook)
/// is installed: nothing more, the code handle names the code without a
/// heap object (beadie 0.3: 96 B).
const BYTES_PER_COMPILED_BEAD_MAX: usize = 96;

/// A registered bead once compiled code with [`OSR_ENTRIES`] OSR entries is
/// installed: the bead and one block holding the table's 16-byte view and
/// the sorted entries (16 B each), 176 B (beadie 0.3: 184.6 B).
const BYTES_PER_OSR_BEAD_MAX: usize = 176;
const OSR_ENTRIES: u64 = 4;

/// A `BoundBead` once its backend's code (which the backend frees) is
/// installed: nothing more, the domain keeps the backend and the handle is
/// the entry (beadie 0.3: 96 B, its code is never freed).
const BYTES_PER_COMPILED_BOUND_BEAD_MAX: usize = 96;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn note(allocations: u64, bytes: i64) {
    // `try_with`: a thread being torn down may still free memory.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + allocations));
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + bytes));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting only touches thread-locals that never allocate (const-initialised
// `Cell`s).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as i64);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as i64));
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations and net live bytes of this thread during `f`.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64, i64) {
    let (allocations, bytes) = (ALLOCATIONS.with(Cell::get), LIVE_BYTES.with(Cell::get));
    let result = f();
    (result, ALLOCATIONS.with(Cell::get) - allocations, LIVE_BYTES.with(Cell::get) - bytes)
}

#[path = "support/native.rs"]
mod native;

use native::{NativeBackend, idle_beadie, native_ptr, wait_for};

const CALLS: usize = 10_000;

#[test]
fn compiled_calls_never_allocate() {
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1));
    let bead = beadie.register(ptr::null_mut(), None);
    wait_for(|| beadie.on_invoke(&bead, |_| native_ptr()).is_some());
    let (native_calls, allocations, _) =
        counted(|| (0..CALLS).filter(|_| beadie.on_invoke(&bead, |_| native_ptr()).is_some()).count());
    assert_eq!((native_calls, allocations), (CALLS, 0));

    let adapter = BackendAdapter::with_policy(NativeBackend, ThresholdPolicy::new(1));
    let bound = adapter.register(ptr::null_mut(), None);
    wait_for(|| adapter.on_invoke(&bound, |_| ()).is_some());
    let (native_calls, allocations, _) =
        counted(|| (0..CALLS).filter(|_| adapter.on_invoke(&bound, |_| ()).is_some()).count());
    assert_eq!((native_calls, allocations), (CALLS, 0));
}

#[test]
fn blacklisted_and_waiting_calls_never_allocate() {
    let beadie = idle_beadie(1);
    let blacklisted = beadie.register(ptr::null_mut(), None);
    blacklisted.blacklist();
    let waiting = beadie.register(ptr::null_mut(), None);
    beadie.on_invoke(&waiting, |_| native_ptr());
    beadie.on_invoke(&waiting, |_| native_ptr());
    assert_eq!(waiting.state(), BeadState::Queued);
    for bead in [&blacklisted, &waiting] {
        let (native_calls, allocations, _) =
            counted(|| (0..CALLS).filter(|_| beadie.on_invoke(bead, |_| native_ptr()).is_some()).count());
        assert_eq!((native_calls, allocations), (0, 0), "bead in state {:?}", bead.state());
    }
}

#[test]
fn counting_calls_below_the_threshold_never_allocate() {
    let beadie = idle_beadie(1_000_000);
    let bead = beadie.register(ptr::null_mut(), None);
    let (native_calls, allocations, _) =
        counted(|| (0..CALLS).filter(|_| beadie.on_invoke(&bead, |_| native_ptr()).is_some()).count());
    assert_eq!((native_calls, allocations), (0, 0));
}

#[test]
fn a_registered_bead_costs_a_bounded_number_of_heap_bytes() {
    // A power of two, so the chain's vector is exactly full: its slack does
    // not count against the bead.
    const BEADS: usize = 4_096;
    let beadie = idle_beadie(1_000);
    let mut beads = Vec::with_capacity(BEADS);
    let ((), _, bytes) = counted(|| {
        for _ in 0..BEADS {
            beads.push(beadie.register(ptr::null_mut(), None));
        }
    });
    // `beads` was reserved before counting began: only kiln's bytes count.
    assert_eq!(beads.len(), BEADS);
    let per_bead = bytes as f64 / BEADS as f64;
    println!("heap per registered bead: {per_bead:.1} B");
    assert!(per_bead > 64.0, "at least kiln-core's bead: {per_bead:.1} B");
    assert!(per_bead <= BYTES_PER_BEAD_MAX as f64, "{per_bead:.1} B per bead > {BYTES_PER_BEAD_MAX} B");
}

/// Live heap bytes per bead while `register` makes [`BEADS_PER_CONFIGURATION`]
/// beads into a vector reserved before counting.
fn bytes_per_bead<T>(mut register: impl FnMut() -> T) -> (f64, Vec<T>) {
    let mut beads = Vec::with_capacity(BEADS_PER_CONFIGURATION);
    let ((), _, bytes) = counted(|| {
        for _ in 0..BEADS_PER_CONFIGURATION {
            beads.push(register());
        }
    });
    (bytes as f64 / BEADS_PER_CONFIGURATION as f64, beads)
}

const BEADS_PER_CONFIGURATION: usize = 1_024;

#[test]
fn a_bound_bead_costs_no_more_than_a_plain_one() {
    let adapter = BackendAdapter::with_config(
        NativeBackend,
        ThresholdPolicy::new(1_000),
        BeadieConfig { workers: 0, ..BeadieConfig::default() },
    );
    let (per_bead, _beads) = bytes_per_bead(|| adapter.register(ptr::null_mut(), None));
    println!("heap per BoundBead: {per_bead:.1} B");
    assert!(per_bead <= BYTES_PER_BOUND_BEAD_MAX as f64, "{per_bead:.1} B per BoundBead");
}

#[test]
fn a_tiered_bead_costs_no_more_than_a_plain_one() {
    let adapter = TieredAdapter::with_config(
        vec![Box::new(ThresholdPolicy::new(1)) as Box<dyn HotnessPolicy>, Box::new(ThresholdPolicy::new(3))],
        kiln_std::TieredDeoptPolicy::default(),
        BeadieConfig { workers: 0, ..BeadieConfig::default() },
    );
    let (per_bead, _beads) = bytes_per_bead(|| adapter.register(ptr::null_mut(), None));
    println!("heap per TieredBound (2 tiers): {per_bead:.1} B");
    assert!(per_bead <= BYTES_PER_TIERED_BEAD_MAX as f64, "{per_bead:.1} B per TieredBound");
}

#[test]
fn a_bead_with_osr_entries_installed_costs_a_bounded_number_of_heap_bytes() {
    // No workers: compiles run in `pump` on this thread, where they are counted.
    let beadie = idle_beadie(1);
    let (per_bead, beads) = bytes_per_bead(|| {
        let bead = beadie.register(ptr::null_mut(), None);
        beadie.on_invoke_osr(&bead, |_| OsrCompileResult {
            entry: native_ptr(),
            osr: (0..OSR_ENTRIES).map(|site| OsrEntry { site: site * 16, code: native_ptr() }).collect(),
        });
        beadie.pump(Budget::unlimited());
        bead
    });
    assert!(beads.iter().all(|bead| bead.osr_entry(16).is_some()), "every bead compiled with its OSR table");
    println!("heap per bead with {OSR_ENTRIES} OSR entries installed: {per_bead:.1} B");
    assert!(per_bead <= BYTES_PER_OSR_BEAD_MAX as f64, "{per_bead:.1} B per compiled bead with OSR entries");
}

#[test]
fn a_compiled_bead_costs_no_more_than_a_registered_one() {
    // No workers: compiles run in `pump` on this thread, where they are counted.
    let beadie = idle_beadie(1);
    let (per_bead, beads) = bytes_per_bead(|| {
        let bead = beadie.register(ptr::null_mut(), None);
        beadie.on_invoke(&bead, |_| native_ptr());
        beadie.pump(Budget::unlimited());
        bead
    });
    assert!(beads.iter().all(|bead| bead.compiled() == Some(native_ptr())), "every bead compiled");
    println!("heap per compiled bead: {per_bead:.1} B");
    assert!(per_bead <= BYTES_PER_COMPILED_BEAD_MAX as f64, "{per_bead:.1} B per compiled bead");
}

#[test]
fn a_compiled_bound_bead_costs_a_bounded_number_of_heap_bytes() {
    let adapter = BackendAdapter::with_config(
        NativeBackend,
        ThresholdPolicy::new(1),
        BeadieConfig { workers: 0, ..BeadieConfig::default() },
    );
    let (per_bead, beads) = bytes_per_bead(|| {
        let bound = adapter.register(ptr::null_mut(), None);
        adapter.on_invoke(&bound, |_| ());
        adapter.beadie().pump(Budget::unlimited());
        bound
    });
    assert!(beads.iter().all(|bound| bound.bead().compiled() == Some(native_ptr())), "every bead compiled");
    println!("heap per compiled BoundBead: {per_bead:.1} B");
    assert!(per_bead <= BYTES_PER_COMPILED_BOUND_BEAD_MAX as f64, "{per_bead:.1} B per compiled BoundBead");
}
