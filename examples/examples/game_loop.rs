//! game_loop: a headless 60 Hz game whose entity scripts kiln promotes from
//! the interpreter to Cranelift code, with the compiles run three ways.
//!
//! The game has 32 kinds of entity (`--kinds`); each kind's behaviour is a script
//! function in the examples' tiny language (`kindN(state, frame, id)`, a
//! small loop of arithmetic, 2 to 17 statements per iteration, so compile
//! costs differ by kind). Every frame updates every live entity by calling
//! its kind's script through kiln: native code if kiln has it, else the
//! interpreter. Half the kinds are in the level from frame 0 (a burst of
//! promotions); the others arrive in waves over the first half of the run.
//! Every kind turns hot after 1,000 calls.
//!
//! Modes, each on a fresh kiln with the same game:
//!
//! - (a) **frame pump** (kiln-host `FramePump`): compiles run on the game
//!   thread at the end of each frame, 2 ms of compile budget per frame
//!   (`--budget-us`),
//!   with costs predicted per function size from measured compiles;
//! - (b) **rayon** (kiln-host `RayonPump`): a wake-up spawns a pump task on
//!   rayon's global pool; the game thread only counts calls;
//! - (c) **kiln-std** (`BackendAdapter`): kiln-std's broker thread compiles.
//!
//! Frame time is the game thread's work per frame (scripts, plus the frame
//! pump in mode (a)); frames are paced to 60 Hz (sleeping the rest of each
//! 16.7 ms), so background compiles have the idle time a real game leaves.
//! The program prints p50 / p99 / max frame time and frames over the 60 Hz
//! deadline per mode, the frame pump's compile-budget figures, and writes
//! `game_loop.png`: frame time per frame for each mode, with the 60 Hz
//! budget line, above the frame pump's compile time per frame, with its
//! 2 ms budget line. The final world state must be the same in all modes
//! (native code computes what the interpreter computes), or the program
//! fails.
//!
//! ```text
//! cargo run --release -p kiln-examples --example game_loop [frames=600] [entities=2400] [--kinds 32] [--budget-us 2000] [--unpaced] [--out game_loop.png]
//! ```

use std::cell::RefCell;
use std::fmt::Write as _;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_core::{
    Bead, Broker, CompileRequest, ExponentialBackoffPolicy, KilnError, NoWake, StdClock, ThresholdPolicy, WakeHook,
};
use kiln_cranelift::{CraneliftBackend, CraneliftCompiler, FunctionDef};
use kiln_examples::interp::{Hooks, Interpreter};
use kiln_examples::ir::{FuncId, Program};
use kiln_examples::jit;
use kiln_host::{FrameConfig, FramePump, FrameReport, PumpConfig, RayonJobSystem, RayonPump};
use kiln_std::{BackendAdapter, BoundBead, CoreEvents, Profile, ProfileEntry, ProfileKey, TraceSink};

/// Calls before a script is promoted.
const HOT_AFTER: u32 = 1_000;
/// 60 Hz.
const FRAME: Duration = Duration::from_nanos(16_666_667);
/// Mode (a)'s first guess of compile time per IR instruction, before any
/// compile was measured (Cranelift at `opt_level=none` here: ~1.5–4 µs).
const GUESS_NS_PER_INST: u64 = 5_000;

/// The scripts: `kindN(state, frame, id)` returns the entity's next state.
/// Loop length and statements per iteration vary by kind, so function sizes
/// (and compile costs) spread over ~8×.
fn scripts(kinds: usize) -> String {
    let mut source = String::new();
    for kind in 0..kinds {
        let statements = 2 + kind % 16;
        let iterations = 8 + (kind * 7) % 9;
        let _ = writeln!(source, "fn kind{kind}(s, t, id) {{\n    let i = 0;\n    let acc = s + id;");
        let _ = writeln!(source, "    while i < {iterations} {{");
        for statement in 0..statements {
            let mul = 3 + (kind * 5 + statement * 11) % 29;
            let add = 1 + (kind * 13 + statement * 3) % 17;
            let limit = 1_000_000 + 7_919 * (kind + statement) as i64;
            let _ = writeln!(
                source,
                "        acc = acc * {mul} + i * {add} - t;\n        if acc > {limit} {{ acc = acc - {limit} - {limit}; }} \
                 else if acc < -{limit} {{ acc = acc + {limit} + {limit}; }}"
            );
        }
        let _ = writeln!(source, "        i = i + 1;\n    }}\n    return acc;\n}}");
    }
    source
}

