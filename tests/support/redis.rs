//! Throwaway Redis servers and clusters for tests, plus the choice of target for the Redis conformance runs.
//!
//! Every server is a `redis-server` child of the test process that listens on 127.0.0.1 only, on a port
//! found free by binding 127.0.0.1:0, with its own directory under Cargo's target tmp dir. Nothing here
//! connects to, flushes or reconfigures a server the fixture did not start.
//!
//! A child dies with its guard: `Drop` kills it and waits, which also runs when a test panics. A child
//! whose guard never drops, such as a process-wide instance held in a static, gets SIGKILL from the
//! kernel when the test process exits (Linux `PR_SET_PDEATHSIG`).
//!
//! ```ignore
//! mod support;
//! use support::redis::{RedisOptions, RedisServer, redis_target, unique_prefix};
//!
//! // A conformance run: the server from REDIS_URL or the process-wide throwaway one.
//! let Some(url) = redis_target() else { return };
//! let prefix = unique_prefix();
//!
//! // A fault test: a server of its own, killed and started again with its AOF.
//! let mut server = RedisServer::start_with(RedisOptions { append_only: true, password: None });
//! server.restart();
//! ```
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Time a server gets from spawn, or restart, until it replies to `PING`, including loading its AOF.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time `redis-cli --cluster create` gets to assign the slots and see the nodes join.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time all cluster nodes get, after the create command, to report `cluster_state:ok` with every slot.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts on fresh ports before giving up, because a port found free can be taken before
/// `redis-server` binds it.
const START_ATTEMPTS: u32 = 5;
/// Read and write timeout of a [`RespConnection`], so a hung server fails a test instead of blocking it.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Offset from the client port to the cluster bus port, Redis Cluster's default (`cluster-port 0`).
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// Number of hash slots in a Redis Cluster.
const CLUSTER_SLOTS: u32 = 16_384;
/// Ports of the machine's shared Redis (client and cluster bus), which the fixture never uses.
const FOREIGN_PORTS: [u16; 2] = [6379, 16_379];

/// Settings of a [`RedisServer`] beyond the defaults (no persistence, no password).
#[derive(Clone, Debug, Default)]
pub(crate) struct RedisOptions {
    /// Turns on the append-only file with `appendfsync always`, so every acknowledged write survives
    /// a kill and a [`RedisServer::restart`].
    pub(crate) append_only: bool,
    /// Password set with `requirepass`. Clients must send `AUTH` with it before other commands.
    pub(crate) password: Option<String>,
}

/// A `redis-server` child process on 127.0.0.1 and a free port, killed when the guard drops.
///
/// The port and the data directory stay the same across [`stop`](Self::stop) and
/// [`restart`](Self::restart).
#[derive(Debug)]
pub(crate) struct RedisServer {
    options: RedisOptions,
    cluster: bool,
    port: PortLease,
    dir: ScratchDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without persistence or password and waits until it replies to `PING`.
    ///
    /// Panics with the server's log when it does not start.
    pub(crate) fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with `options` and waits until it replies to `PING`.
    ///
    /// Panics with the server's log when it does not start.
    pub(crate) fn start_with(options: RedisOptions) -> Self {
        Self::try_start(options, false).unwrap_or_else(|message| panic!("{message}"))
    }

