//! fib: the seed's table, on kiln-std and kiln-cranelift.
//!
//! A recursive `fib` in the tiny language runs `runs` times from the host.
//! The interpreter asks kiln once per interpreted call (`on_invoke`); once
//! kiln has compiled `fib`, the next call runs native code, which recurses
//! natively (a direct call inside the Cranelift code). Rows:
//!
//! - the interpreter alone;
//! - kiln promoting after 1,000 calls, with the compile queued 0, 500 and
//!   990 calls early (`queue_ahead`), on kiln-std's broker thread;
//! - kiln with `fib` compiled before the first call, so every call takes
//!   kiln's fast path: the floor the tiered rows are measured against.
//!
//! "Dispatches" counts every `fib` call, interpreted or native, as the
//! seed does. Each row has one kiln (its broker thread lives across runs,
//! as in a VM); every run registers fresh beads, so each tiered run counts,
//! promotes, compiles and switches to native code anew. A row runs once
//! untimed, then `reps` timed runs, interleaved with the other rows; the
//! table shows the median.
//!
//! ```text
//! cargo run --release -p kiln-examples --example fib [n=20] [runs=500] [reps=5]
//! RUST_LOG=kiln=debug cargo run --release -p kiln-examples --example fib
//! cargo run --release -p kiln-examples --features llvm --example fib 25 200   # + the LLVM rows
//! ```
//!
//! With the `llvm` feature the table gains four rows on kiln-core (see
//! `fib/llvm_rows.rs`): Cranelift only, LLVM only, tiered Cranelift → LLVM
//! and pre-compiled LLVM, measured in the same run, interleaved with the
//! rows above.

use std::time::{Duration, Instant};

use kiln_cranelift::CraneliftBackend;
use kiln_examples::interp::{Hooks, Interpreter, Plain};
use kiln_examples::ir::{FuncId, Program};
use kiln_examples::jit;
use kiln_std::{BackendAdapter, BoundBead, ThresholdPolicy, TraceSink};

#[cfg(feature = "llvm")]
#[path = "fib/llvm_rows.rs"]
mod llvm_rows;

const SOURCE: &str = "
fn fib(n) {
    if n < 2 { return n; }
    return fib(n - 1) + fib(n - 2);
}
";

/// kiln between the interpreter and Cranelift: one bead per function.
struct Tiered<'a> {
    program: &'static Program,
    adapter: &'a BackendAdapter<CraneliftBackend>,
    beads: Vec<BoundBead<CraneliftBackend>>,
}

impl Hooks for Tiered<'_> {
    #[inline(always)]
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        let program = self.program;
        // The factory captures two words and runs only on the call that
        // makes `func` hot (on kiln's broker thread).
        let code = self
            .adapter
            .on_invoke(&self.beads[func as usize], move |_bead| jit::function_def(program, func, false, None));
        match code {
            // SAFETY: kiln publishes only code compiled from `func`'s
            // definition, whose arity is `args.len()`; it stays live until
            // retired and quiesced, which this program does after the run.
            Some(code) => unsafe { jit::call_native(code, args) },
            None => interpreter.interpret(self, stack, func, args),
        }
    }
}

/// Counts every call (interpreted), to know the dispatches of one run.
struct Counting(std::cell::Cell<u64>);

impl Hooks for Counting {
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        self.0.set(self.0.get() + 1);
        interpreter.interpret(self, stack, func, args)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Row {
    Interpreter,
    Tiered { queue_ahead: u32 },
    PreCompiled,
}

impl Row {
    fn label(self) -> String {
        match self {
            Row::Interpreter => "interpreter (no kiln)".into(),
            Row::Tiered { queue_ahead } => format!("kiln (qa={queue_ahead})"),
            Row::PreCompiled => "kiln (pre-compiled)".into(),
        }
    }
}

struct Run {
    program: &'static Program,
    fib: FuncId,
    n: i64,
    runs: u32,
    expected: i64,
}

impl Run {
    /// The kiln a row runs on (none for the interpreter alone).
    fn kiln(row: Row, backend: &CraneliftBackend) -> Option<BackendAdapter<CraneliftBackend>> {
        let policy = match row {
            Row::Interpreter => return None,
            Row::Tiered { queue_ahead } => ThresholdPolicy::new(1_000).queue_ahead(queue_ahead),
            Row::PreCompiled => ThresholdPolicy::new(1_000),
        };
        Some(BackendAdapter::with_policy(backend.clone(), policy))
    }

