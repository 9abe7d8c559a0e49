//! Bad input gives typed errors and loses nothing.
//!
//! Each test drives one refusal — a full bead pool, job queue or retire
//! ring, a null entry, a malformed OSR table, use of an invalidated bead, a
//! failed compile, an abandoned job — and checks the error's type, that the
//! refused operation changed nothing, and that refused code comes back for
//! the caller to release (every handle a test creates is released exactly
//! once by its end). The trace tests record every `WakeHook::wake` and `Events`
//! call and assert the exact sequence for a promote → pump → publish →
//! invalidate → quiesce cycle, including one wake for a burst of promotions.

use std::cell::{Cell, RefCell};
use std::error::Error as _;
use std::num::NonZeroU32;
use std::ptr::{self, NonNull};
use std::sync::LazyLock;

use kiln_core::{
    AlwaysRecompilePolicy, Bailout, BailoutReason, Bead, BeadPool, BeadRef, BeadState, Broker, Budget, ClaimError,
    CodeHandle, CompileRequest, Compiled, Compiler, Decision, DeoptDecision, DeoptPolicy, Events, HotnessPolicy,
    HotnessStats, JobKind, JobOutcome, KilnError, NoEvents, NoWake, NullEntry, OsrEntry, OsrTable, OsrTableError,
    PumpReport, PumpStop, ThresholdDeoptPolicy, ThresholdPolicy, TierLadder, WakeHook,
};

fn code(n: usize) -> *mut () {
    ptr::without_provenance_mut(0x1000 * n)
}

fn entry(n: usize) -> Option<NonNull<()>> {
    NonNull::new(code(n))
}

fn handle(n: usize) -> CodeHandle {
    CodeHandle::from_raw(n).expect("test handles are non-zero")
}

fn guard() -> BailoutReason {
    BailoutReason::Guard { guard_id: 7, pc_offset: 3 }
}

static OSR_ENTRIES: [OsrEntry; 2] = [
    OsrEntry { site: 4, code: ptr::without_provenance_mut(0xA040) },
    OsrEntry { site: 9, code: ptr::without_provenance_mut(0xA090) },
];
static OSR_TABLE: LazyLock<OsrTable<'static>> =
    LazyLock::new(|| OsrTable::new(&OSR_ENTRIES).expect("sorted, distinct, non-null"));

/// A fake JIT: the n-th piece of code it creates (compiled or made for a
/// swap) has handle `n` and entry `code(n)`. Panics on a double release.
#[derive(Debug, Default)]
struct Jit {
    created: usize,
    compiles: usize,
    failing: bool,
    released: Vec<usize>,
}

impl Jit {
    fn fresh(&mut self) -> Compiled {
        self.created += 1;
        Compiled::new(code(self.created), handle(self.created)).expect("non-null entry")
    }

    fn free(&mut self, code: CodeHandle) {
        assert!((1..=self.created).contains(&code.get()), "released handle {} was never created", code.get());
        assert!(!self.released.contains(&code.get()), "handle {} released twice", code.get());
        self.released.push(code.get());
    }

    /// Every handle created so far was released exactly once.
    fn all_released(&self) -> bool {
        let mut released = self.released.clone();
        released.sort_unstable();
        released == (1..=self.created).collect::<Vec<_>>()
    }
}

impl<'a> Compiler<&'a Bead> for Jit {
    type Error = &'static str;

    fn compile(&mut self, _request: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, Self::Error> {
        self.compiles += 1;
        if self.failing { Err("refused by the test") } else { Ok(self.fresh()) }
    }

    fn release(&mut self, code: CodeHandle) {
        self.free(code);
    }
}

/// Forwards to `inner` and counts how often the broker consults it.
#[derive(Debug)]
struct Counting<P> {
    inner: P,
    decides: Cell<u32>,
    backedge_decides: Cell<u32>,
}

impl<P> Counting<P> {
    fn new(inner: P) -> Self {
        Self { inner, decides: Cell::new(0), backedge_decides: Cell::new(0) }
    }
}

impl<P: HotnessPolicy> HotnessPolicy for Counting<P> {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        self.decides.set(self.decides.get() + 1);
        self.inner.decide(stats)
    }
    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        self.backedge_decides.set(self.backedge_decides.get() + 1);
        self.inner.decide_backedge(stats)
    }
    fn backedge_weight(&self) -> u32 {
        self.inner.backedge_weight()
    }
    fn max_tier(&self) -> u8 {
        self.inner.max_tier()
    }
    fn queue_full_cooldown(&self) -> NonZeroU32 {
        self.inner.queue_full_cooldown()
    }
}

/// Forwards to `inner` and records every bailout it is shown.
#[derive(Debug)]
struct RecordingDeopt<D> {
    inner: D,
    seen: RefCell<Vec<Bailout>>,
}

impl<D> RecordingDeopt<D> {
    fn new(inner: D) -> Self {
        Self { inner, seen: RefCell::new(Vec::new()) }
    }
}

