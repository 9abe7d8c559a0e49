//! Typed entry points: a bead's native entry as the function-pointer type
//! it really is, with the `unsafe` said once.
//!
//! kiln hands out entries as `*mut ()`, since it never calls them. A host
//! that knows every piece of code compiled for a function has one
//! signature says so once, when it makes a [`TypedBound`]
//! ([`BoundBead::typed`], `unsafe`, with the contract below); from then on
//! its calls get `Option<extern "C" fn(..) -> ..>` back and transmute
//! nothing. The one conversion from a code address to a function pointer
//! is `code_as`, behind [`EntryFn::from_code`] (implemented by one macro
//! for the function-pointer types below), under one `// SAFETY:` argument.
//!
//! OSR entries take the loop's live values, not the function's arguments,
//! so they have other signatures: they stay untyped
//! ([`BoundBead::bead`]`().osr_entry(site)`).

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::backend::{BoundBead, JitBackend};
use crate::bead::Bead;
use crate::promote;

mod sealed {
    /// Only function-pointer types implement [`EntryFn`](super::EntryFn).
    pub trait Sealed {}
}

/// A function-pointer type a native entry can be viewed as:
/// `extern "C" fn(A, B, ..) -> R` and `unsafe extern "C" fn(..) -> R`
/// with up to six arguments. Sealed: only these types implement it, as only
/// they are a code address and nothing else.
pub trait EntryFn: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The entry at `code` as this function-pointer type.
    ///
    /// # Safety
    ///
    /// `code` is the address of a function of exactly this signature and
    /// ABI that stays mapped while the result is used (kiln's reclamation
    /// keeps retired code mapped until the calling thread quiesces).
    unsafe fn from_code(code: NonNull<()>) -> Self;
}

/// Implements [`EntryFn`] for the safe and the unsafe `extern "C"`
/// function pointers of each listed arity.
macro_rules! entry_fns {
    ($($($arg:ident),*;)*) => { $( entry_fn_pair!($($arg),*); )* };
}

/// Implements [`EntryFn`] for the two function pointers of one arity.
macro_rules! entry_fn_pair {
    ($($arg:ident),*) => {
        impl<R: 'static, $($arg: 'static),*> sealed::Sealed for extern "C" fn($($arg),*) -> R {}
        impl<R: 'static, $($arg: 'static),*> sealed::Sealed for unsafe extern "C" fn($($arg),*) -> R {}
        impl<R: 'static, $($arg: 'static),*> EntryFn for extern "C" fn($($arg),*) -> R {
            #[inline(always)]
            unsafe fn from_code(code: NonNull<()>) -> Self {
                // SAFETY: see `code_as`.
                unsafe { code_as(code) }
            }
        }
        impl<R: 'static, $($arg: 'static),*> EntryFn for unsafe extern "C" fn($($arg),*) -> R {
            #[inline(always)]
            unsafe fn from_code(code: NonNull<()>) -> Self {
                // SAFETY: see `code_as`.
                unsafe { code_as(code) }
            }
        }
    };
}

entry_fns! {
    ;
    A;
    A, B;
    A, B, C;
    A, B, C, D;
    A, B, C, D, E;
    A, B, C, D, E, G;
}

/// The one conversion from a code address to a function pointer.
///
/// # Safety
///
/// `F` is a function-pointer type (only [`EntryFn`]'s sealed impls call
/// this), and `code` is the address of a function of `F`'s signature and
/// ABI (the contract of [`EntryFn::from_code`]).
#[inline(always)]
unsafe fn code_as<F: Copy>(code: NonNull<()>) -> F {
    const { assert!(size_of::<F>() == size_of::<*mut ()>(), "a function pointer is one address") };
    // SAFETY: `F` is a function pointer, the same size as `*mut ()` (checked
    // above) and valid for every non-null address; that `code` is a
    // function of `F`'s signature is the caller's contract (`# Safety`).
    unsafe { std::mem::transmute_copy::<*mut (), F>(&code.as_ptr()) }
}

