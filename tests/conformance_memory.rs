//! The conformance suite on the in-memory store: one test per case, named `memory::<case>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem::memory::MemoryStore;
use idem::{BoxError, DEFAULT_LAPSED_CLAIM_GRACE, IdempotencyStore, ManualClock};
use idem_conformance::{Backend, Capabilities, async_trait};

/// Opens a fresh `MemoryStore` per case on a manual clock; a second handle is a clone of the latest store.
struct MemoryHarness {
    clock: ManualClock,
    latest: Mutex<Option<MemoryStore>>,
}

impl MemoryHarness {
    fn new() -> Self {
        Self {
            clock: ManualClock::new(Duration::from_secs(1_000_000)),
            latest: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Backend for MemoryHarness {
    fn capabilities(&self) -> Capabilities {
        // Not durable: the store lives in the process's memory only.
        Capabilities::new()
            .shared_across_handles(true)
            .injectable_clock(true)
    }

    fn clock(&self) -> Option<ManualClock> {
        Some(self.clock.clone())
    }

    fn lapsed_claim_grace(&self) -> Option<Duration> {
        Some(DEFAULT_LAPSED_CLAIM_GRACE)
    }

    async fn open(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
        let store = MemoryStore::builder()
            .clock(Arc::new(self.clock.clone()))
            .build()?;
        *self.latest.lock().unwrap() = Some(store.clone());
        Ok(Arc::new(store))
    }

    async fn connect(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
        let store = self.latest.lock().unwrap().clone().ok_or("connect before open")?;
        Ok(Arc::new(store))
    }
}

idem_conformance::conformance_tests!(memory, || async { MemoryHarness::new() });

/// Every case runs on memory except the reopening ones: memory declares everything but durability.
#[test]
fn memory_declares_capabilities() {
    let capabilities = MemoryHarness::new().capabilities();
    assert!(!capabilities.durable);
    assert!(capabilities.shared_across_handles);
    assert!(capabilities.injectable_clock);
    assert!(!capabilities.self_expiring);
    assert_eq!(
        capabilities,
        Capabilities::new()
            .shared_across_handles(true)
            .injectable_clock(true)
    );
}
