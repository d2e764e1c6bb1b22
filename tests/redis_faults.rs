//! Failures of a Redis server the tests start themselves: a restart in the middle of a run, a stopped
//! server, foreign values under an idem key, a password-protected server, and replicas that do not answer.
//!
//! Without `redis-server` on PATH the tests print why and pass, except under `CI`, where they fail.
#![cfg(feature = "redis")]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem::redis::RedisStore;
use idem::{
    BeginOutcome, Error, Fingerprint, IdempotencyKey, IdempotencyStore, Lease, RunError, RunOutcome, Runner,
    Ttl,
};
use support::redis::{RedisOptions, RedisServer, Reply, is_on_path, running_in_ci, unique_prefix};

/// Returns whether `redis-server` can be started; prints why not, or fails under CI.
fn redis_available() -> bool {
    if is_on_path("redis-server") {
        return true;
    }
    assert!(
        !running_in_ci(),
        "redis-server not found on PATH; CI requires Redis: install the redis-server package"
    );
    eprintln!("SKIPPED: redis-server not found on PATH; install the redis-server package to run this test");
    false
}

fn fingerprint(byte: u8) -> Fingerprint {
    Fingerprint::new(vec![byte; 32]).unwrap()
}

fn ttl(millis: u64) -> Ttl {
    Ttl::from_millis(millis).unwrap()
}

/// Starts a server off the async runtime's threads, because the fixture waits with blocking calls.
async fn start_server(options: RedisOptions) -> RedisServer {
    tokio::task::spawn_blocking(move || RedisServer::start_with(options))
        .await
        .expect("start redis-server")
}

async fn restart_server(mut server: RedisServer) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .expect("restart redis-server")
}

async fn stop_server(mut server: RedisServer) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .expect("stop redis-server")
}

/// How often each key's closure ran, and how often a run ended as executed but not recorded.
#[derive(Default)]
struct Ledger {
    executions: Mutex<HashMap<u32, u32>>,
    not_recorded: Mutex<HashMap<u32, u32>>,
    store_errors: AtomicU64,
}

