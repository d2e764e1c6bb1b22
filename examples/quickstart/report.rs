//! The checks run after the replay, and the summary that prints them.

use std::collections::{HashMap, HashSet};

use crate::delivery_log::DeliveryLog;
use crate::expected::Counts;
use crate::ledger::LedgerRow;
use crate::workers::{Outcome, Processed};

/// How many failures of one check are printed before the rest are only counted.
const SHOWN_FAILURES: usize = 10;

/// One check: what it verifies, and a line per failure.
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) failures: Vec<String>,
}

/// Counts the outcomes the workers got.
pub(crate) fn count_outcomes(processed: &[Processed]) -> Counts {
    let mut counts = Counts {
        deliveries: processed.len(),
        ..Counts::default()
    };
    for item in processed {
        match &item.outcome {
            Outcome::Executed(_) => counts.executed += 1,
            Outcome::Replayed(_) => counts.replayed += 1,
            Outcome::InProgress => counts.in_progress += 1,
            Outcome::Mismatched => counts.mismatched += 1,
            Outcome::FailedAndReleased => counts.failed_and_released += 1,
            Outcome::OtherError(_) => counts.other_errors += 1,
        }
    }
    counts
}

/// Compares the outcome counts with the counts expected from the log.
pub(crate) fn check_counts(expected: &Counts, actual: &Counts, processed: &[Processed]) -> Check {
    let mut failures: Vec<String> = expected
        .rows()
        .iter()
        .zip(actual.rows())
        .filter(|((_, expected), (_, actual))| expected != actual)
        .map(|((label, expected), (_, actual))| format!("{label}: expected {expected}, got {actual}"))
        .collect();
    for item in processed {
        if let Outcome::OtherError(error) = &item.outcome {
            failures.push(format!("delivery {}: {error}", item.delivery.sequence));
        }
    }
    Check {
        name: "the outcome counts match the counts expected from the log".to_owned(),
        failures,
    }
}

/// Groups the ledger rows by (delivery id, body SHA-256) and counts the rows of each.
pub(crate) fn count_runs(rows: &[LedgerRow]) -> HashMap<(&str, &str), usize> {
    let mut runs: HashMap<(&str, &str), usize> = HashMap::new();
    for row in rows {
        *runs.entry((&row.delivery_id, &row.body_sha256)).or_default() += 1;
    }
    runs
}

/// Checks in the ledger that every event's body ran exactly once under its own delivery id.
pub(crate) fn check_exactly_once(
    log: &DeliveryLog,
    runs: &HashMap<(&str, &str), usize>,
    rows: usize,
) -> Check {
    let mut failures = Vec::new();
    for event in &log.events {
        let describe = || {
            format!(
                "delivery {} ({}) of {}",
                event.delivery_id, event.event_type, event.file
            )
        };
        match runs.get(&(event.delivery_id.as_str(), event.body_sha256.as_str())) {
            None => failures.push(format!("{} never ran", describe())),
            Some(1) => {}
            Some(count) => failures.push(format!("{} ran {count} times", describe())),
        }
    }
    Check {
        name: format!(
            "each of the {} events ran exactly once (ledger: {rows} rows)",
            log.events.len()
        ),
        failures,
    }
}

/// Checks in the ledger that no body ran under a delivery id that another event had used first.
pub(crate) fn check_reused_ids(log: &DeliveryLog, runs: &HashMap<(&str, &str), usize>) -> Check {
    let events: HashSet<(&str, &str)> = log
        .events
        .iter()
        .map(|event| (event.delivery_id.as_str(), event.body_sha256.as_str()))
        .collect();
    let bodies: HashMap<&str, &str> = log
        .events
        .iter()
        .map(|event| (event.body_sha256.as_str(), event.file))
        .collect();

    let mut reused: Vec<_> = runs.iter().filter(|(run, _)| !events.contains(*run)).collect();
    reused.sort();
    let failures = reused
        .into_iter()
        .map(|((delivery_id, body_sha256), count)| {
            let file = bodies.get(body_sha256).copied().unwrap_or("an unknown payload");
            let times = if *count == 1 {
                String::new()
            } else {
                format!(" {count} times")
            };
            format!("delivery {delivery_id} ran the body of another event, from {file}{times}")
        })
        .collect();
    Check {
        name: "no body ran under a delivery id reused from another event".to_owned(),
        failures,
    }
}

/// Checks that every executed or replayed outcome carries the receipt of a ledger row written for the same
/// delivery id and body, so a replay returns what the run that executed stored.
pub(crate) fn check_receipts(log: &DeliveryLog, processed: &[Processed], rows: &[LedgerRow]) -> Check {
    let by_row: HashMap<i64, &LedgerRow> = rows.iter().map(|row| (row.row, row)).collect();
    let mut failures = Vec::new();
    for item in processed {
        let (Outcome::Executed(receipt) | Outcome::Replayed(receipt)) = &item.outcome else {
            continue;
        };
        let delivery = item.delivery;
        let delivery_id = &log.events[delivery.event].delivery_id;
        let body_sha256 = &log.events[delivery.body_of].body_sha256;
        let matches = by_row
            .get(&receipt.ledger_row)
            .is_some_and(|row| &row.delivery_id == delivery_id && &row.body_sha256 == body_sha256);
        if !matches {
            failures.push(format!(
                "delivery {} ({delivery_id}) returned ledger row {}, which another delivery wrote or which is missing",
                delivery.sequence, receipt.ledger_row
            ));
        }
    }
    Check {
        name: "every executed and replayed outcome returned the ledger row its event's run wrote".to_owned(),
        failures,
    }
}

/// Prints the expected and actual counts side by side.
pub(crate) fn print_counts(expected: &Counts, actual: &Counts) {
    println!("{:<22}{:>9}{:>9}", "outcome", "expected", "actual");
    for ((label, expected), (_, actual)) in expected.rows().into_iter().zip(actual.rows()) {
        let marker = if expected == actual { "" } else { "  <- differs" };
        println!("{label:<22}{expected:>9}{actual:>9}{marker}");
    }
}

/// Prints each check with `ok` or `FAILED` and its first failures, and returns whether all passed.
pub(crate) fn print_checks(checks: &[Check]) -> bool {
    for check in checks {
        let verdict = if check.failures.is_empty() { "ok" } else { "FAILED" };
        println!("{verdict:<8}{}", check.name);
        for failure in check.failures.iter().take(SHOWN_FAILURES) {
            println!("        - {failure}");
        }
        if check.failures.len() > SHOWN_FAILURES {
            println!("        ... and {} more", check.failures.len() - SHOWN_FAILURES);
        }
    }
    checks.iter().all(|check| check.failures.is_empty())
}
