//! The queries of a node, running and recent, for the status page: every query that runs in a
//! chamber is here from its first poll to its last batch, with its SQL text when the door it
//! came through knew it (`Apiary::sql`, the shell).

use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// How many finished queries are remembered.
const RECENT: usize = 50;

/// How long a noted statement waits for its query: a statement that runs none (its result
/// never collected) must not name a later query of its session, nor stay forever.
const NOTE_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Still running.
    Running,
    /// Ended with its last batch.
    Finished,
    /// Ended with an error.
    Failed,
    /// Dropped before its end (the caller stopped reading, or a deadline).
    Cancelled,
}

impl QueryOutcome {
    /// The outcome's name, as the status page and `/api/status` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryOutcome::Running => "running",
            QueryOutcome::Finished => "finished",
            QueryOutcome::Failed => "failed",
            QueryOutcome::Cancelled => "cancelled",
        }
    }
}

/// What a query's plan does: the cells its frame scans hold and prune, and whether a part of it
/// runs on the swarm (else it runs here alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryShape {
    /// Cells the plan's frame scans hold.
    pub cells_total: u64,
    /// Of them, cells pruned from the ledger before any was opened.
    pub cells_pruned: u64,
    /// Whether a part of the plan runs on the swarm.
    pub swarm: bool,
}

/// One query as the status page shows it.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    /// The node's number for the query, in the order queries started.
    pub id: u64,
    /// The SQL text, when the door knew it.
    pub sql: Option<String>,
    /// Wall-clock start, milliseconds since the epoch.
    pub started_ms: u64,
    /// How long it ran (so far, while running), in milliseconds.
    pub duration_ms: u64,
    /// Rows returned (so far).
    pub rows: u64,
    /// How it ended (or that it runs).
    pub outcome: QueryOutcome,
    /// The error, for a failed query.
    pub error: Option<String>,
    /// What its plan does.
    pub shape: QueryShape,
}

#[derive(Default)]
struct Log {
    next: u64,
    /// SQL text a door noted for a session, taken by that session's next query.
    noted: HashMap<String, (String, Instant)>,
    running: HashMap<u64, (QueryRecord, Instant)>,
    recent: VecDeque<QueryRecord>,
}

/// The node's queries. Cheap to share (held by the pool).
#[derive(Default)]
pub struct QueryLog {
    log: Mutex<Log>,
}

impl std::fmt::Debug for QueryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryLog").finish_non_exhaustive()
    }
}

impl QueryLog {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Log> {
        self.log.lock()
    }

    /// The SQL text of the next query of session `session_id`.
    pub fn note_sql(&self, session_id: &str, sql: &str) {
        let mut log = self.lock();
        log.noted.retain(|_, (_, at)| at.elapsed() < NOTE_FOR);
        log.noted.insert(
            session_id.to_string(),
            (sql.trim().to_string(), Instant::now()),
        );
    }

    /// A query of `session_id` begins; its id.
    pub fn start(&self, session_id: &str) -> u64 {
        let mut log = self.lock();
        log.next += 1;
        let id = log.next;
        let sql = log
            .noted
            .remove(session_id)
            .filter(|(_, at)| at.elapsed() < NOTE_FOR)
            .map(|(sql, _)| sql);
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let record = QueryRecord {
            id,
            sql,
            started_ms,
            duration_ms: 0,
            rows: 0,
            outcome: QueryOutcome::Running,
            error: None,
            shape: QueryShape::default(),
        };
        log.running.insert(id, (record, Instant::now()));
        id
    }

    /// What query `id`'s plan does.
    pub fn set_shape(&self, id: u64, shape: QueryShape) {
        if let Some((record, _)) = self.lock().running.get_mut(&id) {
            record.shape = shape;
        }
    }

    /// Query `id` ended.
    pub fn end(&self, id: u64, rows: u64, outcome: QueryOutcome, error: Option<String>) {
        let mut log = self.lock();
        let Some((mut record, started)) = log.running.remove(&id) else {
            return;
        };
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.rows = rows;
        record.outcome = outcome;
        record.error = error;
        log.recent.push_front(record);
        log.recent.truncate(RECENT);
    }

    /// Running queries (oldest first), then the recent ones (newest first).
    pub fn snapshot(&self) -> (Vec<QueryRecord>, Vec<QueryRecord>) {
        let log = self.lock();
        let mut running: Vec<QueryRecord> = log
            .running
            .values()
            .map(|(r, started)| {
                let mut r = r.clone();
                r.duration_ms = started.elapsed().as_millis() as u64;
                r
            })
            .collect();
        running.sort_by_key(|r| r.id);
        (running, log.recent.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_statement_goes_to_its_sessions_next_query_only() {
        let log = QueryLog::default();
        log.note_sql("s1", " SELECT 1 ");
        let a = log.start("s2");
        let b = log.start("s1");
        let c = log.start("s1");
        log.end(b, 1, QueryOutcome::Finished, None);
        let (running, recent) = log.snapshot();
        assert_eq!(running.iter().map(|r| r.id).collect::<Vec<_>>(), [a, c]);
        assert!(running.iter().all(|r| r.sql.is_none()));
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].sql.as_deref(), Some("SELECT 1"));
        assert_eq!(recent[0].outcome, QueryOutcome::Finished);
    }
}
