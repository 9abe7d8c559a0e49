//! The compatibility proof: one test suite written against beadie 0.3's
//! public API, compiled and run twice — once on beadie itself, once on
//! `kiln_std::compat` — so a program using what it covers moves from beadie
//! to kiln by changing the import path.
//!
//! The suite lives in `suite!`, whose body names the library only through
//! the alias `b::`. It covers every code example of beadie's README (basic
//! promotion, custom policy, backend adapter, tiered compilation, OSR, swaps
//! with and without OSR, the runtime lifecycle) and the rest of the
//! surface: `submit` / `submit_osr`, `Bead::tick`, `eager_install`, states,
//! bailouts and deopt policies, counters, `reload`, `Chain`, `Broker`, and
//! the public struct literals.
//!
//! "Compiled code" is real functions of this test binary; every pointer a
//! library hands back is looked up among them and called (see [`call`]).
//! Compiles are asynchronous, so tests poll with a bounded wait and never
//! assume timing.
//!
//! Where kiln deliberately behaves differently, the assertions live in
//! `kiln_only` instead, each with the reason. A known gap of kiln would be
//! marked in the suite with the `gap` attribute the kiln instantiation passes (an
//! `#[ignore]` naming it), so it still runs on beadie and shows up on kiln
//! with `cargo test -- --ignored`.

use std::time::{Duration, Instant};

/// The signature of every "compiled" function here.
type Native = extern "C" fn(i64) -> i64;

#[inline(never)]
extern "C" fn add_one(x: i64) -> i64 {
    x + 1
}
#[inline(never)]
extern "C" fn times_two(x: i64) -> i64 {
    x * 2
}
#[inline(never)]
extern "C" fn times_three(x: i64) -> i64 {
    x * 3
}
#[inline(never)]
extern "C" fn tier0(x: i64) -> i64 {
    x * 10
}
#[inline(never)]
extern "C" fn tier1(x: i64) -> i64 {
    x * 10 + 1
}
#[inline(never)]
extern "C" fn tier2(x: i64) -> i64 {
    x * 10 + 2
}
#[inline(never)]
extern "C" fn osr_a(x: i64) -> i64 {
    x + 100
}
#[inline(never)]
extern "C" fn osr_b(x: i64) -> i64 {
    x + 200
}
#[inline(never)]
extern "C" fn osr_c(x: i64) -> i64 {
    x + 300
}

const NATIVES: [Native; 9] = [add_one, times_two, times_three, tier0, tier1, tier2, osr_a, osr_b, osr_c];

/// The address a library stores for `f`.
fn addr(f: Native) -> *mut () {
    f as *mut ()
}

/// Calls `code`, which must be one of this file's natives (checked: a
/// pointer that is not is a test failure, never a jump).
fn call(code: *mut (), x: i64) -> i64 {
    let native = NATIVES.iter().find(|&&f| addr(f) == code);
    native.unwrap_or_else(|| panic!("{code:p} is not a function of this test"))(x)
}

/// The tier a `tier*` native belongs to.
fn tier_of(code: *mut ()) -> i64 {
    call(code, 0)
}

/// The interpreter's version of `add_one`, for the README's dispatch.
fn interpret(bytecode: &[u8], x: i64) -> i64 {
    x + i64::from(bytecode.len() as u8 / 3)
}

/// Polls `done` (at most 5 s, short sleeps). Returns whether it came true.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

