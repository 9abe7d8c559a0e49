//! The broker's unit tests, one per behaviour, through the public API.

extern crate std;

use std::vec::Vec;

use core::num::NonZeroU32;
use core::ptr::{self, NonNull};

use super::*;
use crate::Bead;
use crate::compiler::{CodeHandle, Compiled, Compiler};
use crate::deopt::{BailoutReason, DeoptDecision, DeoptPolicy};
use crate::error::KilnError;
use crate::job::{JobKind, JobOutcome};
use crate::osr::{OsrEntry, OsrTable};
use crate::pump::{Budget, PumpStop};
use crate::{
    AlwaysRecompilePolicy, BeadState, BlacklistDecay, NoEvents, NoWake, ThresholdDeoptPolicy, ThresholdPolicy,
    TieredPolicy,
};

fn code(n: usize) -> *mut () {
    core::ptr::without_provenance_mut(0x1000 * n)
}

/// Hands out entry `0x1000 * n` with handle `n`; fails while `failing`.
#[derive(Default)]
struct FakeJit {
    compiled: Vec<(u8, JobKind)>,
    released: Vec<usize>,
    failing: bool,
    osr: Option<&'static OsrTable<'static>>,
}

impl<'a> Compiler<&'a Bead> for FakeJit {
    type Error = &'static str;
    fn compile(&mut self, request: &crate::CompileRequest<'_, &'a Bead>) -> Result<Compiled, Self::Error> {
        if self.failing {
            return Err("refused");
        }
        self.compiled.push((request.tier, request.kind));
        let n = self.compiled.len();
        let compiled = Compiled::new(code(n), CodeHandle::from_raw(n).unwrap()).unwrap();
        Ok(match self.osr {
            // SAFETY: the table is 'static, so it outlives any release (1, 2).
            Some(table) => unsafe { compiled.with_osr(NonNull::from(table)) },
            None => compiled,
        })
    }
    fn release(&mut self, code: CodeHandle) {
        self.released.push(code.get());
    }
}

type Test<'a, P, D> = Broker<&'a Bead, P, D, NoWake, NoEvents, 4, 4>;

fn broker<'a, P, D>(policy: P, deopt: D) -> Test<'a, P, D> {
    Broker::new(policy, deopt, NoWake, NoEvents)
}

fn call_n<'a, P: HotnessPolicy, D: DeoptPolicy>(
    broker: &Test<'a, P, D>,
    bead: &'a Bead,
    n: u32,
) -> Option<NonNull<()>> {
    let mut last = None;
    for _ in 0..n {
        last = broker.on_invoke(&bead);
    }
    last
}

#[test]
fn promotes_exactly_at_the_threshold() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(10), ThresholdDeoptPolicy::default());
    call_n(&broker, &bead, 9);
    assert_eq!(bead.state(), BeadState::Interpreted);
    assert_eq!(bead.invocation_count(), 9);
    call_n(&broker, &bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);
    let mut jit = FakeJit::default();
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!((report.ran, report.published, report.stop), (1, 1, PumpStop::Idle));
    assert_eq!(broker.on_invoke(&&bead), Some(NonNull::new(code(1)).unwrap()));
    assert_eq!(bead.state(), BeadState::Compiled(0));
}

#[test]
fn tiers_climb_through_warm_code_to_the_fast_path() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(TieredPolicy { tier1_threshold: 5, tier2_threshold: 50 }, ThresholdDeoptPolicy::default());
    let mut jit = FakeJit::default();
    call_n(&broker, &bead, 5);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.state(), BeadState::Compiled(0));
    // Tier 0 code runs from the warm slot while the bead keeps counting.
    assert_eq!(broker.on_invoke(&&bead), NonNull::new(code(1)));
    assert!(bead.entry.load(Ordering::Relaxed).is_null());
    call_n(&broker, &bead, 44);
    assert_eq!(bead.state(), BeadState::Queued, "tier 1 queued at 50 calls");
    // While tier 1 compiles, tier 0 keeps serving.
    assert_eq!(broker.on_invoke(&&bead), NonNull::new(code(1)));
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.state(), BeadState::Compiled(1));
    assert_eq!(bead.entry.load(Ordering::Relaxed), code(2), "top tier takes the fast path");
    assert_eq!(jit.compiled, [(0, JobKind::Invoke), (1, JobKind::Invoke)]);
    // Tier 0 was replaced: retired, then released after two quiesces.
    assert_eq!(broker.quiesce(&mut jit), 0);
    assert_eq!(broker.quiesce(&mut jit), 1);
    assert_eq!(jit.released, [1]);
}