impl<D: DeoptPolicy> DeoptPolicy for RecordingDeopt<D> {
    fn on_bailout(&self, bailout: &Bailout) -> DeoptDecision {
        self.seen.borrow_mut().push(*bailout);
        self.inner.on_bailout(bailout)
    }
    fn blacklist_decay(&self) -> Option<NonZeroU32> {
        self.inner.blacklist_decay()
    }
}

/// A broker over `&Bead` with no hooks.
type Plain<'a, P, D, const QUEUE: usize, const RETIRE: usize> = Broker<&'a Bead, P, D, NoWake, NoEvents, QUEUE, RETIRE>;

fn plain<'a, P, D, const QUEUE: usize, const RETIRE: usize>(policy: P, deopt: D) -> Plain<'a, P, D, QUEUE, RETIRE> {
    Broker::new(policy, deopt, NoWake, NoEvents)
}

fn call_n<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize>(
    broker: &Broker<H, P, D, W, E, QUEUE, RETIRE>,
    bead: &H,
    n: u32,
) -> Option<NonNull<()>>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    W: WakeHook,
    E: Events,
{
    let mut last = None;
    for _ in 0..n {
        last = broker.on_invoke(bead);
    }
    last
}

/// Ends a test: two quiesces make room in a full retire ring, `beads` are
/// invalidated (retiring their code), two more quiesces release it, and
/// every handle the test created must have been released exactly once.
fn retire_all_and_check<'a, P: HotnessPolicy, D: DeoptPolicy, const QUEUE: usize, const RETIRE: usize>(
    broker: &Plain<'a, P, D, QUEUE, RETIRE>,
    beads: &[&'a Bead],
    jit: &mut Jit,
) {
    broker.quiesce(jit);
    broker.quiesce(jit);
    for bead in beads {
        broker.invalidate(bead).expect("a live bead");
    }
    broker.quiesce(jit);
    broker.quiesce(jit);
    assert!(jit.all_released(), "created {}, released {:?}", jit.created, jit.released);
}

fn new_bead() -> Bead {
    Bead::new(ptr::null_mut())
}

#[test]
fn full_pool_is_capacity_full_and_a_pruned_slot_is_reused() {
    let pool = BeadPool::<2>::new();
    let broker: Plain<'_, _, _, 4, 4> = plain(ThresholdPolicy::new(10), ThresholdDeoptPolicy::default());
    let cores: [*mut (); 3] = [0xC1, 0xC2, 0xC3].map(ptr::without_provenance_mut);

    let a = pool.register(cores[0]).expect("first slot");
    let b = pool.register(cores[1]).expect("second slot");
    for _ in 0..2 {
        assert_eq!(pool.register(cores[2]).unwrap_err(), KilnError::CapacityFull);
    }
    assert!(!KilnError::CapacityFull.to_string().is_empty());
    // The refusals changed nothing about the registered beads.
    assert_eq!(pool.in_use(), 2);
    assert_eq!((a.core_handle(), b.core_handle()), (cores[0], cores[1]));
    assert_eq!((a.state(), b.state()), (BeadState::Interpreted, BeadState::Interpreted));

    let before = a.generation();
    pool.invalidate(a, |_| broker.invalidate(&a)).expect("invalidate a live bead");
    assert_eq!(pool.register(cores[2]).unwrap_err(), KilnError::CapacityFull, "a dead slot waits for prune");
    assert_eq!(pool.prune(), 1);
    let c = pool.register(cores[2]).expect("the pruned slot is free");
    assert!(ptr::eq(c, a), "the pool reuses the pruned slot");
    assert_eq!(c.core_handle(), cores[2]);
    assert_eq!(c.state(), BeadState::Interpreted);
    assert!(c.generation() > before, "a recycled bead never matches a job of its previous life");
    assert_eq!(pool.register(cores[0]).unwrap_err(), KilnError::CapacityFull);
}

#[test]
fn full_queue_refuses_cools_the_bead_down_and_does_not_retry_every_call() {
    let (a, b, c) = (new_bead(), new_bead(), new_bead());
    let broker: Plain<'_, _, _, 1, 4> = plain(Counting::new(ThresholdPolicy::new(2)), AlwaysRecompilePolicy);
    let mut jit = Jit::default();

    call_n(&broker, &&a, 2);
    assert_eq!(a.state(), BeadState::Queued);
    call_n(&broker, &&b, 2);
    let stats = broker.stats();
    assert_eq!((stats.promotions, stats.queue_full, broker.queue_len()), (1, 1, 1));
    assert_eq!(b.state(), BeadState::Interpreted, "a refused promotion returns the bead to rest");

    // Cooling down: the policy is not consulted again for `cooldown - 1` calls.
    let cooldown = broker.policy().queue_full_cooldown().get();
    assert!(cooldown > 1);
    let asked = broker.policy().decides.get();
    call_n(&broker, &&b, cooldown - 1);
    assert_eq!(broker.policy().decides.get(), asked, "no policy call while cooling down");
    assert_eq!(broker.stats().queue_full, 1, "no retry while cooling down");
    // The cooldown's last call asks again; the queue is still full, but `b`
    // is now far hotter than the queued `a`, so `a` is evicted for it.
    call_n(&broker, &&b, 1);
    assert_eq!(broker.policy().decides.get(), asked + 1);
    assert_eq!(broker.stats().queue_full, 2, "the evicted bead counts as turned away");
    assert_eq!((a.state(), b.state(), broker.queue_len()), (BeadState::Interpreted, BeadState::Queued, 1));

    // An explicit submit of a cold bead gets the typed error too.
    assert_eq!(broker.submit(&&c, 0, JobKind::Invoke), Err(KilnError::QueueFull));
    assert_eq!(c.state(), BeadState::Interpreted);
    assert_eq!(broker.stats().queue_full, 3);

    // The queued job was not disturbed.
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!((report.ran, report.published, report.stop), (1, 1, PumpStop::Idle));
    assert_eq!(b.state(), BeadState::Compiled(0));

    // With room in the queue, the evicted bead is promoted once its cooldown is over.
    call_n(&broker, &&a, cooldown - 1);
    assert_eq!(a.state(), BeadState::Interpreted);
    call_n(&broker, &&a, 1);
    assert_eq!(a.state(), BeadState::Queued);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(a.compiled(), entry(2));

    retire_all_and_check(&broker, &[&a, &b, &c], &mut jit);
}

