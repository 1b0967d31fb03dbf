//! What operators watch of the engine: its counters for `GET /metrics`
//! (uploads by what happened to them, the bytes appended, how long each
//! chunk's stages took; the names follow tusd's, `tusd_uploads_created` and
//! so on, with `chunkd_`), the uploads in progress, and its readiness.

use super::{run_blocking, Engine, EngineResult};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Instant;

/// A stage of a chunk's way in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChunkStage {
    /// `receive` (the body read, written at its offset and hashed as it
    /// arrives), `sync` (its bytes made durable), `commit` (the database
    /// row), `total`.
    pub stage: &'static str,
}

#[derive(Clone)]
pub struct EngineMetrics {
    pub created: Counter,
    pub finished: Counter,
    pub terminated: Counter,
    pub expired: Counter,
    pub failed: Counter,
    pub bytes_received: Counter,
    pub events_delivered: Counter,
    pub event_deliveries_failed: Counter,
    pub events_dropped: Counter,
    chunk_seconds: Family<ChunkStage, Histogram, fn() -> Histogram>,
}

/// 1 ms to about 65 s, doubling.
fn chunk_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            created: Counter::default(),
            finished: Counter::default(),
            terminated: Counter::default(),
            expired: Counter::default(),
            failed: Counter::default(),
            bytes_received: Counter::default(),
            events_delivered: Counter::default(),
            event_deliveries_failed: Counter::default(),
            events_dropped: Counter::default(),
            chunk_seconds: Family::new_with_constructor(chunk_histogram),
        }
    }
}

impl EngineMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            ("uploads_created", "Uploads created", &self.created),
            (
                "uploads_finished",
                "Uploads completed with all their bytes",
                &self.finished,
            ),
            (
                "uploads_terminated",
                "Uploads aborted by their owner",
                &self.terminated,
            ),
            (
                "uploads_expired",
                "Incomplete uploads removed when they expired",
                &self.expired,
            ),
            (
                "uploads_failed",
                "Uploads marked failed: their stored bytes were lost",
                &self.failed,
            ),
            (
                "bytes_received",
                "Bytes appended to uploads and committed",
                &self.bytes_received,
            ),
            (
                "events_delivered",
                "Upload events the webhook accepted",
                &self.events_delivered,
            ),
            (
                "event_deliveries_failed",
                "Webhook deliveries that failed and will be tried again",
                &self.event_deliveries_failed,
            ),
            (
                "events_dropped",
                "Upload events removed by the sweep after their retention",
                &self.events_dropped,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "chunk_duration_seconds",
            "Time a chunk took, by stage (receive, sync, commit) and in total",
            self.chunk_seconds.clone(),
        );
    }

    /// Runs a chunk's `stage` and records how long it took.
    pub fn timed<T>(&self, stage: &'static str, work: impl FnOnce() -> T) -> T {
        let began = Instant::now();
        let done = work();
        self.stage_took(stage, began);
        done
    }

    /// Records that a chunk's `stage` began at `since` and ends now.
    pub fn stage_took(&self, stage: &'static str, since: Instant) {
        self.chunk_seconds
            .get_or_create(&ChunkStage { stage })
            .observe(since.elapsed().as_secs_f64());
    }
}

/// What keeps the server from serving uploads: each part's error, or None
/// where it is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub database: Option<String>,
    pub storage: Option<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.database.is_none() && self.storage.is_none()
    }
}

impl Engine {
    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// How many uploads are in progress (incomplete, not failed), across
    /// every process that shares the database.
    pub async fn uploads_in_progress(&self) -> EngineResult<u64> {
        self.read_meta(|meta| meta.count_in_progress()).await
    }

    /// Whether the database answers and the storage takes a new file, each
    /// checked even when the other fails, so that an operator sees both.
    pub async fn readiness(&self) -> Readiness {
        let (meta, storage) = (self.meta.clone(), self.storage.clone());
        let checked = run_blocking(move || {
            Ok(Readiness {
                database: meta.ping().err().map(|err| err.to_string()),
                storage: storage.check().err().map(|err| err.to_string()),
            })
        })
        .await;
        checked.unwrap_or_else(|err| Readiness {
            database: Some(err.to_string()),
            storage: Some(err.to_string()),
        })
    }
}
