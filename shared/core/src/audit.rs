//! The audit chain: each tenant's events form a hash chain, extended inside the transaction
//! that appends them, so that altering, deleting or reordering a stored event is detectable.
//!
//! Event `i` of a chain (its position, `chain_index`, from 0) stores
//! `hash_i = sha256_hex(hash_{i-1} | i | canonical JSON of the event)`, with [`GENESIS`] before
//! the first. The canonical JSON holds every field of the event (id, trace id, timestamp to the
//! microsecond, type, intent, agent, tenant, payload, evidence) with object keys sorted, so it
//! is the same whichever database stored the event. Events without a tenant form the chain of
//! the tenant `""`.
//!
//! Pruning removes a prefix of a chain and leaves an [`Anchor`]: the index and hash of the last
//! event removed, signed with the operator's key (HMAC-SHA256), so the remaining events still
//! verify from a point nobody without the key could forge. This fixes the original, whose chain
//! was never maintained on append and broke as soon as it was initialised.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Event;

/// The hash before the first event of every chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain an event belongs to: its tenant, or `""` for events without one.
pub fn chain_of(tenant: Option<&str>) -> &str {
    tenant.unwrap_or("")
}

/// The hash of the event at `index` whose predecessor's hash is `previous`.
pub fn link_hash(previous: &str, index: i64, event: &Event) -> String {
    link_hash_of_record(previous, index, &link_record(event))
}

/// The text of `event` its link hashes: the canonical JSON of its stored fields. It does not
/// depend on the chain, so it can be made before the chain's head is locked (PostgreSQL's
/// commits hash it in SQL, `sha256(previous | index | record)`, with the head's lock held).
pub fn link_record(event: &Event) -> String {
    let record = json!({
        "id": event.id,
        "trace_id": event.trace_id,
        "timestamp": timestamp(event.timestamp),
        "event_type": event.event_type.as_str(),
        "intent_id": event.intent_id,
        "agent_id": event.agent_id,
        "tenant_id": event.tenant_id,
        "payload": event.payload,
        "evidence": event.evidence,
    });
    let mut text = String::with_capacity(256);
    canonical(&record, &mut text);
    text
}

/// [`link_hash`] of an event whose [`link_record`] is `record`.
pub fn link_hash_of_record(previous: &str, index: i64, record: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(previous.as_bytes());
    digest.update(b"|");
    digest.update(index.to_string().as_bytes());
    digest.update(b"|");
    digest.update(record.as_bytes());
    hex(&digest.finalize())
}

/// A chain's end: the index the next event takes and the hash it links to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    /// How many events the chain has had (pruned ones included): the next event's index.
    pub next_index: i64,
    /// The hash of the last event ([`GENESIS`] for an empty chain).
    pub last_hash: String,
}

impl Head {
    /// The head of a chain without events.
    pub fn genesis() -> Head {
        Head {
            next_index: 0,
            last_hash: GENESIS.to_owned(),
        }
    }

    /// Extends the chain by `event`: returns the index and hash it is stored with.
    pub fn append(&mut self, event: &Event) -> (i64, String) {
        let index = self.next_index;
        let hash = link_hash(&self.last_hash, index, event);
        self.next_index += 1;
        self.last_hash.clone_from(&hash);
        (index, hash)
    }
}

/// What a pruning left behind: the last event it removed, signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The chain (tenant, `""` for none).
    pub chain: String,
    /// The index of the last event removed; the chain goes on at the next.
    pub through_index: i64,
    /// That event's hash.
    pub through_hash: String,
    /// How many events prunings removed from this chain in all.
    pub pruned_events: i64,
    /// When the anchor was written.
    pub created_at: DateTime<Utc>,
    /// HMAC-SHA256 under the signing key, hex, of the anchor's chain, positions, hash, count
    /// and time.
    pub signature: String,
}

