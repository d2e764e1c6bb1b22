//! The sender: posts the plan's deliveries to a receiver, signed, retrying 409 and 5xx answers the way
//! webhook providers do, and prints what the receiver did with each request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::plan::{Delivery, Plan, Route, Signing};
use crate::signature::{
    ED25519_SIGNATURE_HEADER, ED25519_TIMESTAMP_HEADER, Ed25519Signer, GITHUB_SIGNATURE_HEADER, GithubSecret,
};

/// Attempts per delivery, the first included.
const MAX_ATTEMPTS: u32 = 6;
/// First backoff after a 5xx or a failed connection; it doubles per attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest `Retry-After` the sender obeys; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// A private key seed the receiver does not know, for the forged deliveries.
const FORGED_SEED: &str = "6e6f742d7468652d726563656976657273ff6b65792d666f722d74657374696e";

/// The receiver URL and the keys the sender signs with.
pub(crate) struct SenderConfig {
    pub(crate) base_url: Url,
    pub(crate) github_secret: GithubSecret,
    pub(crate) ed25519: Ed25519Signer,
}

/// Checks that `url` is an `http` URL on a loopback address: the receiver binds only loopback, and the demo
/// sends forged signatures that belong nowhere else.
pub(crate) fn parse_base_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|error| {
        format!("--send {url:?} is not a URL ({error}); pass one such as http://127.0.0.1:3000")
    })?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "--send {url:?} must be an http:// URL; the receiver serves plain HTTP on loopback"
        ));
    }
    // host_str writes an IPv6 address in brackets.
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|address| address.is_loopback());
    if !loopback {
        return Err(format!(
            "--send {url:?} is not a loopback address; the sender posts only to 127.0.0.1, ::1 or localhost"
        ));
    }
    Ok(parsed)
}

/// The response to one attempt, or the transport error in its place.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) event: usize,
    pub(crate) attempt: u32,
    /// `None` when the request failed before a response arrived.
    pub(crate) status: Option<StatusCode>,
    pub(crate) replayed: bool,
    pub(crate) retry_after: Option<Duration>,
    /// The receipt's ledger row for a 2xx.
    pub(crate) ledger_row: Option<u64>,
    /// The problem detail for an error, or the transport error.
    pub(crate) detail: String,
}

/// The kinds of answer the tally counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    Processed,
    Replayed,
    InProgress,
    HandlerFailed,
    BadSignature,
    ReusedId,
    Other,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 7] = [
        Outcome::Processed,
        Outcome::Replayed,
        Outcome::InProgress,
        Outcome::HandlerFailed,
        Outcome::BadSignature,
        Outcome::ReusedId,
        Outcome::Other,
    ];

    fn of(answer: &Answer) -> Self {
        let Some(status) = answer.status else {
            return Self::Other;
        };
        match status.as_u16() {
            _ if answer.replayed => Self::Replayed,
            200..=299 => Self::Processed,
            409 => Self::InProgress,
            401 => Self::BadSignature,
            422 => Self::ReusedId,
            500..=599 => Self::HandlerFailed,
            _ => Self::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Processed => "processed (2xx, handler ran)",
            Self::Replayed => "replayed (Idempotent-Replayed: true)",
            Self::InProgress => "in progress (409, retried after Retry-After)",
            Self::HandlerFailed => "failed (5xx, key released, retried)",
            Self::BadSignature => "bad signature (401, nothing stored)",
            Self::ReusedId => "delivery id reused with another body (422)",
            Self::Other => "other answers and transport errors",
        }
    }
}

/// Sends every step of `plan`, printing each answer, and returns all answers in order.
pub(crate) async fn send_plan(config: &SenderConfig, plan: &Plan) -> Result<Vec<Answer>, String> {
    // No default features: plain HTTP on loopback needs no TLS stack and no system proxy.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
    let forged = Forged {
        github: GithubSecret::new("not-the-receiver's-secret")?,
        ed25519: Ed25519Signer::from_hex(FORGED_SEED)?,
    };

    let mut answers = Vec::new();
    for (number, step) in plan.steps.iter().enumerate() {
        println!("step {}: {}", number + 1, step.title);
        let mut step_answers = Vec::new();
        if step.concurrent {
            let sends = step
                .deliveries
                .iter()
                .map(|delivery| deliver(&client, config, &forged, plan, delivery));
            // The answers of concurrent deliveries print in plan order, not in arrival order.
            step_answers.extend(futures_util::future::join_all(sends).await);
        } else {
            for delivery in &step.deliveries {
                step_answers.push(deliver(&client, config, &forged, plan, delivery).await);
            }
        }
        for answer in step_answers.into_iter().flatten() {
            print_answer(plan, &answer);
            answers.push(answer);
        }
        println!();
    }
    Ok(answers)
}

struct Forged {
    github: GithubSecret,
    ed25519: Ed25519Signer,
}

