//! Durations as people write them, parsed in one place for the whole project: view windows
//! (`INTERVAL '1 minute'`), config keys (`interval = "5m"`) and command-line flags
//! (`--span 2h`, `--duration 30s`).
//!
//! A duration is one or more `<number> <unit>` terms: `500ms`, `90 seconds`, `1h 30m`,
//! `1.5 hours`. Units run from microseconds to weeks; months and years are refused, since
//! their length varies.

use std::time::Duration;

/// Parses a duration into microseconds.
pub fn parse_micros(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{text}` is not a fixed interval of time: expected e.g. '30s', '5 minutes', '1h 30m' \
             (microseconds to weeks; months and years vary in length)"
        )
    };
    let mut total: f64 = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest.find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        if unit == "M" {
            // Months to some, minutes to others: neither is guessed.
            return Err(format!("`{text}`: `M` is ambiguous: write `m` or `min` for minutes"));
        }
        let unit = unit.to_lowercase();
        rest = rest[unit_end..].trim_start().trim_start_matches(',').trim_start();
        let micros_per: f64 = match unit.as_str() {
            "us" | "µs" | "usec" | "microsecond" | "microseconds" => 1.0,
            "ms" | "msec" | "millisecond" | "milliseconds" => 1e3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
            "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86_400e6,
            "w" | "week" | "weeks" => 604_800e6,
            _ => return Err(bad()),
        };
        total += number * micros_per;
    }
    if total >= i64::MAX as f64 {
        return Err(format!("`{text}` is too long"));
    }
    Ok(total.round() as i64)
}

/// Parses a duration (zero allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_micros(text).map(|us| Duration::from_micros(us as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_people_write_them() {
        assert_eq!(parse_micros("1 minute"), Ok(60_000_000));
        assert_eq!(parse_micros("1 hour 30 minutes"), Ok(5_400_000_000));
        assert_eq!(parse_micros("1h30m"), Ok(5_400_000_000));
        assert_eq!(parse_micros("500ms"), Ok(500_000));
        assert_eq!(parse_micros("1.5 seconds"), Ok(1_500_000));
        assert_eq!(parse_micros(" 5m "), Ok(300_000_000));
        assert_eq!(parse_micros("2 weeks"), Ok(1_209_600_000_000));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        for bad in ["1 month", "1 year", "", "5", "-5s", "five minutes", "5 parsecs"] {
            let err = parse_micros(bad).unwrap_err();
            assert!(err.contains("is not a fixed interval of time"), "{bad}: {err}");
        }
        assert!(parse_micros("99999999999 weeks").unwrap_err().contains("too long"));
        assert_eq!(parse_micros("1 MINUTE"), Ok(60_000_000));
        assert!(parse_micros("1M").unwrap_err().contains("ambiguous"));
    }
}
