//! Tests of the webhook_receiver example: its router runs in-process on a loopback port, on a SQLite store in
//! a temporary file, and reqwest sends it signed deliveries over TCP.
//!
//! The example's modules are compiled into this test with `#[path]`, so their unit tests (signatures,
//! options, plan) run here too.
#![cfg(all(feature = "http", feature = "sqlite"))]

#[allow(dead_code)]
#[path = "../examples/webhook_receiver/options.rs"]
mod options;
#[allow(dead_code)]
#[path = "../examples/quickstart/payloads.rs"]
mod payloads;
#[allow(dead_code)]
#[path = "../examples/webhook_receiver/plan.rs"]
mod plan;
#[allow(dead_code)]
#[path = "../examples/webhook_receiver/receiver.rs"]
mod receiver;
#[allow(dead_code)]
#[path = "../examples/webhook_receiver/sender.rs"]
mod sender;
#[allow(dead_code)]
#[path = "../examples/webhook_receiver/signature.rs"]
mod signature;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use idem::sqlite::SqliteStore;
use idem::{IdempotencyKey, IdempotencyStore};
use reqwest::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::Barrier;

use crate::plan::{FLAKY_EVENTS, Plan, Route};
use crate::receiver::{Ledger, ReceiverConfig};
use crate::sender::SenderConfig;
use crate::signature::{
    ED25519_SIGNATURE_HEADER, ED25519_TIMESTAMP_HEADER, Ed25519Signer, GITHUB_SIGNATURE_HEADER, GithubSecret,
};

const SECRET: &str = "test-secret";
const SEED: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
const BODY: &[u8] =
    br#"{"action":"opened","repository":{"full_name":"octo/hello"},"sender":{"login":"octo"}}"#;

/// A receiver on 127.0.0.1 with its store and ledger. The temporary directory contains the SQLite file.
struct Receiver {
    base: String,
    store: Arc<dyn IdempotencyStore>,
    ledger: Arc<Ledger>,
    client: reqwest::Client,
    _directory: tempfile::TempDir,
}

impl Receiver {
    async fn start(work_time: Duration, fail_first_run: &[&str]) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let store: Arc<dyn IdempotencyStore> = Arc::new(
            SqliteStore::open(directory.path().join("idem.sqlite3"))
                .await
                .unwrap(),
        );
        let ledger = Arc::new(Ledger::default());
        let config = ReceiverConfig {
            github_secret: GithubSecret::new(SECRET).unwrap(),
            ed25519: Ed25519Signer::from_hex(SEED).unwrap().verifier(),
            work_time,
            fail_first_run: fail_first_run
                .iter()
                .map(|id| (*id).to_owned())
                .collect::<HashSet<_>>(),
        };
        let router = receiver::router(config, Arc::clone(&store), Arc::clone(&ledger)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            base: format!("http://{address}"),
            store,
            ledger,
            client: reqwest::Client::new(),
            _directory: directory,
        }
    }

    /// Posts a GitHub delivery signed with `secret`, or unsigned when `secret` is `None`.
    async fn github(&self, delivery: &str, body: &[u8], secret: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhooks/github", self.base))
            .header("x-github-delivery", delivery)
            .header("x-github-event", "issues")
            .header("content-type", "application/json");
        if let Some(secret) = secret {
            request = request.header(
                GITHUB_SIGNATURE_HEADER,
                GithubSecret::new(secret).unwrap().sign(body),
            );
        }
        request.body(body.to_vec()).send().await.unwrap()
    }

    /// Posts an Ed25519 delivery signed with `seed` for the time `at`.
    async fn ed25519(&self, delivery: &str, body: &[u8], seed: &str, at: SystemTime) -> reqwest::Response {
        let (signature, timestamp) = Ed25519Signer::from_hex(seed).unwrap().sign(body, at);
        self.client
            .post(format!("{}/webhooks/ed25519", self.base))
            .header("x-webhook-id", delivery)
            .header("x-webhook-event", "issues")
            .header(ED25519_SIGNATURE_HEADER, signature)
            .header(ED25519_TIMESTAMP_HEADER, timestamp)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn record_exists(&self, route: Route, delivery: &str) -> bool {
        let key = IdempotencyKey::new(route.name(), delivery).unwrap();
        self.store.lookup(&key).await.unwrap().is_some()
    }
}

