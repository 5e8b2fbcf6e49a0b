//! `converge serve`: all of Converge in one process — the HTTP API, and a queue worker over
//! the database-backed queue (or SQS, with `CONVERGE_QUEUE_URL`) and the local git repository
//! and/or the GitHub App. On SIGTERM or Ctrl-C it stops accepting, gives in-flight requests
//! and the worker's current round `CONVERGE_HTTP_SHUTDOWN_SECONDS` to finish (releasing its
//! leases), and exits 0. The server's limits are `converge_http::server`'s.

use anyhow::Context;
use clap::Args;
use converge_runtime::queue_worker::run_until_stopped;
use converge_runtime::services::{Processor, Services};
use converge_runtime::sqs::run_sqs_worker;

/// Options of `converge serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(long, default_value_t = 9876)]
    port: u16,
    /// Serve the API only: no queue worker in this process (run `converge worker`, or
    /// another server, to process the queue).
    #[arg(long)]
    no_worker: bool,
}

/// Runs the server until a stop signal.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let telemetry = converge_runtime::telemetry::Telemetry::init("converge");
    let config = converge_runtime::config::Config::from_env()?;
    let limits = config.server.clone();
    let state = converge_http::boot::state_from_config(config).await?;
    let api = &state.services.api;
    if api.auth_required && api.api_keys.is_empty() && api.api_keys_secret_arn.is_none() {
        eprintln!(
            "converge: warning: authentication is on and neither CONVERGE_API_KEYS nor CONVERGE_API_KEYS_SECRET_ARN gives keys; only keys already in the database work \
             (set CONVERGE_API_KEYS=key:role:actor, or CONVERGE_AUTH_REQUIRED=0 for a private machine)"
        );
    }
    for (part, problem) in state.services.degraded() {
        eprintln!("converge: warning: {part}: {problem}");
    }
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = std::sync::Arc::new(stop);
    // Review SLAs and retention, every minute.
    let maintenance = {
        let state = state.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { state.services.run_maintenance(stopped).await })
    };
    let worker = if args.no_worker {
        None
    } else {
        match state.services.processor("serve") {
            None => {
                eprintln!(
                    "converge: no git repository (CONVERGE_REPO_PATH, or start in one) and no GitHub App (CONVERGE_GITHUB_APP_ID): the queue worker is off"
                );
                None
            }
            Some(processor) => {
                eprintln!("converge: queue worker {}", processor.holder());
                let state = state.clone();
                Some(tokio::spawn(async move {
                    // The HTTP state's refresh: keys a rotation withdrew leave the key cache
                    // at once, whichever of the worker and a request saw the rotation first.
                    let refresh = || state.refresh_secrets();
                    run_worker(&state.services, &processor, stopped, refresh).await;
                }))
            }
        }
    };

    eprintln!("converge: serving the API on http://{address}");
    let stop_on_signal = stop.clone();
    let grace = limits.shutdown_grace;
    converge_http::server::serve(listener, converge_http::router(state), limits, async move {
        stop_signal().await;
        // Tell the worker too; it finishes its round while requests drain.
        let _ = stop_on_signal.send(true);
    })
    .await;
    let _ = stop.send(true);
    if let Some(worker) = worker {
        // The worker's round gets the same grace as requests: a round stopped mid-way loses
        // nothing (its lease lapses and the next worker takes the key up).
        match tokio::time::timeout(grace, worker).await {
            Ok(joined) => joined.context("the queue worker panicked")?,
            Err(_) => {
                eprintln!("converge: the queue worker's round outlasted {grace:?}: stopping it")
            }
        }
    }
    // Each step of the upkeep is one short transaction: waiting for it is waiting for a commit.
    let _ = tokio::time::timeout(grace, maintenance).await;
    telemetry.shutdown().await;
    eprintln!("converge: stopped");
    Ok(())
}

pub(crate) async fn stop_signal() {
    let interrupt = async {
        // If Ctrl-C cannot be watched, wait for SIGTERM alone rather than stopping at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// Runs `processor` until `stopped` turns true: on SQS when the services have a queue, else on
/// the database-backed queue; `refresh_secrets` follows rotated secrets meanwhile.
pub(crate) async fn run_worker<F, R>(
    services: &Services,
    processor: &Processor,
    stopped: tokio::sync::watch::Receiver<bool>,
    refresh_secrets: F,
) where
    F: Fn() -> R,
    R: std::future::Future<Output = ()>,
{
    let work = async {
        match &services.queue {
            Some(queue) => run_sqs_worker(processor, &services.store, queue, stopped).await,
            None => run_until_stopped(processor, &services.queue_wakeup, stopped).await,
        }
    };
    // A worker that serves no requests still follows rotated secrets (DSN, App key, keys).
    let follow_rotations = async {
        loop {
            tokio::time::sleep(SECRET_REFRESH_INTERVAL).await;
            refresh_secrets().await;
        }
    };
    tokio::select! {
        () = work => {},
        () = follow_rotations => {},
    }
}

/// How often a worker process checks its secrets for a rotation (each check reads Secrets
/// Manager only when the cache's lifetime has passed).
const SECRET_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);
