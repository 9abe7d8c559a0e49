//! The fib table's LLVM rows (feature `llvm`), on kiln-core with a
//! `TierDispatch`: tier 0 to Cranelift, tier 1 to LLVM -O2.
//!
//! All four rows run on the same machinery — a kiln-core broker, a pump
//! thread woken by kiln, fresh beads per run — and differ only in policy,
//! so they compare tiers, not brokers:
//!
//! - Cranelift only: tier 0 at 1,000 calls, nothing above;
//! - LLVM only: straight to tier 1 at 1,000 calls;
//! - tiered: tier 0 at 1,000 calls, tier 1 at 1,001 — LLVM is queued at
//!   the first call after Cranelift's code is in (see `llvm_tier.rs` for
//!   why fib's second rung sits one call above the first), and swapped in
//!   while fib keeps being called;
//! - pre-compiled LLVM: tier 1 submitted and compiled before the first
//!   call (the LLVM floor).
//!
//! "First native" is when the first call got native code, from the start of
//! the run: the latency a tier makes the program pay in the interpreter.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use kiln_core::{
    Bead, BeadState, Broker, Budget, CompileRequest, Decision, ExponentialBackoffPolicy, HotnessPolicy, HotnessStats,
    JobKind, NoEvents, TierLadder, WakeHook,
};
use kiln_cranelift::{CraneliftBackend, CraneliftCompiler};
use kiln_examples::interp::{Hooks, Interpreter};
use kiln_examples::ir::{FuncId, Program};
use kiln_examples::{jit, llvm};
use kiln_llvm::{LlvmBackend, LlvmCompiler, TierDispatch};

use super::{Run, format_time, median};

/// The program the compilers' `define` functions read.
static PROGRAM: OnceLock<&'static Program> = OnceLock::new();

fn program() -> &'static Program {
    PROGRAM.get().expect("set before any compile")
}

fn define_cranelift(
    request: &CompileRequest<'_, &'static Bead>,
) -> Result<kiln_cranelift::FunctionDef, kiln_cranelift::CraneliftError> {
    Ok(jit::function_def(program(), request.bead.core_handle() as usize as FuncId, false, None))
}

fn define_llvm(request: &CompileRequest<'_, &'static Bead>) -> Result<kiln_llvm::FunctionDef, kiln_llvm::LlvmError> {
    Ok(llvm::function_def(program(), request.bead.core_handle() as usize as FuncId, false, None))
}

type DefineCranelift = for<'r, 'j> fn(
    &'r CompileRequest<'j, &'static Bead>,
) -> Result<kiln_cranelift::FunctionDef, kiln_cranelift::CraneliftError>;
type DefineLlvm =
    for<'r, 'j> fn(&'r CompileRequest<'j, &'static Bead>) -> Result<kiln_llvm::FunctionDef, kiln_llvm::LlvmError>;
type Dispatch =
    TierDispatch<CraneliftCompiler<&'static Bead, DefineCranelift>, LlvmCompiler<&'static Bead, DefineLlvm>>;

/// A row's policy: a two-rung ladder capped at `max_tier`.
#[derive(Clone, Copy, Debug)]
struct RowPolicy {
    ladder: TierLadder<2>,
    max_tier: u8,
}

impl HotnessPolicy for RowPolicy {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        self.ladder.decide(stats)
    }
    fn max_tier(&self) -> u8 {
        self.max_tier
    }
}

#[derive(Default)]
struct WakePumper(OnceLock<Thread>);

impl WakeHook for WakePumper {
    fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

type RowBroker = Broker<&'static Bead, RowPolicy, ExponentialBackoffPolicy, WakePumper, NoEvents>;

#[derive(Clone, Copy, PartialEq)]
enum LlvmRow {
    CraneliftOnly,
    LlvmOnly,
    Tiered,
    PreCompiledLlvm,
}

impl LlvmRow {
    fn label(self) -> &'static str {
        match self {
            Self::CraneliftOnly => "Cranelift only",
            Self::LlvmOnly => "LLVM only",
            Self::Tiered => "tiered Cranelift -> LLVM",
            Self::PreCompiledLlvm => "pre-compiled LLVM",
        }
    }

