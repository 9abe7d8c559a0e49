//! On-stack-replacement tables.
//!
//! An OSR table belongs to the code object it was compiled with: the
//! compiler keeps its memory alive until it is asked to release that code,
//! and the bead publishes a pointer to it beside the entry. A lookup is
//! therefore one Acquire load of that pointer, then a binary search over a
//! sorted slice; no pin, no lock, and a bead without OSR pays one load of a
//! null pointer. Sortedness is checked once, when the table is built.

use core::marker::PhantomData;
use core::ptr::NonNull;

/// One native entry point at a loop header, keyed by an opaque site id that
/// the interpreter and the JIT agree on (a bytecode offset, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct OsrEntry {
    /// The loop-header key.
    pub site: u64,
    /// Native code that resumes the frame at `site`.
    pub code: *mut (),
}

// SAFETY: an `OsrEntry` is a plain key and an address; kiln never
// dereferences `code`, and calling it is the host's own `unsafe` act.
unsafe impl Send for OsrEntry {}
// SAFETY: as for `Send`: no interior mutability, nothing dereferenced.
unsafe impl Sync for OsrEntry {}

/// Why a slice of entries is not a valid OSR table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum OsrTableError {
    /// Sites must be strictly ascending; the entry at `index` is not.
    Unsorted {
        /// Position of the first out-of-order entry.
        index: usize,
    },
    /// Two entries share the site at `index`.
    DuplicateSite {
        /// Position of the second entry with the same site.
        index: usize,
    },
    /// The entry at `index` has a null code pointer.
    NullCode {
        /// Position of the null entry.
        index: usize,
    },
}

impl core::fmt::Display for OsrTableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unsorted { index } => write!(f, "OSR table is not sorted by site at entry {index}"),
            Self::DuplicateSite { index } => write!(f, "OSR table repeats a site at entry {index}"),
            Self::NullCode { index } => write!(f, "OSR table entry {index} has a null code pointer"),
        }
    }
}

impl core::error::Error for OsrTableError {}

/// A validated, sorted view of OSR entries.
#[derive(Clone, Copy, Debug)]
pub struct OsrTable<'a> {
    entries: NonNull<OsrEntry>,
    len: usize,
    _entries: PhantomData<&'a [OsrEntry]>,
}

// SAFETY: the table is a shared view of `OsrEntry`s, which are Send + Sync.
unsafe impl Send for OsrTable<'_> {}
// SAFETY: see `Send`; the view is never written through.
unsafe impl Sync for OsrTable<'_> {}

impl<'a> OsrTable<'a> {
    /// Checks that `entries` is strictly sorted by site with non-null code.
    pub fn new(entries: &'a [OsrEntry]) -> Result<Self, OsrTableError> {
        for (index, entry) in entries.iter().enumerate() {
            if entry.code.is_null() {
                return Err(OsrTableError::NullCode { index });
            }
            if index > 0 {
                let previous = entries[index - 1].site;
                if entry.site == previous {
                    return Err(OsrTableError::DuplicateSite { index });
                }
                if entry.site < previous {
                    return Err(OsrTableError::Unsorted { index });
                }
            }
        }
        Ok(Self { entries: NonNull::from(entries).cast(), len: entries.len(), _entries: PhantomData })
    }

    /// The entries, sorted by site.
    pub fn entries(&self) -> &'a [OsrEntry] {
        // SAFETY: built from a `&'a [OsrEntry]` of this length in `new`.
        unsafe { core::slice::from_raw_parts(self.entries.as_ptr(), self.len) }
    }

    /// The native entry for `site`, by binary search.
    #[inline]
    pub fn lookup(&self, site: u64) -> Option<NonNull<()>> {
        let entries = self.entries();
        let index = entries.binary_search_by_key(&site, |entry| entry.site).ok()?;
        NonNull::new(entries[index].code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(site: u64, code: usize) -> OsrEntry {
        OsrEntry { site, code: core::ptr::without_provenance_mut(code) }
    }

    #[test]
    fn lookup_finds_each_site_and_only_those() {
        let entries = [entry(4, 0x40), entry(9, 0x90), entry(30, 0x300)];
        let table = OsrTable::new(&entries).unwrap();
        assert_eq!(table.lookup(9).map(|p| p.as_ptr() as usize), Some(0x90));
        assert_eq!(table.lookup(4).map(|p| p.as_ptr() as usize), Some(0x40));
        assert_eq!(table.lookup(30).map(|p| p.as_ptr() as usize), Some(0x300));
        assert_eq!(table.lookup(5), None);
        assert_eq!(OsrTable::new(&[]).unwrap().lookup(0), None);
    }

    #[test]
    fn bad_tables_are_typed_errors() {
        let unsorted = [entry(9, 1), entry(4, 1)];
        assert_eq!(OsrTable::new(&unsorted).unwrap_err(), OsrTableError::Unsorted { index: 1 });
        let duplicated = [entry(4, 1), entry(4, 2)];
        assert_eq!(OsrTable::new(&duplicated).unwrap_err(), OsrTableError::DuplicateSite { index: 1 });
        let null = [entry(4, 1), entry(5, 0)];
        assert_eq!(OsrTable::new(&null).unwrap_err(), OsrTableError::NullCode { index: 1 });
    }
}
