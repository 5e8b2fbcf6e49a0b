//! Store administration: `converge migrate`, `converge projections rebuild`,
//! `converge backfill`. Each prints one JSON document on stdout.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Args;
use converge_store::backfill::{BackfillOptions, backfill as copy_tables};
use converge_store::{Backend, Store, StoreUrl, SystemClock};
use serde_json::json;

/// Options of `converge backfill`.
#[derive(Args)]
pub struct BackfillArgs {
    /// Source store: `sqlite://PATH`, `postgres://…`, or `env:NAME` to read the URL from the
    /// environment variable NAME (keeps a password off the command line).
    #[arg(long, value_name = "URL")]
    from: String,
    /// Target store, in the same forms as --from.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Count rows only; copy nothing.
    #[arg(long)]
    dry_run: bool,
    /// After copying, compare row counts and content checksums per table; exit 1 on mismatch.
    #[arg(long)]
    verify: bool,
}

impl std::fmt::Debug for BackfillArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs may carry passwords.
        f.debug_struct("BackfillArgs")
            .field("dry_run", &self.dry_run)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

/// Resolves `env:NAME` to the value of the environment variable NAME.
fn resolve_url(flag: &str, given: &str) -> anyhow::Result<String> {
    match given.strip_prefix("env:") {
        Some(name) => std::env::var(name)
            .map_err(|_| anyhow!("{flag} env:{name}: the environment variable {name} is not set")),
        None => Ok(given.to_owned()),
    }
}

/// Whether two URLs name the same SQLite file.
fn same_sqlite_file(a: &str, b: &str) -> bool {
    match (StoreUrl::parse(a), StoreUrl::parse(b)) {
        (Ok(StoreUrl::Sqlite(a)), Ok(StoreUrl::Sqlite(b))) => {
            let canonical =
                |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            canonical(a) == canonical(b)
        }
        _ => false,
    }
}

/// Runs an async command on a small runtime and prints its answer: as JSON with `--json`,
/// else field by field, with a table of the copied tables for a backfill.
pub fn run(
    command: impl Future<Output = anyhow::Result<serde_json::Value>>,
    out: crate::output::Output,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let output = runtime.block_on(command)?;
    out.emit(&output, |o| {
        match output.get("tables").and_then(|t| t.as_array()) {
            Some(tables) => {
                let mut rest = output.clone();
                if let Some(map) = rest.as_object_mut() {
                    map.remove("tables");
                }
                format!(
                    "{}\n{}",
                    o.pairs(&rest),
                    o.table(
                        tables,
                        &[
                            ("table", "/table"),
                            ("source rows", "/source_rows"),
                            ("copied", "/copied"),
                            ("updated", "/updated"),
                            ("verified", "/verified"),
                            ("not verified because", "/verify_skipped"),
                        ],
                    )
                )
            }
            None => o.pairs(&output),
        }
    })
}

/// The store the environment configures, its DSN read from Secrets Manager when only
/// `CONVERGE_PG_DSN_SECRET_ARN` names it (as the functions read it).
async fn configured_store() -> anyhow::Result<Store> {
    Ok(converge_runtime::services::store_from_env(false).await?)
}

fn backend_name(store: &Store) -> &'static str {
    match store.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// `converge migrate`.
pub async fn migrate() -> anyhow::Result<serde_json::Value> {
    let store = configured_store().await?;
    store.migrate().await?;
    Ok(json!({"backend": backend_name(&store), "migrated": true}))
}

/// `converge projections rebuild`.
pub async fn rebuild_projections() -> anyhow::Result<serde_json::Value> {
    let store = configured_store().await?;
    store.migrate().await?;
    let intents = store.rebuild_projections().await?;
    Ok(json!({"backend": backend_name(&store), "intents": intents}))
}

/// `converge backfill`.
pub async fn backfill(args: BackfillArgs) -> anyhow::Result<serde_json::Value> {
    let (from, to) = (
        resolve_url("--from", &args.from)?,
        resolve_url("--to", &args.to)?,
    );
    if from == to || same_sqlite_file(&from, &to) {
        return Err(anyhow!("--from and --to are the same store"));
    }
    let source = Store::open_existing(&from, Arc::new(SystemClock)).context("--from")?;
    let target = Store::from_url(&to, Arc::new(SystemClock)).context("--to")?;
    let options = BackfillOptions {
        dry_run: args.dry_run,
        verify: args.verify,
    };
    let report = copy_tables(&source, &target, options).await?;
    let mismatches = report.mismatches();
    if !mismatches.is_empty() {
        // The report still goes to stdout for inspection; the exit status says it failed.
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Err(anyhow!(
            "verification failed for: {}",
            mismatches.join(", ")
        ));
    }
    Ok(serde_json::to_value(&report)?)
}
