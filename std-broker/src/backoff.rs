//! How an idle worker waits: the schedule of its polls of the queue.
//!
//! Nobody wakes a kiln-std worker (see `worker`): it finds work by looking
//! at the queue's length between sleeps. How long it sleeps is the whole
//! trade-off between promotion latency after a pause and what an idle
//! process costs, so the schedule is one value ([`Backoff`]) and one pure
//! function ([`Backoff::sleep_after`]) that a test can walk without a clock.
//!
//! Every wake-up costs about the same whatever the worker then does (a timer
//! expiry, a switch into the thread and back; 20–35 µs of CPU on the busy
//! VM the figures in BENCHMARKS.md come from, ~90 % of it outside kiln), so
//! idle CPU is the wake-up rate, and the schedule lowers the rate the longer
//! the worker has been idle:
//!
//! | idle for | sleeps | promotion waits up to | wake-ups per second |
//! |---|---|---|---|
//! | < 200 µs | none: it yields | microseconds | (busy) |
//! | < 1 s | 20 µs doubling to 1 ms | ~1 ms | ~1,000 |
//! | < 10 s | doubling on to 20 ms | ~20 ms | 50 |
//! | longer | doubling on to 100 ms | ~100 ms | 10 |

use std::time::Duration;

/// An idle worker's schedule: yield, then timed sleeps doubling from
/// `first` up to a cap that rises with the time idle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// Idle this briefly, a worker yields instead of sleeping: a burst of
    /// promotions (warm-up) is picked up in microseconds.
    pub(crate) yield_for: Duration,
    /// The first timed sleep; each poll doubles it up to the current cap.
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
        yield_for: Duration::from_micros(200),
        first: Duration::from_micros(20),
        warm: Duration::from_millis(1),
        stay_warm: Duration::from_secs(1),
        cold: Duration::from_millis(20),
        stay_cold: Duration::from_secs(10),
        deep: Duration::from_millis(100),
    };

    /// The sleep of a worker idle for `idle` whose previous sleep was
    /// `previous` (`None` since its last job): `None` means yield.
    pub(crate) fn sleep_after(&self, idle: Duration, previous: Option<Duration>) -> Option<Duration> {
        if idle < self.yield_for {
            return None;
        }
        let cap = match idle {
            idle if idle < self.stay_warm => self.warm,
            idle if idle < self.stay_cold => self.cold,
            _ => self.deep,
        };
        Some(previous.map_or(self.first, |previous| previous * 2).min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The sleeps of a worker idle from `from` on, each sleep taking exactly
    /// its length: (idle at the sleep, sleep).
    fn walk(backoff: &Backoff, mut idle: Duration, until: Duration) -> Vec<(Duration, Duration)> {
        let (mut previous, mut sleeps) = (None, Vec::new());
        while idle < until {
            match backoff.sleep_after(idle, previous) {
                None => idle += Duration::from_micros(1),
                Some(sleep) => {
                    sleeps.push((idle, sleep));
                    previous = Some(sleep);
                    idle += sleep;
                }
            }
        }
        sleeps
    }

    #[test]
    fn a_fresh_idle_worker_yields_then_sleeps_from_the_first_poll() {
        let backoff = Backoff::DEFAULT;
        assert_eq!(backoff.sleep_after(Duration::ZERO, None), None);
        assert_eq!(backoff.sleep_after(Duration::from_micros(199), None), None);
        assert_eq!(backoff.sleep_after(Duration::from_micros(200), None), Some(backoff.first));
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
