//! SQS queues on the AWS emulator that `scripts/test.sh` starts, reached through the real
//! AWS SDK (`AWS_ENDPOINT_URL`).

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

/// A queue with its dead-letter queue, both named after the test and the process.
pub struct TestQueue {
    /// The SDK client.
    pub client: aws_sdk_sqs::Client,
    /// The queue.
    pub url: String,
    /// Its dead-letter queue.
    pub dlq_url: String,
}

/// Creates `<name>-<pid>` and `<name>-<pid>-dlq`: a message received `max_receives` times
/// without being deleted moves to the DLQ; a received message is hidden for
/// `visibility_seconds`.
pub async fn queue_with_dlq(name: &str, visibility_seconds: u32, max_receives: u32) -> TestQueue {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the AWS emulator"
    );
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_sqs::Client::new(&config);
    let name = format!("{name}-{}", std::process::id());
    let dlq = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", DisplayErrorContext(e)));
    let dlq_url = dlq.queue_url().unwrap_or_default().to_owned();
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", DisplayErrorContext(e)))
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let redrive =
        json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives.to_string()})
            .to_string();
    let queue = client
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_seconds.to_string(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", DisplayErrorContext(e)));
    TestQueue {
        client,
        url: queue.queue_url().unwrap_or_default().to_owned(),
        dlq_url,
    }
}
