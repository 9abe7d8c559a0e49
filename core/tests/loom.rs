//! Loom models of kiln-core's concurrent protocols.
//!
//! Every atomic and the broker's lock come from `loom` under `--cfg loom`
//! (see `core/src/sync.rs`), so these models explore the interleavings (and
//! weak-memory outcomes) of the slow paths: promotion races, publish against
//! invalidate, code swaps against OSR readers and quiescence, abandoned jobs,
//! and the wake-up handshake between promoters and pumpers.
//!
//! Run with `ci/loom.sh`. Fixtures that only record what happened (ledgers,
//! counters) use `std` atomics: loom does not track them, which keeps the
//! explored state space down to kiln's own accesses. Beads and brokers are
//! created inside each model and shared through `loom::sync::Arc`.
#![cfg(loom)]

use std::num::NonZeroU32;
use std::ptr::{self, NonNull};
use std::sync::Arc as StdArc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32 as StdAtomicU32, AtomicUsize as StdAtomicUsize, Ordering::SeqCst};

use kiln_core::{
    AlwaysRecompilePolicy, Bead, BeadRef, BeadState, Broker, Budget, ClaimError, CodeHandle, CompileRequest, Compiled,
    Compiler, Decision, Events, HotnessPolicy, HotnessStats, JobKind, JobOutcome, NoWake, NullEntry, OsrEntry,
    OsrTable, PumpStop, ThresholdPolicy, WakeHook,
};
use loom::sync::Arc;
use loom::thread;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// The broker's handle type: a bead shared through loom's `Arc`.
#[derive(Clone, Debug)]
struct Handle(Arc<Bead>);

impl Handle {
    fn new() -> Self {
        Handle(Arc::new(Bead::new(ptr::null_mut())))
    }
}

impl BeadRef for Handle {
    fn bead(&self) -> &Bead {
        &self.0
    }
}

/// Small capacities keep the lock's protected state small; none of the
/// models comes near them.
type TestBroker<P = ThresholdPolicy, W = NoWake, const RETIRE: usize = 4> =
    Broker<Handle, P, AlwaysRecompilePolicy, W, RecordingEvents, 4, RETIRE>;

fn broker<P: HotnessPolicy, W: WakeHook>(policy: P, pump: W) -> Arc<TestBroker<P, W>> {
    broker_with_ring(policy, pump)
}

fn broker_with_ring<P: HotnessPolicy, W: WakeHook, const RETIRE: usize>(
    policy: P,
    pump: W,
) -> Arc<TestBroker<P, W, RETIRE>> {
    Arc::new(Broker::new(policy, AlwaysRecompilePolicy, pump, RecordingEvents::default()))
}

/// The (never called) native entry of code handle `n`: distinct per handle.
fn code_ptr(n: usize) -> *mut () {
    ptr::without_provenance_mut(0x1000 * n)
}

fn code_entry(n: usize) -> Option<NonNull<()>> {
    NonNull::new(code_ptr(n))
}

/// The loop site the OSR models look up; both tables have an entry for it.
const SITE: u64 = 7;

/// Two OSR tables: table `k` maps site `s` to address `0x10_0000 * (k + 1) + s`.
static OSR_ENTRIES: [[OsrEntry; 2]; 2] = [
    [
        OsrEntry { site: 3, code: ptr::without_provenance_mut(0x10_0003) },
        OsrEntry { site: SITE, code: ptr::without_provenance_mut(0x10_0000 + SITE as usize) },
    ],
    [
        OsrEntry { site: 3, code: ptr::without_provenance_mut(0x20_0003) },
        OsrEntry { site: SITE, code: ptr::without_provenance_mut(0x20_0000 + SITE as usize) },
    ],
];

/// Built once, outside every model, and never freed: the fake compiler's
/// "release" of a table is recorded in the ledger instead.
static OSR_TABLES: LazyLock<[OsrTable<'static>; 2]> = LazyLock::new(|| {
    [
        OsrTable::new(&OSR_ENTRIES[0]).expect("table 0 is sorted"),
        OsrTable::new(&OSR_ENTRIES[1]).expect("table 1 is sorted"),
    ]
});

/// The entry table `k` holds for `SITE`.
fn osr_site_entry(table: usize) -> NonNull<()> {
    NonNull::new(OSR_ENTRIES[table][1].code).expect("OSR entries are non-null")
}

