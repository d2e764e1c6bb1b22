//! Tests of the Redis test fixture itself: throwaway servers, restarts with AOF, passwords, the
//! three-node cluster, the cleanup of child processes and the choice of target.
//!
//! These tests need `redis-server` and `redis-cli` on PATH. Without them they print a `SKIPPED:` line
//! and pass, except under CI, where they fail.

mod support;

use std::env;
use std::fs;
use std::io::ErrorKind;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use support::redis::{
    RedisCluster, RedisOptions, RedisServer, Reply, RespConnection, is_on_path, redis_cluster_target,
    redis_target, running_in_ci, shared_server, unique_prefix,
};

/// Environment variable that makes `child_probe` run one probe, named by its value.
const PROBE_VAR: &str = "REDIS_FIXTURE_PROBE";

/// Returns whether the Redis tools are installed, or panics under CI, where they must be.
fn tools_available() -> bool {
    if is_on_path("redis-server") && is_on_path("redis-cli") {
        return true;
    }
    assert!(
        !running_in_ci(),
        "redis-server or redis-cli not found on PATH; install the redis-server package"
    );
    eprintln!("SKIPPED: redis-server or redis-cli not found on PATH; install the redis-server package");
    false
}

/// Returns whether process `pid` is gone: no entry in /proc, or a zombie waiting to be reaped.
fn process_is_gone(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state letter follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    state == Some("Z")
}

/// Waits up to five seconds for process `pid` to be gone, for children killed by the kernel.
fn wait_until_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if process_is_gone(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    process_is_gone(pid)
}

/// Runs `redis-cli -c` (which follows MOVED redirections) against the cluster node on `port`.
fn cluster_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(output.status.success(), "redis-cli {args:?} failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs `child_probe` of this test binary in a child process with `PROBE_VAR` set to `probe` and
/// the given changes to its environment.
fn run_probe(probe: &str, set: &[(&str, &str)], remove: &[&str]) -> Output {
    let mut command = Command::new(env::current_exe().expect("path of the test binary"));
    command
        .args([
            "child_probe",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_VAR, probe);
    for name in remove {
        command.env_remove(name);
    }
    for (name, value) in set {
        command.env(name, value);
    }
    command.output().expect("run the test binary as a child process")
}

/// Returns what follows `marker` on the first stdout line that contains it. The test harness prints
/// the test's name on the same line, before the probe's output.
fn probe_value(output: &Output, marker: &str) -> Option<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.split_once(marker).map(|(_, value)| value.to_owned()))
}

/// Not a test: the probe that the tests below run in a child process, so they can observe what happens
/// at process exit or under another environment.
#[test]
#[ignore = "runs only as a child process of the tests in this file"]
fn child_probe() {
    match env::var(PROBE_VAR).as_deref() {
        Ok("shared-server") => println!("PID={}", shared_server().pid().expect("shared server runs")),
        Ok("server-target") => println!("TARGET={:?}", redis_target()),
        Ok("cluster-target") => println!("TARGET={:?}", redis_cluster_target()),
        other => panic!("{PROBE_VAR} is {other:?}; run the tests that set it instead"),
    }
}

#[test]
fn server_set_get() {
    if !tools_available() {
        return;
    }
    let server = RedisServer::start();
    let mut connection = server.connect();

    assert_eq!(server.url(), format!("redis://127.0.0.1:{}/", server.port()));
    assert_eq!(
        connection.command(&["SET", "greeting", "hello"]).unwrap(),
        Reply::ok()
    );
    assert_eq!(
        connection.command(&["GET", "greeting"]).unwrap(),
        Reply::bulk("hello")
    );
    assert_eq!(
        connection.command(&["GET", "missing"]).unwrap(),
        Reply::Bulk(None)
    );
}

#[test]
fn server_default_has_no_persistence() {
    if !tools_available() {
        return;
    }
    let server = RedisServer::start();
    let mut connection = server.connect();

    let appendonly = connection.command(&["CONFIG", "GET", "appendonly"]).unwrap();
    let save = connection.command(&["CONFIG", "GET", "save"]).unwrap();
    let bind = connection.command(&["CONFIG", "GET", "bind"]).unwrap();

    assert_eq!(
        appendonly,
        Reply::Array(Some(vec![Reply::bulk("appendonly"), Reply::bulk("no")]))
    );
    assert_eq!(
        save,
        Reply::Array(Some(vec![Reply::bulk("save"), Reply::bulk("")]))
    );
    assert_eq!(
        bind,
        Reply::Array(Some(vec![Reply::bulk("bind"), Reply::bulk("127.0.0.1")]))
    );
}

