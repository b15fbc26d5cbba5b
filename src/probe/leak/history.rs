//! Bounded memory history: the minimum and maximum of each time bucket, read
//! at several resolutions (2 s, 4 s, 8 s, …). Recent data is fine-grained,
//! old data coarse, and the size never grows whatever the uptime.
//!
//! A window of length W is read from the finest level that still reaches back
//! W, so every window is seen through roughly `CAPACITY / 2 ..= CAPACITY`
//! buckets, whether it is 20 seconds or 5 days long.
//!
//! What each level shows (its [`Level`]: the newest `CAPACITY` buckets of its
//! width) is not stored whole. Level 0 keeps its `CAPACITY` 2 s buckets; a
//! bucket that falls out of a level is merged into the next, coarser one,
//! which so keeps only what is older than all the finer levels, `KEPT`
//! buckets of its own. A level's view is its own buckets followed by the
//! finer levels' merged to its width: minimum and maximum merge exactly,
//! and the bucket starts are aligned to the width, so the view is the same
//! as a ring of `CAPACITY` buckets fed every sample (the design before,
//! kept in the tests as the reference this one is checked against, for
//! sample times up to 2^32 × 2 s, 272 years, where starts saturate). Each
//! finer level shows at least `CAPACITY / 2` buckets of the coarser width,
//! so `CAPACITY / 2` of its own make a level's view whole;
//! `KEPT = CAPACITY / 2 + 1` keeps one to spare (the reference test fails
//! below `CAPACITY / 2`).
//!
//! A bucket is stored in 12 bytes ([`Slot`]): its start in units of
//! `BASE_MS`, its minimum rounded down and its maximum rounded up to whole
//! KiB (memory comes in 4 KiB pages, so that is exact in practice; it caps
//! at 4 TiB). A week of history is 14 levels, 4.4 KiB per detector (8 KiB
//! with every level a full ring), and an agent keeps one detector per
//! service (the leak detector is on by default). A level's buckets are
//! allocated with its first one, so a young history is small: 0.6 KiB for
//! the first 96 s, the full 4.4 KiB after a week.

use std::collections::VecDeque;

/// Width of the finest buckets, milliseconds.
pub(crate) const BASE_MS: u64 = 2_000;
/// Buckets each level shows.
pub(crate) const CAPACITY: usize = 48;
/// Buckets a level above the finest keeps of its own.
const KEPT: usize = CAPACITY / 2 + 1;

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

    fn merge(&mut self, other: Slot) {
        self.min_kib = self.min_kib.min(other.min_kib);
        self.max_kib = self.max_kib.max(other.max_kib);
    }
}

/// What a level shows: its newest `CAPACITY` buckets, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Level {
    pub width_ms: u64,
    buckets: Vec<Slot>,
    /// True once a bucket fell out of it: the level no longer shows
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
        self.buckets[skip..]
            .iter()
            .map(|b| b.bucket())
            .take_while(move |b| b.start_ms < to_ms)
    }

    fn front(&self) -> Option<Bucket> {
        self.buckets.first().map(|b| b.bucket())
    }
}

/// One level as stored.
#[derive(Debug, Clone)]
struct Store {
    /// Width in `BASE_MS` units (2^k).
    units: u32,
    /// Its own buckets, older than every finer level's, oldest first.
    own: VecDeque<Slot>,
    /// The start of the newest bucket of this width that had a sample, and
    /// how many there were since the last reset (over `CAPACITY`: the view
    /// has lost its oldest).
    last: Option<u32>,
    seen: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct History {
    levels: Vec<Store>,
}

impl History {
    /// Enough levels that the coarsest one covers `span_ms`.
    pub fn new(span_ms: u64) -> Self {
        let mut levels: Vec<Store> = Vec::new();
        let mut units: u32 = 1;
        loop {
            levels.push(Store {
                units,
                // Allocated with its first bucket, which comes when the
                // finer level overflows: level k ≥ 1 about 2^k × 50 s in
                // (96 s, 196 s, 396 s, …; the 14th after 4.7 days).
                own: VecDeque::new(),
                last: None,
                seen: 0,
            });
            let width = BASE_MS * u64::from(units);
            if width.saturating_mul(CAPACITY as u64) >= span_ms || levels.len() >= 31 {
                break;
            }
            units *= 2;
        }
        levels.shrink_to_fit();
        History { levels }
    }