/// Which table an OSR entry for `SITE` came from, if any.
fn osr_table_of(entry: NonNull<()>) -> Option<usize> {
    (0..2).find(|&k| osr_site_entry(k) == entry)
}

const MAX_HANDLES: usize = 8;
const NO_TABLE: usize = usize::MAX;

/// What the fake compiler handed out and got back, shared by every thread's
/// compiler instance.
struct Ledger {
    next: StdAtomicUsize,
    released: [StdAtomicU32; MAX_HANDLES],
    /// OSR table carried by each handle's code (`NO_TABLE` if none).
    table: [StdAtomicUsize; MAX_HANDLES],
}

impl Ledger {
    fn new() -> StdArc<Self> {
        StdArc::new(Ledger {
            next: StdAtomicUsize::new(1),
            released: Default::default(),
            table: std::array::from_fn(|_| StdAtomicUsize::new(NO_TABLE)),
        })
    }

    /// A fresh handle whose code carries OSR table `table` (or `NO_TABLE`).
    fn produce(&self, table: usize) -> CodeHandle {
        let n = self.next.fetch_add(1, SeqCst);
        assert!(n < MAX_HANDLES, "model produced too many handles");
        self.table[n].store(table, SeqCst);
        CodeHandle::from_raw(n).expect("handles start at 1")
    }

    /// Every handle produced so far.
    fn produced(&self) -> std::ops::Range<usize> {
        1..self.next.load(SeqCst)
    }

    /// The handle whose code carries OSR table `table`.
    fn owner_of_table(&self, table: usize) -> usize {
        self.produced().find(|&n| self.table[n].load(SeqCst) == table).expect("every table has an owner")
    }

    fn releases(&self, n: usize) -> u32 {
        self.released[n].load(SeqCst)
    }

    /// Every produced handle was released exactly once.
    fn assert_all_released_once(&self) {
        for n in self.produced() {
            assert_eq!(self.releases(n), 1, "handle {n} must be released exactly once");
        }
    }
}

/// A compiler that hands out a distinct handle per compile and checks every
/// release: only handles it produced, once each, never while still installed
/// in the bead (as entry or through its OSR table).
struct FakeCompiler {
    ledger: StdArc<Ledger>,
    beads: Vec<Handle>,
}

impl FakeCompiler {
    /// A compiler whose releases are checked against what `beads` have installed.
    fn new(ledger: &StdArc<Ledger>, beads: &[&Handle]) -> Self {
        FakeCompiler { ledger: StdArc::clone(ledger), beads: beads.iter().map(|&bead| bead.clone()).collect() }
    }
}

impl Compiler<Handle> for FakeCompiler {
    type Error = NullEntry;

    fn compile(&mut self, _request: &CompileRequest<'_, Handle>) -> Result<Compiled, NullEntry> {
        let handle = self.ledger.produce(NO_TABLE);
        Compiled::new(code_ptr(handle.get()), handle)
    }

    fn release(&mut self, code: CodeHandle) {
        let n = code.get();
        assert!(self.ledger.produced().contains(&n), "released handle {n}, which was never produced");
        for bead in &self.beads {
            let bead = bead.bead();
            assert_ne!(bead.compiled(), code_entry(n), "handle {n} released while its entry is still installed");
            let table = self.ledger.table[n].load(SeqCst);
            if table != NO_TABLE {
                let osr = bead.osr_entry(SITE).and_then(osr_table_of);
                assert_ne!(osr, Some(table), "handle {n} released while its OSR table is still published");
            }
        }
        let before = self.ledger.released[n].fetch_add(1, SeqCst);
        assert_eq!(before, 0, "handle {n} released twice");
    }
}

/// Counts the events the models assert on.
#[derive(Default)]
struct RecordingEvents {
    promoted: StdAtomicU32,
    compiled: StdAtomicU32,
    invalidated: StdAtomicU32,
    released: StdAtomicU32,
}

