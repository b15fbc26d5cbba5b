//! Resource samples: each run's watchdog hands in one sample of its whole
//! tree per `sample_interval` (RSS, CPU %, open fds, threads, processes); this
//! task samples the host (MemAvailable, swap, load, disk of the data dir),
//! writes everything in one transaction every 10 s (a crash loses at most
//! that much of samples, never an event), and compacts old samples into
//! per-minute rollups (retention in docs/operations.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::leak::{Detector, LeakConfig, LeakStatus, Verdict};
use crate::event::{Bus, EventKind};
use crate::store::{HostSample, Sample, Store};
use crate::util::now_ms;

const FLUSH_EVERY: Duration = Duration::from_secs(10);
const COMPACT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Full-resolution samples are kept this long.
    pub raw: Duration,
    /// Per-minute rollups (and host samples) this long.
    pub rollup: Duration,
}

pub struct Sampler {
    /// Samples not yet stored, each unit's name shared with `latest` (a
    /// hundred units buffer a thousand samples between two flushes).
    pending: Mutex<Vec<(Arc<str>, Sample)>>,
    pending_host: Mutex<Vec<HostSample>>,
    latest: Mutex<HashMap<Arc<str>, Sample>>,
    latest_host: Mutex<Option<HostSample>>,
    /// One leak detector per service, fed with every sample of its tree.
    leaks: Mutex<HashMap<String, LeakEntry>>,
    host_leak: Mutex<Detector>,
    epoch: std::time::Instant,
    bus: Option<Bus>,
    /// Where `on_leak = "restart"` requests go (the agent restarts the unit).
    restarts: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>>,
}

