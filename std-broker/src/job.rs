//! A job carries its work: the handle kiln-core's queue holds is a bead
//! together with the compile work of the one job it stands for, so nothing
//! about a job is stored on the bead and joined back later.
//!
//! kiln-core clones the caller's handle into its queue when a call wins a
//! promotion, right after the promotion hook ran; nothing else clones it.
//! So the caller passes a [`LentHandle`] (its own `Arc<Bead>`, borrowed
//! without touching the count, and an empty work slot), the hook puts the
//! work into the slot, and the clone takes it: cloning a [`JobHandle`]
//! *moves* its work into the clone. From then on the work lives and dies
//! with the queue entry:
//!
//! - a compile takes it out and runs it ([`JobHandle::take_work`]);
//! - every path that drops a job unrun (a cancel, shutdown, a full queue,
//!   a stale entry popped, a claimed job abandoned) drops the handle, and
//!   with it the work, once, without running it;
//! - a lent handle never keeps work: kiln-core clones it right after the
//!   hook (checked in debug builds).

use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
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
    /// The bead the job compiles.
    pub(crate) fn bead_arc(&self) -> &Arc<Bead> {
        &self.bead
    }

    /// Takes the job's compile work out (`None` once taken, or for a handle
    /// cloned without work, which kiln-core's promotion order rules out).
    pub(crate) fn take_work(&self) -> Option<CompileWork> {
        self.work.take()
    }
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle").field("bead", &self.bead).finish_non_exhaustive()
    }
}

/// Moves the work: the clone is the queue's copy, the original is the
/// caller's lent handle (see the module docs).
impl Clone for JobHandle {
    fn clone(&self) -> Self {
        Self { bead: Arc::clone(&self.bead), work: Cell::new(self.work.take()) }
    }
}

impl BeadRef for JobHandle {
    #[inline(always)]
    fn bead(&self) -> &kiln_core::Bead {
        &self.bead.kiln_bead
    }
}

/// A [`JobHandle`] over the caller's `Arc<Bead>`, for one call into
/// kiln-core: no refcount is touched unless the call wins a promotion
/// (then kiln-core's clone takes one reference for the queue).
pub(crate) struct LentHandle<'a> {
    /// Shares the caller's reference: never dropped as a handle.
    handle: ManuallyDrop<JobHandle>,
    lent: PhantomData<&'a Arc<Bead>>,
}

impl<'a> LentHandle<'a> {
    /// Lends `bead` for the lifetime of the returned handle.
    #[inline(always)]
    pub(crate) fn new(bead: &'a Arc<Bead>) -> Self {
        // SAFETY: a bitwise copy of the caller's `Arc` that is never dropped
        // (`ManuallyDrop`; `Drop` below touches only the work) and lives no
        // longer than the borrow `'a`: the count stays right, and the bead
        // outlives every use of the copy. Clones made from it take their
        // own reference.
        let bead = unsafe { std::ptr::read(bead) };
        Self { handle: ManuallyDrop::new(JobHandle { bead, work: Cell::new(None) }), lent: PhantomData }
    }

    /// The handle to pass to kiln-core.
    #[inline(always)]
    pub(crate) fn handle(&self) -> &JobHandle {
        &self.handle
    }

    /// Puts `work` into the slot the queue's clone takes it from. Called
    /// by the promotion hook, so only when this call won.
    pub(crate) fn attach(&self, work: CompileWork) {
        self.handle.work.set(Some(work));
    }
}

impl Drop for LentHandle<'_> {
    fn drop(&mut self) {
        // kiln-core clones the handle into its queue right after the
        // promotion hook returns (its `promote`), so the slot is empty by
        // now. Checked in debug builds, where kiln's tests run; a release
        // build skips the check, which would cost the counting path five
        // instructions (under a broken contract it would leak the work:
        // never run it, never free it twice).
        #[cfg(debug_assertions)]
        if let Some(work) = self.handle.work.take() {
            drop(work);
            assert!(std::thread::panicking(), "kiln-core did not queue the clone of a promoted handle");
        }
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
    fn lending_touches_no_count_and_the_clone_takes_one() {
        let bead = Bead::new(std::ptr::null_mut(), None);
        let lent = LentHandle::new(&bead);
        assert_eq!(Arc::strong_count(&bead), 1);
        let queued = lent.handle().clone();
        assert_eq!(Arc::strong_count(&bead), 2);
        drop(lent);
        assert_eq!(Arc::strong_count(&bead), 2);
        drop(queued);
        assert_eq!(Arc::strong_count(&bead), 1);
    }

    /// What a winning call does: lend `bead`, attach counted work, and
    /// clone the handle as kiln-core does into its queue.
    fn promoted<'a>(bead: &'a Arc<Bead>, drops: &Arc<AtomicUsize>) -> (LentHandle<'a>, JobHandle) {
        let lent = LentHandle::new(bead);
        lent.attach(counted_work(drops));
        let queued = lent.handle().clone();
        (lent, queued)
    }

    #[test]
    fn cloning_moves_the_work_into_the_queue_copy() {
        let drops = Arc::new(AtomicUsize::new(0));
        let bead = Bead::new(std::ptr::null_mut(), None);
        let (lent, queued) = promoted(&bead, &drops);
        assert!(lent.handle().take_work().is_none(), "the lent handle gave its work away");
        drop(lent);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "the queue's copy still holds it");
        let work = queued.take_work().expect("the queue's copy carries the work");
        assert!(queued.take_work().is_none(), "taken once");
        drop(work);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_job_dropped_unrun_drops_its_work_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let bead = Bead::new(std::ptr::null_mut(), None);
        let (lent, queued) = promoted(&bead, &drops);
        drop(lent);
        drop(queued);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "did not queue the clone")]
    fn a_lent_handle_left_holding_work_is_caught_in_debug_builds() {
        let drops = Arc::new(AtomicUsize::new(0));
        let bead = Bead::new(std::ptr::null_mut(), None);
        let lent = LentHandle::new(&bead);
        lent.attach(counted_work(&drops));
        drop(lent);
    }
}
