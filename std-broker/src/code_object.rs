//! Code objects: what a kiln-std `CodeHandle` names, and the memory it owns.
//!
//! kiln-core's bead already stores the entry, so most code needs no heap
//! of its own. The handle is a tagged word (the low two bits):
//!
//! ```text
//!  …01  bare: no OSR entries, no release hook; nothing on the heap
//!       (the upper bits are the entry's, a name for log lines only)
//!  …00  OSR block: one allocation, the OsrTable then its entries
//!  …10  hooked block: one allocation, the OsrTable, the entry and the
//!       release hook, then the OSR entries (none or more)
//!  …11  the domain's backend frees it: no OSR entries, and the entry
//!       (4-aligned) is the upper bits; nothing on the heap
//! ```
//!
//! A block's table comes first, so the block's address is also the table's
//! (the pointer kiln-core publishes beside the entry). Nothing per-domain is
//! stored per code: publishing and releasing are given the domain's
//! [`Books`] by whoever does it (the domain, its compiler, an install).
//! Blocks are 8-aligned, so the tags never collide with an address.
//!
//! The domain's backend is the first backend whose code the domain
//! publishes (a `BackendAdapter`'s only one; a `TieredAdapter`'s first
//! tier to compile); the domain keeps it from then on, so its code needs
//! neither a block nor a reference count. Code of any other backend, or at
//! an entry that is not 4-aligned, gets a hooked block.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::{self, NonNull};
use std::sync::{Arc, OnceLock};

use kiln_core::{CodeHandle, Compiled, OsrEntry, OsrTable};

use crate::backend::JitBackend;
use crate::code::{Built, CompileFailure, HostPanics};
use crate::domain::Ledger;

const TAG: usize = 0b11;
const OSR_BLOCK: usize = 0b00;
const BARE: usize = 0b01;
const HOOKED_BLOCK: usize = 0b10;
const DOMAIN_BACKEND: usize = 0b11;

/// What publishing and releasing code need from its domain.
pub(crate) struct Books<'a> {
    /// Counts code published and released.
    pub(crate) ledger: &'a Ledger,
    /// Counts panics of release hooks.
    pub(crate) panics: &'a HostPanics,
    /// The domain's backend (see the module docs).
    pub(crate) backend: &'a OnceLock<Arc<dyn ReleaseCode>>,
}

impl Books<'_> {
    /// Whether `release` is the domain's backend (which it becomes if the
    /// domain has none yet).
    fn is_domain_backend(&self, release: &ReleaseHook) -> bool {
        let ReleaseHook::Backend(backend) = release else { return false };
        let domain = self.backend.get_or_init(|| Arc::clone(backend));
        // Compared by data address: vtable addresses may differ per unit.
        ptr::addr_eq(Arc::as_ptr(domain), Arc::as_ptr(backend))
    }
}

/// Frees backend code once kiln retired it and no thread can run it.
pub(crate) enum ReleaseHook {
    /// A closure given with one piece of code (`NativeCode::on_release`).
    Once(Box<dyn FnOnce(*mut ()) + Send>),
    /// A backend, shared by all the code it compiled: a reference count,
    /// not an allocation, per code.
    Backend(Arc<dyn ReleaseCode>),
}

impl ReleaseHook {
    /// Hands `entry` back to its owner.
    pub(crate) fn run(self, entry: *mut ()) {
        match self {
            Self::Once(release) => release(entry),
            Self::Backend(backend) => backend.release_code(entry),
        }
    }
}

/// A backend's `release`, with its definition type erased.
pub(crate) trait ReleaseCode: Send + Sync {
    /// `JitBackend::release`.
    fn release_code(&self, code: *mut ());
}

impl<B: JitBackend> ReleaseCode for B {
    fn release_code(&self, code: *mut ()) {
        self.release(code);
    }
}

/// The head of an OSR block.
#[repr(C)]
struct OsrHead {
    /// A view of the entries that follow in the same allocation.
    table: OsrTable<'static>,
}

