//! SQLite queries for alerts, their outbox of deliveries, and silences
//! (tables from migration 3 in `store/migrations.rs`).
//!
//! An alert's state and the deliveries its transition produced are written
//! in one transaction, so after a crash either both exist or neither does:
//! a step is never lost and never queued twice.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub key: String,
    pub rule: String,
    pub subject: String,
    pub severity: String,
    pub state: String,
    pub title: String,
    pub body: String,
    pub policy: String,
    pub occurrences: u64,
    pub first_at: i64,
    pub last_at: i64,
    pub event_id: Option<i64>,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub ack_comment: Option<String>,
    pub ack_until: Option<i64>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    #[serde(skip)]
    pub esc_started: Option<i64>,
    #[serde(skip)]
    pub esc_round: u32,
    #[serde(skip)]
    pub esc_step: usize,
    #[serde(skip)]
    pub esc_done: bool,
    /// Channels told about this alert so far.
    pub notified: Vec<String>,
}

const ALERT_COLS: &str =
    "id, key, rule, subject, severity, state, title, body, policy, occurrences,
    first_at, last_at, event_id, acked_at, acked_by, ack_comment, ack_until, resolved_at,
    resolved_by, esc_started, esc_round, esc_step, esc_done, notified";

fn alert_row(r: &Row) -> rusqlite::Result<AlertRecord> {
    let notified: String = r.get(23)?;
    Ok(AlertRecord {
        id: r.get(0)?,
        key: r.get(1)?,
        rule: r.get(2)?,
        subject: r.get(3)?,
        severity: r.get(4)?,
        state: r.get(5)?,
        title: r.get(6)?,
        body: r.get(7)?,
        policy: r.get(8)?,
        occurrences: r.get::<_, i64>(9)?.max(0) as u64,
        first_at: r.get(10)?,
        last_at: r.get(11)?,
        event_id: r.get(12)?,
        acked_at: r.get(13)?,
        acked_by: r.get(14)?,
        ack_comment: r.get(15)?,
        ack_until: r.get(16)?,
        resolved_at: r.get(17)?,
        resolved_by: r.get(18)?,
        esc_started: r.get(19)?,
        esc_round: r.get::<_, i64>(20)?.max(0) as u32,
        esc_step: r.get::<_, i64>(21)?.max(0) as usize,
        esc_done: r.get::<_, i64>(22)? != 0,
        notified: serde_json::from_str(&notified).unwrap_or_default(),
    })
}

/// A notification to queue along with an alert's transition.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub channel: String,
    /// `fired`, `escalated`, `resolved`.
    pub what: String,
    pub payload: String,
    /// `pending` (to send) or `muted` (a silence or quiet hours).
    pub state: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub alert_id: i64,
    pub channel: String,
    pub what: String,
    /// `pending`, `sent`, `muted`, or `superseded` (a newer notification
    /// for the same alert and channel replaced it before it could be sent).
    pub state: String,
    pub attempts: u32,
    pub next_try: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    #[serde(skip)]
    pub payload: String,
}

fn delivery_row(r: &Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        alert_id: r.get(1)?,
        channel: r.get(2)?,
        what: r.get(3)?,
        state: r.get(4)?,
        attempts: r.get::<_, i64>(5)?.max(0) as u32,
        next_try: r.get(6)?,
        last_error: r.get(7)?,
        created_at: r.get(8)?,
        sent_at: r.get(9)?,
        payload: r.get(10)?,
    })
}

const DELIVERY_COLS: &str =
    "id, alert_id, channel, what, state, attempts, next_try, last_error, created_at, sent_at, payload";

/// One try to hand a notification to its channel.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub delivery_id: i64,
    pub ts: i64,
    pub ok: bool,
    pub error: Option<String>,
    pub ms: u64,
}

fn log_attempt(
    conn: &Connection,
    d: &Delivery,
    now: i64,
    error: Option<&str>,
    ms: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO alert_attempts (delivery_id, alert_id, ts, ok, error, ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        d.id,
        d.alert_id,
        now,
        error.is_none(),
        error,
        ms as i64
    ])?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Silence {
    pub id: i64,
    /// `label=pattern` pairs, all of which must match (`*` is a wildcard).
    pub matchers: Vec<(String, String)>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub comment: String,
    pub created_by: String,
    pub created_at: i64,
}

