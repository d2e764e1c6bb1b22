//! The conformance suite on the Redis store: one test per case on one server (`redis::<case>`) and on a
//! three-master Redis Cluster (`redis_cluster::<case>`).
//!
//! The server is `REDIS_URL` when set, otherwise a throwaway `redis-server` this test binary starts; the
//! cluster is `REDIS_CLUSTER_URLS` or three throwaway nodes. Each case uses a key prefix of its own, so
//! runs on a shared server never collide, and nothing is flushed. Without `redis-server` the tests print
//! why and pass, except under `CI`, where they fail.
#![cfg(feature = "redis")]

mod support;

use std::sync::{Arc, Mutex};

use idem::redis::RedisStore;
use idem::{BoxError, IdempotencyStore};
use idem_conformance::{Backend, Capabilities, async_trait};

/// Where a harness connects.
#[derive(Clone)]
enum Target {
    Single(String),
    Cluster(Vec<String>),
}

/// Connects each case's stores with a key prefix no other case or run uses. A second handle and a
/// reopening connect a new client with the latest prefix; the harness keeps no handle of its own.
struct RedisHarness {
    target: Target,
    latest_prefix: Mutex<Option<String>>,
}

impl RedisHarness {
    fn new(target: Target) -> Self {
        Self {
            target,
            latest_prefix: Mutex::new(None),
        }
    }

    async fn connect_with(&self, prefix: String) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
        let builder = match &self.target {
            Target::Single(url) => RedisStore::builder(url),
            Target::Cluster(urls) => RedisStore::cluster_builder(urls.clone()),
        };
        let store = builder.key_prefix(prefix).connect().await?;
        Ok(Arc::new(store))
    }
}

/// What the Redis store declares: the server's clock cannot be injected, so expiry cases sleep past short
/// real TTLs; Redis drops expired keys itself; every client sees one state. It is not declared durable,
/// because the servers these tests start keep no data across a restart (`--save "" --appendonly no`), and
/// a server from `REDIS_URL` may not either. tests/redis_faults.rs runs the reopening cases on a server
/// with an append-only file.
fn redis_capabilities() -> Capabilities {
    Capabilities::new()
        .shared_across_handles(true)
        .self_expiring(true)
}

#[async_trait]
impl Backend for RedisHarness {
    fn capabilities(&self) -> Capabilities {
        redis_capabilities()
    }

    async fn open(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
        let prefix = support::redis::unique_prefix();
        *self.latest_prefix.lock().unwrap() = Some(prefix.clone());
        self.connect_with(prefix).await
    }

    async fn connect(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
        let prefix = self
            .latest_prefix
            .lock()
            .unwrap()
            .clone()
            .ok_or("connect before open")?;
        self.connect_with(prefix).await
    }
}

// The factory block returns from the generated test, after the fixture printed why, when no server is
// available outside CI.
idem_conformance::conformance_tests!(redis, {
    let Some(url) = support::redis::redis_target() else {
        return;
    };
    move || async move { RedisHarness::new(Target::Single(url)) }
});

idem_conformance::conformance_tests!(redis_cluster, {
    let Some(urls) = support::redis::redis_cluster_target() else {
        return;
    };
    move || async move { RedisHarness::new(Target::Cluster(urls)) }
});

/// The declaration that decides which cases run: no injectable clock, not durable, shared and self-expiring.
#[test]
fn redis_declares_capabilities() {
    let capabilities = redis_capabilities();
    assert!(!capabilities.injectable_clock);
    assert!(!capabilities.durable);
    assert!(capabilities.shared_across_handles);
    assert!(capabilities.self_expiring);
}