/// The entities: a kind and a state each, and when each kind arrives.
#[derive(Clone)]
struct World {
    kinds: Vec<FuncId>,
    states: Vec<i64>,
    arrives: Vec<u32>,
}

impl World {
    fn new(settings: Settings) -> Self {
        let Settings { entities, frames, kinds: count, .. } = settings;
        // A spread of population: kind k has weight 1 + k % 4.
        let weights: Vec<usize> = (0..count).map(|kind| 1 + kind % 4).collect();
        let total: usize = weights.iter().sum();
        let kind_of = |entity: usize| {
            let mut slot = (entity * 7_919) % total;
            for (kind, weight) in weights.iter().enumerate() {
                if slot < *weight {
                    return kind as FuncId;
                }
                slot -= weight;
            }
            unreachable!("slot < total")
        };
        let kinds = (0..entities).map(kind_of).collect();
        // Half the kinds from the start, the rest in waves until mid-run.
        let gap = (frames / 2 / (count as u32 / 2).max(1)).max(1);
        let arrives = (0..count).map(|kind| kind.saturating_sub(count / 2) as u32 * gap).collect();
        Self { kinds, states: (0..entities as i64).collect(), arrives }
    }

    /// One frame: every live entity runs its script through `hooks`.
    fn update(&mut self, hooks: &impl Hooks, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, frame: u32) {
        for (entity, (kind, state)) in self.kinds.iter().zip(&mut self.states).enumerate() {
            if self.arrives[*kind as usize] <= frame {
                *state = hooks.call(interpreter, stack, *kind, &[*state, i64::from(frame), entity as i64]);
            }
        }
    }

    fn checksum(&self) -> i64 {
        self.states.iter().fold(0i64, |sum, state| sum.wrapping_mul(1_000_003).wrapping_add(*state))
    }
}

/// A script call through kiln-core: native if the bead has code.
struct CoreHooks<'a, W: WakeHook> {
    broker: &'a CoreBroker<W>,
    beads: &'a [&'static Bead],
}

type CoreBroker<W> = Broker<&'static Bead, ThresholdPolicy, ExponentialBackoffPolicy, W, CoreEvents>;

impl<W: WakeHook> Hooks for CoreHooks<'_, W> {
    #[inline(always)]
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        match self.broker.on_invoke(&self.beads[func as usize]) {
            // SAFETY: kiln publishes only code compiled from `func`'s
            // definition (three parameters, as `args`); nothing retires it
            // before the mode ends.
            Some(code) => unsafe { jit::call_native(code.as_ptr(), args) },
            None => interpreter.interpret(self, stack, func, args),
        }
    }
}

/// A script call through kiln-std: native if the bead has code.
struct StdHooks<'a> {
    program: &'static Program,
    adapter: &'a BackendAdapter<CraneliftBackend>,
    beads: &'a [BoundBead<CraneliftBackend>],
}

impl Hooks for StdHooks<'_> {
    #[inline(always)]
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        let program = self.program;
        match self.adapter.on_invoke(&self.beads[func as usize], move |_| jit::function_def(program, func, false, None))
        {
            // SAFETY: as for `CoreHooks`: code compiled from `func`, live
            // until the mode retires it after its last frame.
            Some(code) => unsafe { jit::call_native(code, args) },
            None => interpreter.interpret(self, stack, func, args),
        }
    }
}

