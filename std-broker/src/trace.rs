//! A timeline: [`TraceSink`] writes kiln's events as Chrome trace event
//! JSON, which ui.perfetto.dev and chrome://tracing open.
//!
//! The format is the JSON object form (`{"traceEvents":[…]}`), one event per
//! line: each compile is a complete slice (`ph: "X"`) on the thread that ran
//! it, named after the function and its tier; promotions, swaps, deopts,
//! blacklisting, evictions and quiesce rounds are instants (`ph: "i"`);
//! queue depth and live code objects are counters (`ph: "C"`); threads are
//! named by metadata events (`ph: "M"`). A host adds its own slices,
//! instants and counters (kiln-host's frame pump slices, a backend's code
//! bytes) with [`slice`](TraceSink::slice), [`instant`](TraceSink::instant)
//! and [`counter`](TraceSink::counter). Timestamps are microseconds since
//! the sink was made.
//!
//! Writing takes the sink's lock and formats one line: slow paths only, like
//! every event. A write error stops the trace and is returned by
//! [`finish`](TraceSink::finish); kiln goes on.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Instant;

use json::{Value, obj};

use crate::sink::{Event, EventKind, EventSink};

/// An [`EventSink`] writing Chrome trace event JSON (see the module docs).
pub struct TraceSink {
    start: Instant,
    pid: u32,
    state: Mutex<TraceState>,
}

impl std::fmt::Debug for TraceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceSink").finish_non_exhaustive()
    }
}

/// A compile under way on one thread.
struct OpenCompile {
    started: f64,
    function: String,
    tier: u8,
}

struct TraceState {
    out: Option<Box<dyn Write + Send>>,
    error: Option<io::Error>,
    wrote_any: bool,
    threads: HashMap<ThreadId, u64>,
    open: HashMap<u64, OpenCompile>,
}

impl TraceSink {
    /// A sink writing to a new file at `path` (buffered).
    pub fn create(path: impl AsRef<Path>) -> io::Result<Arc<Self>> {
        let file = std::fs::File::create(path)?;
        Ok(Self::to_writer(io::BufWriter::new(file)))
    }

    /// A sink writing to `out`.
    pub fn to_writer(out: impl Write + Send + 'static) -> Arc<Self> {
        let state = TraceState {
            out: Some(Box::new(out)),
            error: None,
            wrote_any: false,
            threads: HashMap::new(),
            open: HashMap::new(),
        };
        let sink = Arc::new(Self { start: Instant::now(), pid: std::process::id(), state: Mutex::new(state) });
        sink.with_state(|state| state.write_raw(b"{\"traceEvents\":[\n"));
        sink
    }

