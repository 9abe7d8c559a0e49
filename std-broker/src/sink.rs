//! Pluggable event sinks: where kiln-std sends what happens to functions.
//!
//! kiln-core reports each transition once, through its `Events` hooks;
//! kiln-std's implementation ([`Sinks`]) turns each into one [`Event`] and
//! hands it to every sink of the `Beadie`, in the order they were added.
//! [`LogSink`] (the log lines of [`logs`](crate::logs)) is there from the
//! start; [`TraceSink`](crate::TraceSink) writes a timeline; a host adds its
//! own with [`Beadie::add_sink`](crate::Beadie::add_sink) or replaces them all
//! with [`Beadie::set_sinks`](crate::Beadie::set_sinks).
//!
//! Events are built on slow paths only (a promotion, a compile, a bailout, a
//! quiesce): no per-call path reaches this module. A sink is host code: each
//! call runs under `catch_unwind` (a panic counts in
//! [`logger_panics`](crate::logger_panics)), must be cheap and must not
//! block or call back into kiln.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use kiln_core::{CodeHandle, DeoptDecision, JobKind};

use crate::domain::Domain;
use crate::extras::ExtrasTable;

/// What happened (see [`Event`]). Tiers are kiln-std's, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind<'a> {
    /// A call (or, with `site`, a loop back-edge) won a promotion to `tier`.
    Promoted {
        /// The tier queued.
        tier: u8,
        /// The loop site for an OSR promotion.
        site: Option<u64>,
    },
    /// A promotion found the queue full; the function cools down.
    QueueFull,
    /// A worker (or pumping host thread) started compiling the function.
    CompileStarted {
        /// The tier being compiled.
        tier: u8,
        /// The loop site for an OSR compile.
        site: Option<u64>,
    },
    /// Code was published.
    Compiled {
        /// The tier published.
        tier: u8,
        /// How long the compile took, if measured.
        took: Option<Duration>,
    },
    /// A compile failed (error, no code or panic).
    CompileFailed {
        /// The tier tried.
        tier: u8,
        /// Why, if known.
        reason: Option<&'a str>,
    },
    /// Compiled code bailed out and the deopt policy decided.
    Deoptimized(DeoptDecision),
    /// The function was blacklisted (compilation refused).
    Blacklisted,
    /// The host swapped code in at `tier`.
    Swapped {
        /// The tier of the new code.
        tier: u8,
    },
    /// The function is gone.
    Invalidated,
    /// A code-memory budget evicted the function's code.
    Evicted,
    /// Retired code went back to its backend.
    Released {
        /// The code object's handle.
        code: usize,
    },
    /// A quiesce round advanced the epoch.
    Quiesced {
        /// The new epoch.
        epoch: u32,
        /// Code objects released by the round.
        released: usize,
    },
}

/// One event for the sinks: what happened, to which function, and the
/// broker's gauges at that moment.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// What happened.
    pub kind: EventKind<'a>,
    function: Option<FunctionRef<'a>>,
    /// Where the gauges are read, on demand (a sink that wants none pays
    /// nothing for them).
    domain: Option<&'a Weak<Domain>>,
}

impl Event<'_> {
    /// The function the event is about (none for `Released`, `Quiesced`).
    pub fn function(&self) -> Option<FunctionRef<'_>> {
        self.function
    }

    /// Jobs waiting in the queue now, when the sender knows it (a
    /// `Beadie`'s events; not [`CoreEvents`]).
    pub fn queue_depth(&self) -> Option<usize> {
        Some(self.domain?.upgrade()?.broker.queue_len())
    }

    /// Code objects compiled and not yet released now (kiln's count; a
    /// backend knows their bytes), when the sender knows it.
    pub fn live_code(&self) -> Option<u64> {
        let (compiled, released) = self.domain?.upgrade()?.ledger.counts();
        Some(compiled.saturating_sub(released))
    }
}

/// The function an [`Event`] is about.
#[derive(Clone, Copy)]
pub struct FunctionRef<'a> {
    bead: &'a kiln_core::Bead,
    extras: Option<&'a ExtrasTable>,
    name: Option<&'a str>,
}

impl std::fmt::Debug for FunctionRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionRef").field("address", &self.address()).finish()
    }
}

impl FunctionRef<'_> {
    /// The name given at registration. Takes the side table's lock: look
    /// it up only when you will use it.
    pub fn name(&self) -> Option<Arc<str>> {
        match (self.name, self.extras) {
            (Some(name), _) => Some(name.into()),
            (None, Some(extras)) => extras.name(self.address()),
            (None, None) => None,
        }
    }

    /// The bead's address (the same as its `Arc<Bead>`'s), for functions
    /// without a name.
    pub fn address(&self) -> usize {
        std::ptr::from_ref(self.bead).addr()
    }

    /// The kiln-core bead (counts, state).
    pub fn kiln_bead(&self) -> &kiln_core::Bead {
        self.bead
    }

    /// The function as log lines name it: its name or `bead@0x…`.
    pub fn display_name(&self) -> String {
        crate::logs::Who { name: self.name(), address: self.address() }.to_string()
    }
}