/// How a run goes.
#[derive(Clone, Copy)]
struct Settings {
    frames: u32,
    entities: usize,
    paced: bool,
    /// Kinds of entity, one script function each.
    kinds: usize,
    /// Mode (a)'s compile budget per frame.
    budget: Duration,
}

/// What one mode measured.
struct ModeRun {
    label: &'static str,
    /// Game-thread time per frame, ms.
    frame_ms: Vec<f64>,
    /// Of that, compiling (mode (a) only), ms.
    compile_ms: Vec<f64>,
    /// The first frame after which every script was native.
    all_native_at: Option<u32>,
    checksum: i64,
}

/// Runs the game: `update` then `after` (kiln work on the game thread,
/// returning the time it compiled) each frame, paced to 60 Hz.
fn play(
    label: &'static str,
    settings: Settings,
    program: &Program,
    hooks: &impl Hooks,
    mut after: impl FnMut() -> Duration,
    native: impl Fn() -> usize,
) -> ModeRun {
    let interpreter = Interpreter::new(program);
    let mut world = World::new(settings);
    let mut stack = Vec::with_capacity(1024);
    let mut run = ModeRun { label, frame_ms: Vec::new(), compile_ms: Vec::new(), all_native_at: None, checksum: 0 };
    let mut next = Instant::now();
    for frame in 0..settings.frames {
        let started = Instant::now();
        world.update(hooks, &interpreter, &mut stack, frame);
        let compiling = after();
        run.frame_ms.push(started.elapsed().as_secs_f64() * 1e3);
        run.compile_ms.push(compiling.as_secs_f64() * 1e3);
        if run.all_native_at.is_none() && native() == settings.kinds {
            run.all_native_at = Some(frame);
        }
        if settings.paced {
            next += FRAME;
            // A frame that ran over starts the next one at once, as a game does.
            next = next.max(Instant::now());
            std::thread::sleep(next - Instant::now());
        }
    }
    run.checksum = world.checksum();
    run
}

/// The timeline `--trace FILE` asked for, if any.
fn trace() -> Option<&'static Arc<TraceSink>> {
    TRACE.get().and_then(Option::as_ref)
}

static TRACE: std::sync::OnceLock<Option<Arc<TraceSink>>> = std::sync::OnceLock::new();

/// Mode (a)'s kiln-core events: to the timeline, naming each script by kind.
fn core_events() -> CoreEvents {
    let sink = trace().map(|trace| Arc::clone(trace) as Arc<dyn kiln_std::EventSink>);
    CoreEvents::new(sink).with_names(|bead| Some(format!("kind{}", bead.core_handle() as usize)))
}

/// The kiln-core beads of a mode: the core handle is the function id.
fn core_beads(kinds: usize) -> Vec<&'static Bead> {
    (0..kinds).map(|kind| &*Box::leak(Box::new(Bead::new(ptr::without_provenance_mut(kind))))).collect()
}

fn compiled(beads: &[&'static Bead]) -> usize {
    beads.iter().filter(|bead| bead.compiled().is_some()).count()
}

/// The definition of the script behind a kiln-core compile request.
fn define(
    program: &'static Program,
) -> impl FnMut(&CompileRequest<'_, &'static Bead>) -> Result<FunctionDef, kiln_cranelift::CraneliftError>
+ Clone
+ Send
+ 'static {
    move |request| Ok(jit::function_def(program, request.bead.core_handle() as usize as FuncId, false, None))
}

