//! The operator commands: each is one call to the HTTPS API (`--api-url`, `--api-key`), or
//! with `--local` the same API run in this process on the configured database (for the
//! runbook's emergency operations while the API is down). What they print comes from the
//! API's answer: tables for people, the answer itself with `--json`. The exception is
//! `queue redrive`, which talks to SQS itself (`CONVERGE_QUEUE_URL`, `CONVERGE_DLQ_URL`) and
//! prints how many messages it moved.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{ApiClient, CliError, encode};
use crate::output::{Column, Output};

/// Where operator commands send their requests.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The API's base URL.
    #[arg(
        long,
        env = "CONVERGE_API_URL",
        default_value = "http://127.0.0.1:9876",
        global = true
    )]
    pub api_url: String,
    /// The API key (sent as x-api-key).
    #[arg(long, env = "CONVERGE_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Run the API in this process on the configured database (CONVERGE_DB_*) instead of
    /// calling --api-url: for emergencies when the API is down. No key needed.
    #[arg(long, global = true)]
    pub local: bool,
}

/// `converge intent …`.
#[derive(Debug, Subcommand)]
pub enum IntentCommand {
    /// Create an intent for a branch (or from a JSON file in the API's shape).
    Create(IntentCreate),
    /// List intents, newest first.
    List(IntentList),
    /// One intent, whole.
    Show(IntentId),
    /// Set an intent's status by hand (its retries are reset too).
    Status(IntentStatus),
    /// An intent's events, newest first.
    Events(IntentEvents),
    /// Report a check's result on a commit of the intent, as CI does (the worker then judges
    /// the intent again).
    Check(IntentCheck),
    /// Judge a draft before creating it: what waiting intent it repeats, how well it is
    /// described (exit 3 when it fails in --enforce).
    Evaluate(IntentEvaluate),
    /// A queue command, as a pull request comment gives it: queue, dequeue, priority (with
    /// --priority), retry or status.
    Command(IntentQueueCommand),
}

/// The commands of `intent command`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum QueueCommandName {
    /// Put the intent (back) in the queue: a rejected one comes back as READY.
    Queue,
    /// Take it out of the queue (REJECTED).
    Dequeue,
    /// Set its priority (--priority, 0 to 9, lower first).
    Priority,
    /// Start its retries again (and bring a rejected one back).
    Retry,
    /// Where it stands.
    Status,
}

/// Options of `intent command`.
#[derive(Debug, Args)]
pub struct IntentQueueCommand {
    /// The command.
    #[arg(value_enum)]
    command: QueueCommandName,
    /// The intent.
    #[arg(long)]
    intent_id: String,
    /// The priority to set (priority only): 0 to 9, lower first.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9), required_if_eq("command", "priority"))]
    priority: Option<u8>,
}

/// Options of `intent evaluate`.
#[derive(Debug, Args)]
pub struct IntentEvaluate {
    /// The branch to merge.
    #[arg(long)]
    source: String,
    /// The branch to merge into (default: the policy's default target).
    #[arg(long)]
    target: Option<String>,
    /// What the change is for.
    #[arg(long)]
    description: Option<String>,
    /// The parts it touches, comma-separated.
    #[arg(long, value_delimiter = ',')]
    scope: Vec<String>,
    /// Fail a score under 0.5 instead of only advising.
    #[arg(long)]
    enforce: bool,
}

/// Options of `intent check`.
#[derive(Debug, Args)]
pub struct IntentCheck {
    /// The intent.
    #[arg(long)]
    intent_id: String,
    /// The check's name (as the intent's risk profile names it, e.g. lint).
    #[arg(long)]
    name: String,
    /// passed, failed or pending.
    #[arg(long)]
    state: String,
    /// The commit it ran on (e.g. `$(git rev-parse my-branch)`).
    #[arg(long)]
    head_sha: String,
    /// Free text, e.g. a link to the run.
    #[arg(long, default_value = "")]
    details: String,
}

/// Options of `intent create`.
#[derive(Debug, Args)]
pub struct IntentCreate {
    /// The branch to merge.
    #[arg(long, required_unless_present = "file")]
    source: Option<String>,
    /// The branch to merge into.
    #[arg(long, default_value = "main")]
    target: String,
    /// The intent's id (a new one when left out).
    #[arg(long)]
    intent_id: Option<String>,
    /// low, medium, high or critical.
    #[arg(long)]
    risk_level: Option<String>,
    /// 0 (first) to 9.
    #[arg(long)]
    priority: Option<i64>,
    /// Tenant (admins only; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
    /// human, agent or integration.
    #[arg(long)]
    origin_type: Option<String>,
    /// Another intent that must merge first (repeatable).
    #[arg(long = "depends-on", value_name = "INTENT_ID")]
    depends_on: Vec<String>,
    /// A JSON file with the whole request body (`POST /v1/intents`); flags override it.
    #[arg(long, value_name = "FILE")]
    file: Option<std::path::PathBuf>,
}

