//! Table-driven worked examples. Every expected fare is computed by hand in the comments
//! next to the case; rides are listed in time order and the expectations follow it.

mod common;

use common::{base_spec, ride, tariff, transfer};
use fare_credential::Profile::{self, Adult, Child, Senior, Student};
use fare_tariff::{
    rate_day, OperatorSpec, PriorDay, PromotionSpec, RollingCapSpec, TariffSpec, TransferSpec,
    Weekday,
};

/// (ride key, local wall-clock time, operator, route, profile)
type R = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Profile,
);
/// (ride key, fare, outcome code, cap code)
type E = (&'static str, i64, &'static str, Option<&'static str>);

struct Case {
    name: &'static str,
    spec: TariffSpec,
    /// The service day rated.
    day: &'static str,
    /// (day, charged, paid rides) of earlier days.
    prior: Vec<(&'static str, i64, u32)>,
    rides: Vec<R>,
    expect: Vec<E>,
}

fn with(f: impl FnOnce(&mut TariffSpec)) -> TariffSpec {
    let mut s = base_spec();
    f(&mut s);
    s
}

/// TfL-style pay as you go on buses: £1.75 a ride, daily cap £5.25 per service day from
/// 04:30 London time, Hopper fare: unlimited bus transfers within one hour of the paid
/// touch-in (same route allowed); Freedom Pass (seniors) free.
fn tfl_spec() -> TariffSpec {
    TariffSpec {
        version: 1,
        name: "TfL-style buses".into(),
        currency: "GBP".into(),
        time_zone: "Europe/London".into(),
        service_day_start: "04:30".into(),
        default_fare_minor: 175,
        operators: vec![OperatorSpec {
            id: "london-bus".into(),
            default_fare_minor: Some(175),
            routes: vec![],
        }],
        concessions: vec![fare_tariff::ConcessionSpec {
            profile: Senior,
            discount_percent: 100,
        }],
        transfer: Some(TransferSpec {
            window_s: 3600,
            discount_percent: 100,
            max_transfers: None,
            allow_same_route: true,
        }),
        daily_cap_minor: Some(525),
        rolling_7_day_cap: None,
        promotions: vec![],
    }
}

/// OMNY-style: $2.90 a ride (express bus $7.00), one free transfer within 2 hours (not on
/// the same route), and after 12 paid rides in the rolling 7 service days the rest are
/// free. Service day from 03:00 New York time.
fn omny_spec() -> TariffSpec {
    TariffSpec {
        version: 1,
        name: "OMNY-style".into(),
        currency: "USD".into(),
        time_zone: "America/New_York".into(),
        service_day_start: "03:00".into(),
        default_fare_minor: 290,
        operators: vec![
            OperatorSpec {
                id: "subway".into(),
                default_fare_minor: Some(290),
                routes: vec![],
            },
            OperatorSpec {
                id: "bus".into(),
                default_fare_minor: Some(290),
                routes: vec![fare_tariff::RouteSpec {
                    id: "BxM1".into(),
                    fare_minor: 700,
                }],
            },
        ],
        concessions: vec![],
        transfer: Some(TransferSpec {
            window_s: 7200,
            discount_percent: 100,
            max_transfers: Some(1),
            allow_same_route: false,
        }),
        daily_cap_minor: None,
        rolling_7_day_cap: Some(RollingCapSpec {
            amount_minor: None,
            paid_rides: Some(12),
        }),
        promotions: vec![],
    }
}

fn cases() -> Vec<Case> {
    vec![
        // Base fares: route fare, else operator default, else tariff default.
        Case {
            name: "flat fares per route",
            spec: base_spec(),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("a", "2026-03-10T08:00", "bus", "1", Adult), // bus 1: 200
                ("b", "2026-03-10T09:00", "bus", "901", Adult), // bus 901: 300
                ("c", "2026-03-10T10:00", "metro", "L1", Adult), // metro L1: 300
                ("d", "2026-03-10T11:00", "metro", "L7", Adult), // unknown line: metro default 300
                ("e", "2026-03-10T12:00", "bus", "77", Adult), // unknown route, no bus default: tariff 200
                ("f", "2026-03-10T13:00", "ferry", "F1", Adult), // unknown operator: tariff 200
            ],
            expect: vec![
                ("a", 200, "charged", None),
                ("b", 300, "charged", None),
                ("c", 300, "charged", None),
                ("d", 300, "charged", None),
                ("e", 200, "charged", None),
                ("f", 200, "charged", None),
            ],
        },
        // Concessions; percentages round the fare down: 175 * 50 / 100 = 87.5 -> 87.
        Case {
            name: "concessions and rounding",
            spec: base_spec(),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("s", "2026-03-10T08:00", "bus", "1", Senior), // 200 - 100 % = 0: free
                ("t", "2026-03-10T09:00", "bus", "901", Student), // 300 * 50 / 100 = 150
                ("c", "2026-03-10T10:00", "bus", "1", Child),  // 200 * 50 / 100 = 100
                ("o", "2026-03-10T11:00", "bus", "odd", Student), // 175 * 50 / 100 = 87
                ("p", "2026-03-10T12:00", "bus", "odd", Adult), // 175
            ],
            expect: vec![
                ("s", 0, "free", None),
                ("t", 150, "charged", None),
                ("c", 100, "charged", None),
                ("o", 87, "charged", None),
                ("p", 175, "charged", None),
            ],
        },
        // One free transfer per paid ride, 90-minute window from the paid ride (inclusive).
        Case {
            name: "transfer: one per paid ride",
            spec: with(|s| s.transfer = transfer(100, Some(1))),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("p1", "2026-03-10T08:00", "bus", "1", Adult), // paid 200, opens window until 09:30
                ("t1", "2026-03-10T09:00", "bus", "2", Adult), // 60 min later, other route: transfer 0
                ("p2", "2026-03-10T09:20", "metro", "L1", Adult), // p1's transfer used: paid 300, new window until 10:50
                ("t2", "2026-03-10T10:50", "bus", "1", Adult), // exactly 90 min after p2: transfer 0
                ("p3", "2026-03-10T10:55", "bus", "2", Adult), // p2's transfer used: paid 200
            ],
            expect: vec![
                ("p1", 200, "charged", None),
                ("t1", 0, "transfer", None),
                ("p2", 300, "charged", None),
                ("t2", 0, "transfer", None),
                ("p3", 200, "charged", None),
            ],
        },
        Case {
            name: "transfer: one second outside the window",
            spec: with(|s| s.transfer = transfer(100, Some(1))),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("p1", "2026-03-10T08:00:00", "bus", "1", Adult), // paid 200
                ("p2", "2026-03-10T09:30:01", "bus", "2", Adult), // 5401 s > 5400 s: paid 200
            ],
            expect: vec![("p1", 200, "charged", None), ("p2", 200, "charged", None)],
        },
        Case {
            name: "transfer: not back on the same route",
            spec: with(|s| s.transfer = transfer(100, Some(1))),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("p1", "2026-03-10T08:00", "bus", "1", Adult), // paid 200
                ("p2", "2026-03-10T08:30", "bus", "1", Adult), // same route: paid 200, new window
                ("t1", "2026-03-10T08:40", "bus", "2", Adult), // within p2's window: transfer 0
            ],
            expect: vec![
                ("p1", 200, "charged", None),
                ("p2", 200, "charged", None),
                ("t1", 0, "transfer", None),
            ],
        },
        // Unlimited transfers: chained, but the window is measured from the paid ride and
        // never extended by a transfer.
        Case {
            name: "transfer: unlimited within the window",
            spec: with(|s| s.transfer = transfer(100, None)),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("p1", "2026-03-10T08:00", "bus", "1", Adult), // paid 200, window until 09:30
                ("t1", "2026-03-10T08:30", "bus", "2", Adult), // transfer 0
                ("t2", "2026-03-10T09:00", "metro", "L1", Adult), // transfer 0
                ("t3", "2026-03-10T09:30", "bus", "901", Adult), // exactly 90 min: transfer 0
                ("p2", "2026-03-10T09:31", "bus", "1", Adult), // 91 min: paid 200
            ],
            expect: vec![
                ("p1", 200, "charged", None),
                ("t1", 0, "transfer", None),
                ("t2", 0, "transfer", None),
                ("t3", 0, "transfer", None),
                ("p2", 200, "charged", None),
            ],
        },
        Case {
            name: "transfer: partial discount",
            spec: with(|s| s.transfer = transfer(50, Some(1))),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("p1", "2026-03-10T08:00", "metro", "L1", Adult), // paid 300
                ("t1", "2026-03-10T08:30", "bus", "901", Adult),  // 300 * 50 / 100 = 150
            ],
            expect: vec![("p1", 300, "charged", None), ("t1", 150, "transfer", None)],
        },
        // Free rides neither use nor open a transfer window.
        Case {
            name: "transfer: free rides do not use the window",
            spec: with(|s| s.transfer = transfer(100, Some(1))),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("p1", "2026-03-10T08:00", "bus", "1", Adult), // paid 200
                ("f1", "2026-03-10T08:10", "bus", "2", Senior), // free by concession; window untouched
                ("t1", "2026-03-10T08:20", "bus", "901", Adult), // p1's one transfer: 0
            ],
            expect: vec![
                ("p1", 200, "charged", None),
                ("f1", 0, "free", None),
                ("t1", 0, "transfer", None),
            ],
        },
        // Daily cap 600: the ride that reaches it pays the remainder.
        Case {
            name: "daily cap reached mid-ride",
            spec: with(|s| s.daily_cap_minor = Some(600)),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("r1", "2026-03-10T08:00", "bus", "1", Adult), // 200, total 200
                ("r2", "2026-03-10T10:00", "metro", "L1", Adult), // 300, total 500
                ("r3", "2026-03-10T12:00", "bus", "901", Adult), // 300 but 100 left: 100, total 600
                ("r4", "2026-03-10T14:00", "bus", "1", Adult), // 0 left: 0
            ],
            expect: vec![
                ("r1", 200, "charged", None),
                ("r2", 300, "charged", None),
                ("r3", 100, "capped", Some("daily")),
                ("r4", 0, "capped", Some("daily")),
            ],
        },
        // Concession first, then the cap: a student reaches 600 after four 150 rides.
        Case {
            name: "concession before daily cap",
            spec: with(|s| s.daily_cap_minor = Some(600)),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("r1", "2026-03-10T07:00", "bus", "901", Student), // 150, total 150
                ("r2", "2026-03-10T09:00", "bus", "901", Student), // 150, total 300
                ("r3", "2026-03-10T11:00", "bus", "901", Student), // 150, total 450
                ("r4", "2026-03-10T13:00", "bus", "901", Student), // 150, total 600
                ("r5", "2026-03-10T15:00", "bus", "901", Student), // capped: 0
            ],
            expect: vec![
                ("r1", 150, "charged", None),
                ("r2", 150, "charged", None),
                ("r3", 150, "charged", None),
                ("r4", 150, "charged", None),
                ("r5", 0, "capped", Some("daily")),
            ],
        },
        // Transfer before cap: a free transfer does not count toward the cap, and a
        // transfer after the cap is reported as a transfer, not as capped.
        Case {
            name: "transfer applies before the daily cap",
            spec: with(|s| {
                s.transfer = transfer(100, Some(1));
                s.daily_cap_minor = Some(600);
            }),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("p1", "2026-03-10T08:00", "bus", "901", Adult), // 300, total 300
                ("t1", "2026-03-10T08:30", "metro", "L1", Adult), // transfer 0, total 300
                ("p2", "2026-03-10T10:30", "bus", "901", Adult), // 300, total 600
                ("t2", "2026-03-10T11:00", "bus", "1", Adult),   // transfer 0 (before the cap)
                ("p3", "2026-03-10T13:00", "bus", "1", Adult),   // capped 0
            ],
            expect: vec![
                ("p1", 300, "charged", None),
                ("t1", 0, "transfer", None),
                ("p2", 300, "charged", None),
                ("t2", 0, "transfer", None),
                ("p3", 0, "capped", Some("daily")),
            ],
        },
        // Free Sundays on buses; the promotion follows the *service* day, so 02:00 on
        // Monday still rides free. 2026-03-15 is a Sunday.
        Case {
            name: "promotion on a weekday",
            spec: with(|s| {
                s.promotions = vec![PromotionSpec {
                    name: "bus Sunday".into(),
                    weekdays: vec![Weekday::Sunday],
                    dates: vec![],
                    discount_percent: 100,
                    operators: vec!["bus".into()],
                    profiles: vec![],
                }]
            }),
            day: "2026-03-15",
            prior: vec![],
            rides: vec![
                ("b1", "2026-03-15T10:00", "bus", "1", Adult), // bus on Sunday: 0
                ("m1", "2026-03-15T11:00", "metro", "L1", Adult), // metro not in the promotion: 300
                ("b2", "2026-03-16T02:00", "bus", "901", Adult), // Monday 02:00 = Sunday's service day: 0
            ],
            expect: vec![
                ("b1", 0, "promotion", None),
                ("m1", 300, "charged", None),
                ("b2", 0, "promotion", None),
            ],
        },
        Case {
            name: "promotion the day after is over",
            spec: with(|s| {
                s.promotions = vec![PromotionSpec {
                    name: "bus Sunday".into(),
                    weekdays: vec![Weekday::Sunday],
                    dates: vec![],
                    discount_percent: 100,
                    operators: vec!["bus".into()],
                    profiles: vec![],
                }]
            }),
            day: "2026-03-16",
            prior: vec![],
            rides: vec![("b1", "2026-03-16T04:30", "bus", "1", Adult)], // Monday's service day: 200
            expect: vec![("b1", 200, "charged", None)],
        },
        // Discounts compound in order: concession, then promotion.
        // Student on a half-price date: 300 -> 150 (concession) -> 75 (promotion).
        Case {
            name: "concession then promotion compound",
            spec: with(|s| {
                s.promotions = vec![
                    PromotionSpec {
                        name: "half price day".into(),
                        weekdays: vec![],
                        dates: vec!["2026-03-10".into()],
                        discount_percent: 50,
                        operators: vec![],
                        profiles: vec![],
                    },
                    // Also matches, smaller discount: the larger one wins.
                    PromotionSpec {
                        name: "tuesday".into(),
                        weekdays: vec![Weekday::Tuesday],
                        dates: vec![],
                        discount_percent: 10,
                        operators: vec![],
                        profiles: vec![],
                    },
                ]
            }),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("s1", "2026-03-10T08:00", "bus", "901", Student), // 300 -> 150 -> 75
                ("a1", "2026-03-10T09:00", "bus", "odd", Adult),   // 175 * 50 / 100 = 87
            ],
            expect: vec![("s1", 75, "promotion", None), ("a1", 87, "promotion", None)],
        },
        // Rolling 7-day amount cap 2400: the 6 days before hold 2300; the day 7 days
        // before is outside the window and ignored.
        Case {
            name: "rolling 7-day amount cap",
            spec: with(|s| {
                s.rolling_7_day_cap = Some(RollingCapSpec {
                    amount_minor: Some(2400),
                    paid_rides: None,
                })
            }),
            day: "2026-03-10",
            prior: vec![
                ("2026-03-03", 1000, 5), // D-7: outside the window
                ("2026-03-04", 600, 3),  // D-6
                ("2026-03-06", 900, 4),
                ("2026-03-09", 800, 4), // D-1; window total 2300
            ],
            rides: vec![
                ("r1", "2026-03-10T08:00", "metro", "L1", Adult), // 300 but 100 left: 100
                ("r2", "2026-03-10T18:00", "bus", "1", Adult),    // 0
            ],
            expect: vec![
                ("r1", 100, "capped", Some("rolling_7_day")),
                ("r2", 0, "capped", Some("rolling_7_day")),
            ],
        },
        // Daily cap first, then the rolling cap; the last cap that cut reports.
        // Prior 2000 in the window; daily cap 600, rolling 2400.
        Case {
            name: "daily then rolling cap",
            spec: with(|s| {
                s.daily_cap_minor = Some(600);
                s.rolling_7_day_cap = Some(RollingCapSpec {
                    amount_minor: Some(2400),
                    paid_rides: None,
                });
            }),
            day: "2026-03-10",
            prior: vec![("2026-03-08", 2000, 10)],
            rides: vec![
                ("r1", "2026-03-10T08:00", "bus", "1", Adult), // 200: day 200, window 2200
                ("r2", "2026-03-10T10:00", "metro", "L1", Adult), // 300 -> rolling leaves 200: day 400, window 2400
                ("r3", "2026-03-10T12:00", "bus", "901", Adult),  // daily leaves 200, rolling 0: 0
            ],
            expect: vec![
                ("r1", 200, "charged", None),
                ("r2", 200, "capped", Some("rolling_7_day")),
                ("r3", 0, "capped", Some("rolling_7_day")),
            ],
        },
        // TfL-style daily cap on the 04:30 service day, with the Hopper.
        Case {
            name: "TfL-style bus day",
            spec: tfl_spec(),
            day: "2026-03-10",
            prior: vec![],
            rides: vec![
                ("t1", "2026-03-10T07:40", "london-bus", "24", Adult), // 175, total 175
                ("t2", "2026-03-10T08:10", "london-bus", "88", Adult), // Hopper: 0
                ("t3", "2026-03-10T08:35", "london-bus", "24", Adult), // Hopper, same route allowed: 0
                ("t4", "2026-03-10T08:41", "london-bus", "24", Adult), // 61 min after t1: 175, total 350
                ("t5", "2026-03-10T12:00", "london-bus", "88", Adult), // 175, total 525 = cap
                ("t6", "2026-03-10T12:30", "london-bus", "24", Adult), // Hopper from t5: 0 (transfer)
                ("t7", "2026-03-10T18:00", "london-bus", "24", Adult), // cap reached: 0
                ("t8", "2026-03-11T01:30", "london-bus", "N29", Adult), // night bus, same service day: 0
            ],
            expect: vec![
                ("t1", 175, "charged", None),
                ("t2", 0, "transfer", None),
                ("t3", 0, "transfer", None),
                ("t4", 175, "charged", None),
                ("t5", 175, "charged", None),
                ("t6", 0, "transfer", None),
                ("t7", 0, "capped", Some("daily")),
                ("t8", 0, "capped", Some("daily")),
            ],
        },
        Case {
            name: "TfL-style next service day starts at 04:30",
            spec: tfl_spec(),
            day: "2026-03-11",
            prior: vec![("2026-03-10", 525, 3)], // no rolling cap: ignored
            rides: vec![
                ("n1", "2026-03-11T04:30", "london-bus", "N29", Adult), // new day: 175
                ("n2", "2026-03-11T06:00", "london-bus", "24", Senior), // Freedom Pass: 0
            ],
            expect: vec![("n1", 175, "charged", None), ("n2", 0, "free", None)],
        },
        // OMNY-style: 10 paid rides in the 6 days before; the 11th and 12th are paid,
        // later ones free until the window moves on. Transfers do not count as paid rides.
        Case {
            name: "OMNY-style 12 paid rides in 7 days",
            spec: omny_spec(),
            day: "2026-03-10",
            prior: vec![
                ("2026-03-03", 580, 2), // D-7: outside
                ("2026-03-05", 580, 2),
                ("2026-03-06", 580, 2),
                ("2026-03-07", 580, 2),
                ("2026-03-08", 580, 2),
                ("2026-03-09", 580, 2), // 10 paid rides in the window
            ],
            rides: vec![
                ("o1", "2026-03-10T08:00", "subway", "A", Adult), // 11th paid: 290
                ("o2", "2026-03-10T08:40", "bus", "M15", Adult),  // transfer 0 (not a paid ride)
                ("o3", "2026-03-10T17:30", "bus", "BxM1", Adult), // 12th paid: 700
                ("o4", "2026-03-10T18:10", "subway", "A", Adult), // transfer from o3: 0
                ("o5", "2026-03-10T21:00", "subway", "Q", Adult), // 12 paid in window: 0
                ("o6", "2026-03-11T02:30", "bus", "M15", Adult), // before 03:00: same service day, 0
            ],
            expect: vec![
                ("o1", 290, "charged", None),
                ("o2", 0, "transfer", None),
                ("o3", 700, "charged", None),
                ("o4", 0, "transfer", None),
                ("o5", 0, "capped", Some("rolling_7_day")),
                ("o6", 0, "capped", Some("rolling_7_day")),
            ],
        },
        Case {
            name: "OMNY-style window slides",
            spec: omny_spec(),
            day: "2026-03-10",
            prior: vec![
                ("2026-03-03", 2900, 10), // D-7: dropped out of the window
                ("2026-03-04", 3190, 11), // D-6: 11 paid
            ],
            rides: vec![
                ("o1", "2026-03-10T08:00", "subway", "A", Adult), // 12th: 290
                ("o2", "2026-03-10T12:00", "subway", "A", Adult), // 0
            ],
            expect: vec![
                ("o1", 290, "charged", None),
                ("o2", 0, "capped", Some("rolling_7_day")),
            ],
        },
    ]
}

