//! `converge serve`: the HTTP API on this machine, with a clean stop on SIGTERM or Ctrl-C
//! (stop accepting, finish in-flight requests, exit 0).

use anyhow::Context;
use clap::Args;

/// Options of `converge serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(long, default_value_t = 9876)]
    port: u16,
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
    let state = converge_http::boot::state_from_env().await?;
    if state.settings.auth_required && state.settings.api_keys.is_empty() {
        eprintln!(
            "converge: warning: authentication is on and CONVERGE_API_KEYS is empty; only keys already in the database work \
             (set CONVERGE_API_KEYS=key:role:actor, or CONVERGE_AUTH_REQUIRED=0 for a private machine)"
        );
    }
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    eprintln!("converge: serving the API on http://{address}");
    axum::serve(listener, converge_http::router(state))
        .with_graceful_shutdown(stop_signal())
        .await
        .context("server error")?;
    eprintln!("converge: stopped");
    Ok(())
}

async fn stop_signal() {
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
