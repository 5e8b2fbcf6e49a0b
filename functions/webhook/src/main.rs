//! The `webhook` Lambda function: `lambda_http` around `converge_http::webhook_router`
//! (`boot::lambda_router_from_env(…, Function::Webhook)`), which serves
//! `POST /integrations/github/webhook` and the health routes (`/health`, `/health/live`,
//! `/health/ready`) and nothing else; API Gateway routes only the webhook's path here.
//!
//! A delivery is verified, deduplicated and translated, and its events and queue messages
//! are committed in one transaction before the 202. With `CONVERGE_QUEUE_URL` set, the queue
//! messages are then relayed to SQS at once (`Services::queue_work_committed`); what fails to
//! go waits in the outbox for the sweep.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let router = converge_http::boot::lambda_router_from_env(
        "converge-webhook",
        converge_http::boot::Function::Webhook,
    )
    .await?;
    lambda_http::run(router)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
