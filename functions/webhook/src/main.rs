//! The `webhook` Lambda function: `lambda_http` around the router of `converge-http`, which
//! serves `POST /integrations/github/webhook` (API Gateway routes only that path here).
//!
//! A delivery is verified, deduplicated and translated, and its events and queue messages
//! are committed in one transaction before the 202; the queue messages wait in the outbox
//! for the worker.

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