#[test]
fn backedges_queue_an_osr_compile_and_find_its_entry() {
    static ENTRIES: [OsrEntry; 2] = [
        OsrEntry { site: 3, code: ptr::without_provenance_mut(0x3000) },
        OsrEntry { site: 8, code: ptr::without_provenance_mut(0x8000) },
    ];
    static TABLE: std::sync::LazyLock<OsrTable<'static>> =
        std::sync::LazyLock::new(|| OsrTable::new(&ENTRIES).unwrap());
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(1_000).osr_threshold(20), AlwaysRecompilePolicy);
    let mut jit = FakeJit { osr: Some(&TABLE), ..FakeJit::default() };
    broker.on_invoke(&&bead);
    for _ in 0..19 {
        assert_eq!(broker.on_backedge(&&bead, 8), None);
    }
    assert_eq!(bead.state(), BeadState::Interpreted);
    assert_eq!(broker.on_backedge(&&bead, 8), None);
    assert_eq!(bead.state(), BeadState::Queued);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(jit.compiled, [(0, JobKind::Osr { site: 8 })]);
    assert_eq!(broker.on_backedge(&&bead, 8).map(|p| p.as_ptr()), Some(ENTRIES[1].code));
    assert_eq!(bead.osr_entry(3).map(|p| p.as_ptr()), Some(ENTRIES[0].code));
    assert_eq!(bead.osr_entry(4), None);
    // A plain swap drops the table; the `_with_osr` one keeps it.
    let swapped = Compiled::new(code(9), CodeHandle::from_raw(9).unwrap()).unwrap();
    broker.swap_compiled(&&bead, swapped, 0).unwrap();
    assert_eq!(bead.osr_entry(8), None);
    // SAFETY: the table is 'static (1, 2).
    let with_osr =
        unsafe { Compiled::new(code(10), CodeHandle::from_raw(10).unwrap()).unwrap().with_osr(NonNull::from(&*TABLE)) };
    broker.swap_compiled_with_osr(&&bead, with_osr, 0).unwrap();
    assert!(bead.osr_entry(8).is_some());
}

#[test]
fn bailout_retires_code_and_recompiles_per_policy() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(3), ThresholdDeoptPolicy::new(1));
    let mut jit = FakeJit::default();
    call_n(&broker, &bead, 3);
    broker.pump(&mut jit, Budget::unlimited());
    let generation = bead.generation();
    let guard = BailoutReason::Guard { guard_id: 1, pc_offset: 0 };
    assert_eq!(broker.record_bailout(&&bead, guard), Ok(DeoptDecision::Recompile));
    assert_eq!(bead.state(), BeadState::Interpreted);
    assert_ne!(bead.generation(), generation);
    assert_eq!(bead.compiled(), None);
    // Still past the threshold: the next call re-promotes.
    call_n(&broker, &bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(broker.record_bailout(&&bead, guard), Ok(DeoptDecision::Blacklist));
    assert_eq!(bead.state(), BeadState::Blacklisted);
    call_n(&broker, &bead, 10_000);
    assert_eq!(bead.state(), BeadState::Blacklisted, "no decay configured");
    assert_eq!(broker.record_bailout(&&bead, guard), Err(KilnError::NotCompiled));
    broker.quiesce(&mut jit);
    broker.quiesce(&mut jit);
    assert_eq!(jit.released, [1, 2]);
}

#[test]
fn blacklist_decays_into_a_second_chance() {
    let bead = Bead::new(ptr::null_mut());
    let deopt = BlacklistDecay::new(ThresholdDeoptPolicy::new(0), NonZeroU32::new(100).unwrap());
    let broker = broker(ThresholdPolicy::new(2), deopt);
    let mut jit = FakeJit::default();
    call_n(&broker, &bead, 2);
    broker.pump(&mut jit, Budget::unlimited());
    let guard = BailoutReason::Guard { guard_id: 0, pc_offset: 0 };
    assert_eq!(broker.record_bailout(&&bead, guard), Ok(DeoptDecision::Blacklist));
    call_n(&broker, &bead, 99);
    assert_eq!(bead.state(), BeadState::Blacklisted);
    call_n(&broker, &bead, 2);
    assert_eq!(bead.bailout_count(), 0);
    assert_eq!(bead.state(), BeadState::Queued, "decayed, still hot, promoted again");
}

