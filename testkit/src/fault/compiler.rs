//! kiln-core compilers: [`PoisonCompiler`] makes poisoned fake code, and
//! [`FaultyCompiler`] injects a [`FaultPlan`]'s faults around any compiler.

use std::sync::Arc;

use kiln_core::{CodeHandle, CompileRequest, Compiled, Compiler, JobKind, OsrEntry, OsrTable};

use super::{ArenaFull, FaultError, FaultKind, FaultPlan, Site};
use crate::poison::{CodeId, PoisonArena};

/// A kiln-core [`Compiler`] whose code is [`PoisonArena`] objects: the
/// handle is the object's id, the entry its main cell, and the OSR table
/// (the job's site plus [`with_sites`](Self::with_sites)) lives in the
/// arena. Releasing poisons the object. Cloning shares the arena, so every
/// pumper can compile with its own clone.
#[derive(Clone, Debug)]
pub struct PoisonCompiler {
    arena: Arc<PoisonArena>,
    sites: Vec<u64>,
}

impl PoisonCompiler {
    /// Compiles into `arena`.
    pub fn new(arena: Arc<PoisonArena>) -> Self {
        Self { arena, sites: Vec::new() }
    }

    /// Every compile also gets OSR entries at `sites`.
    pub fn with_sites(mut self, sites: &[u64]) -> Self {
        self.sites = sites.to_vec();
        self
    }

    /// The arena.
    pub fn arena(&self) -> &Arc<PoisonArena> {
        &self.arena
    }

    /// Makes code for a host-side swap (`Broker::swap_compiled`): a live
    /// object with OSR entries at `sites`, as kiln-core `Compiled`.
    pub fn make(&self, sites: &[u64]) -> Result<Compiled, ArenaFull> {
        let code = self.arena.make(sites).ok_or(ArenaFull)?;
        let handle = CodeHandle::from_raw(code.id.0 as usize).expect("ids start at 1");
        let compiled = Compiled::new(code.entry.as_ptr(), handle).expect("cells are never at address 0");
        Ok(match code.table {
            // SAFETY: `with_osr` (1) the arena keeps the table and its
            // entries, unchanged, until it drops — after every broker that
            // could read it; (2) the table is immutable and Sync.
            Some(table) => unsafe { compiled.with_osr(table) },
            None => compiled,
        })
    }
}

impl<H> Compiler<H> for PoisonCompiler {
    type Error = ArenaFull;

    fn compile(&mut self, request: &CompileRequest<'_, H>) -> Result<Compiled, ArenaFull> {
        let mut sites = self.sites.clone();
        if let JobKind::Osr { site } = request.kind {
            sites.push(site);
        }
        self.make(&sites)
    }

    fn release(&mut self, code: CodeHandle) {
        self.arena.release(CodeId(code.get() as u64));
    }
}

/// A kiln-core [`Compiler`] that injects its plan's faults around `inner`:
/// fail, panic, null (an error: kiln-core's `Compiled` refuses null), hang
/// at the plan's gate, run slowly, bad OSR tables (kiln-core's `OsrTable`
/// refuses them at construction, so the compiler releases its code and
/// fails), and panic in `release` (after releasing). Cloning shares the
/// plan.
#[derive(Clone, Debug)]
pub struct FaultyCompiler<C> {
    inner: C,
    plan: Arc<FaultPlan>,
}

impl<C> FaultyCompiler<C> {
    /// Wraps `inner` with `plan`.
    pub fn new(inner: C, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }

    /// The wrapped compiler.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The plan.
    pub fn plan(&self) -> &Arc<FaultPlan> {
        &self.plan
    }
}

impl<H, C: Compiler<H>> Compiler<H> for FaultyCompiler<C> {
    type Error = FaultError<C::Error>;

    fn compile(&mut self, request: &CompileRequest<'_, H>) -> Result<Compiled, Self::Error> {
        self.plan.step();
        let fault = self.plan.next(Site::Compile);
        match fault {
            Some(kind @ (FaultKind::Fail | FaultKind::Null)) => return Err(FaultError::Injected(kind)),
            Some(FaultKind::Panic) => self.plan.panic("compile"),
            Some(FaultKind::Hang) => self.plan.gate().wait(),
            Some(FaultKind::Slow) => std::thread::sleep(self.plan.slow_duration()),
            _ => {}
        }
        self.plan.step();
        let compiled = self.inner.compile(request).map_err(FaultError::Inner)?;
        match fault {
            Some(kind @ (FaultKind::UnsortedOsr | FaultKind::DuplicateOsr)) => {
                let entry = compiled.entry().as_ptr();
                let bad = match kind {
                    FaultKind::UnsortedOsr => [OsrEntry { site: 2, code: entry }, OsrEntry { site: 1, code: entry }],
                    _ => [OsrEntry { site: 1, code: entry }, OsrEntry { site: 1, code: entry }],
                };
                assert!(OsrTable::new(&bad).is_err(), "kiln-core's OsrTable accepted a bad table");
                // Never published: the compiler frees it itself.
                self.plan.step();
                self.inner.release(compiled.into_handle());
                Err(FaultError::Injected(kind))
            }
            _ => Ok(compiled),
        }
    }