/// Options of `intent list`.
#[derive(Debug, Args)]
pub struct IntentList {
    /// Only this status (READY, VALIDATED, QUEUED, MERGED, REJECTED).
    #[arg(long)]
    status: Option<String>,
    /// Only this target branch.
    #[arg(long)]
    target: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    tenant_id: Option<String>,
    /// At most this many (1–500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

/// An intent, by id.
#[derive(Debug, Args)]
pub struct IntentId {
    /// The intent.
    #[arg(long)]
    pub(crate) intent_id: String,
}

/// Options of `intent status`.
#[derive(Debug, Args)]
pub struct IntentStatus {
    /// The intent.
    #[arg(long)]
    intent_id: String,
    /// The new status.
    #[arg(long)]
    status: String,
}

/// Options of `intent events`.
#[derive(Debug, Args)]
pub struct IntentEvents {
    /// The intent.
    #[arg(long)]
    intent_id: String,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

/// Options of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The intent.
    #[arg(long)]
    intent_id: String,
    /// Treat required checks as passed (admins only).
    #[arg(long)]
    skip_checks: bool,
}

/// `converge merge …`.
#[derive(Debug, Subcommand)]
pub enum MergeCommand {
    /// Record a merge done outside Converge (QUEUED or VALIDATED intents).
    Confirm(MergeConfirm),
}

/// Options of `merge confirm`.
#[derive(Debug, Args)]
pub struct MergeConfirm {
    /// The intent.
    #[arg(long)]
    intent_id: String,
    /// The merge commit, when known.
    #[arg(long)]
    merged_commit: Option<String>,
}

/// `converge queue …`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Run one queue round now over every key with work (optionally one target).
    Run(QueueRun),
    /// Reset an intent's retries (optionally its status) and, with --clear-lock, its queue's
    /// lease; `--intent-id any --clear-lock` clears every held lease.
    Reset(QueueReset),
    /// Intents in the queue with their retries and priority.
    Inspect(QueueInspect),
    /// Counts by status and the intents still pending.
    State(TenantArgs),
    /// Move every message of the dead-letter queue (CONVERGE_DLQ_URL) back to the queue
    /// (CONVERGE_QUEUE_URL), once the cause of their failures is fixed. Talks to SQS, not to
    /// the API.
    Redrive,
    /// Freeze merges for a span or every week (intents are still validated and queued; they
    /// merge when the freeze ends).
    Freeze(QueueFreeze),
    /// Freeze merges until `queue resume` (a freeze without a window).
    Pause(QueuePause),
    /// Lift the freezes of exactly this scope (what `queue pause` set).
    Resume(QueueScope),
    /// Lift one freeze by its id.
    Unfreeze(FreezeId),
    /// The freezes that hold or will hold merges.
    Freezes(QueueFreezes),
    /// Simulate a day of the queue in each mode (head, tested serial, batched, speculative)
    /// with a model of CI, in a throwaway repository: merges per hour, time from queued to
    /// merged, CI runs spent, and whether the target ever broke. Offline.
    Simulate(crate::simulate::SimulateArgs),
}

/// Which queues a freeze covers.
#[derive(Debug, Args)]
pub struct QueueScope {
    /// Only this repository (`owner/name`); left out: every repository.
    #[arg(long)]
    repo: Option<String>,
    /// Only this target branch; left out: every target.
    #[arg(long)]
    target: Option<String>,
    /// The tenant (admins of no tenant; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

/// Options of `queue pause`.
#[derive(Debug, Args)]
pub struct QueuePause {
    /// Why (shown on the held pull requests and the dashboard).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    scope: QueueScope,
}

/// Options of `queue freeze`.
#[derive(Debug, Args)]
pub struct QueueFreeze {
    /// Why (shown on the held pull requests and the dashboard).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    scope: QueueScope,
    /// From this time (RFC 3339; default now).
    #[arg(long)]
    start: Option<String>,
    /// For this many minutes (default until lifted).
    #[arg(long)]
    minutes: Option<u32>,
    /// Every week instead, UTC: `"Fri 16:00-Mon 08:00"`.
    #[arg(long, conflicts_with_all = ["start", "minutes"])]
    weekly: Option<String>,
}

/// Options of `queue unfreeze`.
#[derive(Debug, Args)]
pub struct FreezeId {
    /// The freeze (`frz-…`, from `queue freezes`).
    #[arg(long)]
    id: String,
}

/// Options of `queue freezes`.
#[derive(Debug, Args)]
pub struct QueueFreezes {
    /// Also lifted and ended freezes.
    #[arg(long)]
    all: bool,
    /// Only this tenant's (admins; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

const FREEZE_COLUMNS: &[Column<'static>] = &[
    ("id", "/id"),
    ("tenant", "/tenant_id"),
    ("repo", "/repo"),
    ("target", "/target"),
    ("holding", "/holding"),
    ("until", "/until"),
    ("window", "/window/kind"),
    ("reason", "/reason"),
];

/// Options of `queue run`.
#[derive(Debug, Args)]
pub struct QueueRun {
    /// Only this target branch.
    #[arg(long)]
    target: Option<String>,
    /// At most this many intents worked on per queue key.
    #[arg(long)]
    limit: Option<u32>,
    /// Merge what passes (otherwise the worker's CONVERGE_WORKER_AUTO_CONFIRM).
    #[arg(long)]
    auto_confirm: bool,
    /// Failed attempts before rejection (otherwise the worker's setting).
    #[arg(long)]
    max_retries: Option<u32>,
}

/// Options of `queue reset`.
#[derive(Debug, Args)]
pub struct QueueReset {
    /// The intent, or `any` (with --clear-lock) for every held lease.
    #[arg(long)]
    intent_id: String,
    /// A new status for the intent.
    #[arg(long)]
    set_status: Option<String>,
    /// Clear the lease of the intent's queue.
    #[arg(long)]
    clear_lock: bool,
}

/// Options of `queue inspect`.
#[derive(Debug, Args)]
pub struct QueueInspect {
    /// Only this status.
    #[arg(long)]
    status: Option<String>,
    /// Only intents with at least this many retries.
    #[arg(long)]
    min_retries: Option<u32>,
    /// Only READY, VALIDATED and QUEUED intents.
    #[arg(long)]
    only_actionable: bool,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// A tenant filter.
#[derive(Debug, Args)]
pub struct TenantArgs {
    /// Only this tenant (admins; a tenant's key implies its own).
    #[arg(long)]
    pub(crate) tenant_id: Option<String>,
}

/// `converge audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The event log, newest first.
    Events(AuditEvents),
    /// Verify a tenant's audit chain (every event hashed into the one before it) from its
    /// start or its signed pruning anchor to its head; exit 3 at the first broken link.
    Verify(AuditVerify),
}

/// Options of `audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerify {
    /// The tenant whose chain to verify (a tenant-bound key verifies its own; left out by a
    /// key of no tenant: the chain of events without a tenant).
    #[arg(long)]
    tenant_id: Option<String>,
    /// Events verified per request (the command goes on until the chain's end).
    #[arg(long, default_value_t = 100_000)]
    batch: u64,
}

/// `converge review …`.
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Review tasks, newest first.
    List(ReviewList),
    /// Tasks by status and reviewer, and how many are past their SLA.
    Summary(TenantArgs),
    /// Ask for a review of an intent: the queue holds it until the review is completed.
    Request(ReviewRequest),
    /// Assign (or reassign) a review task.
    Assign(ReviewAssign),
    /// Complete a review task (approved frees the intent; rejected holds it).
    Complete(ReviewComplete),
    /// Cancel a review task.
    Cancel(ReviewReason),
    /// Escalate a review task (the sweep does it at the SLA deadline).
    Escalate(ReviewReason),
}

