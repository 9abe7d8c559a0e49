//! job_system: kiln-core's compile jobs on a host's job system, with real
//! Cranelift compiles.
//!
//! Twelve small functions of the tiny language (self-recursive, looping and
//! straight-line; none calls another, since no call-out is given) are
//! called by two interpreter threads. Each call asks kiln-core
//! (`Broker::on_invoke`): native code if it is published, else the
//! interpreter. A function that gets hot wakes kiln-host's
//! `JobSystemPump`, which spawns a pump task on the job system; the task
//! claims the job, compiles it with Cranelift and publishes the entry. Every
//! result is checked against the plain interpreter.
//!
//! The same scenario runs on three job systems:
//!
//! - rayon's global pool (`RayonJobSystem::global()`);
//! - a bevy_tasks `TaskPool` of two threads built here (`BevyJobSystem::new`);
//! - bevy's `AsyncComputeTaskPool` (`BevyJobSystem::async_compute()`).
//!
//! Each run waits until every function is compiled, prints the pump's
//! counters, stops the pump (bounded), then invalidates every bead and
//! quiesces so kiln hands all code back to Cranelift, which frees it.
//! `calls` is how many calls each interpreter thread makes at least
//! (default 200,000); the threads go on until everything is compiled.
//!
//! ```text
//! cargo run --release -p kiln-examples --example job_system [calls=200000]
//! RUST_LOG=kiln=debug cargo run --release -p kiln-examples --example job_system
//! ```

use std::cell::Cell;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bevy_tasks::{AsyncComputeTaskPool, TaskPoolBuilder};
use kiln_core::{Bead, BeadState, Broker, CompileRequest, ExponentialBackoffPolicy, NoEvents, ThresholdPolicy};
use kiln_cranelift::CraneliftCompiler;
use kiln_examples::interp::{Hooks, Interpreter, Plain};
use kiln_examples::ir::{FuncId, Program};
use kiln_examples::jit;
use kiln_host::{BevyJobSystem, JobSystem, JobSystemPump, PumpConfig, RayonJobSystem};

const SOURCE: &str = "
// Self-recursive: interpreted, every level is a kiln dispatch; compiled,
// the recursion is a direct native call.
fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); }
fn fact(n) { if n < 2 { return 1; } return n * fact(n - 1); }
fn tri(n) { if n == 0 { return 0; } return n + tri(n - 1); }
fn gcd(a, b) {
    if a == b { return a; }
    if a > b { return gcd(a - b, b); }
    return gcd(a, b - a);
}

// Loops.
fn sum_squares(n) { let i = 0; let acc = 0; while i < n { acc = acc + i * i; i = i + 1; } return acc; }
fn power(b, e) { let acc = 1; while e > 0 { acc = acc * b; e = e - 1; } return acc; }
fn isqrt(n) { let r = 0; while (r + 1) * (r + 1) <= n { r = r + 1; } return r; }
fn pell(n) { let a = 0; let b = 1; while n > 0 { let c = 2 * b + a; a = b; b = c; n = n - 1; } return a; }
fn hash(a, b, c, d) {
    let h = 17;
    let i = 0;
    while i < 8 { h = h * 31 + a * i - b; h = h * 7 + c - d * i; i = i + 1; }
    return h;
}

// Straight-line code and branches.
fn poly(x) { return 3 * x * x * x - 2 * x * x + x - 7; }
fn clamp(x, lo, hi) { if x < lo { return lo; } else if x > hi { return hi; } return x; }
fn max3(a, b, c) { let m = a; if b > m { m = b; } if c > m { m = c; } return m; }
";

/// Calls (interpreted ones, recursive calls included) before a function is
/// promoted.
const HOT_CALLS: u32 = 100;

/// Interpreter threads per run.
const INTERPRETERS: usize = 2;

/// Distinct calls in the workload, cycled through by every thread.
const CASES: usize = 96;

/// A hang guard: how long a run may take to get every function compiled.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(30);

/// Two pump tasks at once: every task compiles with its own clone of the
/// `CraneliftCompiler` (clones share the backend and the unit table, and
/// compile in parallel). Two jobs per task hands the worker back to the
/// engine between short batches.
const PUMP: PumpConfig = PumpConfig::new().max_in_flight(2).jobs_per_task(2);

/// A kiln-core broker whose wake hook spawns pump tasks on `J`.
type Kiln<J> = Broker<&'static Bead, ThresholdPolicy, ExponentialBackoffPolicy, JobSystemPump<J>, NoEvents>;

/// One call of the workload and what the plain interpreter returns for it.
struct Case {
    func: FuncId,
    args: Vec<i64>,
    expected: i64,
}

