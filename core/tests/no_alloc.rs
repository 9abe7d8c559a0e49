//! kiln-core never touches the heap.
//!
//! A counting `#[global_allocator]` (wrapping `std::alloc::System`) counts
//! every allocation, reallocation and deallocation made by the current
//! thread while a measured region is open. The tests run a bead through its
//! whole life inside one region — `Bead::new`, counting and compiled
//! `on_invoke`, back-edges and OSR lookups, promotion, `claim`, `pump`,
//! `Job::run` / `publish` / `fail` / drop, `swap_compiled(_with_osr)`,
//! `record_bailout`, `reload`, `invalidate`, `quiesce`, refusals with their
//! typed errors — and assert that the count is zero. A control test proves
//! the counter sees a `Box::new` made in a region, so the zero is measured,
//! not assumed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::ptr::{self, NonNull};
use std::sync::LazyLock;

use kiln_core::{
    AlwaysRecompilePolicy, BailoutReason, Bead, BeadPool, BeadState, BlacklistDecay, Broker, Budget, ClaimError,
    CodeHandle, CompileRequest, Compiled, Compiler, DeoptDecision, Events, JobKind, JobOutcome, KilnError, NoEvents,
    OsrEntry, OsrTable, PumpStop, ThresholdDeoptPolicy, ThresholdPolicy, TierLadder, WakeHook,
};

/// `System`, counting the calling thread's heap operations while it measures.
struct CountingAllocator;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the allocator may run while thread-locals are torn down.
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        let _ = COUNT.try_with(|count| count.set(count.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; counting touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller meets `GlobalAlloc::alloc`'s contract (non-zero size).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_one();
        // SAFETY: the caller passes a block this allocator (that is, `System`) returned, with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: the caller meets `GlobalAlloc::realloc`'s contract for a block `System` returned.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` with counting on; returns its result and the heap operations
/// this thread made meanwhile.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.with(|count| count.set(0));
    MEASURING.with(|measuring| measuring.set(true));
    let result = f();
    MEASURING.with(|measuring| measuring.set(false));
    (result, COUNT.with(Cell::get))
}

#[test]
fn the_counter_sees_allocations_in_a_measured_region() {
    let (boxed, count) = measure(|| black_box(Box::new(black_box(7u64))));
    assert_eq!(count, 1, "one Box::new is one allocation");
    assert_eq!(*boxed, 7);
    let ((), count) = measure(|| drop(boxed));
    assert_eq!(count, 1, "freeing it is counted too");
    let (grown, count) = measure(|| {
        let mut v: Vec<u8> = Vec::with_capacity(1);
        v.extend_from_slice(black_box(&[1, 2, 3, 4, 5, 6, 7, 8, 9]));
        v
    });
    assert!(count >= 2, "allocate then grow, counted {count}");
    drop(grown);
    // Outside a region nothing is counted.
    let before = COUNT.with(Cell::get);
    drop(black_box(Box::new(1u8)));
    assert_eq!(COUNT.with(Cell::get), before);
}

fn code(n: usize) -> *mut () {
    ptr::without_provenance_mut(0x1000 * n)
}

static OSR_ENTRIES: [OsrEntry; 2] = [
    OsrEntry { site: 5, code: ptr::without_provenance_mut(0xA050) },
    OsrEntry { site: 9, code: ptr::without_provenance_mut(0xA090) },
];
static OSR_TABLE: LazyLock<OsrTable<'static>> = LazyLock::new(|| OsrTable::new(&OSR_ENTRIES).expect("valid"));

/// Hands out handle `n` / entry `code(n)` for the n-th code, OSR table
/// attached for OSR jobs; counts releases. Allocates nothing itself.
struct Jit {
    table: &'static OsrTable<'static>,
    created: usize,
    released: usize,
    failing: bool,
}

impl Jit {
    fn fresh(&mut self) -> Compiled {
        self.created += 1;
        let handle = CodeHandle::from_raw(self.created).expect("non-zero");
        Compiled::new(code(self.created), handle).expect("non-null")
    }

    fn fresh_with_osr(&mut self) -> Compiled {
        let compiled = self.fresh();
        // SAFETY: the table lives in a static and never changes (1), and
        // `OsrTable` is `Sync`, so any thread may read it (2).
        unsafe { compiled.with_osr(NonNull::from(self.table)) }
    }
}

impl<'a> Compiler<&'a Bead> for Jit {
    type Error = ();

    fn compile(&mut self, request: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, ()> {
        if self.failing {
            return Err(());
        }
        Ok(match request.kind {
            JobKind::Osr { .. } => self.fresh_with_osr(),
            JobKind::Invoke => self.fresh(),
        })
    }

    fn release(&mut self, _code: CodeHandle) {
        self.released += 1;
    }
}

/// A pump and events hook that count, without allocating.
#[derive(Default)]
struct Counters {
    wakes: Cell<u32>,
    events: Cell<u32>,
}

struct CountingPump<'c>(&'c Counters);

impl WakeHook for CountingPump<'_> {
    fn wake(&self) {
        self.0.wakes.set(self.0.wakes.get() + 1);
    }
}

