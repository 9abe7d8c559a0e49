//! Model-based test of the broker: random operation sequences run against a
//! real `Broker` and, side by side, against a plain reference model.
//!
//! Each case builds 3–4 beads behind an `Arc` handle and a broker with tiny
//! rings (queue 4 / retire 4, and queue 2 / retire 1), so `QueueFull`,
//! `RetireFull` and `ClaimError::RetireFull` are hit constantly. Up to 200
//! operations follow: calls, back-edges, pumps with job budgets, claimed
//! jobs held across other operations then run, published, failed or
//! dropped, `invalidate`, `reload`, guard bailouts, `blacklist`, swaps (with
//! and without OSR tables), `submit`, `cancel_queued`, `set_queue_limit`,
//! `quiesce`, and a switch that makes the fake compiler fail. The hotness and deopt policies are real
//! ones wrapped to log what the broker asked them; the model takes each
//! decision from that log and predicts everything else.
//!
//! After every operation the test asserts that the real broker matches the
//! model exactly (each bead's state, generation, installed entry, tier, tier
//! cap, bailout count and OSR entries; queue length; every `Stats` counter;
//! wake-ups; promotion hooks; compile requests; released handles; pump
//! reports; claim and job outcomes) and that these invariants hold:
//!
//! - one promotion winner: never two jobs in flight for the same bead and
//!   generation; a bead is Queued exactly while one current queue entry
//!   exists and Compiling exactly while one current claimed job exists, so
//!   no bead is left Queued or Compiling after its job ended or was dropped;
//! - every code handle is released exactly once, and only after it was
//!   retired (no bead has it installed) and two `quiesce` calls happened
//!   since (checked by the fake compiler from what it observed, independently
//!   of the model); results that were never installed (stale, refused) may be
//!   released at once;
//! - stale results are never installed: installed code was always made for
//!   the bead's current generation;
//! - at the end, after dropping held jobs, invalidating every bead and
//!   quiescing, every handle ever created was released and the broker holds
//!   no bead handle.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::{Arc, LazyLock};

use kiln_core::{
    Bailout, BailoutReason, Bead, BeadRef, BeadState, BlacklistDecay, Broker, Budget, ClaimError, CodeHandle,
    CompileRequest, Compiled, Compiler, Decision, DeoptDecision, DeoptPolicy, ExponentialBackoffPolicy, HotnessPolicy,
    HotnessStats, Job, JobKind, JobOutcome, KilnError, MAX_TIER, NoEvents, OsrEntry, OsrTable, Pump, PumpReport,
    PumpStop, Stats, ThresholdDeoptPolicy, TierLadder, TieredDeoptPolicy,
};
use proptest::prelude::*;

// ---- the system under test's environment ----

/// The bead handle the queue stores: an `Arc`, so the end of each case can
/// check that the broker dropped every clone it took.
#[derive(Clone, Debug)]
struct Handle(Arc<Bead>);

impl BeadRef for Handle {
    fn bead(&self) -> &Bead {
        &self.0
    }
}

const CODE_STRIDE: usize = 0x1000;

/// Code handle `n` has entry `n * CODE_STRIDE` (never called).
fn entry_of(handle: usize) -> NonNull<()> {
    NonNull::new(ptr::without_provenance_mut(CODE_STRIDE * handle)).expect("handles start at 1")
}

fn handle_of(entry: NonNull<()>) -> usize {
    entry.as_ptr().addr() / CODE_STRIDE
}

/// Two OSR tables, so a lookup tells which code's table is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    A,
    B,
}

static TABLE_A_ENTRIES: [OsrEntry; 2] = [
    OsrEntry { site: 10, code: ptr::without_provenance_mut(0xA010) },
    OsrEntry { site: 20, code: ptr::without_provenance_mut(0xA020) },
];
static TABLE_B_ENTRIES: [OsrEntry; 2] = [
    OsrEntry { site: 20, code: ptr::without_provenance_mut(0xB020) },
    OsrEntry { site: 30, code: ptr::without_provenance_mut(0xB030) },
];
static TABLE_A: LazyLock<OsrTable<'static>> = LazyLock::new(|| OsrTable::new(&TABLE_A_ENTRIES).expect("valid"));
static TABLE_B: LazyLock<OsrTable<'static>> = LazyLock::new(|| OsrTable::new(&TABLE_B_ENTRIES).expect("valid"));

/// Loop sites probed: in A only, in both, in B only, in neither.
const SITES: [u64; 4] = [10, 20, 30, 40];

impl Table {
    fn table(self) -> &'static OsrTable<'static> {
        match self {
            Table::A => &TABLE_A,
            Table::B => &TABLE_B,
        }
    }

    /// What `osr_entry(site)` must return with `table` published.
    fn lookup(table: Option<Table>, site: u64) -> Option<NonNull<()>> {
        let entries: &[OsrEntry] = match table? {
            Table::A => &TABLE_A_ENTRIES,
            Table::B => &TABLE_B_ENTRIES,
        };
        entries.iter().find(|entry| entry.site == site).and_then(|entry| NonNull::new(entry.code))
    }
}

fn make_code(handle: usize, table: Option<Table>) -> Compiled {
    let compiled = Compiled::new(entry_of(handle).as_ptr(), CodeHandle::from_raw(handle).expect("non-zero"))
        .expect("non-null entry");
    match table {
        None => compiled,
        // SAFETY: the table lives in a static, is never changed and is never
        // freed (1); `OsrTable` is `Sync`, so any thread may read it (2).
        Some(table) => unsafe { compiled.with_osr(NonNull::from(table.table())) },
    }
}

/// One thing the broker asked a policy, and the answer.
#[derive(Clone, Copy, Debug)]
enum Consulted {
    Decide(HotnessStats, Decision),
    DecideBackedge(HotnessStats, Decision),
    Bailout(Bailout, DeoptDecision),
    Decay(Option<NonZeroU32>),
}

type Log = Rc<RefCell<VecDeque<Consulted>>>;

/// A two-tier ladder that logs its decisions.
struct ModelPolicy {
    ladder: TierLadder<2>,
    cooldown: NonZeroU32,
    log: Log,
}