#[test]
fn a_null_entry_is_not_code() {
    assert_eq!(Compiled::new(ptr::null_mut(), handle(1)).unwrap_err(), NullEntry);
    assert_eq!(KilnError::from(NullEntry), KilnError::NullEntry);
    assert!(!NullEntry.to_string().is_empty());
    assert_eq!(CodeHandle::from_raw(0), None, "a zero handle is refused too");
    let good = Compiled::new(code(1), handle(1)).expect("non-null entry");
    assert_eq!((good.entry(), good.handle(), good.has_osr()), (entry(1).unwrap(), handle(1), false));
}

#[test]
fn malformed_osr_tables_are_typed_errors() {
    fn at(site: u64, code: usize) -> OsrEntry {
        OsrEntry { site, code: ptr::without_provenance_mut(code) }
    }
    let cases: [(&[OsrEntry], OsrTableError); 5] = [
        (&[at(9, 1), at(4, 1)], OsrTableError::Unsorted { index: 1 }),
        (&[at(1, 1), at(5, 1), at(3, 1)], OsrTableError::Unsorted { index: 2 }),
        (&[at(4, 1), at(4, 2)], OsrTableError::DuplicateSite { index: 1 }),
        (&[at(4, 1), at(5, 0)], OsrTableError::NullCode { index: 1 }),
        (&[at(4, 0)], OsrTableError::NullCode { index: 0 }),
    ];
    for (entries, expected) in cases {
        let error = OsrTable::new(entries).unwrap_err();
        assert_eq!(error, expected, "{entries:?}");
        assert!(!error.to_string().is_empty());
        let kiln = KilnError::from(error);
        assert_eq!(kiln, KilnError::BadOsrTable(expected));
        assert!(kiln.source().is_some(), "the table error is the source");
    }
    let table = OsrTable::new(&OSR_ENTRIES).expect("valid table");
    assert_eq!(table.lookup(9).map(NonNull::as_ptr), Some(OSR_ENTRIES[1].code));
    assert_eq!(table.lookup(5), None);
}

#[test]
fn invalidating_twice_is_refused_and_reported_once() {
    let beads = [new_bead()];
    let trace = Trace::new(&beads);
    let broker: Broker<&Bead, _, _, _, _, 4, 4> =
        Broker::new(ThresholdPolicy::new(2), AlwaysRecompilePolicy, TracePump(&trace), TraceEvents(&trace));
    let bead = &beads[0];
    broker.invalidate(&bead).expect("first invalidate");
    let generation = bead.generation();
    assert_eq!(broker.invalidate(&bead), Err(KilnError::AlreadyInvalidated));
    assert_eq!(trace.take(), [Call::Invalidated(0)]);
    assert_eq!(broker.stats().invalidations, 1);
    assert_eq!(bead.state(), BeadState::Invalidated);
    assert_eq!(bead.generation(), generation, "the refused invalidate changed nothing");
}

