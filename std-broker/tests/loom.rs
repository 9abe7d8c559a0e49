//! Loom models of kiln-std's reclamation (`src/reclaim.rs` on top of
//! kiln-core's `reclaim`), run by `ci/loom.sh` under `--cfg loom`.
//!
//! `reclaim.rs` and its `sync.rs` shim are compiled into this test as they
//! are (`#[path]`), over a small real kiln-core broker whose atomics and lock
//! are loom's too. Fake code handles are never called: a "runner" loads an
//! entry from the bead and then checks, after giving loom a chance to run
//! everything else, that the code it is running was not released. The
//! release ledger uses `std` atomics (loom does not track them, which keeps
//! the state space to kiln's own accesses; loom runs one thread at a time,
//! so they read in schedule order).
//!
//! Each model runs twice: on today's protocol (must hold) and on a
//! transcription of the protocol kiln-std had before (`before`), which must
//! be caught — so the models are shown able to fail.
#![cfg(loom)]

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool as StdAtomicBool, Ordering::SeqCst};

use kiln_core::{
    AlwaysRecompilePolicy, Bead, BeadRef, Broker, CodeHandle, Compiled, NoEvents, NoWake, ThresholdPolicy,
};
use loom::sync::Arc;
use loom::thread;

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../src/sync.rs"]
mod sync;

#[allow(dead_code, unreachable_pub)]
#[path = "../src/reclaim.rs"]
mod reclaim;

use reclaim::{Reclaimer, ThreadSlot};

#[derive(Clone, Debug)]
struct Handle(Arc<Bead>);

impl BeadRef for Handle {
    fn bead(&self) -> &Bead {
        &self.0
    }
}

type TestBroker = Broker<Handle, ThresholdPolicy, AlwaysRecompilePolicy, NoWake, NoEvents, 4, 4>;

/// Code `n`'s (never called) entry.
fn entry_of(n: usize) -> *mut () {
    ptr::without_provenance_mut(0x1000 * n)
}

fn id_of(entry: NonNull<()>) -> usize {
    entry.as_ptr().addr() / 0x1000
}

/// Which fake code objects were released.
#[derive(Default)]
struct Ledger([StdAtomicBool; 4]);

impl Ledger {
    fn release(&self, code: CodeHandle) {
        assert!(!self.0[code.get()].swap(true, SeqCst), "code {} released twice", code.get());
    }
    fn released(&self, n: usize) -> bool {
        self.0[n].load(SeqCst)
    }
}

struct World {
    broker: TestBroker,
    bead: Handle,
    ledger: Ledger,
}

/// A broker whose bead runs code 1.
fn world() -> Arc<World> {
    let broker = Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    let bead = Handle(Arc::new(Bead::new(ptr::null_mut())));
    install(&broker, &bead, 1);
    Arc::new(World { broker, bead, ledger: Ledger::default() })
}

/// Swaps code `n` in; the code it replaces is retired.
fn install(broker: &TestBroker, bead: &Handle, n: usize) {
    let code = CodeHandle::from_raw(n).unwrap();
    broker.swap_compiled(bead, Compiled::new(entry_of(n), code).unwrap(), 0).expect("ring has room");
}

/// "Runs" whatever code the bead has: loads the entry, lets every other
/// thread go on, then checks the code it ran was not released meanwhile.
fn run_code(world: &World) {
    if let Some(entry) = world.broker.on_invoke(&world.bead) {
        thread::yield_now();
        let n = id_of(entry);
        assert!(!world.ledger.released(n), "code {n} was released while a thread ran it");
    }
}

/// The protocol under test: today's `Reclaimer` or the transcription of the
/// one before it.
trait Protocol: Send + Sync + 'static {
    type Slot: Send + Sync + 'static;
    fn new() -> Self;
    fn register(&self, broker: &TestBroker) -> Self::Slot;
    fn report(&self, broker: &TestBroker, slot: &Self::Slot);
    fn step(&self, broker: &TestBroker, ledger: &Ledger);
    fn quiesce(&self, broker: &TestBroker, ledger: &Ledger);
}

impl Protocol for Reclaimer {
    type Slot = Arc<ThreadSlot>;
    fn new() -> Self {
        Reclaimer::default()
    }
    fn register(&self, broker: &TestBroker) -> Arc<ThreadSlot> {
        Reclaimer::register(self, broker)
    }
    fn report(&self, broker: &TestBroker, slot: &Arc<ThreadSlot>) {
        Reclaimer::report(self, broker, slot);
    }
    fn step(&self, broker: &TestBroker, ledger: &Ledger) {
        Reclaimer::step(self, broker, &mut |code| ledger.release(code));
    }
    fn quiesce(&self, broker: &TestBroker, ledger: &Ledger) {
        Reclaimer::quiesce(self, broker, &mut |code| ledger.release(code));
    }
}

/// kiln-std's reclamation before the shared protocol, transcribed: a round
/// counter of its own, compared-and-swapped, then a separate epoch bump in
/// the broker; workers bumping the epoch (parking) while unmanaged.
mod before {
    use super::*;
    use loom::sync::Mutex;
    use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    pub(crate) struct Slot {
        seen_round: AtomicU64,
    }

