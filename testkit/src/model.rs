//! The reference model of kiln-core's `Broker`: operation sequences run
//! against a real broker and, side by side, against a plain model.
//!
//! A [`Case`] is a ring size ([`Rings`]), policies and a bead count
//! ([`Setup`]) and a list of [`Op`]s: calls, back-edges, pumps with job
//! budgets, claimed jobs held across other operations then run, published,
//! failed or dropped, `invalidate`, `reload`, guard bailouts, `blacklist`,
//! swaps (with and without OSR tables), `submit`, `cancel_queued`,
//! `set_queue_limit`, `quiesce`, and a switch that makes the fake compiler
//! fail. Cases come from proptest strategies (see `tests/model.rs`), from
//! raw bytes ([`Case::from_bytes`], the fuzz target `fuzz/` uses it), or are
//! written out (regression tests). [`run`] (or [`Case::run`]) executes one.
//!
//! Each case has 3–4 beads behind an `Arc` handle and a broker with tiny
//! rings (queue 4 / retire 4, queue 2 / retire 1, ...), so `QueueFull`,
//! `RetireFull` and `ClaimError::RetireFull` are hit constantly. The hotness
//! and deopt policies are real ones (a two-tier `TierLadder`; a threshold,
//! tiered, backoff or decaying-blacklist deopt policy) wrapped to log what
//! the broker asked them; the model takes each *decision* from that log
//! (checking the stats the broker showed the policy) and predicts everything
//! else on its own — it never calls the broker, a bead or an OSR table to
//! compute a prediction (it counts calls and back-edges itself, so even a
//! `submit`'s priority is its own).
//!
//! After every operation the runner asserts that the real broker matches
//! the model exactly (each bead's state, generation, installed entry, tier,
//! tier cap, bailout count, call and back-edge counts and OSR entries; the
//! stats each policy was shown; queue length and limit; every
//! `Stats` counter; wake-ups; promotion hooks; compile requests; released
//! handles; pump reports; claim and job outcomes; refused values handed
//! back untouched) and that these invariants hold:
//!
//! - one promotion winner: never two jobs in flight for the same bead and
//!   generation; a bead is Queued exactly while one current queue entry
//!   exists and Compiling exactly while one current claimed job exists, so
//!   no bead is left Queued or Compiling after its job ended or was dropped;
//! - every code handle is released exactly once, and only after it was
//!   retired (no bead has it installed) and two `quiesce` calls happened
//!   since (checked by the fake compiler from what it observed, independently
//!   of the model); results that were never installed (stale, refused) may
//!   be released at once;
//! - stale results are never installed: installed code was always made for
//!   the bead's current generation;
//! - at the end, after dropping held jobs, invalidating every bead and
//!   quiescing, every handle ever created was released and the broker holds
//!   no bead handle.
//!
//! The first failure panics (the message names the check; stderr names the
//! operation), which is what both proptest (to shrink) and libFuzzer (to
//! record a crash) expect.
//!
//! The model needs kiln-core only: it works with kiln-testkit's
//! `default-features = false`.

mod env;
mod harness;
mod op;
mod reference;

pub use harness::{Summary, run};
pub use op::{Case, DeoptChoice, MAX_DECODED_OPS, Op, Rings, SITES, Setup, Table};
