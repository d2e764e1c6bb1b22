//! Latency and throughput of the idem stores and the runner, measured with criterion.
//!
//! Run with `cargo bench -p idem-bench`. Each group keeps its measurement short, so the whole run takes a few
//! minutes on two cores. BENCHMARKS.md at the workspace root records one run and how to read it.
//!
//! Every store is prefilled with completed records of about 1 KiB, and the replay and lookup benchmarks read
//! those records. Benchmarks that need a fresh key per iteration time a batch of keys, then delete the batch
//! outside the timed part, so a store stays at its prefilled size however many iterations criterion picks.
//!
//! The Redis group starts its own `redis-server` (no RDB, no AOF) on a free loopback port and stops it at the
//! end. It never connects to another server. Without `redis-server` on `PATH` it prints why and is skipped.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, Lease, Record, Runner, Ttl};
use idem_memory::MemoryStore;
use idem_redis::RedisStore;
use idem_sqlite::{SqliteStore, Synchronous};
use tempfile::TempDir;
use tokio::runtime::{Builder, Runtime};

/// Size of the response that the store benchmarks complete with, and of the runner's output before encoding.
const RESPONSE_BYTES: usize = 1024;
/// Completed records written before a group runs, so that replays and lookups search a store of some size.
const PREFILLED_KEYS: usize = 10_000;
/// Fresh keys timed in one go before they are deleted.
const BATCH_KEYS: u64 = 1_000;
/// Tasks of the concurrency benchmark, and the begin+complete cycles they share per iteration.
const CONCURRENT_TASKS: usize = 8;
const CONCURRENT_OPS: usize = 2_000;
/// Time the Redis group waits for its server to accept connections.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Source of key names that no earlier iteration used.
static NEXT_FRESH_KEY: AtomicU64 = AtomicU64::new(0);

/// A store under test, its runner and the records it was prefilled with.
struct Bench {
    store: Arc<dyn IdempotencyStore>,
    runner: Runner,
    fingerprint: Fingerprint,
    response: Vec<u8>,
    lease_ttl: Ttl,
    retention: Ttl,
    completed_keys: Vec<IdempotencyKey>,
}

/// Operation that a fresh-key benchmark runs on each key.
#[derive(Debug, Clone, Copy)]
enum FreshOp {
    /// `begin`, which acquires.
    Acquire,
    /// `begin`, then `complete` with a 1 KiB response.
    Cycle,
    /// `Runner::run` with a closure that returns 1 KiB at once.
    RunnerExecute,
}

impl Bench {
    /// Wraps `store` and writes [`PREFILLED_KEYS`] completed records through the runner, so that the same
    /// records serve the store's replay and lookup benchmarks and the runner's replay benchmark.
    async fn prefill(store: Arc<dyn IdempotencyStore>) -> Self {
        let bench = Self::without_records(store);
        let completed_keys: Vec<IdempotencyKey> = (0..PREFILLED_KEYS)
            .map(|index| bench_key("completed", index as u64))
            .collect();
        for key in &completed_keys {
            bench.run_executed(key).await;
        }
        Self {
            completed_keys,
            ..bench
        }
    }

