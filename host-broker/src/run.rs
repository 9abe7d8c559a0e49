//! Finishing one claimed job: publish, fail, or release a stale result.
//!
//! kiln-core's `Job::run` does this too, but hands the broker no compile
//! time; kiln-host times every compile itself (the frame pump learns from
//! it, and `Events::compiled` should see it), so it compiles, then finishes
//! the job here. Publishing is kiln-core's generation-checked install: the
//! host never sees a half-installed function, and a result for a bead that
//! moved on is released through the compiler, never installed.

use kiln_core::{Compiled, Compiler, Job};

/// How one job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Installed.
    Published,
    /// The compile failed (error, or a caught panic); the deopt policy decided.
    Failed,
    /// The bead moved on while compiling; the result was released.
    Stale,
}

/// Finishes `job` with the compile's `result`, which took `ticks`.
pub(crate) fn finish<H, C: Compiler<H>>(
    job: Job<'_, H>,
    compiler: &mut C,
    result: Result<Compiled, C::Error>,
    ticks: u64,
) -> Outcome {
    match result {
        Ok(compiled) => match job.publish(compiled, Some(ticks)) {
            Ok(()) => Outcome::Published,
            Err(stale) => {
                compiler.release(stale.into_handle());
                Outcome::Stale
            }
        },
        Err(error) => {
            warn!("kiln-host: compile failed: {:?}", crate::fmt::Dbg(&error));
            job.fail();
            Outcome::Failed
        }
    }
}
