//! Several processes open one new database file at once and race begin on the same keys.
//!
//! The parent test starts copies of this test binary that run only `child_process`, selected by an
//! environment variable. The processes meet at two barriers made of files in a shared directory: one
//! before opening (so they race to switch the new file to WAL and create the schema) and one before the
//! begins. Each child writes one line per begin to its result file, with the begin's wall-clock interval.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idem_core::{BeginOutcome, IdempotencyStore, Record};
use idem_sqlite::SqliteStore;
use support::{fingerprint, key, ttl_ms};

const CHILD_DIR_ENV: &str = "IDEM_SQLITE_TEST_CHILD_DIR";
const CHILD_ID_ENV: &str = "IDEM_SQLITE_TEST_CHILD_ID";
const PROCESSES: usize = 5;
const KEYS: usize = 200;
/// Limit on each barrier and on the children's run. The whole test took about 1.2 s in a debug build on a
/// 2-core machine, the begins about 0.15 s of it.
const STEP_LIMIT: Duration = Duration::from_secs(40);

fn key_name(index: usize) -> String {
    format!("order-{index}")
}

fn wall_clock_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn wait_for(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Creates `path` by renaming a finished temporary file, so readers never see it half written.
fn write_atomically(path: &Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, contents).unwrap();
    fs::rename(&temporary, path).unwrap();
}

#[test]
#[ignore = "child process of processes_race_on_one_file, which starts it"]
fn child_process() {
    let (Ok(dir), Ok(id)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_ID_ENV)) else {
        eprintln!("child_process runs only when processes_race_on_one_file starts it");
        return;
    };
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    write_atomically(&dir.join(format!("ready-open-{id}")), "");
    assert!(wait_for(&dir.join("go-open"), STEP_LIMIT), "no go-open signal");
    let store = runtime.block_on(SqliteStore::open(dir.join("idem.db")));
    let store = match store {
        Ok(store) => store,
        Err(error) => {
            write_atomically(
                &dir.join(format!("result-{id}")),
                &format!("open-error {error}\n"),
            );
            return;
        }
    };

    write_atomically(&dir.join(format!("ready-race-{id}")), "");
    assert!(wait_for(&dir.join("go-race"), STEP_LIMIT), "no go-race signal");
    let mut lines = String::new();
    for index in 0..KEYS {
        let start = wall_clock_nanos();
        let outcome =
            runtime.block_on(store.begin(&key(&key_name(index)), &fingerprint(b"f"), ttl_ms(120_000)));
        let end = wall_clock_nanos();
        let (kind, token) = match outcome {
            Ok(BeginOutcome::Acquired(lease)) => ("acquired".to_owned(), lease.fencing_token()),
            Ok(BeginOutcome::InProgress { .. }) => ("in-progress".to_owned(), 0),
            Ok(other) => (format!("unexpected:{other:?}").replace(' ', "_"), 0),
            Err(error) => (format!("error:{error}").replace(' ', "_"), 0),
        };
        lines.push_str(&format!("{index} {kind} {token} {start} {end}\n"));
    }
    write_atomically(&dir.join(format!("result-{id}")), &lines);
}

/// One begin as a child reported it.
#[derive(Debug)]
struct Attempt {
    process: usize,
    key: usize,
    outcome: String,
    token: u64,
    start: u128,
    end: u128,
}

fn parse_results(dir: &Path, process: usize) -> Vec<Attempt> {
    let text = fs::read_to_string(dir.join(format!("result-{process}"))).unwrap();
    assert!(!text.starts_with("open-error"), "process {process}: {text}");
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 5, "process {process}: malformed line {line:?}");
            Attempt {
                process,
                key: fields[0].parse().unwrap(),
                outcome: fields[1].to_owned(),
                token: fields[2].parse().unwrap(),
                start: fields[3].parse().unwrap(),
                end: fields[4].parse().unwrap(),
            }
        })
        .collect()
}

