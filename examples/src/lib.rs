//! # kiln-examples
//!
//! A tiny language with two tiers, for kiln's runnable examples: source →
//! [`ast`] ([`parse`]) → a small register IR ([`ir`]), run by an
//! [`interp`]reter and compiled from the same IR by Cranelift ([`jit`]).
//! The examples put kiln between the two:
//!
//! - `fib` — the seed's table: kiln-std promotes hot functions to Cranelift
//!   code (`cargo run --release -p kiln-examples --example fib`);
//! - `osr` — one long loop started in the interpreter jumps into compiled
//!   code at its loop header (kiln-core's back-edge counting and OSR);
//! - `code_memory` — resident memory across 10,000 compile → retire →
//!   quiesce cycles;
//! - `llvm_tier` (feature `llvm`) — Cranelift first, LLVM -O2 for the
//!   hottest (module `llvm`, the same IR lowered to LLVM), OSR from the
//!   interpreter into LLVM code, and out of a running Cranelift loop into
//!   LLVM code through [`probe`]s.
//! - `storm` — the warm-up storm ([`storm`]): 1,000 functions hot at once,
//!   kiln-std beside beadie 0.3 (feature `beadie`).

pub mod ast;
pub mod interp;
pub mod ir;
pub mod jit;
#[cfg(feature = "llvm")]
pub mod llvm;
#[cfg(test)]
mod lowering_checks;
pub mod parse;
pub mod probe;
pub mod rss;
pub mod storm;
