//! The frame pump: compile work that fits between frames, and no more.
//!
//! Design note. To predict a job's cost the pump must see the job before
//! running it, and kiln-core offers no peek: it offers `claim`, and a dropped
//! `Job` is *abandoned* (its bead cools down and is promoted again later),
//! which is not "wait for the next frame". So the pump keeps claimed jobs
//! that do not fit in a bounded, const-generic buffer across frames; a held
//! job's bead stays Compiling, which is exactly what it is. Everything is
//! `&mut self` on the host's thread: no atomics, no allocation, `no_std`.
//! The user-facing description is on [`FramePump`].

use heapless::Vec;
use kiln_core::{
    BeadRef, Budget, Clock, Compiler, DynBroker, Handled, Job, JobOutcome, JobRunner, PumpReport, pump_jobs,
};

use crate::cost::{CostModel, UniformSize};
use crate::predict::CostPredictor;

/// How a [`FramePump`] decides. The time unit is the host clock's tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameConfig {
    /// A held job that was skipped in this many frames runs at the start of
    /// the next frame even if it does not fit (one such job per frame).
    /// 0 runs a job that does not fit at once, in the frame that claimed it.
    pub starve_after: u32,
    /// The predicted cost of one size unit at a tier not measured yet.
    pub initial_ticks_per_unit: u64,
    /// Each measured compile moves a tier's estimate `1 / 2^smoothing` of
    /// the way toward it (0: the last compile alone decides; capped at 16).
    pub smoothing: u8,
    /// Predictions are the mean plus this many mean deviations (0: the mean).
    pub deviation_weight: u8,
}

impl FrameConfig {
    /// Defaults around the host's first guess of ticks per size unit:
    /// a job runs anyway after 4 skipped frames, estimates move 1/8 of the
    /// way toward each sample, predictions add 2 mean deviations.
    pub const fn new(initial_ticks_per_unit: u64) -> Self {
        Self { starve_after: 4, initial_ticks_per_unit, smoothing: 3, deviation_weight: 2 }
    }

    /// The same configuration with `starve_after` set.
    pub const fn starve_after(mut self, frames: u32) -> Self {
        self.starve_after = frames;
        self
    }

    /// The same configuration with `smoothing` set.
    pub const fn smoothing(mut self, shift: u8) -> Self {
        self.smoothing = shift;
        self
    }

    /// The same configuration with `deviation_weight` set.
    pub const fn deviation_weight(mut self, weight: u8) -> Self {
        self.deviation_weight = weight;
        self
    }
}

/// What one frame's [`FramePump::pump`] did: kiln's pump report for the
/// jobs, and the frame's own figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameReport {
    /// The jobs, as every kiln pump reports them: `ran` (forced ones
    /// included) and of those `published`, `failed` and `stale`; `dropped`,
    /// jobs whose bead moved on, dropped without compiling (held ones and
    /// stale queue entries); `remaining`, jobs still in the broker's queue;
    /// `ticks`, from the start to the end of the call; `stop`, why claiming
    /// ended (`RetireFull`: the next job would replace code and the
    /// broker's retire ring is full, call `Broker::quiesce`).
    pub jobs: PumpReport,
    /// The budget this frame had, in ticks.
    pub budget: u64,
    /// Ticks spent beyond the budget (a forced or mispredicted job).
    pub overrun: u64,
    /// Jobs run by anti-starvation although they did not fit.
    pub forced: u32,
    /// Jobs that took longer than predicted.
    pub mispredicted: u32,
    /// Sum of the predictions of the jobs that ran.
    pub predicted: u64,
    /// Jobs that did not fit and wait for a later frame.
    pub skipped: u32,
    /// Jobs held for later frames when the call returned.
    pub held: u32,
}

impl FrameReport {
    /// Ticks from the start to the end of the call (`jobs.ticks`).
    pub fn spent(&self) -> u64 {
        self.jobs.ticks
    }
}

/// A claimed job waiting for a frame with room for it.
struct Held<'b, H> {
    job: Job<'b, H>,
    size: u32,
    /// Frames in which it was considered and did not run.
    skipped: u32,
}