#[test]
fn an_invalidated_bead_refuses_everything_and_hands_code_back() {
    let (live, queued) = (new_bead(), new_bead());
    let broker: Plain<'_, _, _, 4, 4> = plain(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
    let mut jit = Jit::default();

    call_n(&broker, &&live, 2);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(live.compiled(), entry(1));
    call_n(&broker, &&queued, 2);
    assert_eq!(queued.state(), BeadState::Queued);

    broker.invalidate(&&live).expect("live bead");
    broker.invalidate(&&queued).expect("queued bead");
    let generation = live.generation();
    let promotions = broker.stats().promotions;

    let refused = broker.swap_compiled(&&live, jit.fresh(), 0).unwrap_err();
    assert_eq!(refused.error, KilnError::Invalidated);
    assert_eq!((refused.value.handle(), refused.value.entry()), (handle(2), entry(2).unwrap()));
    jit.free(refused.into_value().into_handle());

    // SAFETY: the table lives in a static and never changes (1), and
    // `OsrTable` is `Sync`, so any thread may read it (2).
    let with_osr = unsafe { jit.fresh().with_osr(NonNull::from(&*OSR_TABLE)) };
    let refused = broker.swap_compiled_with_osr(&&live, with_osr, 0).unwrap_err();
    assert_eq!(refused.error, KilnError::Invalidated);
    assert!(refused.value.has_osr(), "handed back untouched, table included");
    jit.free(refused.into_value().into_handle());

    let refused = broker.swap_compiled(&&live, jit.fresh(), 15).unwrap_err();
    assert_eq!(refused.error, KilnError::TierOutOfRange);
    jit.free(refused.into_value().into_handle());

    assert_eq!(broker.reload(&&live), Err(KilnError::Invalidated));
    assert_eq!(broker.record_bailout(&&live, guard()), Err(KilnError::Invalidated));
    assert_eq!(broker.submit(&&live, 0, JobKind::Invoke), Err(KilnError::Invalidated));
    assert_eq!(call_n(&broker, &&live, 1_000), None);
    assert_eq!(broker.on_backedge(&&live, 4), None);
    assert_eq!(live.state(), BeadState::Invalidated);
    assert_eq!(live.generation(), generation, "nothing moved the bead");
    assert_eq!(broker.stats().promotions, promotions, "an invalidated bead is never promoted");

    // The queued bead's job went stale: dropped unrun.
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!((report.ran, report.dropped, report.stop), (0, 1, PumpStop::Idle));
    assert_eq!(broker.stats().stale_jobs, 1);
    assert_eq!(jit.compiles, 1);

    // The invalidated code is released after two quiesces; nothing leaked.
    assert_eq!(broker.quiesce(&mut jit), 0);
    assert_eq!(broker.quiesce(&mut jit), 1);
    assert_eq!(jit.released.last(), Some(&1));
    assert!(jit.all_released());
}

#[test]
fn a_full_retire_ring_refuses_swaps_until_two_quiesces() {
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 1> = plain(ThresholdPolicy::new(1_000), AlwaysRecompilePolicy);
    let mut jit = Jit::default();

    broker.swap_compiled(&&bead, jit.fresh(), 0).expect("nothing to retire yet");
    // Swap twice without quiescing: the first swap fills the ring with code 1...
    broker.swap_compiled(&&bead, jit.fresh(), 0).expect("the ring has room for one");
    assert_eq!(broker.stats().retire_depth, 1);
    let (generation, state) = (bead.generation(), bead.state());
    // ...and the second is refused, handing code 3 back.
    let refused = broker.swap_compiled(&&bead, jit.fresh(), 0).unwrap_err();
    assert_eq!(refused.error, KilnError::RetireFull);
    assert_eq!(refused.value.handle(), handle(3));
    let unchanged = |bead: &Bead| {
        assert_eq!(bead.compiled(), entry(2));
        assert_eq!((bead.generation(), bead.state(), bead.bailout_count()), (generation, state, 0));
    };
    unchanged(&bead);

    // Everything else that would retire code is refused the same way.
    assert_eq!(broker.invalidate(&&bead), Err(KilnError::RetireFull));
    assert_eq!(broker.reload(&&bead), Err(KilnError::RetireFull));
    assert_eq!(broker.record_bailout(&&bead, guard()), Err(KilnError::RetireFull));
    unchanged(&bead);
    assert_eq!(broker.stats().invalidations + broker.stats().bailouts, 0);

    // One quiesce is not enough: code 1 may still be running.
    assert_eq!(broker.quiesce(&mut jit), 0);
    let refused = broker.swap_compiled(&&bead, refused.into_value(), 0).unwrap_err();
    assert_eq!((refused.error, refused.value.handle()), (KilnError::RetireFull, handle(3)));
    unchanged(&bead);
    // The second releases code 1 and makes room.
    assert_eq!(broker.quiesce(&mut jit), 1);
    assert_eq!(jit.released, [1]);
    broker.swap_compiled(&&bead, refused.into_value(), 0).expect("room after quiescence");
    assert_eq!(bead.compiled(), entry(3));

    retire_all_and_check(&broker, &[&bead], &mut jit);
}

/// `DeoptPolicy::on_bailout` is "called once per bailout or failed
/// compile". A bailout refused for lack of retire room changes nothing and
/// is retried by the host after quiescing: the policy must see it once.
#[test]
fn a_bailout_refused_for_a_full_retire_ring_is_decided_once() {
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 1> = plain(ThresholdPolicy::new(1_000), RecordingDeopt::new(AlwaysRecompilePolicy));
    let mut jit = Jit::default();
    broker.swap_compiled(&&bead, jit.fresh(), 0).expect("empty bead");
    broker.swap_compiled(&&bead, jit.fresh(), 0).expect("retires code 1: ring full");

    assert_eq!(broker.record_bailout(&&bead, guard()), Err(KilnError::RetireFull));
    assert_eq!((bead.compiled(), bead.bailout_count()), (entry(2), 0), "the refusal changed nothing");
    broker.quiesce(&mut jit);
    broker.quiesce(&mut jit);
    assert_eq!(broker.record_bailout(&&bead, guard()), Ok(DeoptDecision::Recompile));
    assert_eq!(broker.deopt_policy().seen.borrow().len(), 1, "one bailout, one decision");
}

