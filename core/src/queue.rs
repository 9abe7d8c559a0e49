//! The bounded job queue: a max-heap by hotness, oldest first among equals.
//!
//! Capacity is a const generic, so the queue lives inside the broker (and a
//! broker can be a `static`). Entries carry the generation they were issued
//! for; an entry whose bead moved on (invalidated, reloaded, deopted) is
//! stale and is dropped when popped, never compiled. A push into a full
//! queue hands the entry back so the caller can cool the bead down.

use heapless::binary_heap::{BinaryHeap, Max};

use crate::job::JobKind;
use crate::state::Generation;

/// One queued compile request.
#[derive(Debug)]
pub(crate) struct QueueEntry<H> {
    pub(crate) priority: u32,
    pub(crate) sequence: u32,
    pub(crate) generation: Generation,
    pub(crate) tier: u8,
    pub(crate) kind: JobKind,
    pub(crate) bead: H,
}

impl<H> QueueEntry<H> {
    /// Higher priority first; among equals the older (smaller sequence,
    /// compared with wrap-around) first.
    fn rank(&self, other: &Self) -> core::cmp::Ordering {
        self.priority.cmp(&other.priority).then_with(|| (other.sequence.wrapping_sub(self.sequence) as i32).cmp(&0))
    }
}

impl<H> PartialEq for QueueEntry<H> {
    fn eq(&self, other: &Self) -> bool {
        self.rank(other).is_eq()
    }
}
impl<H> Eq for QueueEntry<H> {}
impl<H> PartialOrd for QueueEntry<H> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<H> Ord for QueueEntry<H> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.rank(other)
    }
}

/// The heap plus the sequence counter that keeps equal priorities FIFO.
pub(crate) struct JobQueue<H, const CAPACITY: usize> {
    heap: BinaryHeap<QueueEntry<H>, Max, CAPACITY>,
    next_sequence: u32,
}

impl<H, const CAPACITY: usize> JobQueue<H, CAPACITY> {
    pub(crate) const fn new() -> Self {
        const { assert!(CAPACITY > 0, "the job queue needs room for one job") };
        Self { heap: BinaryHeap::new(), next_sequence: 0 }
    }

    /// Queues `entry`, stamping its sequence; a full queue hands it back.
    pub(crate) fn push(&mut self, mut entry: QueueEntry<H>) -> Result<(), QueueEntry<H>> {
        entry.sequence = self.next_sequence;
        self.heap.push(entry)?;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        Ok(())
    }

    pub(crate) fn pop(&mut self) -> Option<QueueEntry<H>> {
        self.heap.pop()
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(priority: u32, bead: u32) -> QueueEntry<u32> {
        QueueEntry { priority, sequence: 0, generation: Generation(0), tier: 0, kind: JobKind::Invoke, bead }
    }

    #[test]
    fn hottest_first_then_oldest_first() {
        let mut queue = JobQueue::<u32, 8>::new();
        for (priority, bead) in [(5, 1), (9, 2), (5, 3), (1, 4), (9, 5)] {
            queue.push(entry(priority, bead)).unwrap();
        }
        let order: heapless::Vec<u32, 8> = core::iter::from_fn(|| queue.pop().map(|e| e.bead)).collect();
        assert_eq!(order.as_slice(), &[2, 5, 1, 3, 4]);
    }

    #[test]
    fn full_queue_hands_the_entry_back() {
        let mut queue = JobQueue::<u32, 2>::new();
        queue.push(entry(1, 1)).unwrap();
        queue.push(entry(1, 2)).unwrap();
        let refused = queue.push(entry(7, 3)).unwrap_err();
        assert_eq!(refused.bead, 3);
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn fifo_survives_sequence_wraparound() {
        let mut queue = JobQueue::<u32, 4>::new();
        queue.next_sequence = u32::MAX - 1;
        for bead in 0..4 {
            queue.push(entry(3, bead)).unwrap();
        }
        let order: heapless::Vec<u32, 4> = core::iter::from_fn(|| queue.pop().map(|e| e.bead)).collect();
        assert_eq!(order.as_slice(), &[0, 1, 2, 3]);
    }
}