#[test]
fn failed_compile_cools_down_instead_of_hammering() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
    let mut jit = FakeJit { failing: true, ..FakeJit::default() };
    call_n(&broker, &bead, 2);
    let report = broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(report.failed, 1);
    assert_eq!(bead.state(), BeadState::Interpreted);
    assert_eq!(bead.bailout_count(), 1);
    let cooldown = broker.policy().queue_full_cooldown().get();
    call_n(&broker, &bead, cooldown - 1);
    assert_eq!(bead.state(), BeadState::Interpreted);
    call_n(&broker, &bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);
    jit.failing = false;
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.state(), BeadState::Compiled(0));
    assert_eq!(broker.stats().failures, 1);
}

#[test]
fn reload_bumps_generation_and_repromotes_hot_beads() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
    let mut jit = FakeJit::default();
    call_n(&broker, &bead, 2);
    let job = broker.claim().unwrap();
    broker.reload(&&bead).unwrap();
    assert_eq!(job.run(&mut jit), JobOutcome::Stale);
    assert_eq!(jit.released, [1], "stale result released at once");
    assert_eq!(bead.compiled(), None);
    assert_eq!(bead.state(), BeadState::Interpreted);
    call_n(&broker, &bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.compiled(), NonNull::new(code(2)));
}

#[test]
fn retire_installed_keeps_history_and_makes_compiles_stale() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
    let mut jit = FakeJit::default();
    call_n(&broker, &bead, 2);
    broker.pump(&mut jit, Budget::unlimited());
    let guard = BailoutReason::Guard { guard_id: 0, pc_offset: 0 };
    broker.record_bailout_with(&&bead, guard, |_| DeoptDecision::RevertToTier(0)).unwrap();
    call_n(&broker, &bead, 2);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.compiled(), NonNull::new(code(2)));
    let generation = bead.generation();

    broker.retire_installed(&&bead).unwrap();
    assert_eq!((bead.compiled(), bead.state()), (None, BeadState::Interpreted));
    assert_ne!(bead.generation(), generation);
    assert_eq!((bead.bailout_count(), bead.tier_cap()), (1, 0), "history kept, unlike reload");
    broker.quiesce(&mut jit);
    assert_eq!(jit.released, [], "retired code waits for the second quiesce");
    broker.quiesce(&mut jit);
    assert_eq!(jit.released, [1, 2]);

    // A compile in flight goes stale; the next call promotes again.
    call_n(&broker, &bead, 1);
    let job = broker.claim().unwrap();
    broker.retire_installed(&&bead).unwrap();
    assert_eq!(job.run(&mut jit), JobOutcome::Stale);
    assert_eq!(jit.released, [1, 2, 3], "the stale result is released at once");
    assert_eq!(bead.compiled(), None);
    call_n(&broker, &bead, 1);
    assert_eq!(bead.state(), BeadState::Queued);
    broker.invalidate(&&bead).unwrap();
    assert_eq!(broker.retire_installed(&&bead), Err(KilnError::Invalidated));
}

#[test]
fn revert_to_tier_caps_future_promotions() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(TieredPolicy { tier1_threshold: 2, tier2_threshold: 4 }, crate::TieredDeoptPolicy::default());
    let mut jit = FakeJit::default();
    call_n(&broker, &bead, 4);
    broker.pump(&mut jit, Budget::unlimited());
    call_n(&broker, &bead, 1);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.state(), BeadState::Compiled(1));
    let guard = BailoutReason::Guard { guard_id: 0, pc_offset: 0 };
    assert_eq!(broker.record_bailout(&&bead, guard), Ok(DeoptDecision::RevertToTier(0)));
    assert_eq!(bead.tier_cap(), 0);
    call_n(&broker, &bead, 1);
    broker.pump(&mut jit, Budget::unlimited());
    assert_eq!(bead.state(), BeadState::Compiled(0));
    assert_eq!(bead.entry.load(Ordering::Relaxed), code(3), "capped tier 0 is final");
    assert_eq!(jit.compiled.last(), Some(&(0, JobKind::Invoke)));
}

#[test]
fn budget_limits_jobs_and_leaves_the_rest_queued() {
    let beads: [Bead; 3] = core::array::from_fn(|_| Bead::new(ptr::null_mut()));
    let broker = broker(ThresholdPolicy::new(1), AlwaysRecompilePolicy);
    let mut jit = FakeJit::default();
    for bead in &beads {
        broker.on_invoke(&bead);
    }
    let report = broker.pump(&mut jit, Budget::jobs(2));
    assert_eq!((report.ran, report.remaining, report.stop), (2, 1, PumpStop::JobLimit));
    let report = broker.pump(&mut jit, Budget::jobs(2));
    assert_eq!((report.ran, report.remaining, report.stop), (1, 0, PumpStop::Idle));
}

