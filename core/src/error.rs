//! Errors. Every refusal is typed, and a refused value comes back inside the
//! error ([`Refused`]) so nothing is lost: refused code can still be released.

use crate::osr::OsrTableError;

/// Why kiln refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum KilnError {
    /// The job queue is full; the bead cools down before trying again.
    QueueFull,
    /// A fixed pool (bead pool) has no free slot.
    CapacityFull,
    /// The retire ring is full: call `quiesce` and try again.
    RetireFull,
    /// A null pointer was offered as native code.
    NullEntry,
    /// The bead was invalidated; it takes no new code or jobs.
    Invalidated,
    /// `invalidate` was called twice on the same bead.
    AlreadyInvalidated,
    /// The operation needs installed code and there is none.
    NotCompiled,
    /// A job for this bead is already queued or compiling.
    AlreadyQueued,
    /// Compilation is refused for this bead (blacklisted).
    Blacklisted,
    /// Tier above [`MAX_TIER`](crate::MAX_TIER).
    TierOutOfRange,
    /// The OSR table is malformed.
    BadOsrTable(OsrTableError),
    /// The job's bead moved on while it compiled (its generation changed or
    /// it left Compiling): the result was not installed.
    StaleJob,
}

impl core::fmt::Display for KilnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::QueueFull => f.write_str("compile queue is full"),
            Self::CapacityFull => f.write_str("bead pool is full"),
            Self::RetireFull => f.write_str("retire ring is full; call quiesce"),
            Self::NullEntry => f.write_str("native entry pointer is null"),
            Self::Invalidated => f.write_str("bead was invalidated"),
            Self::AlreadyInvalidated => f.write_str("bead was already invalidated"),
            Self::NotCompiled => f.write_str("bead has no compiled code"),
            Self::AlreadyQueued => f.write_str("a compile for this bead is already queued or running"),
            Self::Blacklisted => f.write_str("bead is blacklisted"),
            Self::TierOutOfRange => f.write_str("tier is above MAX_TIER"),
            Self::BadOsrTable(error) => write!(f, "bad OSR table: {error}"),
            Self::StaleJob => f.write_str("the bead moved on while its job compiled"),
        }
    }
}

impl core::error::Error for KilnError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::BadOsrTable(error) => Some(error),
            _ => None,
        }
    }
}

impl From<OsrTableError> for KilnError {
    fn from(error: OsrTableError) -> Self {
        Self::BadOsrTable(error)
    }
}

impl From<crate::compiler::NullEntry> for KilnError {
    fn from(_: crate::compiler::NullEntry) -> Self {
        Self::NullEntry
    }
}

/// A refusal that hands back what was offered.
#[derive(Debug)]
pub struct Refused<T> {
    /// Why it was refused.
    pub error: KilnError,
    /// What was offered, untouched.
    pub value: T,
}

impl<T> Refused<T> {
    pub(crate) fn new(error: KilnError, value: T) -> Self {
        Self { error, value }
    }

    /// The offered value, for the caller to release or retry.
    pub fn into_value(self) -> T {
        self.value
    }
}

impl<T> core::fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.error, f)
    }
}

impl<T: core::fmt::Debug> core::error::Error for Refused<T> {}
