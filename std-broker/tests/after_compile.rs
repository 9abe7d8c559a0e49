//! `JitBackend::after_compile`: once per compile, after kiln has published
//! or refused the result — never inside the compile — so a backend may call
//! back into kiln from it (a code-memory budget evicting another bead).
//!
//! The recording backend writes an exact trace. Its `after_compile` notes
//! whether a compile was still running on that thread and what the bead
//! had installed: code is published only after kiln-core's compile has
//! returned, so installed code in the hook proves the hook ran outside it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_std::{BackendAdapter, Bead, BeadState, BeadieConfig, Budget, CompileError, JitBackend, ThresholdPolicy};

extern "C" fn forty_two() -> i64 {
    42
}

fn native() -> *mut () {
    forty_two as extern "C" fn() -> i64 as *mut ()
}

thread_local! {
    /// Set while this thread runs the backend's `compile`.
    static IN_COMPILE: Cell<bool> = const { Cell::new(false) };
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Compile {
        bead: usize,
    },
    /// `installed`: the bead's compiled entry as the hook saw it.
    AfterCompile {
        bead: usize,
        inside_compile: bool,
        installed: Option<usize>,
    },
}

/// `Def::Code` compiles to `forty_two`, `Def::Refuse` fails, `Def::Panic`
/// panics. With `evict_previous`, each hook evicts the bead compiled before
/// (a budget of one function, as kiln-cranelift's does it).
#[derive(Default)]
struct Recording {
    trace: Mutex<Vec<Event>>,
    evict_previous: AtomicBool,
    previous: Mutex<Option<Arc<Bead>>>,
    panic_in_hook: AtomicBool,
}

enum Def {
    Code,
    Refuse,
    Panic,
}

fn id(bead: &Arc<Bead>) -> usize {
    Arc::as_ptr(bead) as usize
}

impl JitBackend for Recording {
    type FunctionDef = Def;
    type Error = CompileError;

    fn compile(&self, bead: &Arc<Bead>, def: Def) -> Result<*mut (), CompileError> {
        self.trace.lock().unwrap().push(Event::Compile { bead: id(bead) });
        IN_COMPILE.set(true);
        let result = match def {
            Def::Code => Ok(native()),
            Def::Refuse => Err(CompileError::new("refused")),
            Def::Panic => {
                IN_COMPILE.set(false);
                panic!("compile exploded")
            }
        };
        IN_COMPILE.set(false);
        result
    }

    fn after_compile(&self, bead: &Arc<Bead>) {
        let installed = bead.compiled().map(|entry| entry as usize);
        let inside_compile = IN_COMPILE.get();
        self.trace.lock().unwrap().push(Event::AfterCompile { bead: id(bead), inside_compile, installed });
        if self.evict_previous.load(Ordering::Relaxed) {
            let previous = self.previous.lock().unwrap().replace(Arc::clone(bead));
            if let Some(previous) = previous {
                // Back into kiln: what a compile must not do.
                assert!(previous.evict(100));
            }
        }
        if self.panic_in_hook.load(Ordering::Relaxed) {
            panic!("hook exploded");
        }
    }
}

/// An adapter without worker threads: the test pumps.
fn pumped() -> BackendAdapter<Recording> {
    let config = BeadieConfig { workers: 0, ..BeadieConfig::default() };
    BackendAdapter::with_config(Recording::default(), ThresholdPolicy::new(1), config)
}

fn trace(adapter: &BackendAdapter<Recording>) -> Vec<Event> {
    adapter.backend().trace.lock().unwrap().clone()
}

#[test]
fn the_hook_runs_once_after_the_code_is_published() {
    let adapter = pumped();
    let bound = adapter.register(std::ptr::null_mut(), None);
    assert_eq!(adapter.on_invoke(&bound, |_| Def::Code), None);
    adapter.beadie().pump(Budget::unlimited());
    let bead = id(bound.bead());
    let expected = [
        Event::Compile { bead },
        Event::AfterCompile { bead, inside_compile: false, installed: Some(native() as usize) },
    ];
    assert_eq!(trace(&adapter), expected);
    adapter.beadie().pump(Budget::unlimited());
    assert_eq!(trace(&adapter), expected, "once per compile");
}