/// Mode (a): kiln-host's frame pump on the game thread.
fn frame_pump(
    settings: Settings,
    program: &'static Program,
    backend: &CraneliftBackend,
    warm: Option<&Profile>,
) -> (ModeRun, Vec<FrameReport>, Profile) {
    let beads = core_beads(settings.kinds);
    let broker: CoreBroker<NoWake> =
        Broker::new(ThresholdPolicy::new(HOT_AFTER), ExponentialBackoffPolicy::default(), NoWake, core_events());
    let mut jit = CraneliftCompiler::new(backend.clone(), define(program));
    let clock = StdClock::new();
    // Size = IR instructions: what Cranelift's work grows with here.
    let size = move |request: &CompileRequest<'_, &'static Bead>| {
        program.functions[request.bead.core_handle() as usize].code.len() as u32
    };
    let mut frames = FramePump::<_, _, 8>::new(&broker, FrameConfig::new(GUESS_NS_PER_INST)).with_cost_model(size);
    if let Some(profile) = warm {
        warm_start(&broker, &beads, program, profile);
        loading_screen(&broker, &mut frames, &mut jit, &clock);
    }
    let reports = RefCell::new(Vec::new());
    let hooks = CoreHooks { broker: &broker, beads: &beads };
    let run = play(
        "(a) kiln-host frame pump",
        settings,
        program,
        &hooks,
        || {
            let started = Instant::now();
            let report = frames.pump(&mut jit, &clock, settings.budget.as_nanos() as u64);
            if let Some(trace) = trace() {
                let args =
                    [("jobs run", f64::from(report.jobs.ran)), ("budget µs", settings.budget.as_secs_f64() * 1e6)];
                trace.slice("frame pump", "frame", started, Instant::now(), &args);
                trace.counter("queue depth", broker.queue_len() as f64);
                trace.counter("code bytes", backend.stats().resident_bytes as f64);
            }
            reports.borrow_mut().push(report);
            Duration::from_nanos(if report.jobs.ran > 0 { report.spent() } else { 0 })
        },
        || compiled(&beads),
    );
    let learned = frames.predictor();
    println!(
        "    frame pump learned {:.2} µs per IR instruction (± {:.2} mean deviation) from {} compiles; first guess {:.2} µs",
        learned.ticks_per_unit(0) as f64 / 1e3,
        learned.deviation_per_unit(0) as f64 / 1e3,
        learned.samples(0),
        GUESS_NS_PER_INST as f64 / 1e3
    );
    drop(frames);
    let profile = Profile::from_entries(
        beads
            .iter()
            .map(|bead| ProfileEntry::from_record(key_of(program, bead), kiln_core::BeadProfile::of(bead)))
            .collect(),
    );
    release(&broker, &beads, &mut jit);
    (run, reports.into_inner(), profile)
}

/// FNV-1a: a hash that stays the same from run to run and build to build.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A script's profile key: its kind's name, and a hash of its code.
fn key_of(program: &Program, bead: &Bead) -> ProfileKey {
    let function = &program.functions[bead.core_handle() as usize];
    ProfileKey { id: fnv(&format!("kind{}", function.id)), code_hash: fnv(&format!("{:?}", function.code)) }
}

/// A loading screen's compile budget per 60 Hz frame (no game update runs).
const LOADING_BUDGET: Duration = Duration::from_millis(12);

/// The loading screen of a warm start: the frame pump compiles last run's
/// hot set within [`LOADING_BUDGET`] per frame until none is left, so the
/// game's first frames find it compiled.
fn loading_screen<N: kiln_host::CostModel<&'static Bead>>(
    broker: &CoreBroker<NoWake>,
    frames: &mut FramePump<'_, &'static Bead, N, 8>,
    jit: &mut impl kiln_core::Compiler<&'static Bead>,
    clock: &StdClock,
) {
    let (mut count, mut compiles, mut busiest) = (0, 0, 0);
    while (broker.queue_len() > 0 || frames.held() > 0) && count < 600 {
        let started = Instant::now();
        let report = frames.pump(jit, clock, LOADING_BUDGET.as_nanos() as u64);
        if let Some(trace) = trace() {
            let args = [("jobs run", f64::from(report.jobs.ran)), ("budget µs", LOADING_BUDGET.as_secs_f64() * 1e6)];
            trace.slice("loading screen pump", "frame", started, Instant::now(), &args);
        }
        count += 1;
        compiles += report.jobs.ran;
        busiest = busiest.max(report.spent());
    }
    println!(
        "    loading screen: {compiles} compiles in {count} frames, busiest {:.2} ms (budget {} ms)",
        busiest as f64 / 1e6,
        LOADING_BUDGET.as_millis()
    );
}

