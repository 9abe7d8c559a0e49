//! The rayon adapter: compiles on rayon workers, publishes, stops cleanly.

mod support;

use std::sync::Arc;

use kiln_host::RayonJobSystem;

#[test]
fn rayon_global_pool_compiles_publishes_and_stops() {
    support::compiles_publishes_and_stops(RayonJobSystem::global(), 1);
}

#[test]
fn rayon_own_pool_runs_several_tasks_at_once() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    support::compiles_publishes_and_stops(RayonJobSystem::new(Arc::new(pool)), 3);
}
