//! Seeding the configured API keys into the store, which holds only their SHA-256 hashes, so
//! every instance sees the same keys, rotations and expiries: from `CONVERGE_API_KEYS` at
//! start, and from the keys' secret (`CONVERGE_API_KEYS_SECRET_ARN`) whenever it changes.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use converge_store::{ApiKeyRecord, Store, StoreError};

use crate::config::{ApiKeySpec, parse_api_keys};

/// Why keys could not be seeded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The keys' secret cannot be read, or its value does not parse (never repeated: it holds
    /// keys).
    #[error("{0}")]
    Secret(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores the keys' hashes, recording where they were configured (`origin`; `None` for the
/// environment). An expiry set by a rotation is kept.
pub async fn seed(
    store: &Store,
    now: DateTime<Utc>,
    specs: &[ApiKeySpec],
    origin: Option<&str>,
) -> Result<(), StoreError> {
    for spec in specs {
        let record = ApiKeyRecord {
            key_hash: spec.key_hash(),
            role: spec.role.to_string(),
            actor: spec.actor.clone(),
            tenant_id: spec.tenant.clone(),
            scopes: spec.scopes.clone().unwrap_or_default(),
            created_at: now,
            expires_at: None,
            origin: origin.map(str::to_owned),
        };
        store.put_api_key(&record).await?;
    }
    Ok(())
}

/// Seeds the keys listed in the secret `arn` (its current value is `text`), each recorded as
/// coming from it, then revokes the live keys that came from it and that it no longer lists:
/// removing a key from the secret is how it is withdrawn. A revoked key stays revoked if it is
/// listed again (an expiry is never lifted); a withdrawn key is replaced by a new one. Answers
/// the hashes of every key it touched, listed or revoked, for caches to forget (so a key just
/// added works at once, and one just withdrawn stops at once).
pub async fn seed_from_secret(
    store: &Store,
    now: DateTime<Utc>,
    arn: &str,
    text: &str,
) -> Result<Vec<String>, SeedError> {
    let current =
        parse_api_keys(text).map_err(|e| SeedError::Secret(format!("secret {arn}: {e}")))?;
    let origin = format!("secret:{arn}");
    seed(store, now, &current, Some(&origin)).await?;
    let listed: BTreeSet<String> = current.iter().map(ApiKeySpec::key_hash).collect();
    let mut touched: Vec<String> = listed.iter().cloned().collect();
    for key_hash in store.api_keys_from(&origin).await? {
        if !listed.contains(&key_hash) {
            store.expire_api_key(&key_hash, now).await?;
            touched.push(key_hash);
        }
    }
    Ok(touched)
}