#[test]
fn worked_examples() {
    for case in cases() {
        let t = tariff(case.spec);
        let day = case.day.parse().unwrap();
        let rides: Vec<_> = case
            .rides
            .iter()
            .map(|(k, w, o, r, p)| ride(&t, k, w, o, r, *p))
            .collect();
        let prior: Vec<PriorDay> = case
            .prior
            .iter()
            .map(|(d, c, n)| PriorDay {
                day: d.parse().unwrap(),
                charged_minor: *c,
                paid_rides: *n,
            })
            .collect();
        let rated =
            rate_day(&t, day, &rides, &prior).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let got: Vec<E> = rated
            .rides
            .iter()
            .map(|r| {
                let key: &'static str = case.rides.iter().find(|x| x.0 == r.ride_key).unwrap().0;
                (
                    key,
                    r.fare_minor,
                    r.outcome.code(),
                    r.capped_by.map(|c| c.code()),
                )
            })
            .collect();
        assert_eq!(got, case.expect, "case `{}`", case.name);
        let total: i64 = case.expect.iter().map(|e| e.1).sum();
        assert_eq!(rated.charged_minor, total, "case `{}` total", case.name);
        let paid = case.expect.iter().filter(|e| e.1 > 0).count() as u32;
        assert_eq!(rated.paid_rides, paid, "case `{}` paid rides", case.name);
        for r in &rated.rides {
            assert_eq!(
                r.reductions.total_minor(),
                r.base_fare_minor - r.fare_minor,
                "case `{}`",
                case.name
            );
        }
    }
}

