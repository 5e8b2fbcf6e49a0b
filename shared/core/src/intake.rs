//! Intake: what a change reported by the code host (a pull request opened, pushed, labelled,
//! closed; a merge group) means for its intent.
//!
//! The GitHub adapter turns a webhook payload into a [`Change`]; [`effect`] decides, from the
//! intent as it stands, which events to append (or why nothing happens). The projection then
//! applies them, so every rule here is also checked by the intent's life cycle.
//!
//! - A proposed change (opened, new head, reopened, draft or ready) creates the intent, or
//!   re-creates it: a fresh start as READY with its retries at zero, keeping its birth. A new
//!   head therefore always needs a new validation (invariant 2). A reopened pull request brings
//!   a REJECTED intent back; a MERGED one never comes back.
//! - A proposal that changes nothing the queue looks at (same refs, head, draft state and
//!   priority) is ignored, so a redelivered or repeated notification writes nothing.
//! - Closed: merged → MERGED with the merge commit; otherwise REJECTED.
//! - Labels set the priority (see [`priority_from_labels`]) without resetting anything else.
//! - A push to the branch of READY or VALIDATED intents, in the repository their branch lives in,
//!   makes their validation stale ([`revalidation_after_push`]): READY again at the pushed head
//!   (QUEUED ones are revalidated by their round, which reads where the head is).
//! - The commits the host ties to an intent (its head when proposed or pushed, the merge commit
//!   when merged, a merge group's head) are recorded as [`LinkedCommit`]s, each announced by an
//!   `intent.linked.commit` event except a pushed head (as the original).

use serde_json::{Value, json};

use crate::event::EventType;
use crate::intent::{DEFAULT_PRIORITY, Intent};

/// The prefix of priority labels: `converge/priority-0` (first) to `converge/priority-9`.
pub const PRIORITY_LABEL_PREFIX: &str = "converge/priority-";

/// The priority that a set of labels asks for: the lowest `converge/priority-N` (N from 0 to
/// 9) among them, or [`DEFAULT_PRIORITY`] when there is none.
pub fn priority_from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> i64 {
    labels
        .into_iter()
        .filter_map(|label| label.strip_prefix(PRIORITY_LABEL_PREFIX))
        .filter_map(|n| match n.as_bytes() {
            [digit @ b'0'..=b'9'] => Some(i64::from(digit - b'0')),
            _ => None,
        })
        .min()
        .unwrap_or(DEFAULT_PRIORITY)
}

/// A change reported by the code host.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The change as it stands now: opened, pushed, reopened, converted to draft or marked
    /// ready. `intent` is the intent it describes (id, refs, head, draft flag, priority).
    Proposed {
        /// The intent as the change describes it.
        intent: Intent,
        /// What happened (`opened`, `synchronize`, …), recorded in the event.
        trigger: String,
    },
    /// A merge group asked for checks: a new intent for the group.
    MergeGroupRequested {
        /// The merge group's intent.
        intent: Intent,
    },
    /// The change was closed.
    Closed {
        /// The intent.
        intent_id: String,
        /// Whether it was merged (by anyone).
        merged: bool,
        /// The merge commit, when merged.
        merge_commit: Option<String>,
        /// What happened, recorded in the event.
        trigger: String,
    },
    /// A merge group was dropped by the host's merge queue.
    MergeGroupDestroyed {
        /// The merge group's intent.
        intent_id: String,
        /// The host's reason.
        reason: String,
    },
    /// The change's labels now ask for this priority.
    Prioritised {
        /// The intent.
        intent_id: String,
        /// The priority the labels ask for.
        priority: i64,
    },
    /// A pull request review was submitted or dismissed.
    Reviewed {
        /// The intent.
        intent_id: String,
        /// The review.
        review: crate::approvals::HostReview,
    },
}

/// A commit the code host ties to an intent, kept beside the intent (the store's commit links).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedCommit {
    /// The repository (`owner/name`; empty when the intent names none).
    pub repo: String,
    /// The commit.
    pub sha: String,
    /// `head` (what the intent proposes) or `merge` (what merged it).
    pub role: &'static str,
}

