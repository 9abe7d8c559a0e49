//! What every lowering of the examples' IR must do (Cranelift's in `jit`,
//! LLVM's in `llvm`), written once: each backend's tests pass their
//! compile step in and keep whatever owns the code alive as `K`.

use crate::interp::{Hooks, Interpreter, Plain};
use crate::ir::{FuncId, Program};
use crate::jit::{CallOut, call_native, call_osr};

/// A program that lives as long as the code compiled from it.
pub(crate) fn leak(source: &str) -> &'static Program {
    Box::leak(Box::new(Program::compile(source).unwrap()))
}

/// Every function of `source`, compiled by `compile` to `(owner, entry)`,
/// returns what the interpreter returns on a handful of arguments.
pub(crate) fn agrees_with_interpreter<K>(source: &str, compile: impl Fn(&'static Program, FuncId) -> (K, *mut ())) {
    let program = leak(source);
    let interpreter = Interpreter::new(program);
    for function in &program.functions {
        let (_owner, entry) = compile(program, function.id);
        for args in [[5, 3, 1, 0], [0, 0, 0, 0], [-7, 2, 9, 0], [25, 1, 1, 1]] {
            let args = &args[..function.params];
            // SAFETY: compiled from this function, which takes `params` arguments.
            let native = unsafe { call_native(entry, args) };
            assert_eq!(native, interpreter.invoke(&Plain, function.id, args), "{}{args:?}", function.name);
        }
    }
}

/// A loop's OSR entry, made by `compile_osr(program, function, site)` as
/// `(owner, osr entry)`, takes over an interpreted frame at the 100th
/// back-edge and finishes the loop natively.
pub(crate) fn osr_entry_resumes_an_interpreted_frame<K>(
    compile_osr: impl FnOnce(&'static Program, FuncId, u64) -> (K, *mut ()),
) {
    let program =
        leak("fn sum(n) { let i = 0; let acc = 0; while i < n { acc = acc + i * i; i = i + 1; } return acc; }");
    let site = u64::from(program.functions[0].loop_headers[0]);
    let (_owner, osr) = compile_osr(program, 0, site);

    /// Interprets until the 100th back-edge, then hands the frame over.
    struct Handover(*mut (), std::cell::Cell<u32>);
    impl Hooks for Handover {
        fn call(&self, interpreter: &Interpreter<'_>, stack: &mut Vec<i64>, func: FuncId, args: &[i64]) -> i64 {
            interpreter.interpret(self, stack, func, args)
        }
        fn backedge(&self, _func: FuncId, _site: u32, frame: &[i64]) -> Option<i64> {
            self.1.set(self.1.get() + 1);
            // SAFETY: `self.0` is `sum`'s OSR entry; `frame` is `sum`'s frame.
            (self.1.get() == 100).then(|| unsafe { call_osr(self.0, frame) })
        }
    }
    let hooks = Handover(osr, std::cell::Cell::new(0));
    let result = Interpreter::new(program).invoke(&hooks, 0, &[1000]);
    assert_eq!(result, (0..1000i64).map(|i| i * i).sum::<i64>());
    assert_eq!(hooks.1.get(), 100, "the loop finished natively");
}

/// A function calling another compiles only with a call-out, and its calls
/// go through it: `compile(program, function, call_out)`.
pub(crate) fn calls_go_through_the_call_out<K, E: std::fmt::Debug>(
    compile: impl Fn(&'static Program, FuncId, Option<&'static CallOut>) -> Result<(K, *mut ()), E>,
) {
    let program = leak("fn double(x) { return x * 2; } fn quad(x) { return double(double(x)); }");
    let call_out: &'static CallOut =
        Box::leak(Box::new(CallOut(Box::new(|callee, args| Interpreter::new(program).invoke(&Plain, callee, args)))));
    let quad = program.function("quad").unwrap().id;
    assert!(compile(program, quad, None).is_err(), "a call with no call-out compiled");
    let (_owner, entry) = compile(program, quad, Some(call_out)).unwrap();
    // SAFETY: `quad` takes one argument.
    assert_eq!(unsafe { call_native(entry, &[5]) }, 20);
}
