//! kiln-std backends: [`PoisonBackend`] makes poisoned fake code, and
//! [`FaultyBackend`] injects a [`FaultPlan`]'s faults around any backend.

use std::sync::Arc;

use kiln_std::{Bead, JitBackend, OsrEntry};

use super::{ArenaFull, FaultError, FaultKind, FaultPlan, Site};
use crate::poison::PoisonArena;

/// What a [`PoisonBackend`] compiles: the OSR sites the code should have.
#[derive(Clone, Debug, Default)]
pub struct PoisonDef {
    /// OSR entries to compile with the function (any order).
    pub sites: Vec<u64>,
}

/// A kiln-std [`JitBackend`] whose code is [`PoisonArena`] objects: the
/// entry is the object's main cell, each OSR site a cell of its own;
/// `release` poisons the object (double releases are counted by the arena).
#[derive(Clone, Debug)]
pub struct PoisonBackend {
    arena: Arc<PoisonArena>,
}

impl PoisonBackend {
    /// Compiles into `arena`.
    pub fn new(arena: Arc<PoisonArena>) -> Self {
        Self { arena }
    }

    /// The arena.
    pub fn arena(&self) -> &Arc<PoisonArena> {
        &self.arena
    }
}

impl JitBackend for PoisonBackend {
    type FunctionDef = PoisonDef;
    type Error = ArenaFull;

    fn compile(&self, bead: &Arc<Bead>, def: PoisonDef) -> Result<*mut (), ArenaFull> {
        self.compile_with_osr(bead, def).map(|(entry, _)| entry)
    }

    fn compile_with_osr(&self, _bead: &Arc<Bead>, def: PoisonDef) -> Result<(*mut (), Vec<OsrEntry>), ArenaFull> {
        let code = self.arena.make(&def.sites).ok_or(ArenaFull)?;
        Ok((code.entry.as_ptr(), code.osr))
    }

    fn release(&self, code: *mut ()) {
        self.arena.release_entry(code);
    }
}

/// A kiln-std [`JitBackend`] that injects its plan's faults around
/// `inner`: fail, panic, return null, hang at the plan's gate, run slowly,
/// return its OSR entries unsorted or with a repeated site (fabricating
/// entries at the function's own entry if it has too few), and panic in
/// `release` (after releasing).
#[derive(Debug)]
pub struct FaultyBackend<B> {
    inner: B,
    plan: Arc<FaultPlan>,
}

/// Sites of the entries an OSR fault fabricates (far from any real site).
pub const FABRICATED_SITES: [u64; 2] = [1 << 40, (1 << 40) + 1];

impl<B> FaultyBackend<B> {
    /// Wraps `inner` with `plan`.
    pub fn new(inner: B, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The plan.
    pub fn plan(&self) -> &Arc<FaultPlan> {
        &self.plan
    }
}

impl<B: JitBackend> JitBackend for FaultyBackend<B> {
    type FunctionDef = B::FunctionDef;
    type Error = FaultError<B::Error>;

    fn compile(&self, bead: &Arc<Bead>, def: B::FunctionDef) -> Result<*mut (), Self::Error> {
        self.compile_with_osr(bead, def).map(|(entry, _)| entry)
    }

    fn compile_with_osr(&self, bead: &Arc<Bead>, def: B::FunctionDef) -> Result<(*mut (), Vec<OsrEntry>), Self::Error> {
        self.plan.step();
        let fault = self.plan.next(Site::Compile);
        match fault {
            Some(FaultKind::Fail) => return Err(FaultError::Injected(FaultKind::Fail)),
            Some(FaultKind::Null) => return Ok((std::ptr::null_mut(), Vec::new())),
            Some(FaultKind::Panic) => self.plan.panic("backend compile"),
            Some(FaultKind::Hang) => self.plan.gate().wait(),
            Some(FaultKind::Slow) => std::thread::sleep(self.plan.slow_duration()),
            _ => {}
        }
        self.plan.step();
        let (entry, mut osr) = self.inner.compile_with_osr(bead, def).map_err(FaultError::Inner)?;
        match fault {
            Some(FaultKind::UnsortedOsr) => {
                if osr.len() < 2 {
                    osr.extend(FABRICATED_SITES.map(|site| OsrEntry { site, code: entry }));
                }
                osr.sort_by_key(|entry| std::cmp::Reverse(entry.site));
            }
            Some(FaultKind::DuplicateOsr) => {
                let twice = osr.first().copied().unwrap_or(OsrEntry { site: FABRICATED_SITES[0], code: entry });
                osr.extend([twice, twice]);
            }
            _ => {}
        }
        Ok((entry, osr))
    }

