//! Unit tests of the detector on synthetic traces made here (seeded, so
//! every run sees the same numbers). The detector takes time as an argument,
//! so a day of samples runs in milliseconds with no clock involved.

use super::*;

const MIB: f64 = MB;
const MIN: f64 = 60.0;
const HOUR: f64 = 3600.0;

/// xorshift64*: small, deterministic, good enough for noise.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Normal noise (Box–Muller) plus, 1 % of the time, a burst of 5–40 MiB.
    fn noise(&mut self, sd: f64) -> f64 {
        let (a, b) = (self.unit().max(1e-12), self.unit());
        let g = (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos() * sd;
        if self.unit() < 0.01 {
            g + (5.0 + 35.0 * self.unit()) * MIB
        } else {
            g
        }
    }
}

/// One verdict, at a time in seconds.
#[derive(Debug)]
struct Flip {
    at: f64,
    suspected: bool,
    status: LeakStatus,
}

/// Samples `memory(t, rng)` every `dt` seconds for `secs` through a detector
/// with the default settings, and returns every flip.
fn run(
    limit: Option<u64>,
    dt: f64,
    secs: f64,
    mut memory: impl FnMut(f64, &mut Rng) -> f64,
) -> (Detector, Vec<Flip>) {
    let mut d = Detector::new(LeakConfig::default(), limit);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut flips = Vec::new();
    d.reset(Duration::ZERO);
    let mut t = 0.0;
    while t <= secs {
        let v = memory(t, &mut rng).max(1.0) as u64;
        if limit.is_some_and(|l| v >= l) {
            break; // the limit kills the process
        }
        if let Some(v) = d.observe(Duration::from_secs_f64(t), v) {
            let (suspected, status) = match v {
                Verdict::Suspected(s) => (true, s),
                Verdict::Cleared(s) => (false, s),
            };
            flips.push(Flip {
                at: t,
                suspected,
                status,
            });
        }
        t += dt;
    }
    (d, flips)
}

fn mib(x: f64) -> u64 {
    (x * MIB) as u64
}

