//! The layer around a plain tower service, without a network: replay, mismatch and pass-through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use idem_http::{IdempotencyLayer, REPLAYED_HEADER};
use idem_memory::MemoryStore;
use tower::ServiceExt;

fn app(calls: Arc<AtomicUsize>) -> Router {
    let layer = IdempotencyLayer::new(Arc::new(MemoryStore::new()));
    Router::new()
        .route(
            "/orders",
            post(move |body: String| {
                let calls = Arc::clone(&calls);
                async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    (StatusCode::CREATED, format!("order {n} for {body}"))
                }
            })
            .get(|| async { "list" }),
        )
        .layer(layer)
}

fn post_with_key(key: &str, body: &'static str) -> Request<Body> {
    Request::post("/orders")
        .header("idempotency-key", key)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn retry_replays_response() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(Arc::clone(&calls));

    let first = app.clone().oneshot(post_with_key("k1", "a")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get(REPLAYED_HEADER).is_none());
    let first_body = first.into_body().collect().await.unwrap().to_bytes();

    let retry = app.clone().oneshot(post_with_key("\"k1\"", "a")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers().get(REPLAYED_HEADER).unwrap(), "true");
    let retry_body = retry.into_body().collect().await.unwrap().to_bytes();

    assert_eq!(first_body, retry_body);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn other_payload_is_422() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(Arc::clone(&calls));

    app.clone().oneshot(post_with_key("k2", "a")).await.unwrap();
    let reused = app.oneshot(post_with_key("k2", "b")).await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.headers()["content-type"], "application/problem+json");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn get_passes_through() {
    let app = app(Arc::new(AtomicUsize::new(0)));
    let response = app
        .oneshot(Request::get("/orders").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn missing_key_is_400() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(Arc::clone(&calls));
    let response = app
        .oneshot(Request::post("/orders").body(Body::from("a")).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 400);
    assert!(problem["detail"].as_str().unwrap().contains("idempotency-key"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
