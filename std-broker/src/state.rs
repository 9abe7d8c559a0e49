//! The seed's five-state view of a bead.
//!
//! kiln-core's [`kiln_core::BeadState`] is the lifecycle (it also knows
//! Blacklisted and the installed tier, numbered from 0); beadie 0.3 shows
//! five states with fixed discriminants. [`BeadState`] is that view and
//! nothing more: it is computed from the kiln-core bead here, in one
//! place, and never stored.

/// A bead's lifecycle state, in beadie's five states: a view of kiln-core's
/// [`kiln_core::BeadState`] (see [`Bead::state`](crate::Bead::state)).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeadState {
    /// Interpreted (also: blacklisted).
    Interpreted = 0,
    /// A compile job is queued.
    Queued = 1,
    /// A compile is running.
    Compiling = 2,
    /// Native code is installed (at any tier).
    Compiled = 3,
    /// Invalidated: the function is gone.
    Deopt = 4,
}

impl BeadState {
    /// The seed's view of `bead`: its kiln-core state, except that code
    /// which keeps running while a higher tier is queued or compiling
    /// counts as `Compiled`, as in beadie's tiered adapter.
    pub(crate) fn of(bead: &kiln_core::Bead) -> Self {
        match bead.state() {
            kiln_core::BeadState::Queued | kiln_core::BeadState::Compiling if bead.compiled().is_some() => {
                Self::Compiled
            }
            state => state.into(),
        }
    }
}

impl TryFrom<u8> for BeadState {
    type Error = ();
    fn try_from(value: u8) -> Result<Self, ()> {
        Ok(match value {
            0 => Self::Interpreted,
            1 => Self::Queued,
            2 => Self::Compiling,
            3 => Self::Compiled,
            4 => Self::Deopt,
            _ => return Err(()),
        })
    }
}

/// The phase alone: Blacklisted shows as `Interpreted`, Invalidated as
/// `Deopt`, any installed tier as `Compiled`.
impl From<kiln_core::BeadState> for BeadState {
    fn from(state: kiln_core::BeadState) -> Self {
        match state {
            kiln_core::BeadState::Queued => Self::Queued,
            kiln_core::BeadState::Compiling => Self::Compiling,
            kiln_core::BeadState::Compiled(_) => Self::Compiled,
            kiln_core::BeadState::Invalidated => Self::Deopt,
            _ => Self::Interpreted,
        }
    }
}
