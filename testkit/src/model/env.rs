//! The broker's environment in a case: the bead handle, a fake JIT that
//! checks releases on its own, real kiln-core policies wrapped to log what
//! the broker asked them, and a pump that counts wake-ups.
//!
//! The fake JIT's release checks (once, never while installed, only two
//! quiesces after it was seen retired) come from what it observed of the
//! real beads, not from the reference model, so a model bug cannot hide a
//! broker bug there.

use core::cell::{Cell, RefCell};
use core::num::NonZeroU32;
use core::ptr::{self, NonNull};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use kiln_core::{
    Bailout, Bead, BeadRef, BlacklistDecay, CodeHandle, CompileRequest, Compiled, Compiler, Decision, DeoptDecision,
    DeoptPolicy, ExponentialBackoffPolicy, HotnessPolicy, HotnessStats, JobKind, ThresholdDeoptPolicy, TierLadder,
    TieredDeoptPolicy, WakeHook,
};

use super::op::{DeoptChoice, Table};

/// The bead handle the queue stores: an `Arc`, so the end of each case can
/// check that the broker dropped every clone it took.
#[derive(Clone, Debug)]
pub(crate) struct Handle(pub(crate) Arc<Bead>);

impl BeadRef for Handle {
    fn bead(&self) -> &Bead {
        &self.0
    }
}

const CODE_STRIDE: usize = 0x1000;

/// Code handle `n` has entry `n * CODE_STRIDE` (never called).
pub(crate) fn entry_of(handle: usize) -> NonNull<()> {
    NonNull::new(ptr::without_provenance_mut(CODE_STRIDE * handle)).expect("handles start at 1")
}

pub(crate) fn handle_of(entry: NonNull<()>) -> usize {
    entry.as_ptr().addr() / CODE_STRIDE
}

pub(crate) fn make_code(handle: usize, table: Option<Table>) -> Compiled {
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
pub(crate) enum Consulted {
    Decide(HotnessStats, Decision),
    DecideBackedge(HotnessStats, Decision),
    Bailout(Bailout, DeoptDecision),
    Decay(Option<NonZeroU32>),
}

pub(crate) type Log = Rc<RefCell<VecDeque<Consulted>>>;

/// A two-tier ladder that logs its decisions.
pub(crate) struct ModelPolicy {
    pub(crate) ladder: TierLadder<2>,
    pub(crate) cooldown: NonZeroU32,
    pub(crate) log: Log,
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

/// The chosen deopt policy, logging what it is asked.
pub(crate) struct ModelDeopt {
    pub(crate) choice: DeoptChoice,
    pub(crate) log: Log,
}

impl ModelDeopt {
    fn decay(limit: u32, after: u32) -> BlacklistDecay<ThresholdDeoptPolicy> {
        BlacklistDecay::new(ThresholdDeoptPolicy::new(limit), NonZeroU32::new(after.max(1)).expect("at least 1"))
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
pub(crate) struct CountingPump {
    pub(crate) wakes: Cell<u32>,
}

impl WakeHook for CountingPump {
    fn wake(&self) {
        self.wakes.set(self.wakes.get() + 1);
    }
}

/// What a compile was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) bead: usize,
    pub(crate) generation: u32,
    pub(crate) tier: u8,
    pub(crate) kind: JobKind,
}

/// A fake JIT. Code handles are unique (1, 2, ...) across compiles and
/// host-made code; OSR jobs get table A. It checks on its own that a
/// handle is released once, never while installed, and — if it was ever
/// seen installed — only once two quiesces passed since it was seen gone.
pub(crate) struct FakeJit {
    pub(crate) beads: Vec<Handle>,
    pub(crate) failing: bool,
    pub(crate) created: usize,
    /// Handle → (bead, generation) the code was made for.
    pub(crate) origin: BTreeMap<usize, (usize, u32)>,
    pub(crate) requests: Vec<Request>,
    pub(crate) released: Vec<usize>,
    pub(crate) released_ever: BTreeSet<usize>,
    /// Quiesce calls so far (bumped by the harness just before each).
    pub(crate) quiesces: u32,
    /// Handles observed installed after some operation.
    pub(crate) seen_installed: BTreeSet<usize>,
    /// Handles observed uninstalled, with the quiesce count at that point.
    pub(crate) seen_retired: BTreeMap<usize, u32>,
}

impl FakeJit {
    pub(crate) fn new(beads: Vec<Handle>) -> Self {
        Self {
            beads,
            failing: false,
            created: 0,
            origin: BTreeMap::new(),
            requests: Vec::new(),
            released: Vec::new(),
            released_ever: BTreeSet::new(),
            quiesces: 0,
            seen_installed: BTreeSet::new(),
            seen_retired: BTreeMap::new(),
        }
    }

    pub(crate) fn index(&self, bead: &Handle) -> usize {
        self.beads.iter().position(|known| Arc::ptr_eq(&known.0, &bead.0)).expect("a bead of this case")
    }

    pub(crate) fn fresh(&mut self) -> usize {
        self.created += 1;
        self.created
    }

    /// Records which handles are installed now (called after every operation).
    pub(crate) fn observe(&mut self) {
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