/// The reductions show the order of application: concession, promotion, transfer, daily
/// cap, rolling cap.
#[test]
fn reductions_follow_the_order_of_application() {
    let t = tariff(with(|s| {
        s.transfer = transfer(50, Some(1));
        s.daily_cap_minor = Some(400);
        s.rolling_7_day_cap = Some(RollingCapSpec {
            amount_minor: Some(1000),
            paid_rides: None,
        });
        s.promotions = vec![PromotionSpec {
            name: "tuesday".into(),
            weekdays: vec![Weekday::Tuesday],
            dates: vec![],
            discount_percent: 20,
            operators: vec![],
            profiles: vec![Profile::Student],
        }];
    }));
    let day = "2026-03-10".parse().unwrap();
    // Prior: 700 in the window, so 300 left on the rolling cap.
    let prior = [PriorDay {
        day: "2026-03-09".parse().unwrap(),
        charged_minor: 700,
        paid_rides: 3,
    }];
    let rides = [
        // Adult 300: daily cap leaves 400, rolling cap leaves 1000 - 700 = 300: pays 300.
        ride(&t, "a", "2026-03-10T07:00", "metro", "L1", Adult),
        // Student on bus 901 at 07:30, transfer from "a":
        // 300 -concession 150-> 150 -promotion 30-> 120 -transfer 60-> 60
        // -daily cap (400 - 300 = 100 left) 0-> 60 -rolling (1000 - 700 - 300 = 0 left) 60-> 0.
        ride(&t, "b", "2026-03-10T07:30", "bus", "901", Student),
    ];
    let rated = rate_day(&t, day, &rides, &prior).unwrap();
    let a = rated.ride("a").unwrap();
    assert_eq!((a.fare_minor, a.outcome.code()), (300, "charged"));
    let b = rated.ride("b").unwrap();
    assert_eq!(b.transfer_from.as_deref(), Some("a"));
    assert_eq!(b.promotion.as_deref(), Some("tuesday"));
    assert_eq!(
        (
            b.reductions.concession_minor,
            b.reductions.promotion_minor,
            b.reductions.transfer_minor,
            b.reductions.daily_cap_minor,
            b.reductions.rolling_cap_minor
        ),
        (150, 30, 60, 0, 60)
    );
    assert_eq!(
        (
            b.fare_minor,
            b.outcome.code(),
            b.capped_by.map(|c| c.code())
        ),
        (0, "capped", Some("rolling_7_day"))
    );
}

