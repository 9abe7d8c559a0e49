//! What a case is made of: the broker's shape ([`Rings`]), its policies
//! ([`Setup`]) and the operations ([`Op`]) — and how raw bytes become one.
//!
//! Every field is public so proptest strategies, regression tests and the
//! fuzzer build cases the same way. Indices (beads, held jobs, sites) are
//! taken modulo what exists when the operation runs, so any value is valid:
//! no case can be rejected, which is what a fuzzer needs.
//!
//! The byte decoding is total (every byte string is a case; missing bytes
//! read as zero) and local (a byte changes one field or the choice of one
//! operation), so libFuzzer's mutations stay meaningful. It is not an
//! encoding to keep stable: regression tests spell their cases out as
//! [`Case`] values.

use core::ptr::{self, NonNull};
use std::sync::LazyLock;

use kiln_core::{MAX_TIER, OsrEntry, OsrTable};

/// One of two OSR tables a piece of code may carry, so a lookup tells which
/// code's table is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Entries at sites 10 and 20.
    A,
    /// Entries at sites 20 and 30.
    B,
}

static TABLE_A_ENTRIES: [OsrEntry; 2] = [
    OsrEntry { site: 10, code: ptr::without_provenance_mut(0xA010) },
    OsrEntry { site: 20, code: ptr::without_provenance_mut(0xA020) },
];
static TABLE_B_ENTRIES: [OsrEntry; 2] = [
    OsrEntry { site: 20, code: ptr::without_provenance_mut(0xB020) },
    OsrEntry { site: 30, code: ptr::without_provenance_mut(0xB030) },
];
static TABLE_A: LazyLock<OsrTable<'static>> = LazyLock::new(|| OsrTable::new(&TABLE_A_ENTRIES).expect("valid"));
static TABLE_B: LazyLock<OsrTable<'static>> = LazyLock::new(|| OsrTable::new(&TABLE_B_ENTRIES).expect("valid"));

/// Loop sites probed (`Op::Backedge::site` and `Op::Submit::osr_site`
/// index it): in table A only, in both, in B only, in neither.
pub const SITES: [u64; 4] = [10, 20, 30, 40];

impl Table {
    /// The table itself, in a static (never changed, never freed).
    pub(crate) fn table(self) -> &'static OsrTable<'static> {
        match self {
            Table::A => &TABLE_A,
            Table::B => &TABLE_B,
        }
    }

    /// What `osr_entry(site)` must return with `table` published, read from
    /// the entry arrays rather than through `OsrTable::lookup` (the code
    /// under test).
    pub(crate) fn lookup(table: Option<Table>, site: u64) -> Option<NonNull<()>> {
        let entries: &[OsrEntry] = match table? {
            Table::A => &TABLE_A_ENTRIES,
            Table::B => &TABLE_B_ENTRIES,
        };
        entries.iter().find(|entry| entry.site == site).and_then(|entry| NonNull::new(entry.code))
    }
}

/// One operation on the broker (and, side by side, on the model).
///
/// `bead` is taken modulo the case's bead count, `job` / the index of the
/// `*Held` operations modulo the number of held jobs (nothing happens if
/// none is held), `site` and `osr_site` index [`SITES`] modulo its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `calls` calls of `Broker::on_invoke_with`.
    Invoke {
        /// Which bead.
        bead: usize,
        /// How many calls.
        calls: u32,
    },
    /// `times` loop back-edges (`Broker::on_backedge_with`) at `SITES[site]`.
    Backedge {
        /// Which bead.
        bead: usize,
        /// Index into [`SITES`].
        site: usize,
        /// How many back-edges.
        times: u32,
    },
    /// `Broker::pump` with a budget of `jobs` jobs (`None`: unlimited).
    Pump {
        /// The job budget.
        jobs: Option<u32>,
    },
    /// `Broker::claim`; a claimed job is held until a `*Held` operation.
    Claim,
    /// `Job::run` on a held job, with the fake compiler.
    RunHeld(usize),
    /// `Job::publish` of fresh host-made code on a held job.
    PublishHeld {
        /// Which held job.
        job: usize,
        /// The OSR table the code carries.
        table: Option<Table>,
    },
    /// `Job::fail` on a held job.
    FailHeld(usize),
    /// Drops a held job (abandons it).
    DropHeld(usize),
    /// `Broker::invalidate`.
    Invalidate(usize),
    /// `Broker::reload`.
    Reload(usize),
    /// `Broker::record_bailout` with a guard reason.
    Bailout(usize),
    /// `Broker::blacklist`.
    Blacklist(usize),
    /// `Broker::swap_compiled` (or `swap_compiled_with_osr`) of fresh code.
    Swap {
        /// Which bead.
        bead: usize,
        /// The tier claimed for the code (may be out of range).
        tier: u8,
        /// The OSR table the code carries.
        table: Option<Table>,
        /// Whether the swap publishes the table.
        with_osr: bool,
    },
    /// `Broker::submit_with`: a host-requested compile.
    Submit {
        /// Which bead.
        bead: usize,
        /// The requested tier (may be out of range).
        tier: u8,
        /// An OSR job at `SITES[site]`, or an invoke job.
        osr_site: Option<usize>,
    },
    /// `Broker::quiesce`.
    Quiesce,
    /// `Broker::cancel_queued`.
    CancelQueued,
    /// Makes the fake compiler fail (`true`) or succeed from now on.
    CompileFails(bool),
    /// `Broker::set_queue_limit`.
    QueueLimit(usize),
}

