//! State in one SQLite file (`<data_dir>/mamori.db`): the append-only event
//! log and the record of every run.
//!
//! WAL mode with `synchronous = NORMAL`: a committed transaction is in the WAL
//! file as soon as `COMMIT` returns, so killing the agent (even with SIGKILL)
//! loses nothing committed; only an OS crash or power cut can lose the last
//! transactions (see docs/operations.md). Migrations are embedded and applied
//! in order on open, tracked by `PRAGMA user_version`.
//!
//! Calls are short and synchronous behind one mutex; async callers hold it
//! only for one statement or one small transaction. A call that has to wait
//! (for the mutex, or for another process's write: an operator's `sqlite3`,
//! a backup) waits off the runtime's workers ([`off_worker`]), so the rest of
//! the agent, the poll-mode watchdogs that enforce limits included, runs on
//! meanwhile; only a wait for the mutex first retries it on its worker for
//! up to `SHORT_WAIT` (2 ms), the time a store call usually holds it. The
//! uncontended path costs one `try_lock`.

// --- cluster ---
mod drills;
mod flows;
mod incidents;
mod migrations;
mod runs;
mod samples;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rusqlite::{params, Connection};

use crate::event::{Event, EventKind};

pub use drills::DrillRecord;
pub use flows::{FlowRunRecord, Hold};
pub use incidents::{Incident, IncidentUpdate, NewIncident};
pub use runs::{NewRun, RunEnd, RunRecord, RunState};
pub use samples::{HostSample, Rollup, Sample};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot encode event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the store was poisoned by a panic in another thread")]
    Poisoned,
    #[error("the store at {path} has schema version {found}, newer than this mamori understands ({supported}); use a newer mamori")]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // SQLite caches up to 2 MiB of pages per connection by default; the
        // agent's writes and the API's reads touch a few dozen, and a page
        // not cached is one read from the kernel's cache.
        conn.pragma_update(None, "cache_size", CACHE_KIB)?;
        conn.busy_handler(Some(busy_wait))?;
        migrations::apply(&mut conn, path)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The connection. A call that finds it taken waits up to `SHORT_WAIT`
    /// on its worker (store calls usually hold it for well under a
    /// millisecond), then off the worker (`off_worker`). Going off the worker
    /// at once made every unit of a hundred starting together take a thread
    /// of its own, each leaving a cached stack behind (docs/benchmarks.md,
    /// tenth run).
    pub(crate) fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        let mut deadline = None;
        loop {
            match self.conn.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::Poisoned(_)) => return Err(StoreError::Poisoned),
                Err(TryLockError::WouldBlock) => {
                    let now = std::time::Instant::now();
                    if now >= *deadline.get_or_insert(now + SHORT_WAIT) {
                        return off_worker(|| self.conn.lock()).map_err(|_| StoreError::Poisoned);
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    pub fn append_event(&self, ts: i64, kind: &EventKind) -> Result<i64, StoreError> {
        let data = serde_json::to_string(kind)?;
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO events (ts, kind, unit, data) VALUES (?1, ?2, ?3, ?4)",
            params![ts, kind.name(), kind.unit(), data],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Events, newest last; `unit` filters, `after` returns only ids above it.
    pub fn events(
        &self,
        unit: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn()?;
        // Following (`after` given): the oldest after the cursor, so none is
        // skipped. Otherwise: the newest `limit`.
        let order = if after.is_some() { "ASC" } else { "DESC" };
        let mut stmt = conn.prepare(&format!(
            "SELECT id, ts, data FROM events
             WHERE (?1 IS NULL OR unit = ?1) AND id > ?2
             ORDER BY id {order} LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![unit, after.unwrap_or(0), limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, ts, data) = row?;
            // An event kind this build does not know (written by a newer
            // mamori) is skipped here rather than failing the whole list.
            if let Ok(kind) = serde_json::from_str::<EventKind>(&data) {
                out.push(Event { id, ts, kind });
            }
        }
        if after.is_none() {
            out.reverse();
        }
        Ok(out)
    }
}

/// The page cache, in KiB, as a negative number (SQLite's convention).
const CACHE_KIB: i64 = -128;

/// How long a store call waits for the connection on its worker before it
/// waits off the worker.
const SHORT_WAIT: Duration = Duration::from_millis(2);

/// At most this many store calls wait off the workers at once. Each one
/// holds a thread while it waits (tokio starts one to run the worker's other
/// tasks), and a restart storm of hundreds of units while an operator's
/// `sqlite3` holds the lock would otherwise start hundreds, up to tokio's
/// blocking-pool limit, past which the workers themselves would wait for a
/// thread. Calls beyond this wait on their worker, as they all used to.
const MAX_OFF_WORKER: usize = 32;
static OFF_WORKER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f`, which may block its thread for a while, without holding a
/// runtime worker: on the multi-thread runtime the worker's other tasks move
/// to another thread first (`block_in_place`). Elsewhere (a thread outside
/// the runtime, a blocking-pool thread, a current-thread test runtime) it
/// just runs `f`. Never call it from a `LocalSet` task: `block_in_place`
/// panics there (the agent has none).
fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    use std::sync::atomic::Ordering;
    struct Slot;
    impl Drop for Slot {
        fn drop(&mut self) {
            OFF_WORKER.fetch_sub(1, Ordering::Relaxed);
        }
    }
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            let _slot = Slot;
            if OFF_WORKER.fetch_add(1, Ordering::Relaxed) < MAX_OFF_WORKER {
                tokio::task::block_in_place(f)
            } else {
                f()
            }
        }
        _ => f(),
    }
}

/// How long SQLite waits for another connection's lock before a call fails
/// with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The waits between tries, as SQLite's own busy timeout spaces them.
const BUSY_DELAYS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

/// The wait before try `n + 1`, or None once `BUSY_TIMEOUT` is spent.
fn busy_delay(n: u32) -> Option<Duration> {
    let n = n as usize;
    let last = BUSY_DELAYS_MS[BUSY_DELAYS_MS.len() - 1];
    let waited: u64 = BUSY_DELAYS_MS.iter().take(n).sum::<u64>()
        + n.saturating_sub(BUSY_DELAYS_MS.len()) as u64 * last;
    let left = (BUSY_TIMEOUT.as_millis() as u64).checked_sub(waited)?;
    let delay = BUSY_DELAYS_MS.get(n).copied().unwrap_or(last).min(left);
    (delay > 0).then(|| Duration::from_millis(delay))
}

/// SQLite's busy handler: the same waits as `busy_timeout`, off the workers.
fn busy_wait(n: i32) -> bool {
    match busy_delay(u32::try_from(n).unwrap_or(0)) {
        Some(d) => {
            off_worker(|| std::thread::sleep(d));
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_waits_are_spaced_like_sqlites_and_end_at_the_timeout() {
        assert_eq!(busy_delay(0), Some(Duration::from_millis(1)));
        assert_eq!(busy_delay(11), Some(Duration::from_millis(100)));
        let total: Duration = (0..).map_while(busy_delay).sum();
        assert_eq!(total, BUSY_TIMEOUT);
        assert_eq!(busy_delay(10_000), None);
    }

    /// One runtime worker; another connection (another process, as far as
    /// SQLite is concerned) holds the write lock. A store call waiting for it,
    /// and one waiting for the store's mutex behind that, must leave the
    /// worker to the rest: a task spawned after them finishes while both
    /// still wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_store_call_waiting_for_a_lock_does_not_hold_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let store = Store::open(&path).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        let append = |store: Store, started: std::sync::mpsc::Sender<()>| async move {
            let _ = started.send(());
            // Blocks until the lock is released (or the busy timeout).
            store.append_event(
                1,
                &EventKind::UnitBackoff {
                    unit: "a".into(),
                    delay_ms: 1,
                },
            )
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting_for_sqlite = tokio::spawn(append(store.clone(), tx.clone()));
        rx.recv().unwrap();
        let waiting_for_mutex = tokio::spawn(append(store.clone(), tx));
        rx.recv().unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = done_tx.send(());
        });
        tokio::time::timeout(Duration::from_secs(30), done_rx)
            .await
            .expect("a task spawned behind two waiting store calls never ran")
            .unwrap();
        assert!(
            !waiting_for_sqlite.is_finished() && !waiting_for_mutex.is_finished(),
            "the other task ran only after a store call gave up"
        );
        other.execute_batch("ROLLBACK").unwrap();
        assert!(waiting_for_sqlite.await.unwrap().is_ok());
        assert!(waiting_for_mutex.await.unwrap().is_ok());
    }

    #[test]
    fn events_survive_reopen_and_filter_by_unit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            let s = Store::open(&path).unwrap();
            s.append_event(
                1,
                &EventKind::UnitBackoff {
                    unit: "a".into(),
                    delay_ms: 5,
                },
            )
            .unwrap();
            s.append_event(
                2,
                &EventKind::UnitBackoff {
                    unit: "b".into(),
                    delay_ms: 6,
                },
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all = s.events(None, None, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].ts, 1);
        let b = s.events(Some("b"), None, 10).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].kind,
            EventKind::UnitBackoff {
                unit: "b".into(),
                delay_ms: 6
            }
        );
    }
}
