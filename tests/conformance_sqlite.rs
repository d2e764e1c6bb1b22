//! The conformance suite on the SQLite store: one test per case, named `sqlite::<case>`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem::sqlite::SqliteStore;
use idem::{BoxError, DEFAULT_LAPSED_CLAIM_GRACE, IdempotencyStore, ManualClock};
use idem_conformance::{Backend, Capabilities, async_trait};
use tempfile::TempDir;

/// Opens each case's store in a new file of one temporary directory, on a manual clock. A second handle
/// and a reopening both open the latest file again; the harness keeps no handle of its own.
struct SqliteHarness {
    dir: TempDir,
    clock: ManualClock,
    latest: Mutex<Option<PathBuf>>,
    opened: Mutex<u32>,
}

impl SqliteHarness {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            // A wall-clock-like start, as the SQLite store's default clock counts from the Unix epoch.
            clock: ManualClock::new(Duration::from_secs(1_700_000_000)),
            latest: Mutex::new(None),
            opened: Mutex::new(0),
        }
    }

    async fn open_path(&self, path: PathBuf) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
        let store = SqliteStore::builder(path)
            .clock(Arc::new(self.clock.clone()))
            .open()
            .await?;
        Ok(Arc::new(store))
    }
}

#[async_trait]
impl Backend for SqliteHarness {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .durable(true)
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
        let path = {
            let mut opened = self.opened.lock().unwrap();
            *opened += 1;
            self.dir.path().join(format!("case-{opened}.db"))
        };
        *self.latest.lock().unwrap() = Some(path.clone());
        self.open_path(path).await
    }

    async fn connect(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
        let path = self.latest.lock().unwrap().clone().ok_or("connect before open")?;
        self.open_path(path).await
    }
}

idem_conformance::conformance_tests!(sqlite, || async { SqliteHarness::new() });

/// SQLite declares every capability, so no case is skipped.
#[test]
fn sqlite_declares_capabilities() {
    let capabilities = SqliteHarness::new().capabilities();
    assert!(capabilities.durable);
    assert!(capabilities.shared_across_handles);
    assert!(capabilities.injectable_clock);
    assert!(!capabilities.self_expiring);
    assert_eq!(
        capabilities,
        Capabilities::new()
            .durable(true)
            .shared_across_handles(true)
            .injectable_clock(true)
    );
}
