//! `strata import <source> <files…>`: backfill history into a source's raw table.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use strata_batch::import::ImportProgress;
use strata_core::schema::SourceSchema;

use super::load_config;

/// Load JSON-lines or Parquet files into a source's raw table (a backfill of history).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The source, as named in the config.
    source: String,
    /// JSON-lines (.json, .jsonl, any text) or Parquet files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Rows per commit to the lake.
    #[arg(long, env = "STRATA_IMPORT_CHUNK_ROWS", default_value_t = strata_batch::import::DEFAULT_CHUNK_ROWS)]
    chunk_rows: usize,
}

pub async fn run(config: &Path, args: Args) -> Result<()> {
    let config = load_config(config)?;
    let source = SourceSchema::new(config.source(&args.source)?);
    let lake = strata_core::lake::Lake::new(&config.lake)?;
    let started = Instant::now();
    let progress = Progress::new(started);
    let report =
        strata_batch::import::import(&lake, &source, &args.files, args.chunk_rows, &|p| progress.show(p)).await?;
    let mut summary = format!(
        "imported {} events into raw.{}, rejected {} records into rejected.{} ({} file{}, {:.1}s)",
        report.imported,
        source.name,
        report.rejected,
        source.name,
        report.files,
        if report.files == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );
    if report.already_imported > 0 {
        summary.push_str(&format!("; skipped {} lines imported before", report.already_imported));
    }
    if report.blank > 0 {
        summary.push_str(&format!("; skipped {} blank lines", report.blank));
    }
    println!("{summary}");
    Ok(())
}

/// A line a second per file (and its last), with its rate and the time it has left.
struct Progress {
    started: Instant,
    /// The file last shown, when it started, and when it was last shown.
    shown: Mutex<Option<(String, Instant, Instant)>>,
}

impl Progress {
    fn new(started: Instant) -> Self {
        Progress {
            started,
            shown: Mutex::new(None),
        }
    }

    fn show(&self, p: &ImportProgress) {
        let now = Instant::now();
        let mut shown = self.shown.lock().expect("progress lock");
        // A file starts when the one before ended (its last chunk is always shown).
        let (file_started, last) = match &*shown {
            Some((file, file_started, last)) if *file == p.file => (*file_started, Some(*last)),
            Some((_, _, last)) => (*last, None),
            None => (self.started, None),
        };
        let done = p.bytes_read >= p.file_bytes;
        if !done && last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            return;
        }
        *shown = Some((p.file.clone(), file_started, now));
        let pct = if p.file_bytes > 0 {
            100.0 * p.bytes_read as f64 / p.file_bytes as f64
        } else {
            100.0
        };
        let rate = p.bytes_read as f64 / now.duration_since(file_started).as_secs_f64().max(1e-3);
        let left = if done || rate <= 0.0 {
            String::new()
        } else {
            format!(", {:.0}s left", p.file_bytes.saturating_sub(p.bytes_read) as f64 / rate)
        };
        eprintln!(
            "{}: {pct:5.1}%  {} imported, {} rejected  ({:.1} MB/s{left})",
            p.file,
            p.imported,
            p.rejected,
            rate / 1e6
        );
    }
}