/// The key anchors are signed with (`CONVERGE_AUDIT_SIGNING_KEY`). Never printed.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// A key from its bytes; at least 32 are required.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<SigningKey, AuditError> {
        let bytes = bytes.into();
        if bytes.len() < 32 {
            return Err(AuditError::WeakKey(bytes.len()));
        }
        Ok(SigningKey(bytes))
    }

    fn mac(&self) -> hmac::Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why an audit operation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The signing key is too short to be a secret.
    #[error("the audit signing key must be at least 32 bytes, got {0}")]
    WeakKey(usize),
}

impl Anchor {
    /// An anchor for a pruning through `through_index`, signed with `key`.
    pub fn sign(
        key: &SigningKey,
        chain: &str,
        through_index: i64,
        through_hash: &str,
        pruned_events: i64,
        created_at: DateTime<Utc>,
    ) -> Anchor {
        let mut anchor = Anchor {
            chain: chain.to_owned(),
            through_index,
            through_hash: through_hash.to_owned(),
            pruned_events,
            created_at,
            signature: String::new(),
        };
        let mut mac = key.mac();
        mac.update(anchor.message().as_bytes());
        anchor.signature = hex(&mac.finalize().into_bytes());
        anchor
    }

    /// What the signature covers.
    fn message(&self) -> String {
        format!(
            "converge-audit-anchor|v1|{}|{}|{}|{}|{}",
            self.chain,
            self.through_index,
            self.through_hash,
            self.pruned_events,
            timestamp(self.created_at)
        )
    }

    /// Whether the signature is `key`'s over this anchor (constant time).
    pub fn signed_by(&self, key: &SigningKey) -> bool {
        let Some(signature) = unhex(&self.signature) else {
            return false;
        };
        let mut mac = key.mac();
        mac.update(self.message().as_bytes());
        mac.verify_slice(&signature).is_ok()
    }
}

/// One stored event of a chain, as verification reads it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Its position in the chain.
    pub index: i64,
    /// The hash stored with it.
    pub hash: String,
    /// The event as stored.
    pub event: Event,
}

/// The first thing found wrong in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The position where the chain breaks.
    pub chain_index: i64,
    /// The event found there, if any.
    pub event_id: Option<String>,
    /// What is wrong, for a person.
    pub reason: String,
}

/// Checks a chain link by link, in index order, holding only the last hash (constant memory
/// however long the chain).
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_index: i64,
    previous: String,
    checked: u64,
}

impl Verifier {
    /// A verifier from the chain's start, or from an anchor (whose signature the caller has
    /// checked).
    pub fn new(anchor: Option<&Anchor>) -> Verifier {
        match anchor {
            Some(anchor) => Verifier {
                expected_index: anchor.through_index + 1,
                previous: anchor.through_hash.clone(),
                checked: 0,
            },
            None => Verifier {
                expected_index: 0,
                previous: GENESIS.to_owned(),
                checked: 0,
            },
        }
    }

    /// A verifier that goes on after a link already checked (the next page of a chain).
    pub fn after(index: i64, hash: &str) -> Verifier {
        Verifier {
            expected_index: index + 1,
            previous: hash.to_owned(),
            checked: 0,
        }
    }

    /// The index the next link must have.
    pub fn expected_index(&self) -> i64 {
        self.expected_index
    }

    /// The hash the next link must build on.
    pub fn previous_hash(&self) -> &str {
        &self.previous
    }

    /// How many links were found sound.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Checks the next link.
    pub fn check(&mut self, link: &Link) -> Result<(), Break> {
        if link.index != self.expected_index {
            let reason = if link.index > self.expected_index {
                format!(
                    "events {} to {} are missing",
                    self.expected_index,
                    link.index - 1
                )
            } else {
                format!(
                    "position {} appears again (expected {})",
                    link.index, self.expected_index
                )
            };
            return Err(Break {
                chain_index: self.expected_index,
                event_id: Some(link.event.id.clone()),
                reason,
            });
        }
        let hash = link_hash(&self.previous, link.index, &link.event);
        if hash != link.hash {
            return Err(Break {
                chain_index: link.index,
                event_id: Some(link.event.id.clone()),
                reason: "the event does not match its hash: it was altered, moved, or an \
                         event before it was replaced"
                    .to_owned(),
            });
        }
        self.previous = hash;
        self.expected_index += 1;
        self.checked += 1;
        Ok(())
    }

