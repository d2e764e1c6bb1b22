//! The HTTP layer over real TCP when the store fails or a limit is reached, and the settings that pick
//! which requests are covered. The store is the memory store, wrapped where a case needs a failure.
#![cfg(feature = "http")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode};
use axum::routing::post;
use axum::{Extension, Router};
use idem::http::{IdempotencyLayer, IdempotencyLayerBuilder, KeyMode};
use idem::memory::MemoryStore;
use idem::{
    BeginOutcome, CompletedRecord, Error, Fingerprint, IdempotencyKey, IdempotencyStore, Lease, Record,
    Result, Ttl, async_trait,
};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

/// Upper bound for waiting on the server (a handler to start).
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// A memory store whose operations fail, or whose stored responses read back as garbage, on demand.
#[derive(Debug)]
struct FaultyStore {
    inner: MemoryStore,
    fail_begin: AtomicBool,
    fail_complete: AtomicBool,
    corrupt_replays: AtomicBool,
}

impl FaultyStore {
    fn new(inner: MemoryStore) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_begin: AtomicBool::new(false),
            fail_complete: AtomicBool::new(false),
            corrupt_replays: AtomicBool::new(false),
        })
    }
}

fn refused(operation: &'static str) -> Error {
    Error::unavailable(
        "faulty",
        operation,
        true,
        "connection refused (injected by the test)",
    )
}

#[async_trait]
impl IdempotencyStore for FaultyStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> Result<BeginOutcome> {
        if self.fail_begin.load(Ordering::SeqCst) {
            return Err(refused("begin"));
        }
        match self.inner.begin(key, fingerprint, lease_ttl).await? {
            BeginOutcome::Completed(record) if self.corrupt_replays.load(Ordering::SeqCst) => {
                Ok(BeginOutcome::Completed(CompletedRecord::new(
                    record.fingerprint,
                    b"\x48not postcard".to_vec(),
                    record.retention_remaining,
                    record.age,
                )))
            }
            outcome => Ok(outcome),
        }
    }

    async fn complete(&self, lease: &Lease, response: &[u8], retention: Ttl) -> Result<()> {
        if self.fail_complete.load(Ordering::SeqCst) {
            return Err(refused("complete"));
        }
        self.inner.complete(lease, response, retention).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }

    async fn renew(&self, lease: &Lease, lease_ttl: Ttl) -> Result<Duration> {
        self.inner.renew(lease, lease_ttl).await
    }

    async fn lookup(&self, key: &IdempotencyKey) -> Result<Option<Record>> {
        self.inner.lookup(key).await
    }

    async fn delete(&self, key: &IdempotencyKey) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn purge(&self) -> Result<u64> {
        self.inner.purge().await
    }

    fn max_response_bytes(&self) -> usize {
        self.inner.max_response_bytes()
    }

    fn backend_name(&self) -> &'static str {
        "faulty"
    }
}

#[derive(Clone)]
struct AppState {
    calls: Arc<AtomicUsize>,
    entered: Arc<Notify>,
    gate: Arc<Semaphore>,
}

struct TestServer {
    url: String,
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    state: AppState,
    store: Arc<dyn IdempotencyStore>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(
        store: Arc<dyn IdempotencyStore>,
        configure: impl FnOnce(IdempotencyLayerBuilder) -> IdempotencyLayerBuilder,
    ) -> Self {
        let layer = configure(IdempotencyLayer::builder(Arc::clone(&store)))
            .build()
            .unwrap();
        let state = AppState {
            calls: Arc::new(AtomicUsize::new(0)),
            entered: Arc::new(Notify::new()),
            gate: Arc::new(Semaphore::new(0)),
        };
        let app = Router::new()
            .route("/echo", post(echo))
            .route("/optional", post(echo))
            .route("/skip", post(echo))
            .route("/large", post(large))
            .route("/slow", post(slow))
            .route("/not-found", post(not_found))
            .route("/fencing", post(fencing))
            .layer(layer)
            .with_state(state.clone());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT_LIMIT)
            .build()
            .unwrap();
        Self {
            url: format!("http://{addr}"),
            addr,
            client,
            state,
            store,
            task,
        }
    }

    fn post(&self, path: &str, key: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .header("idempotency-key", key)
            .body(body)
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    async fn record(&self, key: &str) -> Option<Record> {
        self.store
            .lookup(&IdempotencyKey::unscoped(key).unwrap())
            .await
            .unwrap()
    }
}

async fn echo(State(state): State<AppState>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let run = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let mut bytes = format!("run {run}: ").into_bytes();
    bytes.extend_from_slice(&body);
    (StatusCode::CREATED, bytes)
}

/// Returns 4 KiB of bytes that are not valid UTF-8 at many offsets.
async fn large(State(state): State<AppState>) -> Vec<u8> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    (0..4096u32).map(|index| (index * 7 % 256) as u8).collect()
}

