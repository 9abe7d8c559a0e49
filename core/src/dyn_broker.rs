//! [`DynBroker`]: the broker as the layers above it use it, behind `dyn`.
//!
//! [`Broker`] has seven type parameters (handle, two policies, wake hook,
//! events, two capacities). A pump that runs jobs, a std layer that reclaims
//! code, or a backend that evicts needs none of them but the handle type, so
//! they take `&dyn DynBroker<H>` and their own types stay short. The trait
//! is object-safe and holds the operations that do not depend on the
//! broker's policies: claiming jobs, the queue's length, evicting code and
//! declaring quiescence. Every method is the [`Broker`] method of the same
//! name, with the same meaning; only `quiesce` differs in shape, taking a
//! release sink (`&mut dyn FnMut(CodeHandle)`) instead of a whole compiler,
//! since releasing code is all it needs.

use core::num::NonZeroU32;

use crate::bead::BeadRef;
use crate::broker::{Broker, ClaimError};
use crate::compiler::CodeHandle;
use crate::deopt::DeoptPolicy;
use crate::error::KilnError;
use crate::job::Job;
use crate::policy::HotnessPolicy;
use crate::stats::Events;
use crate::wake::WakeHook;

/// The broker behind `dyn`, for pumps, std layers and backends; see the
/// module notes. Implemented by every [`Broker`].
pub trait DynBroker<H> {
    /// Claims the next job ([`Broker::claim`]).
    fn claim(&self) -> Result<Job<'_, H>, ClaimError> {
        self.claim_counting_stale(&mut 0)
    }

    /// Claims the next job, adding the stale queue entries it dropped on the
    /// way to `stale` ([`Broker::claim_counting_stale`]).
    fn claim_counting_stale(&self, stale: &mut u32) -> Result<Job<'_, H>, ClaimError>;

    /// Jobs waiting in the queue ([`Broker::queue_len`]).
    fn queue_len(&self) -> usize;

    /// Sends `bead`'s code back to the interpreter without a bailout
    /// ([`Broker::evict`]).
    fn evict(&self, bead: &H, pause: NonZeroU32) -> Result<(), KilnError>;

    /// Declares quiescence for every thread and hands the code that became
    /// releasable to `release` ([`Broker::quiesce`]). Returns how many.
    fn quiesce(&self, release: &mut dyn FnMut(CodeHandle)) -> usize;
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> DynBroker<H> for Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    W: WakeHook,
    E: Events,
{
    fn claim_counting_stale(&self, stale: &mut u32) -> Result<Job<'_, H>, ClaimError> {
        Broker::claim_counting_stale(self, stale)
    }

    fn queue_len(&self) -> usize {
        Broker::queue_len(self)
    }

    fn evict(&self, bead: &H, pause: NonZeroU32) -> Result<(), KilnError> {
        Broker::evict(self, bead, pause)
    }

    fn quiesce(&self, release: &mut dyn FnMut(CodeHandle)) -> usize {
        self.quiesce_with(release)
    }
}

impl<H, B: DynBroker<H> + ?Sized> DynBroker<H> for &B {
    fn claim_counting_stale(&self, stale: &mut u32) -> Result<Job<'_, H>, ClaimError> {
        (**self).claim_counting_stale(stale)
    }

    fn queue_len(&self) -> usize {
        (**self).queue_len()
    }

    fn evict(&self, bead: &H, pause: NonZeroU32) -> Result<(), KilnError> {
        (**self).evict(bead, pause)
    }

    fn quiesce(&self, release: &mut dyn FnMut(CodeHandle)) -> usize {
        (**self).quiesce(release)
    }
}
