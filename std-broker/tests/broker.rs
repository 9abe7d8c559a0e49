//! kiln-std's broker under failure: panicking, hanging, null and stale
//! compiles, full queues, invalidate/reload during a compile, shutdown,
//! coalesced wake-ups and reclamation. Waits are bounded polls, never sleeps
//! that assume a timing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_std::{Bead, BeadState, Beadie, BeadieConfig, ThresholdPolicy};

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

fn beadie(threshold: u32) -> Beadie {
    Beadie::with_policy(ThresholdPolicy::new(threshold))
}

/// Calls `on_invoke` until the bead is promoted (its job left Interpreted).
fn promote(beadie: &Beadie, bead: &Arc<Bead>, compile: impl Fn(&Arc<Bead>) -> *mut () + Send + Clone + 'static) {
    for _ in 0..10_000 {
        if bead.state() != BeadState::Interpreted {
            return;
        }
        beadie.on_invoke(bead, compile.clone());
    }
    panic!("bead was never promoted");
}

#[test]
fn a_panicking_compile_fails_the_bead_and_the_broker_keeps_serving() {
    let beadie = beadie(5);
    let bad = beadie.register(std::ptr::null_mut(), None);
    let good = beadie.register(std::ptr::null_mut(), None);
    promote(&beadie, &bad, |_| panic!("backend exploded"));
    wait_until("the failed compile", || beadie.stats().failures == 1);
    assert_eq!(bad.state(), BeadState::Interpreted);
    assert!(bad.is_valid(), "a failed compile is not an invalidation");
    assert_eq!(bad.bailout_count(), 1);
    promote(&beadie, &good, |_| one());
    wait_until("the good compile", || good.compiled().is_some());
    assert_eq!(good.compiled(), Some(one()));
}

#[test]
fn a_null_result_is_a_failed_compile_not_an_invalidation() {
    let beadie = beadie(3);
    let bead = beadie.register(std::ptr::null_mut(), None);
    promote(&beadie, &bead, |_| std::ptr::null_mut());
    wait_until("the failure", || beadie.stats().failures == 1);
    assert_eq!(bead.state(), BeadState::Interpreted);
    assert!(bead.is_valid());
    assert_eq!(bead.compiled(), None);
}

#[test]
fn shutdown_is_bounded_even_when_a_compile_never_returns() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let config = BeadieConfig { shutdown_timeout: Duration::from_millis(200), ..BeadieConfig::default() };
    let beadie = Beadie::with_config(ThresholdPolicy::new(2), config);
    let hung = beadie.register(std::ptr::null_mut(), None);
    let queued = beadie.register(std::ptr::null_mut(), None);
    let entered = Mutex::new(entered_tx);
    let compile = Arc::new(move |_: &Arc<Bead>| -> *mut () {
        entered.lock().unwrap().send(()).unwrap();
        loop {
            std::thread::park();
        }
    });
    for _ in 0..2 {
        let compile = Arc::clone(&compile);
        beadie.on_invoke(&hung, move |b| compile(b));
    }
    entered_rx.recv_timeout(Duration::from_secs(5)).expect("the compile started");
    promote(&beadie, &queued, |_| one());
    assert_eq!(queued.state(), BeadState::Queued, "waits behind the hung compile");

    let started = Instant::now();
    drop(beadie);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(hung.state(), BeadState::Compiling, "still compiling: consistent, not corrupted");
    assert_eq!(queued.state(), BeadState::Interpreted, "queued jobs are cancelled, not run");
    assert_eq!(queued.compiled(), None);
}

#[test]
fn invalidate_while_compiling_releases_the_result_and_runs_the_hook_once() {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let gate = Mutex::new(gate_rx);
    let hook_runs = Arc::new(AtomicUsize::new(0));
    let beadie = beadie(2);
    let runs = Arc::clone(&hook_runs);
    let bead = beadie.register(
        std::ptr::null_mut(),
        Some(Box::new(move || {
            runs.fetch_add(1, Ordering::SeqCst);
        })),
    );
    let compile = Arc::new(move |_: &Arc<Bead>| {
        gate.lock().unwrap().recv().unwrap();
        one()
    });
    for _ in 0..2 {
        let compile = Arc::clone(&compile);
        beadie.on_invoke(&bead, move |b| compile(b));
    }
    wait_until("the compile to start", || bead.state() == BeadState::Compiling);
    bead.invalidate();
    bead.invalidate();
    gate_tx.send(()).unwrap();
    // kiln-core counts the stale result as it refuses to publish it; the
    // worker releases the code object right after, on its own thread, so
    // the test waits for both. "At once": no quiescence is ever declared
    // here, so the release did not wait for one.
    wait_until("the stale result released", || beadie.stats().stale_results == 1 && beadie.code_counts().1 == 1);
    assert_eq!(bead.compiled(), None, "a stale result is never installed");
    assert_eq!(bead.state(), BeadState::Deopt);
    assert_eq!(hook_runs.load(Ordering::SeqCst), 1);
    let (compiled, released) = beadie.code_counts();
    assert_eq!((compiled, released), (1, 1), "the stale code object was released without a quiesce");
}

