//! `strata-speed`: the speed layer. It consumes each source's Kafka topics, makes every event
//! visible in the views' in-memory states within milliseconds, and archives every raw event
//! to the lake exactly once.
//!
//! ```text
//!  Kafka ──► consumer thread ──micro-batches──► aggregator ──flush──► archiver ──► lake
//!            (decode, reject)   (bounded)        │ states per view,      (raw + rejected,
//!                                                │ per partition segment   offsets in txn)
//!                                                ▼
//!  refresher: batch coverage of each view ──► Store ◄── states(view, coverage): serving
//! ```
//!
//! Shutdown is ordered: the consumer stops, the aggregator archives what it holds, the
//! archiver commits it, and only then do the Flight endpoint and the process stop.

pub mod aggregate;
pub mod archive;
pub mod consumer;
pub mod engine;
#[cfg(test)]
mod fixtures;
pub mod flight;
mod live;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use strata_core::config::Config;
use strata_core::executor::CpuRuntime;
use strata_core::lake::Lake;
use strata_core::metrics::{Gauge, PartitionLabel, ViewLabel, metrics};
use strata_core::schema::SourceSchema;
use strata_core::speed::{
    LATENESS_BUCKETS, LatenessBucket, Offsets, SpeedPart, SpeedSource, SpeedStatus, TopicPartition,
};
use strata_core::{Error, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Aggregator, Demand};
use crate::archive::Archiver;
use crate::consumer::{Barrier, KafkaConsumer, Poller};
use crate::engine::ViewEngine;
use crate::store::Store;

/// A running speed layer.
pub struct SpeedLayer {
    name: String,
    store: Arc<Mutex<Store>>,
    /// Asks the aggregator for the states of what it has received, before a query reads them.
    demand: Demand,
    sources: Vec<Arc<SourceSchema>>,
    state_schemas: Vec<arrow::datatypes::SchemaRef>,
    consumer: Arc<KafkaConsumer>,
    /// Where queries with real-time recency wait for the consumer (see [`Barrier`]).
    barriers: std::sync::mpsc::Sender<Barrier>,
    /// The partitions the consumer takes records of: those such a query asks the ends of.
    owned: consumer::OwnedPartitions,
    /// The client that asks Kafka where the partitions end, made on the first such query.
    ends: Mutex<Option<Arc<BaseConsumer>>>,
    config: Arc<Config>,
    stop: CancellationToken,
    tasks: Mutex<Option<Tasks>>,
    failed: Arc<Mutex<Option<String>>>,
    /// The runtime the aggregator runs on, kept alive as long as the speed layer.
    _cpu: CpuRuntime,
}

struct Tasks {
    poller: std::thread::JoinHandle<Result<()>>,
    aggregator: JoinHandle<Result<()>>,
    archiver: JoinHandle<Result<()>>,
    refresher: JoinHandle<()>,
}

