//! Time zones from the machine's own tz database (`/usr/share/zoneinfo`,
//! Debian's `tzdata` package, or `$TZDIR`), read when the config is loaded.
//! A job's schedule follows the same rules as cron, `date` and libc on the
//! same machine, and a government's change to its clocks arrives with the
//! OS's `tzdata` update instead of a rebuilt mamori.
//!
//! Why not chrono-tz: it compiles the whole IANA database into the binary as
//! tables holding `&'static str` pointers. In a position-independent
//! executable every such pointer is relocated at start, so those 1.3 MiB of
//! tables became private memory of every agent, for the one or two zones a
//! config names (docs/benchmarks.md, "Seventh run"). A zone file read here
//! costs a few KiB per zone named.
//!
//! The TZif parsing (including the POSIX rule at the end of a file, which
//! gives the years past its last listed transition) is the `tz-rs` crate.
//! This module adapts it to chrono's `TimeZone` trait, which is what croner
//! computes in; no maintained crate does that (`tzfile` was last released in
//! 2021). Each distinct zone is read once and kept for the life of the
//! process: a config names a handful, and `Tz` stays `Copy` like chrono-tz's.

use std::fmt;
use std::sync::{Mutex, OnceLock};

use chrono::{FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};

/// Where zone files are looked up unless `TZDIR` says otherwise (as in glibc).
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

struct Data {
    name: String,
    tz: tz::TimeZone,
    /// Every UTC offset the zone uses (seconds east), without repeats.
    offsets: Vec<i32>,
}

/// A named time zone. Cheap to copy; compares by name.
#[derive(Clone, Copy)]
pub struct Tz(&'static Data);

/// Why a zone name could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ZoneError {
    #[error("not a zone name")]
    BadName,
    #[error("no such zone in {0}")]
    Unknown(String),
    #[error("there is no tz database at {0}; install the tzdata package")]
    NoDatabase(String),
    #[error("{0} is not a usable zone file: {1}")]
    Invalid(String, String),
}

fn zones() -> &'static Mutex<Vec<&'static Data>> {
    static ZONES: OnceLock<Mutex<Vec<&'static Data>>> = OnceLock::new();
    ZONES.get_or_init(|| Mutex::new(Vec::new()))
}

/// Keeps `data` for the life of the process, once per name.
fn intern(data: Data) -> Tz {
    let mut zones = zones().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = zones.iter().find(|d| d.name == data.name) {
        return Tz(d);
    }
    let d: &'static Data = Box::leak(Box::new(data));
    zones.push(d);
    Tz(d)
}

fn known(name: &str) -> Option<Tz> {
    let zones = zones().lock().unwrap_or_else(|e| e.into_inner());
    zones.iter().find(|d| d.name == name).map(|d| Tz(d))
}

/// A name the way the database spells them: `Asia/Tokyo`, `Etc/GMT+9`,
/// `America/Port-au-Prince`. Rules out paths that leave the directory.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'.'))
        })
}

