//! Quickstart: replays a log of GitHub webhook deliveries through idem's runner on a SQLite file, with eight
//! concurrent workers, and checks that each event's side effect ran exactly once.
//!
//! ```text
//! cargo run --example quickstart                  # store in a temporary directory
//! cargo run --example quickstart -- --db PATH     # store at PATH (a new file), kept after the run
//! cargo run --example quickstart -- --without-idem
//! ```
//!
//! # The log
//!
//! The log is built from a fixed seed and 16 real webhook bodies in `examples/data/github-webhooks/`
//! (`push`, `issues`, `pull_request`, ...). They are copied from the octokit/webhooks examples, and their
//! source and licence sit beside them. The log contains 300 events. Each is one payload file with
//! `installation.id` set to one of 20 installations of a GitHub App, so no two events have the same body.
//! Each event has a delivery id, a GUID like GitHub's `X-GitHub-Delivery` header, derived from the seed.
//! The delivery id is the idempotency key, and the fingerprint is
//! `Fingerprint::from_parts(&[event type, body])`.
//!
//! The deliveries are grouped into moments of at most eight. A moment's deliveries go to the eight workers
//! at once, one each, and the next moment starts when all of them are done. The log contains:
//!
//! - **plain retries**: a delivery sent again at a later moment;
//! - **concurrent duplicates**: 2 to 4 copies of an event's first delivery in one moment;
//! - **failing first tries**: the handler returns an error the first time it runs an event (a downstream
//!   503), the runner releases the key, and a redelivery at a later moment runs it again;
//! - **reused delivery ids**: a delivery id sent again with another event's body, after the first one ran.
//!
//! # Why the expected counts are exact
//!
//! The expected counts come from a model that walks the log and knows nothing of the run. Two rules make
//! every count independent of timing. First, a moment starts only after the previous one is done, so a
//! retry at a later moment always finds the earlier run finished: it replays, it mismatches, or, after a
//! failure, it runs. Second, when a moment contains copies of one delivery, the copy that wins the claim runs
//! a handler that first waits (5 s at most) until the other copies have got their "in progress" error. So
//! none of them can arrive after the run completed and get a replay. Each event therefore executes once,
//! each failing event fails once, each extra copy is in progress, each reused id is a mismatch, and every
//! other delivery is a replay.
//!
//! # The ledger
//!
//! The handler's side effect is a row appended to a table in a second SQLite file, the ledger, with the
//! delivery id, the SHA-256 of the body and the fencing token. The exactly-once checks read the ledger, not
//! the runner's outcomes. The handler returns the row number, and idem stores it and replays it to retries.
//!
//! # Reading the output
//!
//! The header describes the log and names the SQLite files. The table shows, per outcome, the count
//! expected from the log and the count the workers got. `executed` counts handler runs that returned `Ok`,
//! and `failed and released` those that returned an error. Four checks follow, each marked `ok` or `FAILED`
//! with its first failures:
//!
//! 1. the outcome counts equal the expected counts;
//! 2. the ledger contains exactly one row per event (its delivery id and body);
//! 3. the ledger contains no row of a body sent under a reused delivery id;
//! 4. every executed or replayed outcome carries the number of the ledger row that its event's run wrote.
//!
//! The last line gives the wall time of the replay. The example exits with status 0 when every check
//! passes, 1 when one fails or the run stops on an error, and 2 on invalid arguments.
//!
//! With `--without-idem` there is no store, and every delivery runs the handler. The expected column still
//! shows the outcomes that idem gives. Checks 1 to 3 then fail: the second names the events that ran more
//! than once, and the third the bodies that ran under a reused delivery id. That is what idem prevents.

#[path = "quickstart/delivery_log.rs"]
mod delivery_log;
#[path = "quickstart/expected.rs"]
mod expected;
#[path = "quickstart/ledger.rs"]
mod ledger;
#[path = "quickstart/payloads.rs"]
mod payloads;
#[path = "quickstart/report.rs"]
mod report;
#[path = "quickstart/workers.rs"]
mod workers;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use idem::Runner;
use idem::sqlite::SqliteStore;

use crate::delivery_log::{DeliveryLog, SEED, WORKERS};
use crate::ledger::Ledger;

