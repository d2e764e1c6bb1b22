//! The eight workers: each takes one delivery per moment and runs it through idem's runner, or straight
//! through the handler when the example runs without idem.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use idem::{Error, Fingerprint, IdempotencyKey, RunError, RunOutcome, Runner};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::delivery_log::{Delivery, DeliveryLog, WORKERS};
use crate::ledger::{Ledger, SideEffect};
use crate::payloads::summarize;

/// The scope of every key: the webhook source. Delivery ids are unique per source, not across sources.
const SCOPE: &str = "github";
/// How long the handler waits for the concurrent copies of its delivery to get their "in progress" error.
const COPY_WAIT: Duration = Duration::from_secs(5);

/// The handler's output, which idem stores and replays: the ledger row that its side effect wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Receipt {
    pub(crate) ledger_row: i64,
}

/// The outcome a worker got for one delivery.
#[derive(Debug)]
pub(crate) enum Outcome {
    Executed(Receipt),
    Replayed(Receipt),
    InProgress,
    Mismatched,
    /// The handler returned an error; with idem, the runner released the key.
    FailedAndReleased,
    OtherError(String),
}

/// One delivery of the log and the outcome it got.
pub(crate) struct Processed {
    pub(crate) delivery: Delivery,
    pub(crate) outcome: Outcome,
}

/// Sends every moment of the log to the workers and collects the outcomes, in log order per moment.
///
/// A moment's deliveries go to the workers at once, one each, and the next moment starts when all of them
/// are done. With `runner` set to `None`, each delivery runs the handler directly.
pub(crate) async fn replay(
    log: Arc<DeliveryLog>,
    runner: Option<Runner>,
    ledger: Ledger,
) -> Result<Vec<Processed>, String> {
    let shared = Arc::new(Shared {
        log: Arc::clone(&log),
        runner,
        ledger,
        failed_once: Mutex::new(HashSet::new()),
    });

    let mut inboxes = Vec::with_capacity(WORKERS);
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (inbox, jobs) = mpsc::channel(1);
        inboxes.push(inbox);
        workers.push(tokio::spawn(work(Arc::clone(&shared), jobs)));
    }

    let mut processed = Vec::with_capacity(log.len());
    for deliveries in &log.moments {
        let rendezvous = Arc::new(Rendezvous::for_moment(deliveries));
        let mut pending = Vec::with_capacity(deliveries.len());
        for (inbox, &delivery) in inboxes.iter().zip(deliveries) {
            let (reply, outcome) = oneshot::channel();
            let job = Job {
                delivery,
                rendezvous: Arc::clone(&rendezvous),
                reply,
            };
            inbox.send(job).await.map_err(|_| "a worker stopped".to_owned())?;
            pending.push((delivery, outcome));
        }
        for (delivery, outcome) in pending {
            let outcome = outcome.await.map_err(|_| {
                format!(
                    "the worker of delivery {} stopped without a result",
                    delivery.sequence
                )
            })?;
            processed.push(Processed { delivery, outcome });
        }
    }

    drop(inboxes);
    for worker in workers {
        worker
            .await
            .map_err(|error| format!("a worker failed: {error}"))?;
    }
    Ok(processed)
}

struct Job {
    delivery: Delivery,
    rendezvous: Arc<Rendezvous>,
    reply: oneshot::Sender<Outcome>,
}

struct Shared {
    log: Arc<DeliveryLog>,
    runner: Option<Runner>,
    ledger: Ledger,
    /// Events whose handler has already failed its one time.
    failed_once: Mutex<HashSet<usize>>,
}

async fn work(shared: Arc<Shared>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let outcome = match &shared.runner {
            Some(runner) => run_with_idem(&shared, runner, &job).await,
            None => match shared.handle(job.delivery, None).await {
                Ok(receipt) => Outcome::Executed(receipt),
                Err(_) => Outcome::FailedAndReleased,
            },
        };
        // The dispatcher only drops the receiver when it gave up, and then it reports why.
        let _ = job.reply.send(outcome);
    }
}

