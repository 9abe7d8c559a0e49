//! Shutdown is bounded and total: however many layers wrap the workers
//! (`Beadie`, `BackendAdapter`, `TieredAdapter`), dropping waits once, at
//! most `shutdown_timeout` (asserted below 1.5 × the timeout, a margin a
//! loaded machine keeps), yet it does wait for a compile that finishes in
//! time. Queued jobs are cancelled and their compile work dropped; a worker
//! that never returns is detached and named in a warning.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_std::{
    BackendAdapter, Bead, BeadState, Beadie, BeadieConfig, Broker, CompileError, HotnessPolicy, JitBackend,
    ThresholdPolicy, TieredAdapter, TieredDeoptPolicy,
};

const TIMEOUT: Duration = Duration::from_millis(300);

/// Records every log record with the name of the thread that logged it, so
/// a test finds its own records among those of tests running beside it.
struct Capture;

static RECORDS: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        RECORDS.lock().unwrap().push((record.level(), thread, record.args().to_string()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// Warnings logged by the calling thread.
fn my_warnings() -> Vec<String> {
    let me = std::thread::current().name().unwrap_or("").to_owned();
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, thread, _)| *level == log::Level::Warn && *thread == me)
        .map(|(_, _, text)| text.clone())
        .collect()
}

/// A gate a hung compile waits at; opened when the test is done, so the
/// detached worker ends instead of outliving the test forever.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Counts drops: stands for a compile closure's captured state or a
/// backend's definition.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

extern "C" fn native() -> i64 {
    9
}

fn code() -> *mut () {
    native as extern "C" fn() -> i64 as *mut ()
}

fn config() -> BeadieConfig {
    BeadieConfig { shutdown_timeout: TIMEOUT, ..BeadieConfig::default() }
}

fn assert_bounded(took: Duration) {
    assert!(took >= TIMEOUT, "drop returned after {took:?}, before the hung compile's timeout");
    assert!(took < TIMEOUT.mul_f64(1.5), "drop took {took:?} for a {TIMEOUT:?} timeout");
}

#[test]
fn a_beadie_with_a_hung_compile_drops_within_its_timeout_and_names_the_worker() {
    capture_logs();
    let beadie = Beadie::with_config(ThresholdPolicy::new(1), config());
    let gate = Arc::new(Gate::default());
    let (started, compiling) = mpsc::channel();
    let hung = beadie.register(std::ptr::null_mut(), None);
    let waiting = Arc::clone(&gate);
    beadie.on_invoke(&hung, move |_| {
        started.send(()).unwrap();
        waiting.wait();
        code()
    });
    compiling.recv_timeout(Duration::from_secs(5)).expect("the compile started");
    // Queued behind the hung compile: cancelled by the drop, work dropped.
    let drops = Arc::new(AtomicUsize::new(0));
    let queued: Vec<Arc<Bead>> = (0..8).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
    for bead in &queued {
        let tracked = Tracked(Arc::clone(&drops));
        beadie.on_invoke(bead, move |_| {
            let _keep = &tracked;
            code()
        });
        assert_eq!(bead.state(), BeadState::Queued);
    }

    let started = Instant::now();
    drop(beadie);
    let took = started.elapsed();
    let dropped = drops.load(Ordering::SeqCst);
    gate.open();

    assert_bounded(took);
    assert_eq!(dropped, queued.len(), "cancelled jobs dropped their compile closures");
    assert!(queued.iter().all(|bead| bead.state() == BeadState::Interpreted));
    let warnings = my_warnings();
    assert!(
        warnings.iter().any(|text| text.contains("kiln-broker-0") && text.contains("detached")),
        "no warning naming the stuck worker: {warnings:?}"
    );
}

#[test]
fn drop_waits_for_a_compile_that_finishes_in_time() {
    let beadie = Beadie::with_config(
        ThresholdPolicy::new(1),
        BeadieConfig { shutdown_timeout: Duration::from_secs(5), ..BeadieConfig::default() },
    );
    let finished = Arc::new(AtomicBool::new(false));
    let (started, compiling) = mpsc::channel();
    let bead = beadie.register(std::ptr::null_mut(), None);
    let done = Arc::clone(&finished);
    beadie.on_invoke(&bead, move |_| {
        started.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        done.store(true, Ordering::SeqCst);
        code()
    });
    compiling.recv_timeout(Duration::from_secs(5)).expect("the compile started");
    drop(beadie);
    assert!(finished.load(Ordering::SeqCst), "drop returned before the running compile ended");
    assert_eq!(bead.compiled(), Some(code()), "the compile that ended in time was published");
}

/// A backend whose compiles wait at a gate; its definitions are `Tracked`.
struct HungBackend {
    gate: Arc<Gate>,
    started: Mutex<mpsc::Sender<()>>,
}