impl std::fmt::Debug for SpeedLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeedLayer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SpeedLayer {
    /// Starts consuming. `cpu` runs the state computations.
    pub async fn start(config: &Config, cpu: CpuRuntime) -> Result<Arc<SpeedLayer>> {
        let lake = Lake::new(&config.lake)?;
        let sources: Vec<Arc<SourceSchema>> = config.sources.iter().map(SourceSchema::new).collect();
        let (engines, view_source) = view_engines(config, &sources).await?;
        let views: Vec<String> = engines.iter().map(|e| e.plan.name.clone()).collect();
        let fingerprints: Vec<String> = engines.iter().map(|e| e.plan.fingerprint()).collect();
        let state_schemas = engines.iter().map(|e| e.state_schema.clone()).collect();
        let store = Arc::new(Mutex::new(Store::new(views, view_source.clone())));
        let (consumer, rebalances) = consumer::create(config)?;
        let stop = CancellationToken::new();
        let failed = Arc::new(Mutex::new(None));

        // One micro-batch waits while the aggregator works on another (see Poller::run).
        let (input_tx, input_rx) = mpsc::channel(1);
        let (archive_tx, archive_rx) = mpsc::channel(2);
        let archiver = Archiver::new(lake.clone(), sources.clone(), store.clone(), Some(consumer.clone()));
        let archiver = tokio::spawn(watch(
            archiver.run(archive_rx),
            "archiver",
            failed.clone(),
            stop.clone(),
        ));
        let aggregator = Aggregator::new(
            engines,
            view_source,
            sources.clone(),
            store.clone(),
            lake.clone(),
            (
                config.speed.flush_interval,
                config.speed.flush_rows,
                config.speed.aggregate_rows,
            ),
            archive_tx,
        );
        let demand = aggregator.demand(aggregate::DEMAND_WAIT);
        let aggregator = cpu.handle().spawn(watch(
            aggregator.run(input_rx),
            "aggregator",
            failed.clone(),
            stop.clone(),
        ));
        let poller = Poller::new(
            config,
            lake.clone(),
            (consumer.clone(), rebalances),
            tokio::runtime::Handle::current(),
            input_tx,
            stop.clone(),
        );
        let barriers = poller.barriers();
        let owned = poller.owned();
        let poller = spawn_poller(poller, failed.clone(), stop.clone())?;
        let refresher = tokio::spawn(refresh(
            lake,
            fingerprints,
            store.clone(),
            consumer.clone(),
            config.speed.coverage_refresh,
            config.speed.retention_grace,
            stop.clone(),
        ));
        Ok(Arc::new(SpeedLayer {
            name: format!("speed@{}", config.speed.address),
            store,
            demand: demand.clone(),
            sources,
            state_schemas,
            consumer,
            barriers,
            owned,
            ends: Mutex::new(None),
            config: Arc::new(config.clone()),
            stop,
            tasks: Mutex::new(Some(Tasks {
                poller,
                aggregator,
                archiver,
                refresher,
            })),
            failed,
            _cpu: cpu,
        }))
    }

    /// Why the speed layer stopped working, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().expect("lock").clone()
    }

    /// The state schema of a view.
    pub fn state_schema(&self, view: &str) -> Option<arrow::datatypes::SchemaRef> {
        let store = self.store.lock().expect("store lock");
        store.view_index(view).map(|v| self.state_schemas[v].clone())
    }

    /// Real-time recency: asks Kafka for the end of each partition this process owns (for a
    /// `read_committed` consumer, the last stable offset), waits until the consumer has taken
    /// every record before them, then until their states are in the store; all of it within
    /// `within`, past which the query reads what was consumed (its states published within
    /// [`aggregate::DEMAND_WAIT`] more, as without recency), and the miss is counted, as is a
    /// partition Kafka gave no end for. Partitions being assigned, not claimed yet, are not
    /// waited for: the lake answers for them.
    async fn catch_up(&self, within: Duration) {
        let started = Instant::now();
        let deadline = started + within;
        let mut owned = consumer::partition_list(&self.owned.lock().expect("owned lock"));
        let ends = self.ends_client();
        let asked = tokio::task::spawn_blocking(move || {
            let ends = ends.map_err(|e| e.to_string())?;
            if owned.count() == 0 {
                return Ok(owned);
            }
            owned.set_all_offsets(rdkafka::Offset::End).map_err(|e| e.to_string())?;
            ends.offsets_for_times(owned, within).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|asked| asked);
        let list = match asked {
            Ok(list) => list,
            Err(e) => {
                recency_missed(within, &format!("Kafka did not give the partitions' ends: {e}"));
                return self.demand.fresh().await;
            }
        };
        let mut ends = Vec::with_capacity(list.count());
        for e in list.elements() {
            match (e.error(), e.offset()) {
                (Ok(()), rdkafka::Offset::Offset(end)) => {
                    ends.push((TopicPartition::new(e.topic(), e.partition()), end))
                }
                (error, offset) => recency_missed(
                    within,
                    &format!(
                        "Kafka gave no end for {}/{}: {error:?}, {offset:?}",
                        e.topic(),
                        e.partition()
                    ),
                ),
            }
        }
        let asked_in = started.elapsed();
        let (passed, waiting) = tokio::sync::oneshot::channel();
        if self.barriers.send(Barrier { ends, passed }).is_err() {
            return self.demand.fresh().await;
        }
        let left = || deadline.saturating_duration_since(Instant::now());
        if !matches!(tokio::time::timeout(left(), waiting).await, Ok(Ok(()))) {
            recency_missed(within, "the consumer did not reach the partitions' ends in time");
            return self.demand.fresh().await;
        }
        let reached_in = started.elapsed();
        if !self.demand.sent_within(left()).await {
            recency_missed(within, "the states of what was consumed were not published in time");
        }
        tracing::debug!(
            ?asked_in,
            ?reached_in,
            published_in = ?started.elapsed(),
            "real-time recency: the partitions' ends asked, reached, and their states published"
        );
    }

    /// The client asking Kafka where the partitions end, made once.
    fn ends_client(&self) -> Result<Arc<BaseConsumer>> {
        let mut ends = self.ends.lock().expect("ends lock");
        if let Some(client) = &*ends {
            return Ok(client.clone());
        }
        let client = Arc::new(consumer::ends_client(&self.config)?);
        *ends = Some(client.clone());
        Ok(client)
    }

    /// Stops consuming, archives everything consumed, and waits until it is committed.
    pub async fn shutdown(&self) -> Result<()> {
        self.stop.cancel();
        let Some(tasks) = self.tasks.lock().expect("lock").take() else {
            return Ok(());
        };
        let poller = tokio::task::spawn_blocking(move || tasks.poller.join())
            .await
            .map_err(|e| Error::Internal(format!("join the consumer: {e}")))?
            .map_err(|_| Error::Internal("the Kafka consumer thread panicked".into()))?;
        let aggregator = tasks
            .aggregator
            .await
            .map_err(|e| Error::Internal(format!("aggregator: {e}")))?;
        let archiver = tasks
            .archiver
            .await
            .map_err(|e| Error::Internal(format!("archiver: {e}")))?;
        let _ = tasks.refresher.await;
        self.consumer.unsubscribe();
        poller?;
        aggregator?;
        archiver?;
        tracing::info!("speed layer stopped: everything consumed is archived");
        Ok(())
    }
}

