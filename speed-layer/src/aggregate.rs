//! The aggregator: turns micro-batches into view states in the open segment of each
//! partition, cuts segments when the archive flushes, and rebuilds states from the lake for
//! partitions it starts owning (recovery).
//!
//! ```text
//!  consumer ──Input──► aggregator ──ArchiveJob──► archiver ──► lake (raw, rejected)
//!                          │ states per view, per partition segment
//!                          ▼                ▲ Demand: publish what has been received
//!                        Store ◄── queries ─┘ (states beyond a batch coverage)
//! ```
//!
//! Micro-batches are published together, not one by one: a micro-batch's events are added
//! to each view's open states (the `live` module) once `speed.aggregate_rows` events
//! wait, and the open states go to the store when a query asks for them ([`Demand`]) or the
//! segment is cut. Under a steady load a micro-batch holds a few hundred events, and
//! aggregating each alone made one state row (with its sketches) per group for every few
//! events; publishing at every `aggregate_rows` still emitted each group's sketches about
//! twenty times a second, and a segment's fold merged them again. The states of what waits
//! are not in the store yet, and the store's position says so (a partition's consumed
//! offset is the end of its states), so a query that does not wait for them still counts
//! every event it reports exactly once.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, TimestampMicrosecondType};
use datafusion::prelude::{Expr, ident, lit, when};
use strata_core::lake::{Lake, kafka_app_id, txn_history};
use strata_core::metrics::{Histogram, metrics};
use strata_core::schema::{OFFSET, PARTITION, SourceSchema, TOPIC, rejected};
use strata_core::speed::{LATENESS_BUCKETS, OffsetRange, Offsets, TopicPartition};
use strata_core::view::WindowSpec;
use strata_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::archive::{ArchiveJob, ArchiveMessage, ArchiveRange, drop_partitions};
use crate::consumer::{Assigned, Input, MicroBatch};
use crate::engine::{SEGMENT_COLUMN, ViewEngine};
use crate::store::{PartitionStates, Store};

/// Fold a segment's state batches into one when it holds more than this many.
const FOLD_AT: usize = 32;

/// How long a revocation waits for the archive of what the partitions consumed; past it
/// they are let go anyway (their new owner resumes from the lake, and the fence keeps a late
/// commit of ours out).
const REVOKE_ARCHIVE_WAIT: Duration = Duration::from_secs(30);

/// How long a query waits for the aggregator to publish what it has received; past it (the
/// aggregator is recovering partitions, or waiting for the archive), the query reads the
/// states already in the store.
pub const DEMAND_WAIT: Duration = Duration::from_millis(100);

/// Lets a query ask the aggregator for the states of every micro-batch it has received.
#[derive(Debug, Clone)]
pub struct Demand {
    asks: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// Micro-batches received and not published yet.
    waiting: Arc<AtomicUsize>,
    /// How long a query waits at most.
    wait: Duration,
}

impl Demand {
    /// Returns once the states of every micro-batch the aggregator had received are in the
    /// store, or after its wait ([`DEMAND_WAIT`] for queries); at once when none waits.
    pub async fn fresh(&self) {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        self.sent_within(self.wait).await;
    }

    /// Returns once the states of every micro-batch the consumer had sent are in the store
    /// (those still in the channel too), true; false after `wait`.
    pub async fn sent_within(&self, wait: Duration) -> bool {
        let (ask, answered) = oneshot::channel();
        self.asks.send(ask).is_ok() && matches!(tokio::time::timeout(wait, answered).await, Ok(Ok(())))
    }
}

/// Micro-batches of one source received and not published yet.
#[derive(Debug, Default)]
struct Waiting {
    events: Vec<RecordBatch>,
    /// How many of `events` were added to the views' open states, and the rows of the rest.
    events_added: usize,
    unadded_rows: usize,
    rejects: Vec<RecordBatch>,
    /// Per partition, from the first offset they consumed to the next one.
    positions: BTreeMap<TopicPartition, (i64, i64)>,
    /// When each batch's first record was consumed.
    consumed_at: Vec<Instant>,
    /// How many of them were added to the open states (and observed as such).
    added: usize,
}

pub struct Aggregator {
    pub engines: Vec<Arc<ViewEngine>>,
    pub view_source: Vec<usize>,
    pub sources: Vec<Arc<SourceSchema>>,
    pub store: Arc<Mutex<Store>>,
    pub lake: Lake,
    pub flush_interval: Duration,
    pub flush_rows: usize,
    /// Add the waiting micro-batches to the views' open states once they hold this many
    /// events.
    pub aggregate_rows: usize,
    pub archive: mpsc::Sender<ArchiveMessage>,
    /// Buffered since the last flush, per source.
    pub events: Vec<Vec<RecordBatch>>,
    pub rejects: Vec<Vec<RecordBatch>>,
    pub buffered_rows: usize,
    /// Per source: micro-batches not published yet.
    waiting: Vec<Waiting>,
    /// How many micro-batches wait, over all sources (read by [`Demand`]).
    waiting_batches: Arc<AtomicUsize>,
    asks: mpsc::UnboundedSender<oneshot::Sender<()>>,
    asked: Option<mpsc::UnboundedReceiver<oneshot::Sender<()>>>,
    /// Time from a micro-batch's first record until its events are in the views' states.
    pub visible: Histogram,
    /// Time to add the waiting micro-batches to the views' open states (and publish them).
    pub compute: Histogram,
    /// Fold jobs for the folder (while running), and those not done yet.
    folds: Option<mpsc::UnboundedSender<FoldJob>>,
    fold_pending: Arc<Mutex<HashSet<FoldJob>>>,
}

impl Aggregator {
    pub fn new(
        engines: Vec<Arc<ViewEngine>>,
        view_source: Vec<usize>,
        sources: Vec<Arc<SourceSchema>>,
        store: Arc<Mutex<Store>>,
        lake: Lake,
        (flush_interval, flush_rows, aggregate_rows): (Duration, usize, usize),
        archive: mpsc::Sender<ArchiveMessage>,
    ) -> Self {
        let n = sources.len();
        let (asks, asked) = mpsc::unbounded_channel();
        Aggregator {
            engines,
            view_source,
            sources,
            store,
            lake,
            flush_interval,
            flush_rows,
            aggregate_rows,
            archive,
            events: vec![Vec::new(); n],
            rejects: vec![Vec::new(); n],
            buffered_rows: 0,
            waiting: (0..n).map(|_| Waiting::default()).collect(),
            waiting_batches: Arc::default(),
            asks,
            asked: Some(asked),
            folds: None,
            fold_pending: Arc::default(),
            visible: metrics().speed_visible.clone(),
            compute: metrics().speed_batch.clone(),
        }
    }