/// Options of `review list`.
#[derive(Debug, Args)]
pub struct ReviewList {
    /// Only this intent's.
    #[arg(long)]
    intent_id: Option<String>,
    /// Only in this status (pending, assigned, in_review, escalated, completed, cancelled).
    #[arg(long)]
    status: Option<String>,
    /// Only this reviewer's.
    #[arg(long)]
    reviewer: Option<String>,
    /// Only this tenant's (admins; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

/// Options of `review request`.
#[derive(Debug, Args)]
pub struct ReviewRequest {
    /// The intent.
    #[arg(long)]
    intent_id: String,
    /// Assign it at once to this reviewer.
    #[arg(long)]
    reviewer: Option<String>,
    /// policy, conflict, manual or coherence (default policy).
    #[arg(long)]
    trigger: Option<String>,
    /// Its priority (default the intent's).
    #[arg(long)]
    priority: Option<i64>,
}

/// Options of `review assign`.
#[derive(Debug, Args)]
pub struct ReviewAssign {
    /// The task (`rev-…`).
    #[arg(long)]
    id: String,
    /// Who reviews it.
    #[arg(long)]
    reviewer: String,
}

/// Options of `review complete`.
#[derive(Debug, Args)]
pub struct ReviewComplete {
    /// The task (`rev-…`).
    #[arg(long)]
    id: String,
    /// approved, rejected or deferred.
    #[arg(long, default_value = "approved", value_parser = ["approved", "rejected", "deferred"])]
    resolution: String,
    /// The reviewer's notes.
    #[arg(long, default_value = "")]
    notes: String,
}

/// Options of `review cancel` and `review escalate`.
#[derive(Debug, Args)]
pub struct ReviewReason {
    /// The task (`rev-…`).
    #[arg(long)]
    id: String,
    /// Why.
    #[arg(long)]
    reason: Option<String>,
}

const REVIEW_COLUMNS: &[Column<'static>] = &[
    ("id", "/id"),
    ("intent", "/intent_id"),
    ("status", "/status"),
    ("reviewer", "/reviewer"),
    ("resolution", "/resolution"),
    ("due", "/sla_deadline"),
];

/// Runs a `review` command.
pub async fn review(api: &ApiClient, out: Output, command: ReviewCommand) -> Result<(), CliError> {
    let path = |id: &str, action: &str| format!("/reviews/{}/{action}", encode(id));
    let one = |answer: Value| -> Result<(), CliError> {
        out.emit(&answer, |o| {
            o.table(std::slice::from_ref(&answer), REVIEW_COLUMNS)
        })?;
        Ok(())
    };
    match command {
        ReviewCommand::List(args) => {
            let page = api
                .get(
                    "/reviews",
                    &[
                        ("intent_id", args.intent_id),
                        ("status", args.status),
                        ("reviewer", args.reviewer),
                        ("tenant_id", args.tenant_id),
                    ],
                )
                .await?;
            out.emit(&page, |o| o.table(rows(&page, "reviews"), REVIEW_COLUMNS))?;
            Ok(())
        }
        ReviewCommand::Summary(args) => {
            let answer = api
                .get("/reviews/summary", &[("tenant_id", args.tenant_id)])
                .await?;
            out.emit(&answer, |o| o.pairs(&answer))?;
            Ok(())
        }
        ReviewCommand::Request(args) => one(api
            .post(
                "/reviews",
                &strip_nulls(
                    json!({"intent_id": args.intent_id, "reviewer": args.reviewer,
                                    "trigger": args.trigger, "priority": args.priority}),
                ),
            )
            .await?),
        ReviewCommand::Assign(args) => one(api
            .post(
                &path(&args.id, "assign"),
                &json!({"reviewer": args.reviewer}),
            )
            .await?),
        ReviewCommand::Complete(args) => one(api
            .post(
                &path(&args.id, "complete"),
                &json!({"resolution": args.resolution, "notes": args.notes}),
            )
            .await?),
        ReviewCommand::Cancel(args) => one(api
            .post(
                &path(&args.id, "cancel"),
                &strip_nulls(json!({"reason": args.reason})),
            )
            .await?),
        ReviewCommand::Escalate(args) => one(api
            .post(
                &path(&args.id, "escalate"),
                &strip_nulls(json!({"reason": args.reason})),
            )
            .await?),
    }
}

/// `converge export …`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// One decision record per intent (the original's shape), as JSON lines or CSV.
    Decisions(ExportDecisions),
}

