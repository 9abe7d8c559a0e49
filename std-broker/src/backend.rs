//! The backend layer: a typed JIT backend ([`JitBackend`]) plugged into a
//! [`Beadie`] by a [`BackendAdapter`], with beadie 0.3's names.
//!
//! The adapter turns "build a definition, hand it to the backend" into
//! kiln-std compile work. It is boxed only on the call that wins a
//! promotion; every other call is the plain `Beadie` path (one load when
//! compiled, a countdown otherwise). Two things differ from a raw `Beadie`
//! compile closure:
//!
//! - a backend `Err` is a failed compile (`CompileFailure::Backend`), so the
//!   bead follows kiln's failure policy instead of being given a null entry;
//! - each piece of code the backend produced carries a release hook holding
//!   an `Arc` of the backend, so [`JitBackend::release`] frees it once kiln
//!   retired it and quiescence was declared (see `domain`'s "Reclamation").
//!   Without quiescence (a plain beadie user) the hook is never run and the
//!   backend stays alive, as the code it made may still be running.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::OsrEntry;
use crate::bead::{Bead, CoreHandle};
use crate::beadie::{Beadie, BeadieConfig};
pub use crate::bound::BoundBead;
use crate::code::{CompileFailure, ReleaseHook};
use crate::policy::{HotnessPolicy, ThresholdPolicy};
use crate::promote;
use crate::work::CompileWork;

/// A backend's failure, as a message: the seed's `CompileError`, for
/// [`JitBackend`]s that have no error type of their own. (kiln-std's own
/// reasons for a failed compile, backend errors among them, are
/// [`CompileFailure`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// What went wrong.
    pub message: String,
}

impl CompileError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// An error carrying `error`'s message.
    pub fn from_err<E: std::error::Error>(error: E) -> Self {
        Self { message: error.to_string() }
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CompileError {}

/// A JIT compiler kiln can drive: it turns a `FunctionDef` (its own IR,
/// built by the host) into native code.
pub trait JitBackend: Send + Sync + 'static {
    /// The backend's input: whatever the host builds for one function.
    type FunctionDef: Send + 'static;
    /// Why a compile failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Compiles `def` for `bead` and returns the native entry. An `Err` is
    /// a failed compile: the bead keeps interpreting (or running its
    /// current code) and kiln's failure policy decides when to try again.
    fn compile(&self, bead: &Arc<Bead>, def: Self::FunctionDef) -> Result<*mut (), Self::Error>;

    /// Frees `code`, an entry this backend returned from
    /// [`compile`](Self::compile). kiln calls it exactly once per compiled
    /// entry, after it retired the code and quiescence was declared (no
    /// thread can run it any more). Never called for code kiln cannot prove
    /// idle. The default keeps the code (beadie's behaviour).
    fn release(&self, code: *mut ()) {
        let _ = code;
    }

    /// Compiles `def` and returns the entry together with the OSR entries
    /// the backend compiled with it (one per loop header). kiln publishes
    /// them with the code, next to any entries the factory put in
    /// [`OsrBuild::osr`]; they belong to the code and are released with it.
    /// The default calls [`compile`](Self::compile) and adds none: backends
    /// that compile OSR entries themselves override it.
    fn compile_with_osr(
        &self,
        bead: &Arc<Bead>,
        def: Self::FunctionDef,
    ) -> Result<(*mut (), Vec<OsrEntry>), Self::Error> {
        self.compile(bead, def).map(|entry| (entry, Vec::new()))
    }

    /// Runs once after each compile kiln ran for `bead` — `compile` or
    /// `compile_with_osr`, whether it returned code or an error (on the
    /// broker threads also after a panic, which kiln caught) — on the thread
    /// that ran it, once kiln has published or refused the result. It runs
    /// outside kiln's compile and outside every kiln lock, so unlike a
    /// compile it may call back into kiln (`Bead::evict`, say: a code-memory
    /// budget sends cold functions back to the interpreter here, never from
    /// inside a compile). For a lazy compile (on a broker thread, or in
    /// [`Beadie::pump`]) it runs after that pump; for [`BoundBead::compile`]
    /// right after the eager install. A panic in it is caught and counted on
    /// the broker threads, like a compile's.
    ///
    /// The default does nothing (beadie's backends have no such hook). A
    /// backend wrapping another must forward it.
    fn after_compile(&self, bead: &Arc<Bead>) {
        let _ = bead;
    }
}

