//! `converge`: the command-line entry point.
//!
//! Operator commands (`intent`, `simulate`, `validate`, `merge`, `queue`, `audit`,
//! `risk review|gate`, `keys`, `flags`) talk to the HTTPS API (`--api-url`, `--api-key`), or
//! with `--local` run the same API in process on the configured database; `queue redrive`
//! talks to SQS instead. `doctor` checks the API that way and also reaches the database, SQS
//! and the GitHub App directly.
//! Offline evaluations (`risk eval`, `policy eval`, `analytics eval`) need neither. Store administration
//! (`migrate`, `projections rebuild`, `backfill`) works on the database; `serve` and `worker`
//! run Converge. Exit codes: 0 ok, 1 error, 2 usage, 3 a check failed.

mod agents;
mod analytics;
mod assess;
mod client;
mod demo;
mod doctor;
mod intake;
mod ops;
mod output;
mod progress;
mod serve;
mod simulate;
mod state;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::client::CliError;
use crate::output::Output;

/// Merge coordination for GitHub: evidence-based queueing of pull requests.
#[derive(Debug, Parser)]
#[command(name = "converge", version, about)]
struct Cli {
    #[command(flatten)]
    api: ops::ApiArgs,
    /// Print the answer as JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Intents: create, list, show, set a status, read events.
    #[command(subcommand)]
    Intent(ops::IntentCommand),
    /// Simulate an intent's merge into its target as they are now (exit 3 on conflicts).
    Simulate(ops::IntentId),
    /// Validate an intent now: simulation, checks, risk, policy (exit 3 when blocked).
    Validate(ops::ValidateArgs),
    /// Merges done outside Converge.
    #[command(subcommand)]
    Merge(ops::MergeCommand),
    /// The queue: run a round, reset, inspect, state.
    #[command(subcommand)]
    Queue(ops::QueueCommand),
    /// The event log and its audit chain.
    #[command(subcommand)]
    Audit(ops::AuditCommand),
    /// Exports: the decision record of every intent.
    #[command(subcommand)]
    Export(ops::ExportCommand),
    /// Review tasks: request, assign, complete, cancel, escalate, list, summary.
    #[command(subcommand)]
    Review(ops::ReviewCommand),
    /// Risk: evaluate a change offline, review an intent, the gate's report.
    #[command(subcommand)]
    Risk(RiskCommand),
    /// Policy gates for a change.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Analytics: repository and change health, predictions, verification debt, metrics, the
    /// dashboard's aggregate; `eval` computes them offline for a store given as a file.
    #[command(subcommand)]
    Analytics(AnalyticsCommand),
    /// Agents: their policies, and whether one may take an action now.
    #[command(subcommand)]
    Agent(agents::AgentCommand),
    /// Intake control: whether new intents are taken in (open, throttle, pause, auto).
    #[command(subcommand)]
    Intake(intake::IntakeCommand),
    /// Compliance: the report against the tenant's thresholds, its alerts, the thresholds and
    /// their history.
    #[command(subcommand)]
    Compliance(analytics::ComplianceCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(ops::KeysCommand),
    /// Feature flags.
    #[command(subcommand)]
    Flags(ops::FlagsCommand),
    /// Check the deployment: API, database, leases, queue and DLQ, GitHub App, webhook secret
    /// (exit 3 when a check fails).
    Doctor,
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man,
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
    /// Process the queue without serving the API: SQS with CONVERGE_QUEUE_URL, else the
    /// database-backed queue every CONVERGE_WORKER_POLL_INTERVAL seconds. Stops cleanly on
    /// SIGTERM or Ctrl-C.
    Worker,
    /// See Converge work in a minute: a throwaway repository with a few branches (one
    /// conflicting), the server on the embedded default, intents created and checks reported;
    /// prints what happened and the dashboard's URL.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Empty the intents projection and replay the event log into it.
    Rebuild,
}

#[derive(Debug, Subcommand)]
enum RiskCommand {
    /// Evaluate the risk of a change described in a file, with its classification and gates
    /// (offline).
    Eval(EvalArgs),
    /// An intent's latest risk, simulation and policy evidence, and the diagnostics they call
    /// for.
    Review(ops::IntentId),
    /// What the risk gate decided lately.
    Gate(ops::TenantArgs),
    /// The direct impacts of an intent's latest risk evaluation.
    Impact(ops::IntentId),
    /// What the risk gate would have blocked had it been enforced, newest first.
    Shadow(ops::TenantArgs),
    /// The findings of an intent's latest risk evaluation.
    Findings(ops::IntentId),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run the policy gates and the risk gate on a change described in a file.
    Eval(EvalArgs),
    /// The latest policy evaluations (the gates' verdicts), newest first.
    Recent(ops::TenantArgs),
}

#[derive(Debug, Subcommand)]
enum AnalyticsCommand {
    #[command(flatten)]
    Read(analytics::ReadCommand),
    /// Compute the original's nine analytics (health, change health, prediction, compliance,
    /// debt, predictions, metrics, export, calibration) for a store given as a file, offline,
    /// reproducing the original's quirks (see docs/architecture.md, "Analytics").
    Eval(analytics::EvalArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let result = match cli.command {
        Command::Risk(RiskCommand::Eval(args)) => eval(&args, out, assess::Focus::Risk),
        Command::Policy(PolicyCommand::Eval(args)) => eval(&args, out, assess::Focus::Policy),
        Command::Analytics(AnalyticsCommand::Eval(args)) => analytics::eval(&args, out),
        Command::Queue(ops::QueueCommand::Simulate(args)) => simulate::run(&args, out),
        Command::Migrate => state::run(state::migrate(), out).map_err(CliError::from),
        Command::Projections(ProjectionsCommand::Rebuild) => {
            let spinner = progress::spinner("rebuilding the intents projection");
            let done = state::run(state::rebuild_projections(), out);
            spinner.finish_and_clear();
            done.map_err(CliError::from)
        }
        Command::Backfill(args) => {
            let spinner = progress::spinner("copying tables");
            let done = state::run(state::backfill(args), out);
            spinner.finish_and_clear();
            done.map_err(CliError::from)
        }
        Command::Serve(args) => serve::run(&args).map_err(CliError::from),
        Command::Worker => worker::run().map_err(CliError::from),
        Command::Demo(args) => demo::run(&args, out),
        Command::Completions(args) => completions(args.shell),
        Command::Man => man_page(),
        operator => operate(&cli.api, out, operator),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs an operator command against the API.
fn operate(api: &ops::ApiArgs, out: Output, command: Command) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        if let Command::Doctor = command {
            // The doctor reports an API that cannot start (a database down under --local)
            // as its first failed check, beside the others, rather than stopping there.
            return doctor::run(ops::client(api).await, out, api.local).await;
        }
        let client = ops::client(api).await?;
        match command {
            Command::Intent(c) => ops::intent(&client, out, c).await,
            Command::Simulate(args) => ops::simulate(&client, out, args).await,
            Command::Validate(args) => ops::validate(&client, out, args).await,
            Command::Merge(c) => ops::merge(&client, out, c).await,
            Command::Queue(c) => ops::queue(&client, out, c).await,
            Command::Audit(c) => ops::audit(&client, out, c).await,
            Command::Export(c) => ops::export(&client, c).await,
            Command::Review(c) => ops::review(&client, out, c).await,
            Command::Risk(RiskCommand::Review(args)) => ops::risk_review(&client, out, args).await,
            Command::Risk(RiskCommand::Gate(args)) => ops::risk_gate(&client, out, args).await,
            Command::Risk(RiskCommand::Impact(args)) => ops::risk_impact(&client, out, args).await,
            Command::Risk(RiskCommand::Shadow(args)) => ops::risk_shadow(&client, out, args).await,
            Command::Risk(RiskCommand::Findings(args)) => {
                ops::risk_findings(&client, out, args).await
            }
            Command::Policy(PolicyCommand::Recent(args)) => {
                ops::policy_recent(&client, out, args).await
            }
            Command::Analytics(AnalyticsCommand::Read(c)) => analytics::read(&client, out, c).await,
            Command::Compliance(c) => analytics::compliance(&client, out, c).await,
            Command::Intake(c) => intake::run(&client, out, c).await,
            Command::Agent(c) => agents::run(&client, out, c).await,
            Command::Keys(c) => ops::keys(&client, out, c).await,
            Command::Flags(c) => ops::flags(&client, out, c).await,
            other => Err(CliError::Other(anyhow::anyhow!(
                "not an operator command: {other:?}"
            ))),
        }
    })
}

fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    use std::io::Write;
    // Into a buffer first: the generator panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "converge", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| CliError::Other(e.into()))
}

fn man_page() -> Result<(), CliError> {
    use std::io::Write;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| CliError::Other(e.into()))?;
    std::io::stdout()
        .write_all(&page)
        .map_err(|e| CliError::Other(e.into()))
}

fn eval(args: &EvalArgs, out: Output, focus: assess::Focus) -> Result<(), CliError> {
    let config = assess::load_policy(args.policy.as_deref())?;
    let input = assess::load_input(&args.input)?;
    let assessment = converge_core::assess(&input, &config);
    let value = serde_json::to_value(&assessment).map_err(anyhow::Error::from)?;
    out.emit(&value, |_| assess::summary(&assessment, focus))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every option says what it is for, in `--help` and the man page.
    #[test]
    fn every_command_and_option_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() {
                missing.push(path.clone());
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        missing.retain(|m| m != " converge help" && !m.starts_with(" converge help "));
        assert!(missing.is_empty(), "no help text: {missing:?}");
        Cli::command().debug_assert();
    }
}
