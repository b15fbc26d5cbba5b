//! The `embedded` coordination backend: a SQLite file that every agent of one
//! host opens (default `<data_dir>/cluster.db`; point several agents at the
//! same `[cluster] path` to form a group on one host).
//!
//! It mimics the part of etcd that groups use: a global revision that grows
//! with every write, keys that remember the revision they were created at
//! (the fencing token), and leases that expire `ttl` after their last
//! keep-alive. Expiry is measured on the host's wall clock (all users are on
//! the same host) and applied lazily: every operation first deletes the keys
//! of expired leases, inside the same `BEGIN IMMEDIATE` transaction, so no
//! reader ever sees a key whose lease has expired.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{BoxFut, CoordError, CoordResult, Coordinator, Guard, Kv, Op};

pub struct Embedded {
    conn: Arc<Mutex<Connection>>,
    path: String,
}

fn err(e: rusqlite::Error) -> CoordError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
            CoordError::Unreachable("the cluster database is busy".into())
        }
        other => CoordError::Store(other.to_string()),
    }
}

impl Embedded {
    pub fn open(path: &Path) -> anyhow::Result<Embedded> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(2))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS coord_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             INSERT OR IGNORE INTO coord_meta VALUES ('rev', 1), ('lease', 0);
             CREATE TABLE IF NOT EXISTS coord_leases (
                 id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL, expires_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS coord_kv (
                 key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
                 mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL);",
        )?;
        Ok(Embedded {
            conn: Arc::new(Mutex::new(conn)),
            path: path.display().to_string(),
        })
    }

    /// Runs `f` in an immediate transaction after sweeping expired leases.
    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFut<'static, T> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || -> CoordResult<T> {
                let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(err)?;
                let now = crate::util::now_ms();
                let gone = tx
                    .execute(
                        "DELETE FROM coord_kv WHERE lease IN
                           (SELECT id FROM coord_leases WHERE expires_at <= ?1)",
                        params![now],
                    )
                    .map_err(err)?;
                tx.execute(
                    "DELETE FROM coord_leases WHERE expires_at <= ?1",
                    params![now],
                )
                .map_err(err)?;
                if gone > 0 {
                    bump(&tx).map_err(err)?;
                }
                let out = f(&tx, now).map_err(err)?;
                tx.commit().map_err(err)?;
                Ok(out)
            })
            .await
            .map_err(|e| CoordError::Store(format!("task failed: {e}")))?
        })
    }
}

/// Increments the global revision; returns the new one.
fn bump(tx: &rusqlite::Transaction) -> rusqlite::Result<i64> {
    tx.query_row(
        "UPDATE coord_meta SET v = v + 1 WHERE k = 'rev' RETURNING v",
        [],
        |r| r.get(0),
    )
}

fn lease_live(tx: &rusqlite::Transaction, lease: i64) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM coord_leases WHERE id = ?1",
            params![lease],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some())
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<Kv> {
    Ok(Kv {
        key: r.get(0)?,
        value: r.get(1)?,
        create_revision: r.get(2)?,
        mod_revision: r.get(3)?,
        lease: r.get(4)?,
    })
}

const COLS: &str = "key, value, create_rev, mod_rev, lease";

