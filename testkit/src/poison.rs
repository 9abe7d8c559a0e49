//! Code objects that poison themselves when released.
