//! `LlvmConfig`: the builder that checks every setting once, up front, and
//! turns them into an [`LlvmBackend`].
//!
//! The settings mirror kiln-cranelift's: an optimization level, the target
//! CPU and its features, host symbols the generated code may call, and the
//! code-memory budget with its eviction pause. Everything is checked in
//! [`build`](LlvmConfig::build), which also creates the backend's ORC LLJIT
//! instance, so a bad value is one typed error on the host's thread rather
//! than a failed compile later on a worker.

use kiln_backend_kit::MemorySettings;

use crate::backend::LlvmBackend;

/// Why an [`LlvmConfig`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The optimization level is not 0, 1, 2 or 3.
    BadOptLevel {
        /// The level given.
        level: u8,
    },
    /// A target feature is not of the form `+name` or `-name`.
    BadFeature {
        /// The feature as given.
        feature: String,
    },
    /// LLVM has no target for this machine, or refused the CPU and features.
    UnsupportedHost {
        /// LLVM's explanation.
        reason: String,
    },
    /// ORC LLJIT could not be created, or refused the host symbols.
    Jit {
        /// ORC's explanation.
        reason: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadOptLevel { level } => write!(f, "LLVM optimization level {level} does not exist (0 to 3)"),
            Self::BadFeature { feature } => {
                write!(f, "target feature `{feature}` must start with `+` (enable) or `-` (disable)")
            }
            Self::UnsupportedHost { reason } => write!(f, "LLVM cannot generate code for this machine: {reason}"),
            Self::Jit { reason } => write!(f, "ORC LLJIT could not be set up: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Builds an [`LlvmBackend`]: optimization level, target CPU and features,
/// host symbols, and kiln's code-memory budget.
///
/// ```
/// use kiln_llvm::{ConfigError, LlvmConfig};
///
/// let backend = LlvmConfig::new().opt_level(2).build()?;
/// # drop(backend);
/// let error = LlvmConfig::new().opt_level(4).build().unwrap_err();
/// assert_eq!(error, ConfigError::BadOptLevel { level: 4 });
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LlvmConfig {
    pub(crate) opt_level: u8,
    /// `None`: the host's CPU.
    pub(crate) cpu: Option<String>,
    /// `None`: the host CPU's features.
    pub(crate) features: Option<Vec<String>>,
    /// Host symbols, code budget, eviction pause (kiln-backend-kit).
    pub(crate) memory: MemorySettings,
}

impl Default for LlvmConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl LlvmConfig {
    /// Calls an evicted function must make before it may be promoted again
    /// (unless set with [`eviction_pause`](Self::eviction_pause)).
    pub const DEFAULT_EVICTION_PAUSE: u32 = MemorySettings::DEFAULT_EVICTION_PAUSE;

    /// The defaults: `-O2` (the tier exists for the hottest code; `-O0` is
    /// no faster than Cranelift), the host's CPU and features, no budget.
    pub fn new() -> Self {
        Self { opt_level: 2, cpu: None, features: None, memory: MemorySettings::new() }
    }

    /// The optimization pipeline, `default<On>` for `level` 0 to 3, also
    /// used for code generation (checked in [`build`](Self::build)).
    pub fn opt_level(mut self, level: u8) -> Self {
        self.opt_level = level;
        self
    }

    /// The CPU to generate code for (`"x86-64-v3"`, `"znver3"`, ...);
    /// default the host's. LLVM ignores, with a warning on stderr, a name
    /// it does not know: the code is then generic for the target.
    pub fn cpu(mut self, cpu: &str) -> Self {
        self.cpu = Some(cpu.to_owned());
        self
    }

    /// Target features, each `+name` or `-name` (`"+avx2"`); default the
    /// host CPU's. Replaces earlier calls.
    pub fn features(mut self, features: &[&str]) -> Self {
        self.features = Some(features.iter().map(|&feature| feature.to_owned()).collect());
        self
    }

    /// Makes the host function at `address` callable from generated code as
    /// `name` (see [`BuildContext::import`](crate::BuildContext::import)).
    /// Names not given here are looked up in the process (`dlsym`).
    pub fn symbol(mut self, name: &str, address: *const u8) -> Self {
        self.memory.symbol(name, address);
        self
    }

    /// Caps the code memory held by compiled units at `bytes` (page
    /// granular). When a compile reaches the cap, the coldest functions are
    /// evicted back to the interpreter. Setting a budget also makes
    /// generated code mark itself used on entry (one byte store per call).
    pub fn code_budget(mut self, bytes: usize) -> Self {
        self.memory.code_budget(bytes);
        self
    }

    /// Calls an evicted function must make before kiln asks its hotness
    /// policy again (default [`DEFAULT_EVICTION_PAUSE`](Self::DEFAULT_EVICTION_PAUSE)).
    pub fn eviction_pause(mut self, calls: u32) -> Self {
        self.memory.eviction_pause(calls);
        self
    }

    /// Checks every setting and builds the backend (and its LLJIT) for
    /// this machine.
    pub fn build(self) -> Result<LlvmBackend, ConfigError> {
        if self.opt_level > 3 {
            return Err(ConfigError::BadOptLevel { level: self.opt_level });
        }
        if let Some(bad) = self.features.iter().flatten().find(|feature| !feature.starts_with(['+', '-'])) {
            return Err(ConfigError::BadFeature { feature: bad.clone() });
        }
        LlvmBackend::from_config(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opt_level_builds_and_four_is_refused() {
        for level in 0..=3 {
            LlvmConfig::new().opt_level(level).build().unwrap_or_else(|e| panic!("-O{level}: {e}"));
        }
        let error = LlvmConfig::new().opt_level(4).build().unwrap_err();
        assert_eq!(error, ConfigError::BadOptLevel { level: 4 });
        assert!(error.to_string().contains('4'), "{error}");
    }

    #[test]
    fn a_feature_without_a_sign_is_named() {
        let error = LlvmConfig::new().features(&["+sse2", "avx2"]).build().unwrap_err();
        assert_eq!(error, ConfigError::BadFeature { feature: "avx2".into() });
        #[cfg(target_arch = "x86_64")]
        LlvmConfig::new().cpu("x86-64").features(&["+sse2"]).build().unwrap();
    }
}