#[test]
fn promotion_hook_runs_once_for_the_winner_only() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(3), AlwaysRecompilePolicy);
    let mut hooks = Vec::new();
    for _ in 0..10 {
        broker.on_invoke_with(&&bead, |tier, kind| hooks.push((tier, kind)));
    }
    assert_eq!(hooks, [(0, JobKind::Invoke)]);
    assert_eq!(broker.queue_len(), 1);
    assert_eq!(
        broker.submit_with(&&bead, 0, JobKind::Invoke, |_, _| panic!("not the winner")),
        Err(KilnError::AlreadyQueued)
    );
}

#[test]
fn invalidate_or_hand_back_never_refuses_for_a_full_ring() {
    let beads: [Bead; 2] = core::array::from_fn(|_| Bead::new(ptr::null_mut()));
    let broker: Broker<&Bead, _, _, NoWake, NoEvents, 4, 1> =
        Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    for (n, bead) in beads.iter().enumerate() {
        let code = Compiled::new(code(n + 1), CodeHandle::from_raw(n + 1).unwrap()).unwrap();
        broker.swap_compiled(&bead, code, 0).unwrap();
    }
    broker.invalidate(&&beads[0]).unwrap();
    assert_eq!(broker.invalidate(&&beads[1]), Err(KilnError::RetireFull), "the plain form refuses");
    let mut spilled = None;
    broker.invalidate_or_hand_back(&&beads[1], |code| spilled = Some(code.get())).unwrap();
    assert_eq!(spilled, Some(2), "the code that did not fit is handed back");
    assert_eq!(beads[1].state(), BeadState::Invalidated);
    assert_eq!(beads[1].compiled(), None);
    assert_eq!(
        broker.invalidate_or_hand_back(&&beads[1], |_| panic!("nothing to hand back")),
        Err(KilnError::AlreadyInvalidated)
    );
}

#[test]
fn eviction_is_not_a_bailout() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(2), ThresholdDeoptPolicy::new(0));
    let mut jit = FakeJit::default();
    assert_eq!(broker.evict(&&bead, NonZeroU32::new(5).unwrap()), Err(KilnError::NotCompiled));
    call_n(&broker, &bead, 2);
    broker.pump(&mut jit, Budget::unlimited());
    let generation = bead.generation();
    broker.evict(&&bead, NonZeroU32::new(5).unwrap()).unwrap();
    assert_eq!((bead.state(), bead.compiled(), bead.bailout_count()), (BeadState::Interpreted, None, 0));
    assert_ne!(bead.generation(), generation);
    call_n(&broker, &bead, 4);
    assert_eq!(bead.state(), BeadState::Interpreted, "paused for 5 calls");
    call_n(&broker, &bead, 1);
    assert_eq!(bead.state(), BeadState::Queued, "a zero-bailout policy would have blacklisted a bailout");
    broker.quiesce(&mut jit);
    broker.quiesce(&mut jit);
    assert_eq!(jit.released, [1]);
}

#[test]
fn hotter_beads_compile_first() {
    let cold = Bead::new(ptr::null_mut());
    let hot = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(1_000), AlwaysRecompilePolicy);
    call_n(&broker, &cold, 10);
    call_n(&broker, &hot, 500);
    broker.submit(&&cold, 0, JobKind::Invoke).unwrap();
    broker.submit(&&hot, 0, JobKind::Invoke).unwrap();
    assert_eq!(broker.submit(&&hot, 0, JobKind::Invoke), Err(KilnError::AlreadyQueued));
    let first = broker.claim().unwrap();
    assert!(ptr::eq(*first.bead(), &hot));
}

#[test]
fn a_lazy_handle_is_made_once_by_the_winner_only() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(3), AlwaysRecompilePolicy);
    let mut made = Vec::new();
    for _ in 0..10 {
        broker.on_invoke_lazy(&bead, |tier, kind| {
            made.push((tier, kind));
            &bead
        });
    }
    assert_eq!(made, [(0, JobKind::Invoke)]);
    assert_eq!(broker.queue_len(), 1);
    let refused = broker.submit_lazy(&bead, 0, JobKind::Invoke, |_, _| panic!("not the winner"));
    assert_eq!(refused, Err(KilnError::AlreadyQueued));
    let job = broker.claim().unwrap();
    assert!(ptr::eq(*job.bead(), &bead), "the queue holds the handle made by the winner");
}

