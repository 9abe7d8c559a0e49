//! Helpers for the job-system tests: leaked beads and brokers (pump tasks
//! need `'static` ones), a thread-safe compiler, a hand-run job system, and
//! one end-to-end scenario every real job system must pass.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use kiln_core::{
    AlwaysRecompilePolicy, Bead, BeadState, Broker, CodeHandle, CompileRequest, Compiled, Compiler, NoEvents, OsrEntry,
    OsrTable, ThresholdPolicy,
};
use kiln_host::{JobSystem, JobSystemPump, PumpConfig};

/// The loop site every compiled function has an OSR entry for.
pub const SITE: u64 = 7;

static OSR_ENTRIES: [OsrEntry; 1] = [OsrEntry { site: SITE, code: ptr::without_provenance_mut(0x77) }];
static OSR_TABLE: LazyLock<OsrTable<'static>> = LazyLock::new(|| OsrTable::new(&OSR_ENTRIES).unwrap());

/// `n` beads numbered 1..=n (the number is their core handle), leaked.
pub fn beads(n: usize) -> &'static [Bead] {
    Box::leak((1..=n).map(|i| Bead::new(ptr::without_provenance_mut(i))).collect::<Vec<_>>().into_boxed_slice())
}

/// The entry a bead's code must have: `0x1000 ×` its number.
pub fn entry_of(bead: &Bead) -> usize {
    0x1000 * bead.core_handle() as usize
}

pub type Kiln<J> = Broker<&'static Bead, ThresholdPolicy, AlwaysRecompilePolicy, JobSystemPump<J>, NoEvents>;

/// A broker promoting after `calls` calls, waking `pump`.
pub fn broker<J: JobSystem>(calls: u32, pump: &JobSystemPump<J>) -> Kiln<J> {
    Broker::new(ThresholdPolicy::new(calls), AlwaysRecompilePolicy, pump.clone(), NoEvents)
}

/// A thread-safe compiler (a handle: clones share the counters) whose code
/// for bead `i` has entry `0x1000 × i` and an OSR table. It panics on the
/// bead numbered `panic_on`, and spins a little per compile so that
/// interpreter threads really race with publication.
#[derive(Clone, Debug, Default)]
pub struct ThreadJit {
    pub compiled: Arc<AtomicUsize>,
    pub released: Arc<AtomicUsize>,
    pub panic_on: Option<usize>,
}

impl Compiler<&'static Bead> for ThreadJit {
    type Error = ();

    fn compile(&mut self, request: &CompileRequest<'_, &'static Bead>) -> Result<Compiled, ()> {
        let number = request.bead.core_handle() as usize;
        if self.panic_on == Some(number) {
            panic!("test compiler panics on bead {number}");
        }
        let mut spin = 0u64;
        for i in 0..2_000 {
            spin = std::hint::black_box(spin.wrapping_add(i));
        }
        self.compiled.fetch_add(1, Ordering::SeqCst);
        let code =
            Compiled::new(ptr::without_provenance_mut(entry_of(request.bead)), CodeHandle::from_raw(number).unwrap())
                .map_err(|_| ())?;
        // SAFETY: the table and its entries are statics that never change,
        // so they are valid, unchanged and readable from any thread forever (1, 2).
        Ok(unsafe { code.with_osr(NonNull::from(&*OSR_TABLE)) })
    }

    fn release(&mut self, _code: CodeHandle) {
        self.released.fetch_add(1, Ordering::SeqCst);
    }
}

type Task = Box<dyn FnOnce() + Send>;

/// A job system whose tasks run only when the test says so (or, with
/// `runs_on_help`, when `JobSystemPump::stop` asks it to help — a host
/// that ticks its job system from the main thread).
#[derive(Clone, Default)]
pub struct Manual {
    pub tasks: Arc<Mutex<VecDeque<Task>>>,
    pub runs_on_help: bool,
}

impl Manual {
    /// Runs the oldest pending task; false if there was none.
    pub fn run_next(&self) -> bool {
        let task = self.tasks.lock().unwrap().pop_front();
        match task {
            Some(task) => {
                task();
                true
            }
            None => false,
        }
    }

    /// Runs tasks (including ones they spawn) until none is pending.
    pub fn run_all(&self) -> usize {
        let mut ran = 0;
        while self.run_next() {
            ran += 1;
        }
        ran
    }

    pub fn pending(&self) -> usize {
        self.tasks.lock().unwrap().len()
    }
}

impl JobSystem for Manual {
    fn spawn<F: FnOnce() + Send + 'static>(&self, task: F) {
        self.tasks.lock().unwrap().push_back(Box::new(task));
    }

    fn help(&self) {
        if self.runs_on_help {
            self.run_all();
        }
    }
}

/// The scenario every real job system passes: 64 functions become hot
/// while an interpreter thread keeps calling them; pump tasks on `jobs`
/// compile and publish them all; every entry the interpreter ever sees is
/// the complete code (right entry, OSR table already there); at most
/// `max_in_flight` tasks ever ran at once; `stop` ends cleanly, and
/// afterwards promotions are left queued, not compiled.
pub fn compiles_publishes_and_stops<J: JobSystem>(jobs: J, max_in_flight: usize) {
    let beads = beads(64);
    let pump = JobSystemPump::new(jobs, PumpConfig::new().max_in_flight(max_in_flight).jobs_per_task(3));
    let broker: &'static Kiln<J> = Box::leak(Box::new(broker(5, &pump)));
    let jit = ThreadJit::default();
    pump.attach(broker, jit.clone()).unwrap();

    // A hang guard only: nothing is asserted about time.
    let give_up = Instant::now() + Duration::from_secs(60);
    while !beads.iter().all(|bead| bead.state() == BeadState::Compiled(0)) {
        assert!(Instant::now() < give_up, "not all compiled: {:?}", pump.stats());
        for bead in beads {
            if let Some(entry) = broker.on_invoke(&bead) {
                assert_eq!(entry.as_ptr() as usize, entry_of(bead), "a complete entry, never another");
                assert!(bead.osr_entry(SITE).is_some(), "the OSR table is published with the entry");
            }
        }
        std::thread::yield_now();
    }
    for bead in beads {
        let entry = broker.on_invoke(&bead).expect("compiled code runs");
        assert_eq!(entry.as_ptr() as usize, entry_of(bead));
    }
    pump.stop().expect("tasks end within the stop timeout");
    let stats = pump.stats();
    assert_eq!((stats.published, stats.failed, stats.in_flight), (64, 0, 0), "{stats:?}");
    assert!(stats.peak_in_flight >= 1 && stats.peak_in_flight <= max_in_flight, "{stats:?}");
    assert!(stats.spawned <= stats.wakes + stats.ran, "every task came from a wake-up or a task with work left");
    assert_eq!(jit.compiled.load(Ordering::SeqCst), 64);

    // Stopped: promotions wake nothing and stay queued.
    let late = self::beads(2);
    for bead in late {
        for _ in 0..5 {
            broker.on_invoke(&bead);
        }
    }
    assert!(late.iter().all(|bead| bead.state() == BeadState::Queued));
    assert_eq!(pump.stats().spawned, stats.spawned);
    assert!(pump.stats().refused >= 1);
    assert_eq!(broker.cancel_queued(), 2);
    assert!(late.iter().all(|bead| bead.state() == BeadState::Interpreted));
}
