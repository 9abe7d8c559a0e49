//! kiln's test kit, shared by the workspace's tests, the fuzz target and the
//! stress tests; never published.
//!
//! - [`model`]: a plain reference model of kiln-core's broker that an
//!   operation sequence (from proptest or from the fuzzer) runs against side
//!   by side with the real broker.
//! - `fault` (feature `std`): fault-injecting compilers and backends (fail, panic, null,
//!   hang until released, slow, bad OSR tables, panicking release and
//!   callbacks), at chosen points or at random from a seed, each fault
//!   counted by kind; plus what the stress tests share (settings from the
//!   environment, host-declared quiescence by kiln's rule).
//! - [`poison`]: fake code objects that poison themselves when released, so
//!   a runner that executes released code is caught.

pub mod model;

#[cfg(feature = "std")]
pub mod fault;

pub mod poison;