impl HotnessPolicy for ModelPolicy {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        let decision = self.ladder.decide(stats);
        self.log.borrow_mut().push_back(Consulted::Decide(*stats, decision));
        decision
    }
    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        let decision = self.ladder.decide_backedge(stats);
        self.log.borrow_mut().push_back(Consulted::DecideBackedge(*stats, decision));
        decision
    }
    fn max_tier(&self) -> u8 {
        self.ladder.max_tier()
    }
    fn queue_full_cooldown(&self) -> NonZeroU32 {
        self.cooldown
    }
}

/// Which real deopt policy a case uses.
#[derive(Clone, Copy, Debug)]
enum DeoptChoice {
    Threshold(u32),
    Tiered,
    Backoff,
    Decay { limit: u32, after: u32 },
}

/// The chosen deopt policy, logging what it is asked.
struct ModelDeopt {
    choice: DeoptChoice,
    log: Log,
}

impl ModelDeopt {
    fn decay(limit: u32, after: u32) -> BlacklistDecay<ThresholdDeoptPolicy> {
        BlacklistDecay::new(ThresholdDeoptPolicy::new(limit), NonZeroU32::new(after).expect("after >= 1"))
    }
}

impl DeoptPolicy for ModelDeopt {
    fn on_bailout(&self, bailout: &Bailout) -> DeoptDecision {
        let decision = match self.choice {
            DeoptChoice::Threshold(limit) => ThresholdDeoptPolicy::new(limit).on_bailout(bailout),
            DeoptChoice::Tiered => TieredDeoptPolicy::default().on_bailout(bailout),
            DeoptChoice::Backoff => ExponentialBackoffPolicy::new(3, 2).on_bailout(bailout),
            DeoptChoice::Decay { limit, after } => Self::decay(limit, after).on_bailout(bailout),
        };
        self.log.borrow_mut().push_back(Consulted::Bailout(*bailout, decision));
        decision
    }
    fn blacklist_decay(&self) -> Option<NonZeroU32> {
        let decay = match self.choice {
            DeoptChoice::Decay { limit, after } => Self::decay(limit, after).blacklist_decay(),
            _ => None,
        };
        self.log.borrow_mut().push_back(Consulted::Decay(decay));
        decay
    }
}

#[derive(Default)]
struct CountingPump {
    wakes: Cell<u32>,
}

impl Pump for CountingPump {
    fn wake(&self) {
        self.wakes.set(self.wakes.get() + 1);
    }
}

/// What a compile was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    bead: usize,
    generation: u32,
    tier: u8,
    kind: JobKind,
}

/// A fake JIT. Code handles are unique (1, 2, ...) across compiles and
/// host-made code; OSR jobs get table A. It checks on its own that a
/// handle is released once, never while installed, and — if it was ever
/// seen installed — only once two quiesces passed since it was seen gone.
struct FakeJit {
    beads: Vec<Handle>,
    failing: bool,
    created: usize,
    /// Handle → (bead, generation) the code was made for.
    origin: BTreeMap<usize, (usize, u32)>,
    requests: Vec<Request>,
    released: Vec<usize>,
    released_ever: BTreeSet<usize>,
    /// Quiesce calls so far (bumped by the harness just before each).
    quiesces: u32,
    /// Handles observed installed after some operation.
    seen_installed: BTreeSet<usize>,
    /// Handles observed uninstalled, with the quiesce count at that point.
    seen_retired: BTreeMap<usize, u32>,
}

impl FakeJit {
    fn index(&self, bead: &Handle) -> usize {
        self.beads.iter().position(|known| Arc::ptr_eq(&known.0, &bead.0)).expect("a bead of this case")
    }

    fn fresh(&mut self) -> usize {
        self.created += 1;
        self.created
    }

    /// Records which handles are installed now (called after every operation).
    fn observe(&mut self) {
        let installed: BTreeSet<usize> =
            self.beads.iter().filter_map(|bead| bead.0.compiled()).map(handle_of).collect();
        for &gone in self.seen_installed.difference(&installed) {
            self.seen_retired.entry(gone).or_insert(self.quiesces);
        }
        self.seen_installed.extend(installed);
    }
}

impl Compiler<Handle> for FakeJit {
    type Error = &'static str;

    fn compile(&mut self, request: &CompileRequest<'_, Handle>) -> Result<Compiled, Self::Error> {
        let bead = self.index(request.bead);
        let generation = request.generation.get();
        self.requests.push(Request { bead, generation, tier: request.tier, kind: request.kind });
        if self.failing {
            return Err("the test's compiler fails");
        }
        let handle = self.fresh();
        self.origin.insert(handle, (bead, generation));
        let table = matches!(request.kind, JobKind::Osr { .. }).then_some(Table::A);
        Ok(make_code(handle, table))
    }

    fn release(&mut self, code: CodeHandle) {
        let handle = code.get();
        assert!((1..=self.created).contains(&handle), "released handle {handle}, never created");
        assert!(self.released_ever.insert(handle), "handle {handle} released twice");
        for (index, bead) in self.beads.iter().enumerate() {
            assert_ne!(
                bead.0.compiled(),
                Some(entry_of(handle)),
                "handle {handle} released while bead {index} runs it"
            );
        }
        if self.seen_installed.contains(&handle) {
            let retired = self.seen_retired.get(&handle).copied();
            assert!(
                retired.is_some_and(|at| self.quiesces >= at + 2),
                "handle {handle} released at quiesce {} but retired at {retired:?}",
                self.quiesces
            );
        }
        self.released.push(handle);
    }
}

// ---- the reference model ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Interpreted,
    Queued,
    Compiling,
    Compiled,
    Blacklisted,
    Invalidated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Code {
    handle: usize,
    tier: u8,
    table: Option<Table>,
}

#[derive(Clone, Debug)]
struct ModelBead {
    phase: Phase,
    generation: u32,
    code: Option<Code>,
    tier_cap: u8,
    bailouts: u32,
}

impl ModelBead {
    fn new() -> Self {
        Self { phase: Phase::Interpreted, generation: 0, code: None, tier_cap: MAX_TIER, bailouts: 0 }
    }

    fn rest(&self) -> Phase {
        if self.code.is_some() { Phase::Compiled } else { Phase::Interpreted }
    }