#[test]
fn restart_keeps_aof_writes() {
    if !tools_available() {
        return;
    }
    let mut server = RedisServer::start_with(RedisOptions {
        append_only: true,
        password: None,
    });
    let port = server.port();
    let first_pid = server.pid();
    let mut connection = server.connect();
    assert_eq!(
        connection.command(&["SET", "survivor", "kept"]).unwrap(),
        Reply::ok()
    );
    drop(connection);

    server.restart();
    let mut connection = server.connect();

    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first_pid);
    assert_eq!(
        connection.command(&["GET", "survivor"]).unwrap(),
        Reply::bulk("kept")
    );
    let appendfsync = connection.command(&["CONFIG", "GET", "appendfsync"]).unwrap();
    assert_eq!(
        appendfsync,
        Reply::Array(Some(vec![Reply::bulk("appendfsync"), Reply::bulk("always")]))
    );
}

#[test]
fn restart_without_aof_loses_writes() {
    if !tools_available() {
        return;
    }
    let mut server = RedisServer::start();
    let mut connection = server.connect();
    assert_eq!(
        connection.command(&["SET", "volatile", "gone"]).unwrap(),
        Reply::ok()
    );
    drop(connection);

    server.restart();
    let mut connection = server.connect();

    assert_eq!(
        connection.command(&["GET", "volatile"]).unwrap(),
        Reply::Bulk(None)
    );
}

#[test]
fn stop_refuses_connections() {
    if !tools_available() {
        return;
    }
    let mut server = RedisServer::start();
    let pid = server.pid().expect("server runs");

    server.stop();
    let error = RespConnection::connect(server.port()).expect_err("connect to a stopped server");

    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(server.pid(), None);
    assert!(process_is_gone(pid), "redis-server {pid} still runs after stop");
}

#[test]
fn password_required() {
    if !tools_available() {
        return;
    }
    let server = RedisServer::start_with(RedisOptions {
        append_only: false,
        password: Some("s3cret".to_owned()),
    });
    let mut anonymous = RespConnection::connect(server.port()).unwrap();
    let mut wrong = RespConnection::connect(server.port()).unwrap();

    let rejected = anonymous.command(&["SET", "k", "v"]).unwrap();
    let wrong_auth = wrong.command(&["AUTH", "guess"]).unwrap();
    let mut authenticated = server.connect();

    assert!(
        matches!(&rejected, Reply::Error(message) if message.starts_with("NOAUTH")),
        "{rejected:?}"
    );
    assert!(
        matches!(&wrong_auth, Reply::Error(message) if message.starts_with("WRONGPASS")),
        "{wrong_auth:?}"
    );
    assert_eq!(authenticated.command(&["SET", "k", "v"]).unwrap(), Reply::ok());
    assert_eq!(
        server.url(),
        format!("redis://:s3cret@127.0.0.1:{}/", server.port())
    );
}

#[test]
fn server_drop_kills_child() {
    if !tools_available() {
        return;
    }
    let server = RedisServer::start();
    let pid = server.pid().expect("server runs");
    let port = server.port();

    drop(server);

    assert!(process_is_gone(pid), "redis-server {pid} still runs after drop");
    assert!(
        RespConnection::connect(port).is_err(),
        "port {port} still accepts connections"
    );
}

#[test]
fn server_drop_on_panic_kills_child() {
    if !tools_available() {
        return;
    }
    let (pid_sender, pid_receiver) = std::sync::mpsc::channel();

    let result = thread::spawn(move || {
        let server = RedisServer::start();
        pid_sender.send(server.pid().expect("server runs")).unwrap();
        panic!("a failing test that holds a server");
    })
    .join();
    let pid = pid_receiver.recv().expect("pid of the server");

    assert!(result.is_err());
    assert!(
        process_is_gone(pid),
        "redis-server {pid} still runs after the panic"
    );
}

#[test]
fn server_outlives_spawning_thread() {
    if !tools_available() {
        return;
    }
    // The parent-death signal follows the spawning thread, so a server started from a thread that
    // ends must keep running while its guard lives.
    let server = thread::spawn(RedisServer::start)
        .join()
        .expect("start a server on a thread");
    thread::sleep(Duration::from_millis(200));
    let mut connection = server.connect();

    assert_eq!(
        connection.command(&["PING"]).unwrap(),
        Reply::Status("PONG".to_owned())
    );
}

#[test]
fn shared_server_dies_with_process() {
    if !tools_available() {
        return;
    }
    let output = run_probe("shared-server", &[], &[]);
    assert!(output.status.success(), "probe failed: {output:?}");
    let pid: u32 = probe_value(&output, "PID=")
        .expect("probe prints the server's pid")
        .parse()
        .expect("pid is a number");

    assert!(
        wait_until_gone(pid),
        "shared redis-server {pid} outlived its test process"
    );
}

