//! Authentication, authorisation, tenancy and the tenant-wide rate limit.
//!
//! A request presents `x-api-key`; the store holds only SHA-256 hashes of keys, so every
//! instance sees the same keys, rotations and expiries. The key resolves to a [`Principal`]
//! (role, actor, tenant, scopes). Roles rank viewer < operator < admin. A key bound to a tenant
//! sees only that tenant: another tenant's objects are 404 to it, writes into another tenant
//! are 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DurationRound, TimeDelta};
use converge_store::ApiKeyRecord;
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;
pub use converge_runtime::config::{ApiKeySpec, Role, hash_key, parse_api_keys};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Role.
    pub role: Role,
    /// Actor name (recorded as `created_by`, in events).
    pub actor: String,
    /// The tenant the key is confined to, if any.
    pub tenant: Option<String>,
    /// Scopes granted; `None` means the role alone decides.
    pub scopes: Option<Vec<String>>,
    /// Hash of the key used (to rotate it); absent when authentication is off.
    #[serde(skip)]
    pub key_hash: Option<String>,
    /// When the key used stops working (it is in a rotation's grace period), if ever.
    #[serde(skip)]
    pub key_expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Principal {
    /// The principal of every request when authentication is off.
    pub fn anonymous() -> Principal {
        Principal {
            role: Role::Admin,
            actor: "anonymous".to_owned(),
            tenant: None,
            scopes: None,
            key_hash: None,
            key_expires_at: None,
        }
    }

    /// Checks the minimum role and, when the key declares scopes, the scope (exact, `*`, or
    /// `resource.*`).
    pub fn require(&self, role: Role, scope: &str) -> Result<(), ApiError> {
        if self.role < role {
            return Err(ApiError::Forbidden(format!(
                "this needs the {role} role; the key has {}",
                self.role
            )));
        }
        if let Some(scopes) = &self.scopes {
            let resource = scope.split('.').next().unwrap_or(scope);
            let granted = scopes
                .iter()
                .any(|s| s == "*" || s == scope || *s == format!("{resource}.*"));
            if !granted {
                return Err(ApiError::Forbidden(format!("missing scope: {scope}")));
            }
        }
        Ok(())
    }

    /// The tenant a read is confined to: the key's own, or the one asked for by an untenanted
    /// key (none = every tenant).
    pub fn read_tenant(&self, requested: Option<String>) -> Option<String> {
        self.tenant.clone().or(requested.filter(|t| !t.is_empty()))
    }

    /// Whether the key may see an object of `tenant`.
    pub fn can_see(&self, tenant: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(own) => tenant == Some(own.as_str()),
        }
    }

    /// The tenant a write goes to: the requested one, which must be the key's own if the key is
    /// bound to a tenant; defaults to the key's tenant.
    pub fn write_tenant(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        let requested = requested.filter(|t| !t.is_empty());
        match (&self.tenant, requested) {
            (Some(own), Some(asked)) if *own != asked => Err(ApiError::Forbidden(
                "this key cannot write into another tenant".to_owned(),
            )),
            (Some(own), _) => Ok(Some(own.clone())),
            (None, asked) => Ok(asked),
        }
    }
}

/// Stores the configured keys' hashes (an expiry set by a rotation is kept).
pub async fn seed_api_keys(state: &AppState, specs: &[ApiKeySpec]) -> Result<(), ApiError> {
    converge_runtime::api_keys::seed(
        &state.services.store,
        state.services.clock.now(),
        specs,
        None,
    )
    .await?;
    Ok(())
}

/// Scopes stored as an empty list mean "no scopes declared".
pub(crate) fn principal_of(record: ApiKeyRecord) -> Result<Principal, ApiError> {
    Ok(Principal {
        role: record.role.parse().map_err(ApiError::Internal)?,
        actor: record.actor,
        tenant: record.tenant_id,
        scopes: (!record.scopes.is_empty()).then_some(record.scopes),
        key_hash: Some(record.key_hash),
        key_expires_at: record.expires_at,
    })
}

/// The address a request came from, when the transport knows it (the TCP peer of `converge
/// serve`, API Gateway's source IP in the API function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub std::net::IpAddr);

/// A client with no failure for this long starts afresh.
const FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);
/// The longest back-off.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(900);
/// Most clients remembered at once.
const THROTTLE_CAPACITY: usize = 100_000;

/// Failed authentications per client address and per key prefix, in this process. Past the
/// free ones (`CONVERGE_AUTH_FREE_FAILURES`), each further failure doubles the wait (1 s, 2 s, 4 s, … up to
/// `MAX_BACKOFF`) before that client or prefix is heard again: a 429 with `Retry-After`,
/// without a database lookup. A success clears the key prefix's count, never the address's
/// (a valid key must not launder a guessing client).
#[derive(Default)]
pub struct AuthThrottle(std::sync::Mutex<std::collections::HashMap<String, Failures>>);