/// The per-frame pump: compile work that fits between frames, and no more.
///
/// A game loop (or any host with a hard per-iteration deadline) calls
/// [`pump`](Self::pump) once per frame with the ticks it can spare. The pump
/// claims jobs from the broker and, *before* running one, predicts its cost
/// ([`CostPredictor`]: learned ticks per size unit for the job's tier × the
/// function's size from the host's [`CostModel`], `M`, default
/// [`UniformSize`]). A job runs only if its prediction fits the time left;
/// one that does not fit is **held** — its claimed [`Job`] kept inside the
/// pump, its bead staying Compiling — and considered again next frame.
/// Nothing is lost and nothing cools down, as dropping the job would make
/// it do.
///
/// ```text
///  pump(compiler, clock, budget):
///   1. drop held jobs whose bead moved on (invalidated, reloaded, swapped)
///   2. anti-starvation: the held job skipped in the most frames, if that is
///      ≥ starve_after, runs now whatever it costs         (report.forced)
///   3. held jobs, oldest first: run if predicted ≤ time left,
///      else count one more skipped frame                  (report.skipped)
///   4. while time is left and a hold slot is free: claim a new job; run it
///      if it fits, else hold it (skipped once)
///   every run job: compile, time it, publish through kiln-core, learn
/// ```
///
/// With predictions at or above the real costs, a frame never spends more
/// than its budget; only a forced job (at most one per frame) or a
/// mispredicted one can overrun, and the [`FrameReport`] says by how much.
///
/// `HELD` (default 8) bounds how far the pump looks past a job that does
/// not fit: jobs are only claimed while a slot is free to hold one. A held
/// job that will replace code keeps the retire-ring slot kiln-core reserved
/// for it at claim time: give the broker a `RETIRE` capacity above `HELD`.
/// Dropping the pump (or [`abandon_held`](Self::abandon_held)) abandons
/// held jobs: their beads cool down and are promoted again later, as with
/// any dropped job. Queue order among jobs not yet claimed is the broker's
/// (hotness); held jobs go first, oldest first.
///
/// Type annotations: `FramePump<'_, H>` for the defaults, or
/// `FramePump::<_, _, 16>::new(..)` for another `HELD`.
pub struct FramePump<'b, H, M = UniformSize, const HELD: usize = 8> {
    source: &'b dyn DynBroker<H>,
    costs: M,
    predictor: CostPredictor,
    starve_after: u32,
    held: Vec<Held<'b, H>, HELD>,
    frames: u64,
}

impl<H, M, const HELD: usize> core::fmt::Debug for FramePump<'_, H, M, HELD> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FramePump")
            .field("held", &self.held.len())
            .field("held_capacity", &HELD)
            .field("frames", &self.frames)
            .field("starve_after", &self.starve_after)
            .field("predictor", &self.predictor)
            .finish_non_exhaustive()
    }
}

impl<'b, H, const HELD: usize> FramePump<'b, H, UniformSize, HELD> {
    /// A frame pump over `source` (a kiln-core `Broker`) in which every
    /// function has size 1; see [`with_cost_model`](Self::with_cost_model).
    pub fn new(source: &'b dyn DynBroker<H>, config: FrameConfig) -> Self {
        const { assert!(HELD > 0, "a frame pump must be able to hold at least one job") };
        Self {
            source,
            costs: UniformSize,
            predictor: CostPredictor::new(config.initial_ticks_per_unit, config.smoothing, config.deviation_weight),
            starve_after: config.starve_after,
            held: Vec::new(),
            frames: 0,
        }
    }
}

impl<'b, H, M, const HELD: usize> FramePump<'b, H, M, HELD> {
    /// The same pump sizing functions with `costs`.
    pub fn with_cost_model<N: CostModel<H>>(self, costs: N) -> FramePump<'b, H, N, HELD> {
        FramePump {
            source: self.source,
            costs,
            predictor: self.predictor,
            starve_after: self.starve_after,
            held: self.held,
            frames: self.frames,
        }
    }

    /// The learned cost estimates.
    pub fn predictor(&self) -> &CostPredictor {
        &self.predictor
    }

    /// The learned cost estimates, to seed a tier with a better guess.
    pub fn predictor_mut(&mut self) -> &mut CostPredictor {
        &mut self.predictor
    }

    /// Jobs held for later frames.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Frames pumped so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Abandons every held job (shutdown, a level change): their beads go
    /// back to rest with a cooldown. Returns how many.
    pub fn abandon_held(&mut self) -> usize {
        let count = self.held.len();
        self.held.clear();
        count
    }
}

