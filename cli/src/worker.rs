//! `converge worker`: processes the queue on its own, beside servers started with
//! `--no-worker` or the `api` function. With `CONVERGE_QUEUE_URL` set it takes its work from
//! SQS the way the worker function does (and sweeps on a timer); otherwise it polls the
//! database-backed queue every `CONVERGE_WORKER_POLL_INTERVAL` seconds. It works through the
//! local repository and/or the GitHub App like `converge serve`, and on SIGTERM or Ctrl-C
//! finishes the batch in hand, gives back the leases it holds, and exits 0.

use anyhow::Context;

/// Runs the worker until a stop signal.
pub fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(work())
}

async fn work() -> anyhow::Result<()> {
    let telemetry = converge_runtime::telemetry::Telemetry::init("converge-worker");
    let services = converge_runtime::services::Services::from_env().await?;
    let interval = services.worker.poll_interval;
    let Some(processor) = services.processor("worker") else {
        anyhow::bail!(
            "nothing to work on: set CONVERGE_REPO_PATH (or start in a git repository) or configure the GitHub App (CONVERGE_GITHUB_APP_ID)"
        );
    };
    eprintln!(
        "converge: worker {} polling {} every {} s",
        processor.holder(),
        services
            .queue
            .as_ref()
            .map_or("the database-backed queue", |q| q.url()),
        interval.as_secs()
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        crate::serve::stop_signal().await;
        let _ = stop.send(true);
    });
    let refresh = || async {
        services.refresh_secrets().await;
    };
    let maintenance = services.run_maintenance(stopped.clone());
    tokio::join!(
        crate::serve::run_worker(&services, &processor, stopped, refresh),
        maintenance
    );
    signal.abort();
    telemetry.shutdown().await;
    eprintln!("converge: worker stopped");
    Ok(())
}
