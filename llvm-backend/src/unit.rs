//! Code units: one compile's code, freed as a whole.
//!
//! A unit (kiln-backend-kit's `Unit`) is the function's normal entry and
//! its OSR entries, published and retired together as one kiln code
//! object, linked under one ORC resource tracker. Freeing the unit removes
//! the tracker, which returns its code memory to the process.

use kiln_backend_kit::UnitCode;

use crate::orc::Tracker;

impl UnitCode for Tracker {
    unsafe fn free(self, name: &str) {
        // SAFETY: (1) by the trait's contract, no code of the unit runs or
        // will be called.
        if let Err(message) = unsafe { self.remove() } {
            log::warn!(target: "kiln", "llvm: freeing `{name}`: {message}");
        }
    }
}

/// The backend's code memory: units under ORC resource trackers.
pub(crate) type CodeMemory = kiln_backend_kit::CodeMemory<Tracker>;
