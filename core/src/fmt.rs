//! Logging shim: one set of macros for the whole crate.
//!
//! The macros forward to `log` (feature `log`), to `defmt` (feature `defmt`)
//! or to nothing. With both features on, `log` wins, so `--all-features`
//! builds and host tests never need a defmt global logger. Format strings
//! use `{:?}` only, which both back-ends understand. The "nothing" arm still
//! touches its arguments so that disabled logging leaves no unused warnings.
#![allow(unused_macros)]

#[cfg(feature = "log")]
macro_rules! log_at {
    ($level:ident, $($arg:tt)+) => { ::log::$level!(target: "kiln", $($arg)+) };
}

#[cfg(all(feature = "defmt", not(feature = "log")))]
macro_rules! log_at {
    ($level:ident, $($arg:tt)+) => { ::defmt::$level!($($arg)+) };
}

#[cfg(not(any(feature = "log", feature = "defmt")))]
macro_rules! log_at {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        $( let _ = &$arg; )*
    }};
}

macro_rules! trace {
    ($($arg:tt)+) => { log_at!(trace, $($arg)+) };
}

macro_rules! debug {
    ($($arg:tt)+) => { log_at!(debug, $($arg)+) };
}

macro_rules! warn {
    ($($arg:tt)+) => { log_at!(warn, $($arg)+) };
}
