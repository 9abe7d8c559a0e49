//! `LlvmError`: every way an LLVM compile can fail, as a value.
//!
//! LLVM aborts the process on some misuse (codegen of IR that does not
//! verify, for one), so kiln-llvm never hands LLVM anything unchecked: the
//! module is verified before a single pass runs (`Verifier`), imports are
//! resolved before the object is linked (`MissingSymbol`), and host
//! callbacks run under `catch_unwind` (`Panicked`). Each is a failed
//! compile: the function keeps running what it ran before and kiln's
//! failure policy decides when to try again.

/// Why a compile produced no code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LlvmError {
    /// The definition's body builder returned an error.
    Build {
        /// The function being built.
        function: String,
        /// The builder's message.
        message: String,
    },
    /// The body builder (or inkwell) panicked; the payload's message.
    Panicked {
        /// The function being built.
        function: String,
        /// The panic message.
        message: String,
    },
    /// LLVM's verifier rejected the module the body builder made.
    Verifier {
        /// The function being compiled.
        function: String,
        /// The verifier's report.
        message: String,
    },
    /// The definition is malformed (two OSR entries at one site, more than
    /// one return value, a name LLVM cannot take).
    InvalidDefinition {
        /// The function.
        function: String,
        /// What is wrong.
        message: String,
    },
    /// The code calls a host symbol that is neither registered with
    /// [`LlvmConfig::symbol`](crate::LlvmConfig::symbol) nor found in the
    /// process.
    MissingSymbol {
        /// The function being compiled.
        function: String,
        /// The symbol.
        symbol: String,
    },
    /// The optimizer or code generator failed.
    Codegen {
        /// The function being compiled.
        function: String,
        /// LLVM's report.
        message: String,
    },
    /// ORC could not link or look up the compiled object.
    Link {
        /// The function being compiled.
        function: String,
        /// ORC's report.
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
}

impl LlvmError {
    /// The function the error is about.
    pub fn function(&self) -> &str {
        match self {
            Self::Build { function, .. }
            | Self::Panicked { function, .. }
            | Self::Verifier { function, .. }
            | Self::InvalidDefinition { function, .. }
            | Self::MissingSymbol { function, .. }
            | Self::Codegen { function, .. }
            | Self::Link { function, .. }
            | Self::OverBudget { function, .. } => function,
        }
    }
}

impl std::fmt::Display for LlvmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Build { function, message } => write!(f, "building `{function}` failed: {message}"),
            Self::Panicked { function, message } => write!(f, "compiling `{function}` panicked: {message}"),
            Self::Verifier { function, message } => write!(f, "LLVM's verifier rejected `{function}`: {message}"),
            Self::InvalidDefinition { function, message } => write!(f, "bad definition of `{function}`: {message}"),
            Self::MissingSymbol { function, symbol } => {
                write!(f, "`{function}` calls `{symbol}`, which is neither registered nor in the process")
            }
            Self::Codegen { function, message } => write!(f, "LLVM failed to compile `{function}`: {message}"),
            Self::Link { function, message } => write!(f, "linking `{function}` failed: {message}"),
            Self::OverBudget { function, needed, budget } => {
                write!(f, "`{function}` needs {needed} bytes of code memory, more than the whole budget of {budget}")
            }
        }
    }
}

impl std::error::Error for LlvmError {}

// The shared layer builds its failures (a caught panic, over budget, two
// OSR entries at one site) in this crate's error type.
kiln_backend_kit::impl_backend_error!(LlvmError);