    /// Microseconds from the sink's start to `at` (0 for earlier instants).
    fn micros(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64() * 1e6
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut TraceState) -> R) -> R {
        // Nothing panics under this lock but a writer; a poisoned state is
        // still well-formed up to its last full line.
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes a slice `name` on the calling thread's track, from `start` to
    /// `end` (a frame pump's step, a loading screen), with `args`.
    pub fn slice(&self, name: &str, category: &str, start: Instant, end: Instant, args: &[(&str, f64)]) {
        let (ts, dur) = (self.micros(start), (self.micros(end) - self.micros(start)).max(0.0));
        self.with_state(|state| {
            let tid = state.tid(self.pid);
            let event = obj([
                ("ph", "X".into()),
                ("name", name.into()),
                ("cat", category.into()),
                ("pid", self.pid.into()),
                ("tid", tid.into()),
                ("ts", ts.into()),
                ("dur", dur.into()),
                ("args", args_of(args)),
            ]);
            state.write(&event);
        });
    }

    /// Writes an instant `name` on the calling thread's track, now.
    pub fn instant(&self, name: &str, category: &str, args: &[(&str, f64)]) {
        self.instant_value(name, category, args_of(args));
    }

    fn instant_value(&self, name: &str, category: &str, args: Value) {
        let ts = self.micros(Instant::now());
        self.with_state(|state| {
            let tid = state.tid(self.pid);
            let event = obj([
                ("ph", "i".into()),
                ("s", "t".into()),
                ("name", name.into()),
                ("cat", category.into()),
                ("pid", self.pid.into()),
                ("tid", tid.into()),
                ("ts", ts.into()),
                ("args", args),
            ]);
            state.write(&event);
        });
    }

    /// Writes the value of counter `name` now (a track of its own).
    pub fn counter(&self, name: &str, value: f64) {
        let ts = self.micros(Instant::now());
        self.with_state(|state| {
            let event = obj([
                ("ph", "C".into()),
                ("name", name.into()),
                ("pid", self.pid.into()),
                ("ts", ts.into()),
                ("args", obj([("value", value.into())])),
            ]);
            state.write(&event);
        });
    }

    /// Closes the JSON and flushes; later events are dropped. Returns the
    /// first write error, if any (the trace is incomplete then).
    pub fn finish(&self) -> io::Result<()> {
        self.with_state(|state| {
            state.write_raw(b"\n]}\n");
            if let Some(mut out) = state.out.take()
                && let Err(error) = out.flush()
            {
                state.error.get_or_insert(error);
            }
            state.error.take().map_or(Ok(()), Err)
        })
    }

    fn compile_ended(&self, event: &Event<'_>, tier: u8, outcome: &str, reason: Option<&str>) {
        let now = self.micros(Instant::now());
        let function = event.function().map_or_else(String::new, |function| function.display_name());
        self.with_state(|state| {
            let tid = state.tid(self.pid);
            let started = match state.open.remove(&tid) {
                Some(open) if open.function == function && open.tier == tier => open.started,
                // Started before the sink was added: a zero-length slice.
                _ => now,
            };
            let mut args =
                obj([("function", function.as_str().into()), ("tier", tier.into()), ("outcome", outcome.into())]);
            if let Some(reason) = reason {
                args.insert("reason", reason.into());
            }
            let event = obj([
                ("ph", "X".into()),
                ("name", format!("{function} (tier {tier})").into()),
                ("cat", "compile".into()),
                ("pid", self.pid.into()),
                ("tid", tid.into()),
                ("ts", started.into()),
                ("dur", (now - started).into()),
                ("args", args),
            ]);
            state.write(&event);
        });
    }

    fn mark(&self, event: &Event<'_>, what: &str, mut args: Value) {
        let function = event.function().map_or_else(String::new, |function| function.display_name());
        let name = if function.is_empty() { what.to_owned() } else { format!("{what} {function}") };
        if !function.is_empty() {
            args.insert("function", function.into());
        }
        self.instant_value(&name, what, args);
    }
}

impl TraceSink {
    /// The event's gauges as counters, where it has them.
    fn gauges(&self, event: &Event<'_>) {
        if let Some(depth) = event.queue_depth() {
            self.counter("queue depth", depth as f64);
        }
        if let Some(live) = event.live_code() {
            self.counter("live code objects", live as f64);
        }
    }
}

fn args_of(args: &[(&str, f64)]) -> Value {
    Value::Object(args.iter().map(|&(key, value)| (key.to_owned(), value.into())).collect())
}

impl TraceState {
    /// The calling thread's track id, naming the track on first sight.
    fn tid(&mut self, pid: u32) -> u64 {
        let thread = std::thread::current();
        if let Some(&tid) = self.threads.get(&thread.id()) {
            return tid;
        }
        let tid = self.threads.len() as u64 + 1;
        self.threads.insert(thread.id(), tid);
        let name = thread.name().map_or_else(|| format!("thread {tid}"), str::to_owned);
        self.write(&obj([
            ("ph", "M".into()),
            ("name", "thread_name".into()),
            ("pid", pid.into()),
            ("tid", tid.into()),
            ("args", obj([("name", name.into())])),
        ]));
        tid
    }

    fn write(&mut self, event: &Value) {
        let separator: &[u8] = if self.wrote_any { b",\n" } else { b"" };
        let line = event.to_string();
        self.write_raw(separator);
        self.write_raw(line.as_bytes());
        self.wrote_any = true;
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        if let Some(out) = &mut self.out
            && let Err(error) = out.write_all(bytes)
        {
            self.error.get_or_insert(error);
            self.out = None;
        }
    }
}