    fn policy(self) -> RowPolicy {
        let (thresholds, max_tier) = match self {
            Self::CraneliftOnly => ([1_000, u32::MAX], 0),
            Self::LlvmOnly | Self::PreCompiledLlvm => ([1_000, 1_000], 1),
            Self::Tiered => ([1_000, 1_001], 1),
        };
        RowPolicy { ladder: TierLadder::new(thresholds), max_tier }
    }
}

/// One row's kiln: a broker, its compilers and the pump thread.
struct CoreKiln {
    broker: &'static RowBroker,
    compilers: Arc<Mutex<Dispatch>>,
    stop: Arc<AtomicBool>,
    pumper: Option<JoinHandle<()>>,
}

impl CoreKiln {
    fn new(row: LlvmRow, cranelift: &CraneliftBackend, llvm: &LlvmBackend) -> Self {
        let broker: &'static RowBroker = Box::leak(Box::new(Broker::new(
            row.policy(),
            ExponentialBackoffPolicy::default(),
            WakePumper::default(),
            NoEvents,
        )));
        let compilers = Arc::new(Mutex::new(TierDispatch::new(
            CraneliftCompiler::new(cranelift.clone(), define_cranelift as DefineCranelift),
            LlvmCompiler::new(llvm.clone(), define_llvm as DefineLlvm),
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let pumper = {
            let (compilers, stop) = (Arc::clone(&compilers), Arc::clone(&stop));
            std::thread::spawn(move || {
                // Acquire pairs with the Release store in `drop`.
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(Duration::from_millis(20));
                    let mut compiler = compilers.lock().expect("compiler lock");
                    broker.pump(&mut *compiler, Budget::unlimited());
                }
            })
        };
        let _ = broker.wake_hook().0.set(pumper.thread().clone());
        Self { broker, compilers, stop, pumper: Some(pumper) }
    }

    /// One timed run with fresh beads: its time and when native code first ran.
    fn once(&self, row: LlvmRow, run: &Run) -> (Duration, Option<Duration>) {
        let beads: Vec<&'static Bead> = run
            .program
            .functions
            .iter()
            .map(|function| &*Box::leak(Box::new(Bead::new(ptr::without_provenance_mut(function.id as usize)))))
            .collect();
        if row == LlvmRow::PreCompiledLlvm {
            for bead in &beads {
                self.broker.submit(bead, 1, JobKind::Invoke).expect("a fresh bead takes a submit");
            }
            while beads.iter().any(|bead| bead.state() != BeadState::Compiled(1)) {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let interpreter = Interpreter::new(run.program);
        let hooks = CoreHooks { broker: self.broker, beads: &beads, first_native: Cell::new(None) };
        let mut stack = Vec::with_capacity(1024);
        let started = Instant::now();
        for _ in 0..run.runs {
            assert_eq!(hooks.call(&interpreter, &mut stack, run.fib, &[run.n]), run.expected);
        }
        let elapsed = started.elapsed();
        let first_native = hooks.first_native.get().map(|at| at.saturating_duration_since(started));
        // Nothing runs kiln code now: retire it and let kiln free it.
        for bead in &beads {
            let _ = self.broker.invalidate(bead);
        }
        let mut compiler = self.compilers.lock().expect("compiler lock");
        for _ in 0..3 {
            self.broker.quiesce(&mut *compiler);
        }
        (elapsed, first_native)
    }
}

impl Drop for CoreKiln {
    fn drop(&mut self) {
        // Release pairs with the pump thread's Acquire load.
        self.stop.store(true, Ordering::Release);
        if let Some(pumper) = self.pumper.take() {
            pumper.thread().unpark();
            let _ = pumper.join();
        }
    }
}

/// kiln-core between the interpreter and the row's tiers.
struct CoreHooks<'a> {
    broker: &'static RowBroker,
    beads: &'a [&'static Bead],
    first_native: Cell<Option<Instant>>,
}

