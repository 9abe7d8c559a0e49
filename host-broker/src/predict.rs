//! Learned compile-cost prediction, per tier, scaled by function size.
//!
//! Design note. Integer fixed point (16 fractional bits, `u128` products,
//! saturating) rather than floats, so it behaves identically on thumbv6m,
//! which has no FPU; and the Jacobson/Karels mean-plus-deviation estimator
//! rather than a bare mean, because a frame pump prefers leaving a job for
//! the next frame to causing a hitch. The description is on [`CostPredictor`].

use kiln_core::MAX_TIER;

const FRACTION_BITS: u32 = 16;
const ONE: u128 = 1 << FRACTION_BITS;
const TIERS: usize = MAX_TIER as usize + 1;

/// One tier's estimate, in fixed point (ticks per size unit × 2^16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Estimate {
    mean: u64,
    deviation: u64,
    samples: u32,
}

impl Estimate {
    const fn guess(ticks_per_unit: u64) -> Self {
        Self { mean: to_fixed(ticks_per_unit), deviation: 0, samples: 0 }
    }
}

/// Predicts compile costs from measured ones: ticks per size unit, per tier.
///
/// A compile's cost is predicted as `size × (mean + k × deviation)`, where
/// `mean` and `deviation` are per-tier estimates of *ticks per size unit*,
/// kept as exponentially weighted moving averages of measured compiles —
/// the estimator TCP uses for round-trip times (Jacobson/Karels: a smoothed
/// mean plus `k` smoothed mean deviations). The deviation term is what keeps
/// a noisy compiler from overrunning frames: a frame pump would rather leave
/// a job for the next frame than cause a hitch.
///
/// - Before a tier has a sample its mean is the host's initial guess
///   (deviation 0). The first measurement replaces the guess outright and
///   sets the deviation to half the sample (TCP's initial variance), so the
///   first predictions after it are cautious.
/// - Each later sample moves the mean and the deviation toward it by
///   `1 / 2^smoothing` of the gap, rounded *up*, so an estimate reaches a
///   constant sample exactly (and never overshoots it).
/// - Everything is integer: 16 fractional bits of fixed point, products in
///   `u128`, saturating. No floats, so it runs the same on thumbv6m.
/// - Sizes of 0 count as 1. Tiers above [`MAX_TIER`] share its estimate.
///
/// Rounding is conservative: a sample is stored rounded up and a prediction
/// rounded up, so for a compiler whose cost is exactly linear in size the
/// prediction is never below the real cost once the estimate has converged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostPredictor {
    tiers: [Estimate; TIERS],
    smoothing: u8,
    deviation_weight: u8,
}

impl CostPredictor {
    /// A predictor that guesses `initial_ticks_per_unit` for every tier
    /// until it has measured one, moves `1 / 2^smoothing` of the way toward
    /// each new sample (`smoothing` is capped at 16; 0 keeps only the last
    /// sample), and adds `deviation_weight` mean deviations to its mean.
    pub const fn new(initial_ticks_per_unit: u64, smoothing: u8, deviation_weight: u8) -> Self {
        Self {
            tiers: [Estimate::guess(initial_ticks_per_unit); TIERS],
            smoothing: if smoothing > 16 { 16 } else { smoothing },
            deviation_weight,
        }
    }

    /// Replaces `tier`'s estimate by a guess of `ticks_per_unit`, as if it
    /// had never been measured.
    pub fn set_guess(&mut self, tier: u8, ticks_per_unit: u64) {
        self.tiers[index(tier)] = Estimate::guess(ticks_per_unit);
    }

    /// The predicted cost in ticks of compiling a function of `size` units
    /// at `tier`.
    pub fn predict(&self, tier: u8, size: u32) -> u64 {
        let estimate = &self.tiers[index(tier)];
        let per_unit = u128::from(estimate.mean) + u128::from(estimate.deviation) * u128::from(self.deviation_weight);
        saturate(per_unit.saturating_mul(u128::from(size.max(1))).div_ceil(ONE))
    }

    /// Learns from a compile of `size` units at `tier` that took `ticks`.
    pub fn record(&mut self, tier: u8, size: u32, ticks: u64) {
        let sample = saturate((u128::from(ticks) << FRACTION_BITS).div_ceil(u128::from(size.max(1))));
        let estimate = &mut self.tiers[index(tier)];
        if estimate.samples == 0 {
            estimate.mean = sample;
            estimate.deviation = sample.div_ceil(2);
        } else {
            let error = sample.abs_diff(estimate.mean);
            estimate.deviation = approach(estimate.deviation, error, self.smoothing);
            estimate.mean = approach(estimate.mean, sample, self.smoothing);
        }
        estimate.samples = estimate.samples.saturating_add(1);
    }

