//! Bad tariffs and bad rating input give specific errors, never a panic.

mod common;

use common::{ride, tariff};
use fare_credential::Profile::Adult;
use fare_tariff::{rate_day, PriorDay, RateError, Tariff, TariffError, MAX_TARIFF_JSON_BYTES};
use serde_json::{json, Value};

/// The demo tariff as a JSON value, edited by `f`, then loaded.
fn load(f: impl FnOnce(&mut Value)) -> Result<Tariff, TariffError> {
    let mut v: Value = serde_json::from_str(&Tariff::demo().to_json()).unwrap();
    f(&mut v);
    Tariff::from_json(&v.to_string())
}

fn field_of(e: &TariffError) -> String {
    match e {
        TariffError::InvalidField { field, .. } | TariffError::Duplicate { field, .. } => {
            field.clone()
        }
        other => format!("<{other}>"),
    }
}

#[test]
fn invalid_fields_are_named() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("version", Box::new(|v| v["version"] = json!(2))),
        ("name", Box::new(|v| v["name"] = json!(""))),
        ("currency", Box::new(|v| v["currency"] = json!("cny"))),
        ("currency", Box::new(|v| v["currency"] = json!("CNYX"))),
        (
            "service_day_start",
            Box::new(|v| v["service_day_start"] = json!("4:30")),
        ),
        (
            "service_day_start",
            Box::new(|v| v["service_day_start"] = json!("24:00")),
        ),
        (
            "default_fare_minor",
            Box::new(|v| v["default_fare_minor"] = json!(-1)),
        ),
        (
            "operators[0].routes[1].fare_minor",
            Box::new(|v| v["operators"][0]["routes"][1]["fare_minor"] = json!(-200)),
        ),
        (
            "operators[1].routes[0].fare_minor",
            Box::new(|v| v["operators"][1]["routes"][0]["fare_minor"] = json!(1_000_000_001i64)),
        ),
        (
            "operators[0].default_fare_minor",
            Box::new(|v| v["operators"][0]["default_fare_minor"] = json!(-5)),
        ),
        (
            "operators[0].id",
            Box::new(|v| v["operators"][0]["id"] = json!("bad\nid")),
        ),
        (
            "operators[0].routes[0].id",
            Box::new(|v| v["operators"][0]["routes"][0]["id"] = json!("x".repeat(65))),
        ),
        (
            "operators[0].routes",
            Box::new(|v| v["operators"][0]["routes"][1]["id"] = json!("1")),
        ),
        (
            "operators",
            Box::new(|v| v["operators"][1]["id"] = json!("city-bus")),
        ),
        (
            "concessions[1].discount_percent",
            Box::new(|v| v["concessions"][1]["discount_percent"] = json!(101)),
        ),
        (
            "concessions[0].discount_percent",
            Box::new(|v| v["concessions"][0]["discount_percent"] = json!(-1)),
        ),
        (
            "concessions",
            Box::new(|v| v["concessions"][1]["profile"] = json!("senior")),
        ),
        (
            "transfer.window_s",
            Box::new(|v| v["transfer"]["window_s"] = json!(0)),
        ),
        (
            "transfer.window_s",
            Box::new(|v| v["transfer"]["window_s"] = json!(86_401)),
        ),
        (
            "transfer.discount_percent",
            Box::new(|v| v["transfer"]["discount_percent"] = json!(150)),
        ),
        (
            "transfer.max_transfers",
            Box::new(|v| v["transfer"]["max_transfers"] = json!(0)),
        ),
        (
            "daily_cap_minor",
            Box::new(|v| v["daily_cap_minor"] = json!(0)),
        ),
        (
            "daily_cap_minor",
            Box::new(|v| v["daily_cap_minor"] = json!(-600)),
        ),
        (
            "rolling_7_day_cap",
            Box::new(|v| v["rolling_7_day_cap"] = json!({})),
        ),
        (
            "rolling_7_day_cap.amount_minor",
            Box::new(|v| v["rolling_7_day_cap"] = json!({"amount_minor": 0})),
        ),
        (
            "rolling_7_day_cap.paid_rides",
            Box::new(|v| v["rolling_7_day_cap"] = json!({"paid_rides": 0})),
        ),
        (
            "promotions[0]",
            Box::new(|v| v["promotions"][0]["dates"] = json!([])),
        ),
        (
            "promotions[0].dates[0]",
            Box::new(|v| v["promotions"][0]["dates"] = json!(["2026-13-01"])),
        ),
        (
            "promotions[0].dates[0]",
            Box::new(|v| v["promotions"][0]["dates"] = json!(["20260922"])),
        ),
        (
            "promotions[0].discount_percent",
            Box::new(|v| v["promotions"][0]["discount_percent"] = json!(101)),
        ),
        (
            "promotions[0].operators[0]",
            Box::new(|v| v["promotions"][0]["operators"] = json!([""])),
        ),
    ];
    for (want, edit) in cases {
        let err = load(edit).expect_err(want);
        assert_eq!(field_of(&err), want, "{err}");
        // Messages say what was expected.
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[test]
fn json_errors_name_the_problem() {
    // A misspelt rule must not silently drop the cap.
    let err = load(|v| {
        let cap = v
            .as_object_mut()
            .unwrap()
            .remove("daily_cap_minor")
            .unwrap();
        v["dialy_cap_minor"] = cap;
    })
    .unwrap_err();
    assert!(
        matches!(&err, TariffError::Json { message, .. } if message.contains("dialy_cap_minor")),
        "{err}"
    );
    let err = load(|v| v["transfer"]["windw_s"] = json!(60)).unwrap_err();
    assert!(err.to_string().contains("windw_s"), "{err}");
    let err = load(|v| {
        v.as_object_mut().unwrap().remove("currency");
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("missing field `currency`"),
        "{err}"
    );
    let err = load(|v| v["concessions"][0]["profile"] = json!("veteran")).unwrap_err();
    assert!(err.to_string().contains("veteran"), "{err}");
    let err = load(|v| v["promotions"][0]["weekdays"] = json!(["funday"])).unwrap_err();
    assert!(err.to_string().contains("funday"), "{err}");
    let err = Tariff::from_json("{\"version\": 1,").unwrap_err();
    assert!(matches!(err, TariffError::Json { line: 1, .. }), "{err}");
    assert!(Tariff::from_json("").is_err());
}

#[test]
fn unknown_time_zone() {
    for zone in [
        "Mars/Olympus_Mons",
        "Europe/Londres",
        "x".repeat(64).as_str(),
    ] {
        let err = load(|v| v["time_zone"] = json!(zone)).unwrap_err();
        assert!(
            matches!(&err, TariffError::UnknownTimeZone { name, .. } if name == zone),
            "{err}"
        );
    }
    // Zone names are case-insensitive in the IANA database.
    assert!(load(|v| v["time_zone"] = json!("america/new_york")).is_ok());
}

#[test]
fn size_and_encoding_limits() {
    let big = " ".repeat(MAX_TARIFF_JSON_BYTES + 1);
    assert!(matches!(
        Tariff::from_json(&big),
        Err(TariffError::TooLarge { .. })
    ));
    assert!(matches!(
        Tariff::from_json_bytes(big.as_bytes()),
        Err(TariffError::TooLarge { .. })
    ));
    let err = Tariff::from_json_bytes(b"{\"name\": \"\xff\"}").unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    let demo = Tariff::demo();
    assert_eq!(
        Tariff::from_json_bytes(demo.to_json().as_bytes()).unwrap(),
        demo
    );
}

#[test]
fn serde_round_trip_validates() {
    let demo = Tariff::demo();
    let text = serde_json::to_string(&demo).unwrap();
    let back: Tariff = serde_json::from_str(&text).unwrap();
    assert_eq!(back, demo);
    // Deserialising through serde runs the same validation.
    let bad = text.replace("\"Asia/Shanghai\"", "\"Nowhere/Land\"");
    assert!(serde_json::from_str::<Tariff>(&bad).is_err());
}

#[test]
fn rating_input_errors() {
    let t = tariff(common::base_spec());
    let day = "2026-03-10".parse().unwrap();
    let a = ride(&t, "a", "2026-03-10T08:00", "bus", "1", Adult);
    let early = ride(&t, "b", "2026-03-10T04:29", "bus", "1", Adult); // previous service day
    let err = rate_day(&t, day, &[a.clone(), early], &[]).unwrap_err();
    assert!(
        matches!(&err, RateError::RideOutsideServiceDay { ride_key, ride_day, .. } if ride_key == "b" && ride_day.to_string() == "2026-03-09"),
        "{err}"
    );
    let mut dup = ride(&t, "a", "2026-03-10T09:00", "bus", "2", Adult);
    let err = rate_day(&t, day, &[a.clone(), dup.clone()], &[]).unwrap_err();
    assert!(
        matches!(&err, RateError::DuplicateRideKey { ride_key } if ride_key == "a"),
        "{err}"
    );
    dup.ride_key = "c".into();
    dup.at_unix_s = u64::MAX;
    let err = rate_day(&t, day, &[dup], &[]).unwrap_err();
    assert!(
        matches!(
            &err,
            RateError::Time {
                source: TariffError::TimestampOutOfRange { .. },
                ..
            }
        ),
        "{err}"
    );
    let p = PriorDay {
        day: "2026-03-09".parse().unwrap(),
        charged_minor: 100,
        paid_rides: 1,
    };
    let err = rate_day(&t, day, std::slice::from_ref(&a), &[p, p]).unwrap_err();
    assert!(matches!(err, RateError::DuplicatePriorDay { .. }), "{err}");
    // Prior days outside the window (or the rated day itself) are ignored, even repeated.
    let old = PriorDay {
        day: "2026-03-01".parse().unwrap(),
        ..p
    };
    assert!(rate_day(&t, day, &[a], &[old, old]).is_ok());
    // No rides: an empty rating.
    let empty = rate_day(&t, day, &[], &[]).unwrap();
    assert_eq!(
        (empty.rides.len(), empty.charged_minor, empty.paid_rides),
        (0, 0, 0)
    );
}
