//! Warm start: the same workload twice, cold and then warm-started from the
//! first run's saved profile, timed until 90 % of calls run native.
//!
//! The workload is a program of script functions (loops of arithmetic, in
//! the examples' tiny language), called in rounds: each round calls
//! function `k` `1 + k % 4` times. A function is promoted after 1,000
//! calls (kiln-std's default threshold) and compiled by Cranelift on
//! kiln-std's worker. "90 % native" is the first round in which at least
//! 90 % of the calls ran compiled code; the clock starts right after the
//! functions are registered, so the warm run's time includes reading the
//! profile and queueing its compiles.
//!
//! Each function is registered with a profile key: `id` a hash of its
//! name, `code_hash` a hash of its source, so an edited function's old
//! entry would count for nothing. The cold run's profile is saved to a file
//! (`--profile PATH`, default in the temp directory) and loaded back, as a
//! real second run would.
//!
//! ```text
//! cargo run --release -p kiln-examples --example warm_start [functions] [--profile PATH]
//! ```
//!
//! Prints `warm_start: cold <ms> ms, warm <ms> ms, ratio <x>`.

use std::fmt::Write as _;
use std::ptr;
use std::time::{Duration, Instant};

use kiln_cranelift::CraneliftBackend;
use kiln_examples::interp::{Hooks, Interpreter};
use kiln_examples::ir::{FuncId, Program};
use kiln_examples::jit;
use kiln_std::{BackendAdapter, BoundBead, Profile, ProfileKey, ThresholdPolicy};

/// Calls after which a function is promoted (the seed's default).
const HOT_AFTER: u32 = 1_000;
/// A run that never reaches 90 % native stops here.
const GIVE_UP: Duration = Duration::from_secs(60);

/// One script function's source: a loop whose length and body vary by `k`.
fn script(k: usize) -> String {
    let mut source = String::new();
    let iterations = 40 + (k * 7) % 41;
    let _ = writeln!(source, "fn f{k}(x) {{\n    let i = 0;\n    let acc = x;\n    while i < {iterations} {{");
    for statement in 0..2 + k % 6 {
        let mul = 3 + (k * 5 + statement * 11) % 29;
        let add = 1 + (k * 13 + statement * 3) % 17;
        let _ = writeln!(
            source,
            "        acc = acc * {mul} + i * {add};\n        if acc > 1000000 {{ acc = acc - 2000000; }}"
        );
    }
    let _ = writeln!(source, "        i = i + 1;\n    }}\n    return acc;\n}}");
    source
}

/// FNV-1a: a hash that stays the same from run to run and build to build.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Calls through kiln-std: native if compiled, else interpreted.
struct Std<'a> {
    adapter: &'a BackendAdapter<CraneliftBackend>,
    beads: &'a [BoundBead<CraneliftBackend>],
}

impl Hooks for Std<'_> {
    #[inline(always)]
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        match self.adapter.on_invoke_attached(&self.beads[func as usize]) {
            // SAFETY: the attached factory compiles `func` itself (one
            // parameter, as `args`); nothing retires it before the run ends.
            Some(code) => unsafe { jit::call_native(code, args) },
            None => interpreter.interpret(self, stack, func, args),
        }
    }
}

/// What one run measured.
struct Run {
    /// Time until a round ran 90 % of its calls native.
    to_native: Duration,
    rounds: u32,
    profile: Profile,
}

