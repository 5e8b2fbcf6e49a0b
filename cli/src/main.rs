//! `converge`: the command-line entry point.
//!
//! Today it evaluates changes offline (`risk eval`, `policy eval`), administers the store
//! (`migrate`, `projections rebuild`, `backfill`), serves the HTTP API with a queue worker
//! (`serve`) and runs a worker alone (`worker`). The operator commands over the HTTPS API
//! arrive with their issue; until then they are not listed rather than stubbed.

mod assess;
mod serve;
mod state;
mod worker;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Merge coordination for GitHub: evidence-based queueing of pull requests.
#[derive(Debug, Parser)]
#[command(name = "converge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Risk evaluation of a change.
    #[command(subcommand)]
    Risk(RiskCommand),
    /// Policy gates for a change.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Apply the store's pending migrations (CONVERGE_DB_BACKEND, CONVERGE_DB_PATH,
    /// CONVERGE_PG_DSN choose the store).
    Migrate,
    /// The intents projection.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Copy every table between a SQLite file and a PostgreSQL database (either direction).
    Backfill(state::BackfillArgs),
    /// Serve the HTTP API on this machine (the store from CONVERGE_DB_*; keys from
    /// CONVERGE_API_KEYS). Stops cleanly on SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// Process the queue without serving the API: poll the database-backed queue every
    /// CONVERGE_WORKER_POLL_INTERVAL seconds. Stops cleanly on SIGTERM or Ctrl-C.
    Worker,
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Empty the intents projection and replay the event log into it.
    Rebuild,
}

#[derive(Debug, Subcommand)]
enum RiskCommand {
    /// Evaluate the risk of a change described in a file, with its classification and gates.
    Eval(EvalArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run the policy gates and the risk gate on a change described in a file.
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// JSON file holding `{"input": {"intent": …, "simulation": …, "coupling": […]}}`
    /// (a parity case file is valid input; other keys are ignored).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Policy configuration in the `policy.json` shape (default: the built-in profiles).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print the full evaluation as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Risk(RiskCommand::Eval(args)) => eval(&args, assess::Focus::Risk),
        Command::Policy(PolicyCommand::Eval(args)) => eval(&args, assess::Focus::Policy),
        Command::Migrate => state::run(state::migrate()),
        Command::Projections(ProjectionsCommand::Rebuild) => {
            state::run(state::rebuild_projections())
        }
        Command::Backfill(args) => state::run(state::backfill(args)),
        Command::Serve(args) => serve::run(&args),
        Command::Worker => worker::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn eval(args: &EvalArgs, focus: assess::Focus) -> anyhow::Result<()> {
    let config = assess::load_policy(args.policy.as_deref())?;
    let input = assess::load_input(&args.input)?;
    let assessment = converge_core::assess(&input, &config);
    let text = if args.json {
        serde_json::to_string_pretty(&assessment)?
    } else {
        assess::summary(&assessment, focus)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}
