//! Host callbacks cannot hurt kiln: a panic in a backend's `release`, a
//! release hook or an `on_invalidate` callback is caught, counted
//! (`Beadie::host_panics`), logged, and kiln keeps working — the worker
//! that ran it lives on, and nothing unwinds into the host's call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_std::{BackendAdapter, Bead, BeadState, Beadie, BeadieConfig, CompileError, JitBackend, ThresholdPolicy};

extern "C" fn native_one() -> i64 {
    1
}
extern "C" fn native_two() -> i64 {
    2
}

fn one() -> *mut () {
    native_one as extern "C" fn() -> i64 as *mut ()
}
fn two() -> *mut () {
    native_two as extern "C" fn() -> i64 as *mut ()
}

/// Polls `condition` for up to 5 s.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Compiles a definition to its entry; `release` records the entry, then
/// panics.
#[derive(Default)]
struct PanickingRelease {
    released: Mutex<Vec<usize>>,
}

impl JitBackend for PanickingRelease {
    /// The entry's address.
    type FunctionDef = usize;
    type Error = CompileError;

    fn compile(&self, _bead: &Arc<Bead>, def: usize) -> Result<*mut (), CompileError> {
        Ok(def as *mut ())
    }

    fn release(&self, code: *mut ()) {
        self.released.lock().unwrap().push(code as usize);
        panic!("backend release exploded");
    }
}

type Adapter = BackendAdapter<PanickingRelease>;

fn adapter() -> Adapter {
    let config = BeadieConfig { shutdown_timeout: Duration::from_secs(2), ..BeadieConfig::default() };
    BackendAdapter::with_config(PanickingRelease::default(), ThresholdPolicy::new(1), config)
}

/// Promotes `bound` with `entry` as its definition and waits for the code.
fn compile(adapter: &Adapter, bound: &kiln_std::BoundBead<PanickingRelease>, entry: *mut ()) {
    let address = entry as usize;
    adapter.on_invoke(bound, move |_| address);
    wait_until("the compile", || bound.bead().compiled() == Some(entry));
}

#[test]
fn a_panicking_release_run_by_a_worker_does_not_kill_it() {
    let adapter = adapter();
    let thread = adapter.beadie().register_thread();
    let first = adapter.register(std::ptr::null_mut(), None);
    compile(&adapter, &first, one());
    first.reload();
    // The worker completes rounds as this thread reports; two rounds after
    // the reload it releases the code, and the backend panics.
    wait_until("the worker's release", || {
        thread.quiescent();
        !adapter.backend().released.lock().unwrap().is_empty()
    });
    assert_eq!(*adapter.backend().released.lock().unwrap(), [one() as usize]);

    // The worker is alive: it still compiles.
    let second = adapter.register(std::ptr::null_mut(), None);
    compile(&adapter, &second, two());
    wait_until("the panic to be counted", || adapter.beadie().host_panics() == 1);
    assert_eq!(adapter.beadie().code_counts(), (2, 1), "the panicked release still counts as released");
    drop(thread);

    // And it ends when asked (a dead worker would hold the drop for the timeout).
    let started = Instant::now();
    drop(adapter);
    assert!(started.elapsed() < Duration::from_secs(3), "drop took {:?}", started.elapsed());
}

#[test]
fn a_panicking_release_does_not_unwind_into_quiesce() {
    let adapter = BackendAdapter::with_config(
        PanickingRelease::default(),
        ThresholdPolicy::new(1),
        BeadieConfig { workers: 0, ..BeadieConfig::default() },
    );
    let beads = [adapter.register(std::ptr::null_mut(), None), adapter.register(std::ptr::null_mut(), None)];
    for (bound, entry) in beads.iter().zip([one(), two()]) {
        let address = entry as usize;
        adapter.on_invoke(bound, move |_| address);
    }
    adapter.beadie().pump(kiln_std::Budget::unlimited());
    assert!(beads.iter().all(|bound| bound.bead().state() == BeadState::Compiled));
    for bound in &beads {
        bound.reload();
    }
    let mut released = 0;
    for _ in 0..3 {
        released += adapter.beadie().quiesce();
    }
    assert_eq!(released, 2);
    // Both hooks ran: the first one's panic did not cut the second off.
    let mut seen = adapter.backend().released.lock().unwrap().clone();
    seen.sort_unstable();
    let mut expected = vec![one() as usize, two() as usize];
    expected.sort_unstable();
    assert_eq!(seen, expected);
    assert_eq!(adapter.beadie().host_panics(), 2);
    assert_eq!(adapter.beadie().code_counts(), (2, 2));
}