    fn without_records(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            runner: Runner::new(Arc::clone(&store)),
            store,
            fingerprint: Fingerprint::from_parts(&[b"POST", b"/bench", b"{\"body\":1}"]),
            response: vec![0x5a; RESPONSE_BYTES],
            lease_ttl: Ttl::from_secs(30).expect("30 s is a valid TTL"),
            retention: Ttl::from_secs(3600).expect("1 h is a valid TTL"),
            completed_keys: Vec::new(),
        }
    }

    /// Returns a completed key, cycling through the prefilled records.
    fn completed_key(&self, index: usize) -> &IdempotencyKey {
        &self.completed_keys[index % self.completed_keys.len()]
    }

    async fn acquire(&self, key: &IdempotencyKey) -> Lease {
        let outcome = self.store.begin(key, &self.fingerprint, self.lease_ttl).await;
        match outcome.expect("begin on a fresh key failed") {
            BeginOutcome::Acquired(lease) => lease,
            other => panic!("begin on a fresh key returned {other:?} instead of acquiring"),
        }
    }

    async fn cycle(&self, key: &IdempotencyKey) {
        let lease = self.acquire(key).await;
        let completed = self.store.complete(&lease, &self.response, self.retention).await;
        completed.expect("complete of an acquired lease failed");
    }

    async fn replay(&self, key: &IdempotencyKey) {
        let outcome = self.store.begin(key, &self.fingerprint, self.lease_ttl).await;
        match outcome.expect("begin on a completed key failed") {
            BeginOutcome::Completed(record) => {
                black_box(record);
            }
            other => panic!("begin on a completed key returned {other:?} instead of its record"),
        }
    }

    async fn lookup(&self, key: &IdempotencyKey) {
        match self.store.lookup(key).await.expect("lookup failed") {
            Some(Record::Completed(record)) => {
                black_box(record);
            }
            other => panic!("lookup of a completed key returned {other:?}"),
        }
    }

    async fn run_executed(&self, key: &IdempotencyKey) {
        let output = self.response.clone();
        let outcome = self
            .runner
            .run(key, &self.fingerprint, |_lease| async move {
                Ok::<_, Infallible>(output)
            })
            .await
            .expect("runner failed on a fresh key");
        assert!(!outcome.is_replayed(), "the runner replayed a fresh key");
        black_box(outcome);
    }

    async fn run_replayed(&self, key: &IdempotencyKey) {
        let outcome = self
            .runner
            .run(key, &self.fingerprint, |_lease| async {
                Ok::<Vec<u8>, Infallible>(Vec::new())
            })
            .await
            .expect("runner failed on a completed key");
        assert!(outcome.is_replayed(), "the runner executed a completed key");
        black_box(outcome);
    }

    /// Runs `op` on `iters` fresh keys and returns the time spent in `op` alone: key building and the deletes
    /// that follow each batch are not timed.
    async fn time_fresh_keys(&self, op: FreshOp, iters: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut remaining = iters;
        while remaining > 0 {
            let keys = fresh_keys(remaining.min(BATCH_KEYS));
            let started = Instant::now();
            for key in &keys {
                match op {
                    FreshOp::Acquire => {
                        black_box(self.acquire(key).await);
                    }
                    FreshOp::Cycle => self.cycle(key).await,
                    FreshOp::RunnerExecute => self.run_executed(key).await,
                }
            }
            elapsed += started.elapsed();
            self.delete_all(&keys).await;
            remaining -= keys.len() as u64;
        }
        elapsed
    }

    /// Runs [`CONCURRENT_OPS`] begin+complete cycles on distinct fresh keys, split across
    /// [`CONCURRENT_TASKS`] spawned tasks, once per iteration, and returns the wall time until the last task
    /// finished.
    async fn time_concurrent_cycles(self: &Arc<Self>, iters: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            let keys = fresh_keys(CONCURRENT_OPS as u64);
            let shares: Vec<Vec<IdempotencyKey>> = keys
                .chunks(CONCURRENT_OPS.div_ceil(CONCURRENT_TASKS))
                .map(<[IdempotencyKey]>::to_vec)
                .collect();

            let started = Instant::now();
            let tasks: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    let bench = Arc::clone(self);
                    tokio::spawn(async move {
                        for key in &share {
                            bench.cycle(key).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("a benchmark task panicked");
            }
            elapsed += started.elapsed();

            self.delete_all(&keys).await;
        }
        elapsed
    }

    async fn delete_all(&self, keys: &[IdempotencyKey]) {
        for key in keys {
            let existed = self
                .store
                .delete(key)
                .await
                .expect("delete after a timed batch failed");
            assert!(existed, "a timed batch left no record to delete");
        }
    }
}

fn bench_key(kind: &str, index: u64) -> IdempotencyKey {
    IdempotencyKey::new("bench", format!("{kind}-{index}")).expect("benchmark keys are valid")
}