fn insert_deliveries(
    conn: &Connection,
    alert_id: i64,
    deliveries: &[NewDelivery],
    now: i64,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO alert_deliveries (alert_id, channel, what, payload, state, next_try, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?;
    let mut supersede = conn.prepare_cached(
        "UPDATE alert_deliveries SET state = 'superseded'
         WHERE alert_id = ?1 AND channel = ?2 AND state = 'pending'
           AND (what IN ('fired', 'escalated') OR (?3 AND what = 'acknowledged'))",
    )?;
    for d in deliveries {
        if let Some(also_acks) = supersedes(d) {
            supersede.execute(params![alert_id, d.channel, also_acks])?;
        }
        stmt.execute(params![
            alert_id, d.channel, d.what, d.payload, d.state, now
        ])?;
    }
    Ok(())
}

/// Whether a new delivery makes the older pending ones of its alert and
/// channel stale, so that they are never sent (state `superseded`): a
/// `resolved` replaces every older notice, muted or not (once the alert is
/// over, "firing" is wrong); a pending `fired`/`escalated` replaces older
/// `fired`/`escalated` ones (a newer round says the same, with newer
/// facts). `Some(true)` when older `acknowledged` notices go too. Without
/// this, the rounds queued while a channel was down all went out after it
/// came back, after the "resolved".
fn supersedes(d: &NewDelivery) -> Option<bool> {
    match d.what.as_str() {
        "resolved" => Some(true),
        "fired" | "escalated" if d.state == "pending" => Some(false),
        _ => None,
    }
}

fn write_cursor(conn: &Connection, event_id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO alert_cursor (id, event_id) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET event_id = max(event_id, excluded.event_id)",
    )?
    .execute(params![event_id])?;
    Ok(())
}

fn update_alert(conn: &Connection, a: &AlertRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE alerts SET state = ?2, occurrences = ?3, last_at = ?4, acked_at = ?5,
            acked_by = ?6, ack_comment = ?7, ack_until = ?8, resolved_at = ?9, resolved_by = ?10,
            esc_started = ?11, esc_round = ?12, esc_step = ?13, esc_done = ?14, notified = ?15,
            title = ?16, body = ?17
         WHERE id = ?1",
    )?
    .execute(params![
        a.id,
        a.state,
        a.occurrences as i64,
        a.last_at,
        a.acked_at,
        a.acked_by,
        a.ack_comment,
        a.ack_until,
        a.resolved_at,
        a.resolved_by,
        a.esc_started,
        a.esc_round as i64,
        a.esc_step as i64,
        a.esc_done as i64,
        serde_json::to_string(&a.notified).unwrap_or_else(|_| "[]".into()),
        a.title,
        a.body,
    ])?;
    Ok(())
}

/// Alert queries on the shared store.
pub trait AlertStore {
    fn insert_alert(&self, a: &AlertRecord) -> Result<i64, StoreError>;
    /// Stores an alert's change with its deliveries and, when the change
    /// came from an event, the engine's cursor (all in one transaction).
    fn save_alert(
        &self,
        a: &AlertRecord,
        deliveries: &[NewDelivery],
        now: i64,
        cursor: Option<i64>,
    ) -> Result<(), StoreError>;
    /// The id of the last event the alert engine handled.
    fn alert_cursor(&self) -> Result<Option<i64>, StoreError>;
    fn set_alert_cursor(&self, event_id: i64) -> Result<(), StoreError>;
    fn alert(&self, id: i64) -> Result<Option<AlertRecord>, StoreError>;
    fn alerts(&self, state: Option<&str>, limit: u32) -> Result<Vec<AlertRecord>, StoreError>;
    fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;
    fn deliveries(&self, alert_id: i64) -> Result<Vec<Delivery>, StoreError>;
    /// Pending deliveries due at `now`, each only when no older delivery of
    /// its alert and channel is still pending: one (alert, channel) sends
    /// in creation order.
    fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<Delivery>, StoreError>;
    /// The state of an alert's newest delivery, if it has any.
    fn last_delivery_state(&self, alert_id: i64) -> Result<Option<String>, StoreError>;
    /// The earliest retry due after `now`.
    fn next_delivery_after(&self, now: i64) -> Result<Option<i64>, StoreError>;
    /// Records a confirmed attempt (`ms`: how long it took).
    fn delivery_sent(&self, d: &Delivery, now: i64, ms: u64) -> Result<(), StoreError>;
    /// Records a failed attempt and when to try again.
    fn delivery_failed(
        &self,
        d: &Delivery,
        now: i64,
        ms: u64,
        next_try: i64,
        error: &str,
    ) -> Result<(), StoreError>;
    /// Every attempt to deliver an alert's notifications, oldest first.
    fn attempts(&self, alert_id: i64) -> Result<Vec<Attempt>, StoreError>;
    fn delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
    fn insert_silence(&self, s: &Silence) -> Result<i64, StoreError>;
    fn silences(&self, now: i64, include_expired: bool) -> Result<Vec<Silence>, StoreError>;
    fn expire_silence(&self, id: i64, now: i64) -> Result<bool, StoreError>;
}

