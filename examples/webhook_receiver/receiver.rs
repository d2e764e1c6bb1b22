//! The receiver: an axum router that checks each delivery's signature, then processes it once per delivery
//! id through idem's HTTP layer.
//!
//! The layers of one route, outermost first:
//!
//! 1. the signature check ([`verify_github`] or [`verify_ed25519`]) buffers the raw body, rejects a bad or
//!    missing signature with 401 before idem sees the request, and marks the request with the route it
//!    was verified for;
//! 2. [`IdempotencyLayer`], keyed by the route's delivery id header and scoped by the verified route, stores
//!    the handler's response and replays it to redeliveries;
//! 3. [`handle_delivery`], the handler, which appends one row per processed event to the [`Ledger`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use idem::IdempotencyStore;
use idem::http::IdempotencyLayer;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::payloads;
use crate::plan::Route;
use crate::signature::{
    ED25519_SIGNATURE_HEADER, ED25519_TIMESTAMP_HEADER, Ed25519Verifier, GITHUB_SIGNATURE_HEADER,
    GithubSecret,
};

/// The largest delivery body the receiver reads, in bytes. GitHub caps payloads at 25 MB but the ones
/// this example handles are under 64 KiB.
pub(crate) const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// How long a processed delivery is replayed: GitHub lets a user redeliver a delivery for 3 days.
pub(crate) const RETENTION: Duration = Duration::from_secs(3 * 24 * 60 * 60);

/// Lease TTL of a delivery being processed. A receiver that crashes mid-run blocks the redelivery for at
/// most this long. While the handler runs, the layer renews the lease every third of it, so a concurrent
/// copy gets about this long as its `Retry-After`.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(5);

/// The receiver's settings.
#[derive(Clone, Debug)]
pub(crate) struct ReceiverConfig {
    pub(crate) github_secret: GithubSecret,
    pub(crate) ed25519: Ed25519Verifier,
    /// Simulated processing time of one event.
    pub(crate) work_time: Duration,
    /// Delivery ids whose first run fails with a simulated downstream 503; the demo uses it to show that a
    /// failed run releases the key.
    pub(crate) fail_first_run: HashSet<String>,
}

/// The side effect of processing: one row per handler run that succeeded.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    rows: Mutex<Vec<LedgerRow>>,
    runs: Mutex<HashMap<String, u32>>,
}

/// One processed event.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LedgerRow {
    pub(crate) row: u64,
    pub(crate) route: &'static str,
    pub(crate) delivery: String,
    pub(crate) event: String,
    pub(crate) summary: String,
    pub(crate) body_sha256: String,
}

impl Ledger {
    /// Returns a copy of every row, in order.
    pub(crate) fn rows(&self) -> Vec<LedgerRow> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Returns how many times the handler started for a delivery id, failed runs included.
    pub(crate) fn runs(&self, delivery: &str) -> u32 {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.get(delivery).copied().unwrap_or(0)
    }

    fn start_run(&self, delivery: &str) -> u32 {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let count = runs.entry(delivery.to_owned()).or_default();
        *count += 1;
        *count
    }

    fn append(&self, mut row: LedgerRow) -> LedgerRow {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        row.row = rows.len() as u64 + 1;
        rows.push(row.clone());
        row
    }
}

#[derive(Clone)]
struct AppState {
    config: Arc<ReceiverConfig>,
    ledger: Arc<Ledger>,
}

/// The route a request's signature was verified for; the idempotency layer scopes keys by it.
#[derive(Clone, Copy, Debug)]
struct Verified(Route);

/// Builds the receiver's router on `store`. The handler appends to `ledger`.
pub(crate) fn router(
    config: ReceiverConfig,
    store: Arc<dyn IdempotencyStore>,
    ledger: Arc<Ledger>,
) -> Result<Router, String> {
    let state = AppState {
        config: Arc::new(config),
        ledger,
    };
    let github = post(handle_delivery)
        .layer(idempotency_layer(Arc::clone(&store), Route::Github)?)
        .layer(middleware::from_fn_with_state(state.clone(), verify_github));
    let ed25519 = post(handle_delivery)
        .layer(idempotency_layer(store, Route::Ed25519)?)
        .layer(middleware::from_fn_with_state(state.clone(), verify_ed25519));
    Ok(Router::new()
        .route(Route::Github.path(), github)
        .route(Route::Ed25519.path(), ed25519)
        .route("/ledger", get(show_ledger))
        .with_state(state))
}

