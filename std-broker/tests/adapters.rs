//! The adapters do what the broker does: compile factories attached to the
//! bead once (calls pass no closure), fallible factories, typed entries.
//! Pumped by the test (`workers: 0`), so every outcome is deterministic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_std::{
    BackendAdapter, Bead, BeadState, BeadieConfig, Budget, CompileError, JitBackend, ThresholdPolicy, TypedBound,
};

extern "C" fn double(x: i64) -> i64 {
    x * 2
}

extern "C" fn triple(x: i64) -> i64 {
    x * 3
}

type Unary = extern "C" fn(i64) -> i64;

/// "Compiles" a definition that is already native code; records releases.
#[derive(Default)]
struct Native {
    released: std::sync::Mutex<Vec<usize>>,
}

impl JitBackend for Native {
    type FunctionDef = Unary;
    type Error = CompileError;

    fn compile(&self, _bead: &Arc<Bead>, def: Unary) -> Result<*mut (), CompileError> {
        Ok(def as *mut ())
    }

    fn release(&self, code: *mut ()) {
        self.released.lock().unwrap().push(code.addr());
    }
}

/// An adapter whose compiles run only when the test pumps; promotes on the
/// `threshold`th call.
fn adapter(threshold: u32) -> BackendAdapter<Native> {
    let config = BeadieConfig { workers: 0, ..BeadieConfig::default() };
    BackendAdapter::with_config(Native::default(), ThresholdPolicy::new(threshold), config)
}

fn pump(adapter: &BackendAdapter<Native>) {
    adapter.beadie().pump(Budget::unlimited());
}

#[test]
fn an_attached_factory_compiles_without_a_closure_per_call() {
    let adapter = adapter(3);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let bound = adapter.register_with("double", std::ptr::null_mut(), move |_bead| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok::<Unary, CompileError>(double)
    });
    assert_eq!(bound.bead().name().as_deref(), Some("double"));
    for _ in 0..3 {
        assert_eq!(adapter.on_invoke_attached(&bound), None);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the factory runs on the compiling thread, not in the call");
    pump(&adapter);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(adapter.on_invoke_attached(&bound), Some(double as Unary as *mut ()));

    // A reload compiles again with the same factory; the old code goes
    // back to the backend after quiescence.
    bound.reload();
    for _ in 0..3 {
        adapter.on_invoke_attached(&bound);
    }
    pump(&adapter);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    assert_eq!(*adapter.backend().released.lock().unwrap(), vec![(double as Unary as *mut ()).addr()]);
}

#[test]
fn a_factory_error_is_a_failed_compile_with_its_reason() {
    let adapter = adapter(1);
    let bound = adapter.register_with("broken", std::ptr::null_mut(), |_bead| Err::<Unary, _>("no bytecode"));
    assert_eq!(adapter.on_invoke_attached(&bound), None);
    pump(&adapter);
    assert_eq!(adapter.beadie().stats().failures, 1);
    assert_eq!(bound.bead().compiled(), None);
    assert!(bound.bead().is_valid());
    assert_ne!(bound.bead().state(), BeadState::Compiled);
    assert!(adapter.backend().released.lock().unwrap().is_empty());
}

#[test]
fn try_on_invoke_and_try_on_backedge_take_fallible_factories() {
    let adapter = adapter(1);
    let bound = adapter.register(std::ptr::null_mut(), None);
    assert_eq!(adapter.try_on_invoke(&bound, |_| Err::<Unary, _>(CompileError::new("not yet"))), None);
    pump(&adapter);
    assert_eq!((adapter.beadie().stats().failures, bound.bead().compiled()), (1, None));

    let looping = adapter.register(std::ptr::null_mut(), None);
    let mut entry = None;
    for _ in 0..1_000 {
        entry = entry.or(adapter.try_on_backedge(&looping, 4, |_| Ok::<Unary, CompileError>(triple)));
        pump(&adapter);
        if looping.bead().compiled().is_some() {
            break;
        }
    }
    assert_eq!(looping.bead().compiled(), Some(triple as Unary as *mut ()), "the back-edges compiled it");
}

#[test]
fn a_call_without_an_attached_factory_fails_its_compile_and_attach_later_fixes_it() {
    let adapter = adapter(1);
    let bound = adapter.register_named("late", std::ptr::null_mut(), None);
    assert_eq!(bound.bead().name().as_deref(), Some("late"));
    assert_eq!(adapter.on_invoke_attached(&bound), None);
    pump(&adapter);
    assert_eq!(adapter.beadie().stats().failures, 1, "no factory: a failed compile, not a panic");
    assert_eq!(bound.bead().compiled(), None);

    adapter.attach(&bound, |_bead| Ok::<Unary, CompileError>(triple));
    bound.reload();
    assert_eq!(adapter.on_invoke_attached(&bound), None);
    pump(&adapter);
    assert_eq!(adapter.on_invoke_attached(&bound), Some(triple as Unary as *mut ()));
}

