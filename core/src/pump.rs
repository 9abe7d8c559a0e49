//! Pumping: running compile jobs, and the one loop every pump uses.
//!
//! A *pump* runs jobs the broker queued: [`Broker::pump`](crate::Broker::pump)
//! with a compiler and a [`Budget`], kiln-host's frame pump between frames,
//! its job-system pump on worker tasks. All of them run [`pump_jobs`]: claim
//! a job, hand it to a [`JobRunner`] (which compiles, times and finishes it
//! its own way, or keeps it for later), count the outcome in a
//! [`PumpReport`], and stop on an empty queue, a full retire ring, the
//! budget, or the runner's word. The hook that *wakes* a pump is
//! [`WakeHook`](crate::WakeHook) (`wake.rs`).

use crate::broker::ClaimError;
use crate::dyn_broker::DynBroker;
use crate::job::{Job, JobOutcome};

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

/// Why a pump returned.
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
    /// The [`JobRunner`] asked to stop (a stop request, no room to keep a job).
    Stopped,
}

/// What one pump did: the one report type of every kiln pump (kiln-host's
/// frame report embeds it).
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

impl PumpReport {
    /// Adds what a later pump over the same queue did: its counts and ticks
    /// add up; its `remaining` and `stop` are the latest.
    pub fn merge(&mut self, later: PumpReport) {
        self.ran += later.ran;
        self.published += later.published;
        self.failed += later.failed;
        self.stale += later.stale;
        self.dropped += later.dropped;
        self.ticks = self.ticks.saturating_add(later.ticks);
        self.remaining = later.remaining;
        self.stop = later.stop;
    }

    /// Counts one job that ran to `outcome`.
    pub fn record(&mut self, outcome: JobOutcome) {
        self.ran += 1;
        match outcome {
            JobOutcome::Published => self.published += 1,
            JobOutcome::Failed => self.failed += 1,
            JobOutcome::Stale => self.stale += 1,
        }
    }
}

/// What a [`JobRunner`] did with a claimed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Handled {
    /// It ran to this outcome (counted in the report).
    Ran(JobOutcome),
    /// The runner keeps the claimed job to run later (a frame pump holding a
    /// job that does not fit); it is not counted as run.
    Kept,
}

/// How one pump runs the jobs [`pump_jobs`] claims for it.
pub trait JobRunner<'b, H> {
    /// Asked before every claim; `false` ends the loop with
    /// [`PumpStop::Stopped`]. The default never stops.
    fn wants_more(&mut self) -> bool {
        true
    }

    /// Runs one claimed job (compile, then [`Job::finish`]), or keeps it.
    fn run(&mut self, job: Job<'b, H>) -> Handled;
}

/// kiln's one job loop: claims jobs from `broker` and hands each to
/// `runner`, until the runner stops, `budget`'s job limit or deadline is
/// reached (checked between jobs: a job that started runs to its end), the
/// queue is empty, or the next job would replace code while the retire ring
/// is full. Each claim re-arms the broker's wake flag, so the next promotion
/// wakes the host again. Reports what ran; `remaining` and `ticks` (if the
/// budget has a clock) are read at the end.
pub fn pump_jobs<'b, H>(
    broker: &'b dyn DynBroker<H>,
    budget: Budget<'_>,
    runner: &mut dyn JobRunner<'b, H>,
) -> PumpReport {
    let started = budget.now();
    let mut report = PumpReport::default();
    report.stop = loop {
        if !runner.wants_more() {
            break PumpStop::Stopped;
        }
        if report.ran >= budget.max_jobs {
            break PumpStop::JobLimit;
        }
        if budget.expired() {
            break PumpStop::Deadline;
        }
        match broker.claim_counting_stale(&mut report.dropped) {
            Ok(job) => match runner.run(job) {
                Handled::Ran(outcome) => report.record(outcome),
                Handled::Kept => {}
            },
            Err(ClaimError::Empty) => break PumpStop::Idle,
            Err(ClaimError::RetireFull) => break PumpStop::RetireFull,
        }
    };
    report.remaining = broker.queue_len() as u32;
    report.ticks = budget.now().zip(started).map_or(0, |(now, started)| now.saturating_sub(started));
    report
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
