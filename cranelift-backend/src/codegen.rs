//! Codegen: one definition → one finished `JITModule` holding its normal
//! entry and its OSR entries.
//!
//! Everything here runs without the backend's lock, so several workers can
//! compile at once. Host callbacks and Cranelift run under `catch_unwind`
//! (kiln-backend-kit's `catch_panic`):
//! a panic becomes a [`CraneliftError`], and a failed compile frees whatever
//! code memory its module had mapped before the error is returned (no code
//! pointer of it ever left this module).

use std::panic::{AssertUnwindSafe, catch_unwind};

use cranelift_codegen::CodegenError;
use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, UserFuncName, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleError, default_libcall_names};
use kiln_backend_kit::{Code, catch_panic, check_osr_sites, panic_message};
use kiln_core::OsrEntry;

use crate::backend::Shared;
use crate::def::{BuildContext, Entry, Source, signature};
use crate::error::CraneliftError;
use crate::unit::UnitModule;

/// Compiles `source` into its own module, finalized but not yet registered
/// with the backend. With a budget, every entry stores 1 into the returned
/// `used` flag.
pub(crate) fn build(shared: &Shared, source: &Source) -> Result<Code<UnitModule>, CraneliftError> {
    let name = &source.name;
    check_osr_sites(name, source.osr.iter().map(|spec| spec.site).collect())?;

    let mut jit = JITBuilder::with_isa(shared.isa.clone(), default_libcall_names());
    jit.symbols(shared.symbols.iter().map(|(name, symbol)| (name.clone(), symbol.address())));
    let mut module = JITModule::new(jit);
    let used = shared.memory.use_flag();
    let used_address = used.as_deref().map(|flag| std::ptr::from_ref(flag) as i64);

    match define_all(shared, &mut module, source, used_address) {
        Ok((main, osr_ids, sizes)) => {
            let entry = module.get_finalized_function(main) as usize;
            let mut osr: Vec<OsrEntry> = osr_ids
                .into_iter()
                .map(|(site, id)| OsrEntry { site, code: module.get_finalized_function(id).cast_mut().cast() })
                .collect();
            osr.sort_by_key(|entry| entry.site);
            let bytes = code_bytes(&sizes, shared.page_size);
            Ok(Code { code: UnitModule(module), entry, osr, bytes, used })
        }
        Err(error) => {
            // SAFETY: no pointer into this module's memory was handed out:
            // `get_finalized_function` was never called on the error path.
            unsafe { module.free_memory() };
            Err(error)
        }
    }
}

type Defined = (FuncId, Vec<(u64, FuncId)>, Vec<usize>);

/// Declares, builds and defines every entry of `source`, then links the
/// module. Returns the normal entry's id, the OSR entries' ids and the
/// code size of each function (in definition order).
fn define_all(
    shared: &Shared,
    module: &mut JITModule,
    source: &Source,
    used_address: Option<i64>,
) -> Result<Defined, CraneliftError> {
    let function = &source.name;
    let module_error =
        |error: ModuleError| CraneliftError::Module { function: function.clone(), message: error.to_string() };
    let call_conv = shared.isa.default_call_conv();
    let main_signature = signature(call_conv, &source.params, &source.returns);
    let main = module.declare_function(function, Linkage::Local, &main_signature).map_err(module_error)?;
    let mut entries = vec![(Entry::Normal, main, main_signature)];
    let mut osr_ids = Vec::with_capacity(source.osr.len());
    for spec in &source.osr {
        let osr_signature = signature(call_conv, &spec.params, &source.returns);
        let id = module
            .declare_function(&format!("{function}@osr{}", spec.site), Linkage::Local, &osr_signature)
            .map_err(module_error)?;
        entries.push((Entry::Osr { site: spec.site }, id, osr_signature));
        osr_ids.push((spec.site, id));
    }

    let mut context = module.make_context();
    let mut builder_context = FunctionBuilderContext::new();
    let mut sizes = Vec::with_capacity(entries.len());
    for (entry, id, entry_signature) in entries {
        context.func.signature = entry_signature;
        context.func.name = UserFuncName::user(0, id.as_u32());
        let frontend = module.target_config();
        let mut cx = BuildContext { module, entry, main, call_conv, pointer_type: shared.isa.pointer_type() };
        let built = catch_panic(function, || {
            let mut builder = FunctionBuilder::new(&mut context.func, &mut builder_context);
            let result = (source.body)(&mut builder, &mut cx);
            if result.is_ok() {
                builder.finalize(frontend);
            }
            result
        })?;
        built.map_err(|message| CraneliftError::Build { function: function.clone(), message })?;
        if let Some(address) = used_address {
            mark_use_on_entry(&mut context.func, shared.isa.pointer_type(), address);
        }
        catch_panic(function, || {
            module.define_function(id, &mut context).map_err(|error| match error {
                ModuleError::Compilation(CodegenError::Verifier(errors)) => {
                    CraneliftError::Codegen { function: function.clone(), message: format!("invalid IR: {errors}") }
                }
                ModuleError::Compilation(error) => {
                    CraneliftError::Codegen { function: function.clone(), message: error.to_string() }
                }
                error => module_error(error),
            })
        })??;
        sizes.push(context.compiled_code().map_or(0, |code| code.code_buffer().len()));
        module.clear_context(&mut context);
    }
    // Linking resolves imports; cranelift-jit panics on an unknown symbol,
    // which is a link failure, not a panic of the host's code.
    match catch_unwind(AssertUnwindSafe(|| module.finalize_definitions().map_err(module_error))) {
        Ok(result) => result.map(|()| (main, osr_ids, sizes)),
        Err(payload) => Err(CraneliftError::Module { function: function.clone(), message: panic_message(&payload) }),
    }
}

/// Inserts `*used = 1` at the top of the function's entry block: how the
/// backend tells hot code from cold under a budget (see `cache`).
fn mark_use_on_entry(func: &mut cranelift_codegen::ir::Function, pointer_type: types::Type, address: i64) {
    let Some(entry) = func.layout.entry_block() else { return };
    let mut cursor = FuncCursor::new(func).at_first_insertion_point(entry);
    let flag = cursor.ins().iconst(pointer_type, address);
    let one = cursor.ins().iconst(types::I8, 1);
    cursor.ins().store(MemFlagsData::trusted(), one, flag, 0);
}

/// The code memory a module maps for functions of `sizes` bytes, following
/// cranelift-jit's system memory provider: functions are packed into one
/// mapping in definition order (16-byte aligned); one that does not fit
/// starts a new mapping of its size rounded up to whole pages.
pub(crate) fn code_bytes(sizes: &[usize], page_size: usize) -> usize {
    let (mut mapped, mut room, mut used) = (0usize, 0usize, 0usize);
    for &size in sizes {
        let start = used.next_multiple_of(16);
        if start + size <= room {
            used = start + size;
        } else {
            room = size.max(1).next_multiple_of(page_size);
            mapped += room;
            used = size;
        }
    }
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_bytes_follow_the_page_packing() {
        assert_eq!(code_bytes(&[], 4096), 0);
        assert_eq!(code_bytes(&[100], 4096), 4096);
        // Two small functions share a page; a third that overflows maps anew.
        assert_eq!(code_bytes(&[100, 100], 4096), 4096);
        assert_eq!(code_bytes(&[4000, 200], 4096), 8192);
        assert_eq!(code_bytes(&[5000], 4096), 8192);
    }
}
