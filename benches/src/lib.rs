//! Shared helpers for the benchmarks.

#![forbid(unsafe_code)]

use std::fmt::Display;
use std::str::FromStr;

/// The benchmark setting in environment variable `name`, or `default` when
/// it is unset.
///
/// A value that is set but does not parse (`SAMPLES=5k`, a typo) stops the
/// benchmark with the variable, the value and what was expected, instead of
/// silently measuring with the default.
pub fn env_setting<T>(name: &str, default: T) -> T
where
    T: FromStr,
    T::Err: Display,
{
    match parse_setting(name, std::env::var(name).ok().as_deref(), default) {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    }
}

fn parse_setting<T>(name: &str, raw: Option<&str>, default: T) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    match raw {
        None => Ok(default),
        Some(s) => s.trim().parse().map_err(|e| {
            format!(
                "benchmark setting {name}={s:?} is not a valid {}: {e}",
                std::any::type_name::<T>()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_setting;

    #[test]
    fn unset_gives_the_default_and_set_values_parse() {
        assert_eq!(parse_setting("X", None, 7usize), Ok(7));
        assert_eq!(parse_setting("X", Some("250000"), 7usize), Ok(250_000));
    }

    #[test]
    fn a_malformed_value_names_the_variable_and_the_value() {
        let err = parse_setting("QR_BENCH_SAMPLES", Some("5k"), 7usize).unwrap_err();
        assert!(err.contains("QR_BENCH_SAMPLES=\"5k\""), "{err}");
        assert!(err.contains("usize"), "{err}");
        assert!(parse_setting("X", Some("-1"), 7u32).is_err());
    }
}
