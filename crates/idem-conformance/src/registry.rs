//! The list of cases, and running them with panics caught per case.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;

/// How long one case may run before [`Case::run`] reports it as failed. The slowest cases sleep past a few
/// short real TTLs, well under this.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// The end of a case that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseOutcome {
    /// Every check held.
    Passed,
    /// The case needs a capability the harness does not declare; the text names it.
    Skipped(&'static str),
}

/// The future of a running case.
pub type CaseFuture = Pin<Box<dyn Future<Output = CaseOutcome> + Send + 'static>>;

/// One conformance case: its name, the rule it checks, and how to run it.
#[derive(Clone, Copy)]
pub struct Case {
    pub(crate) name: &'static str,
    pub(crate) rule: &'static str,
    pub(crate) start: fn(Arc<dyn Backend>) -> CaseFuture,
}

impl Case {
    /// Returns the case's name, as in [`crate::cases`] and in the tests of [`crate::conformance_tests!`].
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Returns the rule the case checks, in words.
    pub fn rule(&self) -> &'static str {
        self.rule.trim()
    }

    /// Runs the case as its own Tokio task on the current runtime, and reports a panic or a run longer than
    /// [`CASE_TIMEOUT`] as a failure.
    pub async fn run(&self, backend: Arc<dyn Backend>) -> CaseResult {
        let mut task = tokio::spawn((self.start)(backend));
        let status = match tokio::time::timeout(CASE_TIMEOUT, &mut task).await {
            Ok(Ok(CaseOutcome::Passed)) => Status::Passed,
            Ok(Ok(CaseOutcome::Skipped(reason))) => Status::Skipped(reason),
            Ok(Err(error)) if error.is_panic() => Status::Failed(panic_message(error.into_panic())),
            Ok(Err(error)) => Status::Failed(format!("the case's task was cancelled: {error}")),
            Err(_) => {
                task.abort();
                Status::Failed(format!("timed out after {CASE_TIMEOUT:?}"))
            }
        };
        CaseResult { case: *self, status }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("rule", &self.rule())
            .finish()
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "the case panicked with a payload that is not a string".to_owned()
    }
}

/// The end of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every check held.
    Passed,
    /// The case needs a capability the harness does not declare.
    Skipped(&'static str),
    /// A check failed; the text is the panic message.
    Failed(String),
}

/// The result of running one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case that ran.
    pub case: Case,
    /// The case's end: passed, skipped or failed.
    pub status: Status,
}

/// The results of [`run_all`], one per case in the order of [`crate::CASES`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One result per case.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Returns the results of the failed cases.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results
            .iter()
            .filter(|result| matches!(result.status, Status::Failed(_)))
    }

    /// Returns the names of the failed cases.
    pub fn failed_names(&self) -> Vec<&'static str> {
        self.failures().map(|result| result.case.name).collect()
    }

    /// Returns the names of the skipped cases.
    pub fn skipped_names(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|result| matches!(result.status, Status::Skipped(_)))
            .map(|result| result.case.name)
            .collect()
    }

    /// Returns whether no case failed. Skipped cases do not count as failures.
    pub fn is_success(&self) -> bool {
        self.failures().next().is_none()
    }

    /// Panics with the list of failed cases, their rules and messages, unless every case passed or was
    /// skipped.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(self.is_success(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        let skipped = self.skipped_names().len();
        writeln!(
            f,
            "{} cases: {} passed, {failed} failed, {skipped} skipped",
            self.results.len(),
            self.results.len() - failed - skipped
        )?;
        for result in &self.results {
            match &result.status {
                Status::Passed => {}
                Status::Skipped(reason) => writeln!(f, "skipped {}: {reason}", result.case.name)?,
                Status::Failed(message) => writeln!(
                    f,
                    "FAILED {}\n  rule: {}\n  failure: {message}",
                    result.case.name,
                    result.case.rule()
                )?,
            }
        }
        Ok(())
    }
}

/// Runs every case of [`crate::CASES`] on `backend`, one after another, and returns the result of each.
///
/// Call it on a multi-threaded Tokio runtime (the concurrency cases fail on a current-thread one), for
/// example from `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]`. Panics are caught per case,
/// so one failing case does not stop the others.
pub async fn run_all(backend: Arc<dyn Backend>) -> Report {
    let mut report = Report::default();
    for case in crate::CASES {
        report.results.push(case.run(Arc::clone(&backend)).await);
    }
    report
}

/// Returns the case named `name`, or `None`.
pub fn case(name: &str) -> Option<&'static Case> {
    crate::CASES.iter().find(|case| case.name == name)
}

/// Runs the case `name` on a fresh multi-threaded runtime with the backend that `factory` builds, and
/// panics if it fails. The tests from [`crate::conformance_tests!`] call this.
#[doc(hidden)]
pub fn run_test<F, Fut, B>(name: &str, factory: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = B>,
    B: Backend,
{
    let case = case(name).unwrap_or_else(|| panic!("no conformance case is named {name}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("building a Tokio runtime for the conformance case");

    let result = runtime.block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(factory().await);
        case.run(backend).await
    });
    match result.status {
        Status::Passed => {}
        Status::Skipped(reason) => eprintln!("skipped {name}: {reason}"),
        Status::Failed(message) => panic!("{name} failed\n  rule: {}\n  failure: {message}", case.rule()),
    }
}
