//! Hooks that panic on plan: kiln-std's `on_invalidate` and kiln-core's
//! [`Events`]. Both count every call, so a test can check that kiln ran
//! each hook as often as it promises (an `on_invalidate` exactly once).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_core::{Bead, CodeHandle, DeoptDecision, Events, JobKind};

use super::{FaultKind, FaultPlan, Site};

/// Counts how often one bead's `on_invalidate` hook ran.
#[derive(Debug, Default)]
pub struct InvalidateProbe {
    runs: AtomicU64,
}

impl InvalidateProbe {
    /// A probe that saw no run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}

/// An `on_invalidate` hook for kiln-std's `register`: counts its runs in
/// `probe` and panics when `plan` says so ([`FaultKind::InvalidatePanic`]).
pub fn panicking_on_invalidate(plan: Arc<FaultPlan>, probe: Arc<InvalidateProbe>) -> Box<dyn Fn() + Send + Sync> {
    Box::new(move || {
        probe.runs.fetch_add(1, Ordering::Relaxed);
        plan.step();
        if plan.next(Site::Invalidate) == Some(FaultKind::InvalidatePanic) {
            plan.panic("on_invalidate");
        }
    })
}

/// kiln-core [`Events`] that count every call and panic when the plan says
/// so ([`FaultKind::EventPanic`]; each call is one opportunity).
#[derive(Debug)]
pub struct FaultyEvents {
    plan: Arc<FaultPlan>,
    counts: [AtomicU64; 7],
}

/// The events a [`FaultyEvents`] counts, in `counts()` order.
pub const EVENT_NAMES: [&str; 7] =
    ["promoted", "queue_full", "compiled", "compile_failed", "deoptimized", "invalidated", "released"];

impl FaultyEvents {
    /// Events following `plan`.
    pub fn new(plan: Arc<FaultPlan>) -> Self {
        Self { plan, counts: Default::default() }
    }

    /// Calls so far, per event, in [`EVENT_NAMES`] order.
    pub fn counts(&self) -> [u64; 7] {
        self.counts.each_ref().map(|count| count.load(Ordering::Relaxed))
    }

    fn hit(&self, event: usize) {
        self.counts[event].fetch_add(1, Ordering::Relaxed);
        self.plan.step();
        if self.plan.next(Site::Event) == Some(FaultKind::EventPanic) {
            self.plan.panic(EVENT_NAMES[event]);
        }
    }
}

impl Events for FaultyEvents {
    fn promoted(&self, _bead: &Bead, _tier: u8, _kind: JobKind) {
        self.hit(0);
    }
    fn queue_full(&self, _bead: &Bead) {
        self.hit(1);
    }
    fn compiled(&self, _bead: &Bead, _tier: u8, _ticks: Option<u64>) {
        self.hit(2);
    }
    fn compile_failed(&self, _bead: &Bead, _tier: u8) {
        self.hit(3);
    }
    fn deoptimized(&self, _bead: &Bead, _decision: DeoptDecision) {
        self.hit(4);
    }
    fn invalidated(&self, _bead: &Bead) {
        self.hit(5);
    }
    fn released(&self, _code: CodeHandle) {
        self.hit(6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{is_injected, quiet_injected_panics};

    #[test]
    fn the_invalidate_hook_panics_at_its_chosen_call_and_counts_runs() {
        quiet_injected_panics();
        let plan = Arc::new(FaultPlan::none().at(FaultKind::InvalidatePanic, 2));
        let (first, second) = (Arc::new(InvalidateProbe::new()), Arc::new(InvalidateProbe::new()));
        let hook_a = panicking_on_invalidate(Arc::clone(&plan), Arc::clone(&first));
        let hook_b = panicking_on_invalidate(Arc::clone(&plan), Arc::clone(&second));
        hook_a();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&hook_b));
        assert!(is_injected(&*panicked.unwrap_err()));
        assert_eq!((first.runs(), second.runs()), (1, 1));
        assert_eq!(plan.injected().of(FaultKind::InvalidatePanic), 1);
    }

    #[test]
    fn kiln_std_runs_a_panicking_invalidate_hook_once() {
        quiet_injected_panics();
        let plan = Arc::new(FaultPlan::none().at(FaultKind::InvalidatePanic, 1));
        let probe = Arc::new(InvalidateProbe::new());
        let beadie = kiln_std::Beadie::new();
        let bead = beadie.register(std::ptr::null_mut(), Some(panicking_on_invalidate(plan, Arc::clone(&probe))));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bead.invalidate()));
        assert!(panicked.is_ok(), "kiln-std isolates the hook: its panic never reaches the caller of invalidate");
        assert!(!bead.is_valid());
        assert_eq!(beadie.host_panics(), 1, "the caught panic is counted");
        bead.invalidate();
        assert_eq!(probe.runs(), 1);
    }

    #[test]
    fn an_event_panics_at_its_chosen_call_through_the_broker() {
        quiet_injected_panics();
        let plan = Arc::new(FaultPlan::none().at(FaultKind::EventPanic, 1));
        let events = FaultyEvents::new(Arc::clone(&plan));
        let bead = Bead::new(std::ptr::null_mut());
        let broker: kiln_core::Broker<&Bead, _, _, _, _> = kiln_core::Broker::new(
            kiln_core::ThresholdPolicy::new(1),
            kiln_core::AlwaysRecompilePolicy,
            kiln_core::NoWake,
            &events,
        );
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| broker.on_invoke(&&bead)));
        assert!(is_injected(&*panicked.unwrap_err()), "the first event (promoted) panics");
        assert_eq!(events.counts()[0], 1);
        assert_eq!(bead.state(), kiln_core::BeadState::Queued, "the promotion itself happened before the event");
        assert_eq!(plan.injected().of(FaultKind::EventPanic), 1);
    }
}
