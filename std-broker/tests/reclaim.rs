//! kiln-std's reclamation modes, step by step and deterministically: no
//! worker threads (`workers: 0`); the host pump (`Beadie::pump`) runs the
//! reclamation steps a worker would, exactly when the test says.
//!
//! The interleavings that need two reclaimers preempted between two steps
//! are in `tests/loom.rs`; the randomized runs in kiln-testkit's stress test.

use std::ptr;
use std::sync::Arc;

use kiln_std::{Bead, Beadie, BeadieConfig, Budget, ThresholdPolicy};

fn code(n: usize) -> *mut () {
    ptr::without_provenance_mut(0x1000 * n)
}

/// A `Beadie` without workers, and a bead running code 1.
fn setup() -> (Beadie, Arc<Bead>) {
    let config = BeadieConfig { workers: 0, ..BeadieConfig::default() };
    let beadie = Beadie::with_config(ThresholdPolicy::new(1), config);
    let bead = beadie.register(ptr::null_mut(), None);
    assert!(bead.eager_install(code(1)));
    (beadie, bead)
}

/// One reclamation step, as a worker runs after pumping.
fn step(beadie: &Beadie) {
    beadie.pump(Budget::jobs(0));
}

fn released(beadie: &Beadie) -> u64 {
    beadie.code_counts().1
}

/// Issue 12, seen 2: steps taken while unmanaged used to advance the epoch,
/// so the host's first `quiesce` after a retirement released the code.
#[test]
fn unmanaged_steps_do_not_count_toward_the_first_quiesce() {
    let (beadie, bead) = setup();
    bead.swap_compiled(code(2)).expect("compiled beads swap");
    step(&beadie);
    step(&beadie);
    beadie.quiesce();
    assert_eq!(released(&beadie), 0, "one quiesce after the retirement is not enough");
    beadie.quiesce();
    assert_eq!(released(&beadie), 1, "two quiesces release it");
    assert_eq!(beadie.parked_code(), 0, "nothing stays parked across the switch");
}

/// Issue 12, seen 2, the early free itself: one unmanaged step between the
/// retirement and the host's first `quiesce` used to make that one call
/// release code a thread could still be running.
#[test]
fn one_unmanaged_step_and_one_quiesce_release_nothing() {
    let (beadie, bead) = setup();
    bead.swap_compiled(code(2)).unwrap();
    step(&beadie);
    beadie.quiesce();
    assert_eq!(released(&beadie), 0, "released by the first quiesce after its retirement");
    beadie.quiesce();
    assert_eq!(released(&beadie), 1);
}

/// Code parked while unmanaged is not leaked: it is released two host
/// declarations after the switch, like code still in the ring.
#[test]
fn parked_code_is_released_after_the_switch() {
    let (beadie, bead) = setup();
    bead.swap_compiled(code(2)).unwrap();
    bead.swap_compiled(code(3)).unwrap();
    step(&beadie);
    assert_eq!(beadie.parked_code(), 2, "unmanaged: retired code is parked, never released");
    assert_eq!(released(&beadie), 0);
    beadie.quiesce();
    assert_eq!(released(&beadie), 0);
    bead.swap_compiled(code(4)).unwrap();
    beadie.quiesce();
    assert_eq!(released(&beadie), 2, "the parked two, not code 3 retired after the switch");
    beadie.quiesce();
    assert_eq!(beadie.code_counts(), (4, 3), "compiled = released + live");
}

/// Registered mode: a round needs every registered thread's report in the
/// current epoch, and code needs two rounds after its retirement — the
/// second made of reports taken after the first.
#[test]
fn registered_rounds_need_fresh_reports() {
    let (beadie, bead) = setup();
    let me = beadie.register_thread();
    bead.swap_compiled(code(2)).unwrap();
    step(&beadie); // the registration counts as a report: epoch advances once
    step(&beadie);
    step(&beadie);
    assert_eq!(released(&beadie), 0, "without a report after the first round nothing more advances");
    me.quiescent();
    step(&beadie);
    assert_eq!(released(&beadie), 1);
    // Two reclaimers on one report: only one advances.
    bead.swap_compiled(code(3)).unwrap();
    me.quiescent();
    step(&beadie);
    step(&beadie);
    assert_eq!(released(&beadie), 1, "one report, one round");
    me.quiescent();
    step(&beadie);
    assert_eq!(released(&beadie), 2);
}

/// Once every registered thread unregistered, no thread runs kiln code
/// (the registration contract): rounds complete without reports, so code
/// retired by the host afterwards is not leaked.
#[test]
fn rounds_complete_once_every_registered_thread_left() {
    let (beadie, bead) = setup();
    let me = beadie.register_thread();
    bead.swap_compiled(code(2)).unwrap();
    for _ in 0..4 {
        step(&beadie);
    }
    assert_eq!(released(&beadie), 0, "a registered thread that never reports holds everything back");
    drop(me);
    step(&beadie);
    assert_eq!(released(&beadie), 1, "no registered thread left to wait for");
}

/// The switch from host to registered threads is a grace period of its
/// own: a host declaration before it does not count for code retired
/// before it.
#[test]
fn host_then_registered_waits_two_rounds_after_the_switch() {
    let (beadie, bead) = setup();
    beadie.quiesce();
    bead.swap_compiled(code(2)).unwrap();
    beadie.quiesce();
    let me = beadie.register_thread();
    step(&beadie);
    assert_eq!(released(&beadie), 0, "first round after the switch");
    me.quiescent();
    step(&beadie);
    assert_eq!(released(&beadie), 1);
}