/// Options of `export decisions`.
#[derive(Debug, Args)]
pub struct ExportDecisions {
    /// jsonl or csv.
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
    fmt: String,
    /// Only this tenant's intents (a tenant-bound key always exports its own).
    #[arg(long)]
    tenant_id: Option<String>,
    /// Write to this file instead of standard output (replaced only once the export is whole).
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

/// Options of `audit events`.
#[derive(Debug, Args)]
pub struct AuditEvents {
    /// Only this event type (e.g. intent.merged).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only this intent's.
    #[arg(long)]
    intent_id: Option<String>,
    /// Only this tenant's.
    #[arg(long)]
    tenant_id: Option<String>,
    /// Only from this time on (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// `converge keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Replace the calling key with a new one (printed once); the old one keeps working for
    /// the grace period.
    Rotate(KeysRotate),
}

/// Options of `keys rotate`.
#[derive(Debug, Args)]
pub struct KeysRotate {
    /// Seconds the old key stays valid.
    #[arg(long)]
    grace_period_seconds: Option<i64>,
}

/// `converge flags …`.
#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Every feature flag, its value and where the value comes from.
    List,
    /// Turn a flag on or off for every instance (admins).
    Set(FlagSet),
}

/// Options of `flags set`.
#[derive(Debug, Args)]
pub struct FlagSet {
    /// The flag.
    name: String,
    /// true or false.
    #[arg(long, action = clap::ArgAction::Set)]
    enabled: bool,
}

/// The client of this invocation: over HTTPS, or in process with `--local`.
pub async fn client(api: &ApiArgs) -> Result<ApiClient, CliError> {
    if api.local {
        let state = converge_http::boot::local_state_from_env()
            .await
            .map_err(|e| CliError::Other(anyhow::anyhow!("--local: {e}")))?;
        return Ok(ApiClient::in_process(converge_http::router(state)));
    }
    ApiClient::new(&api.api_url, api.api_key.clone())
}

const INTENT_COLUMNS: &[Column<'static>] = &[
    ("id", "/id"),
    ("status", "/status"),
    ("source", "/source"),
    ("target", "/target"),
    ("priority", "/priority"),
    ("retries", "/retries"),
    ("risk", "/risk_level"),
];

const INTENT_FIELDS: &[Column<'static>] = &[
    ("id", "/id"),
    ("status", "/status"),
    ("source", "/source"),
    ("target", "/target"),
    ("priority", "/priority"),
    ("retries", "/retries"),
    ("risk level", "/risk_level"),
    ("tenant", "/tenant_id"),
    ("dependencies", "/dependencies"),
    ("created", "/created_at"),
];

/// What `POST /queue/reset` answers (`intent status` and `queue reset`).
const RESET_FIELDS: &[Column<'static>] = &[
    ("intent", "/intent_id"),
    ("status", "/status"),
    ("retries", "/retries"),
    ("cleared leases", "/cleared_leases"),
];

const EVENT_COLUMNS: &[Column<'static>] = &[
    ("seq", "/seq"),
    ("time", "/timestamp"),
    ("type", "/event_type"),
    ("intent", "/intent_id"),
];

