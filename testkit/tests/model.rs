//! Model-based test of kiln-core's broker: random operation sequences from
//! proptest run against a real `Broker` and the reference model side by side
//! (`kiln_testkit::model`, whose docs list every check), plus the cases the
//! fuzzer (`fuzz/`, target `broker_ops`) found, kept as regression tests.

use kiln_core::MAX_TIER;
use kiln_testkit::model::{self, Case, DeoptChoice, Op, Rings, SITES, Setup, Table};
use proptest::prelude::*;

fn table() -> impl Strategy<Value = Option<Table>> {
    prop_oneof![Just(None), Just(Some(Table::A)), Just(Some(Table::B))]
}

/// Tiers for swaps and submits: the ladder's two, one above it, one out of range.
fn tier() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8), 1 => Just(MAX_TIER + 1)]
}

fn op() -> impl Strategy<Value = Op> {
    let bead = 0..4usize;
    prop_oneof![
        28 => (bead.clone(), 1..=6u32).prop_map(|(bead, calls)| Op::Invoke { bead, calls }),
        8 => (bead.clone(), 0..SITES.len(), 1..=6u32).prop_map(|(bead, site, times)| Op::Backedge { bead, site, times }),
        10 => prop::option::of(0..=3u32).prop_map(|jobs| Op::Pump { jobs }),
        8 => Just(Op::Claim),
        4 => (0..4usize).prop_map(Op::RunHeld),
        2 => (0..4usize, table()).prop_map(|(job, table)| Op::PublishHeld { job, table }),
        2 => (0..4usize).prop_map(Op::FailHeld),
        4 => (0..4usize).prop_map(Op::DropHeld),
        1 => bead.clone().prop_map(Op::Invalidate),
        4 => bead.clone().prop_map(Op::Reload),
        6 => bead.clone().prop_map(Op::Bailout),
        1 => bead.clone().prop_map(Op::Blacklist),
        6 => (bead.clone(), tier(), table(), any::<bool>())
            .prop_map(|(bead, tier, table, with_osr)| Op::Swap { bead, tier, table, with_osr }),
        4 => (bead, tier(), prop::option::of(0..SITES.len()))
            .prop_map(|(bead, tier, osr_site)| Op::Submit { bead, tier, osr_site }),
        10 => Just(Op::Quiesce),
        2 => Just(Op::CancelQueued),
        4 => any::<bool>().prop_map(Op::CompileFails),
        1 => (0..=5usize).prop_map(Op::QueueLimit),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    let deopt = prop_oneof![
        (0..=2u32).prop_map(DeoptChoice::Threshold),
        Just(DeoptChoice::Tiered),
        Just(DeoptChoice::Backoff),
        (0..=1u32, 1..=4u32).prop_map(|(limit, after)| DeoptChoice::Decay { limit, after }),
    ];
    (3..=4usize, 1..=4u32, 1..=8u32, 1..=8u32, 1..=6u32, deopt).prop_map(
        |(beads, first, step, osr_threshold, cooldown, deopt)| Setup {
            beads,
            thresholds: [first, first + step],
            osr_threshold,
            cooldown,
            deopt,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Room for a job per bead; the retire ring fills after a few swaps.
    #[test]
    fn broker_matches_the_model_queue_4_retire_4(setup in setup(), ops in prop::collection::vec(op(), 1..=200)) {
        model::run::<4, 4>(&setup, &ops);
    }

    /// Queue and ring almost always full: QueueFull, RetireFull and claims
    /// held back for retire room on most steps.
    #[test]
    fn broker_matches_the_model_queue_2_retire_1(setup in setup(), ops in prop::collection::vec(op(), 1..=200)) {
        model::run::<2, 1>(&setup, &ops);
    }
}

// ---- the runner itself ----

/// A written case that promotes, compiles, swaps and releases, so the
/// summary shows work done (a runner that ran nothing would pass the
/// proptests too).
#[test]
fn a_written_case_promotes_compiles_and_releases() {
    let case = Case {
        rings: Rings::Queue2Retire1,
        setup: Setup { beads: 3, thresholds: [1, 2], osr_threshold: 1, cooldown: 1, deopt: DeoptChoice::Threshold(1) },
        ops: vec![
            Op::Invoke { bead: 0, calls: 2 },
            Op::Pump { jobs: None },
            Op::Invoke { bead: 0, calls: 3 },
            Op::Pump { jobs: None },
            Op::Swap { bead: 1, tier: 1, table: Some(Table::A), with_osr: true },
            Op::Quiesce,
            Op::Quiesce,
        ],
    };
    let summary = case.run();
    assert_eq!(summary.operations, 7);
    assert!(summary.stats.promotions >= 1 && summary.stats.compiles >= 1, "{summary:?}");
    assert!(summary.code_created >= 2, "{summary:?}");
}

/// Bytes decode to a case that runs (the fuzz target's path).
#[test]
fn bytes_decode_to_a_case_that_runs() {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1_000).collect();
    let case = Case::from_bytes(&bytes);
    assert!(!case.ops.is_empty());
    case.run();
}

// ---- cases the fuzzer found ----
//
// `fuzz/` (target broker_ops) found no mismatch between kiln-core and the
// model in its runs so far: 1,623 s and 1,537,993 cases in four runs (the
// last 301 s, 349,089 cases, with the call and back-edge count checks,
// after replaying the 5,907-input corpus). The case below is what it found in 160 s from an empty corpus when
// the model was broken on purpose (a claim held back for retire room
// re-queued its entry at its old place), minimised by `cargo fuzz tmin`: it
// shows the fuzzer reaches that corner and pins the broker's behaviour there.

/// Bead 1 (compiled, promoted to tier 1) needs a retire slot to be claimed;
/// the one-slot ring is full (bead 2's reload), so the first claim is refused
/// and must move bead 1's entry behind bead 2's equally hot one: the second
/// claim gets bead 2, which needs no slot. 31 fuzz bytes:
/// `01 00 00 05 ff ff ff ff ff 00 65 a6 3f 46 46 46 46 a6 00 65 a6 3a 09 80 a6 a6 3f 46 a6 80 7d`.
#[test]
fn a_claim_refused_for_retire_room_moves_its_entry_behind_equal_peers() {
    let case = Case {
        rings: Rings::Queue2Retire1,
        setup: Setup {
            beads: 3,
            thresholds: [1, 7],
            osr_threshold: 8,
            cooldown: 4,
            deopt: DeoptChoice::Decay { limit: 1, after: 4 },
        },
        ops: vec![
            Op::Invoke { bead: 1, calls: 5 },
            Op::Invoke { bead: 2, calls: 5 },
            Op::Backedge { bead: 2, site: 2, times: 1 },
            Op::Pump { jobs: None },
            Op::Invoke { bead: 1, calls: 3 },
            Op::Reload(2),
            Op::Invoke { bead: 2, calls: 5 },
            Op::Claim,
            Op::Claim,
        ],
    };
    let bytes = [
        0x01, 0x00, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x65, 0xa6, 0x3f, 0x46, 0x46, 0x46, 0x46, 0xa6,
        0x00, 0x65, 0xa6, 0x3a, 0x09, 0x80, 0xa6, 0xa6, 0x3f, 0x46, 0xa6, 0x80, 0x7d,
    ];
    assert_eq!(Case::from_bytes(&bytes), case, "the fuzz input decodes to this case");
    let summary = case.run();
    assert_eq!(summary.stats.retire_depth, 1, "the ring was full at the claims: {summary:?}");
}
