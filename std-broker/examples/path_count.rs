//! Deterministic instruction counts of kiln-std's paths, for
//! `ci/callgrind_std.sh`.
//!
//! Each path runs in an `#[inline(never)]` function named `kiln_count_*`, so
//! callgrind can count exactly one loop per run (`--toggle-collect`). Every
//! per-call loop has the same harness: the bead is read through `black_box`
//! each iteration and the result is written through `black_box`;
//! `kiln_count_harness` is that harness alone, so a count minus the harness
//! count is what the operation itself costs. The per-bead loop (`register`)
//! and the per-crossing loop (`crossing`) are counted whole.
//!
//! Loops (the argument names one; without one, all run once, uncounted):
//!
//! - `harness`: the harness alone;
//! - `beadie`, `bound`, `tiered`: a compiled bead's `on_invoke` through
//!   `Beadie`, `BackendAdapter` (`BoundBead`) and a two-tier `TieredAdapter`
//!   at its top tier;
//! - `counting`: `on_invoke` on a bead below its threshold (the call is
//!   counted and interpreted; the policy is asked once per 65,536 calls,
//!   when kiln-core's longest countdown runs out);
//! - `backedge`: `on_backedge` on a bead below its back-edge threshold
//!   (no OSR table, so the probe counts);
//! - `blacklisted`: `on_invoke` on a blacklisted bead;
//! - `waiting`: `on_invoke` on a bead whose compile is queued (no worker
//!   runs it);
//! - `osr_entry`: `Bead::osr_entry` on a bead with 8 OSR entries, the site
//!   found in the middle;
//! - `register`: `Beadie::register` ([`REGISTER`] beads, into a vector
//!   reserved beforehand);
//! - `crossing`: the call that crosses the threshold and queues the compile
//!   ([`CROSSINGS`] beads, each one call below its threshold beforehand; no
//!   worker, so no wake-up is counted);
//! - `pump`: a worker's work per job: [`CROSSINGS`] queued jobs of free
//!   compiles run by one `Beadie::pump` (pop, claim, compile, publish, the
//!   compile's events and timing), counted whole.

use std::hint::black_box;
use std::ptr;
use std::sync::Arc;

use kiln_std::{BackendAdapter, Bead, Beadie, OsrCompileResult, OsrEntry, ThresholdPolicy};

/// Calls per per-call loop.
const N: u64 = 1_000_000;
/// Beads registered by the `register` loop.
const REGISTER: usize = 100_000;
/// Threshold crossings counted by the `crossing` loop (within the default
/// queue capacity, so every one is queued).
const CROSSINGS: usize = 200;

#[path = "../tests/support/native.rs"]
mod native;

use native::{NativeBackend, idle_beadie, native_ptr, wait_for};

#[inline(never)]
fn kiln_count_harness(bead: &Arc<Bead>) {
    for _ in 0..N {
        let bead: &Arc<Bead> = black_box(bead);
        black_box(bead);
        black_box(Some(ptr::null_mut::<()>()));
    }
}

/// `Beadie::on_invoke` N times: the bead decides which path is counted.
/// `tag` keeps the three callers' bodies apart, so they are not merged into
/// one symbol (callgrind counts by name).
#[inline(always)]
fn beadie_loop(beadie: &Beadie, bead: &Arc<Bead>, tag: u8) {
    black_box(tag);
    for _ in 0..N {
        black_box(beadie.on_invoke(black_box(bead), |_| native_ptr()));
    }
}

#[inline(never)]
fn kiln_count_beadie(beadie: &Beadie, bead: &Arc<Bead>) {
    beadie_loop(beadie, bead, 1);
}

#[inline(never)]
fn kiln_count_counting(beadie: &Beadie, bead: &Arc<Bead>) {
    beadie_loop(beadie, bead, 4);
}

#[inline(never)]
fn kiln_count_backedge(beadie: &Beadie, bead: &Arc<Bead>, site: u64) {
    for _ in 0..N {
        black_box(beadie.on_backedge(black_box(bead), black_box(site), |_| OsrCompileResult {
            entry: native_ptr(),
            osr: Vec::new(),
        }));
    }
}

#[inline(never)]
fn kiln_count_blacklisted(beadie: &Beadie, bead: &Arc<Bead>) {
    beadie_loop(beadie, bead, 2);
}

#[inline(never)]
fn kiln_count_waiting(beadie: &Beadie, bead: &Arc<Bead>) {
    beadie_loop(beadie, bead, 3);
}

#[inline(never)]
fn kiln_count_bound(adapter: &BackendAdapter<NativeBackend>, bound: &kiln_std::BoundBead<NativeBackend>) {
    for _ in 0..N {
        black_box(adapter.on_invoke(black_box(bound), |_| ()));
    }
}

#[inline(never)]
fn kiln_count_tiered(adapter: &kiln_std::TieredAdapter, bound: &kiln_std::TieredBound) {
    for _ in 0..N {
        black_box(adapter.on_invoke(black_box(bound), |_, _| native_ptr()));
    }
}

#[inline(never)]
fn kiln_count_osr_entry(bead: &Arc<Bead>, site: u64) {
    for _ in 0..N {
        black_box(black_box(bead).osr_entry(black_box(site)));
    }
}

#[inline(never)]
fn kiln_count_register(beadie: &Beadie, into: &mut Vec<Arc<Bead>>) {
    for _ in 0..REGISTER {
        into.push(beadie.register(black_box(ptr::null_mut()), None));
    }
}

