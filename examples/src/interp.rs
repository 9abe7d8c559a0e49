//! The interpreter: runs a function's IR on a frame of registers, asking
//! its [`Hooks`] how to run each call and whether to leave at a loop's
//! back-edge.
//!
//! The hooks are where kiln sits. [`Plain`] is the interpreter alone. A
//! kiln-backed runtime implements [`Hooks::call`] as "native entry if kiln
//! has one, else interpret" (so every interpreted call is one kiln
//! dispatch), and [`Hooks::backedge`] as "if kiln has an OSR entry for this
//! loop header, finish the frame natively".
//!
//! Frames live on one shared stack (`Vec<i64>`), so a call costs no
//! allocation once the stack has grown.

use crate::ir::{FuncId, Inst, MAX_PARAMS, Program};

/// How calls and back-edges are run.
pub trait Hooks {
    /// Runs the call `func(args)` (from interpreted code or the host).
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64;

    /// A back-edge to loop header `site` of `func`, whose frame is `frame`.
    /// `Some(result)` ends the frame with that result (it was finished
    /// natively); `None` goes on interpreting.
    #[inline(always)]
    fn backedge(&self, func: FuncId, site: u32, frame: &[i64]) -> Option<i64> {
        let _ = (func, site, frame);
        None
    }
}

/// The interpreter alone: every call is interpreted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Hooks for Plain {
    #[inline(always)]
    fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        interpreter.interpret(self, stack, func, args)
    }
}

/// Runs a program's IR.
#[derive(Clone, Copy, Debug)]
pub struct Interpreter<'p> {
    program: &'p Program,
}

impl<'p> Interpreter<'p> {
    /// An interpreter for `program`.
    pub fn new(program: &'p Program) -> Self {
        Self { program }
    }

    /// The program.
    pub fn program(&self) -> &'p Program {
        self.program
    }

    /// A call from the host: `func(args)` through `hooks`.
    pub fn invoke<H: Hooks>(&self, hooks: &H, func: FuncId, args: &[i64]) -> i64 {
        let mut stack = Vec::with_capacity(1024);
        hooks.call(self, &mut stack, func, args)
    }

    /// Interprets `func(args)` in a new frame on top of `stack` (its calls
    /// go through `hooks`).
    pub fn interpret<H: Hooks>(&self, hooks: &H, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
        let function = &self.program.functions[func as usize];
        let base = stack.len();
        stack.resize(base + function.slots, 0);
        stack[base..base + args.len()].copy_from_slice(args);
        let code = &function.code[..];
        let mut pc = 0;
        let result = loop {
            match code[pc] {
                Inst::Const { dst, value } => stack[base + dst as usize] = value,
                Inst::Move { dst, src } => stack[base + dst as usize] = stack[base + src as usize],
                Inst::Binary { op, dst, lhs, rhs } => {
                    stack[base + dst as usize] = op.apply(stack[base + lhs as usize], stack[base + rhs as usize]);
                }
                Inst::Jump { target } => {
                    if (target as usize) <= pc
                        && let Some(result) = hooks.backedge(func, target, &stack[base..])
                    {
                        break result;
                    }
                    pc = target as usize;
                    continue;
                }
                Inst::JumpIfZero { cond, target } => {
                    if stack[base + cond as usize] == 0 {
                        pc = target as usize;
                        continue;
                    }
                }
                Inst::Call { dst, callee, args, argc } => {
                    let mut argv = [0; MAX_PARAMS];
                    let first = base + args as usize;
                    argv[..argc as usize].copy_from_slice(&stack[first..first + argc as usize]);
                    let value = hooks.call(self, stack, callee, &argv[..argc as usize]);
                    stack[base + dst as usize] = value;
                }
                Inst::Return { src } => break stack[base + src as usize],
            }
            pc += 1;
        };
        stack.truncate(base);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fib_loops_and_calls() {
        let program = Program::compile(
            "fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); }
             fn sum(n) { let i = 0; let acc = 0; while i < n { acc = acc + i; i = i + 1; } return acc; }
             fn neg(x) { if x >= 0 { return -x; } else if x == -1 { return 100; } return x * -2; }",
        )
        .unwrap();
        let interpreter = Interpreter::new(&program);
        let id = |name| program.function(name).unwrap().id;
        assert_eq!(interpreter.invoke(&Plain, id("fib"), &[20]), 6765);
        assert_eq!(interpreter.invoke(&Plain, id("sum"), &[100]), 4950);
        assert_eq!(interpreter.invoke(&Plain, id("neg"), &[5]), -5);
        assert_eq!(interpreter.invoke(&Plain, id("neg"), &[-1]), 100);
        assert_eq!(interpreter.invoke(&Plain, id("neg"), &[-3]), 6);
    }
}