/// Builds the idempotency layer of one route: keyed by its delivery id header, scoped by the verified
/// route, with the event type header in the fingerprint.
fn idempotency_layer(store: Arc<dyn IdempotencyStore>, route: Route) -> Result<IdempotencyLayer, String> {
    IdempotencyLayer::builder(store)
        .header_name(HeaderName::from_static(route.id_header()))
        .include_headers([HeaderName::from_static(route.event_header())])
        // Every request reaching this layer passed the signature check, which sets the extension; a request
        // without it would get 401 from the layer.
        .principal(|parts| {
            let verified = parts.extensions.get::<Verified>()?;
            Some(verified.0.name().to_owned())
        })
        .max_request_body(MAX_BODY_BYTES)
        .retention(RETENTION)
        .lease_ttl(LEASE_TTL)
        .build()
        .map_err(|error| format!("cannot build the idempotency layer for {}: {error}", route.path()))
}

/// Checks GitHub's `X-Hub-Signature-256` before anything else reads the delivery.
async fn verify_github(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let header = parts
        .headers
        .get(GITHUB_SIGNATURE_HEADER)
        .map(HeaderValue::as_bytes);
    if let Err(error) = state.config.github_secret.verify(header, &body) {
        return reject(Route::Github, &parts.headers, &error.to_string());
    }
    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(Verified(Route::Github));
    next.run(request).await
}

/// Checks the Ed25519 signature and its timestamp before anything else reads the delivery.
async fn verify_ed25519(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let signature = parts
        .headers
        .get(ED25519_SIGNATURE_HEADER)
        .map(HeaderValue::as_bytes);
    let timestamp = parts
        .headers
        .get(ED25519_TIMESTAMP_HEADER)
        .map(HeaderValue::as_bytes);
    if let Err(error) = state
        .config
        .ed25519
        .verify(signature, timestamp, &body, SystemTime::now())
    {
        return reject(Route::Ed25519, &parts.headers, &error.to_string());
    }
    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(Verified(Route::Ed25519));
    next.run(request).await
}

/// Buffers the body up to [`MAX_BODY_BYTES`]; a signature covers the exact bytes, so it is read whole.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the delivery body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // axum's to_bytes fails both on a body over the limit and on a connection that broke mid-body. Without
    // a declared length the first is the likely cause, because the second leaves nobody to answer.
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|error| {
        tracing::warn!(%error, "could not read a delivery body");
        too_large()
    })
}

fn reject(route: Route, headers: &HeaderMap, reason: &str) -> Response {
    let delivery = headers
        .get(route.id_header())
        .and_then(|value| value.to_str().ok())
        .unwrap_or("(none)");
    tracing::warn!(
        route = route.path(),
        delivery,
        reason,
        "rejected a delivery: invalid signature"
    );
    let mut response = problem(StatusCode::UNAUTHORIZED, reason);
    // HTTP requires a challenge on every 401. Webhook signatures have no registered scheme, so the
    // challenge names the header that carries the signature.
    let challenge = format!(
        "Signature realm=\"{}\", header=\"{}\"",
        route.path(),
        route.signature_header()
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Processes one verified delivery: the side effect is a ledger row, and the receipt names it.
async fn handle_delivery(
    State(state): State<AppState>,
    Extension(Verified(route)): Extension<Verified>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(delivery) = header_text(&headers, route.id_header()) else {
        let detail = format!("the {} header is missing or not ASCII", route.id_header());
        return problem(StatusCode::BAD_REQUEST, &detail);
    };
    let Some(event) = header_text(&headers, route.event_header()) else {
        let detail = format!("the {} header is missing or not ASCII", route.event_header());
        return problem(StatusCode::BAD_REQUEST, &detail);
    };
    let summary = match payloads::summarize(event, &body) {
        Ok(summary) => summary,
        Err(error) => return problem(StatusCode::BAD_REQUEST, &error),
    };

    let run = state.ledger.start_run(delivery);
    if run == 1 && state.config.fail_first_run.contains(delivery) {
        tracing::warn!(delivery, event, "processing failed: simulated downstream outage");
        let mut response = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the downstream service is unavailable (simulated); retry the delivery",
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    tokio::time::sleep(state.config.work_time).await;

    let row = state.ledger.append(LedgerRow {
        row: 0,
        route: route.name(),
        delivery: delivery.to_owned(),
        event: event.to_owned(),
        summary,
        body_sha256: hex::encode(Sha256::digest(&body)),
    });
    tracing::info!(delivery, event, row = row.row, run, "processed {}", row.summary);
    let receipt = json!({
        "delivery": row.delivery,
        "event": row.event,
        "summary": row.summary,
        "ledger_row": row.row,
    });
    (StatusCode::OK, Json(receipt)).into_response()
}

async fn show_ledger(State(state): State<AppState>) -> Json<Vec<LedgerRow>> {
    Json(state.ledger.rows())
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Builds an RFC 9457 `application/problem+json` response, as idem's layer writes its own answers.
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}