    /// Client URL, `redis://127.0.0.1:PORT/`, with the password in it when one is set.
    pub(crate) fn url(&self) -> String {
        match &self.options.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port()),
            None => format!("redis://127.0.0.1:{}/", self.port()),
        }
    }

    /// Client port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port.port
    }

    /// Password set with `requirepass`, if any.
    pub(crate) fn password(&self) -> Option<&str> {
        self.options.password.as_deref()
    }

    /// Process id of the running server, or `None` after [`stop`](Self::stop).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Working directory of the server, which contains its log and any AOF or cluster config file.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Output of the server since it was first started (stdout and stderr, across restarts).
    pub(crate) fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Opens a connection to the server, authenticated when the server has a password.
    ///
    /// Panics when the server does not accept the connection or the password.
    pub(crate) fn connect(&self) -> RespConnection {
        let mut connection = RespConnection::connect(self.port())
            .unwrap_or_else(|error| panic!("connect to redis-server on port {}: {error}", self.port()));
        if let Some(password) = &self.options.password {
            let reply = connection
                .command(&["AUTH", password])
                .unwrap_or_else(|error| panic!("AUTH on port {}: {error}", self.port()));
            assert_eq!(reply, Reply::ok(), "AUTH on port {}", self.port());
        }
        connection
    }

    /// Kills the server with SIGKILL and waits for it to exit. Does nothing when it is already stopped.
    ///
    /// SIGKILL gives the server no chance to save or flush, like a crash.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means the child has already exited, and `wait` then reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server, if it runs, and starts it again on the same port and directory, then waits
    /// until it replies to `PING`. With `append_only`, the new process loads the writes of the old one.
    ///
    /// Panics with the server's log when it does not start, for example when another process took the
    /// port in between.
    pub(crate) fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.spawn_and_wait() {
            panic!(
                "redis-server did not restart on 127.0.0.1:{}: {failure}\n--- log of {} ---\n{}",
                self.port(),
                self.log_path().display(),
                self.log()
            );
        }
    }

    fn try_start(options: RedisOptions, cluster: bool) -> Result<Self, String> {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let mut server = Self {
                options: options.clone(),
                cluster,
                port: PortLease::acquire(cluster),
                dir: ScratchDir::create(if cluster { "cluster-node" } else { "server" }),
                child: None,
            };
            let failure = match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(failure) => failure,
            };

            let log = server.log();
            let port_taken = log.contains("Address already in use");
            failures.push(format!(
                "port {}: {failure}\n--- log of {} ---\n{log}",
                server.port(),
                server.log_path().display()
            ));
            if !port_taken {
                break;
            }
        }
        Err(format!(
            "redis-server did not start on 127.0.0.1 ({} attempt(s)):\n{}",
            failures.len(),
            failures.join("\n")
        ))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path.join("redis.log")
    }

    fn command(&self) -> io::Result<Command> {
        let port = self.port().to_string();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port, "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir.path)
            .args(["--save", ""]);
        if self.options.append_only {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        if self.cluster {
            command
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .arg("--cluster-config-file")
                .arg(self.dir.path.join("nodes.conf"));
        }

        // Restarts append, so the log keeps the output of every process that ran in this directory.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        Ok(command)
    }

    /// Spawns the server and waits until this very process replies to `PING`, not another server that
    /// got the port first.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let command = self
            .command()
            .map_err(|error| format!("open the log file: {error}"))?;
        let child = spawn_tied_to_process(command).map_err(|error| {
            format!("spawn redis-server: {error} (is the redis-server package installed?)")
        })?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait_child() {
                self.child = None;
                return Err(format!("redis-server exited early with {status}"));
            }
            let last_probe = match probe_server(self.port(), self.password(), pid) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "redis-server did not answer PING within {READY_TIMEOUT:?} (last probe: {last_probe})"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_wait_child(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three Redis Cluster masters without replicas on 127.0.0.1, all 16384 slots assigned, killed when
/// the guard drops.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create` and waits until
    /// every node reports `cluster_state:ok` with all 16384 slots assigned and three known nodes.
    ///
    /// Panics with the failing step and its output when the cluster does not form.
    pub(crate) fn start() -> Self {
        Self::try_start().unwrap_or_else(|message| panic!("{message}"))
    }

    /// Client URLs of the three masters, `redis://127.0.0.1:PORT/`.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Client ports of the three masters on 127.0.0.1.
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Process ids of the running masters.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(RedisServer::pid).collect()
    }

    fn try_start() -> Result<Self, String> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::try_start(RedisOptions::default(), true)?);
        }
        let cluster = Self { nodes };
        cluster.create()?;
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn create(&self) -> Result<(), String> {
        let output_path = self.nodes[0].dir().join("cluster-create.log");
        let output =
            File::create(&output_path).map_err(|error| format!("create {output_path:?}: {error}"))?;
        let stderr = output
            .try_clone()
            .map_err(|error| format!("clone {output_path:?}: {error}"))?;

        let mut command = Command::new("redis-cli");
        command.arg("--cluster").arg("create");
        for port in self.ports() {
            command.arg(format!("127.0.0.1:{port}"));
        }
        command
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(stderr);
        let mut child = spawn_tied_to_process(command)
            .map_err(|error| format!("spawn redis-cli: {error} (is the redis-server package installed?)"))?;

        let status = wait_with_deadline(&mut child, CLUSTER_CREATE_TIMEOUT);
        let output = read_log(&output_path);
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!(
                "redis-cli --cluster create failed with {status}:\n{output}\n{}",
                self.logs()
            )),
            None => Err(format!(
                "redis-cli --cluster create timed out after {CLUSTER_CREATE_TIMEOUT:?}:\n{output}\n{}",
                self.logs()
            )),
        }
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        loop {
            let problems: Vec<String> = self
                .nodes
                .iter()
                .filter_map(|node| cluster_node_problem(node.port()))
                .collect();
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Redis cluster not ready within {CLUSTER_READY_TIMEOUT:?}: {}\n{}",
                    problems.join("; "),
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- log of node on port {} ---\n{}", node.port(), node.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Describes why the node on `port` is not yet a ready member of a three-node cluster, or returns
/// `None` when it is.
fn cluster_node_problem(port: u16) -> Option<String> {
    let info = match RespConnection::connect(port)
        .and_then(|mut connection| connection.command(&["CLUSTER", "INFO"]))
    {
        Ok(Reply::Bulk(Some(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(other) => return Some(format!("port {port}: CLUSTER INFO returned {other:?}")),
        Err(error) => return Some(format!("port {port}: CLUSTER INFO failed: {error}")),
    };
    let expected = [
        ("cluster_state", "ok".to_owned()),
        ("cluster_slots_assigned", CLUSTER_SLOTS.to_string()),
        ("cluster_slots_ok", CLUSTER_SLOTS.to_string()),
        ("cluster_known_nodes", "3".to_owned()),
    ];
    for (field, value) in expected {
        let actual = info_field(&info, field);
        if actual != Some(value.as_str()) {
            return Some(format!("port {port}: {field} is {actual:?}, expected {value}"));
        }
    }
    None
}

/// Returns the value of `field` in the `field:value` lines of an `INFO` or `CLUSTER INFO` reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim())
    })
}

/// Checks that the server on `port` replies to `PING` with `PONG` (so it is done loading) and that its
/// `INFO server` names `pid` as its process.
fn probe_server(port: u16, password: Option<&str>, pid: u32) -> Result<(), String> {
    let mut connection = RespConnection::connect(port).map_err(|error| format!("connect: {error}"))?;
    if let Some(password) = password {
        let reply = connection
            .command(&["AUTH", password])
            .map_err(|error| format!("AUTH: {error}"))?;
        if reply != Reply::ok() {
            return Err(format!("AUTH returned {reply:?}"));
        }
    }

    let reply = connection
        .command(&["PING"])
        .map_err(|error| format!("PING: {error}"))?;
    if reply != Reply::Status("PONG".to_owned()) {
        return Err(format!("PING returned {reply:?}"));
    }

    let info = match connection.command(&["INFO", "server"]) {
        Ok(Reply::Bulk(Some(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(other) => return Err(format!("INFO server returned {other:?}")),
        Err(error) => return Err(format!("INFO server: {error}")),
    };
    let expected = pid.to_string();
    match info_field(&info, "process_id") {
        Some(actual) if actual == expected => Ok(()),
        actual => Err(format!(
            "port answered by process {actual:?}, not by redis-server {pid}"
        )),
    }
}

/// A reply in the Redis serialization protocol, version 2 (what a connection gets without `HELLO 3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Simple string, such as `+OK`.
    Status(String),
    /// Error, such as `-NOAUTH Authentication required.`, without the leading `-`.
    Error(String),
    /// Integer.
    Integer(i64),
    /// Bulk string, `None` for the null bulk string (a missing key).
    Bulk(Option<Vec<u8>>),
    /// Array, `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Returns the `+OK` status reply.
    pub(crate) fn ok() -> Self {
        Self::Status("OK".to_owned())
    }

    /// Returns a bulk string reply of `value`.
    pub(crate) fn bulk(value: &str) -> Self {
        Self::Bulk(Some(value.as_bytes().to_vec()))
    }
}

/// A blocking connection to a server on 127.0.0.1 that sends commands and reads RESP2 replies, with
/// no dependency on a Redis client crate or an async runtime.
#[derive(Debug)]
pub(crate) struct RespConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RespConnection {
    /// Connects to 127.0.0.1:`port`. Reads and writes time out after 5 seconds.
    pub(crate) fn connect(port: u16) -> io::Result<Self> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one command and reads its reply. An error reply is `Ok(Reply::Error(..))`; `Err` means the
    /// connection failed or the reply was not valid RESP2.
    pub(crate) fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&request)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let Some(kind) = line.chars().next() else {
            return Err(invalid_data("empty RESP2 line".to_owned()));
        };
        let rest = &line[kind.len_utf8()..];
        match kind {
            '+' => Ok(Reply::Status(rest.to_owned())),
            '-' => Ok(Reply::Error(rest.to_owned())),
            ':' => Ok(Reply::Integer(parse_length(rest)?)),
            '$' => {
                let length = parse_length(rest)?;
                if length < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut bytes = vec![0; length as usize + 2];
                self.reader.read_exact(&mut bytes)?;
                bytes.truncate(length as usize);
                Ok(Reply::Bulk(Some(bytes)))
            }
            '*' => {
                let length = parse_length(rest)?;
                if length < 0 {
                    return Ok(Reply::Array(None));
                }
                let items = (0..length)
                    .map(|_| self.read_reply())
                    .collect::<io::Result<_>>()?;
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(invalid_data(format!("unknown RESP2 reply type in {line:?}"))),
        }
    }

    /// Reads one CRLF-terminated line and returns it without the CRLF.
    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        match line.strip_suffix("\r\n") {
            Some(content) => Ok(content.to_owned()),
            None => Err(invalid_data(format!("RESP2 line without CRLF: {line:?}"))),
        }
    }
}

fn parse_length(text: &str) -> io::Result<i64> {
    text.parse()
        .map_err(|_| invalid_data(format!("invalid RESP2 integer {text:?}")))
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Returns the process-wide throwaway server of this test binary (no persistence, no password),
/// started on first use from any thread and killed when the test process exits.
///
/// Panics with the server's log when it does not start, on the first and every later call.
pub(crate) fn shared_server() -> &'static RedisServer {
    static SERVER: OnceLock<Result<RedisServer, String>> = OnceLock::new();
    let server = SERVER.get_or_init(|| RedisServer::try_start(RedisOptions::default(), false));
    server.as_ref().unwrap_or_else(|message| panic!("{message}"))
}

/// Returns the process-wide throwaway cluster of this test binary, started on first use from any thread
/// and killed when the test process exits.
///
/// Panics with the failing step when the cluster does not form, on the first and every later call.
pub(crate) fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<Result<RedisCluster, String>> = OnceLock::new();
    let cluster = CLUSTER.get_or_init(RedisCluster::try_start);
    cluster.as_ref().unwrap_or_else(|message| panic!("{message}"))
}