#[test]
fn cluster_writes_across_slots() {
    if !tools_available() {
        return;
    }
    let cluster = RedisCluster::start();
    let ports = cluster.ports();
    // Keys whose hash slots fall in the ranges of all three masters (slots 0-5460, 5461-10922 and
    // 10923-16383 after `redis-cli --cluster create` of redis-cli 7.0): key-1 is in slot 229, key-3 in 8359 and key-2
    // in 12422 (CRC16 of the key modulo 16384).
    let keys = ["key-1", "key-2", "key-3", "key-4", "key-5", "key-6"];

    for key in keys {
        assert_eq!(
            cluster_cli(ports[0], &["SET", key, &format!("value of {key}")]),
            "OK"
        );
    }
    let read: Vec<String> = keys
        .iter()
        .map(|key| cluster_cli(ports[1], &["GET", key]))
        .collect();
    let key_counts: Vec<i64> = ports
        .iter()
        .map(|port| {
            match RespConnection::connect(*port)
                .unwrap()
                .command(&["DBSIZE"])
                .unwrap()
            {
                Reply::Integer(count) => count,
                other => panic!("DBSIZE on port {port} returned {other:?}"),
            }
        })
        .collect();

    let expected: Vec<String> = keys.iter().map(|key| format!("value of {key}")).collect();
    assert_eq!(read, expected);
    assert_eq!(key_counts.iter().sum::<i64>(), keys.len() as i64);
    for (port, count) in ports.iter().zip(&key_counts) {
        assert!(*count > 0, "node on port {port} holds no key: {key_counts:?}");
    }
    assert_eq!(
        cluster.urls(),
        ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn cluster_drop_kills_children() {
    if !tools_available() {
        return;
    }
    let cluster = RedisCluster::start();
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);

    drop(cluster);

    for pid in pids {
        assert!(process_is_gone(pid), "cluster node {pid} still runs after drop");
    }
}

#[test]
fn target_prefers_redis_url() {
    let output = run_probe("server-target", &[("REDIS_URL", "redis://127.0.0.1:1/")], &[]);

    assert!(output.status.success(), "probe failed: {output:?}");
    assert_eq!(
        probe_value(&output, "TARGET=").as_deref(),
        Some(r#"Some("redis://127.0.0.1:1/")"#)
    );
}

#[test]
fn target_starts_shared_server() {
    if !tools_available() {
        return;
    }
    let output = run_probe("server-target", &[], &["REDIS_URL"]);

    assert!(output.status.success(), "probe failed: {output:?}");
    let target = probe_value(&output, "TARGET=").expect("probe prints the target");
    assert!(target.starts_with(r#"Some("redis://127.0.0.1:"#), "{target}");
}

#[test]
fn target_skips_without_redis() {
    let output = run_probe("server-target", &[("PATH", "/nonexistent")], &["REDIS_URL", "CI"]);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(output.status.success(), "probe failed: {output:?}");
    assert_eq!(probe_value(&output, "TARGET=").as_deref(), Some("None"));
    assert!(
        stderr.contains("SKIPPED: redis-server not found on PATH and REDIS_URL unset"),
        "{stderr}"
    );
}

#[test]
fn target_fails_in_ci_without_redis() {
    let output = run_probe(
        "server-target",
        &[("PATH", "/nonexistent"), ("CI", "true")],
        &["REDIS_URL"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "probe passed: {output:?}");
    assert!(
        stderr.contains("redis-server not found on PATH and REDIS_URL unset; CI requires Redis"),
        "{stderr}"
    );
}

#[test]
fn cluster_target_splits_urls() {
    let urls = "redis://127.0.0.1:1/, redis://127.0.0.1:2/,";
    let output = run_probe("cluster-target", &[("REDIS_CLUSTER_URLS", urls)], &[]);

    assert!(output.status.success(), "probe failed: {output:?}");
    assert_eq!(
        probe_value(&output, "TARGET=").as_deref(),
        Some(r#"Some(["redis://127.0.0.1:1/", "redis://127.0.0.1:2/"])"#)
    );
}

#[test]
fn cluster_target_fails_in_ci_without_cli() {
    let output = run_probe(
        "cluster-target",
        &[("PATH", "/nonexistent"), ("CI", "true")],
        &["REDIS_CLUSTER_URLS"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "probe passed: {output:?}");
    assert!(
        stderr.contains("REDIS_CLUSTER_URLS unset; CI requires Redis"),
        "{stderr}"
    );
}

#[test]
fn unique_prefix_differs() {
    let first = unique_prefix();
    let second = unique_prefix();

    assert_ne!(first, second);
    assert!(
        first.starts_with(&format!("idem-test:{}-", std::process::id())),
        "{first}"
    );
    assert!(first.ends_with(':'), "{first}");
}
