//! The tiny language's syntax tree: what the parser produces and the
//! lowering consumes.
//!
//! The language has 64-bit integers only (wrapping arithmetic), functions
//! of up to four parameters, `let`, assignment, `if`/`else`, `while` and
//! `return`:
//!
//! ```text
//! fn fib(n) {
//!     if n < 2 { return n; }
//!     return fib(n - 1) + fib(n - 2);
//! }
//! ```

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+` (wrapping)
    Add,
    /// `-` (wrapping)
    Sub,
    /// `*` (wrapping)
    Mul,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl BinOp {
    /// Applies the operator as the language defines it (comparisons give 0 or 1).
    #[inline(always)]
    pub fn apply(self, lhs: i64, rhs: i64) -> i64 {
        match self {
            Self::Add => lhs.wrapping_add(rhs),
            Self::Sub => lhs.wrapping_sub(rhs),
            Self::Mul => lhs.wrapping_mul(rhs),
            Self::Lt => i64::from(lhs < rhs),
            Self::Le => i64::from(lhs <= rhs),
            Self::Gt => i64::from(lhs > rhs),
            Self::Ge => i64::from(lhs >= rhs),
            Self::Eq => i64::from(lhs == rhs),
            Self::Ne => i64::from(lhs != rhs),
        }
    }
}

/// An expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// An integer literal.
    Int(i64),
    /// A parameter or local.
    Var(String),
    /// `-e`
    Neg(Box<Expr>),
    /// `lhs op rhs`
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `name(args)`
    Call(String, Vec<Expr>),
}

/// A statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stmt {
    /// `let name = e;`
    Let(String, Expr),
    /// `name = e;`
    Assign(String, Expr),
    /// `if c { .. } else { .. }`
    If(Expr, Vec<Stmt>, Vec<Stmt>),
    /// `while c { .. }`
    While(Expr, Vec<Stmt>),
    /// `return e;`
    Return(Expr),
    /// `e;`
    Expr(Expr),
}

/// A function declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FnDecl {
    /// Its name.
    pub name: String,
    /// Parameter names.
    pub params: Vec<String>,
    /// Its body.
    pub body: Vec<Stmt>,
}
