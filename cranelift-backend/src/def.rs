//! `FunctionDef`: what the host hands the backend for one function — its
//! signature, its OSR entries, and a callback that builds its body in
//! Cranelift IR through a `FunctionBuilder`.
//!
//! # OSR entries are extra entry blocks
//!
//! A Cranelift function has one entry block. An OSR entry at loop `site` is
//! therefore compiled as a sibling function in the same module: the body
//! callback runs once per entry, told by [`BuildContext::entry`] which one
//! it builds. For [`Entry::Osr`], it makes an entry block that takes the
//! OSR parameters (typically a pointer to the interpreter's frame), loads
//! the live values, and jumps to the loop header; the rest of the body is
//! built as for the normal entry (the code before the loop becomes
//! unreachable and Cranelift drops it). The site key is whatever the
//! interpreter and the IR agree on (a bytecode offset, say), the same key
//! the interpreter passes to `osr_entry(site)`.
//!
//! The callback is `Fn + Send + Sync` because it runs once per entry and on
//! whichever thread compiles (kiln's broker thread, a job-system worker).

use std::sync::Arc;

use cranelift_codegen::ir::{AbiParam, ExtFuncData, ExternalName, FuncRef, Signature, Type, UserExternalName};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};

#[cfg(feature = "std-adapter")]
use crate::error::CraneliftError;
#[cfg(feature = "std-adapter")]
use crate::jit_backend::PreparedUnit;

/// Which entry of a function the body callback is building.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// The function's own entry, with the definition's parameters.
    Normal,
    /// The OSR entry at loop `site`, with the parameters given to
    /// [`FunctionDef::osr_entry`].
    Osr {
        /// The loop-header key.
        site: u64,
    },
}

/// The body callback's type: builds one entry of the function into the
/// builder (blocks filled and sealed; the backend calls `finalize`).
/// An `Err` is a failed compile ([`CraneliftError::Build`](crate::CraneliftError::Build)).
pub type BodyBuilder = dyn Fn(&mut FunctionBuilder<'_>, &mut BuildContext<'_>) -> Result<(), String> + Send + Sync;

/// One OSR entry's declaration.
#[derive(Clone, Debug)]
pub(crate) struct OsrSpec {
    pub(crate) site: u64,
    pub(crate) params: Vec<Type>,
}

/// The source form of a definition.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) params: Vec<Type>,
    pub(crate) returns: Vec<Type>,
    pub(crate) osr: Vec<OsrSpec>,
    pub(crate) body: Arc<BodyBuilder>,
}

/// What a definition holds.
pub(crate) enum DefKind {
    /// IR still to be built and compiled.
    Source(Source),
    /// Compiled already by `CraneliftBackend::prepare` (kiln-std adapter),
    /// or `prepare`'s error, which compiling this reports.
    #[cfg(feature = "std-adapter")]
    Prepared(Result<PreparedUnit, CraneliftError>),
}

/// A function for the backend to compile: name, signature (Cranelift value
/// types; the backend adds the host calling convention), optional OSR
/// entries, and the body callback.
///
/// ```
/// use cranelift_codegen::ir::{types::I64, InstBuilder};
/// use kiln_cranelift::{CraneliftConfig, FunctionDef};
///
/// let backend = CraneliftConfig::new().build().unwrap();
/// let add_one = FunctionDef::new("add_one", &[I64], &[I64], |builder, _cx| {
///     let block = builder.create_block();
///     builder.append_block_params_for_function_params(block);
///     builder.switch_to_block(block);
///     builder.seal_block(block);
///     let x = builder.block_params(block)[0];
///     let y = builder.ins().iadd_imm_s(x, 1);
///     builder.ins().return_(&[y]);
///     Ok(())
/// });
/// let code = backend.compile_function(add_one).unwrap();
/// // SAFETY (example): the code was built with this signature.
/// let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code.entry()) };
/// assert_eq!(f(41), 42);
/// // SAFETY (example): nothing runs the code any more.
/// unsafe { backend.free(code.handle()) };
/// ```
pub struct FunctionDef {
    pub(crate) kind: DefKind,
}

impl std::fmt::Debug for FunctionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            DefKind::Source(source) => f
                .debug_struct("FunctionDef")
                .field("name", &source.name)
                .field("params", &source.params)
                .field("returns", &source.returns)
                .field("osr_sites", &source.osr.iter().map(|spec| spec.site).collect::<Vec<_>>())
                .finish_non_exhaustive(),
            #[cfg(feature = "std-adapter")]
            DefKind::Prepared(Ok(unit)) => f.debug_tuple("FunctionDef::Prepared").field(unit).finish(),
            #[cfg(feature = "std-adapter")]
            DefKind::Prepared(Err(error)) => f.debug_tuple("FunctionDef::Failed").field(error).finish(),
        }
    }
}

