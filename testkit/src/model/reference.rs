//! The reference model: a plain, sequential description of what kiln-core's
//! broker must do, written from its documented behaviour.
//!
//! It keeps its own copy of every bead (phase, generation, code and whether
//! it is final, tier cap, bailouts, calls and back-edges counted), the queue
//! (stale entries included, popped by priority then age), held jobs, the
//! retire ring with each entry's epoch, the wake flag and every `Stats`
//! counter. It never calls the broker, a bead or an OSR table to predict
//! anything: policy *decisions* are the one input it takes from outside,
//! replayed from the log the wrapped policies wrote (and it checks the stats
//! the broker showed them).

use std::collections::VecDeque;
use std::vec::Vec;

use core::ptr::NonNull;

use kiln_core::{
    BailoutReason, BeadState, ClaimError, Decision, DeoptDecision, HotnessStats, JobKind, JobOutcome, KilnError,
    MAX_TIER, PumpReport, PumpStop, Stats,
};

use super::env::{Consulted, Request, entry_of};
use super::op::Table;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Interpreted,
    Queued,
    Compiling,
    Compiled,
    Blacklisted,
    Invalidated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Code {
    pub(crate) handle: usize,
    pub(crate) tier: u8,
    pub(crate) table: Option<Table>,
}

#[derive(Clone, Debug)]
pub(crate) struct ModelBead {
    pub(crate) phase: Phase,
    pub(crate) generation: u32,
    pub(crate) code: Option<Code>,
    pub(crate) tier_cap: u8,
    pub(crate) bailouts: u32,
    /// Calls counted (`Bead::invocation_count`): every `on_invoke` that does
    /// not take the fast path.
    pub(crate) invocations: u32,
    /// Back-edges counted (weight 1 each): every `on_backedge` that finds no
    /// OSR entry for its site.
    pub(crate) backedges: u32,
    /// The installed code is final, so `on_invoke` returns it on the fast
    /// path without counting the call (warm code is counted toward the next
    /// tier).
    pub(crate) fast: bool,
}

impl ModelBead {
    pub(crate) fn new() -> Self {
        Self {
            phase: Phase::Interpreted,
            generation: 0,
            code: None,
            tier_cap: MAX_TIER,
            bailouts: 0,
            invocations: 0,
            backedges: 0,
            fast: false,
        }
    }

    pub(crate) fn rest(&self) -> Phase {
        if self.code.is_some() { Phase::Compiled } else { Phase::Interpreted }
    }

    pub(crate) fn public(&self) -> BeadState {
        match self.phase {
            Phase::Interpreted => BeadState::Interpreted,
            Phase::Queued => BeadState::Queued,
            Phase::Compiling => BeadState::Compiling,
            Phase::Compiled => BeadState::Compiled(self.code.expect("Compiled has code").tier),
            Phase::Blacklisted => BeadState::Blacklisted,
            Phase::Invalidated => BeadState::Invalidated,
        }
    }

