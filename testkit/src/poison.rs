//! Code objects that poison themselves when released.
//!
//! The rcutorture idea (see `shared/RECLAMATION.md`) applied to kiln: the
//! "code" a fake compiler hands to kiln is a cell in a [`PoisonArena`] — a
//! magic word and the id of the code object it belongs to. Its address is
//! the entry kiln publishes (and each OSR entry is a cell of its own, in the
//! same object). Releasing an object does not free it: it writes
//! [`POISON`] into every cell of the object and records the release. The
//! memory stays until the arena drops (at the end of the test), so reading
//! a released object is a defined read, and a runner that checks the magic
//! word before and after "running" an entry ([`PoisonArena::execute`])
//! catches code that kiln released while a thread could still run it,
//! however the threads were interleaved.
//!
//! The arena is one zeroed allocation reserved up front (untouched pages
//! cost no memory), so "is this pointer one of ours?" is a range check and
//! a pointer kiln invented is reported instead of dereferenced. OSR tables
//! handed to kiln-core live in the arena too, so a stale table lookup is a
//! defined read as well; what it returns is a poisoned cell.
//!
//! Early frees are counted and, unless the arena was told to keep going,
//! reported with a panic naming the object and the seed of the run.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kiln_core::{OsrEntry, OsrTable};

/// The magic word of live code ("kilncode").
pub const MAGIC: u64 = 0x6B69_6C6E_636F_6465;
/// The word a released object's cells hold.
pub const POISON: u64 = 0xDEAD_C0DE_DEAD_C0DE;
/// The word of a cell no object was ever made in (zeroed memory).
const VACANT: u64 = 0;

/// The site recorded in an object's main entry cell.
const MAIN: u64 = u64::MAX;

/// One fake instruction stream: what an entry pointer points at.
#[repr(C, align(32))]
struct Cell {
    /// [`MAGIC`], [`POISON`] or `VACANT`.
    magic: AtomicU64,
    /// The object this cell belongs to.
    id: AtomicU64,
    /// The OSR site of this entry, or `MAIN`.
    site: AtomicU64,
}

/// The id of one fake code object (1, 2, ... in creation order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeId(pub u64);

impl fmt::Display for CodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A fake code object, as a compiler hands it to kiln.
#[derive(Debug)]
pub struct FakeCode {
    /// Its id.
    pub id: CodeId,
    /// The normal entry: the address of the object's main cell.
    pub entry: NonNull<()>,
    /// One entry per OSR site (sorted by site, no duplicates), each a cell
    /// of the same object.
    pub osr: Vec<OsrEntry>,
    /// A kiln-core OSR table over `osr`, owned by the arena (valid and
    /// unchanged until the arena drops), if the object has OSR entries.
    pub table: Option<NonNull<OsrTable<'static>>>,
}

// SAFETY: addresses of arena memory that lives as long as the arena and is
// only accessed through atomics (cells) or never written after creation
// (tables); nothing here is tied to the creating thread.
unsafe impl Send for FakeCode {}

/// What a release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The object was live and is poisoned now.
    First(CodeId),
    /// The object had been released before (counted as a double release).
    Double(CodeId),
    /// The pointer or id names no object of this arena (counted).
    Unknown,
}

/// Why [`PoisonArena::execute`] refused to "run" an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecuteError {
    /// The entry's object was released before or while it ran.
    EarlyFree {
        /// The object.
        id: CodeId,
        /// Whether the poison was already there before the run (else it
        /// appeared while running).
        before_run: bool,
    },
    /// The pointer is not a live cell of this arena (kiln invented it, or
    /// it points at a cell no object was made in).
    Foreign {
        /// The address.
        address: usize,
    },
}

/// Counters of an arena, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoisonReport {
    /// Code objects made.
    pub made: u64,
    /// Objects released (first releases).
    pub released: u64,
    /// Releases of an object already released.
    pub double_releases: u64,
    /// Releases naming no object of the arena.
    pub unknown_releases: u64,
    /// Executions that found poison before or after running.
    pub early_frees: u64,
    /// Executions of pointers that are not live cells of the arena.
    pub foreign_entries: u64,
    /// Executions (checked runs).
    pub executions: u64,
    /// Objects `make` could not create (arena full).
    pub exhausted: u64,
}

