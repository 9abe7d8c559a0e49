//! Test doubles shared by kiln-host's integration tests: a clock advanced by
//! hand and a compiler whose compiles cost known ticks on it.
#![allow(dead_code, unreachable_pub)]

use std::cell::Cell;
use std::ptr;

use kiln_core::{Bead, CodeHandle, CompileRequest, Compiled, Compiler};
use kiln_host::Clock;

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct FakeClock(Cell<u64>);

impl FakeClock {
    pub fn advance(&self, ticks: u64) {
        self.0.set(self.0.get() + ticks);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> u64 {
        self.0.get()
    }
}

/// A bead whose function has `size` units (kept in its core handle).
pub fn bead_of_size(size: usize) -> Bead {
    Bead::new(ptr::without_provenance_mut(size))
}

/// The size a bead was made with.
pub fn size_of(bead: &Bead) -> u32 {
    bead.core_handle() as usize as u32
}

/// The size hook the frame pump is given.
pub fn sizes(request: &CompileRequest<'_, &Bead>) -> u32 {
    size_of(request.bead)
}

/// Entry `0x1000 × n` with handle `n`.
pub fn code(n: usize) -> Compiled {
    Compiled::new(ptr::without_provenance_mut(0x1000 * n), CodeHandle::from_raw(n).unwrap()).unwrap()
}

/// A compiler whose compile of a function of size `s` at tier `t` advances
/// the clock by `per_unit[t] × s` ticks.
pub struct CostlyJit<'c> {
    pub clock: &'c FakeClock,
    pub per_unit: [u64; 2],
    /// (size, tier) of every compile, in order.
    pub compiled: Vec<(u32, u8)>,
    pub released: Vec<usize>,
}

impl<'c> CostlyJit<'c> {
    pub fn new(clock: &'c FakeClock, per_unit: [u64; 2]) -> Self {
        Self { clock, per_unit, compiled: Vec::new(), released: Vec::new() }
    }
}

impl<'a> Compiler<&'a Bead> for CostlyJit<'_> {
    type Error = ();

    fn compile(&mut self, request: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, ()> {
        let size = size_of(request.bead);
        self.clock.advance(self.per_unit[usize::from(request.tier)] * u64::from(size));
        self.compiled.push((size, request.tier));
        Ok(code(self.compiled.len()))
    }

    fn release(&mut self, code: CodeHandle) {
        self.released.push(code.get());
    }
}

/// A tiny xorshift generator: deterministic "random" workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