#[test]
fn demo_tariff_worked_day() {
    // Demo: Shanghai, bus 200, metro 300, one free transfer within 90 min, cap 600/2400,
    // car-free day 2026-09-22.
    let t = fare_tariff::Tariff::demo();
    let day = "2026-09-21".parse().unwrap();
    let rides = [
        ride(&t, "1", "2026-09-21T08:00", "city-bus", "15", Adult), // 200
        ride(&t, "2", "2026-09-21T08:20", "metro", "L2", Adult),    // transfer 0
        ride(&t, "3", "2026-09-21T18:00", "metro", "L1", Adult),    // 300, total 500
        ride(&t, "4", "2026-09-21T18:30", "metro", "L1", Adult), // same route: paid, cap leaves 100
        ride(&t, "5", "2026-09-22T01:00", "city-bus", "901", Adult), // still the 21st: capped 0
    ];
    let rated = rate_day(&t, day, &rides, &[]).unwrap();
    let fares: Vec<_> = rated
        .rides
        .iter()
        .map(|r| (r.fare_minor, r.outcome.code()))
        .collect();
    assert_eq!(
        fares,
        [
            (200, "charged"),
            (0, "transfer"),
            (300, "charged"),
            (100, "capped"),
            (0, "capped")
        ]
    );
    // The car-free day itself: free, a promotion.
    let day = "2026-09-22".parse().unwrap();
    let rides = [ride(&t, "6", "2026-09-22T08:00", "metro", "L1", Adult)];
    let rated = rate_day(&t, day, &rides, &[rated.prior_day()]).unwrap();
    assert_eq!(
        (rated.rides[0].fare_minor, rated.rides[0].outcome.code()),
        (0, "promotion")
    );
    assert_eq!(
        rated.rides[0].promotion.as_deref(),
        Some("World Car-Free Day")
    );
}