    /// Checks that the chain ends where its head says, after the last link.
    pub fn finish(&self, head: &Head) -> Result<(), Break> {
        if head.next_index != self.expected_index {
            return Err(Break {
                chain_index: self.expected_index,
                event_id: None,
                reason: if head.next_index > self.expected_index {
                    format!(
                        "the chain's last {} event(s) are missing (the head counts {})",
                        head.next_index - self.expected_index,
                        head.next_index
                    )
                } else {
                    format!(
                        "the chain holds events beyond its head ({} counted)",
                        head.next_index
                    )
                },
            });
        }
        if head.last_hash != self.previous {
            return Err(Break {
                chain_index: self.expected_index - 1,
                event_id: None,
                reason: "the last event's hash differs from the head's".to_owned(),
            });
        }
        Ok(())
    }
}

/// Writes `value` as the chain hashes it, so that every store gives back the text it was
/// hashed from: object keys sorted (serde_json's maps are ordered, no `preserve_order`), and a
/// number with an integral value written as an integer. PostgreSQL's `jsonb` keeps numbers as
/// decimals, so `5.0`, `-0.0` and `1e16` come back as `5.0`, `0.0` and `10000000000000000`:
/// as integers, each is written the same before and after.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&value.to_string()),
        Value::Number(number) => match number.as_f64() {
            Some(f)
                if number.is_f64()
                    && f.fract() == 0.0
                    && (-9.223_372_036_854_776e18..1.844_674_407_370_955_2e19).contains(&f) =>
            {
                if f < 0.0 {
                    out.push_str(&(f as i64).to_string());
                } else {
                    out.push_str(&(f as u64).to_string());
                }
            }
            _ => out.push_str(&number.to_string()),
        },
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (n, (key, item)) in map.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(item, out);
            }
            out.push('}');
        }
    }
}

