//! Codegen: one definition → one relocatable object holding its normal
//! entry and its OSR entries, built in an LLVM context of its own.
//!
//! The steps, each of which fails as a [`LlvmError`] rather than an
//! abort: declare every entry under names unique to the unit (ORC refuses a
//! second definition of a name), run the host's body callback per entry
//! under `catch_unwind`, verify the module (LLVM's code generator aborts
//! on IR that does not verify), run the `default<On>` pipeline, and emit
//! the object with a target machine for the configured CPU. Nothing here
//! takes a lock, so several threads compile at once; the context and all
//! IR are dropped when the object is done.

use inkwell::OptimizationLevel;
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::context::Context;
use inkwell::module::Linkage;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, RelocMode, Target, TargetMachine, TargetTriple};
use kiln_backend_kit::{catch_panic, check_osr_sites};

use crate::def::{BuildContext, Entry, FunctionDef, function_type};
use crate::error::LlvmError;

/// The page size code memory is counted in.
pub(crate) const PAGE: usize = 4096;

/// What the target machine is made of (the backend's settings).
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) triple: String,
    pub(crate) cpu: String,
    pub(crate) features: String,
    pub(crate) opt_level: u8,
}

impl Machine {
    /// A target machine for these settings (one per compile: LLVM does not
    /// promise that one may emit code on two threads at once).
    pub(crate) fn target_machine(&self) -> Result<TargetMachine, String> {
        let triple = TargetTriple::create(&self.triple);
        let target = Target::from_triple(&triple).map_err(|error| error.to_string())?;
        let level = match self.opt_level {
            0 => OptimizationLevel::None,
            1 => OptimizationLevel::Less,
            2 => OptimizationLevel::Default,
            _ => OptimizationLevel::Aggressive,
        };
        // PIC, small code model: JITLink places the unit anywhere and adds
        // GOT/PLT stubs for host symbols out of a 32-bit reach.
        target
            .create_target_machine(&triple, &self.cpu, &self.features, level, RelocMode::PIC, CodeModel::Small)
            .ok_or_else(|| format!("no target machine for {} (cpu {})", self.triple, self.cpu))
    }
}

/// A compiled object, not yet linked.
pub(crate) struct Object {
    pub(crate) bytes: Vec<u8>,
    /// The symbol of each entry: the normal one first, then OSR by site.
    pub(crate) symbols: Vec<(Entry, String)>,
    /// Host symbols the code imports.
    pub(crate) imports: Vec<String>,
    /// Code memory the linked unit maps (page-rounded per segment).
    pub(crate) code_bytes: usize,
}

/// Compiles `def` into an object whose symbols carry `tag` (unique per
/// unit). With `used`, every entry stores 1 into that byte first.
pub(crate) fn build(machine: &Machine, def: &FunctionDef, tag: u64, used: Option<usize>) -> Result<Object, LlvmError> {
    let function = &def.name;
    let invalid = |message: String| LlvmError::InvalidDefinition { function: function.clone(), message };
    check_osr_sites(function, def.osr_sites())?;
    if function.contains('\0') {
        return Err(invalid("the name contains NUL".into()));
    }
    catch_panic(function, || build_in_context(machine, def, tag, used))?
}