impl Events for RecordingEvents {
    fn promoted(&self, _bead: &Bead, _tier: u8, _kind: JobKind) {
        self.promoted.fetch_add(1, SeqCst);
    }
    fn compiled(&self, _bead: &Bead, _tier: u8, _ticks: Option<u64>) {
        self.compiled.fetch_add(1, SeqCst);
    }
    fn invalidated(&self, _bead: &Bead) {
        self.invalidated.fetch_add(1, SeqCst);
    }
    fn released(&self, _code: CodeHandle) {
        self.released.fetch_add(1, SeqCst);
    }
}

/// Counts `WakeHook::wake` calls.
#[derive(Default)]
struct RecordingPump {
    wakes: StdAtomicU32,
}

impl WakeHook for RecordingPump {
    fn wake(&self) {
        self.wakes.fetch_add(1, SeqCst);
    }
}

/// A threshold policy whose abandoned / queue-full beads retry on the very
/// next call, so the re-promotion path is reachable in a tiny model.
struct QuickRetry(ThresholdPolicy);

impl HotnessPolicy for QuickRetry {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        self.0.decide(stats)
    }
    fn queue_full_cooldown(&self) -> NonZeroU32 {
        NonZeroU32::MIN
    }
}

/// Runs `body` under `loom::model`, counts the executions loom explored,
/// reports the count and checks that there was more than one (a model whose
/// threads never interleave checks nothing).
fn explore(body: impl Fn() + Sync + Send + 'static) {
    let executions = StdArc::new(StdAtomicUsize::new(0));
    let counter = StdArc::clone(&executions);
    loom::model(move || {
        counter.fetch_add(1, SeqCst);
        body();
    });
    let executions = executions.load(SeqCst);
    eprintln!("loom explored {executions} executions");
    assert!(executions > 1, "the model's threads never interleaved");
}

/// Two tiers (0 and 1); promotes only through [`Broker::submit`].
struct TwoTiers;

impl HotnessPolicy for TwoTiers {
    fn decide(&self, _stats: &HotnessStats) -> Decision {
        Decision::NEVER
    }
    fn max_tier(&self) -> u8 {
        1
    }
}

/// With every bead settled and the ring drained, a two-slot retire ring
/// must take two retirements again (no reservation leaked): installs code in
/// `spare`, swaps it twice, then invalidates and drains everything.
fn assert_ring_takes_two<P: HotnessPolicy>(
    broker: &TestBroker<P, NoWake, 2>,
    ledger: &Ledger,
    compiler: &mut FakeCompiler,
    spare: &Handle,
) {
    assert_eq!(broker.stats().retire_depth, 0, "the ring was drained");
    for _ in 0..3 {
        let code = ledger.produce(NO_TABLE);
        broker
            .swap_compiled(spare, Compiled::new(code_ptr(code.get()), code).unwrap(), 0)
            .expect("the two-slot retire ring has room for two retirements");
    }
    broker.quiesce(compiler);
    broker.quiesce(compiler);
    broker.invalidate(spare).expect("the ring was drained again");
    broker.quiesce(compiler);
    broker.quiesce(compiler);
    ledger.assert_all_released_once();
}

// ---------------------------------------------------------------------------
// 1. Racing threshold crossings
// ---------------------------------------------------------------------------

/// Two interpreter threads cross the promotion threshold of one bead at the
/// same time: the state-word CAS lets exactly one of them queue the job.
#[test]
fn racing_threshold_crossings_queue_exactly_one_job() {
    explore(|| {
        let broker = broker(ThresholdPolicy::new(2), NoWake);
        let bead = Handle::new();
        // Call 1 of 2: the policy arms a countdown of one more call, so each
        // racing call below takes the slow path and decides "promote".
        assert_eq!(broker.on_invoke(&bead), None);
        assert_eq!(bead.bead().state(), BeadState::Interpreted);

        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (broker, bead) = (Arc::clone(&broker), bead.clone());
                thread::spawn(move || assert_eq!(broker.on_invoke(&bead), None, "nothing is compiled yet"))
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }

        let stats = broker.stats();
        assert_eq!(broker.events().promoted.load(SeqCst), 1, "exactly one Events::promoted");
        assert_eq!(stats.promotions, 1, "exactly one promotion counted");
        assert_eq!(stats.queue_full, 0);
        assert_eq!(stats.queue_depth, 1, "exactly one job queued");
        assert_eq!(broker.queue_len(), 1);
        assert_eq!(bead.bead().state(), BeadState::Queued);
        // The one job is for the bead's current generation.
        let job = broker.claim().expect("the queued job");
        assert_eq!(job.request().generation, bead.bead().generation());
        drop(job);
        assert_eq!(broker.claim().unwrap_err(), ClaimError::Empty, "no second job");
    });
}

