//! The HTTP layer over real TCP: an axum server on 127.0.0.1:0 with the layer, and reqwest as the client,
//! on every backend (`memory::<case>`, `sqlite::<case>` on a temporary file, `redis::<case>`).
//!
//! Redis cases use the server from `REDIS_URL` or a throwaway `redis-server` that the fixture starts, each
//! with a key prefix of its own. Without either they print why and pass, except under `CI`, where they fail.
#![cfg(feature = "http")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::response::Response;
use axum::routing::post;
use idem::http::{IdempotencyLayer, IdempotencyLayerBuilder, StoragePolicy};
use idem::{IdempotencyKey, IdempotencyStore};
use tokio::sync::{Barrier, Notify, Semaphore};
use tokio::task::JoinHandle;

/// Principal header of the test server; requests without it get 401.
const ACCOUNT: &str = "x-account";
const DEFAULT_ACCOUNT: &str = "acct-1";
/// Upper bound for waiting on the server (a handler to start, a key to be released).
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// A store for one test, plus what must live as long as it (the SQLite file's directory).
struct TestStore {
    store: Arc<dyn IdempotencyStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn open_memory() -> Option<TestStore> {
    Some(TestStore {
        store: Arc::new(idem::memory::MemoryStore::new()),
        _dir: None,
    })
}

async fn open_sqlite() -> Option<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = idem::sqlite::SqliteStore::open(dir.path().join("idem.sqlite3"))
        .await
        .unwrap();
    Some(TestStore {
        store: Arc::new(store),
        _dir: Some(dir),
    })
}

#[cfg(feature = "redis")]
async fn open_redis() -> Option<TestStore> {
    let url = support::redis::redis_target()?;
    let store = idem::redis::RedisStore::builder(&url)
        .key_prefix(support::redis::unique_prefix())
        .connect()
        .await
        .unwrap();
    Some(TestStore {
        store: Arc::new(store),
        _dir: None,
    })
}

/// Handler state: a count of handler runs, and a gate that `/slow` waits on.
#[derive(Clone)]
struct AppState {
    calls: Arc<AtomicUsize>,
    entered: Arc<Notify>,
    gate: Arc<Semaphore>,
}

/// A running test server and a client that sends `x-account: acct-1` unless a request overrides it.
struct TestServer {
    url: String,
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
    /// Starts a server whose layer is the test default (principal from `x-account`) changed by `configure`.
    async fn start(
        store: &TestStore,
        configure: impl FnOnce(IdempotencyLayerBuilder) -> IdempotencyLayerBuilder,
    ) -> Self {
        let builder = IdempotencyLayer::builder(Arc::clone(&store.store)).principal(|parts: &Parts| {
            let account = parts.headers.get(ACCOUNT)?.to_str().ok()?;
            Some(account.to_owned())
        });
        let layer = configure(builder).build().unwrap();

        let state = AppState {
            calls: Arc::new(AtomicUsize::new(0)),
            entered: Arc::new(Notify::new()),
            gate: Arc::new(Semaphore::new(0)),
        };
        let app = Router::new()
            .route("/echo", post(echo))
            .route("/slow", post(slow))
            .route("/delay", post(delay))
            .route("/fail", post(fail))
            .route("/panic", post(panic_once))
            .route("/status/{code}", post(status))
            .layer(layer)
            .with_state(state.clone());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });

        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(ACCOUNT, DEFAULT_ACCOUNT.parse().unwrap());
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .timeout(WAIT_LIMIT)
            .build()
            .unwrap();

        Self {
            url,
            client,
            state,
            store: Arc::clone(&store.store),
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

    /// Returns whether the store contains any record for `key` in the default account's scope.
    async fn has_record(&self, key: &str) -> bool {
        let key = IdempotencyKey::new(DEFAULT_ACCOUNT, key).unwrap();
        self.store.lookup(&key).await.unwrap().is_some()
    }

    /// Waits until the store contains no record for `key`, up to [`WAIT_LIMIT`].
    async fn wait_until_released(&self, key: &str) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        while tokio::time::Instant::now() < deadline {
            if !self.has_record(key).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// Returns 201 with a binary body (a NUL, 0xFF, the run number, then the request body) and headers that a
/// replay must repeat, plus a `Set-Cookie` that it must not.
async fn echo(State(state): State<AppState>, body: Bytes) -> Response {
    let run = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let mut bytes = vec![0x00, 0xff, run as u8];
    bytes.extend_from_slice(&body);
    Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/octet-stream")
        .header("x-custom", "kept")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("set-cookie", "session=secret")
        .body(Body::from(bytes))
        .unwrap()
}

/// Signals that it started, then waits for a permit of the gate before responding like [`echo`].
async fn slow(State(state): State<AppState>, body: Bytes) -> Response {
    state.entered.notify_one();
    state.gate.acquire().await.unwrap().forget();
    echo(State(state), body).await
}

/// Responds like [`echo`] after 200 ms, so that concurrent duplicates overlap with it.
async fn delay(State(state): State<AppState>, body: Bytes) -> Response {
    tokio::time::sleep(Duration::from_millis(200)).await;
    echo(State(state), body).await
}

/// Always fails with 500 and the run number.
async fn fail(State(state): State<AppState>) -> (StatusCode, String) {
    let run = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::INTERNAL_SERVER_ERROR, format!("failure {run}"))
}

/// Panics on its first run and returns 200 after that.
async fn panic_once(State(state): State<AppState>) -> (StatusCode, String) {
    let run = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if run == 1 {
        panic!("handler panics on its first run, as the test requires");
    }
    (StatusCode::OK, format!("run {run}"))
}

/// Returns the status in the path.
async fn status(State(state): State<AppState>, Path(code): Path<u16>) -> (StatusCode, String) {
    let run = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::from_u16(code).unwrap(),
        format!("status {code}, run {run}"),
    )
}

