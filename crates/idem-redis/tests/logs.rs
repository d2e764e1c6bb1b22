//! Log events of the Redis store: URLs only with the password replaced, keys only as labels.
//!
//! Uses the root test fixture's throwaway servers. Without `redis-server` the test prints why and passes,
//! except under `CI`, where it fails.

#[path = "../../../tests/support/mod.rs"]
mod support;

use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, Ttl};
use idem_redis::RedisStore;
use support::logs::Capture;
use support::redis::{RedisOptions, RedisServer, is_on_path, running_in_ci, unique_prefix};

/// The store logs its work with the URL redacted, and no event contains the password or the key string.
#[tokio::test(flavor = "current_thread")]
async fn logs_hide_password_and_key() {
    if !is_on_path("redis-server") {
        assert!(
            !running_in_ci(),
            "redis-server not found on PATH; CI requires Redis"
        );
        eprintln!(
            "SKIPPED: redis-server not found on PATH; install the redis-server package to run this test"
        );
        return;
    }
    let password = "pw-77ab-hidden";
    let server = RedisServer::start_with(RedisOptions {
        append_only: false,
        password: Some(password.to_owned()),
    });
    let capture = Capture::default();
    let _guard = capture.install();

    let store = RedisStore::builder(&server.url())
        .key_prefix(unique_prefix())
        .connect()
        .await
        .unwrap();
    let key = IdempotencyKey::new("acme", "card-4242-charge").unwrap();
    let fingerprint = Fingerprint::new(vec![1; 32]).unwrap();
    let ttl = Ttl::from_secs(60).unwrap();
    let BeginOutcome::Acquired(lease) = store.begin(&key, &fingerprint, ttl).await.unwrap() else {
        panic!("a fresh key is acquired");
    };
    store.complete(&lease, b"response-body", ttl).await.unwrap();
    store.lookup(&key).await.unwrap();
    let wrong = server.url().replace(password, "wrong-pw-99");
    assert!(RedisStore::connect(&wrong).await.is_err());

    let events = capture.lines();
    assert!(
        events
            .iter()
            .any(|event| event.contains("connected") && event.contains(":***@")),
        "the connect event shows the redacted URL: {events:#?}"
    );
    assert!(
        events.iter().any(|event| event.contains("complete: stored")),
        "{events:#?}"
    );
    for event in &events {
        assert!(!event.contains(password), "{event}");
        assert!(!event.contains("wrong-pw-99"), "{event}");
        assert!(!event.contains("card-4242-charge"), "{event}");
        assert!(!event.contains("response-body"), "{event}");
    }
}