// ---------------------------------------------------------------------------
// 2. Publish vs invalidate
// ---------------------------------------------------------------------------

/// A pumper claims and runs the bead's job while another thread invalidates
/// it. Whichever wins, the bead ends Invalidated with nothing installed, and
/// every handle the compiler produced is released exactly once: as a stale
/// result at once, or through the retire ring after two quiesces.
#[test]
fn publish_vs_invalidate_releases_every_handle_once() {
    explore(|| {
        let broker = broker(ThresholdPolicy::new(1), NoWake);
        let bead = Handle::new();
        let ledger = Ledger::new();
        assert_eq!(broker.on_invoke(&bead), None);
        assert_eq!(bead.bead().state(), BeadState::Queued);

        let pumper = {
            let (broker, bead, ledger) = (Arc::clone(&broker), bead.clone(), StdArc::clone(&ledger));
            thread::spawn(move || {
                let mut compiler = FakeCompiler::new(&ledger, &[&bead]);
                match broker.claim() {
                    Ok(job) => Some(job.run(&mut compiler)),
                    // The invalidation came first: the stale entry was dropped.
                    Err(error) => {
                        assert_eq!(error, ClaimError::Empty);
                        None
                    }
                }
            })
        };
        let invalidator = {
            let (broker, bead) = (Arc::clone(&broker), bead.clone());
            thread::spawn(move || broker.invalidate(&bead).expect("first and only invalidation"))
        };
        let outcome = pumper.join().unwrap();
        invalidator.join().unwrap();

        let mut compiler = FakeCompiler::new(&ledger, &[&bead]);
        broker.quiesce(&mut compiler);
        broker.quiesce(&mut compiler);

        let record = bead.bead();
        assert_eq!(record.state(), BeadState::Invalidated);
        assert_eq!(record.compiled(), None);
        assert_eq!(record.osr_entry(SITE), None);
        assert_eq!(broker.on_invoke(&bead), None, "an invalidated bead never runs code");
        ledger.assert_all_released_once();

        let stats = broker.stats();
        let produced = ledger.produced().len() as u32;
        match outcome {
            None => assert_eq!((produced, stats.stale_jobs), (0, 1), "stale entry dropped, nothing compiled"),
            Some(JobOutcome::Stale) => {
                assert_eq!((produced, stats.stale_results, stats.retired), (1, 1, 0), "result released unpublished")
            }
            Some(JobOutcome::Published) => {
                assert_eq!((produced, stats.compiles, stats.retired), (1, 1, 1), "published, then retired");
                assert_eq!(broker.events().compiled.load(SeqCst), 1);
            }
            Some(JobOutcome::Failed) => panic!("the fake compiler never fails"),
        }
        assert_eq!(stats.released, stats.retired, "everything retired was released after two quiesces");
        assert_eq!(broker.events().released.load(SeqCst), stats.released);
        assert_eq!(stats.retire_depth, 0);
        assert_eq!(stats.invalidations, 1);
        assert_eq!(broker.events().invalidated.load(SeqCst), 1, "Events::invalidated runs exactly once");
    });
}

