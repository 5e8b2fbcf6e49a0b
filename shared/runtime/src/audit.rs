//! The audit chain's verification and retention, over the store: `GET /v1/audit/verify` and
//! `converge audit verify` read through [`verify_chain`]; the scheduled sweep runs
//! [`apply_retention`]. The rules (what a link is, what breaks one) are
//! `converge_core::audit`'s.

use chrono::{DateTime, Utc};
use converge_core::audit::{Anchor, Break, Head, Link, SigningKey, Verifier};
use converge_store::{Store, StoreError};

use crate::config::AuditSettings;

/// Events read per query while verifying.
const PAGE: u32 = 1_000;
/// Events or outbox rows removed per transaction by retention.
const PRUNE_BATCH: u32 = 1_000;
/// The most events one sweep prunes per chain (the next sweep goes on).
const PRUNE_PER_SWEEP: u64 = 100_000;

/// Whether an anchor's signature was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorSignature {
    /// Signed with the configured key.
    Valid,
    /// Not signed with the configured key: the anchor was forged or the key changed.
    Invalid,
    /// No key is configured here, so the signature could not be checked.
    Unchecked,
}

/// What verifying (part of) a chain found.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    /// The chain (tenant; empty for events without one).
    pub chain: String,
    /// The chain's head, if it ever had events.
    pub head: Option<Head>,
    /// The anchor pruning left, with whether its signature holds.
    pub anchor: Option<(Anchor, AnchorSignature)>,
    /// The first position checked.
    pub from_index: i64,
    /// How many events were found sound.
    pub checked: u64,
    /// The first break found.
    pub first_broken: Option<Break>,
    /// An event of the tenant that is in no chain (written around it).
    pub unchained_event: Option<String>,
    /// Where to go on when the check stopped at its limit (the last position checked).
    pub next_after: Option<i64>,
}

impl ChainCheck {
    /// `valid`, `broken`, or `unverifiable` (sound as far as it goes, but an anchor's
    /// signature could not be checked).
    pub fn status(&self) -> &'static str {
        if self.first_broken.is_some() || self.unchained_event.is_some() {
            "broken"
        } else if matches!(self.anchor, Some((_, AnchorSignature::Unchecked))) {
            "unverifiable"
        } else {
            "valid"
        }
    }
}

/// Why a verification could not start.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `after` names a position the chain does not hold.
    #[error("the chain has no event at position {0} to go on from")]
    NoSuchPosition(i64),
}

/// Verifies up to `limit` events of `chain`: from its start (or its anchor), or after position
/// `after` when going on from an earlier call (whose stored hash is then the starting point).
/// Reads a page at a time: memory stays constant however long the chain. The chain is checked
/// up to the head read first (events appended meanwhile are the next call's); when retention
/// pruned past the anchor read first, so that the start looks cut, it starts again from the
/// new anchor (at most twice).
pub async fn verify_chain(
    store: &Store,
    chain: &str,
    key: Option<&SigningKey>,
    after: Option<i64>,
    limit: u64,
) -> Result<ChainCheck, VerifyError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let check = verify_once(store, chain, key, after, limit).await?;
        if check.first_broken.is_none() || after.is_some() || attempts == 3 {
            return Ok(check);
        }
        let anchor_now = store.audit_anchor(chain).await?.map(|a| a.through_index);
        if anchor_now == check.anchor.as_ref().map(|(a, _)| a.through_index) {
            return Ok(check);
        }
    }
}

