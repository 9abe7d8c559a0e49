//! A claimed compile job: a token that can travel to any worker.

use crate::bead::BeadRef;
use crate::compiler::{Compiled, Compiler};
use crate::queue::QueueEntry;
use crate::state::{Generation, Phase, StateWord};

/// What a job compiles for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum JobKind {
    /// A call-count promotion: the function's normal entry.
    Invoke,
    /// A back-edge promotion: the code should carry an OSR entry at `site`.
    Osr {
        /// The loop site whose back-edges crossed the threshold.
        site: u64,
    },
}

/// What a compiler is asked to build.
#[derive(Debug)]
pub struct CompileRequest<'j, H> {
    /// The bead's handle (its `core_handle()` names the function).
    pub bead: &'j H,
    /// Tier to compile at.
    pub tier: u8,
    /// Normal or OSR compile.
    pub kind: JobKind,
    /// Generation the job was issued for.
    pub generation: Generation,
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum JobOutcome {
    /// The code is installed.
    Published,
    /// The compile failed; the deopt policy decided what next.
    Failed,
    /// The bead moved on while compiling; the result was released.
    Stale,
}

/// Everything the broker needs to finish a job.
#[derive(Debug)]
pub(crate) struct Ticket<H> {
    pub(crate) bead: H,
    pub(crate) generation: Generation,
    pub(crate) tier: u8,
    pub(crate) kind: JobKind,
    /// A retire slot is held for the code this job will replace.
    pub(crate) reserved: bool,
}

impl<H> Ticket<H> {
    /// The ticket for a popped queue entry.
    pub(crate) fn from_entry(entry: QueueEntry<H>, reserved: bool) -> Self {
        Self { bead: entry.bead, generation: entry.generation, tier: entry.tier, kind: entry.kind, reserved }
    }

    /// Whether the bead is still Compiling at the generation this job was
    /// issued for, i.e. the job may still end it.
    pub(crate) fn is_current(&self, word: StateWord) -> bool {
        word.is_at(Phase::Compiling, self.generation)
    }
}

/// The broker side of a job, object-safe so `Job` needs only the handle type.
pub(crate) trait JobOwner<H> {
    /// Installs `compiled` if the ticket is current, else hands it back.
    fn finish_published(&self, ticket: &Ticket<H>, compiled: Compiled, ticks: Option<u64>) -> Result<(), Compiled>;
    /// Records a failed compile. Returns false if the ticket was stale.
    fn finish_failed(&self, ticket: &Ticket<H>) -> bool;
    /// Returns the bead to rest after an unfinished job.
    fn abandon(&self, ticket: &Ticket<H>);
}

/// A claimed compile job.
///
/// [`Broker::claim`](crate::Broker::claim) moves one bead from Queued to
/// Compiling and hands out a [`Job`]. The job must end in one of three ways:
/// [`Job::run`] (compile with a [`Compiler`] and publish), [`Job::publish`] /
/// [`Job::fail`] (the host compiled by itself), or drop. Dropping an
/// unfinished job — including by a panic unwinding through the compile —
/// returns the bead to the state it rests in (Interpreted, or its installed
/// tier) with a cooldown, so no bead stays Compiling after its job ended.
///
/// A job borrows its broker, so it cannot outlive it:
///
/// ```compile_fail
/// use kiln_core::*;
/// let job = {
///     let broker: Broker<&Bead, ThresholdPolicy, AlwaysRecompilePolicy> =
///         Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
///     broker.claim().unwrap()
/// };
/// ```
///
/// and publishing consumes it, so a job cannot publish twice:
///
/// ```compile_fail
/// use kiln_core::*;
/// fn twice(job: Job<'_, &Bead>, a: Compiled, b: Compiled) {
///     let _ = job.publish(a, None);
///     let _ = job.publish(b, None);
/// }
/// ```
#[must_use = "a dropped job is abandoned and its bead cools down"]
pub struct Job<'b, H> {
    owner: &'b dyn JobOwner<H>,
    ticket: Option<Ticket<H>>,
}

impl<H: core::fmt::Debug> core::fmt::Debug for Job<'_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Job").field("ticket", &self.ticket).finish()
    }
}

impl<'b, H> Job<'b, H> {
    pub(crate) fn new(owner: &'b dyn JobOwner<H>, ticket: Ticket<H>) -> Self {
        Self { owner, ticket: Some(ticket) }
    }

    fn ticket(&self) -> &Ticket<H> {
        // Present until `take` consumes the job.
        self.ticket.as_ref().unwrap_or_else(|| unreachable!())
    }

    fn take(mut self) -> Ticket<H> {
        self.ticket.take().unwrap_or_else(|| unreachable!())
    }

    /// What to compile.
    pub fn request(&self) -> CompileRequest<'_, H> {
        let ticket = self.ticket();
        CompileRequest { bead: &ticket.bead, tier: ticket.tier, kind: ticket.kind, generation: ticket.generation }
    }

    /// The bead's handle.
    pub fn bead(&self) -> &H {
        &self.ticket().bead
    }

    /// Whether the bead moved on since the job was claimed (invalidated,
    /// reloaded, swapped, evicted): compiling it would only produce a result
    /// to release. Dropping a stale job changes nothing.
    pub fn is_stale(&self) -> bool
    where
        H: BeadRef,
    {
        let ticket = self.ticket();
        !ticket.is_current(ticket.bead.bead().word())
    }

    /// Publishes `compiled` (timed at `ticks`, if known). If the bead moved
    /// on while compiling, the code comes back in `Err` for the caller to
    /// release: it was never visible to any thread.
    pub fn publish(self, compiled: Compiled, ticks: Option<u64>) -> Result<(), Compiled> {
        let owner = self.owner;
        let ticket = self.take();
        owner.finish_published(&ticket, compiled, ticks)
    }

    /// Reports a failed compile: the bead goes back through the deopt policy.
    pub fn fail(self) {
        let owner = self.owner;
        let ticket = self.take();
        owner.finish_failed(&ticket);
    }

    /// Compiles with `compiler` and publishes, releasing a stale result.
    pub fn run<C: Compiler<H>>(self, compiler: &mut C) -> JobOutcome {
        self.run_timed(compiler, None)
    }

    pub(crate) fn run_timed<C: Compiler<H>>(self, compiler: &mut C, clock: Option<&dyn crate::Clock>) -> JobOutcome {
        let started = clock.map(crate::Clock::now);
        let result = compiler.compile(&self.request());
        let ticks = clock.zip(started).map(|(clock, started)| clock.now().saturating_sub(started));
        self.finish(compiler, result, ticks)
    }

    /// Finishes the job with the result of a compile the host ran itself
    /// (timed, or inside `catch_unwind`): publishes it, or releases it
    /// through `compiler` if the bead moved on, or reports the failure.
    /// `ticks` is what the compile took, for `Events::compiled`.
    pub fn finish<C: Compiler<H>>(
        self,
        compiler: &mut C,
        result: Result<Compiled, C::Error>,
        ticks: Option<u64>,
    ) -> JobOutcome {
        match result {
            Ok(compiled) => match self.publish(compiled, ticks) {
                Ok(()) => JobOutcome::Published,
                Err(stale) => {
                    compiler.release(stale.into_handle());
                    JobOutcome::Stale
                }
            },
            Err(_) => {
                let owner = self.owner;
                let ticket = self.take();
                if owner.finish_failed(&ticket) { JobOutcome::Failed } else { JobOutcome::Stale }
            }
        }
    }
}

impl<H> Drop for Job<'_, H> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.owner.abandon(&ticket);
        }
    }
}
