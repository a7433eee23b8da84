//! The audit log in SQLite: batches of encoded events, regrouped by workspace into chunks.
//!
//! Reads want one workspace's events, newest first. One row and one index entry per event
//! was what limited the embedded engine: with thousands of active workspaces every event
//! lands on a different index page (measured: 18 µs of CPU per event with 5,000 workspaces;
//! still 4–7 µs with an append-only inbox in front and sorted merges). Here ingestion appends
//! each batch as one row of `audit_batches`, its events encoded by `domain::audit_codec` (a
//! few copies each). Every `MERGE_EVENTS` events, or `MERGE_INTERVAL`, one transaction
//! regroups the batches by workspace into rows of `audit_chunks` (up to `CHUNK_EVENTS` events
//! of one workspace, with their id and time range) and deletes the batches; the encoded
//! bytes are copied, never decoded into values.
//!
//! Each workspace's chunks form a chain: a chunk names the one written before it, and
//! `audit_heads` the newest. A regrouping appends one chunk per active workspace by rowid and
//! moves one head each, so its cost does not grow with the log. (An index on
//! `(workspace_id, last_id)` did: a regrouping's entries landed all over it, and the writer's
//! CPU per event doubled over the first 10 million events of a wrk run.)
//!
//! A query reads the batches not yet regrouped and walks the workspace's chain from its
//! head, looks at each event where it lies, decodes only those that match, and stops once no
//! earlier chunk can change the page: each chunk carries the largest id and time of itself
//! and every chunk before it. An event stored twice (re-delivered after a crash) is read
//! once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Row};
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::{corrupt, from_millis, sqlite_error};
use crate::domain::audit::{AuditEvent, AuditQuery, CredentialType};
use crate::domain::audit_codec::{self, EncodedEvents, EventKey, EventView};
use crate::store::StoreError;

/// Events in batches that trigger a regrouping. Larger regroupings make larger chunks (fewer
/// rows per event: with 5,000 busy workspaces, 50,000 events are about 10 per workspace) but
/// make every query read more batches (50,000 events are ≈ 10 MB, a few milliseconds).
const MERGE_EVENTS: usize = 50_000;
/// Below that rate, regroup at least this often, so that queries read few batches.
const MERGE_INTERVAL: Duration = Duration::from_secs(10);
/// Most events in one chunk: a query for the newest page of a busy workspace reads one chunk,
/// not all of that regrouping's events.
const CHUNK_EVENTS: usize = 1_000;

/// The writer's bookkeeping: when to regroup. Lives beside the writing connection.
#[derive(Debug)]
pub(super) struct AuditLog {
    /// Events in `audit_batches`; counted from the table on first use (a crash may have left
    /// batches behind).
    pending: Option<usize>,
    last_merge: Instant,
    merge_events: usize,
    merge_interval: Duration,
}

impl AuditLog {
    pub(super) fn new() -> AuditLog {
        AuditLog::with_thresholds(MERGE_EVENTS, MERGE_INTERVAL)
    }

    pub(super) fn with_thresholds(merge_events: usize, merge_interval: Duration) -> AuditLog {
        AuditLog {
            pending: None,
            last_merge: Instant::now(),
            merge_events,
            merge_interval,
        }
    }

    /// Appends `events` as one batch (one statement, so one transaction), then regroups if
    /// it is due. Events already stored (a re-delivery) are stored again and read once.
    pub(super) fn append(
        &mut self,
        conn: &mut Connection,
        events: &EncodedEvents,
    ) -> Result<(), StoreError> {
        let pending = match self.pending {
            Some(pending) => pending,
            None => conn
                .query_row(
                    "SELECT COALESCE(SUM(events), 0) FROM audit_batches",
                    [],
                    |row| row.get::<_, i64>(0),
                )
                .map_err(sqlite_error)? as usize,
        };
        // The batch is stored as it came: the events encoded and framed, one row.
        conn.prepare_cached("INSERT INTO audit_batches (events, body) VALUES (?1, ?2)")
            .and_then(|mut insert| insert.execute(params![events.len() as i64, events.as_bytes()]))
            .map_err(sqlite_error)?;
        let pending = pending + events.len();
        self.pending = Some(pending);
        if pending >= self.merge_events || self.last_merge.elapsed() >= self.merge_interval {
            // The batch is committed; a regrouping that fails is retried next time, so its
            // error must not make the caller send the batch again.
            let started = Instant::now();
            if let Err(error) = merge(conn) {
                tracing::warn!(%error, pending, "audit log regrouping failed; will retry");
                return Ok(());
            }
            tracing::debug!(
                events = pending,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "audit batches regrouped into chunks"
            );
            self.pending = Some(0);
            self.last_merge = Instant::now();
        }
        Ok(())
    }
}