    fn after_compile(&self, bead: &Arc<Bead>) {
        // Forwarded: the inner backend may evict here (a code budget).
        self.inner.after_compile(bead);
    }

    fn release(&self, code: *mut ()) {
        self.plan.step();
        self.inner.release(code);
        self.plan.step();
        if self.plan.next(Site::Release) == Some(FaultKind::ReleasePanic) {
            self.plan.panic("backend release");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{is_injected, quiet_injected_panics};
    use crate::poison::CodeId;

    fn backend(plan: FaultPlan) -> (FaultyBackend<PoisonBackend>, Arc<PoisonArena>) {
        let arena = Arc::new(PoisonArena::new(256, 9).keep_going());
        (FaultyBackend::new(PoisonBackend::new(Arc::clone(&arena)), Arc::new(plan)), arena)
    }

    #[test]
    fn each_backend_fault_fires_at_its_chosen_compile() {
        quiet_injected_panics();
        let plan = FaultPlan::none()
            .at(FaultKind::Null, 1)
            .at(FaultKind::Fail, 2)
            .at(FaultKind::Panic, 3)
            .at(FaultKind::UnsortedOsr, 4)
            .at(FaultKind::DuplicateOsr, 5)
            .at(FaultKind::UnsortedOsr, 6)
            .at(FaultKind::ReleasePanic, 1);
        let (backend, arena) = backend(plan);
        let bead = Bead::new(std::ptr::null_mut(), None);
        let def = || PoisonDef { sites: vec![3, 8] };
        assert!(backend.compile_with_osr(&bead, def()).unwrap().0.is_null());
        assert!(matches!(backend.compile_with_osr(&bead, def()), Err(FaultError::Injected(FaultKind::Fail))));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.compile(&bead, def())));
        assert!(is_injected(&*panicked.unwrap_err()));
        let (_, unsorted) = backend.compile_with_osr(&bead, def()).unwrap();
        assert_eq!(unsorted.iter().map(|e| e.site).collect::<Vec<_>>(), [8, 3]);
        let (_, duplicated) = backend.compile_with_osr(&bead, def()).unwrap();
        assert_eq!(duplicated.iter().map(|e| e.site).collect::<Vec<_>>(), [3, 8, 3, 3]);
        let (entry, fabricated) = backend.compile_with_osr(&bead, PoisonDef::default()).unwrap();
        assert_eq!(fabricated.iter().map(|e| e.site).collect::<Vec<_>>(), [FABRICATED_SITES[1], FABRICATED_SITES[0]]);
        assert!(fabricated.iter().all(|e| e.code == entry));
        assert_eq!(arena.report().made, 3, "null, fail and panic made no code");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.release(entry)));
        assert!(panicked.is_err(), "the 1st release panics");
        assert!(!arena.is_live(CodeId(3)), "after releasing");
        backend.release(entry);
        assert_eq!(arena.report().double_releases, 1);
        let injected = backend.plan().injected();
        assert_eq!((injected.of(FaultKind::UnsortedOsr), injected.total()), (2, 7));
    }

    #[test]
    fn a_hung_backend_compile_waits_for_the_gate_then_compiles() {
        let (backend, arena) = backend(FaultPlan::none().at(FaultKind::Hang, 1).at(FaultKind::Slow, 2));
        let backend = Arc::new(backend);
        let hung = {
            let backend = Arc::clone(&backend);
            std::thread::spawn(move || {
                let bead = Bead::new(std::ptr::null_mut(), None);
                backend.compile(&bead, PoisonDef::default()).is_ok()
            })
        };
        while backend.plan().gate().waiting() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(arena.report().made, 0);
        backend.plan().gate().pulse();
        assert!(hung.join().unwrap());
        let bead = Bead::new(std::ptr::null_mut(), None);
        assert!(backend.compile(&bead, PoisonDef::default()).is_ok(), "slow, then compiled");
        assert_eq!(arena.report().made, 2);
        let injected = backend.plan().injected();
        assert_eq!((injected.of(FaultKind::Hang), injected.of(FaultKind::Slow)), (1, 1));
    }
}