/// Sends one delivery until it gets a final answer or runs out of attempts, and returns every answer.
async fn deliver(
    client: &reqwest::Client,
    config: &SenderConfig,
    forged: &Forged,
    plan: &Plan,
    delivery: &Delivery,
) -> Vec<Answer> {
    let event = &plan.events[delivery.event];
    let url = config
        .base_url
        .join(event.route.path())
        .expect("a route path joins any base URL");
    let mut answers = Vec::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let mut request = client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("user-agent", "idem-webhook-demo-sender")
            .header(event.route.id_header(), &event.id)
            .header(event.route.event_header(), event.event_type);
        // Each attempt is signed anew, as providers do, so an Ed25519 retry carries a fresh timestamp.
        match (event.route, delivery.signing) {
            (Route::Github, signing) => {
                let secret = if signing == Signing::WrongKey {
                    &forged.github
                } else {
                    &config.github_secret
                };
                request = request.header(GITHUB_SIGNATURE_HEADER, secret.sign(&delivery.body));
            }
            (Route::Ed25519, signing) => {
                let signer = if signing == Signing::WrongKey {
                    &forged.ed25519
                } else {
                    &config.ed25519
                };
                let at = if signing == Signing::StaleTimestamp {
                    SystemTime::now() - Duration::from_secs(10 * 60)
                } else {
                    SystemTime::now()
                };
                let (signature, timestamp) = signer.sign(&delivery.body, at);
                request = request
                    .header(ED25519_SIGNATURE_HEADER, signature)
                    .header(ED25519_TIMESTAMP_HEADER, timestamp);
            }
        }

        let answer = match request.body(delivery.body.as_ref().clone()).send().await {
            Ok(response) => read_answer(delivery.event, attempt, response).await,
            Err(error) => Answer {
                event: delivery.event,
                attempt,
                status: None,
                replayed: false,
                retry_after: None,
                ledger_row: None,
                detail: format!("request failed: {error}"),
            },
        };
        let wait = match answer.status {
            Some(StatusCode::CONFLICT) => Some(answer.retry_after.unwrap_or(Duration::from_secs(1))),
            Some(status) if status.is_server_error() => Some(answer.retry_after.unwrap_or(backoff(attempt))),
            None => Some(backoff(attempt)),
            Some(_) => None,
        };
        answers.push(answer);
        match wait {
            Some(wait) if attempt < MAX_ATTEMPTS => tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await,
            _ => break,
        }
    }
    answers
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF * 2u32.pow(attempt.saturating_sub(1).min(5))
}

async fn read_answer(event: usize, attempt: u32, response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let replayed = headers
        .get("idempotent-replayed")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"));
    let retry_after = headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => {
            return Answer {
                event,
                attempt,
                status: Some(status),
                replayed,
                retry_after,
                ledger_row: None,
                detail: format!("body could not be read: {error}"),
            };
        }
    };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Answer {
        event,
        attempt,
        status: Some(status),
        replayed,
        retry_after,
        ledger_row: json["ledger_row"].as_u64(),
        detail: json["detail"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(120).collect()),
    }
}

fn print_answer(plan: &Plan, answer: &Answer) {
    let event = &plan.events[answer.event];
    let status = match answer.status {
        Some(status) => status.as_u16().to_string(),
        None => "---".to_owned(),
    };
    let replayed = if answer.replayed { "replayed" } else { "" };
    let detail = match (answer.ledger_row, &answer.retry_after) {
        (Some(row), _) => format!("ledger row {row}"),
        (None, Some(wait)) => format!("Retry-After {} s: {}", wait.as_secs(), answer.detail),
        (None, None) => answer.detail.clone(),
    };
    println!(
        "  {:<8} {:<19} {}  try {}  {status}  {replayed:<8}  {detail}",
        event.route.name(),
        event.event_type,
        &event.id[..8],
        answer.attempt,
    );
}

/// Prints the count of each kind of answer and returns the counts.
pub(crate) fn print_tally(answers: &[Answer]) -> BTreeMap<Outcome, usize> {
    let mut counts: BTreeMap<Outcome, usize> = Outcome::ALL.iter().map(|&outcome| (outcome, 0)).collect();
    for answer in answers {
        *counts.entry(Outcome::of(answer)).or_default() += 1;
    }
    println!("{:<46} {:>5}", "answers", answers.len());
    for (outcome, count) in &counts {
        println!("  {:<44} {count:>5}", outcome.label());
    }
    counts
}

/// Checks, from the answers alone, that each event ran once: exactly one non-replayed 2xx per event, and
/// every 2xx for an event carries the same ledger row. Returns the failures.
pub(crate) fn check_exactly_once(plan: &Plan, answers: &[Answer]) -> Vec<String> {
    let mut failures = Vec::new();
    for (index, event) in plan.events.iter().enumerate() {
        let successes: Vec<&Answer> = answers
            .iter()
            .filter(|answer| answer.event == index && answer.status.is_some_and(|status| status.is_success()))
            .collect();
        let runs = successes.iter().filter(|answer| !answer.replayed).count();
        if runs != 1 {
            failures.push(format!(
                "{} {} ({}) got {runs} non-replayed 2xx answers, expected 1",
                event.event_type,
                &event.id[..8],
                event.route.name()
            ));
        }
        let mut rows: Vec<Option<u64>> = successes.iter().map(|answer| answer.ledger_row).collect();
        rows.dedup();
        if rows.len() > 1 {
            failures.push(format!(
                "{} {} got different ledger rows: {rows:?}",
                event.event_type,
                &event.id[..8]
            ));
        }
    }
    failures
}