/// An encoded event and what it is grouped and ordered by.
struct Keyed<'a> {
    key: EventKey<'a>,
    bytes: &'a [u8],
}

/// Regroups every batch into chunks by workspace, in one transaction, and deletes the
/// batches. An event in two batches (a re-delivery) is kept once.
fn merge(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(sqlite_error)?;
    let bodies = tx
        .prepare("SELECT body FROM audit_batches ORDER BY seq")
        .and_then(|mut select| {
            select
                .query_map([], |row| row.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite_error)?;
    {
        let mut chains = Chains::new(&tx)?;
        for (workspace_id, events) in by_workspace(&bodies) {
            for chunk in events.chunks(CHUNK_EVENTS) {
                let mut builder = ChunkBuilder::default();
                for event in chunk {
                    builder.add(&event.key, event.bytes);
                }
                chains.append(workspace_id, builder)?;
            }
        }
    }
    tx.execute("DELETE FROM audit_batches", [])
        .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)
}

/// The events of `bodies` grouped by workspace, workspaces in name order (so that
/// `audit_heads`, keyed by name, is updated in key order), each workspace's events in id
/// order and each event once.
/// Grouped through a hash map rather than by one sort of every event by (workspace, id),
/// which compared workspace names some 16 times per event: the audit log's instructions per
/// event fell from 5.85k to 5.1k (callgrind), and the engine's CPU per request under wrk
/// from 28.8 to 27.4 µs (`loadtest/compare_builds`).
fn by_workspace<'b>(bodies: &'b [Vec<u8>]) -> Vec<(&'b str, Vec<Keyed<'b>>)> {
    let mut groups: FxHashMap<&str, Vec<Keyed<'_>>> = FxHashMap::default();
    for event in bodies.iter().flat_map(|body| keyed_events(body)) {
        groups
            .entry(event.key.workspace_id)
            .or_default()
            .push(event);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_unstable_by_key(|(workspace_id, _)| *workspace_id);
    for (_, events) in &mut groups {
        // A stable sort: events arrive nearly in id order, in runs that it merges cheaply.
        events.sort_by_key(|event| event.key.id);
        events.dedup_by_key(|event| event.key.id);
    }
    groups
}

/// The events of a stored body, by key. A body is written by this module only, so one that
/// does not read is a bug or disk corruption: its unreadable rest is logged and skipped
/// rather than failing every regrouping and query from then on.
fn keyed_events(body: &[u8]) -> impl Iterator<Item = Keyed<'_>> {
    audit_codec::framed(body).filter_map(|record| {
        let keyed = record
            .ok()
            .and_then(|bytes| EventKey::parse(bytes).map(|key| Keyed { key, bytes }));
        if keyed.is_none() {
            skipping_unreadable();
        }
        keyed
    })
}

fn skipping_unreadable() {
    tracing::error!("skipping an unreadable event in the audit log");
}

/// Appends chunks to their workspace's chain: the chunk by rowid, then the workspace's head.
/// Three statements per chunk, each touching pages that do not multiply as the log grows.
struct Chains<'c> {
    head: CachedStatement<'c>,
    insert: CachedStatement<'c>,
    move_head: CachedStatement<'c>,
}

