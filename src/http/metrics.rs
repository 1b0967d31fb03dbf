//! `GET /metrics`: the engine's counters and the wiring's own (requests by
//! protocol, method and status; bytes sent; requests refused by the request
//! cap; uploads in progress, counted in the database at each scrape) in the
//! OpenMetrics text format, which Prometheus reads.

use crate::engine::Engine;
use crate::protocol::kit::AppState;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `chunked` (`/upload/`), `tus` (`/files/`) or `other`.
    protocol: &'static str,
    method: String,
    status: u16,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    bytes_sent: Counter,
    pub refused: Counter,
    in_progress: Gauge,
}

impl Metrics {
    pub fn new(engine: &Engine) -> Self {
        let (requests, bytes_sent, refused, in_progress) = Default::default();
        let mut registry = Registry::with_prefix("chunkd");
        engine.metrics().register(&mut registry);
        registry.register(
            "requests",
            "Requests answered, by protocol, method and status",
            Family::clone(&requests),
        );
        registry.register(
            "bytes_sent",
            "Bytes of response bodies sent (downloads and answers)",
            Counter::clone(&bytes_sent),
        );
        registry.register(
            "requests_refused",
            "Requests refused with 503 past --max-requests at once",
            Counter::clone(&refused),
        );
        registry.register(
            "uploads_in_progress",
            "Uploads neither complete nor failed, in the database",
            Gauge::clone(&in_progress),
        );
        Metrics {
            registry,
            requests,
            bytes_sent,
            refused,
            in_progress,
        }
    }
}

fn protocol_of(path: &str) -> &'static str {
    if path.starts_with("/upload") {
        "chunked"
    } else if path.starts_with("/files") {
        "tus"
    } else {
        "other"
    }
}

/// Counts each answered request and the bytes of its response body.
pub async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let (protocol, method) = (protocol_of(req.path()), req.method().to_string());
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let labels = RequestLabels {
            protocol,
            method,
            status: response.status().as_u16(),
        };
        metrics.requests.get_or_create(&labels).inc();
        if let BodySize::Sized(len) = response.response().body().size() {
            metrics.bytes_sent.inc_by(len);
        }
    }
    Ok(response)
}

/// `GET /metrics`: the counters in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The counters", body = String,
            content_type = "application/openmetrics-text")
    ),
    security(())
)]
pub async fn metrics(
    state: web::Data<AppState>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, actix_web::Error> {
    match state.engine.uploads_in_progress().await {
        Ok(count) => {
            metrics
                .in_progress
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        Err(err) => log::warn!("metrics: uploads in progress not counted: {err}"),
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
        .map_err(actix_web::error::ErrorInternalServerError)?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}
