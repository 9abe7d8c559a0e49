//! `FunctionDef`: what the host hands the backend for one function — its
//! signature, its OSR entries, and a callback that builds its body as LLVM
//! IR through inkwell.
//!
//! # Entries are sibling functions
//!
//! As in kiln-cranelift, every entry is a function of its own in the
//! unit's module: the body callback runs once per entry, told by
//! [`BuildContext::entry`] which one it builds. For [`Entry::Osr`] it loads
//! the live values from the OSR parameters (typically a pointer to the
//! interpreter's frame) and branches to the loop header; the code before the
//! loop becomes unreachable and the optimizer drops it. The site key is
//! whatever the interpreter and the IR agree on, the same key the
//! interpreter passes to `osr_entry(site)`.
//!
//! The callback is `Fn + Send + Sync` because it runs once per entry and on
//! whichever thread compiles. inkwell's types carry the lifetime of their
//! LLVM context, which lives only for one compile: the callback is
//! generic over it (`for<'ctx>`), so no LLVM value can escape a compile.

use std::sync::Arc;

use inkwell::AddressSpace;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, BasicType, BasicTypeEnum, FunctionType};
use inkwell::values::FunctionValue;

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

/// A parameter or return type of an entry (the host calling convention,
/// `extern "C"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f64`.
    F64,
    /// A pointer (address space 0).
    Ptr,
}

impl ValueType {
    /// The LLVM type in `context`.
    pub fn llvm<'ctx>(self, context: &'ctx Context) -> BasicTypeEnum<'ctx> {
        match self {
            Self::I32 => context.i32_type().into(),
            Self::I64 => context.i64_type().into(),
            Self::F64 => context.f64_type().into(),
            Self::Ptr => context.ptr_type(AddressSpace::default()).into(),
        }
    }
}

/// `(params) -> returns` in `context` (void for no return).
pub(crate) fn function_type<'ctx>(
    context: &'ctx Context,
    params: &[ValueType],
    returns: Option<ValueType>,
) -> FunctionType<'ctx> {
    let params: Vec<BasicMetadataTypeEnum<'ctx>> = params.iter().map(|param| param.llvm(context).into()).collect();
    match returns {
        Some(returns) => returns.llvm(context).fn_type(&params, false),
        None => context.void_type().fn_type(&params, false),
    }
}

/// The body callback's type: builds one entry into
/// [`BuildContext::function`] (every block terminated). An `Err` is a
/// failed compile ([`LlvmError::Build`](crate::LlvmError::Build)).
pub type BodyBuilder = dyn for<'a, 'ctx> Fn(&mut BuildContext<'a, 'ctx>) -> Result<(), String> + Send + Sync;

/// One OSR entry's declaration.
#[derive(Clone, Debug)]
pub(crate) struct OsrSpec {
    pub(crate) site: u64,
    pub(crate) params: Vec<ValueType>,
}

/// A function for the backend to compile: name, signature, optional OSR
/// entries, and the body callback.
///
/// ```
/// use kiln_llvm::{FunctionDef, LlvmConfig, ValueType};
///
/// let backend = LlvmConfig::new().build().unwrap();
/// let add_one = FunctionDef::new("add_one", &[ValueType::I64], Some(ValueType::I64), |cx| {
///     let block = cx.context().append_basic_block(cx.function(), "entry");
///     cx.builder().position_at_end(block);
///     let x = cx.function().get_nth_param(0).unwrap().into_int_value();
///     let one = cx.context().i64_type().const_int(1, false);
///     let y = cx.builder().build_int_add(x, one, "y").map_err(|e| e.to_string())?;
///     cx.builder().build_return(Some(&y)).map_err(|e| e.to_string())?;
///     Ok(())
/// });
/// let code = backend.compile_function(add_one).unwrap();
/// // SAFETY (example): the code was built with this signature.
/// let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code.entry()) };
/// assert_eq!(f(41), 42);
/// // SAFETY (example): nothing runs the code any more.
/// unsafe { backend.free(code.handle()) };
/// ```
#[derive(Clone)]
pub struct FunctionDef {
    pub(crate) name: String,
    pub(crate) params: Vec<ValueType>,
    pub(crate) returns: Option<ValueType>,
    pub(crate) osr: Vec<OsrSpec>,
    pub(crate) body: Arc<BodyBuilder>,
}

