//! How long the serving layer takes to plan a point query of a view, phase by phase, as the
//! speed layer's state batches grow: `strata run` holds about one batch of states per Kafka
//! partition and second of events since the batch layer last covered them.
//!
//! plan_rate CONFIG [SEGMENTS...]
//!     a lake in a scratch directory with a day of CONFIG's first source imported (300
//!     countries, an event per country and minute, up to 20 minutes ago) and its views
//!     published by a batch run;
//!     an in-memory speed layer holding, for each of 4 partitions, SEGMENTS batches of the
//!     first view's states, each the states of 1,000 events of the last minutes (10, 100,
//!     400 and 1,000 by default); for each count, the point query `SELECT ... WHERE country = ...
//!     AND window_start >= now() - INTERVAL '1 hour'` planned and run 30 times after 3 of
//!     warm-up
//!     ->  per count: the median milliseconds of each phase (resolving the view and planning
//!         the statement, the logical optimizer, the physical plan before and after its
//!         optimizer, running it), then the physical optimizer's rules taking the longest

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;
use strata_core::config::Config;
use strata_core::executor::CpuRuntime;
use strata_core::schema::{SourceSchema, TIMESTAMP_TZ, complete_raw_batch};
use strata_core::session::{new_context, session_config};
use strata_core::speed::{
    OffsetRange, Offsets, PartRange, PartitionStatus, SpeedPart, SpeedSource, SpeedStatus, TopicPartition,
};
use strata_serving::Catalog;
use strata_serving::sql::read_only_options;

const PARTITIONS: i32 = 4;
const COUNTRIES: usize = 300;
const EVENTS_PER_SEGMENT: usize = 1_000;
const RUNS: usize = 30;
const WARM_UP: usize = 3;

/// A speed layer holding the same states for every query.
#[derive(Debug)]
struct Held {
    topic: String,
    view: String,
    /// Per partition, its state batches.
    parts: Vec<Vec<RecordBatch>>,
}

#[async_trait::async_trait]
impl SpeedSource for Held {
    fn name(&self) -> String {
        "held".into()
    }

    async fn states(
        &self,
        view: &str,
        coverage: &Offsets,
        _recency: Option<Duration>,
    ) -> strata_core::Result<Vec<SpeedPart>> {
        if view != self.view {
            return Ok(Vec::new());
        }
        Ok(self
            .parts
            .iter()
            .enumerate()
            .map(|(p, batches)| {
                let partition = TopicPartition::new(&self.topic, p as i32);
                let start = coverage.get(&partition).copied().unwrap_or(0);
                SpeedPart {
                    range: PartRange {
                        generation: 1,
                        offsets: OffsetRange {
                            partition,
                            start,
                            end: start + (batches.len() * EVENTS_PER_SEGMENT) as i64,
                        },
                    },
                    batches: batches.clone(),
                }
            })
            .collect())
    }

