//! The bounded job queue: a max-heap by hotness, oldest first among equals.
//!
//! Capacity is a const generic, so the queue lives inside the broker (and a
//! broker can be a `static`). Entries carry the generation they were issued
//! for; an entry whose bead moved on (invalidated, reloaded, deopted) is
//! stale and is dropped when popped, never compiled.
//!
//! A full queue does not simply refuse: like HotSpot's compile queue, it
//! should hold the hottest work, so a newcomer much hotter than the coldest
//! queued entry (more than [`EVICTION_FACTOR`] times its priority) takes
//! that entry's place and the evicted entry is handed back (its bead cools
//! down and asks again later). Anything less hot is handed back itself.
//! The factor keeps equally hot beads (a warm-up storm, where every bead
//! crosses together) from evicting each other in turn: a refused bead keeps
//! counting while queued entries keep the priority they were queued with,
//! so without a margin every retry would evict someone.
//!
//! The heap is kept by hand (on a `heapless::Vec`) rather than with
//! `heapless::BinaryHeap`, because eviction must reach the coldest entry:
//! in a max-heap it is one of the leaves, found by a scan of the bottom
//! half on the queue-full path only.

use heapless::Vec;

use crate::job::JobKind;
use crate::state::Generation;

/// A newcomer replaces the coldest queued entry only when its priority is
/// more than this many times the coldest one's.
pub(crate) const EVICTION_FACTOR: u32 = 2;

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

/// What [`JobQueue::push_within`] did with an entry.
#[derive(Debug)]
pub(crate) enum Pushed<H> {
    /// Queued; nothing left the queue.
    Queued,
    /// Queued in place of the coldest entry, handed back here.
    Evicted(QueueEntry<H>),
    /// Not queued (the queue is full of work at least half as hot): the
    /// entry is handed back.
    Refused(QueueEntry<H>),
}

/// The heap plus the sequence counter that keeps equal priorities FIFO.
pub(crate) struct JobQueue<H, const CAPACITY: usize> {
    /// A binary max-heap by [`QueueEntry::rank`]: every entry outranks its
    /// children (`2i + 1`, `2i + 2`).
    heap: Vec<QueueEntry<H>, CAPACITY>,
    next_sequence: u32,
}

impl<H, const CAPACITY: usize> JobQueue<H, CAPACITY> {
    pub(crate) const fn new() -> Self {
        const { assert!(CAPACITY > 0, "the job queue needs room for one job") };
        Self { heap: Vec::new(), next_sequence: 0 }
    }

    /// Queues `entry`, stamping its sequence; a full queue hands it back.
    pub(crate) fn push(&mut self, mut entry: QueueEntry<H>) -> Result<(), QueueEntry<H>> {
        entry.sequence = self.next_sequence;
        self.heap.push(entry)?;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.sift_up(self.heap.len() - 1);
        Ok(())
    }

    /// Queues `entry` if fewer than `limit` entries wait; otherwise lets it
    /// evict the coldest entry if it is more than [`EVICTION_FACTOR`] times
    /// as hot, else hands it back.
    pub(crate) fn push_within(&mut self, entry: QueueEntry<H>, limit: usize) -> Pushed<H> {
        if self.heap.len() < limit.min(CAPACITY) {
            return match self.push(entry) {
                Ok(()) => Pushed::Queued,
                Err(entry) => Pushed::Refused(entry),
            };
        }
        let Some(coldest) = self.coldest() else { return Pushed::Refused(entry) };
        if entry.priority <= self.heap[coldest].priority.saturating_mul(EVICTION_FACTOR) {
            return Pushed::Refused(entry);
        }
        let mut entry = entry;
        entry.sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        // `coldest` is a leaf and the newcomer outranks what stood there, so
        // only the path above it can be out of order.
        let evicted = core::mem::replace(&mut self.heap[coldest], entry);
        self.sift_up(coldest);
        Pushed::Evicted(evicted)
    }