/// Runs key `index` until the runner returns an outcome, retrying store failures (the server may be
/// restarting) and claims left by a run that failed to record.
async fn run_until_done(runner: &Runner, ledger: &Ledger, index: u32) -> RunOutcome<u32> {
    let key = IdempotencyKey::new("faults", format!("key-{index}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = runner
            .run(&key, &fingerprint(1), |_lease| async move {
                *ledger.executions.lock().unwrap().entry(index).or_default() += 1;
                Ok::<u32, std::io::Error>(index * 7)
            })
            .await;
        match result {
            Ok(outcome) => return outcome,
            Err(RunError::NotRecorded { .. }) => {
                *ledger.not_recorded.lock().unwrap().entry(index).or_default() += 1;
            }
            Err(RunError::Store(error)) if error.is_retryable() => {
                ledger.store_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(other) => panic!("key {index}: unexpected run error: {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "key {index} did not finish within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server with an append-only file restarts while a runner works through 200 keys. Scripts are loaded
/// again, the store reconnects, completed records survive, and no key runs twice unless its first run
/// could not be recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_run_keeps_records() {
    if !redis_available() {
        return;
    }
    const KEYS: u32 = 200;
    let server = start_server(RedisOptions {
        append_only: true,
        password: None,
    })
    .await;
    let store = RedisStore::builder(&server.url())
        .key_prefix(unique_prefix())
        .operation_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let runner = Arc::new(
        Runner::builder(Arc::new(store.clone()))
            // A claim left by a run that could not record lapses quickly, so its key can finish.
            .lease_ttl(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let ledger = Arc::new(Ledger::default());
    let done = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    for worker in 0..4u32 {
        let (runner, ledger, done) = (Arc::clone(&runner), Arc::clone(&ledger), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for index in (worker..KEYS).step_by(4) {
                let outcome = run_until_done(&runner, &ledger, index).await;
                outcomes.push((index, outcome));
                done.fetch_add(1, Ordering::Relaxed);
            }
            outcomes
        }));
    }
    while done.load(Ordering::Relaxed) < u64::from(KEYS) / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let server = restart_server(server).await;
    let done_at_restart = done.load(Ordering::Relaxed);

    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.extend(worker.await.unwrap());
    }
    assert!(
        done_at_restart < u64::from(KEYS),
        "the restart must happen in the middle of the run"
    );
    assert_eq!(outcomes.len(), KEYS as usize);

    let executions = ledger.executions.lock().unwrap().clone();
    let not_recorded = ledger.not_recorded.lock().unwrap().clone();
    for index in 0..KEYS {
        let ran = executions.get(&index).copied().unwrap_or(0);
        let unrecorded = not_recorded.get(&index).copied().unwrap_or(0);
        assert_eq!(
            ran,
            1 + unrecorded,
            "key {index} ran {ran} times with {unrecorded} unrecorded runs; only an unrecorded run may repeat"
        );
    }
    for (index, outcome) in &outcomes {
        assert_eq!(*outcome.value(), index * 7, "key {index} returned its own output");
    }

    // Everything recorded before and after the restart replays from the reloaded append-only file.
    let server = restart_server(server).await;
    for index in 0..KEYS {
        let outcome = run_until_done(&runner, &ledger, index).await;
        assert!(
            outcome.is_replayed(),
            "key {index} replays after the second restart"
        );
        assert_eq!(*outcome.value(), index * 7, "key {index} replays its output");
    }
    let total: u32 = ledger.executions.lock().unwrap().values().sum();
    let expected: u32 = KEYS + ledger.not_recorded.lock().unwrap().values().sum::<u32>();
    assert_eq!(total, expected, "no closure ran during the replay pass");
    drop(server);
}

/// On a stopped server, begin fails closed with a retryable error within the operation timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_fails_closed() {
    if !redis_available() {
        return;
    }
    let timeout = Duration::from_millis(400);
    let server = start_server(RedisOptions::default()).await;
    let store = RedisStore::builder(&server.url())
        .key_prefix(unique_prefix())
        .operation_timeout(timeout)
        .connect()
        .await
        .unwrap();
    let key = IdempotencyKey::unscoped("stopped").unwrap();
    let server = stop_server(server).await;

    for attempt in 0..3 {
        let started = Instant::now();
        let result = store.begin(&key, &fingerprint(1), ttl(60_000)).await;
        let elapsed = started.elapsed();
        match result {
            Err(Error::Unavailable {
                retryable, operation, ..
            }) => {
                assert!(retryable, "attempt {attempt}: a stopped server is retryable");
                assert_eq!(operation, "begin");
            }
            other => panic!("attempt {attempt}: begin on a stopped server must fail closed, got {other:?}"),
        }
        // The bound is the contract of operation_timeout, with a margin for a loaded machine.
        assert!(
            elapsed < timeout + Duration::from_millis(500),
            "attempt {attempt}: begin took {elapsed:?}, the operation timeout is {timeout:?}"
        );
    }
    let lookup = store.lookup(&key).await;
    assert!(
        matches!(lookup, Err(Error::Unavailable { retryable: true, .. })),
        "{lookup:?}"
    );
    drop(server);
}

/// A new store on a server that does not answer fails to connect with a retryable error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_stopped_server_fails() {
    if !redis_available() {
        return;
    }
    let server = start_server(RedisOptions::default()).await;
    let url = server.url();
    let server = stop_server(server).await;
    let started = Instant::now();
    let result = RedisStore::builder(&url)
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await;
    match result {
        Err(Error::Unavailable {
            retryable, operation, ..
        }) => {
            assert!(retryable);
            assert_eq!(operation, "connect");
        }
        other => panic!("connect to a stopped server must fail, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(server);
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, Error>, key: &IdempotencyKey, what: &str) {
    match result {
        Err(Error::CorruptRecord { key: label, reason }) => {
            assert_eq!(label, key.label(), "{what}: the error names the key");
            assert!(!reason.is_empty(), "{what}: the error gives a reason");
        }
        other => panic!("{what}: expected Error::CorruptRecord, got {other:?}"),
    }
}

/// Values that the store did not write, under its key names, are corrupt records for every operation;
/// delete removes them and the key works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_are_corrupt() {
    if !redis_available() {
        return;
    }
    let server = start_server(RedisOptions::default()).await;
    let store = RedisStore::builder(&server.url())
        .key_prefix(unique_prefix())
        .connect()
        .await
        .unwrap();
    let cases: [(&str, &[&[&str]]); 6] = [
        ("string", &[&["SET", "{key}", "hello"]]),
        ("list", &[&["RPUSH", "{key}", "a"]]),
        ("hash without version", &[&["HSET", "{key}", "s", "p", "t", "5"]]),
        (
            "hash of a newer layout",
            &[&["HSET", "{key}", "v", "2", "s", "p", "t", "5"]],
        ),
        (
            "hash with a garbage token",
            &[&[
                "HSET", "{key}", "v", "1", "s", "p", "t", "12abc", "f", "x", "a", "1",
            ]],
        ),
        (
            "hash with an unknown state",
            &[&[
                "HSET", "{key}", "v", "1", "s", "q", "t", "5", "f", "x", "a", "1", "c", "1", "e", "1",
            ]],
        ),
    ];
    let mut raw = server.connect();
    for (index, (name, commands)) in cases.iter().enumerate() {
        let key = IdempotencyKey::new("corrupt", format!("case-{index}")).unwrap();
        let redis_key = store.record_key(&key);
        for command in *commands {
            let args: Vec<&str> = command
                .iter()
                .map(|arg| if *arg == "{key}" { redis_key.as_str() } else { arg })
                .collect();
            let reply = raw.command(&args).unwrap();
            assert!(!matches!(reply, Reply::Error(_)), "{name}: {reply:?}");
        }
        let lease = Lease::new(key.clone(), fingerprint(1), 5, 1, ttl(60_000));
        assert_corrupt(store.begin(&key, &fingerprint(1), ttl(60_000)).await, &key, name);
        assert_corrupt(store.lookup(&key).await, &key, name);
        assert_corrupt(store.complete(&lease, b"r", ttl(60_000)).await, &key, name);
        assert_corrupt(store.renew(&lease, ttl(60_000)).await, &key, name);
        assert_corrupt(store.release(&lease).await, &key, name);

        assert!(
            store.delete(&key).await.unwrap(),
            "{name}: delete removes the corrupt value"
        );
        let outcome = store.begin(&key, &fingerprint(1), ttl(60_000)).await.unwrap();
        assert!(
            matches!(outcome, BeginOutcome::Acquired(_)),
            "{name}: after delete the key is fresh, got {outcome:?}"
        );
    }
    drop(server);
}

/// Scripts are loaded again after the server forgets them (`SCRIPT FLUSH`, as after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_reloads_scripts() {
    if !redis_available() {
        return;
    }
    let server = start_server(RedisOptions::default()).await;
    let store = RedisStore::builder(&server.url())
        .key_prefix(unique_prefix())
        .connect()
        .await
        .unwrap();
    let key = IdempotencyKey::unscoped("flush").unwrap();
    let lease = match store.begin(&key, &fingerprint(1), ttl(60_000)).await.unwrap() {
        BeginOutcome::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        server.connect().command(&["SCRIPT", "FLUSH"]).unwrap(),
        Reply::ok()
    );
    store.complete(&lease, b"done", ttl(60_000)).await.unwrap();
    let replay = store.begin(&key, &fingerprint(1), ttl(60_000)).await.unwrap();
    assert!(matches!(replay, BeginOutcome::Completed(_)), "{replay:?}");
    drop(server);
}

/// Scripts are loaded again on every node of a cluster that forgot them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reloads_scripts() {
    if !redis_available() || !is_on_path("redis-cli") {
        assert!(!running_in_ci(), "CI requires redis-cli");
        return;
    }
    let cluster = tokio::task::spawn_blocking(support::redis::shared_cluster)
        .await
        .unwrap();
    let store = RedisStore::cluster_builder(cluster.urls())
        .key_prefix(unique_prefix())
        .connect()
        .await
        .unwrap();
    let keys: Vec<IdempotencyKey> = (0..30)
        .map(|index| IdempotencyKey::unscoped(format!("key-{index}")).unwrap())
        .collect();
    for key in &keys {
        let outcome = store.begin(key, &fingerprint(1), ttl(60_000)).await.unwrap();
        assert!(matches!(outcome, BeginOutcome::Acquired(_)), "{outcome:?}");
    }
    for port in cluster.ports() {
        let mut node = support::redis::RespConnection::connect(port).unwrap();
        assert_eq!(node.command(&["SCRIPT", "FLUSH"]).unwrap(), Reply::ok());
    }
    for key in &keys {
        let outcome = store.begin(key, &fingerprint(1), ttl(60_000)).await.unwrap();
        assert!(
            matches!(outcome, BeginOutcome::InProgress { .. }),
            "after the flush the claim is still seen, got {outcome:?}"
        );
    }
}

/// A password-protected server works through the URL, and neither `Debug` nor errors show the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_stays_hidden() {
    if !redis_available() {
        return;
    }
    let password = "pw-4f1c9e-secret";
    let server = start_server(RedisOptions {
        append_only: false,
        password: Some(password.to_owned()),
    })
    .await;
    let url = server.url();
    assert!(url.contains(password), "the fixture puts the password in the URL");

    let store = RedisStore::builder(&url)
        .key_prefix(unique_prefix())
        .connect()
        .await
        .unwrap();
    let key = IdempotencyKey::unscoped("secret-server").unwrap();
    let lease = match store.begin(&key, &fingerprint(1), ttl(60_000)).await.unwrap() {
        BeginOutcome::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    };
    store.complete(&lease, b"ok", ttl(60_000)).await.unwrap();

    let shown = format!("{store:?} {:?}", RedisStore::builder(&url));
    assert!(!shown.contains(password), "{shown}");
    assert!(shown.contains(":***@"), "{shown}");

    // With a database number in the URL the client selects it after AUTH, the shape that used to hide a
    // rejected password behind the connect timeout.
    let wrong = format!("{}0", url.replace(password, "wrong-password-77"));
    let error = RedisStore::builder(&wrong)
        .connect_timeout(Duration::from_secs(4))
        .connect()
        .await
        .unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(!text.contains("wrong-password-77"), "{text}");
    assert!(!text.contains(password), "{text}");
    // A rejected password is reported as such, not as a timeout that a retry could fix.
    // NOTE: with the locked redis 1.8.2 this also passes without the direct handshake in connect. The
    // timeout was seen only in a separate application, so this check does not pin that fix.
    assert!(!error.is_retryable(), "{text}");
    assert!(
        text.to_lowercase().contains("wrongpass") || text.contains("authentication"),
        "{text}"
    );

    let unauthenticated = url.replace(&format!(":{password}@"), "");
    let error = RedisStore::connect(&unauthenticated).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(!error.is_retryable(), "{error:?}");
    drop(server);
}