/// As above, but the bead already runs tier-0 code, so the tier-1 job
/// reserves a slot of a two-slot retire ring when claimed (inside `pump`)
/// and the invalidation needs the other one. Whoever wins, every handle is
/// released exactly once, and the reservation is given back: afterwards the
/// ring takes two retirements again.
#[test]
fn publish_vs_invalidate_with_installed_code_returns_the_reservation() {
    explore(|| {
        let broker = broker_with_ring::<_, _, 2>(TwoTiers, NoWake);
        let bead = Handle::new();
        let spare = Handle::new();
        let ledger = Ledger::new();
        let warm = ledger.produce(NO_TABLE);
        broker.swap_compiled(&bead, Compiled::new(code_ptr(warm.get()), warm).unwrap(), 0).expect("nothing to retire");
        assert_eq!(bead.bead().state(), BeadState::Compiled(0));
        broker.submit(&bead, 1, JobKind::Invoke).expect("tier 1 is above the installed code");

        let pumper = {
            let (broker, bead, ledger) = (Arc::clone(&broker), bead.clone(), StdArc::clone(&ledger));
            thread::spawn(move || broker.pump(&mut FakeCompiler::new(&ledger, &[&bead]), Budget::unlimited()))
        };
        let invalidator = {
            let (broker, bead) = (Arc::clone(&broker), bead.clone());
            thread::spawn(move || broker.invalidate(&bead).expect("a free slot is left beside the reservation"))
        };
        let report = pumper.join().unwrap();
        invalidator.join().unwrap();

        let mut compiler = FakeCompiler::new(&ledger, &[&bead, &spare]);
        broker.quiesce(&mut compiler);
        broker.quiesce(&mut compiler);
        assert_eq!(bead.bead().state(), BeadState::Invalidated);
        assert_eq!(bead.bead().compiled(), None);
        ledger.assert_all_released_once();
        assert_eq!(report.published + report.stale + report.dropped, 1, "the job ran or was dropped: {report:?}");
        assert_eq!(ledger.produced().len(), 1 + (report.published + report.stale) as usize);
        assert_ring_takes_two(&broker, &ledger, &mut compiler, &spare);
    });
}

// ---------------------------------------------------------------------------
// 3. Swap vs OSR entry vs quiesce
// ---------------------------------------------------------------------------

/// Thread A swaps code 1 (with OSR table 0) for code 2 (with table 1); B
/// reads the entry and the OSR entry; C declares one quiescence; main
/// declares two more after joining. B only ever sees an entry of the old or
/// the new table, consistent with the entry it saw first and never of
/// released code; code 1 is released exactly two quiesces after it was
/// retired, never while installed, and code 2 stays installed.
#[test]
fn swap_vs_osr_entry_vs_quiesce_never_frees_early() {
    let _ = &*OSR_TABLES;
    explore(|| {
        let broker = broker(ThresholdPolicy::new(1_000), NoWake);
        let bead = Handle::new();
        let ledger = Ledger::new();

        let first = ledger.produce(0);
        // SAFETY: (with_osr 1, 2) the table is in a `static` built before the
        // model: valid, unchanged and readable from any thread forever.
        let old =
            unsafe { Compiled::new(code_ptr(first.get()), first).unwrap().with_osr(NonNull::from(&OSR_TABLES[0])) };
        broker.swap_compiled_with_osr(&bead, old, 0).expect("nothing to retire");
        assert_eq!(bead.bead().osr_entry(SITE), Some(osr_site_entry(0)));
        let second = ledger.produce(1);
        // SAFETY: (with_osr 1, 2) as above, for table 1.
        let new =
            unsafe { Compiled::new(code_ptr(second.get()), second).unwrap().with_osr(NonNull::from(&OSR_TABLES[1])) };
        let (code_1, code_2) = (first.get(), second.get());

        let swapper = {
            let (broker, bead) = (Arc::clone(&broker), bead.clone());
            thread::spawn(move || broker.swap_compiled_with_osr(&bead, new, 0).expect("the retire ring has room"))
        };
        let reader = {
            let (bead, ledger) = (bead.clone(), StdArc::clone(&ledger));
            thread::spawn(move || {
                let record = bead.bead();
                let entry = record.compiled().expect("code is installed throughout");
                let code =
                    [code_1, code_2].into_iter().find(|&n| code_entry(n) == Some(entry)).expect("entry of code 1 or 2");
                let osr = record.osr_entry(SITE).expect("a table is published throughout");
                let table = osr_table_of(osr).expect("OSR entry from table 0 or 1, never garbage");
                if code == code_2 {
                    // The table is stored before the entry (Release/Acquire).
                    assert_eq!(table, 1, "saw the new entry but the old OSR table");
                }
                // This thread has not passed a quiescent point since it
                // loaded these: their code must not have been released.
                assert_eq!(ledger.releases(code), 0, "use after release: code {code}");
                assert_eq!(ledger.releases(ledger.owner_of_table(table)), 0, "use after release: OSR table {table}");
            })
        };
        let quiescer = {
            let (broker, bead, ledger) = (Arc::clone(&broker), bead.clone(), StdArc::clone(&ledger));
            thread::spawn(move || {
                let mut compiler = FakeCompiler::new(&ledger, &[&bead]);
                let before = bead.bead().compiled();
                assert_eq!(broker.quiesce(&mut compiler), 0, "nothing can be two quiesces old yet");
                let after = bead.bead().compiled();
                (before, after)
            })
        };
        swapper.join().unwrap();
        reader.join().unwrap();
        let (before, after) = quiescer.join().unwrap();

        assert_eq!(ledger.releases(code_1), 0, "released after one quiesce");
        let mut compiler = FakeCompiler::new(&ledger, &[&bead]);
        broker.quiesce(&mut compiler);
        if before == code_entry(code_2) {
            // The swap retired code 1 before C's quiesce: that one and this one make two.
            assert_eq!(ledger.releases(code_1), 1, "not released two quiesces after retirement");
        }
        if after == code_entry(code_1) {
            // C's quiesce took the lock before the swap: only one quiesce since.
            assert_eq!(ledger.releases(code_1), 0, "released one quiesce after retirement");
        }
        broker.quiesce(&mut compiler);
        assert_eq!(ledger.releases(code_1), 1, "old code released exactly once");
        assert_eq!(ledger.releases(code_2), 0, "installed code is never released");
        assert_eq!(bead.bead().compiled(), code_entry(code_2));
        assert_eq!(bead.bead().osr_entry(SITE), Some(osr_site_entry(1)));
        assert_eq!(bead.bead().state(), BeadState::Compiled(0));
        let stats = broker.stats();
        assert_eq!((stats.retired, stats.released, stats.retire_depth), (1, 1, 0));
    });
}

