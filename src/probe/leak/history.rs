//! Bounded memory history: the minimum and maximum of each time bucket, kept
//! at several resolutions at once (2 s, 4 s, 8 s, …), each level a ring of a
//! fixed number of buckets. Recent data is fine-grained, old data coarse, and
//! the size never grows: `LEVELS × CAPACITY` buckets whatever the uptime.
//!
//! A window of length W is read from the finest level that still reaches back
//! W, so every window is seen through roughly `CAPACITY / 2 ..= CAPACITY`
//! buckets, whether it is 20 seconds or 5 days long.
//!
//! A bucket is stored in 12 bytes ([`Slot`]): its start in units of
//! `BASE_MS`, its minimum rounded down and its maximum rounded up to whole
//! KiB (memory comes in 4 KiB pages, so that is exact in practice; it caps
//! at 4 TiB). A week of history is 14 levels, 8 KiB per detector instead of
//! 16 KiB, and an agent keeps one detector per unit with a memory limit.

use std::collections::VecDeque;

/// Width of the finest buckets, milliseconds.
pub(crate) const BASE_MS: u64 = 2_000;
/// Buckets kept per level.
pub(crate) const CAPACITY: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub start_ms: u64,
    pub min: u64,
    pub max: u64,
}

/// A bucket as kept: start / `BASE_MS`, minimum and maximum in KiB.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: u32,
    min_kib: u32,
    max_kib: u32,
}

fn kib_down(v: u64) -> u32 {
    u32::try_from(v / 1024).unwrap_or(u32::MAX)
}

