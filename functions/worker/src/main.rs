//! The `worker` Lambda function: SQS batches of queue keys (partial batch failures reported,
//! `ReportBatchItemFailures`), and the scheduled sweep (EventBridge) that relays the outbox to
//! SQS, enqueues keys with actionable intents and clears expired leases.
//!
//! State is built once per process from the one typed configuration (`Config`): the store
//! (migrated), the GitHub App (its key from the environment or Secrets Manager), the worker
//! settings and the SQS client.

use converge_runtime::queue_worker::{QueueProcessor, WorkerPorts};
use converge_runtime::routed::RoutedPorts;
use converge_runtime::sqs::{SqsQueue, handle_event};
use converge_store::{Store, SystemClock};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let telemetry = converge_runtime::telemetry::Telemetry::init("converge-worker");
    let config = converge_runtime::config::Config::from_env()?;
    let mut rotation = converge_runtime::secrets::Rotation::new(config.secrets_ttl);
    let store = Store::open(
        &converge_runtime::secrets::store_config(&config.store, &mut rotation).await?,
        Arc::new(SystemClock),
    )?;
    store.migrate().await?;
    let (queue, _dlq) = SqsQueue::from_settings(&config.queue)
        .await
        .ok_or("CONVERGE_QUEUE_URL is required")?;
    let github = converge_runtime::secrets::github_app(config.github.clone(), &mut rotation)
        .await?
        .map(converge_github::adapters::GithubPorts::new);
    let ports = RoutedPorts::new(None, github);
    let holder = format!(
        "lambda-{}",
        std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
            .unwrap_or_else(|_| std::process::id().to_string())
    );
    let processor = QueueProcessor::with_ports(
        store.clone(),
        WorkerPorts {
            scm: ports.clone(),
            checks: ports.clone(),
            publisher: ports,
        },
        converge_core::PolicyConfig::default(),
        config.worker.clone(),
        Arc::new(SystemClock),
        holder,
    );
    let (processor, store, queue, telemetry, rotation) =
        (&processor, &store, &queue, &telemetry, &rotation);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // A rotated DSN or App key reaches this instance before the batch uses it.
            rotation.refresh(store).await;
            // Boxed: the handler is a deep future (a round inside a batch inside the runtime).
            let answer = Box::pin(handle_event(processor, store, queue, event.payload)).await;
            // Before the answer: the process may be frozen right after it.
            telemetry.flush().await;
            answer.map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
