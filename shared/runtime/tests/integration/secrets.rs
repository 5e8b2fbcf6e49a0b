//! Secrets Manager through the real AWS SDK against the emulator that `scripts/test.sh`
//! starts (AWS_ENDPOINT_URL): values are read, cached within the TTL, re-read after it, and
//! errors name the secret without its value.

use std::time::Duration;

use converge_runtime::secrets::Secrets;

async fn client() -> aws_sdk_secretsmanager::Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the AWS emulator"
    );
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_secretsmanager::Client::new(&config)
}

#[tokio::test]
async fn a_secret_is_cached_within_its_ttl_and_rotations_are_seen_after_it() {
    let client = client().await;
    let name = format!("converge/test/{}-{}", std::process::id(), line!());
    let created = client
        .create_secret()
        .name(&name)
        .secret_string("first-value")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
    let arn = created.arn().unwrap_or(&name).to_owned();

    let cached = Secrets::with_client(client.clone(), Duration::from_secs(300));
    assert_eq!(cached.get(&arn).await, Ok("first-value".to_owned()));
    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("rotated-value")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
    assert_eq!(
        cached.get(&arn).await,
        Ok("first-value".to_owned()),
        "within the TTL the cached value is used"
    );
    let fresh = Secrets::with_client(client.clone(), Duration::ZERO);
    assert_eq!(fresh.get(&arn).await, Ok("rotated-value".to_owned()));

    let missing = fresh.get("converge/test/absent").await;
    let error = missing.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("converge/test/absent"), "{error}");
    assert!(!error.contains("rotated-value"));
}
