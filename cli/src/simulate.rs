//! `converge queue simulate`: the queue simulator (`runtime::queue_simulator`), offline, in a
//! throwaway repository.

use clap::{Args, ValueEnum};
use converge_runtime::queue_simulator::{
    SimulatedMode, SimulationReport, SimulationSettings, simulate,
};
use serde_json::Value;

use crate::client::CliError;
use crate::output::Output;

/// Which queue to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Each pull request's head tested alone and merged when green (the original).
    Head,
    /// One intent per candidate, one candidate at a time.
    TestedSerial,
    /// Batches of --batch-size, one candidate at a time.
    TestedBatched,
    /// Batches of --batch-size, --depth candidates at once.
    TestedSpeculative,
    /// Every mode above, as a table.
    All,
}

/// Options of `queue simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The queue's mode.
    #[arg(long, value_enum, default_value = "all")]
    mode: ModeArg,
    /// Mean length of a CI run in minutes (each run lasts it ± 20 %).
    #[arg(long, default_value_t = 10.0)]
    ci_minutes: f64,
    /// Share of changes that break the build (0 to 1).
    #[arg(long, default_value_t = 0.05)]
    fail_rate: f64,
    /// Share of the breaking changes that pass on their own head and break only merged with
    /// others (0 to 1).
    #[arg(long, default_value_t = 0.2)]
    semantic_share: f64,
    /// Chance that a run of a good commit fails anyway (0 to 1).
    #[arg(long, default_value_t = 0.02)]
    flake_rate: f64,
    /// Times a failed run is re-run before it counts.
    #[arg(long, default_value_t = 1)]
    flaky_reruns: u32,
    /// Mean pull requests arriving per hour.
    #[arg(long, default_value_t = 60.0)]
    arrivals_per_hour: f64,
    /// Hours simulated.
    #[arg(long, default_value_t = 8.0)]
    hours: f64,
    /// Most intents in one candidate (tested-batched and tested-speculative).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Candidates tested at once (tested-speculative).
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Random seed: the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs the simulation(s) and prints the report (one object, or a list for `--mode all`).
pub fn run(args: &SimulateArgs, out: Output) -> Result<(), CliError> {
    let modes: Vec<SimulatedMode> = match args.mode {
        ModeArg::Head => vec![SimulatedMode::Head],
        ModeArg::TestedSerial => vec![SimulatedMode::TestedSerial],
        ModeArg::TestedBatched => vec![SimulatedMode::TestedBatched],
        ModeArg::TestedSpeculative => vec![SimulatedMode::TestedSpeculative],
        ModeArg::All => SimulatedMode::ALL.to_vec(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    let mut reports = Vec::new();
    for mode in modes {
        let settings = SimulationSettings {
            mode,
            ci_minutes: args.ci_minutes,
            fail_rate: args.fail_rate,
            semantic_share: args.semantic_share,
            flake_rate: args.flake_rate,
            arrivals_per_hour: args.arrivals_per_hour,
            hours: args.hours,
            batch_size: args.batch_size,
            depth: args.depth,
            flaky_reruns: args.flaky_reruns,
            seed: args.seed,
        };
        let scratch = tempfile::tempdir()
            .map_err(|e| CliError::Other(anyhow::anyhow!("cannot make a scratch folder: {e}")))?;
        let spinner = crate::progress::spinner(&format!("simulating {}", mode.name()));
        let report = runtime.block_on(simulate(&settings, scratch.path()));
        spinner.finish_and_clear();
        reports.push(report.map_err(|e| CliError::Other(anyhow::anyhow!("{e}")))?);
    }
    let value = if let [one] = &reports[..] {
        serde_json::to_value(one)
    } else {
        serde_json::to_value(&reports)
    }
    .map_err(|e| CliError::Other(e.into()))?;
    out.emit(&value, |o| table(o, &reports))?;
    Ok(())
}

const COLUMNS: &[(&str, &str)] = &[
    ("mode", "/mode"),
    ("merges/h", "/merges_per_hour"),
    ("p50 min", "/p50_minutes"),
    ("p90 min", "/p90_minutes"),
    ("ci runs", "/ci_runs"),
    ("target broken", "/target_broken"),
    ("merged", "/merged"),
    ("ejected", "/ejected"),
    ("queued", "/still_queued"),
];

fn table(out: &Output, reports: &[SimulationReport]) -> String {
    let rows: Vec<Value> = reports
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    out.table(&rows, COLUMNS)
}