#[test]
fn the_hook_runs_after_a_failed_or_panicking_compile() {
    let adapter = pumped();
    let refused = adapter.register(std::ptr::null_mut(), None);
    let exploding = adapter.register(std::ptr::null_mut(), None);
    adapter.on_invoke(&refused, |_| Def::Refuse);
    adapter.on_invoke(&exploding, |_| Def::Panic);
    adapter.beadie().pump(Budget::unlimited());
    let (refused, exploding) = (id(refused.bead()), id(exploding.bead()));
    assert_eq!(
        trace(&adapter),
        [
            Event::Compile { bead: refused },
            Event::Compile { bead: exploding },
            Event::AfterCompile { bead: refused, inside_compile: false, installed: None },
            Event::AfterCompile { bead: exploding, inside_compile: false, installed: None },
        ]
    );
    assert_eq!(adapter.beadie().stats().failures, 2);
    assert_eq!(adapter.beadie().host_panics(), 1, "the compile's panic, caught");
}

#[test]
fn the_hook_may_evict_another_bead() {
    let adapter = pumped();
    adapter.backend().evict_previous.store(true, Ordering::Relaxed);
    let first = adapter.register(std::ptr::null_mut(), None);
    let second = adapter.register(std::ptr::null_mut(), None);
    adapter.on_invoke(&first, |_| Def::Code);
    adapter.beadie().pump(Budget::unlimited());
    assert_eq!(first.bead().compiled(), Some(native()));
    adapter.on_invoke(&second, |_| Def::Code);
    adapter.beadie().pump(Budget::unlimited());
    assert_eq!(second.bead().compiled(), Some(native()), "the new code stays");
    assert_eq!(first.bead().compiled(), None, "the previous bead was evicted");
    assert_eq!(first.bead().state(), BeadState::Interpreted);
    assert_eq!(first.bead().bailout_count(), 0);
    assert_eq!(adapter.beadie().stats().failures, 0);
}

#[test]
fn a_panicking_hook_is_caught_and_counted() {
    let adapter = pumped();
    adapter.backend().panic_in_hook.store(true, Ordering::Relaxed);
    let bound = adapter.register(std::ptr::null_mut(), None);
    adapter.on_invoke(&bound, |_| Def::Code);
    adapter.beadie().pump(Budget::unlimited());
    assert_eq!(adapter.beadie().host_panics(), 1);
    assert_eq!(bound.bead().compiled(), Some(native()), "the published code stays");
}

#[test]
fn on_a_broker_thread_the_hook_runs_after_the_publish_too() {
    let adapter = BackendAdapter::with_policy(Recording::default(), ThresholdPolicy::new(1));
    let bound = adapter.register(std::ptr::null_mut(), None);
    adapter.on_invoke(&bound, |_| Def::Code);
    let deadline = Instant::now() + Duration::from_secs(5);
    while trace(&adapter).len() < 2 {
        assert!(Instant::now() < deadline, "the hook never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    let bead = id(bound.bead());
    assert_eq!(
        trace(&adapter),
        [
            Event::Compile { bead },
            Event::AfterCompile { bead, inside_compile: false, installed: Some(native() as usize) },
        ]
    );
}

#[test]
fn an_eager_compile_runs_the_hook_after_the_install_or_the_error() {
    let adapter = pumped();
    let bound = adapter.register(std::ptr::null_mut(), None);
    bound.compile(Def::Refuse).unwrap_err();
    bound.compile(Def::Code).unwrap();
    let bead = id(bound.bead());
    assert_eq!(
        trace(&adapter),
        [
            Event::Compile { bead },
            Event::AfterCompile { bead, inside_compile: false, installed: None },
            Event::Compile { bead },
            Event::AfterCompile { bead, inside_compile: false, installed: Some(native() as usize) },
        ]
    );
}
