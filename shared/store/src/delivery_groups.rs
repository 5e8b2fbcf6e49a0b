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
//!   cannot leave the others waiting. Where a panic unwinds (tests; release builds abort), a
//!   group's task that dies drops its deliveries' answers, their callers decide alone, and
//!   another task takes the deliveries still waiting.

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
    // Should a decision panic, the next task takes over the deliveries still waiting.
    let _handover = Handover(groups.clone());
    loop {
        let group: Vec<_> = {
            let mut waiting = groups
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if waiting.queue.is_empty() {
                waiting.writing = false;
                return;
            }
            let take = waiting.queue.len().min(MOST_IN_A_GROUP);
            waiting.queue.drain(..take).collect()
        };
        let (members, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let size = members.len();
        match groups.store.decide_for_deliveries(members).await {
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

/// On a task's end by panic, starts another for the deliveries still waiting (a normal end
/// leaves none, and `writing` cleared).
struct Handover<T: Send + 'static>(DeliveryGroups<T>);

impl<T: Send + 'static> Drop for Handover<T> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut waiting = self
            .0
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if waiting.queue.is_empty() {
            waiting.writing = false;
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(write_groups(self.0.clone()));
        } else {
            waiting.writing = false;
        }
    }
}