impl LinkedCommit {
    /// The commit as `intent.linked.commit` records it, with what tied it (`trigger`).
    fn event(&self, trigger: &str) -> (EventType, Value) {
        (
            EventType::IntentLinkedCommit,
            json!({"repo": self.repo, "sha": self.sha, "role": self.role, "trigger": trigger}),
        )
    }
}

/// What a change does.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Append these events (type and payload), in order, about the intent, and keep its
    /// linked commits.
    Events {
        /// The intent concerned.
        intent_id: String,
        /// The events.
        events: Vec<(EventType, Value)>,
        /// Commits tied to the intent by the change.
        links: Vec<LinkedCommit>,
    },
    /// Nothing to do, and why.
    Ignored {
        /// The intent concerned.
        intent_id: String,
        /// Why nothing happens.
        reason: String,
    },
}

/// Decides what `change` does to the intent as it stands (`current`, `None` when unknown).
pub fn effect(current: Option<&Intent>, change: &Change) -> Effect {
    let ignored = |intent_id: &str, reason: String| Effect::Ignored {
        intent_id: intent_id.to_owned(),
        reason,
    };
    // The events, with each link announced after them.
    let linked = |intent_id: &str,
                  mut events: Vec<(EventType, Value)>,
                  links: Vec<LinkedCommit>,
                  trigger: &str| {
        events.extend(links.iter().map(|link| link.event(trigger)));
        Effect::Events {
            intent_id: intent_id.to_owned(),
            events,
            links,
        }
    };
    let events = |intent_id: &str, events| linked(intent_id, events, Vec::new(), "");
    match change {
        Change::Proposed { intent, trigger } => {
            let id = intent.id.as_str();
            match current {
                Some(existing) if existing.status == crate::Status::Merged => {
                    ignored(id, "already merged".to_owned())
                }
                Some(existing)
                    if existing.status.is_actionable() && same_proposal(existing, intent) =>
                {
                    ignored(id, "nothing the queue uses changed".to_owned())
                }
                _ => {
                    let mut payload = serde_json::to_value(intent).unwrap_or(Value::Null);
                    if let Value::Object(map) = &mut payload {
                        map.insert("trigger".into(), json!(trigger));
                    }
                    // A head already linked (a draft marked ready, say) is not linked again.
                    let new_head = intent
                        .head_sha()
                        .filter(|head| current.and_then(Intent::head_sha) != Some(*head));
                    let links = new_head
                        .map(|head| head_link(intent, head))
                        .into_iter()
                        .collect();
                    linked(
                        id,
                        vec![(EventType::IntentCreated, payload)],
                        links,
                        "pr_opened",
                    )
                }
            }
        }
        Change::MergeGroupRequested { intent } => match current {
            Some(existing) => ignored(
                &intent.id,
                format!("merge group already known ({})", existing.status),
            ),
            None => linked(
                &intent.id,
                vec![(
                    EventType::MergeGroupChecksRequested,
                    serde_json::to_value(intent).unwrap_or(Value::Null),
                )],
                intent
                    .head_sha()
                    .map(|head| head_link(intent, head))
                    .into_iter()
                    .collect(),
                "merge_group",
            ),
        },
        Change::Closed {
            intent_id,
            merged,
            merge_commit,
            trigger,
        } => match current {
            None => ignored(intent_id, "unknown intent".to_owned()),
            Some(existing) if existing.status.is_terminal() => {
                ignored(intent_id, format!("already {}", existing.status))
            }
            Some(existing) if *merged => linked(
                intent_id,
                vec![(
                    EventType::IntentMerged,
                    // `merged_commit` as every merge records it; `merged` and
                    // `merge_commit_sha` as the original's webhook did.
                    json!({"merged_commit": merge_commit, "merged": true,
                           "merge_commit_sha": merge_commit, "source": existing.source,
                           "target": existing.target, "trigger": trigger}),
                )],
                merge_commit
                    .iter()
                    .map(|sha| LinkedCommit {
                        repo: existing.repo().unwrap_or_default().to_owned(),
                        sha: sha.clone(),
                        role: "merge",
                    })
                    .collect(),
                "pr_merged",
            ),
            Some(existing) => events(
                intent_id,
                vec![(
                    EventType::IntentRejected,
                    json!({"reason": "closed without merging", "merged": false,
                           "merge_commit_sha": null, "source": existing.source,
                           "target": existing.target, "trigger": trigger}),
                )],
            ),
        },
        Change::MergeGroupDestroyed { intent_id, reason } => match current {
            None => ignored(intent_id, "unknown intent".to_owned()),
            Some(existing) if existing.status.is_terminal() => {
                ignored(intent_id, format!("already {}", existing.status))
            }
            // The host merged the group: its changes landed.
            Some(existing) if reason == "merged" => events(
                intent_id,
                vec![(
                    EventType::IntentMerged,
                    json!({"merged_commit": existing.head_sha(), "source": existing.source,
                           "target": existing.target, "trigger": "merge_group"}),
                )],
            ),
            Some(existing) => events(
                intent_id,
                vec![(
                    EventType::MergeGroupDestroyed,
                    json!({"source": existing.source, "target": existing.target,
                           "reason": reason, "trigger": "merge_group"}),
                )],
            ),
        },
        Change::Reviewed { intent_id, review } => match current {
            None => ignored(intent_id, "unknown intent".to_owned()),
            Some(existing) if existing.status.is_terminal() => {
                ignored(intent_id, format!("already {}", existing.status))
            }
            Some(_) => events(
                intent_id,
                vec![(
                    EventType::IntentPullRequestReview,
                    serde_json::to_value(review).unwrap_or(Value::Null),
                )],
            ),
        },
        Change::Prioritised {
            intent_id,
            priority,
        } => match current {
            None => ignored(intent_id, "unknown intent".to_owned()),
            Some(existing) if existing.status.is_terminal() => {
                ignored(intent_id, format!("already {}", existing.status))
            }
            Some(existing) if existing.priority == *priority => {
                ignored(intent_id, "priority unchanged".to_owned())
            }
            Some(existing) => events(
                intent_id,
                vec![(
                    EventType::IntentPriorityChanged,
                    json!({"priority": priority, "previous": existing.priority}),
                )],
            ),
        },
    }
}

