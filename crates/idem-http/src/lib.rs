//! A tower layer that gives any HTTP handler the behavior of the `Idempotency-Key` header (IETF HTTPAPI
//! draft "The Idempotency-Key HTTP Header Field"), on any idem store.
//!
//! Through the `idem` facade (feature `http`), the items below are `idem::http::…`, and the stores are
//! `idem::memory::MemoryStore` and the like.
//!
//! Wrap a service or an axum router in [`IdempotencyLayer`]. The first request with a key runs the handler
//! and its response is stored. Until the retention period ends, every retry with that key gets the stored
//! response, byte for byte, marked with `Idempotent-Replayed: true`.
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use axum::http::{StatusCode, request::Parts};
//! use axum::routing::post;
//! use idem_core::IdempotencyStore;
//! use idem_http::IdempotencyLayer;
//! use idem_memory::MemoryStore;
//!
//! async fn create_charge(body: String) -> (StatusCode, String) {
//!     // Runs once per key; retries get this response replayed.
//!     (StatusCode::CREATED, format!("charged for {body}"))
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
//!     let idempotency = IdempotencyLayer::builder(store)
//!         // Scope keys by account, so two accounts never share a record.
//!         .principal(|parts: &Parts| {
//!             let account = parts.headers.get("x-account-id")?.to_str().ok()?;
//!             Some(account.to_owned())
//!         })
//!         .canonical_json(true)
//!         .build()?;
//!
//!     // route_layer covers the matched routes only, so a 404 for an unknown path is never stored.
//!     let app: Router = Router::new()
//!         .route("/charges", post(create_charge))
//!         .route_layer(idempotency);
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     println!("listening on {}", listener.local_addr()?);
//!     # // The doctest only builds the server; it does not serve.
//!     # let _ = (app, listener);
//!     # return Ok(());
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! With hyper alone, wrap the service in the layer and hand requests to it with a body type that
//! implements `From<Bytes>` (such as `http_body_util::Full<Bytes>` or axum's `Body`); the layer buffers the
//! request body and rebuilds it that way.
//!
//! # Which requests are covered
//!
//! POST and PATCH by default ([`IdempotencyLayerBuilder::methods`]); other methods pass through untouched.
//! [`IdempotencyLayerBuilder::require_key`] sets whether a covered request without a key is rejected (the
//! default) or passes through. [`IdempotencyLayerBuilder::route`] takes a classifier that returns a
//! [`KeyMode`] per request (required, optional, skip), for example by path; or apply separate layers per
//! axum route, with [`IdempotencyLayer::with_require_key`] for a variant of one layer.
//!
//! The key is read from `Idempotency-Key` ([`IdempotencyLayerBuilder::header_name`]) as a Structured Field
//! string (`"abc"`, with the escapes `\"` and `\\`), as the draft defines it, or as a bare token (`abc`), as
//! Stripe's SDKs and many other clients send it. Both forms address the same record. The key string must be
//! 1 to 255 bytes of UTF-8 with no control characters.
//!
//! # Scope
//!
//! Keys are scoped by the principal that [`IdempotencyLayerBuilder::principal`] extracts from the request
//! head, so two accounts that send the same key never share a record. When the extractor returns `None`
//! or an empty string, the response is 401 and the handler does not run. Without an extractor, every key lives in one shared,
//! empty scope: use that only when the key is unique by itself, such as a webhook provider's delivery id.
//!
//! # Fingerprint
//!
//! A retry must repeat the request: method, path, query, body, and the headers named in
//! [`IdempotencyLayerBuilder::include_headers`]. A key reused with another request is answered with 422.
//! With [`IdempotencyLayerBuilder::canonical_json`], a body that parses as JSON is compared in canonical
//! form, so object key order and insignificant whitespace do not matter; array order and number spelling
//! (`1` and `1.0`) still do. A body that does not parse as JSON is then compared by its raw bytes.
//!
//! # Answers
//!
//! | Situation | Status | Handler runs |
//! | --- | --- | --- |
//! | New key | the handler's | yes |
//! | Retry after a stored response | the stored status, headers and body, plus `Idempotent-Replayed: true` | no |
//! | Covered request without a key, key required | 400 | no |
//! | Malformed or invalid key, or several key headers | 400 | no |
//! | Principal extractor returns `None` or `""` | 401 | no |
//! | Request body over [`IdempotencyLayerBuilder::max_request_body`] | 413, nothing stored | no |
//! | Key reused with another request | 422 | no |
//! | Same key while the first request runs | 409 with `Retry-After` (whole seconds, at least 1) | no |
//! | Stored record does not decode | 500 (logged at error), never a replay | no |
//! | Store unavailable or full | 503 with `Retry-After: 1` (fail closed) | no |
//! | Handler panics | 500, key released | yes |
//!
//! The `Retry-After` of a 409 is the remaining lease time of the running request, rounded up to whole
//! seconds. The layer renews that lease while the handler runs, so the hint is close to
//! [`IdempotencyLayerBuilder::lease_ttl`] (30 s by default): set the lease TTL near the handler's usual run
//! time for a tighter hint, or use [`IdempotencyLayerBuilder::wait_for_result`].
//!
//! Every answer the layer writes itself is `application/problem+json` (RFC 9457) with `type`, `title`,
//! `status` and `detail`. [`IdempotencyLayerBuilder::wait_for_result`] makes a request with a key in
//! progress wait for the first request's result and replay it, polling the store with backoff up to a
//! limit, instead of answering 409 at once.
//!
//! # Storage policy
//!
//! With [`StoragePolicy::Default`], 2xx, 3xx and 4xx responses are stored and replayed, except 408, 409, 425
//! and 429. Those, every 5xx, handler errors, panics, and requests dropped before they finish (a client
//! that disconnects, a timeout layer that gives up) release the key, so the retry runs the handler again.
//! Releasing means that side effects the handler caused before it failed can happen again on the retry:
//! handlers must be safe to run again after a failure, for example by checking what a previous attempt
//! already did. [`StoragePolicy::StoreEverything`] stores 5xx too, so a retry replays the failure and the
//! client needs a new key to try again.
//!
//! A 2xx response is never released: the handler's side effects are done. If storing it fails, the layer
//! logs at error and returns it anyway, and the claim stays until its lease lapses. The one exception is a
//! response larger than the store accepts (below).
//!
//! # Stored responses
//!
//! The status, the headers, and the body byte for byte. Headers in [`DEFAULT_EXCLUDED_HEADERS`] are not
//! stored (hop-by-hop headers, `Date`, and `Set-Cookie`, so session credentials never sit in the store and
//! a replay sets no cookie); [`IdempotencyLayerBuilder::exclude_headers`] replaces the list. The record is
//! a format byte followed by postcard of the status, the headers and the body.
//!
//! # Limits
//!
//! - Request bodies are buffered up to [`DEFAULT_MAX_REQUEST_BODY`] (1 MiB) by default. A larger declared
//!   `Content-Length` is answered with 413 before the body is read.
//! - Response bodies are buffered up to the store's `max_response_bytes()`. A larger response (or one with
//!   trailers) is passed through unstored, the key is released, and a warning is logged.
//! - While the handler runs, the lease is renewed every third of [`IdempotencyLayerBuilder::lease_ttl`],
//!   for at most [`IdempotencyLayerBuilder::max_run_time`].
//! - A request dropped while the handler runs releases its key from a spawned task. A request dropped
//!   while the store's begin is in flight cannot release a claim it never saw; that claim lapses at its
//!   lease deadline.
//!
//! # Handler access to the lease
//!
//! The handler finds the [`idem_core::Lease`] it runs under in the request extensions (in axum,
//! `Extension<Lease>`), with the fencing token to pass to downstream systems.

mod body;
mod envelope;
mod fingerprint;
mod key;
mod layer;
mod problem;
mod service;

pub use body::ResponseBody;
pub use layer::{
    DEFAULT_EXCLUDED_HEADERS, DEFAULT_HEADER_NAME, DEFAULT_LEASE_TTL, DEFAULT_MAX_REQUEST_BODY,
    DEFAULT_MAX_RUN_TIME, DEFAULT_RETENTION, IdempotencyLayer, IdempotencyLayerBuilder, KeyMode,
    StoragePolicy,
};
pub use service::{IdempotencyService, REPLAYED_HEADER, ResponseFuture};