/// The head of a hooked block.
#[repr(C)]
struct HookedHead {
    /// First, as in `OsrHead`; empty if the code has no OSR entries.
    table: OsrTable<'static>,
    entry: *mut (),
    release: ReleaseHook,
}

const _: () = assert!(align_of::<OsrHead>() > TAG && align_of::<HookedHead>() > TAG);

/// The layout of a block with head `H` and `len` entries, and where the
/// entries start.
fn block_layout<H>(len: usize) -> (Layout, usize) {
    let entries = Layout::array::<OsrEntry>(len).expect("an OSR table that fits in memory");
    let (layout, offset) = Layout::new::<H>().extend(entries).expect("an OSR table that fits in memory");
    (layout.pad_to_align(), offset)
}

/// Allocates a block: `head` (given the table) followed by a copy of
/// `entries`, which are sorted and valid (`OsrTable::new` accepted them).
fn new_block<H>(entries: &[OsrEntry], head: impl FnOnce(OsrTable<'static>) -> H) -> NonNull<H> {
    let (layout, offset) = block_layout::<H>(entries.len());
    // SAFETY: the layout is never zero-sized: it holds a head with a table.
    let Some(block) = NonNull::new(unsafe { alloc(layout) }) else { handle_alloc_error(layout) };
    // SAFETY: `offset` and `entries.len()` entries lie inside the
    // allocation (`block_layout`), suitably aligned for `OsrEntry`.
    let copy = unsafe {
        let start = block.as_ptr().add(offset).cast::<OsrEntry>();
        ptr::copy_nonoverlapping(entries.as_ptr(), start, entries.len());
        std::slice::from_raw_parts(start.cast_const(), entries.len())
    };
    // The copy lives until `free_block`, which reads the head out first and
    // never lets the table leave the module afterwards.
    let table = OsrTable::new(copy).expect("the entries were validated before the copy");
    let block = block.cast::<H>();
    // SAFETY: the allocation starts with room for `H`, aligned for it.
    unsafe { block.as_ptr().write(head(table)) };
    block
}

/// Takes the head out of `block` and frees the allocation. The head's
/// table views freed memory afterwards: callers drop it unread.
///
/// # Safety
///
/// 1. `block` came from `new_block::<H>` and is freed exactly once.
/// 2. No thread reads its table any more.
unsafe fn free_block<H>(block: NonNull<H>, len: impl FnOnce(&H) -> usize) -> H {
    // SAFETY: (1) the head was written by `new_block` and is read once.
    let head = unsafe { block.as_ptr().read() };
    let (layout, _) = block_layout::<H>(len(&head));
    // SAFETY: (1) allocated by `new_block` with this layout (same length);
    // (2) nobody reads the block any more.
    unsafe { dealloc(block.as_ptr().cast(), layout) };
    head
}

/// Turns `built` into kiln-core `Compiled` code: its handle and, if it has
/// OSR entries, its table. OSR entries are sorted by site (as beadie does);
/// duplicates are an error, and code refused so is handed to its release
/// hook at once (no thread saw it).
pub(crate) fn publishable(built: Built, books: &Books<'_>) -> Result<Compiled, CompileFailure> {
    let Built { entry, mut osr, release, panics } = built;
    if entry.is_null() {
        return Err(CompileFailure::NullEntry);
    }
    osr.sort_by_key(|entry| entry.site);
    if let Err(error) = OsrTable::new(&osr) {
        if let Some(release) = release {
            panics.isolate("release hook", || release.run(entry));
        }
        return Err(CompileFailure::BadOsrTable(error));
    }
    let (raw, table) = match release {
        None if osr.is_empty() => (entry.addr() | BARE, None),
        Some(release) if osr.is_empty() && entry.addr() & TAG == 0 && books.is_domain_backend(&release) => {
            (entry.addr() | DOMAIN_BACKEND, None)
        }
        None => {
            let block = new_block(&osr, |table| OsrHead { table });
            (block.as_ptr().addr() | OSR_BLOCK, Some(block.cast::<OsrTable<'static>>()))
        }
        Some(release) => {
            let block = new_block(&osr, |table| HookedHead { table, entry, release });
            (block.as_ptr().addr() | HOOKED_BLOCK, (!osr.is_empty()).then(|| block.cast::<OsrTable<'static>>()))
        }
    };
    books.ledger.compiled();
    let handle = CodeHandle::from_raw(raw).expect("a tagged handle is never 0");
    let compiled = Compiled::new(entry, handle).expect("checked non-null above");
    Ok(match table {
        // kiln-core calls `release(handle)` only after the code was retired
        // and quiesced (or at once if it was never published).
        // SAFETY: `with_osr` (1) the block, table first (`repr(C)`), lives
        // until then, (2) immutable, Sync.
        Some(table) => unsafe { compiled.with_osr(table) },
        None => compiled,
    })
}

/// What `handle` owns, taken back: its block freed.
enum Owned {
    /// Nothing to hand back (bare code, an OSR block).
    Nothing,
    /// Code at this entry, for the domain's backend.
    DomainBackend(*mut ()),
    /// Code at this entry, for this hook.
    Hooked(*mut (), ReleaseHook),
}

/// What `handle` owns, taken back: its block freed.
///
/// # Safety
///
/// 1. `handle` came from [`publishable`] and is taken back exactly once.
/// 2. No thread can still read its OSR table.
unsafe fn take_back(handle: CodeHandle) -> Owned {
    let raw = handle.get();
    match raw & TAG {
        BARE => return Owned::Nothing,
        DOMAIN_BACKEND => return Owned::DomainBackend(ptr::without_provenance_mut::<()>(raw & !TAG)),
        _ => {}
    }
    let block = NonNull::new((raw & !TAG) as *mut u8).expect("a block's address is never 0");
    match raw & TAG {
        OSR_BLOCK => {
            // SAFETY: `free_block` (1) an OSR block, taken back once; (2) the caller's.
            let _ = unsafe { free_block(block.cast::<OsrHead>(), |head| head.table.entries().len()) };
            Owned::Nothing
        }
        _ => {
            // SAFETY: `free_block` (1) a hooked block, taken back once; (2) the caller's.
            let head = unsafe { free_block(block.cast::<HookedHead>(), |head| head.table.entries().len()) };
            Owned::Hooked(head.entry, head.release)
        }
    }
}

/// Frees the code behind `handle`: frees its block, runs its release hook
/// (catching and counting a panic), counts it released.
///
/// # Safety
///
/// 1. `handle` came from [`publishable`] with these `books` (the same
///    domain's) and is released exactly once.
/// 2. No thread can still run its code or read its OSR table.
pub(crate) unsafe fn release(handle: CodeHandle, books: &Books<'_>) {
    // Runs on whichever thread quiesces (a worker, the host inside
    // `quiesce`): a panic must neither kill the worker nor unwind into the
    // host, and the handles after this one must still go.
    // SAFETY: `take_back` (1) once; (2) the caller's item 2.
    match unsafe { take_back(handle) } {
        Owned::Nothing => {}
        Owned::Hooked(entry, release) => {
            books.panics.isolate("release hook", || release.run(entry));
        }
        Owned::DomainBackend(entry) => {
            let backend = books.backend.get().expect("the domain kept the backend that made this handle");
            books.panics.isolate("release hook", || backend.release_code(entry));
        }
    }
    books.ledger.released();
}

/// Frees kiln-std's memory for `handle` without running the release
/// hook: the backend's code stays (unmanaged mode, see `domain`). Returns
/// whether the code was the domain backend's: then the domain must leak
/// its backend rather than drop it.
///
/// # Safety
///
/// 1. As for [`release`], item 1.
/// 2. No thread can still read its OSR table.
#[must_use = "the domain's backend must be leaked if it still owns code"]
pub(crate) unsafe fn discard(handle: CodeHandle, ledger: &Ledger) -> bool {
    ledger.released();
    // SAFETY: `take_back` (1) once; (2) the caller's item 2.
    match unsafe { take_back(handle) } {
        Owned::Nothing => false,
        Owned::DomainBackend(_) => true,
        Owned::Hooked(_, release) => {
            // The hook would free code a thread may still run, and dropping
            // it may too (a closure or backend owning the code memory).
            std::mem::forget(release);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A backend counting what it was handed back.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl ReleaseCode for Counting {
        fn release_code(&self, _code: *mut ()) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn at(address: usize) -> *mut () {
        ptr::without_provenance_mut(address)
    }

    fn built(entry: *mut (), osr: usize, release: Option<ReleaseHook>) -> Built {
        let osr = (0..osr as u64).rev().map(|site| OsrEntry { site, code: at(0x1000 + site as usize * 16) }).collect();
        Built { entry, osr, release, panics: Arc::default() }
    }

    /// Publishes and releases each kind of handle: every hook runs once,
    /// the domain's backend gets its own code back, another backend its
    /// own, and the ledger agrees.
    #[test]
    fn each_kind_of_code_is_released_once_through_its_own_hook() {
        let (ledger, panics, backend) = (Ledger::default(), HostPanics::default(), OnceLock::new());
        let books = Books { ledger: &ledger, panics: &panics, backend: &backend };
        let (first, second) = (Arc::new(Counting::default()), Arc::new(Counting::default()));
        let closure_runs = Arc::new(AtomicUsize::new(0));
        let runs = Arc::clone(&closure_runs);
        let cases = [
            (built(at(0x2000), 0, None), BARE, false),
            (built(at(0x2000), 3, None), OSR_BLOCK, true),
            (built(at(0x2000), 0, Some(ReleaseHook::Backend(first.clone()))), DOMAIN_BACKEND, false),
            (built(at(0x2000), 2, Some(ReleaseHook::Backend(first.clone()))), HOOKED_BLOCK, true),
            (built(at(0x2001), 0, Some(ReleaseHook::Backend(first.clone()))), HOOKED_BLOCK, false),
            (built(at(0x2000), 0, Some(ReleaseHook::Backend(second.clone()))), HOOKED_BLOCK, false),
            (
                built(
                    at(0x2000),
                    1,
                    Some(ReleaseHook::Once(Box::new(move |_| {
                        runs.fetch_add(1, Ordering::Relaxed);
                    }))),
                ),
                HOOKED_BLOCK,
                true,
            ),
        ];
        for (built, tag, has_osr) in cases {
            let compiled = publishable(built, &books).expect("valid code");
            assert_eq!((compiled.handle().get() & TAG, compiled.has_osr()), (tag, has_osr));
            // SAFETY: `release` (1) published above, released once; (2) never installed.
            unsafe { release(compiled.into_handle(), &books) };
        }
        let counts = (first.0.load(Ordering::Relaxed), second.0.load(Ordering::Relaxed));
        assert_eq!((counts, closure_runs.load(Ordering::Relaxed)), ((3, 1), 1));
        assert_eq!(ledger.counts(), (7, 7));
    }

    #[test]
    fn duplicate_osr_sites_hand_the_code_back_at_once() {
        let (ledger, panics, backend) = (Ledger::default(), HostPanics::default(), OnceLock::new());
        let books = Books { ledger: &ledger, panics: &panics, backend: &backend };
        let hook = Arc::new(Counting::default());
        let mut code = built(at(0x2000), 1, Some(ReleaseHook::Backend(hook.clone())));
        code.osr.push(code.osr[0]);
        assert!(matches!(publishable(code, &books), Err(CompileFailure::BadOsrTable(_))));
        assert_eq!((hook.0.load(Ordering::Relaxed), ledger.counts()), (1, (0, 0)));
    }
}
