//! The freestanding runtime: what std and libc would otherwise provide.
//!
//! - [`_start`], the process entry (no `crt1.o`): aligns the stack and calls
//!   [`crate::run`], whose result becomes the exit status.
//! - [`exit`] and [`Out`] (stdout/stderr), as raw Linux system calls.
//! - The panic handler: prints the panic and exits with [`PANIC_EXIT`].
//! - The `critical-section` implementation kiln-core's lock runs on: the
//!   canary has one thread and installs no signal handlers, so nothing can
//!   interrupt a critical section and entering one needs no instruction.
//!   It counts entries, so the canary can check the lock really went
//!   through it.

use core::arch::{asm, naked_asm};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Exit status of a panic (checks use 1..=[`crate::check::MAX_CHECKS`]).
pub(crate) const PANIC_EXIT: u8 = 255;

const SYS_WRITE: usize = 1;
const SYS_EXIT_GROUP: usize = 231;
const EINTR: isize = 4;

/// The process entry point.
///
/// The kernel enters with `rsp` pointing at `argc` and 16-byte aligned, not
/// with a return address pushed as a Rust function expects, so this is a
/// naked function: it clears the frame pointer (the outermost frame for a
/// debugger), re-aligns the stack as the SysV ABI wants before a `call`, and
/// calls [`entry`], which never returns.
///
/// # Safety
///
/// 1. Only the kernel calls this, once, as the ELF entry point.
#[unsafe(naked)]
// SAFETY: no other symbol of this binary is named `_start` (it is linked
// with -nostartfiles, so crt1.o does not bring one).
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn _start() -> ! {
    naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym entry,
    )
}

/// Runs the canary and exits with its status.
extern "C" fn entry() -> ! {
    exit(crate::run())
}

/// Ends the process with `status`.
pub(crate) fn exit(status: u8) -> ! {
    // SAFETY: exit_group(2) takes one integer, reads and writes no memory
    // of this process, and does not return.
    unsafe {
        asm!("syscall", in("rax") SYS_EXIT_GROUP, in("rdi") usize::from(status), options(noreturn, nostack));
    }
}

/// Writes all of `bytes` to file descriptor `fd`, as far as the kernel lets
/// it (errors other than EINTR drop the rest: output is diagnostics only).
fn write_all(fd: usize, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let written: isize;
        // SAFETY: write(2) only reads `bytes.len()` bytes at `bytes.as_ptr()`,
        // a live slice (hence `readonly`); `syscall` clobbers rcx and r11,
        // declared as outputs.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_WRITE as isize => written,
                in("rdi") fd,
                in("rsi") bytes.as_ptr(),
                in("rdx") bytes.len(),
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, readonly),
            );
        }
        match written {
            n if n > 0 => bytes = &bytes[n as usize..],
            n if n == -EINTR => {}
            _ => return,
        }
    }
}

/// Standard output or standard error, for `write!`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out(usize);

impl Out {
    /// File descriptor 1.
    pub(crate) const fn stdout() -> Self {
        Self(1)
    }

    /// File descriptor 2.
    pub(crate) const fn stderr() -> Self {
        Self(2)
    }
}

impl fmt::Write for Out {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_all(self.0, text.as_bytes());
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use fmt::Write as _;
    let _ = writeln!(Out::stderr(), "kiln canary: {info}");
    exit(PANIC_EXIT)
}

/// The unwinder's personality routine, which nothing calls.
///
/// The precompiled `core` is built for `panic = "unwind"`, so its unwind
/// tables name `rust_eh_personality`; std would define it. This binary
/// aborts on panic and links no unwinder, so nothing ever unwinds and the
/// routine is never called: the stub only satisfies the linker (fat LTO
/// would drop the reference instead, and with it the symbols `ci/canary.sh`
/// inspects). Should it ever run, it ends the process like a panic.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {
    exit(PANIC_EXIT)
}

/// Whether a critical section is entered (nesting is allowed: the outer
/// one's `release` clears it).
static INSIDE: AtomicBool = AtomicBool::new(false);
/// Critical sections entered (outermost and nested).
static ENTERED: AtomicU32 = AtomicU32::new(0);

/// Critical sections entered so far, nested ones included.
pub(crate) fn critical_sections_entered() -> u32 {
    ENTERED.load(Ordering::Relaxed)
}

/// Whether the program is inside a critical section now.
pub(crate) fn in_critical_section() -> bool {
    INSIDE.load(Ordering::Relaxed)
}

/// The canary's `critical-section` implementation: single thread, no
/// interrupts, so there is nothing to mask; it only keeps count.
struct SingleThread;

critical_section::set_impl!(SingleThread);

// SAFETY: with one thread and no signal handlers, no code can run between
// `acquire` and `release` other than the critical section's own, which is
// all the `Impl` contract asks; nesting is handled by the restore state
// (the previous `INSIDE`), as the contract requires.
unsafe impl critical_section::Impl for SingleThread {
    unsafe fn acquire() -> critical_section::RawRestoreState {
        ENTERED.fetch_add(1, Ordering::Relaxed);
        INSIDE.swap(true, Ordering::Relaxed)
    }

    unsafe fn release(was_inside: critical_section::RawRestoreState) {
        INSIDE.store(was_inside, Ordering::Relaxed);
    }
}
