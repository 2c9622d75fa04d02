//! `strata generate`: a realistic clickstream with known flaws, for tests, benchmarks and
//! trying Strata out.
//!
//! Events are page views with skewed keys (Zipf-like countries, pages and users), mostly in
//! event-time order with a share of late and out-of-order events, and a share of malformed
//! records of every kind Strata must reject. A manifest next to the output lists what was
//! generated, including the line of each malformed record and why it is malformed, so tests
//! know the truth without trusting Strata's decoder.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub const COUNTRIES: &[&str] = &[
    "US", "DE", "FR", "GB", "IN", "BR", "JP", "CA", "ES", "IT", "NL", "SE", "PL", "MX", "AU", "KR", "TR", "AR", "ZA",
    "NG", "EG", "ID", "VN", "TH", "PH", "CH", "AT", "BE", "DK", "NO",
];
pub const DEVICES: &[&str] = &["mobile", "desktop", "tablet"];

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub events: u64,
    pub start: DateTime<Utc>,
    /// Event-time span the events cover.
    pub span: std::time::Duration,
    pub malformed_ratio: f64,
    pub late_ratio: f64,
    pub seed: u64,
    /// Records larger than this are generated as "too large" malformed records (0: none).
    pub max_record_bytes: usize,
    pub users: u64,
    pub pages: u64,
}

/// The truth about a generated file.
#[derive(Debug, Default, Serialize)]
pub struct Manifest {
    pub lines: u64,
    pub valid: u64,
    pub late: u64,
    pub malformed: Vec<Malformed>,
}

#[derive(Debug, Serialize)]
pub struct Malformed {
    pub line: u64,
    pub kind: &'static str,
}

/// A generator of events, one at a time.
pub struct Generator {
    spec: Spec,
    rng: StdRng,
    produced: u64,
    step_us: f64,
    pub manifest: Manifest,
}

/// Index in `0..n` skewed towards small values (about Zipf with s = 1).
fn skewed(rng: &mut StdRng, n: u64) -> u64 {
    let u: f64 = rng.random();
    (((n as f64 + 1.0).powf(u) - 1.0) as u64).min(n - 1)
}

impl Generator {
    pub fn new(spec: Spec) -> Self {
        let step_us = spec.span.as_micros() as f64 / spec.events.max(1) as f64;
        Generator {
            rng: StdRng::seed_from_u64(spec.seed),
            spec,
            produced: 0,
            step_us,
            manifest: Manifest::default(),
        }
    }

    /// A live record with an event time around `now_us` (a share late by up to two
    /// hours), and whether it is malformed.
    pub fn live_record(&mut self, now_us: i64) -> (String, bool) {
        self.manifest.lines += 1;
        if self.rng.random_bool(self.spec.malformed_ratio) {
            let (record, _) = self.malformed_at(now_us);
            (record, true)
        } else {
            let (record, _) = self.event_at(now_us, true);
            (record, false)
        }
    }

    /// A valid event at position `i`, as JSON, and whether it is late.
    fn event(&mut self, i: u64) -> (String, bool) {
        let t = self.spec.start.timestamp_micros() + (i as f64 * self.step_us) as i64;
        self.event_at(t, true)
    }

