//! # kiln-canary
//!
//! A freestanding x86_64 Linux program — no std, no allocator, no libc, its
//! own `_start` — that runs kiln-core's state machine end to end, with
//! kiln-core built with its `critical-section` feature. If kiln-core (or a
//! dependency) ever needed std, `alloc` or libc, this binary would stop
//! linking; `ci/canary.sh` also inspects the linked binary for them.
//!
//! The scenario, all on static beads and a `const`-built static [`Broker`]:
//!
//! 0. the runtime's own C memory functions (`mem.rs`) are checked first;
//! 1. beads: four `static`s and one registered in a static [`BeadPool`];
//! 2. counting: calls are interpreted until each bead crosses its threshold
//!    and is queued (one coalesced wake-up, a full queue refusing one more);
//! 3. pumping with budgets (job limit, deadline, none): three compiles
//!    publish real functions of this binary, one fails and goes back to the
//!    interpreter;
//! 4. the published entries are called and must agree with the interpreter;
//! 5. OSR: back-edges of an interpreted loop queue an OSR compile, and the
//!    loop continues natively through the published [`OsrTable`];
//! 6. a host `swap_compiled`, then two `quiesce`s release the old code;
//! 7. a bailout, recompile and release;
//! 8. invalidate (through the pool), then everything is invalidated and
//!    every handle the JIT handed out must have been released exactly once.
//!
//! Exit status: 0 if every check passed; the number of the first failed
//! check otherwise (see `check.rs`); 255 on a panic.
#![no_std]
#![no_main]

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("kiln-canary is an x86_64 Linux program: build it with --target x86_64-unknown-linux-gnu");

mod check;
mod host;
mod mem;
mod program;
mod rt;

use core::cell::Cell;
use core::fmt::Write as _;
use core::ptr::NonNull;

use kiln_core::{
    BailoutReason, Bead, BeadPool, BeadState, Broker, Budget, Clock, DeoptDecision, JobKind, JobOutcome, KilnError,
    OsrTable, OsrTableError, PumpStop, ThresholdDeoptPolicy, ThresholdPolicy,
};

use crate::check::Checks;
use crate::host::{CanaryJit, CountingEvents, CountingPump};
use crate::program::{
    CUBE, Function, LoopFrame, Native, OSR_ENTRIES, OsrNative, SQUARE, SUM_BELOW, SUM_LOOP_SITE, TRIPLE, UNJITTABLE,
    UNSORTED_OSR_ENTRIES,
};
use crate::rt::Out;

/// Calls before a function is compiled.
const THRESHOLD: u32 = 20;
/// Loop back-edges before an OSR compile.
const OSR_THRESHOLD: u32 = 100;
/// The interpreted loop pumps compile work every this many iterations.
const PUMP_EVERY: i64 = 32;
/// Queue capacity: exactly the four beads that cross the threshold together.
const QUEUE: usize = 4;
/// Retire ring capacity.
const RETIRE: usize = 4;

type CanaryBroker =
    Broker<&'static Bead, ThresholdPolicy, ThresholdDeoptPolicy, CountingPump, CountingEvents, QUEUE, RETIRE>;

/// The broker, built at compile time. Deopt: one recompile, then blacklist.
static BROKER: CanaryBroker = Broker::new(
    ThresholdPolicy::new(THRESHOLD).osr_threshold(OSR_THRESHOLD),
    ThresholdDeoptPolicy::new(1),
    CountingPump::new(),
    CountingEvents::new(),
);

static SQUARE_BEAD: Bead = Bead::new(SQUARE.core());
static CUBE_BEAD: Bead = Bead::new(CUBE.core());
static SUM_BEAD: Bead = Bead::new(SUM_BELOW.core());
static UNJITTABLE_BEAD: Bead = Bead::new(UNJITTABLE.core());
/// `triple`'s bead comes from here.
static POOL: BeadPool<2> = BeadPool::new();

/// A clock that ticks once per reading, so a timed pump sees time pass.
#[derive(Debug, Default)]
struct StepClock(Cell<u64>);

impl Clock for StepClock {
    fn now(&self) -> u64 {
        let now = self.0.get();
        self.0.set(now + 1);
        now
    }
}

/// The interpreter's call sequence for `bead`: ask kiln, then run native
/// code or interpret. Counts native calls.
struct Caller {
    native_calls: u32,
}

