//! `/health/ready` tells the truth quickly: a database that stopped answering is a 503 within
//! two seconds, not after the pool's acquire timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use converge_testkit::{ServerProcess, fresh_pg_database};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to PostgreSQL that can go silent: it keeps every connection open but stops
/// passing bytes, as a database behind a dropped network path does.
struct Relay {
    port: u16,
    passing: Arc<AtomicBool>,
}

impl Relay {
    async fn to(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let passing = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&passing);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, Arc::clone(&flag)));
                tokio::spawn(pass(server_read, client_write, Arc::clone(&flag)));
            }
        });
        Relay { port, passing }
    }

    fn go_silent(&self) {
        self.passing.store(false, Ordering::SeqCst);
    }
}

async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    passing: Arc<AtomicBool>,
) {
    let mut buffer = [0u8; 16_384];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if !passing.load(Ordering::SeqCst) {
            // Silent: hold the connection, drop the bytes.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_makes_readiness_answer_503_within_two_seconds() {
    let url = fresh_pg_database().await;
    // postgres://user@host:port/name → the host:port part, and the URL through the relay.
    let after_scheme = url.trim_start_matches("postgres://");
    let (credentials, rest) = after_scheme.split_once('@').unwrap();
    let (address, database) = rest.split_once('/').unwrap();
    let relay = Relay::to(address.to_owned()).await;
    let relayed = format!(
        "postgres://{credentials}@127.0.0.1:{}/{database}",
        relay.port
    );

    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
        ("CONVERGE_PG_DSN", relayed),
        ("CONVERGE_AUTH_REQUIRED", "0".to_owned()),
    ];
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        dir.path(),
        &env,
        &["--no-worker"],
    );
    let client = reqwest::Client::new();
    let ready = client
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    relay.go_silent();
    let asked = Instant::now();
    let ready = client
        .get(server.url("/health/ready"))
        .timeout(Duration::from_secs(8))
        .send()
        .await
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(
        took < Duration::from_millis(2_500),
        "answered after {took:?}"
    );
    // Liveness does not depend on the database.
    let live = client.get(server.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
}
