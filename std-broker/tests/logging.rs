//! Tracing goes through `log` (target `kiln`): promotions, compile times and
//! failures each leave a record. A capturing logger checks they do.

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

#[test]
fn transitions_compile_times_and_failures_are_logged() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
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
