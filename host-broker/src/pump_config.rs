//! How a [`JobSystemPump`](crate::JobSystemPump) schedules its tasks.

use core::time::Duration;

/// How a [`JobSystemPump`](crate::JobSystemPump) schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PumpConfig {
    /// Pump tasks in flight at once, at least 1 (default 1). More lets
    /// several workers compile at once, if the compiler allows it.
    pub max_in_flight: usize,
    /// Jobs one task runs before it ends and, if work is left, spawns a
    /// successor (default 4; at least 1).
    pub jobs_per_task: u32,
    /// How long [`JobSystemPump::stop`](crate::JobSystemPump::stop) waits for tasks in flight (default 2 s).
    pub stop_timeout: Duration,
}

impl PumpConfig {
    /// The defaults: one task in flight, 4 jobs per task, 2 s to stop.
    pub const fn new() -> Self {
        Self { max_in_flight: 1, jobs_per_task: 4, stop_timeout: Duration::from_secs(2) }
    }

    /// The same configuration with `max_in_flight` set.
    pub const fn max_in_flight(mut self, tasks: usize) -> Self {
        self.max_in_flight = tasks;
        self
    }

    /// The same configuration with `jobs_per_task` set.
    pub const fn jobs_per_task(mut self, jobs: u32) -> Self {
        self.jobs_per_task = jobs;
        self
    }

    /// The same configuration with `stop_timeout` set.
    pub const fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }
}

impl Default for PumpConfig {
    fn default() -> Self {
        Self::new()
    }
}
