//! The optimizing tier: the same IR the interpreter runs, translated to
//! LLVM IR as a [`FunctionDef`] for kiln-llvm (feature `llvm`).
//!
//! It mirrors [`jit`](crate::jit), the Cranelift lowering, so the same
//! interpreter can hand a function to either tier:
//!
//! - every frame register is an `alloca` slot (LLVM's `mem2reg`, part of
//!   `-O1` and up, turns them into SSA values); every jump target and every
//!   instruction after a jump or return starts a block;
//! - a call to the function itself is a direct native call to its normal
//!   entry; calls to other functions go through the same host call-out
//!   symbol ([`jit::CALL_OUT_SYMBOL`](crate::jit::CALL_OUT_SYMBOL)) with the
//!   same arguments `(context, callee, args, argc)`;
//! - each loop header can get an OSR entry taking a pointer to the
//!   interpreter's frame — all of its registers, slot `i` at byte `8 * i`,
//!   the layout the Cranelift OSR entries read — so a running interpreted
//!   loop continues natively in LLVM code.
//!
//! Native signatures are Cranelift's: `extern "C" fn(i64, ..) -> i64` for
//! the normal entry, `extern "C" fn(*const i64) -> i64` for OSR entries, so
//! [`jit::call_native`](crate::jit::call_native) and
//! [`jit::call_osr`](crate::jit::call_osr) call either tier's code.

use kiln_llvm::inkwell::basic_block::BasicBlock;
use kiln_llvm::inkwell::builder::BuilderError;
use kiln_llvm::inkwell::types::IntType;
use kiln_llvm::inkwell::values::{IntValue, PointerValue, ValueKind};
use kiln_llvm::inkwell::{AddressSpace, IntPredicate};
use kiln_llvm::{BuildContext, Entry, FunctionDef, LlvmConfig, ValueType};

use crate::ast::BinOp;
use crate::ir::{FuncId, Inst, MAX_PARAMS, Program};
use crate::jit::{CALL_OUT_SYMBOL, CallOut};

/// An LLVM configuration for this language: `-O2` (the tier exists for the
/// hottest code), the host's CPU, and the call-out symbol registered.
pub fn config() -> LlvmConfig {
    LlvmConfig::new().opt_level(2).symbol(CALL_OUT_SYMBOL, crate::jit::call_out as *const u8)
}

/// The definition of `func`: its normal entry and, if `osr`, one OSR
/// entry per loop header. Calls to other functions need `call_out`; without
/// one such a function fails to compile (and stays on its current tier).
pub fn function_def(
    program: &'static Program,
    func: FuncId,
    osr: bool,
    call_out: Option<&'static CallOut>,
) -> FunctionDef {
    let function = &program.functions[func as usize];
    let params = vec![ValueType::I64; function.params];
    let mut def = FunctionDef::new(function.name.clone(), &params, Some(ValueType::I64), move |cx| {
        translate(program, func, call_out, cx)
    });
    if osr {
        for &site in &function.loop_headers {
            def = def.osr_entry(u64::from(site), &[ValueType::Ptr]);
        }
    }
    def
}

fn built(error: BuilderError) -> String {
    error.to_string()
}

