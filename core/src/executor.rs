//! A dedicated runtime for CPU-heavy DataFusion work, so that long plans never stall the
//! I/O runtime that serves Flight requests and talks to Kafka.
//!
//! ```text
//!  I/O runtime (tonic, object store)        CPU runtime (DataFusion operators)
//!   caller ◄── bounded channel (2 batches) ◄── task polling the plan's stream
//! ```
//!
//! Streams are pumped on the CPU runtime into a bounded channel; dropping the receiving
//! stream stops the work (the task is aborted).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A multi-threaded tokio runtime of its own, owned by this handle.
#[derive(Clone)]
pub struct CpuRuntime {
    handle: tokio::runtime::Handle,
    /// Shuts the runtime down when the last clone is dropped.
    _owner: Arc<RuntimeOwner>,
}

impl std::fmt::Debug for CpuRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuRuntime").finish_non_exhaustive()
    }
}

struct RuntimeOwner(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl CpuRuntime {
    /// A runtime with `threads` workers (one per core by default).
    pub fn new(threads: Option<usize>) -> std::io::Result<Self> {
        let threads = threads.unwrap_or_else(crate::session::parallelism);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("strata-cpu")
            .enable_all()
            .build()?;
        Ok(CpuRuntime {
            handle: rt.handle().clone(),
            _owner: Arc::new(RuntimeOwner(Some(rt))),
        })
    }

    /// The runtime's handle, for tasks that own their lifetime (joined by their owner).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs a future on the CPU runtime; the task is aborted if the returned future is dropped.
    pub fn spawn<F>(&self, fut: F) -> impl Future<Output = Result<F::Output, DataFusionError>> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = AbortOnDrop(self.handle.spawn(fut));
        async move {
            let mut task = task;
            (&mut task.0)
                .await
                .map_err(|e| DataFusionError::External(format!("CPU task failed: {e}").into()))
        }
    }

    /// Polls `stream` on the CPU runtime; batches come back through a bounded channel.
    pub fn run_stream(&self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let (tx, rx) = mpsc::channel(2);
        let task = self.handle.spawn(async move {
            let mut stream = stream;
            while let Some(item) = stream.next().await {
                if tx.send(item).await.is_err() {
                    break; // the reader went away
                }
            }
        });
        Box::pin(ChannelStream {
            schema,
            rx,
            _task: AbortOnDrop(task),
        })
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct ChannelStream {
    schema: SchemaRef,
    rx: mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
    _task: AbortOnDrop<()>,
}

impl Stream for ChannelStream {
    type Item = Result<RecordBatch, DataFusionError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl RecordBatchStream for ChannelStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
