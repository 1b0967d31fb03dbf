//! App wiring: routes, CORS, the request cap, health.

use crate::protocol::chunked::{self, ChunkedError, RequestError};
use crate::protocol::kit::AppState;
use crate::protocol::tus;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Response headers a browser script may read: what tus clients and the
/// chunked protocol's resumers need.
const EXPOSED_HEADERS: &str = "Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, \
     Location, Tus-Version, Tus-Resumable, Tus-Max-Size, Tus-Extension, Tus-Checksum-Algorithm, \
     ETag, Content-Range, Content-Disposition";

/// CORS for the origins of `--cors-origins`: preflights are answered here;
/// other responses get the allow and expose headers. Other origins get no
/// CORS headers at all, so browsers keep their scripts out.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let origin = req.headers().get(header::ORIGIN).cloned().filter(|origin| {
        let state = req.app_data::<web::Data<AppState>>();
        let text = origin.to_str().unwrap_or("");
        state.is_some_and(|s| s.allows_origin(text))
    });
    let Some(origin) = origin else {
        // Where some origins are allowed, the answer depends on the
        // Origin a request has, also when it has none or another: a cache
        // must not serve it to the allowed ones.
        let varies = req
            .app_data::<web::Data<AppState>>()
            .is_some_and(|state| !state.cors_origins.is_empty());
        let mut response = next.call(req).await?;
        if varies {
            let headers = response.headers_mut();
            headers.append(header::VARY, header::HeaderValue::from_static("Origin"));
        }
        return Ok(response.map_into_left_body());
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = HttpResponse::NoContent();
        response
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            ))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
            .insert_header((header::VARY, "Origin"));
        if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            response.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone()));
        }
        return Ok(req.into_response(response.finish()).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::HeaderValue::from_static(EXPOSED_HEADERS),
    );
    headers.append(header::VARY, header::HeaderValue::from_static("Origin"));
    Ok(response.map_into_left_body())
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
        let refused = ChunkedError::from(RequestError::Overloaded).error_response();
        return Ok(req.into_response(refused).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

async fn not_found() -> Result<HttpResponse, ChunkedError> {
    Err(crate::engine::EngineError::NotFound.into())
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ChunkedError> {
    Err(RequestError::MethodNotAllowed(req.method().clone()).into())
}

/// 200 when the database answers and the data directory is usable.
async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.engine.check_health().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Err(err) => {
            log::error!("health check failed: {err}");
            HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable"}))
        }
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["/upload/", "/upload"])
            .route(web::put().to(chunked::create))
            .route(web::post().to(chunked::create_complete))
            .route(web::get().to(chunked::list))
            .route(web::head().to(chunked::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(["/upload/{id}/file", "/upload/{id}/file/"])
            .route(web::get().to(chunked::download))
            .route(web::head().to(chunked::download))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(["/upload/{id}/", "/upload/{id}"])
            .route(web::put().to(chunked::append))
            .route(web::post().to(chunked::complete))
            .route(web::get().to(chunked::detail))
            .route(web::head().to(chunked::detail))
            .route(web::delete().to(chunked::abort))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(["/files/", "/files"])
            .route(web::post().to(tus::create))
            .route(web::method(Method::OPTIONS).to(tus::options))
            .default_service(web::to(tus::not_allowed)),
    )
    .service(
        web::resource(["/files/{id}", "/files/{id}/"])
            .route(web::head().to(tus::head))
            .route(web::patch().to(tus::patch))
            .route(web::delete().to(tus::delete))
            .route(web::post().to(tus::overridden))
            .route(web::method(Method::OPTIONS).to(tus::options))
            .default_service(web::to(tus::not_allowed)),
    )
    .service(web::resource("/healthz").route(web::get().to(health)))
    .default_service(web::to(not_found));
}
