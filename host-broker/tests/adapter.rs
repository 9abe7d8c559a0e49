//! JobSystemPump on a job system whose tasks run only when the test says:
//! exact counts of wake-ups, spawns and coalesced wake-ups.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kiln_core::{BeadState, WakeHook};
use kiln_host::{AttachError, JobSystemPump, PumpConfig, SharedCompiler, StopTimeout};
use support::{Manual, ThreadJit, beads, broker};

#[test]
fn wake_ups_are_coalesced_and_counted() {
    let manual = Manual::default();
    let pump = JobSystemPump::new(manual.clone(), PumpConfig::new().max_in_flight(2).jobs_per_task(4));
    let broker = Arc::new(broker(1, &pump));
    pump.attach_arc(&broker, ThreadJit::default()).unwrap();
    let beads = beads(10);

    // Ten promotions: kiln-core wakes once until a pumper claims.
    for bead in beads {
        broker.on_invoke(&bead);
    }
    let stats = pump.stats();
    assert_eq!((stats.wakes, stats.spawned, stats.coalesced, stats.in_flight), (1, 1, 0, 1));
    // More wake-ups: one more task fits under max_in_flight, the rest coalesce.
    for _ in 0..5 {
        pump.wake();
    }
    let stats = pump.stats();
    assert_eq!((stats.wakes, stats.spawned, stats.coalesced, stats.in_flight), (6, 2, 4, 2));
    assert_eq!(manual.pending(), 2);

    // Task 1 runs 4 jobs, work is left: it spawns a successor (task 3) as it
    // ends. Task 2 likewise (task 4). Task 3 drains the last 2; task 4 finds
    // nothing and spawns nothing.
    assert_eq!(manual.run_all(), 4);
    let stats = pump.stats();
    assert_eq!((stats.spawned, stats.ran, stats.published, stats.in_flight, stats.peak_in_flight), (4, 10, 10, 0, 2));
    assert!(beads.iter().all(|bead| bead.state() == BeadState::Compiled(0)));
    assert_eq!(pump.stats().wakes, 6, "claims re-armed kiln-core's wake flag; nothing promoted since");
}

#[test]
fn wake_ups_before_attach_are_served_at_attach() {
    let manual = Manual::default();
    let pump = JobSystemPump::new(manual.clone(), PumpConfig::default());
    let broker = Arc::new(broker(1, &pump));
    let beads = beads(1);
    broker.on_invoke(&&beads[0]);
    assert_eq!((pump.stats().wakes, manual.pending()), (1, 0));
    assert!(!pump.is_attached());
    pump.attach_arc(&broker, ThreadJit::default()).unwrap();
    assert_eq!(manual.pending(), 1);
    manual.run_all();
    assert_eq!(beads[0].state(), BeadState::Compiled(0));
    assert_eq!(pump.attach_arc(&broker, ThreadJit::default()), Err(AttachError::AlreadyAttached));
}

#[test]
fn stop_times_out_on_tasks_that_never_run_then_refuses_wake_ups() {
    let manual = Manual::default();
    let config = PumpConfig::new().stop_timeout(Duration::from_millis(20));
    let pump = JobSystemPump::new(manual.clone(), config);
    let broker = Arc::new(broker(1, &pump));
    pump.attach_arc(&broker, ThreadJit::default()).unwrap();
    let beads = beads(2);
    broker.on_invoke(&&beads[0]);
    assert_eq!(pump.in_flight(), 1);

    let timeout: StopTimeout = pump.stop().unwrap_err();
    assert_eq!(timeout.in_flight, 1);
    assert!(!pump.is_stopped());
    pump.wake();
    assert_eq!((pump.stats().refused, pump.stats().spawned), (1, 1));

    // The late task starts after stopping began: it compiles nothing.
    manual.run_all();
    assert!(pump.is_stopped());
    assert_eq!(pump.stop(), Ok(()));
    assert_eq!(beads[0].state(), BeadState::Queued);
    assert_eq!(pump.stats().ran, 0);
    assert_eq!(broker.cancel_queued(), 1);
}

/// A host that ticks its job system itself: `stop` helps (ticks) while it
/// waits, so it ends without a timeout.
#[test]
fn stop_ticks_a_job_system_that_needs_the_waiting_thread() {
    let manual = Manual { runs_on_help: true, ..Manual::default() };
    let pump = JobSystemPump::new(manual.clone(), PumpConfig::default());
    let broker = Arc::new(broker(1, &pump));
    pump.attach_arc(&broker, ThreadJit::default()).unwrap();
    broker.on_invoke(&&beads(1)[0]);
    assert_eq!(pump.in_flight(), 1);
    assert_eq!(pump.stop(), Ok(()));
    assert!(pump.is_stopped());
}

#[test]
fn a_panicking_compile_is_a_failed_compile_and_the_task_goes_on() {
    let manual = Manual::default();
    let pump = JobSystemPump::new(manual.clone(), PumpConfig::default());
    let broker = Arc::new(broker(1, &pump));
    let jit = ThreadJit { panic_on: Some(1), ..ThreadJit::default() };
    pump.attach_arc(&broker, jit.clone()).unwrap();
    let beads = beads(3);
    for bead in beads {
        broker.on_invoke(&bead);
    }
    manual.run_all();
    let stats = pump.stats();
    assert_eq!((stats.ran, stats.published, stats.failed, stats.panicked, stats.in_flight), (3, 2, 1, 1, 0));
    assert_eq!(beads[0].state(), BeadState::Interpreted, "back to rest through the deopt policy, not stuck");
    assert_eq!(beads[0].bailout_count(), 1);
    assert!(beads[1..].iter().all(|bead| bead.state() == BeadState::Compiled(0)));
    assert_eq!(broker.stats().failures, 1);
}

#[test]
fn a_shared_compiler_serves_every_task() {
    let manual = Manual::default();
    let pump = JobSystemPump::new(manual.clone(), PumpConfig::new().max_in_flight(3).jobs_per_task(1));
    let broker: &'static _ = Box::leak(Box::new(broker(1, &pump)));
    let shared = SharedCompiler::new(ThreadJit::default());
    pump.attach(broker, shared.clone()).unwrap();
    let beads = beads(6);
    for bead in beads {
        broker.on_invoke(&bead);
        pump.wake();
    }
    manual.run_all();
    assert_eq!(shared.lock().compiled.load(Ordering::SeqCst), 6);
    assert!(beads.iter().all(|bead| bead.state() == BeadState::Compiled(0)));
    assert_eq!(pump.stats().peak_in_flight, 3);
}

#[test]
fn an_arc_broker_dropped_by_the_host_is_not_kept_alive_by_tasks() {
    let manual = Manual::default();
    let pump = JobSystemPump::new(manual.clone(), PumpConfig::default());
    let broker = Arc::new(broker(1, &pump));
    pump.attach_arc(&broker, ThreadJit::default()).unwrap();
    broker.on_invoke(&&beads(1)[0]);
    let weak = Arc::downgrade(&broker);
    drop(broker);
    assert!(weak.upgrade().is_none(), "pump → task → broker holds no strong reference");
    manual.run_all();
    assert_eq!(pump.stats().ran, 0);
}
