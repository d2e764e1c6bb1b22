//! The store's one connection: a reconnecting multiplexed connection to one server, or a cluster connection.

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisError, RedisResult, ScriptInvocation, Value};

/// A cheap-to-clone handle on the connection; clones share it.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server: the manager reconnects after a lost connection, with backoff.
    Single(ConnectionManager),
    /// Redis Cluster: routes each command by its key's slot and follows redirections.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Runs a script by hash, loading it when the server does not have it (`NOSCRIPT`).
    pub(crate) async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> RedisResult<Value> {
        match self {
            Connection::Single(manager) => invocation.invoke_async(&mut manager.clone()).await,
            Connection::Cluster(cluster) => invocation.invoke_async(&mut cluster.clone()).await,
        }
    }

    /// Sends `PING`, so that a missing or wrong password fails at connect rather than at the first call.
    pub(crate) async fn ping(&self) -> RedisResult<()> {
        let mut ping = Cmd::new();
        ping.arg("PING");
        match self {
            Connection::Single(manager) => ping.query_async::<Value>(&mut manager.clone()).await?,
            Connection::Cluster(cluster) => ping.query_async::<Value>(&mut cluster.clone()).await?,
        };
        Ok(())
    }

    /// Runs `WAIT replicas timeout` on the primary that stores `redis_key`, and returns how many replicas
    /// acknowledged the writes made so far on that connection.
    pub(crate) async fn wait_for_replicas(
        &self,
        redis_key: &str,
        replicas: u32,
        timeout_ms: u64,
    ) -> RedisResult<u64> {
        let mut wait = Cmd::new();
        wait.arg("WAIT").arg(replicas).arg(timeout_ms);
        let value = match self {
            Connection::Single(manager) => wait.query_async::<Value>(&mut manager.clone()).await?,
            Connection::Cluster(cluster) => {
                let route = Route::with_key(redis_key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                cluster.clone().route_command(wait, routing).await?
            }
        };
        match value {
            Value::Int(count) => Ok(u64::try_from(count).unwrap_or(0)),
            other => Err(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "WAIT did not return an integer",
                format!("{other:?}"),
            ))),
        }
    }
}
