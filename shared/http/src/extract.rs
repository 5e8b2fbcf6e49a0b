//! Extractors whose rejections are [`ApiError`]s, so malformed input gets the error envelope
//! with a message that names the problem.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::Principal;
use crate::error::ApiError;

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::Bytes::from_request(Request::new(body), state)
            .await
            .map_err(|e| ApiError::unreadable_body(&e, crate::BODY_LIMIT_BYTES))?;
        refuse_non_object(&bytes)?;
        refuse_nul(&bytes)?;
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

/// Refuses a body that is not a JSON object: every body of the API is one, and serde would
/// otherwise read a struct from an array of its fields in order (`[]` as all defaults).
fn refuse_non_object(body: &[u8]) -> Result<(), ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ApiError::BadRequest(
            "the body must be a JSON object".to_owned(),
        )),
    }
}

/// Refuses a JSON body holding a NUL character (`\u0000`), naming where: no store column can
/// hold one, and PostgreSQL refuses it outright.
fn refuse_nul(body: &[u8]) -> Result<(), ApiError> {
    if !holds_nul_escape(body) {
        return Ok(());
    }
    // The escape may be text (an escaped backslash before "u0000"), and a body that does
    // not parse is the JSON extractor's to refuse.
    match serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| nul_path(&value, String::new()))
    {
        Some(field) => Err(ApiError::BadRequest(format!(
            "{field} holds a NUL character, which cannot be stored"
        ))),
        None => Ok(()),
    }
}

/// Whether JSON text may hold a NUL character: only as the escape `\u0000` (a raw NUL byte is
/// not valid JSON, and the parser refuses it).
pub(crate) fn holds_nul_escape(body: &[u8]) -> bool {
    // Backslashes are rare in real bodies: find them with a vectorised search, then look at
    // what follows each (this scan runs over every webhook body).
    memchr::memchr_iter(b'\\', body).any(|at| {
        body.get(at + 1..at + 6)
            .is_some_and(|w| w[0].eq_ignore_ascii_case(&b'u') && &w[1..] == b"0000")
    })
}

/// The path (`semantic.title`, `checks_required[2]`) of the first string or key holding a NUL.
pub(crate) fn nul_path(value: &Value, at: String) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => Some(if at.is_empty() {
            "(body)".to_owned()
        } else {
            at
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(&key.replace('\0', "\\u0000")))
            } else {
                nul_path(item, join(key))
            }
        }),
        _ => None,
    }
}

/// Refuses a NUL character in the path or the query string (percent-encoded as `%00`), naming
/// the query parameter that holds it.
fn refuse_nul_in_uri(parts: &Parts) -> Result<(), ApiError> {
    let encoded_nul = |s: &str| s.to_ascii_lowercase().contains("%00");
    if encoded_nul(parts.uri.path()) {
        return Err(ApiError::BadRequest(
            "the path holds a NUL character".to_owned(),
        ));
    }
    if let Some(query) = parts.uri.query()
        && let Some(pair) = query.split('&').find(|pair| encoded_nul(pair))
    {
        let name = pair.split('=').next().unwrap_or_default();
        return Err(ApiError::BadRequest(format!(
            "query parameter '{name}' holds a NUL character"
        )));
    }
    Ok(())
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul_in_uri(parts)?;
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul_in_uri(parts)?;
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthenticated)
    }
}

/// A JSON body that may be absent: no body at all means `T::default()`. A body that is sent
/// must be a JSON object; whitespace alone is not JSON and is refused like any other
/// unreadable body (the schema-driven fuzzer sends a lone tab and expects a 400).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::unreadable_body(&e, crate::BODY_LIMIT_BYTES))?;
        if body.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        refuse_non_object(&body)?;
        refuse_nul(&body)?;
        serde_json::from_slice(&body)
            .map(OptionalJson)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// The largest magnitude below which every integer is a float (2^53).
const EXACT_FLOAT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// Deserializes an optional integer field, taking an integral number written with a fraction
/// (`3.0`) as the integer it is: JSON Schema's `integer` includes it, so a request the
/// document calls valid is not refused for it. Anything else not integral, or out of the
/// field's range, is an error naming the value.
pub(crate) fn integral<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::Deserialize;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
        .or_else(|| {
            // Only where a float holds every integer exactly: past 2^53 the written digits
            // are already lost (an out-of-range -9223372036854775809 reads as i64::MIN).
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT_FLOAT_INTEGERS)
                .map(|f| f as i128)
        });
    whole
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("expected an integer in range, got {number}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_escape_is_found_wherever_it_is_and_nothing_else_counts() {
        for held in [
            &br#"\u0000"#[..],
            br#"{"a":"x\u0000"}"#,
            br#"{"a":"\\\U0000"}"#,
            br#"\\u0000"#,
        ] {
            assert!(holds_nul_escape(held), "{}", String::from_utf8_lossy(held));
        }
        for clean in [
            &b""[..],
            br#"{"a":"x"}"#,
            br#"{"a":"\u0001"}"#,
            br#"{"a":"\n0000"}"#,
            br#"\u000"#,
            br#"\"#,
        ] {
            assert!(
                !holds_nul_escape(clean),
                "{}",
                String::from_utf8_lossy(clean)
            );
        }
    }

    #[derive(serde::Deserialize)]
    struct Priority {
        #[serde(default, deserialize_with = "integral")]
        value: Option<i64>,
    }

    fn priority(json: &str) -> Result<Option<i64>, String> {
        serde_json::from_str::<Priority>(json)
            .map(|p| p.value)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_integer_field_takes_what_json_schema_calls_an_integer_and_nothing_else() {
        assert_eq!(priority(r#"{"value": 3}"#), Ok(Some(3)));
        assert_eq!(priority(r#"{"value": 356.0}"#), Ok(Some(356)));
        assert_eq!(priority(r#"{"value": -2e3}"#), Ok(Some(-2000)));
        assert_eq!(priority(r#"{"value": null}"#), Ok(None));
        assert_eq!(priority("{}"), Ok(None));
        for refused in ["3.5", "\"3\"", "-9223372036854775809", "1e300", "true"] {
            let json = format!(r#"{{"value": {refused}}}"#);
            assert!(priority(&json).is_err(), "{refused} was taken");
        }
    }

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    struct Reason {
        #[serde(default)]
        reason: Option<String>,
    }

    async fn optional(body: &'static str) -> Result<Reason, ApiError> {
        let request = Request::builder()
            .body(axum::body::Body::from(body))
            .expect("a request");
        OptionalJson::<Reason>::from_request(request, &())
            .await
            .map(|OptionalJson(reason)| reason)
    }

    #[tokio::test]
    async fn an_optional_body_is_absent_only_when_nothing_is_sent() {
        assert_eq!(optional("").await.ok(), Some(Reason::default()));
        assert_eq!(
            optional(r#" {"reason": "why"} "#).await.ok(),
            Some(Reason {
                reason: Some("why".to_owned())
            })
        );
        for refused in ["\t", " ", "\n\n", "[]", "null", "{"] {
            let body: &'static str = Box::leak(
                refused
                    .replace("\\t", "\t")
                    .replace("\\n", "\n")
                    .into_boxed_str(),
            );
            assert!(
                matches!(optional(body).await, Err(ApiError::BadRequest(_))),
                "{refused:?} was taken"
            );
        }
    }
}