/// `head` of `intent` as a linked commit.
fn head_link(intent: &Intent, head: &str) -> LinkedCommit {
    LinkedCommit {
        repo: intent.repo().unwrap_or_default().to_owned(),
        sha: head.to_owned(),
        role: "head",
    }
}

/// What a push of `new_head` to `branch` of `repo` does to `intent`: a READY or VALIDATED
/// intent of that branch of that repository (its source's repository: the fork's, for a pull
/// request from a fork) goes back to READY at the new head, its validation stale
/// (`intent.requeued`, trigger `push_revalidation`), with the head linked (silently, as the
/// original). `None`: the push does not concern it, or its head is already the pushed one (the
/// pull request's own notice of the push came first).
pub fn revalidation_after_push(
    intent: &Intent,
    repo: &str,
    branch: &str,
    new_head: &str,
) -> Option<Effect> {
    use crate::Status;
    let source_repo = intent
        .technical
        .get("head_repo")
        .and_then(Value::as_str)
        .or(intent.repo());
    let concerned = matches!(intent.status, Status::Ready | Status::Validated)
        && intent.source == branch
        && intent.repo() == Some(repo)
        && source_repo == Some(repo);
    (concerned && intent.head_sha() != Some(new_head)).then(|| Effect::Events {
        intent_id: intent.id.clone(),
        events: vec![(
            EventType::IntentRequeued,
            json!({"trigger": "push_revalidation", "branch": branch, "new_head_sha": new_head}),
        )],
        links: vec![LinkedCommit {
            repo: repo.to_owned(),
            sha: new_head.to_owned(),
            role: "head",
        }],
    })
}