/// Mode (a)'s warm start, done by the host (its beads are kiln-core's):
/// last run's compiled scripts are queued now, hottest first, for the frame
/// pump to compile on the loading screen; last run's blacklisted ones
/// start blacklisted, decaying after 10,000 calls.
fn warm_start(broker: &CoreBroker<NoWake>, beads: &[&'static Bead], program: &Program, profile: &Profile) {
    let mut hot: Vec<_> =
        beads.iter().filter_map(|bead| profile.get(key_of(program, bead)).map(|entry| (*bead, entry))).collect();
    hot.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.hotness()));
    let (mut queued, mut blacklisted) = (0, 0);
    for (bead, entry) in hot {
        if entry.blacklisted {
            let calls = core::num::NonZeroU32::new(10_000).expect("non-zero");
            blacklisted += usize::from(broker.blacklist_for(bead, calls) == Ok(true));
        } else if entry.tier_reached.is_some() && broker.submit(bead, 0, kiln_core::JobKind::Invoke).is_ok() {
            queued += 1;
        }
    }
    println!("    warm start: {queued} scripts queued before the first frame, {blacklisted} blacklisted");
}

/// Mode (b): kiln-host's rayon adapter.
fn rayon(settings: Settings, program: &'static Program, backend: &CraneliftBackend) -> ModeRun {
    let beads = core_beads(settings.kinds);
    let pump = RayonPump::new(RayonJobSystem::global(), PumpConfig::new());
    let broker: Arc<CoreBroker<RayonPump>> = Arc::new(Broker::new(
        ThresholdPolicy::new(HOT_AFTER),
        ExponentialBackoffPolicy::default(),
        pump.clone(),
        CoreEvents::new(None),
    ));
    // Each pump task compiles with a clone (clones share the unit book).
    let jit = CraneliftCompiler::new(backend.clone(), define(program));
    pump.attach_arc(&broker, jit.clone()).expect("a new pump");
    let hooks = CoreHooks { broker: &broker, beads: &beads };
    let run = play("(b) rayon adapter", settings, program, &hooks, || Duration::ZERO, || compiled(&beads));
    pump.stop().expect("the pump task ends within its stop timeout");
    release(&broker, &beads, &mut jit.clone());
    let stats = pump.stats();
    println!(
        "    rayon pump: {} wake-ups, {} tasks spawned, {} coalesced, {} jobs run, {} published",
        stats.wakes, stats.spawned, stats.coalesced, stats.ran, stats.published
    );
    run
}

/// Mode (c): kiln-std's broker thread.
fn kiln_std(settings: Settings, program: &'static Program, backend: &CraneliftBackend) -> ModeRun {
    let adapter = BackendAdapter::with_policy(backend.clone(), ThresholdPolicy::new(HOT_AFTER));
    if let Some(trace) = trace() {
        adapter.beadie().add_sink(trace.clone());
    }
    let beads: Vec<_> =
        (0..settings.kinds).map(|kind| adapter.register_named(&format!("kind{kind}"), ptr::null_mut(), None)).collect();
    let hooks = StdHooks { program, adapter: &adapter, beads: &beads };
    let native = || beads.iter().filter(|bead| bead.bead().compiled().is_some()).count();
    let run = play("(c) kiln-std broker thread", settings, program, &hooks, || Duration::ZERO, native);
    // The game is over: nothing runs script code; retire it and free it.
    for bead in &beads {
        bead.bead().invalidate();
    }
    adapter.prune();
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    run
}

