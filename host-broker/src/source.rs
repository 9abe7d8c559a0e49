//! Where kiln-host gets its jobs: anything that hands out claimed jobs.
//!
//! kiln-core's [`Broker`] has seven type parameters (handle, two policies,
//! wake hook, events, two capacities). The frame pump and the job-system
//! adapters need only two of its operations, `claim` and `queue_len`, so they
//! see the broker through this small trait — as `&dyn JobSource<H>` in the
//! frame pump, as a generic bound in the adapters — and host types stay short.
//! The claim is kiln-core's own: the bead goes Queued → Compiling under the
//! broker's lock, and the [`Job`] token must be run, published, failed or
//! dropped (which abandons it and lets the bead cool down).

use kiln_core::{BeadRef, Broker, ClaimError, DeoptPolicy, Events, HotnessPolicy, Job, Pump};

/// A source of claimed compile jobs: kiln-core's [`Broker`] (whatever its
/// policies, hooks and capacities), or a wrapper around one.
pub trait JobSource<H> {
    /// Claims the next job (see [`Broker::claim`]).
    fn claim(&self) -> Result<Job<'_, H>, ClaimError>;

    /// Jobs still waiting to be claimed.
    fn queue_len(&self) -> usize;
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> JobSource<H> for Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    W: Pump,
    E: Events,
{
    fn claim(&self) -> Result<Job<'_, H>, ClaimError> {
        Broker::claim(self)
    }

    fn queue_len(&self) -> usize {
        Broker::queue_len(self)
    }
}

impl<H, S: JobSource<H> + ?Sized> JobSource<H> for &S {
    fn claim(&self) -> Result<Job<'_, H>, ClaimError> {
        (**self).claim()
    }

    fn queue_len(&self) -> usize {
        (**self).queue_len()
    }
}
