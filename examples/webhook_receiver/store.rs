//! Opens the idem store the receiver keeps its records in: a SQLite file, or Redis with the `redis` feature.

use std::path::Path;
use std::sync::Arc;

use idem::IdempotencyStore;
use idem::sqlite::SqliteStore;

/// Key prefix of the receiver's records on Redis, so they stay apart from other users of the server.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const REDIS_KEY_PREFIX: &str = "webhook-receiver:";

/// Opens (or creates) the SQLite store at `path` and returns it with a description for the log.
pub(crate) async fn open_sqlite(path: &Path) -> Result<(Arc<dyn IdempotencyStore>, String), String> {
    let store = SqliteStore::builder(path)
        .open()
        .await
        .map_err(|error| format!("cannot open the SQLite store {}: {error}", path.display()))?;
    Ok((Arc::new(store), format!("SQLite file {}", path.display())))
}

/// Connects to the Redis server at `url`. The URL may hold a password, so no message repeats it.
#[cfg(feature = "redis")]
pub(crate) async fn open_redis(url: &str) -> Result<(Arc<dyn IdempotencyStore>, String), String> {
    let store = idem::redis::RedisStore::builder(url)
        .key_prefix(REDIS_KEY_PREFIX)
        .connect()
        .await
        .map_err(|error| format!("cannot connect to the Redis store given by --redis-url: {error}"))?;
    Ok((Arc::new(store), format!("Redis, key prefix {REDIS_KEY_PREFIX}")))
}

/// Without the `redis` feature there is no Redis backend to connect to.
#[cfg(not(feature = "redis"))]
pub(crate) async fn open_redis(_url: &str) -> Result<(Arc<dyn IdempotencyStore>, String), String> {
    Err("--redis-url needs the redis feature; run cargo run --example webhook_receiver --features http,redis -- --redis-url URL".to_owned())
}