    /// The mean cost of one size unit at `tier`, in ticks (rounded up).
    pub fn ticks_per_unit(&self, tier: u8) -> u64 {
        from_fixed(self.tiers[index(tier)].mean)
    }

    /// The mean deviation of one size unit's cost at `tier`, in ticks
    /// (rounded up).
    pub fn deviation_per_unit(&self, tier: u8) -> u64 {
        from_fixed(self.tiers[index(tier)].deviation)
    }

    /// How many compiles at `tier` were measured (saturating).
    pub fn samples(&self, tier: u8) -> u32 {
        self.tiers[index(tier)].samples
    }
}

fn index(tier: u8) -> usize {
    usize::from(tier.min(MAX_TIER))
}

const fn to_fixed(ticks: u64) -> u64 {
    let fixed = (ticks as u128) << FRACTION_BITS;
    if fixed > u64::MAX as u128 { u64::MAX } else { fixed as u64 }
}

fn from_fixed(fixed: u64) -> u64 {
    saturate(u128::from(fixed).div_ceil(ONE))
}

fn saturate(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Moves `current` toward `target` by `ceil(gap / 2^shift)`: reaches a
/// constant target exactly and never overshoots it.
fn approach(current: u64, target: u64, shift: u8) -> u64 {
    let step = |gap: u64| (gap >> shift) + u64::from(gap & ((1 << shift) - 1) != 0);
    if target >= current { current + step(target - current) } else { current - step(current - target) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_until_measured_then_learns_per_tier() {
        let mut predictor = CostPredictor::new(10, 2, 0);
        assert_eq!(predictor.predict(0, 3), 30);
        assert_eq!(predictor.predict(1, 0), 10, "size 0 counts as 1");
        predictor.record(1, 4, 400);
        assert_eq!(predictor.ticks_per_unit(1), 100);
        assert_eq!(predictor.predict(1, 5), 500);
        assert_eq!(predictor.predict(0, 3), 30, "tier 0 still guesses");
        assert_eq!((predictor.samples(0), predictor.samples(1)), (0, 1));
        predictor.set_guess(1, 7);
        assert_eq!((predictor.predict(1, 2), predictor.samples(1)), (14, 0));
    }

    #[test]
    fn a_constant_cost_is_reached_exactly_from_either_side() {
        for guess in [1, 1_000] {
            let mut predictor = CostPredictor::new(guess, 3, 2);
            predictor.record(0, 1, 1_000);
            predictor.record(0, 1, 10);
            for _ in 0..400 {
                predictor.record(0, 3, 150);
            }
            assert_eq!(predictor.ticks_per_unit(0), 50);
            assert_eq!(predictor.deviation_per_unit(0), 0);
            assert_eq!(predictor.predict(0, 7), 350);
        }
    }

    #[test]
    fn linear_costs_are_never_underestimated() {
        // 10 ticks per 3 units does not divide evenly: rounding must go up.
        let mut predictor = CostPredictor::new(0, 2, 0);
        for size in [3u32, 6, 9, 300, 3] {
            let ticks = u64::from(size) * 10 / 3;
            predictor.record(0, size, ticks);
            assert!(predictor.predict(0, size) >= ticks, "size {size}");
            assert!(predictor.predict(0, size) <= ticks + 1, "size {size}");
        }
    }

    #[test]
    fn deviation_widens_predictions_for_noisy_compilers() {
        let mut steady = CostPredictor::new(0, 3, 2);
        let mut noisy = CostPredictor::new(0, 3, 2);
        for round in 0..300u64 {
            steady.record(2, 1, 100);
            noisy.record(2, 1, if round % 2 == 0 { 50 } else { 150 });
        }
        assert_eq!(steady.predict(2, 1), 100);
        assert!(noisy.predict(2, 1) >= 150, "mean plus two deviations covers the slow half");
        assert!(noisy.predict(2, 1) <= 300);
    }

    #[test]
    fn first_sample_is_cautious() {
        let mut predictor = CostPredictor::new(0, 3, 2);
        predictor.record(0, 1, 100);
        assert_eq!(predictor.predict(0, 1), 200, "mean 100 + 2 × deviation 50");
    }

    #[test]
    fn huge_values_saturate_instead_of_wrapping() {
        let mut predictor = CostPredictor::new(u64::MAX, 0, 255);
        assert_eq!(predictor.predict(MAX_TIER, u32::MAX), u64::MAX);
        predictor.record(200, 1, u64::MAX);
        assert_eq!(predictor.samples(MAX_TIER), 1, "tiers above MAX_TIER share its estimate");
        assert_eq!(predictor.predict(200, u32::MAX), u64::MAX);
    }
}
