//! Webhook receiver: an axum server that verifies each delivery's signature and then processes each event
//! once, keyed by its delivery id, with idem's HTTP layer on a SQLite file or on Redis.
//!
//! ```text
//! cargo run --example webhook_receiver --features http -- --demo       # receiver and sender in one process
//! cargo run --example webhook_receiver --features http                 # receiver on 127.0.0.1:3000
//! cargo run --example webhook_receiver --features http -- --send http://127.0.0.1:3000
//! cargo run --example webhook_receiver --features http,redis -- --redis-url redis://127.0.0.1:6379/0
//! ```
//!
//! # Routes
//!
//! - `POST /webhooks/github`: GitHub's scheme. `X-Hub-Signature-256: sha256=<hex>` is the HMAC-SHA256 of the
//!   raw body under the shared secret, compared in constant time. The delivery id is `X-GitHub-Delivery`,
//!   which GitHub repeats when it redelivers, and the event type is `X-GitHub-Event`.
//! - `POST /webhooks/ed25519`: the scheme of providers that sign with Ed25519. `X-Signature-Ed25519` is a
//!   signature over `<timestamp>.<body>`, where `X-Signature-Timestamp` is the Unix time in seconds; a
//!   timestamp more than 5 minutes from the receiver's clock, either way, is rejected. The delivery id is
//!   `X-Webhook-Id` and the event type `X-Webhook-Event`.
//! - `GET /ledger`: the events processed so far, as JSON.
//!
//! The signature is checked first, on the raw bytes: a missing or bad one is a 401 problem and nothing is
//! stored. A verified delivery then goes through `idem::http::IdempotencyLayer`, configured with the route's
//! delivery id header as the key header and the route as the principal, so the two providers' ids never
//! share a record. The first delivery of an id runs the handler, which appends a row to the ledger and
//! returns a receipt naming it; a redelivery gets the stored receipt back with `Idempotent-Replayed: true`.
//! A copy that arrives while the first still runs gets 409 with `Retry-After`, the same id with another
//! body 422, and a handler failure (5xx) releases the id so the redelivery runs again. Records are kept 3
//! days, as long as GitHub offers redelivery.
//!
//! # Demo and sender
//!
//! `--send URL` and `--demo` post deliveries built from the real payloads in
//! `examples/data/github-webhooks/`: 16 events, 12 on the GitHub route and 4 on the Ed25519 route, in
//! steps that cover redeliveries, 4 concurrent copies of one delivery, a first run that fails downstream
//! (demo only, where the receiver knows which one), a forged signature, a stale timestamp and a reused
//! delivery id. The sender retries 409 after `Retry-After` and 5xx with backoff, prints one line per answer
//! (route, event, delivery id, attempt, status, whether replayed, and the ledger row or problem detail) and
//! a tally, then checks that every event got exactly one non-replayed 2xx and that all its 2xx answers
//! name the same ledger row. The demo also checks the receiver's ledger. Delivery ids include a per-run
//! tag, so runs against one long-lived receiver do not replay each other.
//!
//! Exit status: 0 when every check passes (or the receiver stopped on Ctrl-C), 1 when a check fails or the
//! run stops on an error, 2 on invalid arguments.
//!
//! # Keys
//!
//! The GitHub secret and the Ed25519 keys come from flags or the environment (`WEBHOOK_GITHUB_SECRET`,
//! `WEBHOOK_ED25519_SEED`, `WEBHOOK_ED25519_PUBLIC_KEY`). Without them the example uses fake demo values and
//! warns; they are never logged.

