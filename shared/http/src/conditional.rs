//! Conditional GETs and the page cache: an answer a client already holds is not sent again,
//! and a page this instance already made is not made again.
//!
//! The entity tag is a digest of the exact bytes served, so it changes with anything a reader
//! could see change: a write that moves an intent bumps its row's version and changes its
//! body, and a list that gains, loses or reorders an intent changes its bytes. A request whose
//! `If-None-Match` names the current tag gets 304 with no body. These answers may be kept by
//! the client only (`private`) and must be revalidated before each use (`no-cache`).
//!
//! [`PageCache`] keeps the serialised pages of intents lists with the version of the tenant's
//! intents they were read at (`Store::intents_version`, which every commit that changes one of
//! them moves). A request reads the version first and is served the kept bytes only while it
//! is unchanged, so a committed write is never hidden, on this instance or another.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A JSON answer, serialised, with its entity tag.
#[derive(Debug, Clone)]
pub(crate) struct Serialised {
    body: Bytes,
    tag: String,
}

impl Serialised {
    /// Serialises `value` and tags the bytes.
    pub(crate) fn of<T: serde::Serialize>(value: &T) -> Result<Serialised, ApiError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| ApiError::Internal(format!("cannot serialise the answer: {e}")))?;
        let tag = entity_tag(&body);
        Ok(Serialised {
            body: Bytes::from(body),
            tag,
        })
    }

    /// The answer to a GET: the JSON with its `ETag`, or 304 when the request's
    /// `If-None-Match` already names it.
    pub(crate) fn answer(&self, request: &HeaderMap) -> Result<Response, ApiError> {
        let mut response = if names_tag(request, &self.tag)? {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                // A clone of `Bytes` shares the buffer: a cached page is not copied.
                self.body.clone(),
            )
                .into_response()
        };
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&self.tag) {
            headers.insert(header::ETAG, value);
        }
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
        // The same URL answers differently per caller.
        headers.insert(header::VARY, HeaderValue::from_static("x-api-key, cookie"));
        Ok(response)
    }
}

/// Serialises `value` as the JSON answer to a GET, with its `ETag`; 304 when the request's
/// `If-None-Match` already names it.
pub(crate) fn json_or_not_modified<T: serde::Serialize>(
    request: &HeaderMap,
    value: &T,
) -> Result<Response, ApiError> {
    Serialised::of(value)?.answer(request)
}

/// Reads of the intents version shared by the requests that wait for them, per reader scope.
///
/// A request may use a version read that *started after it arrived*: that read sees every
/// write committed before the request came, so the answer is as fresh as a read of its own.
/// Requests queue per scope; each read serves every request that arrived before it began,
/// so under load one read answers many requests instead of one each.
#[derive(Debug, Default)]
pub struct VersionReads {
    /// Each scope's last read, behind the lock its requests queue on (a slot's other holders
    /// are the requests inside [`VersionReads::current`] for it).
    scopes: Mutex<HashMap<Option<String>, std::sync::Arc<tokio::sync::Mutex<LastRead>>>>,
}

/// The last read of a scope's version: when it started, and what it found.
type LastRead = Option<(std::time::Instant, i64)>;

/// Scopes remembered before the idle ones are forgotten.
const VERSION_SCOPES_KEPT: usize = 10_000;

impl VersionReads {
    /// The version of `scope`'s intents as of this call or later: from a read that started
    /// after the call, its own or one another request made.
    pub(crate) async fn current<F, Fut, E>(&self, scope: Option<&str>, read: F) -> Result<i64, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<i64, E>>,
    {
        let arrived = std::time::Instant::now();
        let slot = {
            let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            if scopes.len() >= VERSION_SCOPES_KEPT {
                scopes.retain(|_, slot| std::sync::Arc::strong_count(slot) > 1);
            }
            scopes.entry(scope.map(str::to_owned)).or_default().clone()
        };
        let mut last = slot.lock().await;
        if let Some((started, version)) = *last
            && started > arrived
        {
            return Ok(version);
        }
        let started = std::time::Instant::now();
        let version = read().await?;
        *last = Some((started, version));
        Ok(version)
    }
}