macro_rules! suite {
    ($(gap = #[$gap:meta])?) => {
        use std::ptr::null_mut;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        use b::{
            AlwaysRecompilePolicy, BackendAdapter, BailoutInfo, Bead, BeadState, Beadie, Broker, Chain,
            CompileError, CoreHandle, DeoptDecision, DeoptPolicy, ExponentialBackoffPolicy, HotnessPolicy,
            JitBackend, OsrBuild, OsrCompileResult, OsrEntry, ReloadOutcome, SubmitResult, SwapResult,
            ThresholdDeoptPolicy, ThresholdPolicy, TieredAdapter, TieredBound, TieredDeoptPolicy, TieredPolicy,
        };

        use crate::{add_one, addr, call, osr_a, osr_b, osr_c, tier0, tier1, tier2, tier_of, times_three, times_two};
        use crate::{Native, interpret, wait_until};

        /// A compile closure returning `f` and counting its calls.
        fn counting(compiles: &Arc<AtomicUsize>, f: Native) -> impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static {
            let compiles = Arc::clone(compiles);
            move |_bead| {
                compiles.fetch_add(1, Ordering::SeqCst);
                addr(f)
            }
        }

        /// Calls `on_invoke` until it returns code (bounded); returns it.
        fn invoke_until_compiled<P: HotnessPolicy>(beadie: &Beadie<P>, bead: &Arc<Bead>, f: Native) -> *mut () {
            let mut code = None;
            assert!(wait_until(|| {
                code = beadie.on_invoke(bead, move |_| addr(f));
                code.is_some()
            }));
            code.unwrap()
        }

        /// Calls `on_invoke` until the bead leaves `Interpreted`; returns the
        /// number of calls that took.
        fn calls_to_promote<P: HotnessPolicy>(beadie: &Beadie<P>, bead: &Arc<Bead>, f: Native, limit: u32) -> u32 {
            for call in 1..=limit {
                beadie.on_invoke(bead, move |_| addr(f));
                if bead.state() != BeadState::Interpreted {
                    return call;
                }
            }
            panic!("not promoted within {limit} calls");
        }

        /// A backend compiling `Some(f)` to `f` and refusing `None`.
        #[derive(Clone, Default)]
        struct TestBackend {
            compiles: Arc<AtomicUsize>,
        }

        impl JitBackend for TestBackend {
            type FunctionDef = Option<Native>;
            type Error = CompileError;

            fn compile(&self, _bead: &Arc<Bead>, def: Option<Native>) -> Result<*mut (), CompileError> {
                self.compiles.fetch_add(1, Ordering::SeqCst);
                def.map(addr).ok_or_else(|| CompileError::new("nothing to compile"))
            }
        }

        fn tiers(thresholds: &[u32]) -> Vec<Box<dyn HotnessPolicy>> {
            thresholds.iter().map(|&t| Box::new(ThresholdPolicy::new(t)) as Box<dyn HotnessPolicy>).collect()
        }

        /// The README's tiered closure: tier `i` compiles `tier{i}`.
        fn tier_closure(
            backend: &TestBackend,
        ) -> impl Fn(usize, &Arc<Bead>) -> *mut () + Send + Sync + Clone + 'static {
            let backend = backend.clone();
            move |tier, bead| match tier {
                0 => backend.compile(bead, Some(tier0)).unwrap_or(null_mut()),
                1 => backend.compile(bead, Some(tier1)).unwrap_or(null_mut()),
                2 => backend.compile(bead, Some(tier2)).unwrap_or(null_mut()),
                _ => null_mut(),
            }
        }

        /// Whether a compile for `bound` is queued or running.
        fn pending(bound: &TieredBound) -> bool {
            matches!(bound.bead().state(), BeadState::Queued | BeadState::Compiling)
                || (1..4).any(|tier| bound.is_queued_for(tier) && !bound.is_promoted_beyond(tier - 1))
        }

        /// Calls the tiered `on_invoke` until `done` (bounded), checking that
        /// the tiers it dispatches to never go down. With `settle`, each call
        /// waits for a compile it started, so every tier is reached in turn
        /// however slow the compiles are.
        fn drive_tiered<F>(
            adapter: &TieredAdapter,
            bound: &TieredBound,
            compile: F,
            settle: bool,
            done: impl Fn(Option<*mut ()>) -> bool,
        ) -> Option<*mut ()>
        where
            F: Fn(usize, &Arc<Bead>) -> *mut () + Send + Sync + Clone + 'static,
        {
            let mut highest = -1;
            let mut last = None;
            let reached = wait_until(|| {
                for _ in 0..8 {
                    last = adapter.on_invoke(bound, compile.clone());
                    if let Some(code) = last {
                        let tier = tier_of(code);
                        assert!(tier >= highest, "dispatch went down from tier {highest} to {tier}");
                        highest = tier;
                    }
                    if done(last) {
                        return true;
                    }
                    if settle {
                        assert!(wait_until(|| !pending(bound)), "a compile never finished");
                    }
                }
                false
            });
            assert!(reached, "tiered condition not reached (last dispatch: {last:?})");
            last
        }

        // ---- README: Basic promotion ----

        struct Function {
            bytecode: Vec<u8>,
            bead: Arc<Bead>,
        }

        #[test]
        fn readme_basic_promotion() {
            let beadie = Beadie::new();
            let object = Box::new(7_u64);
            let core_ptr: CoreHandle = (&*object as *const u64).cast_mut().cast();
            let func = Function { bytecode: vec![0; 3], bead: beadie.register(core_ptr, None) };
            let compiles = Arc::new(AtomicUsize::new(0));
            let seen_core = Arc::new(AtomicUsize::new(0));
            let compile = || {
                let (compiles, seen_core) = (Arc::clone(&compiles), Arc::clone(&seen_core));
                move |bead: &Arc<Bead>| {
                    compiles.fetch_add(1, Ordering::SeqCst);
                    seen_core.store(bead.core_handle() as usize, Ordering::SeqCst);
                    addr(add_one)
                }
            };
            for x in 0..999 {
                let result = match beadie.on_invoke(&func.bead, compile()) {
                    Some(code) => call(code, x),
                    None => interpret(&func.bytecode, x),
                };
                assert_eq!(result, x + 1);
            }
            assert_eq!(func.bead.state(), BeadState::Interpreted, "the default threshold is 1,000 calls");
            assert_eq!(func.bead.invocation_count(), 999);
            assert_eq!(compiles.load(Ordering::SeqCst), 0);
            let mut native_calls = 0;
            assert!(wait_until(|| {
                if let Some(code) = beadie.on_invoke(&func.bead, compile()) {
                    assert_eq!(call(code, 41), 42);
                    native_calls += 1;
                }
                native_calls == 3
            }));
            assert_eq!(func.bead.state(), BeadState::Compiled);
            assert_eq!(func.bead.compiled(), Some(addr(add_one)));
            assert_eq!(compiles.load(Ordering::SeqCst), 1, "compiled once, on the broker thread");
            assert_eq!(seen_core.load(Ordering::SeqCst), core_ptr as usize);
            assert!(func.bead.invocation_count() >= 1_000);
        }

        // ---- README: Custom policy ----

        #[test]
        fn readme_custom_policy() {
            let policy = ThresholdPolicy::new(500);
            assert_eq!(policy.threshold, 500);
            let fixed = Beadie::with_policy(policy);
            let bead = fixed.register(null_mut(), None);
            assert_eq!(calls_to_promote(&fixed, &bead, add_one, 10_000), 500);

            let tiered = TieredPolicy::default();
            assert_eq!((tiered.tier1_threshold, tiered.tier2_threshold), (500, 10_000));
            let two_tier = Beadie::with_policy(tiered);
            let bead = two_tier.register(null_mut(), None);
            assert_eq!(calls_to_promote(&two_tier, &bead, times_two, 10_000), 500);
            assert_eq!(call(invoke_until_compiled(&two_tier, &bead, times_two), 4), 8);

            let literal = TieredPolicy { tier1_threshold: 3, tier2_threshold: 7 };
            let by_count = [2, 3, 6, 7].map(|calls| literal.tier(calls));
            assert_eq!(by_count, [None, Some(1), Some(1), Some(2)]);
            assert!(!literal.should_promote(2) && literal.should_promote(3));
        }

        #[test]
        fn queue_ahead_and_capacity() {
            let policy = ThresholdPolicy::new(100).queue_ahead(30);
            assert_eq!(policy.queue_at(), 70);
            assert!(!policy.should_promote(69) && policy.should_promote(70));
            let beadie = Beadie::with_policy_and_capacity(policy, 4);
            let bead = beadie.register(null_mut(), None);
            assert_eq!(calls_to_promote(&beadie, &bead, times_three, 1_000), 70);
            assert_eq!(call(invoke_until_compiled(&beadie, &bead, times_three), 5), 15);
            assert_eq!(ThresholdPolicy::default().threshold, 1_000);
        }

        /// A host's own promotion rule: promote on the 37th call.
        struct OnCall(u32);

        impl HotnessPolicy for OnCall {
            fn should_promote(&self, invocations: u32) -> bool {
                invocations >= self.0
            }
        }

        #[test]
        fn custom_hotness_policy() {
            let beadie = Beadie::with_policy(OnCall(37));
            let bead = beadie.register(null_mut(), None);
            assert_eq!(calls_to_promote(&beadie, &bead, add_one, 1_000), 37);
            assert_eq!(call(invoke_until_compiled(&beadie, &bead, add_one), 1), 2);
        }

        // ---- README: Backend adapter ----

        #[test]
        fn readme_backend_adapter() {
            let my_backend = TestBackend::default();
            let compiles = Arc::clone(&my_backend.compiles);
            let adapter = BackendAdapter::new(my_backend);
            let object = Box::new(1_u8);
            let core_ptr: CoreHandle = (&*object as *const u8).cast_mut().cast();
            let bound = adapter.register(core_ptr, None);
            assert_eq!(bound.bead().core_handle(), core_ptr);
            assert!(Arc::ptr_eq(bound.backend(), adapter.backend()));
            assert_eq!((adapter.chain_len(), adapter.beadie().chain_len()), (1, 1));

            let build_ir = |_bead: &Arc<Bead>| Some(times_two as Native);
            let mut dispatched = 0;
            for x in 0..999 {
                assert_eq!(adapter.on_invoke(&bound, build_ir), None, "call {x} is below the default threshold");
            }
            assert!(wait_until(|| {
                if let Some(code) = adapter.on_invoke(&bound, build_ir) {
                    assert_eq!(call(code, 21), 42);
                    dispatched += 1;
                }
                dispatched == 2
            }));
            assert_eq!(compiles.load(Ordering::SeqCst), 1);
            assert_eq!(bound.bead().state(), BeadState::Compiled);

            let copy = bound.clone();
            assert!(Arc::ptr_eq(copy.bead(), bound.bead()) && Arc::ptr_eq(copy.backend(), bound.backend()));

            // Hot reload through the bound bead: recompiled on the next calls.
            assert_eq!(bound.reload(), ReloadOutcome::WillRecompile);
            assert_eq!(bound.bead().state(), BeadState::Interpreted);
            assert!(wait_until(|| adapter.on_invoke(&bound, |_| Some(times_three as Native)).is_some()));
            assert_eq!(call(adapter.on_invoke(&bound, build_ir).unwrap(), 3), 9);
            assert_eq!(compiles.load(Ordering::SeqCst), 2);
            assert_eq!(adapter.reload_matching(|bead| Arc::ptr_eq(bead, bound.bead())), 1);
            assert_eq!(adapter.reload_all(), 0, "nothing is compiled any more");
        }

        #[test]
        fn bound_bead_compiles_ahead_of_time() {
            let adapter = BackendAdapter::with_policy(TestBackend::default(), ThresholdPolicy::new(1_000_000));
            let bound = adapter.register(null_mut(), None);
            let bead = bound.compile(Some(times_three)).expect("the backend compiles Some");
            assert!(Arc::ptr_eq(&bead, bound.bead()));
            assert_eq!(bead.state(), BeadState::Compiled);
            let code = adapter.on_invoke(&bound, |_| None).expect("installed before the first call");
            assert_eq!(call(code, 7), 21);

            let refused = adapter.register(null_mut(), None);
            let Err(error) = refused.compile(None) else { panic!("the backend refuses None") };
            assert_eq!(error.message, "nothing to compile");
            assert_eq!(error.to_string(), "nothing to compile");
            assert_eq!(refused.bead().state(), BeadState::Interpreted);
            assert_eq!(refused.bead().compiled(), None);

            let from = CompileError::from_err(std::fmt::Error);
            assert_eq!(from.message, std::fmt::Error.to_string());
            let literal = CompileError { message: "x".into() };
            let _: &dyn std::error::Error = &literal;
            assert!(format!("{literal:?}").contains('x'));
        }

        // ---- README: Tiered compilation ----

        #[test]
        fn readme_tiered_compilation() {
            let backend = TestBackend::default();
            let tiered = TieredAdapter::new(vec![
                Box::new(ThresholdPolicy::new(10)) as Box<dyn HotnessPolicy>,
                Box::new(ThresholdPolicy::new(100)) as Box<dyn HotnessPolicy>,
                Box::new(ThresholdPolicy::new(300)) as Box<dyn HotnessPolicy>,
            ]);
            assert_eq!(tiered.num_tiers(), 3);
            let bound = tiered.register(null_mut(), None);
            assert_eq!((bound.current_tier(), bound.max_tier(), bound.is_queued_for(0)), (None, 2, false));
            assert_eq!(bound.bead().state(), BeadState::Interpreted);

            let compile = tier_closure(&backend);
            for _ in 0..9 {
                assert_eq!(tiered.on_invoke(&bound, compile.clone()), None);
            }
            let code = drive_tiered(&tiered, &bound, compile.clone(), true, |code| code.is_some());
            assert_eq!(tier_of(code.unwrap()), 0, "the baseline tier comes first");
            drive_tiered(&tiered, &bound, compile.clone(), true, |_| bound.current_tier() == Some(2));
            let code = tiered.on_invoke(&bound, compile.clone()).unwrap();
            assert_eq!(call(code, 4), 42);
            assert!(bound.is_queued_for(1) && bound.is_queued_for(2));
            assert!(bound.is_promoted_beyond(1) && !bound.is_promoted_beyond(2));
            assert_eq!(bound.bead().state(), BeadState::Compiled);
            assert_eq!(backend.compiles.load(Ordering::SeqCst), 3, "one compile per tier");
            assert_eq!(tiered.chain_len(), 1);
            let mut walked = 0;
            tiered.walk(|_| walked += 1);
            assert_eq!(walked, 1);

            let copy = bound.clone();
            assert!(Arc::ptr_eq(copy.bead(), bound.bead()));
            assert_eq!(copy.generation(), bound.bead().generation());

            bound.reset_to_interpreter();
            assert_eq!((bound.current_tier(), bound.max_tier(), bound.is_queued_for(1)), (None, 2, false));
            assert_eq!(bound.bead().state(), BeadState::Interpreted);
            drive_tiered(&tiered, &bound, compile, false, |code| code.is_some());
            assert_eq!(tiered.reload_all(), 1);
        }

        #[test]
        fn tiered_failed_higher_tier_keeps_the_lower_tier() {
            let attempts = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&attempts);
            let compile = move |tier: usize, _bead: &Arc<Bead>| match tier {
                0 => addr(tier0),
                _ => {
                    counted.fetch_add(1, Ordering::SeqCst);
                    null_mut()
                }
            };
            let tiered = TieredAdapter::new(tiers(&[2, 6]));
            let bound = tiered.register(null_mut(), None);
            drive_tiered(&tiered, &bound, compile.clone(), false, |_| attempts.load(Ordering::SeqCst) >= 1);
            for _ in 0..200 {
                assert_eq!(tiered.on_invoke(&bound, compile.clone()), Some(addr(tier0)));
            }
            assert_eq!(bound.current_tier(), Some(0));
            assert!(bound.bead().is_valid());
        }

        #[test]
        fn tiered_force_promote() {
            let tiered = TieredAdapter::new(tiers(&[3, 1_000_000]));
            let bound = tiered.register(null_mut(), None);
            assert!(!tiered.force_promote(&bound, 1, |_| addr(tier1)), "nothing compiled yet");
            let compile = |tier: usize, _: &Arc<Bead>| if tier == 0 { addr(tier0) } else { null_mut() };
            drive_tiered(&tiered, &bound, compile, false, |_| bound.current_tier() == Some(0));
            assert!(!tiered.force_promote(&bound, 0, |_| addr(tier1)), "tier 0 is not a promotion");
            assert!(!tiered.force_promote(&bound, 2, |_| addr(tier1)), "out of range");
            assert!(tiered.force_promote(&bound, 1, |_| addr(tier1)));
            assert!(bound.is_queued_for(1));
            assert!(!tiered.force_promote(&bound, 1, |_| addr(tier1)), "already queued");
            let at_tier_one = |code: Option<*mut ()>| code.is_some_and(|code| tier_of(code) == 1);
            let code = drive_tiered(&tiered, &bound, compile, false, at_tier_one);
            assert_eq!(call(code.unwrap(), 5), 51);
            assert_eq!(bound.current_tier(), Some(1));
        }

        #[test]
        fn tiered_bailout_reverts_to_the_baseline_tier() {
            let tiered = TieredAdapter::with_deopt_policy(tiers(&[5, 50]), TieredDeoptPolicy::new(3, 1));
            let bound = tiered.register(null_mut(), None);
            let compile = tier_closure(&TestBackend::default());
            drive_tiered(&tiered, &bound, compile.clone(), false, |_| bound.current_tier() == Some(1));
            let info = BailoutInfo { guard_id: 9, pc_offset: 12, generation: 1 };
            assert_eq!(tiered.on_bailout(&bound, info), DeoptDecision::RevertToTier1);
            assert_eq!(bound.max_tier(), 0);
            assert!(!bound.is_queued_for(1));
            assert_eq!(bound.bead().bailout_count(), 1);
            let code = drive_tiered(&tiered, &bound, compile.clone(), false, |code| code.is_some());
            assert_eq!(tier_of(code.unwrap()), 0);
            for _ in 0..300 {
                assert_eq!(tiered.on_invoke(&bound, compile.clone()), Some(addr(tier0)));
            }
            assert!(!bound.is_queued_for(1), "tier 1 is never queued again");
        }

        #[test]
        fn tiered_threshold_deopt_blacklists() {
            let tiered = TieredAdapter::with_deopt_policy(tiers(&[2]), ThresholdDeoptPolicy::new(1));
            let bound = tiered.register(null_mut(), None);
            let compile = tier_closure(&TestBackend::default());
            let info = || BailoutInfo { guard_id: 1, pc_offset: 0, generation: 0 };
            drive_tiered(&tiered, &bound, compile.clone(), false, |code| code.is_some());
            let decision = tiered.on_bailout(&bound, info());
            assert_eq!(decision, DeoptDecision::Recompile);
            drive_tiered(&tiered, &bound, compile.clone(), false, |code| code.is_some());
            assert_eq!(tiered.on_bailout(&bound, info()), DeoptDecision::Blacklist);
            assert!(bound.bead().is_blacklisted());
            for _ in 0..500 {
                assert_eq!(tiered.on_invoke(&bound, compile.clone()), None);
            }
            let policy: &Arc<dyn DeoptPolicy> = tiered.deopt_policy();
            assert_eq!(policy.on_bailout(bound.bead(), &info(), 2), DeoptDecision::Blacklist);
        }

        // ---- README: OSR ----

        #[test]
        fn readme_osr_backend_adapter() {
            let adapter = BackendAdapter::with_policy(TestBackend::default(), ThresholdPolicy::new(100));
            let bound = adapter.register(null_mut(), None);
            let compile_with_osr = |_bead: &Arc<Bead>| {
                let osr_entries =
                    vec![OsrEntry { site: 0x40, code: addr(osr_a) }, OsrEntry { site: 0x10, code: addr(osr_b) }];
                (Some(add_one as Native), osr_entries)
            };
            assert_eq!(bound.bead().osr_entry(0x40), None, "no code, no OSR");
            let mut code = None;
            assert!(wait_until(|| {
                code = adapter.on_invoke_osr(&bound, move |bead| {
                    let (def, osr_entries) = compile_with_osr(bead);
                    OsrBuild { def, osr: osr_entries }
                });
                code.is_some()
            }));
            assert_eq!(call(code.unwrap(), 1), 2);
            // The interpreter's back-edge probe.
            let loop_header_id = 0x40;
            let entry = bound.bead().osr_entry(loop_header_id).expect("an OSR entry at the hot loop");
            assert_eq!(call(entry, 1), 101);
            assert_eq!(bound.bead().osr_entry(0x10).map(|entry| call(entry, 1)), Some(201));
            assert_eq!(bound.bead().osr_entry(0x20), None);
        }

        #[test]
        fn beadie_on_invoke_osr() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(5));
            let bead = beadie.register(null_mut(), None);
            let compile = |_: &Arc<Bead>| OsrCompileResult {
                entry: addr(times_two),
                osr: vec![OsrEntry { site: 3, code: addr(osr_c) }],
            };
            assert!(wait_until(|| beadie.on_invoke_osr(&bead, compile).is_some()));
            assert_eq!(bead.osr_entry(3).map(|entry| call(entry, 0)), Some(300));
            assert_eq!(call(bead.compiled().unwrap(), 6), 12);
        }

        // ---- README: Tier-up swaps with OSR ----

        #[test]
        fn readme_swaps_with_and_without_osr() {
            let adapter = BackendAdapter::with_policy(TestBackend::default(), ThresholdPolicy::new(10));
            let bound = adapter.register(null_mut(), None);
            assert!(bound.swap_compiled(addr(times_two)).is_none(), "nothing to swap yet");
            let build = |_: &Arc<Bead>| OsrBuild {
                def: Some(add_one as Native),
                osr: vec![OsrEntry { site: 0x40, code: addr(osr_a) }],
            };
            assert!(wait_until(|| adapter.on_invoke_osr(&bound, build).is_some()));
            let before = bound.bead().generation();

            // Tier-2 compile finished: replace tier-1 code and its OSR table.
            let optimised_entry = addr(times_two);
            let optimised_osr_entries = vec![OsrEntry { site: 0x40, code: addr(osr_c) }];
            let result: SwapResult = bound.swap_compiled_with_osr(optimised_entry, optimised_osr_entries).unwrap();
            assert_eq!(result.old_code, addr(add_one));
            assert_eq!(result.new_generation, before + 1);
            assert_eq!(bound.bead().generation(), result.new_generation);
            assert_eq!(bound.bead().osr_entry(0x40).map(|entry| call(entry, 0)), Some(300), "OSR stays live");
            assert_eq!(call(adapter.on_invoke_osr(&bound, build).unwrap(), 5), 10);

            // The plain swap retires the OSR table.
            let result = bound.swap_compiled(addr(times_three)).unwrap();
            assert_eq!((result.old_code, result.new_generation), (addr(times_two), before + 2));
            assert_eq!(bound.bead().osr_entry(0x40), None);
            assert_eq!(call(adapter.on_invoke_osr(&bound, build).unwrap(), 5), 15);
            assert_eq!(bound.bead().state(), BeadState::Compiled);
        }

        #[test]
        fn swap_matching_swaps_only_selected_compiled_beads() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(3));
            let hot = beadie.register(null_mut(), None);
            let cold = beadie.register(null_mut(), None);
            invoke_until_compiled(&beadie, &hot, add_one);
            let results =
                beadie.swap_matching(|bead| if Arc::ptr_eq(bead, &cold) { null_mut() } else { addr(times_three) });
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].old_code, addr(add_one));
            assert_eq!(call(hot.compiled().unwrap(), 2), 6);
            assert_eq!(cold.compiled(), None);
        }

        // ---- README: Runtime lifecycle ----

        #[test]
        fn readme_runtime_lifecycle() {
            let invalidations = Arc::new(AtomicUsize::new(0));
            let hook = {
                let invalidations = Arc::clone(&invalidations);
                Box::new(move || {
                    invalidations.fetch_add(1, Ordering::SeqCst);
                }) as Box<dyn Fn() + Send + Sync>
            };
            let b = Beadie::with_policy(ThresholdPolicy::new(5));
            let bead = b.register(null_mut(), Some(hook));
            let other = b.register(null_mut(), None);
            let third = b.register(null_mut(), None);
            assert_eq!(b.chain_len(), 3);

            // GC moved the function object: the compile sees the new pointer.
            let moved = Box::new(3_u32);
            let new_ptr: CoreHandle = (&*moved as *const u32).cast_mut().cast();
            bead.update_core(new_ptr);
            assert_eq!(bead.core_handle(), new_ptr);
            let seen = Arc::new(AtomicUsize::new(0));
            let record = Arc::clone(&seen);
            let compile = move |bead: &Arc<Bead>| {
                record.store(bead.core_handle() as usize, Ordering::SeqCst);
                addr(add_one)
            };
            assert!(wait_until(|| b.on_invoke(&bead, compile.clone()).is_some()));
            assert_eq!(seen.load(Ordering::SeqCst), new_ptr as usize);
            invoke_until_compiled(&b, &other, times_two);

            // Force recompilation of all hot functions.
            assert_eq!(b.reload_all(), 2, "the two compiled beads");
            for candidate in [&bead, &other, &third] {
                assert_eq!(candidate.state(), BeadState::Interpreted);
            }
            assert_eq!(call(invoke_until_compiled(&b, &other, times_three), 2), 6);
            assert_eq!(b.reload_matching(|candidate| Arc::ptr_eq(candidate, &other)), 1);

            // Function destroyed: the hook runs once, calls interpret.
            bead.invalidate();
            bead.invalidate();
            assert_eq!(invalidations.load(Ordering::SeqCst), 1);
            assert!(!bead.is_valid());
            assert_eq!(bead.state(), BeadState::Deopt);
            assert_eq!(bead.reload(), ReloadOutcome::Dead);
            for _ in 0..100 {
                assert_eq!(b.on_invoke(&bead, |_| addr(add_one)), None);
            }

            // Reclaim dead beads.
            b.prune();
            assert_eq!(b.chain_len(), 2);
            let mut alive = 0;
            b.walk(|candidate| {
                assert!(candidate.is_valid());
                alive += 1;
            });
            assert_eq!(alive, 2);
            assert_eq!(b.chain().len(), 2);
        }

        #[test]
        fn invalidating_compiled_code_stops_dispatch() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(2));
            let bead = beadie.register(null_mut(), None);
            invoke_until_compiled(&beadie, &bead, add_one);
            bead.invalidate();
            assert_eq!(bead.compiled(), None);
            assert_eq!(beadie.on_invoke(&bead, |_| addr(add_one)), None);
            assert_eq!(bead.state(), BeadState::Deopt);
        }

        // ---- submit / submit_osr ----

        #[test]
        fn submit_and_submit_osr() {
            let beadie = Beadie::new();
            let bead = beadie.register(null_mut(), None);
            let compiles = Arc::new(AtomicUsize::new(0));
            let accepted = beadie.submit(&bead, counting(&compiles, times_two));
            assert_eq!(accepted, SubmitResult::Accepted);
            assert!(accepted.is_accepted());
            let again = beadie.submit(&bead, counting(&compiles, times_two));
            assert_eq!(again, SubmitResult::AlreadyQueued, "one job per bead");
            assert!(!again.is_accepted());
            assert!(wait_until(|| bead.compiled().is_some()));
            assert_eq!(call(bead.compiled().unwrap(), 8), 16);
            let late = beadie.submit(&bead, counting(&compiles, add_one));
            assert_eq!(late, SubmitResult::AlreadyQueued, "already compiled");
            assert_eq!(compiles.load(Ordering::SeqCst), 1);

            let osr_bead = beadie.register(null_mut(), None);
            let result = beadie.submit_osr(&osr_bead, |_| OsrCompileResult {
                entry: addr(add_one),
                osr: vec![OsrEntry { site: 5, code: addr(osr_b) }],
            });
            assert!(result.is_accepted());
            assert!(wait_until(|| osr_bead.compiled().is_some()));
            assert_eq!(osr_bead.osr_entry(5).map(|entry| call(entry, 0)), Some(200));
            use SubmitResult::{Accepted, AlreadyQueued, BrokerShutDown, QueueFull};
            for result in [Accepted, AlreadyQueued, QueueFull, BrokerShutDown] {
                assert_eq!(result.is_accepted(), result == Accepted);
            }
        }

        $(#[$gap])?
        #[test]
        fn tick_counts_calls_for_runtimes_with_their_own_counter() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(1_000_000));
            let bead = beadie.register(null_mut(), None);
            assert_eq!(bead.tick(), (1, BeadState::Interpreted));
            assert_eq!(bead.tick(), (2, BeadState::Interpreted));
            assert_eq!(bead.tick(), (3, BeadState::Interpreted));
            assert_eq!(bead.invocation_count(), 3);
            // The runtime decides on its own count, then submits.
            while bead.tick().0 < 50 {}
            assert_eq!(bead.invocation_count(), 50);
            assert!(beadie.submit(&bead, |_| addr(times_two)).is_accepted());
            assert!(wait_until(|| bead.compiled().is_some()));
        }

        // ---- Bead ----

        #[test]
        fn eager_install_and_fresh_bead_counters() {
            let bead = Bead::new(null_mut(), None);
            assert_eq!((bead.invocation_count(), bead.bailout_count(), bead.generation()), (0, 0, 0));
            assert!(bead.is_valid() && !bead.is_blacklisted() && !bead.reload_pending());
            assert_eq!(bead.state(), BeadState::Interpreted);
            assert_eq!(bead.compiled(), None);
            assert!(bead.eager_install(addr(times_three)));
            assert_eq!(bead.state(), BeadState::Compiled);
            assert_eq!(call(bead.compiled().unwrap(), 2), 6);

            let beadie = Beadie::with_policy(ThresholdPolicy::new(1_000_000));
            let registered = beadie.register(null_mut(), None);
            assert!(!registered.eager_install(null_mut()), "null is not code");
            assert!(registered.eager_install(addr(add_one)));
            let code = beadie.on_invoke(&registered, |_| addr(times_two)).expect("installed before the first call");
            assert_eq!(call(code, 1), 2);
        }

        #[test]
        fn bead_states() {
            assert_eq!(BeadState::try_from(0_u8), Ok(BeadState::Interpreted));
            assert_eq!(BeadState::try_from(1_u8), Ok(BeadState::Queued));
            assert_eq!(BeadState::try_from(2_u8), Ok(BeadState::Compiling));
            assert_eq!(BeadState::try_from(3_u8), Ok(BeadState::Compiled));
            assert_eq!(BeadState::try_from(4_u8), Ok(BeadState::Deopt));
            assert_eq!(BeadState::try_from(5_u8), Err(()));
            assert_eq!(BeadState::Compiled as u8, 3);

            let beadie = Beadie::with_policy(ThresholdPolicy::new(2));
            let bead = beadie.register(null_mut(), None);
            assert_eq!(bead.state(), BeadState::Interpreted);
            beadie.on_invoke(&bead, |_| addr(add_one));
            beadie.on_invoke(&bead, |_| addr(add_one));
            assert!(matches!(bead.state(), BeadState::Queued | BeadState::Compiling | BeadState::Compiled));
            assert!(wait_until(|| bead.state() == BeadState::Compiled));
            bead.invalidate();
            assert_eq!(bead.state(), BeadState::Deopt);
        }

        #[test]
        fn reload_outcomes() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(4));
            let bead = beadie.register(null_mut(), None);
            assert_eq!(bead.reload(), ReloadOutcome::AlreadyInterpreting);
            assert!(!ReloadOutcome::AlreadyInterpreting.will_recompile());
            invoke_until_compiled(&beadie, &bead, add_one);
            let outcome = bead.reload();
            assert_eq!(outcome, ReloadOutcome::WillRecompile);
            assert!(outcome.will_recompile());
            assert_eq!(bead.compiled(), None);
            assert_eq!(call(invoke_until_compiled(&beadie, &bead, times_two), 3), 6, "recompiled while still hot");
            for outcome in [ReloadOutcome::PendingCurrentCompile, ReloadOutcome::Reverted] {
                assert!(outcome.will_recompile());
            }
            bead.invalidate();
            assert_eq!(bead.reload(), ReloadOutcome::Dead);
            assert!(!ReloadOutcome::Dead.will_recompile());
        }

        // ---- Bailouts and deopt policies ----

        #[test]
        fn bailout_recompiles_with_always_recompile() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(5));
            let bead = beadie.register(null_mut(), None);
            let compiles = Arc::new(AtomicUsize::new(0));
            assert!(wait_until(|| beadie.on_invoke(&bead, counting(&compiles, add_one)).is_some()));
            let info = BailoutInfo { guard_id: 1, pc_offset: 8, generation: bead.generation() };
            let decision = bead.on_bailout(info, &AlwaysRecompilePolicy);
            assert_eq!(decision, DeoptDecision::Recompile);
            assert!(decision.allows_recompile() && !decision.is_terminal());
            assert_eq!(bead.bailout_count(), 1);
            assert_eq!(bead.state(), BeadState::Interpreted);
            assert_eq!(bead.compiled(), None);
            assert!(wait_until(|| beadie.on_invoke(&bead, counting(&compiles, times_two)).is_some()));
            assert_eq!(call(bead.compiled().unwrap(), 4), 8);
            assert_eq!(compiles.load(Ordering::SeqCst), 2);
        }

        #[test]
        fn bailouts_past_the_limit_blacklist() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(5));
            let bead = beadie.register(null_mut(), None);
            let compiles = Arc::new(AtomicUsize::new(0));
            let policy = ThresholdDeoptPolicy::new(1);
            let info = || BailoutInfo { guard_id: 2, pc_offset: 0, generation: 0 };
            assert!(wait_until(|| beadie.on_invoke(&bead, counting(&compiles, add_one)).is_some()));
            assert_eq!(bead.on_bailout(info(), &policy), DeoptDecision::Recompile);
            assert!(wait_until(|| beadie.on_invoke(&bead, counting(&compiles, add_one)).is_some()));
            let decision = bead.on_bailout(info(), &policy);
            assert_eq!(decision, DeoptDecision::Blacklist);
            assert!(decision.is_terminal() && !decision.allows_recompile());
            assert!(bead.is_blacklisted());
            assert_eq!(bead.bailout_count(), 2);
            assert_eq!(bead.state(), BeadState::Interpreted);
            for _ in 0..2_000 {
                assert_eq!(beadie.on_invoke(&bead, counting(&compiles, add_one)), None);
            }
            assert_eq!(compiles.load(Ordering::SeqCst), 2);
            assert_eq!(bead.reload(), ReloadOutcome::AlreadyInterpreting);
            assert!(bead.is_blacklisted(), "a reload keeps the blacklist");
        }

        #[test]
        fn blacklist_by_hand() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(3));
            let bead = beadie.register(null_mut(), None);
            invoke_until_compiled(&beadie, &bead, add_one);
            bead.blacklist();
            assert!(bead.is_blacklisted());
            assert_eq!(bead.compiled(), None);
            for _ in 0..100 {
                assert_eq!(beadie.on_invoke(&bead, |_| addr(add_one)), None);
            }
        }

        /// A host policy recording what it was asked.
        struct Recording {
            seen: Mutex<Vec<(usize, u32, u32, u64, u32)>>,
        }

        impl DeoptPolicy for Recording {
            fn on_bailout(&self, bead: &Bead, info: &BailoutInfo, bailout_count: u32) -> DeoptDecision {
                let bead = bead as *const Bead as usize;
                let entry = (bead, info.guard_id, info.pc_offset, info.generation, bailout_count);
                self.seen.lock().unwrap().push(entry);
                DeoptDecision::PauseRecompile { until_invocations: 1_000_000 }
            }
        }

        #[test]
        fn deopt_policies_decide() {
            let beadie = Beadie::with_policy(ThresholdPolicy::new(5));
            let bead = beadie.register(null_mut(), None);
            invoke_until_compiled(&beadie, &bead, add_one);

            let recording = Recording { seen: Mutex::default() };
            let info = BailoutInfo { guard_id: 4, pc_offset: 16, generation: 0 };
            let decision = bead.on_bailout(info.clone(), &recording);
            assert_eq!(decision, DeoptDecision::PauseRecompile { until_invocations: 1_000_000 });
            assert!(decision.allows_recompile() && !decision.is_terminal());
            assert_eq!(*recording.seen.lock().unwrap(), vec![(Arc::as_ptr(&bead) as usize, 4, 16, 0, 1)]);
            assert_eq!(bead.bailout_count(), 1);

            let backoff = ExponentialBackoffPolicy::new(50, 2);
            let count = bead.invocation_count();
            let pause_until = |until_invocations| DeoptDecision::PauseRecompile { until_invocations };
            assert_eq!(backoff.on_bailout(&bead, &info, 1), pause_until(count + 50));
            assert_eq!(backoff.on_bailout(&bead, &info, 2), pause_until(count + 100));
            assert_eq!(backoff.on_bailout(&bead, &info, 3), DeoptDecision::Blacklist);
            let literal = ExponentialBackoffPolicy { base_pause: 1, max_recompiles: 0 };
            assert_eq!(literal.on_bailout(&bead, &info, 1), DeoptDecision::Blacklist);
            let default = ExponentialBackoffPolicy::default();
            assert_eq!((default.base_pause, default.max_recompiles), (1_000, 4));

            let tiered = TieredDeoptPolicy::default();
            assert_eq!((tiered.tier1_recompile_limit, tiered.tier2_revert_limit), (3, 1));
            let optimised = BailoutInfo { generation: 1, ..info.clone() };
            assert_eq!(tiered.on_bailout(&bead, &info, 3), DeoptDecision::Recompile);
            assert_eq!(tiered.on_bailout(&bead, &info, 4), DeoptDecision::Blacklist);
            assert_eq!(tiered.on_bailout(&bead, &optimised, 1), DeoptDecision::RevertToTier1);
            assert_eq!(tiered.on_bailout(&bead, &optimised, 2), DeoptDecision::Blacklist);
            let literal = TieredDeoptPolicy { tier1_recompile_limit: 0, tier2_revert_limit: 5 };
            assert_eq!(literal.on_bailout(&bead, &info, 1), DeoptDecision::Blacklist);
            assert!(DeoptDecision::RevertToTier1.is_terminal() && !DeoptDecision::RevertToTier1.allows_recompile());

            let threshold = ThresholdDeoptPolicy { recompile_limit: 2 };
            assert_eq!(threshold.on_bailout(&bead, &info, 2), DeoptDecision::Recompile);
            assert_eq!(threshold.on_bailout(&bead, &info, 3), DeoptDecision::Blacklist);
            assert_eq!(ThresholdDeoptPolicy::default().recompile_limit, 3);
            assert_eq!(AlwaysRecompilePolicy.on_bailout(&bead, &info, 99), DeoptDecision::Recompile);
            let via_module: &dyn b::deopt::DeoptPolicy = &b::deopt::AlwaysRecompilePolicy;
            assert_eq!(via_module.on_bailout(&bead, &info, 1), b::deopt::DeoptDecision::Recompile);
        }

        // ---- Chain, Broker, struct literals ----

        #[test]
        fn chain_and_broker() {
            let chain = Chain::new();
            assert!(chain.is_empty());
            let bead = chain.push(null_mut(), None);
            let _kept = chain.push(null_mut(), None);
            assert_eq!(chain.len(), 2);
            let mut walked = 0;
            chain.walk(|_| walked += 1);
            assert_eq!(walked, 2);
            bead.invalidate();
            chain.prune();
            assert_eq!(chain.len(), 1);
            assert_eq!(Chain::default().len(), 0);

            let broker = Broker::with_capacity(8);
            let detached = Bead::new(null_mut(), None);
            assert!(broker.submit(Arc::clone(&detached), |_| addr(times_three)).is_accepted());
            assert!(wait_until(|| detached.compiled().is_some()));
            assert_eq!(call(detached.compiled().unwrap(), 3), 9);
            let osr = Bead::new(null_mut(), None);
            let result = broker.submit_osr(Arc::clone(&osr), |_| OsrCompileResult {
                entry: addr(add_one),
                osr: vec![OsrEntry { site: 1, code: addr(osr_a) }],
            });
            assert!(result.is_accepted());
            assert!(wait_until(|| osr.osr_entry(1).is_some()));
            assert_eq!(call(osr.osr_entry(1).unwrap(), 0), 100);
        }

        #[test]
        fn public_struct_literals() {
            let info = BailoutInfo { guard_id: 1, pc_offset: 2, generation: 3 };
            let copy = info.clone();
            assert_eq!((copy.guard_id, copy.pc_offset, copy.generation), (1, 2, 3));
            let entry = OsrEntry { site: 42, code: addr(osr_a) };
            let copied = entry;
            assert_eq!((entry.site, copied.code), (42, addr(osr_a)));
            let result = OsrCompileResult { entry: addr(add_one), osr: vec![entry] };
            assert_eq!((result.entry, result.osr.len()), (addr(add_one), 1));
            let build = OsrBuild { def: 5_u32, osr: vec![entry] };
            assert_eq!((build.def, build.osr[0].site), (5, 42));
            let policy = TieredPolicy { tier1_threshold: 1, tier2_threshold: 2 };
            assert_eq!(policy.tier(2), Some(2));
            let swap = SwapResult { old_code: null_mut(), new_generation: 7 };
            assert_eq!(swap.new_generation, 7);
            let state = BeadState::Queued;
            let decision = DeoptDecision::PauseRecompile { until_invocations: 9 };
            assert!(format!("{state:?} {decision:?} {entry:?} {info:?}").contains("Queued"));
        }
    };
}

