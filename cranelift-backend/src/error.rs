//! `CraneliftError`: every way compiling a definition can fail, as a value.
//! (Named for the crate, like `CraneliftConfig`: kiln-std's `CompileError`
//! is a backend's failure as a message, and Cranelift's own `CodegenError`
//! is only one of the causes here.)
//!
//! A compile never brings the process down for the host's mistakes: invalid
//! IR is caught by Cranelift's verifier (`Codegen`), a body builder that
//! panics (Cranelift's frontend asserts on unsealed or unfilled blocks in
//! debug builds) is caught and reported (`Panicked`), and the code memory
//! of a failed compile is freed before the error is returned. kiln treats
//! each of these as a failed compile: the function keeps interpreting and
//! the deopt policy decides when to try again.

/// Why a compile produced no code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CraneliftError {
    /// The definition's body builder returned an error.
    Build {
        /// The function being built.
        function: String,
        /// The builder's message.
        message: String,
    },
    /// The body builder or Cranelift panicked (payload message attached).
    Panicked {
        /// The function being built.
        function: String,
        /// The panic message.
        message: String,
    },
    /// Cranelift rejected the function: verifier errors (invalid IR), an
    /// unsupported feature, or a code-size limit.
    Codegen {
        /// The function being compiled.
        function: String,
        /// Cranelift's report.
        message: String,
    },
    /// Declaring, linking or finalizing the module failed (an unresolved
    /// import, a failed memory mapping).
    Module {
        /// The function being compiled.
        function: String,
        /// Cranelift's report.
        message: String,
    },
    /// The definition is malformed (two OSR entries at one site).
    InvalidDefinition {
        /// The function.
        function: String,
        /// What is wrong.
        message: String,
    },
    /// The function alone needs more code memory than the whole budget.
    OverBudget {
        /// The function.
        function: String,
        /// Bytes it needs.
        needed: usize,
        /// The configured budget.
        budget: usize,
    },
    /// A definition carried to kiln-std's `JitBackend::compile` by
    /// `CraneliftBackend::prepare` (feature `std-adapter`) belongs to
    /// another backend.
    ForeignDefinition,
}

impl CraneliftError {
    /// The function the error is about, if it names one.
    pub fn function(&self) -> Option<&str> {
        match self {
            Self::Build { function, .. }
            | Self::Panicked { function, .. }
            | Self::Codegen { function, .. }
            | Self::Module { function, .. }
            | Self::InvalidDefinition { function, .. }
            | Self::OverBudget { function, .. } => Some(function),
            Self::ForeignDefinition => None,
        }
    }
}

impl std::fmt::Display for CraneliftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Build { function, message } => write!(f, "building `{function}` failed: {message}"),
            Self::Panicked { function, message } => write!(f, "compiling `{function}` panicked: {message}"),
            Self::Codegen { function, message } => write!(f, "Cranelift rejected `{function}`: {message}"),
            Self::Module { function, message } => write!(f, "linking `{function}` failed: {message}"),
            Self::InvalidDefinition { function, message } => write!(f, "bad definition of `{function}`: {message}"),
            Self::OverBudget { function, needed, budget } => {
                write!(f, "`{function}` needs {needed} bytes of code memory, more than the whole budget of {budget}")
            }
            Self::ForeignDefinition => f.write_str("the prepared definition belongs to another backend"),
        }
    }
}

impl std::error::Error for CraneliftError {}

// The shared layer builds its failures (a caught panic, over budget, two
// OSR entries at one site) in this crate's error type.
kiln_backend_kit::impl_backend_error!(CraneliftError);

/// The former name of [`CraneliftError`], which read like kiln-std's
/// `CompileError` (a different type).
#[deprecated(since = "0.1.0", note = "renamed to `CraneliftError` (kiln-std's `CompileError` is a different type)")]
pub type CompileError = CraneliftError;