const USAGE: &str = "usage: cargo run --example quickstart -- [--db PATH | --without-idem]

  --db PATH        create the idem store at PATH, a file that must not exist yet, and keep it after the run
                   (default: a temporary directory, removed on exit)
  --without-idem   run every delivery straight through the handler, with no store, to show what idem prevents
  -h, --help       print this help";

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args_os().skip(1)) {
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

    match run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the log, replays it, prints the summary and returns whether every check passed.
async fn run(options: Options) -> Result<bool, String> {
    let log = Arc::new(DeliveryLog::build(SEED)?);
    let expected = expected::expected_counts(&log).map_err(|error| error.to_string())?;
    print_log(&log);

    let temporary =
        tempfile::tempdir().map_err(|error| format!("cannot create a temporary directory: {error}"))?;
    let runner = if options.without_idem {
        println!("store:  none (--without-idem: every delivery runs the handler)");
        None
    } else {
        let (path, kept) = match options.db {
            Some(path) => (path, "kept after the run"),
            None => (
                temporary.path().join("idem.sqlite3"),
                "temporary, removed on exit",
            ),
        };
        if path.exists() {
            return Err(format!(
                "{} already exists; records of an earlier run would be replayed, so pass the path of a new file",
                path.display()
            ));
        }
        let store = SqliteStore::builder(&path)
            .open()
            .await
            .map_err(|error| format!("cannot open the SQLite store {}: {error}", path.display()))?;
        println!("store:  SQLite file {} ({kept})", path.display());
        Some(Runner::new(Arc::new(store)))
    };
    let ledger_path = temporary.path().join("ledger.sqlite3");
    let ledger = Ledger::create(&ledger_path)?;
    println!(
        "ledger: SQLite file {} (temporary, removed on exit)",
        ledger_path.display()
    );
    println!();

    let started = Instant::now();
    let processed = workers::replay(Arc::clone(&log), runner, ledger.clone()).await?;
    let elapsed = started.elapsed();
    let actual = report::count_outcomes(&processed);
    let rows = ledger.rows().await?;

    report::print_counts(&expected, &actual);
    println!();
    let runs = report::count_runs(&rows);
    let checks = [
        report::check_counts(&expected, &actual, &processed),
        report::check_exactly_once(&log, &runs, rows.len()),
        report::check_reused_ids(&log, &runs),
        report::check_receipts(&log, &processed, &rows),
    ];
    let passed = report::print_checks(&checks);
    println!();
    println!(
        "replayed {} deliveries with {WORKERS} workers in {:.2} s",
        processed.len(),
        elapsed.as_secs_f64()
    );
    Ok(passed)
}

fn print_log(log: &DeliveryLog) {
    let composition = &log.composition;
    println!(
        "log:    {} GitHub webhook deliveries of {} events in {} moments (seed {:#x})",
        log.len(),
        log.events.len(),
        log.moments.len(),
        log.seed
    );
    println!(
        "        {} events sent as concurrent copies (+{} copies), {} events that fail on the first try,",
        composition.concurrent_events, composition.concurrent_copies, composition.failing_events
    );
    println!(
        "        {} later retries and redeliveries, {} delivery ids reused with another body",
        composition.later_retries, composition.reused_ids
    );
}

/// The command line.
struct Options {
    db: Option<PathBuf>,
    without_idem: bool,
}

impl Options {
    /// Parses the arguments; `None` means help was requested.
    fn parse(arguments: impl Iterator<Item = OsString>) -> Result<Option<Self>, String> {
        let mut options = Options {
            db: None,
            without_idem: false,
        };
        let mut arguments = arguments;
        while let Some(argument) = arguments.next() {
            match argument.to_str() {
                Some("--db") => {
                    let Some(path) = arguments.next() else {
                        return Err("--db needs a path, such as --db /tmp/idem.sqlite3".to_owned());
                    };
                    options.db = Some(PathBuf::from(path));
                }
                Some("--without-idem") => options.without_idem = true,
                Some("-h" | "--help") => return Ok(None),
                _ => return Err(format!("unknown argument {argument:?}")),
            }
        }
        if options.without_idem && options.db.is_some() {
            return Err(
                "--db and --without-idem exclude each other: without idem there is no store".to_owned(),
            );
        }
        Ok(Some(options))
    }
}
