//! The `api` Lambda function: `lambda_http` around the API router of `converge-http`.
//!
//! State is built once per process (outside the handler): at cold start the store is
//! migrated (a no-op after the first instance) and the configured keys' hashes are stored;
//! requests then reuse the pool.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let router = converge_http::boot::lambda_router_from_env(
        "converge-api",
        converge_http::boot::Function::Api,
    )
    .await?;
    lambda_http::run(router)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