/// Runs an `intent` command.
pub async fn intent(api: &ApiClient, out: Output, command: IntentCommand) -> Result<(), CliError> {
    match command {
        IntentCommand::Create(args) => {
            let mut body = match &args.file {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        CliError::Other(anyhow::anyhow!("cannot read {}: {e}", path.display()))
                    })?;
                    serde_json::from_str::<Value>(&text).map_err(|e| {
                        CliError::Other(anyhow::anyhow!("{} is not JSON: {e}", path.display()))
                    })?
                }
                None => json!({}),
            };
            let Value::Object(map) = &mut body else {
                return Err(CliError::Other(anyhow::anyhow!(
                    "the file must hold a JSON object"
                )));
            };
            let mut set = |key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    map.insert(key.to_owned(), value);
                }
            };
            set("source", args.source.map(Value::from));
            if args.file.is_none() || args.target != "main" {
                set("target", Some(Value::from(args.target)));
            }
            set("id", args.intent_id.map(Value::from));
            set("risk_level", args.risk_level.map(Value::from));
            set("priority", args.priority.map(Value::from));
            set("tenant_id", args.tenant_id.map(Value::from));
            set("origin_type", args.origin_type.map(Value::from));
            if !args.depends_on.is_empty() {
                set("dependencies", Some(json!(args.depends_on)));
            }
            let created = api.post("/intents", &body).await?;
            out.emit(&created, |o| {
                o.fields(&created, &[("intent", "/intent_id"), ("status", "/status")])
            })?;
        }
        IntentCommand::List(args) => {
            let page = api
                .get(
                    "/intents",
                    &[
                        ("status", args.status),
                        ("target", args.target),
                        ("tenant_id", args.tenant_id),
                        ("limit", Some(args.limit.to_string())),
                    ],
                )
                .await?;
            out.emit(&page, |o| o.table(rows(&page, "intents"), INTENT_COLUMNS))?;
        }
        IntentCommand::Show(args) => {
            let intent = api.get(&intent_path(&args.intent_id, ""), &[]).await?;
            out.emit(&intent, |o| o.fields(&intent, INTENT_FIELDS))?;
        }
        IntentCommand::Status(args) => {
            let body = json!({"intent_id": args.intent_id, "set_status": args.status});
            let answer = api.post("/queue/reset", &body).await?;
            out.emit(&answer, |o| o.fields(&answer, RESET_FIELDS))?;
        }
        IntentCommand::Events(args) => {
            let page = api
                .get(
                    &intent_path(&args.intent_id, "/events"),
                    &[("limit", Some(args.limit.to_string()))],
                )
                .await?;
            out.emit(&page, |o| o.table(rows(&page, "events"), EVENT_COLUMNS))?;
        }
        IntentCommand::Evaluate(args) => {
            let mut body = json!({
                "source": args.source,
                "mode": if args.enforce { "enforce" } else { "shadow" },
                "technical": {"scope_hint": args.scope},
            });
            if let Some(target) = args.target {
                body["target"] = Value::from(target);
            }
            if let Some(description) = args.description {
                body["semantic"] = json!({"description": description});
            }
            let answer = api.post("/intents/evaluate", &body).await?;
            out.emit(&answer, |_| {
                let mut text = format!(
                    "score: {} ({})",
                    answer["score"],
                    if answer["passed"] == true {
                        "passes"
                    } else {
                        "fails"
                    }
                );
                for similar in answer["similar_intents"].as_array().into_iter().flatten() {
                    text.push_str(&format!(
                        "\nlike {} (similarity {})",
                        similar["intent_id"].as_str().unwrap_or_default(),
                        similar["similarity"]
                    ));
                }
                for advice in answer["recommendations"].as_array().into_iter().flatten() {
                    text.push_str(&format!("\n- {}", advice.as_str().unwrap_or_default()));
                }
                text
            })?;
            if answer["passed"] != true {
                return Err(CliError::CheckFailed(
                    "the draft scores under 0.5".to_owned(),
                ));
            }
        }
        IntentCommand::Command(args) => {
            let name = match args.command {
                QueueCommandName::Queue => "queue",
                QueueCommandName::Dequeue => "dequeue",
                QueueCommandName::Priority => "priority",
                QueueCommandName::Retry => "retry",
                QueueCommandName::Status => "status",
            };
            let mut body = json!({"command": name});
            if let (QueueCommandName::Priority, Some(priority)) = (args.command, args.priority) {
                body["priority"] = json!(priority);
            }
            let answer = api
                .post(&intent_path(&args.intent_id, "/command"), &body)
                .await?;
            out.emit(&answer, |o| {
                o.fields(
                    &answer,
                    &[
                        ("intent", "/intent_id"),
                        ("command", "/command"),
                        ("result", "/result"),
                        ("answer", "/answer"),
                        ("status", "/status"),
                        ("retries", "/retries"),
                        ("priority", "/priority"),
                    ],
                )
            })?;
        }
        IntentCommand::Check(args) => {
            let body = json!({"name": args.name, "state": args.state,
                              "head_sha": args.head_sha, "details": args.details});
            let answer = api
                .post(&intent_path(&args.intent_id, "/checks"), &body)
                .await?;
            out.emit(&answer, |o| o.pairs(&answer))?;
        }
    }
    Ok(())
}

/// `simulate`: the merge of an intent as it would be now.
pub async fn simulate(api: &ApiClient, out: Output, args: IntentId) -> Result<(), CliError> {
    let answer = api
        .post(&intent_path(&args.intent_id, "/simulate"), &json!({}))
        .await?;
    out.emit(&answer, |o| {
        o.fields(
            &answer,
            &[
                ("intent", "/intent_id"),
                ("mergeable", "/mergeable"),
                ("conflicts", "/conflicts"),
                ("files changed", "/files_changed"),
                ("head", "/head_sha"),
                ("target", "/target_sha"),
            ],
        )
    })?;
    if answer["mergeable"] == Value::Bool(false) {
        return Err(CliError::CheckFailed(format!(
            "{} does not merge cleanly",
            args.intent_id
        )));
    }
    Ok(())
}

/// `validate`: the pipeline now; a blocked decision exits 3.
pub async fn validate(api: &ApiClient, out: Output, args: ValidateArgs) -> Result<(), CliError> {
    let body = if args.skip_checks {
        json!({"skip_checks": true})
    } else {
        json!({})
    };
    let decision = api
        .post(&intent_path(&args.intent_id, "/validate"), &body)
        .await?;
    out.emit(&decision, |o| {
        o.fields(
            &decision,
            &[
                ("intent", "/intent_id"),
                ("decision", "/decision"),
                ("kind", "/kind"),
                ("reason", "/reason"),
                ("risk level", "/risk_level"),
                ("mergeable", "/simulation/mergeable"),
                ("files changed", "/simulation/files_changed"),
                ("head", "/simulation/head_sha"),
                ("target", "/simulation/target_sha"),
            ],
        )
    })?;
    if decision["decision"] == "blocked" {
        return Err(CliError::CheckFailed(format!(
            "{} blocked: {}",
            args.intent_id,
            decision["reason"].as_str().unwrap_or("no reason")
        )));
    }
    Ok(())
}

/// `merge confirm`.
pub async fn merge(api: &ApiClient, out: Output, command: MergeCommand) -> Result<(), CliError> {
    let MergeCommand::Confirm(args) = command;
    let body = json!({"intent_id": args.intent_id, "merged_commit": args.merged_commit});
    let answer = api.post("/merge/confirm", &body).await?;
    out.emit(&answer, |o| {
        o.fields(
            &answer,
            &[
                ("intent", "/intent_id"),
                ("status", "/status"),
                ("merged commit", "/merged_commit"),
            ],
        )
    })?;
    Ok(())
}