struct LeakEntry {
    detector: Detector,
    /// The unit's memory limit; without one, the host's headroom is the limit.
    limit: Option<u64>,
    restart_asked: bool,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new(None, HashMap::new())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Sampler {
    /// `leaks`: the services to watch for leaks, with their config and memory limit.
    pub fn new(bus: Option<Bus>, leaks: HashMap<String, (LeakConfig, Option<u64>)>) -> Sampler {
        Sampler {
            pending: Mutex::default(),
            pending_host: Mutex::default(),
            latest: Mutex::default(),
            latest_host: Mutex::default(),
            leaks: Mutex::new(
                leaks
                    .into_iter()
                    .filter(|(_, (cfg, _))| cfg.enabled)
                    .map(|(u, (cfg, limit))| {
                        (
                            u,
                            LeakEntry {
                                detector: Detector::new(cfg, limit),
                                limit,
                                restart_asked: false,
                            },
                        )
                    })
                    .collect(),
            ),
            host_leak: Mutex::new(Detector::new(LeakConfig::default(), None)),
            epoch: std::time::Instant::now(),
            bus,
            restarts: Mutex::new(None),
        }
    }

    pub fn on_leak_restart(&self, tx: tokio::sync::mpsc::UnboundedSender<(String, String)>) {
        *lock(&self.restarts) = Some(tx);
    }

    /// A new run of the unit started: its detector starts over (warm-up).
    pub fn run_started(&self, unit: &str) {
        let t = self.epoch.elapsed();
        if let Some(e) = lock(&self.leaks).get_mut(unit) {
            e.detector.reset(t);
            e.restart_asked = false;
        }
    }

    /// The wall-clock time (ms since the Unix epoch) the leak fits count
    /// from: `Fit::t0_ms` is relative to it.
    pub fn epoch_ms(&self) -> i64 {
        crate::util::now_ms() - self.epoch.elapsed().as_millis() as i64
    }

    pub fn leak_status(&self, unit: &str) -> Option<LeakStatus> {
        if unit == "host" {
            return Some(lock(&self.host_leak).status());
        }
        lock(&self.leaks).get(unit).map(|e| e.detector.status())
    }

    /// A sample of a unit's tree, from its run's watchdog.
    pub fn record(&self, unit: &str, s: Sample) {
        let name = {
            let mut latest = lock(&self.latest);
            let name = match latest.get_key_value(unit) {
                Some((k, _)) => k.clone(),
                None => Arc::from(unit),
            };
            latest.insert(name.clone(), s);
            name
        };
        lock(&self.pending).push((name, s));
        let headroom = self.latest_host().map(|h| h.mem_available);
        let mut leaks = lock(&self.leaks);
        let Some(e) = leaks.get_mut(unit) else { return };
        if e.limit.is_none() {
            // No limit: it runs out when the host does.
            e.detector.set_limit(headroom.map(|h| s.rss + h));
        }
        let verdict = e.detector.observe(self.epoch.elapsed(), s.rss);
        self.announce(unit, verdict);
        if e.detector.should_restart() && !e.restart_asked {
            e.restart_asked = true;
            let st = e.detector.status();
            let why = format!(
                "leak: {:.1} MB/h, predicted to reach its limit in {}",
                st.slope_mb_per_hour,
                st.time_to_limit_ms
                    .map(|ms| crate::config::units::format_duration(
                        std::time::Duration::from_millis(ms)
                    ))
                    .unwrap_or_else(|| "?".into())
            );
            if let Some(tx) = lock(&self.restarts).as_ref() {
                let _ = tx.send((unit.to_string(), why));
            }
        }
    }

    fn announce(&self, unit: &str, verdict: Option<Verdict>) {
        let (Some(bus), Some(v)) = (&self.bus, verdict) else {
            return;
        };
        match v {
            Verdict::Suspected(st) => {
                tracing::warn!(
                    unit,
                    slope_mb_per_hour = st.slope_mb_per_hour,
                    confidence = st.confidence,
                    time_to_limit_ms = st.time_to_limit_ms,
                    "Memory leak suspected."
                );
                bus.emit(EventKind::LeakSuspected {
                    unit: unit.to_string(),
                    slope_mb_per_hour: (st.slope_mb_per_hour * 10.0).round() / 10.0,
                    confidence: (st.confidence * 100.0).round() / 100.0,
                    time_to_limit_ms: st.time_to_limit_ms,
                    limit: st.limit,
                    floor: st.floor,
                });
            }
            Verdict::Cleared(st) => {
                tracing::info!(unit, "Memory leak no longer suspected.");
                bus.emit(EventKind::LeakCleared {
                    unit: unit.to_string(),
                    slope_mb_per_hour: (st.slope_mb_per_hour * 10.0).round() / 10.0,
                    confidence: (st.confidence * 100.0).round() / 100.0,
                });
            }
        }
    }

    /// The run ended: no current figures for the unit.
    pub fn forget(&self, unit: &str) {
        lock(&self.latest).remove(unit);
    }

    pub fn latest(&self, unit: &str) -> Option<Sample> {
        lock(&self.latest).get(unit).copied()
    }

    pub fn latest_host(&self) -> Option<HostSample> {
        *lock(&self.latest_host)
    }

    fn flush(&self, store: &Store) {
        // The next batch gets the room this one needed, rather than growing
        // to it again through a series of reallocations.
        let units = {
            let mut pending = lock(&self.pending);
            let room = pending.len();
            std::mem::replace(&mut *pending, Vec::with_capacity(room))
        };
        let host = std::mem::take(&mut *lock(&self.pending_host));
        if units.is_empty() && host.is_empty() {
            return;
        }
        if let Err(e) = store.insert_samples(&units, &host) {
            tracing::error!(error = %e, count = units.len(), "Could not store samples.");
        }
    }

    /// Samples the host every `interval`, flushes and compacts, until cancelled
    /// (then flushes once more).
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        data_dir: PathBuf,
        interval: Duration,
        retention: Retention,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut compact = tokio::time::interval(COMPACT_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.flush(&store);
                    return;
                }
                _ = tick.tick() => {
                    if let Some(h) = host_sample(&data_dir) {
                        lock(&self.pending_host).push(h);
                        *lock(&self.latest_host) = Some(h);
                        let verdict = {
                            let mut d = lock(&self.host_leak);
                            d.set_limit(Some(h.mem_total));
                            d.observe(self.epoch.elapsed(), h.mem_total.saturating_sub(h.mem_available))
                        };
                        self.announce("host", verdict);
                    }
                }
                _ = flush.tick() => self.flush(&store),
                _ = compact.tick() => {
                    let store = store.clone();
                    let raw = retention.raw.as_millis() as i64;
                    let rollup = retention.rollup.as_millis() as i64;
                    let r = tokio::task::spawn_blocking(move || store.compact_samples(now_ms(), raw, rollup)).await;
                    if let Ok(Err(e)) = r {
                        tracing::error!(error = %e, "Could not compact samples.");
                    }
                }
            }
        }
    }
}

/// Reads /proc/meminfo, /proc/loadavg and the data dir's filesystem.
pub fn host_sample(data_dir: &std::path::Path) -> Option<HostSample> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let disk_used_pct = nix::sys::statvfs::statvfs(data_dir)
        .map(|st| {
            let used = (st.blocks() - st.blocks_free()) as f64;
            let avail = st.blocks_available() as f64;
            if used + avail > 0.0 {
                used * 100.0 / (used + avail)
            } else {
                0.0
            }
        })
        .unwrap_or(0.0);
    Some(HostSample {
        ts: now_ms(),
        mem_total: kib("MemTotal:"),
        mem_available: kib("MemAvailable:"),
        swap_total: kib("SwapTotal:"),
        swap_free: kib("SwapFree:"),
        load1,
        disk_used_pct,
    })
}