    fn public(&self) -> BeadState {
        match self.phase {
            Phase::Interpreted => BeadState::Interpreted,
            Phase::Queued => BeadState::Queued,
            Phase::Compiling => BeadState::Compiling,
            Phase::Compiled => BeadState::Compiled(self.code.expect("Compiled has code").tier),
            Phase::Blacklisted => BeadState::Blacklisted,
            Phase::Invalidated => BeadState::Invalidated,
        }
    }

    fn bump_generation(&mut self) {
        self.generation = (self.generation + 1) & 0xFF_FFFF;
    }
}

#[derive(Clone, Copy, Debug)]
struct ModelEntry {
    bead: usize,
    generation: u32,
    tier: u8,
    kind: JobKind,
    priority: u32,
    sequence: u32,
}

/// A claimed job as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ticket {
    bead: usize,
    generation: u32,
    tier: u8,
    kind: JobKind,
    reserved: bool,
}

struct Model {
    queue_capacity: usize,
    /// `Broker::set_queue_limit`, clamped to `1..=queue_capacity`.
    queue_limit: usize,
    retire_capacity: usize,
    max_tier: u8,
    beads: Vec<ModelBead>,
    /// Every queued entry, stale ones included (the broker drops those when popped).
    queue: Vec<ModelEntry>,
    next_sequence: u32,
    held: Vec<Ticket>,
    /// Retired handles with the epoch they were retired in, oldest first.
    retired: VecDeque<(usize, u32)>,
    epoch: u32,
    created: usize,
    failing: bool,
    wake_pending: bool,
    wakes: u32,
    stats: Stats,
    // Expected this operation (compared and cleared after each).
    released: Vec<usize>,
    requests: Vec<Request>,
    hooks: Vec<(usize, u8, JobKind)>,
}

impl Model {
    fn new(beads: usize, queue_capacity: usize, retire_capacity: usize, max_tier: u8) -> Self {
        Self {
            queue_capacity,
            queue_limit: queue_capacity,
            retire_capacity,
            max_tier,
            beads: vec![ModelBead::new(); beads],
            queue: Vec::new(),
            next_sequence: 0,
            held: Vec::new(),
            retired: VecDeque::new(),
            epoch: 0,
            created: 0,
            failing: false,
            wake_pending: false,
            wakes: 0,
            stats: Stats::default(),
            released: Vec::new(),
            requests: Vec::new(),
            hooks: Vec::new(),
        }
    }

    fn final_tier(&self, bead: usize) -> u8 {
        self.max_tier.min(self.beads[bead].tier_cap)
    }

    fn entry(&self, bead: usize) -> Option<NonNull<()>> {
        self.beads[bead].code.map(|code| entry_of(code.handle))
    }

    /// Retire-ring slots neither used nor reserved by a claimed job.
    fn free(&self) -> usize {
        let reserved = self.held.iter().filter(|ticket| ticket.reserved).count();
        let used = self.retired.len() + reserved;
        assert!(used <= self.retire_capacity, "retire ring over capacity: {used}");
        self.retire_capacity - used
    }

    fn retire(&mut self, code: Option<Code>) {
        if let Some(code) = code {
            self.retired.push_back((code.handle, self.epoch));
            self.stats.retired += 1;
        }
    }

    fn wake(&mut self) {
        if !self.wake_pending {
            self.wake_pending = true;
            self.wakes += 1;
        }
    }

    /// The stats the broker must have shown the policy for `bead`.
    fn check_stats(&self, bead: usize, stats: &HotnessStats) {
        let model = &self.beads[bead];
        assert!(matches!(model.phase, Phase::Interpreted | Phase::Compiled), "policy asked in {:?}", model.phase);
        assert_eq!(stats.tier, model.code.map(|code| code.tier), "stats.tier");
        assert_eq!(stats.tier_cap, self.final_tier(bead), "stats.tier_cap");
        assert_eq!(stats.queue_len, self.queue.len(), "stats.queue_len");
        assert_eq!(stats.queue_capacity, self.queue_limit, "stats.queue_capacity");
    }

    fn promote(&mut self, bead: usize, tier: u8, priority: u32, kind: JobKind) -> Result<(), KilnError> {
        let tier = tier.min(self.final_tier(bead));
        let model = &self.beads[bead];
        assert!(matches!(model.phase, Phase::Interpreted | Phase::Compiled), "promoted from {:?}", model.phase);
        if model.code.is_some_and(|code| tier <= code.tier) {
            return Ok(()); // Nothing above the installed code: it becomes final.
        }
        self.hooks.push((bead, tier, kind));
        if self.queue.len() < self.queue_limit {
            let generation = model.generation;
            let sequence = self.next_sequence;
            self.queue.push(ModelEntry { bead, generation, tier, kind, priority, sequence });
            self.next_sequence = self.next_sequence.wrapping_add(1);
            self.beads[bead].phase = Phase::Queued;
            self.stats.promotions += 1;
            self.wake();
            Ok(())
        } else {
            self.stats.queue_full += 1;
            Err(KilnError::QueueFull)
        }
    }

    /// Replays what the policies were asked during one `on_invoke` (`site`
    /// `None`) or `on_backedge` at `site` of `bead`.
    fn consult(&mut self, bead: usize, site: Option<u64>, log: &mut VecDeque<Consulted>) {
        while let Some(consulted) = log.pop_front() {
            match consulted {
                Consulted::Decide(stats, decision) => {
                    assert!(site.is_none(), "call policy asked during a back-edge");
                    self.check_stats(bead, &stats);
                    if let Decision::Promote { tier, priority } = decision {
                        let _ = self.promote(bead, tier, priority, JobKind::Invoke);
                    }
                }
                Consulted::DecideBackedge(stats, decision) => {
                    let site = site.expect("back-edge policy asked during a call");
                    self.check_stats(bead, &stats);
                    if let Decision::Promote { tier, priority } = decision {
                        let _ = self.promote(bead, tier, priority, JobKind::Osr { site });
                    }
                }
                Consulted::Decay(after) => {
                    let model = &mut self.beads[bead];
                    assert_eq!(model.phase, Phase::Blacklisted, "decay asked outside a blacklist");
                    if after.is_some() {
                        model.phase = Phase::Interpreted;
                        model.bailouts = 0;
                    }
                }
                Consulted::Bailout(..) => panic!("deopt policy asked during a call: {consulted:?}"),
            }
        }
    }