/// Runs a `queue` command.
pub async fn queue(api: &ApiClient, out: Output, command: QueueCommand) -> Result<(), CliError> {
    match command {
        QueueCommand::Run(args) => {
            let mut body = json!({"target": args.target, "limit": args.limit, "max_retries": args.max_retries});
            if args.auto_confirm {
                body["auto_confirm"] = json!(true);
            }
            let spinner = crate::progress::spinner("running the queue");
            let answer = api.post("/queue/run", &body).await;
            spinner.finish_and_clear();
            let answer = answer?;
            // The API's typed answer: a change to its shape fails here, not in a table.
            let run =
                <converge_http::api::QueueRunAnswer as serde::Deserialize>::deserialize(&answer)
                    .map_err(|e| {
                        CliError::Network(format!("/queue/run did not answer like the API: {e}"))
                    })?;
            let lines: Vec<Value> = run
                .keys
                .iter()
                .flat_map(|key| {
                    // `[tenant] owner/repo@target`, or just the target for local intents.
                    let tenant = Some(&key.tenant)
                        .filter(|t| !t.is_empty())
                        .map(|t| format!("[{t}] "))
                        .unwrap_or_default();
                    let repo = Some(&key.repo)
                        .filter(|r| !r.is_empty())
                        .map(|r| format!("{r}@"))
                        .unwrap_or_default();
                    let queue = format!("{tenant}{repo}{}", key.target);
                    if key.busy {
                        return vec![json!({"queue": queue, "outcome": "busy"})];
                    }
                    key.intents
                        .iter()
                        .map(|i| json!({"queue": queue, "intent_id": i.intent_id, "outcome": i.outcome, "detail": i.detail}))
                        .collect()
                })
                .collect();
            out.emit(&answer, |o| {
                o.table(
                    &lines,
                    &[
                        ("queue", "/queue"),
                        ("intent", "/intent_id"),
                        ("outcome", "/outcome"),
                        ("detail", "/detail"),
                    ],
                )
            })?;
        }
        QueueCommand::Reset(args) => {
            let body = json!({"intent_id": args.intent_id, "set_status": args.set_status,
                              "clear_lock": args.clear_lock});
            let answer = api.post("/queue/reset", &body).await?;
            out.emit(&answer, |o| o.fields(&answer, RESET_FIELDS))?;
        }
        QueueCommand::Inspect(args) => {
            let page = api
                .get(
                    "/queue/inspect",
                    &[
                        ("status", args.status),
                        ("min_retries", args.min_retries.map(|n| n.to_string())),
                        (
                            "only_actionable",
                            args.only_actionable.then(|| "true".to_owned()),
                        ),
                        ("limit", Some(args.limit.to_string())),
                    ],
                )
                .await?;
            out.emit(&page, |o| {
                let mut text = o.table(
                    rows(&page, "intents"),
                    &[
                        ("intent", "/intent_id"),
                        ("status", "/status"),
                        ("retries", "/retries"),
                        ("priority", "/priority"),
                        ("source", "/source"),
                        ("target", "/target"),
                        ("risk", "/risk_level"),
                    ],
                );
                let paused = rows(&page, "paused_keys");
                if !paused.is_empty() {
                    text.push_str(&format!(
                        "\n{} (their environment failed; no retry spent)\n",
                        o.bold("paused queues")
                    ));
                    text.push_str(&o.table(
                        paused,
                        &[
                            ("repo", "/repo"),
                            ("target", "/target"),
                            ("reason", "/reason"),
                            ("since", "/since"),
                            ("next try", "/until"),
                            ("failures", "/failures"),
                        ],
                    ));
                }
                text
            })?;
        }
        QueueCommand::Freeze(args) => {
            let window = match &args.weekly {
                Some(weekly) => {
                    let (from, to) = weekly.split_once('-').ok_or_else(|| {
                        CliError::Other(anyhow::anyhow!(
                            "--weekly takes \"Ddd HH:MM-Ddd HH:MM\", e.g. \"Fri 16:00-Mon 08:00\""
                        ))
                    })?;
                    json!({"kind": "weekly", "from": from.trim(), "to": to.trim()})
                }
                None => strip_nulls(
                    json!({"kind": "span", "start": args.start, "minutes": args.minutes}),
                ),
            };
            let body = json!({"reason": args.reason, "repo": args.scope.repo,
                              "target": args.scope.target, "tenant_id": args.scope.tenant_id,
                              "window": window});
            let answer = api.post("/queue/freezes", &strip_nulls(body)).await?;
            out.emit(&answer, |o| {
                o.table(std::slice::from_ref(&answer), FREEZE_COLUMNS)
            })?;
        }
        QueueCommand::Pause(args) => {
            let body = json!({"reason": args.reason, "repo": args.scope.repo,
                              "target": args.scope.target, "tenant_id": args.scope.tenant_id});
            let answer = api.post("/queue/freezes", &strip_nulls(body)).await?;
            out.emit(&answer, |o| {
                o.table(std::slice::from_ref(&answer), FREEZE_COLUMNS)
            })?;
        }
        QueueCommand::Resume(scope) => {
            let body =
                json!({"repo": scope.repo, "target": scope.target, "tenant_id": scope.tenant_id});
            let answer = api.post("/queue/resume", &strip_nulls(body)).await?;
            out.emit(&answer, |o| {
                if rows(&answer, "freezes").is_empty() {
                    "no freeze of exactly this scope was live".to_owned()
                } else {
                    o.table(rows(&answer, "freezes"), FREEZE_COLUMNS)
                }
            })?;
        }
        QueueCommand::Unfreeze(args) => {
            let answer = api
                .post(
                    &format!("/queue/freezes/{}/lift", encode(&args.id)),
                    &json!({}),
                )
                .await?;
            out.emit(&answer, |o| {
                o.table(std::slice::from_ref(&answer), FREEZE_COLUMNS)
            })?;
        }
        QueueCommand::Freezes(args) => {
            let page = api
                .get(
                    "/queue/freezes",
                    &[
                        ("include_ended", args.all.then(|| "true".to_owned())),
                        ("tenant_id", args.tenant_id),
                    ],
                )
                .await?;
            out.emit(&page, |o| o.table(rows(&page, "freezes"), FREEZE_COLUMNS))?;
        }
        // Offline: `main` runs it before any client is made.
        QueueCommand::Simulate(_) => {
            return Err(CliError::Other(anyhow::anyhow!(
                "queue simulate runs offline, without the API"
            )));
        }
        QueueCommand::Redrive => {
            let (queue, dlq) = converge_runtime::sqs::SqsQueue::from_env()
                .await
                .ok_or_else(|| CliError::Other(anyhow::anyhow!("CONVERGE_QUEUE_URL is not set")))?;
            let dlq =
                dlq.ok_or_else(|| CliError::Other(anyhow::anyhow!("CONVERGE_DLQ_URL is not set")))?;
            let moved = dlq
                .move_all_to(&queue)
                .await
                .map_err(|e| CliError::Network(e.to_string()))?;
            let answer = json!({"moved": moved, "from": dlq.url(), "to": queue.url()});
            out.emit(&answer, |o| o.pairs(&answer))?;
        }
        QueueCommand::State(args) => {
            let state = api
                .get("/queue/state", &[("tenant_id", args.tenant_id)])
                .await?;
            out.emit(&state, |o| {
                let mut text = o.bold("pending");
                text.push('\n');
                text.push_str(&o.table(
                    rows(&state, "pending"),
                    &[
                        ("intent", "/intent_id"),
                        ("status", "/status"),
                        ("priority", "/priority"),
                        ("retries", "/retries"),
                    ],
                ));
                text
            })?;
        }
    }
    Ok(())
}