fn offsets_of(tz: &tz::TimeZone) -> Vec<i32> {
    let r = tz.as_ref();
    let mut types: Vec<&tz::LocalTimeType> = r.local_time_types().iter().collect();
    match r.extra_rule() {
        Some(tz::timezone::TransitionRule::Fixed(t)) => types.push(t),
        Some(tz::timezone::TransitionRule::Alternate(a)) => types.extend([a.std(), a.dst()]),
        None => {}
    }
    let mut offsets: Vec<i32> = types.iter().map(|t| t.ut_offset()).collect();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

impl Tz {
    /// UTC, which needs no zone file.
    pub fn utc() -> Tz {
        static UTC: OnceLock<Tz> = OnceLock::new();
        *UTC.get_or_init(|| {
            // tz-rs's own UTC has no abbreviation; `%Z` should say "UTC".
            let tz = tz::LocalTimeType::new(0, false, Some(b"UTC"))
                .ok()
                .and_then(|t| tz::TimeZone::new(vec![], vec![t], vec![], None).ok())
                .unwrap_or_else(tz::TimeZone::utc);
            intern(Data {
                name: "UTC".into(),
                tz,
                offsets: vec![0],
            })
        })
    }

    /// The zone called `name`, read from `dir` the first time it is asked for.
    pub fn from_dir(name: &str, dir: &str) -> Result<Tz, ZoneError> {
        if !valid_name(name) {
            return Err(ZoneError::BadName);
        }
        if name == "UTC" {
            return Ok(Tz::utc());
        }
        if let Some(tz) = known(name) {
            return Ok(tz);
        }
        let path = format!("{dir}/{name}");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(_) if !std::path::Path::new(dir).is_dir() => {
                return Err(ZoneError::NoDatabase(dir.to_string()))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::IsADirectory
                        | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(ZoneError::Unknown(dir.to_string()))
            }
            Err(e) => return Err(ZoneError::Invalid(path, e.to_string())),
        };
        let tz = tz::TimeZone::from_tz_data(&bytes)
            .map_err(|e| ZoneError::Invalid(path.clone(), e.to_string()))?;
        // The right/ zones count leap seconds in their timestamps, which no
        // clock on this machine does (cron and date would be 27 s off).
        if !tz.as_ref().leap_seconds().is_empty() {
            return Err(ZoneError::Invalid(
                path,
                "it counts leap seconds (a right/ zone); name the zone without right/".into(),
            ));
        }
        let offsets = offsets_of(&tz);
        // chrono's offsets stay within a day; every real zone is within ±15 h.
        if offsets.iter().any(|o| o.abs() >= 86_400) {
            return Err(ZoneError::Invalid(
                path,
                "an offset of a day or more".into(),
            ));
        }
        Ok(intern(Data {
            name: name.to_string(),
            tz,
            offsets,
        }))
    }

    pub fn name(&self) -> &'static str {
        &self.0.name
    }

    /// The offset (seconds east) and abbreviation in force at `unix` seconds.
    fn at(&self, unix: i64) -> (i32, &'static str) {
        let data: &'static Data = self.0;
        let r = data.tz.as_ref();
        let t = match r.find_local_time_type(unix) {
            Ok(t) => Some(t),
            // After the last transition of a file with no rule at its end
            // (or past what the rule can compute): the last transition's
            // type stays in force, as in glibc (RFC 8536, 3.3).
            Err(_) => r
                .transitions()
                .last()
                .and_then(|last| r.local_time_types().get(last.local_time_type_index()))
                .or_else(|| r.local_time_types().first()),
        };
        t.map_or((0, "UTC"), |t| (t.ut_offset(), t.time_zone_designation()))
    }

    fn offset(&self, seconds: i32, abbr: &'static str) -> TzOffset {
        TzOffset {
            zone: *self,
            fixed: FixedOffset::east_opt(seconds).unwrap_or_else(|| Utc.fix()),
            abbr,
        }
    }
}

impl std::str::FromStr for Tz {
    type Err = ZoneError;

    /// From `$TZDIR`, else `/usr/share/zoneinfo`.
    fn from_str(name: &str) -> Result<Tz, ZoneError> {
        let dir = std::env::var("TZDIR").unwrap_or_else(|_| ZONEINFO.to_string());
        Tz::from_dir(name, &dir)
    }
}

impl PartialEq for Tz {
    fn eq(&self, other: &Tz) -> bool {
        self.0.name == other.0.name
    }
}

impl fmt::Debug for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The offset of a [`Tz`] at one instant; shows as its abbreviation (`JST`).
#[derive(Clone, Copy)]
pub struct TzOffset {
    zone: Tz,
    fixed: FixedOffset,
    abbr: &'static str,
}

impl Offset for TzOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl fmt::Display for TzOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.abbr.is_empty() {
            write!(f, "{}", self.fixed)
        } else {
            f.write_str(self.abbr)
        }
    }
}

impl fmt::Debug for TzOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TimeZone for Tz {
    type Offset = TzOffset;

