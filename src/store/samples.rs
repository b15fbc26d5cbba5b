//! Resource samples: full resolution for a recent window (`samples`), then
//! per-minute min/avg/max (`samples_1m`), each with its own retention, so the
//! file does not grow without bound (budget in docs/operations.md).

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError};

/// One sample of a unit's whole process tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub ts: i64,
    pub rss: u64,
    pub cpu_pct: f64,
    pub fds: u64,
    pub threads: u64,
    pub procs: u64,
}

/// One sample of the host.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HostSample {
    pub ts: i64,
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub load1: f64,
    pub disk_used_pct: f64,
}

/// A per-minute rollup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rollup {
    pub ts: i64,
    pub n: u64,
    pub rss_min: u64,
    pub rss_avg: u64,
    pub rss_max: u64,
    pub cpu_avg: f64,
    pub cpu_max: f64,
    pub fds_max: u64,
    pub threads_max: u64,
}

impl Store {
    /// Writes a batch of samples in one transaction.
    pub fn insert_samples(
        &self,
        units: &[(impl AsRef<str>, Sample)],
        host: &[HostSample],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO samples (unit, ts, rss, cpu_pct, fds, threads, procs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (unit, s) in units {
                stmt.execute(params![
                    unit.as_ref(),
                    s.ts,
                    s.rss as i64,
                    s.cpu_pct,
                    s.fds as i64,
                    s.threads as i64,
                    s.procs as i64
                ])?;
            }
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO host_samples (ts, mem_total, mem_available, swap_total, swap_free, load1, disk_used_pct)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for h in host {
                stmt.execute(params![
                    h.ts,
                    h.mem_total as i64,
                    h.mem_available as i64,
                    h.swap_total as i64,
                    h.swap_free as i64,
                    h.load1,
                    h.disk_used_pct
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Rolls complete minutes before `now - raw_keep` into `samples_1m`, then
    /// drops raw samples older than `raw_keep` and rollups older than `rollup_keep`.
    pub fn compact_samples(
        &self,
        now: i64,
        raw_keep_ms: i64,
        rollup_keep_ms: i64,
    ) -> Result<(), StoreError> {
        let cutoff = (now - raw_keep_ms).div_euclid(60_000) * 60_000;
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO samples_1m (unit, ts, n, rss_min, rss_avg, rss_max, cpu_avg, cpu_max, fds_max, threads_max)
             SELECT unit, (ts / 60000) * 60000 AS m, COUNT(*), MIN(rss), CAST(AVG(rss) AS INTEGER), MAX(rss),
                    AVG(cpu_pct), MAX(cpu_pct), MAX(fds), MAX(threads)
             FROM samples WHERE ts < ?1 GROUP BY unit, m",
            params![cutoff],
        )?;
        tx.execute("DELETE FROM samples WHERE ts < ?1", params![cutoff])?;
        tx.execute(
            "DELETE FROM host_samples WHERE ts < ?1",
            params![now - rollup_keep_ms],
        )?;
        tx.execute(
            "DELETE FROM samples_1m WHERE ts < ?1",
            params![now - rollup_keep_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn samples(&self, unit: &str, since: i64, limit: u32) -> Result<Vec<Sample>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT ts, rss, cpu_pct, fds, threads, procs FROM samples
             WHERE unit = ?1 AND ts >= ?2 ORDER BY ts LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![unit, since, limit], |r| {
            Ok(Sample {
                ts: r.get(0)?,
                rss: r.get::<_, i64>(1)? as u64,
                cpu_pct: r.get(2)?,
                fds: r.get::<_, i64>(3)? as u64,
                threads: r.get::<_, i64>(4)? as u64,
                procs: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn rollups(&self, unit: &str, since: i64, limit: u32) -> Result<Vec<Rollup>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT ts, n, rss_min, rss_avg, rss_max, cpu_avg, cpu_max, fds_max, threads_max FROM samples_1m
             WHERE unit = ?1 AND ts >= ?2 ORDER BY ts LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![unit, since, limit], |r| {
            Ok(Rollup {
                ts: r.get(0)?,
                n: r.get::<_, i64>(1)? as u64,
                rss_min: r.get::<_, i64>(2)? as u64,
                rss_avg: r.get::<_, i64>(3)? as u64,
                rss_max: r.get::<_, i64>(4)? as u64,
                cpu_avg: r.get(5)?,
                cpu_max: r.get(6)?,
                fds_max: r.get::<_, i64>(7)? as u64,
                threads_max: r.get::<_, i64>(8)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn host_samples(&self, since: i64, limit: u32) -> Result<Vec<HostSample>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT ts, mem_total, mem_available, swap_total, swap_free, load1, disk_used_pct
             FROM host_samples WHERE ts >= ?1 ORDER BY ts LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since, limit], |r| {
            Ok(HostSample {
                ts: r.get(0)?,
                mem_total: r.get::<_, i64>(1)? as u64,
                mem_available: r.get::<_, i64>(2)? as u64,
                swap_total: r.get::<_, i64>(3)? as u64,
                swap_free: r.get::<_, i64>(4)? as u64,
                load1: r.get(5)?,
                disk_used_pct: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn last_ping(&self, name: &str) -> Result<Option<i64>, StoreError> {
        use rusqlite::OptionalExtension;
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT last_ping FROM heartbeats WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_ping(&self, name: &str, ts: i64) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO heartbeats (name, last_ping) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET last_ping = excluded.last_ping",
            params![name, ts],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts: i64, rss: u64) -> Sample {
        Sample {
            ts,
            rss,
            cpu_pct: 1.0,
            fds: 3,
            threads: 1,
            procs: 1,
        }
    }

    #[test]
    fn compaction_rolls_up_then_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("m.db")).unwrap();
        let batch: Vec<(String, Sample)> = (0..180)
            .map(|i| ("web".to_string(), s(i * 1000, 100 + i as u64)))
            .collect();
        st.insert_samples(&batch, &[]).unwrap();
        // Keep 1 minute of raw samples at t = 180 s: minutes 0 and 1 roll up.
        st.compact_samples(180_000, 60_000, 3_600_000).unwrap();
        let raw = st.samples("web", 0, 1000).unwrap();
        assert_eq!(raw.first().unwrap().ts, 120_000);
        let r = st.rollups("web", 0, 10).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].n, r[0].rss_min, r[0].rss_max), (60, 100, 159));
        assert_eq!((r[1].rss_min, r[1].rss_max), (160, 219));
        // Compacting again is idempotent.
        st.compact_samples(180_000, 60_000, 3_600_000).unwrap();
        assert_eq!(st.rollups("web", 0, 10).unwrap().len(), 2);
        // Rollups expire too.
        st.compact_samples(10_000_000, 60_000, 3_600_000).unwrap();
        assert!(st.rollups("web", 0, 10).unwrap().is_empty());
    }

    #[test]
    fn pings_persist() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("m.db")).unwrap();
        assert_eq!(st.last_ping("nightly").unwrap(), None);
        st.set_ping("nightly", 5).unwrap();
        st.set_ping("nightly", 7).unwrap();
        assert_eq!(st.last_ping("nightly").unwrap(), Some(7));
    }
}