// ---------------------------------------------------------------------------
// 4. Claim vs drop
// ---------------------------------------------------------------------------

/// After the model's threads are done: a bead is Queued only if a job for
/// its current generation is in the queue, and never Compiling. Drains the
/// queue (abandoning what it claims) and returns how many jobs it claimed.
fn assert_no_orphaned_state<P: HotnessPolicy, const RETIRE: usize>(
    broker: &TestBroker<P, NoWake, RETIRE>,
    bead: &Handle,
) -> u32 {
    let record = bead.bead();
    match record.state() {
        BeadState::Queued => {
            assert_eq!(broker.queue_len(), 1, "a Queued bead needs its job in the queue");
            let job = broker.claim().expect("the queued job");
            assert_eq!(job.request().generation, record.generation(), "the queued job is for the current generation");
            drop(job);
            assert_eq!(broker.claim().unwrap_err(), ClaimError::Empty);
            1
        }
        BeadState::Compiling => panic!("bead left Compiling after its job was dropped"),
        // At rest (or Invalidated): whatever is left in the queue is stale.
        _ => 0,
    }
}

/// A worker claims the job and drops it unfinished while an interpreter
/// thread keeps calling the bead (its retry countdown is one call, so a call
/// after the abandonment re-promotes). No bead is left Queued or Compiling
/// without a current job in the queue, and every claimed-and-dropped job is
/// counted as abandoned.
#[test]
fn claim_and_drop_vs_on_invoke_leaves_consistent_state() {
    explore(|| {
        let broker = broker(QuickRetry(ThresholdPolicy::new(1)), NoWake);
        let bead = Handle::new();
        assert_eq!(broker.on_invoke(&bead), None);
        assert_eq!(bead.bead().state(), BeadState::Queued);

        let worker = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || drop(broker.claim().expect("the queued job")))
        };
        let caller = {
            let (broker, bead) = (Arc::clone(&broker), bead.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    assert_eq!(broker.on_invoke(&bead), None);
                }
            })
        };
        worker.join().unwrap();
        caller.join().unwrap();

        let claimed_here = assert_no_orphaned_state(&broker, &bead);
        assert_eq!(broker.stats().abandoned, 1 + claimed_here, "every dropped job counted once");
        assert_eq!(broker.stats().promotions, 1 + claimed_here, "a job is queued only by a promotion");
    });
}

