//! `converge intake …`: whether new intents are taken in.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{ApiClient, CliError};
use crate::output::Output;

/// `converge intake …`.
#[derive(Debug, Subcommand)]
pub enum IntakeCommand {
    /// The mode in force, what auto would choose, and the signals it reads.
    Status(crate::ops::TenantArgs),
    /// Set the intake mode (operators): open, throttle, pause, or auto.
    Mode(ModeArgs),
}

/// `intake mode` arguments.
#[derive(Debug, Args)]
pub struct ModeArgs {
    /// open, throttle, pause, or auto (health and debt decide).
    #[arg(value_parser = ["open", "throttle", "pause", "auto"])]
    mode: String,
    /// Why (shown with the mode).
    #[arg(long, default_value = "")]
    reason: String,
    /// The tenant (admins of no tenant; a tenant's key sets its own; none: the global mode).
    #[arg(long)]
    tenant_id: Option<String>,
}

fn text(out: &Output, status: &Value) -> String {
    let mut text = format!(
        "mode: {}{}\nauto would choose: {}",
        status["mode"].as_str().unwrap_or_default(),
        if status["manual_override"] == true {
            format!(
                " (set by {}: {})",
                status["override"]["set_by"].as_str().unwrap_or_default(),
                status["override"]["reason"].as_str().unwrap_or_default()
            )
        } else {
            " (auto)".to_owned()
        },
        status["auto_mode"].as_str().unwrap_or_default(),
    );
    text.push_str("\n\n");
    text.push_str(&out.pairs(&status["signals"]));
    text
}

/// Runs an `intake` command.
pub async fn run(api: &ApiClient, out: Output, command: IntakeCommand) -> Result<(), CliError> {
    let status = match command {
        IntakeCommand::Status(args) => {
            api.get("/intake/status", &[("tenant_id", args.tenant_id)])
                .await?
        }
        IntakeCommand::Mode(args) => {
            let mut body = json!({"mode": args.mode, "reason": args.reason});
            if let Some(tenant) = args.tenant_id {
                body["tenant_id"] = Value::from(tenant);
            }
            api.post("/intake/mode", &body).await?
        }
    };
    out.emit(&status, |o| text(o, &status))?;
    Ok(())
}
