//! Service days: the configurable local start, time zones, DST.

mod common;

use common::{base_spec, tariff};
use fare_tariff::{Date, Tariff, TariffError};
use jiff::Timestamp;

fn tz_tariff(zone: &str, start: &str) -> Tariff {
    let mut s = base_spec();
    s.time_zone = zone.into();
    s.service_day_start = start.into();
    tariff(s)
}

fn utc(s: &str) -> u64 {
    let ts: Timestamp = s.parse().unwrap();
    u64::try_from(ts.as_second()).unwrap()
}

fn d(s: &str) -> Date {
    s.parse().unwrap()
}

#[test]
fn service_day_table() {
    // (zone, start, instant in UTC, expected service day) — local times in the comments.
    let cases = [
        // Shanghai is UTC+8 all year.
        (
            "Asia/Shanghai",
            "04:30",
            "2026-03-09T20:29:59Z",
            "2026-03-09",
        ), // 04:29:59 local
        (
            "Asia/Shanghai",
            "04:30",
            "2026-03-09T20:30:00Z",
            "2026-03-10",
        ), // 04:30:00 local
        (
            "Asia/Shanghai",
            "04:30",
            "2026-03-10T18:00:00Z",
            "2026-03-10",
        ), // 02:00 on the 11th
        (
            "Asia/Shanghai",
            "00:00",
            "2026-03-10T16:00:00Z",
            "2026-03-11",
        ), // midnight start
        // London: GMT in winter, BST (UTC+1) from 2026-03-29 01:00 UTC to 2026-10-25 01:00 UTC.
        (
            "Europe/London",
            "04:30",
            "2026-03-29T03:29:59Z",
            "2026-03-28",
        ), // 04:29:59 BST
        (
            "Europe/London",
            "04:30",
            "2026-03-29T03:30:00Z",
            "2026-03-29",
        ), // 04:30 BST
        (
            "Europe/London",
            "04:30",
            "2026-03-29T00:59:59Z",
            "2026-03-28",
        ), // 00:59:59 GMT
        (
            "Europe/London",
            "04:30",
            "2026-03-29T01:00:00Z",
            "2026-03-28",
        ), // 02:00 BST
        (
            "Europe/London",
            "04:30",
            "2026-10-25T00:30:00Z",
            "2026-10-24",
        ), // 01:30 BST (1st pass)
        (
            "Europe/London",
            "04:30",
            "2026-10-25T01:30:00Z",
            "2026-10-24",
        ), // 01:30 GMT (2nd pass)
        (
            "Europe/London",
            "04:30",
            "2026-10-25T04:29:59Z",
            "2026-10-24",
        ), // 04:29:59 GMT
        (
            "Europe/London",
            "04:30",
            "2026-10-25T04:30:00Z",
            "2026-10-25",
        ), // 04:30 GMT
        // New York: EDT (UTC-4) from 2026-03-08 07:00 UTC to 2026-11-01 06:00 UTC, else EST.
        (
            "America/New_York",
            "04:30",
            "2026-03-08T08:29:59Z",
            "2026-03-07",
        ), // 04:29:59 EDT
        (
            "America/New_York",
            "04:30",
            "2026-03-08T08:30:00Z",
            "2026-03-08",
        ), // 04:30 EDT
        (
            "America/New_York",
            "04:30",
            "2026-11-01T05:30:00Z",
            "2026-10-31",
        ), // 01:30 EDT
        (
            "America/New_York",
            "04:30",
            "2026-11-01T06:30:00Z",
            "2026-10-31",
        ), // 01:30 EST
        (
            "America/New_York",
            "04:30",
            "2026-11-01T09:29:59Z",
            "2026-10-31",
        ), // 04:29:59 EST
        (
            "America/New_York",
            "04:30",
            "2026-11-01T09:30:00Z",
            "2026-11-01",
        ), // 04:30 EST
        // A start inside the spring-forward gap (02:30 does not exist on 2026-03-08): the
        // day starts at the jump, 03:00 EDT.
        (
            "America/New_York",
            "02:30",
            "2026-03-08T06:59:59Z",
            "2026-03-07",
        ), // 01:59:59 EST
        (
            "America/New_York",
            "02:30",
            "2026-03-08T07:00:00Z",
            "2026-03-08",
        ), // 03:00 EDT
    ];
    for (zone, start, at, want) in cases {
        let t = tz_tariff(zone, start);
        assert_eq!(
            t.service_day(utc(at)).unwrap(),
            d(want),
            "{zone} {start} {at}"
        );
    }
}