/// Chooses the Redis server for a conformance run, in this order:
///
/// 1. `REDIS_URL`, when set and not empty (the caller then shares that server, so keys need a
///    [`unique_prefix`]);
/// 2. the [`shared_server`], when `redis-server` is on `PATH`;
/// 3. a panic, when `CI` is set (see [`running_in_ci`]), because CI must not skip the Redis tests;
/// 4. otherwise `None`, after a `SKIPPED:` line on stderr.
pub(crate) fn redis_target() -> Option<String> {
    if let Some(url) = non_empty_var("REDIS_URL") {
        return Some(url);
    }
    if is_on_path("redis-server") {
        return Some(shared_server().url());
    }
    skip_or_fail_in_ci("redis-server not found on PATH and REDIS_URL unset")
}

/// Chooses the Redis Cluster for a conformance run, in this order:
///
/// 1. `REDIS_CLUSTER_URLS`, comma-separated seed URLs, when set and not empty;
/// 2. the [`shared_cluster`], when both `redis-server` and `redis-cli` are on `PATH`;
/// 3. a panic, when `CI` is set (see [`running_in_ci`]);
/// 4. otherwise `None`, after a `SKIPPED:` line on stderr.
pub(crate) fn redis_cluster_target() -> Option<Vec<String>> {
    if let Some(urls) = non_empty_var("REDIS_CLUSTER_URLS") {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if !urls.is_empty() {
            return Some(urls);
        }
    }
    if is_on_path("redis-server") && is_on_path("redis-cli") {
        return Some(shared_cluster().urls());
    }
    skip_or_fail_in_ci("redis-server or redis-cli not found on PATH and REDIS_CLUSTER_URLS unset")
}