impl EventSink for TraceSink {
    fn event(&self, event: &Event<'_>) {
        match event.kind {
            EventKind::Promoted { tier, site } => {
                self.mark(event, "promote", obj([("tier", tier.into()), ("site", site.into())]));
                self.gauges(event);
            }
            EventKind::QueueFull => self.mark(event, "queue full", obj([])),
            EventKind::CompileStarted { tier, .. } => {
                let now = self.micros(Instant::now());
                let function = event.function().map_or_else(String::new, |function| function.display_name());
                self.with_state(|state| {
                    let tid = state.tid(self.pid);
                    state.open.insert(tid, OpenCompile { started: now, function, tier });
                });
                self.gauges(event);
            }
            EventKind::Compiled { tier, .. } => {
                self.compile_ended(event, tier, "published", None);
                self.gauges(event);
            }
            EventKind::CompileFailed { tier, reason } => self.compile_ended(event, tier, "failed", reason),
            EventKind::Deoptimized(decision) => {
                self.mark(event, "deopt", obj([("decision", format!("{decision:?}").into())]))
            }
            EventKind::Blacklisted => self.mark(event, "blacklist", obj([])),
            EventKind::Swapped { tier } => self.mark(event, "swap", obj([("tier", tier.into())])),
            EventKind::Invalidated => self.mark(event, "invalidate", obj([])),
            EventKind::Evicted => self.mark(event, "evict", obj([])),
            EventKind::Released { .. } => {}
            EventKind::Quiesced { epoch, released } => {
                self.mark(event, "quiesce", obj([("epoch", epoch.into()), ("released", released.into())]));
                self.gauges(event);
            }
        }
    }
}

impl Drop for TraceSink {
    fn drop(&mut self) {
        // A trace nobody finished is still closed, so it parses.
        let _ = self.finish();
    }
}

/// The few JSON shapes a trace event needs, written by hand: linking
/// serde_json into kiln-std would add its `PartialEq` impls for numbers to
/// every crate that uses kiln-std, and break type inference there.
mod json {
    use std::fmt;

    /// A JSON value.
    #[derive(Debug, Clone)]
    pub(super) enum Value {
        Null,
        Number(f64),
        String(String),
        Object(Vec<(String, Value)>),
    }

    /// An object of `fields`, in order.
    pub(super) fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
        Value::Object(fields.into_iter().map(|(key, value)| (key.to_owned(), value)).collect())
    }

    impl Value {
        /// Adds (or replaces) `key` in an object; other values stay as they are.
        pub(super) fn insert(&mut self, key: &str, value: Value) {
            if let Value::Object(fields) = self {
                match fields.iter_mut().find(|(k, _)| k == key) {
                    Some((_, old)) => *old = value,
                    None => fields.push((key.to_owned(), value)),
                }
            }
        }
    }

    macro_rules! numbers {
        ($($t:ty),*) => {$(
            impl From<$t> for Value {
                fn from(n: $t) -> Self {
                    Value::Number(n as f64)
                }
            }
        )*};
    }
    numbers!(u8, u32, u64, usize, f64);

    impl From<&str> for Value {
        fn from(s: &str) -> Self {
            Value::String(s.to_owned())
        }
    }

    impl From<String> for Value {
        fn from(s: String) -> Self {
            Value::String(s)
        }
    }

    impl<T: Into<Value>> From<Option<T>> for Value {
        fn from(value: Option<T>) -> Self {
            value.map_or(Value::Null, Into::into)
        }
    }

    fn quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
        f.write_str("\"")?;
        for c in s.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }

    impl fmt::Display for Value {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Value::Null => f.write_str("null"),
                // JSON has no NaN or infinity.
                Value::Number(n) if !n.is_finite() => f.write_str("null"),
                Value::Number(n) => write!(f, "{n}"),
                Value::String(s) => quoted(f, s),
                Value::Object(fields) => {
                    f.write_str("{")?;
                    for (i, (key, value)) in fields.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        quoted(f, key)?;
                        write!(f, ":{value}")?;
                    }
                    f.write_str("}")
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn strings_are_escaped_and_numbers_plain() {
            let value = obj([("a\"b", "x\\y\n\u{1}".into()), ("n", 1.5.into()), ("z", Value::from(None::<u8>))]);
            assert_eq!(value.to_string(), r#"{"a\"b":"x\\y\n\u0001","n":1.5,"z":null}"#);
            assert_eq!(Value::from(f64::NAN).to_string(), "null");
        }
    }
}