impl Caller {
    fn call(&mut self, bead: &'static Bead, function: &Function, x: i64) -> i64 {
        match BROKER.on_invoke(&bead) {
            Some(entry) => {
                self.native_calls += 1;
                // Compiles hand out `Function::native` (host.rs), and the only
                // hand-installed code is `square_saturating`, also a `Native`.
                // SAFETY: every entry this broker publishes is a `Native` of this binary.
                let native = unsafe { core::mem::transmute::<*mut (), Native>(entry.as_ptr()) };
                native(x)
            }
            None => (function.interpret)(x),
        }
    }
}

fn address(native: Native) -> *mut () {
    native as *mut ()
}

fn entry_of(bead: &Bead) -> Option<*mut ()> {
    bead.compiled().map(NonNull::as_ptr)
}

/// Runs the canary; returns its exit status (only 0: failures exit early).
pub(crate) fn run() -> u8 {
    let mut checks = Checks::default();
    let c = &mut checks;

    // The OSR table `sum_below`'s code carries. It outlives `jit`, and the
    // canary releases all code before returning (checked at the end).
    let osr_table = c.ok(OsrTable::new(&OSR_ENTRIES), "the static OSR entries form a valid table");
    let mut jit = CanaryJit::new(&osr_table);
    let mut caller = Caller { native_calls: 0 };
    let pump = BROKER.wake_hook();
    let events = BROKER.events();

    // 0. The runtime's C memory functions, which compiled code may call.
    mem::self_test(c);

    // 1. Beads.
    let triple = c.ok(POOL.register(TRIPLE.core()), "a pool bead registers");
    c.eq(POOL.in_use(), 1, "pool beads in use after registering");
    let hot: [(&'static Bead, &Function); 4] =
        [(&SQUARE_BEAD, &SQUARE), (&CUBE_BEAD, &CUBE), (triple, &TRIPLE), (&UNJITTABLE_BEAD, &UNJITTABLE)];

    // 2. Counting up to the threshold, interpreted.
    let mut mismatches = 0;
    for call in 1..THRESHOLD {
        for (bead, function) in hot {
            let x = i64::from(call) - 10;
            if caller.call(bead, function, x) != (function.interpret)(x) {
                mismatches += 1;
            }
        }
    }
    c.eq(mismatches, 0, "interpreted results below the threshold");
    c.eq(caller.native_calls, 0, "no native calls below the threshold");
    c.eq(BROKER.queue_len(), 0, "nothing queued below the threshold");
    c.eq(pump.wakes.get(), 0, "no wake-up below the threshold");
    c.that(hot.iter().all(|(bead, _)| bead.state() == BeadState::Interpreted), "all beads interpreted");
    for (bead, function) in hot {
        caller.call(bead, function, 3);
    }
    c.eq(BROKER.queue_len(), 4, "the threshold call queues each bead");
    c.eq(events.promoted.get(), 4, "promotion events");
    c.eq(pump.wakes.get(), 1, "four promotions, one coalesced wake-up");
    c.that(hot.iter().all(|(bead, _)| bead.state() == BeadState::Queued), "all beads queued");
    c.eq(BROKER.submit(&&SUM_BEAD, 0, JobKind::Invoke), Err(KilnError::QueueFull), "a full queue refuses");
    c.eq(BROKER.stats().queue_full, 1, "queue-full counter");
    c.eq(SUM_BEAD.state(), BeadState::Interpreted, "a refused bead is back at rest");
    for (bead, function) in hot {
        caller.call(bead, function, 4);
    }
    c.eq(caller.native_calls, 0, "queued beads still interpret");

    // 3. Pumping with budgets.
    let entered = rt::critical_sections_entered();
    let report = BROKER.pump(&mut jit, Budget::jobs(2));
    c.eq((report.ran, report.published, report.remaining), (2, 2, 2), "a two-job budget runs two jobs");
    c.eq(report.stop, PumpStop::JobLimit, "... and stops on its job limit");
    c.eq(pump.wakes.get(), 2, "a pump that leaves work wakes again");
    c.that(rt::critical_sections_entered() > entered, "the broker's lock is the canary's critical section");
    let clock = StepClock::default();
    let report = BROKER.pump(&mut jit, Budget::unlimited().until(&clock, 0));
    c.eq((report.ran, report.stop), (0, PumpStop::Deadline), "a passed deadline runs nothing");
    let report = BROKER.pump(&mut jit, Budget::unlimited().until(&clock, u64::MAX));
    c.eq((report.ran, report.published, report.failed), (2, 1, 1), "the rest: one compile, one failure");
    c.eq((report.remaining, report.stop), (0, PumpStop::Idle), "... and the queue is empty");
    c.that(report.ticks > 0, "a timed pump measures its ticks");
    c.eq(jit.compiles, 3, "three compiles returned code");
    c.eq(events.compiled.get(), 3, "compiled events");
    c.eq(events.compile_failed.get(), 1, "compile-failed events");
    c.eq(UNJITTABLE_BEAD.state(), BeadState::Interpreted, "a failed compile goes back to the interpreter");
    c.eq(UNJITTABLE_BEAD.bailout_count(), 1, "a failed compile counts as a bailout");
    for (bead, function) in &hot[..3] {
        c.eq(bead.state(), BeadState::Compiled(0), function.name);
        c.eq(bead.fast_entry().map(NonNull::as_ptr), function.native.map(address), "the published entry");
    }
    let [old_square, old_cube, old_triple] =
        ["square", "cube", "triple"].map(|name| c.some(jit.latest(name), "each function compiled").handle);
    c.that(
        old_square != old_cube && old_cube != old_triple && old_square != old_triple,
        "each compile has its own handle",
    );

    // 4. Calling the published entries.
    let mut mismatches = 0;
    for x in -10..=10 {
        for (bead, function) in hot {
            if caller.call(bead, function, x) != (function.interpret)(x) {
                mismatches += 1;
            }
        }
    }
    c.eq(mismatches, 0, "native results agree with the interpreter");
    c.eq(caller.native_calls, 3 * 21, "compiled beads run natively, the failed one interprets");
    c.eq((SQUARE.interpret)(-7), 49, "the interpreter's square");
    c.eq((CUBE.interpret)(-3), -27, "the interpreter's cube");

    // 5. OSR: an interpreted loop that pumps now and then.
    c.eq(BROKER.on_invoke(&&SUM_BEAD), None, "sum_below starts interpreted");
    let n = 1_000;
    let mut frame = LoopFrame::new(n);
    let sum = loop {
        if !frame.step() {
            break frame.acc;
        }
        if let Some(entry) = BROKER.on_backedge(&&SUM_BEAD, SUM_LOOP_SITE) {
            // SAFETY: OSR entries come only from `OSR_ENTRIES`, whose code
            // are all `OsrNative`s of this binary.
            let resume = unsafe { core::mem::transmute::<*mut (), OsrNative>(entry.as_ptr()) };
            break resume(&mut frame);
        }
        if frame.i % PUMP_EVERY == 0 {
            let _ = BROKER.pump(&mut jit, Budget::jobs(1));
        }
    };
    c.eq(sum, n * (n - 1) / 2, "the loop's result across OSR");
    let osr_window = i64::from(OSR_THRESHOLD)..=i64::from(OSR_THRESHOLD) + PUMP_EVERY;
    c.that(osr_window.contains(&frame.resumed_at), "the loop entered native code once the OSR compile published");
    c.eq(
        jit.latest("sum_below").map(|record| record.kind),
        Some(JobKind::Osr { site: SUM_LOOP_SITE }),
        "an OSR compile for the loop's site",
    );
    c.eq(SUM_BEAD.state(), BeadState::Compiled(0), "sum_below compiled");
    let lookup = |site| SUM_BEAD.osr_entry(site).map(NonNull::as_ptr);
    c.eq(lookup(SUM_LOOP_SITE), Some(OSR_ENTRIES[1].code), "the bead's OSR entry for the loop");
    c.eq(lookup(8), Some(OSR_ENTRIES[0].code), "the bead's OSR entry for another site");
    c.eq(lookup(40), Some(OSR_ENTRIES[2].code), "the bead's OSR entry for the last site");
    c.eq(lookup(12), None, "no OSR entry between sites");
    c.eq(osr_table.lookup(41), None, "no OSR entry past the last site");
    c.eq(
        OsrTable::new(&UNSORTED_OSR_ENTRIES).err(),
        Some(OsrTableError::Unsorted { index: 1 }),
        "an unsorted table is refused",
    );
    let native_before = caller.native_calls;
    c.eq(caller.call(&SUM_BEAD, &SUM_BELOW, 77), 77 * 76 / 2, "sum_below's native entry");
    c.eq(caller.native_calls, native_before + 1, "... was called natively");

    // 6. A host swap, then two quiesces.
    let faster = c.ok(jit.code(address(program::square_saturating)), "the JIT hands out code for a swap");
    let faster_handle = faster.handle();
    c.that(BROKER.swap_compiled(&&SQUARE_BEAD, faster, 0).is_ok(), "swap_compiled");
    c.eq(entry_of(&SQUARE_BEAD), Some(address(program::square_saturating)), "the swapped-in entry is published");
    c.eq(caller.call(&SQUARE_BEAD, &SQUARE, -12), 144, "the swapped-in code runs");
    c.eq(BROKER.stats().retire_depth, 1, "the old code is retired");
    c.that(jit.is_live(old_square), "retired code is not released before quiescence");
    c.eq(BROKER.quiesce(&mut jit), 0, "first quiesce releases nothing");
    c.that(jit.is_live(old_square), "... the old code is still alive");
    c.eq(BROKER.quiesce(&mut jit), 1, "second quiesce releases the old code");
    c.that(!jit.is_live(old_square), "... which the JIT got back");
    c.that(jit.is_live(faster_handle), "... and not the new code");
    c.eq((jit.released, events.released.get()), (1, 1), "releases counted");

    // 7. A bailout: back to the interpreter, recompiled on the next call.
    let guard = BailoutReason::Guard { guard_id: 1, pc_offset: 0 };
    c.eq(BROKER.record_bailout(&&CUBE_BEAD, guard), Ok(DeoptDecision::Recompile), "a first bailout recompiles");
    c.eq((CUBE_BEAD.state(), entry_of(&CUBE_BEAD)), (BeadState::Interpreted, None), "bailed-out code unpublished");
    c.eq(caller.call(&CUBE_BEAD, &CUBE, 5), 125, "a bailed-out function interprets");
    c.eq(CUBE_BEAD.state(), BeadState::Queued, "... and, still hot, is queued again");
    let job = c.ok(BROKER.claim(), "the recompile can be claimed");
    c.eq(job.run(&mut jit), JobOutcome::Published, "a claimed job publishes");
    let new_cube = c.some(jit.latest("cube"), "cube recompiled").handle;
    c.that(new_cube != old_cube, "the recompile has a new handle");
    c.eq(caller.call(&CUBE_BEAD, &CUBE, -4), -64, "the recompiled code runs");
    BROKER.quiesce(&mut jit);
    BROKER.quiesce(&mut jit);
    c.that(!jit.is_live(old_cube), "the bailed-out code is released after two quiesces");

    // 8. Invalidate, through the pool.
    let invalidated = POOL.invalidate(triple, |bead| BROKER.invalidate(&bead));
    c.eq(invalidated, Ok(()), "invalidate");
    c.eq(triple.state(), BeadState::Invalidated, "an invalidated bead");
    c.eq(BROKER.on_invoke(&triple), None, "... never runs native code again");
    c.eq(caller.call(triple, &TRIPLE, 7), 21, "... and interprets");
    c.eq(BROKER.invalidate(&triple), Err(KilnError::AlreadyInvalidated), "a second invalidate is refused");
    c.eq(events.invalidated.get(), 1, "invalidated runs once");
    c.eq(POOL.prune(), 1, "the pool recycles the slot");
    c.eq(POOL.in_use(), 0, "no pool beads in use");
    BROKER.quiesce(&mut jit);
    BROKER.quiesce(&mut jit);
    c.that(!jit.is_live(old_triple), "the invalidated code is released after two quiesces");

    // Teardown: nothing may stay retired or leak.
    for bead in [&SQUARE_BEAD, &CUBE_BEAD, &SUM_BEAD, &UNJITTABLE_BEAD] {
        c.eq(BROKER.invalidate(&bead), Ok(()), "invalidate at teardown");
    }
    BROKER.quiesce(&mut jit);
    BROKER.quiesce(&mut jit);
    c.eq(jit.live(), 0, "every handle was released");
    c.eq(jit.released, jit.handed_out(), "... exactly once");
    c.eq(jit.bad_releases, 0, "no handle released twice or unknown");
    let stats = BROKER.stats();
    c.eq(stats.released, jit.handed_out(), "the broker counted every release");
    c.eq(stats.retire_depth, 0, "the retire ring is empty");
    c.eq(stats.compiles, events.compiled.get(), "compile counters agree");
    c.that(!rt::in_critical_section(), "every critical section was left");

    let _ = writeln!(
        Out::stdout(),
        "kiln canary: all {} checks passed ({} compiles, {} native calls, {} critical sections)",
        checks.passed(),
        jit.compiles,
        caller.native_calls,
        rt::critical_sections_entered(),
    );
    0
}
