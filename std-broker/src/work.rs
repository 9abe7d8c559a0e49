//! Compile work: what the call that wins a promotion hands to the worker
//! that runs the job, boxed only then. Each public compile shape (the
//! seed's closure returning an entry, its OSR closure, kiln's
//! [`NativeCode`] closure, a backend's definition, the tiered closure)
//! becomes one `CompileWork`, which travels in the job's handle
//! (see `job`).

use std::sync::Arc;

use crate::bead::Bead;
use crate::beadie::OsrCompileResult;
use crate::code::{Built, CompileFailure, NativeCode};

/// A job's compile: runs once on the thread that claimed the job, with the
/// bead and the tier the job was queued at (0 = the first compiled tier).
pub(crate) type CompileWork = Box<dyn FnOnce(&Arc<Bead>, u8) -> Result<Built, CompileFailure> + Send>;

/// Wraps a seed compile closure as compile work.
pub(crate) fn entry_work(compile: impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static) -> CompileWork {
    Box::new(move |bead, _tier| Ok(bead.built(compile(bead), Vec::new(), None)))
}

/// Wraps a seed OSR compile closure as compile work.
pub(crate) fn osr_work(compile: impl FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static) -> CompileWork {
    Box::new(move |bead, _tier| {
        let OsrCompileResult { entry, osr } = compile(bead);
        Ok(bead.built(entry, osr, None))
    })
}

/// Wraps a kiln-only compile closure (code with a release hook) as work.
pub(crate) fn code_work(compile: impl FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static) -> CompileWork {
    Box::new(move |bead, _tier| {
        let (entry, osr, release) = compile(bead).into_parts();
        // A null entry is refused later (`NullEntry`) without running the hook.
        Ok(bead.built(entry, osr, release.filter(|_| !entry.is_null())))
    })
}

/// Wraps a fallible kiln-only compile closure as work: an `Err` is a failed
/// compile (`CompileFailure::Factory`, with the error's message).
pub(crate) fn try_code_work<E: std::fmt::Display>(
    compile: impl FnOnce(&Arc<Bead>) -> Result<NativeCode, E> + Send + 'static,
) -> CompileWork {
    Box::new(move |bead, _tier| {
        let (entry, osr, release) =
            compile(bead).map_err(|error| CompileFailure::Factory(error.to_string()))?.into_parts();
        Ok(bead.built(entry, osr, release.filter(|_| !entry.is_null())))
    })
}