/// After a kiln-core mode: no script code runs any more, so retire it all
/// and declare quiescence until kiln has released it.
fn release<W: WakeHook, C: kiln_core::Compiler<&'static Bead>>(
    broker: &CoreBroker<W>,
    beads: &[&'static Bead],
    jit: &mut C,
) {
    for bead in beads {
        // A full retire ring frees slots two quiesces later.
        let mut quiesces = 0;
        while let Err(error) = broker.invalidate(bead) {
            assert!(error == KilnError::RetireFull && quiesces < 3, "invalidate refused: {error}");
            broker.quiesce(jit);
            quiesces += 1;
        }
    }
    for _ in 0..3 {
        broker.quiesce(jit);
    }
}

/// p-th percentile (nearest rank) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_table(runs: &[ModeRun]) {
    let deadline = FRAME.as_secs_f64() * 1e3;
    println!();
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>12} {:>14}",
        "mode", "p50 ms", "p99 ms", "max ms", "over 16.7ms", "all native at"
    );
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>12} {:>14}",
        "-".repeat(28),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(12),
        "-".repeat(14)
    );
    for run in runs {
        let over = run.frame_ms.iter().filter(|&&ms| ms > deadline).count();
        let native = run.all_native_at.map_or_else(|| "never".to_string(), |frame| format!("frame {frame}"));
        println!(
            "{:<28} {:>8.2} {:>8.2} {:>8.2} {:>12} {:>14}",
            run.label,
            percentile(&run.frame_ms, 50.0),
            percentile(&run.frame_ms, 99.0),
            percentile(&run.frame_ms, 100.0),
            over,
            native
        );
    }
}

/// The frame pump's first second: what a warm start asks of it (every
/// compile of last run's hot set at once) against its budget.
fn print_first_frames(reports: &[FrameReport], budget: Duration, warm: bool) {
    let first: Vec<f64> = reports
        .iter()
        .take(60)
        .map(|report| if report.jobs.ran > 0 { report.spent() as f64 / 1e6 } else { 0.0 })
        .collect();
    let budget_ms = budget.as_secs_f64() * 1e3;
    let over = first.iter().filter(|&&ms| ms > budget_ms * 1.1).count();
    println!(
        "frame pump, first {} frames{}: {} compiles, max {:.3} ms compiling in a frame, {over} frames over budget + 10%",
        first.len(),
        if warm { " (warm start)" } else { "" },
        reports.iter().take(60).map(|report| report.jobs.ran).sum::<u32>(),
        first.iter().copied().fold(0.0, f64::max),
    );
}