#[test]
fn reload_during_a_compile_discards_it_and_promotes_again() {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate_rx));
    let beadie = beadie(2);
    let bead = beadie.register(std::ptr::null_mut(), None);
    let first = Arc::clone(&gate);
    for _ in 0..2 {
        let first = Arc::clone(&first);
        beadie.on_invoke(&bead, move |_| {
            first.lock().unwrap().recv().unwrap();
            one()
        });
    }
    wait_until("the compile to start", || bead.state() == BeadState::Compiling);
    assert!(bead.reload().will_recompile());
    gate_tx.send(()).unwrap();
    wait_until("the stale result", || beadie.stats().stale_results == 1);
    assert_eq!(bead.compiled(), None);
    promote(&beadie, &bead, |_| two());
    wait_until("the recompile", || bead.compiled().is_some());
    assert_eq!(bead.compiled(), Some(two()), "only the fresh compile is installed");
}

#[test]
fn a_full_queue_cools_beads_down_instead_of_retrying_every_call() {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate_rx));
    // A threshold of 600: the refused bead's 1,000 calls never make it
    // more than twice as hot as the queued one, so it cannot evict it.
    let beadie = Beadie::with_policy_and_capacity(ThresholdPolicy::new(600), 1);
    let blocker = beadie.register(std::ptr::null_mut(), None);
    let waiting = beadie.register(std::ptr::null_mut(), None);
    let refused = beadie.register(std::ptr::null_mut(), None);
    let held = Arc::clone(&gate);
    for _ in 0..600 {
        let held = Arc::clone(&held);
        beadie.on_invoke(&blocker, move |_| {
            held.lock().unwrap().recv().unwrap();
            one()
        });
    }
    wait_until("the worker to be busy", || blocker.state() == BeadState::Compiling);
    promote(&beadie, &waiting, |_| one());
    assert_eq!(waiting.state(), BeadState::Queued);
    for _ in 0..1_000 {
        beadie.on_invoke(&refused, |_| one());
    }
    let full = beadie.stats().queue_full;
    assert!(full >= 1, "the third bead found the queue full");
    // Refused at 600, 616, 632, 664, 728, 856: the wait doubles each time.
    assert!(full <= 6, "cooldown: {full} refusals in 1,000 calls is a retry storm");
    assert_eq!(refused.state(), BeadState::Interpreted);
    gate_tx.send(()).unwrap();
    wait_until("the queue to drain", || waiting.compiled().is_some());
}

#[test]
fn blacklisted_then_invalidated_stays_dead() {
    let beadie = beadie(2);
    let bead = beadie.register(std::ptr::null_mut(), None);
    promote(&beadie, &bead, |_| one());
    wait_until("the compile", || bead.compiled().is_some());
    bead.blacklist();
    assert!(bead.is_blacklisted());
    bead.invalidate();
    for _ in 0..100_000 {
        assert_eq!(beadie.on_invoke(&bead, |_| two()), None);
    }
    assert_eq!(bead.state(), BeadState::Deopt);
    assert!(!bead.is_valid());
    assert_eq!(beadie.stats().promotions, 1);
}

#[test]
fn a_burst_of_promotions_costs_one_wakeup() {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate_rx));
    let beadie = beadie(1);
    let first = beadie.register(std::ptr::null_mut(), None);
    let held = Arc::clone(&gate);
    beadie.on_invoke(&first, move |_| {
        held.lock().unwrap().recv().unwrap();
        one()
    });
    wait_until("the worker to be busy", || first.state() == BeadState::Compiling);
    let before = beadie.wakeups();
    let beads: Vec<_> = (0..50).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
    for bead in &beads {
        beadie.on_invoke(bead, |_| two());
    }
    assert_eq!(beadie.stats().promotions, 51);
    // One wake-up, or none if the first bead's own wake-up landed after the
    // worker cleared the flag (it is then still pending and covers the burst).
    let woken = beadie.wakeups() - before;
    assert!(woken <= 1, "50 promotions while the worker is busy: {woken} wake-ups");
    gate_tx.send(()).unwrap();
    wait_until("all compiled", || beads.iter().all(|bead| bead.compiled() == Some(two())));
}

#[test]
fn quiesce_releases_swapped_code_two_rounds_later() {
    let beadie = beadie(1);
    let bead = beadie.register(std::ptr::null_mut(), None);
    beadie.on_invoke(&bead, |_| one());
    wait_until("the compile", || bead.compiled().is_some());
    let swap = bead.swap_compiled(two()).expect("compiled beads swap");
    assert_eq!(swap.old_code, one());
    assert_eq!(bead.compiled(), Some(two()));
    assert_eq!(beadie.code_counts(), (2, 0));
    beadie.quiesce();
    assert_eq!(beadie.code_counts().1, 0, "one quiesce is not enough");
    beadie.quiesce();
    assert_eq!(beadie.code_counts(), (2, 1), "compiled = released + live");
}

