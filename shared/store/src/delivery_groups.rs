//! Group commit for webhook deliveries.
//!
//! Every commit that appends events joins its tenant's audit chain at commit time, under the
//! chain head's lock (PostgreSQL migration 21): concurrent deliveries take turns there, and
//! each pays a whole transaction of its own (its round trips, the commit-time trigger, the
//! wait for the head) for what is usually one intent row and two events. Deliveries that
//! arrive while others are being written instead wait and go together, decided one after the
//! other in one transaction ([`Store::decide_for_deliveries`]): at a trickle a group is one
//! delivery (no added wait), under load one transaction carries many.
//!
//! - A delivery is answered only once the transaction that holds it committed (or with why it
//!   was not written). A group that fails as a whole answers each of its deliveries "decide it
//!   alone" (the caller's own transaction), so one delivery that cannot be written does not
//!   fail the others; a database that cannot be reached answers every one with that.
//! - Groups are written by a task of their own, so a caller that gives up (a client gone)
//!   cannot leave the others waiting (its delivery is still written: the outbox's sweep then
//!   sends the queue messages it would have relayed). A task that ends without finishing (a
//!   panic in a decision where panics unwind — release builds abort —, or its runtime
//!   shutting down) drops the answers of its group and of every delivery still waiting: their
//!   callers decide alone, and the next delivery starts a new task.
//! - One group is written at a time: deliveries about unrelated intents wait for a group held
//!   up by another writer's lock on one of its intents, as they waited before for each other's
//!   commits at the audit chain's head. A delivery handed back is decided alone after its group
//!   ended, so a delivery about the same intent in the next group may land before it.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::{DeliveryDecision, Store, StoreError};

/// The most deliveries one transaction carries, so that a steady stream cannot hold one (and
/// its deliveries' answers) open for long.
const MOST_IN_A_GROUP: usize = 32;

/// The deliveries waiting for their group, and whether a task is writing groups.
pub struct DeliveryGroups<T> {
    store: Store,
    waiting: Arc<Mutex<Waiting<T>>>,
}

impl<T> Clone for DeliveryGroups<T> {
    fn clone(&self) -> Self {
        DeliveryGroups {
            store: self.store.clone(),
            waiting: self.waiting.clone(),
        }
    }
}

impl<T> std::fmt::Debug for DeliveryGroups<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryGroups").finish_non_exhaustive()
    }
}

type Answer<T> = Option<Result<T, StoreError>>;

struct Waiting<T> {
    queue: Vec<(DeliveryDecision<T>, oneshot::Sender<Answer<T>>)>,
    writing: bool,
}

impl<T: Send + 'static> DeliveryGroups<T> {
    /// Groups of deliveries written to `store`.
    pub fn new(store: Store) -> DeliveryGroups<T> {
        DeliveryGroups {
            store,
            waiting: Arc::new(Mutex::new(Waiting {
                queue: Vec::new(),
                writing: false,
            })),
        }
    }

    /// Decides `member` with the deliveries that wait with it: its answer, or `None` when it
    /// was not decided (its group failed, for another reason than an unreachable database) and
    /// the caller is to decide it alone.
    pub async fn decide(&self, member: DeliveryDecision<T>) -> Answer<T> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.queue.push((member, reply));
            !std::mem::replace(&mut waiting.writing, true)
        };
        if start {
            tokio::spawn(write_groups(self.clone()));
        }
        answer.await.unwrap_or(None)
    }
}

/// Writes groups until none waits.
async fn write_groups<T: Send + 'static>(groups: DeliveryGroups<T>) {
    let mut unfinished = Unfinished {
        groups: Some(groups.clone()),
        replies: Vec::new(),
    };
    loop {
        let group: Vec<_> = {
            let mut waiting = groups
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if waiting.queue.is_empty() {
                waiting.writing = false;
                unfinished.groups = None;
                return;
            }
            let take = waiting.queue.len().min(MOST_IN_A_GROUP);
            waiting.queue.drain(..take).collect()
        };
        let (members, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        unfinished.replies = replies;
        let size = members.len();
        let written = groups.store.decide_for_deliveries(members).await;
        let replies = std::mem::take(&mut unfinished.replies);
        match written {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that stopped waiting is not told.
                    let _ = reply.send(Some(answer));
                }
            }
            Err(StoreError::Unavailable(reason)) => {
                for reply in replies {
                    let _ = reply.send(Some(Err(StoreError::Unavailable(reason.clone()))));
                }
            }
            Err(error) => {
                if size > 1 {
                    tracing::warn!(%error, deliveries = size, "a group of deliveries failed: each is decided alone");
                }
                for reply in replies {
                    let _ = reply.send(None);
                }
            }
        }
    }
}

/// A writing task's state: dropped before the task finished (a panic, or its runtime shutting
/// down), it hands back the deliveries of the group in hand and every one still waiting (each
/// caller decides alone), after clearing the way for the next delivery to start a new task.
struct Unfinished<T> {
    /// `None` once the task finished.
    groups: Option<DeliveryGroups<T>>,
    /// Where the group in hand is answered.
    replies: Vec<oneshot::Sender<Answer<T>>>,
}

impl<T> Drop for Unfinished<T> {
    fn drop(&mut self) {
        let Some(groups) = self.groups.take() else {
            return;
        };
        let waiting = {
            let mut waiting = groups
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            waiting.writing = false;
            std::mem::take(&mut waiting.queue)
        };
        // Dropping their answers' senders tells each caller to decide alone; only now, so that
        // a caller that delivers again finds the way clear.
        drop(waiting);
        self.replies.clear();
    }
}