    fn from_offset(offset: &TzOffset) -> Tz {
        offset.zone
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<TzOffset> {
        self.offset_from_local_datetime(&local.and_time(chrono::NaiveTime::MIN))
    }

    /// A wall-clock time is on the clock with offset `o` exactly when the
    /// zone's offset at `local − o` is `o`; trying each offset the zone uses
    /// finds none (a time skipped when the clock moves forward), one, or two
    /// (a time passed twice when it moves back).
    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<TzOffset> {
        let wall = local.and_utc().timestamp();
        // The earliest and the latest instant found (no allocation: this is
        // croner's inner loop).
        let mut first: Option<(i64, TzOffset)> = None;
        let mut last: Option<(i64, TzOffset)> = None;
        for &o in &self.0.offsets {
            let utc = wall - i64::from(o);
            let (at, abbr) = self.at(utc);
            if at != o {
                continue;
            }
            if first.is_none_or(|(t, _)| utc < t) {
                first = Some((utc, self.offset(o, abbr)));
            }
            if last.is_none_or(|(t, _)| utc > t) {
                last = Some((utc, self.offset(o, abbr)));
            }
        }
        match (first, last) {
            (Some((a, early)), Some((b, late))) if a != b => {
                MappedLocalTime::Ambiguous(early, late)
            }
            (Some((_, only)), _) => MappedLocalTime::Single(only),
            _ => MappedLocalTime::None,
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> TzOffset {
        self.offset_from_utc_datetime(&utc.and_time(chrono::NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> TzOffset {
        let (o, abbr) = self.at(utc.and_utc().timestamp());
        self.offset(o, abbr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> Tz {
        Tz::from_dir(name, ZONEINFO).unwrap()
    }

    fn wall(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn shown(r: MappedLocalTime<chrono::DateTime<Tz>>) -> Vec<String> {
        let v = match r {
            MappedLocalTime::None => vec![],
            MappedLocalTime::Single(a) => vec![a],
            MappedLocalTime::Ambiguous(a, b) => vec![a, b],
        };
        v.iter()
            .map(|t| t.to_rfc3339() + " " + &t.format("%Z").to_string())
            .collect()
    }

    #[test]
    fn wall_clock_times_map_to_none_one_or_two_instants() {
        let ny = tz("America/New_York");
        assert_eq!(
            shown(ny.from_local_datetime(&wall("2026-07-01 12:00"))),
            ["2026-07-01T12:00:00-04:00 EDT"]
        );
        // Skipped: 02:00 EST became 03:00 EDT.
        assert!(shown(ny.from_local_datetime(&wall("2027-03-14 02:30"))).is_empty());
        // Passed twice: 02:00 EDT became 01:00 EST; the earlier instant first.
        assert_eq!(
            shown(ny.from_local_datetime(&wall("2026-11-01 01:30"))),
            [
                "2026-11-01T01:30:00-04:00 EDT",
                "2026-11-01T01:30:00-05:00 EST"
            ]
        );
        // The edges of the gap: 01:59 is still EST, 03:00 already EDT.
        assert_eq!(
            shown(ny.from_local_datetime(&wall("2027-03-14 01:59"))),
            ["2027-03-14T01:59:00-05:00 EST"]
        );
        assert_eq!(
            shown(ny.from_local_datetime(&wall("2027-03-14 03:00"))),
            ["2027-03-14T03:00:00-04:00 EDT"]
        );
    }

    #[test]
    fn instants_get_the_offset_in_force_then() {
        let tokyo = tz("Asia/Tokyo");
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        assert_eq!(
            t.with_timezone(&tokyo).format("%F %T %Z").to_string(),
            "2026-11-23 09:00:00 JST"
        );
        // Before 1888 Tokyo kept local mean time, +09:18:59.
        let t = Utc.with_ymd_and_hms(1880, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            t.with_timezone(&tokyo).offset().fix().local_minus_utc(),
            33539
        );
        // Past 2037 the rule at the end of the file gives the changes.
        let sydney = tz("Australia/Sydney");
        let jan = Utc.with_ymd_and_hms(2050, 1, 15, 0, 0, 0).unwrap();
        let jul = Utc.with_ymd_and_hms(2050, 7, 15, 0, 0, 0).unwrap();
        assert_eq!(jan.with_timezone(&sydney).format("%Z").to_string(), "AEDT");
        assert_eq!(jul.with_timezone(&sydney).format("%Z").to_string(), "AEST");
    }

    /// A version 1 TZif file (no rule at its end): `types` are (offset,
    /// abbreviation), `transitions` (time, type index), `leaps` (time, total).
    fn tzif(types: &[(i32, &str)], transitions: &[(i32, u8)], leaps: &[(i32, i32)]) -> Vec<u8> {
        let mut chars = Vec::new();
        let mut info = Vec::new();
        for (off, abbr) in types {
            info.extend(off.to_be_bytes());
            info.extend([0u8, chars.len() as u8]);
            chars.extend(abbr.bytes());
            chars.push(0);
        }
        let mut f = b"TZif".to_vec();
        f.extend([0u8; 16]);
        for n in [
            0,
            0,
            leaps.len(),
            transitions.len(),
            types.len(),
            chars.len(),
        ] {
            f.extend((n as u32).to_be_bytes());
        }
        transitions
            .iter()
            .for_each(|(t, _)| f.extend(t.to_be_bytes()));
        transitions.iter().for_each(|(_, i)| f.push(*i));
        f.extend(info);
        f.extend(chars);
        for (t, total) in leaps {
            f.extend(t.to_be_bytes());
            f.extend(total.to_be_bytes());
        }
        f
    }

    #[test]
    fn after_the_last_transition_of_a_file_without_a_rule_its_type_stays() {
        let dir = tempfile::tempdir().unwrap();
        // Type 1 is listed last but never used; from t = 1000 on it is AAA.
        let f = tzif(&[(3600, "AAA"), (7200, "BBB")], &[(1000, 0)], &[]);
        std::fs::write(dir.path().join("Norule"), f).unwrap();
        let z = Tz::from_dir("Norule", dir.path().to_str().unwrap()).unwrap();
        let t = Utc
            .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .unwrap()
            .with_timezone(&z);
        assert_eq!(t.format("%H:%M %Z").to_string(), "01:00 AAA");
    }

    #[test]
    fn zones_that_count_leap_seconds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = tzif(&[(0, "UTC")], &[], &[(78796800, 1)]);
        std::fs::write(dir.path().join("Leapy"), f).unwrap();
        match Tz::from_dir("Leapy", dir.path().to_str().unwrap()) {
            Err(ZoneError::Invalid(_, why)) => assert!(why.contains("leap seconds"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn utc_is_called_utc() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        assert_eq!(
            t.with_timezone(&Tz::utc()).format("%H:%M %Z").to_string(),
            "12:00 UTC"
        );
        assert_eq!(Tz::utc().to_string(), "UTC");
    }

    #[test]
    fn names_are_checked_and_zones_read_once() {
        assert_eq!(
            Tz::from_dir("Asia/Tokio", ZONEINFO),
            Err(ZoneError::Unknown(ZONEINFO.into()))
        );
        for bad in [
            "",
            "/etc/passwd",
            "../../etc/passwd",
            "Asia//Tokyo",
            "Asia/ Tokyo",
        ] {
            assert_eq!(
                Tz::from_dir(bad, ZONEINFO),
                Err(ZoneError::BadName),
                "{bad:?}"
            );
        }
        assert_eq!(
            // (A name no other test reads: a zone once read is kept, whatever the directory.)
            Tz::from_dir("Antarctica/Troll", "/nonexistent/zoneinfo"),
            Err(ZoneError::NoDatabase("/nonexistent/zoneinfo".into()))
        );
        // A file that is not a zone file.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Bogus"), "not TZif").unwrap();
        let d = dir.path().to_str().unwrap();
        assert!(matches!(
            Tz::from_dir("Bogus", d),
            Err(ZoneError::Invalid(..))
        ));
        // UTC needs no database; a zone once read is the same zone again.
        assert_eq!(
            Tz::from_dir("UTC", "/nonexistent/zoneinfo").unwrap().name(),
            "UTC"
        );
        let a = tz("Europe/Paris");
        let b = tz("Europe/Paris");
        assert!(std::ptr::eq(a.0, b.0));
        assert_eq!(a.to_string(), "Europe/Paris");
    }
}