/// `CASES` calls spread over every function, with arguments that keep the
/// interpreted recursion shallow and every loop short.
fn workload(program: &Program) -> Vec<Case> {
    let interpreter = Interpreter::new(program);
    (0..CASES)
        .map(|k| {
            let function = &program.functions[k % program.functions.len()];
            let k = k as i64;
            let args = match function.name.as_str() {
                "fib" => vec![8 + k % 10],
                "fact" => vec![1 + k % 20],
                "tri" | "sum_squares" => vec![k * 3],
                "gcd" => vec![1 + k * 7 % 60, 1 + k * 5 % 45],
                "power" => vec![k % 9 - 3, k % 21],
                "isqrt" => vec![k * k * 13 + k],
                "pell" => vec![k % 40],
                "poly" => vec![k - 48],
                _ => (0..function.params as i64).map(|i| (k * 37 + i * 11) % 101 - 50).collect(),
            };
            assert_eq!(args.len(), function.params, "arguments for `{}`", function.name);
            let expected = interpreter.invoke(&Plain, function.id, &args);
            Case { func: function.id, args, expected }
        })
        .collect()
}

/// The interpreter with kiln in front of every call: native entry if
/// published, else interpret. Counts both, per thread.
struct Tiered<'a, J: JobSystem> {
    broker: &'a Kiln<J>,
    beads: &'a [&'static Bead],
    native: Cell<u64>,
    interpreted: Cell<u64>,
}

impl<J: JobSystem> Hooks for Tiered<'_, J> {
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        match self.broker.on_invoke(&self.beads[func as usize]) {
            Some(code) => {
                self.native.set(self.native.get() + 1);
                // SAFETY: kiln publishes only code compiled from `func`'s
                // definition (arity `args.len()`), live until retired and
                // quiesced, which happens after every interpreter thread ended.
                unsafe { jit::call_native(code.as_ptr(), args) }
            }
            None => {
                self.interpreted.set(self.interpreted.get() + 1);
                interpreter.interpret(self, stack, func, args)
            }
        }
    }
}

/// What one interpreter thread did.
struct Tally {
    calls: u64,
    native: u64,
    interpreted: u64,
}

/// One interpreter thread: at least `calls` calls from the workload
/// (starting at `first`), then on until `done`; every result is checked.
fn interpret<J: JobSystem>(
    tiered: Tiered<'_, J>,
    program: &Program,
    cases: &[Case],
    first: usize,
    calls: u64,
    done: &AtomicBool,
) -> Tally {
    let interpreter = Interpreter::new(program);
    let mut stack = Vec::with_capacity(1024);
    let mut made = 0;
    // Relaxed: `done` only ends the loop; the tally is handed over by `join`.
    while made < calls || !done.load(Ordering::Relaxed) {
        let case = &cases[(first + made as usize) % cases.len()];
        let result = tiered.call(&interpreter, &mut stack, case.func, &case.args);
        assert_eq!(
            result, case.expected,
            "{}{:?} through kiln differs from the interpreter",
            program.functions[case.func as usize].name, case.args
        );
        made += 1;
    }
    Tally { calls: made, native: tiered.native.get(), interpreted: tiered.interpreted.get() }
}

