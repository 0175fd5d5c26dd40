//! Property tests of rating over random tariffs, rides and prior days.

mod common;

use common::{base_spec, tariff};
use fare_credential::Profile;
use fare_tariff::{
    rate_day, Date, PriorDay, PromotionSpec, RideToRate, RollingCapSpec, Tariff, TransferSpec,
    Weekday,
};
use proptest::prelude::*;

/// Days around DST changes and ordinary days.
const DAYS: [&str; 4] = ["2026-03-08", "2026-03-10", "2026-03-29", "2026-11-01"];
const ZONES: [&str; 3] = ["Asia/Shanghai", "Europe/London", "America/New_York"];
const ROUTES: [(&str, &str); 6] = [
    ("bus", "1"),
    ("bus", "2"),
    ("bus", "901"),
    ("bus", "odd"),
    ("metro", "L1"),
    ("ferry", "F1"),
];

#[derive(Clone, Debug)]
struct Setup {
    tariff: Tariff,
    day: Date,
    rides: Vec<RideToRate>,
    prior: Vec<PriorDay>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        0..ZONES.len(),
        0..DAYS.len(),
        proptest::option::of((
            1u64..=10_800,
            0i64..=100,
            proptest::option::of(1u32..4),
            any::<bool>(),
        )),
        proptest::option::of(1i64..2_000),
        proptest::option::of((
            proptest::option::of(1i64..5_000),
            proptest::option::of(1u32..20),
        )),
        proptest::option::of(0i64..=100),
        proptest::collection::vec((0.0f64..1.0, 0..ROUTES.len(), 0..4u8, 0..3u32), 0..25),
        proptest::collection::vec((1i64..=8, 0i64..1_500, 0u32..8), 0..8),
    )
        .prop_map(|(zone, day, tr, daily, rolling, promo, rides, prior)| {
            let mut s = base_spec();
            s.time_zone = ZONES[zone].into();
            s.transfer = tr.map(
                |(window_s, discount_percent, max_transfers, allow_same_route)| TransferSpec {
                    window_s,
                    discount_percent,
                    max_transfers,
                    allow_same_route,
                },
            );
            s.daily_cap_minor = daily;
            s.rolling_7_day_cap = rolling.and_then(|(amount_minor, paid_rides)| {
                (amount_minor.is_some() || paid_rides.is_some()).then_some(RollingCapSpec {
                    amount_minor,
                    paid_rides,
                })
            });
            s.promotions = promo
                .map(|p| PromotionSpec {
                    name: "promo".into(),
                    weekdays: vec![Weekday::Sunday, Weekday::Tuesday],
                    dates: vec![],
                    discount_percent: p,
                    operators: vec!["bus".into()],
                    profiles: vec![],
                })
                .into_iter()
                .collect();
            let tariff = tariff(s);
            let day: Date = DAYS[day].parse().unwrap();
            let (start, end) = tariff.service_day_bounds(day).unwrap();
            let rides = rides
                .into_iter()
                .enumerate()
                .map(|(i, (frac, route, profile, cluster))| {
                    // Cluster rides around a few moments so ties and transfers happen.
                    let len = (end - start) as f64;
                    let at = start
                        + ((frac * len) as i64 / 600 * 600 + i64::from(cluster) * 60)
                            .min(end - start - 1);
                    RideToRate {
                        ride_key: format!("r{i}"),
                        at_unix_s: at as u64,
                        operator: ROUTES[route].0.into(),
                        route: ROUTES[route].1.into(),
                        profile: Profile::from_byte(profile).unwrap(),
                    }
                })
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            let prior = prior
                .into_iter()
                .filter(|(back, _, _)| seen.insert(*back))
                .map(|(back, charged_minor, paid_rides)| PriorDay {
                    day: day.checked_sub(jiff::Span::new().days(back)).unwrap(),
                    charged_minor,
                    paid_rides,
                })
                .collect();
            Setup {
                tariff,
                day,
                rides,
                prior,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Rating does not depend on the order rides arrive in (replays, late batches).
    #[test]
    fn order_independent(s in setup(), seed in any::<u64>()) {
        let rated = rate_day(&s.tariff, s.day, &s.rides, &s.prior).unwrap();
        let mut shuffled = s.rides.clone();
        // Deterministic Fisher-Yates from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut prior = s.prior.clone();
        prior.reverse();
        prop_assert_eq!(rate_day(&s.tariff, s.day, &shuffled, &prior).unwrap(), rated);
    }

    /// Fares are never negative, never above the base fare; the reductions explain the
    /// difference; totals add up; the caps hold.
    #[test]
    fn fares_are_bounded(s in setup()) {
        let rated = rate_day(&s.tariff, s.day, &s.rides, &s.prior).unwrap();
        prop_assert_eq!(rated.rides.len(), s.rides.len());
        let mut total = 0;
        for r in &rated.rides {
            prop_assert!(r.fare_minor >= 0);
            prop_assert!(r.fare_minor <= r.base_fare_minor);
            prop_assert_eq!(r.reductions.total_minor(), r.base_fare_minor - r.fare_minor);
            prop_assert_eq!(r.capped_by.is_some(), r.outcome.code() == "capped");
            if r.reductions.transfer_minor > 0 {
                prop_assert!(r.transfer_from.is_some());
            }
            if let Some(from) = &r.transfer_from {
                let paid = rated.rides.iter().find(|x| &x.ride_key == from).unwrap();
                let window_s = s.tariff.spec().transfer.as_ref().unwrap().window_s;
                prop_assert!(paid.at_unix_s <= r.at_unix_s && r.at_unix_s - paid.at_unix_s <= window_s);
                prop_assert!(paid.transfer_from.is_none());
            }
            total += r.fare_minor;
        }
        prop_assert_eq!(rated.charged_minor, total);
        prop_assert_eq!(rated.paid_rides as usize, rated.rides.iter().filter(|r| r.fare_minor > 0).count());
        let spec = s.tariff.spec();
        if let Some(cap) = spec.daily_cap_minor {
            prop_assert!(total <= cap);
        }
        let oldest = s.day.checked_sub(jiff::Span::new().days(6)).unwrap();
        let window: Vec<_> = s.prior.iter().filter(|p| p.day >= oldest && p.day < s.day).collect();
        if let Some(rc) = &spec.rolling_7_day_cap {
            if let Some(cap) = rc.amount_minor {
                let prior: i64 = window.iter().map(|p| p.charged_minor).sum();
                prop_assert!(total <= (cap - prior).max(0));
            }
            if let Some(n) = rc.paid_rides {
                let prior: u32 = window.iter().map(|p| p.paid_rides).sum();
                prop_assert!(rated.paid_rides <= n.saturating_sub(prior));
            }
        }
    }

    /// Causality: a ride's fare depends only on the rides before it (in rating order), so a
    /// late ride changes the fares of later rides only.
    #[test]
    fn later_rides_do_not_change_earlier_fares(s in setup(), cut in 0usize..25) {
        let rated = rate_day(&s.tariff, s.day, &s.rides, &s.prior).unwrap();
        let cut = cut.min(rated.rides.len());
        let first: Vec<RideToRate> = rated.rides[..cut]
            .iter()
            .map(|r| s.rides.iter().find(|x| x.ride_key == r.ride_key).unwrap().clone())
            .collect();
        let partial = rate_day(&s.tariff, s.day, &first, &s.prior).unwrap();
        prop_assert_eq!(&partial.rides[..], &rated.rides[..cut]);
    }

    /// Any valid tariff survives a JSON round trip unchanged.
    #[test]
    fn json_round_trip(s in setup()) {
        let back = Tariff::from_json(&s.tariff.to_json()).unwrap();
        prop_assert_eq!(back, s.tariff);
    }
}
