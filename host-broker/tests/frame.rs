//! The frame pump against a hand-driven clock and a compiler of known costs.

mod common;

use common::{CostlyJit, FakeClock, Rng, bead_of_size, sizes};
use kiln_core::{
    AlwaysRecompilePolicy, Bead, BeadState, Broker, NoEvents, NoWake, PumpStop, ThresholdPolicy, TieredPolicy,
};
use kiln_host::{FrameConfig, FramePump, FrameReport};

type Kiln<'a, P, const RETIRE: usize = 64> = Broker<&'a Bead, P, AlwaysRecompilePolicy, NoWake, NoEvents, 64, RETIRE>;

fn threshold<'a>(calls: u32) -> Kiln<'a, ThresholdPolicy> {
    Broker::new(ThresholdPolicy::new(calls), AlwaysRecompilePolicy, NoWake, NoEvents)
}

/// Random calls into 48 functions of sizes 10..=100 over two tiers, whose
/// compiles cost 3 and 10 ticks per unit. The first guess (10 per unit) is
/// at or above the truth, and the learned estimates never go below it, so
/// no frame may spend more than its budget — and every function still gets
/// to its top tier.
#[test]
fn frames_never_exceed_their_budget_when_predictions_are_right() {
    let clock = FakeClock::default();
    let beads: Vec<Bead> = (0..48).map(|i| bead_of_size(10 + (i * 37) % 91)).collect();
    let broker: Kiln<'_, TieredPolicy> =
        Broker::new(TieredPolicy { tier1_threshold: 3, tier2_threshold: 12 }, AlwaysRecompilePolicy, NoWake, NoEvents);
    let mut jit = CostlyJit::new(&clock, [3, 10]);
    let mut frames = FramePump::<_, _, 8>::new(&broker, FrameConfig::new(10)).with_cost_model(sizes);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let budget = 2_500;
    let mut total = FrameReport::default();
    for frame in 0..400 {
        for bead in &beads {
            if rng.below(3) == 0 {
                for _ in 0..rng.below(4) {
                    broker.on_invoke(&bead);
                }
            }
        }
        let report = frames.pump(&mut jit, &clock, budget);
        assert!(report.spent() <= budget, "frame {frame}: {report:?}");
        assert_eq!((report.overrun, report.mispredicted, report.forced), (0, 0, 0), "frame {frame}: {report:?}");
        total.jobs.ran += report.jobs.ran;
        total.skipped += report.skipped;
        clock.advance(16_000);
    }
    assert!(beads.iter().all(|bead| bead.state() == BeadState::Compiled(1)), "every function reached tier 1");
    assert_eq!(total.jobs.ran, 96, "two compiles per function, none wasted");
    assert!(total.skipped > 0, "the budget was tight enough to make jobs wait");
    assert_eq!(frames.predictor().ticks_per_unit(0), 3, "learned tier 0");
    assert_eq!(frames.predictor().ticks_per_unit(1), 10, "learned tier 1");
    assert_eq!(broker.stats().abandoned, 0, "held jobs were kept, never dropped");
}

/// With a first guess far below the truth, only the first compile of each
/// tier can overrun (it is reported as mispredicted); from then on the
/// learned estimate keeps frames within budget.
#[test]
fn a_wrong_first_guess_overruns_once_per_tier_then_is_learned() {
    let clock = FakeClock::default();
    let beads: Vec<Bead> = (0..16).map(|i| bead_of_size(20 + 5 * i)).collect();
    let broker: Kiln<'_, TieredPolicy> =
        Broker::new(TieredPolicy { tier1_threshold: 1, tier2_threshold: 4 }, AlwaysRecompilePolicy, NoWake, NoEvents);
    let mut jit = CostlyJit::new(&clock, [4, 12]);
    let mut frames = FramePump::<_, _, 8>::new(&broker, FrameConfig::new(1)).with_cost_model(sizes);
    let budget = 3_000;
    let mut mispredicted = 0;
    for _ in 0..60 {
        for bead in &beads {
            broker.on_invoke(&bead);
        }
        let report = frames.pump(&mut jit, &clock, budget);
        if report.overrun > 0 {
            assert!(report.mispredicted > 0 || report.forced > 0, "an overrun is always explained: {report:?}");
        }
        mispredicted += report.mispredicted;
        clock.advance(16_000);
    }
    assert_eq!(mispredicted, 2, "one surprise per tier");
    assert!(beads.iter().all(|bead| bead.state() == BeadState::Compiled(1)));
}

