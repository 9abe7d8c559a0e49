//! Arbitrary operation sequences against kiln-core's `Broker` and the
//! reference model side by side (`kiln_testkit::model`). Any mismatch or
//! broken invariant panics, which libFuzzer records as a crash.
//!
//! Reproduce a crash with `cargo +nightly fuzz run broker_ops <artifact>`:
//! stderr then shows the decoded case (paste it into
//! `testkit/tests/model.rs` as a regression test; run there, the failing
//! operation's index is printed too).

#![no_main]

use std::cell::RefCell;
use std::sync::Once;

use kiln_testkit::model::Case;
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// The input being run, for the panic hook (copying bytes is cheaper
    /// than formatting every case).
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// libFuzzer's panic hook aborts the process inside the hook, so no
/// destructor runs after a panic: print the failing case from a hook of our
/// own, chained in front of it.
fn show_case_on_panic() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let libfuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let case = INPUT.with(|input| input.try_borrow().map(|bytes| Case::from_bytes(&bytes)));
            match case {
                Ok(case) => eprintln!("broker_ops: failing case:\n{case:#?}"),
                Err(_) => eprintln!("broker_ops: failing case not available"),
            }
            libfuzzer_hook(info);
        }));
    });
}

fuzz_target!(|bytes: &[u8]| {
    show_case_on_panic();
    INPUT.with(|input| {
        let mut input = input.borrow_mut();
        input.clear();
        input.extend_from_slice(bytes);
    });
    Case::from_bytes(bytes).run();
});
