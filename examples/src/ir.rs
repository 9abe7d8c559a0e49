//! The small IR both tiers run: a register machine per function, lowered
//! from the syntax tree. The interpreter executes it instruction by
//! instruction; the JIT translates the same instructions to Cranelift IR,
//! so both tiers agree on every result by construction.
//!
//! Each function has a frame of `slots` 64-bit registers: parameters first,
//! then locals, then temporaries. A backward `Jump` is a loop's back-edge;
//! its target (an instruction index) is the loop header and the OSR site
//! key the interpreter and the JIT share.

use std::collections::HashMap;

use crate::ast::{BinOp, Expr, FnDecl, Stmt};

/// A frame register.
pub type Reg = u16;

/// A function's index in its [`Program`].
pub type FuncId = u32;

/// Most parameters a function may take (the native signature passes them
/// in registers).
pub const MAX_PARAMS: usize = 4;

/// Most registers a frame may use.
pub const MAX_SLOTS: usize = 256;

/// One instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inst {
    /// `dst = value`
    Const {
        /// Destination.
        dst: Reg,
        /// The constant.
        value: i64,
    },
    /// `dst = src`
    Move {
        /// Destination.
        dst: Reg,
        /// Source.
        src: Reg,
    },
    /// `dst = lhs op rhs`
    Binary {
        /// The operator.
        op: BinOp,
        /// Destination.
        dst: Reg,
        /// Left operand.
        lhs: Reg,
        /// Right operand.
        rhs: Reg,
    },
    /// Continue at `target`.
    Jump {
        /// Instruction index.
        target: u32,
    },
    /// Continue at `target` if `cond` is zero.
    JumpIfZero {
        /// The condition.
        cond: Reg,
        /// Instruction index.
        target: u32,
    },
    /// `dst = callee(args .. args + argc)`
    Call {
        /// Destination.
        dst: Reg,
        /// The function called.
        callee: FuncId,
        /// First argument register (arguments are consecutive).
        args: Reg,
        /// Number of arguments.
        argc: u8,
    },
    /// Return `src`.
    Return {
        /// The value.
        src: Reg,
    },
}

/// One lowered function.
#[derive(Clone, Debug)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// Its index.
    pub id: FuncId,
    /// Parameter count (registers `0..params`).
    pub params: usize,
    /// Frame size in registers.
    pub slots: usize,
    /// The instructions.
    pub code: Vec<Inst>,
    /// Loop headers (targets of backward jumps), ascending: the OSR sites.
    pub loop_headers: Vec<u32>,
}

/// A lowered program.
#[derive(Clone, Debug)]
pub struct Program {
    /// Functions by id.
    pub functions: Vec<Function>,
}

impl Program {
    /// The function called `name`.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|function| function.name == name)
    }

    /// Parses and lowers `source`.
    pub fn compile(source: &str) -> Result<Self, String> {
        let declarations = crate::parse::parse(source).map_err(|error| error.to_string())?;
        lower(&declarations).map_err(|error| error.to_string())
    }
}

/// A semantic error found while lowering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerError {
    /// The function it is in.
    pub function: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LowerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "in `{}`: {}", self.function, self.message)
    }
}

impl std::error::Error for LowerError {}

/// Lowers parsed functions to a [`Program`].
pub fn lower(declarations: &[FnDecl]) -> Result<Program, LowerError> {
    let mut signatures = HashMap::new();
    for (id, declaration) in declarations.iter().enumerate() {
        let error = |message: String| LowerError { function: declaration.name.clone(), message };
        if declaration.params.len() > MAX_PARAMS {
            return Err(error(format!("more than {MAX_PARAMS} parameters")));
        }
        if signatures.insert(declaration.name.clone(), (id as FuncId, declaration.params.len())).is_some() {
            return Err(error("defined twice".into()));
        }
    }
    let functions = declarations
        .iter()
        .enumerate()
        .map(|(id, declaration)| Lowering::function(declaration, id as FuncId, &signatures))
        .collect::<Result<_, _>>()?;
    Ok(Program { functions })
}

