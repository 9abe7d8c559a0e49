//! llvm_tier: Cranelift first, LLVM -O2 for the hottest, on one kiln-core
//! broker — and a long loop that leaves the interpreter straight into LLVM
//! code through OSR.
//!
//! One broker with a two-tier ladder, one pump thread whose compiler is a
//! `TierDispatch`: tier 0 to kiln-cranelift, tier 1 to kiln-llvm.
//!
//! **Phase 1, fib** (`runs` host calls of `fib(n)`). Thresholds: tier 0
//! (Cranelift) at 1,000 counted calls, tier 1 (LLVM) at 1,001. Why the
//! second rung sits one call above the first: kiln counts every
//! *interpreted* call, but compiled `fib` recurses natively, so once native
//! code runs kiln sees only the host's calls (one per run) — it cannot tell
//! "warm" from "hot" past the first rung. How many calls it counts while
//! Cranelift compiles depends on the machine (on a loaded one the
//! interpreter may be preempted by the compiling thread and count a dozen
//! calls, or twenty thousand), so a higher second rung would mean "LLVM
//! after some unknown number of host calls". At 1,001 the LLVM compile is
//! queued at the first call after Cranelift's code is installed: Cranelift's
//! code runs while LLVM compiles (tens of milliseconds), the LLVM code is
//! swapped in while fib keeps being called, and the Cranelift code is
//! retired and freed at the host's next quiescent point. A host whose
//! compiled code calls back through kiln (call-outs to other functions)
//! keeps counting natively and can set the second rung higher, so that
//! only the hottest functions reach LLVM.
//!
//! **Phase 2, OSR** (`spin(iterations)`, called once, so call counting never
//! makes it hot). The interpreter reports back-edges; past 10,000 the policy
//! sends the loop to the top tier at once — a loop that hot is the hottest
//! code there is, and with no OSR out of a running Cranelift loop a baseline
//! compile would pin it to Cranelift for the rest of the call — and the
//! interpreter hands its frame to LLVM's OSR entry at the loop header.
//!
//! **Phase 3, OSR twice** (`walk(iterations)`, the same loop, on a second
//! broker whose policy sends hot loops to Cranelift first). Past 10,000
//! back-edges the interpreter leaves for Cranelift's OSR entry. The
//! Cranelift code counts its own back-edges (`kiln_examples::probe`: a
//! countdown at every loop back-edge, a call-out every 1,024); after 100
//! call-outs (102,400 native back-edges) the probe queues the LLVM compile
//! (`Broker::submit`), and once LLVM's code is installed the next call-out
//! returns its OSR entry: the running Cranelift loop stores its registers in
//! the interpreter's frame layout and finishes the call in LLVM code.
//!
//! ```text
//! cargo run --release -p kiln-examples --features llvm --example llvm_tier [n=25] [runs=400] [iterations=300000000]
//! RUST_LOG=kiln=debug cargo run --release -p kiln-examples --features llvm --example llvm_tier
//! ```

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use kiln_core::{
    Bead, Broker, Budget, CompileRequest, Decision, ExponentialBackoffPolicy, HotnessPolicy, HotnessStats, JobKind,
    NoEvents, TierLadder, WakeHook,
};
use kiln_cranelift::CraneliftCompiler;
use kiln_examples::interp::{Hooks, Interpreter, Plain};
use kiln_examples::ir::{FuncId, Program};
use kiln_examples::probe::BackedgeProbe;
use kiln_examples::{jit, llvm};
use kiln_llvm::{LlvmCompiler, Side, TierDispatch};

const SOURCE: &str = "
fn fib(n) {
    if n < 2 { return n; }
    return fib(n - 1) + fib(n - 2);
}
fn spin(n) {
    let i = 0;
    let acc = 7;
    while i < n {
        acc = acc * 31 + i;
        i = i + 1;
    }
    return acc;
}
fn walk(n) {
    let i = 0;
    let acc = 7;
    while i < n {
        acc = acc * 31 + i;
        i = i + 1;
    }
    return acc;
}
";

