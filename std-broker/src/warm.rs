//! Warm start: last run's profile, applied to this run's functions before
//! their first call.
//!
//! For each registered function whose [`ProfileKey`] matches an entry
//! (both halves: a changed function's `code_hash` differs and its entry
//! counts for nothing), the profile is a hint of two kinds:
//!
//! - **compile early**: functions that reached a compiled tier are queued
//!   now, hottest first (equal queue priorities keep their order), with
//!   their attached compile factory; the workers compile them while the
//!   host loads, before their first call;
//! - **don't bother**: functions that ended last run blacklisted start
//!   blacklisted, for [`WarmStartConfig::blacklist_for`] calls, after which
//!   they may be compiled again whatever the deopt policy says (the hint
//!   may be stale).
//!
//! Nothing else is taken from the file: counts are not restored and tiers
//! are not trusted (each compile goes through the normal path), so a wrong
//! profile costs some compile time and no correctness.

use std::num::NonZeroU32;
use std::sync::Arc;

use crate::backend::{BackendAdapter, BoundBead, JitBackend, attached_work};
use crate::bead::Bead;
use crate::profile::{Profile, ProfileEntry, ProfileKey};
use crate::{CoreHandle, HotnessPolicy, SubmitResult};

/// How a warm start uses a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmStartConfig {
    /// Calls a function blacklisted last run stays blacklisted this run.
    pub blacklist_for: NonZeroU32,
    /// At most this many compiles are queued (the hottest).
    pub max_compiles: usize,
}

impl Default for WarmStartConfig {
    fn default() -> Self {
        Self { blacklist_for: NonZeroU32::new(10_000).unwrap_or(NonZeroU32::MIN), max_compiles: usize::MAX }
    }
}

/// What a warm start did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmStart {
    /// Registered keyed functions whose key matched an entry.
    pub matched: usize,
    /// Compiles queued, hottest first.
    pub queued: usize,
    /// Functions started blacklisted.
    pub blacklisted: usize,
    /// Hot entries not queued (no attached factory, already compiled or
    /// queued, queue full, or past `max_compiles`).
    pub skipped: usize,
}

/// The registered functions `profile` has a matching entry for, with it.
fn matches(beads: impl IntoIterator<Item = Arc<Bead>>, profile: &Profile) -> Vec<(Arc<Bead>, &ProfileEntry)> {
    let entries: std::collections::HashMap<ProfileKey, &ProfileEntry> =
        profile.entries().iter().map(|entry| (entry.key, entry)).collect();
    let mut matched: Vec<_> = beads
        .into_iter()
        .filter_map(|bead| {
            let entry = bead.profile_key().and_then(|key| entries.get(&key).copied())?;
            Some((bead, entry))
        })
        .collect();
    // Hottest first; the key breaks ties so the order is the same each run.
    matched.sort_by(|(_, a), (_, b)| b.hotness().cmp(&a.hotness()).then(a.key.cmp(&b.key)));
    matched
}

impl<B: JitBackend, P: HotnessPolicy> BackendAdapter<B, P> {
    /// [`register_with`](Self::register_with), giving the function its
    /// [`ProfileKey`] too, so profiles cover it.
    pub fn register_keyed<F, E>(&self, name: &str, key: ProfileKey, core: CoreHandle, factory: F) -> BoundBead<B>
    where
        F: Fn(&Arc<Bead>) -> Result<B::FunctionDef, E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        let bound = self.register_with(name, core, factory);
        bound.bead.set_profile_key(key);
        bound
    }

    /// Applies `profile` to the registered functions (see the module docs)
    /// with the default [`WarmStartConfig`]. Register the functions first;
    /// call before their first calls, e.g. while the host loads.
    pub fn warm_start(&self, profile: &Profile) -> WarmStart {
        self.warm_start_with(profile, WarmStartConfig::default())
    }

    /// [`warm_start`](Self::warm_start) with `config`.
    pub fn warm_start_with(&self, profile: &Profile, config: WarmStartConfig) -> WarmStart {
        let mut beads = Vec::new();
        self.beadie().walk(|bead| beads.push(Arc::clone(bead)));
        let mut report = WarmStart::default();
        for (bead, entry) in matches(beads, profile) {
            report.matched += 1;
            if entry.blacklisted {
                if bead.domain.broker.blacklist_for(&bead.kiln_bead, config.blacklist_for) == Ok(true) {
                    report.blacklisted += 1;
                }
                continue;
            }
            if entry.tier_reached.is_none() {
                continue;
            }
            let has_factory = bead.read_extras(|extras| extras.factory.is_some()).unwrap_or(false);
            let queued = report.queued < config.max_compiles
                && has_factory
                && crate::promote::submit(&bead, attached_work(self.backend())) == SubmitResult::Accepted;
            if queued {
                report.queued += 1;
            } else {
                report.skipped += 1;
            }
        }
        report
    }
}
