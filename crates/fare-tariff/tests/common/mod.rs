//! Helpers shared by the tariff tests.
#![allow(dead_code)] // each test file uses a subset

use fare_credential::Profile;
use fare_tariff::{
    ConcessionSpec, OperatorSpec, RideToRate, RouteSpec, Tariff, TariffSpec, TransferSpec,
};
use jiff::civil::DateTime;

/// "Testville": Asia/Shanghai (UTC+8, no DST), service day from 04:30, CNY.
/// bus: 1 = 200, 2 = 200, 901 = 300, odd = 175 (others 200); metro: L1 = 300 (others 300).
/// Seniors 100 % off, students and children 50 % off. No transfer, caps or promotions:
/// each case adds what it tests.
pub fn base_spec() -> TariffSpec {
    let route = |id: &str, fare_minor| RouteSpec {
        id: id.into(),
        fare_minor,
    };
    TariffSpec {
        version: 1,
        name: "Testville".into(),
        currency: "CNY".into(),
        time_zone: "Asia/Shanghai".into(),
        service_day_start: "04:30".into(),
        default_fare_minor: 200,
        operators: vec![
            OperatorSpec {
                id: "bus".into(),
                default_fare_minor: None,
                routes: vec![
                    route("1", 200),
                    route("2", 200),
                    route("901", 300),
                    route("odd", 175),
                ],
            },
            OperatorSpec {
                id: "metro".into(),
                default_fare_minor: Some(300),
                routes: vec![route("L1", 300)],
            },
        ],
        concessions: vec![
            ConcessionSpec {
                profile: Profile::Senior,
                discount_percent: 100,
            },
            ConcessionSpec {
                profile: Profile::Student,
                discount_percent: 50,
            },
            ConcessionSpec {
                profile: Profile::Child,
                discount_percent: 50,
            },
        ],
        transfer: None,
        daily_cap_minor: None,
        rolling_7_day_cap: None,
        promotions: vec![],
    }
}

/// 90-minute transfer window, `percent` off, `max` transfers per paid ride, not on the
/// same route.
pub fn transfer(percent: i64, max: Option<u32>) -> Option<TransferSpec> {
    Some(TransferSpec {
        window_s: 5400,
        discount_percent: percent,
        max_transfers: max,
        allow_same_route: false,
    })
}

pub fn tariff(spec: TariffSpec) -> Tariff {
    // Through JSON, so every case also exercises the wire format.
    let json = serde_json::to_string(&spec).unwrap();
    Tariff::from_json(&json).unwrap()
}

/// Unix seconds of a local wall-clock time ("2026-03-10T08:00") in the tariff's zone.
pub fn local(t: &Tariff, wall: &str) -> u64 {
    let dt: DateTime = wall.parse().unwrap();
    let ts = t
        .time_zone()
        .to_ambiguous_timestamp(dt)
        .compatible()
        .unwrap();
    u64::try_from(ts.as_second()).unwrap()
}

/// A ride at local wall-clock time `wall`.
pub fn ride(
    t: &Tariff,
    key: &str,
    wall: &str,
    operator: &str,
    route: &str,
    profile: Profile,
) -> RideToRate {
    RideToRate {
        ride_key: key.into(),
        at_unix_s: local(t, wall),
        operator: operator.into(),
        route: route.into(),
        profile,
    }
}