    /// Moves `bead` to the state a deopt decision asks for.
    fn apply_decision(&mut self, bead: usize, decision: DeoptDecision, log: &mut VecDeque<Consulted>) {
        let model = &mut self.beads[bead];
        let rest = model.rest();
        match decision {
            DeoptDecision::Recompile | DeoptDecision::PauseRecompile { .. } => model.phase = rest,
            DeoptDecision::RevertToTier(cap) => {
                model.tier_cap = cap.min(MAX_TIER);
                model.phase = rest;
            }
            DeoptDecision::Blacklist => match model.code {
                Some(code) => {
                    model.tier_cap = code.tier;
                    model.phase = rest;
                }
                None => {
                    model.phase = Phase::Blacklisted;
                    assert!(matches!(log.pop_front(), Some(Consulted::Decay(_))), "blacklist arms its decay");
                }
            },
        }
    }

    fn claim(&mut self) -> (Result<Ticket, ClaimError>, u32) {
        let mut dropped = 0;
        loop {
            let next = (0..self.queue.len()).max_by(|&a, &b| {
                let (a, b) = (&self.queue[a], &self.queue[b]);
                a.priority.cmp(&b.priority).then(b.sequence.cmp(&a.sequence))
            });
            let Some(index) = next else { return (Err(ClaimError::Empty), dropped) };
            let entry = self.queue.remove(index);
            let model = &self.beads[entry.bead];
            if model.phase != Phase::Queued || model.generation != entry.generation {
                dropped += 1;
                self.stats.stale_jobs += 1;
                continue;
            }
            let reserved = model.code.is_some();
            if reserved && self.free() == 0 {
                self.queue.push(ModelEntry { sequence: self.next_sequence, ..entry });
                self.next_sequence = self.next_sequence.wrapping_add(1);
                return (Err(ClaimError::RetireFull), dropped);
            }
            self.beads[entry.bead].phase = Phase::Compiling;
            let ticket =
                Ticket { bead: entry.bead, generation: entry.generation, tier: entry.tier, kind: entry.kind, reserved };
            return (Ok(ticket), dropped);
        }
    }

    /// A job ends with `result` (code to publish, or a failed compile).
    fn finish(&mut self, ticket: Ticket, result: Option<Code>, log: &mut VecDeque<Consulted>) -> JobOutcome {
        let bead = ticket.bead;
        let current = self.beads[bead].phase == Phase::Compiling && self.beads[bead].generation == ticket.generation;
        if !current {
            self.stats.stale_results += 1;
            return JobOutcome::Stale;
        }
        match result {
            Some(code) => {
                let is_final = ticket.tier >= self.final_tier(bead);
                let old = self.beads[bead].code.replace(code);
                self.retire(old);
                self.beads[bead].phase = Phase::Compiled;
                self.stats.compiles += 1;
                if !is_final {
                    match log.pop_front() {
                        Some(Consulted::Decide(stats, _)) => self.check_stats(bead, &stats),
                        other => panic!("a non-final publish asks the policy, got {other:?}"),
                    }
                }
                JobOutcome::Published
            }
            None => {
                let model = &mut self.beads[bead];
                model.bailouts = (model.bailouts + 1).min(0xFFFF);
                let Some(Consulted::Bailout(bailout, decision)) = log.pop_front() else {
                    panic!("a failed compile asks the deopt policy");
                };
                assert_eq!(bailout.reason, BailoutReason::CompileFailed);
                assert_eq!((bailout.bailouts, bailout.tier), (model.bailouts, ticket.tier));
                self.apply_decision(bead, decision, log);
                self.stats.failures += 1;
                JobOutcome::Failed
            }
        }
    }

    /// `Job::run` with the fake JIT.
    fn run(&mut self, ticket: Ticket, log: &mut VecDeque<Consulted>) -> JobOutcome {
        self.requests.push(Request {
            bead: ticket.bead,
            generation: ticket.generation,
            tier: ticket.tier,
            kind: ticket.kind,
        });
        let result = (!self.failing).then(|| {
            self.created += 1;
            let table = matches!(ticket.kind, JobKind::Osr { .. }).then_some(Table::A);
            Code { handle: self.created, tier: ticket.tier, table }
        });
        let outcome = self.finish(ticket, result, log);
        if let (JobOutcome::Stale, Some(code)) = (outcome, result) {
            self.released.push(code.handle); // Stale results are released at once.
        }
        outcome
    }

    fn abandon(&mut self, ticket: Ticket) {
        let model = &mut self.beads[ticket.bead];
        if model.phase == Phase::Compiling && model.generation == ticket.generation {
            model.phase = model.rest();
        }
        self.stats.abandoned += 1;
    }

    fn pump(&mut self, max_jobs: u32, log: &mut VecDeque<Consulted>) -> PumpReport {
        self.wake_pending = false;
        let mut report = PumpReport::default();
        loop {
            if report.ran >= max_jobs {
                report.stop = PumpStop::JobLimit;
                break;
            }
            let (claimed, dropped) = self.claim();
            report.dropped += dropped;
            match claimed {
                Ok(ticket) => {
                    report.ran += 1;
                    match self.run(ticket, log) {
                        JobOutcome::Published => report.published += 1,
                        JobOutcome::Failed => report.failed += 1,
                        JobOutcome::Stale => report.stale += 1,
                    }
                }
                Err(ClaimError::Empty) => {
                    report.stop = PumpStop::Idle;
                    break;
                }
                Err(ClaimError::RetireFull) => {
                    report.stop = PumpStop::RetireFull;
                    break;
                }
            }
        }
        report.remaining = self.queue.len() as u32;
        if report.remaining > 0 && report.stop == PumpStop::JobLimit {
            self.wake();
        }
        report
    }

    fn swap(&mut self, bead: usize, code: Code) -> Result<(), KilnError> {
        if code.tier > MAX_TIER {
            return Err(KilnError::TierOutOfRange);
        }
        if self.beads[bead].phase == Phase::Invalidated {
            return Err(KilnError::Invalidated);
        }
        self.change_code(bead, Some(code), Phase::Compiled)?;
        Ok(())
    }