    /// One timed run of `row`, with fresh beads (nothing compiled yet).
    fn once(&self, row: Row, kiln: Option<&BackendAdapter<CraneliftBackend>>) -> Duration {
        let interpreter = Interpreter::new(self.program);
        let mut stack = Vec::with_capacity(1024);
        let time = |hooks: &dyn Fn(&mut Vec<i64>) -> i64, stack: &mut Vec<i64>| {
            let started = Instant::now();
            for _ in 0..self.runs {
                let result = hooks(stack);
                assert_eq!(result, self.expected);
            }
            started.elapsed()
        };
        let Some(adapter) = kiln else {
            return time(&|stack| Plain.call(&interpreter, stack, self.fib, &[self.n]), &mut stack);
        };
        let beads: Vec<_> =
            self.program.functions.iter().map(|_| adapter.register(std::ptr::null_mut(), None)).collect();
        if row == Row::PreCompiled {
            for function in &self.program.functions {
                beads[function.id as usize]
                    .compile(jit::function_def(self.program, function.id, false, None))
                    .expect("fib compiles");
            }
        }
        let tiered = Tiered { program: self.program, adapter, beads };
        let elapsed = time(&|stack| tiered.call(&interpreter, stack, self.fib, &[self.n]), &mut stack);
        // Nothing runs kiln code now: retire it and let kiln free it.
        for bead in &tiered.beads {
            bead.bead().invalidate();
        }
        adapter.prune();
        for _ in 0..3 {
            adapter.beadie().quiesce();
        }
        elapsed
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn format_time(time: Duration) -> String {
    let seconds = time.as_secs_f64();
    if seconds >= 1.0 { format!("{seconds:.2}s") } else { format!("{:.1}ms", seconds * 1e3) }
}

fn main() {
    env_logger::init();
    // `--trace FILE` writes a timeline (Chrome trace event JSON) of every
    // kiln-std row's compiles; the other arguments are numbers.
    let mut trace_path = None;
    let mut numbers = Vec::new();
    let mut raw = std::env::args().skip(1);
    while let Some(arg) = raw.next() {
        match arg.as_str() {
            "--trace" => trace_path = Some(raw.next().expect("--trace needs a path")),
            _ => numbers.push(arg),
        }
    }
    let trace = trace_path.as_ref().map(|path| TraceSink::create(path).expect("the trace file can be created"));
    let mut args = numbers.iter().map(|arg| arg.parse::<u64>().expect("usage: fib [n] [runs] [reps] [--trace FILE]"));
    let n = args.next().unwrap_or(20) as i64;
    let runs = args.next().unwrap_or(500) as u32;
    let reps = args.next().unwrap_or(5).max(1) as usize;

    let program: &'static Program = Box::leak(Box::new(Program::compile(SOURCE).expect("fib parses")));
    let fib = program.function("fib").expect("fib is defined").id;
    let interpreter = Interpreter::new(program);
    let counting = Counting(std::cell::Cell::new(0));
    let expected = interpreter.invoke(&counting, fib, &[n]);
    let dispatches = counting.0.get() * u64::from(runs);
    let run = Run { program, fib, n, runs, expected };
    let backend = jit::config().build().expect("Cranelift supports this machine");

    println!(
        "fib({n}) x {runs} — recursive fibonacci, {:.1}M dispatches total (median of {reps})",
        dispatches as f64 / 1e6
    );
    println!();
    println!("{:<24} {:>9}   {:>18}   {:>14}", "config", "time", "throughput", "vs pre-compiled");
    println!("{:<24} {:>9}   {:>18}   {:>14}", "-".repeat(24), "-".repeat(9), "-".repeat(18), "-".repeat(14));
    let rows = [
        Row::Interpreter,
        Row::Tiered { queue_ahead: 0 },
        Row::Tiered { queue_ahead: 500 },
        Row::Tiered { queue_ahead: 990 },
        Row::PreCompiled,
    ];
    // One kiln per row, alive across its runs (as in a VM: kiln's broker
    // thread has compiled before); each run registers fresh beads. Every row
    // runs once untimed first, then the timed runs are interleaved so drift
    // on a busy machine spreads over all rows.
    let kilns: Vec<_> = rows.iter().map(|row| Run::kiln(*row, &backend)).collect();
    if let Some(trace) = &trace {
        for adapter in kilns.iter().flatten() {
            adapter.beadie().add_sink(trace.clone());
        }
    }
    let mut times = vec![Vec::new(); rows.len()];
    #[cfg(feature = "llvm")]
    let mut llvm_rows = llvm_rows::LlvmRows::new(program, &backend);
    for rep in 0..=reps {
        for ((row, kiln), times) in rows.iter().zip(&kilns).zip(&mut times) {
            let time = run.once(*row, kiln.as_ref());
            if rep > 0 {
                times.push(time);
            }
        }
        #[cfg(feature = "llvm")]
        llvm_rows.rep(&run, rep > 0);
    }
    for (row, kiln) in rows.iter().zip(&kilns) {
        if let Some(adapter) = kiln {
            log::debug!(target: "kiln", "{}: {:?}", row.label(), adapter.beadie().stats());
        }
    }
    drop(kilns);
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let floor = medians[rows.len() - 1].as_secs_f64();
    for (row, time) in rows.iter().zip(&medians) {
        let throughput = dispatches as f64 / time.as_secs_f64() / 1e6;
        let ratio = time.as_secs_f64() / floor;
        println!("{:<24} {:>9}   {:>8.1}M dispatch/s   {:>13.3}x", row.label(), format_time(*time), throughput, ratio);
    }
    let worst_tiered = medians[1..rows.len() - 1].iter().max().expect("three tiered rows").as_secs_f64();
    let interpreted = medians[0].as_secs_f64();
    println!();
    println!(
        "slowest tiered row / pre-compiled: {:.3}x (goal <= 1.02x); speedup over the interpreter: {:.1}x tiered, {:.1}x pre-compiled",
        worst_tiered / floor,
        interpreted / worst_tiered,
        interpreted / floor,
    );
    #[cfg(feature = "llvm")]
    llvm_rows.print(dispatches, floor);
    let stats = backend.stats();
    println!(
        "Cranelift units compiled {}, freed {}, live {} (kiln released retired code after quiescence)",
        stats.compiled, stats.freed, stats.live_units
    );
    if let (Some(trace), Some(path)) = (trace, trace_path) {
        trace.finish().expect("the trace is written");
        println!("wrote {path} (open it in ui.perfetto.dev or chrome://tracing)");
    }
}