/// With wait_for_replicas on a server without replicas, begin fails with a retryable error and releases
/// its claim, and complete reports the shortfall after storing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_replicas_fail_writes() {
    if !redis_available() {
        return;
    }
    let server = start_server(RedisOptions::default()).await;
    let prefix = unique_prefix();
    let store = RedisStore::builder(&server.url())
        .key_prefix(prefix.clone())
        .wait_for_replicas(1, Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let key = IdempotencyKey::unscoped("replicated").unwrap();
    match store.begin(&key, &fingerprint(1), ttl(60_000)).await {
        Err(Error::Unavailable {
            retryable, source, ..
        }) => {
            assert!(retryable);
            assert!(source.to_string().contains("0 of 1"), "{source}");
        }
        other => panic!("begin without the required replica must fail, got {other:?}"),
    }
    assert_eq!(
        store.lookup(&key).await.unwrap(),
        None,
        "the failed begin released its claim"
    );

    let plain = RedisStore::builder(&server.url())
        .key_prefix(prefix)
        .connect()
        .await
        .unwrap();
    let lease = match plain.begin(&key, &fingerprint(1), ttl(60_000)).await.unwrap() {
        BeginOutcome::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    };
    let result = store.complete(&lease, b"r", ttl(60_000)).await;
    assert!(
        matches!(result, Err(Error::Unavailable { retryable: true, .. })),
        "{result:?}"
    );
    let replay = plain.begin(&key, &fingerprint(1), ttl(60_000)).await.unwrap();
    assert!(
        matches!(replay, BeginOutcome::Completed(_)),
        "the primary stored the response: {replay:?}"
    );
    drop(server);
}

