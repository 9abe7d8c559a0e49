//! The broker: counts, decides, queues, publishes and retires.
//!
//! Paths by cost:
//!
//! - **Compiled** ([`Broker::on_invoke`] on a bead at its final tier): one
//!   Acquire load of the bead's entry and a null test. Nothing else.
//! - **Counting**: a Relaxed load and a Relaxed store of the countdown, and
//!   one load of the warm entry (non-null while lower-tier code runs).
//! - **Waiting** (a job queued or compiling): counting, plus a lock-free
//!   re-check of the state word every `PENDING` calls; or, through
//!   `Bead::count_call`, one Relaxed load of the state word and a bit test.
//! - **Deciding** (countdown ran out): the hotness policy; on "promote" a CAS
//!   of the state word picks the single winner, which takes the lock once to
//!   push the job and calls `WakeHook::wake` (coalesced).
//! - **Everything else** (claim, publish, bailout, invalidate, reload, swap,
//!   quiesce) happens under one lock per broker, never held across a call
//!   into host code (policies, compiler, events, wake hook, handle drops).
//!
//! The broker is one type whose methods live in one file per stage of a
//! bead's life, read in this order:
//!
//! | file | stage |
//! |---|---|
//! | `mod.rs` | the struct, its lock-guarded state, configuration, accessors |
//! | `promote.rs` | counting, asking the policy, winning the promotion, queueing ([`Broker::on_invoke`], [`Broker::submit`]) |
//! | `claim.rs` | handing a queued job to a pumper ([`Broker::claim`], [`Broker::pump`]) and ending it (publish, fail, abandon) |
//! | `change.rs` | `change_code`, the one step that changes published code, and every transition built on it (swap, bailout, blacklist, evict, invalidate, reload, retire) |
//! | `reclaim.rs` | retired code: epochs, quiescence, parking, release |
//! | `cancel.rs` | shutdown: cancelling queued jobs (changes no code) |
//!
//! Beads are referred to through `H: BeadRef` (`&Bead`, an `Arc`-based
//! handle, ...), cloned into the queue on promotion only.
//!
//! # Passing beads
//!
//! Methods that may queue a job ([`Broker::on_invoke`],
//! [`Broker::on_backedge`], [`Broker::submit`]) take `impl Borrow<H>`: the
//! handle or a reference to it. With `H = &Bead`, that is `&bead` for a
//! `bead: Bead` (or `BEAD` for a `static`), and the older `&&bead` still
//! compiles. Methods that only look at the bead (swap, bailout, blacklist,
//! evict, invalidate, reload, retire) take `&impl` [`AsBead`](crate::AsBead):
//! `&bead`, `&handle` or `&&bead`.
//!
//! # Why `Broker<&'a Bead, ..>` ties every bead to one lifetime
//!
//! The broker keeps handles in its queue, behind its lock, so it is
//! invariant over `H`, as a `Cell<&'a Bead>` is: were it covariant, a
//! broker of `&'static Bead` could be viewed as one of `&'short Bead` and
//! queue a bead that dies first. So with `H = &'a Bead`, every bead must
//! outlive the broker: declare the beads before the broker (locals drop in
//! reverse order), keep them in a `static` or an arena, or use an owning
//! handle (an `Arc`-based `BeadRef`, as kiln-std does). A "borrowed value
//! does not live long enough" on a bead passed to `on_invoke` means the
//! broker was declared first.

use crate::bead::Bead;
use crate::policy::{HotnessPolicy, HotnessStats};
use crate::queue::JobQueue;
use crate::reclaim::{ReclaimMode, Reclamation};
use crate::state::StateWord;
use crate::stats::{Counters, Stats};
use crate::sync::{AtomicBool, AtomicU32, AtomicUsize, Lock, Ordering};

mod cancel;
mod change;
mod claim;
mod promote;
mod reclaim;

pub use promote::CallCount;
#[cfg(test)]
mod tests;

/// Countdown while a job is queued or compiling: a caller that counts first
/// (`Broker::count_invoke`) re-checks the state word, without the lock, this
/// often (`Bead::count_call` reads the word on every call instead). Small,
/// because a transition's re-arm of the countdown can be overwritten by a
/// counting call that loaded the countdown just before it (a plain store,
/// not a read-modify-write, by design), or by a re-check that read the word
/// just before the transition, and the damage of such a lost re-arm is
/// bounded by the value armed or loaded.
const PENDING: u32 = 64;

/// Countdown for beads that expect no transition from counting (blacklisted
/// without decay, invalidated, final code installed). Bounded for the same
/// reason as [`PENDING`], and as large as that allows.
const IDLE: u32 = crate::bead::MAX_COUNTDOWN;