/// Whether a proposal describes what the intent already is, for everything the queue uses.
fn same_proposal(existing: &Intent, proposed: &Intent) -> bool {
    existing.source == proposed.source
        && existing.target == proposed.target
        && existing.head_sha() == proposed.head_sha()
        && existing.is_draft() == proposed.is_draft()
        && existing.priority == proposed.priority
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::event::Event;
    use crate::projection::apply;

    fn pr(head: &str) -> Intent {
        let mut intent = Intent::new(
            "acme/app:pr-7",
            "feature",
            "main",
            chrono::DateTime::default(),
        );
        intent
            .technical
            .insert("initial_base_commit".into(), json!(head));
        intent
    }

    fn proposed(intent: &Intent) -> Change {
        Change::Proposed {
            intent: intent.clone(),
            trigger: "synchronize".into(),
        }
    }

    /// Applies an effect's events to `current` through the projection.
    fn fold(current: Option<&Intent>, effect: &Effect) -> Option<Intent> {
        let Effect::Events {
            intent_id, events, ..
        } = effect
        else {
            return current.cloned();
        };
        let mut row = current.cloned();
        for (event_type, payload) in events {
            let event = Event {
                id: "e".into(),
                trace_id: "t".into(),
                timestamp: chrono::DateTime::default(),
                event_type: *event_type,
                intent_id: Some(intent_id.clone()),
                agent_id: None,
                tenant_id: None,
                payload: payload.clone(),
                evidence: json!({}),
            };
            match apply(row.as_ref(), &event) {
                Ok(Some(next)) => row = Some(next),
                Ok(None) => {}
                Err(e) => panic!("{e}"),
            }
        }
        row
    }

    #[test]
    fn priority_labels_pick_the_most_urgent_and_ignore_others() {
        assert_eq!(
            priority_from_labels(["bug", "converge/priority-4", "converge/priority-1"]),
            1
        );
        assert_eq!(
            priority_from_labels(["converge/priority-10", "converge/priority-x"]),
            DEFAULT_PRIORITY
        );
        assert_eq!(priority_from_labels([]), DEFAULT_PRIORITY);
    }

    #[test]
    fn a_new_head_starts_the_intent_afresh_and_a_repeat_does_nothing() {
        let mut queued = pr("aaa");
        queued.status = Status::Queued;
        queued.retries = 2;
        let next = fold(Some(&queued), &effect(Some(&queued), &proposed(&pr("bbb"))));
        let next = next.unwrap_or_else(|| panic!("an intent"));
        assert_eq!(
            (next.status, next.retries, next.head_sha()),
            (Status::Ready, 0, Some("bbb"))
        );
        assert!(matches!(
            effect(Some(&next), &proposed(&pr("bbb"))),
            Effect::Ignored { .. }
        ));
    }

    #[test]
    fn reopening_revives_a_rejected_intent_but_never_a_merged_one() {
        let mut rejected = pr("aaa");
        rejected.status = Status::Rejected;
        let revived = fold(
            Some(&rejected),
            &effect(Some(&rejected), &proposed(&pr("aaa"))),
        );
        assert_eq!(revived.map(|i| i.status), Some(Status::Ready));
        let mut merged = pr("aaa");
        merged.status = Status::Merged;
        assert!(matches!(
            effect(Some(&merged), &proposed(&pr("bbb"))),
            Effect::Ignored { .. }
        ));
    }

    #[test]
    fn closing_merges_or_rejects_once() {
        let open = pr("aaa");
        let close = |merged: bool| Change::Closed {
            intent_id: open.id.clone(),
            merged,
            merge_commit: merged.then(|| "m1".to_owned()),
            trigger: "pr_closed".into(),
        };
        let merged = fold(Some(&open), &effect(Some(&open), &close(true)));
        assert_eq!(merged.as_ref().map(|i| i.status), Some(Status::Merged));
        assert!(matches!(
            effect(merged.as_ref(), &close(true)),
            Effect::Ignored { .. }
        ));
        let rejected = fold(Some(&open), &effect(Some(&open), &close(false)));
        assert_eq!(rejected.map(|i| i.status), Some(Status::Rejected));
        assert!(matches!(
            effect(None, &close(false)),
            Effect::Ignored { .. }
        ));
    }

    /// The links of an effect, as (sha, role), and the triggers of its link events.
    fn links_of(effect: &Effect) -> (Vec<(String, &'static str)>, Vec<Value>) {
        let Effect::Events { events, links, .. } = effect else {
            return (Vec::new(), Vec::new());
        };
        let triggers = events
            .iter()
            .filter(|(t, _)| *t == EventType::IntentLinkedCommit)
            .map(|(_, p)| p["trigger"].clone())
            .collect();
        (
            links.iter().map(|l| (l.sha.clone(), l.role)).collect(),
            triggers,
        )
    }

    #[test]
    fn a_proposed_head_is_linked_once_and_a_merge_links_its_commit() {
        let mut opened = pr("aaa");
        opened.technical.insert("repo".into(), json!("acme/app"));
        let first = effect(None, &proposed(&opened));
        assert_eq!(
            links_of(&first),
            (vec![("aaa".to_owned(), "head")], vec![json!("pr_opened")])
        );
        let Effect::Events { links, .. } = &first else {
            panic!("events")
        };
        assert_eq!(links[0].repo, "acme/app");
        // Marked draft: created again, the head unchanged and not linked again.
        let current = fold(None, &first).unwrap_or_else(|| panic!("an intent"));
        let mut draft = opened.clone();
        draft.technical.insert("draft".into(), json!(true));
        assert_eq!(
            links_of(&effect(Some(&current), &proposed(&draft))),
            (vec![], vec![])
        );
        // Merged by the host with a merge commit: linked as the merge.
        let close = Change::Closed {
            intent_id: opened.id.clone(),
            merged: true,
            merge_commit: Some("m1".into()),
            trigger: "pull_request.closed".into(),
        };
        let closed = effect(Some(&current), &close);
        assert_eq!(
            links_of(&closed),
            (vec![("m1".to_owned(), "merge")], vec![json!("pr_merged")])
        );
        // The link event changes nothing of the intent.
        assert_eq!(
            fold(Some(&current), &closed).map(|i| i.status),
            Some(Status::Merged)
        );
    }

    #[test]
    fn a_push_makes_ready_or_validated_intents_of_its_branch_ready_at_the_new_head() {
        let mut validated = pr("aaa");
        validated.status = Status::Validated;
        validated.technical.insert("repo".into(), json!("acme/app"));
        let pushed = revalidation_after_push(&validated, "acme/app", "feature", "bbb")
            .unwrap_or_else(|| panic!("the push concerns it"));
        let Effect::Events { events, links, .. } = &pushed else {
            panic!("events")
        };
        assert_eq!(
            events[0].1,
            json!({"trigger": "push_revalidation", "branch": "feature", "new_head_sha": "bbb"})
        );
        assert_eq!(
            (links[0].sha.as_str(), links[0].role, links[0].repo.as_str()),
            ("bbb", "head", "acme/app")
        );
        let ready = fold(Some(&validated), &pushed).unwrap_or_else(|| panic!("an intent"));
        assert_eq!(
            (ready.status, ready.head_sha()),
            (Status::Ready, Some("bbb"))
        );
        // Already at that head, READY or VALIDATED: nothing more.
        assert!(revalidation_after_push(&ready, "acme/app", "feature", "bbb").is_none());
        let mut validated_there = ready.clone();
        validated_there.status = Status::Validated;
        assert!(revalidation_after_push(&validated_there, "acme/app", "feature", "bbb").is_none());
        // Another branch, another repository, or a queued or finished intent: untouched.
        assert!(revalidation_after_push(&validated, "acme/app", "other", "bbb").is_none());
        assert!(revalidation_after_push(&validated, "acme/web", "feature", "bbb").is_none());
        for status in [Status::Queued, Status::Merged, Status::Rejected] {
            let mut other = validated.clone();
            other.status = status;
            assert!(revalidation_after_push(&other, "acme/app", "feature", "bbb").is_none());
        }
        // A pull request from a fork: its branch lives in the fork, not in the pushed repository.
        let mut forked = validated.clone();
        forked
            .technical
            .insert("head_repo".into(), json!("someone/app"));
        assert!(revalidation_after_push(&forked, "acme/app", "feature", "bbb").is_none());
        // An intent of no repository (the local repository's) is no GitHub push's concern.
        let mut local = pr("aaa");
        local.status = Status::Validated;
        assert!(revalidation_after_push(&local, "acme/app", "feature", "bbb").is_none());
    }

    #[test]
    fn labels_move_only_the_priority() {
        let mut queued = pr("aaa");
        queued.status = Status::Queued;
        queued.retries = 1;
        let change = Change::Prioritised {
            intent_id: queued.id.clone(),
            priority: 0,
        };
        let next = fold(Some(&queued), &effect(Some(&queued), &change));
        let next = next.unwrap_or_else(|| panic!("an intent"));
        assert_eq!(
            (next.priority, next.status, next.retries),
            (0, Status::Queued, 1)
        );
        assert!(matches!(
            effect(Some(&next), &change),
            Effect::Ignored { .. }
        ));
    }
}
