//! Claim and complete: a queued job goes to a pumper (Queued → Compiling)
//! and comes back published, failed or abandoned.
//!
//! `claim` is the only way a job leaves the queue to be compiled;
//! [`Broker::pump`] is kiln's one job loop ([`crate::pump::pump_jobs`]) run
//! with a compiler. The [`JobOwner`] side ends a job: publishing goes
//! through `change_code` (see `change.rs`) like every other change of code;
//! failing and abandoning change no code and only move the state.

use super::{Broker, ClaimError};
use crate::bead::BeadRef;
use crate::compiler::{Compiled, Compiler};
use crate::deopt::{Bailout, BailoutReason, DeoptDecision, DeoptPolicy};
use crate::job::{Job, JobOwner, Ticket};
use crate::policy::{Decision, HotnessPolicy};
use crate::pump::{Budget, Handled, JobRunner, PumpReport, PumpStop, pump_jobs};
use crate::state::Phase;
use crate::stats::Events;
use crate::sync::Ordering;
use crate::wake::WakeHook;

use super::change::{Change, Expect};

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    W: WakeHook,
    E: Events,
{
    /// Claims the next job for any worker to run. Stale queue entries are
    /// dropped on the way.
    pub fn claim(&self) -> Result<Job<'_, H>, ClaimError> {
        self.claim_counting_stale(&mut 0)
    }

    /// [`claim`](Self::claim), adding the stale queue entries it dropped on
    /// the way to `stale`.
    pub fn claim_counting_stale(&self, stale: &mut u32) -> Result<Job<'_, H>, ClaimError> {
        // A claiming host drains like a pumping one: clear the flag first so
        // the next promotion wakes it (SeqCst pairs with the swap in `wake`).
        self.wake_pending.store(false, Ordering::SeqCst);
        loop {
            let claimed = self.shared.with(|shared| {
                let result = match shared.queue.pop() {
                    None => Err(Err(ClaimError::Empty)),
                    Some(entry) => {
                        let bead = entry.bead.bead();
                        let word = bead.word();
                        let reserved = bead.has_code();
                        if !word.is_at(Phase::Queued, entry.generation) {
                            Err(Ok(entry))
                        } else if reserved && !shared.reclaim.reserve() {
                            // The publish must be able to retire the code it
                            // replaces: wait in the queue for a quiesce.
                            let _ = shared.queue.push(entry);
                            Err(Err(ClaimError::RetireFull))
                        } else {
                            bead.state.store(word.with_phase(Phase::Compiling));
                            Ok(Ticket::from_entry(entry, reserved))
                        }
                    }
                };
                self.queue_len.store(shared.queue.len(), Ordering::Relaxed);
                result
            });
            match claimed {
                Ok(ticket) => {
                    self.events.compile_started(ticket.bead.bead(), ticket.tier, ticket.kind);
                    return Ok(Job::new(self, ticket));
                }
                Err(Err(error)) => return Err(error),
                // Dropped outside the lock: the handle's drop may run host code.
                Err(Ok(entry)) => {
                    *stale += 1;
                    self.counters.stale_jobs.bump();
                    drop(entry);
                }
            }
        }
    }

    /// Runs queued jobs with `compiler` until the queue is empty or the
    /// budget is spent, and reports what it did. Several threads may pump
    /// the same broker at once. This is kiln's one job loop
    /// ([`pump_jobs`](crate::pump_jobs)) with a plain compiler.
    pub fn pump<C: Compiler<H>>(&self, compiler: &mut C, budget: Budget<'_>) -> PumpReport {
        // Draining starts now, even if the budget lets no claim happen: the
        // re-wake below must see the flag cleared (SeqCst pairs with the
        // swap in `wake`).
        self.wake_pending.store(false, Ordering::SeqCst);
        let report = pump_jobs(self, budget, &mut Compiling { compiler, budget });
        if report.remaining > 0 && matches!(report.stop, PumpStop::JobLimit | PumpStop::Deadline) {
            // Work is left: make sure a pumping thread does not go to sleep on it.
            self.wake();
        }
        report
    }
}

