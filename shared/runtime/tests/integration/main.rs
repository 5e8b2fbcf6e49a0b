//! Tests of the runtime: the queue worker, SQS, GitHub adapter, local checks, secrets.
//!
//! One test binary per crate: every file here is a module of it, so a build links one
//! executable instead of one per file (disk and link time on CI's 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

/// Runs each named scenario `async fn name(world: World)` of the calling module on SQLite
/// (`sqlite_world()`) and on a throwaway PostgreSQL database (`pg_world()`, dropped after).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::sqlite_world().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let world = super::pg_world().await;
                    let url = world.pg_url.clone().unwrap_or_default();
                    super::$name(world).await;
                    converge_testkit::drop_pg_database(&url).await;
                }
            )*
        }
    };
}

mod audit;
mod concurrency;
mod github;
mod local_checks;
mod local_git;
mod queue_properties;
mod queue_worker;
mod secrets;
mod sqs;
mod trains;