/// Runs an `audit` command.
pub async fn audit(api: &ApiClient, out: Output, command: AuditCommand) -> Result<(), CliError> {
    let args = match command {
        AuditCommand::Events(args) => args,
        AuditCommand::Verify(args) => return audit_verify(api, out, args).await,
    };
    let page = api
        .get(
            "/events",
            &[
                ("type", args.event_type),
                ("intent_id", args.intent_id),
                ("tenant_id", args.tenant_id),
                ("since", args.since),
                ("limit", Some(args.limit.to_string())),
            ],
        )
        .await?;
    out.emit(&page, |o| o.table(rows(&page, "events"), EVENT_COLUMNS))?;
    Ok(())
}

/// `audit verify`: the whole chain, a batch per request; exit 3 when it is broken.
async fn audit_verify(api: &ApiClient, out: Output, args: AuditVerify) -> Result<(), CliError> {
    let mut checked = 0u64;
    let mut after: Option<i64> = None;
    let answer = loop {
        let answer = api
            .get(
                "/audit/verify",
                &[
                    ("tenant_id", args.tenant_id.clone()),
                    ("after", after.map(|a| a.to_string())),
                    ("limit", Some(args.batch.max(1).to_string())),
                ],
            )
            .await?;
        checked += answer["checked"].as_u64().unwrap_or(0);
        match answer["next_after"].as_i64() {
            Some(next) if answer["status"] != "broken" => after = Some(next),
            _ => break answer,
        }
    };
    let mut summary = answer.clone();
    summary["checked"] = Value::from(checked);
    out.emit(&summary, |o| {
        o.fields(
            &summary,
            &[
                ("tenant", "/tenant_id"),
                ("status", "/status"),
                ("events checked", "/checked"),
                ("head", "/head/next_index"),
                ("pruned", "/anchor/pruned_events"),
                ("anchor signature", "/anchor/signature"),
                ("broken at", "/first_broken/chain_index"),
                ("event", "/first_broken/event_id"),
                ("reason", "/first_broken/reason"),
                ("unchained event", "/unchained_event"),
            ],
        )
    })?;
    match summary["status"].as_str() {
        Some("broken") => Err(CliError::CheckFailed(format!(
            "the audit chain of tenant '{}' is broken",
            summary["tenant_id"].as_str().unwrap_or_default()
        ))),
        Some("unverifiable") => Err(CliError::CheckFailed(
            "the chain was pruned and its anchor's signature cannot be checked without \
             CONVERGE_AUDIT_SIGNING_KEY on the server"
                .to_owned(),
        )),
        _ => Ok(()),
    }
}