    pub(crate) fn pop(&mut self) -> Option<QueueEntry<H>> {
        if self.heap.is_empty() {
            return None;
        }
        let top = self.heap.swap_remove(0);
        self.sift_down(0);
        Some(top)
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Index of the entry that would be popped last. In a max-heap it is a
    /// leaf, and the leaves are the bottom half.
    fn coldest(&self) -> Option<usize> {
        let len = self.heap.len();
        (len / 2..len).min_by(|&a, &b| self.heap[a].cmp(&self.heap[b]))
    }

    fn sift_up(&mut self, mut index: usize) {
        while index > 0 {
            let parent = (index - 1) / 2;
            if self.heap[index] <= self.heap[parent] {
                return;
            }
            self.heap.swap(index, parent);
            index = parent;
        }
    }

    fn sift_down(&mut self, mut index: usize) {
        let len = self.heap.len();
        loop {
            let (left, right) = (2 * index + 1, 2 * index + 2);
            let mut largest = index;
            if left < len && self.heap[left] > self.heap[largest] {
                largest = left;
            }
            if right < len && self.heap[right] > self.heap[largest] {
                largest = right;
            }
            if largest == index {
                return;
            }
            self.heap.swap(index, largest);
            index = largest;
        }
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

    fn drain<const N: usize>(queue: &mut JobQueue<u32, N>) -> heapless::Vec<u32, N> {
        core::iter::from_fn(|| queue.pop().map(|e| e.bead)).collect()
    }

    #[test]
    fn full_queue_evicts_its_coldest_for_a_much_hotter_entry() {
        let mut queue = JobQueue::<u32, 3>::new();
        for (priority, bead) in [(10, 1), (4, 2), (7, 3)] {
            assert!(matches!(queue.push_within(entry(priority, bead), 3), Pushed::Queued));
        }
        // Twice the coldest is not enough: equally warm work is not churned.
        let Pushed::Refused(refused) = queue.push_within(entry(8, 4), 3) else {
            panic!("8 ≤ 2 × 4 must be refused")
        };
        assert_eq!(refused.bead, 4);
        let Pushed::Evicted(evicted) = queue.push_within(entry(9, 5), 3) else { panic!("9 > 2 × 4 must evict") };
        assert_eq!((evicted.bead, evicted.priority), (2, 4));
        assert_eq!(queue.len(), 3);
        assert_eq!(drain(&mut queue).as_slice(), &[1, 5, 3]);
    }

    #[test]
    fn among_equally_cold_entries_the_youngest_is_evicted() {
        let mut queue = JobQueue::<u32, 4>::new();
        for bead in 0..3 {
            queue.push(entry(1, bead)).unwrap();
        }
        let Pushed::Evicted(evicted) = queue.push_within(entry(3, 9), 3) else { panic!("3 > 2 × 1 must evict") };
        assert_eq!(evicted.bead, 2, "the entry that would have run last");
        assert_eq!(drain(&mut queue).as_slice(), &[9, 0, 1]);
    }

    #[test]
    fn a_lowered_limit_is_a_full_queue() {
        let mut queue = JobQueue::<u32, 4>::new();
        queue.push(entry(5, 1)).unwrap();
        assert!(matches!(queue.push_within(entry(5, 2), 1), Pushed::Refused(_)));
        assert!(matches!(queue.push_within(entry(5, 2), 2), Pushed::Queued));
        assert!(matches!(queue.push_within(entry(50, 3), 8), Pushed::Queued), "the limit is capped by CAPACITY");
        assert!(matches!(queue.push_within(entry(50, 4), 8), Pushed::Queued));
        assert!(matches!(queue.push_within(entry(50, 5), 8), Pushed::Evicted(_)));
    }

    #[test]
    fn pops_in_rank_order_through_any_mix_of_pushes_evictions_and_pops() {
        // A reference: a plain list, popped by a scan for the best rank.
        let mut state = 0x2545_F491u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut queue = JobQueue::<u32, 16>::new();
        let mut reference: heapless::Vec<(u32, u32, u32), 16> = heapless::Vec::new();
        let mut sequence = 0u32;
        for bead in 0..5_000u32 {
            let roll = next();
            if roll % 3 == 0 {
                let best = (0..reference.len()).max_by_key(|&i| (reference[i].0, core::cmp::Reverse(reference[i].1)));
                let expected = best.map(|i| reference.swap_remove(i).2);
                assert_eq!(queue.pop().map(|e| e.bead), expected);
                continue;
            }
            let priority = next() % 40;
            let limit = 1 + (next() % 16) as usize;
            let pushed = queue.push_within(entry(priority, bead), limit);
            if reference.len() < limit {
                assert!(matches!(pushed, Pushed::Queued));
                reference.push((priority, sequence, bead)).unwrap();
                sequence += 1;
                continue;
            }
            let coldest = (0..reference.len()).min_by_key(|&i| (reference[i].0, core::cmp::Reverse(reference[i].1)));
            let coldest = coldest.unwrap();
            if priority > reference[coldest].0 * EVICTION_FACTOR {
                let Pushed::Evicted(evicted) = pushed else { panic!("expected an eviction") };
                assert_eq!(evicted.bead, reference[coldest].2);
                reference[coldest] = (priority, sequence, bead);
                sequence += 1;
            } else {
                assert!(matches!(pushed, Pushed::Refused(_)));
            }
        }
    }
}