    /// The handle queries ask for fresh states through, waiting at most `wait`.
    pub fn demand(&self, wait: Duration) -> Demand {
        Demand {
            asks: self.asks.clone(),
            waiting: self.waiting_batches.clone(),
            wait,
        }
    }

    /// Runs until the consumer's channel closes, then archives what is left.
    pub async fn run(mut self, mut input: mpsc::Receiver<Input>) -> Result<()> {
        let (folds, jobs) = mpsc::unbounded_channel();
        let folder = Folder {
            engines: self.engines.clone(),
            store: self.store.clone(),
            pending: self.fold_pending.clone(),
        };
        let mut folder = tokio::spawn(folder.run(jobs));
        self.folds = Some(folds);
        let mut asked = self.asked.take().expect("an aggregator runs once");
        let mut last_flush = Instant::now();
        loop {
            let wait = self.flush_interval.saturating_sub(last_flush.elapsed());
            tokio::select! {
                next = input.recv() => if !self.input(next, &mut last_flush).await? {
                    self.folds = None;
                    return join_folder(folder).await;
                },
                Some(ask) = asked.recv() => {
                    // What the consumer had sent when the query asked is received first (no
                    // more: a consumer catching up refills the channel at once).
                    for _ in 0..input.len() {
                        let Ok(next) = input.try_recv() else { break };
                        self.input(Some(next), &mut last_flush).await?;
                    }
                    self.aggregate_all().await?;
                    let _ = ask.send(());
                    while let Ok(ask) = asked.try_recv() {
                        let _ = ask.send(());
                    }
                }
                // The folder only ends early on an error.
                ended = &mut folder => return ended.map_err(|e| Error::Internal(format!("folder: {e}")))?,
                () = tokio::time::sleep(wait) => {}
            }
            if last_flush.elapsed() >= self.flush_interval || self.buffered_rows >= self.flush_rows {
                self.flush().await?;
                last_flush = Instant::now();
            }
        }
    }

