//! rayon as a [`JobSystem`]: pump tasks are `rayon::spawn`ed.
//!
//! Design note. rayon's `spawn` is fire-and-forget and never runs the job
//! inline, which is all [`JobSystem`] asks; rayon aborts the process when a
//! spawned job panics, which is why the pump catches panics around each
//! compile. The user-facing description is on [`RayonJobSystem`].

use rayon::ThreadPool;

use crate::adapter::JobSystemPump;
use crate::job_system::JobSystem;
use crate::sync::Arc;

/// Spawns pump tasks on rayon's global pool or on a given pool.
///
/// A pump task is a fire-and-forget job on rayon's global pool, or on a
/// pool the host built, so compiles share the workers the host's parallel
/// iterators use and never need a thread of their own. rayon aborts the
/// process if a spawned job panics; [`JobSystemPump`]
/// catches panics around each compile, so a panicking compiler is a failed
/// compile, not an abort.
///
/// # Example
///
/// ```
/// use kiln_core::*;
/// use kiln_host::{PumpConfig, RayonJobSystem, RayonPump, SharedCompiler};
/// # #[derive(Clone)]
/// # struct Jit;
/// # impl<'a> Compiler<&'a Bead> for Jit {
/// #     type Error = NullEntry;
/// #     fn compile(&mut self, _: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, NullEntry> {
/// #         Compiled::new(core::ptr::dangling_mut(), CodeHandle::from_raw(1).unwrap())
/// #     }
/// #     fn release(&mut self, _: CodeHandle) {}
/// # }
///
/// // `Jit` is the host's kiln-core `Compiler`: a cheap `Clone + Send + Sync`
/// // handle is cloned into every task; anything else goes in a SharedCompiler.
/// type Kiln = Broker<&'static Bead, ThresholdPolicy, AlwaysRecompilePolicy, RayonPump>;
///
/// let pump = RayonPump::new(RayonJobSystem::global(), PumpConfig::default().max_in_flight(2));
/// let broker: &'static Kiln = Box::leak(Box::new(Broker::new(
///     ThresholdPolicy::new(100), AlwaysRecompilePolicy, pump.clone(), NoEvents)));
/// pump.attach(broker, SharedCompiler::new(Jit)).unwrap();
/// // ... the interpreter calls broker.on_invoke(&bead); compiles run on rayon ...
/// pump.stop().unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct RayonJobSystem {
    pool: Option<Arc<ThreadPool>>,
}

impl RayonJobSystem {
    /// rayon's global pool (`rayon::spawn`).
    pub fn global() -> Self {
        Self { pool: None }
    }

    /// A pool the host built (`ThreadPool::spawn`).
    pub fn new(pool: Arc<ThreadPool>) -> Self {
        Self { pool: Some(pool) }
    }
}

impl JobSystem for RayonJobSystem {
    fn spawn<F: FnOnce() + Send + 'static>(&self, task: F) {
        match &self.pool {
            Some(pool) => pool.spawn(task),
            None => rayon::spawn(task),
        }
    }
}

/// kiln-core's `WakeHook` on rayon.
pub type RayonPump = JobSystemPump<RayonJobSystem>;
