//! `BoundBead`: a bead registered through a backend adapter, with the
//! backend that compiles it.

use std::sync::Arc;

use crate::OsrEntry;
use crate::backend::{JitBackend, release_hook};
use crate::bead::{Bead, ReloadOutcome, SwapResult};

/// A bead registered through a [`BackendAdapter`](crate::BackendAdapter), with its backend.
pub struct BoundBead<B: JitBackend> {
    pub(crate) bead: Arc<Bead>,
    pub(crate) backend: Arc<B>,
}

// Written out rather than derived: a derive would ask `B: Clone`, and the
// two `Arc`s clone whatever `B` is.
impl<B: JitBackend> Clone for BoundBead<B> {
    fn clone(&self) -> Self {
        Self { bead: Arc::clone(&self.bead), backend: Arc::clone(&self.backend) }
    }
}

impl<B: JitBackend> std::fmt::Debug for BoundBead<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundBead").field("bead", &self.bead).finish_non_exhaustive()
    }
}

impl<B: JitBackend> BoundBead<B> {
    /// The bead.
    pub fn bead(&self) -> &Arc<Bead> {
        &self.bead
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Compiles `def` now, on this thread, and installs the result
    /// (ahead-of-time compilation, no broker involved). Returns the bead.
    /// Code the bead refuses (it was invalidated) goes straight back to
    /// [`JitBackend::release`] (under `catch_unwind`). The backend's
    /// `compile` runs on the calling thread, outside kiln's isolation: a
    /// panic in it is the caller's own and unwinds to it, with nothing
    /// installed and kiln's state untouched. [`JitBackend::after_compile`]
    /// runs after the install (or the error), on the calling thread too.
    pub fn compile(&self, def: B::FunctionDef) -> Result<Arc<Bead>, B::Error> {
        let compiled = self.backend.compile(&self.bead, def);
        if let Ok(entry) = compiled {
            let built = self.bead.built(entry, Vec::new(), Some(release_hook(&self.backend)));
            if self.bead.install_built(built, true).is_none() {
                log::warn!(target: "kiln", "{}: eager install refused", self.bead.who());
            }
        }
        self.backend.after_compile(&self.bead);
        compiled.map(|_| Arc::clone(&self.bead))
    }

    /// Forces recompilation; see [`Bead::reload`].
    pub fn reload(&self) -> ReloadOutcome {
        self.bead.reload()
    }

    /// Replaces the compiled code; see [`Bead::swap_compiled`].
    pub fn swap_compiled(&self, new_code: *mut ()) -> Option<SwapResult> {
        self.bead.swap_compiled(new_code)
    }

    /// Replaces the compiled code and its OSR table together; see
    /// [`Bead::swap_compiled_with_osr`].
    pub fn swap_compiled_with_osr(&self, new_code: *mut (), osr: Vec<OsrEntry>) -> Option<SwapResult> {
        self.bead.swap_compiled_with_osr(new_code, osr)
    }
}