    /// Replaces the bead's code (retiring the old one; refused if that needs
    /// a retire slot and none is free), moves it to `phase` and bumps its
    /// generation.
    fn change_code(&mut self, bead: usize, code: Option<Code>, phase: Phase) -> Result<&mut ModelBead, KilnError> {
        if self.beads[bead].code.is_some() && self.free() == 0 {
            return Err(KilnError::RetireFull);
        }
        let old = std::mem::replace(&mut self.beads[bead].code, code);
        self.retire(old);
        let model = &mut self.beads[bead];
        model.bump_generation();
        model.phase = phase;
        Ok(model)
    }

    fn invalidate(&mut self, bead: usize) -> Result<(), KilnError> {
        if self.beads[bead].phase == Phase::Invalidated {
            return Err(KilnError::AlreadyInvalidated);
        }
        self.change_code(bead, None, Phase::Invalidated)?;
        self.stats.invalidations += 1;
        Ok(())
    }

    fn reload(&mut self, bead: usize) -> Result<(), KilnError> {
        if self.beads[bead].phase == Phase::Invalidated {
            return Err(KilnError::Invalidated);
        }
        let model = self.change_code(bead, None, Phase::Interpreted)?;
        model.bailouts = 0;
        model.tier_cap = MAX_TIER;
        Ok(())
    }

    fn bailout(&mut self, bead: usize, log: &mut VecDeque<Consulted>) -> Result<DeoptDecision, KilnError> {
        let model = &self.beads[bead];
        if model.phase == Phase::Invalidated {
            return Err(KilnError::Invalidated);
        }
        let Some(code) = model.code else { return Err(KilnError::NotCompiled) };
        if self.free() == 0 {
            // The policy may have been asked before the refusal (it decides
            // outside the lock); the refusal must change nothing else.
            if let Some(Consulted::Bailout(..)) = log.front() {
                log.pop_front();
            }
            return Err(KilnError::RetireFull);
        }
        let model = &mut self.beads[bead];
        model.bailouts = (model.bailouts + 1).min(0xFFFF);
        let Some(Consulted::Bailout(bailout, decision)) = log.pop_front() else {
            panic!("a bailout asks the deopt policy");
        };
        assert!(matches!(bailout.reason, BailoutReason::Guard { .. }));
        assert_eq!((bailout.bailouts, bailout.tier), (model.bailouts, code.tier));
        let old = model.code.take();
        model.bump_generation();
        self.retire(old);
        self.apply_decision(bead, decision, log);
        self.stats.bailouts += 1;
        Ok(decision)
    }

    fn submit(&mut self, bead: usize, tier: u8, priority: u32, kind: JobKind) -> Result<(), KilnError> {
        if tier > MAX_TIER {
            return Err(KilnError::TierOutOfRange);
        }
        match self.beads[bead].phase {
            Phase::Interpreted | Phase::Compiled => self.promote(bead, tier, priority, kind),
            Phase::Queued | Phase::Compiling => Err(KilnError::AlreadyQueued),
            Phase::Blacklisted => Err(KilnError::Blacklisted),
            Phase::Invalidated => Err(KilnError::Invalidated),
        }
    }

    fn blacklist(&mut self, bead: usize, log: &mut VecDeque<Consulted>) -> Result<(), KilnError> {
        if self.beads[bead].phase == Phase::Invalidated {
            return Err(KilnError::Invalidated);
        }
        // The phase is the deopt decision's to set.
        let phase = self.beads[bead].phase;
        self.change_code(bead, None, phase)?;
        self.apply_decision(bead, DeoptDecision::Blacklist, log);
        Ok(())
    }

    fn quiesce(&mut self) -> usize {
        self.epoch = self.epoch.wrapping_add(1);
        let mut released = 0;
        while let Some(&(handle, retired)) = self.retired.front() {
            if self.epoch.wrapping_sub(retired) < 2 {
                break;
            }
            self.retired.pop_front();
            assert!(self.beads.iter().all(|bead| bead.code.is_none_or(|code| code.handle != handle)));
            self.released.push(handle);
            released += 1;
        }
        self.stats.released += released as u32;
        released
    }

    fn cancel_queued(&mut self) -> usize {
        let cancelled = self.queue.len();
        for entry in std::mem::take(&mut self.queue) {
            let model = &mut self.beads[entry.bead];
            if model.phase == Phase::Queued && model.generation == entry.generation {
                model.phase = model.rest();
            }
        }
        cancelled
    }
}

// ---- operations ----

#[derive(Clone, Debug)]
enum Op {
    Invoke { bead: usize, calls: u32 },
    Backedge { bead: usize, site: usize, times: u32 },
    Pump { jobs: Option<u32> },
    Claim,
    RunHeld(usize),
    PublishHeld { job: usize, table: Option<Table> },
    FailHeld(usize),
    DropHeld(usize),
    Invalidate(usize),
    Reload(usize),
    Bailout(usize),
    Blacklist(usize),
    Swap { bead: usize, tier: u8, table: Option<Table>, with_osr: bool },
    Submit { bead: usize, tier: u8, osr_site: Option<usize> },
    Quiesce,
    CancelQueued,
    CompileFails(bool),
    QueueLimit(usize),
}

fn table() -> impl Strategy<Value = Option<Table>> {
    prop_oneof![Just(None), Just(Some(Table::A)), Just(Some(Table::B))]
}

/// Tiers for swaps and submits: the ladder's two, one above it, one out of range.
fn tier() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8), 1 => Just(MAX_TIER + 1)]
}