/// A timestamp as chains hash it: RFC 3339, UTC, microseconds, `Z`.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;
    use chrono::TimeZone;

    fn event(n: u32) -> Event {
        let mut event = Event::about_intent(
            format!("ev-{n}"),
            "trace-1",
            Utc.timestamp_opt(1_700_000_000 + i64::from(n), 123_456_000)
                .unwrap(),
            EventType::IntentCreated,
            format!("intent-{n}"),
            json!({"b": [1, 2.5, {"z": null, "a": "x"}], "a": n}),
        );
        event.tenant_id = Some("acme".to_owned());
        event
    }

    fn chain(n: u32) -> (Vec<Link>, Head) {
        let mut head = Head::genesis();
        let links = (0..n)
            .map(|i| {
                let event = event(i);
                let (index, hash) = head.append(&event);
                Link { index, hash, event }
            })
            .collect();
        (links, head)
    }

    fn verify(links: &[Link], head: &Head, anchor: Option<&Anchor>) -> Result<u64, Break> {
        let mut verifier = Verifier::new(anchor);
        for link in links {
            verifier.check(link)?;
        }
        verifier.finish(head)?;
        Ok(verifier.checked())
    }

    #[test]
    fn a_sound_chain_verifies_and_every_kind_of_tampering_is_found_where_it_is() {
        let (links, head) = chain(6);
        assert_eq!(verify(&links, &head, None), Ok(6));

        let mut altered = links.clone();
        altered[3].event.payload["a"] = json!(99);
        assert_eq!(verify(&altered, &head, None).unwrap_err().chain_index, 3);

        let mut evidence = links.clone();
        evidence[2].event.evidence = json!({"reason": "forged"});
        assert_eq!(verify(&evidence, &head, None).unwrap_err().chain_index, 2);

        let mut deleted = links.clone();
        deleted.remove(4);
        let found = verify(&deleted, &head, None).unwrap_err();
        assert_eq!(found.chain_index, 4);
        assert!(found.reason.contains("missing"), "{}", found.reason);

        let truncated = &links[..5];
        let found = verify(truncated, &head, None).unwrap_err();
        assert_eq!((found.chain_index, found.event_id), (5, None));

        // Two events trade places (their positions stay in order, their contents move).
        let mut swapped = links.clone();
        let (first, second) = (swapped[1].event.clone(), swapped[2].event.clone());
        swapped[1].event = second;
        swapped[2].event = first;
        assert_eq!(verify(&swapped, &head, None).unwrap_err().chain_index, 1);

        // The same, hashes moved along with their events.
        let mut moved = links.clone();
        moved.swap(1, 2);
        (moved[1].index, moved[2].index) = (1, 2);
        assert_eq!(verify(&moved, &head, None).unwrap_err().chain_index, 1);

        // A forger who rewrites an event and every hash after it still meets the head.
        let mut rewritten = links.clone();
        rewritten[5].event.payload["a"] = json!(7);
        rewritten[5].hash = link_hash(&rewritten[4].hash, 5, &rewritten[5].event);
        let found = verify(&rewritten, &head, None).unwrap_err();
        assert!(found.reason.contains("head"), "{}", found.reason);
    }

    #[test]
    fn the_hash_does_not_depend_on_the_order_keys_were_written_in() {
        let mut a = event(1);
        let mut b = event(1);
        a.payload = serde_json::from_str(r#"{"x": 1, "y": {"q": 2, "p": 3}}"#).unwrap();
        b.payload = serde_json::from_str(r#"{"y": {"p": 3, "q": 2}, "x": 1}"#).unwrap();
        assert_eq!(link_hash(GENESIS, 0, &a), link_hash(GENESIS, 0, &b));
        assert_ne!(link_hash(GENESIS, 0, &a), link_hash(GENESIS, 1, &a));
    }

    #[test]
    fn numbers_hash_alike_however_a_database_gives_them_back() {
        for (written, stored) in [
            ("5.0", "5"),
            ("-0.0", "0.0"),
            ("1e16", "10000000000000000"),
            ("1e19", "10000000000000000000"),
            ("-3e5", "-300000"),
            ("0.1", "0.1"),
            ("1e300", "1e300"),
        ] {
            let mut a = event(1);
            let mut b = event(1);
            a.payload = serde_json::from_str(&format!("{{\"n\": [{written}]}}")).unwrap();
            b.payload = serde_json::from_str(&format!("{{\"n\": [{stored}]}}")).unwrap();
            assert_eq!(
                link_hash(GENESIS, 0, &a),
                link_hash(GENESIS, 0, &b),
                "{written}"
            );
        }
        let mut a = event(1);
        let mut b = event(1);
        a.payload = json!({"n": 0.1});
        b.payload = json!({"n": 0.2});
        assert_ne!(link_hash(GENESIS, 0, &a), link_hash(GENESIS, 0, &b));
    }

    #[test]
    fn an_anchor_continues_a_pruned_chain_and_only_its_key_signs_it() {
        let key = SigningKey::new(vec![7u8; 32]).unwrap();
        let (links, head) = chain(6);
        let at = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let anchor = Anchor::sign(&key, "acme", 2, &links[2].hash, 3, at);
        assert!(anchor.signed_by(&key));
        assert_eq!(verify(&links[3..], &head, Some(&anchor)), Ok(3));

        let other = SigningKey::new(vec![8u8; 40]).unwrap();
        assert!(!anchor.signed_by(&other));
        let mut moved = anchor.clone();
        moved.through_index = 3;
        assert!(!moved.signed_by(&key));
        let mut garbage = anchor.clone();
        garbage.signature = "zz".to_owned();
        assert!(!garbage.signed_by(&key));

        // Pruning more than the anchor says leaves a gap.
        let found = verify(&links[4..], &head, Some(&anchor)).unwrap_err();
        assert_eq!(found.chain_index, 3);
        assert_eq!(
            SigningKey::new(vec![1u8; 31]).unwrap_err(),
            AuditError::WeakKey(31)
        );
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }
}
