//! What kiln-std logs, and how to read it.
//!
//! kiln-std logs through the [`log`](https://docs.rs/log) facade, all under
//! the target **`kiln`** (filter with `RUST_LOG=kiln=debug` under
//! `env_logger`). Each transition of a function is **one line**, written by
//! kiln-std, which knows the most about it (the function's name, the
//! compile's error, the clock); kiln-core, underneath, writes none of these
//! lines itself. Every line about a function starts with its name, given at
//! registration ([`Beadie::register_named`](crate::Beadie::register_named),
//! [`BackendAdapter::register_with`](crate::BackendAdapter::register_with)),
//! or `bead@0x…` (its address) if it has none. Durations are in µs, ms or
//! s, never raw ticks.
//!
//! | level | line (example) | when |
//! |---|---|---|
//! | `debug` | `fib: promoted to tier 0 by a call, after 1000 calls` | a call (or `back-edge at site 7`) won a promotion |
//! | `debug` | `fib: compiled at tier 0 in 812.4 µs` | code was published |
//! | `warn` | `fib: compile at tier 0 failed: backend error: …; now Interpreted` | a compile returned an error, no code, or panicked |
//! | `debug` | `fib: queue full, cools down before asking again` | a promotion found the queue full |
//! | `debug` | `fib: bailed out, Recompile` | compiled code bailed out and the deopt policy decided |
//! | `debug` | `fib: invalidated` | the function is gone |
//! | `debug` | `fib: evicted (code memory), back to the interpreter` | a code-memory budget evicted the function's code |
//! | `debug` | `fib: blacklisted` | the function's compiles are refused (after its `bailed out` or `failed` line) |
//! | `debug` | `fib: code swapped in at tier 1` | the host swapped code in |
//! | `trace` | `quiesced: epoch 12, 3 released` | a quiesce round advanced the epoch |
//! | `warn` | `fib: reload refused: …`, `fib: swap refused: …` | a host request kiln could not apply |
//! | `error` | `host callback compile panicked (caught; kiln goes on): …` | a host callback panicked (see [`Beadie::host_panics`](crate::Beadie::host_panics)) |
//! | `trace` | `code at 0x… released` | retired code went back to its backend |
//! | `trace` | `pump: ran 2 jobs (1 published, 1 failed, 0 stale, 0 dropped) in 23.4 µs, 0 left` | a worker pumped the queue |
//!
//! A few transitions only kiln-core sees (a stale compile result, an
//! abandoned job, a decayed blacklist) are logged by kiln-core at `debug`,
//! also under target `kiln`, naming the bead by address (`bead@0x…`); they
//! are not repeated here.
//!
//! The logger is host code: kiln-std calls it under `catch_unwind`
//! ([`logger_panics`](crate::logger_panics) counts its panics). Names are
//! looked up only when the line's level is enabled, so a disabled level
//! costs a compile or a promotion nothing; no per-call path logs.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;

use crate::code::CompileFailure;
use crate::sink::{Event, EventKind, EventSink, LogSink};

/// Runs one log call, containing a panic of the logger.
fn logged(record: impl FnOnce()) {
    crate::code::isolate_logger(record);
}

/// The level `kind`'s line is written at; `None`: no line.
#[inline]
pub(crate) fn level_of(kind: &EventKind<'_>) -> Option<log::Level> {
    match kind {
        EventKind::CompileFailed { .. } => Some(log::Level::Warn),
        EventKind::Released { .. } | EventKind::Quiesced { .. } => Some(log::Level::Trace),
        // The `compiled` or `failed` line says it; a timeline shows the start.
        EventKind::CompileStarted { .. } => None,
        _ => Some(log::Level::Debug),
    }
}

