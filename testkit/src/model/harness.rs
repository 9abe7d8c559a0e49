//! The runner: a real `Broker` and the reference model, driven step by step
//! with the same operations, compared after every step, then drained.

use core::num::NonZeroU32;
use core::ptr;
use std::collections::{BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::vec::Vec;

use kiln_core::{
    BailoutReason, Bead, BeadRef, BeadState, Broker, Budget, Compiler, HotnessPolicy, Job, JobKind, JobOutcome,
    NoEvents, Stats, TierLadder,
};

use super::env::{
    Consulted, CountingPump, FakeJit, Handle, Log, ModelDeopt, ModelPolicy, Request, entry_of, handle_of, make_code,
};
use super::op::{Case, Op, Rings, SITES, Setup, Table};
use super::reference::{Code, Model, Phase, Ticket};

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
        core::mem::take(&mut *self.log.borrow_mut())
    }

    fn invoke(&mut self, bead: usize) {
        let mut hook = None;
        let got = self.broker.on_invoke_with(&self.handles[bead], |tier, kind| hook = Some((bead, tier, kind)));
        self.hooks.extend(hook);
        self.model.count_call(bead);
        let mut log = self.take_log();
        self.model.consult(bead, None, &mut log);
        assert!(log.is_empty(), "unexpected policy calls: {log:?}");
        assert_eq!(got, self.model.entry(bead), "on_invoke's entry");
    }

    fn backedge(&mut self, bead: usize, site: u64) {
        let mut hook = None;
        let got = self.broker.on_backedge_with(&self.handles[bead], site, |tier, kind| hook = Some((bead, tier, kind)));
        self.hooks.extend(hook);
        self.model.count_backedge(bead, site);
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
                    self.backedge(bead % beads, SITES[site % SITES.len()]);
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
                let kind = osr_site.map_or(JobKind::Invoke, |site| JobKind::Osr { site: SITES[site % SITES.len()] });
                let priority = self.model.priority(bead);
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
            assert_eq!(real.invocation_count(), expected.invocations, "bead {index}: calls counted");
            assert_eq!(real.backedge_count(), expected.backedges, "bead {index}: back-edges counted");
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
        assert_eq!(self.broker.wake_hook().wakes.get(), model.wakes, "wake-ups");
        assert_eq!(core::mem::take(&mut self.hooks), core::mem::take(&mut model.hooks), "promotion hooks");
        assert_eq!(core::mem::take(&mut self.jit.requests), core::mem::take(&mut model.requests), "compile requests");
        assert_eq!(core::mem::take(&mut self.jit.released), core::mem::take(&mut model.released), "released handles");
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

/// What a passing case did, for tests that want to show a case reaches
/// what it is named after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Operations run (the drain not counted).
    pub operations: usize,
    /// The broker's counters after the last operation, before the drain.
    pub stats: Stats,
    /// Code objects made by the fake JIT and the host, drain included (all
    /// of them were released exactly once).
    pub code_created: usize,
}

/// Names the failing operation when a check panics (the assertion message
/// alone does not say where in a 200-operation case it happened).
struct Where<'a> {
    index: usize,
    op: Option<&'a Op>,
}

impl Drop for Where<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            match self.op {
                Some(op) => std::eprintln!("kiln-testkit model: mismatch at operation {} ({op:?})", self.index),
                None => std::eprintln!("kiln-testkit model: mismatch in the final drain"),
            }
        }
    }
}

/// Runs `ops` against a real `Broker` with queue capacity `QUEUE` and retire
/// capacity `RETIRE`, and against the reference model, side by side.
///
/// After every operation it asserts that the broker matches the model
/// exactly and that the invariants hold (see [the module docs](crate::model));
/// then it drops held jobs, invalidates every bead, quiesces, and asserts
/// that every code handle was released exactly once and no bead handle
/// leaked.
///
/// # Panics
///
/// On the first mismatch or violated invariant, with a message naming it;
/// the operation's index and value are printed to stderr first.
pub fn run<const QUEUE: usize, const RETIRE: usize>(setup: &Setup, ops: &[Op]) -> Summary {
    let beads = setup.beads.max(1);
    let log: Log = Rc::default();
    let mut ladder = TierLadder::new(setup.thresholds);
    ladder.osr_threshold = setup.osr_threshold;
    let cooldown = NonZeroU32::new(setup.cooldown.max(1)).expect("at least 1");
    let policy = ModelPolicy { ladder, cooldown, log: log.clone() };
    let deopt = ModelDeopt { choice: setup.deopt, log: log.clone() };
    let broker: TestBroker<QUEUE, RETIRE> = Broker::new(policy, deopt, CountingPump::default(), NoEvents);
    let handles: Vec<Handle> = (0..beads).map(|_| Handle(Arc::new(Bead::new(ptr::null_mut())))).collect();
    let jit = FakeJit::new(handles.clone());
    let max_tier = broker.policy().max_tier();
    let mut harness = Harness {
        broker: &broker,
        handles,
        jit,
        held: Vec::new(),
        log,
        model: Model::new(beads, QUEUE, RETIRE, max_tier),
        hooks: Vec::new(),
    };
    let mut place = Where { index: 0, op: None };
    harness.check();
    for (index, op) in ops.iter().enumerate() {
        place = Where { index, op: Some(op) };
        harness.step(op);
    }
    let stats = broker.stats();
    place.op = None;
    harness.drain();
    drop(place);
    Summary { operations: ops.len(), stats, code_created: harness.jit.created }
}

impl Case {
    /// Runs the case with its ring sizes: [`run`] with the matching
    /// capacities.
    ///
    /// # Panics
    ///
    /// As [`run`]: on the first mismatch or violated invariant.
    pub fn run(&self) -> Summary {
        match self.rings {
            Rings::Queue4Retire4 => run::<4, 4>(&self.setup, &self.ops),
            Rings::Queue2Retire1 => run::<2, 1>(&self.setup, &self.ops),
            Rings::Queue8Retire8 => run::<8, 8>(&self.setup, &self.ops),
            Rings::Queue3Retire2 => run::<3, 2>(&self.setup, &self.ops),
        }
    }
}
