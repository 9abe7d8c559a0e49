//! Arbitrary operation sequences against kiln-core's `Broker` and the
//! reference model side by side (`kiln_testkit::model`). Any mismatch or
//! broken invariant panics, which libFuzzer records as a crash.
//!
//! Reproduce a crash with `cargo +nightly fuzz run broker_ops <artifact>`:
//! stderr then shows the decoded case (paste it into
//! `testkit/tests/model.rs` as a regression test) and the failing operation.

#![no_main]

use kiln_testkit::model::Case;
use libfuzzer_sys::fuzz_target;

/// Prints the whole case if its run panics, so a crash comes with a
/// reproducer written as `Op`s rather than bytes.
struct ShowOnPanic<'a>(&'a Case);

impl Drop for ShowOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("broker_ops: failing case:\n{:#?}", self.0);
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let case = Case::from_bytes(bytes);
    let _show = ShowOnPanic(&case);
    case.run();
});
