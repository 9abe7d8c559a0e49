//! [`CodeMemory`]: the state a backend's clones share around its code —
//! the budget, the eviction pause, and the cache behind one lock that is
//! never held while the compiler or host code runs, so several workers
//! compile at once. It is taken to register, free, sweep and pick victims.

use std::sync::atomic::AtomicU8;
use std::sync::{Mutex, MutexGuard};

use kiln_core::CodeHandle;

use crate::cache::CodeCache;
use crate::compiled::CompiledFunction;
use crate::error::{BackendError, catch_panic};
use crate::stats::CodeStats;
use crate::unit::{Code, Owner, Unit, UnitCode};

/// A backend's code memory: its units, budget and eviction pause.
#[derive(Debug)]
pub struct CodeMemory<C> {
    /// The log prefix (`"cranelift"`, `"llvm"`).
    backend: &'static str,
    budget: Option<usize>,
    eviction_pause: u32,
    cache: Mutex<CodeCache<C>>,
}

/// A unit just registered by [`CodeMemory::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    /// Its id.
    pub id: u64,
    /// Units its compile chose for eviction (queued, not yet evicted).
    pub victims: usize,
    /// Code memory resident after it.
    pub resident: usize,
}

impl<C> CodeMemory<C> {
    /// Code memory for the backend named `backend` in its log lines, under
    /// `budget` bytes (none: unbounded); an evicted function waits
    /// `eviction_pause` calls before it may be promoted again.
    pub fn new(backend: &'static str, budget: Option<usize>, eviction_pause: u32) -> Self {
        Self { backend, budget, eviction_pause, cache: Mutex::new(CodeCache::new(budget)) }
    }

    /// The name log lines start with.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The code-memory budget, if any.
    pub fn budget(&self) -> Option<usize> {
        self.budget
    }

    /// Calls an evicted function makes before kiln asks its policy again.
    pub fn eviction_pause(&self) -> u32 {
        self.eviction_pause
    }

    /// The cache, locked.
    pub fn cache(&self) -> MutexGuard<'_, CodeCache<C>> {
        // No compiler or host code runs with the lock held, and the books
        // are consistent at every step even if a panic elsewhere poisoned it.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Code memory counters and gauges.
    pub fn stats(&self) -> CodeStats {
        self.cache().stats()
    }

    /// A fresh use byte for a unit about to be compiled, if there is a
    /// budget (its code stores 1 into it on every entry; see `CodeCache`).
    pub fn use_flag(&self) -> Option<Box<AtomicU8>> {
        self.budget.is_some().then(|| Box::new(AtomicU8::new(1)))
    }

    /// `E::over_budget` if `needed` bytes alone exceed the whole budget.
    pub fn fits_budget<E: BackendError>(&self, function: &str, needed: usize) -> Result<(), E> {
        match self.budget {
            Some(budget) if needed > budget => Err(E::over_budget(function.to_owned(), needed, budget)),
            _ => Ok(()),
        }
    }

    /// Counts the failed compile (and a caught panic) and logs it; returns
    /// `error`.
    pub fn failed<E: BackendError>(&self, error: E) -> E {
        let panicked = error.is_panicked();
        self.cache().failed(panicked);
        if panicked {
            log::error!(target: "kiln", "{}: a host callback panicked (caught): {error}", self.backend);
        } else {
            log::warn!(target: "kiln", "{}: {error}", self.backend);
        }
        error
    }

    /// Runs a kiln-core compiler's `define` callback (host code, run
    /// wherever the host pumps): a panic is a failed compile, counted and
    /// logged, not an unwind through kiln-core. Its own error is returned
    /// as it is.
    pub fn run_define<D, E: BackendError>(&self, define: impl FnOnce() -> Result<D, E>) -> Result<D, E> {
        match catch_panic("(define callback)", define) {
            Ok(def) => def,
            Err(panicked) => Err(self.failed(panicked)),
        }
    }
}

impl<C: UnitCode> CodeMemory<C> {
    /// Registers `code` for `owner` (under `id` from `CodeCache::next_id`,
    /// or a fresh id). With a budget, sweeps the cache and, if the budget
    /// is exceeded, chooses and queues the coldest units — never evicts
    /// them here: this runs inside a kiln compile, which must not call back
    /// into kiln. They are sent back once the compile is over, by their
    /// owner's path (see the crate docs).
    pub fn register(&self, id: Option<u64>, name: String, code: Code<C>, owner: Owner) -> Registered {
        let mut cache = self.cache();
        let unit = Unit::new(name, code, owner);
        let id = match id {
            Some(id) => {
                cache.insert_as(id, unit);
                id
            }
            None => cache.insert(unit),
        };
        let victims = if self.budget.is_some() {
            cache.sweep();
            cache.choose_victims(id)
        } else {
            0
        };
        Registered { id, victims, resident: cache.stats().resident_bytes }
    }

    /// The standalone API's view of unit `id`, freed by `handle`.
    ///
    /// # Panics
    ///
    /// If the unit is not live (call it right after compiling).
    pub fn compiled_function(&self, id: u64, handle: CodeHandle) -> CompiledFunction {
        let cache = self.cache();
        let unit = cache.get(id).expect("just compiled");
        CompiledFunction::new(unit.entry() as *mut (), unit.osr().to_vec(), handle, unit.bytes())
    }

    /// Frees unit `id`; false if there is none.
    ///
    /// # Safety
    ///
    /// 1. No thread runs or will call code of the unit, or reads its OSR table.
    pub unsafe fn free_unit(&self, id: u64) -> bool {
        let unit = self.cache().remove(id);
        match unit {
            Some(unit) => {
                log::trace!(target: "kiln", "{}: freed `{}` ({} B)", self.backend, unit.name(), unit.bytes());
                // SAFETY: (1, 2) by this function's contract.
                unsafe { unit.free() };
                true
            }
            None => false,
        }
    }
}
