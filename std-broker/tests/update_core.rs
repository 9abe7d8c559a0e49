//! `update_core` during a compile, specified: by default a moved function
//! object is the same function (the compile that overlapped the move is
//! installed, installed code stays); a bead whose code embeds its core's
//! address (`set_code_embeds_core`) discards the overlapping result,
//! recompiles against the new address, and retires installed code on a
//! move (released only after two quiesces).

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_std::{BackendAdapter, Bead, BeadieConfig, BoundBead, CompileError, JitBackend, ThresholdPolicy};

extern "C" fn code_0() -> i64 {
    0
}
extern "C" fn code_1() -> i64 {
    1
}
extern "C" fn code_2() -> i64 {
    2
}

const CODE: [extern "C" fn() -> i64; 3] = [code_0, code_1, code_2];

fn entry(n: usize) -> *mut () {
    CODE[n] as *mut ()
}

/// Polls `condition` for up to 5 s.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Compile `n` returns `entry(n)` and records the core address it was
/// compiled against. The first compile waits until the test lets it go.
#[derive(Default)]
struct Recording {
    cores: Mutex<Vec<usize>>,
    released: Mutex<Vec<usize>>,
    first_may_finish: Mutex<bool>,
    go: Condvar,
    started: Mutex<Option<mpsc::Sender<()>>>,
}

impl JitBackend for Recording {
    type FunctionDef = ();
    type Error = CompileError;

    fn compile(&self, bead: &Arc<Bead>, (): ()) -> Result<*mut (), CompileError> {
        let n = {
            let mut cores = self.cores.lock().unwrap();
            cores.push(bead.core_handle() as usize);
            cores.len() - 1
        };
        if n == 0 {
            if let Some(started) = self.started.lock().unwrap().take() {
                started.send(()).unwrap();
            }
            let mut go = self.first_may_finish.lock().unwrap();
            while !*go {
                go = self.go.wait(go).unwrap();
            }
        }
        Ok(entry(n))
    }

    fn release(&self, code: *mut ()) {
        self.released.lock().unwrap().push(code as usize);
    }
}

impl Recording {
    fn let_first_finish(&self) {
        *self.first_may_finish.lock().unwrap() = true;
        self.go.notify_all();
    }
    fn released(&self) -> Vec<usize> {
        self.released.lock().unwrap().clone()
    }
    fn cores(&self) -> Vec<usize> {
        self.cores.lock().unwrap().clone()
    }
}

fn core(n: usize) -> *mut () {
    std::ptr::without_provenance_mut(0x1000 * (n + 1))
}

/// A bead whose first compile has started and is held at the gate.
fn compiling(embeds_core: bool) -> (BackendAdapter<Recording>, BoundBead<Recording>) {
    let (started, compile_started) = mpsc::channel();
    let backend = Recording { started: Mutex::new(Some(started)), ..Recording::default() };
    let adapter = BackendAdapter::with_config(backend, ThresholdPolicy::new(1), BeadieConfig::default());
    // Managed reclamation from the start: the host declares quiescence.
    adapter.beadie().quiesce();
    let bound = adapter.register(core(0), None);
    bound.bead().set_code_embeds_core(embeds_core);
    assert_eq!(bound.bead().code_embeds_core(), embeds_core);
    adapter.on_invoke(&bound, |_| ());
    compile_started.recv_timeout(Duration::from_secs(5)).expect("the first compile started");
    (adapter, bound)
}

#[test]
fn by_default_a_compile_overlapping_a_move_is_installed() {
    let (adapter, bound) = compiling(false);
    bound.bead().update_core(core(1));
    adapter.backend().let_first_finish();
    wait_until("the overlapping compile's code", || bound.bead().compiled() == Some(entry(0)));

    // A later move leaves installed code alone, too.
    bound.bead().update_core(core(2));
    assert_eq!(bound.bead().compiled(), Some(entry(0)));
    for _ in 0..3 {
        adapter.beadie().quiesce();
        assert_eq!(adapter.on_invoke(&bound, |_| ()), Some(entry(0)));
    }
    assert_eq!(adapter.backend().cores(), [core(0) as usize]);
    assert_eq!(adapter.backend().released(), []);
    assert_eq!(bound.bead().core_handle(), core(2));
}

#[test]
fn code_embedding_the_core_is_discarded_recompiled_and_retired_on_a_move() {
    let (adapter, bound) = compiling(true);
    let bead = bound.bead();
    bead.update_core(core(1));
    adapter.backend().let_first_finish();
    // The overlapping result is released at once, never installed.
    wait_until("the stale result's release", || adapter.backend().released() == [entry(0) as usize]);
    assert_eq!(adapter.beadie().stats().stale_results, 1);
    // The bead is still hot: the next call promotes it again, and the
    // recompile sees the new address.
    let mut seen = Vec::new();
    wait_until("the recompile", || {
        seen.extend(adapter.on_invoke(&bound, |_| ()));
        bead.compiled() == Some(entry(1))
    });
    assert!(!seen.contains(&entry(0)), "the discarded code was never handed out");
    assert_eq!(adapter.backend().cores(), [core(0) as usize, core(1) as usize]);

    // A move with code installed retires it at once ...
    bead.update_core(core(2));
    assert_eq!(bead.compiled(), None);
    assert_eq!(bead.bailout_count(), 0, "a move is not a bailout");
    // ... and frees it only after two quiesces.
    adapter.beadie().quiesce();
    assert_eq!(adapter.backend().released(), [entry(0) as usize]);
    adapter.beadie().quiesce();
    assert_eq!(adapter.backend().released(), [entry(0) as usize, entry(1) as usize]);
    // The next hot call re-promotes, against the newest address.
    wait_until("the re-promotion", || {
        adapter.on_invoke(&bound, |_| ());
        bead.compiled() == Some(entry(2))
    });
    assert_eq!(adapter.backend().cores()[2], core(2) as usize);
}