/// As above, but the other thread invalidates the bead, which already runs
/// tier-0 code: the tier-1 job reserves a slot of a two-slot retire ring
/// when claimed. The abandoned job must not resurrect the bead, a claim
/// after the invalidation finds only a stale entry, and the reservation is
/// given back either way.
#[test]
fn claim_and_drop_vs_invalidate_leaves_consistent_state() {
    explore(|| {
        let broker = broker_with_ring::<_, _, 2>(TwoTiers, NoWake);
        let bead = Handle::new();
        let ledger = Ledger::new();
        let warm = ledger.produce(NO_TABLE);
        broker.swap_compiled(&bead, Compiled::new(code_ptr(warm.get()), warm).unwrap(), 0).expect("nothing to retire");
        broker.submit(&bead, 1, JobKind::Invoke).expect("tier 1 is above the installed code");

        let worker = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || match broker.claim() {
                Ok(job) => {
                    drop(job);
                    true
                }
                Err(error) => {
                    assert_eq!(error, ClaimError::Empty, "only a stale entry was left");
                    false
                }
            })
        };
        let invalidator = {
            let (broker, bead) = (Arc::clone(&broker), bead.clone());
            thread::spawn(move || broker.invalidate(&bead).expect("a free slot is left beside the reservation"))
        };
        let claimed = worker.join().unwrap();
        invalidator.join().unwrap();

        assert_eq!(bead.bead().state(), BeadState::Invalidated);
        assert_eq!(assert_no_orphaned_state(&broker, &bead), 0);
        let stats = broker.stats();
        assert_eq!(stats.abandoned, u32::from(claimed), "abandoned counts the claimed-and-dropped job");
        assert_eq!(stats.stale_jobs, u32::from(!claimed), "otherwise the entry was dropped as stale");
        assert_eq!(broker.on_invoke(&bead), None);
        assert_eq!(bead.bead().state(), BeadState::Invalidated, "an invalidated bead is never promoted again");

        let spare = Handle::new();
        let mut compiler = FakeCompiler::new(&ledger, &[&bead, &spare]);
        broker.quiesce(&mut compiler);
        broker.quiesce(&mut compiler);
        ledger.assert_all_released_once();
        assert_ring_takes_two(&broker, &ledger, &mut compiler, &spare);
    });
}

/// Liveness after an abandoned job: the bead returns to Interpreted with a
/// retry countdown of one call. A racing `on_invoke` may overwrite that
/// re-arm with the countdown it loaded while the job was pending (the
/// counting path is a plain load + store by design), but that countdown is
/// bounded (`PENDING` = 64 calls in broker.rs), and a slow path that sees a
/// stale Queued/Compiling re-arms `PENDING` and reads the state word again
/// then (lock-free). So once the threads
/// are done the bead must be promoted again within `PENDING + 2` calls —
/// never parked behind a countdown of ~`u32::MAX` calls.
#[test]
fn abandoned_bead_is_promoted_again() {
    explore(|| {
        let broker = broker(QuickRetry(ThresholdPolicy::new(1)), NoWake);
        let bead = Handle::new();
        assert_eq!(broker.on_invoke(&bead), None);

        let worker = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || drop(broker.claim().expect("the queued job")))
        };
        let caller = {
            let (broker, bead) = (Arc::clone(&broker), bead.clone());
            thread::spawn(move || assert_eq!(broker.on_invoke(&bead), None))
        };
        worker.join().unwrap();
        caller.join().unwrap();

        const PENDING: u32 = 64;
        for _ in 0..PENDING + 2 {
            if bead.bead().state() == BeadState::Queued {
                break;
            }
            assert_eq!(broker.on_invoke(&bead), None);
        }
        assert_eq!(bead.bead().state(), BeadState::Queued, "a hot, abandoned bead must be promoted again");
    });
}