/// Counted calls before the Cranelift compile.
const CRANELIFT_AT: u32 = 1_000;
/// Counted calls before the LLVM compile (see the module docs).
const LLVM_AT: u32 = CRANELIFT_AT + 1;
/// Back-edges before a loop started in the interpreter leaves it.
const OSR_AT: u32 = 10_000;
/// Probes (of `probe::PROBE_EVERY` back-edges each) of a running Cranelift
/// loop before its LLVM compile is queued: 102,400 native back-edges.
const LOOP_LLVM_AFTER_PROBES: u32 = 100;

/// The ladder for calls; hot loops leave the interpreter for the top tier
/// (`loops_to_top`) or for Cranelift (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Policy {
    ladder: TierLadder<2>,
    loops_to_top: bool,
}

impl HotnessPolicy for Policy {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        self.ladder.decide(stats)
    }
    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        let tier = u8::from(self.loops_to_top);
        match stats.tier {
            Some(_) => Decision::NEVER,
            None if stats.backedges >= OSR_AT => Decision::Promote { tier, priority: stats.hotness() },
            None => Decision::wait(OSR_AT - stats.backedges),
        }
    }
    fn max_tier(&self) -> u8 {
        1
    }
}

/// When the running Cranelift loop left for LLVM's OSR entry.
static LEFT_CRANELIFT: OnceLock<Instant> = OnceLock::new();

/// The back-edge probe of Cranelift loops (`probe` module): counts probes
/// per function, queues the LLVM compile at `LOOP_LLVM_AFTER_PROBES`
/// (`Broker::submit`, at the loop's header: its OSR entries come with it),
/// and once LLVM's code is installed hands out its OSR entry for the
/// header, so the running loop finishes there.
fn loop_probe(
    beads: &'static [&'static Bead],
    broker: &'static TierBroker,
    loop_broker: &'static TierBroker,
    walk: FuncId,
) -> &'static BackedgeProbe {
    let probes: &'static [AtomicU32] = beads.iter().map(|_| AtomicU32::new(0)).collect::<Vec<_>>().leak();
    Box::leak(Box::new(BackedgeProbe(Box::new(move |func, site| {
        let bead = beads[func as usize];
        let site = u64::from(site);
        if bead.tier() == Some(1) {
            // Only code above the running tier: the Cranelift code's own
            // OSR entry would start the loop over inside itself.
            return bead.osr_entry(site).map_or(ptr::null_mut(), |entry| {
                LEFT_CRANELIFT.get_or_init(Instant::now);
                entry.as_ptr()
            });
        }
        // Relaxed: a per-function count, read by this probe only.
        let count = probes[func as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if count >= LOOP_LLVM_AFTER_PROBES && bead.tier() == Some(0) {
            let broker = if func == walk { loop_broker } else { broker };
            // Refused while the compile is pending: the next probe asks again.
            let _ = broker.submit(&bead, 1, JobKind::Osr { site });
        }
        ptr::null_mut()
    }))))
}

/// Wakes the pump thread.
#[derive(Default)]
struct WakePumper(OnceLock<Thread>);

impl WakeHook for WakePumper {
    fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

type TierBroker = Broker<&'static Bead, Policy, ExponentialBackoffPolicy, WakePumper, NoEvents>;

/// kiln-core between the interpreter and both tiers.
struct Tiered<'a> {
    broker: &'a TierBroker,
    /// `walk`'s broker (loops go through Cranelift first).
    loop_broker: &'a TierBroker,
    walk: FuncId,
    beads: &'a [&'static Bead],
    entered_osr: Cell<Option<Instant>>,
    /// When kiln first handed out native code.
    first_native: Cell<Option<Instant>>,
}

impl Tiered<'_> {
    fn broker_of(&self, func: FuncId) -> &TierBroker {
        if func == self.walk { self.loop_broker } else { self.broker }
    }
}

