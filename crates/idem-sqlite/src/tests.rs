//! Unit tests that look at the connections themselves.

use std::time::Duration;

use crate::{SqliteStore, Synchronous};

async fn pragma(store: &SqliteStore, name: &'static str) -> String {
    store
        .with_connection(move |connection| {
            connection.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
        })
        .await
        .map(|value| format!("{value:?}"))
        .unwrap()
}

#[tokio::test]
async fn memory_store_has_one_connection() {
    let store = SqliteStore::in_memory().connections(8).open().await.unwrap();
    assert_eq!(store.connection_count(), 1);

    let by_path = SqliteStore::builder(":memory:").open().await.unwrap();
    assert_eq!(by_path.connection_count(), 1);
}

#[tokio::test]
async fn file_store_default_connections() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("idem.db")).await.unwrap();
    assert_eq!(store.connection_count(), 4);
}

#[tokio::test]
async fn file_store_runs_in_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("idem.db")).await.unwrap();
    assert_eq!(pragma(&store, "journal_mode").await, "Text(\"wal\")");
}

#[tokio::test]
async fn synchronous_normal_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("idem.db")).await.unwrap();
    // PRAGMA synchronous reads 1 for NORMAL and 2 for FULL.
    assert_eq!(pragma(&store, "synchronous").await, "Integer(1)");
}

#[tokio::test]
async fn synchronous_full_applies() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::builder(dir.path().join("idem.db"))
        .connections(2)
        .synchronous(Synchronous::Full)
        .open()
        .await
        .unwrap();
    // Every connection carries the setting, whichever one the pool lends.
    for _ in 0..4 {
        assert_eq!(pragma(&store, "synchronous").await, "Integer(2)");
    }
}

#[tokio::test]
async fn busy_timeout_applies() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::builder(dir.path().join("idem.db"))
        .busy_timeout(Duration::from_millis(1234))
        .open()
        .await
        .unwrap();
    assert_eq!(pragma(&store, "busy_timeout").await, "Integer(1234)");
}

#[tokio::test]
async fn schema_version_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("idem.db")).await.unwrap();
    assert_eq!(
        pragma(&store, "user_version").await,
        format!("Integer({})", crate::schema::SCHEMA_VERSION)
    );
}
