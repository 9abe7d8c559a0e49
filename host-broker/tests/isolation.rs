//! Host code called by the job-system pump cannot unwind into kiln, the
//! interpreter or the job system: a `JobSystem::spawn` that panics (reached
//! from `WakeHook::wake`, i.e. from an interpreter's call) and a compiler whose
//! `release` panics on a stale result are caught and counted
//! (`PumpStats::host_panics`), and the pump keeps serving.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use kiln_core::{BeadState, CodeHandle, CompileRequest, Compiled, Compiler, WakeHook};
use kiln_host::{JobSystem, JobSystemPump, PumpConfig};
use support::{Kiln, Manual, ThreadJit, beads, broker};

/// A job system whose `spawn` panics the first `panics` times.
#[derive(Clone, Default)]
struct Flaky {
    manual: Manual,
    panics: Arc<AtomicUsize>,
}

impl JobSystem for Flaky {
    fn spawn<F: FnOnce() + Send + 'static>(&self, task: F) {
        if self.panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("spawn exploded");
        }
        self.manual.spawn(task);
    }
}

#[test]
fn a_panicking_spawn_does_not_unwind_into_the_interpreters_call() {
    let flaky = Flaky { panics: Arc::new(AtomicUsize::new(1)), ..Flaky::default() };
    let pump = JobSystemPump::new(flaky.clone(), PumpConfig::default());
    let broker = Arc::new(broker(1, &pump));
    pump.attach_arc(&broker, ThreadJit::default()).unwrap();
    let beads = beads(1);

    // The promotion wakes the pump, whose spawn panics: caught there.
    assert_eq!(broker.on_invoke(&&beads[0]), None);
    let stats = pump.stats();
    assert_eq!((stats.host_panics, stats.in_flight), (1, 0), "the slot of the unspawned task is free");
    assert_eq!(beads[0].state(), BeadState::Queued);

    // The next wake-up spawns, and the job compiles.
    pump.wake();
    assert_eq!(flaky.manual.run_all(), 1);
    assert_eq!(beads[0].state(), BeadState::Compiled(0));
    assert_eq!(pump.stats().host_panics, 1);
    pump.stop().unwrap();
}

/// Reloads the bead while compiling it (so the result is stale and goes to
/// `release`), and panics in `release`.
#[derive(Clone, Default)]
struct StaleJit {
    broker: Arc<OnceLock<Arc<Kiln<Manual>>>>,
    released: Arc<AtomicUsize>,
}

impl Compiler<&'static kiln_core::Bead> for StaleJit {
    type Error = ();

    fn compile(&mut self, request: &CompileRequest<'_, &'static kiln_core::Bead>) -> Result<Compiled, ()> {
        self.broker.get().unwrap().reload(request.bead).unwrap();
        Compiled::new(std::ptr::without_provenance_mut(0x1000), CodeHandle::from_raw(1).unwrap()).map_err(|_| ())
    }

    fn release(&mut self, _code: CodeHandle) {
        self.released.fetch_add(1, Ordering::SeqCst);
        panic!("release exploded");
    }
}

#[test]
fn a_panicking_release_of_a_stale_result_stays_in_the_task() {
    let manual = Manual::default();
    let pump = JobSystemPump::new(manual.clone(), PumpConfig::default());
    let broker = Arc::new(broker(1, &pump));
    let jit = StaleJit::default();
    assert!(jit.broker.set(Arc::clone(&broker)).is_ok());
    pump.attach_arc(&broker, jit.clone()).unwrap();
    let beads = beads(2);

    broker.on_invoke(&&beads[0]);
    manual.run_all();
    assert_eq!(jit.released.load(Ordering::SeqCst), 1);
    let stats = pump.stats();
    assert_eq!((stats.ran, stats.host_panics, stats.in_flight), (1, 1, 0));
    // The pump keeps serving: the next promotion runs too.
    broker.on_invoke(&&beads[1]);
    manual.run_all();
    assert_eq!(pump.stats().ran, 2);
    pump.stop().unwrap();
}