async fn verify_once(
    store: &Store,
    chain: &str,
    key: Option<&SigningKey>,
    after: Option<i64>,
    limit: u64,
) -> Result<ChainCheck, VerifyError> {
    let head = store.audit_head(chain).await?;
    // Positions from here on were appended after the head was read. A chain without a head
    // has nothing to verify, unless it holds events: then its head was just created (they
    // are the next call's), or removed.
    let bound = head.as_ref().map_or(0, |h| h.next_index);
    let headless = match &head {
        Some(_) => None,
        None => match store.audit_links(chain, -1, 1).await?.into_iter().next() {
            Some(first) if store.audit_head(chain).await?.is_none() => Some(Break {
                chain_index: first.chain_index,
                event_id: first.event.as_ref().ok().map(|e| e.id.clone()),
                reason: "the chain holds events but has no head: it was removed".to_owned(),
            }),
            _ => None,
        },
    };
    let anchor = store.audit_anchor(chain).await?.map(|anchor| {
        let signature = match key {
            None => AnchorSignature::Unchecked,
            Some(key) if anchor.signed_by(key) => AnchorSignature::Valid,
            Some(_) => AnchorSignature::Invalid,
        };
        (anchor, signature)
    });
    let unchained_event = store.first_unchained_event(chain).await?;
    let mut verifier = match after {
        Some(after) => {
            let found = store.audit_links(chain, after - 1, 1).await?;
            match found.first() {
                Some(link) if link.chain_index == after => Verifier::after(after, &link.chain_hash),
                _ => return Err(VerifyError::NoSuchPosition(after)),
            }
        }
        None => Verifier::new(anchor.as_ref().map(|(a, _)| a)),
    };
    let mut check = ChainCheck {
        chain: chain.to_owned(),
        from_index: verifier.expected_index(),
        head: head.clone(),
        anchor,
        checked: 0,
        first_broken: None,
        unchained_event,
        next_after: None,
    };
    if headless.is_some() {
        check.first_broken = headless;
        return Ok(check);
    }
    if let Some((anchor, AnchorSignature::Invalid)) = &check.anchor
        && after.is_none()
    {
        check.first_broken = Some(Break {
            chain_index: anchor.through_index,
            event_id: None,
            reason: "the pruning anchor is not signed with the configured key".to_owned(),
        });
        return Ok(check);
    }
    loop {
        let room = limit.saturating_sub(verifier.checked());
        if room == 0 {
            // Stopped at the limit: whether more follows is the next call's question.
            check.checked = verifier.checked();
            check.next_after = Some(verifier.expected_index() - 1);
            return Ok(check);
        }
        let page = u32::try_from(room.min(u64::from(PAGE))).unwrap_or(PAGE);
        let links = store
            .audit_links(chain, verifier.expected_index() - 1, page)
            .await?;
        // A gap right before the page's first row is found by the check below; rows after a
        // gap are still read here because the query asks for positions beyond the last one.
        let mut exhausted = links.len() < page as usize;
        for stored in links {
            if stored.chain_index >= bound {
                exhausted = true;
                break;
            }
            let event = match stored.event {
                Ok(event) => event,
                Err(reason) => {
                    check.checked = verifier.checked();
                    check.first_broken = Some(Break {
                        chain_index: stored.chain_index,
                        event_id: None,
                        reason: format!("the stored event does not read as one: {reason}"),
                    });
                    return Ok(check);
                }
            };
            let link = Link {
                index: stored.chain_index,
                hash: stored.chain_hash,
                event,
            };
            if let Err(broken) = verifier.check(&link) {
                check.checked = verifier.checked();
                check.first_broken = Some(broken);
                return Ok(check);
            }
        }
        if exhausted {
            break;
        }
    }
    check.checked = verifier.checked();
    let head = head.unwrap_or_else(Head::genesis);
    if let Err(broken) = verifier.finish(&head) {
        check.first_broken = Some(broken);
    }
    Ok(check)
}

/// What one retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Events pruned, over every chain.
    pub events: u64,
    /// Sent outbox rows deleted.
    pub outbox: u64,
    /// Chains not pruned because they do not verify (each logged as an error).
    pub broken_chains: Vec<String>,
}

/// Applies the configured retention at `now`: each chain loses its events older than the
/// events retention (verified first, behind a signed anchor; at most 100,000 a
/// chain per pass), and sent outbox rows older than the outbox retention go. A chain that does
/// not verify is left whole and reported.
pub async fn apply_retention(
    store: &Store,
    settings: &AuditSettings,
    now: DateTime<Utc>,
) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    if let (Some(keep), Some(key)) = (settings.events, &settings.signing_key) {
        let cutoff = now - keep;
        for chain in store.audit_chain_names().await? {
            let mut pruned = 0u64;
            while pruned < PRUNE_PER_SWEEP {
                match store.prune_chain(&chain, cutoff, key, PRUNE_BATCH).await {
                    Ok(0) => break,
                    Ok(n) => pruned += n,
                    Err(StoreError::ChainBroken { chain, reason }) => {
                        tracing::error!(
                            "retention: the audit chain of tenant '{chain}' does not verify \
                             ({reason}); its events are kept: run converge audit verify"
                        );
                        report.broken_chains.push(chain);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            report.events += pruned;
        }
    }
    if let Some(keep) = settings.sent_outbox {
        let cutoff = now - keep;
        loop {
            let n = store.prune_sent_outbox(cutoff, PRUNE_BATCH).await?;
            report.outbox += n;
            if n < u64::from(PRUNE_BATCH) {
                break;
            }
        }
    }
    Ok(report)
}
