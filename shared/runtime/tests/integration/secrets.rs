//! Secrets Manager through the real AWS SDK against the emulator that `scripts/test.sh`
//! starts (AWS_ENDPOINT_URL): values are read, cached within the TTL, re-read after it, and
//! errors name the secret without its value; a rotated database DSN and GitHub App key reach
//! the objects built from them.

use std::sync::Arc;
use std::time::Duration;

use converge_runtime::secrets::{Rotation, Secrets};

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

const ROTATION_TTL: Duration = Duration::from_secs(2);

async fn create_secret(client: &aws_sdk_secretsmanager::Client, what: &str, value: &str) -> String {
    let name = format!("converge/test/{what}/{}", std::process::id());
    let created = client
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
    created.arn().unwrap_or(&name).to_owned()
}

async fn put_secret(client: &aws_sdk_secretsmanager::Client, arn: &str, value: &str) {
    client
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
}

/// RDS's form of a database secret.
fn rds_secret(username: &str, database_url: &str) -> String {
    let (server, dbname) = database_url
        .trim_start_matches("postgres://")
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .unwrap_or_else(|| panic!("unexpected test database URL"));
    let (host, port) = server.split_once(':').unwrap_or((server, "5432"));
    serde_json::json!({
        "username": username, "password": "unused-with-trust-auth",
        "host": host, "port": port.parse::<u16>().unwrap_or(5432), "dbname": dbname,
    })
    .to_string()
}

async fn current_user(store: &converge_store::Store) -> String {
    let converge_store::Store::Postgres(pg) = store else {
        panic!("a PostgreSQL store was expected");
    };
    sqlx::query_scalar::<_, String>("SELECT current_user::text")
        .fetch_one(pg.pool())
        .await
        .unwrap()
}

/// RDS's alternating-users rotation: the secret moves from one database user to another. The
/// test cluster trusts every password, so the user a new connection logs in as is what shows
/// which DSN it was made with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_database_connections_follow_a_rotated_dsn_after_the_ttl() {
    use sqlx::Connection;
    let client = client().await;
    let database = converge_testkit::fresh_pg_database().await;
    let (first, second) = (
        format!("converge_first_{}", std::process::id()),
        format!("converge_second_{}", std::process::id()),
    );
    let mut admin = sqlx::PgConnection::connect(&converge_testkit::pg_admin_url())
        .await
        .unwrap();
    for role in [&first, &second] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let arn = create_secret(&client, "dsn", &rds_secret(&first, &database)).await;

    let clock = converge_testkit::MovableClock::default();
    let secrets = Arc::new(Secrets::with_clock(
        client.clone(),
        ROTATION_TTL,
        clock.now_fn(),
    ));
    let mut rotation = Rotation::with_secrets(secrets);
    let value = rotation.watch_dsn(&arn).await.unwrap();
    let dsn = converge_runtime::secrets::dsn_of_secret(&value, &Default::default()).unwrap();
    let store =
        converge_store::Store::from_url(&dsn, Arc::new(converge_store::SystemClock)).unwrap();
    assert_eq!(current_user(&store).await, first);

    put_secret(&client, &arn, &rds_secret(&second, &database)).await;
    // What the process does before a request, then what happens to a session sooner or later:
    // it closes, and the pool opens a new connection with whatever DSN it now has.
    let refresh_and_reconnect = async |admin: &mut sqlx::PgConnection| {
        rotation.refresh(&store).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{first}'"
        )))
        .execute(admin)
        .await
        .unwrap();
    };
    refresh_and_reconnect(&mut admin).await;
    assert_eq!(
        current_user(&store).await,
        first,
        "within the cache's lifetime, new connections still use the DSN read at start"
    );

    clock.advance(ROTATION_TTL);
    refresh_and_reconnect(&mut admin).await;
    assert_eq!(
        current_user(&store).await,
        second,
        "after the cache's lifetime, new connections use the rotated DSN"
    );
}

