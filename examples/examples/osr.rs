//! osr: one long-running invocation, started in the interpreter, jumps into
//! compiled code at its loop header.
//!
//! `spin(n)` runs a loop of `n` iterations (10^8 by default) and is called
//! once, so call counting never makes it hot. The interpreter reports each
//! back-edge to kiln-core (`Broker::on_backedge`); once the back-edges
//! cross the policy's OSR threshold, kiln queues an OSR compile, a pump
//! thread compiles `spin` with Cranelift (its normal entry plus an OSR entry
//! at the loop header), and the next back-edge finds the OSR entry: the
//! interpreter hands its frame over and the loop finishes natively.
//!
//! ```text
//! cargo run --release -p kiln-examples --example osr [iterations=100000000]
//! RUST_LOG=kiln=debug cargo run --release -p kiln-examples --example osr
//! ```

use std::cell::Cell;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use kiln_core::{Bead, Broker, Budget, CompileRequest, ExponentialBackoffPolicy, NoEvents, ThresholdPolicy, WakeHook};
use kiln_cranelift::CraneliftCompiler;
use kiln_examples::interp::{Hooks, Interpreter, Plain};
use kiln_examples::ir::{FuncId, Program};
use kiln_examples::jit;

const SOURCE: &str = "
fn spin(n) {
    let i = 0;
    let acc = 7;
    while i < n {
        acc = acc * 31 + i;
        i = i + 1;
    }
    return acc;
}
";

/// Back-edges before kiln queues an OSR compile.
const OSR_THRESHOLD: u32 = 10_000;

/// Wakes the pump thread (kiln-core calls it once per burst of work).
#[derive(Default)]
struct WakePumper(OnceLock<Thread>);

impl WakeHook for WakePumper {
    fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

type OsrBroker = Broker<&'static Bead, ThresholdPolicy, ExponentialBackoffPolicy, WakePumper, NoEvents>;

/// kiln-core between the interpreter and Cranelift: calls through
/// `on_invoke`, back-edges through `on_backedge`.
struct Tiered<'a> {
    broker: &'a OsrBroker,
    beads: &'a [&'static Bead],
    /// When the interpreter left for native code (OSR).
    entered_native: Cell<Option<Instant>>,
    backedges: Cell<u64>,
}

impl Hooks for Tiered<'_> {
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        match self.broker.on_invoke(&self.beads[func as usize]) {
            // SAFETY: kiln publishes only code compiled from `func`'s
            // definition (arity `args.len()`), live until retired and quiesced.
            Some(code) => unsafe { jit::call_native(code.as_ptr(), args) },
            None => interpreter.interpret(self, stack, func, args),
        }
    }

    #[inline(always)]
    fn backedge(&self, func: FuncId, site: u32, frame: &[i64]) -> Option<i64> {
        self.backedges.set(self.backedges.get() + 1);
        let entry = self.broker.on_backedge(&self.beads[func as usize], u64::from(site))?;
        self.entered_native.set(Some(Instant::now()));
        // SAFETY: the OSR entry at `site` was compiled from `func` with
        // `site` as loop header and reads `frame`, all of `func`'s registers.
        Some(unsafe { jit::call_osr(entry.as_ptr(), frame) })
    }
}

fn main() {
    env_logger::init();
    let iterations: i64 =
        std::env::args().nth(1).map_or(100_000_000, |arg| arg.parse().expect("usage: osr [iterations]"));
    let program: &'static Program = Box::leak(Box::new(Program::compile(SOURCE).expect("spin parses")));
    let spin = program.function("spin").expect("spin is defined").id;
    let interpreter = Interpreter::new(program);
    println!("spin({iterations}): one call, one loop of {iterations} iterations, started in the interpreter");
    println!();

    let started = Instant::now();
    let expected = interpreter.invoke(&Plain, spin, &[iterations]);
    let interpreted = started.elapsed();

    // One bead per function; the core pointer is the function's index
    // (kiln stores it, never reads it).
    let beads: Vec<&'static Bead> = program
        .functions
        .iter()
        .map(|function| &*Box::leak(Box::new(Bead::new(ptr::without_provenance_mut(function.id as usize)))))
        .collect();
    let broker: OsrBroker = Broker::new(
        ThresholdPolicy::new(1_000).osr_threshold(OSR_THRESHOLD),
        ExponentialBackoffPolicy::default(),
        WakePumper::default(),
        NoEvents,
    );
    let backend = jit::config().build().expect("Cranelift supports this machine");
    let stop = AtomicBool::new(false);
    let tiered = Tiered { broker: &broker, beads: &beads, entered_native: Cell::new(None), backedges: Cell::new(0) };
    let (result, with_osr, compile_done) = std::thread::scope(|scope| {
        let (broker, stop, backend) = (&broker, &stop, backend.clone());
        let pumper = scope.spawn(move || {
            let mut compiler = CraneliftCompiler::new(backend, move |request: &CompileRequest<'_, &'static Bead>| {
                let func = request.bead.core_handle() as usize as FuncId;
                // Every loop header gets an OSR entry.
                Ok(jit::function_def(program, func, true, None))
            });
            while !stop.load(Ordering::Acquire) {
                std::thread::park_timeout(Duration::from_millis(50));
                let report = broker.pump(&mut compiler, Budget::unlimited());
                if report.published > 0 {
                    log::debug!(target: "kiln", "pump: {report:?}");
                }
            }
            compiler
        });
        let _ = broker.wake_hook().0.set(pumper.thread().clone());
        let started = Instant::now();
        let result = interpreter.invoke(&tiered, spin, &[iterations]);
        let with_osr = started.elapsed();
        let entered = tiered.entered_native.get().map(|at| at - started);
        stop.store(true, Ordering::Release);
        pumper.thread().unpark();
        let mut compiler = pumper.join().expect("pump thread");
        // Nothing runs kiln code any more: retire it and free it.
        for bead in &beads {
            let _ = broker.invalidate(bead);
        }
        for _ in 0..3 {
            broker.quiesce(&mut compiler);
        }
        (result, with_osr, entered)
    });
    assert_eq!(result, expected, "the OSR run must compute what the interpreter computes");

    let started = Instant::now();
    let code = backend.compile_function(jit::function_def(program, spin, false, None)).expect("spin compiles");
    // SAFETY: `spin` takes one argument; the code lives until freed below.
    let native_result = unsafe { jit::call_native(code.entry(), &[iterations]) };
    let native = started.elapsed();
    // SAFETY: nothing runs the code any more.
    unsafe { backend.free(code.handle()) };
    assert_eq!(native_result, expected);

    let seconds = |time: Duration| time.as_secs_f64();
    println!("{:<34} {:>10}", "run", "time");
    println!("{:<34} {:>10}", "-".repeat(34), "-".repeat(10));
    println!("{:<34} {:>9.3}s", "interpreter only (no OSR)", seconds(interpreted));
    println!("{:<34} {:>9.3}s", "kiln + OSR at the loop header", seconds(with_osr));
    println!("{:<34} {:>9.3}s", "compiled before the call (floor)", seconds(native));
    println!();
    match compile_done {
        Some(at) => println!(
            "OSR: left the interpreter after {:.2} ms ({} back-edges interpreted); speedup with OSR {:.1}x",
            seconds(at) * 1e3,
            tiered.backedges.get(),
            seconds(interpreted) / seconds(with_osr)
        ),
        None => println!("OSR: the loop ended before the OSR entry was ready (try more iterations)"),
    }
    let stats = backend.stats();
    println!("Cranelift units compiled {}, freed {}, live {}", stats.compiled, stats.freed, stats.live_units);
}