#[test]
fn a_panicking_on_invalidate_does_not_unwind_into_invalidate() {
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let bead = beadie.register(
        std::ptr::null_mut(),
        Some(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            panic!("on_invalidate exploded");
        })),
    );
    assert!(bead.eager_install(one()));
    bead.invalidate();
    assert_eq!(bead.state(), BeadState::Deopt);
    assert_eq!(bead.compiled(), None);
    bead.invalidate();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the hook ran exactly once");
    assert_eq!(beadie.stats().invalidations, 1, "invalidated exactly once");
    assert_eq!(beadie.host_panics(), 1);
    // kiln goes on: another bead still compiles.
    let other = beadie.register(std::ptr::null_mut(), None);
    assert_eq!(beadie.submit(&other, |_| two()), kiln_std::SubmitResult::Accepted);
    wait_until("the other compile", || other.compiled() == Some(two()));
}

#[test]
fn a_panicking_compile_is_counted_as_a_host_panic() {
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1));
    let bead = beadie.register(std::ptr::null_mut(), None);
    beadie.on_invoke(&bead, |_| panic!("compile exploded"));
    wait_until("the failed compile", || beadie.stats().failures == 1);
    assert_eq!(beadie.host_panics(), 1);
}

/// Panics the first time it is asked, then promotes at once.
#[derive(Default)]
struct PanicsOnce {
    asked: AtomicUsize,
}

impl kiln_std::HotnessPolicy for PanicsOnce {
    fn should_promote(&self, _invocations: u32) -> bool {
        if self.asked.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("policy exploded");
        }
        true
    }
}

#[test]
fn a_panicking_hotness_policy_does_not_unwind_into_on_invoke() {
    let beadie = Beadie::with_policy(PanicsOnce::default());
    let bead = beadie.register(std::ptr::null_mut(), None);
    assert_eq!(beadie.on_invoke(&bead, |_| one()), None);
    assert_eq!(beadie.host_panics(), 1);
    assert_eq!(bead.state(), BeadState::Interpreted);
    // Asked again later (after 1,000 calls): it promotes.
    wait_until("the compile", || beadie.on_invoke(&bead, |_| one()).is_some());
    assert_eq!(bead.compiled(), Some(one()));
    assert_eq!(beadie.host_panics(), 1);
}

/// A deopt policy that panics.
struct ExplodingDeopt;

impl kiln_std::DeoptPolicy for ExplodingDeopt {
    fn on_bailout(&self, _bead: &Bead, _info: &kiln_std::BailoutInfo, _bailouts: u32) -> kiln_std::DeoptDecision {
        panic!("deopt policy exploded");
    }
}

#[test]
fn a_panicking_deopt_policy_does_not_unwind_into_on_bailout() {
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1_000_000));
    let bead = beadie.register(std::ptr::null_mut(), None);
    assert!(bead.eager_install(one()));
    let info = kiln_std::BailoutInfo { guard_id: 1, pc_offset: 0, generation: bead.generation() };
    assert_eq!(bead.on_bailout(info, &ExplodingDeopt), kiln_std::DeoptDecision::Recompile);
    assert_eq!(bead.compiled(), None, "the code that bailed out is retired");
    assert_eq!(bead.bailout_count(), 1);
    assert_eq!(beadie.host_panics(), 1);
}