fn fresh_keys(count: u64) -> Vec<IdempotencyKey> {
    (0..count)
        .map(|_| bench_key("fresh", NEXT_FRESH_KEY.fetch_add(1, Ordering::Relaxed)))
        .collect()
}

/// Builds a single-threaded runtime for the latency benchmarks: one request at a time, no work stealing. SQLite
/// calls still hop to Tokio's blocking pool, as they do in a service.
fn latency_runtime() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts")
}

/// Builds a multi-threaded runtime with one worker per core, as `#[tokio::main]` builds it.
fn throughput_runtime() -> Runtime {
    Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts")
}

/// Registers begin (acquire), begin (replay), begin+complete and lookup on `bench`.
fn bench_store_ops(group: &mut BenchmarkGroup<'_, WallTime>, runtime: &Runtime, bench: &Bench) {
    group.bench_function("begin_acquire", |bencher| {
        bencher
            .to_async(runtime)
            .iter_custom(|iters| bench.time_fresh_keys(FreshOp::Acquire, iters));
    });

    group.bench_function("begin_replay_1k", |bencher| {
        let mut next = 0;
        bencher.to_async(runtime).iter(|| {
            next += 1;
            bench.replay(bench.completed_key(next))
        });
    });

    group.bench_function("begin_complete_1k", |bencher| {
        bencher
            .to_async(runtime)
            .iter_custom(|iters| bench.time_fresh_keys(FreshOp::Cycle, iters));
    });

    group.bench_function("lookup_1k", |bencher| {
        let mut next = 0;
        bencher.to_async(runtime).iter(|| {
            next += 1;
            bench.lookup(bench.completed_key(next))
        });
    });
}

/// Registers the runner's execute path (begin, closure, encode, complete) and its replay path on `bench`.
fn bench_runner_ops(group: &mut BenchmarkGroup<'_, WallTime>, runtime: &Runtime, bench: &Bench) {
    group.bench_function("runner_execute_1k", |bencher| {
        bencher
            .to_async(runtime)
            .iter_custom(|iters| bench.time_fresh_keys(FreshOp::RunnerExecute, iters));
    });

    group.bench_function("runner_replay_1k", |bencher| {
        let mut next = 0;
        bencher.to_async(runtime).iter(|| {
            next += 1;
            bench.run_replayed(bench.completed_key(next))
        });
    });
}

fn memory_store() -> Arc<dyn IdempotencyStore> {
    Arc::new(MemoryStore::new())
}

/// Opens a store on `path` with `synchronous`. The records are written first with `Synchronous::Normal`, in a
/// store that is closed before this one opens, because 10,000 prefill cycles at one fsync per commit would
/// take longer than the benchmarks.
async fn sqlite_bench(path: &Path, synchronous: Synchronous) -> Bench {
    let prefill_store = SqliteStore::builder(path)
        .synchronous(Synchronous::Normal)
        .open()
        .await
        .expect("the SQLite prefill store opens");
    let prefilled = Bench::prefill(Arc::new(prefill_store)).await;
    let completed_keys = prefilled.completed_keys;

    let store = SqliteStore::builder(path)
        .synchronous(synchronous)
        .open()
        .await
        .expect("the SQLite store opens");
    Bench {
        completed_keys,
        ..Bench::without_records(Arc::new(store))
    }
}

async fn concurrent_sqlite_bench(path: &Path, synchronous: Synchronous) -> Arc<Bench> {
    let store = SqliteStore::builder(path).synchronous(synchronous).open().await;
    let store = store.expect("the SQLite store opens");
    Arc::new(Bench::without_records(Arc::new(store)))
}

fn memory_group(c: &mut Criterion) {
    let runtime = latency_runtime();
    let bench = runtime.block_on(Bench::prefill(memory_store()));

    let mut group = c.benchmark_group("memory");
    bench_store_ops(&mut group, &runtime, &bench);
    bench_runner_ops(&mut group, &runtime, &bench);
    group.finish();
}

