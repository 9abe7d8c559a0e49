//! The JIT tier: the same IR the interpreter runs, translated to Cranelift
//! IR as a [`FunctionDef`] for kiln-cranelift.
//!
//! - Every frame register is a Cranelift variable; every jump target and
//!   every instruction after a jump or return starts a block.
//! - A call to the function itself is a direct native call (`call_self`):
//!   compiled `fib` recurses without going back through the interpreter or
//!   kiln. Calls to other functions go through a host [`CallOut`] (which
//!   dispatches through kiln again), if the runtime gives one.
//! - Each loop header of the IR can get an OSR entry taking a pointer to
//!   the interpreter's frame: it loads every register and jumps to the
//!   header, so a running interpreted loop continues natively.
//!
//! Native signatures: `extern "C" fn(i64, ..) -> i64` (one `i64` per
//! parameter) for the normal entry, `extern "C" fn(*const i64) -> i64` for
//! OSR entries.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{Block, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_cranelift::{BuildContext, CraneliftConfig, Entry, FunctionDef};

use crate::ast::BinOp;
use crate::ir::{FuncId, Inst, MAX_PARAMS, Program};

/// The symbol generated code calls for calls to other functions.
pub const CALL_OUT_SYMBOL: &str = "kiln_examples_call_out";

/// A runtime's call dispatcher: runs `callee(args)` (through kiln, then
/// natively or interpreted).
pub type Dispatch = dyn Fn(FuncId, &[i64]) -> i64 + Send + Sync;

/// How generated code calls a function other than itself: the runtime's
/// dispatcher.
pub struct CallOut(pub Box<Dispatch>);

impl std::fmt::Debug for CallOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallOut(..)")
    }
}

/// The host function behind [`CALL_OUT_SYMBOL`].
pub(crate) extern "C" fn call_out(context: *const CallOut, callee: i64, args: *const i64, argc: i64) -> i64 {
    // SAFETY: generated code passes the `&'static CallOut` it was built
    // with, and `argc` initialised values in its stack slot at `args`.
    let (call_out, args) = unsafe { (&*context, std::slice::from_raw_parts(args, argc as usize)) };
    (call_out.0)(callee as FuncId, args)
}

/// A Cranelift configuration for this language: a baseline tier, so
/// `opt_level=none` (register allocation still runs). For this IR the
/// optimiser buys nothing measurable — native `fib(20)` × 500 takes 23.3 ms
/// either way — while compiles take ~20% longer, and compile latency is
/// what a tiered run pays for (it interprets until the code is ready).
/// The call-out and back-edge probe symbols are registered.
pub fn config() -> CraneliftConfig {
    CraneliftConfig::new()
        .opt_level("none")
        .symbol(CALL_OUT_SYMBOL, call_out as *const u8)
        .symbol(crate::probe::PROBE_SYMBOL, crate::probe::backedge_probe as *const u8)
}

/// The definition of `func`: its normal entry and, if `osr`, one OSR
/// entry per loop header. Calls to other functions need `call_out`; without
/// one such a function fails to compile (and stays interpreted).
pub fn function_def(
    program: &'static Program,
    func: FuncId,
    osr: bool,
    call_out: Option<&'static CallOut>,
) -> FunctionDef {
    function_def_with_probe(program, func, osr, call_out, None)
}

/// [`function_def`] whose loops, with a `probe`, count their back-edges
/// and call it out (see [`probe`](crate::probe)): OSR out of this code into
/// a higher tier's.
pub fn function_def_with_probe(
    program: &'static Program,
    func: FuncId,
    osr: bool,
    call_out: Option<&'static CallOut>,
    probe: Option<&'static crate::probe::BackedgeProbe>,
) -> FunctionDef {
    let function = &program.functions[func as usize];
    let mut def = FunctionDef::new(function.name.clone(), &vec![I64; function.params], &[I64], move |builder, cx| {
        translate(program, func, call_out, probe, builder, cx)
    });
    if osr {
        for &site in &function.loop_headers {
            def = def.osr_entry(u64::from(site), &[cranelift_codegen::ir::types::I64]);
        }
    }
    def
}