#[test]
fn a_waiting_call_counts_nothing_and_writes_nothing() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
    assert_eq!(bead.count_call(), CallCount::Due, "a new bead asks the policy at once");
    assert_eq!(broker.invoke_due(&bead, |_, _| &bead), None);
    assert_eq!(bead.count_call(), CallCount::Due, "threshold 2: the second call is due");
    assert_eq!(broker.invoke_due(&bead, |_, _| &bead), None);
    assert_eq!(bead.state(), BeadState::Queued);
    let (counted, armed) = (bead.invocation_count(), bead.countdown.load(Ordering::Relaxed));
    for _ in 0..1_000 {
        assert_eq!(bead.count_call(), CallCount::Interpret(None));
    }
    assert_eq!(bead.invocation_count(), counted, "waiting calls are not counted");
    assert_eq!(bead.countdown.load(Ordering::Relaxed), armed, "nor do they write the countdown");
}

#[test]
fn a_waiting_bead_counts_again_once_its_job_ends() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(1), AlwaysRecompilePolicy);
    assert_eq!(broker.on_invoke_lazy(&bead, |_, _| &bead), None);
    assert_eq!(bead.state(), BeadState::Queued);
    drop(broker.claim().unwrap());
    assert_eq!(bead.state(), BeadState::Interpreted, "abandoned: back at rest");
    // The abandon armed the queue-full cooldown; counting resumes and the
    // bead is promoted again when it runs out, without any lock-held re-check.
    let cooldown = broker.policy().queue_full_cooldown().get();
    let mut calls = 0;
    while bead.state() != BeadState::Queued {
        calls += 1;
        assert!(calls <= cooldown, "promoted again within the cooldown");
        if bead.count_call() == CallCount::Due {
            broker.invoke_due(&bead, |_, _| &bead);
        }
    }
    assert_eq!(calls, cooldown);
}

#[test]
fn a_counting_first_caller_rechecks_a_waiting_bead_without_the_lock() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(1), AlwaysRecompilePolicy);
    broker.on_invoke(&&bead);
    assert_eq!(bead.state(), BeadState::Queued);
    // Every `PENDING` calls the countdown runs out and the state word alone
    // re-arms it: the calls run on another thread while this one holds the
    // lock, so a re-check that took it would not finish.
    let (broker, bead) = (&broker, &bead);
    std::thread::scope(|scope| {
        let (done, finished) = std::sync::mpsc::channel();
        let waited = broker.shared.with(|_| {
            scope.spawn(move || {
                for _ in 0..3 * PENDING {
                    assert_eq!(broker.on_invoke(&bead), None);
                }
                done.send(()).unwrap();
            });
            finished.recv_timeout(std::time::Duration::from_secs(10))
        });
        assert!(waited.is_ok(), "a waiting call took the broker's lock");
    });
    assert_eq!(bead.state(), BeadState::Queued);
}

#[test]
fn a_hinted_blacklist_decays_whatever_the_policy_says() {
    // ThresholdDeoptPolicy never lets a blacklist decay by itself.
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(2), ThresholdDeoptPolicy::default());
    assert_eq!(broker.blacklist_for(&bead, NonZeroU32::new(5).unwrap()), Ok(true));
    assert!(bead.is_blacklisted());
    let generation = bead.generation();
    for _ in 0..5 {
        assert!(broker.on_invoke(&bead).is_none());
        assert_eq!(broker.queue_len(), 0, "no compile while blacklisted");
    }
    assert!(broker.on_invoke(&bead).is_none());
    assert!(!bead.is_blacklisted(), "decayed after its calls");
    assert_eq!(bead.generation(), generation, "no code changed");
    for _ in 0..3 {
        broker.on_invoke(&bead);
    }
    assert_eq!(broker.queue_len(), 1, "promoted as usual afterwards");
}

#[test]
fn a_hint_leaves_a_bead_with_code_or_work_alone() {
    let bead = Bead::new(ptr::null_mut());
    let broker = broker(ThresholdPolicy::new(1), ThresholdDeoptPolicy::default());
    broker.on_invoke(&bead);
    assert_eq!(bead.state(), BeadState::Queued);
    assert_eq!(broker.blacklist_for(&bead, NonZeroU32::MIN), Ok(false));
    broker.pump(&mut FakeJit::default(), Budget::unlimited());
    assert_eq!(bead.state(), BeadState::Compiled(0));
    assert_eq!(bead.tier_reached(), Some(0));
    assert_eq!(broker.blacklist_for(&bead, NonZeroU32::MIN), Ok(false));
    assert!(broker.on_invoke(&bead).is_some(), "the code still runs");
}