/// Receives kiln-std's events (see the module docs for the contract).
pub trait EventSink: Send + Sync {
    /// One event. Must not block, panic or call into kiln.
    fn event(&self, event: &Event<'_>);
}

/// The sink that writes kiln-std's log lines (see [`logs`](crate::logs)).
/// Every `Beadie` starts with one.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

/// kiln-std's `Events`: builds each [`Event`] and hands it to the sinks.
/// Holds its domain weakly (the domain owns the broker that owns this).
pub(crate) struct Sinks {
    extras: Arc<ExtrasTable>,
    domain: Weak<Domain>,
    sinks: RwLock<Arc<[Arc<dyn EventSink>]>>,
    /// False while the sinks are the default (a [`LogSink`] alone): events
    /// then go straight to it, without the lock or a dynamic call, so a
    /// promotion costs what it did before sinks existed (the `crossing`
    /// figure of `ci/callgrind_std.sh`).
    custom: AtomicBool,
}

impl Sinks {
    pub(crate) fn new(extras: Arc<ExtrasTable>, domain: Weak<Domain>) -> Self {
        let sinks = RwLock::new(Arc::new([Arc::new(LogSink) as Arc<dyn EventSink>]) as Arc<[_]>);
        Self { extras, domain, sinks, custom: AtomicBool::new(false) }
    }

    pub(crate) fn set(&self, sinks: Vec<Arc<dyn EventSink>>) {
        *self.sinks.write().unwrap_or_else(|e| e.into_inner()) = sinks.into();
        // Release pairs with the Acquire in `send`: a sender that sees the
        // flag finds the new list under the lock.
        self.custom.store(true, Ordering::Release);
    }

    pub(crate) fn add(&self, sink: Arc<dyn EventSink>) {
        let mut sinks = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        let mut list = sinks.to_vec();
        list.push(sink);
        *sinks = list.into();
        // Release: as in `set`.
        self.custom.store(true, Ordering::Release);
    }

    /// A keyed function's OSR promotion notes its loop site for the
    /// profile, whoever listens.
    #[inline]
    fn note_site(&self, bead: &kiln_core::Bead, site: Option<u64>) {
        if let Some(site) = site {
            crate::profile::note_osr_site(&self.extras, std::ptr::from_ref(bead).addr(), site);
        }
    }

    /// Whether `event` would reach nobody: the sinks are the default log
    /// sink alone and the log is below the event's line's level (or the
    /// event has no line). A line above the log's level costs one compare.
    #[inline]
    fn skips(&self, event: &EventKind<'_>) -> bool {
        // Acquire: as in `send`.
        !self.custom.load(Ordering::Acquire)
            && crate::logs::level_of(event).is_none_or(|level| level > log::max_level())
    }

    fn send(&self, bead: Option<&kiln_core::Bead>, kind: EventKind<'_>) {
        if self.skips(&kind) {
            return;
        }
        if !self.custom.load(Ordering::Acquire) {
            // The default: the log sink alone (it isolates its logger
            // itself).
            let function = bead.map(|bead| FunctionRef { bead, extras: Some(&self.extras), name: None });
            LogSink.event(&Event { kind, function, domain: Some(&self.domain) });
            return;
        }
        // The read lock is held while the sinks run (they must not call
        // into kiln, so none adds a sink meanwhile); no `Arc` is cloned.
        let sinks = self.sinks.read().unwrap_or_else(|e| e.into_inner());
        if sinks.is_empty() {
            return;
        }
        let function = bead.map(|bead| FunctionRef { bead, extras: Some(&self.extras), name: None });
        let event = Event { kind, function, domain: Some(&self.domain) };
        for sink in sinks.iter() {
            crate::code::isolate_logger(|| sink.event(&event));
        }
    }
}

/// Names a kiln-core bead for [`CoreEvents`] (a host's own table).
pub type NameOf = Box<dyn Fn(&kiln_core::Bead) -> Option<String> + Send + Sync>;

/// Any [`EventSink`] as kiln-core `Events`, for a host that runs a kiln-core
/// broker itself (kiln-host's frame pump, job-system pumps): events carry
/// no queue depth or code count (the host adds those as it knows them), and
/// functions are named by `names`, or by their bead's address.
pub struct CoreEvents {
    sink: Option<Arc<dyn EventSink>>,
    names: Option<NameOf>,
}

impl std::fmt::Debug for CoreEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreEvents").field("enabled", &self.sink.is_some()).finish_non_exhaustive()
    }
}

impl CoreEvents {
    /// Events sent to `sink`; `None` sends nothing (tracing off).
    pub fn new(sink: Option<Arc<dyn EventSink>>) -> Self {
        Self { sink, names: None }
    }

    /// Names each function with `names`.
    pub fn with_names(mut self, names: impl Fn(&kiln_core::Bead) -> Option<String> + Send + Sync + 'static) -> Self {
        self.names = Some(Box::new(names));
        self
    }

