//! The log and its projection: commits (events, intents rows, commit links, outbox rows in
//! one transaction), reads of intents and events, the rebuild, webhook deliveries.

/// Expands these operations for one backend (see `store_operations!`).
macro_rules! journal_operations {
    ($store:ident, $db:ty, lock = $lock:literal, skip_locked = $skip_locked:literal, lock_projection = $lock_projection:literal, intents_as_json = $intents_as_json:literal, repo_of_intent = $repo_of_intent:literal, id_list = $id_list:literal, head_of_intent = $head_of_intent:literal) => {
        impl $store {
            /// Appends events, updates the intents projection from them, and records commit
            /// links and outbox rows, all in one transaction — after checking the guard lease.
            pub async fn commit(&self, commit: &$crate::Commit) -> Result<(), $crate::StoreError> {
                let mut tx = begin_write(self).await?;
                self.write_commit(&mut tx, commit, Vec::new()).await?;
                tx.commit().await?;
                Ok(())
            }

            /// Reads an intent under the write lock, lets `decide` plan a commit from it, and
            /// commits that plan in the same transaction: the intent is read once, not before
            /// the transaction and again inside it, and an existing row cannot change between
            /// the read and the commit. (An absent one may be created meanwhile on PostgreSQL:
            /// then the commit is refused as stale, to be decided again.) `decide` runs while writers wait:
            /// it must be quick and must not wait. A plan with a guard lease is refused (a
            /// lease is locked before intents). A plan of `None` writes nothing.
            pub async fn decide_and_commit<T>(
                &self,
                intent_id: &str,
                decide: impl FnOnce(Option<&$crate::StoredIntent>) -> (Option<$crate::Commit>, T),
            ) -> Result<T, $crate::StoreError> {
                let mut tx = begin_write(self).await?;
                let stored = read_locked(&mut tx, intent_id).await?;
                let (commit, decided) = decide(stored.as_ref());
                // The decision holds for the row as read: locked, it cannot change; absent, a
                // concurrent transaction may still create it (PostgreSQL), and then the commit
                // is stale like any other made from a read.
                let mut read = Projected::read(intent_id, stored);
                read.expected = true;
                self.commit_decided(tx, commit.as_ref(), vec![read]).await?;
                Ok(decided)
            }

            /// Reads the READY and VALIDATED intents of `repo` whose source is `branch`, any
            /// tenant, at most `limit`, under their write locks; lets `decide` plan a commit from them (those a
            /// push to the branch makes stale: `converge_core::intake::revalidation_after_push`)
            /// and commits the plan in the same transaction, so no change to them lands between
            /// the read and the write. `decide` runs while writers wait: it must be quick. A plan
            /// with a guard lease is refused; a plan of `None` writes nothing.
            pub async fn decide_on_branch<T>(
                &self,
                repo: &str,
                branch: &str,
                limit: u32,
                decide: impl FnOnce(&[$crate::StoredIntent]) -> (Option<$crate::Commit>, T),
            ) -> Result<T, $crate::StoreError> {
                let mut tx = begin_write(self).await?;
                // Locked in id order, the order commits lock intents in.
                let rows = sqlx::query(concat!(
                    "SELECT * FROM intents WHERE status IN ($4, $5) AND source = $1 ",
                    "AND ", $repo_of_intent, " = $2 ORDER BY id LIMIT $3", $lock
                ))
                .bind(branch)
                .bind(repo)
                .bind(i64::from(limit))
                .bind(converge_core::Status::Ready.as_str())
                .bind(converge_core::Status::Validated.as_str())
                .fetch_all(&mut *tx)
                .await?;
                let stored = rows.iter().map(stored_intent_from_row).collect::<Result<Vec<_>, _>>()?;
                let (commit, decided) = decide(&stored);
                self.commit_decided(tx, commit.as_ref(), Vec::new()).await?;
                Ok(decided)
            }

            /// Decides for several webhook deliveries in one transaction (a group commit, see
            /// `converge_store::DeliveryGroups`): the intents they are about (if any) are locked
            /// in id order, the deliveries recorded (one already recorded, or named twice, is
            /// [`$crate::StoreError::AlreadyDelivered`] and not decided), then each delivery's
            /// `decide` plans, in the order given, from its intent as the deliveries before it
            /// left it, and everything planned is written as one commit. Each delivery's
            /// answer is its decision or why it was not made; an error of the whole is the
            /// transaction's, and nothing of it was written. A plan may hold events, commit
            /// links and outbox rows only, and its events may change no intent but its own.
            pub async fn decide_for_deliveries<T>(
                &self,
                members: Vec<$crate::DeliveryDecision<T>>,
            ) -> Result<Vec<Result<T, $crate::StoreError>>, $crate::StoreError> {
                if members.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = begin_write(self).await?;
                let ids: std::collections::BTreeSet<String> =
                    members.iter().filter_map(|m| m.intent_id.clone()).collect();
                let mut locked: std::collections::HashMap<String, $crate::StoredIntent> =
                    std::collections::HashMap::with_capacity(ids.len());
                if ids.len() == 1 {
                    for id in &ids {
                        if let Some(stored) = read_locked(&mut tx, id).await? {
                            locked.insert(id.clone(), stored);
                        }
                    }
                } else if !ids.is_empty() {
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM intents WHERE id IN (");
                    let mut list = q.separated(", ");
                    for id in &ids {
                        list.push_bind(id.as_str());
                    }
                    q.push(") ORDER BY id");
                    q.push($lock);
                    for row in q.build().fetch_all(&mut *tx).await? {
                        let stored = stored_intent_from_row(&row)?;
                        locked.insert(stored.intent.id.clone(), stored);
                    }
                }
                let deliveries: Vec<&$crate::Delivery> = members.iter().map(|m| &m.delivery).collect();
                let recorded = record_deliveries(&mut tx, &deliveries, self.now()).await?;

                let mut current: std::collections::HashMap<String, Option<$crate::StoredIntent>> =
                    ids.iter().map(|id| (id.clone(), locked.get(id).cloned())).collect();
                let mut merged = $crate::Commit::default();
                let mut answers = Vec::with_capacity(members.len());
                let mut decided_deliveries = std::collections::HashSet::with_capacity(members.len());
                for member in members {
                    let delivery = &member.delivery;
                    let first = decided_deliveries.insert(delivery.id.clone());
                    match recorded.get(&delivery.id) {
                        Some((true, _)) if first => {}
                        found => {
                            answers.push(Err($crate::StoreError::AlreadyDelivered {
                                delivery_id: delivery.id.clone(),
                                same_body: found.is_some_and(|(_, body)| *body == delivery.body_sha256),
                            }));
                            continue;
                        }
                    }
                    // A delivery about no intent decides from nothing (and changes none).
                    let mut nothing = None;
                    let state = match &member.intent_id {
                        Some(id) => current.entry(id.clone()).or_default(),
                        None => &mut nothing,
                    };
                    let (commit, decided) = (member.decide)(state.as_ref());
                    if !commit.is_plain() {
                        return Err($crate::StoreError::Config(
                            "a delivery decided in a group may only append events, commit links and outbox rows".to_owned(),
                        ));
                    }
                    for event in &commit.events {
                        let Some(about) = event.intent_id.as_deref() else { continue };
                        if !converge_core::projection::changes_projection(event.event_type) {
                            continue;
                        }
                        if member.intent_id.as_deref() != Some(about) {
                            return Err($crate::StoreError::Config(format!(
                                "a delivery decided in a group about {:?} changes {about}", member.intent_id
                            )));
                        }
                        if let Some(next) = converge_core::projection::apply(state.as_ref().map(|s| &s.intent), event)? {
                            let version = state.as_ref().map_or(0, |s| s.version) + 1;
                            *state = Some($crate::StoredIntent { intent: next, version });
                        }
                    }
                    merged.events.extend(commit.events);
                    merged.commit_links.extend(commit.commit_links);
                    merged.outbox.extend(commit.outbox);
                    answers.push(Ok(decided));
                }
                // Written from the rows as locked, with every plan's events in order: what
                // each decision saw is what the writes make of the rows.
                let reads = ids
                    .iter()
                    .map(|id| {
                        let mut read = Projected::read(id, locked.remove(id.as_str()));
                        read.expected = true;
                        read
                    })
                    .collect();
                if !(merged.events.is_empty() && merged.commit_links.is_empty() && merged.outbox.is_empty()) {
                    self.write_commit(&mut tx, &merged, reads).await?;
                }
                tx.commit().await?;
                Ok(answers)
            }

            /// Commits what a decision made under intents' locks planned, in the transaction
            /// that read them (`reads`: the intents' rows read). No plan: the
            /// transaction only read, and ends normally (cheaper than abandoning it). A plan
            /// with a guard lease is refused: a lease is locked before intents.
            async fn commit_decided<'a>(
                &self,
                mut tx: WriteTx,
                commit: Option<&'a $crate::Commit>,
                reads: Vec<Projected<'a>>,
            ) -> Result<(), $crate::StoreError> {
                let Some(commit) = commit else {
                    tx.commit().await?;
                    return Ok(());
                };
                if commit.guard.is_some() {
                    return Err($crate::StoreError::Config(
                        "a commit decided under intents' locks cannot carry a lease guard (the lease is locked first)".to_owned(),
                    ));
                }
                self.write_commit(&mut tx, commit, reads).await?;
                tx.commit().await?;
                Ok(())
            }

            /// The statements of a commit, in its transaction; `reads`: intents' rows already
            /// read under their locks in this transaction.
            async fn write_commit<'a>(
                &self,
                tx: &mut WriteTx,
                commit: &'a $crate::Commit,
                reads: Vec<Projected<'a>>,
            ) -> Result<(), $crate::StoreError> {
                // The rows of the intents this commit changes, in id order, are locked and read
                // in one statement before any event takes its sequence number: per intent, log
                // order is then the order its row changed, and commits touching several intents
                // cannot deadlock on each other. (A single intent is locked by its first
                // projection step, before its event is appended.) Locks are always taken lease
                // first, then intents.
                let touched: std::collections::BTreeSet<&str> = commit
                    .events
                    .iter()
                    .filter(|e| converge_core::projection::changes_projection(e.event_type))
                    .filter_map(|e| e.intent_id.as_deref())
                    .chain(commit.expect.iter().map(|e| e.intent_id.as_str()))
                    .collect();
                let several = touched.len() > 1;
                // Read with the lease in one statement where nothing is to come between them (a
                // delivery's row is written between the two).
                let mut read_with_lease: Option<Vec<<$db as sqlx::Database>::Row>> = None;
                if let Some(lease) = &commit.guard {
                    let (lease_row, intent_rows) = if several && commit.delivery.is_none() {
                        let rows = lease_and_intents_locked(tx, lease, &touched).await?;
                        (rows.first().map(|row| lease_of_row(row, ["lease_holder", "lease_token", "lease_expires_at"])).transpose()?, Some(rows))
                    } else {
                        let row = sqlx::query(concat!(
                            "SELECT holder, token, expires_at FROM queue_leases WHERE tenant = $1 AND repo = $2 AND target = $3",
                            $lock
                        ))
                        .bind(&lease.key.tenant)
                        .bind(&lease.key.repo)
                        .bind(&lease.key.target)
                        .fetch_optional(&mut **tx)
                        .await?;
                        (row.as_ref().map(|row| lease_of_row(row, ["holder", "token", "expires_at"])).transpose()?, None)
                    };
                    let now = self.now();
                    let current = lease_row.is_some_and(|(holder, token, expires_at)| {
                        holder.as_deref() == Some(lease.holder.as_str())
                            && token == lease.token.0
                            && expires_at.is_some_and(|e| e > now)
                    });
                    if !current {
                        return Err($crate::StoreError::StaleLease { key: lease.key.clone(), token: lease.token.0 });
                    }
                    read_with_lease = intent_rows;
                }

                if let Some(delivery) = &commit.delivery {
                    let inserted = sqlx::query(
                        "INSERT INTO webhook_deliveries (delivery_id, event_name, body_sha256, received_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(&delivery.id)
                    .bind(&delivery.event_name)
                    .bind(&delivery.body_sha256)
                    .bind(ts(self.now()))
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    if inserted == 0 {
                        let stored: Option<String> =
                            sqlx::query_scalar("SELECT body_sha256 FROM webhook_deliveries WHERE delivery_id = $1")
                                .bind(&delivery.id)
                                .fetch_optional(&mut **tx)
                                .await?;
                        return Err($crate::StoreError::AlreadyDelivered {
                            delivery_id: delivery.id.clone(),
                            same_body: stored.as_deref() == Some(delivery.body_sha256.as_str()),
                        });
                    }
                }

                let mut projected: Vec<Projected<'a>> = reads;
                if several && touched.iter().any(|id| !projected.iter().any(|p| p.id == *id)) {
                    let rows = match read_with_lease {
                        Some(rows) => rows,
                        None => {
                            let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM intents WHERE id IN (");
                            let mut ids = q.separated(", ");
                            for id in &touched {
                                ids.push_bind(*id);
                            }
                            q.push(") ORDER BY id");
                            q.push($lock);
                            q.build().fetch_all(&mut **tx).await?
                        }
                    };
                    let mut found = std::collections::HashMap::with_capacity(rows.len());
                    for row in &rows {
                        // The lease's row alone (none of the intents exists yet) reads no intent.
                        if row.try_get::<Option<String>, _>("id")?.is_none() {
                            continue;
                        }
                        let stored = stored_intent_from_row(row)?;
                        found.insert(stored.intent.id.clone(), stored);
                    }
                    for id in &touched {
                        if !projected.iter().any(|p| p.id == *id) {
                            projected.push(Projected::read(id, found.remove(*id)));
                        }
                    }
                }
                // A decision made from a read commits only if the rows it read are unchanged.
                for expected in &commit.expect {
                    let position = match projected.iter().position(|p| p.id == expected.intent_id) {
                        Some(position) => position,
                        None => {
                            let current = read_locked(tx, &expected.intent_id).await?;
                            projected.push(Projected::read(&expected.intent_id, current));
                            projected.len() - 1
                        }
                    };
                    let entry = &mut projected[position];
                    entry.expected = true;
                    if entry.version != expected.version {
                        return Err($crate::StoreError::Stale {
                            intent_id: expected.intent_id.clone(),
                            expected: expected.version,
                            found: entry.version,
                        });
                    }
                }
                for event in &commit.events {
                    let Some(intent_id) = event.intent_id.as_deref() else { continue };
                    if !converge_core::projection::changes_projection(event.event_type) {
                        continue;
                    }
                    let position = match projected.iter().position(|p| p.id == intent_id) {
                        Some(position) => position,
                        None => {
                            let current = read_locked(tx, intent_id).await?;
                            projected.push(Projected::read(intent_id, current));
                            projected.len() - 1
                        }
                    };
                    let entry = &mut projected[position];
                    entry.events.push(event);
                    if let Some(next) = converge_core::projection::apply(entry.current.as_ref(), event)? {
                        entry.current = Some(next);
                        entry.updated_at = Some(event.timestamp);
                        entry.applied += 1;
                    }
                }
                // The tenants whose intents this commit changes: their versions move last.
                let changed_tenants: std::collections::BTreeSet<String> = projected
                    .iter()
                    .filter(|p| p.applied > 0)
                    .filter_map(|p| p.current.as_ref())
                    .map(|intent| intent.tenant_id.clone().unwrap_or_default())
                    .collect();
                // Rows that existed are overwritten in one statement; new ones one by one (their
                // insert may meet a row another transaction just created).
                let (existing, new): (Vec<_>, Vec<_>) = projected.into_iter().partition(|p| p.existed);
                let rewritten: Vec<(&converge_core::Intent, chrono::DateTime<chrono::Utc>, i64)> = existing
                    .iter()
                    .filter_map(|p| Some((p.current.as_ref()?, p.updated_at?, p.version + p.applied)))
                    .collect();
                let tail = $crate::backend::LogTail {
                    events: &commit.events,
                    tallies: $crate::backend::tallies_of(&commit.events),
                    tenants: &changed_tenants,
                };
                // Where the backend leaves the tail for its commit to write (PostgreSQL), the
                // overwrite's statement carries it.
                let staged = overwrite_intents(tx, &rewritten, &tail).await?;
                for entry in new {
                    write_projected(tx, entry).await?;
                }

                for link in &commit.commit_links {
                    sqlx::query(
                        "INSERT INTO intent_commit_links (intent_id, repo, sha, role, observed_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(&link.intent_id)
                    .bind(&link.repo)
                    .bind(&link.sha)
                    .bind(&link.role)
                    .bind(ts(link.observed_at))
                    .execute(&mut **tx)
                    .await?;
                }
                let now = self.now();
                for message in &commit.outbox {
                    sqlx::query("INSERT INTO outbox (topic, payload, created_at, attempts) VALUES ($1, $2, $3, 0)")
                        .bind(&message.topic)
                        .bind(sqlx::types::Json(&message.payload))
                        .bind(ts(now))
                        .execute(&mut **tx)
                        .await?;
                }
                write_freezes(tx, &commit.freezes).await?;
                write_reviews(tx, &commit.reviews).await?;
                write_documents(tx, false, &commit.thresholds, self.now()).await?;
                write_documents(tx, true, &commit.risk_policies, self.now()).await?;
                write_intake(tx, &commit.intake).await?;
                write_agent_policies(tx, &commit.agent_policies, self.now()).await?;
                // Last, the rows every commit of a tenant shares (see `LogTail`): the events
                // join their tenants' audit chains, whose heads are locked (tenants in name
                // order) and held to the commit, so a tenant's log order is its chain order.
                if !staged {
                    append_log_tail(self, tx, tail).await?;
                }
                Ok(())
            }

            /// The version of a tenant's intents (every tenant's when `None`): it changes with
            /// every committed change to them and never comes back to an earlier value. Read it
            /// before the intents it versions: a page read after it is at least that recent.
            pub async fn intents_version(&self, tenant: Option<&str>) -> Result<i64, $crate::StoreError> {
                let version: Option<i64> = match tenant {
                    Some(tenant) => sqlx::query_scalar("SELECT version FROM tenant_versions WHERE tenant = $1")
                        .bind(tenant)
                        .fetch_optional(&self.pool)
                        .await?,
                    // Every row only grows, so their sum changes whenever one does.
                    None => sqlx::query_scalar("SELECT CAST(SUM(version) AS BIGINT) FROM tenant_versions")
                        .fetch_one(&self.pool)
                        .await?,
                };
                Ok(version.unwrap_or(0))
            }

            /// Moves every tenant's version after intents were written outside [`Self::commit`]
            /// (a rebuild, a backfill), and gives one to each tenant that had none.
            pub async fn bump_tenant_versions(&self) -> Result<(), $crate::StoreError> {
                let mut tx = begin_write(self).await?;
                bump_every_tenant_version(&mut tx).await?;
                tx.commit().await?;
                Ok(())
            }

            /// The current state of an intent with its row's version.
            pub async fn stored_intent(&self, id: &str) -> Result<Option<$crate::StoredIntent>, $crate::StoreError> {
                let row = sqlx::query("SELECT * FROM intents WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(stored_intent_from_row).transpose()
            }

            /// The current state of an intent.
            pub async fn intent(&self, id: &str) -> Result<Option<converge_core::Intent>, $crate::StoreError> {
                let row = sqlx::query("SELECT * FROM intents WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(intent_from_row).transpose()
            }

            /// Intents in queue order (priority, creation, id), filtered and paged.
            pub async fn intents(&self, filter: &$crate::IntentFilter) -> Result<Vec<converge_core::Intent>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!($intents_as_json, " FROM (SELECT * FROM intents WHERE 1 = 1"));
                if !filter.statuses.is_empty() {
                    q.push(" AND status IN (");
                    let mut list = q.separated(", ");
                    for status in &filter.statuses {
                        list.push_bind(status.as_str());
                    }
                    q.push(")");
                }
                if let Some(tenant) = &filter.tenant_id {
                    q.push(" AND tenant_id = ").push_bind(tenant.clone());
                }
                if let Some(target) = &filter.target {
                    q.push(" AND target = ").push_bind(target.clone());
                }
                if let Some(after) = &filter.after {
                    q.push(" AND (priority > ").push_bind(after.priority);
                    q.push(" OR (priority = ").push_bind(after.priority);
                    q.push(" AND (created_at > ").push_bind(ts(after.created_at));
                    q.push(" OR (created_at = ").push_bind(ts(after.created_at));
                    q.push(" AND id > ").push_bind(after.id.clone());
                    q.push("))))");
                }
                let limit = if filter.limit == 0 { 100 } else { filter.limit };
                q.push(" ORDER BY priority, created_at, id LIMIT ").push_bind(i64::from(limit));
                q.push(") AS page");
                let page: Option<String> = q.build_query_scalar().fetch_one(&self.pool).await?;
                $crate::intent_json::decode_page(page.as_deref().unwrap_or("[]"), parse_json_ts)
            }

            /// The actionable intents (READY, VALIDATED, QUEUED) of one queue key, in queue
            /// order, after `after` (from the start when `None`), at most `limit`.
            pub async fn queue_intents(&self, key: &converge_core::queue::QueueKey, after: Option<&$crate::IntentCursor>, limit: u32) -> Result<Vec<converge_core::Intent>, $crate::StoreError> {
                // Without a cursor, one that sorts before every row.
                let (priority, created_at, id) = match after {
                    Some(c) => (c.priority, c.created_at, c.id.clone()),
                    None => (
                        i64::MIN,
                        // Year 1: before any intent, and within PostgreSQL's range.
                        chrono::DateTime::<chrono::Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default(),
                        String::new(),
                    ),
                };
                // A range of the queues' index (`intents_key_idx`): the key, then queue order
                // from just after the cursor.
                let page: Option<String> = sqlx::query_scalar(concat!(
                    $intents_as_json,
                    " FROM (SELECT * FROM intents WHERE ", $crate::backend::actionable_sql!(), " ",
                    "AND COALESCE(tenant_id, '') = $1 AND ", $repo_of_intent, " = $2 AND target = $3 ",
                    "AND (priority, created_at, id) > ($5, $6, $7) ",
                    "ORDER BY priority, created_at, id LIMIT $4) AS page"
                ))
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .bind(i64::from(limit))
                .bind(priority)
                .bind(ts(created_at))
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
                $crate::intent_json::decode_page(page.as_deref().unwrap_or("[]"), parse_json_ts)
            }

            /// The actionable intents of `repo` (any tenant, any target) whose head is
            /// `head_sha`, in queue order, at most `limit`: found by the head index, whatever
            /// the length of the queues.
            pub async fn actionable_at_head(&self, repo: &str, head_sha: &str, limit: u32) -> Result<Vec<converge_core::Intent>, $crate::StoreError> {
                let page: Option<String> = sqlx::query_scalar(concat!(
                    $intents_as_json,
                    " FROM (SELECT * FROM intents WHERE ", $head_of_intent, " = $1 ",
                    "AND ", $crate::backend::actionable_sql!(), " AND ", $repo_of_intent, " = $2 ",
                    "ORDER BY priority, created_at, id LIMIT $3) AS page"
                ))
                .bind(head_sha)
                .bind(repo)
                .bind(i64::from(limit))
                .fetch_one(&self.pool)
                .await?;
                $crate::intent_json::decode_page(page.as_deref().unwrap_or("[]"), parse_json_ts)
            }

            /// An intent's latest decisions (`intent.validated`, `intent.blocked`), newest
            /// first, and the sequence number of its latest `check.reported` event.
            pub async fn decision_trail(&self, intent_id: &str, limit: u32) -> Result<$crate::DecisionTrail, $crate::StoreError> {
                // One round trip: the latest new evidence's seq (a check report or an
                // operator's reset) joined to the decisions (one row of NULL event columns when
                // there are none).
                let rows = sqlx::query(
                    "SELECT c.last_new_evidence, e.* FROM \
                     (SELECT MAX(seq) AS last_new_evidence FROM events WHERE intent_id = $1 AND event_type IN ($3, $6)) AS c \
                     LEFT JOIN (SELECT * FROM events WHERE intent_id = $1 AND event_type IN ($4, $5) \
                     ORDER BY seq DESC LIMIT $2) AS e ON 1 = 1 ORDER BY e.seq DESC",
                )
                .bind(intent_id)
                .bind(i64::from(limit))
                .bind(converge_core::EventType::CheckReported.as_str())
                .bind(converge_core::EventType::IntentValidated.as_str())
                .bind(converge_core::EventType::IntentBlocked.as_str())
                .bind(converge_core::EventType::QueueReset.as_str())
                .fetch_all(&self.pool)
                .await?;
                let last_new_evidence: Option<i64> = match rows.first() {
                    Some(row) => row.try_get("last_new_evidence")?,
                    None => None,
                };
                let mut decisions = Vec::with_capacity(rows.len());
                for row in &rows {
                    if row.try_get::<Option<i64>, _>("seq")?.is_some() {
                        decisions.push(stored_event_from_row(row)?);
                    }
                }
                Ok($crate::DecisionTrail { decisions, last_new_evidence })
            }

            /// [`Self::decision_trail`] of several intents in one query (a queue round reads
            /// its page's at once): one trail per id, in the order given, empty for an intent
            /// with no decision and no evidence.
            pub async fn decision_trails(&self, intent_ids: &[String], limit: u32) -> Result<Vec<$crate::DecisionTrail>, $crate::StoreError> {
                if intent_ids.is_empty() {
                    return Ok(Vec::new());
                }
                // Each id once: a repeated one would join its decisions twice.
                let distinct: std::collections::BTreeSet<&String> = intent_ids.iter().collect();
                let ids = serde_json::to_string(&distinct).map_err($crate::error::corrupt)?;
                // Per intent, the latest evidence's seq (one index probe) beside its newest
                // `limit` decisions (numbered newest first); an intent without decisions
                // still has its row, with NULL event columns.
                let rows = sqlx::query(concat!(
                    "WITH ids(id) AS (", $id_list, "), ",
                    "evidence AS (SELECT ids.id AS trail_of, (SELECT MAX(x.seq) FROM events AS x ",
                    "WHERE x.intent_id = ids.id AND x.event_type IN ($3, $6)) AS last_new_evidence FROM ids), ",
                    "ranked AS (SELECT e.*, ROW_NUMBER() OVER (PARTITION BY e.intent_id ORDER BY e.seq DESC) AS newest ",
                    "FROM events AS e WHERE e.intent_id IN (SELECT id FROM ids) AND e.event_type IN ($4, $5)) ",
                    "SELECT evidence.trail_of, evidence.last_new_evidence, ranked.* FROM evidence ",
                    "LEFT JOIN ranked ON ranked.intent_id = evidence.trail_of AND ranked.newest <= $1 ",
                    "ORDER BY evidence.trail_of, ranked.seq DESC"
                ))
                .bind(i64::from(limit))
                .bind(ids)
                .bind(converge_core::EventType::CheckReported.as_str())
                .bind(converge_core::EventType::IntentValidated.as_str())
                .bind(converge_core::EventType::IntentBlocked.as_str())
                .bind(converge_core::EventType::QueueReset.as_str())
                .fetch_all(&self.pool)
                .await?;
                let mut trails: std::collections::HashMap<String, $crate::DecisionTrail> =
                    std::collections::HashMap::with_capacity(intent_ids.len());
                for row in &rows {
                    let trail = trails.entry(row.try_get("trail_of")?).or_default();
                    trail.last_new_evidence = row.try_get("last_new_evidence")?;
                    if row.try_get::<Option<i64>, _>("seq")?.is_some() {
                        trail.decisions.push(stored_event_from_row(row)?);
                    }
                }
                Ok(intent_ids
                    .iter()
                    .map(|id| trails.get(id).cloned().unwrap_or_default())
                    .collect())
            }

            /// Intents counted by tenant, repository, target and status (for gauges and
            /// summaries: no row is loaded). `tenant` confines the count to one tenant.
            pub async fn intent_counts(&self, tenant: Option<&str>) -> Result<Vec<$crate::IntentCount>, $crate::StoreError> {
                self.counts_by_key(tenant, &converge_core::Status::ALL).await
            }

            /// [`Self::intent_counts`] of the actionable statuses only (READY, VALIDATED,
            /// QUEUED): the queues, without reading the rows of finished intents.
            pub async fn actionable_counts(&self, tenant: Option<&str>) -> Result<Vec<$crate::IntentCount>, $crate::StoreError> {
                let actionable: Vec<converge_core::Status> = converge_core::Status::ALL
                    .into_iter()
                    .filter(|s| s.is_actionable())
                    .collect();
                self.counts_by_key(tenant, &actionable).await
            }

            /// Intents per status (of one tenant, or all), counted by the database from the
            /// status index: no row is read.
            pub async fn status_counts(&self, tenant: Option<&str>) -> Result<Vec<(converge_core::Status, i64)>, $crate::StoreError> {
                let rows: Vec<(String, i64)> = match tenant {
                    None => sqlx::query_as("SELECT status, COUNT(*) FROM intents GROUP BY status ORDER BY status")
                        .fetch_all(&self.pool)
                        .await?,
                    Some(tenant) => sqlx::query_as(
                        "SELECT status, COUNT(*) FROM intents WHERE tenant_id = $1 GROUP BY status ORDER BY status",
                    )
                    .bind(tenant)
                    .fetch_all(&self.pool)
                    .await?,
                };
                rows.into_iter()
                    .map(|(status, n)| Ok((status.parse().map_err($crate::error::corrupt)?, n)))
                    .collect()
            }

            async fn counts_by_key(&self, tenant: Option<&str>, statuses: &[converge_core::Status]) -> Result<Vec<$crate::IntentCount>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT tenant_id, ", $repo_of_intent, " AS repo, target, status, COUNT(*) AS n FROM intents WHERE status IN ("
                ));
                let mut names = q.separated(", ");
                for status in statuses {
                    names.push_bind(status.as_str());
                }
                q.push(")");
                if let Some(tenant) = tenant {
                    q.push(" AND tenant_id = ").push_bind(tenant.to_owned());
                }
                q.push(concat!(
                    " GROUP BY tenant_id, ", $repo_of_intent, ", target, status ",
                    "ORDER BY tenant_id, repo, target, status"
                ));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        let status: String = row.try_get("status")?;
                        Ok($crate::IntentCount {
                            key: converge_core::queue::QueueKey {
                                tenant: row.try_get::<Option<String>, _>("tenant_id")?.unwrap_or_default(),
                                repo: row.try_get("repo")?,
                                target: row.try_get("target")?,
                            },
                            status: status.parse().map_err($crate::error::corrupt)?,
                            count: row.try_get("n")?,
                        })
                    })
                    .collect()
            }

            /// The latest event of `event_type` of each of `intent_ids` (those that have one),
            /// in one query: what a page listing many intents shows beside each.
            pub async fn latest_events(&self, event_type: converge_core::EventType, intent_ids: &[String]) -> Result<Vec<$crate::StoredEvent>, $crate::StoreError> {
                if intent_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let ids = serde_json::to_string(intent_ids).map_err($crate::error::corrupt)?;
                // One probe of (intent_id, event_type, seq) per intent: the type's events of
                // other intents are never read.
                let rows = sqlx::query(concat!(
                    "WITH ids(id) AS (", $id_list, ") ",
                    "SELECT e.* FROM events AS e WHERE e.seq IN (SELECT (SELECT MAX(x.seq) FROM events AS x ",
                    "WHERE x.intent_id = ids.id AND x.event_type = $1) FROM ids) ORDER BY e.seq DESC"
                ))
                .bind(event_type.as_str())
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(stored_event_from_row).collect()
            }

            /// Every event of a type about any of several intents, newest first (the newest
            /// `limit`), in one query.
            pub async fn events_for(&self, event_type: converge_core::EventType, intent_ids: &[String], limit: u32) -> Result<Vec<$crate::StoredEvent>, $crate::StoreError> {
                if intent_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let ids = serde_json::to_string(intent_ids).map_err($crate::error::corrupt)?;
                let rows = sqlx::query(concat!(
                    "WITH ids(id) AS (", $id_list, ") ",
                    "SELECT e.* FROM events AS e WHERE e.event_type = $1 AND e.intent_id IN (SELECT id FROM ids) ",
                    "ORDER BY e.seq DESC LIMIT $3"
                ))
                .bind(event_type.as_str())
                .bind(ids)
                .bind(i64::from(limit.max(1)))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(stored_event_from_row).collect()
            }

            /// Events, newest first, filtered and paged.
            pub async fn events(&self, filter: &$crate::EventFilter) -> Result<Vec<$crate::StoredEvent>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM events WHERE 1 = 1");
                if let Some(v) = &filter.intent_id {
                    q.push(" AND intent_id = ").push_bind(v.clone());
                }
                if let Some(v) = filter.event_type {
                    q.push(" AND event_type = ").push_bind(v.as_str());
                }
                if let Some(v) = &filter.tenant_id {
                    q.push(" AND tenant_id = ").push_bind(v.clone());
                }
                if let Some(v) = filter.since {
                    q.push(" AND timestamp >= ").push_bind(ts(v));
                }
                if let Some(v) = filter.until {
                    q.push(" AND timestamp <= ").push_bind(ts(v));
                }
                if let Some(v) = filter.before_seq {
                    q.push(" AND seq < ").push_bind(v);
                }
                let limit = if filter.limit == 0 { 200 } else { filter.limit };
                q.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter().map(stored_event_from_row).collect()
            }

            /// Commits observed for an intent.
            pub async fn commit_links(&self, intent_id: &str) -> Result<Vec<$crate::CommitLink>, $crate::StoreError> {
                let rows = sqlx::query("SELECT * FROM intent_commit_links WHERE intent_id = $1 ORDER BY observed_at, sha, role")
                    .bind(intent_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::CommitLink {
                            intent_id: row.try_get("intent_id")?,
                            repo: row.try_get("repo")?,
                            sha: row.try_get("sha")?,
                            role: row.try_get("role")?,
                            observed_at: get_ts(row, "observed_at")?,
                        })
                    })
                    .collect()
            }

            /// Empties the intents projection and replays every event into it, in append order.
            /// Returns the number of intents rebuilt.
            pub async fn rebuild_projections(&self) -> Result<usize, $crate::StoreError> {
                const PAGE: i64 = 1_000;
                let mut tx = begin_write(self).await?;
                // A pruned log no longer holds every intent's history: replaying it would
                // lose the intents whose first events are gone.
                let pruned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_anchors")
                    .fetch_one(&mut *tx)
                    .await?;
                if pruned > 0 {
                    return Err($crate::StoreError::Config(
                        "the event log was pruned (CONVERGE_RETENTION_EVENTS_DAYS): a rebuild from \
                         what is left would lose the intents whose events are gone; restore a \
                         backup instead"
                            .to_owned(),
                    ));
                }
                sqlx::query($lock_projection).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM intents").execute(&mut *tx).await?;
                // Each intent's version is the number of events applied to it, as when they were
                // committed.
                let mut state: std::collections::BTreeMap<String, (converge_core::Intent, chrono::DateTime<chrono::Utc>, i64)> =
                    std::collections::BTreeMap::new();
                let mut after = 0i64;
                loop {
                    let rows = sqlx::query("SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                        .bind(after)
                        .bind(PAGE)
                        .fetch_all(&mut *tx)
                        .await?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        let stored = stored_event_from_row(row)?;
                        after = stored.seq;
                        let event = stored.event;
                        let Some(id) = event.intent_id.clone() else { continue };
                        let (current, applied) = match state.get(&id) {
                            Some((intent, _, applied)) => (Some(intent), *applied),
                            None => (None, 0),
                        };
                        if let Some(next) = converge_core::projection::apply(current, &event)? {
                            state.insert(id, (next, event.timestamp, applied + 1));
                        }
                    }
                }
                for (intent, updated_at, applied) in state.values() {
                    write_intent(&mut tx, intent, *updated_at, true, *applied).await?;
                }
                bump_every_tenant_version(&mut tx).await?;
                tx.commit().await?;
                Ok(state.len())
            }

            /// Records a webhook delivery once; concurrent identical deliveries yield one `New`.
            pub async fn record_delivery(
                &self,
                delivery_id: &str,
                event_name: &str,
                body_sha256: &str,
            ) -> Result<$crate::DeliveryOutcome, $crate::StoreError> {
                let inserted = sqlx::query(
                    "INSERT INTO webhook_deliveries (delivery_id, event_name, body_sha256, received_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(delivery_id)
                .bind(event_name)
                .bind(body_sha256)
                .bind(ts(self.now()))
                .execute(self.writer())
                .await?
                .rows_affected();
                if inserted == 1 {
                    return Ok($crate::DeliveryOutcome::New);
                }
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT body_sha256 FROM webhook_deliveries WHERE delivery_id = $1")
                        .bind(delivery_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(if stored.as_deref() == Some(body_sha256) {
                    $crate::DeliveryOutcome::Duplicate
                } else {
                    $crate::DeliveryOutcome::BodyMismatch
                })
            }
        }

        /// Applies one event to its intent's row (locked), inside the commit's transaction.
        /// An intent's row while a commit applies its events: as read (under its row lock),
        /// and as the events leave it.
        struct Projected<'a> {
            id: &'a str,
            existed: bool,
            current: Option<converge_core::Intent>,
            /// The version of the row as locked (0: none).
            version: i64,
            /// Events of this commit applied to the row: its version grows by as many.
            applied: i64,
            /// Whether the commit expected this row at `version`: then a row created by a
            /// concurrent transaction is a conflict, not something to apply the events to.
            expected: bool,
            events: Vec<&'a converge_core::Event>,
            updated_at: Option<chrono::DateTime<chrono::Utc>>,
        }

        impl<'a> Projected<'a> {
            fn read(id: &'a str, stored: Option<$crate::StoredIntent>) -> Projected<'a> {
                let version = stored.as_ref().map_or(0, |s| s.version);
                let current = stored.map(|s| s.intent);
                Projected { id, existed: current.is_some(), current, version, applied: 0, expected: false, events: Vec::new(), updated_at: None }
            }
        }

        /// The guard lease's row (locked first) and the rows of `ids` (locked after it, in
        /// id order), in one statement: a row per intent found, each with the lease's columns
        /// (`lease_holder`, `lease_token`, `lease_expires_at`); one with the lease alone when
        /// none is found; none when the lease's row does not exist (no intent is locked then).
        async fn lease_and_intents_locked(
            tx: &mut WriteTx,
            lease: &$crate::Lease,
            ids: &std::collections::BTreeSet<&str>,
        ) -> Result<Vec<<$db as sqlx::Database>::Row>, $crate::StoreError> {
            // The intents' scan asks whether the lease exists before it yields a row to lock,
            // so the lease's row is locked before any intent's.
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "WITH lease AS MATERIALIZED (SELECT holder, token, expires_at FROM queue_leases WHERE tenant = ",
            );
            q.push_bind(&lease.key.tenant);
            q.push(" AND repo = ").push_bind(&lease.key.repo);
            q.push(" AND target = ").push_bind(&lease.key.target);
            q.push(concat!(
                $lock,
                ") SELECT lease.holder AS lease_holder, lease.token AS lease_token, lease.expires_at AS lease_expires_at, i.* \
                 FROM lease LEFT JOIN (SELECT * FROM intents WHERE id IN ("
            ));
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(concat!(") AND EXISTS (SELECT 1 FROM lease) ORDER BY id", $lock, ") AS i ON 1 = 1 ORDER BY i.id"));
            Ok(q.build().fetch_all(&mut **tx).await?)
        }

        /// A lease row's holder, token and expiry, from the columns named `[holder, token,
        /// expires_at]`.
        fn lease_of_row(
            row: &<$db as sqlx::Database>::Row,
            [holder, token, expires_at]: [&str; 3],
        ) -> Result<(Option<String>, i64, Option<chrono::DateTime<chrono::Utc>>), $crate::StoreError> {
            Ok((row.try_get(holder)?, row.try_get(token)?, get_opt_ts(row, expires_at)?))
        }

        /// Records the deliveries of a group (each id once); answers, for each id, whether
        /// this transaction recorded it and the body hash recorded for it.
        async fn record_deliveries(
            tx: &mut WriteTx,
            deliveries: &[&$crate::Delivery],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<std::collections::HashMap<String, (bool, String)>, $crate::StoreError> {
            let mut recorded: std::collections::HashMap<String, (bool, String)> =
                std::collections::HashMap::with_capacity(deliveries.len());
            let mut unique = Vec::with_capacity(deliveries.len());
            let mut seen = std::collections::HashSet::with_capacity(deliveries.len());
            for delivery in deliveries {
                if seen.insert(delivery.id.as_str()) {
                    unique.push(*delivery);
                }
            }
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO webhook_deliveries (delivery_id, event_name, body_sha256, received_at) ",
            );
            q.push_values(&unique, |mut row, delivery| {
                row.push_bind(delivery.id.as_str())
                    .push_bind(delivery.event_name.as_str())
                    .push_bind(delivery.body_sha256.as_str())
                    .push_bind(ts(now));
            });
            q.push(" ON CONFLICT DO NOTHING RETURNING delivery_id");
            let inserted: Vec<String> = q.build_query_scalar().fetch_all(&mut **tx).await?;
            for delivery in &unique {
                if inserted.iter().any(|id| *id == delivery.id) {
                    recorded.insert(delivery.id.clone(), (true, delivery.body_sha256.clone()));
                }
            }
            let before: Vec<&str> = unique
                .iter()
                .map(|d| d.id.as_str())
                .filter(|id| !recorded.contains_key(*id))
                .collect();
            if !before.is_empty() {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT delivery_id, body_sha256 FROM webhook_deliveries WHERE delivery_id IN (",
                );
                let mut list = q.separated(", ");
                for id in &before {
                    list.push_bind(*id);
                }
                q.push(")");
                for row in q.build().fetch_all(&mut **tx).await? {
                    let id: String = row.try_get("delivery_id")?;
                    if before.contains(&id.as_str()) {
                        recorded.insert(id, (false, row.try_get("body_sha256")?));
                    }
                }
            }
            Ok(recorded)
        }

        async fn read_locked(
            tx: &mut WriteTx,
            intent_id: &str,
        ) -> Result<Option<$crate::StoredIntent>, $crate::StoreError> {
            let row = sqlx::query(concat!("SELECT * FROM intents WHERE id = $1", $lock))
                .bind(intent_id)
                .fetch_optional(&mut **tx)
                .await?;
            row.as_ref().map(stored_intent_from_row).transpose()
        }

        /// Moves every tenant's intents version and gives one to each tenant that has none.
        /// The rows are locked in name order first, the order commits take them in, so a
        /// concurrent commit touching several tenants cannot deadlock with this.
        async fn bump_every_tenant_version(
            tx: &mut WriteTx,
        ) -> Result<(), $crate::StoreError> {
            sqlx::query(concat!("SELECT tenant FROM tenant_versions ORDER BY tenant", $lock))
                .fetch_all(&mut **tx)
                .await?;
            sqlx::query("UPDATE tenant_versions SET version = version + 1").execute(&mut **tx).await?;
            // `WHERE true`: SQLite would read an ON CONFLICT right after FROM as a join's.
            sqlx::query(
                "INSERT INTO tenant_versions (tenant, version) \
                 SELECT DISTINCT COALESCE(tenant_id, ''), 1 FROM intents WHERE true ON CONFLICT (tenant) DO NOTHING",
            )
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Writes an intent as a commit's events left it. If the row did not exist and a
        /// concurrent transaction created it first, our insert waited for it and did nothing:
        /// the events are applied again to the row that transaction wrote.
        async fn write_projected(
            tx: &mut WriteTx,
            entry: Projected<'_>,
        ) -> Result<(), $crate::StoreError> {
            let (Some(intent), Some(updated_at)) = (&entry.current, entry.updated_at) else {
                return Ok(());
            };
            if write_intent(tx, intent, updated_at, entry.existed, entry.version + entry.applied).await? {
                return Ok(());
            }
            let created = read_locked(tx, entry.id).await?;
            if entry.expected {
                return Err($crate::StoreError::Stale {
                    intent_id: entry.id.to_owned(),
                    expected: entry.version,
                    found: created.as_ref().map_or(0, |s| s.version),
                });
            }
            let mut version = created.as_ref().map_or(0, |s| s.version);
            let mut current = created.map(|s| s.intent);
            let mut updated_at = None;
            for event in &entry.events {
                if let Some(next) = converge_core::projection::apply(current.as_ref(), event)? {
                    current = Some(next);
                    updated_at = Some(event.timestamp);
                    version += 1;
                }
            }
            match (current, updated_at) {
                (Some(intent), Some(at)) if write_intent(tx, &intent, at, true, version).await? => Ok(()),
                (_, None) => Ok(()),
                _ => Err($crate::error::corrupt(format!("intent {} changed under a held row lock", entry.id))),
            }
        }

        /// Appends events in as few statements as possible; returns their sequence numbers in
        /// the order given.
        async fn insert_events(
            tx: &mut WriteTx,
            events: &[converge_core::Event],
            links: &[(i64, String)],
        ) -> Result<(), $crate::StoreError> {
            // Eleven parameters a row; SQLite allows 32,766 in a statement.
            const ROWS_PER_STATEMENT: usize = 1_000;
            for (chunk, chunk_links) in events.chunks(ROWS_PER_STATEMENT).zip(links.chunks(ROWS_PER_STATEMENT)) {
                let mut q = sqlx::QueryBuilder::<$db>::new("");
                push_events(&mut q, chunk, chunk_links);
                q.build().execute(&mut **tx).await?;
            }
            Ok(())
        }

        /// Pushes the insert of `events` at their chain positions.
        fn push_events(
            q: &mut sqlx::QueryBuilder<$db>,
            events: &[converge_core::Event],
            links: &[(i64, String)],
        ) {
            q.push($crate::backend::insert_events_prefix!());
            q.push_values(events.iter().zip(links), |mut row, (event, (chain_index, chain_hash))| {
                $crate::backend::bind_event_fields!(row, event)
                    .push_bind(*chain_index)
                    .push_bind(chain_hash.as_str());
            });
        }

        /// Stores agent policies at the version they were read at.
        async fn write_agent_policies(
            tx: &mut WriteTx,
            writes: &[$crate::AgentPolicyWrite],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::StoreError> {
            for write in writes {
                let policy = sqlx::types::Json(&write.policy);
                let written = match write.expected_version {
                    None => sqlx::query(
                        "INSERT INTO agent_policies (agent_id, tenant, policy, version, updated_at) VALUES ($1, $2, $3, 1, $4) \
                         ON CONFLICT (tenant, agent_id) DO NOTHING",
                    )
                    .bind(&write.agent_id)
                    .bind(&write.tenant)
                    .bind(policy)
                    .bind(ts(now))
                    .execute(&mut **tx)
                    .await?
                    .rows_affected(),
                    Some(version) => sqlx::query(
                        "UPDATE agent_policies SET policy = $4, updated_at = $5, version = version + 1 \
                         WHERE agent_id = $1 AND tenant = $2 AND version = $3",
                    )
                    .bind(&write.agent_id)
                    .bind(&write.tenant)
                    .bind(version)
                    .bind(policy)
                    .bind(ts(now))
                    .execute(&mut **tx)
                    .await?
                    .rows_affected(),
                };
                if written == 0 {
                    return Err($crate::StoreError::Conflict(format!(
                        "the policy of agent '{}' changed since it was read",
                        write.agent_id
                    )));
                }
            }
            Ok(())
        }

        /// Stores intake modes (or removes them: back to auto).
        async fn write_intake(tx: &mut WriteTx, writes: &[$crate::IntakeWrite]) -> Result<(), $crate::StoreError> {
            for write in writes {
                match &write.set {
                    None => {
                        sqlx::query("DELETE FROM intake_overrides WHERE tenant = $1")
                            .bind(&write.tenant)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Some(set) => {
                        sqlx::query(
                            "INSERT INTO intake_overrides (tenant, mode, reason, set_by, set_at) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (tenant) DO UPDATE SET mode = excluded.mode, reason = excluded.reason, \
                             set_by = excluded.set_by, set_at = excluded.set_at",
                        )
                        .bind(&write.tenant)
                        .bind(&set.mode)
                        .bind(&set.reason)
                        .bind(&set.set_by)
                        .bind(ts(set.set_at))
                        .execute(&mut **tx)
                        .await?;
                    }
                }
            }
            Ok(())
        }

        /// Stores tenants' documents (compliance thresholds, risk policies: `risk` picks the
        /// table) at the version they were read at.
        async fn write_documents(
            tx: &mut WriteTx,
            risk: bool,
            writes: &[$crate::DocumentWrite],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::StoreError> {
            let (insert, update, what) = if risk {
                (
                    "INSERT INTO risk_policies (tenant, data, updated_at, version) VALUES ($1, $2, $3, 1) ON CONFLICT (tenant) DO NOTHING",
                    "UPDATE risk_policies SET data = $3, updated_at = $4, version = version + 1 WHERE tenant = $1 AND version = $2",
                    "risk policy",
                )
            } else {
                (
                    "INSERT INTO compliance_thresholds (tenant, data, updated_at, version) VALUES ($1, $2, $3, 1) ON CONFLICT (tenant) DO NOTHING",
                    "UPDATE compliance_thresholds SET data = $3, updated_at = $4, version = version + 1 WHERE tenant = $1 AND version = $2",
                    "compliance thresholds",
                )
            };
            for write in writes {
                let data = sqlx::types::Json(&write.data);
                let written = match write.expected_version {
                    None => sqlx::query(insert)
                        .bind(&write.tenant)
                        .bind(data)
                        .bind(ts(now))
                        .execute(&mut **tx)
                        .await?
                        .rows_affected(),
                    Some(version) => sqlx::query(update)
                        .bind(&write.tenant)
                        .bind(version)
                        .bind(data)
                        .bind(ts(now))
                        .execute(&mut **tx)
                        .await?
                        .rows_affected(),
                };
                if written == 0 {
                    return Err($crate::StoreError::Conflict(format!(
                        "the {what} of '{}' changed since it was read",
                        write.tenant
                    )));
                }
            }
            Ok(())
        }

        /// Writes a commit's [`LogTail`]($crate::backend::LogTail) one statement at a time:
        /// locks the chain heads and links the events to them, then writes the events, the
        /// heads, the tallies and the tenants' versions. Returns the heads as they now stand.
        async fn append_log_tail_in_steps<'e>(
            tx: &mut WriteTx,
            tail: $crate::backend::LogTail<'e>,
        ) -> Result<$crate::backend::ChainHeads<'e>, $crate::StoreError> {
            let (links, heads) = lock_chains(tx, tail.events).await?;
            move_heads(tx, &heads).await?;
            append_linked_events(tx, &tail, &links).await?;
            Ok(heads)
        }

        /// Writes the events of `tail` at the chain positions `links` (their heads already
        /// moved on), then its tallies and the tenants' versions.
        async fn append_linked_events(
            tx: &mut WriteTx,
            tail: &$crate::backend::LogTail<'_>,
            links: &[(i64, String)],
        ) -> Result<(), $crate::StoreError> {
            insert_events(tx, tail.events, links).await?;
            add_tallies(tx, &tail.tallies).await?;
            for tenant in tail.tenants {
                sqlx::query(concat!("INSERT INTO tenant_versions (tenant, version) VALUES ($1, 1)", $crate::backend::version_bump_sql!()))
                    .bind(tenant)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(())
        }

        /// Adds to the per-tenant, per-type, per-day counts (`event_tallies`), in key order.
        /// A tenant's rows are only written under its audit chain's head lock, taken earlier
        /// in the commit, so these upserts never wait on each other in a cycle.
        async fn add_tallies(
            tx: &mut WriteTx,
            tallies: &[$crate::backend::Tally],
        ) -> Result<(), $crate::StoreError> {
            // One statement for a thousand of them (the keys are distinct, which a multi-row
            // upsert needs; five parameters a row, and SQLite allows 32,766 in a statement): a
            // webhook delivery's commit touches a few types of one tenant and day.
            for chunk in tallies.chunks(1_000) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO event_tallies (tenant, event_type, day, events, mergeable) ",
                );
                q.push_values(chunk, |mut row, ((tenant, event_type, day), (count, mergeable))| {
                    row.push_bind(tenant.clone())
                        .push_bind(*event_type)
                        .push_bind(day.clone())
                        .push_bind(*count)
                        .push_bind(*mergeable);
                });
                q.push($crate::backend::tally_upsert_sql!());
                q.build().execute(&mut **tx).await?;
            }
            Ok(())
        }

        /// Writes an intent row: replacing the existing one (`overwrite`), or only if none
        /// exists. Returns whether a row was written.
        async fn write_intent(
            tx: &mut WriteTx,
            intent: &converge_core::Intent,
            updated_at: chrono::DateTime<chrono::Utc>,
            overwrite: bool,
            version: i64,
        ) -> Result<bool, $crate::StoreError> {
            let sql = if overwrite {
                concat!(insert_intent_sql!(), intent_overwrite_sql!())
            } else {
                concat!(
                    insert_intent_sql!(),
                    "ON CONFLICT (id) DO NOTHING"
                )
            };
            let written = sqlx::query(sql)
            .bind(&intent.id)
            .bind(&intent.source)
            .bind(&intent.target)
            .bind(intent.status.as_str())
            .bind(ts(intent.created_at))
            .bind(&intent.created_by)
            .bind(intent.risk_level.as_str())
            .bind(intent.priority)
            .bind(sqlx::types::Json(&intent.semantic))
            .bind(sqlx::types::Json(&intent.technical))
            .bind(sqlx::types::Json(&intent.checks_required))
            .bind(sqlx::types::Json(&intent.dependencies))
            .bind(i64::from(intent.retries))
            .bind(&intent.tenant_id)
            .bind(&intent.plan_id)
            .bind(&intent.origin_type)
            .bind(ts(updated_at))
            .bind(version)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            Ok(written == 1)
        }

        /// Replaces existing intent rows, all in one statement.
        /// With `tail` staged ahead of the first statement where the backend leaves tails for
        /// its commit to write (`stage_log_tail`); returns whether it was.
        async fn overwrite_intents(
            tx: &mut WriteTx,
            intents: &[(&converge_core::Intent, chrono::DateTime<chrono::Utc>, i64)],
            tail: &$crate::backend::LogTail<'_>,
        ) -> Result<bool, $crate::StoreError> {
            // Eighteen parameters a row; SQLite allows 32,766 in a statement.
            const ROWS_PER_STATEMENT: usize = 500;
            let mut staged = false;
            for chunk in intents.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<$db>::new("");
                if !staged {
                    staged = stage_log_tail(&mut q, tail);
                }
                q.push(insert_intents_prefix!());
                q.push_values(chunk, |mut row, (intent, updated_at, version)| {
                    row.push_bind(intent.id.clone())
                        .push_bind(intent.source.clone())
                        .push_bind(intent.target.clone())
                        .push_bind(intent.status.as_str())
                        .push_bind(ts(intent.created_at))
                        .push_bind(intent.created_by.clone())
                        .push_bind(intent.risk_level.as_str())
                        .push_bind(intent.priority)
                        .push_bind(sqlx::types::Json(intent.semantic.clone()))
                        .push_bind(sqlx::types::Json(intent.technical.clone()))
                        .push_bind(sqlx::types::Json(intent.checks_required.clone()))
                        .push_bind(sqlx::types::Json(intent.dependencies.clone()))
                        .push_bind(i64::from(intent.retries))
                        .push_bind(intent.tenant_id.clone())
                        .push_bind(intent.plan_id.clone())
                        .push_bind(intent.origin_type.clone())
                        .push_bind(ts(*updated_at))
                        .push_bind(*version);
                });
                q.push(concat!(" ", intent_overwrite_sql!()));
                q.build().execute(&mut **tx).await?;
            }
            Ok(staged)
        }

        fn intent_from_row(row: &<$db as sqlx::Database>::Row) -> Result<converge_core::Intent, $crate::StoreError> {
            let status: String = row.try_get("status")?;
            let level: String = row.try_get("risk_level")?;
            let semantic: sqlx::types::Json<serde_json::Map<String, serde_json::Value>> = row.try_get("semantic")?;
            let technical: sqlx::types::Json<serde_json::Map<String, serde_json::Value>> = row.try_get("technical")?;
            let checks: sqlx::types::Json<Vec<String>> = row.try_get("checks_required")?;
            let dependencies: sqlx::types::Json<Vec<String>> = row.try_get("dependencies")?;
            let retries: i64 = row.try_get("retries")?;
            Ok(converge_core::Intent {
                id: row.try_get("id")?,
                source: row.try_get("source")?,
                target: row.try_get("target")?,
                status: status.parse().map_err($crate::error::corrupt)?,
                created_at: get_ts(row, "created_at")?,
                created_by: row.try_get("created_by")?,
                risk_level: level.parse().map_err($crate::error::corrupt)?,
                priority: row.try_get("priority")?,
                semantic: semantic.0,
                technical: technical.0,
                checks_required: checks.0,
                dependencies: dependencies.0,
                retries: u32::try_from(retries).map_err($crate::error::corrupt)?,
                tenant_id: row.try_get("tenant_id")?,
                plan_id: row.try_get("plan_id")?,
                origin_type: row.try_get("origin_type")?,
            })
        }

        fn stored_intent_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::StoredIntent, $crate::StoreError> {
            Ok($crate::StoredIntent { intent: intent_from_row(row)?, version: row.try_get("version")? })
        }

        fn stored_event_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::StoredEvent, $crate::StoreError> {
            let event_type: String = row.try_get("event_type")?;
            let payload: sqlx::types::Json<serde_json::Value> = row.try_get("payload")?;
            let evidence: sqlx::types::Json<serde_json::Value> = row.try_get("evidence")?;
            Ok($crate::StoredEvent {
                seq: row.try_get("seq")?,
                event: converge_core::Event {
                    id: row.try_get("id")?,
                    trace_id: row.try_get("trace_id")?,
                    timestamp: get_ts(row, "timestamp")?,
                    event_type: event_type.parse().map_err($crate::error::corrupt)?,
                    intent_id: row.try_get("intent_id")?,
                    agent_id: row.try_get("agent_id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    payload: payload.0,
                    evidence: evidence.0,
                },
            })
        }

        fn lease_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::LeaseState, $crate::StoreError> {
            Ok($crate::LeaseState {
                key: converge_core::queue::QueueKey {
                    tenant: row.try_get("tenant")?,
                    repo: row.try_get("repo")?,
                    target: row.try_get("target")?,
                },
                holder: row.try_get("holder")?,
                token: row.try_get("token")?,
                acquired_at: get_opt_ts(row, "acquired_at")?,
                expires_at: get_opt_ts(row, "expires_at")?,
                hold: key_hold_from_row(row)?,
            })
        }

        fn key_hold_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Option<$crate::KeyHold>, $crate::StoreError> {
            let reason: Option<String> = row.try_get("hold_reason")?;
            let (Some(reason), Some(since), Some(until)) =
                (reason, get_opt_ts(row, "hold_since")?, get_opt_ts(row, "hold_until")?)
            else {
                return Ok(None);
            };
            let failures: i64 = row.try_get("hold_failures")?;
            Ok(Some($crate::KeyHold {
                reason,
                since,
                until,
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
            }))
        }
    };
}

pub(crate) use journal_operations;