fn is_replayed(headers: &HeaderMap) -> bool {
    headers
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true")
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect()
}

/// Checks that a response is a problem document with `status`, and returns its detail.
async fn problem_detail(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(problem["status"], status.as_u16());
    assert!(problem["type"].is_string(), "{problem}");
    assert!(problem["title"].is_string(), "{problem}");
    problem["detail"].as_str().unwrap().to_owned()
}

/// The cases, each run on every backend.
mod cases {
    use super::*;

    pub(crate) async fn retry_replays(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;
        let body = vec![0x00, 0x01, 0xfe, 0xff, b'x'];

        let first = server
            .post("/echo", "k-replay", body.clone())
            .send()
            .await
            .unwrap();
        let first_status = first.status();
        let first_headers = first.headers().clone();
        let first_body = first.bytes().await.unwrap();

        let retry = server.post("/echo", "k-replay", body).send().await.unwrap();
        let retry_status = retry.status();
        let retry_headers = retry.headers().clone();
        let retry_body = retry.bytes().await.unwrap();

        assert_eq!(first_status, StatusCode::CREATED);
        assert_eq!(retry_status, StatusCode::CREATED);
        assert!(!is_replayed(&first_headers));
        assert!(is_replayed(&retry_headers));
        assert_eq!(
            first_body.as_ref(),
            &[0x00, 0xff, 1, 0x00, 0x01, 0xfe, 0xff, b'x']
        );
        assert_eq!(retry_body, first_body);
        for name in ["content-type", "x-custom", "x-multi"] {
            assert_eq!(
                header_values(&retry_headers, name),
                header_values(&first_headers, name),
                "{name}"
            );
        }
        assert_eq!(header_values(&retry_headers, "x-multi"), ["one", "two"]);
        assert_eq!(header_values(&first_headers, "set-cookie"), ["session=secret"]);
        assert!(retry_headers.get("set-cookie").is_none());
        assert_eq!(server.calls(), 1);
    }

    pub(crate) async fn concurrent_duplicates_run_once(store: TestStore) {
        let server = Arc::new(
            TestServer::start(&store, |builder| builder.wait_for_result(Duration::from_secs(5))).await,
        );
        let barrier = Arc::new(Barrier::new(16));

        let mut tasks = Vec::new();
        for _ in 0..16 {
            let server = Arc::clone(&server);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let response = server
                    .post("/delay", "k-concurrent", "same")
                    .send()
                    .await
                    .unwrap();
                let replayed = is_replayed(response.headers());
                (response.status(), replayed, response.bytes().await.unwrap())
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }

        assert_eq!(server.calls(), 1);
        for (status, _, body) in &results {
            assert_eq!(*status, StatusCode::CREATED);
            assert_eq!(body, &results[0].2);
        }
        let replayed = results.iter().filter(|(_, replayed, _)| *replayed).count();
        assert_eq!(replayed, 15);
    }

    pub(crate) async fn quoted_and_bare_keys_match(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;

        let quoted = server.post("/echo", "\"k-form\"", "a").send().await.unwrap();
        assert_eq!(quoted.status(), StatusCode::CREATED);
        assert!(!is_replayed(quoted.headers()));

        let bare = server.post("/echo", "k-form", "a").send().await.unwrap();
        assert_eq!(bare.status(), StatusCode::CREATED);
        assert!(is_replayed(bare.headers()));
        assert_eq!(server.calls(), 1);
    }