/// The frame pump's budget figures. Overrun = time the pump spent past
/// its budget in a frame; its p99 is given over all frames and over the
/// frames that compiled something (the ones that could overrun at all).
fn print_budget(reports: &[FrameReport], budget: Duration) {
    let budget_ms = budget.as_secs_f64() * 1e3;
    let ms = |ticks: u64| ticks as f64 / 1e6;
    let overruns: Vec<f64> = reports.iter().map(|report| ms(report.overrun)).collect();
    let busy: Vec<&FrameReport> = reports.iter().filter(|report| report.jobs.ran > 0).collect();
    let busy_overruns: Vec<f64> = busy.iter().map(|report| ms(report.overrun)).collect();
    let sum = |field: fn(&FrameReport) -> u32| busy.iter().map(|report| field(report)).sum::<u32>();
    let compiling: f64 = busy.iter().map(|report| ms(report.spent())).sum();
    let share = |value: f64| value / budget_ms * 100.0;
    println!();
    println!(
        "frame pump: {} compiles in {} frames ({compiling:.1} ms compiling), {} times a job waited for a later frame, {} forced, {} mispredicted",
        sum(|r| r.jobs.ran),
        busy.len(),
        reports.iter().map(|report| report.skipped).sum::<u32>(),
        sum(|r| r.forced),
        sum(|r| r.mispredicted)
    );
    let busiest = busy.iter().map(|report| ms(report.spent())).fold(0.0, f64::max);
    let all = percentile(&overruns, 99.0);
    let compiling_p99 = if busy_overruns.is_empty() { 0.0 } else { percentile(&busy_overruns, 99.0) };
    println!(
        "frame pump: budget {budget_ms:.1} ms/frame; overrun p99 {all:.3} ms = {:.1}% of the budget (goal <= 10%); \
         over compiling frames p99 {compiling_p99:.3} ms = {:.1}%; max {:.3} ms; {} of {} frames over; busiest frame compiled {busiest:.2} ms",
        share(all),
        share(compiling_p99),
        percentile(&overruns, 100.0),
        overruns.iter().filter(|&&overrun| overrun > 0.0).count(),
        reports.len()
    );
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Draws the PNG: frame time per frame per mode with the 60 Hz line, and
/// the frame pump's compile time per frame with its budget line.
fn plot(path: &str, runs: &[ModeRun], budget: Duration) -> PlotResult {
    use plotters::prelude::*;

    let frames = runs[0].frame_ms.len() as u32;
    let deadline = FRAME.as_secs_f64() * 1e3;
    let budget = budget.as_secs_f64() * 1e3;
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(560);
    let colors = [RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(44, 160, 44)];

    let frame_times = Panel {
        caption: "game_loop: game-thread frame time per frame (60 Hz budget line)",
        y_desc: "frame time (ms)",
        frames,
        values: runs.iter().flat_map(|run| run.frame_ms.iter().copied()).collect(),
        limit: (deadline, "60 Hz frame budget (16.7 ms)".into()),
    };
    frame_times.draw(&upper, |chart| {
        for (run, color) in runs.iter().zip(colors) {
            chart
                .draw_series(LineSeries::new(run.frame_ms.iter().enumerate().map(|(i, ms)| (i as u32, *ms)), color))?
                .label(run.label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3)));
        }
        Ok(())
    })?;
    let compile_times = Panel {
        caption: "(a) frame pump: compile time on the game thread per frame",
        y_desc: "compiling (ms)",
        frames,
        values: runs[0].compile_ms.clone(),
        limit: (budget, format!("compile budget ({budget} ms)")),
    };
    compile_times.draw(&lower, |chart| {
        let bars = runs[0].compile_ms.iter().enumerate();
        chart
            .draw_series(
                bars.map(|(i, ms)| Rectangle::new([(i as u32, 0.0), (i as u32 + 1, *ms)], colors[0].filled())),
            )?
            .label("compile time (Cranelift, measured)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 24, y + 5)], colors[0].filled()));
        Ok(())
    })?;
    root.present()?;
    Ok(())
}

/// One chart of the PNG: per-frame values against a horizontal limit.
struct Panel {
    caption: &'static str,
    y_desc: &'static str,
    frames: u32,
    /// Every value drawn (for the y range).
    values: Vec<f64>,
    limit: (f64, String),
}

type Chart<'a, 'b> = plotters::chart::ChartContext<
    'a,
    plotters::backend::BitMapBackend<'b>,
    plotters::coord::cartesian::Cartesian2d<
        plotters::coord::types::RangedCoordu32,
        plotters::coord::types::RangedCoordf64,
    >,
>;