    /// Handles one message of the consumer; false once its channel has closed (everything
    /// received is then archived).
    async fn input(&mut self, next: Option<Input>, last_flush: &mut Instant) -> Result<bool> {
        match next {
            Some(Input::Batch(batch)) => self.batch(batch).await?,
            Some(Input::Assigned(list)) => {
                // Recovery replaces the states of the partitions it rebuilds: what waits
                // goes into the store before.
                self.aggregate_all().await?;
                self.assigned(list).await?;
            }
            Some(Input::Revoked { partitions: keys, done }) => {
                // What the partitions consumed is archived before they go: their new
                // owner starts where this process stopped, and nothing is consumed twice.
                self.flush().await?;
                *last_flush = Instant::now();
                self.archived().await;
                self.revoked(&keys);
                let _ = done.send(());
            }
            None => {
                self.flush().await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Asks the folder to fold a segment's states of view `v` (once while pending).
    fn fold_later(&self, key: &TopicPartition, start: i64, v: usize) {
        let Some(folds) = &self.folds else { return };
        let job = FoldJob {
            key: key.clone(),
            start,
            view: v,
        };
        if self.fold_pending.lock().expect("fold lock").insert(job.clone()) {
            let _ = folds.send(job);
        }
    }

    /// Waits until the archiver has committed every job sent so far (at most
    /// [`REVOKE_ARCHIVE_WAIT`]).
    async fn archived(&self) {
        let (done, committed) = oneshot::channel();
        if self.archive.send(ArchiveMessage::Barrier(done)).await.is_err() {
            return;
        }
        if tokio::time::timeout(REVOKE_ARCHIVE_WAIT, committed).await.is_err() {
            tracing::warn!(wait = ?REVOKE_ARCHIVE_WAIT, "the archive did not commit in time: letting the revoked partitions go (their new owner resumes from the lake)");
        }
    }

    /// Buffers a micro-batch for the archive; its states wait (see the module's documentation).
    async fn batch(&mut self, batch: MicroBatch) -> Result<()> {
        let source = batch.source;
        let waiting = &mut self.waiting[source];
        for r in &batch.positions {
            waiting
                .positions
                .entry(r.partition.clone())
                .and_modify(|(_, end)| *end = r.end)
                .or_insert((r.start, r.end));
        }
        waiting.consumed_at.push(batch.consumed_at);
        {
            let mut store = self.store.lock().expect("store lock");
            for r in &batch.positions {
                if let Some(p) = store.partitions.get_mut(&r.partition) {
                    p.received = p.received.max(r.end);
                }
            }
        }
        if let Some(e) = &batch.events {
            waiting.unadded_rows += e.num_rows();
            waiting.events.push(e.clone());
        }
        if let Some(r) = &batch.rejects {
            waiting.rejects.push(r.clone());
        }
        let add = waiting.unadded_rows >= self.aggregate_rows;
        self.waiting_batches.fetch_add(1, Ordering::Release);
        let rows = batch.events.as_ref().map_or(0, RecordBatch::num_rows)
            + batch.rejects.as_ref().map_or(0, RecordBatch::num_rows);
        self.buffered_rows += rows;
        if let Some(e) = batch.events {
            self.events[source].push(e);
        }
        if let Some(r) = batch.rejects {
            self.rejects[source].push(r);
        }
        if add {
            // Added to the views' open states, not published (see `aggregate`).
            self.run_views(source, false).await?;
        }
        Ok(())
    }

    /// Turns the waiting micro-batches of every source into states in the store.
    async fn aggregate_all(&mut self) -> Result<()> {
        for s in 0..self.sources.len() {
            self.aggregate(s).await?;
        }
        Ok(())
    }

    /// Runs every view of `source` on a worker of the CPU runtime at once: adds the events
    /// not added yet to its open states, then, with `publish`, emits them. Returns the
    /// emitted states per view and partition.
    async fn run_views(&mut self, source: usize, publish: bool) -> Result<Vec<ViewStates>> {
        let waiting = &mut self.waiting[source];
        let events = waiting.events[waiting.events_added..].to_vec();
        waiting.events_added = waiting.events.len();
        let rows = std::mem::take(&mut waiting.unadded_rows);
        let consumed_at = waiting.consumed_at[waiting.added..].to_vec();
        waiting.added = waiting.consumed_at.len();
        let started = Instant::now();
        let mut states = Vec::new();
        if rows > 0 || publish {
            let mut views = tokio::task::JoinSet::new();
            for (v, engine) in self.source_engines(source) {
                let (engine, events) = (engine.clone(), events.clone());
                views.spawn(async move {
                    if rows > 0 {
                        engine.add(events).await?;
                    }
                    Ok::<_, Error>((
                        v,
                        if publish {
                            engine.publish().await?
                        } else {
                            BTreeMap::new()
                        },
                    ))
                });
            }
            while let Some(done) = views.join_next().await {
                states.push(done.map_err(|e| Error::Internal(format!("the states of a view: {e}")))??);
            }
            states.sort_by_key(|(v, _)| *v);
            self.compute.observe(started.elapsed().as_secs_f64());
        }
        for consumed_at in &consumed_at {
            self.visible.observe(consumed_at.elapsed().as_secs_f64());
        }
        Ok(states)
    }

    /// The engines of the views of `source`, with their indices.
    fn source_engines(&self, source: usize) -> impl Iterator<Item = (usize, &Arc<ViewEngine>)> {
        self.engines
            .iter()
            .enumerate()
            .filter(move |(v, _)| self.view_source[*v] == source)
    }

    /// Publishes the waiting micro-batches of `source`: their states (added to the views'
    /// open states first, if they are not yet) go to the open segments of their partitions,
    /// which then end where the batches do, and their events are counted (with the states,
    /// so that a partition's counts and its position agree).
    async fn aggregate(&mut self, source: usize) -> Result<()> {
        if self.waiting[source].consumed_at.is_empty() {
            return Ok(());
        }
        let states = self.run_views(source, true).await?;
        let waiting = std::mem::take(&mut self.waiting[source]);
        let positions: Vec<OffsetRange> = waiting
            .positions
            .into_iter()
            .map(|(partition, (start, end))| OffsetRange { partition, start, end })
            .collect();
        let event_time = self.sources[source].event_time;
        let windows: Vec<(usize, WindowSpec)> = self
            .source_engines(source)
            .map(|(v, e)| (v, e.plan.window.clone()))
            .collect();
        let to_fold = {
            let mut store = self.store.lock().expect("store lock");
            let to_fold = add_states(&mut store, source, &positions, &states);
            for events in &waiting.events {
                count_events(&mut store, per_partition_times(events, event_time), &windows);
            }
            for rejects in &waiting.rejects {
                count_rejects(&mut store, rejects);
            }
            to_fold
        };
        self.waiting_batches
            .fetch_sub(waiting.consumed_at.len(), Ordering::Release);
        for (key, start, v) in to_fold {
            self.fold_later(&key, start, v);
        }
        Ok(())
    }

    /// Closes every open segment and hands what they hold to the archiver.
    pub async fn flush(&mut self) -> Result<()> {
        self.aggregate_all().await?;
        let mut jobs = Vec::new();
        let mut closed = Vec::new();
        {
            let mut store = self.store.lock().expect("store lock");
            for s in 0..self.sources.len() {
                let mut ranges = Vec::new();
                for (key, p) in store.partitions.iter_mut().filter(|(_, p)| p.source == s) {
                    if let Some(segment) = p.segments.back_mut().filter(|seg| seg.open) {
                        segment.open = false;
                        ranges.push(ArchiveRange {
                            generation: p.generation,
                            offsets: OffsetRange {
                                partition: p.partition.clone(),
                                start: segment.start,
                                end: segment.end,
                            },
                        });
                        closed.push((key.clone(), segment.start));
                    }
                }
                if ranges.is_empty() {
                    continue;
                }
                jobs.push(ArchiveJob {
                    source: s,
                    events: std::mem::take(&mut self.events[s]),
                    rejects: std::mem::take(&mut self.rejects[s]),
                    ranges,
                });
            }
        }
        self.buffered_rows = 0;
        for job in jobs {
            if self.archive.send(ArchiveMessage::Job(job)).await.is_err() {
                return Err(Error::Internal("the archiver stopped".into()));
            }
        }
        // Closed segments hold one row per (window, group): fold them, beside the next
        // micro-batches rather than before them.
        for (key, start) in closed {
            for v in 0..self.engines.len() {
                self.fold_later(&key, start, v);
            }
        }
        Ok(())
    }

    fn revoked(&mut self, keys: &[TopicPartition]) {
        let mut store = self.store.lock().expect("store lock");
        for key in keys {
            store.partitions.remove(key);
        }
        // Their unarchived events go too: the new owner resumes from the lake.
        for batches in &mut self.events {
            for b in batches.iter_mut() {
                *b = drop_partitions(b, keys, TOPIC, PARTITION);
            }
        }
        for batches in &mut self.rejects {
            for b in batches.iter_mut() {
                *b = drop_partitions(b, keys, rejected::TOPIC, rejected::PARTITION);
            }
        }
    }

    /// Rebuilds the states of newly owned partitions from the lake: the events archived
    /// beyond each view's batch coverage, in segments at the archive commits' boundaries.
    async fn assigned(&mut self, list: Vec<Assigned>) -> Result<()> {
        let views = self.engines.len();
        for s in 0..self.sources.len() {
            let mine: Vec<&Assigned> = list.iter().filter(|a| a.source == s).collect();
            if mine.is_empty() {
                continue;
            }
            let raw = self.lake.open(&self.lake.raw_url(&self.sources[s].name)).await?;
            // Each view's batch coverage, and the raw version it was computed from. A version
            // computed under another definition of the view does not count: the states start
            // at the archived position, and the serving layer reads what lies below from the
            // lake until a recompute under the current definition is published.
            let mut coverage: Vec<Option<(Offsets, u64)>> = vec![None; views];
            let mut published: Vec<Option<Offsets>> = vec![None; views];
            for v in (0..views).filter(|v| self.view_source[*v] == s) {
                let plan = &self.engines[v].plan;
                let url = self.lake.view_url(&plan.name);
                if let Some(table) = self.lake.open(&url).await?
                    && let Some(latest) = Lake::latest_view_version(&table).await?
                {
                    if latest.commit.fingerprint == plan.fingerprint() {
                        coverage[v] = Some((latest.commit.offsets.clone(), latest.commit.raw_version));
                        published[v] = Some(latest.commit.offsets);
                    } else {
                        tracing::info!(view = %plan.name, "the published batch version was computed under another definition: it is not used until the next batch run recomputes the view");
                        let starts = mine.iter().map(|a| (a.partition.clone(), a.start)).collect();
                        coverage[v] = Some((starts, raw.as_ref().and_then(|r| r.version()).unwrap_or(0)));
                    }
                }
            }
            // Built aside, published at once: a query never sees a partition without its states.
            let mut fresh: BTreeMap<TopicPartition, PartitionStates> = BTreeMap::new();
            for a in &mine {
                let mut p = new_partition(s, &a.partition, a.start, views);
                p.generation = a.generation;
                for (floor, covered) in p.floor.iter_mut().zip(&coverage) {
                    *floor = covered
                        .as_ref()
                        .and_then(|(o, _)| o.get(&a.partition).copied())
                        .unwrap_or(0);
                }
                fresh.insert(a.partition.clone(), p);
            }
            if let Some(raw) = raw {
                let latest = raw.version().unwrap_or(0);
                let since = coverage.iter().flatten().map(|(_, r)| *r).min();
                let uncovered_view = (0..views).any(|v| self.view_source[v] == s && coverage[v].is_none());
                let history = txn_history(&raw, if uncovered_view { None } else { since }, latest).await?;
                self.recover(s, &raw, &mine, &coverage, history, &mut fresh).await?;
            }
            let mut store = self.store.lock().expect("store lock");
            store.partitions.extend(fresh);
            for (v, offsets) in published.into_iter().enumerate() {
                if let Some(offsets) = offsets {
                    store.observe_coverage(v, offsets, Instant::now(), Duration::MAX);
                }
            }
        }
        Ok(())
    }

    async fn recover(
        &mut self,
        s: usize,
        raw: &deltalake::DeltaTable,
        partitions: &[&Assigned],
        coverage: &[Option<(Offsets, u64)>],
        history: Option<Vec<(u64, BTreeMap<String, i64>)>>,
        fresh: &mut BTreeMap<TopicPartition, PartitionStates>,
    ) -> Result<()> {
        let started = Instant::now();
        let views = self.engines.len();
        let boundaries = archive_boundaries(partitions, history.as_deref());
        let ctx = strata_core::session::new_context(strata_core::session::session_config())?;
        let provider = strata_core::lake::table_provider(&ctx, raw).await?;
        ctx.register_table("raw", provider)?;
        for v in (0..views).filter(|v| self.view_source[*v] == s) {
            let covered = coverage[v].as_ref().map(|(o, _)| o);
            let Some((filter, segment)) = recovery_exprs(partitions, covered, &boundaries)? else {
                continue;
            };
            let events = ctx
                .table("raw")
                .await?
                .filter(filter)?
                .with_column(SEGMENT_COLUMN, segment)?
                .collect()
                .await?;
            let states = self.engines[v].states_by_segment(events).await?;
            for ((key, end), batches) in states {
                let Some(p) = fresh.get_mut(&key) else { continue };
                insert_recovered(p, v, end, batches, views);
            }
        }
        end_recovered_segments(partitions, &boundaries, fresh, views);
        tracing::info!(source = %self.sources[s].name, elapsed = ?started.elapsed(), "recovered speed states from the lake");
        Ok(())
    }
}

fn new_partition(source: usize, partition: &TopicPartition, archived: i64, views: usize) -> PartitionStates {
    PartitionStates {
        source,
        partition: partition.clone(),
        generation: 0,
        segments: VecDeque::new(),
        floor: vec![0; views],
        archived,
        events: 0,
        rejected: 0,
        late: 0,
        max_event_time: None,
        high_watermark: None,
        received: archived,
    }
}

/// Puts recovered states of a view into the closed segment ending at `end`.
fn insert_recovered(p: &mut PartitionStates, v: usize, end: i64, batches: Vec<RecordBatch>, views: usize) {
    let index = segment_ending_at(p, end, views);
    p.segments[index].states[v].extend(batches);
}

/// The index of the closed segment ending at `end`, inserted (empty) if there is none.
fn segment_ending_at(p: &mut PartitionStates, end: i64, views: usize) -> usize {
    match p.segments.iter().position(|s| s.end >= end) {
        Some(i) if p.segments[i].end == end => i,
        Some(i) => {
            p.segments.insert(i, closed_segment(end, views));
            i
        }
        None => {
            p.segments.push_back(closed_segment(end, views));
            p.segments.len() - 1
        }
    }
}

fn closed_segment(end: i64, views: usize) -> crate::store::Segment {
    crate::store::Segment {
        start: end,
        end,
        open: false,
        states: vec![Vec::new(); views],
    }
}

/// Whether an event at `t` is late for a view of its source: its partition's highest event
/// time before it (`max`) had reached the end of the last window of the view it falls in (the
/// window had closed in event time). Counts it in `buckets` per view, by how long before.
fn lateness(max: Option<i64>, t: i64, windows: &[(usize, WindowSpec)], buckets: &mut [Vec<u64>]) -> bool {
    let Some(max) = max else { return false };
    let mut late = false;
    for (v, window) in windows {
        let end = window.last_start(t).saturating_add(window.size_us);
        if max >= end {
            late = true;
            let by = max - end;
            let i = LATENESS_BUCKETS
                .iter()
                .position(|(b, _)| by <= *b)
                .unwrap_or(LATENESS_BUCKETS.len() - 1);
            buckets[*v][i] += 1;
        }
    }
    late
}

/// Per partition: the archive boundaries (the next offset after each archive commit) the
/// lake's history holds since the oldest coverage; when the log was cleaned up, one segment
/// for everything since the coverage.
fn archive_boundaries(
    partitions: &[&Assigned],
    history: Option<&[(u64, BTreeMap<String, i64>)]>,
) -> BTreeMap<TopicPartition, Vec<i64>> {
    let mut boundaries = BTreeMap::new();
    for a in partitions {
        let app = kafka_app_id(&a.partition);
        let mut b: Vec<i64> = match history {
            Some(h) => h.iter().filter_map(|(_, txns)| txns.get(&app).copied()).collect(),
            None => vec![a.start],
        };
        b.dedup();
        boundaries.insert(a.partition.clone(), b);
    }
    boundaries
}

/// What recovers one view's states: a filter on the raw table for each partition's events
/// from the view's coverage to the archived position, and the expression naming each
/// event's segment (the first archive boundary above its offset). None when there is nothing
/// to recover.
fn recovery_exprs(
    partitions: &[&Assigned],
    coverage: Option<&Offsets>,
    boundaries: &BTreeMap<TopicPartition, Vec<i64>>,
) -> Result<Option<(Expr, Expr)>> {
    let mut filter: Option<Expr> = None;
    let mut segment: Option<datafusion::logical_expr::conditional_expressions::CaseBuilder> = None;
    for a in partitions {
        let key = &a.partition;
        let from = coverage.and_then(|o| o.get(key).copied()).unwrap_or(0);
        let until = a.start;
        if until <= from {
            continue;
        }
        let offset = || ident(OFFSET);
        let this = ident(TOPIC)
            .eq(lit(key.topic.as_str()))
            .and(ident(PARTITION).eq(lit(key.partition)));
        let range = this.clone().and(offset().gt_eq(lit(from))).and(offset().lt(lit(until)));
        filter = Some(match filter {
            Some(f) => f.or(range),
            None => range,
        });
        let mut ends = boundaries[key].iter().filter(|b| **b > from);
        let numbered = match ends.next() {
            Some(first) => {
                let mut case = when(offset().lt(lit(*first)), lit(*first));
                for b in ends {
                    case = case.when(offset().lt(lit(*b)), lit(*b));
                }
                case.otherwise(lit(until))?
            }
            None => lit(until),
        };
        segment = Some(match segment {
            Some(mut case) => case.when(this, numbered),
            None => when(this, numbered),
        });
    }
    match (filter, segment) {
        (Some(filter), Some(segment)) => Ok(Some((filter, segment.end()?))),
        _ => Ok(None),
    }
}

/// A recovered segment ends at every archive boundary, with states or not (a flush of
/// rejects only, or of events every view filters out, holds none), and the last at the
/// archived position: a batch coverage never falls inside one, and the open segment starts
/// where the lake ends, as the archive's next flush must.
fn end_recovered_segments(
    partitions: &[&Assigned],
    boundaries: &BTreeMap<TopicPartition, Vec<i64>>,
    fresh: &mut BTreeMap<TopicPartition, PartitionStates>,
    views: usize,
) {
    for a in partitions {
        let key = &a.partition;
        if let Some(p) = fresh.get_mut(key) {
            let floor = p.floor.iter().copied().min().unwrap_or(0);
            let ends = boundaries[key].iter().copied().chain([a.start]);
            for end in ends.filter(|e| *e > floor && *e <= a.start) {
                segment_ending_at(p, end, views);
            }
            let mut start = floor;
            for seg in p.segments.iter_mut() {
                seg.start = start;
                start = seg.end;
            }
        }
    }
}

/// A view's states of one micro-batch, per partition key.
type ViewStates = (usize, BTreeMap<TopicPartition, Vec<RecordBatch>>);

/// Adds a micro-batch's states to each partition's open segment, which now ends at the
/// batch's next offset; returns the (partition, segment, view) whose states are worth folding.
fn add_states(
    store: &mut Store,
    source: usize,
    positions: &[OffsetRange],
    states: &[ViewStates],
) -> Vec<(TopicPartition, i64, usize)> {
    let views = store.views.len();
    let mut to_fold = Vec::new();
    for OffsetRange {
        partition: key,
        start: first,
        end: next,
    } in positions
    {
        let p = store
            .partitions
            .entry(key.clone())
            .or_insert_with(|| new_partition(source, key, *first, views));
        let segment = p.open_segment(views);
        segment.end = *next;
        for (v, by_partition) in states {
            if let Some(b) = by_partition.get(key) {
                segment.states[*v].extend(b.iter().cloned());
                if segment.states[*v].len() > FOLD_AT {
                    to_fold.push((key.clone(), segment.start, *v));
                }
            }
        }
    }
    to_fold
}

/// Counts a micro-batch's events per partition, and those late for a view's window.
fn count_events(store: &mut Store, times: BTreeMap<TopicPartition, Vec<i64>>, windows: &[(usize, WindowSpec)]) {
    let mut buckets = vec![vec![0u64; LATENESS_BUCKETS.len()]; store.views.len()];
    for (key, times) in times {
        if let Some(p) = store.partitions.get_mut(&key) {
            for t in times {
                let late = lateness(p.max_event_time, t, windows, &mut buckets);
                p.late += u64::from(late);
                p.max_event_time = p.max_event_time.max(Some(t));
                p.events += 1;
            }
        }
    }
    for (v, counts) in buckets.into_iter().enumerate() {
        for (i, n) in counts.into_iter().enumerate() {
            store.lateness[v][i] += n;
        }
    }
}

/// Counts a micro-batch's rejected records per partition.
fn count_rejects(store: &mut Store, rejects: &RecordBatch) {
    let topics = rejects
        .column_by_name(rejected::TOPIC)
        .map(|c| c.as_string::<i32>().clone());
    let partitions = rejects
        .column_by_name(rejected::PARTITION)
        .map(|c| c.as_primitive::<Int32Type>().clone());
    if let (Some(t), Some(p)) = (topics, partitions) {
        for row in 0..rejects.num_rows() {
            if let Some(ps) = store
                .partitions
                .get_mut(&TopicPartition::new(t.value(row), p.value(row)))
            {
                ps.rejected += 1;
            }
        }
    }
}

/// Event times per partition, in consumption order.
fn per_partition_times(events: &RecordBatch, event_time: usize) -> BTreeMap<TopicPartition, Vec<i64>> {
    let mut out: BTreeMap<TopicPartition, Vec<i64>> = BTreeMap::new();
    let (Some(t), Some(p)) = (events.column_by_name(TOPIC), events.column_by_name(PARTITION)) else {
        return out;
    };
    let t = t.as_string::<i32>();
    let p = p.as_primitive::<Int32Type>();
    let ts = events.column(event_time).as_primitive::<TimestampMicrosecondType>();
    for row in 0..events.num_rows() {
        out.entry(TopicPartition::new(t.value(row), p.value(row)))
            .or_default()
            .push(ts.value(row));
    }
    out
}

/// A segment's states of one view to fold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldJob {
    key: TopicPartition,
    /// The segment's first offset: it names the segment while segments come and go.
    start: i64,
    view: usize,
}

/// Folds segments' state batches into one batch per segment and view, beside the
/// aggregator: folding a closed segment (a second of events) takes longer than a
/// micro-batch, and the micro-batches behind it would wait. One fold at a time, so no two
/// folds of a segment overlap; a fold replaces exactly the batches it read (the same
/// arrays), keeping any appended since, and nothing if the segment changed otherwise
/// (dropped, or rebuilt after a rebalance).
struct Folder {
    engines: Vec<Arc<ViewEngine>>,
    store: Arc<Mutex<Store>>,
    pending: Arc<Mutex<HashSet<FoldJob>>>,
}

impl Folder {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<FoldJob>) -> Result<()> {
        while let Some(job) = jobs.recv().await {
            self.pending.lock().expect("fold lock").remove(&job);
            self.fold(&job).await?;
        }
        Ok(())
    }

    async fn fold(&self, job: &FoldJob) -> Result<()> {
        let Some(read) = segment_states(&self.store.lock().expect("store lock"), job)
            .filter(|b| b.len() > 1)
            .cloned()
        else {
            return Ok(());
        };
        let folded = self.engines[job.view].fold(read.clone()).await?;
        replace_folded(&mut self.store.lock().expect("store lock"), job, &read, folded);
        Ok(())
    }
}

/// The state batches of a job's segment and view, if the segment is still held.
fn segment_states<'a>(store: &'a Store, job: &FoldJob) -> Option<&'a Vec<RecordBatch>> {
    let segment = store
        .partitions
        .get(&job.key)?
        .segments
        .iter()
        .find(|s| s.start == job.start)?;
    segment.states.get(job.view)
}

