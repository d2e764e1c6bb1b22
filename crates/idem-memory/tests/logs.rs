//! Log events: warnings for takeovers and early evictions, keys only as labels, never response bytes.

mod common;
#[path = "../../../tests/support/logs.rs"]
mod logs;

use common::*;
use idem_core::{IdempotencyKey, IdempotencyStore};
use logs::Capture;

fn label_hash(key: &IdempotencyKey) -> String {
    key.label().hash().to_string()
}

#[tokio::test]
async fn takeover_logs_warning() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (store, clock) = manual_store();
    let key = IdempotencyKey::new("tenant-a", "secret-order-id").unwrap();
    let fp = fingerprint(b"fp");

    acquire(&store, &key, &fp, ttl_ms(100)).await;
    assert!(capture.warnings().is_empty());
    clock.advance(ms(100));
    acquire(&store, &key, &fp, ttl_ms(100)).await;

    let warnings = capture.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("took over"), "{warnings:?}");
    assert!(warnings[0].contains(&label_hash(&key)), "{warnings:?}");
    for line in capture.lines() {
        assert!(!line.contains("secret-order-id"), "{line}");
    }
}

#[tokio::test]
async fn eviction_logs_label_only() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (builder, _clock) = manual_builder();
    let store = builder.max_completed_bytes(1).build().unwrap();
    let key = IdempotencyKey::new("tenant-a", "secret-payment-id").unwrap();
    let fp = fingerprint(b"fp");

    let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;
    store
        .complete(&lease, b"response-body-marker", ttl_ms(60_000))
        .await
        .unwrap();
    assert_eq!(store.evicted_completed(), 1);

    let warnings = capture.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("evicted"), "{warnings:?}");
    assert!(warnings[0].contains(&label_hash(&key)), "{warnings:?}");
    let debug = capture.at_level("DEBUG");
    assert!(!debug.is_empty(), "{:?}", capture.lines());
    for line in capture.lines() {
        assert!(!line.contains("secret-payment-id"), "{line}");
        assert!(!line.contains("response-body-marker"), "{line}");
    }
}