/// What an OSR-aware factory returns: the backend's definition plus one
/// entry per loop header the compiled code will expose.
pub struct OsrBuild<D> {
    /// The definition the backend compiles to the function's entry.
    pub def: D,
    /// OSR entries published with that code (any order).
    pub osr: Vec<OsrEntry>,
}

impl<D> std::fmt::Debug for OsrBuild<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsrBuild").field("osr", &self.osr).finish_non_exhaustive()
    }
}

/// A [`Beadie`] wired to one backend: hot functions are compiled by `B`
/// on a worker thread.
pub struct BackendAdapter<B: JitBackend, P: HotnessPolicy = ThresholdPolicy> {
    beadie: Beadie<P>,
    backend: Arc<B>,
}

impl<B: JitBackend, P: HotnessPolicy> std::fmt::Debug for BackendAdapter<B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendAdapter").field("chain_len", &self.beadie.chain_len()).finish_non_exhaustive()
    }
}

impl<B: JitBackend> BackendAdapter<B> {
    /// An adapter promoting after 1,000 calls.
    pub fn new(backend: B) -> Self {
        Self::with_policy(backend, ThresholdPolicy::default())
    }
}

impl<B: JitBackend, P: HotnessPolicy> BackendAdapter<B, P> {
    /// An adapter promoting by `policy`.
    pub fn with_policy(backend: B, policy: P) -> Self {
        Self::with_config(backend, policy, BeadieConfig::default())
    }

    /// An adapter promoting by `policy`, with kiln's settings (workers,
    /// queue capacity, `shutdown_timeout`: dropping the adapter waits at
    /// most that long for a compile in the backend).
    pub fn with_config(backend: B, policy: P, config: BeadieConfig) -> Self {
        Self { beadie: Beadie::with_config(policy, config), backend: Arc::new(backend) }
    }

    /// Registers a function (see [`Beadie::register`]).
    pub fn register(&self, core: CoreHandle, on_invalidate: Option<Box<dyn Fn() + Send + Sync>>) -> BoundBead<B> {
        BoundBead { bead: self.beadie.register(core, on_invalidate), backend: Arc::clone(&self.backend) }
    }

