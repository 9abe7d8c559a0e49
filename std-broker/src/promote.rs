//! How a call (or a host's request) becomes a job.
//!
//! [`on_invoke`] and [`on_backedge`] are the fast-path prefix, written once:
//! every `on_invoke*` and `on_backedge*` of `Beadie`, `BackendAdapter` and
//! `TieredAdapter` is one call to them. The inlined part is the compiled
//! path alone — through the `Arc`'s pointer, one Acquire load of the bead's
//! final entry (kiln-core's `Bead::fast_entry`) and a branch; a back-edge
//! probe loads the OSR table instead. Everything else runs out of line
//! (`count_invoke`, `count_backedge`), so an inlined caller carries none of its register saves
//! or closure set-up.
//!
//! Out of line, kiln-core counts on the bead itself (`count_invoke`,
//! `count_backedge`: no handle, no refcount, no frame of ours); only the
//! call that wins a promotion builds its compile work and the queue's
//! [`JobHandle`] (one reference taken), inside kiln-core's
//! `make_handle`. A call that does not win allocates nothing and writes
//! nothing but the bead's countdown.

use std::ptr::NonNull;
use std::sync::Arc;

use kiln_core::{CallCount, JobKind, KilnError};

use crate::bead::Bead;
use crate::beadie::SubmitResult;
use crate::job::JobHandle;
use crate::work::CompileWork;

/// On every call: the final-tier entry if installed (the one-load path),
/// else kiln-core's counting path out of line. `work(tier)` builds the
/// compile work only if this call wins a promotion to `tier`.
#[inline(always)]
pub(crate) fn on_invoke(bead: &Arc<Bead>, work: impl FnOnce(u8) -> CompileWork) -> Option<*mut ()> {
    match bead.kiln_bead.fast_entry() {
        Some(entry) => Some(entry.as_ptr()),
        None => count_invoke(bead, work).map(NonNull::as_ptr),
    }
}

/// A loop back-edge probe at `site`: the OSR entry for `site` if the
/// installed code has one (one load when there is no table), else
/// kiln-core's back-edge counting out of line. `work()` builds the OSR
/// compile's work only if this probe wins the promotion.
#[inline(always)]
pub(crate) fn on_backedge(bead: &Arc<Bead>, site: u64, work: impl FnOnce() -> CompileWork) -> Option<*mut ()> {
    match bead.kiln_bead.osr_entry(site) {
        Some(entry) => Some(entry.as_ptr()),
        None => count_backedge(bead, site, work).map(NonNull::as_ptr),
    }
}

/// kiln-core's counting path (`Bead::count_call`), out of line so an
/// inlined caller carries none of it. It touches the bead only; the broker
/// is reached in [`invoke_due`], which takes the same arguments, so the
/// hand-over is a jump with nothing to move. Returns one register
/// (`Option<NonNull>`); the caller's conversion to the seed's
/// `Option<*mut ()>` folds into its branch.
#[inline(never)]
fn count_invoke(bead: &Arc<Bead>, work: impl FnOnce(u8) -> CompileWork) -> Option<NonNull<()>> {
    match bead.kiln_bead.count_call() {
        CallCount::Interpret(warm) => warm,
        CallCount::Due => invoke_due(bead, work),
    }
}

/// The call whose countdown ran out: kiln-core's broker decides, and builds
/// the job (the work and one reference) only if this call wins.
#[cold]
#[inline(never)]
fn invoke_due(bead: &Arc<Bead>, work: impl FnOnce(u8) -> CompileWork) -> Option<NonNull<()>> {
    bead.domain.broker.invoke_due(&bead.kiln_bead, |tier, _| JobHandle::new(bead, work(tier)))
}

/// kiln-core's back-edge counting, out of line.
#[inline(never)]
fn count_backedge(bead: &Arc<Bead>, site: u64, work: impl FnOnce() -> CompileWork) -> Option<NonNull<()>> {
    bead.domain.broker.count_backedge(&bead.kiln_bead, site, |_, _| JobHandle::new(bead, work()))
}

/// Queues `work` for `bead` now, at tier 0 or the tier above the installed
/// code.
pub(crate) fn submit(bead: &Arc<Bead>, work: CompileWork) -> SubmitResult {
    let tier = bead.kiln_bead.tier().map_or(0, |tier| tier.saturating_add(1));
    submit_at(bead, tier, work)
}