#[inline(never)]
fn kiln_count_crossing(beadie: &Beadie, beads: &[Arc<Bead>]) {
    for bead in beads {
        black_box(beadie.on_invoke(black_box(bead), |_| native_ptr()));
    }
}

#[inline(never)]
fn kiln_count_pump(beadie: &Beadie) -> kiln_std::PumpReport {
    beadie.pump(kiln_std::Budget::unlimited())
}

fn compiled_beadie() -> (Beadie, Arc<Bead>) {
    let beadie = Beadie::with_policy(ThresholdPolicy::new(1));
    let bead = beadie.register(ptr::null_mut(), None);
    wait_for(|| {
        beadie.on_invoke(&bead, |_| native_ptr());
        bead.compiled().is_some()
    });
    (beadie, bead)
}

fn run(path: &str) {
    match path {
        "harness" => {
            let (_beadie, bead) = compiled_beadie();
            kiln_count_harness(&bead);
        }
        "beadie" => {
            let (beadie, bead) = compiled_beadie();
            assert!(beadie.on_invoke(&bead, |_| native_ptr()).is_some());
            kiln_count_beadie(&beadie, &bead);
        }
        "bound" => {
            let adapter = BackendAdapter::with_policy(NativeBackend, ThresholdPolicy::new(1));
            let bound = adapter.register(ptr::null_mut(), None);
            wait_for(|| adapter.on_invoke(&bound, |_| ()).is_some());
            kiln_count_bound(&adapter, &bound);
        }
        "tiered" => {
            let adapter = kiln_std::TieredAdapter::new(vec![
                Box::new(ThresholdPolicy::new(1)) as Box<dyn kiln_std::HotnessPolicy>,
                Box::new(ThresholdPolicy::new(3)),
            ]);
            let bound = adapter.register(ptr::null_mut(), None);
            // The top tier is reached once a call returns code and the bead
            // has no further promotion to wait for.
            wait_for(|| {
                adapter.on_invoke(&bound, |_, _| native_ptr());
                bound.bead().kiln_bead().fast_entry().is_some()
            });
            kiln_count_tiered(&adapter, &bound);
        }
        "counting" => {
            let beadie = idle_beadie(u32::MAX);
            let bead = beadie.register(ptr::null_mut(), None);
            kiln_count_counting(&beadie, &bead);
            assert_eq!(bead.state(), kiln_std::BeadState::Interpreted);
        }
        "backedge" => {
            let beadie = idle_beadie(u32::MAX);
            let bead = beadie.register(ptr::null_mut(), None);
            kiln_count_backedge(&beadie, &bead, 64);
            assert_eq!(bead.state(), kiln_std::BeadState::Interpreted);
        }
        "blacklisted" => {
            let beadie = idle_beadie(1_000);
            let bead = beadie.register(ptr::null_mut(), None);
            bead.blacklist();
            assert!(bead.is_blacklisted());
            kiln_count_blacklisted(&beadie, &bead);
        }
        "waiting" => {
            let beadie = idle_beadie(1);
            let bead = beadie.register(ptr::null_mut(), None);
            for _ in 0..2 {
                beadie.on_invoke(&bead, |_| native_ptr());
            }
            assert_eq!(bead.state(), kiln_std::BeadState::Queued);
            kiln_count_waiting(&beadie, &bead);
            assert_eq!(bead.state(), kiln_std::BeadState::Queued);
        }
        "osr_entry" => {
            let beadie = idle_beadie(1_000);
            let bead = beadie.register(ptr::null_mut(), None);
            assert!(bead.eager_install(native_ptr()));
            let osr = (0..8u64).map(|site| OsrEntry { site: site * 16, code: native_ptr() }).collect();
            assert!(bead.swap_compiled_with_osr(native_ptr(), osr).is_some());
            assert!(bead.osr_entry(64).is_some());
            kiln_count_osr_entry(&bead, 64);
        }
        "register" => {
            let beadie = idle_beadie(1_000);
            let mut beads = Vec::with_capacity(REGISTER);
            kiln_count_register(&beadie, &mut beads);
            assert_eq!(beads.len(), REGISTER);
        }
        "crossing" => {
            let beadie = idle_beadie(2);
            let beads: Vec<_> = (0..CROSSINGS).map(|_| beadie.register(ptr::null_mut(), None)).collect();
            for bead in &beads {
                assert!(beadie.on_invoke(bead, |_| native_ptr()).is_none());
            }
            kiln_count_crossing(&beadie, &beads);
            assert!(beads.iter().all(|bead| bead.state() == kiln_std::BeadState::Queued));
        }
        "pump" => {
            let beadie = idle_beadie(1);
            let beads: Vec<_> = (0..CROSSINGS).map(|_| beadie.register(ptr::null_mut(), None)).collect();
            for bead in &beads {
                assert!(beadie.on_invoke(bead, |_| native_ptr()).is_none());
            }
            let report = kiln_count_pump(&beadie);
            assert_eq!(report.published as usize, CROSSINGS);
            assert!(beads.iter().all(|bead| bead.compiled().is_some()));
        }
        other => panic!("path_count: unknown loop `{other}`"),
    }
}

fn main() {
    const ALL: [&str; 12] = [
        "harness",
        "beadie",
        "bound",
        "tiered",
        "counting",
        "backedge",
        "blacklisted",
        "waiting",
        "osr_entry",
        "register",
        "crossing",
        "pump",
    ];
    match std::env::args().nth(1) {
        Some(path) => run(&path),
        None => ALL.into_iter().for_each(run),
    }
}
