//! No allocation per call on kiln-std's invoke paths — counting, compiled,
//! and a blacklisted hot bead called with a capturing closure (which beadie
//! boxes on every call) — measured with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_std::{Bead, BeadState, Beadie, ThresholdPolicy};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to `System` for every operation; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the thread-locals may be gone while a thread exits.
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            }
        });
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(Cell::get)
}

extern "C" fn native() -> i64 {
    7
}

fn wait_compiled(bead: &Arc<Bead>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while bead.compiled().is_none() {
        assert!(Instant::now() < deadline, "never compiled");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_counter_counts() {
    assert_eq!(allocations(|| drop(std::hint::black_box(Box::new(1u64)))), 1);
}

#[test]
fn invoke_paths_allocate_nothing_per_call() {
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1_000_000));
    let bead = beadie.register(std::ptr::null_mut(), None);
    let counting = allocations(|| {
        for call in 0..10_000usize {
            assert!(beadie.on_invoke(&bead, move |_| std::ptr::without_provenance_mut(call)).is_none());
        }
    });
    assert_eq!(counting, 0, "counting calls");

    let hot = Beadie::with_policy(ThresholdPolicy::new(1));
    let compiled = hot.register(std::ptr::null_mut(), None);
    hot.on_invoke(&compiled, |_| native as extern "C" fn() -> i64 as *mut ());
    wait_compiled(&compiled);
    let fast = allocations(|| {
        for _ in 0..10_000 {
            assert!(hot.on_invoke(&compiled, |_| std::ptr::null_mut()).is_some());
        }
    });
    assert_eq!(fast, 0, "compiled calls");
}

#[test]
fn a_blacklisted_hot_bead_with_a_capturing_closure_allocates_nothing() {
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1));
    let bead = beadie.register(std::ptr::null_mut(), None);
    beadie.on_invoke(&bead, |_| native as extern "C" fn() -> i64 as *mut ());
    wait_compiled(&bead);
    bead.blacklist();
    assert!(bead.is_blacklisted());
    assert_eq!(bead.state(), BeadState::Interpreted);
    let name: &'static str = "captured";
    let calls = allocations(|| {
        for call in 0..100_000usize {
            // Captures a word and a reference, as an interpreter's closure would.
            let code = beadie.on_invoke(&bead, move |_| name.as_ptr().wrapping_add(call) as *mut ());
            assert!(code.is_none());
        }
    });
    assert_eq!(calls, 0, "a blacklisted bead must not box its closure per call");
    assert_eq!(beadie.stats().promotions, 1);
}