impl<'c> Chains<'c> {
    fn new(conn: &'c Connection) -> Result<Chains<'c>, StoreError> {
        let prepare = |sql| conn.prepare_cached(sql).map_err(sqlite_error);
        Ok(Chains {
            head: prepare(
                "SELECT c.seq, c.upto_last_id, c.upto_max_at
                 FROM audit_heads h JOIN audit_chunks c ON c.seq = h.seq
                 WHERE h.workspace_id = ?1",
            )?,
            insert: prepare(
                "INSERT INTO audit_chunks (workspace_id, first_id, last_id, min_at, max_at, events,
                     body, prev_seq, upto_last_id, upto_max_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?,
            move_head: prepare(
                "INSERT INTO audit_heads (workspace_id, seq) VALUES (?1, ?2)
                 ON CONFLICT (workspace_id) DO UPDATE SET seq = excluded.seq",
            )?,
        })
    }

    /// Adds `chunk` as the newest of `workspace_id`'s chunks.
    fn append(&mut self, workspace_id: &str, chunk: ChunkBuilder) -> Result<(), StoreError> {
        let Some(first_id) = chunk.first_id else {
            return Ok(());
        };
        let head = self
            .head
            .query_row([workspace_id], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .optional()
            .map_err(sqlite_error)?;
        let (prev_seq, upto_last_id, upto_max_at) = match head {
            Some((seq, upto_last_id, upto_max_at)) => {
                let upto_last_id = Uuid::from_slice(&upto_last_id)
                    .map_err(|_| sqlite_error(corrupt(1, "audit chunk id")))?;
                (
                    Some(seq),
                    upto_last_id.max(chunk.last_id),
                    upto_max_at.max(chunk.max_at),
                )
            }
            None => (None, chunk.last_id, chunk.max_at),
        };
        let seq = self
            .insert
            .insert(params![
                workspace_id,
                first_id.as_bytes(),
                chunk.last_id.as_bytes(),
                chunk.min_at,
                chunk.max_at,
                chunk.events,
                chunk.body,
                prev_seq,
                upto_last_id.as_bytes(),
                upto_max_at,
            ])
            .map_err(sqlite_error)?;
        self.move_head
            .execute(params![workspace_id, seq])
            .map(drop)
            .map_err(sqlite_error)
    }
}

/// One chunk's body and ranges, built from events of one workspace in id order.
#[derive(Default)]
struct ChunkBuilder {
    body: Vec<u8>,
    first_id: Option<Uuid>,
    last_id: Uuid,
    min_at: i64,
    max_at: i64,
    events: i64,
}

impl ChunkBuilder {
    fn add(&mut self, key: &EventKey<'_>, encoded: &[u8]) {
        let at_ms = key.occurred_at_nanos.div_euclid(1_000_000);
        if self.first_id.is_none() {
            self.first_id = Some(key.id);
            (self.min_at, self.max_at) = (at_ms, at_ms);
        }
        self.last_id = key.id;
        self.min_at = self.min_at.min(at_ms);
        self.max_at = self.max_at.max(at_ms);
        self.events += 1;
        audit_codec::push_framed_bytes(&mut self.body, encoded);
    }
}

/// One workspace's events, newest first: the batches not yet regrouped, then its chunks by
/// descending last id until no older chunk can change the page. Past `deadline` the query
/// ends as `Unavailable`, as PostgreSQL's does past its deadline: a filter that matches
/// little (a `request_id` that is not there) walks the workspace's whole chain, which for
/// a busy workspace is millions of events.
pub(super) fn query(
    conn: &Connection,
    workspace_id: &str,
    query: &AuditQuery,
    deadline: Instant,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut page = Page::new(query);
    if page.limit == 0 {
        return Ok(Vec::new());
    }
    let in_time = || {
        if Instant::now() < deadline {
            Ok(())
        } else {
            Err(StoreError::Unavailable(anyhow::anyhow!(
                "the audit-log query ran past its deadline"
            )))
        }
    };
    {
        let mut batches = conn
            .prepare_cached("SELECT body FROM audit_batches")
            .map_err(sqlite_error)?;
        let mut rows = batches.query([]).map_err(sqlite_error)?;
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            in_time()?;
            page.offer_all(workspace_id, blob(row, 0)?);
        }
    }
    // The workspace's chunks, newest first along its chain. A chunk that cannot hold a match
    // is skipped without reading its body: by id for the cursor, by its millisecond time
    // range (rounded outwards) for `since` and `until`. The walk stops at a chunk once
    // neither it nor any chunk before it can change the page: their events' ids are at most
    // its `upto_last_id`, and their times at most its `upto_max_at`.
    let since_ms = query.since.map(|at| at.timestamp_millis());
    let until_ms = query.until.map(|at| at.timestamp_millis());
    let mut next: Option<i64> = conn
        .prepare_cached("SELECT seq FROM audit_heads WHERE workspace_id = ?1")
        .and_then(|mut head| head.query_row([workspace_id], |row| row.get(0)).optional())
        .map_err(sqlite_error)?;
    let mut chunk = conn
        .prepare_cached(
            "SELECT prev_seq, first_id, min_at, max_at, upto_last_id, upto_max_at, body
             FROM audit_chunks WHERE seq = ?1",
        )
        .map_err(sqlite_error)?;
    while let Some(seq) = next {
        in_time()?;
        let mut rows = chunk.query([seq]).map_err(sqlite_error)?;
        let Some(row) = rows.next().map_err(sqlite_error)? else {
            return Err(sqlite_error(corrupt(0, "audit chunk chain")));
        };
        let id = |column| {
            Uuid::from_slice(blob(row, column)?)
                .map_err(|_| sqlite_error(corrupt(column, "audit chunk id")))
        };
        let int = |column| row.get::<_, i64>(column).map_err(sqlite_error);
        let (first_id, min_at, max_at) = (id(1)?, int(2)?, int(3)?);
        let (upto_last_id, upto_max_at) = (id(4)?, int(5)?);
        if page.is_settled_above(upto_last_id) || since_ms.is_some_and(|since| upto_max_at < since)
        {
            break;
        }
        next = row.get(0).map_err(sqlite_error)?;
        let skip = query.before.is_some_and(|before| first_id >= before)
            || since_ms.is_some_and(|since| max_at < since)
            || until_ms.is_some_and(|until| min_at > until);
        if !skip {
            page.offer_all(workspace_id, blob(row, 6)?);
        }
    }
    Ok(page.into_events())
}

fn blob<'r>(row: &'r Row<'_>, column: usize) -> Result<&'r [u8], StoreError> {
    match row.get_ref(column).map_err(sqlite_error)? {
        ValueRef::Blob(bytes) => Ok(bytes),
        _ => Err(sqlite_error(corrupt(column, "audit log blob"))),
    }
}

/// The newest `limit` matching events seen so far, by id.
struct Page<'q> {
    query: &'q AuditQuery,
    limit: usize,
    since_nanos: Option<i64>,
    until_nanos: Option<i64>,
    events: BTreeMap<Uuid, AuditEvent>,
}

impl<'q> Page<'q> {
    fn new(query: &'q AuditQuery) -> Page<'q> {
        // Outside the representable range (years 1677–2262), a time is before or after
        // every event.
        let nanos = |at: chrono::DateTime<chrono::Utc>| {
            at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
                i64::MIN
            } else {
                i64::MAX
            })
        };
        Page {
            query,
            limit: query.limit as usize,
            since_nanos: query.since.map(nanos),
            until_nanos: query.until.map(nanos),
            events: BTreeMap::new(),
        }
    }

