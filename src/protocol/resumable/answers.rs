//! How the draft's answers say an upload's state, in the request's
//! interop version: its headers, the stored file once complete, and the
//! 104.

use super::version::Interop;
use crate::engine::Upload;
use crate::protocol::kit::{base_url, AppState};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

pub(super) fn upload_url(req: &HttpRequest, state: &AppState, id: Uuid) -> String {
    format!("{}/resumable/{id}", base_url(req, state.trust_proxy))
}

/// `Upload-Limit`: the server's limits, and the upload's remaining
/// lifetime in seconds (a new upload's whole lifetime when there is none
/// yet).
pub(super) fn upload_limit(state: &AppState, interop: Interop, upload: Option<&Upload>) -> String {
    let settings = state.engine.settings();
    let mut limits = vec![format!("min-size={}", settings.min_bytes)];
    if let Some(max) = settings.max_bytes {
        limits.push(format!("max-size={max}"));
    }
    if let Some(max) = settings.max_chunk_bytes {
        limits.push(format!("max-append-size={max}"));
    }
    let age = match upload {
        Some(upload) if upload.complete => None,
        Some(upload) => Some((upload.expires_at - Utc::now()).num_seconds().max(0)),
        None => Some(i64::try_from(settings.expiration.as_secs()).unwrap_or(i64::MAX)),
    };
    if let Some(age) = age {
        limits.push(format!("{}={age}", interop.age_key()));
    }
    limits.join(", ")
}

/// The headers of an upload's state: its offset, whether it is complete,
/// and (since -04) its length and limits.
pub(super) fn state_headers(
    response: &mut HttpResponseBuilder,
    state: &AppState,
    interop: Interop,
    upload: &Upload,
) {
    response
        .insert_header(("Upload-Offset", upload.offset.to_string()))
        .insert_header(interop.completeness(upload.complete));
    if interop.has_limits_and_problems() {
        if let Some(total) = upload.total {
            response.insert_header(("Upload-Length", total.to_string()));
        }
        response.insert_header(("Upload-Limit", upload_limit(state, interop, Some(upload))));
    }
}

/// The answer to the request that completed an upload: what the target
/// resource makes of the whole representation, a JSON description of the
/// stored file.
pub(super) fn completed(
    mut response: HttpResponseBuilder,
    req: &HttpRequest,
    state: &AppState,
    interop: Interop,
    upload: &Upload,
) -> HttpResponse {
    state_headers(&mut response, state, interop, upload);
    let base = base_url(req, state.trust_proxy);
    response.json(json!({
        "id": upload.id,
        "filename": upload.filename,
        "size": upload.offset,
        "checksum_algo": upload.checksum_algo,
        "checksum": upload.checksum,
        "completed_at": upload.completed_at,
        "url": format!("{base}/upload/{}/file", upload.id),
    }))
}

/// The request's answer for an upload it leaves as `upload`.
pub(super) fn answer(
    req: &HttpRequest,
    state: &AppState,
    interop: Interop,
    upload: &Upload,
    created: bool,
) -> HttpResponse {
    let mut response = if created {
        HttpResponse::Created()
    } else if upload.complete {
        HttpResponse::Ok()
    } else {
        HttpResponse::NoContent()
    };
    if created {
        response.insert_header((header::LOCATION, upload_url(req, state, upload.id)));
    }
    if upload.complete {
        return completed(response, req, state, interop, upload);
    }
    state_headers(&mut response, state, interop, upload);
    response.finish()
}

/// The `104 Upload Resumption Supported` of a creation request, in its
/// interop version.
pub(super) fn interim_head(state: &AppState, interop: Interop, location: &str) -> String {
    let mut head = format!(
        "HTTP/1.1 104 Upload Resumption Supported\r\nLocation: {location}\r\n\
         Upload-Draft-Interop-Version: {}\r\n",
        interop.number()
    );
    if interop.has_limits_and_problems() {
        head.push_str(&format!(
            "Upload-Limit: {}\r\n",
            upload_limit(state, interop, None)
        ));
    }
    head.push_str("\r\n");
    head
}