#[test]
fn a_full_retire_ring_holds_back_a_tier_up_compile() {
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 1> = plain(TierLadder::new([1, 3]), AlwaysRecompilePolicy);
    let mut jit = Jit::default();

    broker.swap_compiled(&&bead, jit.fresh(), 0).expect("empty bead");
    broker.swap_compiled(&&bead, jit.fresh(), 0).expect("retires code 1: ring full");
    call_n(&broker, &&bead, 3);
    assert_eq!(bead.state(), BeadState::Queued, "tier 1 is due");

    // Publishing would retire code 2, and there is no room: the job waits.
    assert_eq!(broker.claim().unwrap_err(), ClaimError::RetireFull);
    assert_eq!((bead.state(), broker.queue_len()), (BeadState::Queued, 1));
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!((report.ran, report.remaining, report.stop), (0, 1, PumpStop::RetireFull));
    broker.quiesce(&mut jit);
    assert_eq!(broker.pump(&mut jit, Budget::unlimited()).stop, PumpStop::RetireFull);
    assert_eq!(broker.quiesce(&mut jit), 1);
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!((report.ran, report.published, report.stop), (1, 1, PumpStop::Idle));
    assert_eq!((bead.state(), bead.compiled()), (BeadState::Compiled(1), entry(3)));
    assert_eq!(jit.compiles, 1, "compiled once, after room was made");

    retire_all_and_check(&broker, &[&bead], &mut jit);
}

#[test]
fn a_stale_queue_entry_is_dropped_even_when_it_ranks_first() {
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 4> = plain(ThresholdPolicy::new(1_000), AlwaysRecompilePolicy);
    let mut jit = Jit::default();
    let osr = JobKind::Osr { site: 4 };

    broker.submit(&&bead, 0, osr).expect("queued for generation 0");
    broker.reload(&&bead).expect("live bead: its queued entry goes stale");
    // Same hotness, so the older (stale) entry pops first.
    broker.submit(&&bead, 0, osr).expect("queued for generation 1");
    assert_eq!(broker.queue_len(), 2);
    let job = broker.claim().expect("the current entry");
    assert_eq!(job.request().generation, bead.generation(), "the stale entry was not claimed");
    assert_eq!(broker.stats().stale_jobs, 1);
    assert_eq!(job.run(&mut jit), kiln_core::JobOutcome::Published);
    assert_eq!((bead.state(), bead.compiled()), (BeadState::Compiled(0), entry(1)));
    assert_eq!(broker.claim().unwrap_err(), ClaimError::Empty);
}

#[test]
fn a_failed_compile_goes_through_the_deopt_policy() {
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 4> = plain(ThresholdPolicy::new(2), RecordingDeopt::new(AlwaysRecompilePolicy));
    let mut jit = Jit { failing: true, ..Jit::default() };

    call_n(&broker, &&bead, 2);
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!((report.ran, report.failed, report.published, report.stop), (1, 1, 0, PumpStop::Idle));
    assert_eq!(
        *broker.deopt_policy().seen.borrow(),
        [Bailout { reason: BailoutReason::CompileFailed, bailouts: 1, tier: 0, invocations: 2 }]
    );
    assert_eq!((bead.state(), bead.compiled(), bead.bailout_count()), (BeadState::Interpreted, None, 1));
    let stats = broker.stats();
    assert_eq!((stats.failures, stats.compiles, stats.bailouts), (1, 0, 0));
    assert_eq!(jit.created, 0, "no code, nothing to release");

    // A failing compiler is not hammered: the bead waits a cooldown.
    let cooldown = broker.policy().queue_full_cooldown().get();
    call_n(&broker, &&bead, cooldown - 1);
    assert_eq!(bead.state(), BeadState::Interpreted);
    call_n(&broker, &&bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);
    jit.failing = false;
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.compiled(), entry(1));
}

#[test]
fn a_failed_compile_can_blacklist_or_keep_the_lower_tier() {
    // Blacklisting policy: the bead stops compiling.
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 4> = plain(ThresholdPolicy::new(2), ThresholdDeoptPolicy::new(0));
    let mut jit = Jit { failing: true, ..Jit::default() };
    call_n(&broker, &&bead, 2);
    assert_eq!(broker.pump(&mut jit, Budget::unlimited()).failed, 1);
    assert_eq!(bead.state(), BeadState::Blacklisted);
    call_n(&broker, &&bead, 10_000);
    assert_eq!((bead.state(), broker.stats().promotions), (BeadState::Blacklisted, 1));

    // A failed tier-up leaves the working tier-0 code installed.
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 4> = plain(TierLadder::new([1, 2]), RecordingDeopt::new(AlwaysRecompilePolicy));
    let mut jit = Jit::default();
    call_n(&broker, &&bead, 1);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!((bead.state(), bead.compiled()), (BeadState::Compiled(0), entry(1)));
    call_n(&broker, &&bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);
    jit.failing = true;
    assert_eq!(broker.pump(&mut jit, Budget::unlimited()).failed, 1);
    assert_eq!(
        broker.deopt_policy().seen.borrow().last().map(|b| (b.reason, b.tier)),
        Some((BailoutReason::CompileFailed, 1))
    );
    assert_eq!((bead.state(), bead.compiled()), (BeadState::Compiled(0), entry(1)));
    assert_eq!(call_n(&broker, &&bead, 1), entry(1), "tier 0 keeps serving");
}