fn op() -> impl Strategy<Value = Op> {
    let bead = 0..4usize;
    prop_oneof![
        28 => (bead.clone(), 1..=6u32).prop_map(|(bead, calls)| Op::Invoke { bead, calls }),
        8 => (bead.clone(), 0..SITES.len(), 1..=6u32).prop_map(|(bead, site, times)| Op::Backedge { bead, site, times }),
        10 => prop::option::of(0..=3u32).prop_map(|jobs| Op::Pump { jobs }),
        8 => Just(Op::Claim),
        4 => (0..4usize).prop_map(Op::RunHeld),
        2 => (0..4usize, table()).prop_map(|(job, table)| Op::PublishHeld { job, table }),
        2 => (0..4usize).prop_map(Op::FailHeld),
        4 => (0..4usize).prop_map(Op::DropHeld),
        1 => bead.clone().prop_map(Op::Invalidate),
        4 => bead.clone().prop_map(Op::Reload),
        6 => bead.clone().prop_map(Op::Bailout),
        1 => bead.clone().prop_map(Op::Blacklist),
        6 => (bead.clone(), tier(), table(), any::<bool>())
            .prop_map(|(bead, tier, table, with_osr)| Op::Swap { bead, tier, table, with_osr }),
        4 => (bead, tier(), prop::option::of(0..SITES.len()))
            .prop_map(|(bead, tier, osr_site)| Op::Submit { bead, tier, osr_site }),
        10 => Just(Op::Quiesce),
        2 => Just(Op::CancelQueued),
        4 => any::<bool>().prop_map(Op::CompileFails),
        1 => (0..=5usize).prop_map(Op::QueueLimit),
    ]
}

#[derive(Clone, Debug)]
struct Setup {
    beads: usize,
    thresholds: [u32; 2],
    osr_threshold: u32,
    cooldown: u32,
    deopt: DeoptChoice,
}

fn setup() -> impl Strategy<Value = Setup> {
    let deopt = prop_oneof![
        (0..=2u32).prop_map(DeoptChoice::Threshold),
        Just(DeoptChoice::Tiered),
        Just(DeoptChoice::Backoff),
        (0..=1u32, 1..=4u32).prop_map(|(limit, after)| DeoptChoice::Decay { limit, after }),
    ];
    (3..=4usize, 1..=4u32, 1..=8u32, 1..=8u32, 1..=6u32, deopt).prop_map(
        |(beads, first, step, osr_threshold, cooldown, deopt)| Setup {
            beads,
            thresholds: [first, first + step],
            osr_threshold,
            cooldown,
            deopt,
        },
    )
}

// ---- the harness: real broker and model, step by step ----

type TestBroker<const QUEUE: usize, const RETIRE: usize> =
    Broker<Handle, ModelPolicy, ModelDeopt, CountingPump, NoEvents, QUEUE, RETIRE>;

struct Harness<'b, const QUEUE: usize, const RETIRE: usize> {
    broker: &'b TestBroker<QUEUE, RETIRE>,
    handles: Vec<Handle>,
    jit: FakeJit,
    held: Vec<Job<'b, Handle>>,
    log: Log,
    model: Model,
    hooks: Vec<(usize, u8, JobKind)>,
}

impl<'b, const QUEUE: usize, const RETIRE: usize> Harness<'b, QUEUE, RETIRE> {
    fn take_log(&self) -> VecDeque<Consulted> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    fn invoke(&mut self, bead: usize) {
        let mut hook = None;
        let got = self.broker.on_invoke_with(&self.handles[bead], |tier, kind| hook = Some((bead, tier, kind)));
        self.hooks.extend(hook);
        let mut log = self.take_log();
        self.model.consult(bead, None, &mut log);
        assert!(log.is_empty(), "unexpected policy calls: {log:?}");
        assert_eq!(got, self.model.entry(bead), "on_invoke's entry");
    }

    fn backedge(&mut self, bead: usize, site: u64) {
        let mut hook = None;
        let got = self.broker.on_backedge_with(&self.handles[bead], site, |tier, kind| hook = Some((bead, tier, kind)));
        self.hooks.extend(hook);
        let mut log = self.take_log();
        self.model.consult(bead, Some(site), &mut log);
        assert!(log.is_empty(), "unexpected policy calls: {log:?}");
        let table = self.model.beads[bead].code.and_then(|code| code.table);
        assert_eq!(got, Table::lookup(table, site), "on_backedge's OSR entry");
    }

    /// Removes held job `index` (modulo the count) from both sides.
    fn take_held(&mut self, index: usize) -> Option<(Job<'b, Handle>, Ticket)> {
        if self.held.is_empty() {
            return None;
        }
        let index = index % self.held.len();
        Some((self.held.remove(index), self.model.held.remove(index)))
    }