impl JitBackend for HungBackend {
    type FunctionDef = Tracked;
    type Error = CompileError;

    fn compile(&self, _bead: &Arc<Bead>, _def: Tracked) -> Result<*mut (), CompileError> {
        let _ = self.started.lock().unwrap().send(());
        self.gate.wait();
        Ok(code())
    }
}

#[test]
fn a_backend_adapter_with_a_hung_backend_and_a_full_queue_drops_within_its_timeout() {
    let gate = Arc::new(Gate::default());
    let (started, compiling) = mpsc::channel();
    let backend = HungBackend { gate: Arc::clone(&gate), started: Mutex::new(started) };
    let adapter = BackendAdapter::with_config(backend, ThresholdPolicy::new(1), config());
    let first = adapter.register(std::ptr::null_mut(), None);
    let drops = Arc::new(AtomicUsize::new(0));
    let tracked = Tracked(Arc::clone(&drops));
    adapter.on_invoke(&first, move |_| tracked);
    compiling.recv_timeout(Duration::from_secs(5)).expect("the compile started");
    let queued: Vec<_> = (0..256).map(|_| adapter.register(std::ptr::null_mut(), None)).collect();
    for bound in &queued {
        let tracked = Tracked(Arc::clone(&drops));
        adapter.on_invoke(bound, move |_| tracked);
    }
    assert_eq!(adapter.beadie().stats().queue_depth, 256);
    // The definition of the hung compile is inside the backend: not dropped yet.
    assert_eq!(drops.load(Ordering::SeqCst), 0);

    let started = Instant::now();
    drop(adapter);
    let took = started.elapsed();
    let dropped = drops.load(Ordering::SeqCst);
    gate.open();

    assert_bounded(took);
    assert_eq!(dropped, 256, "every cancelled job's factory was dropped, the hung compile's definition not");
}

#[test]
fn a_tiered_adapter_with_a_hung_compile_drops_within_its_timeout() {
    let gate = Arc::new(Gate::default());
    let (started, compiling) = mpsc::channel();
    let policies: Vec<Box<dyn HotnessPolicy>> =
        vec![Box::new(ThresholdPolicy::new(1)), Box::new(ThresholdPolicy::new(1_000))];
    let config = BeadieConfig { workers: 2, ..config() };
    let adapter = TieredAdapter::with_config(policies, TieredDeoptPolicy::default(), config);
    let bound = adapter.register(std::ptr::null_mut(), None);
    let waiting = Arc::clone(&gate);
    let started = Arc::new(Mutex::new(started));
    adapter.on_invoke(&bound, move |_tier, _| {
        let _ = started.lock().unwrap().send(());
        waiting.wait();
        code()
    });
    compiling.recv_timeout(Duration::from_secs(5)).expect("the compile started");

    let started = Instant::now();
    drop(adapter);
    let took = started.elapsed();
    gate.open();

    assert_bounded(took);
}

/// beadie's standalone `Broker` (detached beads, default 2 s timeout): the
/// jobs its drop cancels drop their closures too. (The only test here on
/// the process-wide detached domain, whose queue a `Broker`'s drop empties.)
#[test]
fn a_standalone_broker_drops_the_work_of_cancelled_jobs() {
    let broker = Broker::with_capacity(16);
    let gate = Arc::new(Gate::default());
    let (started, compiling) = mpsc::channel();
    let hung = Bead::new(std::ptr::null_mut(), None);
    let waiting = Arc::clone(&gate);
    let submitted = broker.submit(Arc::clone(&hung), move |_| {
        started.send(()).unwrap();
        waiting.wait();
        code()
    });
    assert!(submitted.is_accepted());
    compiling.recv_timeout(Duration::from_secs(5)).expect("the compile started");
    let drops = Arc::new(AtomicUsize::new(0));
    let queued: Vec<Arc<Bead>> = (0..4).map(|_| Bead::new(std::ptr::null_mut(), None)).collect();
    for bead in &queued {
        let tracked = Tracked(Arc::clone(&drops));
        let submitted = broker.submit(Arc::clone(bead), move |_| {
            let _keep = &tracked;
            code()
        });
        assert!(submitted.is_accepted());
    }

    let timeout = BeadieConfig::default().shutdown_timeout;
    let started = Instant::now();
    drop(broker);
    let took = started.elapsed();
    let dropped = drops.load(Ordering::SeqCst);
    gate.open();

    assert!(took >= timeout && took < timeout.mul_f64(1.5), "drop took {took:?} for a {timeout:?} timeout");
    assert_eq!(dropped, queued.len(), "cancelled jobs dropped their compile closures");
}