struct Failures {
    count: u32,
    last: std::time::Instant,
    blocked_until: Option<std::time::Instant>,
}

impl AuthThrottle {
    /// The throttled subjects of a request: its client's address and its key's first
    /// characters (enough to tell keys apart, too few to help a guesser).
    pub fn subjects(address: Option<ClientAddress>, key: Option<&str>) -> Vec<String> {
        let mut subjects = Vec::with_capacity(2);
        if let Some(ClientAddress(ip)) = address {
            subjects.push(format!("addr:{ip}"));
        }
        if let Some(key) = key {
            let prefix: String = key.chars().take(6).collect();
            subjects.push(format!("key:{prefix}"));
        }
        subjects
    }

    /// Refuses a subject that is backing off.
    pub fn check(&self, subjects: &[String]) -> Result<(), ApiError> {
        let now = std::time::Instant::now();
        let failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let wait = subjects
            .iter()
            .filter_map(|s| failures.get(s)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(wait) => Err(ApiError::AuthThrottled {
                retry_after: wait.as_secs().max(1),
            }),
            None => Ok(()),
        }
    }

    /// Counts a failed authentication against every subject; past `free_failures`, the
    /// subject waits.
    pub fn failed(&self, subjects: &[String], free_failures: u32) {
        let now = std::time::Instant::now();
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= THROTTLE_CAPACITY {
            failures.retain(|_, f| now - f.last < FAILURE_MEMORY);
            if failures.len() >= THROTTLE_CAPACITY {
                failures.clear();
            }
        }
        for subject in subjects {
            let entry = failures.entry(subject.clone()).or_insert(Failures {
                count: 0,
                last: now,
                blocked_until: None,
            });
            if now - entry.last >= FAILURE_MEMORY {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
            if entry.count > free_failures {
                let doublings = (entry.count - free_failures - 1).min(20);
                let backoff = std::time::Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF);
                entry.blocked_until = Some(now + backoff);
            }
        }
    }

    /// A key authenticated: its prefix starts afresh.
    pub fn succeeded(&self, subjects: &[String]) {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for subject in subjects.iter().filter(|s| s.starts_with("key:")) {
            failures.remove(subject);
        }
    }
}

/// How long a resolved key is trusted without asking the database again. A key's own expiry
/// is always honoured exactly; only a change made elsewhere (a rotation by another instance)
/// can take up to this long to be seen here.
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Most keys remembered at once (only keys that exist are remembered).
const KEY_CACHE_CAPACITY: usize = 10_000;

/// Recently resolved keys, so a request costs no database round trip for its key.
#[derive(Default)]
pub struct KeyCache(std::sync::Mutex<std::collections::HashMap<String, CachedKey>>);

struct CachedKey {
    /// `None`: no such key (remembered as briefly as a found one, so a client repeating an
    /// unknown key costs the database one lookup per [`KEY_CACHE_TTL`], not one per request).
    principal: Option<Principal>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    fetched: std::time::Instant,
}

impl KeyCache {
    /// Forgets a key, so the next request re-reads it (after this instance changed it).
    pub fn forget(&self, key_hash: &str) {
        if let Ok(mut cache) = self.0.lock() {
            cache.remove(key_hash);
        }
    }

    pub(crate) async fn principal(
        &self,
        state: &AppState,
        key_hash: &str,
    ) -> Result<Principal, ApiError> {
        let now = state.services.clock.now();
        if let Ok(cache) = self.0.lock()
            && let Some(hit) = cache
                .get(key_hash)
                .filter(|c| c.fetched.elapsed() < KEY_CACHE_TTL)
        {
            return match (&hit.principal, hit.expires_at) {
                (None, _) => Err(ApiError::Unauthenticated),
                (Some(_), Some(expiry)) if expiry <= now => Err(ApiError::Unauthenticated),
                (Some(principal), _) => Ok(principal.clone()),
            };
        }
        let found = state.services.store.find_api_key(key_hash).await?;
        let expires_at = found.as_ref().and_then(|r| r.expires_at);
        let principal = found.map(principal_of).transpose()?;
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() >= KEY_CACHE_CAPACITY {
                cache.clear();
            }
            let fetched = std::time::Instant::now();
            cache.insert(
                key_hash.to_owned(),
                CachedKey {
                    principal: principal.clone(),
                    expires_at,
                    fetched,
                },
            );
        }
        principal.ok_or(ApiError::Unauthenticated)
    }
}