struct CountingEvents<'c>(&'c Counters);

impl CountingEvents<'_> {
    fn bump(&self) {
        self.0.events.set(self.0.events.get() + 1);
    }
}

impl Events for CountingEvents<'_> {
    fn promoted(&self, _bead: &Bead, _tier: u8, _kind: JobKind) {
        self.bump();
    }
    fn queue_full(&self, _bead: &Bead) {
        self.bump();
    }
    fn compiled(&self, _bead: &Bead, _tier: u8, _ticks: Option<u64>) {
        self.bump();
    }
    fn compile_failed(&self, _bead: &Bead, _tier: u8) {
        self.bump();
    }
    fn deoptimized(&self, _bead: &Bead, _decision: DeoptDecision) {
        self.bump();
    }
    fn invalidated(&self, _bead: &Bead) {
        self.bump();
    }
    fn released(&self, _code: CodeHandle) {
        self.bump();
    }
}

const GUARD: BailoutReason = BailoutReason::Guard { guard_id: 1, pc_offset: 2 };

/// A bead's whole life on a two-tier broker with small rings. Returns
/// (codes created, codes released, wakes, events) so the caller can check
/// the run did what it claims.
fn two_tier_lifecycle() -> (usize, usize, u32, u32) {
    let counters = Counters::default();
    let beads = [Bead::new(ptr::null_mut()), Bead::new(ptr::null_mut()), Bead::new(ptr::null_mut())];
    let [hot, looping, other] = &beads;
    let mut ladder = TierLadder::new([3, 6]);
    ladder.osr_threshold = 4;
    let broker: Broker<&Bead, _, _, _, _, 2, 2> =
        Broker::new(ladder, ThresholdDeoptPolicy::new(1), CountingPump(&counters), CountingEvents(&counters));
    let mut jit = Jit { table: &OSR_TABLE, created: 0, released: 0, failing: false };

    // Counting, then promotion (tier 0).
    for _ in 0..3 {
        assert_eq!(broker.on_invoke(&hot), None);
    }
    assert_eq!(hot.state(), BeadState::Queued);
    // Back-edges: an OSR promotion.
    broker.on_invoke(&looping);
    for _ in 0..4 {
        assert_eq!(broker.on_backedge(&looping, 9), None);
    }
    assert_eq!(looping.state(), BeadState::Queued);
    // A third promotion finds the queue full.
    assert_eq!(broker.submit(&other, 0, JobKind::Invoke), Err(KilnError::QueueFull));

    // Claim and publish by hand (the hotter OSR job comes first); pump the other.
    let job = broker.claim().expect("queued");
    assert_eq!(job.request().kind, JobKind::Osr { site: 9 });
    let compiled = jit.fresh_with_osr();
    assert!(job.publish(compiled, Some(5)).is_ok());
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!((report.published, report.stop), (1, PumpStop::Idle));
    assert_eq!(broker.on_backedge(&looping, 9).map(NonNull::as_ptr), Some(OSR_ENTRIES[1].code));

    // Warm code counts on; tier 1 compiles and takes the fast path.
    assert_eq!(broker.on_invoke(&hot), NonNull::new(code(2)));
    for _ in 0..6 {
        broker.on_invoke(&hot);
    }
    assert_eq!(hot.state(), BeadState::Queued);
    broker.pump(&mut jit, Budget::jobs(1));
    assert_eq!(hot.state(), BeadState::Compiled(1));
    let fast = broker.on_invoke(&hot);
    assert_eq!(fast, hot.compiled());

    // The retire ring (2) holds tier-0 code 1 now; swaps fill it.
    let swapped = jit.fresh();
    broker.swap_compiled(&looping, swapped, 0).expect("room for one more");
    let refused = broker.swap_compiled_with_osr(&hot, jit.fresh_with_osr(), 1).unwrap_err();
    assert_eq!(refused.error, KilnError::RetireFull);
    jit.release(refused.into_value().into_handle());
    assert_eq!(broker.record_bailout(&hot, GUARD), Err(KilnError::RetireFull));
    assert_eq!(broker.quiesce(&mut jit), 0);
    assert_eq!(broker.quiesce(&mut jit), 2);
    broker.swap_compiled_with_osr(&hot, jit.fresh_with_osr(), 1).expect("room after quiescence");

    // Bailouts: recompile once, then blacklist.
    assert_eq!(broker.record_bailout(&hot, GUARD), Ok(DeoptDecision::Recompile));
    broker.on_invoke(&hot);
    assert_eq!(hot.state(), BeadState::Queued);
    broker.quiesce(&mut jit);
    broker.quiesce(&mut jit);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(broker.record_bailout(&hot, GUARD), Ok(DeoptDecision::Blacklist));
    assert_eq!(hot.state(), BeadState::Blacklisted);
    assert_eq!(broker.record_bailout(&hot, GUARD), Err(KilnError::NotCompiled));

    // Reload revives it; a failed compile, an abandoned job and a stale result.
    broker.quiesce(&mut jit);
    broker.quiesce(&mut jit);
    broker.reload(&hot).expect("live");
    broker.on_invoke(&hot);
    jit.failing = true;
    assert_eq!(broker.pump(&mut jit, Budget::unlimited()).failed, 1);
    jit.failing = false;
    broker.submit(&other, 0, JobKind::Invoke).expect("room in the queue");
    drop(broker.claim().expect("queued"));
    assert_eq!(other.state(), BeadState::Interpreted);
    broker.submit(&other, 0, JobKind::Invoke).expect("room in the queue");
    let job = broker.claim().expect("queued");
    broker.reload(&other).expect("live");
    assert_eq!(job.run(&mut jit), JobOutcome::Stale);
    broker.submit(&other, 0, JobKind::Invoke).expect("room in the queue");
    assert_eq!(broker.cancel_queued(), 1);

    // Invalidate everything, refusals included, and drain the ring.
    for bead in &beads {
        while broker.invalidate(&bead) == Err(KilnError::RetireFull) {
            broker.quiesce(&mut jit);
        }
        assert_eq!(broker.invalidate(&bead), Err(KilnError::AlreadyInvalidated));
        assert_eq!(broker.reload(&bead), Err(KilnError::Invalidated));
    }
    assert_eq!(broker.on_invoke(&hot), None);
    assert_eq!(broker.claim().unwrap_err(), ClaimError::Empty);
    broker.quiesce(&mut jit);
    broker.quiesce(&mut jit);
    let stats = broker.stats();
    assert_eq!((stats.queue_depth, stats.retire_depth), (0, 0));
    (jit.created, jit.released, counters.wakes.get(), counters.events.get())
}

