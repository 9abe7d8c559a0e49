//! Cancel: shutdown empties the queue without compiling. Each queued bead
//! goes back to rest with a cooldown; no code changes, so the generation
//! stays (nothing in flight can hold it: the entry being cancelled was its
//! only job).

use super::Broker;
use crate::bead::BeadRef;
use crate::policy::HotnessPolicy;
use crate::state::Phase;
use crate::sync::Ordering;

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
{
    /// Cancels every queued job (shutdown): their beads return to rest with
    /// a cooldown; nothing is compiled. Returns how many were cancelled.
    pub fn cancel_queued(&self) -> usize {
        let mut cancelled = 0;
        loop {
            let popped = self.shared.with(|shared| {
                let entry = shared.queue.pop()?;
                self.queue_len.store(shared.queue.len(), Ordering::Relaxed);
                let bead = entry.bead.bead();
                let word = bead.word();
                if word.is_at(Phase::Queued, entry.generation) {
                    bead.state.store(word.at_rest());
                    bead.arm(self.policy.queue_full_cooldown().get(), 0);
                }
                Some(entry)
            });
            match popped {
                Some(entry) => {
                    cancelled += 1;
                    drop(entry);
                }
                None => return cancelled,
            }
        }
    }
}
