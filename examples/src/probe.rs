//! Back-edge probes in Cranelift code: OSR out of a *running* baseline loop
//! into a higher tier's code.
//!
//! kiln counts back-edges only where the interpreter reports them; once a
//! loop runs in Cranelift code nothing reports them, so a long call that
//! entered Cranelift code stays there. With a [`BackedgeProbe`], every loop
//! back-edge of the Cranelift code decrements a countdown (a register; no
//! memory traffic) and, every [`PROBE_EVERY`] back-edges, stores its
//! registers into a frame on its stack — the interpreter's frame layout,
//! register `i` at byte `8 * i` — and calls the host's probe with
//! `(function, loop header)`. The probe counts, asks kiln for the next tier
//! when the loop is hot, and once that code is installed returns its OSR
//! entry for the header; the Cranelift code then finishes the call there
//! (`entry(frame)`) and returns its result. The Cranelift frame stays on
//! the stack below the new code until the call returns, so the host must
//! not declare quiescence inside such a call — which a host that declares
//! it between calls never does.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, StackSlotData, StackSlotKind};
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_cranelift::BuildContext;

use crate::ir::FuncId;

/// The symbol probed Cranelift code calls.
pub const PROBE_SYMBOL: &str = "kiln_examples_backedge_probe";

/// Back-edges between two calls of the probe.
pub const PROBE_EVERY: i64 = 1_024;

/// What the probe does: given `(function, loop header)` of a running
/// Cranelift loop, return an OSR entry of higher-tier code for that header
/// (taking the frame) to leave for, or null to keep looping.
pub type ProbeFn = dyn Fn(FuncId, u32) -> *mut () + Send + Sync;

/// The host's back-edge probe (see the module docs).
pub struct BackedgeProbe(pub Box<ProbeFn>);

impl std::fmt::Debug for BackedgeProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackedgeProbe(..)")
    }
}

/// The host function behind [`PROBE_SYMBOL`].
pub(crate) extern "C" fn backedge_probe(context: *const BackedgeProbe, func: i64, site: i64) -> *mut () {
    // SAFETY: probed code passes the `&'static BackedgeProbe` it was built with.
    let probe = unsafe { &*context };
    (probe.0)(func as FuncId, site as u32)
}

/// Declares the back-edge countdown and starts it at [`PROBE_EVERY`] (call
/// in the entry block, before its jump).
pub(crate) fn declare_countdown(builder: &mut FunctionBuilder<'_>) -> Variable {
    let countdown = builder.declare_var(I64);
    let start = builder.ins().iconst(I64, PROBE_EVERY);
    builder.def_var(countdown, start);
    countdown
}

/// Emits the probe for the back-edge to `site` (call before the jump to
/// the loop header; leaves the builder in the block that makes it).
pub(crate) fn count_backedge(
    builder: &mut FunctionBuilder<'_>,
    cx: &mut BuildContext<'_>,
    probe: &'static BackedgeProbe,
    countdown: Variable,
    func: FuncId,
    site: u32,
    vars: &[Variable],
) -> Result<(), String> {
    let pointer = cx.pointer_type();
    let left = builder.use_var(countdown);
    let one = builder.ins().iconst(I64, 1);
    let left = builder.ins().isub(left, one);
    builder.def_var(countdown, left);
    let zero = builder.ins().iconst(I64, 0);
    let due = builder.ins().icmp(IntCC::Equal, left, zero);
    let (call_probe, enter, carry_on) = (builder.create_block(), builder.create_block(), builder.create_block());
    builder.set_cold_block(call_probe);
    builder.ins().brif(due, call_probe, &[], carry_on, &[]);

    // Every PROBE_EVERY back-edges: the frame to the stack, ask the host.
    builder.switch_to_block(call_probe);
    let restart = builder.ins().iconst(I64, PROBE_EVERY);
    builder.def_var(countdown, restart);
    let size = u32::try_from(8 * vars.len().max(1)).map_err(|_| "frame too large")?;
    let slot = builder.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, size, 3));
    let frame = builder.ins().stack_addr(pointer, slot, 0);
    for (index, var) in vars.iter().enumerate() {
        let value = builder.use_var(*var);
        builder.ins().store(MemFlagsData::trusted(), value, frame, (index * 8) as i32);
    }
    let target = cx.import(builder, PROBE_SYMBOL, &[pointer, I64, I64], &[pointer])?;
    let context = builder.ins().iconst(pointer, std::ptr::from_ref(probe) as i64);
    let func = builder.ins().iconst(I64, i64::from(func));
    let site = builder.ins().iconst(I64, i64::from(site));
    let call = builder.ins().call(target, &[context, func, site]);
    let entry = builder.inst_results(call)[0];
    let null = builder.ins().iconst(pointer, 0);
    let stay = builder.ins().icmp(IntCC::Equal, entry, null);
    builder.ins().brif(stay, carry_on, &[], enter, &[]);

    // The next tier's OSR entry: finish the call there.
    builder.switch_to_block(enter);
    builder.set_cold_block(enter);
    let signature = builder.import_signature(cx.signature(&[pointer], &[I64]));
    let call = builder.ins().call_indirect(signature, entry, &[frame]);
    let result = builder.inst_results(call)[0];
    builder.ins().return_(&[result]);

    builder.switch_to_block(carry_on);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    use super::*;
    use crate::interp::{Interpreter, Plain};
    use crate::ir::Program;
    use crate::jit::{call_native, config, function_def, function_def_with_probe};

    #[test]
    fn a_probed_loop_leaves_for_the_entry_its_probe_returns() {
        let program: &'static Program = Box::leak(Box::new(
            Program::compile(
                "fn sum(n) { let i = 0; let acc = 0; while i < n { acc = acc + i * 3; i = i + 1; } return acc; }",
            )
            .unwrap(),
        ));
        let backend = config().build().unwrap();
        // The "higher tier": plain code with an OSR entry at every loop header.
        let target = backend.compile_function(function_def(program, 0, true, None)).unwrap();
        static TARGET: AtomicUsize = AtomicUsize::new(0);
        static PROBES: AtomicU32 = AtomicU32::new(0);
        TARGET.store(
            target.osr_entry(u64::from(program.functions[0].loop_headers[0])).unwrap() as usize,
            Ordering::Relaxed,
        );
        let probe: &'static BackedgeProbe = Box::leak(Box::new(BackedgeProbe(Box::new(|func, site| {
            assert_eq!((func, site), (0, 2));
            // Leave on the third probe.
            match PROBES.fetch_add(1, Ordering::Relaxed) {
                2 => TARGET.load(Ordering::Relaxed) as *mut (),
                _ => std::ptr::null_mut(),
            }
        }))));
        let probed = backend.compile_function(function_def_with_probe(program, 0, false, None, Some(probe))).unwrap();
        let n = 1_000_000;
        // SAFETY: `sum` takes one argument; both units live until the end.
        let result = unsafe { call_native(probed.entry(), &[n]) };
        assert_eq!(result, Interpreter::new(program).invoke(&Plain, 0, &[n]));
        // Staying would have probed n / PROBE_EVERY = 976 times.
        assert_eq!(PROBES.load(Ordering::Relaxed), 3, "the loop left on the third probe");
    }
}
