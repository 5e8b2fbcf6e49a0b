//! Pull request reviews on the code host, as a gate: the latest review of each reviewer counts
//! (a comment changes nothing, a dismissal withdraws the review it names, as on GitHub; only
//! reviewers who may write to the repository count).
//! "Changes requested" by anyone holds the intent; so does having fewer approvals than the
//! policy requires at the intent's risk level (`queue.required_approvals`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a review said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostReviewState {
    /// Approved the change.
    Approved,
    /// Asked for changes.
    ChangesRequested,
    /// Commented only.
    Commented,
    /// The review was dismissed: its verdict no longer counts.
    Dismissed,
}

/// One review of a pull request (the payload of `intent.pull_request_review`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReview {
    /// Who reviewed (the host's login).
    pub reviewer: String,
    /// What the review said.
    pub state: HostReviewState,
    /// The host's id of the review (orders reviews submitted in the same second).
    pub review_id: u64,
    /// When it was submitted (or dismissed).
    pub submitted_at: DateTime<Utc>,
    /// The commit reviewed, when the host says.
    #[serde(default)]
    pub commit_id: Option<String>,
    /// The reviewer's relation to the repository (`OWNER`, `MEMBER`, `COLLABORATOR`, …).
    #[serde(default)]
    pub association: Option<String>,
}

/// Whether a review's verdict counts: only those of reviewers who may write to the
/// repository, as on GitHub (a passer-by can neither approve nor block).
pub fn counts(review: &HostReview) -> bool {
    matches!(
        review.association.as_deref(),
        Some("OWNER" | "MEMBER" | "COLLABORATOR")
    )
}

/// Where an intent's reviews stand: each reviewer's latest verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Reviewers whose latest verdict approves, by name.
    pub approved_by: Vec<String>,
    /// Reviewers whose latest verdict asks for changes, by name.
    pub changes_requested_by: Vec<String>,
}

/// Each reviewer's latest verdict over `reviews` (any order) that [`counts`]. A dismissal
/// withdraws the review it names (by id), as on GitHub; comments change nothing.
pub fn tally(reviews: &[HostReview]) -> Tally {
    let dismissed: std::collections::HashSet<u64> = reviews
        .iter()
        .filter(|r| r.state == HostReviewState::Dismissed)
        .map(|r| r.review_id)
        .collect();
    let mut verdicts: Vec<&HostReview> = reviews
        .iter()
        .filter(|r| counts(r) && !dismissed.contains(&r.review_id))
        .filter(|r| {
            matches!(
                r.state,
                HostReviewState::Approved | HostReviewState::ChangesRequested
            )
        })
        .collect();
    verdicts.sort_by_key(|r| (r.submitted_at, r.review_id));
    let mut latest: BTreeMap<&str, HostReviewState> = BTreeMap::new();
    for review in verdicts {
        latest.insert(review.reviewer.as_str(), review.state);
    }
    let with = |wanted: HostReviewState| -> Vec<String> {
        latest
            .iter()
            .filter(|(_, state)| **state == wanted)
            .map(|(reviewer, _)| (*reviewer).to_owned())
            .collect()
    };
    Tally {
        approved_by: with(HostReviewState::Approved),
        changes_requested_by: with(HostReviewState::ChangesRequested),
    }
}

/// Why the reviews hold the intent, if they do: changes requested, or fewer approvals than
/// `required`.
pub fn approval_hold(tally: &Tally, required: u32) -> Option<String> {
    if !tally.changes_requested_by.is_empty() {
        return Some(format!(
            "changes requested by {}",
            tally.changes_requested_by.join(", ")
        ));
    }
    let approvals = tally.approved_by.len();
    if approvals < required as usize {
        return Some(format!(
            "needs {required} approval(s) on the pull request, has {approvals}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn review(reviewer: &str, state: HostReviewState, id: u64, minute: u32) -> HostReview {
        HostReview {
            reviewer: reviewer.to_owned(),
            state,
            review_id: id,
            submitted_at: Utc.with_ymd_and_hms(2026, 12, 4, 10, minute, 0).unwrap(),
            commit_id: None,
            association: Some("MEMBER".to_owned()),
        }
    }

    #[test]
    fn the_latest_verdict_of_each_reviewer_counts_and_comments_change_nothing() {
        use HostReviewState::*;
        let reviews = [
            review("ana", ChangesRequested, 1, 0),
            review("bo", Approved, 2, 1),
            review("ana", Commented, 3, 2),
        ];
        let t = tally(&reviews);
        assert_eq!(t.changes_requested_by, ["ana"]);
        assert_eq!(
            approval_hold(&t, 0).as_deref(),
            Some("changes requested by ana")
        );
        // Ana approves later: no changes requested, two approvals.
        let mut later = reviews.to_vec();
        later.push(review("ana", Approved, 4, 3));
        let t = tally(&later);
        assert_eq!((t.approved_by.len(), t.changes_requested_by.len()), (2, 0));
        assert_eq!(approval_hold(&t, 2), None);
        assert_eq!(
            approval_hold(&t, 3).as_deref(),
            Some("needs 3 approval(s) on the pull request, has 2")
        );
        // Bo's approval dismissed: one left. The order given does not matter.
        let mut dismissed = later.clone();
        dismissed.insert(0, review("bo", Dismissed, 2, 4));
        assert_eq!(tally(&dismissed).approved_by, ["ana"]);
        // Same second: the review id orders them.
        let same = [
            review("cy", Approved, 9, 5),
            review("cy", ChangesRequested, 8, 5),
        ];
        assert_eq!(tally(&same).approved_by, ["cy"]);
        assert_eq!(approval_hold(&tally(&[]), 0), None);
        // A passer-by's verdict counts neither way.
        let mut outsider = review("eve", ChangesRequested, 10, 6);
        outsider.association = Some("CONTRIBUTOR".to_owned());
        let mut anonymous = review("zed", Approved, 11, 7);
        anonymous.association = None;
        assert_eq!(tally(&[outsider, anonymous]), Tally::default());
        assert!(approval_hold(&tally(&[]), 1).is_some());
    }
}
