//! Conditional GETs: an answer a client already holds is not sent again.
//!
//! The entity tag is a digest of the exact bytes served, so it changes with anything a reader
//! could see change: a write that moves an intent bumps its row's version and changes its
//! body, and a list that gains, loses or reorders an intent changes its bytes. A request whose
//! `If-None-Match` names the current tag gets 304 with no body. These answers may be kept by
//! the client only (`private`) and must be revalidated before each use (`no-cache`).

use std::fmt::Write as _;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Serialises `value` as the JSON answer to a GET, with its `ETag`; 304 when the request's
/// `If-None-Match` already names it.
pub(crate) fn json_or_not_modified<T: serde::Serialize>(
    request: &HeaderMap,
    value: &T,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::Internal(format!("cannot serialise the answer: {e}")))?;
    let tag = entity_tag(&body);
    let mut response = if names_tag(request, &tag)? {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&tag) {
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
