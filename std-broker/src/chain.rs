//! `Chain`: the registered beads of one domain, linked through the beads
//! themselves.

use std::ptr;
use std::sync::{Arc, Mutex};

use crate::bead::{Bead, CoreHandle};
use crate::domain::Domain;

/// A list of registered beads, linked through the beads themselves (one
/// word on each, no vector to grow or copy), pruned of invalidated ones on
/// demand, walked in registration order. Dropping it never recurses,
/// however many beads it holds.
pub struct Chain {
    pub(crate) domain: Arc<Domain>,
    links: Mutex<Links>,
}

/// The chain's ends. Every linked bead carries one strong count of its
/// `Arc`, owned by the chain (taken by `Arc::into_raw` in `push`, given
/// back by `Arc::from_raw` when unlinked), so a linked pointer is valid.
/// Links change only under the chain's lock.
struct Links {
    head: *const Bead,
    tail: *const Bead,
    len: usize,
}

// SAFETY: the pointers are owned `Arc<Bead>` counts, and `Bead` is `Send`
// and `Sync`; they are only followed under the chain's lock.
unsafe impl Send for Links {}

impl Links {
    const EMPTY: Self = Self { head: ptr::null(), tail: ptr::null(), len: 0 };
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("len", &self.len()).finish_non_exhaustive()
    }
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// An empty chain of detached beads.
    pub fn new() -> Self {
        Self::in_domain(Domain::detached())
    }

    pub(crate) fn in_domain(domain: Arc<Domain>) -> Self {
        Self { domain, links: Mutex::new(Links::EMPTY) }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new bead.
    pub fn push(&self, core: CoreHandle, on_invalidate: Option<Box<dyn Fn() + Send + Sync>>) -> Arc<Bead> {
        self.link(Bead::in_domain(Arc::clone(&self.domain), core, on_invalidate))
    }

    /// Registers a new bead named `name` (for log lines), or unnamed. The
    /// name is set before the bead is linked, so every thread that reaches
    /// it sees it.
    pub(crate) fn push_named(
        &self,
        name: Option<&str>,
        core: CoreHandle,
        on_invalidate: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Arc<Bead> {
        let bead = Bead::in_domain(Arc::clone(&self.domain), core, on_invalidate);
        if let Some(name) = name {
            bead.set_name(Some(Arc::from(name)));
        }
        self.link(bead)
    }

    /// Links `bead` last and returns it.
    #[inline(always)]
    fn link(&self, bead: Arc<Bead>) -> Arc<Bead> {
        let linked = Arc::into_raw(Arc::clone(&bead));
        let mut links = self.links();
        // SAFETY: a linked tail is alive (`Links`), and the lock is held.
        match unsafe { links.tail.as_ref() } {
            Some(tail) => tail.set_next_in_chain(linked),
            None => links.head = linked,
        }
        links.tail = linked;
        links.len += 1;
        bead
    }

    /// Drops invalidated beads from the chain.
    pub fn prune(&self) {
        let mut unlinked = Vec::new();
        {
            let mut links = self.links();
            let (mut kept, mut at) = (ptr::null::<Bead>(), links.head);
            // SAFETY: every pointer followed is linked, so alive (`Links`),
            // and the lock is held throughout.
            while let Some(bead) = unsafe { at.as_ref() } {
                let next = bead.next_in_chain();
                if bead.is_valid() {
                    kept = at;
                } else {
                    // SAFETY: `kept` is linked (as above).
                    match unsafe { kept.as_ref() } {
                        Some(kept) => kept.set_next_in_chain(next),
                        None => links.head = next,
                    }
                    bead.set_next_in_chain(ptr::null());
                    links.len -= 1;
                    unlinked.push(at);
                }
                at = next;
            }
            links.tail = kept;
        }
        // Outside the lock: a last reference's drop retires code.
        for bead in unlinked {
            // SAFETY: unlinked above, so the chain's count is given back once.
            drop(unsafe { Arc::from_raw(bead) });
        }
    }

    /// Calls `f` on every bead (on a snapshot, so `f` may use the chain).
    pub fn walk(&self, mut f: impl FnMut(&Arc<Bead>)) {
        let snapshot = {
            let links = self.links();
            let mut snapshot = Vec::with_capacity(links.len);
            let mut at = links.head;
            while !at.is_null() {
                // SAFETY: a linked bead is alive (`Links`) and the lock is
                // held; the count taken here belongs to the snapshot.
                let bead = unsafe {
                    Arc::increment_strong_count(at);
                    Arc::from_raw(at)
                };
                at = bead.next_in_chain();
                snapshot.push(bead);
            }
            snapshot
        };
        snapshot.iter().for_each(&mut f);
    }

    /// Registered beads.
    pub fn len(&self) -> usize {
        self.links().len
    }

    /// Whether no bead is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unlinks every bead and gives back the chain's counts, one bead at a
    /// time (no recursion, however long the chain).
    pub(crate) fn clear(&self) {
        let mut at = std::mem::replace(&mut *self.links(), Links::EMPTY).head;
        while !at.is_null() {
            // SAFETY: these beads were linked and are now reachable from
            // this loop only: their links are ours to follow and change
            // without the lock, and each count is given back once.
            let bead = unsafe { Arc::from_raw(at) };
            at = bead.next_in_chain();
            bead.set_next_in_chain(ptr::null());
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.clear();
    }
}