fn translate(
    program: &Program,
    func: FuncId,
    call_out: Option<&'static CallOut>,
    probe: Option<&'static crate::probe::BackedgeProbe>,
    builder: &mut FunctionBuilder<'_>,
    cx: &mut BuildContext<'_>,
) -> Result<(), String> {
    let function = &program.functions[func as usize];
    let code = &function.code;
    let vars: Vec<Variable> = (0..function.slots).map(|_| builder.declare_var(I64)).collect();

    // Leaders: the start, every jump target, every instruction after a
    // jump, a branch or a return.
    let mut blocks: Vec<Option<Block>> = vec![None; code.len() + 1];
    let entry = builder.create_block();
    builder.append_block_params_for_function_params(entry);
    let mut lead = |at: usize, builder: &mut FunctionBuilder<'_>| {
        if at < code.len() && blocks[at].is_none() {
            blocks[at] = Some(builder.create_block());
        }
    };
    lead(0, builder);
    for (pc, inst) in code.iter().enumerate() {
        match *inst {
            Inst::Jump { target } | Inst::JumpIfZero { target, .. } => {
                if target as usize >= code.len() {
                    return Err(format!("jump to {target} past the end of `{}`", function.name));
                }
                lead(target as usize, builder);
                lead(pc + 1, builder);
            }
            Inst::Return { .. } => lead(pc + 1, builder),
            _ => {}
        }
    }
    let block_at = |at: usize| blocks[at].ok_or_else(|| format!("no block at {at}"));

    builder.switch_to_block(entry);
    let countdown = probe.map(|_| crate::probe::declare_countdown(builder));
    let params = builder.block_params(entry).to_vec();
    match cx.entry() {
        Entry::Normal => {
            let zero = builder.ins().iconst(I64, 0);
            for (slot, var) in vars.iter().enumerate() {
                builder.def_var(*var, params.get(slot).copied().unwrap_or(zero));
            }
            builder.ins().jump(block_at(0)?, &[]);
        }
        Entry::Osr { site } => {
            // The interpreter's frame at the loop header: every register.
            for (slot, var) in vars.iter().enumerate() {
                let value = builder.ins().load(I64, MemFlagsData::trusted(), params[0], (slot * 8) as i32);
                builder.def_var(*var, value);
            }
            builder.ins().jump(block_at(site as usize)?, &[]);
        }
    }

    let mut self_ref: Option<FuncRef> = None;
    let mut filled = true;
    for (pc, inst) in code.iter().enumerate() {
        if let Some(block) = blocks[pc] {
            if !filled {
                builder.ins().jump(block, &[]);
            }
            builder.switch_to_block(block);
            filled = false;
        }
        let var = |reg: u16| vars[reg as usize];
        match *inst {
            Inst::Const { dst, value } => {
                let value = builder.ins().iconst(I64, value);
                builder.def_var(var(dst), value);
            }
            Inst::Move { dst, src } => {
                let value = builder.use_var(var(src));
                builder.def_var(var(dst), value);
            }
            Inst::Binary { op, dst, lhs, rhs } => {
                let (lhs, rhs) = (builder.use_var(var(lhs)), builder.use_var(var(rhs)));
                let value = binary(builder, op, lhs, rhs);
                builder.def_var(var(dst), value);
            }
            Inst::Jump { target } => {
                if let (Some(probe), Some(countdown)) = (probe, countdown)
                    && target as usize <= pc
                {
                    crate::probe::count_backedge(builder, cx, probe, countdown, func, target, &vars)?;
                }
                builder.ins().jump(block_at(target as usize)?, &[]);
                filled = true;
            }
            Inst::JumpIfZero { cond, target } => {
                let cond = builder.use_var(var(cond));
                builder.ins().brif(cond, block_at(pc + 1)?, &[], block_at(target as usize)?, &[]);
                filled = true;
            }
            Inst::Call { dst, callee, args, argc } => {
                let argv: Vec<Value> = (0..argc as u16).map(|i| builder.use_var(var(args + i))).collect();
                let value = if callee == func {
                    let fib = *self_ref.get_or_insert_with(|| cx.call_self(builder));
                    let call = builder.ins().call(fib, &argv);
                    builder.inst_results(call)[0]
                } else {
                    let call_out = call_out.ok_or_else(|| {
                        format!("`{}` calls another function and no call-out was given", function.name)
                    })?;
                    call_other(builder, cx, call_out, callee, &argv)?
                };
                builder.def_var(var(dst), value);
            }
            Inst::Return { src } => {
                let value = builder.use_var(var(src));
                builder.ins().return_(&[value]);
                filled = true;
            }
        }
    }
    if !filled {
        return Err(format!("`{}` falls off its end", function.name));
    }
    builder.seal_all_blocks();
    Ok(())
}