    pub(crate) fn bump_generation(&mut self) {
        self.generation = (self.generation + 1) & 0xFF_FFFF;
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct ModelEntry {
    pub(crate) bead: usize,
    pub(crate) generation: u32,
    pub(crate) tier: u8,
    pub(crate) kind: JobKind,
    pub(crate) priority: u32,
    pub(crate) sequence: u32,
}

/// A claimed job as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) bead: usize,
    pub(crate) generation: u32,
    pub(crate) tier: u8,
    pub(crate) kind: JobKind,
    pub(crate) reserved: bool,
}

pub(crate) struct Model {
    pub(crate) queue_capacity: usize,
    /// `Broker::set_queue_limit`, clamped to `1..=queue_capacity`.
    pub(crate) queue_limit: usize,
    pub(crate) retire_capacity: usize,
    pub(crate) max_tier: u8,
    pub(crate) beads: Vec<ModelBead>,
    /// Every queued entry, stale ones included (the broker drops those when popped).
    pub(crate) queue: Vec<ModelEntry>,
    pub(crate) next_sequence: u32,
    pub(crate) held: Vec<Ticket>,
    /// Retired handles with the epoch they were retired in, oldest first.
    pub(crate) retired: VecDeque<(usize, u32)>,
    pub(crate) epoch: u32,
    pub(crate) created: usize,
    pub(crate) failing: bool,
    pub(crate) wake_pending: bool,
    pub(crate) wakes: u32,
    pub(crate) stats: Stats,
    // Expected this operation (compared and cleared after each).
    pub(crate) released: Vec<usize>,
    pub(crate) requests: Vec<Request>,
    pub(crate) hooks: Vec<(usize, u8, JobKind)>,
}

impl Model {
    pub(crate) fn new(beads: usize, queue_capacity: usize, retire_capacity: usize, max_tier: u8) -> Self {
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

    pub(crate) fn final_tier(&self, bead: usize) -> u8 {
        self.max_tier.min(self.beads[bead].tier_cap)
    }

    pub(crate) fn entry(&self, bead: usize) -> Option<NonNull<()>> {
        self.beads[bead].code.map(|code| entry_of(code.handle))
    }

    /// Retire-ring slots neither used nor reserved by a claimed job.
    pub(crate) fn free(&self) -> usize {
        let reserved = self.held.iter().filter(|ticket| ticket.reserved).count();
        let used = self.retired.len() + reserved;
        assert!(used <= self.retire_capacity, "retire ring over capacity: {used}");
        self.retire_capacity - used
    }

    pub(crate) fn retire(&mut self, code: Option<Code>) {
        if let Some(code) = code {
            self.retired.push_back((code.handle, self.epoch));
            self.stats.retired += 1;
        }
    }

    pub(crate) fn wake(&mut self) {
        if !self.wake_pending {
            self.wake_pending = true;
            self.wakes += 1;
        }
    }

    /// The stats the broker must have shown the policy for `bead`.
    pub(crate) fn check_stats(&self, bead: usize, stats: &HotnessStats) {
        let model = &self.beads[bead];
        assert!(matches!(model.phase, Phase::Interpreted | Phase::Compiled), "policy asked in {:?}", model.phase);
        assert_eq!(stats.tier, model.code.map(|code| code.tier), "stats.tier");
        assert_eq!(stats.tier_cap, self.final_tier(bead), "stats.tier_cap");
        assert_eq!(stats.queue_len, self.queue.len(), "stats.queue_len");
        assert_eq!(stats.queue_capacity, self.queue_limit, "stats.queue_capacity");
        assert_eq!(stats.invocations, model.invocations, "stats.invocations");
        assert_eq!(stats.backedges, model.backedges, "stats.backedges");
    }

    /// An `on_invoke` of `bead`: counted unless final code is installed.
    pub(crate) fn count_call(&mut self, bead: usize) {
        let model = &mut self.beads[bead];
        if !model.fast {
            model.invocations = model.invocations.wrapping_add(1);
        }
    }

    /// An `on_backedge` of `bead` at `site`: counted (weight 1, the
    /// ladder's) unless the installed code has an OSR entry there.
    pub(crate) fn count_backedge(&mut self, bead: usize, site: u64) {
        let model = &mut self.beads[bead];
        if Table::lookup(model.code.and_then(|code| code.table), site).is_none() {
            model.backedges = model.backedges.wrapping_add(1);
        }
    }

    /// The priority a `submit` queues with: calls plus back-edges.
    pub(crate) fn priority(&self, bead: usize) -> u32 {
        let model = &self.beads[bead];
        model.invocations.saturating_add(model.backedges)
    }

    pub(crate) fn promote(&mut self, bead: usize, tier: u8, priority: u32, kind: JobKind) -> Result<(), KilnError> {
        let tier = tier.min(self.final_tier(bead));
        let model = &self.beads[bead];
        assert!(matches!(model.phase, Phase::Interpreted | Phase::Compiled), "promoted from {:?}", model.phase);
        if model.code.is_some_and(|code| tier <= code.tier) {
            self.beads[bead].fast = true; // Nothing above the installed code: it becomes final.
            return Ok(());
        }
        let model = &self.beads[bead];
        self.hooks.push((bead, tier, kind));
        let generation = model.generation;
        if self.queue.len() >= self.queue_limit {
            // Full: the newcomer takes the place of the entry that would run
            // last, if it is more than twice as hot; otherwise it is refused.
            let coldest = (0..self.queue.len()).min_by(|&a, &b| {
                let (a, b) = (&self.queue[a], &self.queue[b]);
                a.priority.cmp(&b.priority).then(b.sequence.cmp(&a.sequence))
            });
            let Some(coldest) = coldest.filter(|&i| priority > self.queue[i].priority.saturating_mul(2)) else {
                self.stats.queue_full += 1;
                return Err(KilnError::QueueFull);
            };
            let evicted = self.queue.remove(coldest);
            let owner = &mut self.beads[evicted.bead];
            if owner.phase == Phase::Queued && owner.generation == evicted.generation {
                owner.phase = owner.rest();
            }
            self.stats.queue_full += 1;
        }
        let sequence = self.next_sequence;
        self.queue.push(ModelEntry { bead, generation, tier, kind, priority, sequence });
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.beads[bead].phase = Phase::Queued;
        self.stats.promotions += 1;
        self.wake();
        Ok(())
    }

    /// Replays what the policies were asked during one `on_invoke` (`site`
    /// `None`) or `on_backedge` at `site` of `bead`.
    pub(crate) fn consult(&mut self, bead: usize, site: Option<u64>, log: &mut VecDeque<Consulted>) {
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
    pub(crate) fn apply_decision(&mut self, bead: usize, decision: DeoptDecision, log: &mut VecDeque<Consulted>) {
        let model = &mut self.beads[bead];
        let rest = model.rest();
        match decision {
            DeoptDecision::Recompile | DeoptDecision::PauseRecompile { .. } => model.phase = rest,
            DeoptDecision::RevertToTier(cap) => {
                model.tier_cap = cap.min(MAX_TIER);
                model.phase = rest;
                if model.code.is_some_and(|code| code.tier >= cap) {
                    model.fast = true; // Installed code at or above the new cap is final.
                }
            }
            DeoptDecision::Blacklist => match model.code {
                Some(code) => {
                    model.tier_cap = code.tier;
                    model.phase = rest;
                    model.fast = true;
                }
                None => {
                    model.phase = Phase::Blacklisted;
                    assert!(matches!(log.pop_front(), Some(Consulted::Decay(_))), "blacklist arms its decay");
                }
            },
        }
    }

    pub(crate) fn claim(&mut self) -> (Result<Ticket, ClaimError>, u32) {
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
    pub(crate) fn finish(&mut self, ticket: Ticket, result: Option<Code>, log: &mut VecDeque<Consulted>) -> JobOutcome {
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
                self.beads[bead].fast = is_final;
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
                assert_eq!(bailout.invocations, model.invocations, "bailout.invocations");
                self.apply_decision(bead, decision, log);
                self.stats.failures += 1;
                JobOutcome::Failed
            }
        }
    }

    /// `Job::run` with the fake JIT.
    pub(crate) fn run(&mut self, ticket: Ticket, log: &mut VecDeque<Consulted>) -> JobOutcome {
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

    pub(crate) fn abandon(&mut self, ticket: Ticket) {
        let model = &mut self.beads[ticket.bead];
        if model.phase == Phase::Compiling && model.generation == ticket.generation {
            model.phase = model.rest();
        }
        self.stats.abandoned += 1;
    }

    pub(crate) fn pump(&mut self, max_jobs: u32, log: &mut VecDeque<Consulted>) -> PumpReport {
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

    pub(crate) fn swap(&mut self, bead: usize, code: Code) -> Result<(), KilnError> {
        if code.tier > MAX_TIER {
            return Err(KilnError::TierOutOfRange);
        }
        if self.beads[bead].phase == Phase::Invalidated {
            return Err(KilnError::Invalidated);
        }
        // Final if nothing above it may come (decided before the swap).
        let is_final = code.tier >= self.final_tier(bead);
        self.change_code(bead, Some(code), Phase::Compiled)?.fast = is_final;
        Ok(())
    }

    /// Replaces the bead's code (retiring the old one; refused if that needs
    /// a retire slot and none is free), moves it to `phase` and bumps its
    /// generation.
    pub(crate) fn change_code(
        &mut self,
        bead: usize,
        code: Option<Code>,
        phase: Phase,
    ) -> Result<&mut ModelBead, KilnError> {
        if self.beads[bead].code.is_some() && self.free() == 0 {
            return Err(KilnError::RetireFull);
        }
        let old = core::mem::replace(&mut self.beads[bead].code, code);
        self.retire(old);
        let model = &mut self.beads[bead];
        model.fast = false; // The caller says if new code is final.
        model.bump_generation();
        model.phase = phase;
        Ok(model)
    }

    pub(crate) fn invalidate(&mut self, bead: usize) -> Result<(), KilnError> {
        if self.beads[bead].phase == Phase::Invalidated {
            return Err(KilnError::AlreadyInvalidated);
        }
        self.change_code(bead, None, Phase::Invalidated)?;
        self.stats.invalidations += 1;
        Ok(())
    }

    pub(crate) fn reload(&mut self, bead: usize) -> Result<(), KilnError> {
        if self.beads[bead].phase == Phase::Invalidated {
            return Err(KilnError::Invalidated);
        }
        let model = self.change_code(bead, None, Phase::Interpreted)?;
        model.bailouts = 0;
        model.tier_cap = MAX_TIER;
        Ok(())
    }

    pub(crate) fn bailout(&mut self, bead: usize, log: &mut VecDeque<Consulted>) -> Result<DeoptDecision, KilnError> {
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
        assert_eq!(bailout.invocations, model.invocations, "bailout.invocations");
        let old = model.code.take();
        model.fast = false;
        model.bump_generation();
        self.retire(old);
        self.apply_decision(bead, decision, log);
        self.stats.bailouts += 1;
        Ok(decision)
    }

    pub(crate) fn submit(&mut self, bead: usize, tier: u8, priority: u32, kind: JobKind) -> Result<(), KilnError> {
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

    pub(crate) fn blacklist(&mut self, bead: usize, log: &mut VecDeque<Consulted>) -> Result<(), KilnError> {
        if self.beads[bead].phase == Phase::Invalidated {
            return Err(KilnError::Invalidated);
        }
        // The phase is the deopt decision's to set.
        let phase = self.beads[bead].phase;
        self.change_code(bead, None, phase)?;
        self.apply_decision(bead, DeoptDecision::Blacklist, log);
        Ok(())
    }

    pub(crate) fn quiesce(&mut self) -> usize {
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

    pub(crate) fn cancel_queued(&mut self) -> usize {
        let cancelled = self.queue.len();
        for entry in core::mem::take(&mut self.queue) {
            let model = &mut self.beads[entry.bead];
            if model.phase == Phase::Queued && model.generation == entry.generation {
                model.phase = model.rest();
            }
        }
        cancelled
    }
}
