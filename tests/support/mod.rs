//! Fixtures shared by the root integration tests. A test file includes them with `mod support;`.
//!
//! Each test file compiles this module on its own, so items one file leaves unused are not dead code.
#![allow(dead_code)]

pub(crate) mod redis;

pub(crate) mod logs;
