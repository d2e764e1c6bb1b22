//! Redis backend of idem.

mod builder;
mod connection;
mod keys;
mod scripts;
mod store;
mod url;

pub use builder::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, MAX_RESPONSE_LIMIT,
    RedisStoreBuilder,
};
pub use store::RedisStore;

/// The backend name in errors and logs.
pub(crate) const BACKEND: &str = "redis";
