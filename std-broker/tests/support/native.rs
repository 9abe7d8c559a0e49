//! A fixture shared by `tests/allocations.rs` and `examples/path_count.rs`
//! (included by `#[path]`): a compile that hands out one native function,
//! a backend that does the same, a broker without workers and a bounded
//! wait for a state a worker reaches.

use std::sync::Arc;
use std::time::Duration;

use kiln_std::{Bead, Beadie, BeadieConfig, JitBackend, ThresholdPolicy};

extern "C" fn native() -> i64 {
    1
}

/// The one "compiled" function every compile here returns.
pub(crate) fn native_ptr() -> *mut () {
    native as extern "C" fn() -> i64 as *mut ()
}

/// A backend whose "compile" hands out [`native_ptr`].
pub(crate) struct NativeBackend;

impl JitBackend for NativeBackend {
    type FunctionDef = ();
    type Error = std::convert::Infallible;
    fn compile(&self, _bead: &Arc<Bead>, _def: ()) -> Result<*mut (), Self::Error> {
        Ok(native_ptr())
    }
}

/// Polls `done` every millisecond for up to 10 s; panics if it never holds.
pub(crate) fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the fixture never reached the state it waits for");
}

/// A broker with no worker thread: queued jobs stay queued.
pub(crate) fn idle_beadie(threshold: u32) -> Beadie {
    Beadie::with_config(ThresholdPolicy::new(threshold), BeadieConfig { workers: 0, ..BeadieConfig::default() })
}