#[test]
fn a_job_finished_with_a_host_compile_publishes_releases_or_fails() {
    let (bead, moved_on, failing) = (new_bead(), new_bead(), new_bead());
    let broker: Plain<'_, _, _, 4, 4> = plain(ThresholdPolicy::new(1), AlwaysRecompilePolicy);
    let mut jit = Jit::default();

    // Published, with the host's ticks in the stats.
    call_n(&broker, &&bead, 1);
    let job = broker.claim().expect("queued");
    let result = jit.compile(&job.request());
    assert_eq!(job.finish(&mut jit, result, Some(40)), JobOutcome::Published);
    assert_eq!((bead.state(), bead.compiled()), (BeadState::Compiled(0), entry(1)));
    assert_eq!(broker.stats().compile_ticks, 40);

    // The bead was invalidated while the host compiled: the result is
    // handed back to the compiler, never installed.
    call_n(&broker, &&moved_on, 1);
    let job = broker.claim().expect("queued");
    let result = jit.compile(&job.request());
    broker.invalidate(&&moved_on).expect("first invalidate");
    assert_eq!(job.finish(&mut jit, result, Some(40)), JobOutcome::Stale);
    assert_eq!((moved_on.compiled(), jit.released.as_slice()), (None, &[2][..]));

    // A failed compile goes through the deopt policy.
    call_n(&broker, &&failing, 1);
    let job = broker.claim().expect("queued");
    assert_eq!(job.finish(&mut jit, Err("the host's compile failed"), None), JobOutcome::Failed);
    assert_eq!((failing.state(), failing.bailout_count()), (BeadState::Interpreted, 1));
    assert_eq!(broker.stats().failures, 1);

    retire_all_and_check(&broker, &[&bead], &mut jit);
}

#[test]
fn a_dropped_job_returns_its_bead_to_rest() {
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 4> = plain(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
    let mut jit = Jit::default();

    call_n(&broker, &&bead, 2);
    let job = broker.claim().expect("one job queued");
    assert!(ptr::eq(*job.bead(), &bead));
    assert_eq!(bead.state(), BeadState::Compiling);
    drop(job);
    assert_eq!(bead.state(), BeadState::Interpreted);
    assert_eq!(broker.stats().abandoned, 1);
    assert_eq!(broker.claim().unwrap_err(), ClaimError::Empty, "the job is gone, not requeued");

    // It cools down, then is promoted again.
    let cooldown = broker.policy().queue_full_cooldown().get();
    call_n(&broker, &&bead, cooldown - 1);
    assert_eq!(bead.state(), BeadState::Interpreted);
    call_n(&broker, &&bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.compiled(), entry(1));
}

#[test]
fn a_dropped_tier_up_job_keeps_the_code_and_gives_its_retire_slot_back() {
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 1> = plain(TierLadder::new([1, 2]), AlwaysRecompilePolicy);
    let mut jit = Jit::default();
    call_n(&broker, &&bead, 1);
    broker.pump(&mut jit, Budget::unlimited());
    call_n(&broker, &&bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);

    // The claimed tier-up holds the ring's only slot for the code it will replace.
    let job = broker.claim().expect("tier-up queued");
    let refused = broker.swap_compiled(&&bead, jit.fresh(), 0).unwrap_err();
    assert_eq!(refused.error, KilnError::RetireFull);
    jit.free(refused.into_value().into_handle());

    drop(job);
    assert_eq!((bead.state(), bead.compiled()), (BeadState::Compiled(0), entry(1)));
    assert_eq!(broker.stats().abandoned, 1);
    broker.swap_compiled(&&bead, jit.fresh(), 1).expect("the reservation was given back");
    assert_eq!(bead.compiled(), entry(3));
}

// ---- recording hooks: exact traces ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Wake,
    Promoted(usize, u8, JobKind),
    QueueFull(usize),
    Compiled(usize, u8, Option<u64>),
    CompileFailed(usize, u8),
    Deoptimized(usize, DeoptDecision),
    Invalidated(usize),
    Released(usize),
}

/// Every hook call, in order; beads are named by their index in the slice
/// the trace was made for.
#[derive(Debug)]
struct Trace {
    beads: Vec<usize>,
    calls: RefCell<Vec<Call>>,
}

impl Trace {
    fn new(beads: &[Bead]) -> Self {
        Self { beads: beads.iter().map(|bead| ptr::from_ref(bead).addr()).collect(), calls: RefCell::new(Vec::new()) }
    }

    fn index(&self, bead: &Bead) -> usize {
        let address = ptr::from_ref(bead).addr();
        self.beads.iter().position(|&known| known == address).expect("a bead of this test")
    }

    fn push(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }

    fn take(&self) -> Vec<Call> {
        self.calls.take()
    }
}

#[derive(Debug)]
struct TracePump<'t>(&'t Trace);