    /// Offers the events of `body` that belong to `workspace_id`; only those are read whole.
    fn offer_all(&mut self, workspace_id: &str, body: &[u8]) {
        for event in keyed_events(body) {
            if event.key.workspace_id != workspace_id {
                continue;
            }
            match EventView::parse(event.bytes) {
                Some(view) => self.offer(&view),
                None => skipping_unreadable(),
            }
        }
    }

    fn offer(&mut self, view: &EventView<'_>) {
        if self.query.before.is_some_and(|before| view.id >= before)
            || self.is_settled_above(view.id)
            || self.events.contains_key(&view.id)
            || !self.matches(view)
        {
            return;
        }
        self.events.insert(view.id, view.to_event());
        if self.events.len() > self.limit {
            self.events.pop_first();
        }
    }

    /// Whether the page is full of events newer than `id`: nothing at or below it can enter.
    fn is_settled_above(&self, id: Uuid) -> bool {
        self.events.len() >= self.limit
            && self
                .events
                .first_key_value()
                .is_some_and(|(&oldest, _)| oldest > id)
    }

    fn matches(&self, view: &EventView<'_>) -> bool {
        let query = self.query;
        let same = |wanted: &Option<String>, actual: Option<&str>| {
            wanted
                .as_deref()
                .is_none_or(|wanted| actual == Some(wanted))
        };
        same(&query.key_label, view.key_label)
            && same(&query.app, view.app_name)
            && same(&query.scope, view.scope)
            && same(&query.request_id, Some(view.request_id))
            && self
                .since_nanos
                .is_none_or(|since| view.occurred_at_nanos >= since)
            && self
                .until_nanos
                .is_none_or(|until| view.occurred_at_nanos < until)
    }

