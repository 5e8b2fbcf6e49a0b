//! The `worker` Lambda function: SQS batches of queue keys (partial batch failures reported,
//! `ReportBatchItemFailures`), and the scheduled sweep (EventBridge) that relays the outbox to
//! SQS, enqueues keys with actionable intents, clears expired leases, escalates overdue reviews and applies retention.
//!
//! The services are built once per process by the one wiring of every Converge process
//! (`converge_runtime::services::Services`); the queue processor holds leases as
//! `lambda-<log stream>`.

use converge_runtime::services::Services;
use converge_runtime::sqs::handle_event;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let telemetry = converge_runtime::telemetry::Telemetry::init("converge-worker");
    let services = Services::from_env().await?;
    let queue = services
        .queue
        .clone()
        .ok_or("CONVERGE_QUEUE_URL is required")?;
    let holder = format!(
        "lambda-{}",
        std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
            .unwrap_or_else(|_| std::process::id().to_string())
    );
    let processor = services.processor_with(services.worker.clone(), holder);
    let (processor, services, queue, telemetry) = (&processor, &services, &queue, &telemetry);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // A rotated DSN or App key reaches this instance before the batch uses it.
            services.rotation.refresh(&services.store).await;
            let scheduled = event.payload.get("Records").is_none();
            // Boxed: the handler is a deep future (a round inside a batch inside the runtime).
            let answer = Box::pin(handle_event(
                processor,
                &services.store,
                queue,
                event.payload,
            ))
            .await;
            if scheduled {
                // The sweep's schedule also runs the upkeep: review SLAs, and retention (at
                // most hourly per instance).
                services.maintain().await;
            }
            // Before the answer: the process may be frozen right after it.
            telemetry.flush().await;
            answer.map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
