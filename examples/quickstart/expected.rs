//! The outcomes a correct idempotency layer gives to the log, worked out from the log alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::delivery_log::{Delivery, DeliveryLog};

/// How many deliveries got each outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) deliveries: usize,
    pub(crate) executed: usize,
    pub(crate) replayed: usize,
    pub(crate) in_progress: usize,
    pub(crate) mismatched: usize,
    pub(crate) failed_and_released: usize,
    /// Any other error: a store that failed, a wait that timed out, an output that was not recorded.
    pub(crate) other_errors: usize,
}

impl Counts {
    /// Returns the rows of the summary table, each a label and a count.
    pub(crate) fn rows(&self) -> [(&'static str, usize); 7] {
        [
            ("deliveries", self.deliveries),
            ("executed", self.executed),
            ("replayed", self.replayed),
            ("in progress", self.in_progress),
            ("mismatched", self.mismatched),
            ("failed and released", self.failed_and_released),
            ("other errors", self.other_errors),
        ]
    }
}

/// A log whose outcome would depend on timing, so no count can be expected of it.
#[derive(Debug)]
pub(crate) struct AmbiguousLog {
    moment: usize,
    delivery_id: String,
}

impl fmt::Display for AmbiguousLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "moment {} sends delivery id {} with two different bodies before any of them ran, so which body runs \
             depends on timing; change the log builder so that it never does this",
            self.moment, self.delivery_id
        )
    }
}

/// Computes the outcome counts by walking the log moment by moment, keeping for each delivery id only
/// whether a run completed and with which body. Inside one moment, the deliveries of one id that find no
/// completed run are concurrent copies. One of them runs the handler and the others find its claim in
/// progress, because the handler waits until they have got that error.
pub(crate) fn expected_counts(log: &DeliveryLog) -> Result<Counts, AmbiguousLog> {
    let mut counts = Counts::default();
    // Delivery id (as the event index) to the body (as the event index) of its completed run.
    let mut completed: HashMap<usize, usize> = HashMap::new();
    let mut failed_once: HashSet<usize> = HashSet::new();

    for (moment, deliveries) in log.moments.iter().enumerate() {
        let mut by_id: BTreeMap<usize, Vec<&Delivery>> = BTreeMap::new();
        for delivery in deliveries {
            by_id.entry(delivery.event).or_default().push(delivery);
        }

        for (id, group) in by_id {
            counts.deliveries += group.len();

            if let Some(&body) = completed.get(&id) {
                for delivery in &group {
                    if delivery.body_of == body {
                        counts.replayed += 1;
                    } else {
                        counts.mismatched += 1;
                    }
                }
                continue;
            }

            let body = group[0].body_of;
            if group.iter().any(|delivery| delivery.body_of != body) {
                return Err(AmbiguousLog {
                    moment,
                    delivery_id: log.events[id].delivery_id.clone(),
                });
            }
            counts.in_progress += group.len() - 1;
            if log.events[body].fails_first_try && failed_once.insert(body) {
                counts.failed_and_released += 1;
            } else {
                counts.executed += 1;
                completed.insert(id, body);
            }
        }
    }
    Ok(counts)
}
