//! One log line per request, as text or as a JSON object (`--log-format`),
//! with a request id that the response carries in `X-Request-Id`.

use crate::config::LogFormat;
use crate::protocol::kit::auth::LoggedOwner;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

/// The log target of the request lines; the JSON format prints their
/// message, itself a JSON object, as the line.
pub const REQUEST_TARGET: &str = "chunkd::request";

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id a proxy in front gave the request, when it looks like one (so
/// that its logs and chunkd's can be joined), else a new one.
fn request_id(req: &ServiceRequest) -> String {
    let given = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok());
    match given {
        Some(id)
            if (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_owned()
        }
        _ => Uuid::new_v4().simple().to_string(),
    }
}

/// The upload a path names: its second segment, when that is an id.
fn upload_of(path: &str) -> Option<Uuid> {
    path.split('/')
        .nth(2)
        .and_then(|segment| Uuid::parse_str(segment).ok())
}

pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let began = Instant::now();
    let id = request_id(&req);
    let remote = req.peer_addr().map(|addr| addr.ip().to_string());
    let (method, path, version) = (
        req.method().to_string(),
        req.path().to_owned(),
        req.version(),
    );
    let mut response = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let owner = response
        .request()
        .extensions()
        .get::<LoggedOwner>()
        .map(|owner| owner.0.clone());
    let bytes = match response.response().body().size() {
        BodySize::Sized(len) => len,
        _ => 0,
    };
    let status = response.status().as_u16();
    let duration_ms = (began.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let upload = upload_of(&path);
    let format = response.request().app_data::<LogFormat>().copied();
    if format == Some(LogFormat::Json) {
        let line = json!({
            "request_id": id,
            "remote": remote,
            "method": method,
            "path": path,
            "status": status,
            "bytes": bytes,
            "duration_ms": duration_ms,
            "owner": owner,
            "upload_id": upload,
        });
        log::info!(target: REQUEST_TARGET, "{line}");
    } else {
        let mut line = format!(
            "{} \"{method} {path} {version:?}\" {status} {bytes} {duration_ms}ms id={id}",
            remote.as_deref().unwrap_or("-"),
        );
        if let Some(owner) = owner {
            line.push_str(&format!(" owner={owner}"));
        }
        if let Some(upload) = upload {
            line.push_str(&format!(" upload={upload}"));
        }
        log::info!(target: REQUEST_TARGET, "{line}");
    }
    Ok(response)
}
