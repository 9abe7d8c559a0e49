//! `LogEvents` writes one line per transition, and the broker writes none
//! of its own for the same transition. Built only with kiln-core's `log`
//! feature (on whenever kiln-std is in the same build:
//! `cargo test -p kiln-core -p kiln-std`, or `--features log`).
#![cfg(feature = "log")]

use std::sync::Mutex;

use kiln_core::{
    Bead, Broker, Budget, CodeHandle, CompileRequest, Compiled, Compiler, LogEvents, NoWake, ThresholdDeoptPolicy,
    ThresholdPolicy,
};

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        assert_eq!(record.target(), "kiln");
        LINES.lock().unwrap().push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

extern "C" fn native() -> i64 {
    1
}

/// Compiles `native` for the first bead it sees, fails for the others.
struct Jit<'a> {
    good: &'a Bead,
}

impl<'a> Compiler<&'a Bead> for Jit<'a> {
    type Error = ();
    fn compile(&mut self, job: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, ()> {
        if !std::ptr::eq(*job.bead, self.good) {
            return Err(());
        }
        let handle = CodeHandle::from_raw(1).unwrap();
        Compiled::new(native as extern "C" fn() -> i64 as *mut (), handle).map_err(|_| ())
    }
    fn release(&mut self, _code: CodeHandle) {}
}

#[test]
fn one_line_per_transition() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let (good, bad) = (Bead::new(std::ptr::null_mut()), Bead::new(std::ptr::null_mut()));
    let broker: Broker<&Bead, _, _, _, _> =
        Broker::new(ThresholdPolicy::new(1), ThresholdDeoptPolicy::default(), NoWake, LogEvents);
    broker.on_invoke(&good);
    broker.on_invoke(&bad);
    broker.pump(&mut Jit { good: &good }, Budget::unlimited());
    broker.invalidate(&good).unwrap();

    let at = |bead: &Bead| format!("bead@{:?}:", std::ptr::from_ref(bead));
    let lines = LINES.lock().unwrap().clone();
    let about = |bead: &Bead| lines.iter().filter(|(_, text)| text.starts_with(&at(bead))).cloned().collect::<Vec<_>>();
    let good_lines: Vec<String> = about(&good).into_iter().map(|(_, text)| text).collect();
    assert_eq!(
        good_lines,
        [
            format!("{} promoted to tier 0 (Invoke)", at(&good)),
            format!("{} compiled at tier 0", at(&good)),
            format!("{} invalidated", at(&good)),
        ],
        "{lines:#?}"
    );
    let bad_lines = about(&bad);
    assert_eq!(bad_lines.len(), 2, "promoted, failed: {lines:#?}");
    assert_eq!(bad_lines[1], (log::Level::Warn, format!("{} compile at tier 0 failed", at(&bad))));
    assert!(lines.iter().all(|(_, text)| text.starts_with("bead@")), "no unnamed line from the broker: {lines:#?}");
}
