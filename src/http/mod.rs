//! App wiring: routes, CORS, the request cap, health and metrics.

pub mod demo;
mod metrics;
mod openapi;
mod request_log;

pub use metrics::{count_requests, Metrics};
pub use request_log::{log_requests, REQUEST_TARGET};

use crate::protocol::chunked::{self, ChunkedError, RequestError};
use crate::protocol::kit::AppState;
use crate::protocol::{attachments, filepond, resumable, tus};
use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::guard;
use actix_web::http::Method;
use actix_web::middleware::{Condition, Next};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Response headers a browser script may read: what tus clients and the
/// chunked protocol's resumers need.
const EXPOSED_HEADERS: [&str; 17] = [
    "Upload-Offset",
    "Upload-Complete",
    "Upload-Limit",
    "Upload-Received",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Location",
    "Tus-Version",
    "Tus-Resumable",
    "Tus-Max-Size",
    "Tus-Extension",
    "Tus-Checksum-Algorithm",
    "ETag",
    "Content-Range",
    "Content-Disposition",
    "X-Content-Transfer-Id",
];

/// CORS for the origins of `--cors-origins` (`*`: any), or none at all when
/// none are given. Other origins get no CORS headers, so browsers keep their
/// scripts out; their requests are still served, as for any other client.
pub fn cors(origins: &[String]) -> Condition<Cors> {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allow_any_header()
        .expose_headers(EXPOSED_HEADERS)
        .max_age(86_400)
        .block_on_origin_mismatch(false);
    // Naming one origin after `*` would narrow the list back to that one.
    if origins.iter().any(|origin| origin == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin);
        }
    }
    Condition::new(!origins.is_empty(), cors)
}

/// Counts a request as active while it lives.
struct ActiveRequest(Arc<AtomicUsize>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers 503 past `--max-requests` requests at once, so that a flood of
/// clients cannot exhaust memory or file descriptors.
pub async fn cap_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let _active = ActiveRequest(state.active.clone());
    if state.active.fetch_add(1, Ordering::SeqCst) >= state.max_requests {
        if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
            metrics.refused.inc();
        }
        let refused = ChunkedError::from(RequestError::Overloaded).error_response();
        return Ok(req.into_response(refused).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

async fn not_found() -> Result<HttpResponse, ChunkedError> {
    Err(crate::engine::EngineError::NotFound.into())
}

/// 405 for a method a chunked resource does not serve, naming those it does.
fn refuse_methods_but(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, ChunkedError>(
            RequestError::MethodNotAllowed {
                method: req.method().clone(),
                allow,
            }
            .into(),
        )
    })
}

/// Liveness: the process serves requests. It touches nothing, so that a
/// database outage does not get every process restarted.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process serves", body = Object,
        example = json!({"status": "ok"}))),
    security(())
)]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: 200 when the database answers and the storage takes a new
/// file; 503 naming what fails otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object,
            example = json!({"status": "ok", "database": "ok", "storage": "ok"})),
        (status = 503, description = "Not ready: what fails", body = Object,
            example = json!({"status": "unavailable", "database": "ok",
                             "storage": "cannot create a file: Read-only file system"}))
    ),
    security(())
)]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let readiness = state.engine.readiness().await;
    let part = |failure: &Option<String>| failure.as_deref().unwrap_or("ok").to_owned();
    let body = json!({
        "status": if readiness.is_ready() { "ok" } else { "unavailable" },
        "database": part(&readiness.database),
        "storage": part(&readiness.storage),
    });
    if readiness.is_ready() {
        HttpResponse::Ok().json(body)
    } else {
        log::warn!("not ready: {body}");
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["/upload/", "/upload"])
            .route(web::put().to(chunked::create))
            .route(web::post().to(chunked::create_complete))
            .route(web::get().to(chunked::list))
            .route(web::head().to(chunked::list))
            .default_service(refuse_methods_but("GET, HEAD, PUT, POST")),
    )
    .service(
        web::resource(["/upload/{id}/file", "/upload/{id}/file/"])
            .route(web::get().to(chunked::download))
            .route(web::head().to(chunked::download))
            .default_service(refuse_methods_but("GET, HEAD")),
    )
    .service(
        web::resource(["/upload/{id}/", "/upload/{id}"])
            .route(web::put().to(chunked::append))
            .route(web::post().to(chunked::complete))
            .route(web::get().to(chunked::detail))
            .route(web::head().to(chunked::detail))
            .route(web::delete().to(chunked::abort))
            .default_service(refuse_methods_but("GET, HEAD, PUT, POST, DELETE")),
    )
    .service(
        web::resource("/attachments/{bundle}/")
            .route(web::post().to(attachments::attach))
            .route(web::get().to(attachments::list))
            .default_service(web::to(attachments::not_allowed)),
    )
    .service(
        web::resource("/attachments/{bundle}/{name}/")
            .route(web::get().to(attachments::download))
            .route(web::post().to(attachments::remove_bundle))
            .default_service(web::to(attachments::not_allowed)),
    )
    .service(
        web::resource("/attachments/{bundle}/{name}/delete/")
            .route(web::post().to(attachments::remove))
            .default_service(web::to(attachments::not_allowed)),
    )
    .service(
        web::resource(["/filepond/", "/filepond"])
            .route(web::post().to(filepond::process))
            .route(web::patch().to(filepond::patch))
            .route(web::head().to(filepond::offset))
            .route(web::get().to(filepond::load))
            .route(web::delete().to(filepond::revert))
            .default_service(web::to(filepond::not_allowed)),
    )
    .service(
        web::resource(["/resumable/", "/resumable"])
            .route(web::post().to(resumable::create))
            .route(web::method(Method::OPTIONS).to(resumable::options))
            .default_service(web::to(|req| {
                resumable::not_allowed(req, resumable::TARGET_METHODS)
            })),
    )
    .service(
        web::resource(["/resumable/{id}", "/resumable/{id}/"])
            .route(web::head().to(resumable::offset))
            .route(web::get().to(resumable::offset))
            .route(web::patch().to(resumable::append))
            .route(web::delete().to(resumable::cancel))
            .route(web::method(Method::OPTIONS).to(resumable::options))
            .default_service(web::to(|req| {
                resumable::not_allowed(req, resumable::UPLOAD_METHODS)
            })),
    )
    .service(
        web::resource(["/files/", "/files"])
            // Draft clients pointed at the tus endpoint are served too.
            .route(
                web::post()
                    .guard(guard::fn_guard(resumable::speaks_draft))
                    .to(resumable::create),
            )
            .route(web::post().to(tus::create))
            .route(web::method(Method::OPTIONS).to(tus::options))
            .default_service(web::to(|| tus::not_allowed(tus::COLLECTION_METHODS))),
    )
    .service(
        web::resource(["/files/{id}", "/files/{id}/"])
            .route(web::head().to(tus::head))
            .route(web::patch().to(tus::patch))
            .route(web::delete().to(tus::delete))
            .route(web::post().to(tus::overridden))
            .route(web::method(Method::OPTIONS).to(tus::options))
            .default_service(web::to(|| tus::not_allowed(tus::UPLOAD_METHODS))),
    )
    .service(web::resource("/healthz").route(web::get().to(health)))
    .service(web::resource("/readyz").route(web::get().to(ready)))
    .service(web::resource("/metrics").route(web::get().to(metrics::metrics)))
    .service(web::resource("/openapi.json").route(web::get().to(openapi::document)))
    .default_service(web::to(not_found));
}
