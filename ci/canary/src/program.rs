//! The program the canary "interprets", and the native code a compile hands
//! out for it.
//!
//! Each [`Function`] has an interpreted form (deliberately plodding: loops
//! of additions) and, usually, native code: an `extern "C"` function of this
//! binary, which is what a JIT would have generated. A bead names its
//! function by the function's address ([`Function::core`]). Every native
//! body differs from the others, so LLVM's function merging cannot give two
//! of them one address and the canary can tell published entries apart.
//!
//! `sum_below` also has a loop that the interpreter probes at
//! [`SUM_LOOP_SITE`]; its OSR entries ([`OSR_ENTRIES`]) resume an
//! interpreted [`LoopFrame`] natively.

use core::ptr;

use kiln_core::OsrEntry;

/// The native signature of every function.
pub(crate) type Native = extern "C" fn(i64) -> i64;

/// The native signature of an OSR entry: it takes over the interpreter's
/// frame and returns the function's result.
pub(crate) type OsrNative = extern "C" fn(&mut LoopFrame) -> i64;

/// A function of the program.
#[derive(Debug)]
pub(crate) struct Function {
    /// Its name, for messages.
    pub(crate) name: &'static str,
    /// The interpreter's version.
    pub(crate) interpret: fn(i64) -> i64,
    /// What a compile returns, or `None` if the JIT cannot compile it.
    pub(crate) native: Option<Native>,
}

impl Function {
    /// The pointer a bead stores for this function (kiln never reads it).
    pub(crate) const fn core(&'static self) -> *mut () {
        ptr::from_ref(self).cast_mut().cast()
    }

    /// The function a bead's core pointer names, if it is one of [`ALL`].
    pub(crate) fn of(core: *mut ()) -> Option<&'static Function> {
        ALL.iter().copied().find(|function| ptr::eq(function.core(), core))
    }
}

/// x², interpreted as |x| additions of |x|.
pub(crate) static SQUARE: Function = Function { name: "square", interpret: slow_square, native: Some(square) };
/// x³.
pub(crate) static CUBE: Function = Function { name: "cube", interpret: slow_cube, native: Some(cube) };
/// 3x.
pub(crate) static TRIPLE: Function = Function { name: "triple", interpret: slow_triple, native: Some(triple) };
/// 0 + 1 + … + (n − 1), the function with a loop.
pub(crate) static SUM_BELOW: Function =
    Function { name: "sum_below", interpret: slow_sum_below, native: Some(sum_below) };
/// A function the JIT refuses (its compile fails).
pub(crate) static UNJITTABLE: Function = Function { name: "unjittable", interpret: slow_triple, native: None };

/// Every function of the program.
static ALL: [&Function; 5] = [&SQUARE, &CUBE, &TRIPLE, &SUM_BELOW, &UNJITTABLE];

fn slow_square(x: i64) -> i64 {
    (0..x.abs()).fold(0, |acc, _| acc + x.abs())
}

fn slow_cube(x: i64) -> i64 {
    (0..x.abs()).fold(0, |acc, _| acc + slow_square(x)) * x.signum()
}

fn slow_triple(x: i64) -> i64 {
    x + x + x
}

fn slow_sum_below(n: i64) -> i64 {
    let mut frame = LoopFrame::new(n);
    while frame.step() {}
    frame.acc
}

extern "C" fn square(x: i64) -> i64 {
    x.wrapping_mul(x)
}

/// The code a host swaps in for `square` (a "better tier"): same results
/// in range, different code.
pub(crate) extern "C" fn square_saturating(x: i64) -> i64 {
    x.saturating_mul(x)
}

extern "C" fn cube(x: i64) -> i64 {
    x.wrapping_mul(x).wrapping_mul(x)
}

extern "C" fn triple(x: i64) -> i64 {
    x.wrapping_mul(3)
}

extern "C" fn sum_below(n: i64) -> i64 {
    if n <= 0 { 0 } else { n.wrapping_mul(n - 1) / 2 }
}

/// The loop site of `sum_below` (a bytecode offset, say).
pub(crate) const SUM_LOOP_SITE: u64 = 16;

/// The interpreter's frame of `sum_below`, which an OSR entry takes over.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct LoopFrame {
    /// The loop counter.
    pub(crate) i: i64,
    /// The bound.
    pub(crate) n: i64,
    /// The sum so far.
    pub(crate) acc: i64,
    /// The `i` at which native code took over (-1: never).
    pub(crate) resumed_at: i64,
}

impl LoopFrame {
    /// A frame at the loop's start.
    pub(crate) fn new(n: i64) -> Self {
        Self { i: 0, n, acc: 0, resumed_at: -1 }
    }

    /// One interpreted iteration; false once the loop is done.
    pub(crate) fn step(&mut self) -> bool {
        if self.i >= self.n {
            return false;
        }
        self.acc += self.i;
        self.i += 1;
        true
    }
}

/// OSR into `sum_below`'s loop: finishes it natively.
extern "C" fn resume_sum_below(frame: &mut LoopFrame) -> i64 {
    frame.resumed_at = frame.i;
    let (i, n) = (frame.i, frame.n);
    if i < n {
        // Sum of i..n.
        frame.acc += sum_below(n) - sum_below(i);
        frame.i = n;
    }
    frame.acc
}

/// Entries at other sites, so the table needs a real search. They are
/// never entered.
extern "C" fn resume_prologue(frame: &mut LoopFrame) -> i64 {
    frame.resumed_at = -2;
    frame.n
}

extern "C" fn resume_epilogue(frame: &mut LoopFrame) -> i64 {
    frame.resumed_at = -3;
    frame.acc ^ frame.i
}

/// The OSR entries compiled with `sum_below`, sorted by site.
pub(crate) static OSR_ENTRIES: [OsrEntry; 3] = [
    OsrEntry { site: 8, code: resume_prologue as OsrNative as *mut () },
    OsrEntry { site: SUM_LOOP_SITE, code: resume_sum_below as OsrNative as *mut () },
    OsrEntry { site: 40, code: resume_epilogue as OsrNative as *mut () },
];

/// Not a valid table: sites out of order.
pub(crate) static UNSORTED_OSR_ENTRIES: [OsrEntry; 2] = [
    OsrEntry { site: 40, code: resume_epilogue as OsrNative as *mut () },
    OsrEntry { site: 8, code: resume_prologue as OsrNative as *mut () },
];
