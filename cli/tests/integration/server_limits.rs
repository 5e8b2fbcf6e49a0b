//! `converge serve` against slow and stalled clients, over raw sockets: header, body and idle
//! timeouts, the connection cap, and a shutdown that a stalled client cannot hold up.

use std::time::{Duration, Instant};

use converge_testkit::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn serve(dir: &std::path::Path, limits: &[(&'static str, &str)]) -> ServerProcess {
    let mut env = vec![
        ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
        (
            "CONVERGE_DB_PATH",
            dir.join("limits.db").display().to_string(),
        ),
        ("CONVERGE_API_KEYS", "limits-key:admin:ops".to_owned()),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
    ];
    env.extend(limits.iter().map(|(k, v)| (*k, (*v).to_owned())));
    ServerProcess::start_with(env!("CARGO_BIN_EXE_converge"), dir, &env, &["--no-worker"])
}

fn address(server: &ServerProcess) -> String {
    server.url("").trim_start_matches("http://").to_owned()
}

/// A connection that sent the start of a request and nothing more.
async fn stalled_in_headers(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: converge\r\n")
        .await
        .unwrap();
    stream
}

/// A connection whose request announced a body of 100 bytes and sent 10.
async fn stalled_in_body(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"POST /v1/intents HTTP/1.1\r\nhost: converge\r\nx-api-key: limits-key\r\n\
content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"source\":",
        )
        .await
        .unwrap();
    stream
}

/// Reads until the server closes the connection (or `within` passes: then `None`).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut received)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

/// `GET /health/live` on a new connection: the status line, and how long the answer took.
async fn probe(address: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: converge\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eleven_hundred_stalled_connections_do_not_keep_health_from_answering() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
        (
            "CONVERGE_DB_PATH",
            dir.path().join("flood.db").display().to_string(),
        ),
        ("CONVERGE_API_KEYS", "limits-key:admin:ops".to_owned()),
        // Long enough that no stalled connection is closed by its timeout during the test:
        // only the cap makes room.
        ("CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS", "120".to_owned()),
    ];
    let server = ServerProcess::start_with_open_files(
        env!("CARGO_BIN_EXE_converge"),
        dir.path(),
        &env,
        &["--no-worker"],
        1_024,
    );
    let address = address(&server);
    let mut flood = Vec::with_capacity(1_100);
    for _ in 0..1_100 {
        flood.push(stalled_in_headers(&address).await);
    }
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let (status, took) = probe(&address).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "after {took:?}");
        latencies.push(took);
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(
        median <= Duration::from_millis(100),
        "median {median:?}, all {latencies:?}"
    );
    assert!(
        latencies[latencies.len() - 1] <= Duration::from_secs(1),
        "{latencies:?}"
    );
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_slow_bodies_and_idle_connections_are_closed_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &[
            ("CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS", "1"),
            ("CONVERGE_HTTP_BODY_TIMEOUT_SECONDS", "1"),
            ("CONVERGE_HTTP_IDLE_TIMEOUT_SECONDS", "2"),
        ],
    );
    let address = address(&server);

    // Headers that never finish: the connection is closed, with nothing answered.
    let started = Instant::now();
    let mut headers = stalled_in_headers(&address).await;
    let answer = read_until_closed(&mut headers, Duration::from_secs(5)).await;
    assert_eq!(
        answer.as_deref(),
        Some(""),
        "a stalled header was kept open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // A body that never finishes: 408, and the request did nothing.
    let mut body = stalled_in_body(&address).await;
    let answer = read_until_closed(&mut body, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A kept-alive connection with nothing more to ask is closed after the idle timeout, and
    // not before it.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nhost: converge\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let answered = Instant::now();
    let rest = read_until_closed(&mut idle, Duration::from_secs(6)).await;
    assert!(rest.is_some(), "an idle connection was kept open");
    let idled = answered.elapsed();
    assert!(
        (Duration::from_millis(1_800)..Duration::from_secs(5)).contains(&idled),
        "closed after {idled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_every_connection_busy_a_newcomer_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &[
            ("CONVERGE_HTTP_MAX_CONNECTIONS", "3"),
            ("CONVERGE_HTTP_BODY_TIMEOUT_SECONDS", "30"),
        ],
    );
    let address = address(&server);
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(stalled_in_body(&address).await);
    }
    // Let the server read their headers: a request is then in progress on each.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = probe(&address).await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    let shed = reqwest::get(server.url("/health/live")).await.unwrap();
    assert_eq!(shed.status().as_u16(), 503);
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // A connection with no request in progress makes room instead: the newcomer is served.
    drop(busy.pop());
    busy.push(stalled_in_headers(&address).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = probe(&address).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_grace_with_stalled_clients_attached() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(
        dir.path(),
        &[
            ("CONVERGE_HTTP_SHUTDOWN_SECONDS", "2"),
            ("CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS", "120"),
            ("CONVERGE_HTTP_BODY_TIMEOUT_SECONDS", "120"),
        ],
    );
    let address = address(&server);
    let _headers = stalled_in_headers(&address).await;
    let _body = stalled_in_body(&address).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(4), "exited after {took:?}");
}