/// State behind the broker's lock.
struct Shared<H, const QUEUE: usize, const RETIRE: usize> {
    queue: JobQueue<H, QUEUE>,
    reclaim: Reclamation<RETIRE>,
    compile_ticks: u64,
}

/// Why [`Broker::claim`] returned no job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClaimError {
    /// Nothing is queued.
    Empty,
    /// The next job would replace code and the retire ring is full.
    RetireFull,
}

/// The promotion broker. `QUEUE` bounds queued jobs, `RETIRE` bounds code
/// waiting for quiescence; both are checked at compile time and the whole
/// broker can be built in a `const` (a `static` on a microcontroller).
///
/// Layers that only run jobs and reclaim code (host pumps, kiln-std, a
/// backend's eviction) see it as `&dyn` [`DynBroker`](crate::DynBroker), so
/// they never spell out these seven parameters.
pub struct Broker<H, P, D, W = crate::NoWake, E = crate::NoEvents, const QUEUE: usize = 64, const RETIRE: usize = 64> {
    policy: P,
    deopt: D,
    wake_hook: W,
    events: E,
    wake_pending: AtomicBool,
    queue_len: AtomicUsize,
    queue_limit: AtomicUsize,
    shared: Lock<Shared<H, QUEUE, RETIRE>>,
    /// Mirrors of the reclamation epoch and mode, written under the lock,
    /// so reporting threads read them without it.
    epoch: AtomicU32,
    reclaim_mode: AtomicU32,
    counters: Counters,
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> core::fmt::Debug for Broker<H, P, D, W, E, QUEUE, RETIRE> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Broker")
            .field("queue_len", &self.queue_len.load(Ordering::Relaxed))
            .field("queue_capacity", &QUEUE)
            .field("retire_capacity", &RETIRE)
            .finish_non_exhaustive()
    }
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE> {
    crate::sync::const_fn! {
        /// A broker with the given policies, wake-up hook and events.
        pub const fn new(policy: P, deopt: D, wake_hook: W, events: E) -> Self {
            Self {
                policy,
                deopt,
                wake_hook,
                events,
                wake_pending: AtomicBool::new(false),
                queue_len: AtomicUsize::new(0),
                queue_limit: AtomicUsize::new(QUEUE),
                shared: Lock::new(Shared { queue: JobQueue::new(), reclaim: Reclamation::new(), compile_ticks: 0 }),
                epoch: AtomicU32::new(0),
                reclaim_mode: AtomicU32::new(ReclaimMode::Unmanaged as u32),
                counters: Counters::new(),
            }
        }
    }

    /// The hotness policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The deopt policy.
    pub fn deopt_policy(&self) -> &D {
        &self.deopt
    }

    /// The wake-up hook.
    pub fn wake_hook(&self) -> &W {
        &self.wake_hook
    }

    /// The wake-up hook (its old name, from when the hook's trait was `Pump`).
    #[deprecated(note = "renamed to `wake_hook`")]
    pub fn pump_hook(&self) -> &W {
        &self.wake_hook
    }

    /// The events hook.
    pub fn events(&self) -> &E {
        &self.events
    }

    /// Lowers the queue's capacity to `limit` (at most `QUEUE`, at least 1),
    /// for layers whose capacity is a runtime setting.
    pub fn set_queue_limit(&self, limit: usize) {
        self.queue_limit.store(limit.clamp(1, QUEUE), Ordering::Relaxed);
    }

    /// The queue's capacity now.
    pub fn queue_capacity(&self) -> usize {
        self.queue_limit.load(Ordering::Relaxed)
    }

    /// Jobs waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.queue_len.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        self.shared.with(|shared| {
            stats.queue_depth = shared.queue.len() as u32;
            stats.retire_depth = shared.reclaim.len() as u32;
            stats.compile_ticks = shared.compile_ticks;
            stats.epoch = shared.reclaim.epoch();
        });
        stats
    }
}

impl<H, P: HotnessPolicy, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE> {
    /// What the policy sees of `bead` in state `word`, counting `calls` and
    /// `backedges` the caller has not recorded yet.
    fn hotness(&self, bead: &Bead, word: StateWord, calls: u32, backedges: u32) -> HotnessStats {
        HotnessStats {
            invocations: bead.invocation_count().wrapping_add(calls),
            backedges: bead.backedge_count().wrapping_add(backedges),
            tier: word.tier(),
            tier_cap: bead.tier_cap().min(self.policy.max_tier()),
            queue_len: self.queue_len(),
            queue_capacity: self.queue_capacity(),
        }
    }

    /// The tier at which code for `bead` is final (no further promotion).
    fn final_tier(&self, bead: &Bead) -> u8 {
        self.policy.max_tier().min(bead.tier_cap())
    }
}