/// [`Broker::pump`]'s runner: compile, time with the budget's clock, finish.
struct Compiling<'c, 'k, C> {
    compiler: &'c mut C,
    budget: Budget<'k>,
}

impl<'b, H, C: Compiler<H>> JobRunner<'b, H> for Compiling<'_, '_, C> {
    fn run(&mut self, job: Job<'b, H>) -> Handled {
        Handled::Ran(job.run_timed(self.compiler, self.budget.clock))
    }
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> JobOwner<H> for Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    E: Events,
{
    fn finish_published(&self, ticket: &Ticket<H>, compiled: Compiled, ticks: Option<u64>) -> Result<(), Compiled> {
        let bead = ticket.bead.bead();
        let is_final = ticket.tier >= self.final_tier(bead);
        let change = Change::install(compiled, ticket.tier, true, is_final);
        let published = self.change_code(bead, Expect::Job(ticket), change, |shared, word| {
            bead.state.store(word.with_phase(Phase::Compiled));
            shared.compile_ticks = shared.compile_ticks.saturating_add(ticks.unwrap_or(0));
            word
        });
        match published {
            Ok(changed) => {
                if !is_final {
                    // Keep counting toward the next tier from where we are.
                    let stats = self.hotness(bead, changed.value, 0, 0);
                    match self.policy.decide(&stats) {
                        Decision::Wait(calls) => bead.arm(calls.get(), 0),
                        Decision::Promote { .. } => bead.arm(1, 0),
                    }
                }
                self.counters.compiles.bump();
                self.events.compiled(bead, ticket.tier, ticks);
                Ok(())
            }
            Err(refused) => {
                self.counters.stale_results.bump();
                debug!("bead@{:?}: stale compile result released", core::ptr::from_ref(bead));
                // A publish offers code, so a refusal always hands it back.
                Err(refused.value.unwrap_or_else(|| unreachable!()))
            }
        }
    }

    fn finish_failed(&self, ticket: &Ticket<H>) -> bool {
        let bead = ticket.bead.bead();
        let cooldown = self.policy.queue_full_cooldown().get();
        // The policy runs without the lock; only the job's owner moves a
        // Compiling bead of its generation, so the decision cannot go stale
        // except by invalidate/reload/swap, which the re-check below catches.
        let decision = ticket.is_current(bead.word()).then(|| {
            self.deopt.on_bailout(&Bailout {
                reason: BailoutReason::CompileFailed,
                bailouts: bead.bailout_count() + 1,
                tier: ticket.tier,
                invocations: bead.invocation_count(),
            })
        });
        let applied = self.shared.with(|shared| {
            if ticket.reserved {
                shared.reclaim.unreserve();
            }
            let word = bead.word();
            let decision = decision.filter(|_| ticket.is_current(word))?;
            bead.add_bailout();
            // A failed compile leaves any installed code running; "recompile"
            // waits a cooldown so a failing compiler is not hammered.
            self.apply_decision(bead, word, decision, cooldown);
            Some(decision)
        });
        match applied {
            Some(decision) => {
                self.counters.failures.bump();
                self.events.compile_failed(bead, ticket.tier);
                if decision == DeoptDecision::Blacklist && bead.is_blacklisted() {
                    self.events.blacklisted(bead);
                }
                true
            }
            None => {
                self.counters.stale_results.bump();
                false
            }
        }
    }

    fn abandon(&self, ticket: &Ticket<H>) {
        let bead = ticket.bead.bead();
        let cooldown = self.policy.queue_full_cooldown().get();
        self.shared.with(|shared| {
            if ticket.reserved {
                shared.reclaim.unreserve();
            }
            let word = bead.word();
            if ticket.is_current(word) {
                bead.state.store(word.at_rest());
                bead.arm(cooldown, 0);
            }
        });
        self.counters.abandoned.bump();
        debug!("bead@{:?}: job abandoned, back at rest", core::ptr::from_ref(bead));
    }
}
