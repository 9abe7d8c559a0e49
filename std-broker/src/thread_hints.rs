//! What a worker thread asks of the OS scheduler so that it runs soon after
//! it is woken, without asking for more CPU than any other thread.
//!
//! Two hints, both Linux-only, both unprivileged, both about latency:
//!
//! - **Timer slack** of 1 µs (`PR_SET_TIMERSLACK`): the default 50 µs would
//!   add a fifth to the worker's shortest polls.
//! - **A short scheduler slice** ([`WORKER_SLICE`], `sched_setattr` with a
//!   custom `sched_runtime` for a normal-policy thread, Linux 6.12+ EEVDF).
//!   The slice decides how soon a woken thread may preempt a running one:
//!   with the default slice (about 3 ms on a 2-core machine) a worker woken
//!   while every core runs an interpreter thread waited up to 3 ms for a
//!   core in measured warm-up storms, while every queued bead kept being
//!   interpreted. A short slice gives the worker an earlier deadline, so
//!   it runs within tens of microseconds, and ends its turns sooner; its
//!   share of the CPU (its weight, the nice value) is unchanged. Older
//!   kernels ignore the field.
//!
//! Failures are ignored: a hint the OS refuses leaves the worker as fast as
//! it was without it.

use std::time::Duration;

/// The scheduler slice a worker asks for (Linux clamps custom slices to
/// 0.1–100 ms; this is the shortest).
pub(crate) const WORKER_SLICE: Duration = Duration::from_micros(100);

/// Applies both hints to the calling thread.
pub(crate) fn apply_to_worker() {
    tighten_timer_slack();
    request_slice(WORKER_SLICE);
}

/// Asks the kernel to wake this thread within 1 µs of a timed sleep's end.
fn tighten_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only changes
    // the calling thread's timer slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
}

/// Sets the calling thread's scheduler slice to `slice`, keeping its policy
/// and nice value. Only for the normal policies: a host that made its
/// threads real-time (inherited by ours) keeps them as they are. Returns
/// whether the kernel took the request.
pub(crate) fn request_slice(slice: Duration) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Some(mut attr) = current_attr() else {
            return false;
        };
        if attr.sched_policy != libc::SCHED_OTHER as u32 && attr.sched_policy != libc::SCHED_BATCH as u32 {
            return false;
        }
        attr.sched_runtime = slice.as_nanos() as u64;
        // SAFETY: sched_setattr(2) reads one `sched_attr` whose `size` field
        // says how many bytes it has; `attr` is a live, fully initialised
        // value of that size. pid 0 is the calling thread.
        let result = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) };
        result == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = slice;
        false
    }
}

/// The calling thread's scheduling attributes (policy, nice, slice).
#[cfg(target_os = "linux")]
pub(crate) fn current_attr() -> Option<libc::sched_attr> {
    let size = std::mem::size_of::<libc::sched_attr>() as u32;
    let mut attr = libc::sched_attr {
        size,
        sched_policy: 0,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: 0,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: sched_getattr(2) writes at most `size` bytes into `attr`, a
    // live `sched_attr` of exactly that size; pid 0 is the calling thread.
    let result = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut libc::sched_attr, size, 0) };
    (result == 0).then_some(attr)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The kernel's version as (major, minor), from uname(2).
    fn kernel() -> (u32, u32) {
        // SAFETY: uname(2) fills the struct it is given; all-zero bytes are
        // a valid `utsname` (arrays of c_char).
        let mut name: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is a live `utsname`.
        assert_eq!(unsafe { libc::uname(&mut name) }, 0);
        // SAFETY: uname NUL-terminates `release`.
        let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }.to_string_lossy().into_owned();
        let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    #[test]
    fn a_worker_slice_keeps_policy_and_nice_and_is_read_back_on_eevdf_kernels() {
        std::thread::spawn(|| {
            let before = current_attr().expect("sched_getattr");
            let took = request_slice(WORKER_SLICE);
            let after = current_attr().expect("sched_getattr");
            assert_eq!(after.sched_policy, before.sched_policy);
            assert_eq!(after.sched_nice, before.sched_nice, "the slice is a latency hint, not a priority");
            if kernel() >= (6, 12) {
                assert!(took, "Linux 6.12+ takes a custom slice from an unprivileged thread");
                assert_eq!(after.sched_runtime, WORKER_SLICE.as_nanos() as u64);
            }
        })
        .join()
        .expect("the probe thread");
    }

    #[test]
    fn a_real_time_thread_is_left_alone() {
        std::thread::spawn(|| {
            let mut attr = current_attr().expect("sched_getattr");
            attr.sched_policy = libc::SCHED_FIFO as u32;
            attr.sched_priority = 1;
            // SAFETY: as in `request_slice`.
            let made_fifo =
                unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) } == 0;
            if !made_fifo {
                return; // no privilege to make one: nothing to check here
            }
            assert!(!request_slice(WORKER_SLICE));
            assert_eq!(current_attr().expect("sched_getattr").sched_policy, libc::SCHED_FIFO as u32);
        })
        .join()
        .expect("the probe thread");
    }
}
