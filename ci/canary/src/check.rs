//! Checks that end the process on the first failure.
//!
//! Checks are numbered in the order they run (the canary is deterministic:
//! one thread, no clock), and a failed check exits with its number, so each
//! check has its own exit status. The message on stderr names it too.

use core::fmt::{Debug, Write as _};

use crate::rt::{Out, exit};

/// The highest check number: statuses above it are the panic handler's.
pub(crate) const MAX_CHECKS: u8 = 250;

/// The running count of checks that passed.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    passed: u8,
}

impl Checks {
    /// Checks passed so far.
    pub(crate) fn passed(&self) -> u8 {
        self.passed
    }

    /// The next check's number (and exit status if it fails).
    fn next(&mut self) -> u8 {
        assert!(self.passed < MAX_CHECKS, "more than {MAX_CHECKS} checks: exit statuses would collide");
        self.passed + 1
    }

    /// Checks that `ok` holds; `what` says what it means.
    pub(crate) fn that(&mut self, ok: bool, what: &str) {
        let number = self.next();
        if !ok {
            let _ = writeln!(Out::stderr(), "kiln canary: check {number} failed: {what}");
            exit(number);
        }
        self.passed = number;
    }

    /// Checks that `actual == expected`.
    pub(crate) fn eq<T: PartialEq + Debug>(&mut self, actual: T, expected: T, what: &str) {
        let number = self.next();
        if actual != expected {
            let _ = writeln!(
                Out::stderr(),
                "kiln canary: check {number} failed: {what}: got {actual:?}, expected {expected:?}"
            );
            exit(number);
        }
        self.passed = number;
    }

    /// Checks that `result` is `Ok` and returns its value.
    pub(crate) fn ok<T, E: Debug>(&mut self, result: Result<T, E>, what: &str) -> T {
        let number = self.next();
        match result {
            Ok(value) => {
                self.passed = number;
                value
            }
            Err(error) => {
                let _ = writeln!(Out::stderr(), "kiln canary: check {number} failed: {what}: {error:?}");
                exit(number);
            }
        }
    }

    /// Checks that `option` is `Some` and returns its value.
    pub(crate) fn some<T>(&mut self, option: Option<T>, what: &str) -> T {
        self.ok(option.ok_or("None"), what)
    }
}
