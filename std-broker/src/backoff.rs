//! How an idle worker waits: the schedule of its polls of the queue.
//!
//! Nobody wakes a kiln-std worker (see `worker`): it finds work by looking
//! at the queue's length between sleeps. How long it sleeps is the whole
//! trade-off between promotion latency after a pause and what an idle
//! process costs, so the schedule is one value ([`Backoff`]) and two pure
//! functions ([`Backoff::first_after`], [`Backoff::capped`]) that a test
//! can walk without a clock.
//!
//! Every wake-up costs about the same whatever the worker then does (a timer
//! expiry, a switch into the thread and back; 20–35 µs of CPU on the busy
//! VM the figures in BENCHMARKS.md come from, ~90 % of it outside kiln), so
//! idle CPU is the wake-up rate, and the schedule lowers the rate the longer
//! the worker has been idle. A burst of promotions does not wait for the
//! poll: it wakes a sleeping worker (see `sleepers`).
//!
//! The first sleep after a pump depends on what it ran. After a burst
//! (16 jobs or more) it is 20 µs: the burst's stragglers, fewer than a
//! burst and so waking nobody, are coming. After fewer jobs it is 250 µs:
//! promotions that trickle in one by one (a Zipf-like warm-up's long tail)
//! are then taken a few at a time, where each wake-up of the worker would
//! preempt an interpreter thread on a busy machine. With 20 µs after every
//! pump the measured Zipf storm's wall time rose by about a sixth; with
//! 250 µs after every pump a uniform storm's last beads waited for it.
//!
//! There is no spinning or yielding phase. It was there (200 µs of
//! `yield_now` after each job) to catch the rest of a burst in
//! microseconds, but on a machine whose cores all run interpreter threads a
//! yielding worker goes to the back of the run queue and, in measured
//! warm-up storms, looked at the queue again only after another thread's
//! whole time slice (up to 3 ms), while a sleeping one is woken by the
//! burst itself.
//!
//! | idle for | sleeps | promotion waits up to | wake-ups per second |
//! |---|---|---|---|
//! | < 1 s | 20 µs (after a burst) or 250 µs doubling to 1 ms | ~1 ms | ~1,000 |
//! | < 10 s | doubling on to 20 ms | ~20 ms | 50 |
//! | longer | doubling on to 100 ms | ~100 ms | 10 |

use std::time::Duration;

use crate::sleepers::BURST;

/// An idle worker's schedule: timed sleeps doubling from a first sleep up
/// to a cap that rises with the time idle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// The first sleep after a pump that ran a burst.
    pub(crate) after_burst: Duration,
    /// The first sleep otherwise (after fewer jobs, and at start); each
    /// poll doubles the sleep up to the current cap.
    pub(crate) first: Duration,
    /// The cap while idle for less than `stay_warm`: the bound on
    /// promotion latency after a pause.
    pub(crate) warm: Duration,
    pub(crate) stay_warm: Duration,
    /// The cap while idle for less than `stay_cold`.
    pub(crate) cold: Duration,
    pub(crate) stay_cold: Duration,
    /// The cap after a longer idle: the bound on promotion latency after a
    /// long idle, and what an idle process costs.
    pub(crate) deep: Duration,
}

impl Backoff {
    /// kiln-std's schedule (the table in the module docs).
    pub(crate) const DEFAULT: Backoff = Backoff {
        after_burst: Duration::from_micros(20),
        first: Duration::from_micros(250),
        warm: Duration::from_millis(1),
        stay_warm: Duration::from_secs(1),
        cold: Duration::from_millis(20),
        stay_cold: Duration::from_secs(10),
        deep: Duration::from_millis(100),
    };

    /// The first sleep after a pump that ran `ran` jobs (the worker then
    /// doubles each sleep).
    pub(crate) fn first_after(&self, ran: usize) -> Duration {
        if ran >= BURST { self.after_burst } else { self.first }
    }

    /// The sleep a worker idle for `idle` takes when it would sleep
    /// `wanted`: at most the cap of its idle time.
    pub(crate) fn capped(&self, idle: Duration, wanted: Duration) -> Duration {
        let cap = match idle {
            idle if idle < self.stay_warm => self.warm,
            idle if idle < self.stay_cold => self.cold,
            _ => self.deep,
        };
        wanted.min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The sleeps of a worker idle from `from` on, each sleep taking exactly
    /// its length: (idle at the sleep, sleep).
    fn walk(backoff: &Backoff, mut idle: Duration, until: Duration) -> Vec<(Duration, Duration)> {
        let (mut wanted, mut sleeps) = (backoff.first_after(0), Vec::new());
        while idle < until {
            let sleep = backoff.capped(idle, wanted);
            sleeps.push((idle, sleep));
            wanted = sleep * 2;
            idle += sleep;
        }
        sleeps
    }

    #[test]
    fn a_burst_is_followed_by_a_short_sleep_and_a_lone_job_by_a_longer_one() {
        let backoff = Backoff::DEFAULT;
        assert_eq!(backoff.first_after(0), backoff.first);
        assert_eq!(backoff.first_after(BURST - 1), backoff.first);
        assert_eq!(backoff.first_after(BURST), backoff.after_burst);
        assert!(backoff.after_burst < backoff.first);
        assert_eq!(backoff.capped(Duration::ZERO, backoff.first), backoff.first);
        assert_eq!(backoff.capped(Duration::from_millis(500), backoff.warm * 2), backoff.warm);
    }

    #[test]
    fn every_sleep_stays_under_the_cap_of_its_idle_time() {
        let backoff = Backoff::DEFAULT;
        for (idle, sleep) in walk(&backoff, Duration::ZERO, Duration::from_secs(30)) {
            let cap = match idle {
                idle if idle < backoff.stay_warm => backoff.warm,
                idle if idle < backoff.stay_cold => backoff.cold,
                _ => backoff.deep,
            };
            assert!(sleep <= cap, "slept {sleep:?} after {idle:?} idle, cap {cap:?}");
        }
    }

    #[test]
    fn the_sleeps_reach_each_cap_and_stay_there() {
        let backoff = Backoff::DEFAULT;
        let sleeps = walk(&backoff, Duration::ZERO, Duration::from_secs(30));
        let longest_before = |limit: Duration| sleeps.iter().filter(|(idle, _)| *idle < limit).map(|&(_, s)| s).max();
        assert_eq!(longest_before(backoff.stay_warm), Some(backoff.warm));
        assert_eq!(longest_before(backoff.stay_cold), Some(backoff.cold));
        assert_eq!(sleeps.last().map(|&(_, s)| s), Some(backoff.deep));
        // Sleeps only grow while idle: a long idle never returns to short polls.
        assert!(sleeps.windows(2).all(|pair| pair[1].1 >= pair[0].1));
        // 1 s at 1 ms polls, then 9 s at 20 ms, then 100 ms: the wake-up rate.
        let deep = sleeps.iter().filter(|(idle, _)| *idle >= Duration::from_secs(20)).count();
        assert_eq!(deep, 100, "10 wake-ups a second after a long idle");
        assert!(sleeps.iter().all(|&(_, s)| s <= 100 * MS));
    }
}