impl Hooks for CoreHooks<'_> {
    #[inline(always)]
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        match self.broker.on_invoke(&self.beads[func as usize]) {
            Some(code) => {
                if self.first_native.get().is_none() {
                    self.first_native.set(Some(Instant::now()));
                }
                // SAFETY: kiln publishes only code compiled from `func`'s
                // definition (either tier, arity `args.len()`), live until
                // retired and quiesced after the run.
                unsafe { jit::call_native(code.as_ptr(), args) }
            }
            None => interpreter.interpret(self, stack, func, args),
        }
    }
}

/// The LLVM rows, their kilns and their timings.
pub(crate) struct LlvmRows {
    rows: Vec<(LlvmRow, CoreKiln)>,
    times: Vec<Vec<Duration>>,
    first_native: Vec<Vec<Duration>>,
    llvm: LlvmBackend,
}

impl LlvmRows {
    pub(crate) fn new(program: &'static Program, cranelift: &CraneliftBackend) -> Self {
        let _ = PROGRAM.set(program);
        let llvm = llvm::config().build().expect("LLVM supports this machine");
        let rows: Vec<_> = [LlvmRow::CraneliftOnly, LlvmRow::LlvmOnly, LlvmRow::Tiered, LlvmRow::PreCompiledLlvm]
            .into_iter()
            .map(|row| (row, CoreKiln::new(row, cranelift, &llvm)))
            .collect();
        let count = rows.len();
        Self { rows, times: vec![Vec::new(); count], first_native: vec![Vec::new(); count], llvm }
    }

    /// Runs every row once; `record` keeps the times (false: warm-up).
    pub(crate) fn rep(&mut self, run: &Run, record: bool) {
        for (index, (row, kiln)) in self.rows.iter().enumerate() {
            let (time, first) = kiln.once(*row, run);
            if record {
                self.times[index].push(time);
                self.first_native[index].extend(first);
            }
        }
    }

    /// Prints the rows; `floor` is the pre-compiled Cranelift row's time.
    pub(crate) fn print(&self, dispatches: u64, floor: f64) {
        println!();
        println!("feature llvm: kiln-core + TierDispatch (tier 0 Cranelift at 1,000 calls, tier 1 LLVM -O2 at 1,001)");
        println!(
            "{:<24} {:>9}   {:>18}   {:>14}   {:>12}",
            "config", "time", "throughput", "vs pre-compiled", "first native"
        );
        println!(
            "{:<24} {:>9}   {:>18}   {:>14}   {:>12}",
            "-".repeat(24),
            "-".repeat(9),
            "-".repeat(18),
            "-".repeat(14),
            "-".repeat(12)
        );
        let mut medians = Vec::new();
        for (index, (row, _)) in self.rows.iter().enumerate() {
            let time = median(self.times[index].clone());
            let first = (!self.first_native[index].is_empty()).then(|| median(self.first_native[index].clone()));
            let throughput = dispatches as f64 / time.as_secs_f64() / 1e6;
            println!(
                "{:<24} {:>9}   {:>8.1}M dispatch/s   {:>13.3}x   {:>12}",
                row.label(),
                format_time(time),
                throughput,
                time.as_secs_f64() / floor,
                first.map_or("-".to_owned(), |at| format!("{:.3}ms", at.as_secs_f64() * 1e3)),
            );
            medians.push((time, first));
        }
        let (cranelift, tiered) = (medians[0], medians[2]);
        println!();
        println!(
            "tiered / Cranelift only: {:.3}x time; first native code {} vs {}",
            tiered.0.as_secs_f64() / cranelift.0.as_secs_f64(),
            tiered.1.map_or("-".to_owned(), |at| format!("{:.3}ms", at.as_secs_f64() * 1e3)),
            cranelift.1.map_or("-".to_owned(), |at| format!("{:.3}ms", at.as_secs_f64() * 1e3)),
        );
        let stats = self.llvm.stats();
        println!("LLVM units compiled {}, freed {}, live {}", stats.compiled, stats.freed, stats.live_units);
    }
}