/// A job predicted (and really) larger than any frame's budget waits,
/// held, for `starve_after` frames — while smaller jobs keep running — and
/// then runs anyway, first in its frame, which reports it as forced.
#[test]
fn a_job_that_never_fits_runs_after_n_skipped_frames() {
    let clock = FakeClock::default();
    let huge = bead_of_size(50);
    let small: Vec<Bead> = (0..3).map(|_| bead_of_size(1)).collect();
    let broker = threshold(1);
    let mut jit = CostlyJit::new(&clock, [10, 10]);
    let config = FrameConfig::new(10).starve_after(3);
    let mut frames = FramePump::<_, _, 4>::new(&broker, config).with_cost_model(sizes);
    let budget = 100;

    broker.on_invoke(&&huge);
    for (frame, small) in small.iter().enumerate() {
        broker.on_invoke(&small);
        let report = frames.pump(&mut jit, &clock, budget);
        assert_eq!((report.jobs.ran, report.forced, report.skipped, report.held), (1, 0, 1, 1), "frame {frame}");
        assert_eq!(small.state(), BeadState::Compiled(0), "the small job ran beside the waiting one");
        assert_eq!(huge.state(), BeadState::Compiling, "held, not abandoned");
        assert!(report.spent() <= budget);
    }
    let report = frames.pump(&mut jit, &clock, budget);
    assert_eq!((report.jobs.ran, report.forced, report.jobs.published, report.skipped, report.held), (1, 1, 1, 0, 0));
    assert_eq!((report.spent(), report.overrun), (500, 400));
    assert_eq!(huge.state(), BeadState::Compiled(0));
    assert_eq!(jit.compiled.iter().filter(|(size, _)| *size == 50).count(), 1, "compiled once");
    let stats = broker.stats();
    assert_eq!((stats.promotions, stats.abandoned), (4, 0));
}

#[test]
fn starve_after_zero_runs_an_oversized_job_in_the_frame_that_claims_it() {
    let clock = FakeClock::default();
    let beads = [bead_of_size(50), bead_of_size(60)];
    let broker = threshold(1);
    let mut jit = CostlyJit::new(&clock, [10, 10]);
    let mut frames = FramePump::<_, _, 4>::new(&broker, FrameConfig::new(10).starve_after(0)).with_cost_model(sizes);
    for bead in &beads {
        broker.on_invoke(&bead);
    }
    let report = frames.pump(&mut jit, &clock, 100);
    assert_eq!((report.jobs.ran, report.forced), (1, 1), "one forced job per frame");
    // The second was claimed after the deadline passed, so it is still queued.
    assert_eq!((report.held, report.jobs.remaining), (0, 1));
    let report = frames.pump(&mut jit, &clock, 100);
    assert_eq!((report.jobs.ran, report.forced, report.overrun), (1, 1, 500));
}

#[test]
fn the_longest_waiting_job_is_forced_first_and_one_per_frame() {
    let clock = FakeClock::default();
    let beads: Vec<Bead> = (0..3).map(|i| bead_of_size(20 + i)).collect();
    let broker = threshold(1);
    let mut jit = CostlyJit::new(&clock, [10, 10]);
    let mut frames = FramePump::<_, _, 4>::new(&broker, FrameConfig::new(10).starve_after(2)).with_cost_model(sizes);
    broker.on_invoke(&&beads[0]);
    frames.pump(&mut jit, &clock, 50);
    broker.on_invoke(&&beads[1]);
    broker.on_invoke(&&beads[2]);
    let report = frames.pump(&mut jit, &clock, 50);
    assert_eq!((report.jobs.ran, report.skipped, report.held), (0, 3, 3));
    // beads[0] waited 2 frames: forced. The others waited 1.
    let report = frames.pump(&mut jit, &clock, 50);
    assert_eq!((report.forced, report.skipped), (1, 2));
    assert_eq!(jit.compiled, [(20, 0)]);
    // Both others reach 2 now, but only one is forced per frame.
    let report = frames.pump(&mut jit, &clock, 50);
    assert_eq!((report.forced, report.held), (1, 1));
    let report = frames.pump(&mut jit, &clock, 50);
    assert_eq!((report.forced, report.held), (1, 0));
    assert_eq!(jit.compiled.len(), 3);
}

