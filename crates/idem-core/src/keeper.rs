//! Keeping a lease while work runs: renewal with a maximum run time, and release when the work is dropped.
//!
//! The runner uses these, and so can integrations that drive a store themselves (the HTTP layer does).

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;
use crate::lease::Lease;
use crate::store::IdempotencyStore;
use crate::ttl::Ttl;

/// Renews `lease` every third of `ttl` until `max_run_time` has passed, and sets `lost` to `true` when a
/// renewal reports the lease lost or its deadline passes without a successful renewal. Never returns: run it
/// beside the work (for example in `tokio::select!`) and drop it when the work ends.
///
/// The deadline used for the lost signal is a local estimate; the store's clock is the authority.
pub async fn keep_lease_renewed(
    store: &dyn IdempotencyStore,
    lease: &Lease,
    ttl: Ttl,
    max_run_time: Duration,
    lost: &watch::Sender<bool>,
) -> Infallible {
    let started = Instant::now();
    let interval = (ttl.as_duration() / 3).max(Duration::from_millis(1));
    let mut deadline = started + ttl.as_duration();

    loop {
        tokio::time::sleep(interval).await;
        if started.elapsed() >= max_run_time {
            tracing::warn!(key = %lease.key().label(), ?max_run_time, "maximum run time reached; the lease is no longer renewed");
            break;
        }

        let requested = Instant::now();
        match store.renew(lease, ttl).await {
            Ok(remaining) => deadline = requested + remaining,
            Err(error @ Error::LeaseLost { .. }) => {
                tracing::warn!(key = %lease.key().label(), %error, "lease lost while its work runs; another caller may run it too");
                let _ = lost.send(true);
                return std::future::pending().await;
            }
            Err(error) => {
                tracing::warn!(key = %lease.key().label(), %error, "lease renewal failed");
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
    }

    tokio::time::sleep_until(deadline).await;
    let _ = lost.send(true);
    std::future::pending().await
}

/// Releases a lease when dropped while armed, so that work cancelled by a drop frees its key.
///
/// The release on drop runs in a spawned Tokio task. Outside a Tokio runtime it cannot run, and the claim
/// lapses at its lease deadline.
pub struct LeaseGuard {
    store: Arc<dyn IdempotencyStore>,
    lease: Option<Lease>,
    release_on_drop: bool,
}

impl LeaseGuard {
    /// Arms a guard for `lease` on `store`.
    pub fn new(store: Arc<dyn IdempotencyStore>, lease: Lease) -> Self {
        Self {
            store,
            lease: Some(lease),
            release_on_drop: true,
        }
    }

    /// Disarms the guard after the lease was completed (or lost), so nothing is released.
    pub fn disarm(&mut self) {
        self.lease = None;
    }

    /// Keeps the claim in place if the guard is dropped from now on, so it lapses at its lease deadline.
    /// [`LeaseGuard::release`] still releases it.
    pub fn keep_claim_on_drop(&mut self) {
        self.release_on_drop = false;
    }

    /// Releases the lease now, once, and logs `reason`. A failed release is logged; the claim then lapses at
    /// its lease deadline.
    pub async fn release(&mut self, reason: &str) {
        let Some(lease) = self.lease.take() else { return };
        match self.store.release(&lease).await {
            Ok(()) => tracing::debug!(key = %lease.key().label(), reason, "released key"),
            Err(error) => {
                tracing::warn!(key = %lease.key().label(), reason, %error, "release failed; the claim lapses at its lease deadline")
            }
        }
    }
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("lease", &self.lease)
            .field("release_on_drop", &self.release_on_drop)
            .finish()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.release_on_drop {
            return;
        }
        let Some(lease) = self.lease.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %lease.key().label(), "work dropped outside a Tokio runtime; the claim lapses at its lease deadline");
            return;
        };
        let store = Arc::clone(&self.store);
        runtime.spawn(async move {
            match store.release(&lease).await {
                Ok(()) => tracing::debug!(key = %lease.key().label(), "released key of dropped work"),
                Err(error) => {
                    tracing::warn!(key = %lease.key().label(), %error, "release of dropped work failed; the claim lapses at its lease deadline")
                }
            }
        });
    }
}