/// The suite on beadie 0.3 itself.
mod on_beadie {
    use beadie as b;
    suite!();
}

/// The same suite on kiln-std's compat layer.
mod on_kiln {
    use kiln_std::compat as b;
    suite!();
}

/// Where kiln deliberately differs from beadie: each test says how, and why.
mod kiln_only {
    use std::ptr::null_mut;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use kiln_std::compat::{
        BackendAdapter, BailoutInfo, Bead, BeadState, Beadie, CompileError, DeoptDecision, ExponentialBackoffPolicy,
        HotnessPolicy, JitBackend, ThresholdPolicy, TieredAdapter,
    };

    use crate::{Native, add_one, addr, call, tier_of, tier0, tier1, tier2, times_two, wait_until};

    fn tiers(thresholds: &[u32]) -> Vec<Box<dyn HotnessPolicy>> {
        thresholds.iter().map(|&t| Box::new(ThresholdPolicy::new(t)) as Box<dyn HotnessPolicy>).collect()
    }

    fn by_tier(tier: usize, _bead: &Arc<Bead>) -> *mut () {
        [tier0 as Native, tier1, tier2].get(tier).map_or(null_mut(), |&f| addr(f))
    }

    // beadie installs a null compile result as a failed install and
    // invalidates the bead (Deopt, on_invalidate runs, `prune` drops it).
    // kiln treats null as a failed compile: the bead stays valid and
    // interpreted, and the failure policy decides when to try again.
    #[test]
    fn null_compile_result_is_a_failed_compile() {
        let invalidated = Arc::new(AtomicUsize::new(0));
        let hook = Arc::clone(&invalidated);
        let beadie = Beadie::with_policy(ThresholdPolicy::new(1));
        let bead = beadie.register(
            null_mut(),
            Some(Box::new(move || {
                hook.fetch_add(1, Ordering::SeqCst);
            })),
        );
        assert_eq!(beadie.on_invoke(&bead, |_| null_mut()), None);
        assert!(wait_until(|| beadie.stats().failures == 1));
        assert!(bead.is_valid());
        assert_eq!(bead.state(), BeadState::Interpreted);
        assert_eq!(bead.compiled(), None);
        assert_eq!(invalidated.load(Ordering::SeqCst), 0);
        beadie.prune();
        assert_eq!(beadie.chain_len(), 1);
    }