    /// Registers a function named `name` (for log lines, see
    /// [`logs`](crate::logs)); otherwise as [`register`](Self::register).
    pub fn register_named(
        &self,
        name: &str,
        core: CoreHandle,
        on_invalidate: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> BoundBead<B> {
        let bead = self.beadie.chain().push_named(Some(name), core, on_invalidate);
        BoundBead { bead, backend: Arc::clone(&self.backend) }
    }

    /// On every call: the native entry if compiled, else `None`. The call
    /// that makes the function hot hands `factory` to a worker thread,
    /// which builds the definition and compiles it with the backend.
    #[inline(always)]
    pub fn on_invoke<F>(&self, bound: &BoundBead<B>, factory: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> B::FunctionDef + Send + 'static,
    {
        promote::on_invoke(&bound.bead, |_| {
            backend_work(&bound.backend, infallible(move |bead| OsrBuild { def: factory(bead), osr: Vec::new() }))
        })
    }

    /// [`on_invoke`](Self::on_invoke) for definitions that come with OSR
    /// entries: the entry and the table are published together.
    #[inline(always)]
    pub fn on_invoke_osr<F>(&self, bound: &BoundBead<B>, factory: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> OsrBuild<B::FunctionDef> + Send + 'static,
    {
        promote::on_invoke(&bound.bead, |_| backend_work(&bound.backend, infallible(factory)))
    }

    /// A loop back-edge probe at `site` inside a long-running interpreted
    /// call (see [`Beadie::on_backedge`]): the OSR entry for `site` if the
    /// installed code has one; otherwise counts the back-edge, and the probe
    /// that makes the loop hot hands `factory` to a worker thread, which
    /// compiles its definition with [`JitBackend::compile_with_osr`]. The
    /// entry and the OSR entries are published together and given back to
    /// [`JitBackend::release`] once retired, like any backend code.
    #[inline(always)]
    pub fn on_backedge<F>(&self, bound: &BoundBead<B>, site: u64, factory: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> B::FunctionDef + Send + 'static,
    {
        promote::on_backedge(&bound.bead, site, || {
            backend_work(&bound.backend, infallible(move |bead| OsrBuild { def: factory(bead), osr: Vec::new() }))
        })
    }

    /// [`on_invoke`](Self::on_invoke) with a fallible factory: an `Err`
    /// (the host could not build the definition) is a failed compile,
    /// [`CompileFailure::Factory`] with the error's message, handled by
    /// kiln's failure policy like a backend error.
    #[inline(always)]
    pub fn try_on_invoke<F, E>(&self, bound: &BoundBead<B>, factory: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> Result<B::FunctionDef, E> + Send + 'static,
        E: std::fmt::Display,
    {
        promote::on_invoke(&bound.bead, |_| backend_work(&bound.backend, fallible(factory)))
    }

    /// [`on_backedge`](Self::on_backedge) with a fallible factory (see
    /// [`try_on_invoke`](Self::try_on_invoke)).
    #[inline(always)]
    pub fn try_on_backedge<F, E>(&self, bound: &BoundBead<B>, site: u64, factory: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> Result<B::FunctionDef, E> + Send + 'static,
        E: std::fmt::Display,
    {
        promote::on_backedge(&bound.bead, site, || backend_work(&bound.backend, fallible(factory)))
    }

    /// Registers a function named `name` (for log lines, see
    /// [`logs`](crate::logs)) with its compile factory attached, so that
    /// calls pass no closure: use [`on_invoke_attached`](Self::on_invoke_attached)
    /// and [`on_backedge_attached`](Self::on_backedge_attached).
    ///
    /// The factory runs on the compiling thread, once per compile (a
    /// reload or a recompile after a bailout runs it again). An `Err` is a
    /// failed compile ([`CompileFailure::Factory`]). See
    /// [`attach`](Self::attach) for why it is `'static`.
    pub fn register_with<F, E>(&self, name: &str, core: CoreHandle, factory: F) -> BoundBead<B>
    where
        F: Fn(&Arc<Bead>) -> Result<B::FunctionDef, E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        let bound = BoundBead {
            bead: self.beadie.chain().push_named(Some(name), core, None),
            backend: Arc::clone(&self.backend),
        };
        self.attach(&bound, factory);
        bound
    }

    /// Attaches `factory` to `bound`'s bead (replacing any attached
    /// before): the next compile started by an `*_attached` call uses it.
    /// It lives in the domain's side table, not on the bead, so beads
    /// without one pay nothing.
    ///
    /// # Why `'static`
    ///
    /// The factory is kept by the bead's domain, which outlives the
    /// adapter while any bead or queued job holds it, and it runs on a
    /// worker thread at a time no borrow can be checked against. So it
    /// must own what it uses. The cost that the `'static` bound used to
    /// impose, one `Arc` clone of the host's program per interpreted call
    /// to build a closure, is gone: the `Arc` is moved into the factory
    /// once, here, and calls pass nothing.
    pub fn attach<F, E>(&self, bound: &BoundBead<B>, factory: F)
    where
        F: Fn(&Arc<Bead>) -> Result<B::FunctionDef, E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        self.attach_osr(bound, move |bead| factory(bead).map(|def| OsrBuild { def, osr: Vec::new() }));
    }

    /// [`attach`](Self::attach) for factories whose definitions come with
    /// OSR entries (see [`on_invoke_osr`](Self::on_invoke_osr)).
    pub fn attach_osr<F, E>(&self, bound: &BoundBead<B>, factory: F)
    where
        F: Fn(&Arc<Bead>) -> Result<OsrBuild<B::FunctionDef>, E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        let factory: AttachedFactory<B::FunctionDef> = Arc::new(move |bead| factory(bead).map_err(factory_failure));
        bound.bead.update_extras(|extras| extras.factory = Some(Arc::new(factory)));
    }

    /// On every call, with the factory attached to the bead: the native
    /// entry if compiled, else `None` (interpret). The call that makes the
    /// function hot queues a compile that runs the attached factory; if
    /// none is attached, that compile fails ([`CompileFailure::NoFactory`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use kiln_std::{BackendAdapter, Bead, CompileError, JitBackend, ThresholdPolicy};
    /// # struct Native;
    /// # impl JitBackend for Native {
    /// #     type FunctionDef = extern "C" fn(i64) -> i64;
    /// #     type Error = CompileError;
    /// #     fn compile(&self, _: &Arc<Bead>, def: Self::FunctionDef) -> Result<*mut (), CompileError> {
    /// #         Ok(def as *mut ())
    /// #     }
    /// # }
    /// extern "C" fn double(x: i64) -> i64 { x * 2 }
    ///
    /// let adapter = BackendAdapter::with_policy(Native, ThresholdPolicy::new(10));
    /// let program = Arc::new(vec![double as extern "C" fn(i64) -> i64]);
    /// // The program moves into the factory once; calls pass nothing.
    /// let bound = adapter.register_with("double", std::ptr::null_mut(), move |_bead| {
    ///     program.first().copied().ok_or("no such function")
    /// });
    /// let mut entry = None;
    /// while entry.is_none() {
    ///     entry = adapter.on_invoke_attached(&bound);
    /// #   std::thread::yield_now();
    /// }
    /// assert_eq!(entry, Some(double as extern "C" fn(i64) -> i64 as *mut ()));
    /// ```
    #[inline(always)]
    pub fn on_invoke_attached(&self, bound: &BoundBead<B>) -> Option<*mut ()> {
        promote::on_invoke(&bound.bead, |_| attached_work(&bound.backend))
    }

    /// A loop back-edge probe with the factory attached to the bead: the
    /// OSR entry for `site` if the installed code has one; otherwise the
    /// probe that makes the loop hot queues a compile that runs the
    /// attached factory through [`JitBackend::compile_with_osr`] (see
    /// [`on_backedge`](Self::on_backedge)).
    #[inline(always)]
    pub fn on_backedge_attached(&self, bound: &BoundBead<B>, site: u64) -> Option<*mut ()> {
        promote::on_backedge(&bound.bead, site, || attached_work(&bound.backend))
    }

    /// Drops invalidated beads from the chain.
    pub fn prune(&self) {
        self.beadie.prune();
    }

    /// Reloads every bead; returns how many will recompile.
    pub fn reload_all(&self) -> usize {
        self.beadie.reload_all()
    }

    /// Reloads the beads `predicate` selects; returns how many will recompile.
    pub fn reload_matching(&self, predicate: impl Fn(&Arc<Bead>) -> bool) -> usize {
        self.beadie.reload_matching(predicate)
    }

    /// Registered beads.
    pub fn chain_len(&self) -> usize {
        self.beadie.chain_len()
    }

    /// The `Beadie` underneath (stats, quiescence, `walk`, ...).
    pub fn beadie(&self) -> &Beadie<P> {
        &self.beadie
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }
}

/// The hook that hands `code` back to `backend` once kiln is done with it:
/// the backend itself, shared (a reference count, no allocation per code).
pub(crate) fn release_hook<B: JitBackend>(backend: &Arc<B>) -> ReleaseHook {
    ReleaseHook::Backend(Arc::clone(backend) as Arc<dyn crate::code_object::ReleaseCode>)
}

/// Compile work: build the definition, compile it, attach the release hook.
/// Called only by the promotion winner, so the `Arc` clone and the box
/// happen once per promotion. A factory `Err` is a failed compile.
pub(crate) fn backend_work<B: JitBackend>(
    backend: &Arc<B>,
    factory: impl FnOnce(&Arc<Bead>) -> Result<OsrBuild<B::FunctionDef>, CompileFailure> + Send + 'static,
) -> CompileWork {
    let backend = Arc::clone(backend);
    Box::new(move |bead, _tier| {
        let OsrBuild { def, mut osr } = factory(bead)?;
        // Armed before the compile so that it fires however the compile
        // ends, a panic included.
        let _after = AfterCompile(Some((Arc::clone(&backend), Arc::clone(bead))));
        let (entry, compiled_osr) =
            backend.compile_with_osr(bead, def).map_err(|error| CompileFailure::Backend(error.to_string()))?;
        osr.extend(compiled_osr);
        // A null entry is refused later (`NullEntry`) without running the hook.
        let release = NonNull::new(entry).map(|_| release_hook(&backend));
        Ok(bead.built(entry, osr, release))
    })
}

/// A factory that cannot fail, as `backend_work` takes it.
fn infallible<D>(
    factory: impl FnOnce(&Arc<Bead>) -> OsrBuild<D> + Send + 'static,
) -> impl FnOnce(&Arc<Bead>) -> Result<OsrBuild<D>, CompileFailure> + Send + 'static {
    move |bead| Ok(factory(bead))
}

/// A fallible factory without OSR entries, as `backend_work` takes it.
fn fallible<D, E: std::fmt::Display>(
    factory: impl FnOnce(&Arc<Bead>) -> Result<D, E> + Send + 'static,
) -> impl FnOnce(&Arc<Bead>) -> Result<OsrBuild<D>, CompileFailure> + Send + 'static {
    move |bead| factory(bead).map(|def| OsrBuild { def, osr: Vec::new() }).map_err(factory_failure)
}

/// A fallible factory's error, as a failed compile's reason.
pub(crate) fn factory_failure(error: impl std::fmt::Display) -> CompileFailure {
    CompileFailure::Factory(error.to_string())
}

/// The compile factory attached to a bead (see [`BackendAdapter::attach`]),
/// as the side table stores it for a backend whose definitions are `D`.
type AttachedFactory<D> = Arc<dyn Fn(&Arc<Bead>) -> Result<OsrBuild<D>, CompileFailure> + Send + Sync>;

/// Compile work that finds the bead's attached factory when it runs, on
/// the compiling thread: the interpreter's call that won the promotion
/// boxes one `Arc` and takes no lock.
pub(crate) fn attached_work<B: JitBackend>(backend: &Arc<B>) -> CompileWork {
    backend_work(backend, |bead| {
        let factory = bead.read_extras(|extras| extras.factory.clone()).flatten();
        let factory = factory.and_then(|factory| factory.downcast::<AttachedFactory<B::FunctionDef>>().ok());
        factory.ok_or(CompileFailure::NoFactory).and_then(|factory| factory(bead))
    })
}

/// Defers [`JitBackend::after_compile`] when dropped, i.e. once the backend
/// compile is over: the compile work runs inside kiln-core's compile, where
/// the hook must not run (see `after_compile`), so the pump site runs it.
struct AfterCompile<B: JitBackend>(Option<(Arc<B>, Arc<Bead>)>);

impl<B: JitBackend> Drop for AfterCompile<B> {
    fn drop(&mut self) {
        if let Some((backend, bead)) = self.0.take() {
            crate::after_compile::defer(move || {
                bead.domain.panics.isolate("JitBackend::after_compile", || backend.after_compile(&bead));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::BeadState;
    use crate::bead::ReloadOutcome;

    extern "C" fn forty_two() -> i64 {
        42
    }

    extern "C" fn loop_head() -> i64 {
        7
    }

    fn code(f: extern "C" fn() -> i64) -> *mut () {
        f as *mut ()
    }

    /// Compiles `Some(f)` to `f`, refuses `None`; records releases.
    #[derive(Default)]
    struct FnBackend {
        compiles: AtomicUsize,
        released: Mutex<Vec<usize>>,
    }

    impl JitBackend for FnBackend {
        type FunctionDef = Option<extern "C" fn() -> i64>;
        type Error = CompileError;

        fn compile(&self, _bead: &Arc<Bead>, def: Self::FunctionDef) -> Result<*mut (), CompileError> {
            self.compiles.fetch_add(1, Ordering::Relaxed);
            def.map(code).ok_or_else(|| CompileError::new("no code for this function"))
        }

        fn release(&self, code: *mut ()) {
            self.released.lock().unwrap().push(code as usize);
        }
    }

    fn wait_until(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn backend_compiles_the_hot_function_once() {
        let adapter = BackendAdapter::with_policy(FnBackend::default(), ThresholdPolicy::new(10));
        let bound = adapter.register(std::ptr::null_mut(), None);
        for _ in 0..9 {
            assert_eq!(adapter.on_invoke(&bound, |_| Some(forty_two as extern "C" fn() -> i64)), None);
        }
        assert!(wait_until(|| adapter.on_invoke(&bound, |_| Some(forty_two as extern "C" fn() -> i64)).is_some()));
        let entry = adapter.on_invoke(&bound, |_| None).unwrap();
        assert_eq!(entry, code(forty_two));
        assert_eq!(adapter.backend().compiles.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn backend_error_is_a_failed_compile_not_a_null_entry() {
        let adapter = BackendAdapter::with_policy(FnBackend::default(), ThresholdPolicy::new(1));
        let bound = adapter.register(std::ptr::null_mut(), None);
        assert_eq!(adapter.on_invoke(&bound, |_| None), None);
        assert!(wait_until(|| adapter.beadie().stats().failures == 1));
        assert!(bound.bead().is_valid());
        assert_ne!(bound.bead().state(), BeadState::Compiled);
        assert_eq!(bound.bead().compiled(), None);
    }

    #[test]
    fn osr_entries_are_published_with_the_backend_code() {
        let adapter = BackendAdapter::with_policy(FnBackend::default(), ThresholdPolicy::new(1));
        let bound = adapter.register(std::ptr::null_mut(), None);
        let factory = |_: &Arc<Bead>| OsrBuild {
            def: Some(forty_two as extern "C" fn() -> i64),
            osr: vec![OsrEntry { site: 9, code: code(loop_head) }],
        };
        adapter.on_invoke_osr(&bound, factory);
        assert!(wait_until(|| bound.bead().compiled().is_some()));
        assert_eq!(bound.bead().osr_entry(9), Some(code(loop_head)));
        assert_eq!(bound.bead().osr_entry(8), None);
    }

    #[test]
    fn code_refused_for_a_bad_osr_table_goes_back_to_the_backend() {
        let adapter = BackendAdapter::with_policy(FnBackend::default(), ThresholdPolicy::new(1));
        let bound = adapter.register(std::ptr::null_mut(), None);
        let twice = OsrEntry { site: 4, code: code(loop_head) };
        adapter.on_invoke_osr(&bound, move |_| OsrBuild { def: Some(forty_two), osr: vec![twice, twice] });
        assert!(wait_until(|| adapter.beadie().stats().failures == 1));
        assert_eq!(*adapter.backend().released.lock().unwrap(), vec![code(forty_two) as usize]);
        assert_eq!(bound.bead().compiled(), None);
    }

    #[test]
    fn retired_backend_code_is_released_once_after_quiescence() {
        let adapter = BackendAdapter::with_policy(FnBackend::default(), ThresholdPolicy::new(1_000_000));
        let bound = adapter.register(std::ptr::null_mut(), None);
        bound.compile(Some(forty_two)).unwrap();
        assert_eq!(adapter.on_invoke(&bound, |_| None), Some(code(forty_two)));
        assert_eq!(bound.reload(), ReloadOutcome::WillRecompile);
        for _ in 0..3 {
            adapter.beadie().quiesce();
        }
        assert!(wait_until(|| !adapter.backend().released.lock().unwrap().is_empty()));
        assert_eq!(*adapter.backend().released.lock().unwrap(), vec![code(forty_two) as usize]);
        let (compiled, released) = adapter.beadie().code_counts();
        assert_eq!((compiled, released), (1, 1));
    }

    #[test]
    fn eager_compile_error_installs_nothing() {
        let adapter = BackendAdapter::new(FnBackend::default());
        let bound = adapter.register(std::ptr::null_mut(), None);
        let error = bound.compile(None).unwrap_err();
        assert_eq!(error.to_string(), "no code for this function");
        assert_eq!(bound.bead().state(), BeadState::Interpreted);
        assert_eq!(CompileError::from_err(error.clone()), error);
    }
}
