//! The broker's API takes beads as a host holds them: `&bead` for a plain
//! bead (no `&&bead`), the handle itself, or the older `&&bead`.

use core::ptr::NonNull;

use kiln_core::{
    Bead, BeadState, Broker, Budget, CodeHandle, CompileRequest, Compiled, Compiler, NoEvents, NoWake,
    ThresholdDeoptPolicy, ThresholdPolicy,
};

extern "C" fn native() -> i64 {
    7
}

/// Hands out `native` and counts releases.
struct Jit {
    released: usize,
}

impl<'a> Compiler<&'a Bead> for Jit {
    type Error = ();
    fn compile(&mut self, _job: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, ()> {
        let handle = CodeHandle::from_raw(1).unwrap();
        Compiled::new(native as extern "C" fn() -> i64 as *mut (), handle).map_err(|_| ())
    }
    fn release(&mut self, _code: CodeHandle) {
        self.released += 1;
    }
}

static STATIC_BEAD: Bead = Bead::new(core::ptr::null_mut());

#[test]
fn a_plain_bead_is_passed_as_a_plain_reference() {
    // Beads first: a `Broker<&'a Bead>` must not outlive them (see the
    // broker's docs on lifetimes).
    let bead = Bead::new(core::ptr::null_mut());
    let broker: Broker<&Bead, _, _> =
        Broker::new(ThresholdPolicy::new(2), ThresholdDeoptPolicy::default(), NoWake, NoEvents);
    let mut jit = Jit { released: 0 };
    assert_eq!(broker.on_invoke(&bead), None);
    assert_eq!(broker.on_invoke(&&bead), None, "the older spelling still compiles");
    broker.pump(&mut jit, Budget::unlimited());
    let entry = NonNull::new(native as extern "C" fn() -> i64 as *mut ());
    assert_eq!(broker.on_invoke(&bead), entry);
    assert_eq!(bead.state(), BeadState::Compiled(0));

    // Look-only methods take the bead the same way.
    broker.reload(&bead).unwrap();
    assert_eq!(bead.state(), BeadState::Interpreted);
    broker.invalidate(&&bead).unwrap();
    assert_eq!(broker.on_invoke(&bead), None);
}

#[test]
fn a_static_bead_and_a_handle_are_passed_as_they_are() {
    let broker: Broker<&'static Bead, _, _> =
        Broker::new(ThresholdPolicy::new(1), ThresholdDeoptPolicy::default(), NoWake, NoEvents);
    let handle: &'static Bead = &STATIC_BEAD;
    assert_eq!(broker.on_invoke(handle), None, "the handle by value");
    assert_eq!(broker.stats().promotions, 1);
    assert_eq!(broker.submit(&STATIC_BEAD, 0, kiln_core::JobKind::Invoke), Err(kiln_core::KilnError::AlreadyQueued));
    let mut jit = Jit { released: 0 };
    broker.pump(&mut jit, Budget::unlimited());
    assert!(broker.on_backedge(handle, 3).is_none(), "no OSR table was published");
    assert!(broker.on_invoke(&handle).is_some());
}