/// Resolves a presented key (none: 401), through the throttle of failed attempts.
pub(crate) async fn authenticate_key(
    state: &AppState,
    address: Option<ClientAddress>,
    key: Option<&str>,
) -> Result<Principal, ApiError> {
    let subjects = AuthThrottle::subjects(address, key);
    state.auth_throttle.check(&subjects)?;
    let resolved = match key {
        Some(key) => state.key_cache.principal(state, &hash_key(key)).await,
        None => Err(ApiError::Unauthenticated),
    };
    match &resolved {
        Ok(_) => state.auth_throttle.succeeded(&subjects),
        Err(ApiError::Unauthenticated) => state
            .auth_throttle
            .failed(&subjects, state.services.api.auth_free_failures),
        Err(_) => {}
    }
    resolved
}

/// Middleware for the business routes: resolves the principal (401 without a valid key), then
/// counts the request against its tenant's per-minute budget (429 past it), and stores the
/// principal in the request for the handlers.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = if state.services.api.auth_required {
        let key = request
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty());
        let address = request.extensions().get::<ClientAddress>().copied();
        authenticate_key(&state, address, key).await?
    } else {
        Principal::anonymous()
    };

    let budget = count_request(&state, &principal).await?;
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some(budget) = budget {
        budget.annotate(&mut response);
    }
    Ok(response)
}

/// What is left of a caller's per-minute budget.
pub(crate) struct Budget {
    limit: u32,
    left: i64,
    reset: u64,
}

