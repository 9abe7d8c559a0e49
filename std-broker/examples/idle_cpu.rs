//! CPU used by an idle process with a `Beadie` alive, in each phase of its
//! worker's idle schedule, beside floors measured in the same process.
//!
//! One promotion runs (so the worker has been active), then the process
//! sleeps and reports the CPU time it used (user + system: `getrusage` in
//! microseconds, and `/proc/self/stat` in clock ticks) over:
//!
//! - the first second after the compile (the worker polls every ≤ 1 ms);
//! - 1 s to 10 s (polls every ≤ 20 ms);
//! - the next `KILN_IDLE_SECS` seconds (default 5; polls every 100 ms:
//!   the steady idle cost).
//!
//! Then the `Beadie` is dropped and the same window is measured twice more:
//! with a plain thread that only sleeps 100 ms at a time (the floor of the
//! steady idle schedule: what its wake-ups cost whoever makes them), and
//! with no thread at all.
//!
//! Run: `cargo run --release -p kiln-std --example idle_cpu` (about 25 s).

use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_std::{Beadie, ThresholdPolicy};

extern "C" fn native() -> i64 {
    1
}

/// utime + stime of this process in clock ticks (fields 14 and 15).
fn ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    // The command name (field 2) may contain spaces: count from after it.
    let after_name = &stat[stat.rfind(')').expect("a /proc stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// User + system CPU time of this process.
fn rusage() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed value we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Sleeps `seconds` and prints the CPU the process used meanwhile.
fn window(what: &str, seconds: Duration) {
    let (ticks_before, cpu_before) = (ticks(), rusage());
    std::thread::sleep(seconds);
    let (ticks_used, cpu_used) = (ticks() - ticks_before, rusage() - cpu_before);
    let share = cpu_used.as_secs_f64() / seconds.as_secs_f64() * 100.0;
    println!(
        "{what:<44} {:>5.1} s: {cpu_used:>10.2?} CPU, {share:.3} % of one core, {ticks_used} clock ticks",
        seconds.as_secs_f64()
    );
}

fn main() {
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let steady = Duration::from_secs(env("KILN_IDLE_SECS", 5));
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1));
    let bead = beadie.register(ptr::null_mut(), None);
    let started = Instant::now();
    while bead.compiled().is_none() {
        beadie.on_invoke(&bead, |_| native as extern "C" fn() -> i64 as *mut ());
        assert!(started.elapsed() < Duration::from_secs(5), "the promotion never completed");
    }
    window("Beadie, 0-1 s after the last compile", Duration::from_secs(1));
    window("Beadie, 1-10 s after", Duration::from_secs(9));
    window("Beadie, from 10 s after (steady idle)", steady);
    drop(beadie);

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            // Relaxed: the flag orders nothing; the join below waits.
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(100));
            }
        })
    };
    window("floor: a thread sleeping 100 ms at a time", steady);
    stop.store(true, Ordering::Relaxed);
    poller.thread().unpark();
    poller.join().unwrap();
    window("floor: no thread", steady);
}