/// Whether every function has its (only) tier's code published.
fn all_compiled(beads: &[&'static Bead]) -> bool {
    beads.iter().all(|bead| bead.state() == BeadState::Compiled(0))
}

/// The scenario on one job system: interpreter threads call the workload
/// until every function is compiled by pump tasks on `jobs`; then the pump
/// is stopped and all code is retired and freed. Panics if a result
/// differs, a function is not compiled in time, or the pump does not stop.
fn run<J: JobSystem>(label: &str, jobs: J, program: &'static Program, cases: &[Case], calls: u64) {
    println!("{label}");
    // Fresh beads per run (the core pointer is the function's index, as in
    // osr.rs) and a backend of its own, so each run's counts start at zero.
    let beads: Vec<&'static Bead> = program
        .functions
        .iter()
        .map(|function| &*Box::leak(Box::new(Bead::new(ptr::without_provenance_mut(function.id as usize)))))
        .collect();
    let backend = jit::config().build().expect("Cranelift supports this machine");
    let compiler = CraneliftCompiler::new(backend.clone(), move |request: &CompileRequest<'_, &'static Bead>| {
        let func = request.bead.core_handle() as usize as FuncId;
        Ok(jit::function_def(program, func, false, None))
    });
    let pump = JobSystemPump::new(jobs, PUMP);
    let broker: Arc<Kiln<J>> = Arc::new(Broker::new(
        ThresholdPolicy::new(HOT_CALLS),
        ExponentialBackoffPolicy::default(),
        pump.clone(),
        NoEvents,
    ));
    // Tasks hold the broker weakly: dropping the last `Arc` at the end of
    // the run frees it even though its pump and the tasks refer to each other.
    pump.attach_arc(&broker, compiler.clone()).expect("a new pump attaches once");

    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (tallies, compiled_after) = thread::scope(|scope| {
        let threads: Vec<_> = (0..INTERPRETERS)
            .map(|first| {
                let tiered = Tiered {
                    broker: &broker,
                    beads: &beads,
                    native: Default::default(),
                    interpreted: Default::default(),
                };
                let done = &done;
                // Threads start half the workload apart, so they make
                // different functions hot at the same time.
                scope.spawn(move || interpret(tiered, program, cases, first * cases.len() / INTERPRETERS, calls, done))
            })
            .collect();
        // A thread that ended before `done` panicked (a wrong result): stop
        // waiting so its message comes out now, not after the timeout.
        while !all_compiled(&beads)
            && started.elapsed() < COMPILE_TIMEOUT
            && !threads.iter().any(|thread| thread.is_finished())
        {
            thread::sleep(Duration::from_micros(200));
        }
        let compiled_after = all_compiled(&beads).then(|| started.elapsed());
        done.store(true, Ordering::Relaxed);
        let tallies: Vec<Tally> =
            threads.into_iter().map(|thread| thread.join().expect("an interpreter thread panicked")).collect();
        (tallies, compiled_after)
    });
    let Some(compiled_after) = compiled_after else {
        let states: Vec<_> =
            program.functions.iter().zip(&beads).map(|(function, bead)| (&function.name, bead.state())).collect();
        panic!("{label}: not every function was compiled within {COMPILE_TIMEOUT:?}: {states:?}, {:?}", pump.stats());
    };
    let stopping = Instant::now();
    if let Err(timeout) = pump.stop() {
        panic!("{label}: the pump did not stop: {timeout}");
    }
    let stopped_after = stopping.elapsed();
    // Read after `stop`: a task counts a job as published only after it
    // published it, so the last count may lag the bead's state until the
    // task has ended.
    let stats = pump.stats();

    let total = |field: fn(&Tally) -> u64| tallies.iter().map(field).sum::<u64>();
    println!(
        "  all {} functions compiled after {:.1} ms; {} threads made {} calls, all results match the interpreter",
        beads.len(),
        compiled_after.as_secs_f64() * 1e3,
        tallies.len(),
        total(|tally| tally.calls)
    );
    println!(
        "  kiln dispatches: {} native, {} interpreted (recursive calls included)",
        total(|tally| tally.native),
        total(|tally| tally.interpreted)
    );
    println!(
        "  pump: wakes {}, spawned {}, coalesced {}, ran {}, published {}, peak_in_flight {}",
        stats.wakes, stats.spawned, stats.coalesced, stats.ran, stats.published, stats.peak_in_flight
    );
    assert_eq!((stats.published, stats.failed, stats.in_flight), (beads.len(), 0, 0), "{label}: {stats:?}");
    assert!(stats.peak_in_flight <= PUMP.max_in_flight, "{label}: {stats:?}");

    // Nothing is queued once everything is compiled; a host shutting down
    // mid-run would need this, since `stop` leaves queued jobs queued.
    broker.cancel_queued();
    for bead in &beads {
        broker.invalidate(bead).expect("each bead is invalidated once");
    }
    // The interpreter threads have ended, so no thread holds kiln code: each
    // quiesce is a grace period, and code retired two of them ago is freed.
    let released: usize = (0..3).map(|_| broker.quiesce(&mut compiler.clone())).sum();
    let code = backend.stats();
    println!(
        "  stopped in {} µs; kiln released {released} units; Cranelift units compiled {}, freed {}, live {}",
        stopped_after.as_micros(),
        code.compiled,
        code.freed,
        code.live_units
    );
    assert_eq!(released, beads.len(), "{label}: every unit is handed back");
    assert_eq!((code.freed, code.live_units), (code.compiled, 0), "{label}: {code:?}");
    println!();
}

fn main() {
    env_logger::init();
    let calls: u64 = std::env::args().nth(1).map_or(200_000, |arg| arg.parse().expect("usage: job_system [calls]"));
    let program: &'static Program = Box::leak(Box::new(Program::compile(SOURCE).expect("the workload parses")));
    let cases = workload(program);
    println!(
        "job_system: {} functions, {INTERPRETERS} interpreter threads of at least {calls} calls each, \
         promoted after {HOT_CALLS} calls; Cranelift compiles in pump tasks ({PUMP:?})",
        program.functions.len()
    );
    println!();

    run("rayon: global pool", RayonJobSystem::global(), program, &cases, calls);

    let pool = TaskPoolBuilder::new().num_threads(2).thread_name("kiln example pool".into()).build();
    run("bevy_tasks: own TaskPool, 2 threads", BevyJobSystem::new(Arc::new(pool)), program, &cases, calls);

    // A bevy app sizes its global pools at start-up (TaskPoolPlugin); here
    // the host does it. Without this, `async_compute()` would create the
    // pool with bevy's defaults.
    AsyncComputeTaskPool::get_or_init(|| TaskPoolBuilder::new().num_threads(2).build());
    run("bevy_tasks: AsyncComputeTaskPool", BevyJobSystem::async_compute(), program, &cases, calls);
}
