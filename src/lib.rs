//! idem: idempotency keys for Rust services.
#![doc = "See the README for a guide."]

pub use idem_core::*;