impl Panel {
    fn draw<'b>(
        &self,
        area: &plotters::drawing::DrawingArea<plotters::backend::BitMapBackend<'b>, plotters::coord::Shift>,
        series: impl FnOnce(&mut Chart<'_, 'b>) -> PlotResult,
    ) -> PlotResult {
        use plotters::prelude::*;

        let frames = self.frames;
        let (limit, label) = (self.limit.0, self.limit.1.as_str());
        let top = self.values.iter().copied().fold(limit, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(self.caption, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0..frames, 0.0..top)?;
        chart.configure_mesh().x_desc("frame").y_desc(self.y_desc).draw()?;
        series(&mut chart)?;
        chart
            .draw_series(LineSeries::new([(0, limit), (frames, limit)], BLACK.stroke_width(2)))?
            .label(label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

fn main() {
    env_logger::init();
    let mut settings =
        Settings { frames: 600, entities: 2_400, paced: true, kinds: 32, budget: Duration::from_millis(2) };
    let mut out = "game_loop.png".to_string();
    let mut numbers = 0;
    let mut trace_path = None;
    let mut profile_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--unpaced" => settings.paced = false,
            "--budget-us" => {
                let micros = args.next().and_then(|n| n.parse().ok()).expect("--budget-us needs a number");
                settings.budget = Duration::from_micros(micros);
            }
            "--kinds" => settings.kinds = args.next().and_then(|n| n.parse().ok()).expect("--kinds needs a number"),
            "--out" => out = args.next().expect("--out needs a path"),
            "--trace" => trace_path = Some(args.next().expect("--trace needs a path")),
            "--profile" => profile_path = Some(args.next().expect("--profile needs a path")),
            number => {
                let value: usize = number.parse().expect(
                    "usage: game_loop [frames] [entities] [--kinds N] [--budget-us N] [--unpaced] [--out PATH] [--trace FILE] [--profile FILE]",
                );
                match numbers {
                    0 => settings.frames = value as u32,
                    _ => settings.entities = value,
                }
                numbers += 1;
            }
        }
    }
    let sink = trace_path.as_ref().map(|path| TraceSink::create(path).expect("the trace file can be created"));
    TRACE.set(sink).expect("set once");
    let program: &'static Program =
        Box::leak(Box::new(Program::compile(&scripts(settings.kinds)).expect("the scripts parse")));
    let backend = jit::config().build().expect("Cranelift supports this machine");
    // Warm Cranelift up as a game would while loading: the first compile
    // in a process pays one-time costs no later compile pays.
    let warm = backend.compile_function(jit::function_def(program, 0, false, None)).expect("kind0 compiles");
    // SAFETY: nothing ever ran this code.
    unsafe { backend.free(warm.handle()) };

    let sizes: Vec<usize> = program.functions.iter().map(|function| function.code.len()).collect();
    println!(
        "game_loop: {} frames at 60 Hz{}, {} entities of {} kinds (scripts of {}..{} IR instructions), promoted after {HOT_AFTER} calls",
        settings.frames,
        if settings.paced { "" } else { " (unpaced)" },
        settings.entities,
        settings.kinds,
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap()
    );

    let warm = profile_path.as_ref().and_then(|path| match Profile::load(path) {
        Ok(profile) => Some(profile),
        Err(error) => {
            println!("no warm start from {path}: {error} (this run writes it)");
            None
        }
    });
    let (pumped, reports, profile) = frame_pump(settings, program, &backend, warm.as_ref());
    if let Some(path) = &profile_path {
        profile.save(path).expect("the profile can be written");
    }
    let runs = [pumped, rayon(settings, program, &backend), kiln_std(settings, program, &backend)];
    print_table(&runs);
    print_budget(&reports, settings.budget);
    print_first_frames(&reports, settings.budget, warm.is_some());
    for run in &runs[1..] {
        assert_eq!(run.checksum, runs[0].checksum, "{} ended in another world state than {}", run.label, runs[0].label);
    }
    println!();
    println!("world state after the last frame: {:#018x} in every mode", runs[0].checksum);
    let stats = backend.stats();
    println!("Cranelift units compiled {}, freed {}, live {}", stats.compiled, stats.freed, stats.live_units);
    assert_eq!(stats.live_units, 0, "every mode hands all its code back to Cranelift");
    assert!(runs[0].all_native_at.is_some(), "the frame pump never compiled every script");
    if let (Some(trace), Some(path)) = (trace(), &trace_path) {
        trace.finish().expect("the trace is written");
        println!("wrote {path} (open it in ui.perfetto.dev or chrome://tracing)");
    }

    // The plot is a by-product: a machine without fonts still gets the figures.
    match std::panic::catch_unwind(|| plot(&out, &runs, settings.budget)) {
        Ok(Ok(())) => println!("wrote {out}"),
        Ok(Err(error)) => println!("could not draw {out} ({error}); the figures above stand"),
        Err(_) => println!("could not draw {out} (the plotting library panicked); the figures above stand"),
    }
}