/// The App's private key is rotated on GitHub and in Secrets Manager: the running App signs
/// with the new key once the cache's lifetime has passed, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_app_signs_with_a_rotated_private_key_after_the_ttl() {
    use converge_testkit::github_fake::{GithubFake, app_key_pair};
    const APP_ID: u64 = 4242;
    let client = client().await;
    let (first_private, first_public) = app_key_pair();
    let (second_private, second_public) = app_key_pair();
    let fake = GithubFake::start(APP_ID, &first_public).await;
    let arn = create_secret(&client, "app-key", &first_private).await;
    let settings = converge_github::app::GithubSettings::from_lookup(|name| match name {
        "CONVERGE_GITHUB_APP_ID" => Some(APP_ID.to_string()),
        "CONVERGE_GITHUB_API_URL" => Some(fake.url().to_owned()),
        "CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN" => Some(arn.clone()),
        _ => None,
    })
    .unwrap()
    .unwrap_or_else(|| panic!("the App is configured"));

    let clock = converge_testkit::MovableClock::default();
    let secrets = Arc::new(Secrets::with_clock(
        client.clone(),
        ROTATION_TTL,
        clock.now_fn(),
    ));
    let mut rotation = Rotation::with_secrets(secrets);
    let app = rotation.watch_app_key(&arn, settings).await;
    assert!(app.check_app().await.is_ok(), "the first key is accepted");

    fake.rotate_app_key(&second_public);
    put_secret(&client, &arn, &second_private).await;
    // The store is not involved in an App key rotation; any store will do.
    let db = tempfile::tempdir().unwrap();
    let store = converge_store::Store::from_url(
        &format!("sqlite://{}", db.path().join("s.db").display()),
        Arc::new(converge_store::SystemClock),
    )
    .unwrap();
    rotation.refresh(&store).await;
    assert!(
        app.check_app().await.is_err(),
        "within the cache's lifetime the old key is still used, and GitHub refuses it"
    );

    clock.advance(ROTATION_TTL);
    rotation.refresh(&store).await;
    assert!(
        app.check_app().await.is_ok(),
        "after the cache's lifetime the rotated key signs the App's tokens"
    );
}

/// Secrets Manager fails (here: the secret is gone): the value read before stays in use, so
/// the credentials in hand keep working; a secret never read before is an error.
#[tokio::test]
async fn a_value_read_before_stays_in_use_when_secrets_manager_fails() {
    let client = client().await;
    let arn = create_secret(&client, "outage", "kept-value").await;
    // No caching: every call reads Secrets Manager.
    let secrets = Secrets::with_client(client.clone(), Duration::ZERO);
    assert_eq!(secrets.get(&arn).await, Ok("kept-value".to_owned()));
    client
        .delete_secret()
        .secret_id(&arn)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
    assert_eq!(secrets.get(&arn).await, Ok("kept-value".to_owned()));
    let never_read = format!("{arn}-other");
    assert!(secrets.get(&never_read).await.is_err());
}

/// A secret that cannot be read is not asked for again at every call: its failure is kept for
/// the retry pause (each request would otherwise wait for Secrets Manager's answer).
#[tokio::test]
async fn a_failed_first_read_is_not_repeated_before_the_retry_pause() {
    let client = client().await;
    let name = format!("converge/test/late/{}", std::process::id());
    let secrets = Secrets::with_client(client.clone(), Duration::from_secs(300));
    assert!(
        secrets.get(&name).await.is_err(),
        "the secret does not exist yet"
    );
    // Named as `name` (create_secret's naming).
    create_secret(&client, "late", "now-here").await;
    assert!(
        secrets.get(&name).await.is_err(),
        "within the retry pause the failure is answered without a new read"
    );
    let fresh_client = Secrets::with_client(client.clone(), Duration::from_secs(300));
    assert_eq!(fresh_client.get(&name).await, Ok("now-here".to_owned()));
}