impl FunctionDef {
    /// A function `name(params) -> returns` whose body `body` builds.
    pub fn new(
        name: impl Into<String>,
        params: &[Type],
        returns: &[Type],
        body: impl Fn(&mut FunctionBuilder<'_>, &mut BuildContext<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self::with_body(name, params, returns, Arc::new(body))
    }

    /// [`new`](Self::new) with a shared body callback (one callback for
    /// many definitions, say every function of a script).
    pub fn with_body(name: impl Into<String>, params: &[Type], returns: &[Type], body: Arc<BodyBuilder>) -> Self {
        let source =
            Source { name: name.into(), params: params.to_vec(), returns: returns.to_vec(), osr: Vec::new(), body };
        Self { kind: DefKind::Source(source) }
    }

    /// Adds an OSR entry at loop `site` taking `params` and returning what
    /// the function returns. The body callback is called again with
    /// [`Entry::Osr`] to build it. Has no effect on a prepared definition.
    pub fn osr_entry(mut self, site: u64, params: &[Type]) -> Self {
        match &mut self.kind {
            DefKind::Source(source) => source.osr.push(OsrSpec { site, params: params.to_vec() }),
            #[cfg(feature = "std-adapter")]
            DefKind::Prepared(_) => {}
        }
        self
    }

    /// The function's name (empty for a definition whose preparation failed).
    pub fn name(&self) -> &str {
        match &self.kind {
            DefKind::Source(source) => &source.name,
            #[cfg(feature = "std-adapter")]
            DefKind::Prepared(Ok(unit)) => unit.name(),
            #[cfg(feature = "std-adapter")]
            DefKind::Prepared(Err(error)) => error.function().unwrap_or(""),
        }
    }

    /// The OSR sites declared, in the order given.
    pub fn osr_sites(&self) -> Vec<u64> {
        match &self.kind {
            DefKind::Source(source) => source.osr.iter().map(|spec| spec.site).collect(),
            #[cfg(feature = "std-adapter")]
            DefKind::Prepared(Ok(unit)) => unit.osr_sites(),
            #[cfg(feature = "std-adapter")]
            DefKind::Prepared(Err(_)) => Vec::new(),
        }
    }
}

/// What the body callback can ask of the backend while it builds one entry.
pub struct BuildContext<'m> {
    pub(crate) module: &'m mut JITModule,
    pub(crate) entry: Entry,
    pub(crate) main: FuncId,
    pub(crate) call_conv: CallConv,
    pub(crate) pointer_type: Type,
}

impl std::fmt::Debug for BuildContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext").field("entry", &self.entry).finish_non_exhaustive()
    }
}

impl BuildContext<'_> {
    /// Which entry is being built.
    pub fn entry(&self) -> Entry {
        self.entry
    }

    /// The host's pointer type (for frame pointers, addresses).
    pub fn pointer_type(&self) -> Type {
        self.pointer_type
    }

    /// A host-calling-convention signature `(params) -> returns`.
    pub fn signature(&self, params: &[Type], returns: &[Type]) -> Signature {
        signature(self.call_conv, params, returns)
    }

    /// A reference for calling the function's own normal entry (direct
    /// recursion, natively: no trip through the interpreter or kiln).
    /// From the normal entry it is a near call; from an OSR entry a call
    /// through an absolute address (the two may sit in different pages).
    pub fn call_self(&mut self, builder: &mut FunctionBuilder<'_>) -> FuncRef {
        let func_ref = self.module.declare_func_in_func(self.main, builder.func);
        if self.entry != Entry::Normal {
            builder.func.dfg.ext_funcs[func_ref].colocated = false;
        }
        func_ref
    }

    /// A reference for calling the host function `name` (registered with
    /// [`CraneliftConfig::symbol`](crate::CraneliftConfig::symbol), else
    /// looked up in the process), called with absolute addressing. An
    /// unknown name fails the compile when the module is linked.
    pub fn import(
        &mut self,
        builder: &mut FunctionBuilder<'_>,
        name: &str,
        params: &[Type],
        returns: &[Type],
    ) -> Result<FuncRef, String> {
        let signature = self.signature(params, returns);
        let id = self.module.declare_function(name, Linkage::Import, &signature).map_err(|e| e.to_string())?;
        let signature = builder.import_signature(signature);
        let name = builder.func.declare_imported_user_function(UserExternalName { namespace: 0, index: id.as_u32() });
        Ok(builder.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        }))
    }
}

/// `(params) -> returns` in `call_conv`.
pub(crate) fn signature(call_conv: CallConv, params: &[Type], returns: &[Type]) -> Signature {
    let mut signature = Signature::new(call_conv);
    signature.params.extend(params.iter().copied().map(AbiParam::new));
    signature.returns.extend(returns.iter().copied().map(AbiParam::new));
    signature
}