impl PoisonReport {
    /// Objects made and not released.
    pub fn live(&self) -> u64 {
        self.made - self.released
    }

    /// Whether nothing wrong was observed: no early free, no double or
    /// unknown release, no foreign entry, no exhaustion.
    pub fn is_clean(&self) -> bool {
        self.early_frees == 0
            && self.double_releases == 0
            && self.unknown_releases == 0
            && self.foreign_entries == 0
            && self.exhausted == 0
    }
}

impl fmt::Display for PoisonReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "code objects made {}, released {}, live {}; executions {}; early frees {}, double releases {}, \
             unknown releases {}, foreign entries {}, arena exhausted {}",
            self.made,
            self.released,
            self.live(),
            self.executions,
            self.early_frees,
            self.double_releases,
            self.unknown_releases,
            self.foreign_entries,
            self.exhausted
        )
    }
}

/// The arena's record of one object.
struct Record {
    /// Index of its first cell (main entry), then one cell per OSR site.
    first_cell: usize,
    cells: usize,
    releases: u32,
    /// Leaked OSR entries and table, freed when the arena drops.
    entries: *mut [OsrEntry],
    table: *mut OsrTable<'static>,
}

/// Fake code objects with poison-on-release. See the module docs.
pub struct PoisonArena {
    cells: Box<[Cell]>,
    next_cell: AtomicUsize,
    records: Mutex<Vec<Record>>,
    seed: u64,
    panic_on_early_free: AtomicBool,
    yield_while_running: AtomicBool,
    first_early_free: Mutex<Option<(CodeId, bool)>>,
    made: AtomicU64,
    released: AtomicU64,
    double_releases: AtomicU64,
    unknown_releases: AtomicU64,
    early_frees: AtomicU64,
    foreign_entries: AtomicU64,
    executions: AtomicU64,
    exhausted: AtomicU64,
}

// SAFETY: the raw pointers in `records` own leaked boxes that are only read
// (by kiln, through the table) and freed in `Drop`, which has `&mut self`;
// everything else is atomics or behind a mutex.
unsafe impl Send for PoisonArena {}
// SAFETY: as above: shared access goes through atomics and the mutexes.
unsafe impl Sync for PoisonArena {}

impl fmt::Debug for PoisonArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoisonArena")
            .field("capacity", &self.cells.len())
            .field("seed", &self.seed)
            .field("report", &self.report())
            .finish_non_exhaustive()
    }
}