struct Lowering<'a> {
    name: &'a str,
    signatures: &'a HashMap<String, (FuncId, usize)>,
    scopes: Vec<HashMap<&'a str, Reg>>,
    /// Next free register.
    next: usize,
    slots: usize,
    code: Vec<Inst>,
}

impl<'a> Lowering<'a> {
    fn function(
        declaration: &'a FnDecl,
        id: FuncId,
        signatures: &'a HashMap<String, (FuncId, usize)>,
    ) -> Result<Function, LowerError> {
        let params = declaration.params.len();
        let mut lowering = Lowering {
            name: &declaration.name,
            signatures,
            scopes: vec![HashMap::new()],
            next: params,
            slots: params,
            code: Vec::new(),
        };
        for (index, param) in declaration.params.iter().enumerate() {
            if lowering.scopes[0].insert(param, index as Reg).is_some() {
                return Err(lowering.error(format!("parameter `{param}` given twice")));
            }
        }
        lowering.block(&declaration.body)?;
        // Falling off the end returns 0.
        let zero = lowering.temp()?;
        lowering.code.push(Inst::Const { dst: zero, value: 0 });
        lowering.code.push(Inst::Return { src: zero });
        let mut loop_headers: Vec<u32> = lowering
            .code
            .iter()
            .enumerate()
            .filter_map(|(at, inst)| match *inst {
                Inst::Jump { target } if target as usize <= at => Some(target),
                _ => None,
            })
            .collect();
        loop_headers.sort_unstable();
        loop_headers.dedup();
        Ok(Function {
            name: declaration.name.clone(),
            id,
            params,
            slots: lowering.slots,
            code: lowering.code,
            loop_headers,
        })
    }

    fn error(&self, message: String) -> LowerError {
        LowerError { function: self.name.to_owned(), message }
    }

    fn temp(&mut self) -> Result<Reg, LowerError> {
        if self.next >= MAX_SLOTS {
            return Err(self.error(format!("needs more than {MAX_SLOTS} registers")));
        }
        self.next += 1;
        self.slots = self.slots.max(self.next);
        Ok((self.next - 1) as Reg)
    }

    fn lookup(&self, name: &str) -> Result<Reg, LowerError> {
        self.scopes
            .iter()
            .rev()
            .find_map(|scope| scope.get(name).copied())
            .ok_or_else(|| self.error(format!("unknown variable `{name}`")))
    }

    fn here(&self) -> u32 {
        self.code.len() as u32
    }

    fn block(&mut self, statements: &'a [Stmt]) -> Result<(), LowerError> {
        self.scopes.push(HashMap::new());
        let mark = self.next;
        for statement in statements {
            self.statement(statement)?;
        }
        self.scopes.pop();
        self.next = mark;
        Ok(())
    }

    fn statement(&mut self, statement: &'a Stmt) -> Result<(), LowerError> {
        let mark = self.next;
        match statement {
            Stmt::Let(name, value) => {
                let reg = self.temp()?;
                self.expr(value, reg)?;
                self.scopes.last_mut().expect("a scope is open").insert(name, reg);
                // The local keeps its register; temporaries above it are free.
                return Ok(());
            }
            Stmt::Assign(name, value) => {
                // Straight into the variable: every expression reads all its
                // operands before it writes its destination.
                let reg = self.lookup(name)?;
                self.expr(value, reg)?;
            }
            Stmt::If(condition, then, otherwise) => {
                let cond = self.temp()?;
                self.expr(condition, cond)?;
                let branch = self.code.len();
                self.code.push(Inst::JumpIfZero { cond, target: 0 });
                self.block(then)?;
                if otherwise.is_empty() {
                    let end = self.here();
                    self.patch(branch, end);
                } else {
                    let skip = self.code.len();
                    self.code.push(Inst::Jump { target: 0 });
                    let else_start = self.here();
                    self.patch(branch, else_start);
                    self.block(otherwise)?;
                    let end = self.here();
                    self.patch(skip, end);
                }
            }
            Stmt::While(condition, body) => {
                let header = self.here();
                let cond = self.temp()?;
                self.expr(condition, cond)?;
                let exit = self.code.len();
                self.code.push(Inst::JumpIfZero { cond, target: 0 });
                self.block(body)?;
                self.code.push(Inst::Jump { target: header });
                let end = self.here();
                self.patch(exit, end);
            }
            Stmt::Return(value) => {
                let reg = self.temp()?;
                self.expr(value, reg)?;
                self.code.push(Inst::Return { src: reg });
            }
            Stmt::Expr(value) => {
                let reg = self.temp()?;
                self.expr(value, reg)?;
            }
        }
        self.next = mark;
        Ok(())
    }