/// Which real kiln-core deopt policy a case uses (wrapped to log what it is
/// asked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeoptChoice {
    /// `ThresholdDeoptPolicy::new(limit)`.
    Threshold(u32),
    /// `TieredDeoptPolicy::default()`.
    Tiered,
    /// `ExponentialBackoffPolicy::new(3, 2)`.
    Backoff,
    /// `BlacklistDecay::new(ThresholdDeoptPolicy::new(limit), after)`;
    /// `after` 0 is read as 1.
    Decay {
        /// The threshold policy's limit.
        limit: u32,
        /// Calls after which a blacklist decays.
        after: u32,
    },
}

/// The broker's policies and how many beads a case has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Beads in the case (at least 1).
    pub beads: usize,
    /// The two-tier `TierLadder`'s call thresholds.
    pub thresholds: [u32; 2],
    /// The ladder's back-edge threshold.
    pub osr_threshold: u32,
    /// `queue_full_cooldown` in calls; 0 is read as 1.
    pub cooldown: u32,
    /// The deopt policy.
    pub deopt: DeoptChoice,
}

/// The broker's ring sizes (const generics, so a fixed menu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rings {
    /// Queue 4, retire ring 4: room for a job per bead; the ring fills after
    /// a few swaps.
    Queue4Retire4,
    /// Queue 2, retire ring 1: `QueueFull`, `RetireFull` and claims held
    /// back for retire room on most steps.
    Queue2Retire1,
    /// Queue 8, retire ring 8: rarely full, so long promotion and swap
    /// chains run.
    Queue8Retire8,
    /// Queue 3, retire ring 2: an odd queue size against a small ring.
    Queue3Retire2,
}

impl Rings {
    /// `(queue capacity, retire capacity)`.
    pub const fn capacities(self) -> (usize, usize) {
        match self {
            Rings::Queue4Retire4 => (4, 4),
            Rings::Queue2Retire1 => (2, 1),
            Rings::Queue8Retire8 => (8, 8),
            Rings::Queue3Retire2 => (3, 2),
        }
    }
}

/// A whole case: run it with [`Case::run`](crate::model::Case::run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The ring sizes.
    pub rings: Rings,
    /// Policies and bead count.
    pub setup: Setup,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// Most operations [`Case::from_bytes`] decodes, so one fuzz input stays
/// fast to run.
pub const MAX_DECODED_OPS: usize = 400;

