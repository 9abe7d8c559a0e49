//! A compiler shared by every pump task: `Arc<Mutex<C>>` as a [`Compiler`].
//!
//! [`JobSystemPump`](crate::JobSystemPump) clones its compiler into each pump
//! task, so a compiler that is a cheap handle to shared state compiles in as
//! many tasks at once as the job system runs. A compiler that is not — one
//! JIT module, a `CraneliftCompiler` — is wrapped in [`SharedCompiler`]:
//! clones share one compiler behind a mutex held for one `compile` or
//! `release` at a time. The host keeps a clone for `Broker::quiesce`.

use kiln_core::{CodeHandle, CompileRequest, Compiled, Compiler};

use crate::sync::{Arc, Mutex, MutexGuard, lock};

/// One compiler shared by clones: `Arc<Mutex<C>>` as a [`Compiler`].
///
/// [`JobSystemPump`](crate::JobSystemPump) clones its compiler into each
/// pump task. A compiler that is not a cheap handle to shared state (one
/// JIT module, a `CraneliftCompiler`) is wrapped in this: clones share one
/// compiler behind a mutex held for one `compile` or `release` at a time.
/// Keep a clone for `Broker::quiesce`.
#[derive(Debug, Default)]
pub struct SharedCompiler<C> {
    inner: Arc<Mutex<C>>,
}

impl<C> Clone for SharedCompiler<C> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<C> SharedCompiler<C> {
    /// Shares `compiler`.
    pub fn new(compiler: C) -> Self {
        Self { inner: Arc::new(Mutex::new(compiler)) }
    }

    /// Locks the compiler (a panicked compile does not poison it).
    pub fn lock(&self) -> MutexGuard<'_, C> {
        lock(&self.inner)
    }
}

impl<H, C: Compiler<H>> Compiler<H> for SharedCompiler<C> {
    type Error = C::Error;

    fn compile(&mut self, request: &CompileRequest<'_, H>) -> Result<Compiled, Self::Error> {
        self.lock().compile(request)
    }

    fn release(&mut self, code: CodeHandle) {
        self.lock().release(code)
    }
}