    fn into_events(self) -> Vec<AuditEvent> {
        self.events.into_values().rev().collect()
    }
}

/// Moves the events of version 2's tables (`audit_events`, `audit_inbox`: one row per event)
/// into chunks and drops those tables. Call it inside the migrations' transaction, so that
/// the move happens whole or not at all. Returns how many events moved; nothing to do once
/// the tables are gone.
pub(super) fn convert_version_2_tables(conn: &Connection) -> Result<usize, StoreError> {
    const COLUMNS: &str = "id, occurred_at, workspace_id, credential_type, credential_id, \
                           key_label, app_name, method, path, scope, status, error_code, \
                           request_id, client_addr";
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_events')",
            [],
            |row| row.get(0),
        )
        .map_err(sqlite_error)?;
    if !exists {
        return Ok(0);
    }
    let mut moved = 0;
    {
        let mut select = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM audit_events UNION SELECT {COLUMNS} FROM audit_inbox
                 ORDER BY workspace_id, id"
            ))
            .map_err(sqlite_error)?;
        let mut chains = Chains::new(conn)?;
        let mut rows = select.query([]).map_err(sqlite_error)?;
        let mut current: Option<(String, ChunkBuilder)> = None;
        let mut encoded = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            let event = version_2_event(row).map_err(sqlite_error)?;
            let starts_chunk = match &current {
                Some((workspace, builder)) => {
                    **workspace != *event.workspace_id || builder.events as usize >= CHUNK_EVENTS
                }
                None => true,
            };
            if starts_chunk {
                if let Some((workspace, builder)) = current.take() {
                    chains.append(&workspace, builder)?;
                }
                current = Some((event.workspace_id.to_string(), ChunkBuilder::default()));
            }
            let view = event.view();
            encoded.resize(audit_codec::encoded_len(&view), 0);
            audit_codec::encode(&view, &mut encoded);
            let key =
                EventKey::parse(&encoded).ok_or_else(|| sqlite_error(corrupt(0, "audit event")))?;
            if let Some((_, builder)) = current.as_mut() {
                if builder.events == 0 || builder.last_id != key.id {
                    builder.add(&key, &encoded);
                    moved += 1;
                }
            }
        }
        if let Some((workspace, builder)) = current {
            chains.append(&workspace, builder)?;
        }
    }
    conn.execute_batch("DROP TABLE audit_events; DROP TABLE audit_inbox;")
        .map_err(sqlite_error)?;
    Ok(moved)
}