#[test]
fn after_a_manual_quiesce_workers_never_quiesce_on_their_own() {
    let beadie = beadie(1);
    beadie.quiesce();
    let bead = beadie.register(std::ptr::null_mut(), None);
    beadie.on_invoke(&bead, |_| one());
    wait_until("the compile", || bead.compiled().is_some());
    bead.swap_compiled(two()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(beadie.code_counts().1, 0, "only the host may declare quiescence here");
    beadie.quiesce();
    beadie.quiesce();
    assert_eq!(beadie.code_counts().1, 1);
}

#[test]
fn registered_threads_drive_reclamation() {
    let beadie = beadie(1);
    let me = beadie.register_thread();
    let bead = beadie.register(std::ptr::null_mut(), None);
    beadie.on_invoke(&bead, |_| one());
    wait_until("the compile", || bead.compiled().is_some());
    bead.swap_compiled(two()).unwrap();
    // Without our reports nothing is released, however long the workers run.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(beadie.code_counts().1, 0);
    wait_until("release after our quiescent points", || {
        me.quiescent();
        beadie.code_counts().1 == 1
    });
}

#[test]
fn dropping_a_million_beads_does_not_recurse() {
    let beadie = Beadie::new();
    for _ in 0..1_000_000 {
        beadie.register(std::ptr::null_mut(), None);
    }
    assert_eq!(beadie.chain_len(), 1_000_000);
    drop(beadie);
}

#[test]
fn several_workers_compile_in_parallel() {
    let config = BeadieConfig { workers: 3, ..BeadieConfig::default() };
    let beadie = Beadie::with_config(ThresholdPolicy::new(1), config);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let beads: Vec<_> = (0..3).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
    for bead in &beads {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        beadie.on_invoke(bead, move |_| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(2);
            while peak.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
                std::thread::yield_now();
            }
            running.fetch_sub(1, Ordering::SeqCst);
            one()
        });
    }
    wait_until("all compiled", || beads.iter().all(|bead| bead.compiled().is_some()));
    assert_eq!(peak.load(Ordering::SeqCst), 3, "three workers ran three compiles at once");
}

#[test]
fn a_host_without_workers_pumps_by_itself() {
    let config = BeadieConfig { workers: 0, ..BeadieConfig::default() };
    let beadie = Beadie::with_config(ThresholdPolicy::new(2), config);
    let beads: Vec<_> = (0..3).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
    for bead in &beads {
        promote(&beadie, bead, |_| one());
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(beads.iter().all(|bead| bead.state() == BeadState::Queued), "no worker compiles anything");
    let report = beadie.pump(kiln_std::Budget::jobs(2));
    assert_eq!((report.ran, report.published, report.remaining), (2, 2, 1));
    let report = beadie.pump(kiln_std::Budget::unlimited());
    assert_eq!((report.ran, report.remaining), (1, 0));
    assert!(beads.iter().all(|bead| bead.compiled() == Some(one())));
}

extern "C" fn loop_entry() -> i64 {
    3
}

#[test]
fn hot_loops_get_an_osr_entry_through_backedges() {
    let beadie = beadie(100);
    let bead = beadie.register(std::ptr::null_mut(), None);
    let osr = || kiln_std::OsrCompileResult {
        entry: one(),
        osr: vec![kiln_std::OsrEntry { site: 7, code: loop_entry as extern "C" fn() -> i64 as *mut () }],
    };
    // One long interpreted call: only its loop probe runs, for as long as
    // the worker needs (a worker starved on a loaded machine can take far
    // longer than a few milliseconds; only a hang fails, after seconds).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut iteration = 0u64;
    let entry = loop {
        if let Some(entry) = beadie.on_backedge(&bead, 7, move |_| osr()) {
            break entry;
        }
        iteration += 1;
        if iteration.is_multiple_of(1_000) {
            assert!(Instant::now() < deadline, "the loop never got an OSR entry");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // `iteration` probes returned nothing; the next one returned the entry.
    // The 1,000th probe crosses the back-edge threshold and returns the
    // entry itself if a polling worker compiled it before that probe
    // returned (kiln-core's crossing call returns code already installed;
    // seen under a sanitizer's slow crossing), so the entry comes at the
    // 1,000th probe at the earliest.
    assert!(iteration + 1 >= 1_000, "not before 10 x the call threshold: {iteration} empty probes");
    assert_eq!(entry, loop_entry as extern "C" fn() -> i64 as *mut ());
    assert_eq!(bead.compiled(), Some(one()), "the normal entry came with it");
    assert_eq!(beadie.on_backedge(&bead, 8, |_| panic!("no second compile")), None);
}
