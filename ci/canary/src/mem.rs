//! The C memory functions, which `-nostdlib` leaves out: LLVM lowers copies,
//! fills and comparisons (`==` on a `str`, moving a large value) to calls
//! of `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp`, and on
//! `x86_64-unknown-linux-gnu` `compiler_builtins` does not define them (libc
//! does). Copies and fills are one `rep movsb` / `rep stosb` (fast on every
//! x86-64 with ERMS); comparisons are a byte loop. Step 0 of the canary
//! calls each one (never inlined, so it is the linked symbol that runs).

use core::arch::asm;
use core::hint::black_box;

use crate::check::Checks;

/// Copies `n` bytes from `src` to `dest`, forwards.
///
/// # Safety
///
/// 1. `src` is valid for reading and `dest` for writing `n` bytes.
/// 2. If the regions overlap, `dest` is below `src`.
unsafe fn copy_forward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: `rep movsb` copies rcx bytes from [rsi] to [rdi] upwards (the
    // direction flag is clear, as the ABI guarantees between calls); items 1
    // and 2 make every byte it reads valid and not yet overwritten.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _, options(nostack, preserves_flags));
    }
}

/// C `memcpy`.
///
/// # Safety
///
/// 1. `src` is valid for reading and `dest` for writing `n` bytes.
/// 2. The regions do not overlap.
#[inline(never)]
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: `copy_forward` 1 is item 1; 2 holds since nothing overlaps.
    unsafe { copy_forward(dest, src, n) };
    dest
}

/// C `memmove`.
///
/// # Safety
///
/// 1. `src` is valid for reading and `dest` for writing `n` bytes.
#[inline(never)]
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // `dest` is below `src`, or at least `n` bytes above it: forwards.
        // SAFETY: `copy_forward` 1 is item 1, and 2 is the branch condition.
        unsafe { copy_forward(dest, src, n) };
    } else {
        // `dest` overlaps the tail of `src` (so `n` > 0): backwards, from the
        // last byte down, then the direction flag is cleared again.
        // SAFETY: `rep movsb` with the direction flag set copies rcx bytes
        // from [rsi] to [rdi] downwards; both start at the last byte of
        // their region (item 1), so every byte is read before it is written.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack),
            );
        }
    }
    dest
}

/// C `memset`.
///
/// # Safety
///
/// 1. `dest` is valid for writing `n` bytes.
#[inline(never)]
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: `rep stosb` stores al to rcx bytes upwards from [rdi], which
    // item 1 makes writable; the direction flag is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8, options(nostack, preserves_flags));
    }
    dest
}

/// C `memcmp`.
///
/// # Safety
///
/// 1. `a` and `b` are valid for reading `n` bytes.
#[inline(never)]
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n`, so both reads are in bounds (item 1).
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// C `bcmp`: zero if the regions are equal.
///
/// # Safety
///
/// 1. `a` and `b` are valid for reading `n` bytes.
#[inline(never)]
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

type Copy = unsafe extern "C" fn(*mut u8, *const u8, usize) -> *mut u8;
type Fill = unsafe extern "C" fn(*mut u8, i32, usize) -> *mut u8;
type Compare = unsafe extern "C" fn(*const u8, *const u8, usize) -> i32;

/// Checks each function on small cases. They are called through opaque
/// pointers: LLVM takes a direct call of a function named `memmove` for the
/// C builtin and may expand it inline instead of calling the code above.
pub(crate) fn self_test(c: &mut Checks) {
    let copy = |function: Copy, mut bytes: [u8; 8], dest: usize, src: usize, n: usize| {
        assert!(dest.max(src) + n <= bytes.len());
        let base = bytes.as_mut_ptr();
        // SAFETY: `memmove` 1, `memcpy` 1: both ranges lie inside `bytes`
        // (asserted). `memcpy` 2: its one use below copies 0..3 to 5..8.
        unsafe { black_box(function)(base.add(dest), base.add(src), n) };
        bytes
    };
    c.eq(copy(memmove, *b"abcdefgh", 2, 0, 5), *b"ababcdeh", "memmove to a higher, overlapping range");
    c.eq(copy(memmove, *b"abcdefgh", 0, 3, 5), *b"defghfgh", "memmove to a lower, overlapping range");
    c.eq(copy(memmove, *b"abcdefgh", 4, 4, 0), *b"abcdefgh", "memmove of nothing");
    c.eq(copy(memcpy, *b"abcdefgh", 5, 0, 3), *b"abcdeabc", "memcpy");

    let mut filled = *b"abcdefgh";
    // SAFETY: `memset` 1: bytes 1..7 of `filled`.
    unsafe { black_box(memset as Fill)(filled.as_mut_ptr().add(1), i32::from(b'z'), 6) };
    c.eq(filled, *b"azzzzzzh", "memset");

    let compare = |function: Compare, a: &[u8; 6], b: &[u8; 6], n: usize| {
        assert!(n <= a.len());
        // SAFETY: `memcmp` 1, `bcmp` 1: `n` bytes of two 6-byte arrays.
        unsafe { black_box(function)(a.as_ptr(), b.as_ptr(), n) }
    };
    c.that(compare(memcmp, b"kiln-a", b"kiln-b", 6) < 0, "memcmp: lower first");
    c.that(compare(memcmp, b"kiln-b", b"kiln-a", 6) > 0, "memcmp: higher first");
    c.eq(compare(bcmp, b"kiln-a", b"kiln-b", 5), 0, "bcmp of equal prefixes");
    c.that(compare(bcmp, b"kiln-a", b"kiln-b", 6) != 0, "bcmp of different bytes");
}