#[path = "webhook_receiver/options.rs"]
mod options;
#[path = "quickstart/payloads.rs"]
mod payloads;
#[path = "webhook_receiver/plan.rs"]
mod plan;
#[path = "webhook_receiver/receiver.rs"]
mod receiver;
#[path = "webhook_receiver/sender.rs"]
mod sender;
#[path = "webhook_receiver/signature.rs"]
mod signature;
#[path = "webhook_receiver/store.rs"]
mod store;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem::IdempotencyStore;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::options::{Mode, Options, USAGE};
use crate::plan::{FLAKY_EVENTS, Plan};
use crate::receiver::{Ledger, ReceiverConfig};
use crate::sender::SenderConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args_os().skip(1), |name| std::env::var(name).ok()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The demo prints its own report, so the receiver's log shows only errors there.
    let level = match options.mode {
        Mode::Demo => tracing::Level::ERROR,
        Mode::Receive | Mode::Send(_) => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .init();
    if !options.demo_keys.is_empty() {
        eprintln!(
            "warning: using the built-in demo keys for {}; they are public, set real ones for a real webhook",
            options.demo_keys.join(", ")
        );
    }

    let result = match options.mode {
        Mode::Receive => receive(options).await.map(|()| true),
        Mode::Send(ref url) => send(url.clone(), &options).await,
        Mode::Demo => demo(options).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the receiver until Ctrl-C.
async fn receive(options: Options) -> Result<(), String> {
    let path = options
        .db
        .clone()
        .unwrap_or_else(|| PathBuf::from("webhook-receiver.sqlite3"));
    let (store, description) = open_store(&options, &path).await?;
    let config = receiver_config(&options, HashSet::new());
    let router = receiver::router(config, store, Arc::new(Ledger::default()))?;
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", options.listen))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot read the bound address: {error}"))?;
    tracing::info!(store = %description, "receiver listening on http://{address}");
    tracing::info!("routes: POST /webhooks/github, POST /webhooks/ed25519, GET /ledger");
    tracing::info!(
        public_key = options.ed25519_verifier.to_hex(),
        "the Ed25519 route accepts signatures of this public key"
    );

    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            // If the signal handler cannot be installed, the server runs until the process is killed.
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        })
        .await
        .map_err(|error| format!("the server stopped: {error}"))?;
    tracing::info!("receiver stopped");
    Ok(())
}

/// Sends the demo deliveries to a running receiver and returns whether every check passed.
async fn send(url: String, options: &Options) -> Result<bool, String> {
    let config = SenderConfig {
        base_url: sender::parse_base_url(&url)?,
        github_secret: options.github_secret.clone(),
        ed25519: options.ed25519_signer.clone(),
    };
    let plan = Plan::build(&run_tag())?;
    println!("sending {} events to {url}\n", plan.events.len());
    let answers = sender::send_plan(&config, &plan).await?;
    sender::print_tally(&answers);
    println!();
    let failures = sender::check_exactly_once(&plan, &answers);
    Ok(print_check(
        &format!(
            "each of the {} events got exactly one processed answer",
            plan.events.len()
        ),
        &failures,
    ))
}

