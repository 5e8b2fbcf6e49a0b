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
    principal: Principal,
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
            return match hit.expires_at {
                Some(expiry) if expiry <= now => Err(ApiError::Unauthenticated),
                _ => Ok(hit.principal.clone()),
            };
        }
        let record = state
            .services
            .store
            .find_api_key(key_hash)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        let expires_at = record.expires_at;
        let principal = principal_of(record)?;
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
        Ok(principal)
    }
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
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthenticated)?;
        state.key_cache.principal(&state, &hash_key(key)).await?
    } else {
        Principal::anonymous()
    };

    let mut remaining = None;
    if let Some(limit) = state.services.api.rate_limit_rpm {
        let now = state.services.clock.now();
        let window = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let reset = (window + TimeDelta::minutes(1) - now).num_seconds().max(1) as u64;
        // A tenant's keys share its budget; an untenanted key has its own, per actor.
        let bucket = match &principal.tenant {
            Some(tenant) => tenant.clone(),
            None => format!("actor:{}", principal.actor),
        };
        let hits = state.services.store.hit_rate_limit(&bucket, window).await?;
        if hits == 1 {
            // First request of this bucket in a new minute: forget windows that cannot matter.
            state
                .services
                .store
                .prune_rate_limits(window - TimeDelta::minutes(2))
                .await?;
        }
        if hits > i64::from(limit) {
            state.metrics.count_rate_limited(&bucket);
            return Err(ApiError::RateLimited {
                limit,
                retry_after: reset,
            });
        }
        remaining = Some((limit, i64::from(limit) - hits, reset));
    }

    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some((limit, left, reset)) = remaining {
        let headers = response.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", limit.to_string()),
            ("ratelimit-remaining", left.to_string()),
            ("ratelimit-reset", reset.to_string()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    Ok(response)
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
