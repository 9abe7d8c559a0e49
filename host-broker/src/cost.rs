//! The host's size hook: how big the function behind a job is.
//!
//! The frame pump predicts a compile's cost as *ticks per size unit* (learned
//! per tier) × *size*. Only the host knows what size means for its functions
//! — bytecode bytes, IR nodes, basic blocks — so it answers through
//! [`CostModel::size`]. Any unit works as long as compile time grows roughly
//! in proportion to it; the default, [`UniformSize`], says every function is
//! size 1, which makes the prediction a per-tier average compile time.
//! A closure `Fn(&CompileRequest<'_, H>) -> u32` is a cost model too.

use kiln_core::CompileRequest;

/// Tells the frame pump how large the function behind a job is.
///
/// A compile's cost is predicted as learned ticks per size unit (per tier)
/// × size, so any unit works — bytecode bytes, IR nodes, basic blocks — as
/// long as compile time grows roughly in proportion to it. [`UniformSize`]
/// (every function is size 1) makes predictions per-tier averages. A closure
/// `Fn(&CompileRequest<'_, H>) -> u32` is a cost model too.
pub trait CostModel<H> {
    /// The size of the function `request` compiles, in host units (0 counts
    /// as 1). Called once per job, when the frame pump claims it; it runs on
    /// the pumping thread and must not call back into the broker.
    fn size(&self, request: &CompileRequest<'_, H>) -> u32 {
        let _ = request;
        1
    }
}

/// Every function has size 1: predictions are per-tier averages.
#[derive(Clone, Copy, Debug, Default)]
pub struct UniformSize;

impl<H> CostModel<H> for UniformSize {}

impl<H, F: Fn(&CompileRequest<'_, H>) -> u32> CostModel<H> for F {
    fn size(&self, request: &CompileRequest<'_, H>) -> u32 {
        self(request)
    }
}