/// Bytes of pages kept per instance: a few hundred default pages, a small part of the
/// process's memory.
const PAGE_CACHE_BUDGET_BYTES: usize = 4 << 20;
/// Pages kept at most, however small: bounds the scan for the least recently used one.
const PAGE_CACHE_ENTRIES: usize = 512;
/// What an entry costs beyond its body and key (tag, bookkeeping, the map's slot).
const PAGE_ENTRY_OVERHEAD_BYTES: usize = 256;

/// Pages this instance served, each with the version of the intents it was read at; the least
/// recently used go first once `PAGE_CACHE_BUDGET_BYTES` or `PAGE_CACHE_ENTRIES` is reached.
#[derive(Debug, Default)]
pub struct PageCache {
    inner: Mutex<Pages>,
}

#[derive(Debug, Default)]
struct Pages {
    entries: HashMap<String, KeptPage>,
    bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct KeptPage {
    version: i64,
    page: Serialised,
    last_used: u64,
}

/// What keeping `page` under `key` counts against the budget.
fn kept_cost(key: &str, page: &Serialised) -> usize {
    page.body.len() + key.len() + PAGE_ENTRY_OVERHEAD_BYTES
}

impl PageCache {
    /// The page kept under `key`, if it was read at `version`.
    pub(crate) fn get(&self, key: &str, version: i64) -> Option<Serialised> {
        let mut pages = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        pages.clock += 1;
        let now = pages.clock;
        let kept = pages.entries.get_mut(key)?;
        if kept.version != version {
            return None;
        }
        kept.last_used = now;
        Some(kept.page.clone())
    }

    /// Keeps `page`, read at `version`, under `key` (unless a page read at a later version is
    /// already there, or the page alone exceeds a quarter of the budget).
    pub(crate) fn put(&self, key: String, version: i64, page: Serialised) {
        let size = kept_cost(&key, &page);
        if size > PAGE_CACHE_BUDGET_BYTES / 4 {
            return;
        }
        let mut pages = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if pages
            .entries
            .get(&key)
            .is_some_and(|kept| kept.version > version)
        {
            return;
        }
        pages.clock += 1;
        let now = pages.clock;
        if let Some(old) = pages.entries.insert(
            key.clone(),
            KeptPage {
                version,
                page,
                last_used: now,
            },
        ) {
            pages.bytes -= kept_cost(&key, &old.page);
        }
        pages.bytes += size;
        while pages.bytes > PAGE_CACHE_BUDGET_BYTES || pages.entries.len() > PAGE_CACHE_ENTRIES {
            let Some(oldest) = pages
                .entries
                .iter()
                .min_by_key(|(_, kept)| kept.last_used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(gone) = pages.entries.remove(&oldest) {
                pages.bytes -= kept_cost(&oldest, &gone.page);
            }
        }
    }
}

/// A strong tag: the first 128 bits of the body's SHA-256, quoted.
fn entity_tag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in &digest[..16] {
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    tag
}

/// Whether `If-None-Match` names `tag` (weak comparison, as RFC 9110 has for this header) or
/// is `*`. A value that cannot hold entity tags (empty, or not visible ASCII and spaces) is a
/// 400, not a silent miss.
fn names_tag(request: &HeaderMap, tag: &str) -> Result<bool, ApiError> {
    let mut named = false;
    for value in request.get_all(header::IF_NONE_MATCH) {
        let bytes = value.as_bytes();
        if bytes.is_empty()
            || bytes.iter().all(|b| *b == b' ')
            || !bytes.iter().all(|b| (b' '..=b'~').contains(b))
        {
            return Err(ApiError::BadRequest(
                "If-None-Match must hold entity tags (quoted, visible ASCII) or *".to_owned(),
            ));
        }
        let value = String::from_utf8_lossy(bytes);
        named |= value
            .split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag);
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_tag_follows_the_bytes_and_is_matched_in_lists_and_weakly() {
        let tag = entity_tag(b"{\"a\":1}");
        assert_ne!(tag, entity_tag(b"{\"a\":2}"));
        assert_eq!(tag.len(), 34);
        assert!(names_tag(&asking(&tag), &tag).unwrap());
        assert!(names_tag(&asking(&format!("\"x\", W/{tag}")), &tag).unwrap());
        assert!(names_tag(&asking("*"), &tag).unwrap());
        assert!(!names_tag(&asking("\"other\""), &tag).unwrap());
        assert!(!names_tag(&HeaderMap::new(), &tag).unwrap());
        // Not entity tags: refused, not taken for a miss.
        let mut odd = HeaderMap::new();
        odd.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_bytes(b"\xc3\x97\xc3\xb8").unwrap(),
        );
        assert!(names_tag(&odd, &tag).is_err());
        assert!(names_tag(&asking(" "), &tag).is_err());
    }

