//! `strata-batch`: the batch layer. It keeps the master dataset (each source's raw table)
//! compacted and recomputes every view's partial states from it with DataFusion.
//!
//! ```text
//!  strata batch run [--from T1 --to T2]          strata batch (on a schedule)
//!        │                                              │
//!        ▼                                              ▼
//!  take the lake's batch lease ─► per source: compact small raw files (one atomic commit)
//!                              └► per view: recompute states from one raw snapshot,
//!                                           publish atomically with what they cover
//! ```
//!
//! Also here: [`import`], the backfill of history from files into raw tables.

pub mod compact;
mod data_file;
pub mod engine;
pub mod import;
pub mod lease;
pub mod recompute;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use strata_core::clock::{Clock, Schedule};
use strata_core::config::Config;
use strata_core::executor::CpuRuntime;
use strata_core::lake::Lake;
use strata_core::metrics::{ResultLabel, metrics};
use strata_core::schema::SourceSchema;
use strata_core::view::ViewPlan;
use strata_core::{Error, Result};
use tokio_util::sync::CancellationToken;

pub use compact::{CompactionReport, CompactionSizes};
pub use recompute::{Range, ViewOutcome, ViewReport};

pub use strata_core::lake::writer_properties;

/// What a run does: every window (the default) or only a range; skip views already up to
/// date (the default) or recompute them anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunOptions {
    pub range: Option<Range>,
    pub force: bool,
}

/// What one batch run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    pub compactions: Vec<CompactionReport>,
    pub views: Vec<ViewReport>,
    pub elapsed: Duration,
}

impl RunReport {
    /// Whether the run changed anything in the lake.
    pub fn changed_anything(&self) -> bool {
        self.compactions.iter().any(|c| c.version.is_some())
            || self
                .views
                .iter()
                .any(|v| matches!(v.outcome, ViewOutcome::Published { .. }))
    }
}

/// The batch layer of one configuration.
#[derive(Debug, Clone)]
pub struct BatchLayer {
    config: Arc<Config>,
    lake: Lake,
    sources: Vec<Arc<SourceSchema>>,
    views: Vec<ViewPlan>,
    cpu: CpuRuntime,
    /// Where recomputes run (locally under batch.memory's pool, or on Ballista).
    engine: engine::Engine,
}

/// The share of the machine's memory a recompute may use, unless batch.memory says otherwise.
const RECOMPUTE_MEMORY_SHARE: f64 = 0.5;

impl BatchLayer {
    pub fn new(config: Arc<Config>, cpu: CpuRuntime) -> Result<Self> {
        let lake = Lake::new(&config.lake)?;
        let sources = config.sources.iter().map(SourceSchema::new).collect();
        let views = config.view_plans()?;
        let runtime = strata_core::session::runtime_with_memory(config.batch.memory, RECOMPUTE_MEMORY_SHARE)?;
        let engine = engine::Engine::new(&config, runtime)?;
        Ok(BatchLayer {
            config,
            lake,
            sources,
            views,
            cpu,
            engine,
        })
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    fn sizes(&self) -> CompactionSizes {
        CompactionSizes {
            small_file_bytes: self.config.batch.small_file_mb << 20,
            target_file_bytes: self.config.batch.target_file_mb << 20,
        }
    }

    /// One run: compact every source, then recompute every view (or only the windows
    /// overlapping `options.range`).
    pub async fn run_once(&self, options: RunOptions) -> Result<RunReport> {
        let started = std::time::Instant::now();
        let lease = lease::Lease::acquire(&self.lake).await?;
        let result = self.run_locked(options).await;
        let released = lease.release().await;
        let outcome = if result.is_ok() {
            ResultLabel::OK
        } else {
            ResultLabel::ERROR
        };
        metrics().batch_runs.get_or_create(&outcome).inc();
        metrics().batch_run_seconds.observe(started.elapsed().as_secs_f64());
        let mut report = result?;
        released?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn run_locked(&self, options: RunOptions) -> Result<RunReport> {
        let range = options.range;
        let mut report = RunReport::default();
        for source in &self.sources {
            let mut raw = self.lake.open(&self.lake.raw_url(&source.name)).await?;
            if let Some(table) = raw.as_mut()
                && range.is_none()
            {
                import::check_schema(table, &source.raw, &format!("raw table of source `{}`", source.name))?;
                let c = compact::compact(table, source, self.sizes(), &self.cpu).await?;
                if c.version.is_some() {
                    tracing::debug!(source = %source.name, files_in = c.files_in, files_out = c.files_out, rows = c.rows, "compacted");
                }
                report.compactions.push(c);
            }
            for plan in self.views.iter().filter(|v| v.source == source.name) {
                let v = recompute::recompute(&self.lake, raw.as_ref(), source, plan, options, &self.cpu, &self.engine)
                    .await?;
                tracing::debug!(view = %v.view, outcome = ?v.outcome, "view");
                report.views.push(v);
            }
        }
        Ok(report)
    }

    /// Runs on `schedule` until `stop` is cancelled; a failed run is logged and the next
    /// one happens at its scheduled time.
    pub async fn run_scheduled(
        &self,
        schedule: &Schedule,
        clock: Arc<dyn Clock>,
        stop: CancellationToken,
        on_run: &(dyn Fn(&Result<RunReport>) + Sync),
    ) -> Result<()> {
        loop {
            let now = clock.now();
            let Some(next) = schedule.next_after(now) else {
                return Err(Error::Input("the batch schedule has no future run".to_string()));
            };
            let wait = (next - now).to_std().unwrap_or_default();
            tracing::info!(next = %next.to_rfc3339(), "next batch run");
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
            let result = self.run_once(RunOptions::default()).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, at = %Utc::now().to_rfc3339(), "batch run failed");
            }
            on_run(&result);
        }
    }
}

/// The schedule configured in `[batch]`, if any.
pub fn schedule(config: &Config) -> Option<Schedule> {
    match (&config.batch.interval, &config.batch.cron) {
        (Some(d), _) => Some(Schedule::Every(*d)),
        (None, Some(expr)) => strata_core::clock::CronSchedule::parse(expr)
            .ok()
            .map(|c| Schedule::Cron(Box::new(c))),
        (None, None) => None,
    }
}
