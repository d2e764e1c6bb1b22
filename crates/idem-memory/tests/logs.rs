//! Log events: warnings for takeovers and early evictions, keys only as labels, never response bytes.

mod common;

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use idem_core::{IdempotencyKey, IdempotencyStore};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One captured event: its level and every field rendered as `name=value`.
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    text: String,
}

/// A subscriber that records every event, so that tests can read what the store logged.
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Captured>>>,
    next_span: Arc<AtomicU64>,
}

struct FieldText<'a>(&'a mut String);

impl Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = String::new();
        event.record(&mut FieldText(&mut text));
        self.events.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            text,
        });
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

impl Capture {
    fn events(&self) -> Vec<Captured> {
        self.events.lock().unwrap().clone()
    }

    fn warnings(&self) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|event| event.level == Level::WARN)
            .collect()
    }
}

fn label_hash(key: &IdempotencyKey) -> String {
    key.label().hash().to_string()
}

#[tokio::test]
async fn takeover_logs_warning() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let (store, clock) = manual_store();
    let key = IdempotencyKey::new("tenant-a", "secret-order-id").unwrap();
    let fp = fingerprint(b"fp");

    acquire(&store, &key, &fp, ttl_ms(100)).await;
    assert!(capture.warnings().is_empty());
    clock.advance(ms(100));
    acquire(&store, &key, &fp, ttl_ms(100)).await;

    let warnings = capture.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].text.contains("took over"), "{warnings:?}");
    assert!(warnings[0].text.contains(&label_hash(&key)), "{warnings:?}");
    for event in capture.events() {
        assert!(!event.text.contains("secret-order-id"), "{event:?}");
    }
}

#[tokio::test]
async fn eviction_logs_label_only() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
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
    assert!(warnings[0].text.contains("evicted"), "{warnings:?}");
    assert!(warnings[0].text.contains(&label_hash(&key)), "{warnings:?}");
    let events = capture.events();
    assert!(
        events.iter().any(|event| event.level == Level::DEBUG),
        "{events:?}"
    );
    for event in events {
        assert!(!event.text.contains("secret-payment-id"), "{event:?}");
        assert!(!event.text.contains("response-body-marker"), "{event:?}");
    }
}