fn translate(
    program: &Program,
    func: FuncId,
    call_out: Option<&'static CallOut>,
    cx: &mut BuildContext<'_, '_>,
) -> Result<(), String> {
    let function = &program.functions[func as usize];
    let code = &function.code;
    let (context, builder, llvm_function) = (cx.context(), cx.builder(), cx.function());
    let i64_type = context.i64_type();

    let entry_block = context.append_basic_block(llvm_function, "entry");
    // Leaders: the start, every jump target, every instruction after a
    // jump, a branch or a return.
    let mut blocks: Vec<Option<BasicBlock<'_>>> = vec![None; code.len() + 1];
    let mut lead = |at: usize| {
        if at < code.len() && blocks[at].is_none() {
            blocks[at] = Some(context.append_basic_block(llvm_function, &format!("pc{at}")));
        }
    };
    lead(0);
    for (pc, inst) in code.iter().enumerate() {
        match *inst {
            Inst::Jump { target } | Inst::JumpIfZero { target, .. } => {
                if target as usize >= code.len() {
                    return Err(format!("jump to {target} past the end of `{}`", function.name));
                }
                lead(target as usize);
                lead(pc + 1);
            }
            Inst::Return { .. } => lead(pc + 1),
            _ => {}
        }
    }
    let block_at = |at: usize| blocks[at].ok_or_else(|| format!("no block at {at}"));

    builder.position_at_end(entry_block);
    let slots: Vec<PointerValue<'_>> = (0..function.slots)
        .map(|slot| builder.build_alloca(i64_type, &format!("r{slot}")))
        .collect::<Result<_, _>>()
        .map_err(built)?;
    match cx.entry() {
        Entry::Normal => {
            for (slot, pointer) in slots.iter().enumerate() {
                let value = match llvm_function.get_nth_param(slot as u32) {
                    Some(param) if slot < function.params => param.into_int_value(),
                    _ => i64_type.const_zero(),
                };
                builder.build_store(*pointer, value).map_err(built)?;
            }
            builder.build_unconditional_branch(block_at(0)?).map_err(built)?;
        }
        Entry::Osr { site } => {
            // The interpreter's frame at the loop header: every register.
            let frame = llvm_function.get_nth_param(0).ok_or("OSR entry without a frame")?.into_pointer_value();
            for (slot, pointer) in slots.iter().enumerate() {
                // SAFETY: an in-bounds GEP must stay inside its object: the
                // interpreter's frame holds all `slots` registers.
                let address = unsafe {
                    builder.build_in_bounds_gep(i64_type, frame, &[i64_type.const_int(slot as u64, false)], "frame")
                }
                .map_err(built)?;
                let value = builder.build_load(i64_type, address, "live").map_err(built)?;
                builder.build_store(*pointer, value).map_err(built)?;
            }
            builder.build_unconditional_branch(block_at(site as usize)?).map_err(built)?;
        }
    }

    let load = |reg: u16| -> Result<IntValue<'_>, String> {
        Ok(builder.build_load(i64_type, slots[reg as usize], "r").map_err(built)?.into_int_value())
    };
    let store = |reg: u16, value: IntValue<'_>| -> Result<(), String> {
        builder.build_store(slots[reg as usize], value).map(|_| ()).map_err(built)
    };
    let mut filled = true;
    for (pc, inst) in code.iter().enumerate() {
        if let Some(block) = blocks[pc] {
            if !filled {
                builder.build_unconditional_branch(block).map_err(built)?;
            }
            builder.position_at_end(block);
            filled = false;
        }
        match *inst {
            Inst::Const { dst, value } => store(dst, i64_type.const_int(value as u64, true))?,
            Inst::Move { dst, src } => store(dst, load(src)?)?,
            Inst::Binary { op, dst, lhs, rhs } => {
                let value = binary(builder, i64_type, op, load(lhs)?, load(rhs)?).map_err(built)?;
                store(dst, value)?;
            }
            Inst::Jump { target } => {
                builder.build_unconditional_branch(block_at(target as usize)?).map_err(built)?;
                filled = true;
            }
            Inst::JumpIfZero { cond, target } => {
                let cond = builder.build_int_compare(IntPredicate::NE, load(cond)?, i64_type.const_zero(), "cond");
                let cond = cond.map_err(built)?;
                builder.build_conditional_branch(cond, block_at(pc + 1)?, block_at(target as usize)?).map_err(built)?;
                filled = true;
            }
            Inst::Call { dst, callee, args, argc } => {
                let argv: Vec<IntValue<'_>> = (0..u16::from(argc)).map(|i| load(args + i)).collect::<Result<_, _>>()?;
                let value = if callee == func {
                    let argv: Vec<_> = argv.iter().map(|arg| (*arg).into()).collect();
                    let call = builder.build_call(cx.call_self(), &argv, "self").map_err(built)?;
                    match call.try_as_basic_value() {
                        ValueKind::Basic(value) => value.into_int_value(),
                        ValueKind::Instruction(_) => return Err("a call returned no value".into()),
                    }
                } else {
                    let call_out = call_out.ok_or_else(|| {
                        format!("`{}` calls another function and no call-out was given", function.name)
                    })?;
                    call_other(cx, call_out, callee, &argv)?
                };
                store(dst, value)?;
            }
            Inst::Return { src } => {
                builder.build_return(Some(&load(src)?)).map_err(built)?;
                filled = true;
            }
        }
    }
    if !filled {
        return Err(format!("`{}` falls off its end", function.name));
    }
    Ok(())
}

