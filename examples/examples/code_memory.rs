//! code_memory: resident memory across compile → retire → quiesce cycles.
//!
//! One bead, one kiln-core broker, one `CraneliftCompiler`. Each cycle
//! promotes the bead, compiles `fib` into a module of its own, calls it,
//! retires it (`reload`) and declares quiescence; kiln-core releases code
//! two quiesces after it was retired, which frees the module. The resident
//! set size (`/proc/self/statm`) is printed every 1,000 cycles: it should
//! stay flat after the first ones (the program fails if it grows by more
//! than 1 MiB from cycle 100 on).
//!
//! ```text
//! cargo run --release -p kiln-examples --example code_memory [cycles=10000]
//! ```

use std::ptr;

use kiln_core::{AlwaysRecompilePolicy, Bead, Broker, Budget, CompileRequest, NoEvents, NoWake, ThresholdPolicy};
use kiln_cranelift::CraneliftCompiler;
use kiln_examples::ir::Program;
use kiln_examples::{jit, rss};

const SOURCE: &str = "fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); }";

fn main() {
    let cycles: u32 = std::env::args().nth(1).map_or(10_000, |arg| arg.parse().expect("usage: code_memory [cycles]"));
    let program: &'static Program = Box::leak(Box::new(Program::compile(SOURCE).expect("fib parses")));
    let backend = jit::config().build().expect("Cranelift supports this machine");
    let bead = Bead::new(ptr::null_mut());
    let broker: Broker<&Bead, ThresholdPolicy, AlwaysRecompilePolicy> =
        Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoWake, NoEvents);
    let mut compiler = CraneliftCompiler::new(backend.clone(), |_request: &CompileRequest<'_, &Bead>| {
        Ok(jit::function_def(program, 0, false, None))
    });

    let started = std::time::Instant::now();
    let mut first = None;
    println!("{:>7}  {:>12}  {:>10}  {:>16}", "cycles", "RSS", "live units", "resident code");
    for cycle in 1..=cycles {
        assert!(broker.on_invoke(&&bead).is_none());
        broker.pump(&mut compiler, Budget::unlimited());
        let entry = broker.on_invoke(&&bead).expect("compiled");
        // SAFETY: `fib` takes one argument; the code stays installed until the reload.
        assert_eq!(unsafe { jit::call_native(entry.as_ptr(), &[10]) }, 55);
        broker.reload(&&bead).expect("reload");
        broker.quiesce(&mut compiler);
        if cycle == 100 || cycle % 1_000 == 0 || cycle == cycles {
            let resident = rss::resident_bytes().unwrap_or(0);
            first.get_or_insert(resident);
            let stats = backend.stats();
            println!(
                "{cycle:>7}  {:>9.2} MB  {:>10}  {:>14} B",
                resident as f64 / 1e6,
                stats.live_units,
                stats.resident_bytes
            );
        }
    }
    let stats = backend.stats();
    let last = rss::resident_bytes().unwrap_or(0);
    let elapsed = started.elapsed();
    println!();
    println!(
        "{} compiles, {} modules freed, {:.1} µs per cycle; RSS {:+.3} MB from cycle 100 to cycle {cycles}",
        stats.compiled,
        stats.freed,
        elapsed.as_secs_f64() * 1e6 / f64::from(cycles),
        (last as f64 - first.unwrap_or(last) as f64) / 1e6,
    );
    // One leaked page per cycle would be 4 MB per 1,000 cycles.
    let growth = last.saturating_sub(first.unwrap_or(last));
    if growth > 1 << 20 {
        eprintln!("resident memory grew by {growth} B: code memory is not being returned");
        std::process::exit(1);
    }
}
