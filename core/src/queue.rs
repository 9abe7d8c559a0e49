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
//!
//! The heap orders small keys (priority, sequence, slot: 12 bytes), not the
//! entries: an entry (its handle, generation, tier and kind) stays in its
//! slot from push to pop, so sifting moves 12 bytes a level, not a whole
//! entry. A pop sifts the hole left at the root down to a leaf with one
//! comparison a level and then the last key up from there (Floyd's
//! variant), since the key that fills the hole, taken from the bottom, is
//! nearly always the coldest. Measured on a 1,000-job storm queue (kiln-std,
//! callgrind), a claim went from 733 to about 430 instructions, the pop in
//! it from about 690 to 315.

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

/// The order of one queued entry: what the heap sifts.
#[derive(Clone, Copy, Debug)]
struct Key {
    priority: u32,
    sequence: u32,
    /// Where the entry waits in [`JobQueue::slots`].
    slot: u32,
}

impl Key {
    /// `true` if `self` is popped before `other`: higher priority first;
    /// among equals the older (smaller sequence, compared with wrap-around).
    #[inline(always)]
    fn outranks(&self, other: &Key) -> bool {
        self.priority > other.priority
            || (self.priority == other.priority && (self.sequence.wrapping_sub(other.sequence) as i32) < 0)
    }
}

/// The heap of keys, the entries' slots, and the sequence counter that
/// keeps equal priorities FIFO.
pub(crate) struct JobQueue<H, const CAPACITY: usize> {
    /// A binary max-heap of keys: every key outranks its children
    /// (`2i + 1`, `2i + 2`).
    heap: Vec<Key, CAPACITY>,
    /// Entries by slot; a slot is `None` while free (its index is in `free`).
    slots: Vec<Option<QueueEntry<H>>, CAPACITY>,
    /// Free slots below `slots.len()`.
    free: Vec<u32, CAPACITY>,
    next_sequence: u32,
}

impl<H, const CAPACITY: usize> JobQueue<H, CAPACITY> {
    pub(crate) const fn new() -> Self {
        const { assert!(CAPACITY > 0 && CAPACITY <= u32::MAX as usize, "the job queue needs room for one job") };
        Self { heap: Vec::new(), slots: Vec::new(), free: Vec::new(), next_sequence: 0 }
    }

    /// Queues `entry`, stamping its sequence; a full queue hands it back.
    /// Always inlined: the crossing call's push (`push_within`) is measured
    /// by ci/callgrind_std.sh, and left to itself the inliner outlined this
    /// and `store` in kiln-std's broker after an unrelated change (+23 and
    /// +31 instructions a crossing).
    #[inline(always)]
    pub(crate) fn push(&mut self, mut entry: QueueEntry<H>) -> Result<(), QueueEntry<H>> {
        if self.heap.is_full() {
            return Err(entry);
        }
        entry.sequence = self.stamp();
        let key = Key { priority: entry.priority, sequence: entry.sequence, slot: self.store(entry) };
        // Cannot fail: the heap has room (checked above).
        let _ = self.heap.push(key);
        self.sift_up(self.heap.len() - 1);
        Ok(())
    }

    /// Queues `entry` if fewer than `limit` entries wait; otherwise lets it
    /// evict the coldest entry if it is more than [`EVICTION_FACTOR`] times
    /// as hot, else hands it back.
    #[inline]
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
        entry.sequence = self.stamp();
        // The newcomer takes the evicted entry's slot and key position.
        let slot = self.heap[coldest].slot;
        self.heap[coldest] = Key { priority: entry.priority, sequence: entry.sequence, slot };
        let evicted = self.slots[slot as usize].replace(entry);
        // `coldest` is a leaf and the newcomer outranks what stood there, so
        // only the path above it can be out of order.
        self.sift_up(coldest);
        match evicted {
            Some(evicted) => Pushed::Evicted(evicted),
            // Every key's slot holds its entry; unreachable, handled anyway.
            None => Pushed::Queued,
        }
    }

    pub(crate) fn pop(&mut self) -> Option<QueueEntry<H>> {
        let last = self.heap.pop()?;
        let top = if self.heap.is_empty() {
            last
        } else {
            let top = core::mem::replace(&mut self.heap[0], last);
            self.sift_down_to_bottom();
            top
        };
        let entry = self.slots[top.slot as usize].take();
        // Cannot fail: `free` has room for every slot.
        let _ = self.free.push(top.slot);
        entry
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// The next sequence number.
    #[inline]
    fn stamp(&mut self) -> u32 {
        let sequence = self.next_sequence;
        self.next_sequence = sequence.wrapping_add(1);
        sequence
    }

    /// Puts `entry` in a free slot (the caller checked the heap has room,
    /// so a slot is free or `slots` can grow) and returns the slot. Always
    /// inlined, for the reason given at `push`.
    #[inline(always)]
    fn store(&mut self, entry: QueueEntry<H>) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                let slot = self.slots.len() as u32;
                // Cannot fail: fewer than CAPACITY entries are queued and no
                // slot is free, so fewer than CAPACITY slots exist.
                let _ = self.slots.push(Some(entry));
                slot
            }
        }
    }

    /// Index of the key that would be popped last. In a max-heap it is a
    /// leaf, and the leaves are the bottom half.
    fn coldest(&self) -> Option<usize> {
        let len = self.heap.len();
        (len / 2..len)
            .reduce(|colder, index| if self.heap[colder].outranks(&self.heap[index]) { index } else { colder })
    }

    /// Moves the key at `index` up while it outranks its parent. Keys are
    /// `Copy`: the moving key is held aside and written once, at its place.
    #[inline]
    fn sift_up(&mut self, mut index: usize) {
        let heap = self.heap.as_mut_slice();
        let moving = heap[index];
        while index > 0 {
            let parent = (index - 1) / 2;
            if !moving.outranks(&heap[parent]) {
                break;
            }
            heap[index] = heap[parent];
            index = parent;
        }
        heap[index] = moving;
    }

    /// Restores the heap after the root was replaced by the last key:
    /// moves the hole at the root down along the path of the better child
    /// to a leaf (one comparison a level), then the held-aside key up from
    /// there while it outranks its parent.
    fn sift_down_to_bottom(&mut self) {
        let heap = self.heap.as_mut_slice();
        let len = heap.len();
        let moving = heap[0];
        let mut index = 0;
        let mut child = 1;
        while child + 1 < len {
            if heap[child + 1].outranks(&heap[child]) {
                child += 1;
            }
            heap[index] = heap[child];
            index = child;
            child = 2 * index + 1;
        }
        if child + 1 == len {
            heap[index] = heap[child];
            index = child;
        }
        heap[index] = moving;
        self.sift_up(index);
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