/// A late ride on one day changes a later day through the rolling 7-day cap, and
/// `rate_days` re-rates the days in order.
#[test]
fn late_ride_re_rates_the_following_days() {
    // Demo: bus 1 costs 200, daily cap 600, rolling cap 2400.
    let t = fare_tariff::Tariff::demo();
    let mut rides = vec![];
    let mut add = |key: &str, wall: &str| rides.push(ride(&t, key, wall, "city-bus", "1", Adult));
    add("m1", "2026-03-02T08:00"); // Mon: 200
    add("m2", "2026-03-02T11:00"); // Mon: 200, day 400
    for d in ["03", "04", "05"] {
        // Tue..Thu: 3 x 200 = 600 each; window total after Thu = 400 + 1800 = 2200
        for (i, h) in ["08", "11", "14"].iter().enumerate() {
            add(&format!("{d}-{i}"), &format!("2026-03-{d}T{h}:00"));
        }
    }
    add("f1", "2026-03-06T08:00"); // Fri: 200 -> window 2400
    add("f2", "2026-03-06T11:00"); // Fri: rolling cap: 0
    let before = fare_tariff::rate_days(&t, &rides, &[]).unwrap();
    let fri = before.last().unwrap();
    assert_eq!(fri.day.to_string(), "2026-03-06");
    assert_eq!(
        (
            fri.ride("f1").unwrap().fare_minor,
            fri.ride("f2").unwrap().fare_minor
        ),
        (200, 0)
    );

    // A late batch brings a third Monday ride: Monday now 600, so Friday's window is full
    // before f1.
    let late = ride(&t, "m3", "2026-03-02T14:00", "city-bus", "1", Adult);
    let monday = late.at_unix_s;
    rides.insert(0, late);
    let day = t.service_day(monday).unwrap();
    let affected = t.days_affected_by(day);
    assert_eq!(affected.len(), 7);
    rides.reverse(); // arrival order does not matter
    let after = fare_tariff::rate_days(&t, &rides, &[]).unwrap();
    let fri = after.last().unwrap();
    assert_eq!(after[0].charged_minor, 600);
    assert_eq!(
        (
            fri.ride("f1").unwrap().fare_minor,
            fri.ride("f1").unwrap().outcome.code()
        ),
        (0, "capped")
    );
    assert_eq!(fri.charged_minor, 0);
    // Same as rating day by day with the previous days' totals.
    let mut prior = vec![];
    for d in &after {
        let day_rides: Vec<_> = rides
            .iter()
            .filter(|r| t.service_day(r.at_unix_s).unwrap() == d.day)
            .cloned()
            .collect();
        assert_eq!(
            &fare_tariff::rate_day(&t, d.day, &day_rides, &prior).unwrap(),
            d
        );
        prior.push(d.prior_day());
    }
    // Earlier totals given for the window count; an entry for a rated day is replaced.
    let earlier = [
        fare_tariff::PriorDay {
            day: "2026-02-24".parse().unwrap(), // Tuesday before: in Monday's window only
            charged_minor: 2400,
            paid_rides: 12,
        },
        fare_tariff::PriorDay {
            day: "2026-03-02".parse().unwrap(),
            charged_minor: 9999,
            paid_rides: 99,
        },
    ];
    let capped = fare_tariff::rate_days(&t, &rides, &earlier).unwrap();
    assert_eq!(capped[0].charged_minor, 0); // 2026-02-24's 2400 fills Monday's window
    assert_eq!(capped[1].charged_minor, 600); // Monday's stale 9999 was replaced by 0
    assert_eq!(capped.last().unwrap().charged_minor, 400); // Fri: window 0 + 3 x 600, both rides paid
}
