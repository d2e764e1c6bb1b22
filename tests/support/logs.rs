//! Captured log lines, for tests that check what a store logs and what it keeps out of its logs.
//!
//! The memory and Redis crates include this file with `#[path]`, so it depends only on `tracing` and
//! `tracing-subscriber`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Log lines written by tracing-subscriber's fmt layer, one per event, without colors or timestamps.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    /// Installs a subscriber that writes every event, down to trace, into this capture, until the guard drops.
    pub(crate) fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Returns every captured line.
    pub(crate) fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Returns the lines logged at `level`, such as `"WARN"`.
    pub(crate) fn at_level(&self, level: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.trim_start().starts_with(level))
            .collect()
    }

    /// Returns the lines logged at warn.
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.at_level("WARN")
    }
}
