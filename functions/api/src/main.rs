//! The `api` Lambda function: `lambda_http` around the API router of `converge-http`.
//!
//! State is built once per process (outside the handler): the store's pool connects lazily on
//! the first request, so a cold start does no network work.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let router = converge_http::boot::router_from_env().await?;
    lambda_http::run(router)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
