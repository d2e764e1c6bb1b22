//! idem: idempotency keys for Rust services.
//!
//! This facade re-exports [`idem_core`] and, behind features, the backends: `memory` ([`memory`]) and
//! `sqlite` ([`sqlite`]), both on by default, and `redis` ([`redis`]), off by default. The `http` feature,
//! off by default, adds [`http`]: a tower layer for the `Idempotency-Key` header on axum and hyper services.

pub use idem_core::*;

/// The in-memory backend (feature `memory`).
#[cfg(feature = "memory")]
pub use idem_memory as memory;

/// The SQLite backend (feature `sqlite`).
#[cfg(feature = "sqlite")]
pub use idem_sqlite as sqlite;

/// The Redis and Redis Cluster backend (feature `redis`).
#[cfg(feature = "redis")]
pub use idem_redis as redis;

/// The tower layer for the `Idempotency-Key` HTTP header (feature `http`).
#[cfg(feature = "http")]
pub use idem_http as http;