    async fn status(&self) -> strata_core::Result<SpeedStatus> {
        Ok(SpeedStatus {
            instance: self.name(),
            partitions: (0..PARTITIONS)
                .map(|p| PartitionStatus {
                    source: self.topic.clone(),
                    partition: TopicPartition::new(&self.topic, p),
                    generation: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }
}

/// Generated events of the example config's page_views source, in the source's column
/// order: their times (microseconds since the epoch) and countries' numbers, the rest
/// derived from the row.
fn columns(source: &SourceSchema, times: &[i64], countries: &[usize]) -> Vec<ArrayRef> {
    let n = times.len();
    source
        .columns
        .iter()
        .map(|(name, _)| -> ArrayRef {
            match name.as_str() {
                "ts" => Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone(TIMESTAMP_TZ)),
                "user_id" => Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("u{}", i % 5_000)))),
                "country" => Arc::new(StringArray::from_iter_values(countries.iter().map(|c| format!("c{c}")))),
                "url" => Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("/p/{}", i % 50)))),
                "device" => Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| ["mobile", "desktop", "tablet"][i % 3]),
                )),
                "latency_ms" => Arc::new(Int64Array::from_iter_values((0..n).map(|i| (i % 900) as i64 + 10))),
                "amount" => Arc::new(Float64Array::from_iter_values((0..n).map(|i| (i % 100) as f64 / 4.0))),
                other => panic!("plan_rate generates the example config's page_views source, not column {other}"),
            }
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(config_file) = args.get(1) else {
        eprintln!("usage: plan_rate CONFIG [SEGMENTS...]");
        std::process::exit(2);
    };
    let counts: Vec<usize> = if args.len() > 2 {
        args[2..]
            .iter()
            .map(|a| a.parse().expect("SEGMENTS: a number"))
            .collect()
    } else {
        vec![10, 100, 400, 1_000]
    };
    let text = std::fs::read_to_string(config_file).unwrap_or_else(|e| panic!("read {config_file}: {e}"));
    let dir = tempfile::tempdir().expect("a scratch directory");
    // Read as if from the scratch directory: a relative lake lands there.
    let config = Arc::new(
        Config::parse(&text, &dir.path().join("strata.toml"), &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}")),
    );
    let source = Arc::new(SourceSchema::new(&config.sources[0]));
    let plan = config.view_plans().expect("the views plan").remove(0);

    // A day of history, an event per country and minute, ending 20 minutes ago (before the
    // speed layer's states: a point query's last hour reads both).
    let now = chrono::Utc::now().timestamp_micros();
    let minute = 60_000_000i64;
    let start = now - (24 * 60 + 20) * minute;
    let mut lines = String::new();
    for m in 0..24 * 60 {
        for c in 0..COUNTRIES {
            let ts = chrono::DateTime::from_timestamp_micros(start + m * minute).expect("a time");
            lines.push_str(
                &serde_json::json!({"ts": ts.to_rfc3339(), "user_id": format!("u{}", (m as usize * 7 + c) % 5_000),
                    "country": format!("c{c}"), "url": "/p/1", "device": "mobile", "latency_ms": 100 + c,
                    "amount": 1.5})
                .to_string(),
            );
            lines.push('\n');
        }
    }
    let input = dir.path().join("history.jsonl");
    std::fs::write(&input, lines).expect("write the history");
    let lake = strata_core::lake::Lake::new(&config.lake).expect("the lake");
    let started = Instant::now();
    strata_batch::import::import(&lake, &source, &[input], 100_000, &|_| {})
        .await
        .expect("import");
    let cpu = CpuRuntime::new(None).expect("a CPU runtime");
    strata_batch::BatchLayer::new(config.clone(), cpu)
        .expect("the batch layer")
        .run_once(Default::default())
        .await
        .expect("a batch run");
    eprintln!(
        "history imported and published in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The states of each segment's events: the last minutes, every country.
    let ctx = new_context(session_config()).expect("a session");
    let max = counts.iter().copied().max().unwrap_or(0);
    let mut segments: Vec<Vec<RecordBatch>> = vec![Vec::new(); PARTITIONS as usize];
    for (p, held) in segments.iter_mut().enumerate() {
        for s in 0..max {
            let times: Vec<i64> = (0..EVENTS_PER_SEGMENT)
                .map(|i| now - (max - s) as i64 * 1_000_000 + i as i64)
                .collect();
            let countries: Vec<usize> = (0..EVENTS_PER_SEGMENT)
                .map(|i| (i * 7 + s * 13 + p) % COUNTRIES)
                .collect();
            let events = complete_raw_batch(&source, columns(&source, &times, &countries)).expect("raw events");
            let _ = ctx.deregister_table(&source.name);
            ctx.register_batch(&source.name, events).expect("register");
            let states = ctx
                .sql(&plan.state_sql(&source.name))
                .await
                .expect("the state SQL")
                .collect()
                .await
                .expect("states");
            held.push(arrow::compute::concat_batches(&states[0].schema(), &states).expect("one batch"));
        }
    }

    let sql = format!(
        "SELECT window_start, views, users, p95_latency_ms FROM {} WHERE country = 'c7' \
         AND window_start >= now() - INTERVAL '1 hour' ORDER BY window_start",
        plan.name
    );
    println!("segments batches resolve_ms optimize_ms initial_plan_ms physical_rules_ms run_ms rows");
    for &count in &counts {
        let held = Held {
            topic: source.topics[0].clone(),
            view: plan.name.clone(),
            parts: segments.iter().map(|b| b[..count].to_vec()).collect(),
        };
        let catalog = Catalog::new(&config, vec![Arc::new(held)]).await.expect("the catalog");
        let (mut resolve, mut optimize, mut initial, mut physical, mut run) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut by_rule: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        let mut rows = 0;
        for round in 0..WARM_UP + RUNS {
            let t0 = Instant::now();
            let df = catalog
                .session()
                .sql_with_options(&sql, read_only_options())
                .await
                .expect("plans");
            let t1 = Instant::now();
            let (state, logical) = df.into_parts();
            let optimized = state.optimize(&logical).expect("optimizes");
            let t2 = Instant::now();
            // The physical plan before its optimizer, then each of its rules timed apart.
            let bare = SessionStateBuilder::new_from_existing(state.clone())
                .with_physical_optimizer_rules(vec![])
                .build();
            let planner = DefaultPhysicalPlanner::default();
            let unoptimized = planner
                .create_physical_plan(&optimized, &bare)
                .await
                .expect("a physical plan");
            let t3 = Instant::now();
            let mut last = t3;
            let mut rules = Vec::new();
            let plan = planner
                .optimize_physical_plan(unoptimized, &state, |_, rule| {
                    let at = Instant::now();
                    rules.push((rule.name().to_string(), at - last));
                    last = at;
                })
                .expect("an optimized plan");
            let t4 = Instant::now();
            let batches = datafusion::physical_plan::collect(plan, SessionContext::new_with_state(state).task_ctx())
                .await
                .expect("runs");
            let t5 = Instant::now();
            rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
            if round >= WARM_UP {
                resolve.push(t1 - t0);
                optimize.push(t2 - t1);
                initial.push(t3 - t2);
                physical.push(t4 - t3);
                run.push(t5 - t4);
                for (rule, took) in rules {
                    by_rule.entry(rule).or_default().push(took);
                }
            }
        }
        println!(
            "{count} {} {:.3} {:.3} {:.3} {:.3} {:.3} {rows}",
            count * PARTITIONS as usize,
            median(resolve),
            median(optimize),
            median(initial),
            median(physical),
            median(run)
        );
        let mut rules: Vec<(f64, String)> = by_rule.into_iter().map(|(r, t)| (median(t), r)).collect();
        rules.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top: Vec<String> = rules.iter().take(5).map(|(t, r)| format!("{r} {t:.3}")).collect();
        println!("  rules: {}", top.join(", "));
    }
}