fn kib_up(v: u64) -> u32 {
    u32::try_from(v.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl Slot {
    fn bucket(self) -> Bucket {
        Bucket {
            start_ms: u64::from(self.start) * BASE_MS,
            min: u64::from(self.min_kib) * 1024,
            max: u64::from(self.max_kib) * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Level {
    pub width_ms: u64,
    buckets: VecDeque<Slot>,
    /// True once a bucket fell out of the ring: the level no longer holds
    /// everything since the last reset.
    evicted: bool,
}

impl Level {
    /// Buckets whose start lies in `[from_ms, to_ms)`, oldest first.
    pub fn range(&self, from_ms: u64, to_ms: u64) -> impl Iterator<Item = Bucket> + '_ {
        // Buckets are sorted by start; skip the old ones from the front.
        let skip = self
            .buckets
            .partition_point(|b| b.bucket().start_ms < from_ms);
        self.buckets
            .iter()
            .skip(skip)
            .map(|b| b.bucket())
            .take_while(move |b| b.start_ms < to_ms)
    }

    fn front(&self) -> Option<Bucket> {
        self.buckets.front().map(|b| b.bucket())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct History {
    levels: Vec<Level>,
}

impl History {
    /// Enough levels that the coarsest one covers `span_ms`.
    pub fn new(span_ms: u64) -> Self {
        let mut levels = Vec::new();
        let mut width = BASE_MS;
        loop {
            levels.push(Level {
                width_ms: width,
                buckets: VecDeque::with_capacity(CAPACITY),
                evicted: false,
            });
            if width.saturating_mul(CAPACITY as u64) >= span_ms || levels.len() >= 40 {
                break;
            }
            width *= 2;
        }
        History { levels }
    }

    pub fn clear(&mut self) {
        for l in &mut self.levels {
            l.buckets.clear();
            l.evicted = false;
        }
    }

    /// Adds a sample. Samples must come in time order (the caller drops the others).
    pub fn push(&mut self, t_ms: u64, v: u64) {
        let (lo, hi) = (kib_down(v), kib_up(v));
        for l in &mut self.levels {
            // Widths are BASE_MS × 2^k, so every start is a whole number of
            // BASE_MS; u32 of them is 272 years of any monotonic epoch.
            let start = u32::try_from((t_ms - t_ms % l.width_ms) / BASE_MS).unwrap_or(u32::MAX);
            match l.buckets.back_mut() {
                Some(b) if b.start == start => {
                    b.min_kib = b.min_kib.min(lo);
                    b.max_kib = b.max_kib.max(hi);
                }
                _ => {
                    if l.buckets.len() == CAPACITY {
                        l.buckets.pop_front();
                        l.evicted = true;
                    }
                    l.buckets.push_back(Slot {
                        start,
                        min_kib: lo,
                        max_kib: hi,
                    });
                }
            }
        }
    }

    /// The finest level that still holds the data from `since_ms` on (the
    /// coarsest level when none does).
    pub fn level_from(&self, since_ms: u64) -> &Level {
        self.levels
            .iter()
            .find(|l| !l.evicted || l.front().is_some_and(|b| b.start_ms <= since_ms))
            .unwrap_or_else(|| self.levels.last().expect("at least one level"))
    }

    /// Minimum and maximum of the buckets that lie within `[from_ms, to_ms)`,
    /// at the finest resolution that reaches back that far (a bucket that
    /// straddles `to_ms` is left out: it holds samples from after it).
    pub fn min_max(&self, from_ms: u64, to_ms: u64) -> Option<(u64, u64)> {
        let level = self.level_from(from_ms);
        level
            .range(from_ms, to_ms)
            .filter(|b| b.start_ms.saturating_add(level.width_ms) <= to_ms)
            .fold(None, |acc, b| match acc {
                None => Some((b.min, b.max)),
                Some((lo, hi)) => Some((lo.min(b.min), hi.max(b.max))),
            })
    }

    /// The buckets that lie within `[from_ms, to_ms)`, oldest first, each
    /// stretch of time from the finest level that still holds it (so the
    /// recent part is fine-grained and the old part coarse).
    pub fn within(&self, from_ms: u64, to_ms: u64) -> Vec<Bucket> {
        let mut out: Vec<Bucket> = Vec::new();
        // From the finest level back: each level adds what is older than
        // what the finer ones hold.
        let mut covered_from = to_ms;
        for l in &self.levels {
            let Some(front) = l.front() else {
                continue;
            };
            if front.start_ms >= covered_from {
                continue;
            }
            let older: Vec<Bucket> = l
                .range(from_ms, covered_from)
                .filter(|b| b.start_ms.saturating_add(l.width_ms) <= covered_from)
                .collect();
            if let Some(first) = older.first() {
                covered_from = first.start_ms;
                out.splice(0..0, older);
            }
            if !l.evicted || covered_from <= from_ms {
                break;
            }
        }
        out
    }

    #[cfg(test)]
    pub fn bucket_count(&self) -> usize {
        self.levels.iter().map(|l| l.buckets.len()).sum()
    }

    #[cfg(test)]
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_min_and_max_and_memory_stays_bounded() {
        let week_ms = 7 * 24 * 3_600_000;
        let mut h = History::new(week_ms);
        // A week at one sample per second.
        for s in 0..7 * 24 * 3600u64 {
            h.push(s * 1000, (100 + s % 7) * 1024);
        }
        assert!(h.bucket_count() <= h.level_count() * CAPACITY);
        assert!(h.level_count() <= 14, "{} levels", h.level_count());
        let end = 7 * 24 * 3_600_000;
        assert_eq!(
            h.min_max(end - 3_600_000, u64::MAX),
            Some((100 * 1024, 106 * 1024))
        );
        // A week back, the buckets are coarse but still there.
        assert_eq!(h.min_max(0, u64::MAX), Some((100 * 1024, 106 * 1024)));
        // 12 bytes a bucket: 8 KiB for the week's 14 levels.
        assert_eq!(std::mem::size_of::<Slot>(), 12);
    }

    #[test]
    fn windows_use_the_finest_level_that_reaches_back() {
        let mut h = History::new(24 * 3_600_000);
        for s in 0..3600u64 {
            h.push(s * 1000, s);
        }
        // The last 60 s fit in level 0 (48 buckets of 2 s = 96 s).
        assert_eq!(h.level_from(3_540_000).width_ms, BASE_MS);
        // The whole hour needs 2 s × 2^6 = 128 s buckets (48 × 128 s > 1 h).
        assert_eq!(h.level_from(0).width_ms, BASE_MS << 6);
        // Before anything was evicted, level 0 holds everything.
        let mut young = History::new(24 * 3_600_000);
        young.push(0, 5 << 20);
        young.push(1_000, 7 << 20);
        assert_eq!(young.level_from(0).width_ms, BASE_MS);
        assert_eq!(young.min_max(0, 10_000), Some((5 << 20, 7 << 20)));
        // A bucket reaching past the end of the range is left out.
        assert_eq!(young.min_max(0, 1_000), None);
    }

    #[test]
    fn values_are_kept_to_the_kib_rounded_outward() {
        let mut h = History::new(3_600_000);
        // A page-sized value is exact; others widen the bucket by under 1 KiB.
        h.push(0, 4096 * 300);
        assert_eq!(h.min_max(0, 2_000), Some((4096 * 300, 4096 * 300)));
        h.push(2_000, 10_000);
        h.push(3_000, 20_000);
        assert_eq!(h.min_max(2_000, 4_000), Some((9 * 1024, 20 * 1024)));
        // Past 4 TiB the value saturates instead of wrapping.
        h.push(4_000, u64::MAX);
        let (lo, hi) = h.min_max(4_000, 6_000).unwrap();
        assert_eq!(
            (lo, hi),
            (u64::from(u32::MAX) * 1024, u64::from(u32::MAX) * 1024)
        );
    }

    #[test]
    fn within_reads_recent_time_fine_and_old_time_coarse() {
        let mut h = History::new(24 * 3_600_000);
        for s in 0..3600u64 {
            h.push(s * 1000, s);
        }
        let b = h.within(0, 3_600_000);
        assert!(b.windows(2).all(|w| w[0].start_ms < w[1].start_ms));
        // The last 96 s come in 2 s buckets, the first ones in coarse buckets.
        assert_eq!(b[b.len() - 1].start_ms, 3_598_000);
        assert_eq!(b[b.len() - 2].start_ms, 3_596_000);
        assert!(b[1].start_ms - b[0].start_ms >= 64_000, "{:?}", &b[..2]);
        assert!(b[0].start_ms < 200_000, "{:?}", b[0]);
        assert!(b.len() < 48 * 8, "{}", b.len());
    }
}