/// A garbage-collected heap: climbs `height` MiB over a period of 90–240 s,
/// then drops back.
fn sawtooth(t: f64) -> f64 {
    let mut start = 0.0;
    let mut i = 0u64;
    loop {
        let h = (i.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
        let period = 90.0 + 150.0 * h;
        if t < start + period {
            return (150.0 + 100.0 * h) * MIB * (t - start) / period;
        }
        start += period;
        i += 1;
    }
}

/// Checks the leak target: one `Suspected`, before `max(25 % of the time to
/// the limit, 60 s)` after the leak started.
fn assert_flagged_in_time(flips: &[Flip], leak_start: f64, time_to_limit: f64) -> &Flip {
    let first = flips.first().expect("the leak was not flagged");
    assert!(first.suspected);
    assert!(first.at >= leak_start, "flagged before the leak: {first:?}");
    let delay = first.at - leak_start;
    assert!(
        delay <= (time_to_limit / 4.0).max(60.0),
        "flagged after {delay} s, {:.0} % of the time to the limit",
        delay / time_to_limit * 100.0
    );
    first
}

#[test]
fn a_linear_leak_is_flagged_early_with_its_slope_and_time_to_the_limit() {
    // 300 MiB flat for 30 min, then 10 MiB/min up to the 1 GiB limit (72 min).
    let limit = mib(1024.0);
    let (_, flips) = run(Some(limit), 1.0, 3.0 * HOUR, |t, r| {
        300.0 * MIB + (t - 30.0 * MIN).max(0.0) * 10.0 * MIB / MIN + r.noise(2.0 * MIB)
    });
    let f = assert_flagged_in_time(&flips, 30.0 * MIN, 72.4 * MIN);
    let st = &f.status;
    assert!(st.suspected);
    assert!((st.slope_mb_per_hour - 600.0).abs() < 60.0, "{st:?}");
    assert!(st.confidence >= 0.7, "{st:?}");
    assert_eq!(st.limit, Some(limit));
    // Memory at the flag, and the time it then had left.
    let at_flag = 300.0 + (f.at - 30.0 * MIN) / MIN * 10.0;
    let left_ms = (1024.0 - at_flag) / 10.0 * MIN * 1000.0;
    let ttl = st.time_to_limit_ms.unwrap() as f64;
    assert!((ttl - left_ms).abs() < 0.15 * left_ms, "{ttl} vs {left_ms}");
    let floor = st.floor.unwrap() as f64 / MIB;
    assert!(floor > 300.0 && floor < at_flag, "{floor}");
    let fit = st.fit.as_ref().unwrap();
    assert!((fit.bytes_per_sec * 3600.0 / MIB - st.slope_mb_per_hour).abs() < 1e-6);
    assert_eq!(flips.len(), 1, "{flips:?}");
}

#[test]
fn a_leak_of_ten_mib_per_second_is_flagged_within_a_minute() {
    let (_, flips) = run(Some(mib(1024.0)), 1.0, 40.0 * MIN, |t, r| {
        300.0 * MIB + (t - 20.0 * MIN).max(0.0) * 10.0 * MIB + r.noise(2.0 * MIB)
    });
    assert_flagged_in_time(&flips, 20.0 * MIN, 72.4);
}

#[test]
fn a_slow_leak_sampled_every_ten_seconds_is_flagged_within_a_quarter_of_its_time() {
    // 10 MiB/h from 250 MiB to 512 MiB: about a day.
    let (_, flips) = run(Some(mib(512.0)), 10.0, 30.0 * HOUR, |t, r| {
        250.0 * MIB + (t - HOUR).max(0.0) * 10.0 * MIB / HOUR + r.noise(2.0 * MIB)
    });
    assert_flagged_in_time(&flips, HOUR, 26.2 * HOUR - 3.0 * HOUR);
}

#[test]
fn a_gc_sawtooth_without_a_leak_raises_nothing_in_a_day() {
    let (d, flips) = run(Some(mib(1024.0)), 5.0, 24.0 * HOUR, |t, r| {
        400.0 * MIB + sawtooth(t) + r.noise(2.0 * MIB)
    });
    assert!(flips.is_empty(), "{flips:?}");
    assert!(!d.status().suspected);
}

/// The windows' cache grows with the history: none during the warm-up
/// (M1's first 70 s), a window length once the history reaches back that
/// far, 32 for the default week (2 KiB, docs/benchmarks.md "Tenth run").
#[test]
fn window_lengths_are_added_as_the_history_reaches_them() {
    let (d, _) = run(Some(mib(1024.0)), 1.0, 70.0, |_, _| 300.0 * MIB);
    assert!(
        d.scales.is_empty(),
        "{} scales in the warm-up",
        d.scales.len()
    );
    let (d, _) = run(Some(mib(1024.0)), 2.0, HOUR, |_, _| 300.0 * MIB);
    let available_ms = ms(Duration::from_secs_f64(HOUR) - LeakConfig::default().warmup);
    let lens: Vec<u64> = d.scales.iter().map(|s| s.len_ms).collect();
    let expected: Vec<u64> = (0..)
        .map(scale_len)
        .take_while(|&l| l <= available_ms)
        .collect();
    assert_eq!(lens, expected);
    assert_eq!(lens.first(), Some(&MIN_WINDOW_MS));
    // A week: 10 s × √2^i up to 7 days.
    let week = (0..)
        .map(scale_len)
        .take_while(|&l| l <= 7 * 24 * 3_600_000)
        .count();
    assert_eq!(week, 32);
    assert_eq!(d.longest_ms, scale_len(31));
    assert_eq!(week * std::mem::size_of::<Scale>(), 2048);
}

/// Window lengths added as the history reaches them change nothing: a
/// detector with every length from the start (the design before) gives the
/// same verdicts and the same status at every sample, over leaks, a
/// saw-tooth, a leak that stops, and restarts (`reset`) in between.
#[test]
fn lazily_added_window_lengths_give_the_same_verdicts_as_all_at_once() {
    type Shape = fn(f64) -> f64;
    let shapes: [(&str, Shape); 4] = [
        ("linear", |t| 300.0 * MIB + t * 50_000.0),
        ("sawtooth", |t| 400.0 * MIB + sawtooth(t)),
        ("leak then flat", |t| {
            300.0 * MIB + t.min(4.0 * HOUR) * 30_000.0
        }),
        ("fast", |t| 100.0 * MIB + t * 400_000.0),
    ];
    for (name, shape) in shapes {
        let mut lazy = Detector::new(LeakConfig::default(), Some(mib(2048.0)));
        let mut eager = Detector::new(LeakConfig::default(), Some(mib(2048.0))).with_every_window();
        assert!(lazy.scales.is_empty() && eager.scales.len() == 32);
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let (mut flips, mut t) = (0, 0.0);
        // 10 h at 5 s, restarted at 3 h and at 7 h (the process starts again
        // from its base memory).
        let mut since = 0.0;
        while t <= 10.0 * HOUR {
            if t == 3.0 * HOUR || t == 7.0 * HOUR {
                lazy.reset(Duration::from_secs_f64(t));
                eager.reset(Duration::from_secs_f64(t));
                since = t;
            }
            let v = (shape(t - since) + rng.noise(1.0 * MIB)).max(1.0) as u64;
            let at = Duration::from_secs_f64(t);
            let (a, b) = (lazy.observe(at, v), eager.observe(at, v));
            assert_eq!(a, b, "{name}: verdict at {t} s");
            flips += usize::from(a.is_some());
            assert_eq!(lazy.status(), eager.status(), "{name}: status at {t} s");
            t += 5.0;
        }
        if name != "sawtooth" {
            assert!(
                flips > 0,
                "{name}: the trace should raise something to compare"
            );
        }
    }
}

#[test]
fn kendall_significance_weighs_the_number_of_points() {
    use super::window::kendall_z;
    // 8 points in order: S = 28, variance 8·7·21/18 = 65.3.
    assert!((kendall_z(1.0, 8) - 27.0 / 65.333_f64.sqrt()).abs() < 1e-3);
    assert_eq!(kendall_z(0.0, 8), 0.0);
    assert!((kendall_z(-1.0, 8) + kendall_z(1.0, 8)).abs() < 1e-12);
    // The same τ is stronger evidence over more points.
    assert!(kendall_z(0.6, 16) >= 3.0, "{}", kendall_z(0.6, 16));
    assert!(kendall_z(0.6, 8) < 3.0);
    // Five points can never reach 3 standard deviations.
    assert!(kendall_z(1.0, 5) < 3.0);
    assert_eq!(kendall_z(1.0, 1), 0.0);
}

#[test]
fn the_saw_tooth_amplitude_does_not_grow_with_a_trend_nor_with_one_odd_fall() {
    use super::history::Bucket;
    // 10 s cycles climbing 100 from their floor, on a floor rising 5 per
    // cycle: the range of 40 cycles is 295, the amplitude 100.
    let mut b: Vec<Bucket> = (0..200u64)
        .map(|i| {
            let v = (i / 5) * 5 + (i % 5) * 25;
            Bucket {
                start_ms: i * 2000,
                min: v,
                max: v,
            }
        })
        .collect();
    let a = amplitude(&b);
    assert!((95..=105).contains(&a), "{a}");
    // One collection that falls by 400 does not set it.
    b[101].max = 600;
    b[102].min = 0;
    assert_eq!(amplitude(&b), a);
}

/// A ragged heap saw-tooth like a G1 heap's (java-sawtooth in
/// traces/leak/): cycles of 3–25 s (median ≈ 8 s), each returning to its own
/// floor, 60–160 MiB, and climbing 20 MiB/s from there (at most 300 MiB).
fn ragged_heap() -> impl FnMut(f64, &mut Rng) -> f64 {
    let (mut end, mut floor, mut start) = (0.0, 0.0, 0.0);
    move |t, r| {
        if t >= end {
            start = t;
            end = t + 3.0 + 22.0 * r.unit().powi(2);
            floor = 60.0 + 100.0 * r.unit();
        }
        (floor + (20.0 * (t - start)).min(300.0)) * MIB
    }
}

#[test]
fn a_ragged_heap_saw_tooth_raises_nothing_in_two_hours() {
    let mut heap = ragged_heap();
    let (d, flips) = run(Some(mib(768.0)), 1.0, 2.0 * HOUR, |t, r| heap(t, r));
    assert!(flips.is_empty(), "{flips:?}");
    assert!(!d.status().suspected);
}

#[test]
fn a_fast_leak_under_a_ragged_heap_saw_tooth_is_flagged_within_a_quarter_of_its_time() {
    // 1 MiB/s from 5 min on, until a peak reaches the 1 GiB limit (about
    // 10 more minutes, as java-leak in traces/leak/): the floor moves by up
    // to 100 MiB from one cycle to the next, and the longest cycles are 25 s.
    let mut heap = ragged_heap();
    let leak_start = 5.0 * MIN;
    let (d, flips) = run(Some(mib(1024.0)), 1.0, HOUR, |t, r| {
        heap(t, r) + (t - leak_start).max(0.0) * MIB
    });
    let killed_at = d.last_ms.unwrap() as f64 / 1000.0 + 1.0;
    assert!(killed_at < 20.0 * MIN, "{killed_at}");
    let f = assert_flagged_in_time(&flips, leak_start, killed_at - leak_start);
    // The steepest window that shows the leak is reported: on floor points
    // this noisy, within a factor of two of the truth.
    let slope = f.status.slope_mb_per_hour;
    assert!((1800.0..=7200.0).contains(&slope), "{:?}", f.status);
    assert!(f.status.time_to_limit_ms.unwrap() as f64 / 1000.0 < killed_at - f.at);
}

#[test]
fn a_slow_leak_under_a_gc_sawtooth_is_found_through_the_floor() {
    // The live size leaks 20 MiB/h from 2 h on; the peaks (up to 650 MiB)
    // reach the 1 GiB limit after about 18.7 h.
    let (_, flips) = run(Some(mib(1024.0)), 10.0, 30.0 * HOUR, |t, r| {
        400.0 * MIB
            + (t - 2.0 * HOUR).max(0.0) * 20.0 * MIB / HOUR
            + sawtooth(t)
            + r.noise(2.0 * MIB)
    });
    let f = assert_flagged_in_time(&flips, 2.0 * HOUR, 18.0 * HOUR);
    // The slope is the floor's, not the saw-tooth ramps'.
    assert!(
        (f.status.slope_mb_per_hour - 20.0).abs() < 8.0,
        "{:?}",
        f.status
    );
}

#[test]
fn a_cache_that_fills_and_slows_down_is_not_a_leak() {
    // 350 MiB of cache with a time constant of 15 min: still growing 10 MiB/min
    // 18 min after the start, flat after an hour.
    let (_, flips) = run(Some(mib(1024.0)), 5.0, 12.0 * HOUR, |t, r| {
        150.0 * MIB + 350.0 * MIB * (1.0 - (-t / 900.0).exp()) + r.noise(2.0 * MIB)
    });
    assert!(flips.is_empty(), "{flips:?}");
}

#[test]
fn a_step_up_after_a_deploy_is_not_a_leak() {
    let (_, flips) = run(Some(mib(1024.0)), 10.0, 24.0 * HOUR, |t, r| {
        let step = ((t - 6.0 * HOUR) / 20.0).clamp(0.0, 1.0);
        300.0 * MIB + 120.0 * MIB * step + r.noise(2.0 * MIB)
    });
    assert!(flips.is_empty(), "{flips:?}");
}

#[test]
fn a_step_sampled_every_second_is_not_a_leak() {
    // The same deploy step as above, seen at the production sample rate.
    let (_, flips) = run(Some(mib(1024.0)), 1.0, 8.0 * HOUR, |t, r| {
        let step = ((t - 2.0 * HOUR) / 20.0).clamp(0.0, 1.0);
        300.0 * MIB + 120.0 * MIB * step + r.noise(2.0 * MIB)
    });
    assert!(flips.is_empty(), "{flips:?}");
}

#[test]
fn noisy_flat_memory_with_gaps_raises_nothing() {
    // One sample per second, but a third of them lost (a busy host).
    let (_, flips) = run(Some(mib(1024.0)), 1.0, 6.0 * HOUR, |t, r| {
        let v = 350.0 * MIB + 6.0 * MIB * (t / 2000.0).sin() + r.noise(3.0 * MIB);
        if r.unit() < 0.33 {
            0.0 // ignored by the detector, like a missed sample
        } else {
            v
        }
    });
    assert!(flips.is_empty(), "{flips:?}");
}

#[test]
fn nothing_is_said_during_the_warm_up() {
    // Leaks from the first second; the warm-up (5 min) is a grace period.
    let (_, flips) = run(Some(mib(4096.0)), 1.0, 20.0 * MIN, |t, r| {
        300.0 * MIB + t * 1.0 * MIB + r.noise(2.0 * MIB)
    });
    let f = flips.first().expect("flagged after the warm-up");
    assert!(f.suspected && f.at >= 5.0 * MIN, "{f:?}");
}

/// A detector that has just flagged a 1 MiB/s leak, and the time of the last sample.
fn suspecting(cfg: LeakConfig) -> (Detector, f64) {
    let mut d = Detector::new(cfg, Some(mib(2048.0)));
    d.reset(Duration::ZERO);
    let mut t = 0.0;
    while !d.status().suspected {
        let v = 300.0 * MIB + (t - 10.0 * MIN).max(0.0) * MIB;
        d.observe(Duration::from_secs_f64(t), v as u64);
        t += 1.0;
        assert!(t < HOUR, "never flagged");
    }
    (d, t)
}

#[test]
fn a_leak_that_stops_is_cleared_once() {
    let (mut d, mut t) = suspecting(LeakConfig::default());
    let top = d.history.min_max(0, u64::MAX).unwrap().1;
    let mut flips = Vec::new();
    while t < 2.0 * HOUR {
        if let Some(v) = d.observe(Duration::from_secs_f64(t), top) {
            flips.push((t, v));
        }
        t += 1.0;
    }
    assert_eq!(flips.len(), 1, "{flips:?}");
    assert!(matches!(flips[0].1, Verdict::Cleared(ref s) if !s.suspected));
}

#[test]
fn a_restart_forgets_the_leak_and_says_so_with_the_next_sample() {
    let (mut d, t) = suspecting(LeakConfig::default());
    d.reset(Duration::from_secs_f64(t));
    assert!(!d.status().suspected);
    let v = d.observe(Duration::from_secs_f64(t + 1.0), mib(300.0));
    assert!(
        matches!(v, Some(Verdict::Cleared(ref s)) if !s.suspected),
        "{v:?}"
    );
    // Then a fresh warm-up: quiet, whatever the memory does.
    for i in 2..300 {
        let v = mib(300.0) + i * mib(1.0);
        assert_eq!(d.observe(Duration::from_secs_f64(t + i as f64), v), None);
    }
}

#[test]
fn restart_is_asked_only_when_configured_and_the_limit_is_near() {
    let (d, _) = suspecting(LeakConfig::default());
    assert!(!d.should_restart(), "on_leak = none");
    let restart = LeakConfig {
        on_leak: OnLeak::Restart,
        restart_before: Duration::from_secs(3600),
        ..LeakConfig::default()
    };
    let (d, _) = suspecting(restart.clone());
    let ttl = d.status().time_to_limit_ms.unwrap();
    assert!(ttl < 3_600_000 && d.should_restart(), "{ttl}");
    let (d, _) = suspecting(LeakConfig {
        restart_before: Duration::from_secs(10),
        ..restart
    });
    assert!(!d.should_restart(), "the limit is further than 10 s");
}

#[test]
fn the_limit_can_change_and_without_one_there_is_no_time_to_limit() {
    let (mut d, _) = suspecting(LeakConfig::default());
    let before = d.status().time_to_limit_ms.unwrap();
    d.set_limit(Some(mib(4096.0)));
    let after = d.status().time_to_limit_ms.unwrap();
    assert!(after > before + 1_000_000, "{before} -> {after}");
    d.set_limit(None);
    assert_eq!(d.status().time_to_limit_ms, None);
    assert_eq!(d.status().limit, None);

    // No limit at all: a leak is still found, after a window of an hour.
    let (_, flips) = run(None, 10.0, 6.0 * HOUR, |t, r| {
        300.0 * MIB + (t - 10.0 * MIN).max(0.0) * 100.0 * MIB / HOUR + r.noise(2.0 * MIB)
    });
    let f = flips.first().expect("flagged");
    assert!(
        f.suspected && f.at > 70.0 * MIN && f.at < 2.0 * HOUR,
        "{f:?}"
    );
    assert_eq!(f.status.time_to_limit_ms, None);
}

#[test]
fn disabled_zero_and_out_of_order_samples_do_nothing() {
    let mut off = Detector::new(
        LeakConfig {
            enabled: false,
            ..LeakConfig::default()
        },
        Some(mib(1024.0)),
    );
    for s in 0..3600u64 {
        assert_eq!(
            off.observe(Duration::from_secs(s), mib(300.0) + s * mib(1.0)),
            None
        );
    }
    assert_eq!(off.status().fit, None);

    let mut d = Detector::new(LeakConfig::default(), Some(mib(1024.0)));
    d.observe(Duration::from_secs(10), mib(300.0));
    d.observe(Duration::from_secs(5), mib(1.0)); // older: ignored
    d.observe(Duration::from_secs(11), 0); // no process: ignored
    assert_eq!(
        d.history.min_max(0, u64::MAX),
        Some((mib(300.0), mib(300.0)))
    );
}

/// How the agent drives it: elapsed tokio time since a start instant.
#[tokio::test(start_paused = true)]
async fn driven_by_tokio_time_a_fast_leak_is_flagged_within_a_minute() {
    let start = tokio::time::Instant::now();
    let mut d = Detector::new(LeakConfig::default(), Some(mib(1024.0)));
    d.reset(start.elapsed());
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let leak_at = Duration::from_secs(15 * 60);
    loop {
        interval.tick().await;
        let now = start.elapsed();
        let leaked = now.saturating_sub(leak_at).as_secs_f64() * 10.0 * MIB;
        if let Some(Verdict::Suspected(st)) = d.observe(now, mib(300.0) + leaked as u64) {
            assert!(now - leak_at <= Duration::from_secs(60), "{now:?}");
            assert!(st.time_to_limit_ms.unwrap() < 60_000, "{st:?}");
            break;
        }
        assert!(
            now < leak_at + Duration::from_secs(72),
            "not flagged before the limit"
        );
    }
}

/// `TRACE=name [AT=secs] cargo test --lib debug_trace -- --ignored --nocapture`:
/// the verdicts of one shipped trace (a tool for tuning, not a test).
#[test]
#[ignore = "a tuning tool, not a test: run by hand with TRACE=name"]
fn debug_trace() {
    let name = std::env::var("TRACE").unwrap();
    let dir = std::env::var("TRACES").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/leak"),
        std::path::PathBuf::from,
    );
    let traces = replay::load_traces(&dir).unwrap();
    let t = traces.iter().find(|t| t.name == name).unwrap();
    let mut d = Detector::new(LeakConfig::default(), Some(t.limit));
    d.reset(t.samples[0].0);
    for &(at, v) in &t.samples {
        let v = d.observe(at, v);
        if std::env::var("PENDING").is_ok() && (d.leak_since.is_some() || d.suspected) {
            let b = d
                .best
                .map(|w| (w.len_ms / 1000, (w.slope * 3600.0 / MB) as i64));
            println!(
                "{:>7}s since {:?} best {b:?} ttl {:?} cycle {:?}",
                at.as_secs(),
                d.leak_since.map(|l| (l.0 / 1000, l.1 / 1000)),
                d.ttl_ms().map(|t| t / 1000),
                d.cycles.longest().map(|c| c / 1000)
            );
        }
        if let Some(v) = v {
            println!("{:>7}s {v:?}", at.as_secs());
        }
    }
}

/// `cargo test --lib debug_table -- --ignored --nocapture [TRACES=dir]`:
/// delay share and false alarms of every trace (a tuning tool, not a test).
#[test]
#[ignore = "a tuning tool, not a test: run by hand"]
fn debug_table() {
    let dir = std::env::var("TRACES").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/leak"),
        std::path::PathBuf::from,
    );
    for t in replay::load_traces(&dir).unwrap() {
        let a = replay::replay_mamori(&t, &LeakConfig::default());
        let s = replay::score(&t, &a);
        println!(
            "{:<20} delay {:>6} FA {} met {} raised {:?}",
            t.name,
            s.delay_share
                .map_or("-".into(), |d| format!("{:.1}%", d * 100.0)),
            s.false_alarms,
            s.meets_targets,
            a.raised
                .iter()
                .take(3)
                .map(|d| d.as_secs())
                .collect::<Vec<_>>()
        );
    }
}