/// The engine of every view, and the index of each view's source.
async fn view_engines(config: &Config, sources: &[Arc<SourceSchema>]) -> Result<(Vec<Arc<ViewEngine>>, Vec<usize>)> {
    let mut engines = Vec::new();
    let mut view_source = Vec::new();
    for plan in config.view_plans()? {
        let s = sources
            .iter()
            .position(|s| s.name == plan.source)
            .ok_or_else(|| Error::Internal(format!("view {} without its source", plan.name)))?;
        engines.push(Arc::new(
            ViewEngine::new(plan, &sources[s].name, sources[s].raw.clone()).await?,
        ));
        view_source.push(s);
    }
    Ok((engines, view_source))
}

/// Runs the polling loop on a thread of its own; its failure, a panic included, is recorded
/// and stops the speed layer, as [`watch`] does for the tasks.
fn spawn_poller(
    poller: Poller,
    failed: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    std::thread::Builder::new()
        .name("strata-kafka".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poller.run()))
                .unwrap_or_else(|panic| Err(Error::Internal(format!("panicked: {}", panic_message(&*panic)))));
            if let Err(e) = &result {
                fail("consumer", e, &failed, &stop);
            }
            result
        })
        .map_err(|e| Error::io("start the Kafka consumer thread", e))
}

/// A query with real-time recency that reads what was consumed: counted, and logged.
fn recency_missed(within: Duration, why: &str) {
    metrics().speed_recency_missed.inc();
    tracing::debug!(?within, why, "a query with real-time recency reads what was consumed");
}

/// Records a task's failure, a panic included, and stops the speed layer (the process exits
/// non-zero and a supervisor restarts it; nothing is lost: the lake holds the position).
async fn watch(
    task: impl Future<Output = Result<()>>,
    name: &str,
    failed: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
) -> Result<()> {
    use futures::FutureExt as _;
    let result = std::panic::AssertUnwindSafe(task)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(Error::Internal(format!("panicked: {}", panic_message(&*panic)))));
    if let Err(e) = &result {
        fail(name, e, &failed, &stop);
    }
    result
}

