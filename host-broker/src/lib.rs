//! # kiln-host
//!
//! kiln for hosts that own their threads: a game loop, an engine's job
//! system, a microcontroller's main loop. kiln-core never starts a thread;
//! this crate gives such hosts two ready ways to run its compile jobs.
//!
//! - [`FramePump`] (`no_std`, no `alloc`): called once per frame with a time
//!   budget from a host [`Clock`]. It predicts each job's cost from measured
//!   compiles (per tier, scaled by the function's size from a [`CostModel`])
//!   and runs only what fits; a job that does not fit waits, held, for a
//!   later frame, and runs anyway after [`FrameConfig::starve_after`] skipped
//!   frames. Each frame returns a [`FrameReport`].
//! - `JobSystemPump` (feature `std`): kiln-core's [`WakeHook`] on any job
//!   system with a `spawn` (`JobSystem`): a wake-up spawns a pump task,
//!   coalesced so at most a configured number are in flight, with a bounded
//!   `stop`. Ready-made job systems: `RayonJobSystem` (feature `rayon`) and
//!   `BevyJobSystem` (feature `bevy`).
//!
//! Either way, results are published by kiln-core's generation-checked
//! install: the host only ever sees a bead's entry as null or as complete
//! code.
//!
//! ## A game loop
//!
//! ```
//! use core::cell::Cell;
//! use kiln_core::*;
//! use kiln_host::{FrameConfig, FramePump};
//!
//! /// The host's clock: here one tick per simulated microsecond.
//! struct FrameClock(Cell<u64>);
//! impl Clock for FrameClock {
//!     fn now(&self) -> u64 { self.0.get() }
//! }
//!
//! /// A "JIT" whose every compile takes 300 µs.
//! struct Jit<'c>(&'c FrameClock);
//! impl<'a> Compiler<&'a Bead> for Jit<'_> {
//!     type Error = NullEntry;
//!     fn compile(&mut self, _job: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, NullEntry> {
//!         self.0.0.set(self.0.now() + 300);
//!         Compiled::new(core::ptr::dangling_mut(), CodeHandle::from_raw(1).unwrap())
//!     }
//!     fn release(&mut self, _code: CodeHandle) {}
//! }
//!
//! let beads: [Bead; 4] = core::array::from_fn(|_| Bead::new(core::ptr::null_mut()));
//! let clock = FrameClock(Cell::new(0));
//! let broker: Broker<&Bead, _, _> =
//!     Broker::new(ThresholdPolicy::new(3), AlwaysRecompilePolicy, NoWake, NoEvents);
//! // First guess: 200 µs per compile; learned from then on.
//! let mut frames: FramePump<'_, &Bead> = FramePump::new(&broker, FrameConfig::new(200));
//! let mut jit = Jit(&clock);
//!
//! for _frame in 0..10 {
//!     for bead in &beads {
//!         broker.on_invoke(&bead); // the interpreter runs the game
//!     }
//!     // 1 ms of each frame is left for compiles.
//!     let report = frames.pump(&mut jit, &clock, 1_000);
//!     assert!(report.spent() <= 1_000 || report.forced == 1 || report.mispredicted > 0);
//!     clock.0.set(clock.now() + 16_000);
//! }
//! assert!(beads.iter().all(|bead| bead.state() == BeadState::Compiled(0)));
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(not(test), warn(clippy::std_instead_of_core))]

#[macro_use]
mod fmt;

mod cost;
mod frame;
mod predict;
mod source;

#[cfg(feature = "std")]
mod adapter;
#[cfg(feature = "bevy")]
mod bevy_jobs;
#[cfg(feature = "std")]
mod job_system;
#[cfg(feature = "rayon")]
mod rayon_jobs;
#[cfg(feature = "std")]
mod shared_compiler;
#[cfg(feature = "std")]
mod sync;

pub use cost::{CostModel, UniformSize};
pub use frame::{FrameConfig, FramePump, FrameReport};
/// kiln-core's old name for [`WakeHook`].
#[allow(deprecated)]
pub use kiln_core::Pump;
pub use kiln_core::{Clock, WakeHook};
pub use predict::CostPredictor;
#[allow(deprecated)]
pub use source::JobSource;

#[cfg(feature = "std")]
pub use adapter::{AttachError, JobSystemPump, PumpConfig, PumpStats, StopTimeout};
#[cfg(feature = "bevy")]
pub use bevy_jobs::{BevyJobSystem, BevyPump};
#[cfg(feature = "std")]
pub use job_system::JobSystem;
#[cfg(feature = "std")]
pub use kiln_core::StdClock;
#[cfg(feature = "rayon")]
pub use rayon_jobs::{RayonJobSystem, RayonPump};
#[cfg(feature = "std")]
pub use shared_compiler::SharedCompiler;