#[test]
fn held_jobs_whose_bead_moved_on_are_dropped_uncompiled() {
    let clock = FakeClock::default();
    let bead = bead_of_size(50);
    let broker = threshold(1);
    let mut jit = CostlyJit::new(&clock, [10, 10]);
    let mut frames = FramePump::<_, _, 4>::new(&broker, FrameConfig::new(10)).with_cost_model(sizes);
    broker.on_invoke(&&bead);
    assert_eq!(frames.pump(&mut jit, &clock, 100).held, 1);
    broker.invalidate(&&bead).unwrap();
    let report = frames.pump(&mut jit, &clock, 100);
    assert_eq!((report.jobs.dropped, report.jobs.ran, report.held), (1, 0, 0));
    assert!(jit.compiled.is_empty());
    assert_eq!(bead.state(), BeadState::Invalidated);
}

#[test]
fn dropping_the_pump_abandons_held_jobs_and_their_beads_cool_down() {
    let clock = FakeClock::default();
    let bead = bead_of_size(50);
    let broker = threshold(1);
    let mut jit = CostlyJit::new(&clock, [10, 10]);
    {
        let mut frames = FramePump::<_, _, 4>::new(&broker, FrameConfig::new(10)).with_cost_model(sizes);
        broker.on_invoke(&&bead);
        frames.pump(&mut jit, &clock, 100);
        assert_eq!(bead.state(), BeadState::Compiling);
    }
    assert_eq!(bead.state(), BeadState::Interpreted);
    assert_eq!(broker.stats().abandoned, 1);
}

#[test]
fn held_capacity_bounds_the_look_ahead() {
    let clock = FakeClock::default();
    let beads: Vec<Bead> = (0..5).map(|_| bead_of_size(50)).collect();
    let broker = threshold(1);
    let mut jit = CostlyJit::new(&clock, [10, 10]);
    let mut frames = FramePump::<_, _, 2>::new(&broker, FrameConfig::new(10)).with_cost_model(sizes);
    for bead in &beads {
        broker.on_invoke(&bead);
    }
    let report = frames.pump(&mut jit, &clock, 100);
    assert_eq!((report.skipped, report.held, report.jobs.remaining), (2, 2, 3));
    assert_eq!(frames.held(), 2);
    assert_eq!(frames.abandon_held(), 2);
}

/// A held job that will replace code keeps the retire slot kiln-core
/// reserved for it; with a ring of one, the next such claim is refused and
/// the frame says so.
#[test]
fn a_full_retire_ring_stops_claiming_and_is_reported() {
    let clock = FakeClock::default();
    let beads = [bead_of_size(50), bead_of_size(50)];
    let broker: Kiln<'_, TieredPolicy, 1> =
        Broker::new(TieredPolicy { tier1_threshold: 1, tier2_threshold: 2 }, AlwaysRecompilePolicy, NoWake, NoEvents);
    let mut jit = CostlyJit::new(&clock, [1, 10]);
    let mut frames = FramePump::<_, _, 4>::new(&broker, FrameConfig::new(1)).with_cost_model(sizes);
    for bead in &beads {
        broker.on_invoke(&bead);
    }
    frames.pump(&mut jit, &clock, 1_000);
    assert!(beads.iter().all(|bead| bead.state() == BeadState::Compiled(0)));
    for bead in &beads {
        broker.on_invoke(&bead);
    }
    frames.predictor_mut().set_guess(1, 100);
    let report = frames.pump(&mut jit, &clock, 1_000);
    assert_eq!((report.held, report.jobs.remaining, report.jobs.stop == PumpStop::RetireFull), (1, 1, true));
}