fn fail(name: &str, e: &Error, failed: &Mutex<Option<String>>, stop: &CancellationToken) {
    tracing::error!(error = %e, "speed layer {name} failed");
    failed
        .lock()
        .expect("lock")
        .get_or_insert_with(|| format!("{name}: {e}"));
    stop.cancel();
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Follows the batch layer's coverage of every view (of versions computed under the view's
/// current definition), and Kafka's high watermarks.
async fn refresh(
    lake: Lake,
    fingerprints: Vec<String>,
    store: Arc<Mutex<Store>>,
    consumer: Arc<KafkaConsumer>,
    every: Duration,
    grace: Duration,
    stop: CancellationToken,
) {
    let views: Vec<String> = store.lock().expect("store lock").views.clone();
    let mut tables: Vec<Option<deltalake::DeltaTable>> = views.iter().map(|_| None).collect();
    let mut gauges = StatusGauges::new(&views);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        for (v, name) in views.iter().enumerate() {
            let url = lake.view_url(name);
            let table = match tables[v].take() {
                Some(mut t) => match t.update_incremental(None).await {
                    Ok(()) => Some(t),
                    Err(e) => {
                        tracing::warn!(view = %name, error = %e, "cannot refresh the batch coverage");
                        None
                    }
                },
                None => lake.open(&url).await.ok().flatten(),
            };
            if let Some(t) = &table
                && let Ok(Some(latest)) = Lake::latest_view_version(t).await
                && latest.commit.fingerprint == fingerprints[v]
            {
                store
                    .lock()
                    .expect("store lock")
                    .observe_coverage(v, latest.commit.offsets, Instant::now(), grace);
            }
            tables[v] = table;
        }
        // High watermarks, for lag.
        let partitions: Vec<TopicPartition> = store.lock().expect("store lock").partitions.keys().cloned().collect();
        let c = consumer.clone();
        let marks = tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .filter_map(|tp| {
                    let (_, high) = c
                        .fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(2))
                        .ok()?;
                    Some((tp, high))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        // The lag is counted from the last micro-batch received, published or not (asking for
        // the states to be published would cut the open segments' states in two every
        // refresh, and their fold would merge them again).
        let mut store = store.lock().expect("store lock");
        for (tp, high) in marks {
            if let Some(ps) = store.partitions.get_mut(&tp) {
                ps.high_watermark = Some(high);
            }
        }
        gauges.export(&store);
    }
}

/// The speed layer's gauges: one lag series per partition held (dropped when it goes), and
/// the state of each view, as handles taken once.
struct StatusGauges {
    lag: HashMap<TopicPartition, Gauge>,
    views: Vec<[Gauge; 3]>,
}

impl StatusGauges {
    fn new(views: &[String]) -> Self {
        let m = metrics();
        let views = views
            .iter()
            .map(|v| {
                let label = ViewLabel { view: v.clone() };
                [&m.speed_generations, &m.speed_states, &m.speed_state_bytes].map(|f| f.get_or_create_owned(&label))
            })
            .collect();
        StatusGauges {
            lag: HashMap::new(),
            views,
        }
    }

    fn export(&mut self, store: &Store) {
        self.lag.retain(|tp, _| {
            let held = store.partitions.contains_key(tp);
            if !held {
                metrics().consumer_lag.remove(&PartitionLabel::from(tp));
            }
            held
        });
        for (tp, p) in &store.partitions {
            if let Some(lag) = p.lag() {
                self.lag
                    .entry(tp.clone())
                    .or_insert_with_key(|tp| metrics().consumer_lag.get_or_create_owned(&PartitionLabel::from(tp)))
                    .set(lag);
            }
        }
        for (status, [generations, states, bytes]) in store.view_status().iter().zip(&self.views) {
            generations.set(status.generations as i64);
            states.set(status.state_rows as i64);
            bytes.set(status.state_bytes as i64);
        }
    }
}

#[async_trait::async_trait]
impl SpeedSource for SpeedLayer {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn states(&self, view: &str, coverage: &Offsets, recency: Option<Duration>) -> Result<Vec<SpeedPart>> {
        if let Some(f) = self.failure() {
            return Err(Error::Speed {
                endpoint: self.name.clone(),
                message: format!("stopped: {f}"),
            });
        }
        match recency {
            Some(within) => self.catch_up(within).await,
            None => self.demand.fresh().await,
        }
        self.store.lock().expect("store lock").states(view, coverage)
    }

    async fn status(&self) -> Result<SpeedStatus> {
        self.demand.fresh().await;
        let store = self.store.lock().expect("store lock");
        let mut partitions = store.partition_status();
        for p in &mut partitions {
            if let Some(ps) = store.partitions.get(&p.partition) {
                p.source = self.sources[ps.source].name.clone();
            }
        }
        let mut lateness = Vec::new();
        for (v, counts) in store.lateness.iter().enumerate() {
            for (i, n) in counts.iter().enumerate() {
                lateness.push(LatenessBucket {
                    source: self.sources[store.view_source[v]].name.clone(),
                    view: store.views[v].clone(),
                    le: LATENESS_BUCKETS[i].1.to_string(),
                    events: *n,
                });
            }
        }
        Ok(SpeedStatus {
            instance: self.name.clone(),
            partitions,
            views: store.view_status(),
            lateness,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With real-time recency, a query counts every record Kafka acknowledged before it was
    /// sent: twenty times, records are produced and acknowledged and at once the states are
    /// asked for, with no wait in between. No query waits out its bound either (a barrier
    /// that never passes would still be answered, late, when the bound ends).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_with_real_time_recency_counts_every_record_acknowledged_before_it() {
        use arrow::array::{AsArray, RecordBatch};
        use arrow::datatypes::Int64Type;
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

        let (_cluster, dir, config) = fixtures::on_mock_cluster("recency", 2);
        let speed = SpeedLayer::start(&config, CpuRuntime::new(Some(1)).unwrap())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while speed.status().await.unwrap().partitions.len() < 2 {
            assert!(Instant::now() < deadline, "the partitions were not claimed within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("linger.ms", "0")
            .create()
            .unwrap();
        let missed = metrics().speed_recency_missed.get();
        let mut produced = 0i64;
        for round in 0..20i64 {
            for i in 0..=round % 5 {
                let record = format!(
                    r#"{{"ts":{},"user":"u{i}","page":"/p{}","ms":{i}}}"#,
                    1_795_219_200_000 + produced,
                    round % 3
                );
                let key = format!("k{produced}");
                producer
                    .send(BaseRecord::to("clicks").key(&key).payload(&record))
                    .unwrap();
                produced += 1;
            }
            producer.flush(Duration::from_secs(10)).unwrap();
            let parts = speed
                .states("per_page", &Offsets::new(), Some(Duration::from_secs(30)))
                .await
                .unwrap();
            let counted: i64 = parts
                .iter()
                .flat_map(|p| &p.batches)
                .map(|b: &RecordBatch| {
                    let n = b.column_by_name("n__count").expect("a count state");
                    n.as_primitive::<Int64Type>().iter().flatten().sum::<i64>()
                })
                .sum();
            assert_eq!(
                counted, produced,
                "round {round}: the records acknowledged before the query"
            );
        }
        assert_eq!(
            metrics().speed_recency_missed.get(),
            missed,
            "a query waited out its bound"
        );
        speed.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A task of the speed layer that panics is a failure like one that returns an error:
    /// recorded (for /health and the exit code) and the whole layer told to stop, never a
    /// task that silently went away.
    #[tokio::test]
    async fn a_panicking_task_is_a_reported_failure() {
        let failed = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let result = watch(
            async {
                let mut states: Vec<u64> = Vec::new();
                states.clear();
                if states.is_empty() {
                    panic!("index out of bounds: the len is 0");
                }
                Ok(())
            },
            "archiver",
            failed.clone(),
            stop.clone(),
        )
        .await;
        assert!(matches!(result, Err(Error::Internal(ref m)) if m.contains("panicked: index out of bounds")));
        assert!(stop.is_cancelled());
        let reason = failed.lock().unwrap().clone().unwrap();
        assert!(
            reason.starts_with("archiver: internal error") && reason.contains("index out of bounds"),
            "{reason}"
        );
        // The first failure is the one reported.
        let _ = watch(
            async { Err(Error::Input("later".into())) },
            "aggregator",
            failed.clone(),
            stop,
        )
        .await;
        assert_eq!(failed.lock().unwrap().clone().unwrap(), reason);
    }
}
