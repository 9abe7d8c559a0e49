//! [`TierDispatch`]: one kiln-core [`Compiler`] made of two, chosen by the
//! job's tier — tier 0 to a baseline compiler (Cranelift, say), every
//! higher tier to an optimizing one (LLVM).
//!
//! kiln-core's N-tier policies (`TierLadder`, `TieredPolicy`) already
//! promote a bead from tier 0 to tier 1 while its tier-0 code runs, and
//! publish the tier-1 code with one store (`swap` under the broker's lock,
//! the old code retired): the running function moves to the optimized code
//! at its next call, or at its next back-edge through the new OSR table.
//! What they lacked is a compiler that sends each tier to its own backend;
//! this is it. Needs no LLVM: any two compilers over the same bead handles.
//!
//! # Releasing
//!
//! kiln-core hands every handle back once, to this compiler; the dispatcher
//! remembers which side made it and releases it there. Two sides may not
//! hand out the same handle (kiln-llvm's handles carry a tag bit, so a
//! kiln-llvm side never clashes with kiln-cranelift's counting ids); a
//! clash is refused as a failed compile ([`TierError::HandleClash`]), its
//! code released at once, never published.

use std::collections::HashMap;

use kiln_core::{CodeHandle, CompileRequest, Compiled, Compiler};

/// Which compiler of a [`TierDispatch`] made a piece of code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The tier-0 compiler.
    Baseline,
    /// The compiler for tiers 1 and up.
    Optimizing,
}

/// Why a [`TierDispatch`] compile failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TierError<B, O> {
    /// The baseline compiler failed.
    Baseline(B),
    /// The optimizing compiler failed.
    Optimizing(O),
    /// The compiler returned a handle the other side (or itself) already
    /// uses; the code was released unpublished.
    HandleClash(CodeHandle),
}

impl<B: std::fmt::Display, O: std::fmt::Display> std::fmt::Display for TierError<B, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Baseline(error) => write!(f, "baseline tier: {error}"),
            Self::Optimizing(error) => write!(f, "optimizing tier: {error}"),
            Self::HandleClash(handle) => write!(f, "code handle {:#x} is already in use", handle.get()),
        }
    }
}

impl<B, O> std::error::Error for TierError<B, O>
where
    B: std::error::Error,
    O: std::error::Error,
{
}

/// Tier 0 to `baseline`, tiers 1 and up to `optimizing`: one kiln-core
/// `Compiler` made of two. Each handle is released by the side that made
/// it; two sides handing out the same handle is refused as a failed compile
/// ([`TierError::HandleClash`]), its code released at once.
#[derive(Debug)]
pub struct TierDispatch<B, O> {
    baseline: B,
    optimizing: O,
    owners: HashMap<CodeHandle, Side>,
}

impl<B, O> TierDispatch<B, O> {
    /// Dispatches tier 0 to `baseline` and higher tiers to `optimizing`.
    pub fn new(baseline: B, optimizing: O) -> Self {
        Self { baseline, optimizing, owners: HashMap::new() }
    }

    /// The compiler for `tier`'s side.
    pub fn side_of_tier(tier: u8) -> Side {
        if tier == 0 { Side::Baseline } else { Side::Optimizing }
    }

    /// The tier-0 compiler (for its `evict`, statistics, ...).
    pub fn baseline(&mut self) -> &mut B {
        &mut self.baseline
    }

    /// The compiler for tiers 1 and up.
    pub fn optimizing(&mut self) -> &mut O {
        &mut self.optimizing
    }

    /// Code this dispatcher handed out and kiln has not released, per side.
    pub fn live(&self, side: Side) -> usize {
        self.owners.values().filter(|owner| **owner == side).count()
    }

    /// Both compilers back.
    pub fn into_parts(self) -> (B, O) {
        (self.baseline, self.optimizing)
    }
}