    fn release(&mut self, code: CodeHandle) {
        self.plan.step();
        self.inner.release(code);
        self.plan.step();
        if self.plan.next(Site::Release) == Some(FaultKind::ReleasePanic) {
            self.plan.panic("release");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::quiet_injected_panics;
    use kiln_core::Bead;

    fn request<'a>(bead: &'a &'a Bead, kind: JobKind) -> CompileRequest<'a, &'a Bead> {
        CompileRequest { bead, tier: 0, kind, generation: bead.generation() }
    }

    #[test]
    fn each_compile_fault_fires_at_its_chosen_compile() {
        quiet_injected_panics();
        let arena = Arc::new(PoisonArena::new(256, 1).keep_going());
        let plan = Arc::new(
            FaultPlan::none()
                .at(FaultKind::Fail, 1)
                .at(FaultKind::Null, 2)
                .at(FaultKind::Panic, 3)
                .at(FaultKind::Slow, 4)
                .at(FaultKind::UnsortedOsr, 5)
                .at(FaultKind::DuplicateOsr, 6)
                .at(FaultKind::ReleasePanic, 2)
                .slow_for(std::time::Duration::from_millis(1)),
        );
        let mut compiler = FaultyCompiler::new(PoisonCompiler::new(Arc::clone(&arena)), Arc::clone(&plan));
        let bead = Bead::new(std::ptr::null_mut());
        let bead = &bead;
        let request = request(&bead, JobKind::Osr { site: 7 });
        assert!(matches!(compiler.compile(&request), Err(FaultError::Injected(FaultKind::Fail))));
        assert!(matches!(compiler.compile(&request), Err(FaultError::Injected(FaultKind::Null))));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compiler.compile(&request)));
        assert!(crate::fault::is_injected(&*panicked.unwrap_err()));
        let slow = compiler.compile(&request).unwrap();
        assert!(slow.has_osr());
        assert!(matches!(compiler.compile(&request), Err(FaultError::Injected(FaultKind::UnsortedOsr))));
        assert!(matches!(compiler.compile(&request), Err(FaultError::Injected(FaultKind::DuplicateOsr))));
        // The bad-OSR compiles made code and released it themselves.
        assert_eq!((arena.report().made, arena.report().released), (3, 2));
        let fine = compiler.compile(&request).unwrap();
        <FaultyCompiler<PoisonCompiler> as Compiler<&Bead>>::release(&mut compiler, slow.into_handle());
        let handle = fine.into_handle();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            <FaultyCompiler<PoisonCompiler> as Compiler<&Bead>>::release(&mut compiler, handle)
        }));
        assert!(panicked.is_err(), "the 2nd release panics");
        let report = arena.report();
        assert_eq!((report.made, report.released, report.double_releases), (4, 4, 0), "released before panicking");
        let injected = plan.injected();
        for kind in [
            FaultKind::Fail,
            FaultKind::Null,
            FaultKind::Panic,
            FaultKind::Slow,
            FaultKind::UnsortedOsr,
            FaultKind::DuplicateOsr,
            FaultKind::ReleasePanic,
        ] {
            assert_eq!(injected.of(kind), 1, "{kind:?}");
        }
        assert_eq!(injected.total(), 7);
    }

    #[test]
    fn a_hung_compile_waits_for_the_gate() {
        let arena = Arc::new(PoisonArena::new(16, 1));
        let plan = Arc::new(FaultPlan::none().at(FaultKind::Hang, 1));
        let compiler = FaultyCompiler::new(PoisonCompiler::new(Arc::clone(&arena)), Arc::clone(&plan));
        let hung = std::thread::spawn(move || {
            let mut compiler = compiler;
            let bead = Bead::new(std::ptr::null_mut());
            let bead = &bead;
            let request = request(&bead, JobKind::Invoke);
            compiler.compile(&request).map(Compiled::into_handle).is_ok()
        });
        while plan.gate().waiting() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(arena.report().made, 0, "nothing compiled while hung");
        plan.gate().open();
        assert!(hung.join().unwrap());
        assert_eq!(arena.report().made, 1);
        assert_eq!(plan.injected().of(FaultKind::Hang), 1);
    }

    #[test]
    fn poison_code_carries_the_job_site_and_the_fixed_sites() {
        let arena = Arc::new(PoisonArena::new(16, 1).keep_going());
        let mut compiler = PoisonCompiler::new(Arc::clone(&arena)).with_sites(&[1, 5]);
        let bead = Bead::new(std::ptr::null_mut());
        let bead = &bead;
        let request = request(&bead, JobKind::Osr { site: 3 });
        let compiled = compiler.compile(&request).unwrap();
        assert!(compiled.has_osr());
        assert_eq!(arena.execute(compiled.entry().as_ptr(), 1), Ok(CodeId(1)));
        <PoisonCompiler as Compiler<&Bead>>::release(&mut compiler, compiled.into_handle());
        assert!(!arena.is_live(CodeId(1)));
    }
}
