//! # kiln-examples
