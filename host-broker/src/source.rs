//! `JobSource`, the frame pump's and job-system pump's old view of the
//! broker, kept as a deprecated name for kiln-core's [`DynBroker`].
//!
//! kiln-host used to define its own two-method trait (`claim`,
//! `queue_len`) so host types need not name `Broker`'s seven parameters.
//! kiln-core now has one host-facing trait for every layer above it
//! ([`DynBroker`]: claim, queue length, evict, quiesce); this name remains
//! for code written against kiln-host's earlier API.

use kiln_core::DynBroker;

/// The old name of [`DynBroker`]: every `DynBroker` is a `JobSource`, and a
/// `&dyn JobSource<H>` converts to a `&dyn DynBroker<H>`.
#[deprecated(note = "use kiln_core::DynBroker, the one host-facing broker trait")]
pub trait JobSource<H>: DynBroker<H> {}

#[allow(deprecated)]
impl<H, B: DynBroker<H> + ?Sized> JobSource<H> for B {}
