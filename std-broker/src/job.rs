//! A job carries its work: the handle kiln-core's queue holds is a bead
//! together with the compile work of the one job it stands for, so nothing
//! about a job is stored on the bead and joined back later.
//!
//! The handle is made by the call that wins a promotion, and only by it:
//! kiln-std hands kiln-core its bead (`on_invoke_lazy` and friends) with a
//! closure that builds [`JobHandle::new`] — one reference taken, the work
//! moved in — after the win and before the push. A call that does not win
//! builds nothing and touches no refcount. From then on the work lives and
//! dies with the queue entry:
//!
//! - a compile takes it out and runs it ([`JobHandle::take_work`]);
//! - every path that drops a job unrun (a cancel, shutdown, a full queue,
//!   a stale entry popped, a claimed job abandoned) drops the handle, and
//!   with it the work, once, without running it.

use std::cell::Cell;
use std::sync::Arc;

use kiln_core::BeadRef;

use crate::bead::Bead;
use crate::work::CompileWork;

/// The handle in kiln-core's queue: a bead and its job's compile work.
///
/// `Send` but not `Sync`: the work slot is a `Cell`. kiln-core moves
/// handles between threads (under its lock) but never shares one: a
/// claimed job's handle is read by the one thread that runs it.
pub(crate) struct JobHandle {
    bead: Arc<Bead>,
    work: Cell<Option<CompileWork>>,
}

impl JobHandle {
    /// The handle of a job compiling `bead` with `work`: what the winning
    /// call hands kiln-core's queue.
    pub(crate) fn new(bead: &Arc<Bead>, work: CompileWork) -> Self {
        Self { bead: Arc::clone(bead), work: Cell::new(Some(work)) }
    }

    /// The bead the job compiles.
    pub(crate) fn bead_arc(&self) -> &Arc<Bead> {
        &self.bead
    }

    /// Takes the job's compile work out (`None` once taken, or for a clone,
    /// which carries none).
    pub(crate) fn take_work(&self) -> Option<CompileWork> {
        self.work.take()
    }
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle").field("bead", &self.bead).finish_non_exhaustive()
    }
}

/// Another reference to the same bead, without work: the work belongs to
/// the one queued job (kiln-core's `BeadRef` requires `Clone`; kiln-std
/// queues only handles made by [`JobHandle::new`], and kiln-core's lazy
/// entry points never clone one).
impl Clone for JobHandle {
    fn clone(&self) -> Self {
        Self { bead: Arc::clone(&self.bead), work: Cell::new(None) }
    }
}

impl BeadRef for JobHandle {
    #[inline(always)]
    fn bead(&self) -> &kiln_core::Bead {
        &self.bead.kiln_bead
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::code::Built;

    /// Work that counts its drops (and never runs here).
    fn counted_work(drops: &Arc<AtomicUsize>) -> CompileWork {
        struct OnDrop(Arc<AtomicUsize>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = OnDrop(Arc::clone(drops));
        Box::new(move |bead: &Arc<Bead>, _tier: u8| -> Result<Built, crate::CompileFailure> {
            let _keep = &guard;
            Ok(bead.built(std::ptr::null_mut(), Vec::new(), None))
        })
    }

    #[test]
    fn a_handle_takes_one_reference_and_gives_it_back() {
        let drops = Arc::new(AtomicUsize::new(0));
        let bead = Bead::new(std::ptr::null_mut(), None);
        let job = JobHandle::new(&bead, counted_work(&drops));
        assert_eq!(Arc::strong_count(&bead), 2);
        drop(job);
        assert_eq!(Arc::strong_count(&bead), 1);
    }

    #[test]
    fn the_work_is_taken_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let bead = Bead::new(std::ptr::null_mut(), None);
        let job = JobHandle::new(&bead, counted_work(&drops));
        let work = job.take_work().expect("a new handle carries its work");
        assert!(job.take_work().is_none(), "taken once");
        drop(job);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "the taken work outlives its handle");
        drop(work);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_job_dropped_unrun_drops_its_work_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let bead = Bead::new(std::ptr::null_mut(), None);
        drop(JobHandle::new(&bead, counted_work(&drops)));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_clone_shares_the_bead_but_not_the_work() {
        let drops = Arc::new(AtomicUsize::new(0));
        let bead = Bead::new(std::ptr::null_mut(), None);
        let job = JobHandle::new(&bead, counted_work(&drops));
        let clone = job.clone();
        assert!(Arc::ptr_eq(clone.bead_arc(), &bead));
        assert_eq!(Arc::strong_count(&bead), 3);
        assert!(clone.take_work().is_none(), "the clone carries no work");
        drop(clone);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "cloning neither moved nor dropped the work");
        assert!(job.take_work().is_some(), "the original still carries it");
    }
}
