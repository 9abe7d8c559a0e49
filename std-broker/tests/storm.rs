//! Warm-up storms through kiln-std's public API: more beads cross their
//! threshold at once than the queue holds. The host pumps (no workers), so
//! every step is deterministic: what the queue holds, which bead a full
//! queue turns away, how soon it comes back, and that none is left Queued.

use std::sync::Arc;

use kiln_std::{Bead, BeadState, Beadie, BeadieConfig, Budget, ThresholdPolicy};

extern "C" fn native() -> i64 {
    7
}

fn entry() -> *mut () {
    native as extern "C" fn() -> i64 as *mut ()
}

const THRESHOLD: u32 = 100;
const QUEUE: usize = 8;

fn beadie() -> Beadie<ThresholdPolicy> {
    let config = BeadieConfig { workers: 0, queue_capacity: QUEUE, ..BeadieConfig::default() };
    Beadie::with_config(ThresholdPolicy::new(THRESHOLD), config)
}

fn call(beadie: &Beadie<ThresholdPolicy>, bead: &Arc<Bead>, times: u32) {
    for _ in 0..times {
        beadie.on_invoke(bead, |_| entry());
    }
}

fn count(beads: &[Arc<Bead>], state: BeadState) -> usize {
    beads.iter().filter(|bead| bead.state() == state).count()
}

#[test]
fn the_default_queue_holds_a_thousand_bead_storm() {
    assert_eq!(BeadieConfig::default().queue_capacity, 1_024);
    let beadie =
        Beadie::with_config(ThresholdPolicy::new(THRESHOLD), BeadieConfig { workers: 0, ..BeadieConfig::default() });
    let beads: Vec<_> = (0..1_000).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
    for bead in &beads {
        call(&beadie, bead, THRESHOLD);
    }
    assert_eq!(count(&beads, BeadState::Queued), 1_000, "every crossing bead was queued at once");
    assert_eq!(beadie.stats().queue_full, 0);
    beadie.pump(Budget::unlimited());
    assert_eq!(count(&beads, BeadState::Compiled), 1_000);
}

#[test]
fn a_refused_bead_comes_back_after_a_short_wait_and_none_is_stuck_queued() {
    let beadie = beadie();
    let beads: Vec<_> = (0..3 * QUEUE).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
    // The storm: every bead crosses in the same round; the queue takes the
    // first QUEUE, the rest are equally hot and are turned away.
    for bead in &beads {
        call(&beadie, bead, THRESHOLD);
    }
    assert_eq!(count(&beads, BeadState::Queued), QUEUE);
    assert_eq!(beadie.stats().queue_full as usize, 2 * QUEUE);
    let refused = &beads[QUEUE];
    assert_eq!(refused.state(), BeadState::Interpreted);

    // It waits 16 calls (not 256), then asks again; the queue drained
    // meanwhile, so it is queued.
    beadie.pump(Budget::unlimited());
    call(&beadie, refused, 15);
    assert_eq!(refused.state(), BeadState::Interpreted, "still cooling down");
    call(&beadie, refused, 1);
    assert_eq!(refused.state(), BeadState::Queued, "back after 16 calls");

    // Round after round with a pump between, every bead ends compiled and
    // no bead is ever Queued once the queue is empty.
    for _ in 0..20 {
        for bead in &beads {
            call(&beadie, bead, 16);
        }
        beadie.pump(Budget::unlimited());
        assert_eq!(beadie.stats().queue_depth, 0);
        assert_eq!(count(&beads, BeadState::Queued) + count(&beads, BeadState::Compiling), 0, "stuck Queued");
    }
    assert_eq!(count(&beads, BeadState::Compiled), beads.len());
}

#[test]
fn a_much_hotter_bead_evicts_the_coldest_queued_job() {
    let beadie = beadie();
    let warm: Vec<_> = (0..QUEUE).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
    for bead in &warm {
        call(&beadie, bead, THRESHOLD);
    }
    let last_queued = warm.last().expect("QUEUE > 0");
    // The queue is full of jobs queued at 100 calls; a bead the queue turned
    // away keeps counting and comes back hot.
    let hot = beadie.register(std::ptr::null_mut(), None);
    call(&beadie, &hot, THRESHOLD);
    assert_eq!(hot.state(), BeadState::Interpreted, "100 calls is not more than twice as hot as 100");
    let mut calls = THRESHOLD;
    while hot.state() != BeadState::Queued {
        call(&beadie, &hot, 1);
        calls += 1;
        assert!(calls <= 4 * THRESHOLD, "never came back");
    }
    assert!(calls > 2 * THRESHOLD, "queued only once more than twice as hot, at {calls} calls");
    assert_eq!(last_queued.state(), BeadState::Interpreted, "the youngest of the coldest was evicted");
    assert_eq!(count(&warm, BeadState::Queued), QUEUE - 1);

    // The hottest runs first; the evicted bead comes back after its wait.
    assert_eq!(beadie.pump(Budget::jobs(1)).ran, 1);
    assert_eq!(hot.state(), BeadState::Compiled);
    beadie.pump(Budget::unlimited());
    call(&beadie, last_queued, 16);
    assert_eq!(last_queued.state(), BeadState::Queued);
    beadie.pump(Budget::unlimited());
    assert_eq!(count(&warm, BeadState::Compiled), QUEUE);
}