    pub fn clear(&mut self) {
        for l in &mut self.levels {
            l.own.clear();
            l.last = None;
            l.seen = 0;
        }
    }

    /// Adds a sample. Samples must come in time order (the caller drops the others).
    pub fn push(&mut self, t_ms: u64, v: u64) {
        // Starts are whole numbers of BASE_MS; u32 of them is 272 years of
        // any monotonic epoch.
        let start = u32::try_from(t_ms / BASE_MS).unwrap_or(u32::MAX);
        for l in &mut self.levels {
            let s = start - start % l.units;
            if l.last != Some(s) {
                l.last = Some(s);
                l.seen = l.seen.saturating_add(1);
            }
        }
        // The sample goes into level 0; a bucket that falls out of a level
        // is merged into the next one's newest or appended after it.
        let mut carry = Some(Slot {
            start,
            min_kib: kib_down(v),
            max_kib: kib_up(v),
        });
        for (k, l) in self.levels.iter_mut().enumerate() {
            let Some(mut slot) = carry.take() else {
                break;
            };
            slot.start -= slot.start % l.units;
            match l.own.back_mut() {
                Some(b) if b.start == slot.start => b.merge(slot),
                _ => {
                    let keep = if k == 0 { CAPACITY } else { KEPT };
                    if l.own.len() == keep {
                        carry = l.own.pop_front();
                    } else if l.own.capacity() == 0 {
                        l.own.reserve_exact(keep);
                    }
                    l.own.push_back(slot);
                }
            }
        }
    }

    /// Every level's view, finest first.
    fn views(&self) -> impl Iterator<Item = Level> + '_ {
        // All buckets of this and the finer levels at this level's width,
        // oldest first (at most KEPT more than the level below had).
        let mut all: Vec<Slot> = Vec::new();
        self.levels.iter().map(move |l| {
            let mut merged: Vec<Slot> = Vec::with_capacity(l.own.len() + all.len());
            for s in l.own.iter().copied().chain(all.iter().copied()) {
                let s = Slot {
                    start: s.start - s.start % l.units,
                    ..s
                };
                match merged.last_mut() {
                    Some(b) if b.start == s.start => b.merge(s),
                    _ => merged.push(s),
                }
            }
            all = merged;
            Level {
                width_ms: BASE_MS * u64::from(l.units),
                buckets: all[all.len().saturating_sub(CAPACITY)..].to_vec(),
                evicted: l.seen as usize > CAPACITY,
            }
        })
    }