impl AlertStore for Store {
    fn insert_alert(&self, a: &AlertRecord) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO alerts (key, rule, subject, severity, state, title, body, policy,
                occurrences, first_at, last_at, event_id, esc_started)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                a.key,
                a.rule,
                a.subject,
                a.severity,
                a.state,
                a.title,
                a.body,
                a.policy,
                a.occurrences as i64,
                a.first_at,
                a.last_at,
                a.event_id,
                a.esc_started,
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn save_alert(
        &self,
        a: &AlertRecord,
        deliveries: &[NewDelivery],
        now: i64,
        cursor: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        update_alert(&tx, a)?;
        insert_deliveries(&tx, a.id, deliveries, now)?;
        if let Some(c) = cursor {
            write_cursor(&tx, c)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn alert_cursor(&self) -> Result<Option<i64>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row("SELECT event_id FROM alert_cursor WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_alert_cursor(&self, event_id: i64) -> Result<(), StoreError> {
        let conn = self.conn()?;
        write_cursor(&conn, event_id)?;
        Ok(())
    }

    fn alert(&self, id: i64) -> Result<Option<AlertRecord>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1"),
                params![id],
                alert_row,
            )
            .optional()?)
    }

    fn alerts(&self, state: Option<&str>, limit: u32) -> Result<Vec<AlertRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {ALERT_COLS} FROM alerts
             WHERE (?1 IS NULL AND state != 'resolved') OR state = ?1 OR ?1 = 'all'
             ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![state, limit], alert_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE state != 'resolved' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], alert_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn deliveries(&self, alert_id: i64) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {DELIVERY_COLS} FROM alert_deliveries WHERE alert_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![alert_id], delivery_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLS} FROM alert_deliveries d
             WHERE state = 'pending' AND next_try <= ?1
               AND NOT EXISTS (
                 SELECT 1 FROM alert_deliveries o
                 WHERE o.alert_id = d.alert_id AND o.id < d.id
                   AND o.channel = d.channel AND o.state = 'pending')
             ORDER BY next_try, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now, limit], delivery_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn last_delivery_state(&self, alert_id: i64) -> Result<Option<String>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT state FROM alert_deliveries
                 WHERE alert_id = ?1 AND what IN ('fired', 'escalated')
                 ORDER BY id DESC LIMIT 1",
                params![alert_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn next_delivery_after(&self, now: i64) -> Result<Option<i64>, StoreError> {
        let conn = self.conn()?;
        Ok(conn.query_row(
            "SELECT MIN(next_try) FROM alert_deliveries WHERE state = 'pending' AND next_try > ?1",
            params![now],
            |r| r.get(0),
        )?)
    }

    fn delivery_sent(&self, d: &Delivery, now: i64, ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "UPDATE alert_deliveries SET state = 'sent', sent_at = ?2, attempts = attempts + 1,
                last_error = NULL WHERE id = ?1",
        )?
        .execute(params![d.id, now])?;
        log_attempt(&tx, d, now, None, ms)?;
        tx.commit()?;
        Ok(())
    }

    fn delivery_failed(
        &self,
        d: &Delivery,
        now: i64,
        ms: u64,
        next_try: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "UPDATE alert_deliveries SET attempts = attempts + 1, next_try = ?2, last_error = ?3
             WHERE id = ?1",
        )?
        .execute(params![d.id, next_try, error])?;
        log_attempt(&tx, d, now, Some(error), ms)?;
        tx.commit()?;
        Ok(())
    }

    fn attempts(&self, alert_id: i64) -> Result<Vec<Attempt>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT delivery_id, ts, ok, error, ms FROM alert_attempts
             WHERE alert_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![alert_id], |r| {
            Ok(Attempt {
                delivery_id: r.get(0)?,
                ts: r.get(1)?,
                ok: r.get::<_, i64>(2)? != 0,
                error: r.get(3)?,
                ms: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT state, COUNT(*) FROM alert_deliveries GROUP BY state ORDER BY state",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert_silence(&self, s: &Silence) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO silences (matchers, starts_at, ends_at, comment, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                serde_json::to_string(&s.matchers)?,
                s.starts_at,
                s.ends_at,
                s.comment,
                s.created_by,
                s.created_at
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn silences(&self, now: i64, include_expired: bool) -> Result<Vec<Silence>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT id, matchers, starts_at, ends_at, comment, created_by, created_at
             FROM silences WHERE ?2 OR ends_at > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![now, include_expired], |r| {
            let m: String = r.get(1)?;
            Ok(Silence {
                id: r.get(0)?,
                matchers: serde_json::from_str(&m).unwrap_or_default(),
                starts_at: r.get(2)?,
                ends_at: r.get(3)?,
                comment: r.get(4)?,
                created_by: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn expire_silence(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE silences SET ends_at = ?2 WHERE id = ?1 AND ends_at > ?2",
            params![id, now],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> AlertRecord {
        AlertRecord {
            id: 0,
            key: key.into(),
            rule: "r".into(),
            subject: "s".into(),
            severity: "critical".into(),
            state: "firing".into(),
            title: "t".into(),
            body: "b".into(),
            policy: "p".into(),
            occurrences: 1,
            first_at: 1,
            last_at: 1,
            event_id: None,
            acked_at: None,
            acked_by: None,
            ack_comment: None,
            ack_until: None,
            resolved_at: None,
            resolved_by: None,
            esc_started: Some(1),
            esc_round: 0,
            esc_step: 0,
            esc_done: false,
            notified: vec![],
        }
    }

    #[test]
    fn one_active_alert_per_key_and_the_outbox_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            let s = Store::open(&path).unwrap();
            let mut a = record("k");
            a.id = s.insert_alert(&a).unwrap();
            assert!(
                s.insert_alert(&record("k")).is_err(),
                "duplicate active key"
            );
            a.notified = vec!["mail".into()];
            a.esc_step = 1;
            let d = NewDelivery {
                channel: "mail".into(),
                what: "fired".into(),
                payload: "{}".into(),
                state: "pending",
            };
            s.save_alert(&a, &[d], 10, Some(7)).unwrap();
            assert_eq!(s.alert_cursor().unwrap(), Some(7));
            s.set_alert_cursor(5).unwrap();
            assert_eq!(s.alert_cursor().unwrap(), Some(7), "never backwards");
        }
        let s = Store::open(&path).unwrap();
        let active = s.active_alerts().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].notified, vec!["mail"]);
        assert_eq!(active[0].esc_step, 1);
        let due = s.due_deliveries(10, 10).unwrap();
        assert_eq!(due.len(), 1);
        s.delivery_failed(&due[0], 20, 5, 100, "down").unwrap();
        assert!(s.due_deliveries(50, 10).unwrap().is_empty());
        assert_eq!(s.next_delivery_after(50).unwrap(), Some(100));
        assert_eq!(s.next_delivery_after(100).unwrap(), None);
        s.delivery_sent(&due[0], 101, 3).unwrap();
        assert!(s.due_deliveries(1000, 10).unwrap().is_empty());
        let all = s.deliveries(active[0].id).unwrap();
        assert_eq!(all[0].state, "sent");
        assert_eq!(all[0].attempts, 2);
        let log = s.attempts(active[0].id).unwrap();
        assert_eq!(log.len(), 2);
        assert!(!log[0].ok && log[0].error.as_deref() == Some("down"));
        assert!(log[1].ok && log[1].ms == 3);
        // Resolved: the key is free again.
        let mut a = active[0].clone();
        a.state = "resolved".into();
        s.save_alert(&a, &[], 200, None).unwrap();
        assert!(s.insert_alert(&record("k")).is_ok());
    }

    fn new_delivery(channel: &str, what: &str, state: &'static str) -> NewDelivery {
        NewDelivery {
            channel: channel.into(),
            what: what.into(),
            payload: "{}".into(),
            state,
        }
    }

    /// `what:state` of every delivery of the alert, by channel, oldest first.
    fn states(s: &Store, alert: i64, channel: &str) -> Vec<String> {
        s.deliveries(alert)
            .unwrap()
            .into_iter()
            .filter(|d| d.channel == channel)
            .map(|d| format!("{}:{}", d.what, d.state))
            .collect()
    }

    #[test]
    fn one_alert_and_channel_sends_in_order_and_newer_rounds_supersede_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.db")).unwrap();
        let mut a = record("k");
        a.id = s.insert_alert(&a).unwrap();
        let fired = [
            new_delivery("hook", "fired", "pending"),
            new_delivery("mail", "fired", "pending"),
        ];
        s.save_alert(&a, &fired, 10, None).unwrap();
        let due = s.due_deliveries(10, 10).unwrap();
        assert_eq!(due.len(), 2);
        // The hook is down: its "fired" waits until 100.
        let hook_fired = due.iter().find(|d| d.channel == "hook").unwrap();
        s.delivery_failed(hook_fired, 11, 1, 100, "HTTP 500")
            .unwrap();

        // Acknowledged meanwhile: the notice is due, but not before the
        // older "fired" on the same channel.
        let ack = [new_delivery("hook", "acknowledged", "pending")];
        s.save_alert(&a, &ack, 20, None).unwrap();
        let due = s.due_deliveries(50, 10).unwrap();
        assert_eq!(
            due.iter()
                .map(|d| (&*d.channel, &*d.what))
                .collect::<Vec<_>>(),
            vec![("mail", "fired")],
            "nothing of the hook's overtakes its pending \"fired\""
        );
        assert_eq!(s.next_delivery_after(50).unwrap(), Some(100));

        // A new round on the hook makes the old "fired" stale; the older
        // acknowledgement still goes first.
        let round = [new_delivery("hook", "escalated", "pending")];
        s.save_alert(&a, &round, 30, None).unwrap();
        assert_eq!(
            states(&s, a.id, "hook"),
            [
                "fired:superseded",
                "acknowledged:pending",
                "escalated:pending"
            ]
        );
        let due = s.due_deliveries(50, 10).unwrap();
        let hook_due: Vec<_> = due.iter().filter(|d| d.channel == "hook").collect();
        assert_eq!(hook_due.len(), 1);
        assert_eq!(hook_due[0].what, "acknowledged");

        // Resolved: every older pending notice of the hook is stale, even a
        // muted resolution's; the mail channel's own "fired" is untouched.
        let resolved = [new_delivery("hook", "resolved", "pending")];
        a.state = "resolved".into();
        s.save_alert(&a, &resolved, 40, None).unwrap();
        assert_eq!(
            states(&s, a.id, "hook"),
            [
                "fired:superseded",
                "acknowledged:superseded",
                "escalated:superseded",
                "resolved:pending"
            ]
        );
        assert_eq!(states(&s, a.id, "mail"), ["fired:pending"]);
        let due = s.due_deliveries(50, 10).unwrap();
        assert_eq!(due.len(), 2);
        assert!(due
            .iter()
            .any(|d| d.channel == "hook" && d.what == "resolved"));

        // A superseded delivery whose send was already under way keeps its
        // state when that send fails, and is never due again.
        s.delivery_failed(hook_fired, 60, 1, 70, "HTTP 500")
            .unwrap();
        assert_eq!(states(&s, a.id, "hook")[0], "fired:superseded");
        assert!(s
            .due_deliveries(1000, 10)
            .unwrap()
            .iter()
            .all(|d| d.what != "fired" || d.channel == "mail"));

        // A muted round supersedes nothing: the pending one is all there is.
        let mut b = record("k2");
        b.id = s.insert_alert(&b).unwrap();
        s.save_alert(&b, &[new_delivery("hook", "fired", "pending")], 10, None)
            .unwrap();
        s.save_alert(&b, &[new_delivery("hook", "escalated", "muted")], 20, None)
            .unwrap();
        assert_eq!(
            states(&s, b.id, "hook"),
            ["fired:pending", "escalated:muted"]
        );
    }
}