/// Puts `folded` in place of the batches `read` from a segment if they are still its first
/// ones; true if it did.
fn replace_folded(store: &mut Store, job: &FoldJob, read: &[RecordBatch], folded: Vec<RecordBatch>) -> bool {
    let Some(states) = store
        .partitions
        .get_mut(&job.key)
        .and_then(|p| p.segments.iter_mut().find(|s| s.start == job.start))
        .and_then(|s| s.states.get_mut(job.view))
    else {
        return false;
    };
    if states.len() < read.len() || !states.iter().zip(read).all(|(a, b)| same_arrays(a, b)) {
        return false;
    }
    let rest = states.split_off(read.len());
    *states = folded;
    states.extend(rest);
    true
}

/// Whether two batches hold the very same arrays (not just equal values).
fn same_arrays(a: &RecordBatch, b: &RecordBatch) -> bool {
    a.num_columns() == b.num_columns() && a.columns().iter().zip(b.columns()).all(|(x, y)| Arc::ptr_eq(x, y))
}

async fn join_folder(folder: tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    folder.await.map_err(|e| Error::Internal(format!("folder: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event is late only when a window of a view it falls in had already closed in event
    /// time (the partition's highest event time had reached its end) — not merely when it
    /// is older than an event before it — and is counted per view by how long before.
    #[test]
    fn late_means_after_the_window_closed() {
        use strata_core::view::{WindowKind, WindowSpec};
        const S: i64 = 1_000_000;
        let windows = vec![
            (
                0,
                WindowSpec {
                    kind: WindowKind::Tumble,
                    time_column: "ts".into(),
                    size_us: 60 * S,
                    slide_us: 60 * S,
                },
            ),
            (
                1,
                WindowSpec {
                    kind: WindowKind::Hop,
                    time_column: "ts".into(),
                    size_us: 300 * S,
                    slide_us: 60 * S,
                },
            ),
        ];
        let bucket = |label: &str| LATENESS_BUCKETS.iter().position(|(_, l)| *l == label).unwrap();
        let mut buckets = vec![vec![0u64; LATENESS_BUCKETS.len()]; 2];
        let mut max = None;
        let mut late = Vec::new();
        // 130 s is out of order after 10 s but its windows are open; 70 s comes when the
        // tumbling window [60 s, 120 s) closed 10 s before; 59 s when [0, 60 s) closed 70 s
        // before; the hopping view's windows are all still open.
        for t in [10 * S, 130 * S, 70 * S, 125 * S, 59 * S, 120 * S] {
            late.push(lateness(max, t, &windows, &mut buckets));
            max = max.max(Some(t));
        }
        assert_eq!(late, [false, false, true, false, true, false]);
        let mut want = vec![vec![0u64; LATENESS_BUCKETS.len()]; 2];
        want[0][bucket("10s")] = 1;
        want[0][bucket("10m")] = 1;
        assert_eq!(buckets, want);
        // Exactly at the window's end is late by 0 (the window has closed).
        let mut buckets = vec![vec![0u64; LATENESS_BUCKETS.len()]; 2];
        assert!(lateness(Some(60 * S), 59 * S, &windows[..1], &mut buckets));
        assert_eq!(buckets[0][bucket("0")], 1);
    }

    /// A partition taken over after a flush that held no valid events (only rejects): its
    /// recovered segments end where the lake does, so the next flush starts at the archived
    /// position (else the archive's fence sees a flush that does not start there and stops
    /// the speed layer, on every process that takes the partition).
    #[tokio::test]
    async fn recovered_segments_end_where_the_lake_does() {
        use strata_core::decode::{JsonDecoder, KafkaPosition, Origin, Rejects};

        use crate::archive::{Archiver, claim};
        let dir = std::env::temp_dir().join(format!("strata-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = crate::fixtures::clicks_config(&dir.join("strata.toml"));
        let lake = Lake::new(&config.lake).unwrap();
        let (source, engines) = crate::fixtures::clicks_engines(&config).await;
        let views = engines.len();
        let names = engines.iter().map(|e| e.plan.name.clone()).collect();
        let store = Arc::new(Mutex::new(Store::new(names, vec![0; views])));
        let list = vec![TopicPartition::new("clicks", 0)];
        let first = claim(&lake, &source, &list, &|_| Ok(0)).await.unwrap();
        let mut archiver = Archiver::new(lake.clone(), vec![source.clone()], store.clone(), None);
        let position = |offset| KafkaPosition {
            topic: "clicks",
            partition: 0,
            offset,
        };
        // [0, 100): events; [100, 150): rejects only.
        let mut decoder = JsonDecoder::new(source.clone());
        for offset in 0..100 {
            let record = format!(
                r#"{{"ts":{},"user":"u{offset}","page":"/p","ms":50}}"#,
                1_795_219_200_000i64 + offset
            );
            decoder.decode(record.as_bytes(), Some(position(offset))).unwrap();
        }
        let mut rejects = Rejects::new("clicks", 0);
        for offset in 100..150 {
            rejects.push(Origin::Kafka(position(offset)), b"{oops", "invalid JSON");
        }
        let range = |start, end| ArchiveRange {
            generation: first[0].generation,
            offsets: OffsetRange {
                partition: TopicPartition::new("clicks", 0),
                start,
                end,
            },
        };
        for (events, rejects, r) in [
            (vec![decoder.finish()], vec![], range(0, 100)),
            (vec![], vec![rejects.finish()], range(100, 150)),
        ] {
            let job = ArchiveJob {
                source: 0,
                events,
                rejects,
                ranges: vec![r],
            };
            assert_eq!(archiver.commit(&job).await.unwrap().archived.len(), 1);
        }
        // Another process takes the partition over.
        let taken = claim(&lake, &source, &list, &|_| Ok(0)).await.unwrap();
        assert_eq!(taken[0].start, 150);
        let (archive, _jobs) = mpsc::channel(1);
        let mut aggregator = Aggregator::new(
            engines,
            vec![0; views],
            vec![source.clone()],
            store.clone(),
            lake.clone(),
            (Duration::from_secs(1), 1000, 1000),
            archive,
        );
        aggregator
            .assigned(vec![Assigned {
                source: 0,
                partition: TopicPartition::new("clicks", 0),
                generation: taken[0].generation,
                start: taken[0].start,
            }])
            .await
            .unwrap();
        let store = store.lock().unwrap();
        let p = &store.partitions[&TopicPartition::new("clicks", 0)];
        let ends: Vec<(i64, i64)> = p.segments.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(ends, [(0, 100), (100, 150)]);
        assert_eq!(p.consumed(), 150, "the next flush starts where the lake ends");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn batch(n: i64) -> RecordBatch {
        crate::fixtures::int64_batch([n])
    }

    fn values(store: &Store, job: &FoldJob) -> Vec<i64> {
        crate::fixtures::int64_values(segment_states(store, job).unwrap())
    }

    /// A store holding one partition whose open segment (start 0) holds `states` for its
    /// one view.
    fn store_with(states: Vec<RecordBatch>) -> Store {
        let mut store = Store::new(vec!["v".into()], vec![0]);
        let mut p = new_partition(0, &TopicPartition::new("t", 0), 0, 1);
        p.open_segment(1).states[0] = states;
        store.partitions.insert(TopicPartition::new("t", 0), p);
        store
    }

    /// The folder runs beside the aggregator, so a segment can change between a fold's read
    /// and its write: batches appended meanwhile stay after the folded one, and a segment
    /// rebuilt meanwhile (equal values in other arrays: a rebalance recovered it) or dropped
    /// is left alone. Either mistake would count events twice or lose them.
    #[test]
    fn a_fold_replaces_exactly_the_batches_it_read() {
        let read = vec![batch(1), batch(2)];
        let job = FoldJob {
            key: TopicPartition::new("t", 0),
            start: 0,
            view: 0,
        };
        let mut store = store_with([read.clone(), vec![batch(3)]].concat());
        assert!(replace_folded(&mut store, &job, &read, vec![batch(12)]));
        assert_eq!(values(&store, &job), [12, 3]);

        let mut store = store_with(vec![batch(1), batch(2)]);
        assert!(!replace_folded(&mut store, &job, &read, vec![batch(12)]));
        assert_eq!(values(&store, &job), [1, 2]);

        let mut store = store_with(read.clone());
        store.partitions.clear();
        assert!(!replace_folded(&mut store, &job, &read, vec![batch(12)]));

        let other = FoldJob {
            start: 5,
            ..job.clone()
        };
        let mut store = store_with(read.clone());
        assert!(!replace_folded(&mut store, &other, &read, vec![batch(12)]));
        assert_eq!(values(&store, &job), [1, 2]);
    }

    /// The folder folds each job's segment into one batch per view, with the states the
    /// view's own merge gives, and ends when its jobs end.
    #[tokio::test]
    async fn the_folder_folds_segments_into_the_merged_states() {
        use strata_core::decode::{JsonDecoder, KafkaPosition};
        let config = crate::fixtures::clicks_config(std::path::Path::new("/tmp/strata.toml"));
        let (source, engines) = crate::fixtures::clicks_engines(&config).await;
        let views = engines.len();
        let key = TopicPartition::new("clicks", 0);
        let mut p = new_partition(0, &key, 0, views);
        let mut expected = Vec::new();
        for round in 0..5i64 {
            let mut decoder = JsonDecoder::new(source.clone());
            for i in 0..200i64 {
                let k = i * 7919 + round * 104_729;
                let record = format!(
                    r#"{{"ts":{},"user":"u{}","page":"/p{}","ms":{}}}"#,
                    1_795_219_200_000 + k % 600_000,
                    k % 37,
                    k % 5,
                    k % 100
                );
                let position = KafkaPosition {
                    topic: "clicks",
                    partition: 0,
                    offset: round * 200 + i,
                };
                decoder.decode(record.as_bytes(), Some(position)).unwrap();
            }
            let events = decoder.finish();
            let segment = p.open_segment(views);
            for (v, engine) in engines.iter().enumerate() {
                let states = crate::fixtures::states_of(engine, &events, 1).await;
                segment.states[v].extend(states[&key].iter().cloned());
            }
        }
        for (v, engine) in engines.iter().enumerate() {
            expected.push(engine.fold(p.segments[0].states[v].clone()).await.unwrap());
            assert_eq!(p.segments[0].states[v].len(), 5);
        }
        let mut store = Store::new(engines.iter().map(|e| e.plan.name.clone()).collect(), vec![0; views]);
        store.partitions.insert(key.clone(), p);
        let store = Arc::new(Mutex::new(store));
        let pending = Arc::new(Mutex::new(HashSet::new()));
        let folder = Folder {
            engines: engines.clone(),
            store: store.clone(),
            pending,
        };
        let (jobs, rx) = mpsc::unbounded_channel();
        for view in 0..views {
            jobs.send(FoldJob {
                key: key.clone(),
                start: 0,
                view,
            })
            .unwrap();
        }
        drop(jobs);
        folder.run(rx).await.unwrap();
        let store = store.lock().unwrap();
        for (v, want) in expected.iter().enumerate() {
            let states = &store.partitions[&key].segments[0].states[v];
            assert_eq!(states.len(), 1, "{}: folded into one batch", engines[v].plan.name);
            let show = |b: &[RecordBatch]| {
                let text = arrow::util::pretty::pretty_format_batches(b).unwrap().to_string();
                let mut rows: Vec<String> = text.lines().map(String::from).collect();
                rows.sort();
                rows
            };
            assert_eq!(show(states), show(want), "{}", engines[v].plan.name);
        }
    }

    /// Micro-batches wait to be published together: their states reach the store (and their
    /// events its counts) only when a query asks, and then every batch received by then, or
    /// when they are archived; once `aggregate_rows` events wait they are added to the views'
    /// open states, still unpublished. Until then the store's position stays where its states
    /// end, so what it reports is exact either way.
    #[tokio::test]
    async fn states_wait_until_a_query_asks_or_they_are_archived() {
        use arrow::array::Int64Array;
        use strata_core::decode::{JsonDecoder, KafkaPosition};

        let dir = std::env::temp_dir().join(format!("strata-demand-{}", std::process::id()));
        let config = crate::fixtures::clicks_config(&dir.join("strata.toml"));
        let (source, engines) = crate::fixtures::clicks_engines(&config).await;
        let views = engines.len();
        let names = engines.iter().map(|e| e.plan.name.clone()).collect();
        let store = Arc::new(Mutex::new(Store::new(names, vec![0; views])));
        let (archive, _jobs) = mpsc::channel(8);
        let aggregator = Aggregator::new(
            engines,
            vec![0; views],
            vec![source.clone()],
            store.clone(),
            Lake::new(&config.lake).unwrap(),
            (Duration::from_secs(3600), 1_000_000, 250),
            archive,
        );
        // Long enough for a loaded machine: a query that gave up would fail the test.
        let demand = aggregator.demand(Duration::from_secs(60));
        let (input, received) = mpsc::channel(1);
        let running = tokio::spawn(aggregator.run(received));
        // A micro-batch of `n` events on each of partitions 0 and 1, from `offset` on.
        let micro_batch = |offset: i64, n: i64| {
            let mut decoder = JsonDecoder::new(source.clone());
            for partition in 0..2 {
                for o in offset..offset + n {
                    let record = format!(
                        r#"{{"ts":{},"user":"u{o}","page":"/p{partition}","ms":50}}"#,
                        1_795_219_200_000i64 + o
                    );
                    let position = KafkaPosition {
                        topic: "clicks",
                        partition,
                        offset: o,
                    };
                    decoder.decode(record.as_bytes(), Some(position)).unwrap();
                }
            }
            Input::Batch(MicroBatch {
                source: 0,
                events: Some(decoder.finish()),
                rejects: None,
                positions: (0..2)
                    .map(|p| OffsetRange {
                        partition: TopicPartition::new("clicks", p),
                        start: offset,
                        end: offset + n,
                    })
                    .collect(),
                consumed_at: Instant::now(),
            })
        };
        // Per partition: events counted, the end of the states, and `n` summed over them.
        let seen = |store: &Mutex<Store>| -> Vec<(u64, i64, i64)> {
            let store = store.lock().unwrap();
            (0..2)
                .map(|p| {
                    let key = TopicPartition::new("clicks", p);
                    let held = store.partitions.get(&key);
                    let parts = store.states("per_page", &Offsets::new()).unwrap();
                    let n = parts
                        .iter()
                        .filter(|part| part.range.offsets.partition == key)
                        .flat_map(|part| &part.batches)
                        .map(|b| {
                            let n = b
                                .column_by_name("n__count")
                                .unwrap()
                                .as_any()
                                .downcast_ref::<Int64Array>()
                                .unwrap();
                            n.iter().flatten().sum::<i64>()
                        })
                        .sum();
                    (
                        held.map_or(0, |h| h.events),
                        held.map_or(0, PartitionStates::consumed),
                        n,
                    )
                })
                .collect()
        };
        let waiting = |n: usize| {
            let waiting = demand.waiting.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                while waiting.load(Ordering::Acquire) != n {
                    assert!(
                        Instant::now() < deadline,
                        "{} micro-batches wait, not {n}",
                        waiting.load(Ordering::Acquire)
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        input.send(micro_batch(0, 40)).await.unwrap();
        waiting(1).await;
        // Received (80 events: below 250), not aggregated: no states, nothing counted, no
        // position.
        assert_eq!(seen(&store), [(0, 0, 0), (0, 0, 0)]);
        // The last of these is in the channel when the query asks, or received just before.
        input.send(micro_batch(40, 40)).await.unwrap();
        input.send(micro_batch(80, 40)).await.unwrap();
        demand.fresh().await;
        assert_eq!(seen(&store), [(120, 120, 120), (120, 120, 120)]);
        // Nothing waits: the next query does not ask.
        assert_eq!(demand.waiting.load(Ordering::Acquire), 0);

        // 2 x 130 events wait: added to the views' open states without a query asking, but
        // not published: the store still ends where the query left it, until the next asks.
        input.send(micro_batch(120, 65)).await.unwrap();
        input.send(micro_batch(185, 65)).await.unwrap();
        input.send(micro_batch(250, 10)).await.unwrap();
        waiting(3).await;
        assert_eq!(seen(&store), [(120, 120, 120), (120, 120, 120)]);
        let received: Vec<i64> = store.lock().unwrap().partitions.values().map(|p| p.received).collect();
        assert_eq!(received, [260, 260], "what was received, for the consumer lag");
        demand.fresh().await;
        assert_eq!(seen(&store), [(260, 260, 260), (260, 260, 260)]);
        let segments: Vec<usize> = store
            .lock()
            .unwrap()
            .partitions
            .values()
            .map(|p| p.segments[0].states[0].len())
            .collect();
        assert_eq!(segments, [2, 2], "one state batch per publication and partition");

        // Closing the channel archives what waits, its states in the store first.
        input.send(micro_batch(260, 10)).await.unwrap();
        drop(input);
        running.await.unwrap().unwrap();
        assert_eq!(seen(&store), [(270, 270, 270), (270, 270, 270)]);
    }
}
