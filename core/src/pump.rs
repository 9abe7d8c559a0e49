//! The pump: how compile work reaches a thread the host owns.
//!
//! kiln never starts a thread and never blocks. When a job is queued it calls
//! the host's [`Pump::wake`] — at most once until a pumper starts draining,
//! so a burst of promotions costs one wake-up — and the host then calls
//! [`Broker::pump`](crate::Broker::pump) wherever it likes: a dedicated
//! thread, a job-system task, or the main loop between frames with a
//! [`Budget`].
//!
//! # The `Pump::wake` contract
//!
//! - It may be called from any thread that calls into the broker, including
//!   an interpreter thread in the middle of a call and (with feature
//!   `critical-section`) an interrupt handler. It is never called with the
//!   broker's lock held.
//! - It must not block and must not call back into the broker (no `pump`,
//!   no `claim`, no `on_invoke`): schedule the pumping, don't do it.
//! - Doing nothing is valid: a host that pumps on its own schedule (every
//!   frame) uses [`NoPump`].

/// The host's wake-up hook. See the module docs for its contract.
pub trait Pump {
    /// Work was queued; arrange for `Broker::pump` to run soon.
    fn wake(&self);
}

/// A pump for hosts that call `Broker::pump` on their own schedule.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPump;

impl Pump for NoPump {
    fn wake(&self) {}
}

impl<W: Pump + ?Sized> Pump for &W {
    fn wake(&self) {
        (**self).wake()
    }
}

/// A monotonic clock in host-defined ticks (nanoseconds, cycles, ...).
pub trait Clock {
    /// Ticks since an arbitrary fixed origin; never goes backwards.
    fn now(&self) -> u64;
}

/// How much work one `pump` call may do.
#[derive(Clone, Copy)]
pub struct Budget<'c> {
    pub(crate) max_jobs: u32,
    pub(crate) clock: Option<&'c dyn Clock>,
    pub(crate) deadline: Option<u64>,
}

impl core::fmt::Debug for Budget<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Budget")
            .field("max_jobs", &self.max_jobs)
            .field("clock", &self.clock.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<'c> Budget<'c> {
    /// Run until the queue is empty.
    pub const fn unlimited() -> Self {
        Self { max_jobs: u32::MAX, clock: None, deadline: None }
    }

    /// Run at most `max_jobs` jobs.
    pub const fn jobs(max_jobs: u32) -> Self {
        Self { max_jobs, clock: None, deadline: None }
    }

    /// Also stop once `clock` reads `deadline` or later (checked between
    /// jobs: a job that started runs to its end). The clock also times
    /// compiles for [`Events::compiled`](crate::Events::compiled).
    pub fn until(mut self, clock: &'c dyn Clock, deadline: u64) -> Self {
        self.clock = Some(clock);
        self.deadline = Some(deadline);
        self
    }

    /// Time compiles with `clock` without a deadline.
    pub fn timed(mut self, clock: &'c dyn Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    pub(crate) fn now(&self) -> Option<u64> {
        self.clock.map(Clock::now)
    }

    pub(crate) fn expired(&self) -> bool {
        match (self.clock, self.deadline) {
            (Some(clock), Some(deadline)) => clock.now() >= deadline,
            _ => false,
        }
    }
}

impl Default for Budget<'_> {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// Why a `pump` call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PumpStop {
    /// The queue is empty.
    #[default]
    Idle,
    /// `max_jobs` jobs ran.
    JobLimit,
    /// The deadline passed.
    Deadline,
    /// The next job would replace code but the retire ring is full: call
    /// `quiesce` and pump again.
    RetireFull,
}

/// What one `pump` call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PumpReport {
    /// Jobs claimed and run.
    pub ran: u32,
    /// Of those, published.
    pub published: u32,
    /// Of those, failed.
    pub failed: u32,
    /// Of those, finished after their bead moved on (result released).
    pub stale: u32,
    /// Stale queue entries dropped without running.
    pub dropped: u32,
    /// Jobs still queued when the pump returned.
    pub remaining: u32,
    /// Clock ticks spent, if the budget had a clock.
    pub ticks: u64,
    /// Why it returned.
    pub stop: PumpStop,
}

#[cfg(feature = "std")]
mod std_clock {
    extern crate std;

    /// A monotonic nanosecond clock from `std::time::Instant`.
    #[derive(Clone, Copy, Debug)]
    pub struct StdClock {
        origin: std::time::Instant,
    }

    impl StdClock {
        /// A clock whose origin is now.
        pub fn new() -> Self {
            Self { origin: std::time::Instant::now() }
        }
    }

    impl Default for StdClock {
        fn default() -> Self {
            Self::new()
        }
    }

    impl super::Clock for StdClock {
        fn now(&self) -> u64 {
            u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
        }
    }
}

#[cfg(feature = "std")]
pub use std_clock::StdClock;

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    struct FakeClock(Cell<u64>);
    impl Clock for FakeClock {
        fn now(&self) -> u64 {
            self.0.get()
        }
    }

    #[test]
    fn deadline_expires_only_with_a_clock() {
        let clock = FakeClock(Cell::new(10));
        let budget = Budget::jobs(3).until(&clock, 15);
        assert!(!budget.expired());
        clock.0.set(15);
        assert!(budget.expired());
        assert_eq!(budget.now(), Some(15));
        assert!(!Budget::unlimited().expired());
        assert_eq!(Budget::jobs(2).now(), None);
        assert_eq!(Budget::jobs(2).timed(&clock).now(), Some(15));
    }
}