impl Coordinator for Embedded {
    fn grant(&self, ttl: Duration) -> BoxFut<'_, i64> {
        let ttl_ms = ttl.as_millis() as i64;
        self.with(move |tx, now| {
            let id: i64 = tx.query_row(
                "UPDATE coord_meta SET v = v + 1 WHERE k = 'lease' RETURNING v",
                [],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO coord_leases (id, ttl_ms, expires_at) VALUES (?1, ?2, ?3)",
                params![id, ttl_ms, now + ttl_ms],
            )?;
            Ok(id)
        })
    }

    fn keep_alive(&self, lease: i64) -> BoxFut<'_, Option<Duration>> {
        self.with(move |tx, now| {
            let ttl: Option<i64> = tx
                .query_row(
                    "UPDATE coord_leases SET expires_at = ?2 + ttl_ms WHERE id = ?1 RETURNING ttl_ms",
                    params![lease, now],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(ttl.map(|t| Duration::from_millis(t as u64)))
        })
    }

    fn revoke(&self, lease: i64) -> BoxFut<'_, ()> {
        self.with(move |tx, _| {
            let n = tx.execute("DELETE FROM coord_kv WHERE lease = ?1", params![lease])?;
            tx.execute("DELETE FROM coord_leases WHERE id = ?1", params![lease])?;
            if n > 0 {
                bump(tx)?;
            }
            Ok(())
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: &'a [u8], lease: i64) -> BoxFut<'a, Option<i64>> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.with(move |tx, _| {
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM coord_kv WHERE key = ?1",
                    params![key],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Ok(None);
            }
            if lease != 0 && !lease_live(tx, lease)? {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "lease {lease} not found"
                )));
            }
            let rev = bump(tx)?;
            tx.execute(
                "INSERT INTO coord_kv (key, value, create_rev, mod_rev, lease) VALUES (?1, ?2, ?3, ?3, ?4)",
                params![key, value, rev, lease],
            )?;
            Ok(Some(rev))
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], lease: i64) -> BoxFut<'a, ()> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.with(move |tx, _| {
            let rev = bump(tx)?;
            tx.execute(
                "INSERT INTO coord_kv (key, value, create_rev, mod_rev, lease) VALUES (?1, ?2, ?3, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET value = ?2, mod_rev = ?3, lease = ?4",
                params![key, value, rev, lease],
            )?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Option<Kv>> {
        let key = key.to_string();
        self.with(move |tx, _| {
            tx.query_row(
                &format!("SELECT {COLS} FROM coord_kv WHERE key = ?1"),
                params![key],
                row,
            )
            .optional()
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Vec<Kv>> {
        let prefix = prefix.to_string();
        self.with(move |tx, _| {
            let mut st = tx.prepare(&format!(
                "SELECT {COLS} FROM coord_kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key"
            ))?;
            let rows = st.query_map(params![prefix], row)?;
            rows.collect()
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, ()> {
        let key = key.to_string();
        self.with(move |tx, _| {
            if tx.execute("DELETE FROM coord_kv WHERE key = ?1", params![key])? > 0 {
                bump(tx)?;
            }
            Ok(())
        })
    }

    fn txn<'a>(&'a self, guards: &'a [Guard], ops: &'a [Op]) -> BoxFut<'a, bool> {
        let (guards, ops) = (guards.to_vec(), ops.to_vec());
        self.with(move |tx, _| {
            for g in &guards {
                let (key, col, want) = match g {
                    Guard::Created(k, r) => (k, "create_rev", *r),
                    Guard::Modified(k, r) => (k, "mod_rev", *r),
                };
                let have: i64 = tx
                    .query_row(
                        &format!("SELECT {col} FROM coord_kv WHERE key = ?1"),
                        params![key],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(0);
                if have != want {
                    return Ok(false);
                }
            }
            if ops.is_empty() {
                return Ok(true);
            }
            let rev = bump(tx)?;
            for op in &ops {
                match op {
                    Op::Put { key, value, lease } => {
                        if *lease != 0 && !lease_live(tx, *lease)? {
                            // As etcd: the whole transaction fails.
                            return Err(rusqlite::Error::InvalidParameterName(format!(
                                "lease {lease} not found"
                            )));
                        }
                        tx.execute(
                            "INSERT INTO coord_kv (key, value, create_rev, mod_rev, lease) VALUES (?1, ?2, ?3, ?3, ?4)
                             ON CONFLICT (key) DO UPDATE SET value = ?2, mod_rev = ?3, lease = ?4",
                            params![key, value, rev, lease],
                        )?;
                    }
                    Op::Delete(key) => {
                        tx.execute("DELETE FROM coord_kv WHERE key = ?1", params![key])?;
                    }
                }
            }
            Ok(true)
        })
    }

    fn describe(&self) -> String {
        format!("embedded ({})", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_is_exclusive_and_revisions_grow() {
        let dir = tempfile::tempdir().unwrap();
        let c = Embedded::open(&dir.path().join("c.db")).unwrap();
        let l1 = c.grant(Duration::from_secs(5)).await.unwrap();
        let l2 = c.grant(Duration::from_secs(5)).await.unwrap();
        let r1 = c.create("/g/leader", b"a", l1).await.unwrap();
        assert!(r1.is_some());
        assert_eq!(c.create("/g/leader", b"b", l2).await.unwrap(), None);
        c.revoke(l1).await.unwrap();
        assert_eq!(c.get("/g/leader").await.unwrap(), None);
        let r2 = c.create("/g/leader", b"b", l2).await.unwrap();
        assert!(r2 > r1, "fencing tokens grow: {r1:?} then {r2:?}");
        let kv = c.get("/g/leader").await.unwrap().unwrap();
        assert_eq!(kv.value, b"b");
        assert_eq!(Some(kv.create_revision), r2);
        assert_eq!(c.list("/g/").await.unwrap().len(), 1);
        assert_eq!(c.list("/h/").await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn txn_applies_only_when_every_guard_holds() {
        let dir = tempfile::tempdir().unwrap();
        let c = Embedded::open(&dir.path().join("c.db")).unwrap();
        let l = c.grant(Duration::from_secs(5)).await.unwrap();
        let token = c.create("/g/leader", b"a", l).await.unwrap().unwrap();
        let beat = |v: &[u8]| Op::Put {
            key: "/g/beat".into(),
            value: v.to_vec(),
            lease: l,
        };
        let mine = [Guard::Created("/g/leader".into(), token)];
        assert!(c.txn(&mine, &[beat(b"1")]).await.unwrap());
        let b1 = c.get("/g/beat").await.unwrap().unwrap().mod_revision;
        assert!(!c
            .txn(
                &[Guard::Created("/g/leader".into(), token + 100)],
                &[beat(b"x")]
            )
            .await
            .unwrap());
        assert_eq!(c.get("/g/beat").await.unwrap().unwrap().value, b"1");
        // A takeover guarded by a stale beat fails; by the current one, succeeds.
        let take = |rev| {
            [
                Guard::Created("/g/leader".into(), token),
                Guard::Modified("/g/beat".into(), rev),
            ]
        };
        let del = [Op::Delete("/g/leader".into()), Op::Delete("/g/beat".into())];
        assert!(c.txn(&mine, &[beat(b"2")]).await.unwrap());
        assert!(!c.txn(&take(b1), &del).await.unwrap());
        assert!(c.get("/g/leader").await.unwrap().is_some());
        let b2 = c.get("/g/beat").await.unwrap().unwrap().mod_revision;
        assert!(b2 > b1);
        assert!(c.txn(&take(b2), &del).await.unwrap());
        assert_eq!(c.list("/g/").await.unwrap().len(), 0);
        // An absent key has revision 0; a put on a dead lease fails the whole txn.
        assert!(c
            .txn(&[Guard::Created("/g/leader".into(), 0)], &[])
            .await
            .unwrap());
        c.revoke(l).await.unwrap();
        assert!(c.txn(&[], &[beat(b"3")]).await.is_err());
        assert_eq!(c.get("/g/beat").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_lease_expires_without_keep_alive_and_takes_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let c = Embedded::open(&path).unwrap();
        // A second handle on the same file, as a second agent on the host.
        let other = Embedded::open(&path).unwrap();
        let l = c.grant(Duration::from_millis(300)).await.unwrap();
        c.create("/k", b"v", l).await.unwrap();
        assert!(other.get("/k").await.unwrap().is_some());
        assert!(c.keep_alive(l).await.unwrap().is_some());
        // Real time: expiry is measured on the wall clock by design.
        let start = std::time::Instant::now();
        while other.get("/k").await.unwrap().is_some() {
            assert!(start.elapsed() < Duration::from_secs(10), "never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert_eq!(
            c.keep_alive(l).await.unwrap(),
            None,
            "an expired lease is gone"
        );
        assert!(
            c.create("/k2", b"v", l).await.is_err(),
            "no keys on a dead lease"
        );
    }
}
