//! The `api` Lambda function: `lambda_http` around the API router of `converge-http`.
//!
//! State is built once per process (outside the handler): at cold start the store is
//! migrated (a no-op after the first instance) and the configured keys' hashes are stored;
//! requests then reuse the pool.

use converge_http::auth::ClientAddress;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let router = converge_http::boot::lambda_router_from_env(
        "converge-api",
        converge_http::boot::Function::Api,
    )
    .await?;
    // API Gateway names the caller's address: failed authentications are throttled per
    // address as well as per key prefix.
    let service = tower::ServiceBuilder::new()
        .map_request(|mut request: lambda_http::Request| {
            let source_ip = match request.request_context_ref() {
                Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
                _ => None,
            };
            if let Some(ip) = source_ip.and_then(|ip| ip.parse().ok()) {
                request.extensions_mut().insert(ClientAddress(ip));
            }
            request
        })
        .service(router);
    lambda_http::run(service)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