fn build_in_context(machine: &Machine, def: &FunctionDef, tag: u64, used: Option<usize>) -> Result<Object, LlvmError> {
    let function = &def.name;
    let codegen = |message: String| LlvmError::Codegen { function: function.clone(), message };
    let target_machine = machine.target_machine().map_err(codegen)?;
    let context = Context::create();
    let module = context.create_module(function);
    module.set_triple(&target_machine.get_triple());
    module.set_data_layout(&target_machine.get_target_data().get_data_layout());
    let builder = context.create_builder();
    // The code never unwinds (host call-outs are `extern "C"`): no unwind
    // tables, so the unit maps no `.eh_frame`.
    let nounwind = context.create_enum_attribute(Attribute::get_named_enum_kind_id("nounwind"), 0);

    let main_name = format!("{function}.k{tag}");
    let main =
        module.add_function(&main_name, function_type(&context, &def.params, def.returns), Some(Linkage::External));
    let mut entries = vec![(Entry::Normal, main, main_name)];
    let mut osr = def.osr.clone();
    osr.sort_by_key(|spec| spec.site);
    for spec in &osr {
        let name = format!("{function}.k{tag}.osr{}", spec.site);
        let ty = function_type(&context, &spec.params, def.returns);
        entries.push((Entry::Osr { site: spec.site }, module.add_function(&name, ty, Some(Linkage::External)), name));
    }

    let mut imports = Vec::new();
    for (entry, value, _) in &entries {
        value.add_attribute(AttributeLoc::Function, nounwind);
        let mut cx = BuildContext {
            context: &context,
            module: &module,
            builder: &builder,
            function: *value,
            main,
            entry: *entry,
            imports: &mut imports,
        };
        catch_panic(function, || (def.body)(&mut cx))?
            .map_err(|message| LlvmError::Build { function: function.clone(), message })?;
        if let Some(address) = used {
            mark_use_on_entry(&context, &builder, *value, address).map_err(codegen)?;
        }
    }
    module.verify().map_err(|message| LlvmError::Verifier {
        function: function.clone(),
        message: message.to_string().trim_end().to_owned(),
    })?;
    let pipeline = format!("default<O{}>", machine.opt_level);
    module.run_passes(&pipeline, &target_machine, PassBuilderOptions::create()).map_err(|e| codegen(e.to_string()))?;
    let buffer =
        target_machine.write_to_memory_buffer(&module, FileType::Object).map_err(|e| codegen(e.to_string()))?;
    let code_bytes = mapped_bytes(&buffer).map_err(codegen)?;
    let symbols = entries.into_iter().map(|(entry, _, name)| (entry, name)).collect();
    Ok(Object { bytes: buffer.as_slice().to_vec(), symbols, imports, code_bytes })
}

/// Makes `function` store 1 into the byte at `address` before anything else.
fn mark_use_on_entry<'ctx>(
    context: &'ctx Context,
    builder: &inkwell::builder::Builder<'ctx>,
    function: inkwell::values::FunctionValue<'ctx>,
    address: usize,
) -> Result<(), String> {
    let Some(first) = function.get_first_basic_block() else { return Ok(()) };
    match first.get_first_instruction() {
        Some(instruction) => builder.position_before(&instruction),
        None => builder.position_at_end(first),
    }
    let flag = context.i64_type().const_int(address as u64, false);
    let pointer = builder
        .build_int_to_ptr(flag, context.ptr_type(inkwell::AddressSpace::default()), "kiln.used")
        .map_err(|error| error.to_string())?;
    builder.build_store(pointer, context.i8_type().const_int(1, false)).map_err(|error| error.to_string())?;
    Ok(())
}

/// The memory JITLink maps for the object: its allocated sections grouped
/// by permission (code; read-only data; writable data), each group rounded
/// up to whole pages. JITLink's own GOT and stub entries come on top of
/// this and are not counted.
fn mapped_bytes(buffer: &inkwell::memory_buffer::MemoryBuffer<'_>) -> Result<usize, String> {
    let binary = buffer.create_binary_file(None).map_err(|error| error.to_string())?;
    let mut sections = binary.get_sections().ok_or("the object has no section table")?;
    let (mut code, mut read_only, mut writable) = (0usize, 0usize, 0usize);
    while let Some(section) = sections.next_section() {
        let name = section.get_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let size = section.get_size() as usize;
        if name.starts_with(".text") {
            code += size;
        } else if name.starts_with(".rodata") || name.starts_with(".eh_frame") {
            read_only += size;
        } else if name.starts_with(".data") || name.starts_with(".bss") {
            writable += size;
        }
    }
    Ok([code, read_only, writable].iter().map(|bytes| bytes.next_multiple_of(PAGE)).sum())
}