/// Returns a key prefix no other call, test process or earlier run uses, such as
/// `idem-test:4242-1733345678123456789-7:`, so tests never collide on a shared server.
pub(crate) fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("idem-test:{}-{nanos}-{count}:", std::process::id())
}

/// Returns whether the `CI` environment variable is set to something other than empty, `0` or `false`.
pub(crate) fn running_in_ci() -> bool {
    non_empty_var("CI").is_some_and(|value| value != "0" && !value.eq_ignore_ascii_case("false"))
}

/// Returns whether an executable file called `name` is in a directory of `PATH`.
pub(crate) fn is_on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;

    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(name))
            .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
    })
}

fn skip_or_fail_in_ci<T>(reason: &str) -> Option<T> {
    if running_in_ci() {
        panic!("{reason}; CI requires Redis: install the redis-server package");
    }
    eprintln!(
        "SKIPPED: {reason}; install the redis-server package (or set the URL variable) to run this test"
    );
    None
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn read_log(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

/// Waits for `child` until `timeout`, then kills it. Returns its exit status, or `None` on timeout.
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `command` so that the kernel kills the child when the test process exits.
///
/// `PR_SET_PDEATHSIG` fires when the thread that spawned the child exits, not the process. Test
/// threads and runtime workers come and go, so one spawner thread that lives as long as the process
/// spawns every child.
fn spawn_tied_to_process(mut command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();

    set_parent_death_signal(&mut command);
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("redis-fixture-spawner".to_owned())
            .spawn(move || {
                for (mut command, reply) in receiver {
                    // The requester waits on the reply, so a send fails only if it panicked meanwhile.
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the thread that spawns the Redis fixture's child processes");
        sender
    });

    let (reply_sender, reply_receiver) = mpsc::channel();
    spawner
        .send((command, reply_sender))
        .map_err(|_| io::Error::other("the Redis fixture's spawner thread is gone"))?;
    reply_receiver
        .recv()
        .map_err(|_| io::Error::other("the Redis fixture's spawner thread is gone"))?
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(command: &mut Command) {
    use std::os::unix::process::CommandExt;

    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It only makes the prctl and getppid
    // system calls, which are async-signal-safe, and it neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have exited before prctl ran, and then no signal would ever come.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

// NOTE: without PR_SET_PDEATHSIG, a child whose guard never drops (the shared server and cluster)
// outlives the test process.
#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_command: &mut Command) {}

/// Ports handed to live servers of this process, so two fixtures in one test binary never pick the
/// same port (or one's port as another's cluster bus port) between release and bind.
fn leased_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A client port, and for a cluster node its bus port too, reserved for one server of this process.
#[derive(Debug)]
struct PortLease {
    port: u16,
    cluster: bool,
}

impl PortLease {
    /// Finds a port that binds on 127.0.0.1, and with `cluster` a port whose bus port (plus 10000) binds
    /// too. The kernel picks candidates from its ephemeral range, so no fixed range is assumed.
    fn acquire(cluster: bool) -> Self {
        let mut leased = leased_ports()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..1000 {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1");
            let port = listener
                .local_addr()
                .expect("local address of a bound socket")
                .port();
            let mut ports = vec![port];
            let mut _bus_listener = None;
            if cluster {
                let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
                    continue;
                };
                match TcpListener::bind(("127.0.0.1", bus)) {
                    Ok(bus_listener) => _bus_listener = Some(bus_listener),
                    Err(_) => continue,
                }
                ports.push(bus);
            }
            let clashes = ports
                .iter()
                .any(|candidate| FOREIGN_PORTS.contains(candidate) || leased.contains(candidate));
            if clashes {
                continue;
            }
            leased.extend(ports);
            return Self { port, cluster };
        }
        panic!("found no free port on 127.0.0.1 in 1000 tries");
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut leased = leased_ports()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        leased.remove(&self.port);
        if self.cluster {
            leased.remove(&(self.port + CLUSTER_BUS_OFFSET));
        }
    }
}

/// A directory of one server under Cargo's tmp dir for integration tests, removed on drop.
///
/// Its name starts with the test process id. A new directory removes those of processes that no
/// longer run, because a directory held by a static is never dropped.
#[derive(Debug)]
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(kind: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redis-fixture");
        fs::create_dir_all(&root).unwrap_or_else(|error| panic!("create {}: {error}", root.display()));
        remove_dirs_of_exited_processes(&root);

        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{}-{kind}-{count}", std::process::id()));
        // A directory left by an earlier process with the same id would mix two servers' files.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap_or_else(|error| panic!("create {}: {error}", path.display()));
        Self { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn remove_dirs_of_exited_processes(root: &Path) {
    // Without /proc this cannot check whether a process still runs, so it keeps every directory.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.split('-').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        // NOTE: a reused process id keeps a stale directory until that process exits too.
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