impl Budget {
    /// The `RateLimit-*` headers.
    pub(crate) fn annotate(&self, response: &mut Response) {
        let headers = response.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.left.to_string()),
            ("ratelimit-reset", self.reset.to_string()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
}

/// The share of a minute's budget an instance takes from the store at once: a hundredth of
/// it. An instance holds at most one block unspent (takes wait for each other), and what it
/// did not spend by the end of the minute is lost, so with K instances busy the tenant gets at
/// least (100 − K) % of its limit, and never more than it.
fn block_of(limit: u32) -> i64 {
    i64::from((limit / 100).max(1))
}

/// The per-minute budgets of this instance's callers. Every instance counts against the same
/// windows in the store, but takes its budget there a hundredth of it at a time and spends
/// it here without writing: at steady state one write per block of requests, not per request.
#[derive(Debug, Default)]
pub struct RateLimiter {
    budgets: std::sync::Mutex<std::collections::HashMap<String, LocalBudget>>,
    /// One take from the store at a time per bucket: requests that find nothing left wait
    /// for it rather than each taking a block (an instance holds at most one block unspent).
    takes: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What this instance holds of a bucket's budget in one window.
#[derive(Debug, Clone, Copy)]
struct LocalBudget {
    window: chrono::DateTime<chrono::Utc>,
    /// Requests this instance may still answer in the window.
    tokens: i64,
    /// The window's count in the store at this instance's last take (every instance's).
    counted: i64,
    /// The store had nothing left to give in this window: the rest of it is refused here.
    exhausted: bool,
}

impl LocalBudget {
    fn new(window: chrono::DateTime<chrono::Utc>) -> LocalBudget {
        LocalBudget {
            window,
            tokens: 0,
            counted: 0,
            exhausted: false,
        }
    }
}

/// Whether a request was let through, with what is left.
enum Spent {
    /// Answer it; this much of the budget is left (at least; other instances' blocks count).
    Granted { left: i64 },
    /// Refused: the window's budget is spent.
    Refused,
    /// This instance holds nothing: take a block from the store.
    TakeBlock,
}

impl RateLimiter {
    /// The lock that lets one request of `bucket` at a time take a block from the store.
    fn take_lock(&self, bucket: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let mut takes = self.takes.lock().ok()?;
        if takes.len() > 10_000 {
            // Buckets come and go with the minute's callers; locks nobody waits on go.
            takes.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Some(Arc::clone(takes.entry(bucket.to_owned()).or_default()))
    }

    /// Takes a block of `bucket`'s budget from the store and spends one request of it, one
    /// request of the bucket at a time (the others wait, then spend what it took).
    async fn take_block(
        &self,
        store: &converge_store::Store,
        bucket: &str,
        window: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Spent, converge_store::StoreError> {
        let ceiling = i64::from(limit);
        let lock = self.take_lock(bucket);
        let _turn = match &lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        // Another request may have taken a block while this one waited its turn.
        if let spent @ (Spent::Granted { .. } | Spent::Refused) =
            self.spend(bucket, window, ceiling)
        {
            return Ok(spent);
        }
        let block = block_of(limit);
        let counted = store.hit_rate_limit(bucket, window, block).await?;
        if counted == block {
            // First take of this bucket in a new minute: forget windows that cannot matter.
            store
                .prune_rate_limits(window - TimeDelta::minutes(2))
                .await?;
        }
        // What was left of the budget before this take, up to a block.
        let granted = (ceiling - (counted - block)).clamp(0, block);
        Ok(self.add_block(bucket, window, ceiling, granted, counted))
    }

    /// Spends one request of what this instance holds.
    fn spend(&self, bucket: &str, window: chrono::DateTime<chrono::Utc>, limit: i64) -> Spent {
        let Ok(mut budgets) = self.budgets.lock() else {
            return Spent::TakeBlock;
        };
        match budgets.get_mut(bucket) {
            Some(budget) if budget.window == window && budget.tokens > 0 => {
                budget.tokens -= 1;
                Spent::Granted {
                    left: (limit - budget.counted).max(0) + budget.tokens,
                }
            }
            Some(budget) if budget.window == window && budget.exhausted => Spent::Refused,
            _ => Spent::TakeBlock,
        }
    }

    /// Adds a block taken from the store (`granted` of it usable; the store's count is now
    /// `counted`) and spends one request of it.
    fn add_block(
        &self,
        bucket: &str,
        window: chrono::DateTime<chrono::Utc>,
        limit: i64,
        granted: i64,
        counted: i64,
    ) -> Spent {
        let Ok(mut budgets) = self.budgets.lock() else {
            return Spent::Refused;
        };
        let held = budgets.get(bucket).map(|b| b.window);
        if held.is_some_and(|held| held > window) {
            // A slow request of the last minute: its block counts in that window only, and
            // what is held for this one stays as it is.
            return if granted > 0 {
                Spent::Granted {
                    left: (limit - counted).max(0) + granted - 1,
                }
            } else {
                Spent::Refused
            };
        }
        // Budgets of past windows are of no use to anyone.
        budgets.retain(|_, budget| budget.window >= window);
        let budget = budgets
            .entry(bucket.to_owned())
            .or_insert_with(|| LocalBudget::new(window));
        if budget.window != window {
            *budget = LocalBudget::new(window);
        }
        budget.tokens += granted;
        budget.counted = budget.counted.max(counted);
        if counted >= limit && granted == 0 {
            budget.exhausted = true;
        }
        if budget.tokens > 0 {
            budget.tokens -= 1;
            Spent::Granted {
                left: (limit - budget.counted).max(0) + budget.tokens,
            }
        } else {
            Spent::Refused
        }
    }
}

/// Counts a request against its caller's per-minute budget (the API's and the dashboard's
/// pages alike): 429 past it; `None` when rate limiting is off. The budget is shared by every
/// instance through the store, taken a block at a time (see [`RateLimiter`]).
pub(crate) async fn count_request(
    state: &AppState,
    principal: &Principal,
) -> Result<Option<Budget>, ApiError> {
    let Some(limit) = state.services.api.rate_limit_rpm else {
        return Ok(None);
    };
    let now = state.services.clock.now();
    let window = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    let reset = (window + TimeDelta::minutes(1) - now).num_seconds().max(1) as u64;
    // A tenant's keys share its budget; an untenanted key has its own, per actor.
    let bucket = match &principal.tenant {
        Some(tenant) => tenant.clone(),
        None => format!("actor:{}", principal.actor),
    };
    let ceiling = i64::from(limit);
    let spent = match state.rate_limiter.spend(&bucket, window, ceiling) {
        Spent::TakeBlock => {
            let store = &state.services.store;
            state
                .rate_limiter
                .take_block(store, &bucket, window, limit)
                .await?
        }
        spent => spent,
    };
    match spent {
        Spent::Granted { left } => Ok(Some(Budget { limit, left, reset })),
        Spent::Refused | Spent::TakeBlock => {
            state.metrics.count_rate_limited(&bucket);
            Err(ApiError::RateLimited {
                limit,
                retry_after: reset,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_scopes_and_tenants() {
        let p = Principal {
            role: Role::Operator,
            actor: "ci".into(),
            tenant: Some("acme".into()),
            scopes: Some(vec!["queue.*".into(), "intents.read".into()]),
            key_hash: None,
            key_expires_at: None,
        };
        assert!(p.require(Role::Viewer, "intents.read").is_ok());
        assert!(p.require(Role::Operator, "queue.write").is_ok());
        assert!(matches!(
            p.require(Role::Operator, "events.read"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            p.require(Role::Admin, "queue.read"),
            Err(ApiError::Forbidden(_))
        ));
        assert_eq!(p.read_tenant(Some("globex".into())), Some("acme".into()));
        assert!(p.can_see(Some("acme")) && !p.can_see(Some("globex")) && !p.can_see(None));
        assert!(p.write_tenant(Some("globex".into())).is_err());
        assert_eq!(p.write_tenant(None).ok().flatten(), Some("acme".into()));
    }
}