#[test]
fn back_edges_compile_through_the_attached_factory() {
    let adapter = adapter(1);
    let bound = adapter.register_with("loop", std::ptr::null_mut(), |_| Ok::<Unary, CompileError>(double));
    for _ in 0..1_000 {
        adapter.on_backedge_attached(&bound, 7);
        pump(&adapter);
        if bound.bead().compiled().is_some() {
            break;
        }
    }
    assert_eq!(bound.bead().compiled(), Some(double as Unary as *mut ()));
    assert_eq!(adapter.on_backedge_attached(&bound, 7), None, "no OSR entry for site 7 was published");
}

#[test]
fn a_typed_bead_hands_out_callable_entries() {
    let adapter = adapter(2);
    let bound = adapter.register_with("double", std::ptr::null_mut(), |_| Ok::<Unary, CompileError>(double));
    // SAFETY: `Native` compiles every definition of this bead to its own
    // `Unary`, and nothing is swapped in.
    let typed: TypedBound<Native, Unary> = unsafe { bound.typed() };
    assert!(typed.on_invoke().is_none() && typed.on_invoke().is_none());
    assert!(typed.compiled().is_none());
    pump(&adapter);
    let native = typed.on_invoke().expect("compiled");
    assert_eq!(native(21), 42);
    assert_eq!(typed.compiled().map(|f| f(5)), Some(10));
    assert_eq!(typed.bound().bead().name().as_deref(), Some("double"));
}

#[test]
fn each_tier_compiles_with_its_backend_and_its_code_goes_back_to_it() {
    use kiln_std::{HotnessPolicy, TierBackend, TieredAdapter, TieredDeoptPolicy};
    let (baseline, optimising) = (Arc::new(Native::default()), Arc::new(Native::default()));
    let policies: Vec<Box<dyn HotnessPolicy>> =
        vec![Box::new(ThresholdPolicy::new(2)), Box::new(ThresholdPolicy::new(4))];
    let backends = vec![
        TierBackend::shared(Arc::clone(&baseline), |_bead| Ok::<Unary, CompileError>(double)),
        TierBackend::shared(Arc::clone(&optimising), |_bead| Ok::<Unary, CompileError>(triple)),
    ];
    let config = BeadieConfig { workers: 0, ..BeadieConfig::default() };
    let adapter = TieredAdapter::with_backends(policies, backends, TieredDeoptPolicy::default(), config);
    let bound = adapter.register_named("scale", std::ptr::null_mut(), None);
    let mut calls = 0;
    while bound.current_tier() != Some(1) && calls < 1_000 {
        adapter.on_invoke_backends(&bound);
        adapter.beadie().pump(Budget::unlimited());
        calls += 1;
    }
    assert_eq!(bound.current_tier(), Some(1), "climbed both tiers in {calls} calls");
    assert_eq!(adapter.on_invoke_backends(&bound), Some(triple as Unary as *mut ()));

    // The tier-up retired tier 0's code; a reload retires tier 1's. Each
    // goes back to the backend that compiled it once quiescence is declared.
    bound.reset_to_interpreter();
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    assert_eq!(*baseline.released.lock().unwrap(), vec![(double as Unary as *mut ()).addr()]);
    assert_eq!(*optimising.released.lock().unwrap(), vec![(triple as Unary as *mut ()).addr()]);
    assert_eq!(adapter.beadie().code_counts(), (2, 2));
}

#[test]
#[should_panic(expected = "one backend per tier")]
fn tiers_without_a_backend_each_are_refused() {
    use kiln_std::{HotnessPolicy, TierBackend, TieredAdapter, TieredDeoptPolicy};
    let policies: Vec<Box<dyn HotnessPolicy>> =
        vec![Box::new(ThresholdPolicy::new(2)), Box::new(ThresholdPolicy::new(4))];
    let backends = vec![TierBackend::new(Native::default(), |_bead| Ok::<Unary, CompileError>(double))];
    TieredAdapter::with_backends(policies, backends, TieredDeoptPolicy::default(), BeadieConfig::default());
}

#[test]
fn beadie_takes_fallible_compiles_too() {
    use kiln_std::{Beadie, NativeCode};
    let config = BeadieConfig { workers: 0, ..BeadieConfig::default() };
    let beadie = Beadie::with_config(ThresholdPolicy::new(1), config);
    let failing = beadie.register_named("failing", std::ptr::null_mut(), None);
    assert_eq!(beadie.try_on_invoke_code(&failing, |_| Err::<NativeCode, _>("verifier said no")), None);
    beadie.pump(Budget::unlimited());
    assert_eq!((beadie.stats().failures, failing.compiled()), (1, None));

    let working = beadie.register(std::ptr::null_mut(), None);
    let code = || Ok::<_, CompileError>(NativeCode::new(triple as Unary as *mut ()));
    beadie.try_on_invoke_code(&working, move |_| code());
    beadie.pump(Budget::unlimited());
    assert_eq!(working.compiled(), Some(triple as Unary as *mut ()));

    let looping = beadie.register(std::ptr::null_mut(), None);
    for _ in 0..1_000 {
        beadie
            .try_on_backedge_code(&looping, 2, |_| Ok::<_, CompileError>(NativeCode::new(double as Unary as *mut ())));
        beadie.pump(Budget::unlimited());
        if looping.compiled().is_some() {
            break;
        }
    }
    assert_eq!(looping.compiled(), Some(double as Unary as *mut ()));
}