    fn step(&mut self, op: &Op) {
        let beads = self.handles.len();
        match *op {
            Op::Invoke { bead, calls } => {
                for _ in 0..calls {
                    self.invoke(bead % beads);
                }
            }
            Op::Backedge { bead, site, times } => {
                for _ in 0..times {
                    self.backedge(bead % beads, SITES[site]);
                }
            }
            Op::Pump { jobs } => {
                let budget = jobs.map_or(Budget::unlimited(), Budget::jobs);
                let report = self.broker.pump(&mut self.jit, budget);
                let mut log = self.take_log();
                let expected = self.model.pump(jobs.unwrap_or(u32::MAX), &mut log);
                assert_eq!(report, expected, "pump report");
                assert!(log.is_empty(), "unexpected policy calls: {log:?}");
            }
            Op::Claim => match (self.broker.claim(), {
                // A claiming host drains like a pumping one: the claim clears the wake flag.
                self.model.wake_pending = false;
                self.model.claim().0
            }) {
                (Ok(job), Ok(ticket)) => {
                    let request = job.request();
                    let seen = Request {
                        bead: self.jit.index(request.bead),
                        generation: request.generation.get(),
                        tier: request.tier,
                        kind: request.kind,
                    };
                    let want = Request {
                        bead: ticket.bead,
                        generation: ticket.generation,
                        tier: ticket.tier,
                        kind: ticket.kind,
                    };
                    assert_eq!(seen, want, "claimed job");
                    self.held.push(job);
                    self.model.held.push(ticket);
                }
                (Err(error), Err(expected)) => assert_eq!(error, expected, "claim error"),
                (real, model) => panic!("claim: real {real:?}, model {model:?}"),
            },
            Op::RunHeld(index) => {
                if let Some((job, ticket)) = self.take_held(index) {
                    let outcome = job.run(&mut self.jit);
                    let mut log = self.take_log();
                    assert_eq!(outcome, self.model.run(ticket, &mut log), "held job outcome");
                    assert!(log.is_empty(), "unexpected policy calls: {log:?}");
                }
            }
            Op::PublishHeld { job: index, table } => {
                if let Some((job, ticket)) = self.take_held(index) {
                    let handle = self.jit.fresh();
                    self.model.created += 1;
                    self.jit.origin.insert(handle, (ticket.bead, ticket.generation));
                    let published = job.publish(make_code(handle, table), None);
                    let mut log = self.take_log();
                    let code = Code { handle, tier: ticket.tier, table };
                    match (published, self.model.finish(ticket, Some(code), &mut log)) {
                        (Ok(()), JobOutcome::Published) => {}
                        (Err(stale), JobOutcome::Stale) => {
                            assert_eq!(stale.handle().get(), handle, "the stale code comes back");
                            self.jit.release(stale.into_handle());
                            self.model.released.push(handle);
                        }
                        (real, model) => panic!("publish: real {real:?}, model {model:?}"),
                    }
                    assert!(log.is_empty(), "unexpected policy calls: {log:?}");
                }
            }
            Op::FailHeld(index) => {
                if let Some((job, ticket)) = self.take_held(index) {
                    job.fail();
                    let mut log = self.take_log();
                    self.model.finish(ticket, None, &mut log);
                    assert!(log.is_empty(), "unexpected policy calls: {log:?}");
                }
            }
            Op::DropHeld(index) => {
                if let Some((job, ticket)) = self.take_held(index) {
                    drop(job);
                    self.model.abandon(ticket);
                }
            }
            Op::Invalidate(bead) => {
                let bead = bead % beads;
                assert_eq!(self.broker.invalidate(&self.handles[bead]), self.model.invalidate(bead), "invalidate");
            }
            Op::Reload(bead) => {
                let bead = bead % beads;
                assert_eq!(self.broker.reload(&self.handles[bead]), self.model.reload(bead), "reload");
            }
            Op::Bailout(bead) => {
                let bead = bead % beads;
                let reason = BailoutReason::Guard { guard_id: 1, pc_offset: 8 };
                let result = self.broker.record_bailout(&self.handles[bead], reason);
                let mut log = self.take_log();
                assert_eq!(result, self.model.bailout(bead, &mut log), "record_bailout");
                assert!(log.is_empty(), "unexpected policy calls: {log:?}");
            }
            Op::Blacklist(bead) => {
                let bead = bead % beads;
                let result = self.broker.blacklist(&self.handles[bead]);
                let mut log = self.take_log();
                assert_eq!(result, self.model.blacklist(bead, &mut log), "blacklist");
                assert!(log.is_empty(), "unexpected policy calls: {log:?}");
            }
            Op::Swap { bead, tier, table, with_osr } => {
                let bead = bead % beads;
                let handle = self.jit.fresh();
                self.model.created += 1;
                let compiled = make_code(handle, table);
                let result = if with_osr {
                    self.broker.swap_compiled_with_osr(&self.handles[bead], compiled, tier)
                } else {
                    self.broker.swap_compiled(&self.handles[bead], compiled, tier)
                };
                let published_table = if with_osr { table } else { None };
                match (result, self.model.swap(bead, Code { handle, tier, table: published_table })) {
                    (Ok(()), Ok(())) => {
                        self.jit.origin.insert(handle, (bead, self.model.beads[bead].generation));
                    }
                    (Err(refused), Err(expected)) => {
                        assert_eq!(refused.error, expected, "swap error");
                        let value = refused.into_value();
                        assert_eq!((value.handle().get(), value.entry()), (handle, entry_of(handle)), "handed back");
                        assert_eq!(value.has_osr(), table.is_some(), "handed back untouched");
                        self.jit.release(value.into_handle());
                        self.model.released.push(handle);
                    }
                    (real, model) => panic!("swap: real {real:?}, model {model:?}"),
                }
            }
            Op::Submit { bead, tier, osr_site } => {
                let bead = bead % beads;
                let kind = osr_site.map_or(JobKind::Invoke, |site| JobKind::Osr { site: SITES[site] });
                let record = self.handles[bead].bead();
                let priority = record.invocation_count().saturating_add(record.backedge_count());
                let mut hook = None;
                let result = self.broker.submit_with(&self.handles[bead], tier, kind, |tier, kind| {
                    hook = Some((bead, tier, kind));
                });
                self.hooks.extend(hook);
                assert_eq!(result, self.model.submit(bead, tier, priority, kind), "submit");
            }
            Op::Quiesce => {
                self.jit.quiesces += 1;
                assert_eq!(self.broker.quiesce(&mut self.jit), self.model.quiesce(), "quiesce");
            }
            Op::CancelQueued => {
                assert_eq!(self.broker.cancel_queued(), self.model.cancel_queued(), "cancel_queued");
            }
            Op::CompileFails(failing) => {
                self.jit.failing = failing;
                self.model.failing = failing;
            }
            Op::QueueLimit(limit) => {
                self.broker.set_queue_limit(limit);
                self.model.queue_limit = limit.clamp(1, self.model.queue_capacity);
            }
        }
        self.check();
    }