/// A bead registered through a [`BackendAdapter`](crate::BackendAdapter)
/// whose entries are all of type `F` (made by [`BoundBead::typed`]): calls
/// return `Option<F>`, ready to call.
pub struct TypedBound<B: JitBackend, F: EntryFn> {
    bound: BoundBead<B>,
    signature: PhantomData<F>,
}

impl<B: JitBackend, F: EntryFn> Clone for TypedBound<B, F> {
    fn clone(&self) -> Self {
        Self { bound: self.bound.clone(), signature: PhantomData }
    }
}

impl<B: JitBackend, F: EntryFn> std::fmt::Debug for TypedBound<B, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedBound")
            .field("bound", &self.bound)
            .field("signature", &std::any::type_name::<F>())
            .finish()
    }
}

impl<B: JitBackend> BoundBead<B> {
    /// This bead with its entries typed as `F`: calls through the result
    /// return `Option<F>` instead of `Option<*mut ()>`.
    ///
    /// # Safety
    ///
    /// Every entry this bead will hold has `F`'s signature and ABI: what
    /// the backend compiles from the definitions the host gives for it
    /// (the attached factory's, and any passed to `on_invoke` or
    /// `compile`), and any code the host swaps in (`swap_compiled`).
    pub unsafe fn typed<F: EntryFn>(self) -> TypedBound<B, F> {
        TypedBound { bound: self, signature: PhantomData }
    }
}

impl<B: JitBackend, F: EntryFn> TypedBound<B, F> {
    /// The untyped bound bead (OSR entries, reload, the bead itself).
    pub fn bound(&self) -> &BoundBead<B> {
        &self.bound
    }

    /// The bead.
    pub fn bead(&self) -> &Arc<Bead> {
        self.bound.bead()
    }

    /// On every call, with the factory attached to the bead (see
    /// [`BackendAdapter::on_invoke_attached`](crate::BackendAdapter::on_invoke_attached)):
    /// the typed entry if compiled, else `None` (interpret). The compiled
    /// path is the same one load and branch; the conversion costs nothing.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use kiln_std::{BackendAdapter, Bead, CompileError, JitBackend, ThresholdPolicy};
    /// # struct Native;
    /// # impl JitBackend for Native {
    /// #     type FunctionDef = extern "C" fn(i64) -> i64;
    /// #     type Error = CompileError;
    /// #     fn compile(&self, _: &Arc<Bead>, def: Self::FunctionDef) -> Result<*mut (), CompileError> {
    /// #         Ok(def as *mut ())
    /// #     }
    /// # }
    /// extern "C" fn double(x: i64) -> i64 { x * 2 }
    ///
    /// let adapter = BackendAdapter::with_policy(Native, ThresholdPolicy::new(10));
    /// let bound = adapter.register_with("double", std::ptr::null_mut(), |_bead| {
    ///     Ok::<_, CompileError>(double as extern "C" fn(i64) -> i64)
    /// });
    /// // SAFETY: `Native` compiles every definition of this bead to an
    /// // `extern "C" fn(i64) -> i64`, and nothing is swapped in.
    /// let double_bead = unsafe { bound.typed::<extern "C" fn(i64) -> i64>() };
    /// let mut native = None;
    /// while native.is_none() {
    ///     native = double_bead.on_invoke();
    /// #   std::thread::yield_now();
    /// }
    /// assert_eq!(native.unwrap()(21), 42);
    /// ```
    #[inline(always)]
    pub fn on_invoke(&self) -> Option<F> {
        let entry = promote::on_invoke(self.bound.bead(), |_| crate::backend::attached_work(self.bound.backend()));
        // SAFETY: every entry of this bead has `F`'s signature (the
        // contract of `BoundBead::typed`), and an entry handed out stays
        // mapped until this thread quiesces (kiln's reclamation).
        entry.and_then(NonNull::new).map(|code| unsafe { F::from_code(code) })
    }

    /// The installed entry, typed, without counting a call.
    pub fn compiled(&self) -> Option<F> {
        // SAFETY: as in `on_invoke`.
        self.bead().compiled().and_then(NonNull::new).map(|code| unsafe { F::from_code(code) })
    }
}