    /// The finest level that still holds the data from `since_ms` on (the
    /// coarsest level when none does).
    pub fn level_from(&self, since_ms: u64) -> Level {
        let mut last = None;
        for l in self.views() {
            if !l.evicted || l.front().is_some_and(|b| b.start_ms <= since_ms) {
                return l;
            }
            last = Some(l);
        }
        // `new` makes at least one level.
        last.unwrap_or(Level {
            width_ms: BASE_MS,
            buckets: Vec::new(),
            evicted: false,
        })
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
        for l in self.views() {
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
        self.levels.iter().map(|l| l.own.len()).sum()
    }

    #[cfg(test)]
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// Bytes of buckets allocated (the level headers not counted).
    #[cfg(test)]
    pub fn bucket_bytes(&self) -> usize {
        let slots: usize = self.levels.iter().map(|l| l.own.capacity()).sum();
        slots * std::mem::size_of::<Slot>()
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
        // 12 bytes a bucket: 48 + 13 × 25 of them, 4.4 KiB for the week's 14 levels.
        assert_eq!(std::mem::size_of::<Slot>(), 12);
    }

    /// A level's buckets are allocated with its first one, exactly as many
    /// as it keeps: a young history is small, a week's is the documented
    /// 4.4 KiB (docs/benchmarks.md, "Tenth run").
    #[test]
    fn buckets_are_allocated_as_the_history_reaches_them() {
        let mut h = History::new(7 * 24 * 3_600_000);
        assert_eq!(h.bucket_bytes(), 0);
        let slot = std::mem::size_of::<Slot>();
        // 70 s (M1's settle and window): level 0 only.
        for s in 0..70u64 {
            h.push(s * 1000, 1024 * 1024);
        }
        assert_eq!(h.bucket_bytes(), CAPACITY * slot);
        // Level 1 gets its first bucket when level 0 is full, 96 s in.
        for s in 70..100u64 {
            h.push(s * 1000, 1024 * 1024);
        }
        assert_eq!(h.bucket_bytes(), (CAPACITY + KEPT) * slot);
        for s in 100..7 * 24 * 3600u64 {
            h.push(s * 1000, 1024 * 1024);
        }
        let full = (CAPACITY + (h.level_count() - 1) * KEPT) * slot;
        assert_eq!(h.bucket_bytes(), full);
        assert_eq!(full, 4476, "the figure docs/benchmarks.md gives");
        // A reset keeps the room: a restarting unit does not allocate again.
        h.clear();
        assert_eq!(h.bucket_bytes(), full);
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

/// The design before: every level a ring of `CAPACITY` buckets fed every
/// sample. The stored design must show exactly what it showed.
#[cfg(test)]
mod reference {
    use super::*;

    #[derive(Debug, Clone)]
    pub struct Level {
        pub width_ms: u64,
        pub buckets: VecDeque<Slot>,
        /// True once a bucket fell out of the ring: the level no longer holds
        /// everything since the last reset.
        pub evicted: bool,
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
    pub struct History {
        pub levels: Vec<Level>,
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
    }
}

#[cfg(test)]
mod same_as_reference {
    use super::*;

    /// xorshift64*: a fixed sequence, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn views_of(r: &reference::Level) -> (u64, Vec<Bucket>, bool) {
        (r.width_ms, r.range(0, u64::MAX).collect(), r.evicted)
    }

    fn view_of(l: &Level) -> (u64, Vec<Bucket>, bool) {
        (l.width_ms, l.range(0, u64::MAX).collect(), l.evicted)
    }

    /// Random sample times (steady, bursts, gaps of minutes to days) and
    /// values; after many pushes, every read agrees with the reference.
    #[test]
    fn every_read_matches_the_ring_per_level_design() {
        for seed in 1..=12u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let span = [600_000, 3_600_000, 86_400_000, 7 * 86_400_000][seed as usize % 4];
            let mut h = History::new(span);
            let mut r = reference::History::new(span);
            assert_eq!(h.level_count(), r.levels.len());
            let mut t: u64 = rng.below(1_000_000);
            let same = |h: &History, r: &reference::History, at: &str| {
                let ours: Vec<_> = h.views().map(|l| view_of(&l)).collect();
                let theirs: Vec<_> = r.levels.iter().map(views_of).collect();
                assert_eq!(ours, theirs, "seed {seed}, {at}: every level's view");
            };
            same(&h, &r, "empty");
            assert_eq!(h.min_max(0, u64::MAX), None);
            assert!(h.within(0, u64::MAX).is_empty());
            for i in 0..6_000u32 {
                t += match rng.below(100) {
                    0 => rng.below(2 * 86_400_000),
                    1..=4 => rng.below(600_000),
                    5..=30 => rng.below(3_000),
                    _ => 1_000,
                };
                let v = match rng.below(200) {
                    0 => 0,
                    1 => u64::MAX,
                    _ => (100 << 20) + rng.below(50 << 20) + u64::from(i) * 4096,
                };
                h.push(t, v);
                r.push(t, v);
                if rng.below(1_500) == 0 {
                    h.clear();
                    r.clear();
                    same(&h, &r, &format!("cleared at push {i}"));
                }
                if i % 97 != 0 && i != 5_999 {
                    continue;
                }
                same(&h, &r, &format!("push {i}"));
                for _ in 0..8 {
                    let since = t.saturating_sub(rng.below(span.saturating_mul(2)));
                    assert_eq!(
                        view_of(&h.level_from(since)),
                        views_of(r.level_from(since)),
                        "seed {seed}, push {i}, level_from({since})"
                    );
                    let to = if rng.below(3) == 0 {
                        u64::MAX
                    } else {
                        t.saturating_sub(rng.below(span / 4))
                    };
                    let from = to.min(t).saturating_sub(rng.below(span));
                    assert_eq!(
                        h.min_max(from, to),
                        r.min_max(from, to),
                        "seed {seed}, push {i}"
                    );
                    assert_eq!(
                        h.within(from, to),
                        r.within(from, to),
                        "seed {seed}, push {i}"
                    );
                }
            }
            // What is stored: CAPACITY buckets for the finest level, KEPT for each other.
            assert!(h.bucket_count() <= CAPACITY + (h.level_count() - 1) * KEPT);
        }
    }
}
