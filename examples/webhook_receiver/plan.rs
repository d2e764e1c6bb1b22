//! The demo's delivery plan: 16 events built from real GitHub payloads, sent in steps with redeliveries,
//! concurrent resends, a failing first try, bad signatures and a reused delivery id.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::payloads::{self, PAYLOADS};

/// The receiver route a delivery goes to, and so its signature scheme and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST /webhooks/github`: HMAC-SHA256 in `X-Hub-Signature-256`, id in `X-GitHub-Delivery`.
    Github,
    /// `POST /webhooks/ed25519`: Ed25519 over `<timestamp>.<body>`, id in `X-Webhook-Id`.
    Ed25519,
}

impl Route {
    /// The path on the receiver.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Github => "/webhooks/github",
            Self::Ed25519 => "/webhooks/ed25519",
        }
    }

    /// The header that carries the delivery id, which is the idempotency key.
    pub(crate) fn id_header(self) -> &'static str {
        match self {
            Self::Github => "x-github-delivery",
            Self::Ed25519 => "x-webhook-id",
        }
    }

    /// The header that carries the delivery's signature.
    pub(crate) fn signature_header(self) -> &'static str {
        match self {
            Self::Github => crate::signature::GITHUB_SIGNATURE_HEADER,
            Self::Ed25519 => crate::signature::ED25519_SIGNATURE_HEADER,
        }
    }

    /// The header that carries the event type.
    pub(crate) fn event_header(self) -> &'static str {
        match self {
            Self::Github => "x-github-event",
            Self::Ed25519 => "x-webhook-event",
        }
    }

    /// A short name for the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Ed25519 => "ed25519",
        }
    }
}

/// The signing of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signing {
    /// With the configured secret or key.
    Valid,
    /// With a secret or key the receiver does not know.
    WrongKey,
    /// Ed25519 only: with the right key, but for a time 10 minutes ago.
    StaleTimestamp,
}

/// One event: a delivery id and a body.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) id: String,
    pub(crate) event_type: &'static str,
    pub(crate) route: Route,
    pub(crate) body: Arc<Vec<u8>>,
}

/// One HTTP request the sender makes (with its own retries on 409 and 5xx).
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// Index into [`Plan::events`] of the event whose id and headers the delivery carries.
    pub(crate) event: usize,
    /// The body sent; the event's own body except for a reused delivery id.
    pub(crate) body: Arc<Vec<u8>>,
    pub(crate) signing: Signing,
}

/// Deliveries sent one after another or all at once; the next step starts when all of them have their
/// final answer.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) title: &'static str,
    pub(crate) concurrent: bool,
    pub(crate) deliveries: Vec<Delivery>,
}

/// The events and the steps that deliver them.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) events: Vec<Event>,
    pub(crate) steps: Vec<Step>,
}

/// Events whose first run fails in the handler (a simulated downstream 503), by index.
pub(crate) const FLAKY_EVENTS: &[usize] = &[3];
/// Events on the Ed25519 route: the last four.
const ED25519_FROM: usize = 12;
/// Copies sent at once for a concurrent resend.
const CONCURRENT_COPIES: usize = 4;

impl Plan {
    /// Builds the plan from the embedded payloads. `run_tag` goes into every delivery id, so that runs
    /// against one long-lived receiver do not replay each other's events.
    pub(crate) fn build(run_tag: &str) -> Result<Self, String> {
        let mut events = Vec::with_capacity(PAYLOADS.len());
        for (index, payload) in PAYLOADS.iter().enumerate() {
            let installation_id = 1000 + index as u64;
            let body = payloads::event_body(payload, installation_id)?;
            let route = if index >= ED25519_FROM {
                Route::Ed25519
            } else {
                Route::Github
            };
            events.push(Event {
                id: delivery_id(run_tag, index),
                event_type: payload.event_type,
                route,
                body: Arc::new(body),
            });
        }

        let send = |event: usize, signing: Signing| Delivery {
            event,
            body: Arc::clone(&events[event].body),
            signing,
        };
        let steps = vec![
            Step {
                title: "first deliveries, one at a time",
                concurrent: false,
                deliveries: [0, 1, 2, 4, 6, 8, 9, 10, 11, 12, 13]
                    .into_iter()
                    .map(|event| send(event, Signing::Valid))
                    .collect(),
            },
            Step {
                title: "a forged GitHub signature and a stale Ed25519 timestamp (rejected, nothing stored)",
                concurrent: false,
                deliveries: vec![send(7, Signing::WrongKey), send(15, Signing::StaleTimestamp)],
            },
            Step {
                title: "the same two deliveries, signed correctly (processed)",
                concurrent: false,
                deliveries: vec![send(7, Signing::Valid), send(15, Signing::Valid)],
            },
            Step {
                title: "a delivery whose first run fails downstream (503, key released, retried; only in --demo, where the receiver simulates the failure)",
                concurrent: false,
                deliveries: FLAKY_EVENTS
                    .iter()
                    .map(|&event| send(event, Signing::Valid))
                    .collect(),
            },
            Step {
                title: "concurrent resends: 4 copies of two deliveries at once",
                concurrent: true,
                deliveries: [5, 14]
                    .into_iter()
                    .flat_map(|event| std::iter::repeat_n(event, CONCURRENT_COPIES))
                    .map(|event| send(event, Signing::Valid))
                    .collect(),
            },
            Step {
                title: "redeliveries of events already processed (replayed)",
                concurrent: false,
                deliveries: [0, 2, 3, 8, 12]
                    .into_iter()
                    .map(|event| send(event, Signing::Valid))
                    .collect(),
            },
            Step {
                title: "a delivery id reused with another event's body (rejected)",
                concurrent: false,
                deliveries: vec![Delivery {
                    event: 11,
                    body: Arc::clone(&events[10].body),
                    signing: Signing::Valid,
                }],
            },
        ];
        Ok(Self { events, steps })
    }
}

/// Derives a GUID-shaped delivery id, like GitHub's `X-GitHub-Delivery`, from the run tag and the index.
fn delivery_id(run_tag: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("{run_tag}/{index}"));
    let digits = hex::encode(&digest[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &digits[..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_event() {
        let plan = Plan::build("test").unwrap();
        for index in 0..plan.events.len() {
            let valid = plan
                .steps
                .iter()
                .flat_map(|step| &step.deliveries)
                .filter(|delivery| delivery.event == index && delivery.signing == Signing::Valid)
                .count();
            assert!(
                valid >= 1,
                "event {index} is never delivered with a valid signature"
            );
        }
    }

    #[test]
    fn delivery_ids_differ_per_run() {
        let first = Plan::build("a").unwrap();
        let second = Plan::build("b").unwrap();
        assert_ne!(first.events[0].id, second.events[0].id);
        assert_eq!(first.events[0].id.len(), 36);
    }
}