/// The same race through kiln-std's order (`Bead::count_call`, waiting path
/// first, then `Broker::invoke_due`): a waiting call reads only the state
/// word and writes nothing, and no lock is taken on any call. A call that
/// sees the abandon's state word but the countdown armed at promotion
/// (`PENDING`; the abandon stores the word first) counts from that and may
/// overwrite the re-arm, as in the model above: once the threads are done
/// the bead must be promoted again within `PENDING + 2` calls.
#[test]
fn abandoned_bead_is_promoted_again_through_count_call() {
    explore(|| {
        let broker = broker(QuickRetry(ThresholdPolicy::new(1)), NoWake);
        let bead = Handle::new();
        assert_eq!(broker.on_invoke(&bead), None);
        let call = |broker: &TestBroker<QuickRetry>, bead: &Handle| match bead.bead().count_call() {
            kiln_core::CallCount::Interpret(entry) => entry,
            kiln_core::CallCount::Due => broker.invoke_due(bead.bead(), |_, _| bead.clone()),
        };

        let worker = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || drop(broker.claim().expect("the queued job")))
        };
        let caller = {
            let (broker, bead) = (Arc::clone(&broker), bead.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    assert_eq!(call(&broker, &bead), None);
                }
            })
        };
        worker.join().unwrap();
        caller.join().unwrap();

        const PENDING: u32 = 64;
        for _ in 0..PENDING + 2 {
            if bead.bead().state() == BeadState::Queued {
                break;
            }
            assert_eq!(call(&broker, &bead), None);
        }
        assert_eq!(bead.bead().state(), BeadState::Queued, "a hot, abandoned bead must be promoted again");
        assert_no_orphaned_state(&broker, &bead);
    });
}

// ---------------------------------------------------------------------------
// 5. Wake coalescing never loses work
// ---------------------------------------------------------------------------

/// Bead X was promoted before the model starts, so a wake-up is pending
/// (coalesced: the flag is set). Thread P promotes bead Y while thread Q
/// runs one unlimited pump. Q clears the flag when it starts; P's promotion
/// sees the flag still set (no wake) only if Q's clear comes later, and then
/// Q must find Y's job. So: if Y's job is still queued afterwards, P woke the
/// host after Q started, i.e. there were exactly two wakes in all.
#[test]
fn wake_coalescing_never_loses_work() {
    explore(|| {
        let broker = broker(ThresholdPolicy::new(1), RecordingPump::default());
        let x = Handle::new();
        let y = Handle::new();
        let ledger = Ledger::new();
        assert_eq!(broker.on_invoke(&x), None);
        assert_eq!(broker.wake_hook().wakes.load(SeqCst), 1, "the first job wakes the host");

        let promoter = {
            let (broker, y) = (Arc::clone(&broker), y.clone());
            thread::spawn(move || {
                // `None`, or Y's code if the pump compiled it already.
                let entry = broker.on_invoke(&y);
                assert!(entry.is_none() || entry == y.bead().compiled());
            })
        };
        let pumper = {
            let (broker, x, ledger) = (Arc::clone(&broker), x.clone(), StdArc::clone(&ledger));
            thread::spawn(move || {
                let mut compiler = FakeCompiler::new(&ledger, &[&x]);
                broker.pump(&mut compiler, Budget::unlimited())
            })
        };
        promoter.join().unwrap();
        let report = pumper.join().unwrap();

        let wakes = broker.wake_hook().wakes.load(SeqCst);
        assert!(wakes <= 2, "one wake per cleared flag at most, got {wakes}");
        assert_eq!(x.bead().state(), BeadState::Compiled(0), "the pump ran the job that was queued before it");
        if broker.queue_len() > 0 {
            assert_eq!(y.bead().state(), BeadState::Queued);
            assert_eq!(wakes, 2, "Y's job is queued but nobody was woken after the pump cleared the flag");
        } else {
            assert_eq!(y.bead().state(), BeadState::Compiled(0), "the pump ran Y's job");
            assert_eq!(report.published, 2);
        }
        assert_eq!(report.stop, PumpStop::Idle, "an unlimited pump stops only when the queue is empty");
    });
}

/// Two interpreter threads promote two beads while nobody pumps: the second
/// promotion finds a wake-up already pending and does not call
/// `WakeHook::wake` again (one wake per burst).
#[test]
fn wake_is_coalesced() {
    explore(|| {
        let broker = broker(ThresholdPolicy::new(1), RecordingPump::default());
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let broker = Arc::clone(&broker);
                let bead = Handle::new();
                thread::spawn(move || {
                    assert_eq!(broker.on_invoke(&bead), None);
                    assert_eq!(bead.bead().state(), BeadState::Queued);
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        assert_eq!(broker.queue_len(), 2);
        assert_eq!(broker.stats().promotions, 2);
        assert_eq!(broker.wake_hook().wakes.load(SeqCst), 1, "two promotions, one wake");
    });
}
