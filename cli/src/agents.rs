//! `converge agent …`: what coding agents may do on their own.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{ApiClient, CliError};
use crate::output::Output;

/// `converge agent …`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// The tenant's agent policies (or one agent's, with --agent-id).
    Policies(PoliciesArgs),
    /// Store an agent's policy (operators; fields left out take the defaults).
    SetPolicy(SetPolicyArgs),
    /// Whether an agent may take an action on an intent now (admins; exit 3 when it may not).
    Authorize(AuthorizeArgs),
}

/// `agent policies` arguments.
#[derive(Debug, Args)]
pub struct PoliciesArgs {
    /// Only this agent's (its default policy when none is stored).
    #[arg(long)]
    agent_id: Option<String>,
    /// Only this tenant (admins; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

/// `agent set-policy` arguments.
#[derive(Debug, Args)]
pub struct SetPolicyArgs {
    /// The agent.
    #[arg(long)]
    agent_id: String,
    /// Autonomy level, 0 to 3.
    #[arg(long)]
    atl: Option<u8>,
    /// Highest risk score it may act on, 0 to 100.
    #[arg(long)]
    max_risk_score: Option<f64>,
    /// Widest blast radius it may act on: low, medium, high or critical.
    #[arg(long, value_parser = ["low", "medium", "high", "critical"])]
    max_blast_severity: Option<String>,
    /// The actions it may take, comma-separated (analyze,merge,…).
    #[arg(long, value_delimiter = ',')]
    allow: Option<Vec<String>>,
    /// Whether the tenant's compliance report must pass.
    #[arg(long)]
    require_compliance_pass: Option<bool>,
    /// Whether a human must have approved.
    #[arg(long)]
    require_human_approval: Option<bool>,
    /// Whether critical intents need two approvals.
    #[arg(long)]
    require_dual_approval_on_critical: Option<bool>,
    /// When the policy stops allowing anything (RFC 3339).
    #[arg(long)]
    expires_at: Option<String>,
    /// The tenant (admins of no tenant; a tenant's key writes its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

/// `agent authorize` arguments.
#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// The agent.
    #[arg(long)]
    agent_id: String,
    /// What it wants to do.
    #[arg(long)]
    action: String,
    /// On which intent.
    #[arg(long)]
    intent_id: String,
    /// Human approvals the change has.
    #[arg(long, default_value_t = 0)]
    approvals: u32,
}

/// Runs an `agent` command.
pub async fn run(api: &ApiClient, out: Output, command: AgentCommand) -> Result<(), CliError> {
    match command {
        AgentCommand::Policies(args) => {
            let answer = api
                .get(
                    "/agent/policy",
                    &[("tenant_id", args.tenant_id), ("agent_id", args.agent_id)],
                )
                .await?;
            out.emit(&answer, |o| {
                let rows = answer["policies"].as_array().map_or(&[][..], Vec::as_slice);
                o.table(
                    rows,
                    &[
                        ("agent", "/policy/agent_id"),
                        ("tenant", "/policy/tenant_id"),
                        ("atl", "/policy/atl"),
                        ("actions", "/policy/allow_actions"),
                        ("max risk", "/policy/max_risk_score"),
                        ("max blast", "/policy/max_blast_severity"),
                        ("version", "/version"),
                    ],
                )
            })?;
        }
        AgentCommand::SetPolicy(args) => {
            let mut body = json!({"agent_id": args.agent_id});
            let mut put = |name: &str, value: Option<Value>| {
                if let Some(value) = value {
                    body[name] = value;
                }
            };
            put("atl", args.atl.map(Value::from));
            put("max_risk_score", args.max_risk_score.map(Value::from));
            put(
                "max_blast_severity",
                args.max_blast_severity.map(Value::from),
            );
            put("allow_actions", args.allow.map(Value::from));
            put(
                "require_compliance_pass",
                args.require_compliance_pass.map(Value::from),
            );
            put(
                "require_human_approval",
                args.require_human_approval.map(Value::from),
            );
            put(
                "require_dual_approval_on_critical",
                args.require_dual_approval_on_critical.map(Value::from),
            );
            put("expires_at", args.expires_at.map(Value::from));
            put("tenant_id", args.tenant_id.map(Value::from));
            let answer = api.post("/agent/policy", &body).await?;
            out.emit(&answer, |o| {
                format!(
                    "{}\nversion: {}",
                    o.pairs(&answer["policy"]),
                    answer["version"]
                )
            })?;
        }
        AgentCommand::Authorize(args) => {
            let answer = api
                .post(
                    "/agent/authorize",
                    &json!({
                        "agent_id": args.agent_id,
                        "action": args.action,
                        "intent_id": args.intent_id,
                        "human_approvals": args.approvals,
                    }),
                )
                .await?;
            out.emit(&answer, |_| {
                let reasons: Vec<&str> = answer["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if answer["allowed"] == true {
                    "allowed".to_owned()
                } else {
                    format!("not allowed:\n- {}", reasons.join("\n- "))
                }
            })?;
            if answer["allowed"] != true {
                return Err(CliError::CheckFailed(format!(
                    "agent '{}' may not {} '{}'",
                    answer["agent_id"].as_str().unwrap_or_default(),
                    answer["action"].as_str().unwrap_or_default(),
                    answer["intent_id"].as_str().unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}