    #[derive(Default)]
    pub(crate) struct Reclaim {
        managed: AtomicBool,
        threads_registered: AtomicBool,
        round: AtomicU64,
        threads: Mutex<Vec<Arc<Slot>>>,
        limbo: Mutex<Vec<CodeHandle>>,
    }

    impl Protocol for Reclaim {
        type Slot = Arc<Slot>;
        fn new() -> Self {
            Self::default()
        }
        fn register(&self, _broker: &TestBroker) -> Arc<Slot> {
            self.managed.store(true, Ordering::Release);
            self.threads_registered.store(true, Ordering::Release);
            let slot = Arc::new(Slot { seen_round: AtomicU64::new(self.round.load(Ordering::Acquire)) });
            self.threads.lock().unwrap().push(Arc::clone(&slot));
            slot
        }
        fn report(&self, _broker: &TestBroker, slot: &Arc<Slot>) {
            slot.seen_round.store(self.round.load(Ordering::Acquire), Ordering::Release);
        }
        fn step(&self, broker: &TestBroker, ledger: &Ledger) {
            if !self.managed.load(Ordering::Acquire) {
                broker.quiesce_with(|code| self.limbo.lock().unwrap().push(code));
                return;
            }
            if !self.threads_registered.load(Ordering::Acquire) {
                return;
            }
            let round = self.round.load(Ordering::Acquire);
            let everyone =
                self.threads.lock().unwrap().iter().all(|slot| slot.seen_round.load(Ordering::Acquire) >= round);
            if everyone && self.round.compare_exchange(round, round + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                broker.quiesce_with(|code| ledger.release(code));
            }
        }
        fn quiesce(&self, broker: &TestBroker, ledger: &Ledger) {
            self.managed.store(true, Ordering::Release);
            broker.quiesce_with(|code| ledger.release(code));
        }
    }
}

/// Two reclaimers race while a registered thread reports between them and
/// then runs the bead's code; the host retires that code meanwhile.
fn two_reclaimers_and_a_reporter<R: Protocol>() {
    loom::model(|| {
        let world = world();
        let protocol = Arc::new(R::new());
        let slot = protocol.register(&world.broker);
        let reclaimers: Vec<_> = (0..2)
            .map(|_| {
                let (world, protocol) = (Arc::clone(&world), Arc::clone(&protocol));
                thread::spawn(move || protocol.step(&world.broker, &world.ledger))
            })
            .collect();
        let runner = {
            let (world, protocol) = (Arc::clone(&world), Arc::clone(&protocol));
            thread::spawn(move || {
                protocol.report(&world.broker, &slot);
                run_code(&world);
            })
        };
        install(&world.broker, &world.bead, 2);
        runner.join().unwrap();
        for reclaimer in reclaimers {
            reclaimer.join().unwrap();
        }
    });
}

/// Unmanaged at first: a worker runs reclamation steps while code is
/// retired and a thread still runs it; then the host declares quiescence
/// for the first time. One declaration after the retirement must not free
/// it, whatever the worker did before.
fn mode_switch<R: Protocol>() {
    loom::model(|| {
        let world = world();
        let protocol = Arc::new(R::new());
        let runner = {
            let world = Arc::clone(&world);
            thread::spawn(move || run_code(&world))
        };
        let worker = {
            let (world, protocol) = (Arc::clone(&world), Arc::clone(&protocol));
            thread::spawn(move || {
                protocol.step(&world.broker, &world.ledger);
                protocol.step(&world.broker, &world.ledger);
            })
        };
        install(&world.broker, &world.bead, 2);
        protocol.quiesce(&world.broker, &world.ledger);
        runner.join().unwrap();
        worker.join().unwrap();
        assert!(!world.ledger.released(1), "code 1 was released by the first quiesce after its retirement");
    });
}

#[test]
fn two_reclaimers_never_free_running_code() {
    two_reclaimers_and_a_reporter::<Reclaimer>();
}

#[test]
#[should_panic(expected = "released while a thread ran it")]
fn two_reclaimers_model_catches_the_old_protocol() {
    two_reclaimers_and_a_reporter::<before::Reclaim>();
}

#[test]
fn the_mode_switch_keeps_the_two_quiesce_rule() {
    mode_switch::<Reclaimer>();
}

#[test]
#[should_panic(expected = "code 1 was released")]
fn mode_switch_model_catches_the_old_protocol() {
    mode_switch::<before::Reclaim>();
}

/// Parked code (unmanaged) is released through the limbo two host
/// declarations after the switch — no leak across the switch — and never
/// earlier.
#[test]
fn parked_code_is_released_two_declarations_after_the_switch() {
    loom::model(|| {
        let world = world();
        let protocol = Arc::new(Reclaimer::default());
        install(&world.broker, &world.bead, 2);
        let worker = {
            let (world, protocol) = (Arc::clone(&world), Arc::clone(&protocol));
            thread::spawn(move || Protocol::step(&*protocol, &world.broker, &world.ledger))
        };
        Protocol::quiesce(&*protocol, &world.broker, &world.ledger);
        worker.join().unwrap();
        assert!(!world.ledger.released(1));
        Protocol::quiesce(&*protocol, &world.broker, &world.ledger);
        assert!(world.ledger.released(1), "parked or retired, code 1 is due two declarations after the switch");
        assert_eq!(protocol.parked() + world.broker.stats().retire_depth as usize, 0);
    });
}