fn binary<'ctx>(
    builder: &kiln_llvm::inkwell::builder::Builder<'ctx>,
    i64_type: IntType<'ctx>,
    op: BinOp,
    lhs: IntValue<'ctx>,
    rhs: IntValue<'ctx>,
) -> Result<IntValue<'ctx>, BuilderError> {
    // Wrapping arithmetic, as the interpreter's (no `nsw`/`nuw` flags).
    let predicate = match op {
        BinOp::Add => return builder.build_int_add(lhs, rhs, "add"),
        BinOp::Sub => return builder.build_int_sub(lhs, rhs, "sub"),
        BinOp::Mul => return builder.build_int_mul(lhs, rhs, "mul"),
        BinOp::Lt => IntPredicate::SLT,
        BinOp::Le => IntPredicate::SLE,
        BinOp::Gt => IntPredicate::SGT,
        BinOp::Ge => IntPredicate::SGE,
        BinOp::Eq => IntPredicate::EQ,
        BinOp::Ne => IntPredicate::NE,
    };
    let flag = builder.build_int_compare(predicate, lhs, rhs, "cmp")?;
    builder.build_int_z_extend(flag, i64_type, "flag")
}

/// `call_out(context, callee, args, argc)` with the arguments in a stack
/// array, as the Cranelift code calls it.
fn call_other<'ctx>(
    cx: &mut BuildContext<'_, 'ctx>,
    call_out: &'static CallOut,
    callee: FuncId,
    args: &[IntValue<'ctx>],
) -> Result<IntValue<'ctx>, String> {
    let (context, builder) = (cx.context(), cx.builder());
    let (i64_type, pointer) = (context.i64_type(), context.ptr_type(AddressSpace::default()));
    let array_type = i64_type.array_type(MAX_PARAMS as u32);
    let array = builder.build_alloca(array_type, "args").map_err(built)?;
    for (index, arg) in args.iter().enumerate() {
        // SAFETY: an in-bounds GEP must stay inside its object: the array
        // holds MAX_PARAMS values and `index < MAX_PARAMS`.
        let address =
            unsafe { builder.build_in_bounds_gep(i64_type, array, &[i64_type.const_int(index as u64, false)], "arg") }
                .map_err(built)?;
        builder.build_store(address, *arg).map_err(built)?;
    }
    let ty = i64_type.fn_type(&[pointer.into(), i64_type.into(), pointer.into(), i64_type.into()], false);
    let target = cx.import(CALL_OUT_SYMBOL, ty);
    let address = i64_type.const_int(std::ptr::from_ref(call_out) as u64, false);
    let context_pointer = builder.build_int_to_ptr(address, pointer, "call_out").map_err(built)?;
    let callee = i64_type.const_int(u64::from(callee), false);
    let argc = i64_type.const_int(args.len() as u64, false);
    let call = builder
        .build_call(target, &[context_pointer.into(), callee.into(), array.into(), argc.into()], "other")
        .map_err(built)?;
    match call.try_as_basic_value() {
        ValueKind::Basic(value) => Ok(value.into_int_value()),
        ValueKind::Instruction(_) => Err("the call-out returned no value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowering_checks as check;

    #[test]
    fn llvm_code_agrees_with_the_interpreter() {
        let backend = config().build().unwrap();
        check::agrees_with_interpreter(
            "fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); }
             fn mix(a, b, c) { let x = a * b - c; if x != 0 { x = x + (a < b) + (b >= c) * 10 - -3; } return x; }
             fn big(a) { return a * 9223372036854775807 + 3; }",
            |program, id| {
                let code = backend.compile_function(function_def(program, id, false, None)).unwrap();
                let entry = code.entry();
                (code, entry)
            },
        );
    }

    #[test]
    fn llvm_osr_entry_resumes_an_interpreted_frame() {
        let backend = config().build().unwrap();
        check::osr_entry_resumes_an_interpreted_frame(|program, id, site| {
            let code = backend.compile_function(function_def(program, id, true, None)).unwrap();
            let osr = code.osr_entry(site).unwrap();
            (code, osr)
        });
    }

    #[test]
    fn calls_to_other_functions_go_through_the_same_call_out() {
        let backend = config().build().unwrap();
        check::calls_go_through_the_call_out(|program, id, call_out| {
            backend.compile_function(function_def(program, id, false, call_out)).map(|code| {
                let entry = code.entry();
                (code, entry)
            })
        });
    }
}