/// Queues `work` for `bead` at `tier` now. A bead whose installed code is
/// already final queues nothing: that is `AlreadyQueued` ("or beyond").
/// Work that is not queued is dropped here, unrun.
pub(crate) fn submit_at(bead: &Arc<Bead>, tier: u8, work: CompileWork) -> SubmitResult {
    let mut work = Some(work);
    let result = bead.domain.broker.submit_lazy(&bead.kiln_bead, tier, JobKind::Invoke, |_, _| {
        let work = work.take().expect("kiln-core makes a promotion's handle once");
        JobHandle::new(bead, work)
    });
    match result {
        // `Ok` without taking the work: the installed code is final.
        Ok(()) if work.is_none() => SubmitResult::Accepted,
        Err(KilnError::QueueFull) => SubmitResult::QueueFull,
        _ => SubmitResult::AlreadyQueued,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{Beadie, BeadieConfig, Budget, ReloadOutcome, ThresholdPolicy};

    extern "C" fn native() -> i64 {
        1
    }

    /// How often one job's compile work ran and was dropped.
    #[derive(Default)]
    struct Probe {
        runs: AtomicUsize,
        drops: AtomicUsize,
    }

    impl Probe {
        fn counts(&self) -> (usize, usize) {
            (self.runs.load(Ordering::SeqCst), self.drops.load(Ordering::SeqCst))
        }
    }

    struct CountsDrop(Arc<Probe>);

    impl Drop for CountsDrop {
        fn drop(&mut self) {
            self.0.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A compile closure reporting to `probe`.
    fn probed(probe: &Arc<Probe>) -> impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static {
        let guard = CountsDrop(Arc::clone(probe));
        move |_| {
            guard.0.runs.fetch_add(1, Ordering::SeqCst);
            native as extern "C" fn() -> i64 as *mut ()
        }
    }

    /// No workers: jobs run only when the test pumps. Promotes on the first call.
    fn beadie(queue_capacity: usize) -> Beadie {
        Beadie::with_config(
            ThresholdPolicy::new(1),
            BeadieConfig { workers: 0, queue_capacity, ..BeadieConfig::default() },
        )
    }

    #[test]
    fn a_promotion_refused_by_a_full_queue_drops_its_work_unrun() {
        let beadie = beadie(1);
        let (queued, refused) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
        let first = beadie.register(std::ptr::null_mut(), None);
        let second = beadie.register(std::ptr::null_mut(), None);
        assert_eq!(beadie.on_invoke(&first, probed(&queued)), None);
        assert_eq!(beadie.on_invoke(&second, probed(&refused)), None);
        assert_eq!(beadie.stats().queue_full, 1);
        assert_eq!(refused.counts(), (0, 1), "refused: dropped once, never run");
        assert_eq!(queued.counts(), (0, 0), "queued: carried by its job");
        beadie.pump(Budget::unlimited());
        assert_eq!(queued.counts(), (1, 1), "run once, then dropped");
        assert!(first.compiled().is_some());
    }

    #[test]
    fn a_stale_job_drops_its_work_unrun_when_popped() {
        let beadie = beadie(8);
        let probe = Arc::new(Probe::default());
        let bead = beadie.register(std::ptr::null_mut(), None);
        assert_eq!(beadie.on_invoke(&bead, probed(&probe)), None);
        assert_eq!(bead.reload(), ReloadOutcome::Reverted);
        assert_eq!(probe.counts(), (0, 0), "still in the queue");
        let report = beadie.pump(Budget::unlimited());
        assert_eq!((report.ran, report.dropped), (0, 1));
        assert_eq!(probe.counts(), (0, 1));
    }

    #[test]
    fn cancelled_jobs_drop_their_work_unrun_at_shutdown() {
        let beadie = beadie(8);
        let probes: Vec<Arc<Probe>> = (0..3).map(|_| Arc::default()).collect();
        let beads: Vec<Arc<Bead>> = probes.iter().map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
        for (bead, probe) in beads.iter().zip(&probes) {
            assert_eq!(beadie.on_invoke(bead, probed(probe)), None);
        }
        assert_eq!(beadie.stats().queue_depth, 3);
        drop(beadie);
        for probe in &probes {
            assert_eq!(probe.counts(), (0, 1));
        }
    }

    #[test]
    fn a_call_that_does_not_win_builds_no_work() {
        let beadie = beadie(8);
        let bead = beadie.register(std::ptr::null_mut(), None);
        assert_eq!(beadie.on_invoke(&bead, |_| native as extern "C" fn() -> i64 as *mut ()), None);
        let losers = Arc::new(Probe::default());
        for _ in 0..100 {
            assert_eq!(beadie.on_invoke(&bead, probed(&losers)), None);
        }
        assert_eq!(losers.counts(), (0, 100), "each losing closure dropped at once, never run");
        assert_eq!(beadie.stats().queue_depth, 1);
    }
}
