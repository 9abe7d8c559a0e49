//! The bevy_tasks adapter: compiles on pool threads, publishes, stops cleanly.

mod support;

use std::sync::Arc;

use bevy_tasks::TaskPoolBuilder;
use kiln_host::BevyJobSystem;

#[test]
fn bevy_task_pool_compiles_publishes_and_stops() {
    let pool = TaskPoolBuilder::new().num_threads(2).build();
    support::compiles_publishes_and_stops(BevyJobSystem::new(Arc::new(pool)), 2);
}

#[test]
fn bevy_async_compute_pool_compiles_publishes_and_stops() {
    support::compiles_publishes_and_stops(BevyJobSystem::async_compute(), 1);
}