/// Registers the program's functions (keyed, factories attached), applies
/// `warm` if given, and calls rounds until 90 % of a round's calls are native.
fn run(program: &'static Program, sources: &[String], backend: &CraneliftBackend, warm: Option<&Profile>) -> Run {
    let adapter = BackendAdapter::with_policy(backend.clone(), ThresholdPolicy::new(HOT_AFTER));
    let beads: Vec<_> = program
        .functions
        .iter()
        .map(|function| {
            let name = format!("f{}", function.id);
            let key = ProfileKey { id: fnv(&name), code_hash: fnv(&sources[function.id as usize]) };
            let id = function.id;
            adapter.register_keyed(&name, key, ptr::null_mut(), move |_| {
                Ok::<_, String>(jit::function_def(program, id, false, None))
            })
        })
        .collect();
    let started = Instant::now();
    if let Some(profile) = warm {
        let report = adapter.warm_start(profile);
        println!("    warm start: {} functions matched, {} compiles queued", report.matched, report.queued);
    }
    let hooks = Std { adapter: &adapter, beads: &beads };
    let interpreter = Interpreter::new(program);
    let mut stack = Vec::with_capacity(256);
    let weight = |k: usize| 1 + k % 4;
    let total: usize = (0..beads.len()).map(weight).sum();
    let mut rounds = 0;
    let mut checksum = 0i64;
    let to_native = loop {
        let mut native = 0;
        for (k, bound) in beads.iter().enumerate() {
            for call in 0..weight(k) {
                if bound.bead().compiled().is_some() {
                    native += 1;
                }
                let result = hooks.call(&interpreter, &mut stack, k as FuncId, &[call as i64 + i64::from(rounds)]);
                checksum = checksum.wrapping_add(result);
            }
        }
        rounds += 1;
        if native * 10 >= total * 9 || started.elapsed() > GIVE_UP {
            break started.elapsed();
        }
    };
    std::hint::black_box(checksum);
    let profile = adapter.beadie().export_profile();
    // Nothing runs the code any more: retire it and let kiln free it.
    for bound in &beads {
        bound.bead().invalidate();
    }
    adapter.prune();
    for _ in 0..3 {
        adapter.beadie().quiesce();
    }
    Run { to_native, rounds, profile }
}

fn main() {
    env_logger::init();
    let mut functions = 48;
    let mut path = std::env::temp_dir().join(format!("kiln-warm-start-{}.profile", std::process::id()));
    let mut keep = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--profile" => {
                path = args.next().expect("--profile needs a path").into();
                keep = true;
            }
            number => functions = number.parse().expect("usage: warm_start [functions] [--profile PATH]"),
        }
    }
    let sources: Vec<String> = (0..functions).map(script).collect();
    let program: &'static Program =
        Box::leak(Box::new(Program::compile(&sources.concat()).expect("the scripts parse")));
    let backend = jit::config().build().expect("Cranelift supports this machine");
    // Pay Cranelift's one-time costs before either run is timed.
    let first = backend.compile_function(jit::function_def(program, 0, false, None)).expect("f0 compiles");
    // SAFETY: nothing ever ran this code.
    unsafe { backend.free(first.handle()) };

    println!(
        "warm_start: {functions} functions, promoted after {HOT_AFTER} calls, until 90 % of a round's calls run native"
    );
    println!("  cold run");
    let cold = run(program, &sources, &backend, None);
    cold.profile.save(&path).expect("the profile is written");
    let profile = Profile::load(&path).expect("the profile just written reads back");
    println!(
        "    {} rounds; profile of {} functions saved to {}",
        cold.rounds,
        profile.entries().len(),
        path.display()
    );
    println!("  warm run");
    let warm = run(program, &sources, &backend, Some(&profile));
    println!("    {} rounds", warm.rounds);
    let ms = |time: Duration| time.as_secs_f64() * 1e3;
    let ratio = cold.to_native.as_secs_f64() / warm.to_native.as_secs_f64().max(1e-9);
    println!("warm_start: cold {:.1} ms, warm {:.1} ms, ratio {ratio:.1}", ms(cold.to_native), ms(warm.to_native));
    if ratio < 3.0 {
        println!("(below the 3x goal; a busy machine slows the warm run's compiles more than the cold run's calls)");
    }
    if !keep {
        let _ = std::fs::remove_file(&path);
    }
    let stats = backend.stats();
    assert_eq!(stats.live_units, 0, "both runs hand all their code back to Cranelift");
}
