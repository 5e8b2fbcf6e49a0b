//! The AWS SDK's configuration, loaded once per process and shared by every client (SQS,
//! Secrets Manager): loading it resolves the region and the credentials, work a Lambda cold
//! start should do once. It honours `AWS_ENDPOINT_URL`, so the local stack and the tests reach
//! an emulator through the same code.

static SDK_CONFIG: tokio::sync::OnceCell<aws_config::SdkConfig> =
    tokio::sync::OnceCell::const_new();

/// The process's SDK configuration, loaded from the environment on first use.
pub async fn sdk_config() -> &'static aws_config::SdkConfig {
    SDK_CONFIG
        .get_or_init(|| aws_config::load_defaults(aws_config::BehaviorVersion::latest()))
        .await
}