impl Hooks for Tiered<'_> {
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        match self.broker_of(func).on_invoke(&self.beads[func as usize]) {
            Some(code) => {
                if self.first_native.get().is_none() {
                    self.first_native.set(Some(Instant::now()));
                }
                // SAFETY: kiln publishes only code compiled from `func`'s
                // definition (arity `args.len()`, either tier), live until
                // retired and quiesced, which the host does between calls.
                unsafe { jit::call_native(code.as_ptr(), args) }
            }
            None => interpreter.interpret(self, stack, func, args),
        }
    }

    fn backedge(&self, func: FuncId, site: u32, frame: &[i64]) -> Option<i64> {
        let entry = self.broker_of(func).on_backedge(&self.beads[func as usize], u64::from(site))?;
        self.entered_osr.set(Some(Instant::now()));
        // SAFETY: the OSR entry at `site` was compiled from `func` (either
        // tier: same frame layout) and reads `frame`, all of its registers.
        Some(unsafe { jit::call_osr(entry.as_ptr(), frame) })
    }
}

/// The tier whose code the bead has installed (also while a compile for
/// the next tier is queued or running).
fn tier_name(bead: &Bead) -> &'static str {
    match bead.tier() {
        Some(0) => "Cranelift",
        Some(_) => "LLVM -O2",
        None => "interpreter",
    }
}

/// Time and runs per phase (by the tier a run started on).
#[derive(Default)]
struct Phase {
    runs: u32,
    time: Duration,
    first_at: Option<Duration>,
}