    struct Refusing;

    impl JitBackend for Refusing {
        type FunctionDef = ();
        type Error = CompileError;
        fn compile(&self, _bead: &Arc<Bead>, _def: ()) -> Result<*mut (), CompileError> {
            Err(CompileError::new("unsupported opcode"))
        }
    }

    // beadie prints a backend error and installs null, which invalidates
    // the bead. kiln turns it into `CompileFailure::Backend` (logged with
    // the message): the bead stays valid and may be retried.
    #[test]
    fn backend_error_is_a_failed_compile() {
        let adapter = BackendAdapter::with_policy(Refusing, ThresholdPolicy::new(1));
        let bound = adapter.register(null_mut(), None);
        assert_eq!(adapter.on_invoke(&bound, |_| ()), None);
        assert!(wait_until(|| adapter.beadie().stats().failures == 1));
        assert!(bound.bead().is_valid());
        assert_eq!(bound.bead().state(), BeadState::Interpreted);
        // A backend that is not `Clone` still gives a `Clone` bound bead
        // (beadie's derive would ask `Refusing: Clone`).
        let copy = bound.clone();
        assert!(Arc::ptr_eq(copy.bead(), bound.bead()));
    }

    /// Records what kiln hands back.
    #[derive(Default)]
    struct Releasing {
        released: Mutex<Vec<usize>>,
    }

