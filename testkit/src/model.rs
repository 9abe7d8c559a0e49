//! The reference model of kiln-core's broker (moved here from core/tests/model.rs).
