//! The wake hook: how kiln tells the host that compile work appeared.

/// The host's wake-up hook.
///
/// kiln never starts a thread and never blocks. When a job is queued it calls
/// the host's [`WakeHook::wake`] — at most once until a pumper starts
/// draining, so a burst of promotions costs one wake-up — and the host then
/// runs jobs wherever it likes ([`Broker::pump`](crate::Broker::pump), a
/// frame pump, a job-system task; see [`pump_jobs`](crate::pump_jobs)).
///
/// Two words, two things: the *wake hook* is what the host implements and
/// kiln calls; a *pump* is what runs jobs. (Before, the hook's trait was
/// also called `Pump`; that name stays as a deprecated alias.)
///
/// # The `WakeHook::wake` contract
///
/// - It may be called from any thread that calls into the broker, including
///   an interpreter thread in the middle of a call and (with feature
///   `critical-section`) an interrupt handler. It is never called with the
///   broker's lock held.
/// - It must not block and must not call back into the broker (no `pump`,
///   no `claim`, no `on_invoke`): schedule the pumping, don't do it.
/// - Doing nothing is valid: a host that pumps on its own schedule (every
///   frame) uses [`NoWake`].
pub trait WakeHook {
    /// Work was queued; arrange for jobs to be pumped soon.
    fn wake(&self);

    /// A promotion was pushed, or refused by a full queue, leaving `queued`
    /// jobs in the queue (read just after the push: another thread's push
    /// or pop may already show in it). Called on every push, after [`wake`](Self::wake)
    /// (which is coalesced), from the pushing thread, with the same
    /// contract as `wake` (never under the broker's lock, must not block or
    /// call back into the broker). For a host that reacts to the queue's
    /// depth as well as to its first job: kiln-std wakes a sleeping worker
    /// once 16 jobs wait. The default does nothing.
    #[inline]
    fn pushed(&self, queued: usize) {
        let _ = queued;
    }
}

/// A wake hook for hosts that pump on their own schedule: wakes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoWake;

impl WakeHook for NoWake {
    fn wake(&self) {}
}

/// The wake hook's old name. Implementors of `Pump` are wake hooks.
#[deprecated(note = "renamed to `WakeHook` (\"pump\" now means running jobs only)")]
pub trait Pump {
    /// Work was queued; arrange for jobs to be pumped soon.
    fn wake(&self);
}

#[allow(deprecated)]
impl<T: Pump + ?Sized> WakeHook for T {
    fn wake(&self) {
        Pump::wake(self)
    }
}

#[allow(deprecated)]
impl<T: Pump + ?Sized> Pump for &T {
    fn wake(&self) {
        Pump::wake(*self)
    }
}

/// [`NoWake`]'s old name, as a type.
#[deprecated(note = "renamed to `NoWake`")]
pub type NoPump = NoWake;

/// [`NoWake`]'s old name, as a value (`Broker::new(.., NoPump, ..)`).
#[deprecated(note = "renamed to `NoWake`")]
#[allow(non_upper_case_globals)]
pub const NoPump: NoWake = NoWake;
