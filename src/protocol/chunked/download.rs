//! `GET /upload/{id}/file`: the bytes of a completed upload.

use super::error::{ChunkedError, ChunkedResult, RequestError};
use super::openapi::ChunkedRefusal;
use crate::protocol::kit::auth::caller;
use crate::protocol::kit::headers::{attachment, parse_range, ByteRange};
use crate::protocol::kit::openapi::{RawBytes, UploadPath};
use crate::protocol::kit::{path_upload_id, AppState};
use actix_web::body::SizedStream;
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::TryStreamExt;

/// `GET /upload/{id}/file`: the bytes of a completed upload, with ranges.
#[utoipa::path(
    get,
    path = "/upload/{id}/file",
    operation_id = "chunked_download",
    tag = "chunked",
    params(
        UploadPath,
        ("Range" = Option<String>, Header, description = "`bytes=<first>-<last>`, one range"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of a copy held")
    ),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = RawBytes),
        (status = 206, description = "The range asked for", content_type = "*/*", body = RawBytes),
        (status = 304, description = "The copy held is current"),
        (status = "default", response = ChunkedRefusal)
    )
)]
pub async fn download(req: HttpRequest, state: web::Data<AppState>) -> ChunkedResult<HttpResponse> {
    let id = path_upload_id(&req)?;
    let caller = caller(&req, &state).await?;
    let download = state.engine.open_download(&caller, id).await?;
    let (upload, len) = (&download.upload, download.size());
    // A completed upload never changes: its id tags it when it has no checksum.
    let etag = match &upload.checksum {
        Some(checksum) => format!("\"{checksum}\""),
        None => format!("\"{}\"", upload.id.simple()),
    };
    let header_text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let matches_etag = |value: &str| {
        value
            .split(',')
            .any(|t| t.trim() == etag || t.trim() == "*")
    };
    if header_text(header::IF_NONE_MATCH).is_some_and(matches_etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    // A Range applies only while the file is the one the client has.
    let range = match header_text(header::IF_RANGE) {
        Some(validator) if validator.trim() != etag => None,
        _ => header_text(header::RANGE),
    };
    let mut response = HttpResponse::Ok();
    let (start, count) = match parse_range(range, len) {
        ByteRange::Whole => (0, len),
        ByteRange::Part { start, end } => {
            response.status(StatusCode::PARTIAL_CONTENT);
            response.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")));
            (start, end - start + 1)
        }
        ByteRange::Unsatisfiable => return Err(RequestError::RangeNotSatisfiable { len }.into()),
    };
    let stream = download.bytes(start, count).map_err(ChunkedError::from);
    Ok(response
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((header::CONTENT_DISPOSITION, attachment(&upload.filename)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(CacheControl(vec![
            CacheDirective::Private,
            CacheDirective::NoCache,
        ]))
        .body(SizedStream::new(count, stream)))
}