    /// A read in flight when a request arrives is not its answer (a write may have committed
    /// after that read began); the next read, which began after both later arrivals, serves
    /// them both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_read_serves_only_the_requests_that_came_before_it_began() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::sync::oneshot;

        let reads = Arc::new(VersionReads::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release_first, first_waits) = oneshot::channel::<()>();
        let (release_second, second_waits) = oneshot::channel::<()>();
        let waits = Arc::new(std::sync::Mutex::new(vec![second_waits, first_waits]));
        let request = |found: i64| {
            let (reads, calls, waits) = (reads.clone(), calls.clone(), waits.clone());
            tokio::spawn(async move {
                reads
                    .current(Some("acme"), || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let wait = waits.lock().unwrap().pop().unwrap();
                        let _ = wait.await;
                        Ok::<i64, ()>(found)
                    })
                    .await
            })
        };
        // Waits (at most five seconds) until `done` holds.
        async fn until(done: impl Fn() -> bool) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "timed out");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        let first = request(1);
        until(|| calls.load(Ordering::SeqCst) == 1).await;
        // Both arrive while the first read is in flight.
        let (second, third) = (request(2), request(3));
        // The map's handle on the scope, and one per request inside `current`.
        let holders = || {
            let scopes = reads.scopes.lock().unwrap();
            scopes
                .get(&Some("acme".to_owned()))
                .map_or(0, Arc::strong_count)
        };
        until(|| holders() == 4).await;
        release_first.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        until(|| calls.load(Ordering::SeqCst) == 2).await;
        release_second.send(()).unwrap();
        let (second, third) = (second.await.unwrap(), third.await.unwrap());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the later arrivals shared one read"
        );
        let shared = second.unwrap();
        assert!(shared == 2 || shared == 3, "{shared}");
        assert_eq!(third.unwrap(), shared);
        // Another scope never shares.
        let other = reads
            .current(Some("globex"), || async { Ok::<i64, ()>(9) })
            .await;
        assert_eq!(other, Ok(9));
    }

    /// A kept page is served only at the version it was read at; an older read never
    /// replaces a newer one; the count and the bytes kept stay within their bounds.
    #[test]
    fn kept_pages_answer_only_their_version_and_stay_bounded() {
        let cache = PageCache::default();
        let page = |n: usize| Serialised::of(&serde_json::json!({"page": n})).unwrap();
        cache.put("a".into(), 7, page(7));
        assert!(cache.get("a", 7).is_some());
        assert!(cache.get("a", 8).is_none(), "served at another version");
        cache.put("a".into(), 6, page(6));
        assert_eq!(cache.get("a", 7).unwrap().body, page(7).body);
        for n in 0..2 * PAGE_CACHE_ENTRIES {
            cache.put(format!("key-{n}"), 1, page(n));
        }
        let pages = cache.inner.lock().unwrap();
        assert!(pages.entries.len() <= PAGE_CACHE_ENTRIES);
        assert!(pages.bytes <= PAGE_CACHE_BUDGET_BYTES);
        let counted: usize = pages
            .entries
            .iter()
            .map(|(key, kept)| kept_cost(key, &kept.page))
            .sum();
        assert_eq!(pages.bytes, counted);
        // The most recent ones stayed.
        assert!(
            pages
                .entries
                .contains_key(&format!("key-{}", 2 * PAGE_CACHE_ENTRIES - 1))
        );
    }

    #[test]
    fn a_matching_request_gets_304_without_a_body() {
        let value = serde_json::json!({"id": "i-1"});
        let first = json_or_not_modified(&HeaderMap::new(), &value).unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = json_or_not_modified(&asking(&tag), &value).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], tag.as_str());
        let changed = serde_json::json!({"id": "i-1", "status": "MERGED"});
        assert_eq!(
            json_or_not_modified(&asking(&tag), &changed)
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
}