/// Starts a receiver on a free loopback port, sends the demo deliveries to it, and checks both sides.
async fn demo(options: Options) -> Result<bool, String> {
    let temporary =
        tempfile::tempdir().map_err(|error| format!("cannot create a temporary directory: {error}"))?;
    let path = match &options.db {
        Some(path) => path.clone(),
        None => temporary.path().join("idem.sqlite3"),
    };
    let (store, description) = open_store(&options, &path).await?;

    let plan = Plan::build(&run_tag())?;
    let flaky = FLAKY_EVENTS
        .iter()
        .map(|&index| plan.events[index].id.clone())
        .collect();
    let ledger = Arc::new(Ledger::default());
    let router = receiver::router(receiver_config(&options, flaky), store, Arc::clone(&ledger))?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|error| format!("cannot listen on 127.0.0.1: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot read the bound address: {error}"))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    println!("receiver: http://{address}, store: {description}");
    println!(
        "sending {} events ({} on the GitHub route, {} on the Ed25519 route)\n",
        plan.events.len(),
        plan.events
            .iter()
            .filter(|event| event.route == plan::Route::Github)
            .count(),
        plan.events
            .iter()
            .filter(|event| event.route == plan::Route::Ed25519)
            .count(),
    );
    let config = SenderConfig {
        base_url: sender::parse_base_url(&format!("http://{address}"))?,
        github_secret: options.github_secret.clone(),
        ed25519: options.ed25519_signer.clone(),
    };
    let answers = sender::send_plan(&config, &plan).await;
    let _ = stop.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(format!("the receiver stopped: {error}")),
        Err(error) => return Err(format!("the receiver task failed: {error}")),
    }
    let answers = answers?;

    sender::print_tally(&answers);
    println!();
    let sent = sender::check_exactly_once(&plan, &answers);
    let ledger_failures = check_ledger(&plan, &ledger);
    let runs_failures = check_runs(&plan, &ledger);
    let passed = [
        print_check(
            &format!(
                "each of the {} events got exactly one processed answer",
                plan.events.len()
            ),
            &sent,
        ),
        print_check(
            &format!(
                "the ledger holds one row per event ({} rows), with the body sent",
                ledger.rows().len()
            ),
            &ledger_failures,
        ),
        print_check(
            "the handler ran once per event, twice for the event whose first run failed",
            &runs_failures,
        ),
    ];
    Ok(passed.iter().all(|&passed| passed))
}

async fn open_store(options: &Options, path: &Path) -> Result<(Arc<dyn IdempotencyStore>, String), String> {
    match &options.redis_url {
        Some(url) => store::open_redis(url).await,
        None => store::open_sqlite(path).await,
    }
}

fn receiver_config(options: &Options, fail_first_run: HashSet<String>) -> ReceiverConfig {
    ReceiverConfig {
        github_secret: options.github_secret.clone(),
        ed25519: options.ed25519_verifier.clone(),
        work_time: Duration::from_millis(options.work_ms),
        fail_first_run,
    }
}

/// Returns a tag unique to this run, mixed into the delivery ids.
fn run_tag() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", std::process::id(), now.as_nanos())
}

/// Checks that the ledger contains exactly one row per event, with the event's body.
fn check_ledger(plan: &Plan, ledger: &Ledger) -> Vec<String> {
    let rows = ledger.rows();
    let mut failures = Vec::new();
    for event in &plan.events {
        let matching: Vec<_> = rows.iter().filter(|row| row.delivery == event.id).collect();
        if matching.len() != 1 {
            failures.push(format!(
                "{} {} has {} ledger rows, expected 1",
                event.event_type,
                &event.id[..8],
                matching.len()
            ));
            continue;
        }
        let body_sha256 = hex::encode(Sha256::digest(event.body.as_slice()));
        if matching[0].body_sha256 != body_sha256 {
            failures.push(format!(
                "{} {} was processed with another body",
                event.event_type,
                &event.id[..8]
            ));
        }
    }
    if rows.len() != plan.events.len() {
        failures.push(format!(
            "the ledger has {} rows for {} events",
            rows.len(),
            plan.events.len()
        ));
    }
    failures
}

/// Checks how often the handler started per event: once, or twice after a failed first run.
fn check_runs(plan: &Plan, ledger: &Ledger) -> Vec<String> {
    let mut failures = Vec::new();
    for (index, event) in plan.events.iter().enumerate() {
        let expected = if FLAKY_EVENTS.contains(&index) { 2 } else { 1 };
        let runs = ledger.runs(&event.id);
        if runs != expected {
            failures.push(format!(
                "{} {} started the handler {runs} times, expected {expected}",
                event.event_type,
                &event.id[..8]
            ));
        }
    }
    failures
}

fn print_check(title: &str, failures: &[String]) -> bool {
    if failures.is_empty() {
        println!("ok      {title}");
        return true;
    }
    println!("FAILED  {title}");
    for failure in failures.iter().take(5) {
        println!("        {failure}");
    }
    if failures.len() > 5 {
        println!("        ... and {} more", failures.len() - 5);
    }
    false
}