#[test]
fn a_whole_bead_lifecycle_allocates_nothing() {
    LazyLock::force(&OSR_TABLE);
    let ((created, released, wakes, events), allocations) = measure(two_tier_lifecycle);
    assert_eq!(allocations, 0, "kiln-core allocated on a core path");
    // The region really ran: code was made and all of it was given back.
    assert!(created >= 8, "created {created}");
    assert_eq!(released, created);
    assert!(wakes >= 2 && events >= 20, "wakes {wakes}, events {events}");
}

#[test]
fn the_compiled_fast_path_and_blacklist_decay_allocate_nothing() {
    let bead = Bead::new(ptr::null_mut());
    let deopt = BlacklistDecay::new(ThresholdDeoptPolicy::new(0), NonZeroU32::new(3).expect("non-zero"));
    let broker: Broker<&Bead, _, _> = Broker::new(ThresholdPolicy::new(2), deopt, kiln_core::NoWake, NoEvents);
    let mut jit = Jit { table: &OSR_TABLE, created: 0, released: 0, failing: false };
    let (hits, allocations) = measure(|| {
        broker.on_invoke(&&bead);
        broker.on_invoke(&&bead);
        broker.pump(&mut jit, Budget::unlimited());
        let mut hits = 0;
        for _ in 0..10_000 {
            hits += usize::from(broker.on_invoke(&&bead).is_some());
        }
        // Blacklisted, then decayed into a second chance.
        assert_eq!(broker.record_bailout(&&bead, GUARD), Ok(DeoptDecision::Blacklist));
        for _ in 0..4 {
            broker.on_invoke(&&bead);
        }
        assert_eq!(bead.state(), BeadState::Queued);
        let _ = broker.stats();
        hits
    });
    assert_eq!(allocations, 0);
    assert_eq!(hits, 10_000, "every call took the compiled path");
}

#[test]
fn the_bead_pool_allocates_nothing() {
    let pool = BeadPool::<4>::new();
    let broker: Broker<&Bead, _, _> =
        Broker::new(ThresholdPolicy::new(2), AlwaysRecompilePolicy, kiln_core::NoWake, NoEvents);
    let (in_use, allocations) = measure(|| {
        let a = pool.register(ptr::null_mut()).expect("room");
        let _b = pool.register(ptr::null_mut()).expect("room");
        pool.invalidate(a, |_| broker.invalidate(&a)).expect("live");
        assert_eq!(pool.prune(), 1);
        let _c = pool.register(ptr::null_mut()).expect("recycled");
        pool.in_use()
    });
    assert_eq!(allocations, 0);
    assert_eq!(in_use, 2);
}
