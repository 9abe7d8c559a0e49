//! `CraneliftConfig`: the builder that checks every Cranelift setting once,
//! up front, and turns them into a [`CraneliftBackend`].
//!
//! Settings are collected by name and applied in `build()`, so a typo is
//! one error naming the flag (or the value) instead of a panic deep inside a
//! compile on a worker thread. A name is tried as a shared Cranelift setting
//! first (`opt_level`, `enable_verifier`, ...) and then as a setting of the
//! host ISA (`has_avx2`, ...). Two shared settings are fixed by the JIT and
//! refused if set otherwise: `is_pic` (cranelift-jit needs `false`) and
//! `use_colocated_libcalls` (`false`, so libcalls may live anywhere in the
//! address space).
//!
//! Beyond Cranelift's own settings the config carries kiln's: host symbols
//! the generated code may call, the code-memory budget, and how long an
//! evicted function waits before it may be promoted again.

use std::sync::Arc;

use cranelift_codegen::settings::{self, Configurable, SetError};
use kiln_backend_kit::MemorySettings;

use crate::backend::CraneliftBackend;

/// Why a [`CraneliftConfig`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No shared or host-ISA setting has this name.
    UnknownFlag {
        /// The name given to [`CraneliftConfig::set`].
        flag: String,
    },
    /// The setting exists but does not take this value.
    BadValue {
        /// The setting.
        flag: String,
        /// The value given.
        value: String,
        /// What Cranelift said about it.
        reason: String,
    },
    /// The setting is valid for Cranelift but not for a JIT in this process.
    Unsupported {
        /// The setting.
        flag: String,
        /// The value given.
        value: String,
        /// Why the JIT cannot use it.
        reason: String,
    },
    /// Cranelift cannot generate code for the machine this runs on.
    UnsupportedHost {
        /// Cranelift's explanation.
        reason: String,
    },
    /// The settings were each valid but the ISA refused the combination.
    Isa {
        /// Cranelift's explanation.
        reason: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownFlag { flag } => write!(f, "unknown Cranelift setting `{flag}`"),
            Self::BadValue { flag, value, reason } => {
                write!(f, "bad value `{value}` for Cranelift setting `{flag}`: {reason}")
            }
            Self::Unsupported { flag, value, reason } => {
                write!(f, "Cranelift setting `{flag}={value}` is not supported by the JIT: {reason}")
            }
            Self::UnsupportedHost { reason } => write!(f, "host ISA not supported by Cranelift: {reason}"),
            Self::Isa { reason } => write!(f, "Cranelift refused the ISA settings: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Settings the JIT fixes, with the value it needs and why.
const FIXED: [(&str, &str, &str); 2] = [
    ("is_pic", "false", "cranelift-jit places code at absolute addresses"),
    ("use_colocated_libcalls", "false", "libcalls may be anywhere in the address space"),
];

/// Builds a [`CraneliftBackend`]: Cranelift settings by name, host symbols,
/// and kiln's code-memory budget.
///
/// ```
/// use kiln_cranelift::{ConfigError, CraneliftConfig};
///
/// let backend = CraneliftConfig::new().opt_level("speed").set("enable_verifier", "true").build()?;
/// # drop(backend);
///
/// let error = CraneliftConfig::new().set("opt_levle", "speed").build().unwrap_err();
/// assert_eq!(error, ConfigError::UnknownFlag { flag: "opt_levle".into() });
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CraneliftConfig {
    /// `(name, value)` in the order given; the last one for a name wins.
    settings: Vec<(String, String)>,
    /// Host symbols, code budget, eviction pause (kiln-backend-kit).
    memory: MemorySettings,
}

impl Default for CraneliftConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl CraneliftConfig {
    /// Calls an evicted function must make before it may be promoted again
    /// (unless set with [`eviction_pause`](Self::eviction_pause)).
    pub const DEFAULT_EVICTION_PAUSE: u32 = MemorySettings::DEFAULT_EVICTION_PAUSE;

    /// The defaults: `opt_level=speed` (code kiln compiles is hot by
    /// definition), the verifier on (invalid IR is a failed compile, not a
    /// crash), no code budget.
    pub fn new() -> Self {
        let settings = vec![("opt_level".to_owned(), "speed".to_owned())];
        Self { settings, memory: MemorySettings::new() }
    }

    /// Cranelift's optimisation level: `"none"`, `"speed"` or
    /// `"speed_and_size"` (checked in [`build`](Self::build)).
    pub fn opt_level(self, level: &str) -> Self {
        self.set("opt_level", level)
    }

    /// Sets a shared Cranelift setting or a setting of the host ISA by name
    /// (checked in [`build`](Self::build)).
    pub fn set(mut self, flag: &str, value: &str) -> Self {
        self.settings.push((flag.to_owned(), value.to_owned()));
        self
    }

    /// Makes the host function at `address` callable from generated code as
    /// `name` (see [`BuildContext::import`](crate::BuildContext::import)).
    /// Names not given here are looked up in the process (`dlsym`).
    pub fn symbol(mut self, name: &str, address: *const u8) -> Self {
        self.memory.symbol(name, address);
        self
    }

    /// Caps the code memory held by compiled functions at `bytes` (page
    /// granular, see the crate docs). When a compile reaches the cap, the
    /// coldest functions are evicted back to the interpreter. Setting a
    /// budget also makes generated code mark itself used on entry (one
    /// byte store per call), which is how coldness is measured.
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

    /// Checks every setting and builds the backend for this machine.
    pub fn build(self) -> Result<CraneliftBackend, ConfigError> {
        let mut shared = settings::builder();
        let mut isa =
            cranelift_native::builder().map_err(|reason| ConfigError::UnsupportedHost { reason: reason.into() })?;
        for (flag, value) in FIXED.iter().map(|&(flag, value, _)| (flag, value)) {
            shared.set(flag, value).map_err(|error| bad_setting(flag, value, error))?;
        }
        for (flag, value) in &self.settings {
            if let Some(&(_, needed, reason)) = FIXED.iter().find(|(fixed, _, _)| fixed == flag) {
                if value != needed {
                    let reason = format!("{reason}; it must be `{needed}`");
                    return Err(ConfigError::Unsupported { flag: flag.clone(), value: value.clone(), reason });
                }
                continue;
            }
            match shared.set(flag, value) {
                Ok(()) => {}
                // Not a shared setting: maybe one of the host ISA's.
                Err(SetError::BadName(_)) => isa.set(flag, value).map_err(|error| bad_setting(flag, value, error))?,
                Err(error) => return Err(bad_setting(flag, value, error)),
            }
        }
        let isa =
            isa.finish(settings::Flags::new(shared)).map_err(|error| ConfigError::Isa { reason: error.to_string() })?;
        let MemorySettings { symbols, code_budget, eviction_pause } = self.memory;
        Ok(CraneliftBackend::from_parts(Arc::clone(&isa), symbols, code_budget, eviction_pause))
    }
}

fn bad_setting(flag: &str, value: &str, error: SetError) -> ConfigError {
    match error {
        SetError::BadName(_) => ConfigError::UnknownFlag { flag: flag.to_owned() },
        SetError::BadType => ConfigError::BadValue {
            flag: flag.to_owned(),
            value: value.to_owned(),
            reason: "wrong kind of value for this setting".to_owned(),
        },
        SetError::BadValue(expected) => ConfigError::BadValue {
            flag: flag.to_owned(),
            value: value.to_owned(),
            reason: format!("expected {expected}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opt_level_builds() {
        for level in ["none", "speed", "speed_and_size"] {
            CraneliftConfig::new().opt_level(level).build().unwrap_or_else(|e| panic!("{level}: {e}"));
        }
    }

    #[test]
    fn an_unknown_flag_is_named() {
        let error = CraneliftConfig::new().set("no_such_flag", "true").build().unwrap_err();
        assert_eq!(error, ConfigError::UnknownFlag { flag: "no_such_flag".into() });
        assert!(error.to_string().contains("no_such_flag"), "{error}");
    }

    #[test]
    fn a_bad_value_names_the_flag_and_the_value() {
        let error = CraneliftConfig::new().opt_level("fastest").build().unwrap_err();
        let ConfigError::BadValue { flag, value, .. } = &error else { panic!("{error:?}") };
        assert_eq!((flag.as_str(), value.as_str()), ("opt_level", "fastest"));
        let message = error.to_string();
        assert!(message.contains("opt_level") && message.contains("fastest"), "{message}");

        let error = CraneliftConfig::new().set("enable_verifier", "maybe").build().unwrap_err();
        assert!(matches!(&error, ConfigError::BadValue { flag, .. } if flag == "enable_verifier"), "{error:?}");
    }

    #[test]
    fn settings_the_jit_fixes_are_refused_if_changed() {
        let error = CraneliftConfig::new().set("is_pic", "true").build().unwrap_err();
        assert!(matches!(&error, ConfigError::Unsupported { flag, .. } if flag == "is_pic"), "{error:?}");
        // Restating the value the JIT needs is fine.
        CraneliftConfig::new().set("is_pic", "false").set("use_colocated_libcalls", "false").build().unwrap();
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn host_isa_settings_are_accepted_by_name() {
        CraneliftConfig::new().set("has_sse41", "true").build().unwrap();
        let error = CraneliftConfig::new().set("has_sse41", "sometimes").build().unwrap_err();
        assert!(matches!(&error, ConfigError::BadValue { flag, .. } if flag == "has_sse41"), "{error:?}");
    }
}