    #[inline]
    fn note_site(&self, _: &kiln_core::Bead, _: Option<u64>) {}

    #[inline]
    fn skips(&self, _: &EventKind<'_>) -> bool {
        self.sink.is_none()
    }

    fn send(&self, bead: Option<&kiln_core::Bead>, kind: EventKind<'_>) {
        let Some(sink) = &self.sink else { return };
        let name = bead.zip(self.names.as_ref()).and_then(|(bead, names)| names(bead));
        let function = bead.map(|bead| FunctionRef { bead, extras: None, name: name.as_deref() });
        let event = Event { kind, function, domain: None };
        crate::code::isolate_logger(|| sink.event(&event));
    }
}

/// The hooks both `Events` implementations share. The frequent ones ask
/// `skips` first (the level of the event's log line folds to a constant)
/// and build nothing more when no sink would take the event: with the default log sink and
/// the log below that level, an event costs a flag and a level compare
/// (`ci/callgrind_std.sh`'s `crossing` and `pump` figures carry one each).
macro_rules! forward_events {
    ($type:ty, $took:expr, $why:expr) => {
        impl kiln_core::Events for $type {
            fn promoted(&self, bead: &kiln_core::Bead, tier: u8, kind: JobKind) {
                let site = site_of(kind);
                self.note_site(bead, site);
                let event = EventKind::Promoted { tier, site };
                if !self.skips(&event) {
                    self.send(Some(bead), event);
                }
            }
            fn queue_full(&self, bead: &kiln_core::Bead) {
                if !self.skips(&EventKind::QueueFull) {
                    self.send(Some(bead), EventKind::QueueFull);
                }
            }
            fn compile_started(&self, bead: &kiln_core::Bead, tier: u8, kind: JobKind) {
                let event = EventKind::CompileStarted { tier, site: site_of(kind) };
                if !self.skips(&event) {
                    self.send(Some(bead), event);
                }
            }
            fn compiled(&self, bead: &kiln_core::Bead, tier: u8, ticks: Option<u64>) {
                // A time noted and not taken here is dropped by the next
                // compile's start.
                if !self.skips(&EventKind::Compiled { tier, took: None }) {
                    let took = $took(ticks).map(Duration::from_nanos);
                    self.send(Some(bead), EventKind::Compiled { tier, took });
                }
            }
            fn compile_failed(&self, bead: &kiln_core::Bead, tier: u8) {
                let why: Option<String> = $why();
                self.send(Some(bead), EventKind::CompileFailed { tier, reason: why.as_deref() });
            }
            fn deoptimized(&self, bead: &kiln_core::Bead, decision: DeoptDecision) {
                self.send(Some(bead), EventKind::Deoptimized(decision));
            }
            fn blacklisted(&self, bead: &kiln_core::Bead) {
                self.send(Some(bead), EventKind::Blacklisted);
            }
            fn swapped(&self, bead: &kiln_core::Bead, tier: u8) {
                self.send(Some(bead), EventKind::Swapped { tier });
            }
            fn invalidated(&self, bead: &kiln_core::Bead) {
                self.send(Some(bead), EventKind::Invalidated);
            }
            fn evicted(&self, bead: &kiln_core::Bead) {
                self.send(Some(bead), EventKind::Evicted);
            }
            fn released(&self, code: CodeHandle) {
                let event = EventKind::Released { code: code.get() };
                if !self.skips(&event) {
                    self.send(None, event);
                }
            }
            fn quiesced(&self, epoch: u32, released: usize) {
                self.send(None, EventKind::Quiesced { epoch, released });
            }
        }
    };
}

// kiln-std's compiler timed the compile itself (a pump's `ticks` are only
// there when its budget had a clock) and noted why one failed, on this
// thread, just before: taken here, once, so no later event picks them up.
forward_events!(Sinks, |ticks: Option<u64>| crate::logs::take_compile_nanos().or(ticks), || {
    crate::logs::take_compile_nanos();
    crate::logs::take_failure()
});
// A host's pump: its clock's ticks, read as nanoseconds (kiln-host's
// clocks count them), and no failure reason.
forward_events!(CoreEvents, |ticks: Option<u64>| ticks, || None);

fn site_of(kind: JobKind) -> Option<u64> {
    match kind {
        JobKind::Invoke => None,
        JobKind::Osr { site } => Some(site),
    }
}

impl<P: crate::HotnessPolicy> crate::Beadie<P> {
    /// Adds `sink`: it receives every later event of this `Beadie`'s
    /// functions, after the sinks added before it.
    pub fn add_sink(&self, sink: Arc<dyn EventSink>) {
        self.chain().domain.broker.events().add(sink);
    }

    /// Replaces every sink, the default [`LogSink`] included (an empty
    /// list turns events off; each event then costs one read lock).
    pub fn set_sinks(&self, sinks: Vec<Arc<dyn EventSink>>) {
        self.chain().domain.broker.events().set(sinks);
    }
}
