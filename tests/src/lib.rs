//! Support for the test suites: a throwaway PostgreSQL database per test (on the cluster that
//! `scripts/test.sh` starts) and a clock that only moves when a test says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use converge_core::pipeline::Clock;

/// A clock that only moves when told to. Starts at a fixed instant (microsecond-aligned).
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl Default for ManualClock {
    fn default() -> Self {
        let start = Utc
            .timestamp_opt(1_800_000_000, 123_456_000)
            .single()
            .unwrap_or_default();
        ManualClock(Arc::new(Mutex::new(start)))
    }
}

impl ManualClock {
    /// A clock at the fixed start instant.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|t| *t).unwrap_or_default()
    }
}

/// The superuser URL of the throwaway PostgreSQL that `scripts/test.sh` starts. Tests that
/// need it fail (they do not skip) when it is missing.
pub fn pg_admin_url() -> String {
    std::env::var("CONVERGE_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("CONVERGE_TEST_PG_URL is not set: run scripts/test.sh, which starts a throwaway PostgreSQL")
    })
}

static DATABASES: AtomicU64 = AtomicU64::new(0);

/// Creates a new, empty PostgreSQL database and returns its URL.
pub async fn fresh_pg_database() -> String {
    let admin = pg_admin_url();
    let name = format!(
        "converge_test_{}_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed),
        Utc::now().timestamp_micros()
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}
