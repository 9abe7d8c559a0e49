//! Definitions the integration tests share.
#![allow(dead_code, unreachable_pub)]

use kiln_llvm::inkwell::IntPredicate;
use kiln_llvm::inkwell::values::IntValue;
use kiln_llvm::{BuildContext, Entry, FunctionDef, ValueType};

/// The loop-header site of `sum_def`'s OSR entry.
pub const SUM_LOOP: u64 = 7;

pub fn err(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// `sum(n) = 0 + 1 + .. + (n - 1)` as a loop, with an OSR entry at the
/// loop header taking `(i, acc, n)` through a pointer to three i64s.
pub fn sum_def() -> FunctionDef {
    FunctionDef::new("sum", &[ValueType::I64], Some(ValueType::I64), |cx: &mut BuildContext<'_, '_>| {
        let (context, builder, function) = (cx.context(), cx.builder(), cx.function());
        let i64_type = context.i64_type();
        let entry = context.append_basic_block(function, "entry");
        let header = context.append_basic_block(function, "header");
        let body = context.append_basic_block(function, "body");
        let exit = context.append_basic_block(function, "exit");
        builder.position_at_end(entry);
        let (i0, acc0, n): (IntValue<'_>, IntValue<'_>, IntValue<'_>) = match cx.entry() {
            Entry::Normal => {
                let n = function.get_nth_param(0).ok_or("no n")?.into_int_value();
                (i64_type.const_zero(), i64_type.const_zero(), n)
            }
            Entry::Osr { .. } => {
                let frame = function.get_nth_param(0).ok_or("no frame")?.into_pointer_value();
                let load = |index: u64| -> Result<IntValue<'_>, String> {
                    // SAFETY: the frame holds three i64s.
                    let slot = unsafe {
                        builder.build_gep(i64_type, frame, &[i64_type.const_int(index, false)], "slot").map_err(err)?
                    };
                    Ok(builder.build_load(i64_type, slot, "value").map_err(err)?.into_int_value())
                };
                (load(0)?, load(1)?, load(2)?)
            }
        };
        builder.build_unconditional_branch(header).map_err(err)?;
        builder.position_at_end(header);
        let i = builder.build_phi(i64_type, "i").map_err(err)?;
        let acc = builder.build_phi(i64_type, "acc").map_err(err)?;
        let (iv, accv) = (i.as_basic_value().into_int_value(), acc.as_basic_value().into_int_value());
        let more = builder.build_int_compare(IntPredicate::SLT, iv, n, "more").map_err(err)?;
        builder.build_conditional_branch(more, body, exit).map_err(err)?;
        builder.position_at_end(body);
        let next_acc = builder.build_int_add(accv, iv, "acc1").map_err(err)?;
        let next_i = builder.build_int_add(iv, i64_type.const_int(1, false), "i1").map_err(err)?;
        builder.build_unconditional_branch(header).map_err(err)?;
        i.add_incoming(&[(&i0, entry), (&next_i, body)]);
        acc.add_incoming(&[(&acc0, entry), (&next_acc, body)]);
        builder.position_at_end(exit);
        builder.build_return(Some(&accv)).map_err(err)?;
        Ok(())
    })
    .osr_entry(SUM_LOOP, &[ValueType::Ptr])
}