    impl JitBackend for Releasing {
        type FunctionDef = Native;
        type Error = CompileError;
        fn compile(&self, _bead: &Arc<Bead>, def: Native) -> Result<*mut (), CompileError> {
            Ok(addr(def))
        }
        fn release(&self, code: *mut ()) {
            self.released.lock().unwrap().push(code as usize);
        }
    }

    // beadie never frees code. kiln's `JitBackend::release` (an extra
    // provided method) gets each compiled entry back once kiln retired it
    // and quiescence was declared.
    #[test]
    fn backend_gets_retired_code_back_after_quiescence() {
        let adapter = BackendAdapter::with_policy(Releasing::default(), ThresholdPolicy::new(2));
        let bound = adapter.register(null_mut(), None);
        assert!(wait_until(|| adapter.on_invoke(&bound, |_| add_one as Native).is_some()));
        assert!(bound.swap_compiled(addr(times_two)).is_some());
        assert!(adapter.backend().released.lock().unwrap().is_empty(), "no quiescence declared yet");
        assert!(wait_until(|| {
            adapter.beadie().quiesce();
            !adapter.backend().released.lock().unwrap().is_empty()
        }));
        assert_eq!(*adapter.backend().released.lock().unwrap(), vec![addr(add_one) as usize]);
    }