impl<'b, H: BeadRef, M: CostModel<H>, const HELD: usize> FramePump<'b, H, M, HELD> {
    /// Runs one frame's worth of compiles within `budget` ticks of `clock`
    /// and reports what it ran, skipped and spent. See [`FramePump`] for the
    /// order of work. `compiler` runs on the calling thread.
    pub fn pump<C: Compiler<H>>(&mut self, compiler: &mut C, clock: &dyn Clock, budget: u64) -> FrameReport {
        let started = clock.now();
        let deadline = started.saturating_add(budget);
        let left = || deadline.saturating_sub(clock.now());
        let mut report = FrameReport { budget, ..FrameReport::default() };
        self.frames += 1;

        // 1. Held jobs whose bead moved on: dropping them changes nothing
        //    (kiln-core's abandon checks the generation).
        let before = self.held.len();
        self.held.retain(|held| !held.job.is_stale());
        report.jobs.dropped = (before - self.held.len()) as u32;

        // 2. Anti-starvation: at most one job per frame runs without fitting,
        //    first, so that whatever it leaves can still be used.
        let starving = self
            .held
            .iter()
            .enumerate()
            .filter(|(_, held)| held.skipped >= self.starve_after)
            .max_by(|(i, a), (j, b)| a.skipped.cmp(&b.skipped).then(j.cmp(i)))
            .map(|(index, _)| index);
        let mut forced_one = false;
        if let Some(index) = starving {
            let held = self.held.remove(index);
            let outcome = self.run(held, compiler, clock, true, &mut report);
            report.jobs.record(outcome);
            forced_one = true;
        }

        // 3. Held jobs, oldest first.
        let mut index = 0;
        while index < self.held.len() {
            let time_left = left();
            if time_left > 0 && self.predict(&self.held[index]) <= time_left {
                let held = self.held.remove(index);
                let outcome = self.run(held, compiler, clock, false, &mut report);
                report.jobs.record(outcome);
            } else {
                let held = &mut self.held[index];
                held.skipped = held.skipped.saturating_add(1);
                report.skipped += 1;
                index += 1;
            }
        }

        // 4. New jobs through kiln's job loop, while there is time (the
        //    budget's deadline) and room to hold one that does not fit.
        let source = self.source;
        let mut claiming = Claiming { pump: self, compiler, clock, deadline, forced_one, report: &mut report };
        let claimed = pump_jobs(source, Budget::unlimited().until(clock, deadline), &mut claiming);
        report.jobs.merge(claimed);

        // The whole frame's time, not only step 4's.
        report.jobs.ticks = clock.now().saturating_sub(started);
        report.overrun = report.jobs.ticks.saturating_sub(budget);
        report.held = self.held.len() as u32;
        if report.overrun > 0 {
            debug!("kiln-host: frame overran its budget by {:?} ticks ({:?} forced)", report.overrun, report.forced);
        }
        report
    }

    fn predict(&self, held: &Held<'b, H>) -> u64 {
        self.predictor.predict(held.job.request().tier, held.size)
    }

    /// Compiles, times, publishes and learns from one job.
    fn run<C: Compiler<H>>(
        &mut self,
        held: Held<'b, H>,
        compiler: &mut C,
        clock: &dyn Clock,
        forced: bool,
        report: &mut FrameReport,
    ) -> JobOutcome {
        let predicted = self.predict(&held);
        let Held { job, size, skipped } = held;
        let tier = job.request().tier;
        let started = clock.now();
        let result = compiler.compile(&job.request());
        let ticks = clock.now().saturating_sub(started);
        // A failed compile's time says little about a successful one's.
        if result.is_ok() {
            self.predictor.record(tier, size, ticks);
        }
        let outcome = job.finish(compiler, result, Some(ticks));
        report.predicted = report.predicted.saturating_add(predicted);
        if forced {
            report.forced += 1;
            debug!("kiln-host: forced a job skipped in {:?} frames (predicted {:?} ticks)", skipped, predicted);
        }
        if ticks > predicted {
            report.mispredicted += 1;
        }
        outcome
    }
}

/// Step 4 of a frame as a [`JobRunner`]: each claimed job runs if it fits
/// (or is forced when `starve_after` is 0), else it is held.
struct Claiming<'p, 'b, 'c, H, M, C, const HELD: usize> {
    pump: &'p mut FramePump<'b, H, M, HELD>,
    compiler: &'p mut C,
    clock: &'c dyn Clock,
    deadline: u64,
    forced_one: bool,
    report: &'p mut FrameReport,
}

impl<'b, H: BeadRef, M: CostModel<H>, C: Compiler<H>, const HELD: usize> JobRunner<'b, H>
    for Claiming<'_, 'b, '_, H, M, C, HELD>
{
    fn wants_more(&mut self) -> bool {
        !self.pump.held.is_full()
    }

    fn run(&mut self, job: Job<'b, H>) -> Handled {
        let left = self.deadline.saturating_sub(self.clock.now());
        let size = self.pump.costs.size(&job.request()).max(1);
        let mut held = Held { job, size, skipped: 0 };
        if self.pump.predict(&held) <= left {
            Handled::Ran(self.pump.run(held, self.compiler, self.clock, false, self.report))
        } else if self.pump.starve_after == 0 && !self.forced_one {
            self.forced_one = true;
            Handled::Ran(self.pump.run(held, self.compiler, self.clock, true, self.report))
        } else {
            held.skipped = 1;
            self.report.skipped += 1;
            trace!("kiln-host: job of size {:?} held for a later frame", size);
            // Cannot fail: `wants_more` checked there is room.
            let _ = self.pump.held.push(held);
            Handled::Kept
        }
    }
}