/// A harness on a server with an append-only file (`appendfsync always`), declared durable, for the
/// conformance cases that drop every handle and connect again.
struct DurableHarness {
    url: String,
    prefix: String,
}

#[idem_conformance::async_trait]
impl idem_conformance::Backend for DurableHarness {
    fn capabilities(&self) -> idem_conformance::Capabilities {
        idem_conformance::Capabilities::new()
            .durable(true)
            .shared_across_handles(true)
            .self_expiring(true)
    }

    async fn open(&self) -> Result<Arc<dyn IdempotencyStore>, idem::BoxError> {
        self.connect().await
    }

    async fn connect(&self) -> Result<Arc<dyn IdempotencyStore>, idem::BoxError> {
        let store = RedisStore::builder(&self.url)
            .key_prefix(self.prefix.clone())
            .connect()
            .await?;
        Ok(Arc::new(store))
    }
}

/// The reopening cases of the conformance suite pass on a server with an append-only file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_cases_with_aof() {
    if !redis_available() {
        return;
    }
    let server = start_server(RedisOptions {
        append_only: true,
        password: None,
    })
    .await;
    for case in ["completed_survives_reopen", "fencing_tokens_survive_reopen"] {
        let backend = Arc::new(DurableHarness {
            url: server.url(),
            prefix: unique_prefix(),
        });
        let result = idem_conformance::case(case).unwrap().run(backend).await;
        assert_eq!(result.status, idem_conformance::Status::Passed, "{case}");
    }
    drop(server);
}

/// A `rediss://` URL builds a TLS client; against a server without TLS the connect fails with an error
/// instead of a panic or a plain-text session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_url_to_plain_server_fails() {
    if !redis_available() {
        return;
    }
    let server = start_server(RedisOptions::default()).await;
    let url = format!("rediss://127.0.0.1:{}/", server.port());
    let result = RedisStore::builder(&url)
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await;
    assert!(matches!(result, Err(Error::Unavailable { .. })), "{result:?}");
    drop(server);
}