    /// An event around `base_us`. With `odd`, a share of its fields are what real streams
    /// hold too: NULL group keys (country, device) and multi-byte strings.
    fn event_at(&mut self, base_us: i64, odd: bool) -> (String, bool) {
        let rng = &mut self.rng;
        let mut t = base_us + rng.random_range(0..1000);
        let late = rng.random_bool(self.spec.late_ratio);
        if late {
            // Between a minute and two hours behind the stream.
            t -= rng.random_range(60_000_000..7_200_000_000i64);
        }
        let ts = DateTime::from_timestamp_micros(t).expect("time in range");
        // Mostly UTC with milliseconds; a few with an offset, to exercise parsing.
        let ts = if rng.random_bool(0.02) {
            ts.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).expect("offset"))
                .to_rfc3339_opts(SecondsFormat::Micros, false)
        } else {
            ts.to_rfc3339_opts(SecondsFormat::Millis, true)
        };
        let quoted = |s: String| format!("\"{s}\"");
        let country = if odd && rng.random_bool(0.02) {
            "null".to_string()
        } else {
            quoted(COUNTRIES[skewed(rng, COUNTRIES.len() as u64) as usize].to_string())
        };
        let device = if odd && rng.random_bool(0.02) {
            "null".to_string()
        } else {
            quoted(DEVICES[skewed(rng, DEVICES.len() as u64) as usize].to_string())
        };
        let user = skewed(rng, self.spec.users);
        let user = if odd && rng.random_bool(0.05) {
            format!("ü{user}-用户")
        } else {
            format!("u{user}")
        };
        let page = skewed(rng, self.spec.pages);
        let url = if page.is_multiple_of(17) {
            format!("/checkout/{page}")
        } else if odd && rng.random_bool(0.03) {
            format!("/p/café-{page}/商品")
        } else {
            format!("/p/{page}")
        };
        let latency: i64 = (rng.random::<f64>().powi(3) * 2000.0) as i64 + 5;
        let amount = if rng.random_bool(0.1) {
            format!("{:.2}", rng.random_range(1.0..500.0))
        } else {
            "null".to_string()
        };
        (
            format!(
                r#"{{"ts":"{ts}","user_id":"{user}","country":{country},"url":"{url}","device":{device},"latency_ms":{latency},"amount":{amount}}}"#
            ),
            late,
        )
    }

    fn malformed(&mut self, i: u64) -> (String, &'static str) {
        let t = self.spec.start.timestamp_micros() + (i as f64 * self.step_us) as i64;
        self.malformed_at(t)
    }

    fn malformed_at(&mut self, base_us: i64) -> (String, &'static str) {
        // Plain fields: each kind of flaw below is made by editing them.
        let (good, _) = self.event_at(base_us, false);
        let kinds: &[&'static str] = if self.spec.max_record_bytes > 0 {
            &[
                "truncated",
                "wrong_type",
                "no_event_time",
                "bad_timestamp",
                "time_out_of_range",
                "not_an_object",
                "too_large",
            ]
        } else {
            &[
                "truncated",
                "wrong_type",
                "no_event_time",
                "bad_timestamp",
                "time_out_of_range",
                "not_an_object",
            ]
        };
        let kind = kinds[self.rng.random_range(0..kinds.len())];
        let line = match kind {
            "truncated" => good[..good.len() / 2].to_string(),
            "wrong_type" => {
                let start = good.find("\"latency_ms\":").expect("field");
                let end = start + good[start..].find(',').expect("comma");
                format!("{}\"latency_ms\":\"fast\"{}", &good[..start], &good[end..])
            }
            "no_event_time" => {
                let end = good.find(',').expect("comma");
                format!("{{{}", &good[end + 1..])
            }
            "bad_timestamp" => {
                let end = good.find(',').expect("comma");
                format!("{{\"ts\":\"yesterday at noon\"{}", &good[end..])
            }
            // A valid RFC 3339 time whose date the lake cannot store (before year 1).
            "time_out_of_range" => {
                let end = good.find(',').expect("comma");
                format!("{{\"ts\":\"0000-06-01T12:00:00Z\"{}", &good[end..])
            }
            "not_an_object" => "[\"not\", \"an\", \"object\"]".to_string(),
            "too_large" => {
                let pad = "x".repeat(self.spec.max_record_bytes + 1);
                good.replacen("\"device\":\"", &format!("\"device\":\"{pad}"), 1)
            }
            _ => unreachable!(),
        };
        (line, kind)
    }

    /// The next record (a JSON line without its newline).
    pub fn next_record(&mut self) -> Option<String> {
        if self.produced >= self.spec.events {
            return None;
        }
        let i = self.produced;
        self.produced += 1;
        self.manifest.lines += 1;
        let line = self.manifest.lines;
        if self.rng.random_bool(self.spec.malformed_ratio) {
            let (record, kind) = self.malformed(i);
            self.manifest.malformed.push(Malformed { line, kind });
            Some(record)
        } else {
            let (record, late) = self.event(i);
            self.manifest.valid += 1;
            self.manifest.late += u64::from(late);
            Some(record)
        }
    }
}

/// Writes `spec.events` lines to `out` and returns the manifest.
pub fn write_jsonl(spec: Spec, out: &mut dyn Write) -> std::io::Result<Manifest> {
    let mut g = Generator::new(spec);
    while let Some(record) = g.next_record() {
        out.write_all(record.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(g.manifest)
}