fn replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true")
}

fn content_type(response: &reqwest::Response) -> String {
    let value = response
        .headers()
        .get("content-type")
        .expect("a content-type header");
    value.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_bad_signature_stores_nothing() {
    let receiver = Receiver::start(Duration::ZERO, &[]).await;

    let forged = receiver.github(DELIVERY, BODY, Some("another-secret")).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(content_type(&forged), "application/problem+json");
    let challenge = forged
        .headers()
        .get("www-authenticate")
        .expect("a 401 carries a challenge");
    assert!(
        challenge.to_str().unwrap().contains("x-hub-signature-256"),
        "{challenge:?}"
    );
    let problem: serde_json::Value = serde_json::from_slice(&forged.bytes().await.unwrap()).unwrap();
    assert_eq!(problem["status"], 401);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("x-hub-signature-256"),
        "{problem}"
    );

    let unsigned = receiver.github(DELIVERY, BODY, None).await;
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);

    assert!(!receiver.record_exists(Route::Github, DELIVERY).await);
    assert!(receiver.ledger.rows().is_empty());
    assert_eq!(receiver.ledger.runs(DELIVERY), 0);

    // The same delivery id, signed correctly, now runs: the rejected attempts left no record behind.
    let signed = receiver.github(DELIVERY, BODY, Some(SECRET)).await;
    assert_eq!(signed.status(), StatusCode::OK);
    assert!(!replayed(&signed));
    assert_eq!(receiver.ledger.rows().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_good_signature_processed_once() {
    let receiver = Receiver::start(Duration::ZERO, &[]).await;

    let first = receiver.github(DELIVERY, BODY, Some(SECRET)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(!replayed(&first));
    let first_body = first.bytes().await.unwrap();
    let receipt: serde_json::Value = serde_json::from_slice(&first_body).unwrap();
    assert_eq!(receipt["ledger_row"], 1);
    assert_eq!(receipt["summary"], "issues.opened on octo/hello by octo");

    for _ in 0..2 {
        let again = receiver.github(DELIVERY, BODY, Some(SECRET)).await;
        assert_eq!(again.status(), StatusCode::OK);
        assert!(replayed(&again));
        assert_eq!(content_type(&again), "application/json");
        assert_eq!(again.bytes().await.unwrap(), first_body);
    }

    assert!(receiver.record_exists(Route::Github, DELIVERY).await);
    assert_eq!(receiver.ledger.rows().len(), 1);
    assert_eq!(receiver.ledger.runs(DELIVERY), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_concurrent_copies_run_once() {
    let receiver = Arc::new(Receiver::start(Duration::from_millis(300), &[]).await);
    let copies = 8;
    let barrier = Arc::new(Barrier::new(copies));
    let mut tasks = Vec::new();
    for _ in 0..copies {
        let receiver = Arc::clone(&receiver);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = receiver.github(DELIVERY, BODY, Some(SECRET)).await;
            (response.status(), replayed(&response))
        }));
    }
    let mut processed = 0;
    for task in tasks {
        let (status, replayed) = task.await.unwrap();
        match status {
            StatusCode::OK if !replayed => processed += 1,
            StatusCode::OK | StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(processed, 1);
    assert_eq!(receiver.ledger.rows().len(), 1);
    assert_eq!(receiver.ledger.runs(DELIVERY), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_reused_id_rejected() {
    let receiver = Receiver::start(Duration::ZERO, &[]).await;
    let first = receiver.github(DELIVERY, BODY, Some(SECRET)).await;
    assert_eq!(first.status(), StatusCode::OK);

    let other_body =
        br#"{"action":"closed","repository":{"full_name":"octo/hello"},"sender":{"login":"octo"}}"#;
    let reused = receiver.github(DELIVERY, other_body, Some(SECRET)).await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(content_type(&reused), "application/problem+json");
    assert_eq!(receiver.ledger.rows().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_run_releases_delivery() {
    let receiver = Receiver::start(Duration::ZERO, &[DELIVERY]).await;

    let failed = receiver.github(DELIVERY, BODY, Some(SECRET)).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!receiver.record_exists(Route::Github, DELIVERY).await);

    let retried = receiver.github(DELIVERY, BODY, Some(SECRET)).await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert!(!replayed(&retried));
    assert_eq!(receiver.ledger.runs(DELIVERY), 2);
    assert_eq!(receiver.ledger.rows().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ed25519_signature_checked() {
    let receiver = Receiver::start(Duration::ZERO, &[]).await;
    let now = SystemTime::now();

    let stale = receiver
        .ed25519(DELIVERY, BODY, SEED, now - Duration::from_secs(6 * 60))
        .await;
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let future = receiver
        .ed25519(DELIVERY, BODY, SEED, now + Duration::from_secs(6 * 60))
        .await;
    assert_eq!(future.status(), StatusCode::UNAUTHORIZED);
    let wrong_key = receiver.ed25519(DELIVERY, BODY, &"22".repeat(32), now).await;
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);
    assert!(!receiver.record_exists(Route::Ed25519, DELIVERY).await);
    assert!(receiver.ledger.rows().is_empty());

    let first = receiver.ed25519(DELIVERY, BODY, SEED, now).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(!replayed(&first));

    // A redelivery is signed anew with a later timestamp; only the body and event are fingerprinted.
    let redelivery = receiver
        .ed25519(DELIVERY, BODY, SEED, now + Duration::from_secs(2))
        .await;
    assert_eq!(redelivery.status(), StatusCode::OK);
    assert!(replayed(&redelivery));
    assert_eq!(receiver.ledger.rows().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_scope_delivery_ids() {
    let receiver = Receiver::start(Duration::ZERO, &[]).await;

    let github = receiver.github(DELIVERY, BODY, Some(SECRET)).await;
    assert_eq!(github.status(), StatusCode::OK);
    assert!(!replayed(&github));
    let ed25519 = receiver.ed25519(DELIVERY, BODY, SEED, SystemTime::now()).await;
    assert_eq!(ed25519.status(), StatusCode::OK);
    assert!(!replayed(&ed25519));

    assert_eq!(receiver.ledger.rows().len(), 2);
    assert!(receiver.record_exists(Route::Github, DELIVERY).await);
    assert!(receiver.record_exists(Route::Ed25519, DELIVERY).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_plan_processes_each_once() {
    let plan = Plan::build("test").unwrap();
    let flaky: Vec<&str> = FLAKY_EVENTS
        .iter()
        .map(|&index| plan.events[index].id.as_str())
        .collect();
    let receiver = Receiver::start(Duration::from_millis(50), &flaky).await;
    let config = SenderConfig {
        base_url: sender::parse_base_url(&receiver.base).unwrap(),
        github_secret: GithubSecret::new(SECRET).unwrap(),
        ed25519: Ed25519Signer::from_hex(SEED).unwrap(),
    };

    let answers = sender::send_plan(&config, &plan).await.unwrap();

    let failures = sender::check_exactly_once(&plan, &answers);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(receiver.ledger.rows().len(), plan.events.len());
    for (index, event) in plan.events.iter().enumerate() {
        let expected = if FLAKY_EVENTS.contains(&index) { 2 } else { 1 };
        assert_eq!(receiver.ledger.runs(&event.id), expected, "event {index}");
    }
    let rejected = answers
        .iter()
        .filter(|answer| answer.status == Some(StatusCode::UNAUTHORIZED))
        .count();
    assert_eq!(rejected, 2);
    let reused = answers
        .iter()
        .filter(|answer| answer.status == Some(StatusCode::UNPROCESSABLE_ENTITY))
        .count();
    assert_eq!(reused, 1);
}

#[test]
fn sender_rejects_remote_urls() {
    for url in [
        "http://192.0.2.1:3000",
        "https://127.0.0.1:3000",
        "http://example.com",
        "not a url",
    ] {
        assert!(sender::parse_base_url(url).is_err(), "{url} was accepted");
    }
    for url in [
        "http://127.0.0.1:3000",
        "http://[::1]:3000",
        "http://localhost:3000",
    ] {
        assert!(sender::parse_base_url(url).is_ok(), "{url} was rejected");
    }
}
