//! The table against the diagram, and the table against the broker.

extern crate std;

use core::num::NonZeroU32;
use core::ptr;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::{TRANSITIONS, Transition};
use crate::state::Phase;
use crate::{
    AlwaysRecompilePolicy, Bead, BlacklistDecay, Broker, Budget, CodeHandle, CompileRequest, Compiled, Compiler,
    DeoptDecision, Job, NoEvents, NoWake, TieredPolicy,
};

/// The legend line `state.rs` shows for `row`.
fn legend_line(row: &Transition) -> String {
    let when = if row.when.is_empty() { String::new() } else { format!(" ({})", row.when) };
    let generation = if row.bumps_generation { "generation +1" } else { "generation kept" };
    let from = format!("{:?}", row.from);
    let to = format!("{:?}", row.to);
    format!("({:>2}) {from:<11} ──► {to:<11} {}{when}; {generation}", row.number, row.function)
}

/// The diagram's doc lines, without the `//! ` prefix.
fn diagram() -> Vec<&'static str> {
    include_str!("../state.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect()
}

#[test]
fn the_diagram_shows_exactly_the_table() {
    let doc = diagram();
    let legend: Vec<&str> = doc.iter().copied().filter(|line| line.starts_with('(')).collect();
    let table: Vec<String> = TRANSITIONS.iter().map(legend_line).collect();
    assert_eq!(legend, table, "state.rs's legend must be the transition table, line for line");
    let picture: Vec<&str> = doc.iter().copied().filter(|line| !line.starts_with('(')).collect();
    for row in TRANSITIONS {
        let label = format!("({})", row.number);
        assert!(picture.iter().any(|line| line.contains(&label)), "arrow {label} is missing from the picture");
    }
    let numbers: Vec<u8> = TRANSITIONS.iter().map(|row| row.number).collect();
    assert_eq!(numbers, (1..=TRANSITIONS.len() as u8).collect::<Vec<_>>(), "arrows are numbered 1, 2, ...");
}

/// Hands out one piece of code per compile.
#[derive(Default)]
struct Jit {
    made: usize,
}

impl<'a> Compiler<&'a Bead> for Jit {
    type Error = ();
    fn compile(&mut self, _request: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, ()> {
        Ok(code(&mut self.made))
    }
    fn release(&mut self, _code: CodeHandle) {}
}

fn code(made: &mut usize) -> Compiled {
    *made += 1;
    let entry = ptr::without_provenance_mut(0x1000 * *made);
    Compiled::new(entry, CodeHandle::from_raw(*made).unwrap()).unwrap()
}

type Walk<'a> = Broker<&'a Bead, TieredPolicy, BlacklistDecay<AlwaysRecompilePolicy>, NoWake, NoEvents, 8, 8>;

fn walk_broker<'a>() -> Walk<'a> {
    // Tier 0 after one call, tier 1 after three: compiled code is warm and
    // can be promoted again; a blacklist decays after one call.
    let deopt = BlacklistDecay::new(AlwaysRecompilePolicy, NonZeroU32::MIN);
    Broker::new(TieredPolicy { tier1_threshold: 1, tier2_threshold: 3 }, deopt, NoWake, NoEvents)
}

/// Drives a fresh bead to `from` through the public API; a Compiling bead's
/// job is returned, still claimed.
fn drive_to<'b, 'a>(broker: &'b Walk<'a>, bead: &'a Bead, from: Phase, jit: &mut Jit) -> Option<Job<'b, &'a Bead>> {
    match from {
        Phase::Interpreted => {}
        Phase::Queued => drop(broker.on_invoke(&bead)),
        Phase::Compiling => {
            broker.on_invoke(&bead);
            return Some(broker.claim().unwrap());
        }
        Phase::Compiled => {
            broker.on_invoke(&bead);
            broker.pump(jit, Budget::unlimited());
        }
        Phase::Blacklisted => broker.blacklist(&bead).unwrap(),
        Phase::Invalidated => broker.invalidate(&bead).unwrap(),
    }
    None
}

/// Calls `row`'s function; a job it claims is returned, still claimed.
fn take<'b, 'a>(
    row: &Transition,
    broker: &'b Walk<'a>,
    bead: &'a Bead,
    job: Option<Job<'b, &'a Bead>>,
    jit: &mut Jit,
) -> Option<Job<'b, &'a Bead>> {
    let job_of = |job: Option<Job<'b, &'a Bead>>| job.expect("the row starts from Compiling");
    match row.function {
        "Broker::on_invoke" => {
            for _ in 0..16 {
                broker.on_invoke(&bead);
                if bead.word().phase() != row.from {
                    break;
                }
            }
        }
        "Broker::claim" => return Some(broker.claim().unwrap()),
        "Broker::cancel_queued" => assert_eq!(broker.cancel_queued(), 1),
        "Job::publish" => job_of(job).publish(code(&mut jit.made), None).unwrap(),
        "Job::fail" => job_of(job).fail(),
        "drop(Job)" => drop(job_of(job)),
        "Broker::swap_compiled" => broker.swap_compiled(&bead, code(&mut jit.made), 0).unwrap(),
        "Broker::record_bailout" => {
            let decision =
                if row.to == Phase::Blacklisted { DeoptDecision::Blacklist } else { DeoptDecision::Recompile };
            let guard = crate::BailoutReason::Guard { guard_id: 0, pc_offset: 0 };
            assert_eq!(broker.record_bailout_with(&bead, guard, |_| decision), Ok(decision));
        }
        "Broker::blacklist" => broker.blacklist(&bead).unwrap(),
        "Broker::blacklist_for" => assert_eq!(broker.blacklist_for(&bead, NonZeroU32::MIN), Ok(true)),
        "Broker::evict" => broker.evict(&bead, NonZeroU32::MIN).unwrap(),
        "Broker::reload" => {
            broker.reload(&bead).unwrap();
            return job;
        }
        "Broker::retire_installed" => broker.retire_installed(&bead).unwrap(),
        "Broker::invalidate" => broker.invalidate(&bead).unwrap(),
        "Broker::invalidate_or_hand_back" => {
            broker.invalidate_or_hand_back(&bead, |_| panic!("the ring has room")).unwrap()
        }
        other => panic!("no driver for {other}: add one with the row"),
    }
    None
}

#[test]
fn every_row_of_the_table_is_what_the_broker_does() {
    for row in TRANSITIONS {
        let bead = Bead::new(ptr::null_mut());
        let broker = walk_broker();
        let mut jit = Jit::default();
        let job = drive_to(&broker, &bead, row.from, &mut jit);
        assert_eq!(bead.word().phase(), row.from, "row {}: could not reach the from-state", row.number);
        let before = bead.generation();
        let still_claimed = take(row, &broker, &bead, job, &mut jit);
        let after = bead.word();
        assert_eq!(after.phase(), row.to, "row {} ({}): wrong to-state", row.number, row.function);
        let expected = if row.bumps_generation { (before.get() + 1) & 0xFF_FFFF } else { before.get() };
        assert_eq!(after.generation().get(), expected, "row {} ({}): generation rule", row.number, row.function);
        if let Some(job) = still_claimed {
            assert_eq!(
                job.is_stale(),
                row.bumps_generation,
                "row {}: a bump, and only a bump, stales the job",
                row.number
            );
        }
    }
}