fn main() {
    env_logger::init();
    let mut args =
        std::env::args().skip(1).map(|arg| arg.parse::<i64>().expect("usage: llvm_tier [n] [runs] [iterations]"));
    let n = args.next().unwrap_or(25);
    let runs = args.next().unwrap_or(400) as u32;
    let iterations = args.next().unwrap_or(300_000_000);
    let program: &'static Program = Box::leak(Box::new(Program::compile(SOURCE).expect("the source parses")));
    let id = |name: &str| program.function(name).expect("defined").id;
    let (fib, spin, walk) = (id("fib"), id("spin"), id("walk"));
    let interpreter = Interpreter::new(program);

    // Leaked: the back-edge probe, called from compiled code, reaches them.
    let beads: &'static [&'static Bead] = program
        .functions
        .iter()
        .map(|function| &*Box::leak(Box::new(Bead::new(ptr::without_provenance_mut(function.id as usize)))))
        .collect::<Vec<_>>()
        .leak();
    let new_broker = |loops_to_top| -> &'static TierBroker {
        Box::leak(Box::new(Broker::new(
            Policy { ladder: TierLadder::new([CRANELIFT_AT, LLVM_AT]), loops_to_top },
            ExponentialBackoffPolicy::default(),
            WakePumper::default(),
            NoEvents,
        )))
    };
    let (broker, loop_broker) = (new_broker(true), new_broker(false));
    let probe = loop_probe(beads, broker, loop_broker, walk);
    let cranelift = jit::config().build().expect("Cranelift supports this machine");
    let llvm_backend = llvm::config().build().expect("LLVM supports this machine");
    // Both tiers compile every loop header's OSR entry: code of either tier
    // can take over a running interpreted loop.
    let function_of = |request: &CompileRequest<'_, &'static Bead>| request.bead.core_handle() as usize as FuncId;
    let baseline = CraneliftCompiler::new(cranelift.clone(), move |request: &CompileRequest<'_, &'static Bead>| {
        let func = function_of(request);
        let loops = !program.functions[func as usize].loop_headers.is_empty();
        Ok(jit::function_def_with_probe(program, func, loops, None, Some(probe)))
    });
    let optimizing = LlvmCompiler::new(llvm_backend.clone(), move |request: &CompileRequest<'_, &'static Bead>| {
        let func = function_of(request);
        Ok(llvm::function_def(program, func, !program.functions[func as usize].loop_headers.is_empty(), None))
    });
    // The pump thread compiles with it; the main thread declares quiescence
    // with it between host calls.
    let compilers = Mutex::new(TierDispatch::new(baseline, optimizing));
    let stop = AtomicBool::new(false);
    let tiered =
        Tiered { broker, loop_broker, walk, beads, entered_osr: Cell::new(None), first_native: Cell::new(None) };

    println!(
        "fib({n}) x {runs} (or more, until LLVM's code is in) from the host; tier 0 (Cranelift) at {CRANELIFT_AT} calls, tier 1 (LLVM -O2) at {LLVM_AT}"
    );
    let expected_fib = interpreter.invoke(&Plain, fib, &[n]);
    let (phases, last_tier, first_native, osr, walk_figures) = std::thread::scope(|scope| {
        let (stop, compilers) = (&stop, &compilers);
        let pumper = scope.spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::park_timeout(Duration::from_millis(20));
                let mut compiler = compilers.lock().expect("compiler lock");
                for broker in [broker, loop_broker] {
                    let report = broker.pump(&mut *compiler, Budget::unlimited());
                    if report.published > 0 || report.failed > 0 {
                        log::debug!(target: "kiln", "pump: {report:?}");
                    }
                }
            }
        });
        let _ = broker.wake_hook().0.set(pumper.thread().clone());
        let _ = loop_broker.wake_hook().0.set(pumper.thread().clone());

        // Phase 1: fib.
        let mut phases: [(&str, Phase); 3] =
            [("interpreter", Phase::default()), ("Cranelift", Phase::default()), ("LLVM -O2", Phase::default())];
        let started = Instant::now();
        let mut last_tier = "interpreter";
        // `runs` calls, then on until LLVM's code is in (a loaded machine may
        // take longer to compile; at most 10 s).
        for run in 0.. {
            if run >= runs && (last_tier == "LLVM -O2" || started.elapsed() > Duration::from_secs(10)) {
                break;
            }
            let tier = tier_name(beads[fib as usize]);
            let run_started = Instant::now();
            let result = tiered.call(&interpreter, &mut Vec::with_capacity(1024), fib, &[n]);
            let time = run_started.elapsed();
            assert_eq!(result, expected_fib);
            let phase = &mut phases.iter_mut().find(|(name, _)| *name == tier).expect("a known tier").1;
            phase.runs += 1;
            phase.time += time;
            phase.first_at.get_or_insert(run_started - started);
            last_tier = tier;
            // Between host calls no thread runs kiln code: a quiescent point
            // (skipped while the pump thread holds the compiler for a compile:
            // retired code just waits for the next one).
            if let Ok(mut compiler) = compilers.try_lock() {
                broker.quiesce(&mut *compiler);
            }
        }

        // Phase 2: one long loop, OSR from the interpreter frame.
        let osr_started = Instant::now();
        let result = interpreter.invoke(&tiered, spin, &[iterations]);
        let osr_time = osr_started.elapsed();
        let entered = tiered.entered_osr.get().map(|at| at - osr_started);
        let osr_tier = tier_name(beads[spin as usize]);

        // Phase 3: one long loop, interpreter → Cranelift → LLVM.
        tiered.entered_osr.set(None);
        let walk_started = Instant::now();
        let walked = interpreter.invoke(&tiered, walk, &[iterations]);
        let walk_time = walk_started.elapsed();
        let walk_entered = tiered.entered_osr.get().map(|at| at - walk_started);
        let walk_left = LEFT_CRANELIFT.get().map(|at| *at - walk_started);
        let walk_tier = tier_name(beads[walk as usize]);
        assert_eq!(walked, result, "walk computes what spin computes");

        stop.store(true, Ordering::Release);
        pumper.thread().unpark();
        pumper.join().expect("pump thread");
        let first_native = tiered.first_native.get().map(|at| at - started);
        let walk = (walk_time, walk_entered, walk_left, walk_tier);
        (phases, last_tier, first_native, (result, osr_time, entered, osr_tier), walk)
    });

    println!();
    println!("{:<12} {:>6} {:>14} {:>14} {:>16}", "phase", "runs", "time", "per run", "first run at");
    println!(
        "{:<12} {:>6} {:>14} {:>14} {:>16}",
        "-".repeat(12),
        "-".repeat(6),
        "-".repeat(14),
        "-".repeat(14),
        "-".repeat(16)
    );
    for (name, phase) in &phases {
        let per_run = if phase.runs > 0 { phase.time.as_secs_f64() * 1e3 / f64::from(phase.runs) } else { 0.0 };
        let first = phase.first_at.map_or("-".to_owned(), |at| format!("{:.2} ms", at.as_secs_f64() * 1e3));
        println!(
            "{name:<12} {:>6} {:>11.2} ms {:>11.3} ms {:>16}",
            phase.runs,
            phase.time.as_secs_f64() * 1e3,
            per_run,
            first
        );
    }
    if let Some(at) = first_native {
        println!("first native code ran {:.2} ms after the first call", at.as_secs_f64() * 1e3);
    }
    println!("the last run ran on: {last_tier}");

    let (result, osr_time, entered, osr_tier) = osr;
    println!();
    println!("spin({iterations}): one call started in the interpreter");
    let expected_spin = {
        // The interpreter's semantics, computed directly (wrapping).
        let (mut i, mut acc) = (0i64, 7i64);
        while i < iterations {
            acc = acc.wrapping_mul(31).wrapping_add(i);
            i += 1;
        }
        acc
    };
    assert_eq!(result, expected_spin, "the OSR run must compute what the interpreter computes");
    match entered {
        Some(at) => println!(
            "OSR: left the interpreter for {osr_tier} code after {:.2} ms; the call took {:.3} s",
            at.as_secs_f64() * 1e3,
            osr_time.as_secs_f64()
        ),
        None => println!("OSR: the loop ended before the OSR entry was ready (try more iterations)"),
    }

    let (walk_time, walk_entered, walk_left, walk_tier) = walk_figures;
    println!();
    println!("walk({iterations}): the same loop, one call, interpreter -> Cranelift -> LLVM");
    match (walk_entered, walk_left) {
        (Some(entered), Some(left)) => println!(
            "OSR: left the interpreter for Cranelift code after {:.2} ms; left the running Cranelift loop for {walk_tier} code after {:.2} ms; the call took {:.3} s",
            entered.as_secs_f64() * 1e3,
            left.as_secs_f64() * 1e3,
            walk_time.as_secs_f64()
        ),
        (Some(entered), None) => println!(
            "OSR: left the interpreter for Cranelift code after {:.2} ms; the loop ended before LLVM's code was in (try more iterations)",
            entered.as_secs_f64() * 1e3
        ),
        _ => println!("OSR: the loop ended in the interpreter (try more iterations)"),
    }

    // Nothing runs kiln code now: retire everything and free it.
    let mut compiler = compilers.into_inner().expect("compiler lock");
    for bead in beads {
        let owner = if bead.core_handle() as usize == walk as usize { loop_broker } else { broker };
        let _ = owner.invalidate(bead);
    }
    for _ in 0..3 {
        broker.quiesce(&mut compiler);
        loop_broker.quiesce(&mut compiler);
    }
    let (cranelift_stats, llvm_stats) = (cranelift.stats(), llvm_backend.stats());
    println!();
    println!(
        "Cranelift units compiled {}, freed {}; LLVM units compiled {}, freed {}; live after shutdown: {} + {}",
        cranelift_stats.compiled,
        cranelift_stats.freed,
        llvm_stats.compiled,
        llvm_stats.freed,
        compiler.live(Side::Baseline),
        compiler.live(Side::Optimizing),
    );
    let on_llvm = last_tier == "LLVM -O2" && osr_tier == "LLVM -O2" && entered.is_some() && walk_left.is_some();
    if !on_llvm {
        eprintln!(
            "llvm_tier: did not end on LLVM code (fib's last run: {last_tier}; spin: {osr_tier}; walk: {walk_tier})"
        );
        std::process::exit(1);
    }
}
