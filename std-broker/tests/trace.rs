//! The timeline: a `TraceSink` writes Chrome trace event JSON that parses,
//! with a compile slice per compile (named after the function and its tier,
//! on the worker's track), instants for promotions, blacklisting and
//! quiesce rounds, and counters; custom sinks see every event kind once.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_std::{Beadie, BeadieConfig, Event, EventKind, EventSink, ThresholdPolicy, TraceSink};

extern "C" fn native() -> i64 {
    3
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn compile(beadie: &Beadie, bead: &Arc<kiln_std::Bead>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while beadie.on_invoke(bead, |_| native as *mut ()).is_none() {
        assert!(Instant::now() < deadline, "never compiled");
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_trace_parses_and_holds_slices_instants_and_counters() {
    let out = Shared::default();
    let trace = TraceSink::to_writer(out.clone());
    let kinds = Arc::new(Kinds::default());
    let beadie = Beadie::with_config(ThresholdPolicy::new(3), BeadieConfig::default());
    beadie.add_sink(trace.clone());
    // Sinks run in order: once this one saw the compile, the trace has it.
    beadie.add_sink(kinds.clone());
    let bead = beadie.register_named("fib", std::ptr::null_mut(), None);
    compile(&beadie, &bead);
    kinds.wait_for("compiled");
    let other = beadie.register_named("bad", std::ptr::null_mut(), None);
    other.blacklist();
    beadie.quiesce();
    trace.slice("frame pump", "frame", Instant::now(), Instant::now(), &[("jobs", 1.0)]);
    trace.finish().unwrap();

    let bytes = out.0.lock().unwrap().clone();
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("the trace parses as JSON");
    let events = json["traceEvents"].as_array().expect("a traceEvents array");
    let find = |ph: &str, name: &str| {
        events.iter().find(|e| e["ph"] == ph && e["name"].as_str().is_some_and(|n| n.contains(name))).cloned()
    };
    let slice = find("X", "fib (tier 0)").expect("a compile slice named after the function and tier");
    assert_eq!(slice["cat"], "compile");
    assert_eq!(slice["args"]["outcome"], "published");
    assert!(slice["dur"].as_f64().unwrap() >= 0.0);
    let worker_tid = slice["tid"].clone();
    let thread = events.iter().find(|e| e["ph"] == "M" && e["tid"] == worker_tid).expect("the worker's track is named");
    assert_eq!(thread["name"], "thread_name");
    assert!(find("i", "promote fib").is_some(), "a promotion instant");
    assert!(find("i", "blacklist bad").is_some(), "a blacklisting instant");
    assert!(find("i", "quiesce").is_some(), "a quiesce instant");
    assert!(find("C", "queue depth").is_some(), "a queue depth counter");
    assert!(find("C", "live code objects").is_some(), "a code counter");
    assert!(find("X", "frame pump").is_some(), "a host slice");
    for event in events {
        assert!(event["ts"].is_number() || event["ph"] == "M", "every event has a timestamp: {event}");
        assert!(event["pid"].is_number(), "every event has a pid: {event}");
    }
}

/// Records the kinds it sees.
#[derive(Default)]
struct Kinds(Mutex<Vec<String>>);

impl EventSink for Kinds {
    fn event(&self, event: &Event<'_>) {
        let kind = match event.kind {
            EventKind::Promoted { .. } => "promoted",
            EventKind::CompileStarted { .. } => "started",
            EventKind::Compiled { .. } => "compiled",
            EventKind::Blacklisted => "blacklisted",
            EventKind::Deoptimized(_) => "deoptimized",
            EventKind::Swapped { .. } => "swapped",
            EventKind::Quiesced { .. } => "quiesced",
            _ => return,
        };
        self.0.lock().unwrap().push(kind.to_owned());
    }
}

impl Kinds {
    fn wait_for(&self, kind: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.0.lock().unwrap().iter().any(|seen| seen == kind) {
            assert!(Instant::now() < deadline, "no {kind} event");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn custom_sinks_replace_the_log_sink_and_see_each_event_once() {
    let kinds = Arc::new(Kinds::default());
    let beadie = Beadie::with_policy(ThresholdPolicy::new(3));
    beadie.set_sinks(vec![kinds.clone()]);
    let bead = beadie.register_named("f", std::ptr::null_mut(), None);
    compile(&beadie, &bead);
    kinds.wait_for("compiled");
    assert!(bead.swap_compiled(native as *mut ()).is_some());
    bead.blacklist();
    beadie.quiesce();
    let mut seen = kinds.0.lock().unwrap().clone();
    // The promoting call's event and the worker's start may come in either
    // order (the job is queued before the promotion is reported).
    seen[..2].sort();
    assert_eq!(seen, ["promoted", "started", "compiled", "swapped", "deoptimized", "blacklisted", "quiesced"]);
}

/// Records each `Compiled` event's time.
#[derive(Default)]
struct Times(Mutex<Vec<Option<Duration>>>);

impl EventSink for Times {
    fn event(&self, event: &Event<'_>) {
        if let EventKind::Compiled { took, .. } = event.kind {
            self.0.lock().unwrap().push(took);
        }
    }
}

/// A compile that takes at least 2 ms.
fn slow_native(_: &Arc<kiln_std::Bead>) -> *mut () {
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2) {
        std::hint::spin_loop();
    }
    native as *mut ()
}

#[test]
fn a_compiled_event_carries_the_compile_time_from_a_worker_and_from_a_host_pump() {
    // A worker's pump is timed by kiln-core's clock (its compiler does not
    // time the compile again); a host's pump may have no clock, and then
    // kiln-std's compiler times it.
    for workers in [1, 0] {
        let times = Arc::new(Times::default());
        let beadie = Beadie::with_config(ThresholdPolicy::new(1), BeadieConfig { workers, ..BeadieConfig::default() });
        beadie.set_sinks(vec![times.clone()]);
        let bead = beadie.register(std::ptr::null_mut(), None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while beadie.on_invoke(&bead, slow_native).is_none() {
            if workers == 0 {
                beadie.pump(kiln_std::Budget::unlimited());
            }
            assert!(Instant::now() < deadline, "never compiled");
            std::thread::sleep(Duration::from_micros(200));
        }
        let seen = times.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{workers} workers: one compiled event");
        let took = seen[0].unwrap_or_else(|| panic!("{workers} workers: the compiled event has no time"));
        assert!(took >= Duration::from_millis(2), "{workers} workers: {took:?} for a 2 ms compile");
        assert!(took < Duration::from_secs(5));
    }
}
