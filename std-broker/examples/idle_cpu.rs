//! CPU used by an idle process with a `Beadie` alive: one promotion runs
//! (so the worker has been active), the process waits
//! `KILN_IDLE_SETTLE_SECS` (default 0), then sleeps for `KILN_IDLE_SECS`
//! (default 5) seconds and prints the CPU time it used meanwhile — user + system, from `/proc/self/stat` (clock ticks) and
//! from `getrusage` (microseconds).
//!
//! Run: `cargo run --release -p kiln-std --example idle_cpu`.

use std::ptr;
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

fn main() {
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let (settle, seconds) = (env("KILN_IDLE_SETTLE_SECS", 0), env("KILN_IDLE_SECS", 5));
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1));
    let bead = beadie.register(ptr::null_mut(), None);
    let started = Instant::now();
    while bead.compiled().is_none() {
        beadie.on_invoke(&bead, |_| native as extern "C" fn() -> i64 as *mut ());
        assert!(started.elapsed() < Duration::from_secs(5), "the promotion never completed");
    }
    std::thread::sleep(Duration::from_secs(settle));
    let (ticks_before, cpu_before) = (ticks(), rusage());
    std::thread::sleep(Duration::from_secs(seconds));
    let (ticks_used, cpu_used) = (ticks() - ticks_before, rusage() - cpu_before);
    let share = cpu_used.as_secs_f64() / seconds as f64 * 100.0;
    println!(
        "idle {seconds} s ({settle} s after the last compile) with a Beadie alive: {ticks_used} clock ticks (/proc/self/stat), {cpu_used:?} CPU (getrusage), {share:.3} % of one core"
    );
    drop(beadie);
}
