//! The claim table: live and lapsed claims, kept outside moka so that no admission policy or eviction can
//! drop one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use idem_core::Fingerprint;

/// An in-progress record. Times are readings of the store's clock.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) fencing_token: u64,
    pub(crate) attempt: u32,
    /// When the first attempt created the record; a takeover keeps it.
    pub(crate) created_at: Duration,
    /// The claim is live before this instant and lapsed from it on.
    pub(crate) lease_deadline: Duration,
}

/// Claims by storage key, with an index ordered by the end of each claim's grace period so that reclaiming
/// expired claims costs time per removed claim, not per held claim.
#[derive(Debug)]
pub(crate) struct ClaimTable {
    by_key: HashMap<String, Claim>,
    /// `(grace end, fencing token)` of every claim in `by_key`. Fencing tokens are unique, so no two claims
    /// share an index entry.
    by_grace_end: BTreeMap<(Duration, u64), String>,
    grace: Duration,
}

impl ClaimTable {
    pub(crate) fn new(grace: Duration) -> Self {
        Self {
            by_key: HashMap::new(),
            by_grace_end: BTreeMap::new(),
            grace,
        }
    }

    /// Returns the instant from which `claim` counts as absent. A sum beyond `Duration::MAX` means never.
    fn grace_end(&self, claim: &Claim) -> Duration {
        claim
            .lease_deadline
            .checked_add(self.grace)
            .unwrap_or(Duration::MAX)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Returns the claim on `key` unless its grace period has ended at `now`; such a claim is removed, since
    /// it counts as absent.
    pub(crate) fn visible(&mut self, key: &str, now: Duration) -> Option<&Claim> {
        let claim = self.by_key.get(key)?;
        if now >= self.grace_end(claim) {
            self.remove(key);
            return None;
        }
        self.by_key.get(key)
    }

    /// Inserts `claim` on `key`, replacing any claim held there.
    pub(crate) fn insert(&mut self, key: String, claim: Claim) {
        self.remove(&key);
        self.by_grace_end
            .insert((self.grace_end(&claim), claim.fencing_token), key.clone());
        self.by_key.insert(key, claim);
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<Claim> {
        let claim = self.by_key.remove(key)?;
        self.by_grace_end
            .remove(&(self.grace_end(&claim), claim.fencing_token));
        Some(claim)
    }

    /// Removes and returns the claim on `key` if it is visible at `now` and held under `fencing_token`.
    pub(crate) fn take_held(&mut self, key: &str, fencing_token: u64, now: Duration) -> Option<Claim> {
        let held = self
            .visible(key, now)
            .is_some_and(|claim| claim.fencing_token == fencing_token);
        if held { self.remove(key) } else { None }
    }

    /// Removes up to `limit` claims whose grace period has ended at `now`, and returns how many it removed.
    pub(crate) fn reclaim_expired(&mut self, now: Duration, limit: usize) -> usize {
        let mut removed = 0;
        while removed < limit {
            let Some(entry) = self.by_grace_end.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.by_key.remove(&key);
            removed += 1;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(token: u64, deadline_ms: u64) -> Claim {
        Claim {
            fingerprint: Fingerprint::empty(),
            fencing_token: token,
            attempt: 1,
            created_at: Duration::ZERO,
            lease_deadline: Duration::from_millis(deadline_ms),
        }
    }

    #[test]
    fn visible_until_grace_end() {
        let mut table = ClaimTable::new(Duration::from_millis(10));
        table.insert("k".into(), claim(1, 100));

        assert!(table.visible("k", Duration::from_millis(109)).is_some());
        assert!(table.visible("k", Duration::from_millis(110)).is_none());
        assert_eq!(table.len(), 0);
        assert_eq!(table.reclaim_expired(Duration::MAX, usize::MAX), 0);
    }

    #[test]
    fn insert_replaces_index_entry() {
        let mut table = ClaimTable::new(Duration::from_millis(10));
        table.insert("k".into(), claim(1, 100));
        table.insert("k".into(), claim(2, 500));

        assert_eq!(table.len(), 1);
        assert_eq!(table.by_grace_end.len(), 1);
        assert_eq!(table.reclaim_expired(Duration::from_millis(200), usize::MAX), 0);
        assert_eq!(table.reclaim_expired(Duration::from_millis(510), usize::MAX), 1);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn reclaim_respects_limit_and_order() {
        let mut table = ClaimTable::new(Duration::from_millis(1));
        for token in 1..=5 {
            table.insert(format!("k{token}"), claim(token, token * 10));
        }

        assert_eq!(table.reclaim_expired(Duration::from_millis(100), 2), 2);
        assert!(table.visible("k1", Duration::ZERO).is_none());
        assert!(table.visible("k3", Duration::ZERO).is_some());
        assert_eq!(table.reclaim_expired(Duration::from_millis(31), 10), 1);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn huge_deadline_never_expires() {
        let mut table = ClaimTable::new(Duration::from_secs(3600));
        table.insert("k".into(), claim(1, u64::MAX));

        assert!(table.visible("k", Duration::from_millis(u64::MAX)).is_some());
        let mut far = claim(2, 0);
        far.lease_deadline = Duration::MAX;
        table.insert("far".into(), far);
        assert!(
            table
                .visible("far", Duration::MAX - Duration::from_secs(1))
                .is_some()
        );
    }
}