/// `export decisions`: streamed from the API to a file (written beside it, then renamed, so
/// a cut download never replaces a good file) or to standard output.
pub async fn export(api: &ApiClient, command: ExportCommand) -> Result<(), CliError> {
    let ExportCommand::Decisions(args) = command;
    let query = [
        ("fmt", Some(args.fmt.clone())),
        ("tenant_id", args.tenant_id.clone()),
    ];
    match &args.output {
        None => {
            let mut stdout = std::io::stdout();
            api.download("/export/decisions", &query, &mut stdout)
                .await?;
        }
        Some(path) => {
            let partial = path.with_extension("partial");
            let file = std::fs::File::create(&partial).map_err(|e| {
                CliError::Other(anyhow::anyhow!("cannot write {}: {e}", partial.display()))
            })?;
            let mut writer = std::io::BufWriter::new(file);
            let result = api.download("/export/decisions", &query, &mut writer).await;
            drop(writer);
            match result {
                Ok(bytes) => {
                    std::fs::rename(&partial, path).map_err(|e| {
                        CliError::Other(anyhow::anyhow!("cannot write {}: {e}", path.display()))
                    })?;
                    eprintln!("converge: wrote {bytes} bytes to {}", path.display());
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// `risk review`: an intent's risk evidence and diagnostics.
pub async fn risk_review(api: &ApiClient, out: Output, args: IntentId) -> Result<(), CliError> {
    let review = api
        .get("/risk/review", &[("intent_id", Some(args.intent_id))])
        .await?;
    out.emit(&review, |o| {
        let mut text = o.fields(
            &review,
            &[
                ("intent", "/intent_id"),
                ("risk score", "/risk/risk_score"),
                ("damage score", "/risk/damage_score"),
                ("risk level", "/risk/risk_level"),
                ("mergeable", "/simulation/mergeable"),
            ],
        );
        text.push_str("\n\n");
        text.push_str(&o.bold("diagnostics"));
        text.push('\n');
        text.push_str(&o.table(
            rows(&review, "diagnostics"),
            &[
                ("severity", "/severity"),
                ("code", "/code"),
                ("message", "/message"),
            ],
        ));
        text
    })?;
    Ok(())
}

/// `risk gate`: what the risk gate decided lately; exit 3 when it would block.
pub async fn risk_gate(api: &ApiClient, out: Output, args: TenantArgs) -> Result<(), CliError> {
    let report = api
        .get("/risk/gate/report", &[("tenant_id", args.tenant_id)])
        .await?;
    out.emit(&report, |o| o.pairs(&report))?;
    Ok(())
}

/// `risk impact`: what an intent's latest risk evaluation says it touches.
pub async fn risk_impact(api: &ApiClient, out: Output, args: IntentId) -> Result<(), CliError> {
    let answer = api
        .get("/impact/edges", &[("intent_id", Some(args.intent_id))])
        .await?;
    out.emit(&answer, |o| {
        o.table(
            rows(&answer, "impact_edges"),
            &[
                ("source", "/source"),
                ("target", "/target"),
                ("weight", "/weight"),
            ],
        )
    })?;
    Ok(())
}

/// `risk findings`: the findings of an intent's latest risk evaluation.
pub async fn risk_findings(api: &ApiClient, out: Output, args: IntentId) -> Result<(), CliError> {
    let answer = api
        .get(
            "/diagnostics/recent",
            &[("intent_id", Some(args.intent_id))],
        )
        .await?;
    out.emit(&answer, |o| {
        o.table(
            rows(&answer, "findings"),
            &[
                ("code", "/code"),
                ("severity", "/severity"),
                ("message", "/message"),
            ],
        )
    })?;
    Ok(())
}

/// `policy recent`: the latest policy evaluations.
pub async fn policy_recent(api: &ApiClient, out: Output, args: TenantArgs) -> Result<(), CliError> {
    let page = api
        .get("/policy/recent", &[("tenant_id", args.tenant_id)])
        .await?;
    out.emit(&page, |o| o.table(rows(&page, "events"), EVENT_COLUMNS))?;
    Ok(())
}

/// `risk shadow`: what the risk gate would have blocked had it been enforced.
pub async fn risk_shadow(api: &ApiClient, out: Output, args: TenantArgs) -> Result<(), CliError> {
    let page = api
        .get("/risk/shadow/recent", &[("tenant_id", args.tenant_id)])
        .await?;
    out.emit(&page, |o| o.table(rows(&page, "events"), EVENT_COLUMNS))?;
    Ok(())
}

/// `keys rotate`.
pub async fn keys(api: &ApiClient, out: Output, command: KeysCommand) -> Result<(), CliError> {
    let KeysCommand::Rotate(args) = command;
    let body = match args.grace_period_seconds {
        Some(seconds) => json!({"grace_period_seconds": seconds}),
        None => json!({}),
    };
    let answer = api.post("/auth/keys/rotate", &body).await?;
    out.emit(&answer, |o| o.pairs(&answer))?;
    Ok(())
}

/// Runs a `flags` command.
pub async fn flags(api: &ApiClient, out: Output, command: FlagsCommand) -> Result<(), CliError> {
    let answer = match command {
        FlagsCommand::List => api.get("/flags", &[]).await?,
        FlagsCommand::Set(args) => {
            api.post(
                &format!("/flags/{}", encode(&args.name)),
                &json!({"enabled": args.enabled}),
            )
            .await?
        }
    };
    out.emit(&answer, |o| {
        let list: Vec<Value> = match &answer["flags"] {
            Value::Array(items) => items.clone(),
            _ => vec![answer.clone()],
        };
        o.table(
            &list,
            &[
                ("name", "/name"),
                ("enabled", "/enabled"),
                ("source", "/source"),
            ],
        )
    })?;
    Ok(())
}

/// The rows of a page: the array under `key`, or the answer itself when it is an array.
/// A body without its `null` fields (options left out are not sent at all).
fn strip_nulls(mut body: Value) -> Value {
    if let Value::Object(map) = &mut body {
        map.retain(|_, v| !v.is_null());
    }
    body
}

fn rows<'a>(page: &'a Value, key: &str) -> &'a [Value] {
    page.get(key)
        .and_then(Value::as_array)
        .or_else(|| page.as_array())
        .map_or(&[], Vec::as_slice)
}

fn intent_path(id: &str, rest: &str) -> String {
    format!("/intents/{}{rest}", encode(id))
}
