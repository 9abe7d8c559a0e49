//! kiln-host's bevy adapter where bevy_tasks has no threads: a wake-up
//! never compiles inside `spawn` (bevy_tasks polls new tasks there), the
//! compile happens when the main thread ticks, and `stop` ends by ticking.
//! Exits non-zero (a failed assertion) if any of that breaks.

use std::sync::Arc;

use bevy_tasks::TaskPool;
use kiln_core::{
    AlwaysRecompilePolicy, Bead, BeadState, Broker, CodeHandle, CompileRequest, Compiled, Compiler, NoEvents,
    NullEntry, ThresholdPolicy,
};
use kiln_host::{BevyJobSystem, BevyPump, PumpConfig};

#[derive(Clone, Debug)]
struct Jit;

impl Compiler<&'static Bead> for Jit {
    type Error = NullEntry;

    fn compile(&mut self, _request: &CompileRequest<'_, &'static Bead>) -> Result<Compiled, NullEntry> {
        Compiled::new(core::ptr::dangling_mut(), CodeHandle::from_raw(1).expect("non-zero"))
    }

    fn release(&mut self, _code: CodeHandle) {}
}

type Kiln = Broker<&'static Bead, ThresholdPolicy, AlwaysRecompilePolicy, BevyPump>;

static HOT: Bead = Bead::new(core::ptr::null_mut());
static LATE: Bead = Bead::new(core::ptr::null_mut());

fn main() {
    let pool = Arc::new(TaskPool::new());
    assert_eq!(pool.thread_num(), 1, "this check needs bevy_tasks without `multi_threaded`");
    let pump = BevyPump::new(BevyJobSystem::new(Arc::clone(&pool)), PumpConfig::default());
    let broker: &'static Kiln =
        Box::leak(Box::new(Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, pump.clone(), NoEvents)));
    pump.attach(broker, Jit).expect("first attach");

    // The promotion spawns a task, and bevy_tasks polls it inside `spawn`:
    // the gate must keep it from compiling on the interpreter's call.
    broker.on_invoke(&&HOT);
    assert_eq!(HOT.state(), BeadState::Queued, "compiled inside WakeHook::wake");
    assert_eq!(pump.in_flight(), 1);

    // The host's tick (bevy: tick_global_task_pools_on_main_thread) runs it.
    pool.with_local_executor(|executor| while executor.try_tick() {});
    assert_eq!(HOT.state(), BeadState::Compiled(0));
    assert_eq!(pump.in_flight(), 0);

    // A task still parked when the host stops: `stop` ticks it to its end.
    broker.on_invoke(&&LATE);
    assert_eq!(pump.in_flight(), 1);
    pump.stop().expect("stop ticks the executor while it waits");
    assert_eq!(LATE.state(), BeadState::Queued, "a task that starts after stop compiles nothing");
    assert_eq!(broker.cancel_queued(), 1);
    println!("bevy without threads: compiled on tick, never inside wake; stop ended by ticking");
}