impl PoisonArena {
    /// An arena with room for `capacity` cells (an object takes one cell
    /// plus one per OSR site), for a run reproducible from `seed` (only
    /// used in reports). Panics at the first early free; see
    /// [`keep_going`](Self::keep_going).
    pub fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(1);
        let zeroed = Box::<[Cell]>::new_zeroed_slice(capacity);
        // SAFETY: a `Cell` is three `AtomicU64`s, for which all-zero bytes
        // are a valid value (0, the VACANT state).
        let cells = unsafe { zeroed.assume_init() };
        Self {
            cells,
            next_cell: AtomicUsize::new(0),
            records: Mutex::new(Vec::new()),
            seed,
            panic_on_early_free: AtomicBool::new(true),
            yield_while_running: AtomicBool::new(false),
            first_early_free: Mutex::new(None),
            made: AtomicU64::new(0),
            released: AtomicU64::new(0),
            double_releases: AtomicU64::new(0),
            unknown_releases: AtomicU64::new(0),
            early_frees: AtomicU64::new(0),
            foreign_entries: AtomicU64::new(0),
            executions: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Counts early frees and foreign entries instead of panicking at the
    /// first (the test then fails at its end, with the whole report).
    pub fn keep_going(self) -> Self {
        self.panic_on_early_free.store(false, Ordering::Relaxed);
        self
    }

    /// Makes [`execute`](Self::execute) yield to the scheduler while
    /// "running" (injected yields: a reclaimer gets to run in the window).
    pub fn set_yield_while_running(&self, yields: bool) {
        self.yield_while_running.store(yields, Ordering::Relaxed);
    }

    /// The seed the arena reports with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        // Every update under this lock is complete before anything can
        // panic, so a poisoned lock holds consistent records.
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes a live code object with one OSR entry per site in `sites`
    /// (sorted and deduplicated here, so the table is valid). `None` if the
    /// arena is full (counted).
    pub fn make(&self, sites: &[u64]) -> Option<FakeCode> {
        let mut sites = sites.to_vec();
        sites.sort_unstable();
        sites.dedup();
        let cells = 1 + sites.len();
        let first = self.next_cell.fetch_add(cells, Ordering::Relaxed);
        if first + cells > self.cells.len() {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut records = self.records();
        let id = CodeId(records.len() as u64 + 1);
        for (offset, site) in std::iter::once(MAIN).chain(sites.iter().copied()).enumerate() {
            let cell = &self.cells[first + offset];
            cell.id.store(id.0, Ordering::Relaxed);
            cell.site.store(site, Ordering::Relaxed);
            // Release pairs with the Acquire load in `execute`: a runner that
            // sees MAGIC sees the id and site written above. (The entry
            // reaches runners through kiln's own Release/Acquire publication
            // as well.)
            cell.magic.store(MAGIC, Ordering::Release);
        }
        let entry = NonNull::from(&self.cells[first]).cast::<()>();
        let osr: Vec<OsrEntry> = sites
            .iter()
            .enumerate()
            .map(|(index, &site)| OsrEntry {
                site,
                code: NonNull::from(&self.cells[first + 1 + index]).as_ptr().cast(),
            })
            .collect();
        let (entries, table) = if osr.is_empty() {
            (std::ptr::slice_from_raw_parts_mut(NonNull::<OsrEntry>::dangling().as_ptr(), 0), std::ptr::null_mut())
        } else {
            let raw = Box::into_raw(osr.clone().into_boxed_slice());
            // SAFETY: `raw` is a live, leaked box, freed only in `Drop` after
            // the table viewing it; nothing writes through it meanwhile.
            let entries: &'static [OsrEntry] = unsafe { &*raw };
            let table = OsrTable::new(entries).expect("sorted, deduplicated, non-null entries");
            (raw, Box::into_raw(Box::new(table)))
        };
        records.push(Record { first_cell: first, cells, releases: 0, entries, table });
        drop(records);
        self.made.fetch_add(1, Ordering::Relaxed);
        Some(FakeCode { id, entry, osr, table: NonNull::new(table) })
    }

    /// The cell `ptr` points at, if it is one of the arena's cells.
    fn cell(&self, ptr: *const ()) -> Option<&Cell> {
        let base = self.cells.as_ptr() as usize;
        let offset = (ptr as usize).checked_sub(base)?;
        if !offset.is_multiple_of(size_of::<Cell>()) {
            return None;
        }
        self.cells.get(offset / size_of::<Cell>())
    }

    /// The object the cell at `ptr` belongs to, if any (live or released).
    pub fn id_of(&self, ptr: *const ()) -> Option<CodeId> {
        let cell = self.cell(ptr)?;
        match cell.magic.load(Ordering::Acquire) {
            VACANT => None,
            _ => Some(CodeId(cell.id.load(Ordering::Relaxed))),
        }
    }

    /// Whether the object is still live (made and not released).
    pub fn is_live(&self, id: CodeId) -> bool {
        let records = self.records();
        id.0.checked_sub(1).and_then(|index| records.get(index as usize)).is_some_and(|record| record.releases == 0)
    }

    /// Releases object `id`: poisons every cell of it and records the
    /// release. Never frees memory and never panics (kiln calls this from
    /// its worker threads); double and unknown releases are counted.
    pub fn release(&self, id: CodeId) -> Release {
        let mut records = self.records();
        let Some(record) = id.0.checked_sub(1).and_then(|index| records.get_mut(index as usize)) else {
            drop(records);
            self.unknown_releases.fetch_add(1, Ordering::Relaxed);
            return Release::Unknown;
        };
        record.releases += 1;
        if record.releases > 1 {
            drop(records);
            self.double_releases.fetch_add(1, Ordering::Relaxed);
            return Release::Double(id);
        }
        for cell in &self.cells[record.first_cell..record.first_cell + record.cells] {
            // Release pairs with the Acquire loads in `execute`: a runner
            // that sees POISON knows the release happened before its read.
            cell.magic.store(POISON, Ordering::Release);
        }
        drop(records);
        self.released.fetch_add(1, Ordering::Relaxed);
        Release::First(id)
    }

    /// Releases the object whose cell `entry` points at (a kiln-std backend
    /// is handed entries, not ids).
    pub fn release_entry(&self, entry: *const ()) -> Release {
        match self.id_of(entry) {
            Some(id) => self.release(id),
            None => {
                self.unknown_releases.fetch_add(1, Ordering::Relaxed);
                Release::Unknown
            }
        }
    }

    /// "Runs" the code at `entry`: checks its magic word, spins `work`
    /// rounds (yielding halfway if asked to), and checks it again. Poison
    /// seen either time is an early free; a pointer that is not a live cell
    /// of this arena is foreign. Both are counted and, unless
    /// [`keep_going`](Self::keep_going), panic with the object and the seed.
    pub fn execute(&self, entry: *const (), work: u32) -> Result<CodeId, ExecuteError> {
        self.executions.fetch_add(1, Ordering::Relaxed);
        let Some(cell) = self.cell(entry) else { return Err(self.foreign(entry)) };
        // Acquire pairs with the Release stores in `make` and `release`.
        let before = cell.magic.load(Ordering::Acquire);
        let id = CodeId(cell.id.load(Ordering::Relaxed));
        match before {
            MAGIC => {}
            POISON => return Err(self.early_free(id, true)),
            _ => return Err(self.foreign(entry)),
        }
        for round in 0..work {
            if round == work / 2 && self.yield_while_running.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
        // Acquire pairs with the Release store in `release`.
        match cell.magic.load(Ordering::Acquire) {
            MAGIC => Ok(id),
            _ => Err(self.early_free(id, false)),
        }
    }

    fn foreign(&self, entry: *const ()) -> ExecuteError {
        self.foreign_entries.fetch_add(1, Ordering::Relaxed);
        if self.panic_on_early_free.load(Ordering::Relaxed) {
            panic!("kiln handed out {entry:p}, which is no live code object of this run (seed {:#x})", self.seed);
        }
        ExecuteError::Foreign { address: entry as usize }
    }

    fn early_free(&self, id: CodeId, before_run: bool) -> ExecuteError {
        self.early_frees.fetch_add(1, Ordering::Relaxed);
        self.first_early_free.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert((id, before_run));
        if self.panic_on_early_free.load(Ordering::Relaxed) {
            let when = if before_run { "before it ran" } else { "while it ran" };
            panic!("early free: code object {id} was released {when} (seed {:#x})", self.seed);
        }
        ExecuteError::EarlyFree { id, before_run }
    }

    /// The first early free seen: the object and whether the poison was
    /// there before the run.
    pub fn first_early_free(&self) -> Option<(CodeId, bool)> {
        *self.first_early_free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters now.
    pub fn report(&self) -> PoisonReport {
        PoisonReport {
            made: self.made.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            double_releases: self.double_releases.load(Ordering::Relaxed),
            unknown_releases: self.unknown_releases.load(Ordering::Relaxed),
            early_frees: self.early_frees.load(Ordering::Relaxed),
            foreign_entries: self.foreign_entries.load(Ordering::Relaxed),
            executions: self.executions.load(Ordering::Relaxed),
            exhausted: self.exhausted.load(Ordering::Relaxed),
        }
    }
}

impl Drop for PoisonArena {
    fn drop(&mut self) {
        for record in self.records.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            if !record.table.is_null() {
                // SAFETY: leaked in `make` with `Box::into_raw`, freed once
                // here; the arena is dropping, so kiln holds no pointer into
                // it any more (the test outlives every broker using it).
                drop(unsafe { Box::from_raw(record.table) });
                // SAFETY: as above, leaked with `Box::leak` in `make`; the
                // table viewing it was dropped just before.
                drop(unsafe { Box::from_raw(record.entries) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_code_runs_and_released_code_is_caught() {
        let arena = PoisonArena::new(64, 7).keep_going();
        let code = arena.make(&[9, 3, 9]).unwrap();
        assert_eq!(code.id, CodeId(1));
        assert_eq!(code.osr.iter().map(|e| e.site).collect::<Vec<_>>(), [3, 9]);
        assert_eq!(arena.execute(code.entry.as_ptr(), 10), Ok(CodeId(1)));
        assert_eq!(arena.execute(code.osr[1].code, 10), Ok(CodeId(1)));
        assert_eq!(arena.release(code.id), Release::First(CodeId(1)));
        assert!(!arena.is_live(code.id));
        assert_eq!(
            arena.execute(code.entry.as_ptr(), 10),
            Err(ExecuteError::EarlyFree { id: code.id, before_run: true })
        );
        assert_eq!(arena.execute(code.osr[0].code, 10), Err(ExecuteError::EarlyFree { id: code.id, before_run: true }));
        assert_eq!(arena.first_early_free(), Some((CodeId(1), true)));
        let report = arena.report();
        assert_eq!((report.made, report.released, report.early_frees, report.executions), (1, 1, 2, 4));
        assert!(!report.is_clean());
    }

    #[test]
    fn double_and_unknown_releases_are_counted() {
        let arena = PoisonArena::new(8, 1);
        let code = arena.make(&[]).unwrap();
        assert_eq!(arena.release_entry(code.entry.as_ptr()), Release::First(code.id));
        assert_eq!(arena.release_entry(code.entry.as_ptr()), Release::Double(code.id));
        assert_eq!(arena.release(CodeId(99)), Release::Unknown);
        let outside = 0x10usize as *const ();
        assert_eq!(arena.release_entry(outside), Release::Unknown);
        let report = arena.report();
        assert_eq!((report.released, report.double_releases, report.unknown_releases), (1, 1, 2));
    }

    #[test]
    fn foreign_pointers_are_not_dereferenced() {
        let arena = PoisonArena::new(4, 1).keep_going();
        let code = arena.make(&[]).unwrap();
        let inside_but_misaligned = (code.entry.as_ptr() as usize + 1) as *const ();
        assert!(matches!(arena.execute(inside_but_misaligned, 1), Err(ExecuteError::Foreign { .. })));
        let vacant = arena.cells[3..].as_ptr().cast::<()>();
        assert!(matches!(arena.execute(vacant, 1), Err(ExecuteError::Foreign { .. })));
        assert_eq!(arena.report().foreign_entries, 2);
    }

    #[test]
    fn a_full_arena_refuses_and_counts() {
        let arena = PoisonArena::new(3, 1);
        assert!(arena.make(&[1]).is_some());
        assert!(arena.make(&[2]).is_none());
        assert_eq!(arena.report().exhausted, 1);
    }

    #[test]
    fn the_osr_table_stays_readable_after_release_and_leads_to_poison() {
        let arena = PoisonArena::new(8, 1).keep_going();
        let code = arena.make(&[4]).unwrap();
        let table = code.table.unwrap();
        arena.release(code.id);
        // SAFETY: the arena keeps tables until it drops.
        let stale = unsafe { table.as_ref() }.lookup(4).unwrap();
        assert!(matches!(arena.execute(stale.as_ptr(), 1), Err(ExecuteError::EarlyFree { .. })));
    }

    #[test]
    #[should_panic(expected = "early free: code object #1 was released before it ran (seed 0x2a)")]
    fn by_default_an_early_free_panics_with_the_id_and_the_seed() {
        let arena = PoisonArena::new(8, 42);
        let code = arena.make(&[]).unwrap();
        arena.release(code.id);
        let _ = arena.execute(code.entry.as_ptr(), 1);
    }

    #[test]
    fn a_release_while_running_is_seen_after_the_run() {
        let arena = std::sync::Arc::new(PoisonArena::new(8, 3).keep_going());
        arena.set_yield_while_running(true);
        let code = arena.make(&[]).unwrap();
        let entry = code.entry.as_ptr() as usize;
        let runner = {
            let arena = std::sync::Arc::clone(&arena);
            std::thread::spawn(move || {
                loop {
                    if let Err(error) = arena.execute(entry as *const (), 10_000) {
                        return error;
                    }
                }
            })
        };
        arena.release(code.id);
        assert!(matches!(runner.join().unwrap(), ExecuteError::EarlyFree { id: CodeId(1), .. }));
    }
}