fn binary(builder: &mut FunctionBuilder<'_>, op: BinOp, lhs: Value, rhs: Value) -> Value {
    let cc = match op {
        BinOp::Add => return builder.ins().iadd(lhs, rhs),
        BinOp::Sub => return builder.ins().isub(lhs, rhs),
        BinOp::Mul => return builder.ins().imul(lhs, rhs),
        BinOp::Lt => IntCC::SignedLessThan,
        BinOp::Le => IntCC::SignedLessThanOrEqual,
        BinOp::Gt => IntCC::SignedGreaterThan,
        BinOp::Ge => IntCC::SignedGreaterThanOrEqual,
        BinOp::Eq => IntCC::Equal,
        BinOp::Ne => IntCC::NotEqual,
    };
    let flag = builder.ins().icmp(cc, lhs, rhs);
    builder.ins().uextend(I64, flag)
}

/// `call_out(context, callee, args, argc)` with the arguments in a stack slot.
fn call_other(
    builder: &mut FunctionBuilder<'_>,
    cx: &mut BuildContext<'_>,
    call_out: &'static CallOut,
    callee: FuncId,
    args: &[Value],
) -> Result<Value, String> {
    let pointer = cx.pointer_type();
    let slot =
        builder.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (8 * MAX_PARAMS) as u32, 3));
    let base = builder.ins().stack_addr(pointer, slot, 0);
    for (index, arg) in args.iter().enumerate() {
        builder.ins().store(MemFlagsData::trusted(), *arg, base, (index * 8) as i32);
    }
    let target = cx.import(builder, CALL_OUT_SYMBOL, &[pointer, I64, pointer, I64], &[I64])?;
    let context = builder.ins().iconst(pointer, std::ptr::from_ref(call_out) as i64);
    let callee = builder.ins().iconst(I64, i64::from(callee));
    let argc = builder.ins().iconst(I64, args.len() as i64);
    let call = builder.ins().call(target, &[context, callee, base, argc]);
    Ok(builder.inst_results(call)[0])
}

/// Calls a normal entry with `args`.
///
/// # Safety
///
/// `code` is live code from [`function_def`] for a function of `args.len()`
/// parameters.
#[inline(always)]
pub unsafe fn call_native(code: *mut (), args: &[i64]) -> i64 {
    // SAFETY: by this function's contract, `code` has exactly this signature.
    unsafe {
        match *args {
            [] => std::mem::transmute::<*mut (), extern "C" fn() -> i64>(code)(),
            [a] => std::mem::transmute::<*mut (), extern "C" fn(i64) -> i64>(code)(a),
            [a, b] => std::mem::transmute::<*mut (), extern "C" fn(i64, i64) -> i64>(code)(a, b),
            [a, b, c] => std::mem::transmute::<*mut (), extern "C" fn(i64, i64, i64) -> i64>(code)(a, b, c),
            [a, b, c, d] => std::mem::transmute::<*mut (), extern "C" fn(i64, i64, i64, i64) -> i64>(code)(a, b, c, d),
            _ => unreachable!("functions take at most {MAX_PARAMS} parameters"),
        }
    }
}

/// Finishes an interpreted frame natively through an OSR entry.
///
/// # Safety
///
/// `code` is a live OSR entry from [`function_def`] of the function whose
/// frame `frame` is (all its registers).
#[inline(always)]
pub unsafe fn call_osr(code: *mut (), frame: &[i64]) -> i64 {
    // SAFETY: by this function's contract.
    let entry: extern "C" fn(*const i64) -> i64 = unsafe { std::mem::transmute(code) };
    entry(frame.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowering_checks as check;

    #[test]
    fn compiled_code_agrees_with_the_interpreter() {
        let backend = config().build().unwrap();
        check::agrees_with_interpreter(
            "fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); }
             fn mix(a, b, c) { let x = a * b - c; if x != 0 { x = x + (a < b) + (b >= c) * 10 - -3; } return x; }",
            |program, id| {
                let code = backend.compile_function(function_def(program, id, false, None)).unwrap();
                let entry = code.entry();
                (code, entry)
            },
        );
    }

    #[test]
    fn osr_entry_resumes_an_interpreted_frame() {
        let backend = config().build().unwrap();
        check::osr_entry_resumes_an_interpreted_frame(|program, id, site| {
            let code = backend.compile_function(function_def(program, id, true, None)).unwrap();
            let osr = code.osr_entry(site).unwrap();
            (code, osr)
        });
    }

    #[test]
    fn calls_to_other_functions_go_through_the_call_out() {
        let backend = config().build().unwrap();
        check::calls_go_through_the_call_out(|program, id, call_out| {
            backend.compile_function(function_def(program, id, false, call_out)).map(|code| {
                let entry = code.entry();
                (code, entry)
            })
        });
    }
}