    // beadie's tiered adapter ticks on every call, compiled or not, and
    // bumps the generation on every tier-up (it swaps). kiln counts while
    // lower-tier code runs, then takes the one-load path at the top tier,
    // and publishes a tier-up without a swap (same generation).
    #[test]
    fn tiered_top_tier_stops_counting_and_keeps_the_generation() {
        let tiered = TieredAdapter::new(tiers(&[4, 20, 60]));
        let bound = tiered.register(null_mut(), None);
        let mut warm_counted = false;
        assert!(wait_until(|| {
            let before = bound.bead().invocation_count();
            if tiered.on_invoke(&bound, by_tier).is_some_and(|code| tier_of(code) < 2) {
                warm_counted |= bound.bead().invocation_count() > before;
            }
            bound.current_tier() == Some(2)
        }));
        assert!(warm_counted, "lower-tier code keeps counting toward the next tier");
        assert_eq!(bound.generation(), 0, "tier-ups are publications, not swaps");
        let counted = bound.bead().invocation_count();
        for _ in 0..10_000 {
            assert_eq!(tier_of(tiered.on_invoke(&bound, by_tier).unwrap()), 2);
        }
        assert_eq!(bound.bead().invocation_count(), counted);
    }

    // beadie invalidates a bead whose tier-0 compile returned null. kiln
    // counts a failed compile and keeps the bead interpreting, valid.
    #[test]
    fn tiered_null_baseline_is_a_failed_compile() {
        let tiered = TieredAdapter::new(tiers(&[2, 10]));
        let bound = tiered.register(null_mut(), None);
        assert!(wait_until(|| {
            tiered.on_invoke(&bound, |_, _| null_mut());
            tiered.beadie().stats().failures >= 1
        }));
        assert!(bound.bead().is_valid());
        assert_eq!(bound.current_tier(), None);
    }