    pub(crate) async fn other_payload_is_422(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;

        server.post("/echo", "k-reuse", "first").send().await.unwrap();
        let reused = server.post("/echo", "k-reuse", "second").send().await.unwrap();
        let detail = problem_detail(reused, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(detail.contains("different request"), "{detail}");
        assert_eq!(server.calls(), 1);
    }

    pub(crate) async fn in_progress_is_409(store: TestStore) {
        let server = Arc::new(TestServer::start(&store, |builder| builder).await);

        let first = {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.post("/slow", "k-busy", "a").send().await.unwrap() })
        };
        tokio::time::timeout(WAIT_LIMIT, server.state.entered.notified())
            .await
            .expect("the first request reaches the handler");

        let duplicate = server.post("/slow", "k-busy", "a").send().await.unwrap();
        let retry_after: u64 = duplicate.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1, "{retry_after}");
        assert!(retry_after <= 30, "{retry_after}");
        let detail = problem_detail(duplicate, StatusCode::CONFLICT).await;
        assert!(detail.contains("still being processed"), "{detail}");

        server.state.gate.add_permits(1);
        let first = first.await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        let retry = server.post("/slow", "k-busy", "a").send().await.unwrap();
        assert!(is_replayed(retry.headers()));
        assert_eq!(server.calls(), 1);
    }

    pub(crate) async fn missing_key_is_400(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;

        let response = server
            .client
            .post(format!("{}/echo", server.url))
            .body("a")
            .send()
            .await
            .unwrap();
        let detail = problem_detail(response, StatusCode::BAD_REQUEST).await;
        assert!(detail.contains("requires an idempotency-key header"), "{detail}");
        assert_eq!(server.calls(), 0);
    }

    pub(crate) async fn invalid_keys_are_400(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;
        let too_long = "k".repeat(256);
        let cases = [
            ("\"\"", "empty"),
            ("\"unterminated", "closing double quote"),
            ("\"bad\\escape\"", "backslash"),
            ("tab\there", "control character"),
            (too_long.as_str(), "256 bytes"),
        ];

        for (key, expected) in cases {
            let response = server.post("/echo", key, "a").send().await.unwrap();
            let detail = problem_detail(response, StatusCode::BAD_REQUEST).await;
            assert!(detail.contains(expected), "{key:?}: {detail}");
        }
        assert_eq!(server.calls(), 0);
    }

    pub(crate) async fn oversized_body_is_413(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder.max_request_body(1024)).await;

        let response = server
            .post("/echo", "k-big", vec![7u8; 2048])
            .send()
            .await
            .unwrap();
        let detail = problem_detail(response, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert!(detail.contains("1024 bytes"), "{detail}");
        assert_eq!(server.calls(), 0);
        assert!(!server.has_record("k-big").await);

        let small = server.post("/echo", "k-big", vec![7u8; 16]).send().await.unwrap();
        assert_eq!(small.status(), StatusCode::CREATED);
        assert!(!is_replayed(small.headers()));
        assert_eq!(server.calls(), 1);
    }

    pub(crate) async fn server_error_runs_again(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;

        let first = server.post("/fail", "k-fail", "").send().await.unwrap();
        assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(first.text().await.unwrap(), "failure 1");

        let retry = server.post("/fail", "k-fail", "").send().await.unwrap();
        assert_eq!(retry.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!is_replayed(retry.headers()));
        assert_eq!(retry.text().await.unwrap(), "failure 2");
        assert_eq!(server.calls(), 2);
    }

    pub(crate) async fn store_everything_replays_500(store: TestStore) {
        let server =
            TestServer::start(&store, |builder| builder.policy(StoragePolicy::StoreEverything)).await;

        let first = server.post("/fail", "k-fail-stored", "").send().await.unwrap();
        assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let retry = server.post("/fail", "k-fail-stored", "").send().await.unwrap();
        assert_eq!(retry.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(is_replayed(retry.headers()));
        assert_eq!(retry.text().await.unwrap(), "failure 1");
        assert_eq!(server.calls(), 1);
    }

    pub(crate) async fn panic_releases_key(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;

        let first = server.post("/panic", "k-panic", "").send().await.unwrap();
        let detail = problem_detail(first, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert!(detail.contains("runs it again"), "{detail}");
        assert!(!server.has_record("k-panic").await);

        let retry = server.post("/panic", "k-panic", "").send().await.unwrap();
        assert_eq!(retry.status(), StatusCode::OK);
        assert!(!is_replayed(retry.headers()));
        assert_eq!(retry.text().await.unwrap(), "run 2");
        assert_eq!(server.calls(), 2);
    }

    pub(crate) async fn disconnect_frees_key(store: TestStore) {
        let server = Arc::new(TestServer::start(&store, |builder| builder).await);

        let abandoned = {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.post("/slow", "k-gone", "a").send().await })
        };
        tokio::time::timeout(WAIT_LIMIT, server.state.entered.notified())
            .await
            .expect("the first request reaches the handler");
        assert!(server.has_record("k-gone").await);

        // Dropping the client's future closes its connection while the handler waits at the gate.
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        assert!(
            server.wait_until_released("k-gone").await,
            "the key stays claimed after the client left"
        );

        server.state.gate.add_permits(1);
        let retry = server.post("/slow", "k-gone", "a").send().await.unwrap();
        assert_eq!(retry.status(), StatusCode::CREATED);
        assert!(!is_replayed(retry.headers()));
    }

    pub(crate) async fn principals_stay_separate(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;

        let first = server.post("/echo", "k-shared", "a").send().await.unwrap();
        let other = server
            .post("/echo", "k-shared", "b")
            .header(ACCOUNT, "acct-2")
            .send()
            .await
            .unwrap();

        assert_eq!(first.status(), StatusCode::CREATED);
        assert_eq!(other.status(), StatusCode::CREATED);
        assert!(!is_replayed(other.headers()));
        assert_eq!(server.calls(), 2);
    }

    pub(crate) async fn missing_principal_is_401(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;

        // The client sends the account header by default, so this request goes out without the default headers.
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{}/echo", server.url))
            .header("idempotency-key", "k-anon")
            .body("a")
            .send()
            .await
            .unwrap();
        let detail = problem_detail(response, StatusCode::UNAUTHORIZED).await;
        assert!(detail.contains("principal"), "{detail}");

        // An empty principal would put every such request in one shared scope, so it is rejected too.
        let empty = server
            .post("/echo", "k-anon", "a")
            .header(ACCOUNT, "")
            .send()
            .await
            .unwrap();
        problem_detail(empty, StatusCode::UNAUTHORIZED).await;
        assert_eq!(server.calls(), 0);
    }

    pub(crate) async fn canonical_json_replays(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder.canonical_json(true)).await;

        server
            .post("/echo", "k-json", r#"{"amount":1200,"currency":"eur"}"#)
            .send()
            .await
            .unwrap();
        let reordered = server
            .post(
                "/echo",
                "k-json",
                "{ \"currency\": \"eur\",\n  \"amount\": 1200 }",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(reordered.status(), StatusCode::CREATED);
        assert!(is_replayed(reordered.headers()));
        assert_eq!(server.calls(), 1);
    }

    pub(crate) async fn raw_json_mismatches(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder.canonical_json(false)).await;

        server
            .post("/echo", "k-json-raw", r#"{"amount":1200,"currency":"eur"}"#)
            .send()
            .await
            .unwrap();
        let reordered = server
            .post("/echo", "k-json-raw", r#"{"currency":"eur","amount":1200}"#)
            .send()
            .await
            .unwrap();
        problem_detail(reordered, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(server.calls(), 1);
    }

    pub(crate) async fn client_errors_stored_429_not(store: TestStore) {
        let server = TestServer::start(&store, |builder| builder).await;

        server.post("/status/404", "k-404", "").send().await.unwrap();
        let retry = server.post("/status/404", "k-404", "").send().await.unwrap();
        assert_eq!(retry.status(), StatusCode::NOT_FOUND);
        assert!(is_replayed(retry.headers()));
        assert_eq!(retry.text().await.unwrap(), "status 404, run 1");
        assert_eq!(server.calls(), 1);

        server.post("/status/429", "k-429", "").send().await.unwrap();
        let retry = server.post("/status/429", "k-429", "").send().await.unwrap();
        assert_eq!(retry.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(!is_replayed(retry.headers()));
        assert_eq!(retry.text().await.unwrap(), "status 429, run 3");
        assert_eq!(server.calls(), 3);
    }
}

/// Declares one multi-threaded test per case in a module named after the backend.
macro_rules! backend_tests {
    ($backend:ident, $open:path) => {
        mod $backend {
            backend_tests!(@cases $open;
                retry_replays,
                concurrent_duplicates_run_once,
                quoted_and_bare_keys_match,
                other_payload_is_422,
                in_progress_is_409,
                missing_key_is_400,
                invalid_keys_are_400,
                oversized_body_is_413,
                server_error_runs_again,
                store_everything_replays_500,
                panic_releases_key,
                disconnect_frees_key,
                principals_stay_separate,
                missing_principal_is_401,
                canonical_json_replays,
                raw_json_mismatches,
                client_errors_stored_429_not
            );
        }
    };
    (@cases $open:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                // The opener returns None after printing why when its backend is unavailable outside CI.
                let Some(store) = $open().await else { return };
                super::cases::$case(store).await;
            }
        )*
    };
}

backend_tests!(memory, super::open_memory);
backend_tests!(sqlite, super::open_sqlite);
#[cfg(feature = "redis")]
backend_tests!(redis, super::open_redis);
