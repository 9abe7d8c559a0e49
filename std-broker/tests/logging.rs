//! Tracing goes through `log` (target `kiln`): promotions, compile times and
//! failures each leave a record, one line per transition, naming the
//! function. A capturing logger checks they do.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_std::{Beadie, ThresholdPolicy};

static RECORDS: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let entry = (record.level(), record.target().to_string(), record.args().to_string());
        RECORDS.lock().unwrap().push(entry);
    }
    fn flush(&self) {}
}

extern "C" fn native() -> i64 {
    3
}

fn logged(level: log::Level, needle: &str) -> bool {
    RECORDS.lock().unwrap().iter().any(|(l, target, text)| *l == level && target == "kiln" && text.contains(needle))
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "no log record: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Installs the capturing logger once for this test binary.
fn capture() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The `kiln` lines that mention `name`.
fn lines_about(name: &str) -> Vec<(log::Level, String)> {
    let records = RECORDS.lock().unwrap();
    let about = records.iter().filter(|(_, target, text)| target == "kiln" && text.contains(name));
    about.map(|(level, _, text)| (*level, text.clone())).collect()
}

#[test]
fn transitions_compile_times_and_failures_are_logged() {
    capture();
    let beadie = Beadie::with_policy(ThresholdPolicy::new(2));
    let good = beadie.register(std::ptr::null_mut(), None);
    let bad = beadie.register(std::ptr::null_mut(), None);
    for _ in 0..2 {
        beadie.on_invoke(&good, |_| native as extern "C" fn() -> i64 as *mut ());
        beadie.on_invoke(&bad, |_: &Arc<kiln_std::Bead>| std::ptr::null_mut());
    }
    wait_for("promotion", || logged(log::Level::Debug, "promote"));
    wait_for("compile time", || logged(log::Level::Debug, "µs"));
    wait_for("failure", || logged(log::Level::Warn, "failed"));
    good.invalidate();
    wait_for("invalidation", || logged(log::Level::Debug, "invalidated"));
}

#[test]
fn one_line_per_transition_each_naming_the_function() {
    capture();
    let config = kiln_std::BeadieConfig { workers: 0, ..kiln_std::BeadieConfig::default() };
    let beadie = Beadie::with_config(ThresholdPolicy::new(2), config);
    let good = beadie.register_named("good_fn_for_logs", std::ptr::null_mut(), None);
    let bad = beadie.register_named("bad_fn_for_logs", std::ptr::null_mut(), None);
    for _ in 0..2 {
        beadie.on_invoke(&good, |_| native as extern "C" fn() -> i64 as *mut ());
        beadie.on_invoke(&bad, |_: &Arc<kiln_std::Bead>| std::ptr::null_mut());
    }
    beadie.pump(kiln_std::Budget::unlimited());
    assert!(good.compiled().is_some());
    assert!(good.evict(100));
    good.invalidate();

    let good_lines = lines_about("good_fn_for_logs");
    let texts: Vec<&str> = good_lines.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(texts.len(), 4, "promoted, compiled, evicted, invalidated: one line each: {texts:#?}");
    assert!(texts[0].starts_with("good_fn_for_logs: promoted to tier 0 by a call, after 2 calls"), "{texts:#?}");
    assert!(texts[1].starts_with("good_fn_for_logs: compiled at tier 0 in "), "{texts:#?}");
    assert!(texts[1].ends_with(" µs") || texts[1].ends_with(" ms") || texts[1].ends_with(" s"), "{texts:#?}");
    assert_eq!(texts[2], "good_fn_for_logs: evicted (code memory), back to the interpreter");
    assert_eq!(texts[3], "good_fn_for_logs: invalidated");

    let bad_lines = lines_about("bad_fn_for_logs");
    assert_eq!(bad_lines.len(), 2, "promoted, failed: one line each: {bad_lines:#?}");
    let (level, failed) = &bad_lines[1];
    assert_eq!(*level, log::Level::Warn);
    assert!(failed.starts_with("bad_fn_for_logs: compile at tier 0 failed: compile returned a null entry"), "{failed}");

    // No line from a lower layer repeats a transition without the name, and
    // no raw clock value appears.
    let records = RECORDS.lock().unwrap();
    for (_, _, text) in records.iter() {
        assert!(!text.contains("ticks") && !text.contains("Some("), "unreadable line: {text}");
        assert!(!text.starts_with("kiln: "), "a line of the old, repeated kind: {text}");
    }
}