    fn patch(&mut self, at: usize, to: u32) {
        match &mut self.code[at] {
            Inst::Jump { target } | Inst::JumpIfZero { target, .. } => *target = to,
            _ => unreachable!("only jumps are patched"),
        }
    }

    /// Evaluates `expr` into `dst`.
    fn expr(&mut self, expr: &'a Expr, dst: Reg) -> Result<(), LowerError> {
        let mark = self.next;
        match expr {
            Expr::Int(value) => self.code.push(Inst::Const { dst, value: *value }),
            Expr::Var(name) => {
                let src = self.lookup(name)?;
                self.code.push(Inst::Move { dst, src });
            }
            Expr::Neg(inner) => {
                let (zero, value) = (self.temp()?, self.temp()?);
                self.code.push(Inst::Const { dst: zero, value: 0 });
                self.expr(inner, value)?;
                self.code.push(Inst::Binary { op: BinOp::Sub, dst, lhs: zero, rhs: value });
            }
            Expr::Binary(op, lhs, rhs) => {
                let lhs_reg = self.operand(lhs)?;
                let rhs_reg = self.operand(rhs)?;
                self.code.push(Inst::Binary { op: *op, dst, lhs: lhs_reg, rhs: rhs_reg });
            }
            Expr::Call(name, args) => {
                let &(callee, arity) =
                    self.signatures.get(name).ok_or_else(|| self.error(format!("unknown function `{name}`")))?;
                if args.len() != arity {
                    return Err(self.error(format!("`{name}` takes {arity} arguments, given {}", args.len())));
                }
                let first = self.next as Reg;
                let regs = (0..args.len()).map(|_| self.temp()).collect::<Result<Vec<_>, _>>()?;
                for (arg, reg) in args.iter().zip(regs) {
                    self.expr(arg, reg)?;
                }
                self.code.push(Inst::Call { dst, callee, args: first, argc: args.len() as u8 });
            }
        }
        self.next = mark;
        Ok(())
    }

    /// A register holding `expr`: a variable's own register, or a new
    /// temporary it is evaluated into.
    fn operand(&mut self, expr: &'a Expr) -> Result<Reg, LowerError> {
        if let Expr::Var(name) = expr {
            return self.lookup(name);
        }
        let reg = self.temp()?;
        self.expr(expr, reg)?;
        Ok(reg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_have_headers_and_calls_are_checked() {
        let program =
            Program::compile("fn f(n) { let i = 0; while i < n { i = i + 1; } return i; } fn g() { return f(3); }")
                .unwrap();
        let f = program.function("f").unwrap();
        assert_eq!(f.loop_headers.len(), 1);
        assert!(matches!(f.code[f.loop_headers[0] as usize], Inst::Move { .. } | Inst::Binary { .. }));
        assert!(Program::compile("fn g() { return h(1); }").unwrap_err().contains("unknown function `h`"));
        assert!(Program::compile("fn f(a) { return a; } fn g() { return f(); }").unwrap_err().contains("takes 1"));
        assert!(Program::compile("fn f() { return x; }").unwrap_err().contains("unknown variable `x`"));
        assert!(Program::compile("fn f(a, b, c, d, e) { return a; }").unwrap_err().contains("parameters"));
    }
}
