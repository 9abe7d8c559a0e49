//! What a [`JobSystemPump`](crate::JobSystemPump) reports: its counts
//! ([`PumpStats`]) and its errors ([`AttachError`], [`StopTimeout`]).

use core::fmt;

/// What a [`JobSystemPump`](crate::JobSystemPump) did so far.
///
/// A task counts a job after kiln-core published its result, so a bead can
/// already show its code while `published` does not count it yet: read the
/// final figures after [`JobSystemPump::stop`](crate::JobSystemPump::stop) (or once `in_flight` is 0).
/// `wakes` is usually below the promotions: kiln-core wakes the pump once
/// per burst, until a job is claimed. `spawned` can exceed `wakes`: a task
/// that ends with work left spawns its successor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PumpStats {
    /// `WakeHook::wake` calls.
    pub wakes: usize,
    /// Pump tasks spawned (by wake-ups, by tasks ending with work left, at attach).
    pub spawned: usize,
    /// Wake-ups that spawned nothing because `max_in_flight` tasks were running.
    pub coalesced: usize,
    /// Wake-ups after stopping began.
    pub refused: usize,
    /// Tasks in flight now.
    pub in_flight: usize,
    /// Most tasks ever in flight at once.
    pub peak_in_flight: usize,
    /// Jobs run.
    pub ran: usize,
    /// Of those, published.
    pub published: usize,
    /// Of those, failed (errors and panics).
    pub failed: usize,
    /// Of those failures, panics caught.
    pub panicked: usize,
    /// Of those, finished after their bead moved on (result released).
    pub stale: usize,
    /// Tasks that stopped early because the broker's retire ring was full.
    pub retire_full: usize,
    /// Panics caught in host code other than a compile (those are in
    /// `panicked`): `JobSystem::spawn` (the wake-up that called it counts
    /// nothing more; its task slot is freed), `JobSystem::help`, a
    /// compiler's `release` of a stale or refused result, or a task body.
    /// Each was logged; none escaped into the broker, the interpreter's
    /// call or the job system.
    pub host_panics: usize,
}

/// [`JobSystemPump::attach`](crate::JobSystemPump::attach) was called twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachError {
    /// The pump already serves a broker.
    AlreadyAttached,
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("this pump is already attached to a broker")
    }
}

impl core::error::Error for AttachError {}

/// [`JobSystemPump::stop`](crate::JobSystemPump::stop) gave up waiting: tasks are still compiling. They
/// end after their current job and spawn nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopTimeout {
    /// Tasks still in flight when it gave up.
    pub in_flight: usize,
}

impl fmt::Display for StopTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pump task(s) still running after the stop timeout", self.in_flight)
    }
}

impl core::error::Error for StopTimeout {}