#[test]
fn service_day_bounds_on_dst_days() {
    // (zone, day, start UTC, end UTC, hours)
    let cases = [
        (
            "Asia/Shanghai",
            "2026-03-10",
            "2026-03-09T20:30:00Z",
            "2026-03-10T20:30:00Z",
            24,
        ),
        (
            "Europe/London",
            "2026-03-28",
            "2026-03-28T04:30:00Z",
            "2026-03-29T03:30:00Z",
            23,
        ),
        (
            "Europe/London",
            "2026-03-29",
            "2026-03-29T03:30:00Z",
            "2026-03-30T03:30:00Z",
            24,
        ),
        (
            "Europe/London",
            "2026-10-24",
            "2026-10-24T03:30:00Z",
            "2026-10-25T04:30:00Z",
            25,
        ),
        (
            "America/New_York",
            "2026-03-07",
            "2026-03-07T09:30:00Z",
            "2026-03-08T08:30:00Z",
            23,
        ),
        (
            "America/New_York",
            "2026-10-31",
            "2026-10-31T08:30:00Z",
            "2026-11-01T09:30:00Z",
            25,
        ),
    ];
    for (zone, day, start, end, hours) in cases {
        let t = tz_tariff(zone, "04:30");
        let (s, e) = t.service_day_bounds(d(day)).unwrap();
        assert_eq!((s, e), (utc(start) as i64, utc(end) as i64), "{zone} {day}");
        assert_eq!(e - s, hours * 3600, "{zone} {day}");
    }
    let gap = tz_tariff("America/New_York", "02:30");
    assert_eq!(
        gap.service_day_start_unix_s(d("2026-03-08")).unwrap(),
        utc("2026-03-08T07:00:00Z") as i64
    );
}

/// `service_day(t) == D` exactly when `start(D) <= t < start(D + 1)`, checked every 7
/// minutes across both 2026 DST changes of London and New York (and a zone without DST).
#[test]
fn service_days_partition_time_across_dst() {
    let zones = [
        ("Europe/London", "04:30", ["2026-03-29", "2026-10-25"]),
        ("America/New_York", "04:30", ["2026-03-08", "2026-11-01"]),
        ("America/New_York", "02:30", ["2026-03-08", "2026-03-09"]), // start in the gap
        ("Asia/Shanghai", "04:30", ["2026-03-08", "2026-11-01"]),
        ("Australia/Lord_Howe", "04:30", ["2026-04-05", "2026-10-04"]), // 30-minute DST
    ];
    for (zone, start, days) in zones {
        let t = tz_tariff(zone, start);
        for day in days {
            let day = d(day);
            let (from, _) = t
                .service_day_bounds(day.yesterday().unwrap().yesterday().unwrap())
                .unwrap();
            let (_, to) = t
                .service_day_bounds(day.tomorrow().unwrap().tomorrow().unwrap())
                .unwrap();
            let mut at = from;
            while at < to {
                let sd = t.service_day(at as u64).unwrap();
                let (s, e) = t.service_day_bounds(sd).unwrap();
                assert!(
                    s <= at && at < e,
                    "{zone} {start}: {at} -> {sd} but bounds [{s}, {e})"
                );
                at += 7 * 60;
            }
        }
    }
}

#[test]
fn timestamps_beyond_the_calendar_are_errors() {
    let t = Tariff::demo();
    for at in [u64::MAX, i64::MAX as u64, 253_402_300_800 + 86_400 * 2] {
        assert!(
            matches!(
                t.service_day(at),
                Err(TariffError::TimestampOutOfRange { .. })
            ),
            "{at}"
        );
    }
    assert_eq!(t.service_day(0).unwrap(), d("1970-01-01")); // 08:00 in Shanghai
}

#[test]
fn days_affected_by_a_late_ride() {
    let demo = Tariff::demo(); // rolling cap
    let days: Vec<String> = demo
        .days_affected_by(d("2026-03-30"))
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        days,
        [
            "2026-03-30",
            "2026-03-31",
            "2026-04-01",
            "2026-04-02",
            "2026-04-03",
            "2026-04-04",
            "2026-04-05"
        ]
    );
    let prior: Vec<String> = demo
        .prior_days_needed(d("2026-03-02"))
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        prior,
        [
            "2026-02-24",
            "2026-02-25",
            "2026-02-26",
            "2026-02-27",
            "2026-02-28",
            "2026-03-01"
        ]
    );
    let plain = tariff(base_spec()); // no rolling cap
    assert_eq!(
        plain.days_affected_by(d("2026-03-30")),
        vec![d("2026-03-30")]
    );
    assert!(plain.prior_days_needed(d("2026-03-30")).is_empty());
}