impl WakeHook for TracePump<'_> {
    fn wake(&self) {
        self.0.push(Call::Wake);
    }
}

#[derive(Debug)]
struct TraceEvents<'t>(&'t Trace);

impl Events for TraceEvents<'_> {
    fn promoted(&self, bead: &Bead, tier: u8, kind: JobKind) {
        self.0.push(Call::Promoted(self.0.index(bead), tier, kind));
    }
    fn queue_full(&self, bead: &Bead) {
        self.0.push(Call::QueueFull(self.0.index(bead)));
    }
    fn compiled(&self, bead: &Bead, tier: u8, ticks: Option<u64>) {
        self.0.push(Call::Compiled(self.0.index(bead), tier, ticks));
    }
    fn compile_failed(&self, bead: &Bead, tier: u8) {
        self.0.push(Call::CompileFailed(self.0.index(bead), tier));
    }
    fn deoptimized(&self, bead: &Bead, decision: DeoptDecision) {
        self.0.push(Call::Deoptimized(self.0.index(bead), decision));
    }
    fn invalidated(&self, bead: &Bead) {
        self.0.push(Call::Invalidated(self.0.index(bead)));
    }
    fn released(&self, code: CodeHandle) {
        self.0.push(Call::Released(code.get()));
    }
}

type Traced<'a, 't, const QUEUE: usize> =
    Broker<&'a Bead, ThresholdPolicy, AlwaysRecompilePolicy, TracePump<'t>, TraceEvents<'t>, QUEUE, 8>;

fn traced<'a, 't, const QUEUE: usize>(trace: &'t Trace) -> Traced<'a, 't, QUEUE> {
    Broker::new(ThresholdPolicy::new(2), AlwaysRecompilePolicy, TracePump(trace), TraceEvents(trace))
}

#[test]
fn one_promotion_cycle_calls_the_hooks_in_this_exact_order() {
    use Call::*;
    const INVOKE: JobKind = JobKind::Invoke;
    let beads: [Bead; 4] = std::array::from_fn(|_| new_bead());
    let trace = Trace::new(&beads);
    let broker: Traced<'_, '_, 8> = traced(&trace);
    let mut jit = Jit::default();

    // A burst of three promotions costs one wake-up.
    for bead in &beads[..3] {
        call_n(&broker, &bead, 2);
    }
    assert_eq!(trace.take(), [Promoted(0, 0, INVOKE), Wake, Promoted(1, 0, INVOKE), Promoted(2, 0, INVOKE)]);

    // Equal hotness: compiled oldest first; an emptied queue wakes no one.
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(report, PumpReport { ran: 3, published: 3, stop: PumpStop::Idle, ..PumpReport::default() });
    assert_eq!(trace.take(), [Compiled(0, 0, None), Compiled(1, 0, None), Compiled(2, 0, None)]);

    broker.invalidate(&&beads[1]).expect("live bead");
    assert_eq!(trace.take(), [Invalidated(1)]);
    assert_eq!(broker.record_bailout(&&beads[0], guard()), Ok(DeoptDecision::Recompile));
    assert_eq!(trace.take(), [Deoptimized(0, DeoptDecision::Recompile)]);
    assert_eq!(broker.quiesce(&mut jit), 0);
    assert_eq!(trace.take(), []);
    assert_eq!(broker.quiesce(&mut jit), 2);
    assert_eq!(trace.take(), [Released(2), Released(1)], "retired order: bead 1's code, then bead 0's");
    assert_eq!(jit.released, [2, 1]);

    // The pump cleared the pending wake-up: the next promotion wakes again.
    call_n(&broker, &&beads[3], 2);
    assert_eq!(trace.take(), [Promoted(3, 0, INVOKE), Wake]);
    // A pump that stops with work left wakes again, so no job is stranded.
    let report = broker.pump(&mut jit, Budget::jobs(0));
    assert_eq!((report.ran, report.remaining, report.stop), (0, 1, PumpStop::JobLimit));
    assert_eq!(trace.take(), [Wake]);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(trace.take(), [Compiled(3, 0, None)]);
}

#[test]
fn queue_full_and_failed_compiles_are_traced() {
    use Call::*;
    let beads: [Bead; 2] = std::array::from_fn(|_| new_bead());
    let trace = Trace::new(&beads);
    let broker: Traced<'_, '_, 1> = traced(&trace);
    let mut jit = Jit { failing: true, ..Jit::default() };

    call_n(&broker, &&beads[0], 2);
    call_n(&broker, &&beads[1], 2);
    assert_eq!(trace.take(), [Promoted(0, 0, JobKind::Invoke), Wake, QueueFull(1)]);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(trace.take(), [CompileFailed(0, 0)]);
}

// ---- liveness: no job is stranded ----

/// `HotnessStats::invocations` is "calls counted so far"; `submit` is not a call.
#[test]
fn submit_does_not_count_as_a_call() {
    let bead = new_bead();
    let broker: Plain<'_, _, _, 4, 4> = plain(ThresholdPolicy::new(1_000), AlwaysRecompilePolicy);
    call_n(&broker, &&bead, 3);
    assert_eq!(bead.invocation_count(), 3);
    broker.submit(&&bead, 0, JobKind::Invoke).expect("queued");
    assert_eq!(bead.invocation_count(), 3, "submit counted a call that never happened");
}