impl EventSink for LogSink {
    fn event(&self, event: &Event<'_>) {
        let Some(level) = level_of(&event.kind) else { return };
        // Names are looked up (one lock of the side table) only when the
        // line will be written.
        if !log::log_enabled!(target: "kiln", level) {
            return;
        }
        let who = event.function().map_or_else(String::new, |function| function.display_name());
        match event.kind {
            EventKind::Promoted { tier, site } => {
                let calls = event.function().map_or(0, |function| function.kiln_bead().invocation_count());
                let what = match site {
                    None => "call".to_owned(),
                    Some(site) => format!("back-edge at site {site}"),
                };
                logged(
                    || log::debug!(target: "kiln", "{who}: promoted to tier {tier} by a {what}, after {calls} calls"),
                );
            }
            EventKind::QueueFull => {
                logged(|| log::debug!(target: "kiln", "{who}: queue full, cools down before asking again"));
            }
            EventKind::CompileStarted { .. } => {}
            EventKind::Compiled { tier, took: Some(took) } => {
                let took = Micros::from_nanos(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                logged(|| log::debug!(target: "kiln", "{who}: compiled at tier {tier} in {took}"));
            }
            EventKind::Compiled { tier, took: None } => {
                logged(|| log::debug!(target: "kiln", "{who}: compiled at tier {tier}"));
            }
            EventKind::CompileFailed { tier, reason } => {
                let state = event.function().map(|function| function.kiln_bead().state());
                let why = reason.map_or_else(String::new, |why| format!(": {why}"));
                let now = state.map_or_else(String::new, |state| format!("; now {state:?}"));
                logged(|| log::warn!(target: "kiln", "{who}: compile at tier {tier} failed{why}{now}"));
            }
            EventKind::Deoptimized(decision) => {
                logged(|| log::debug!(target: "kiln", "{who}: bailed out, {decision:?}"));
            }
            EventKind::Blacklisted => logged(|| log::debug!(target: "kiln", "{who}: blacklisted")),
            EventKind::Swapped { tier } => {
                logged(|| log::debug!(target: "kiln", "{who}: code swapped in at tier {tier}"));
            }
            EventKind::Invalidated => logged(|| log::debug!(target: "kiln", "{who}: invalidated")),
            EventKind::Evicted => {
                logged(|| log::debug!(target: "kiln", "{who}: evicted (code memory), back to the interpreter"));
            }
            EventKind::Released { code } => {
                logged(|| log::trace!(target: "kiln", "code at {code:#x} released"));
            }
            EventKind::Quiesced { epoch, released } => {
                logged(|| log::trace!(target: "kiln", "quiesced: epoch {epoch}, {released} released"));
            }
        }
    }
}

/// A function as a log line names it: its name, or its bead's address.
pub(crate) struct Who {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) address: usize,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => f.write_str(name),
            None => write!(f, "bead@{:#x}", self.address),
        }
    }
}

/// A duration for a person: `0.8 µs`, `812.4 µs`, `12.3 ms`, `1.24 s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Micros {
    nanos: u64,
}

impl Micros {
    pub(crate) fn from_nanos(nanos: u64) -> Self {
        Self { nanos }
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.nanos as f64;
        if self.nanos < 1_000_000 {
            write!(f, "{:.1} µs", nanos / 1e3)
        } else if self.nanos < 1_000_000_000 {
            write!(f, "{:.1} ms", nanos / 1e6)
        } else {
            write!(f, "{:.2} s", nanos / 1e9)
        }
    }
}

thread_local! {
    /// Why the last compile on this thread failed, until kiln-core's
    /// `compile_failed` event (which runs right after, on the same thread)
    /// puts it in its line.
    static LAST_FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
    /// How long the last compile on this thread took, in nanoseconds, until
    /// kiln-core's `compiled` event puts it in its line (every pump, timed
    /// or not, runs kiln-std's compiler, which measures).
    static LAST_COMPILE_NANOS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Notes how long a compile on this thread took, for its log line.
pub(crate) fn note_compile_time(took: std::time::Duration) {
    let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    LAST_COMPILE_NANOS.with(|last| last.set(Some(nanos)));
}

/// Takes the time noted by [`note_compile_time`], in nanoseconds, if any.
pub(crate) fn take_compile_nanos() -> Option<u64> {
    LAST_COMPILE_NANOS.with(Cell::take)
}

/// Notes why a compile on this thread failed, for the failure's log line.
pub(crate) fn note_failure(failure: &CompileFailure) {
    let text = failure.to_string();
    LAST_FAILURE.with(|last| *last.borrow_mut() = Some(text));
}

/// Takes the reason noted by [`note_failure`], if any.
pub(crate) fn take_failure() -> Option<String> {
    LAST_FAILURE.with(|last| last.borrow_mut().take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_right_unit() {
        let shown = |nanos| Micros::from_nanos(nanos).to_string();
        assert_eq!(shown(800), "0.8 µs");
        assert_eq!(shown(991_269), "991.3 µs");
        assert_eq!(shown(12_340_000), "12.3 ms");
        assert_eq!(shown(1_240_000_000), "1.24 s");
    }

    #[test]
    fn a_function_is_named_or_addressed() {
        assert_eq!(Who { name: Some("fib".into()), address: 16 }.to_string(), "fib");
        assert_eq!(Who { name: None, address: 16 }.to_string(), "bead@0x10");
    }

    #[test]
    fn a_failure_is_taken_once() {
        note_failure(&CompileFailure::NullEntry);
        assert_eq!(take_failure().as_deref(), Some("compile returned a null entry"));
        assert_eq!(take_failure(), None);
    }
}