/// Reads bytes one at a time; zero once exhausted.
struct Bytes<'a> {
    rest: &'a [u8],
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&first, rest)) => {
                self.rest = rest;
                first
            }
            None => 0,
        }
    }

    /// A value in `low..=high`.
    fn range(&mut self, low: u32, high: u32) -> u32 {
        low + u32::from(self.byte()) % (high - low + 1)
    }

    fn index(&mut self, below: usize) -> usize {
        usize::from(self.byte()) % below
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn table(&mut self) -> Option<Table> {
        [None, Some(Table::A), Some(Table::B)][self.index(3)]
    }

    /// The ladder's two tiers, one above it, one out of range (4:4:1:1, as
    /// the proptest strategy weighs them).
    fn tier(&mut self) -> u8 {
        match self.index(10) {
            0..=3 => 0,
            4..=7 => 1,
            8 => 2,
            _ => MAX_TIER + 1,
        }
    }

    fn op(&mut self) -> Op {
        /// Relative weights, the proptest strategy's, in the order of the
        /// `match` below.
        const WEIGHTS: [u32; 18] = [28, 8, 10, 8, 4, 2, 2, 4, 1, 4, 6, 1, 6, 4, 10, 2, 4, 1];
        const TOTAL: u32 = {
            let mut total = 0;
            let mut index = 0;
            while index < WEIGHTS.len() {
                total += WEIGHTS[index];
                index += 1;
            }
            total
        };
        // Spread the byte over the total so every operation gets its share.
        let mut pick = u32::from(self.byte()) * TOTAL / 256;
        let mut which = 0;
        while pick >= WEIGHTS[which] {
            pick -= WEIGHTS[which];
            which += 1;
        }
        match which {
            0 => Op::Invoke { bead: self.index(4), calls: self.range(1, 6) },
            1 => Op::Backedge { bead: self.index(4), site: self.index(SITES.len()), times: self.range(1, 6) },
            2 => Op::Pump { jobs: self.flag().then(|| self.range(0, 3)) },
            3 => Op::Claim,
            4 => Op::RunHeld(self.index(4)),
            5 => Op::PublishHeld { job: self.index(4), table: self.table() },
            6 => Op::FailHeld(self.index(4)),
            7 => Op::DropHeld(self.index(4)),
            8 => Op::Invalidate(self.index(4)),
            9 => Op::Reload(self.index(4)),
            10 => Op::Bailout(self.index(4)),
            11 => Op::Blacklist(self.index(4)),
            12 => Op::Swap { bead: self.index(4), tier: self.tier(), table: self.table(), with_osr: self.flag() },
            13 => Op::Submit {
                bead: self.index(4),
                tier: self.tier(),
                osr_site: self.flag().then(|| self.index(SITES.len())),
            },
            14 => Op::Quiesce,
            15 => Op::CancelQueued,
            16 => Op::CompileFails(self.flag()),
            _ => Op::QueueLimit(self.index(6)),
        }
    }
}

impl Case {
    /// Decodes a case from raw bytes (the fuzzer's input): the first seven
    /// bytes choose the rings and the [`Setup`] (over the proptest
    /// strategy's ranges), then each operation takes one byte for its kind
    /// (weighted as the proptest strategy weighs them) and one per field,
    /// up to [`MAX_DECODED_OPS`] operations. Any byte string is a case.
    pub fn from_bytes(bytes: &[u8]) -> Case {
        let mut input = Bytes { rest: bytes };
        let rings =
            [Rings::Queue4Retire4, Rings::Queue2Retire1, Rings::Queue8Retire8, Rings::Queue3Retire2][input.index(4)];
        let beads = 3 + input.index(2);
        let first = input.range(1, 4);
        let step = input.range(1, 8);
        let osr_threshold = input.range(1, 8);
        let cooldown = input.range(1, 6);
        let deopt = match input.index(4) {
            0 => DeoptChoice::Threshold(input.range(0, 2)),
            1 => DeoptChoice::Tiered,
            2 => DeoptChoice::Backoff,
            _ => DeoptChoice::Decay { limit: input.range(0, 1), after: input.range(1, 4) },
        };
        let setup = Setup { beads, thresholds: [first, first + step], osr_threshold, cooldown, deopt };
        let mut ops = Vec::new();
        while !input.rest.is_empty() && ops.len() < MAX_DECODED_OPS {
            ops.push(input.op());
        }
        Case { rings, setup, ops }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_reachable_from_one_byte() {
        let mut kinds = std::collections::HashSet::new();
        for byte in 0..=255u8 {
            let op = Bytes { rest: &[byte, 1, 1, 1, 1] }.op();
            kinds.insert(core::mem::discriminant(&op));
        }
        assert_eq!(kinds.len(), 18);
    }

    #[test]
    fn short_inputs_decode_with_zeros() {
        let case = Case::from_bytes(&[]);
        assert_eq!(case.rings, Rings::Queue4Retire4);
        assert_eq!(case.setup.beads, 3);
        assert_eq!(case.setup.deopt, DeoptChoice::Threshold(0));
        assert!(case.ops.is_empty());
        let case = Case::from_bytes(&[1, 1, 3, 7, 0, 5, 3, 0, 0, 2, 2, 0]);
        assert_eq!(case.rings, Rings::Queue2Retire1);
        assert_eq!(
            case.setup,
            Setup {
                beads: 4,
                thresholds: [4, 4 + 8],
                osr_threshold: 1,
                cooldown: 6,
                deopt: DeoptChoice::Decay { limit: 0, after: 1 },
            }
        );
        assert_eq!(case.ops, vec![Op::Invoke { bead: 2, calls: 1 }]);
    }
}
