//! The bead lifecycle as data: every transition, the function that makes
//! it, and whether it bumps the generation.
//!
//! [`TRANSITIONS`] is the source of truth for the diagram in `state.rs`.
//! Two tests keep them together: one renders each row as a legend line and
//! checks `state.rs` shows exactly those lines (and every arrow number in
//! its picture), the other walks the table, driving a fresh bead to each
//! row's from-state through the public API, calling the row's function and
//! checking the to-state and the generation rule (see `broker/change.rs`).

// The table is read by the tests below (and by people); it is kept in
// every build so it sits beside the code it describes.
#![cfg_attr(not(test), allow(dead_code))]

use crate::state::Phase;

/// One arrow of the lifecycle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transition {
    /// The arrow's number in the diagram.
    pub(crate) number: u8,
    pub(crate) from: Phase,
    pub(crate) to: Phase,
    /// The public function that takes the arrow.
    pub(crate) function: &'static str,
    /// When the function takes this arrow rather than another ("" if always).
    pub(crate) when: &'static str,
    /// Whether the generation moves on (in-flight jobs turn stale).
    pub(crate) bumps_generation: bool,
}

const fn arrow(
    number: u8,
    from: Phase,
    to: Phase,
    function: &'static str,
    when: &'static str,
    bumps_generation: bool,
) -> Transition {
    Transition { number, from, to, function, when, bumps_generation }
}

use Phase::{Blacklisted, Compiled, Compiling, Interpreted, Invalidated, Queued};

/// Every transition of a bead, numbered as in the diagram in `state.rs`.
pub(crate) const TRANSITIONS: &[Transition] = &[
    arrow(1, Interpreted, Queued, "Broker::on_invoke", "the policy promotes (also on_backedge, submit)", false),
    arrow(2, Compiled, Queued, "Broker::on_invoke", "the policy promotes to a higher tier", false),
    arrow(3, Queued, Compiling, "Broker::claim", "", false),
    arrow(4, Queued, Interpreted, "Broker::cancel_queued", "", false),
    arrow(5, Compiling, Compiled, "Job::publish", "", false),
    arrow(6, Compiling, Interpreted, "Job::fail", "the deopt policy recompiles later", false),
    arrow(7, Compiling, Interpreted, "drop(Job)", "", false),
    arrow(8, Interpreted, Compiled, "Broker::swap_compiled", "", true),
    arrow(9, Compiled, Compiled, "Broker::swap_compiled", "", true),
    arrow(10, Compiled, Interpreted, "Broker::record_bailout", "the deopt policy recompiles", true),
    arrow(11, Compiled, Blacklisted, "Broker::record_bailout", "the deopt policy blacklists", true),
    arrow(12, Interpreted, Blacklisted, "Broker::blacklist", "", true),
    arrow(13, Compiled, Interpreted, "Broker::evict", "", true),
    arrow(14, Compiled, Interpreted, "Broker::reload", "", true),
    arrow(15, Compiling, Interpreted, "Broker::reload", "the job in flight turns stale", true),
    arrow(16, Compiled, Interpreted, "Broker::retire_installed", "", true),
    arrow(17, Blacklisted, Interpreted, "Broker::on_invoke", "the blacklist decays", false),
    arrow(18, Compiled, Invalidated, "Broker::invalidate", "from any state but Invalidated", true),
    arrow(19, Queued, Invalidated, "Broker::invalidate_or_hand_back", "from any state but Invalidated", true),
    arrow(20, Interpreted, Blacklisted, "Broker::blacklist_for", "a saved profile's hint", false),
];

#[cfg(test)]
mod tests;
