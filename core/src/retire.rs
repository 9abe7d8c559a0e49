//! The retire ring: code that is no longer published but may still be
//! running, waiting for the host to declare quiescence.
//!
//! Each entry is tagged with the epoch it was retired in. `quiesce()` means
//! "every thread that may run kiln-published code has passed a quiescent
//! point since the previous `quiesce()`", and advances the epoch. Code
//! retired in epoch `e` was unpublished after the quiesce that opened `e`,
//! so a thread may have loaded it until then and still run it during `e`;
//! only after the quiesce that closes `e + 1` has every such thread passed a
//! quiescent point since the unpublish. Hence: released when the epoch
//! reaches `e + 2`. The ring is bounded; a retirement that finds it full is
//! refused (the caller reports it and waits), and compile jobs that will
//! replace code reserve their slot when claimed, so a finished compile is
//! never stuck holding code it cannot retire.

use heapless::Deque;

use crate::compiler::CodeHandle;

pub(crate) struct RetireRing<const CAPACITY: usize> {
    ring: Deque<(CodeHandle, u32), CAPACITY>,
    reserved: usize,
    epoch: u32,
}

impl<const CAPACITY: usize> RetireRing<CAPACITY> {
    pub(crate) const fn new() -> Self {
        const { assert!(CAPACITY > 0, "the retire ring needs room for one handle") };
        Self { ring: Deque::new(), reserved: 0, epoch: 0 }
    }

    /// Slots neither used nor reserved.
    pub(crate) fn free(&self) -> usize {
        CAPACITY - self.ring.len() - self.reserved
    }

    /// Holds a slot for a retirement that will happen later.
    pub(crate) fn reserve(&mut self) -> bool {
        let ok = self.free() > 0;
        self.reserved += usize::from(ok);
        ok
    }

    pub(crate) fn unreserve(&mut self) {
        debug_assert!(self.reserved > 0);
        self.reserved -= 1;
    }

    /// Retires `code` in the current epoch, using a reservation if
    /// `reserved`; a full ring hands it back.
    pub(crate) fn retire(&mut self, code: CodeHandle, reserved: bool) -> Result<(), CodeHandle> {
        if reserved {
            self.unreserve();
        } else if self.free() == 0 {
            return Err(code);
        }
        self.ring.push_back((code, self.epoch)).map_err(|(code, _)| code)
    }

    /// Advances the epoch and moves every handle retired two or more epochs
    /// ago into `out`.
    pub(crate) fn quiesce(&mut self, out: &mut heapless::Vec<CodeHandle, CAPACITY>) {
        self.epoch = self.epoch.wrapping_add(1);
        while let Some(&(code, retired)) = self.ring.front() {
            if self.epoch.wrapping_sub(retired) < 2 {
                break;
            }
            self.ring.pop_front();
            // Cannot fail: `out` has the ring's capacity and starts empty.
            let _ = out.push(code);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(raw: usize) -> CodeHandle {
        CodeHandle::from_raw(raw).unwrap()
    }

    #[test]
    fn released_two_quiesces_after_retirement() {
        let mut ring = RetireRing::<4>::new();
        ring.retire(handle(1), false).unwrap();
        let mut out = heapless::Vec::new();
        ring.quiesce(&mut out);
        assert!(out.is_empty(), "one quiesce is not enough");
        ring.retire(handle(2), false).unwrap();
        ring.quiesce(&mut out);
        assert_eq!(out.as_slice(), &[handle(1)]);
        out.clear();
        ring.quiesce(&mut out);
        assert_eq!(out.as_slice(), &[handle(2)]);
    }

    #[test]
    fn full_ring_refuses_and_reservations_count() {
        let mut ring = RetireRing::<2>::new();
        assert!(ring.reserve());
        ring.retire(handle(1), false).unwrap();
        assert_eq!(ring.retire(handle(2), false), Err(handle(2)));
        assert!(!ring.reserve());
        ring.retire(handle(3), true).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.free(), 0);
    }
}
