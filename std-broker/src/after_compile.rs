//! Post-compile hooks ([`JitBackend::after_compile`](crate::JitBackend::after_compile))
//! wait here until the compile that asked for them is over.
//!
//! A backend compile runs inside kiln-core's `Compiler::compile`, which must
//! not call back into the broker that handed it the job. A backend that has
//! to (a code-memory budget evicting other beads) does it in its post-compile
//! hook, so the hook cannot run where the compile returns: the adapter's
//! compile work defers it on the pumping thread, and the pump sites run it
//! once kiln-core's pump has returned — the result published or refused, no
//! job in flight on this thread, no broker lock held.
//!
//! The list is per thread because the compile work runs on the thread that
//! pumps (kiln-std's compiler calls it synchronously); each pump site drains
//! its own thread's list, so no hook waits for another thread's pump.

use std::cell::RefCell;

/// A deferred hook. Runs on the thread that deferred it, so it need not be
/// `Send`.
type Deferred = Box<dyn FnOnce()>;

thread_local! {
    static DEFERRED: RefCell<Vec<Deferred>> = const { RefCell::new(Vec::new()) };
}

/// Queues `hook` to run at this thread's next [`run_deferred`]. Called from
/// compile work, which runs only inside a pump whose site drains the list.
pub(crate) fn defer(hook: impl FnOnce() + 'static) {
    DEFERRED.with_borrow_mut(|hooks| hooks.push(Box::new(hook)));
}

/// Runs the hooks deferred on this thread, oldest first. Call it where no
/// kiln-core compile runs on this thread and no broker lock is held: right
/// after `Broker::pump` returns. The hooks isolate their own panics (see
/// `backend`), so one hook cannot keep the others from running.
pub(crate) fn run_deferred() {
    loop {
        // Taken out before running: a hook that defers another (it compiles
        // eagerly, say) must not find the list borrowed.
        let hooks = DEFERRED.with_borrow_mut(std::mem::take);
        if hooks.is_empty() {
            return;
        }
        for hook in hooks {
            hook();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    #[test]
    fn hooks_wait_for_the_drain_and_run_once_in_order() {
        let trace = Rc::new(RefCell::new(Vec::new()));
        for step in 0..3 {
            let trace = Rc::clone(&trace);
            defer(move || trace.borrow_mut().push(step));
        }
        assert!(trace.borrow().is_empty(), "deferring runs nothing");
        run_deferred();
        assert_eq!(*trace.borrow(), [0, 1, 2]);
        run_deferred();
        assert_eq!(*trace.borrow(), [0, 1, 2], "each hook runs once");
    }

    #[test]
    fn a_hook_deferred_by_a_hook_runs_in_the_same_drain() {
        let ran = Rc::new(Cell::new(0));
        let inner = Rc::clone(&ran);
        defer(move || {
            inner.set(inner.get() + 1);
            let innermost = Rc::clone(&inner);
            defer(move || innermost.set(innermost.get() + 10));
        });
        run_deferred();
        assert_eq!(ran.get(), 11);
    }
}