async fn slow(State(state): State<AppState>, body: Bytes) -> (StatusCode, Vec<u8>) {
    state.entered.notify_one();
    state.gate.acquire().await.unwrap().forget();
    echo(State(state), body).await
}

async fn not_found(State(state): State<AppState>) -> (StatusCode, &'static str) {
    state.calls.fetch_add(1, Ordering::SeqCst);
    (StatusCode::NOT_FOUND, "no such order")
}

/// Returns the fencing token of the lease the layer put in the request extensions.
async fn fencing(State(state): State<AppState>, Extension(lease): Extension<Lease>) -> String {
    state.calls.fetch_add(1, Ordering::SeqCst);
    format!("token {}", lease.fencing_token())
}

fn is_replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true")
}

async fn problem_detail(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(problem["status"], status.as_u16());
    problem["detail"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_store_is_503() {
    let store = FaultyStore::new(MemoryStore::new());
    store.fail_begin.store(true, Ordering::SeqCst);
    let server = TestServer::start(store, |builder| builder).await;

    let response = server.post("/echo", "k-503", "a").send().await.unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let detail = problem_detail(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(detail.contains("unavailable"), "{detail}");
    assert_eq!(server.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_is_500() {
    let store = FaultyStore::new(MemoryStore::new());
    let server = TestServer::start(Arc::clone(&store) as Arc<dyn IdempotencyStore>, |builder| builder).await;

    let first = server.post("/echo", "k-corrupt", "a").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);

    store.corrupt_replays.store(true, Ordering::SeqCst);
    let retry = server.post("/echo", "k-corrupt", "a").send().await.unwrap();
    assert!(!is_replayed(&retry));
    let detail = problem_detail(retry, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(detail.contains("cannot be read"), "{detail}");
    assert_eq!(server.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstored_2xx_keeps_claim() {
    let store = FaultyStore::new(MemoryStore::new());
    store.fail_complete.store(true, Ordering::SeqCst);
    let server = TestServer::start(Arc::clone(&store) as Arc<dyn IdempotencyStore>, |builder| builder).await;

    let first = server.post("/echo", "k-unstored", "a").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.text().await.unwrap(), "run 1: a");
    assert!(matches!(
        server.record("k-unstored").await,
        Some(Record::InProgress(_))
    ));

    let retry = server.post("/echo", "k-unstored", "a").send().await.unwrap();
    problem_detail(retry, StatusCode::CONFLICT).await;
    assert_eq!(server.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstored_4xx_releases_key() {
    let store = FaultyStore::new(MemoryStore::new());
    store.fail_complete.store(true, Ordering::SeqCst);
    let server = TestServer::start(Arc::clone(&store) as Arc<dyn IdempotencyStore>, |builder| builder).await;

    let first = server.post("/not-found", "k-404", "").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::NOT_FOUND);
    assert!(server.record("k-404").await.is_none());

    let retry = server.post("/not-found", "k-404", "").send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::NOT_FOUND);
    assert!(!is_replayed(&retry));
    assert_eq!(server.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_passes_unstored() {
    let store = MemoryStore::builder().max_response_bytes(1024).build().unwrap();
    let server = TestServer::start(Arc::new(store), |builder| builder).await;
    let expected: Vec<u8> = (0..4096u32).map(|index| (index * 7 % 256) as u8).collect();

    let first = server.post("/large", "k-large", "").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.bytes().await.unwrap().as_ref(), expected.as_slice());
    assert!(server.record("k-large").await.is_none());

    let retry = server.post("/large", "k-large", "").send().await.unwrap();
    assert!(!is_replayed(&retry));
    assert_eq!(retry.bytes().await.unwrap().as_ref(), expected.as_slice());
    assert_eq!(server.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_handler_keeps_lease() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let server =
        Arc::new(TestServer::start(store, |builder| builder.lease_ttl(Duration::from_millis(1000))).await);

    let first = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/slow", "k-long", "a").send().await.unwrap() })
    };
    tokio::time::timeout(WAIT_LIMIT, server.state.entered.notified())
        .await
        .expect("the first request reaches the handler");

    // Four lease TTLs: without renewal the claim would have lapsed and the duplicate would take it over.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let duplicate = server.post("/slow", "k-long", "a").send().await.unwrap();
    problem_detail(duplicate, StatusCode::CONFLICT).await;

    server.state.gate.add_permits(1);
    assert_eq!(first.await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(server.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_result_gives_up() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let server = Arc::new(
        TestServer::start(store, |builder| {
            builder.wait_for_result(Duration::from_millis(300))
        })
        .await,
    );

    let first = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/slow", "k-wait", "a").send().await.unwrap() })
    };
    tokio::time::timeout(WAIT_LIMIT, server.state.entered.notified())
        .await
        .expect("the first request reaches the handler");

    let duplicate = server.post("/slow", "k-wait", "a").send().await.unwrap();
    assert!(duplicate.headers().contains_key("retry-after"));
    problem_detail(duplicate, StatusCode::CONFLICT).await;

    server.state.gate.add_permits(1);
    assert_eq!(first.await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(server.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_classifier_applies() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let server = TestServer::start(store, |builder| {
        builder.route(|parts| match parts.uri.path() {
            "/optional" => Some(KeyMode::Optional),
            "/skip" => Some(KeyMode::Skip),
            _ => None,
        })
    })
    .await;

    let no_key = server
        .client
        .post(format!("{}/optional", server.url))
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::CREATED);
    server.post("/optional", "k-opt", "a").send().await.unwrap();
    let retry = server.post("/optional", "k-opt", "a").send().await.unwrap();
    assert!(is_replayed(&retry));
    assert_eq!(server.calls(), 2);

    server.post("/skip", "k-skip", "a").send().await.unwrap();
    let skipped = server.post("/skip", "k-skip", "a").send().await.unwrap();
    assert!(!is_replayed(&skipped));
    assert!(server.record("k-skip").await.is_none());
    assert_eq!(server.calls(), 4);

    let required = server
        .client
        .post(format!("{}/echo", server.url))
        .body("a")
        .send()
        .await
        .unwrap();
    problem_detail(required, StatusCode::BAD_REQUEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_layer_passes_through() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let layer = IdempotencyLayer::new(store).with_require_key(false);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let app: Router = Router::new()
        .route(
            "/notes",
            post(move || {
                let calls = Arc::clone(&counted);
                async move { format!("note {}", calls.fetch_add(1, Ordering::SeqCst) + 1) }
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notes", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let first = client.post(&url).send().await.unwrap().text().await.unwrap();
    let second = client.post(&url).send().await.unwrap().text().await.unwrap();
    task.abort();

    assert_eq!(first, "note 1");
    assert_eq!(second, "note 2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_header_name_keys() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let delivery = HeaderName::from_static("x-github-delivery");
    let server = TestServer::start(store, |builder| builder.header_name(delivery)).await;
    let url = format!("{}/echo", server.url);

    let first = server
        .client
        .post(&url)
        .header("x-github-delivery", "d-1")
        .body("a")
        .send()
        .await;
    assert_eq!(first.unwrap().status(), StatusCode::CREATED);
    let redelivery = server
        .client
        .post(&url)
        .header("x-github-delivery", "d-1")
        .body("a")
        .send()
        .await;
    assert!(is_replayed(&redelivery.unwrap()));

    let standard_only = server.post("/echo", "d-2", "a").send().await.unwrap();
    let detail = problem_detail(standard_only, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("x-github-delivery"), "{detail}");
    assert_eq!(server.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn included_header_counts() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let content_type = HeaderName::from_static("content-type");
    let server = TestServer::start(store, |builder| builder.include_headers([content_type])).await;

    server
        .post("/echo", "k-type", "a=1")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    let other_type = server
        .post("/echo", "k-type", "a=1")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    problem_detail(other_type, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(server.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_oversized_body_is_413() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let server = TestServer::start(store, |builder| builder.max_request_body(1024)).await;

    // A chunked body declares no length, so the limit applies while the body is read. The request is
    // written by hand on a blocking socket because reqwest sends a Content-Length for in-memory bodies.
    let addr = server.addr;
    let response = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};

        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT_LIMIT)).unwrap();
        // The whole request goes out in one write (1 KiB plus one byte of body against a 1 KiB limit), so
        // the server has read all of it when it responds, and closing does not reset the connection.
        let mut request = b"POST /echo HTTP/1.1\r\nhost: localhost\r\nidempotency-key: k-chunked\r\n\
                            transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
        for _ in 0..2 {
            request.extend_from_slice(b"200\r\n");
            request.extend_from_slice(&[b'x'; 0x200]);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"1\r\nx\r\n0\r\n\r\n");
        stream.write_all(&request).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        response
    })
    .await
    .unwrap();

    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(server.record("k-chunked").await.is_none());
    assert_eq!(server.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_sees_lease() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let server = TestServer::start(store, |builder| builder).await;

    let first = server
        .post("/fencing", "k-token", "")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let retry = server
        .post("/fencing", "k-token", "")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(first.starts_with("token "), "{first}");
    assert_eq!(retry, first);
    assert_eq!(server.calls(), 1);
}

#[test]
fn zero_request_body_limit_rejected() {
    let store: std::sync::Arc<dyn idem::IdempotencyStore> =
        std::sync::Arc::new(idem::memory::MemoryStore::new());
    let error = idem::http::IdempotencyLayer::builder(store)
        .max_request_body(0)
        .build()
        .unwrap_err();
    assert!(matches!(error, idem::Error::InvalidInput { .. }), "{error}");
    assert!(error.to_string().contains("max_request_body"), "{error}");
}