fn sqlite_normal_group(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory for SQLite");
    let runtime = latency_runtime();
    let bench = runtime.block_on(sqlite_bench(
        &dir.path().join("normal.sqlite3"),
        Synchronous::Normal,
    ));

    let mut group = c.benchmark_group("sqlite_normal");
    bench_store_ops(&mut group, &runtime, &bench);
    bench_runner_ops(&mut group, &runtime, &bench);
    group.finish();
}

fn sqlite_full_group(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory for SQLite");
    let runtime = latency_runtime();
    let bench = runtime.block_on(sqlite_bench(&dir.path().join("full.sqlite3"), Synchronous::Full));

    let mut group = c.benchmark_group("sqlite_full");
    // Writes cost an fsync each, so criterion's growing sample sizes would take minutes.
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    bench_store_ops(&mut group, &runtime, &bench);
    group.finish();
}

fn redis_group(c: &mut Criterion) {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(reason) => {
            eprintln!("redis: group skipped because {reason}");
            return;
        }
    };
    let runtime = latency_runtime();
    let store = runtime.block_on(
        RedisStore::builder(&server.url)
            .key_prefix("idem-bench:")
            .connect(),
    );
    let store = store.expect("the store connects to the benchmark's own redis-server");
    let bench = runtime.block_on(Bench::prefill(Arc::new(store)));

    let mut group = c.benchmark_group("redis");
    bench_store_ops(&mut group, &runtime, &bench);
    group.finish();
    // Locals drop in reverse order: the store and the runtime go before the server is stopped.
}

fn concurrent_group(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory for SQLite");
    let runtime = throughput_runtime();
    let memory = Arc::new(Bench::without_records(memory_store()));
    let sqlite_normal = runtime.block_on(concurrent_sqlite_bench(
        &dir.path().join("concurrent-normal.sqlite3"),
        Synchronous::Normal,
    ));
    let sqlite_full = runtime.block_on(concurrent_sqlite_bench(
        &dir.path().join("concurrent-full.sqlite3"),
        Synchronous::Full,
    ));

    let mut group = c.benchmark_group("concurrent");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(CONCURRENT_OPS as u64));
    let benches = [
        ("memory_8_tasks", &memory),
        ("sqlite_normal_8_tasks", &sqlite_normal),
        ("sqlite_full_8_tasks", &sqlite_full),
    ];
    for (name, bench) in benches {
        group.bench_function(name, |bencher| {
            bencher
                .to_async(&runtime)
                .iter_custom(|iters| bench.time_concurrent_cycles(iters));
        });
    }
    group.finish();
}

/// A `redis-server` that this process started without persistence, in a temporary directory. Dropping it
/// kills the server.
struct RedisServer {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl RedisServer {
    fn start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|error| format!("no temporary directory: {error}"))?;
        let port = free_loopback_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                format!("redis-server could not be started ({error}); install it (Debian: redis-server)")
            })?;
        let mut server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
            _dir: dir,
        };
        server.wait_until_listening(port)?;
        Ok(server)
    }

    fn wait_until_listening(&mut self, port: u16) -> Result<(), String> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "redis-server on port {port} exited at start with {status}"
                ));
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server on port {port} did not accept connections within {REDIS_START_TIMEOUT:?}"
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // The server may already have exited; either way nothing is left to stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a loopback port that was free a moment ago. Another process may take it before redis-server binds
/// it, in which case the server exits and the Redis group is skipped with that reason.
fn free_loopback_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|error| format!("no free loopback port: {error}"))?;
    let port = listener
        .local_addr()
        .map_err(|error| format!("no free loopback port: {error}"))?
        .port();
    Ok(port)
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    memory_group(&mut criterion);
    sqlite_normal_group(&mut criterion);
    sqlite_full_group(&mut criterion);
    redis_group(&mut criterion);
    concurrent_group(&mut criterion);
    criterion.final_summary();
}