fn version_2_event(row: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    let id: String = row.get(0)?;
    let credential_type: String = row.get(3)?;
    Ok(AuditEvent {
        id: Uuid::parse_str(&id).map_err(|_| corrupt(0, "audit id"))?,
        occurred_at: from_millis(row.get(1)?),
        workspace_id: row.get::<_, String>(2)?.into(),
        credential_type: CredentialType::parse(&credential_type)
            .ok_or_else(|| corrupt(3, "credential type"))?,
        credential_id: row.get::<_, String>(4)?.into(),
        key_label: row.get::<_, Option<String>>(5)?.map(Into::into),
        app_name: row.get::<_, Option<String>>(6)?.map(Into::into),
        method: row.get::<_, String>(7)?.into(),
        path: row.get(8)?,
        scope: row.get::<_, Option<String>>(9)?.map(Into::into),
        status: row.get(10)?,
        error_code: row.get::<_, Option<String>>(11)?.map(Into::into),
        request_id: row.get(12)?,
        client_addr: row.get(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use std::borrow::Cow;

    fn event(workspace: &str, request: &str) -> AuditEvent {
        AuditEvent {
            id: Uuid::now_v7(),
            occurred_at: crate::clock::to_datetime(crate::clock::now_ms()),
            workspace_id: workspace.into(),
            credential_type: CredentialType::ApiKey,
            credential_id: "key_1".into(),
            key_label: Some("deploy".into()),
            app_name: None,
            method: Cow::Borrowed("GET"),
            path: "/v1/checks".to_owned(),
            scope: Some("checks:read".into()),
            status: 200,
            error_code: None,
            request_id: request.to_owned(),
            client_addr: None,
        }
    }

    fn migrated_connection() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for migration in crate::store::migrations::SQLITE {
            conn.execute_batch(migration.sql).unwrap();
        }
        convert_version_2_tables(&conn).unwrap();
        conn
    }

    fn rows(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn in_an_hour() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn requests(conn: &Connection, workspace: &str, query: AuditQuery) -> Vec<String> {
        super::query(conn, workspace, &query, in_an_hour())
            .unwrap()
            .into_iter()
            .map(|e| e.request_id)
            .collect()
    }

    fn all(conn: &Connection, workspace: &str) -> Vec<String> {
        let everything = AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        };
        requests(conn, workspace, everything)
    }

    #[test]
    fn events_are_visible_before_and_after_regrouping_exactly_once() {
        let mut conn = migrated_connection();
        let mut log = AuditLog::with_thresholds(8, Duration::from_secs(3600));
        let first: Vec<_> = (0..3).map(|i| event("ws_a", &format!("r{i}"))).collect();
        log.append(&mut conn, &EncodedEvents::from_events(&first))
            .unwrap();
        log.append(
            &mut conn,
            &EncodedEvents::from_events(&[event("ws_b", "other")]),
        )
        .unwrap();
        assert_eq!(
            (rows(&conn, "audit_batches"), rows(&conn, "audit_chunks")),
            (2, 0)
        );
        assert_eq!(
            all(&conn, "ws_a"),
            ["r2", "r1", "r0"],
            "read from the batches"
        );

        // A re-delivery of the same batch is read once.
        log.append(&mut conn, &EncodedEvents::from_events(&first))
            .unwrap();
        assert_eq!(all(&conn, "ws_a").len(), 3);

        // Past the threshold: everything is regrouped, one chunk per workspace.
        let more: Vec<_> = (3..5).map(|i| event("ws_a", &format!("r{i}"))).collect();
        log.append(&mut conn, &EncodedEvents::from_events(&more))
            .unwrap();
        assert_eq!(
            (rows(&conn, "audit_batches"), rows(&conn, "audit_chunks")),
            (0, 2)
        );
        assert_eq!(all(&conn, "ws_a"), ["r4", "r3", "r2", "r1", "r0"]);
        assert_eq!(all(&conn, "ws_b"), ["other"]);
        let stored: i64 = conn
            .query_row("SELECT SUM(events) FROM audit_chunks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 6, "the re-delivered batch is stored once");

        // Re-delivered after the regrouping: in a batch again, but read once.
        log.append(&mut conn, &EncodedEvents::from_events(&first))
            .unwrap();
        assert_eq!(rows(&conn, "audit_batches"), 1);
        assert_eq!(all(&conn, "ws_a").len(), 5);
    }

    #[test]
    fn pages_run_across_chunks_and_batches_newest_first() {
        let mut conn = migrated_connection();
        let mut log = AuditLog::with_thresholds(4, Duration::from_secs(3600));
        let events: Vec<_> = (0..9).map(|i| event("ws_a", &format!("r{i}"))).collect();
        log.append(&mut conn, &EncodedEvents::from_events(&events[..4]))
            .unwrap(); // a chunk
        log.append(&mut conn, &EncodedEvents::from_events(&events[4..8]))
            .unwrap(); // another chunk
        log.append(&mut conn, &EncodedEvents::from_events(&events[8..]))
            .unwrap(); // a batch
        assert_eq!(
            (rows(&conn, "audit_batches"), rows(&conn, "audit_chunks")),
            (1, 2)
        );
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = super::query(
                &conn,
                "ws_a",
                &AuditQuery {
                    limit: 2,
                    before,
                    ..AuditQuery::default()
                },
                in_an_hour(),
            )
            .unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            seen.extend(page.iter().map(|e| e.request_id.clone()));
        }
        let expected: Vec<_> = (0..9).rev().map(|i| format!("r{i}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_query_past_its_deadline_ends_as_unavailable() {
        let mut conn = migrated_connection();
        let mut log = AuditLog::with_thresholds(2, Duration::from_secs(3600));
        let events: Vec<_> = (0..3).map(|i| event("ws_a", &format!("r{i}"))).collect();
        log.append(&mut conn, &EncodedEvents::from_events(&events[..2]))
            .unwrap(); // a chunk
        log.append(&mut conn, &EncodedEvents::from_events(&events[2..]))
            .unwrap(); // a batch
        let everything = AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        };
        let past = super::query(&conn, "ws_a", &everything, Instant::now());
        assert!(matches!(past, Err(StoreError::Unavailable(_))), "{past:?}");
        assert_eq!(all(&conn, "ws_a"), ["r2", "r1", "r0"]);
    }

    #[test]
    fn an_event_older_than_a_later_chunk_is_still_found() {
        // A spool replay after a crash stores old events after newer ones: chunks overlap.
        let mut conn = migrated_connection();
        let mut log = AuditLog::with_thresholds(1, Duration::from_secs(3600));
        let old = event("ws_a", "old");
        let newer: Vec<_> = (0..3).map(|i| event("ws_a", &format!("n{i}"))).collect();
        log.append(&mut conn, &EncodedEvents::from_events(&newer))
            .unwrap();
        log.append(
            &mut conn,
            &EncodedEvents::from_events(&[old, event("ws_a", "newest")]),
        )
        .unwrap();
        let page = |limit| {
            requests(
                &conn,
                "ws_a",
                AuditQuery {
                    limit,
                    ..AuditQuery::default()
                },
            )
        };
        assert_eq!(page(2), ["newest", "n2"]);
        assert_eq!(page(10), ["newest", "n2", "n1", "n0", "old"]);
    }

    #[test]
    fn filters_apply_to_each_event() {
        let mut conn = migrated_connection();
        let mut log = AuditLog::with_thresholds(3, Duration::from_secs(3600));
        let ok = event("ws_a", "ok");
        let mut refused = event("ws_a", "refused");
        refused.scope = Some("billing:read".into());
        refused.key_label = Some("ci".into());
        let late = AuditEvent {
            occurred_at: Utc::now() + chrono::Duration::hours(1),
            ..event("ws_a", "late")
        };
        log.append(&mut conn, &EncodedEvents::from_events(&[ok, refused, late]))
            .unwrap();
        log.append(
            &mut conn,
            &EncodedEvents::from_events(&[event("ws_a", "in a batch")]),
        )
        .unwrap();
        let with = |query: AuditQuery| requests(&conn, "ws_a", AuditQuery { limit: 10, ..query });
        let scope = with(AuditQuery {
            scope: Some("billing:read".into()),
            ..AuditQuery::default()
        });
        assert_eq!(scope, ["refused"]);
        let label = with(AuditQuery {
            key_label: Some("deploy".into()),
            ..AuditQuery::default()
        });
        assert_eq!(label, ["in a batch", "late", "ok"], "newest id first");
        let later = with(AuditQuery {
            since: Some(Utc::now() + chrono::Duration::minutes(30)),
            ..AuditQuery::default()
        });
        assert_eq!(later, ["late"]);
        let earlier = with(AuditQuery {
            until: Some(Utc::now() + chrono::Duration::minutes(30)),
            request_id: Some("ok".into()),
            ..AuditQuery::default()
        });
        assert_eq!(earlier, ["ok"]);
    }

    #[test]
    fn batches_left_by_a_crash_are_counted_and_regrouped() {
        let mut conn = migrated_connection();
        AuditLog::with_thresholds(3, Duration::from_secs(3600))
            .append(
                &mut conn,
                &EncodedEvents::from_events(&[event("ws_a", "r0"), event("ws_a", "r1")]),
            )
            .unwrap();
        // A restarted writer counts the two events already waiting.
        let mut restarted = AuditLog::with_thresholds(3, Duration::from_secs(3600));
        restarted
            .append(
                &mut conn,
                &EncodedEvents::from_events(&[event("ws_a", "r2")]),
            )
            .unwrap();
        assert_eq!(
            (rows(&conn, "audit_batches"), rows(&conn, "audit_chunks")),
            (0, 1)
        );
        assert_eq!(all(&conn, "ws_a"), ["r2", "r1", "r0"]);
    }

    #[test]
    fn version_3_chunks_are_chained_by_the_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        for migration in &crate::store::migrations::SQLITE[..3] {
            conn.execute_batch(migration.sql).unwrap();
        }
        // Chunks as version 3 wrote them, in seq order: ws_a's second chunk holds an event
        // older than its first (a late re-delivery).
        let events: Vec<_> = (0..4).map(|i| event("ws_a", &format!("r{i}"))).collect();
        let chunk = |events: &[&AuditEvent]| {
            let mut builder = ChunkBuilder::default();
            let encoded = EncodedEvents::from_events(
                &events.iter().map(|e| (*e).clone()).collect::<Vec<_>>(),
            );
            for record in audit_codec::framed(encoded.as_bytes()) {
                let bytes = record.unwrap();
                builder.add(&EventKey::parse(bytes).unwrap(), bytes);
            }
            builder
        };
        for (workspace, builder) in [
            ("ws_a", chunk(&[&events[1], &events[2]])),
            ("ws_b", chunk(&[&event("ws_b", "other")])),
            ("ws_a", chunk(&[&events[0], &events[3]])),
        ] {
            conn.execute(
                "INSERT INTO audit_chunks (workspace_id, first_id, last_id, min_at, max_at, events, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    workspace,
                    builder.first_id.unwrap().as_bytes(),
                    builder.last_id.as_bytes(),
                    builder.min_at,
                    builder.max_at,
                    builder.events,
                    builder.body,
                ],
            )
            .unwrap();
        }
        conn.execute_batch(crate::store::migrations::SQLITE[3].sql)
            .unwrap();
        assert_eq!(all(&conn, "ws_a"), ["r3", "r2", "r1", "r0"]);
        assert_eq!(all(&conn, "ws_b"), ["other"]);
        assert_eq!(
            requests(
                &conn,
                "ws_a",
                AuditQuery {
                    limit: 2,
                    ..AuditQuery::default()
                }
            ),
            ["r3", "r2"]
        );

        // New chunks continue the chains.
        let mut log = AuditLog::with_thresholds(1, Duration::from_secs(3600));
        log.append(
            &mut conn,
            &EncodedEvents::from_events(&[event("ws_a", "r4")]),
        )
        .unwrap();
        assert_eq!(all(&conn, "ws_a"), ["r4", "r3", "r2", "r1", "r0"]);
        assert_eq!(rows(&conn, "audit_heads"), 2);
    }

    #[test]
    fn version_2_rows_are_converted_once() {
        let conn = Connection::open_in_memory().unwrap();
        for migration in &crate::store::migrations::SQLITE[..2] {
            conn.execute_batch(migration.sql).unwrap();
        }
        let insert = |table: &str, event: &AuditEvent| {
            conn.execute(
                &format!(
                    "INSERT INTO {table} (id, occurred_at, workspace_id, credential_type,
                         credential_id, key_label, method, path, status, request_id)
                     VALUES (?1, ?2, ?3, 'api_key', 'key_1', 'deploy', 'GET', '/v1/checks', 200, ?4)"
                ),
                params![
                    event.id.hyphenated().to_string(),
                    event.occurred_at.timestamp_millis(),
                    &*event.workspace_id,
                    event.request_id,
                ],
            )
            .unwrap();
        };
        let events: Vec<_> = (0..3).map(|i| event("ws_a", &format!("r{i}"))).collect();
        insert("audit_events", &events[0]);
        insert("audit_events", &events[1]);
        insert("audit_inbox", &events[1]); // re-delivered before the upgrade
        insert("audit_inbox", &events[2]);
        insert("audit_events", &event("ws_b", "other"));

        for migration in &crate::store::migrations::SQLITE[2..] {
            conn.execute_batch(migration.sql).unwrap();
        }
        assert_eq!(convert_version_2_tables(&conn).unwrap(), 4);
        assert_eq!(convert_version_2_tables(&conn).unwrap(), 0, "once");
        assert_eq!(all(&conn, "ws_a"), ["r2", "r1", "r0"]);
        assert_eq!(all(&conn, "ws_b"), ["other"]);
        let legacy: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('audit_events', 'audit_inbox')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(legacy, 0, "the version 2 tables are gone");
    }
}