/// Waits until every process has written `ready-<stage>-<id>`, failing when a child exits first.
fn barrier(dir: &Path, stage: &str, children: &mut [Child]) {
    let start = Instant::now();
    for (id, child) in children.iter_mut().enumerate() {
        let ready = dir.join(format!("ready-{stage}-{id}"));
        while !ready.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "process {id} exited with {status} before the {stage} barrier; see {}",
                    dir.display()
                );
            }
            assert!(
                start.elapsed() < STEP_LIMIT,
                "process {id} did not reach the {stage} barrier"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    write_atomically(&dir.join(format!("go-{stage}")), "");
}

fn wait_for_exit(children: &mut [Child]) {
    let start = Instant::now();
    for (id, child) in children.iter_mut().enumerate() {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "process {id} exited with {status}");
                break;
            }
            if start.elapsed() > STEP_LIMIT {
                child.kill().unwrap();
                panic!("process {id} did not finish within {STEP_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn processes_race_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let executable = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    for id in 0..PROCESSES {
        let log = fs::File::create(dir.path().join(format!("child-{id}.log"))).unwrap();
        let child = Command::new(&executable)
            .args([
                "--exact",
                "child_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_ID_ENV, id.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }

    barrier(dir.path(), "open", &mut children);
    barrier(dir.path(), "race", &mut children);
    wait_for_exit(&mut children);
    let elapsed = started.elapsed();

    let attempts: Vec<Attempt> = (0..PROCESSES)
        .flat_map(|id| parse_results(dir.path(), id))
        .collect();
    assert_eq!(attempts.len(), PROCESSES * KEYS);

    // No error, "database is locked" included, reached a caller: every begin acquired or saw the claim.
    let failed: Vec<&Attempt> = attempts
        .iter()
        .filter(|attempt| attempt.outcome != "acquired" && attempt.outcome != "in-progress")
        .collect();
    assert!(failed.is_empty(), "begins that failed: {failed:?}");

    // Exactly one process acquired each key.
    let mut winners: BTreeMap<usize, Vec<&Attempt>> = BTreeMap::new();
    for attempt in attempts.iter().filter(|attempt| attempt.outcome == "acquired") {
        winners.entry(attempt.key).or_default().push(attempt);
    }
    for index in 0..KEYS {
        let count = winners.get(&index).map_or(0, Vec::len);
        assert_eq!(count, 1, "key {index} was acquired {count} times");
    }
    let tokens: BTreeSet<u64> = winners.values().map(|won| won[0].token).collect();
    assert_eq!(tokens.len(), KEYS, "fencing tokens repeat");

    // Contention really happened: begins of different processes overlapped in time, so they waited on
    // one another for SQLite's write lock. Overlaps on one key are counted for the report only, because a
    // process that pulls ahead can leave none.
    let overlaps = |a: &Attempt, b: &Attempt| a.process != b.process && a.start < b.end && b.start < a.end;
    let overlapping_pairs = attempts
        .iter()
        .enumerate()
        .map(|(i, a)| attempts[i + 1..].iter().filter(|b| overlaps(a, b)).count())
        .sum::<usize>();
    assert!(
        overlapping_pairs > 0,
        "no two processes ever ran begin at the same time"
    );
    let same_key_pairs = attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            attempts[i + 1..]
                .iter()
                .filter(|b| a.key == b.key && overlaps(a, b))
                .count()
        })
        .sum::<usize>();
    let winning_processes: BTreeSet<usize> = winners.values().map(|won| won[0].process).collect();
    eprintln!(
        "{PROCESSES} processes x {KEYS} keys in {elapsed:?}: {overlapping_pairs} overlapping begin pairs across \
         processes, {same_key_pairs} of them on one key; {} processes won keys",
        winning_processes.len()
    );

    // The file contains each winner's claim.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store = runtime
        .block_on(SqliteStore::open(dir.path().join("idem.db")))
        .unwrap();
    for (index, won) in &winners {
        let record = runtime.block_on(store.lookup(&key(&key_name(*index)))).unwrap();
        match record {
            Some(Record::InProgress(claim)) => assert_eq!(claim.fencing_token, won[0].token, "key {index}"),
            other => panic!("key {index}: expected a claim, got {other:?}"),
        }
    }
}
