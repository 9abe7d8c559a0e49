#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
#[cfg(feature = "std")]
mod pump_config;
#[cfg(feature = "std")]
mod pump_outcome;
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
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use adapter::JobSystemPump;
#[cfg(feature = "bevy")]
#[cfg_attr(docsrs, doc(cfg(feature = "bevy")))]
pub use bevy_jobs::{BevyJobSystem, BevyPump};
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use job_system::JobSystem;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use kiln_core::StdClock;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use pump_config::PumpConfig;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use pump_outcome::{AttachError, PumpStats, StopTimeout};
#[cfg(feature = "rayon")]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub use rayon_jobs::{RayonJobSystem, RayonPump};
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use shared_compiler::SharedCompiler;