impl std::fmt::Debug for FunctionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionDef")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("returns", &self.returns)
            .field("osr_sites", &self.osr_sites())
            .finish_non_exhaustive()
    }
}

impl FunctionDef {
    /// A function `name(params) -> returns` whose body `body` builds.
    pub fn new(
        name: impl Into<String>,
        params: &[ValueType],
        returns: Option<ValueType>,
        body: impl for<'a, 'ctx> Fn(&mut BuildContext<'a, 'ctx>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self::with_body(name, params, returns, Arc::new(body))
    }

    /// [`new`](Self::new) with a shared body callback.
    pub fn with_body(
        name: impl Into<String>,
        params: &[ValueType],
        returns: Option<ValueType>,
        body: Arc<BodyBuilder>,
    ) -> Self {
        Self { name: name.into(), params: params.to_vec(), returns, osr: Vec::new(), body }
    }

    /// Adds an OSR entry at loop `site` taking `params` and returning what
    /// the function returns. The body callback runs again with
    /// [`Entry::Osr`] to build it.
    pub fn osr_entry(mut self, site: u64, params: &[ValueType]) -> Self {
        self.osr.push(OsrSpec { site, params: params.to_vec() });
        self
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OSR sites declared, in the order given.
    pub fn osr_sites(&self) -> Vec<u64> {
        self.osr.iter().map(|spec| spec.site).collect()
    }
}

/// What the body callback can ask of the backend while it builds one entry:
/// the unit's LLVM context, module and builder, the function to fill, and
/// references to the function's own entry and to host symbols.
pub struct BuildContext<'a, 'ctx> {
    pub(crate) context: &'ctx Context,
    pub(crate) module: &'a Module<'ctx>,
    pub(crate) builder: &'a Builder<'ctx>,
    pub(crate) function: FunctionValue<'ctx>,
    pub(crate) main: FunctionValue<'ctx>,
    pub(crate) entry: Entry,
    /// Host symbols the body imported (resolved before linking).
    pub(crate) imports: &'a mut Vec<String>,
}

impl std::fmt::Debug for BuildContext<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext").field("entry", &self.entry).finish_non_exhaustive()
    }
}

impl<'a, 'ctx> BuildContext<'a, 'ctx> {
    /// Which entry is being built.
    pub fn entry(&self) -> Entry {
        self.entry
    }

    /// The unit's LLVM context.
    pub fn context(&self) -> &'ctx Context {
        self.context
    }

    /// The unit's module (one per compile).
    pub fn module(&self) -> &'a Module<'ctx> {
        self.module
    }

    /// The instruction builder (position it in a block of [`function`](Self::function)).
    pub fn builder(&self) -> &'a Builder<'ctx> {
        self.builder
    }

    /// The entry being built, declared with its signature and empty.
    pub fn function(&self) -> FunctionValue<'ctx> {
        self.function
    }

    /// The function's normal entry, for direct native recursion (no trip
    /// through the interpreter or kiln). From the normal entry it is
    /// [`function`](Self::function) itself.
    pub fn call_self(&self) -> FunctionValue<'ctx> {
        self.main
    }

    /// A declaration of host function `name` with type `ty`, registered
    /// with [`LlvmConfig::symbol`](crate::LlvmConfig::symbol) or else looked
    /// up in the process. An unknown name fails the compile
    /// ([`LlvmError::MissingSymbol`](crate::LlvmError::MissingSymbol))
    /// before anything is linked.
    pub fn import(&mut self, name: &str, ty: FunctionType<'ctx>) -> FunctionValue<'ctx> {
        if !self.imports.iter().any(|imported| imported == name) {
            self.imports.push(name.to_owned());
        }
        self.module.get_function(name).unwrap_or_else(|| self.module.add_function(name, ty, Some(Linkage::External)))
    }
}