    // After `reset_to_interpreter` beadie keeps its generation, so its
    // tiered adapter reports the old tier and never climbs again. kiln
    // resets the tier cap and a still-hot bead climbs straight back (its
    // ladder promotes to the highest tier whose policy is met).
    #[test]
    fn tiered_reset_climbs_back() {
        let tiered = TieredAdapter::new(tiers(&[3, 30]));
        let bound = tiered.register(null_mut(), None);
        assert!(wait_until(|| {
            tiered.on_invoke(&bound, by_tier);
            bound.current_tier() == Some(1)
        }));
        bound.reset_to_interpreter();
        assert_eq!(bound.current_tier(), None);
        assert!(wait_until(|| tiered.on_invoke(&bound, by_tier).is_some_and(|code| tier_of(code) == 1)));
    }

    // beadie leaves compiled code running after a `PauseRecompile`
    // bailout (it only records the pause). kiln retires the code that
    // bailed and interprets until the pause is over, then recompiles.
    #[test]
    fn pause_recompile_retires_the_code_that_bailed() {
        let beadie = Beadie::with_policy(ThresholdPolicy::new(2));
        let bead = beadie.register(null_mut(), None);
        assert!(wait_until(|| beadie.on_invoke(&bead, |_| addr(add_one)).is_some()));
        let info = BailoutInfo { guard_id: 0, pc_offset: 0, generation: 0 };
        let decision = bead.on_bailout(info, &ExponentialBackoffPolicy::new(100, 4));
        let DeoptDecision::PauseRecompile { until_invocations } = decision else { panic!("{decision:?}") };
        assert_eq!(bead.compiled(), None);
        while bead.invocation_count() + 1 < until_invocations {
            assert_eq!(beadie.on_invoke(&bead, |_| addr(times_two)), None);
        }
        assert!(wait_until(|| beadie.on_invoke(&bead, |_| addr(times_two)).is_some()));
        assert_eq!(call(bead.compiled().unwrap(), 2), 4);
    }
}