    /// Everything observable matches the model, and the invariants hold.
    fn check(&mut self) {
        self.jit.observe();
        let model = &mut self.model;
        for (index, handle) in self.handles.iter().enumerate() {
            let (real, expected) = (handle.bead(), &model.beads[index]);
            assert_eq!(real.state(), expected.public(), "bead {index}: state");
            assert_eq!(real.generation().get(), expected.generation, "bead {index}: generation");
            assert_eq!(real.compiled(), expected.code.map(|code| entry_of(code.handle)), "bead {index}: entry");
            assert_eq!(real.tier(), expected.code.map(|code| code.tier), "bead {index}: tier");
            assert_eq!(real.tier_cap(), expected.tier_cap, "bead {index}: tier cap");
            assert_eq!(real.bailout_count(), expected.bailouts, "bead {index}: bailouts");
            assert_eq!(real.is_invalidated(), expected.phase == Phase::Invalidated);
            assert_eq!(real.is_blacklisted(), expected.phase == Phase::Blacklisted);
            for site in SITES {
                let table = expected.code.and_then(|code| code.table);
                assert_eq!(real.osr_entry(site), Table::lookup(table, site), "bead {index}: OSR entry at {site}");
            }

            // Stale results are never installed: installed code was made for
            // this bead at its current generation, and is not released.
            if let Some(entry) = real.compiled() {
                let code = handle_of(entry);
                assert_eq!(self.jit.origin.get(&code), Some(&(index, real.generation().get())), "bead {index}");
                assert!(!self.jit.released_ever.contains(&code), "bead {index} runs released code {code}");
            }

            // One winner; Queued / Compiling only while its job exists.
            let current_entries = model
                .queue
                .iter()
                .filter(|entry| entry.bead == index && entry.generation == expected.generation)
                .count();
            let current_jobs = model
                .held
                .iter()
                .filter(|ticket| ticket.bead == index && ticket.generation == expected.generation)
                .count();
            assert_eq!(current_entries, usize::from(expected.phase == Phase::Queued), "bead {index}: queue entries");
            assert_eq!(current_jobs, usize::from(expected.phase == Phase::Compiling), "bead {index}: claimed jobs");
        }

        // The real held jobs are the model's, and no two are current for one bead.
        assert_eq!(self.held.len(), model.held.len());
        let mut in_flight = BTreeSet::new();
        for (job, ticket) in self.held.iter().zip(&model.held) {
            let request = job.request();
            let bead = self.jit.index(request.bead);
            assert_eq!((bead, request.generation.get(), request.tier, request.kind), {
                (ticket.bead, ticket.generation, ticket.tier, ticket.kind)
            });
            if handle_generation(&self.handles[bead]) == ticket.generation
                && self.handles[bead].bead().state() == BeadState::Compiling
            {
                assert!(in_flight.insert(bead), "two current jobs for bead {bead}");
            }
        }

        let mut stats = model.stats;
        stats.queue_depth = model.queue.len() as u32;
        stats.retire_depth = model.retired.len() as u32;
        stats.epoch = model.epoch;
        assert_eq!(self.broker.stats(), stats, "stats");
        assert_eq!(self.broker.queue_len(), model.queue.len(), "queue_len");
        assert_eq!(self.broker.queue_capacity(), model.queue_limit, "queue limit");
        let _ = model.free(); // asserts the ring is within capacity
        assert_eq!(self.broker.pump_hook().wakes.get(), model.wakes, "wake-ups");
        assert_eq!(std::mem::take(&mut self.hooks), std::mem::take(&mut model.hooks), "promotion hooks");
        assert_eq!(std::mem::take(&mut self.jit.requests), std::mem::take(&mut model.requests), "compile requests");
        assert_eq!(std::mem::take(&mut self.jit.released), std::mem::take(&mut model.released), "released handles");
        assert_eq!(self.jit.created, model.created, "code created");
    }

    /// Drops held jobs, invalidates every bead, drains queue and ring, and
    /// checks that nothing leaked.
    fn drain(&mut self) {
        while !self.held.is_empty() {
            self.step(&Op::DropHeld(0));
        }
        for bead in 0..self.handles.len() {
            if self.model.beads[bead].phase == Phase::Invalidated {
                continue;
            }
            while self.model.beads[bead].code.is_some() && self.model.free() == 0 {
                self.step(&Op::Quiesce);
            }
            self.step(&Op::Invalidate(bead));
            assert_eq!(self.model.beads[bead].phase, Phase::Invalidated);
        }
        self.step(&Op::Pump { jobs: None });
        assert_eq!(self.broker.queue_len(), 0, "stale entries dropped");
        self.step(&Op::Quiesce);
        self.step(&Op::Quiesce);
        assert_eq!(self.broker.stats().retire_depth, 0, "retire ring drained");

        let created: BTreeSet<usize> = (1..=self.jit.created).collect();
        assert_eq!(self.jit.released_ever, created, "every code handle released exactly once");
        for (index, handle) in self.handles.iter().enumerate() {
            // Ours and the fake JIT's: the broker kept no clone.
            assert_eq!(Arc::strong_count(&handle.0), 2, "bead {index}: a handle clone leaked");
        }
    }
}

fn handle_generation(handle: &Handle) -> u32 {
    handle.bead().generation().get()
}

fn run_case<const QUEUE: usize, const RETIRE: usize>(setup: &Setup, ops: &[Op]) {
    let log: Log = Rc::default();
    let mut ladder = TierLadder::new(setup.thresholds);
    ladder.osr_threshold = setup.osr_threshold;
    let policy =
        ModelPolicy { ladder, cooldown: NonZeroU32::new(setup.cooldown).expect("cooldown >= 1"), log: log.clone() };
    let deopt = ModelDeopt { choice: setup.deopt, log: log.clone() };
    let broker: TestBroker<QUEUE, RETIRE> = Broker::new(policy, deopt, CountingPump::default(), NoEvents);
    let handles: Vec<Handle> = (0..setup.beads).map(|_| Handle(Arc::new(Bead::new(ptr::null_mut())))).collect();
    let jit = FakeJit {
        beads: handles.clone(),
        failing: false,
        created: 0,
        origin: BTreeMap::new(),
        requests: Vec::new(),
        released: Vec::new(),
        released_ever: BTreeSet::new(),
        quiesces: 0,
        seen_installed: BTreeSet::new(),
        seen_retired: BTreeMap::new(),
    };
    let max_tier = broker.policy().max_tier();
    let mut harness = Harness {
        broker: &broker,
        handles,
        jit,
        held: Vec::new(),
        log,
        model: Model::new(setup.beads, QUEUE, RETIRE, max_tier),
        hooks: Vec::new(),
    };
    harness.check();
    for op in ops {
        harness.step(op);
    }
    harness.drain();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Room for a job per bead; the retire ring fills after a few swaps.
    #[test]
    fn broker_matches_the_model_queue_4_retire_4(setup in setup(), ops in prop::collection::vec(op(), 1..=200)) {
        run_case::<4, 4>(&setup, &ops);
    }

    /// Queue and ring almost always full: QueueFull, RetireFull and claims
    /// held back for retire room on most steps.
    #[test]
    fn broker_matches_the_model_queue_2_retire_1(setup in setup(), ops in prop::collection::vec(op(), 1..=200)) {
        run_case::<2, 1>(&setup, &ops);
    }
}
