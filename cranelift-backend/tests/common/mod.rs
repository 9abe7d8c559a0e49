//! Function definitions and helpers shared by the backend's tests.
#![allow(dead_code, unreachable_pub)]

use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, condcodes::IntCC};
use cranelift_frontend::FunctionBuilder;
use kiln_cranelift::{BuildContext, Entry, FunctionDef};

/// The OSR site of `sum_def`'s loop.
pub const SUM_LOOP: u64 = 7;

/// `fn(x) -> x + k`.
pub fn add_def(name: &str, k: i64) -> FunctionDef {
    FunctionDef::new(name, &[I64], &[I64], move |builder, _cx| {
        let block = builder.create_block();
        builder.append_block_params_for_function_params(block);
        builder.switch_to_block(block);
        builder.seal_block(block);
        let x = builder.block_params(block)[0];
        let y = builder.ins().iadd_imm_s(x, k);
        builder.ins().return_(&[y]);
        Ok(())
    })
}

/// `fn sum(n) -> 0 + 1 + ... + (n - 1)`, with an OSR entry at the loop
/// header taking `(i, acc, n)`.
pub fn sum_def() -> FunctionDef {
    FunctionDef::new("sum", &[I64], &[I64], sum_body).osr_entry(SUM_LOOP, &[I64, I64, I64])
}

fn sum_body(builder: &mut FunctionBuilder<'_>, cx: &mut BuildContext<'_>) -> Result<(), String> {
    let (i, acc, n) = (builder.declare_var(I64), builder.declare_var(I64), builder.declare_var(I64));
    let start = builder.create_block();
    builder.append_block_params_for_function_params(start);
    builder.switch_to_block(start);
    builder.seal_block(start);
    let params = builder.block_params(start).to_vec();
    match cx.entry() {
        Entry::Normal => {
            let zero = builder.ins().iconst(I64, 0);
            builder.def_var(n, params[0]);
            builder.def_var(i, zero);
            builder.def_var(acc, zero);
        }
        Entry::Osr { site } => {
            assert_eq!(site, SUM_LOOP);
            builder.def_var(i, params[0]);
            builder.def_var(acc, params[1]);
            builder.def_var(n, params[2]);
        }
    }
    let (header, body, exit) = (builder.create_block(), builder.create_block(), builder.create_block());
    builder.ins().jump(header, &[]);
    builder.switch_to_block(header);
    let (iv, nv) = (builder.use_var(i), builder.use_var(n));
    let more = builder.ins().icmp(IntCC::SignedLessThan, iv, nv);
    builder.ins().brif(more, body, &[], exit, &[]);
    builder.switch_to_block(body);
    builder.seal_block(body);
    let (iv, accv) = (builder.use_var(i), builder.use_var(acc));
    let next_acc = builder.ins().iadd(accv, iv);
    let next_i = builder.ins().iadd_imm_s(iv, 1);
    builder.def_var(acc, next_acc);
    builder.def_var(i, next_i);
    builder.ins().jump(header, &[]);
    builder.seal_block(header);
    builder.switch_to_block(exit);
    builder.seal_block(exit);
    let result = builder.use_var(acc);
    builder.ins().return_(&[result]);
    Ok(())
}

/// `fn fib(n)`, recursing natively through `call_self`.
pub fn fib_def() -> FunctionDef {
    FunctionDef::new("fib", &[I64], &[I64], |builder, cx| {
        let start = builder.create_block();
        builder.append_block_params_for_function_params(start);
        builder.switch_to_block(start);
        builder.seal_block(start);
        let n = builder.block_params(start)[0];
        let (base, recurse) = (builder.create_block(), builder.create_block());
        let small = builder.ins().icmp_imm_s(IntCC::SignedLessThan, n, 2);
        builder.ins().brif(small, base, &[], recurse, &[]);
        builder.switch_to_block(base);
        builder.seal_block(base);
        builder.ins().return_(&[n]);
        builder.switch_to_block(recurse);
        builder.seal_block(recurse);
        let fib = cx.call_self(builder);
        let n1 = builder.ins().iadd_imm_s(n, -1);
        let call = builder.ins().call(fib, &[n1]);
        let a = builder.inst_results(call)[0];
        let n2 = builder.ins().iadd_imm_s(n, -2);
        let call = builder.ins().call(fib, &[n2]);
        let b = builder.inst_results(call)[0];
        let sum = builder.ins().iadd(a, b);
        builder.ins().return_(&[sum]);
        Ok(())
    })
}

/// Calls `code` as `extern "C" fn(i64) -> i64`.
///
/// # Safety
///
/// `code` is live code with that signature.
pub unsafe fn call1(code: *mut (), x: i64) -> i64 {
    // SAFETY: by this function's contract.
    let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code) };
    f(x)
}

/// Calls `code` as `extern "C" fn(i64, i64, i64) -> i64`.
///
/// # Safety
///
/// `code` is live code with that signature.
pub unsafe fn call3(code: *mut (), a: i64, b: i64, c: i64) -> i64 {
    // SAFETY: by this function's contract.
    let f: extern "C" fn(i64, i64, i64) -> i64 = unsafe { std::mem::transmute(code) };
    f(a, b, c)
}

/// Whether `address` lies in an executable mapping of this process
/// (/proc/self/maps).
pub fn is_mapped_executable(address: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap_or("");
        let executable = fields.next().is_some_and(|perms| perms.contains('x'));
        let Some((start, end)) = range.split_once('-') else { return false };
        let (start, end) = (usize::from_str_radix(start, 16).unwrap(), usize::from_str_radix(end, 16).unwrap());
        executable && (start..end).contains(&address)
    })
}

/// Resident set size of this process, in bytes (/proc/self/statm).
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).expect("resident field").parse().expect("a number");
    pages * 4096
}