/// Runs one delivery as a webhook receiver with idem does: the delivery id is the key, and the event type and
/// body are the fingerprint.
async fn run_with_idem(shared: &Shared, runner: &Runner, job: &Job) -> Outcome {
    let delivery = job.delivery;
    let id_event = &shared.log.events[delivery.event];
    let body_event = &shared.log.events[delivery.body_of];

    let key = match IdempotencyKey::new(SCOPE, id_event.delivery_id.as_str()) {
        Ok(key) => key,
        Err(error) => return Outcome::OtherError(error.to_string()),
    };
    let fingerprint = Fingerprint::from_parts(&[body_event.event_type.as_bytes(), &body_event.body]);

    let outcome = runner
        .run(&key, &fingerprint, |lease| async move {
            job.rendezvous.wait_for_copies(delivery).await;
            shared.handle(delivery, Some(lease.fencing_token())).await
        })
        .await;

    match outcome {
        Ok(RunOutcome::Executed(receipt)) => Outcome::Executed(receipt),
        Ok(RunOutcome::Replayed(receipt)) => Outcome::Replayed(receipt),
        Err(RunError::Store(Error::InProgress { .. })) => {
            job.rendezvous.record_in_progress(delivery);
            Outcome::InProgress
        }
        Err(RunError::Store(Error::FingerprintMismatch { .. })) => Outcome::Mismatched,
        Err(RunError::Handler(_)) => Outcome::FailedAndReleased,
        Err(error) => Outcome::OtherError(error.to_string()),
    }
}

impl Shared {
    /// The webhook handler: fails once for events marked so, then appends the side effect to the ledger.
    async fn handle(&self, delivery: Delivery, fencing_token: Option<u64>) -> Result<Receipt, io::Error> {
        let id_event = &self.log.events[delivery.event];
        let body_event = &self.log.events[delivery.body_of];

        let first_failure = body_event.fails_first_try
            && self
                .failed_once
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(delivery.body_of);
        if first_failure {
            return Err(io::Error::other(
                "the downstream service returned 503 Service Unavailable",
            ));
        }

        let summary = summarize(body_event.event_type, &body_event.body).map_err(io::Error::other)?;
        let ledger_row = self
            .ledger
            .append(SideEffect {
                delivery_id: &id_event.delivery_id,
                event_type: body_event.event_type,
                body_sha256: &body_event.body_sha256,
                fencing_token,
                summary,
            })
            .await
            .map_err(io::Error::other)?;
        Ok(Receipt { ledger_row })
    }
}

/// Makes the in-progress count of a moment exact. When a moment contains several copies of one delivery, the
/// copy that runs the handler waits until the others have got their "in progress" error. So none of them can
/// arrive after the run completed and get a replay instead.
struct Rendezvous {
    /// Per (delivery id, body), as event indexes: how many other copies to wait for, and how many of them
    /// have got their in-progress error so far.
    copies: HashMap<(usize, usize), (usize, watch::Sender<usize>)>,
}

impl Rendezvous {
    fn for_moment(deliveries: &[Delivery]) -> Self {
        let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
        for delivery in deliveries {
            *counts.entry((delivery.event, delivery.body_of)).or_default() += 1;
        }
        let copies = counts
            .into_iter()
            .filter(|&(_, count)| count > 1)
            .map(|(key, count)| (key, (count - 1, watch::Sender::new(0))))
            .collect();
        Self { copies }
    }

    fn record_in_progress(&self, delivery: Delivery) {
        if let Some((_, in_progress)) = self.copies.get(&(delivery.event, delivery.body_of)) {
            in_progress.send_modify(|count| *count += 1);
        }
    }

    /// Waits up to [`COPY_WAIT`] for the other copies. After that the run goes on, and the summary then
    /// reports an in-progress count that differs from the expected one.
    async fn wait_for_copies(&self, delivery: Delivery) {
        let Some((others, in_progress)) = self.copies.get(&(delivery.event, delivery.body_of)) else {
            return;
        };
        let mut in_progress = in_progress.subscribe();
        let waited = tokio::time::timeout(COPY_WAIT, async {
            // The sender lives in `self`, so the channel cannot close while this waits.
            let _ = in_progress.wait_for(|count| count >= others).await;
        })
        .await;
        if waited.is_err() {
            eprintln!(
                "warning: not all {others} concurrent copies of delivery {} got their in-progress error within {COPY_WAIT:?}",
                delivery.sequence
            );
        }
    }
}