impl<H, B, O> Compiler<H> for TierDispatch<B, O>
where
    B: Compiler<H>,
    O: Compiler<H>,
{
    type Error = TierError<B::Error, O::Error>;

    fn compile(&mut self, request: &CompileRequest<'_, H>) -> Result<Compiled, Self::Error> {
        let side = Self::side_of_tier(request.tier);
        let compiled = match side {
            Side::Baseline => self.baseline.compile(request).map_err(TierError::Baseline)?,
            Side::Optimizing => self.optimizing.compile(request).map_err(TierError::Optimizing)?,
        };
        let handle = compiled.handle();
        if self.owners.contains_key(&handle) {
            // Never published: the side that made it frees it now.
            let handle = compiled.into_handle();
            match side {
                Side::Baseline => self.baseline.release(handle),
                Side::Optimizing => self.optimizing.release(handle),
            }
            return Err(TierError::HandleClash(handle));
        }
        self.owners.insert(handle, side);
        Ok(compiled)
    }

    fn release(&mut self, code: CodeHandle) {
        match self.owners.remove(&code) {
            Some(Side::Baseline) => self.baseline.release(code),
            Some(Side::Optimizing) => self.optimizing.release(code),
            // kiln-core hands back only what this compiler returned: a
            // handle it never saw is a host bug, and freeing a guess would
            // be worse than keeping the code.
            None => log::warn!(target: "kiln", "tier dispatch: release of unknown code handle {:#x}", code.get()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::{AlwaysRecompilePolicy, Bead, BeadState, Broker, Budget, JobKind, NoEvents, NoWake, TierLadder};

    /// Hands out fixed code with handles `base + n`, recording releases.
    struct Fake {
        base: usize,
        next: usize,
        code: fn(i64) -> i64,
        released: Vec<CodeHandle>,
    }

    impl Fake {
        fn new(base: usize, code: fn(i64) -> i64) -> Self {
            Self { base, next: 0, code, released: Vec::new() }
        }
    }

    impl<'a> Compiler<&'a Bead> for Fake {
        type Error = &'static str;
        fn compile(&mut self, _request: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, &'static str> {
            self.next += 1;
            let handle = CodeHandle::from_raw(self.base + self.next).ok_or("zero handle")?;
            Compiled::new(self.code as *mut (), handle).map_err(|_| "null entry")
        }
        fn release(&mut self, code: CodeHandle) {
            self.released.push(code);
        }
    }

    fn baseline(x: i64) -> i64 {
        x + 1
    }
    fn optimized(x: i64) -> i64 {
        x + 2
    }

    fn call(entry: core::ptr::NonNull<()>, x: i64) -> i64 {
        // SAFETY: the fakes publish only `fn(i64) -> i64` items.
        let f: fn(i64) -> i64 = unsafe { std::mem::transmute(entry.as_ptr()) };
        f(x)
    }

    #[test]
    fn tiers_go_to_their_compiler_and_come_back_to_it() {
        let bead = Bead::new(std::ptr::null_mut());
        let broker: Broker<&Bead, TierLadder<2>, AlwaysRecompilePolicy> =
            Broker::new(TierLadder::new([10, 100]), AlwaysRecompilePolicy, NoWake, NoEvents);
        let mut compiler = TierDispatch::new(Fake::new(0, baseline), Fake::new(1000, optimized));
        let mut results = Vec::new();
        for _ in 0..200 {
            let result = match broker.on_invoke(&&bead) {
                Some(entry) => call(entry, 1),
                None => 1 + 1,
            };
            results.push(result);
            broker.pump(&mut compiler, Budget::unlimited());
            broker.quiesce(&mut compiler);
        }
        assert_eq!(bead.state(), BeadState::Compiled(1));
        assert_eq!(*results.last().unwrap(), 3, "the optimized code runs last");
        assert!(results.contains(&2) && results.iter().position(|&r| r == 3) > results.iter().position(|&r| r == 2));
        // The tier-0 code was retired by the swap and released to its maker.
        assert_eq!(compiler.baseline().released, vec![CodeHandle::from_raw(1).unwrap()]);
        assert!(compiler.optimizing().released.is_empty());
        assert_eq!((compiler.live(Side::Baseline), compiler.live(Side::Optimizing)), (0, 1));
        broker.invalidate(&&bead).unwrap();
        for _ in 0..3 {
            broker.quiesce(&mut compiler);
        }
        assert_eq!(compiler.optimizing().released, vec![CodeHandle::from_raw(1001).unwrap()]);
        assert_eq!(compiler.live(Side::Optimizing), 0);
    }

    #[test]
    fn a_clashing_handle_is_released_unpublished() {
        let bead = Bead::new(std::ptr::null_mut());
        let mut compiler = TierDispatch::new(Fake::new(0, baseline), Fake::new(0, optimized));
        let handle = &bead;
        let request =
            |tier| CompileRequest { bead: &handle, tier, kind: JobKind::Invoke, generation: bead.generation() };
        let first = compiler.compile(&request(0)).expect("baseline compiles");
        let error = compiler.compile(&request(1)).unwrap_err();
        assert_eq!(error, TierError::HandleClash(first.handle()));
        assert_eq!(compiler.optimizing().released, vec![first.handle()]);
        assert!(error.to_string().contains("already in use"), "{error}");
        compiler.release(first.into_handle());
        assert_eq!(compiler.baseline().released.len(), 1);
    }

    #[test]
    fn failures_say_which_tier_failed() {
        struct Failing;
        impl<'a> Compiler<&'a Bead> for Failing {
            type Error = &'static str;
            fn compile(&mut self, _request: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, &'static str> {
                Err("no")
            }
            fn release(&mut self, _code: CodeHandle) {}
        }
        let bead = Bead::new(std::ptr::null_mut());
        let mut compiler = TierDispatch::new(Failing, Fake::new(0, optimized));
        let handle = &bead;
        let request =
            |tier| CompileRequest { bead: &handle, tier, kind: JobKind::Invoke, generation: bead.generation() };
        assert_eq!(compiler.compile(&request(0)).unwrap_err(), TierError::Baseline("no"));
        let code = compiler.compile(&request(3)).expect("tier 3 is optimizing");
        assert_eq!(call(code.entry(), 1), 3);
        compiler.release(code.into_handle());
    }
}