/// README: "call `broker.pump(...)` — or `broker.claim()` a `Job` and run it
/// on any worker". A host whose `wake` spawns a worker that claims is never
/// told about work queued after its first job.
#[test]
fn a_host_that_drains_with_claim_is_woken_for_later_work() {
    use Call::*;
    let beads: [Bead; 2] = std::array::from_fn(|_| new_bead());
    let trace = Trace::new(&beads);
    let broker: Traced<'_, '_, 8> = traced(&trace);
    let mut jit = Jit::default();

    // The host's wake spawns a worker that claims and runs the job (the
    // job-system pattern the `claim` docs describe).
    call_n(&broker, &&beads[0], 2);
    assert_eq!(trace.take(), [Promoted(0, 0, JobKind::Invoke), Wake]);
    broker.claim().expect("queued").run(&mut jit);
    assert_eq!(trace.take(), [Compiled(0, 0, None)]);
    assert_eq!(broker.queue_len(), 0);

    // New work arrives on an empty queue: someone has to be told.
    call_n(&broker, &&beads[1], 2);
    assert_eq!(trace.take(), [Promoted(1, 0, JobKind::Invoke), Wake], "the second job was queued without a wake-up");
}

#[test]
fn an_osr_promotion_refused_by_a_full_queue_is_retried_after_a_cooldown() {
    let (other, looping) = (new_bead(), new_bead());
    let broker: Plain<'_, _, _, 1, 4> =
        plain(Counting::new(ThresholdPolicy::new(1_000).osr_threshold(10)), AlwaysRecompilePolicy);
    let mut jit = Jit::default();

    // Hot enough that the looping bead's OSR promotion cannot evict it.
    call_n(&broker, &&other, 100);
    broker.submit(&&other, 0, JobKind::Invoke).expect("fills the queue");
    broker.on_invoke(&&looping);
    for _ in 0..10 {
        assert_eq!(broker.on_backedge(&&looping, 4), None);
    }
    assert_eq!(broker.stats().queue_full, 1, "the OSR promotion found the queue full");
    assert_eq!(looping.state(), BeadState::Interpreted);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(broker.queue_len(), 0);

    // The loop keeps running in the interpreter, far past any cooldown.
    let asked = broker.policy().backedge_decides.get();
    let cooldown = broker.policy().queue_full_cooldown().get();
    for _ in 0..(cooldown + 10) * 4 {
        broker.on_backedge(&&looping, 4);
    }
    assert!(broker.policy().backedge_decides.get() > asked, "the back-edge policy was never asked again");
    assert_eq!(looping.state(), BeadState::Queued, "the OSR compile was never retried");
}

/// A wake hook that records what `pushed` was told.
#[derive(Debug, Default)]
struct DepthHook {
    wakes: Cell<u32>,
    pushed: RefCell<Vec<usize>>,
}

impl WakeHook for &DepthHook {
    fn wake(&self) {
        self.wakes.set(self.wakes.get() + 1);
    }
    fn pushed(&self, queued: usize) {
        self.pushed.borrow_mut().push(queued);
    }
}

#[test]
fn the_wake_hook_hears_every_push_with_the_queue_depth_but_wakes_once_a_burst() {
    let beads: [Bead; 4] = std::array::from_fn(|_| new_bead());
    let hook = DepthHook::default();
    let broker: Broker<&Bead, ThresholdPolicy, AlwaysRecompilePolicy, &DepthHook, NoEvents, 3, 4> =
        Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, &hook, NoEvents);
    for bead in &beads[..3] {
        assert_eq!(broker.on_invoke(&bead), None);
    }
    assert_eq!(*hook.pushed.borrow(), [1, 2, 3]);
    assert_eq!(hook.wakes.get(), 1, "wake is coalesced: one per burst");
    // A push refused by the full queue is heard too, with the depth it found.
    assert_eq!(broker.submit(&&beads[3], 0, JobKind::Invoke), Err(KilnError::QueueFull));
    assert_eq!(*hook.pushed.borrow(), [1, 2, 3, 3]);
    // A call that wins nothing pushes nothing.
    assert_eq!(broker.on_invoke(&&beads[0]), None);
    assert_eq!(hook.pushed.borrow().len(), 4);
    let mut jit = Jit::default();
    assert_eq!(broker.pump(&mut jit, Budget::unlimited()).published, 3);
    assert_eq!(broker.submit(&&beads[3], 0, JobKind::Invoke), Ok(()));
    assert_eq!(*hook.pushed.borrow(), [1, 2, 3, 3, 1]);
    assert_eq!(hook.wakes.get(), 2, "a pump ended the first burst");
    broker.pump(&mut jit, Budget::unlimited());
    broker.quiesce(&mut jit);
    broker.quiesce(&mut jit);
    for bead in &beads {
        broker.invalidate(&bead).expect("a live bead");
    }
    broker.quiesce(&mut jit);
    broker.quiesce(&mut jit);
    assert!(jit.all_released());
}
