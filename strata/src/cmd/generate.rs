//! `strata generate`: a clickstream (JSON lines) with known flaws, and its manifest.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::parse_time;
use crate::generate::{Spec, write_jsonl};

/// Generate a clickstream (JSON lines) with late and malformed events.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many records.
    #[arg(long, env = "STRATA_GEN_EVENTS", default_value_t = 100_000)]
    events: u64,
    /// The output file ("-" for standard output); a manifest is written next to it.
    #[arg(short, long, env = "STRATA_GEN_OUT", default_value = "-")]
    out: PathBuf,
    /// Event time of the first event (RFC 3339 or a date).
    #[arg(long, env = "STRATA_GEN_START", default_value = "2026-11-20T00:00:00Z")]
    start: String,
    /// Event-time span of the events, e.g. "2d", "6h".
    #[arg(long, env = "STRATA_GEN_SPAN", default_value = "2d")]
    span: String,
    /// Share of malformed records.
    #[arg(long, env = "STRATA_GEN_MALFORMED", default_value_t = 0.01)]
    malformed: f64,
    /// Share of late (out-of-order) events.
    #[arg(long, env = "STRATA_GEN_LATE", default_value_t = 0.05)]
    late: f64,
    #[arg(long, env = "STRATA_GEN_SEED", default_value_t = 42)]
    seed: u64,
    /// Generate "too large" records bigger than this (0: none).
    #[arg(long, env = "STRATA_GEN_MAX_RECORD_BYTES", default_value_t = 0)]
    max_record_bytes: usize,
}

pub fn run(args: Args) -> Result<()> {
    let spec = Spec {
        events: args.events,
        start: parse_time(&args.start)?,
        span: strata_core::duration::parse_duration(&args.span).map_err(|e| anyhow::anyhow!("--span: {e}"))?,
        malformed_ratio: args.malformed,
        late_ratio: args.late,
        seed: args.seed,
        max_record_bytes: args.max_record_bytes,
        users: 100_000,
        pages: 500,
    };
    let out = args.out;
    if out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut lock = std::io::BufWriter::new(stdout.lock());
        let manifest = write_jsonl(spec, &mut lock)?;
        eprintln!(
            "generated {} lines: {} valid ({} late), {} malformed",
            manifest.lines,
            manifest.valid,
            manifest.late,
            manifest.malformed.len()
        );
    } else {
        let file = std::fs::File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let manifest = write_jsonl(spec, &mut w)?;
        let manifest_path = PathBuf::from(format!("{}.manifest.json", out.display()));
        std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
        eprintln!(
            "generated {}: {} lines, {} valid ({} late), {} malformed (listed in {})",
            out.display(),
            manifest.lines,
            manifest.valid,
            manifest.late,
            manifest.malformed.len(),
            manifest_path.display()
        );
    }
    Ok(())
}
