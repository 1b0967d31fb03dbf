//! The chunked-upload protocol of drf-chunked-upload (`/upload/`): parses
//! requests, calls the engine, renders the upload JSON. No storage or
//! database code here. The handlers: `create` (new uploads), `upload` (an
//! upload's chunks, completion, state, list and removal), `download`; here,
//! what they share (the upload JSON, ids, ranges, raw bodies' names).

pub mod create;
pub mod download;
mod error;
mod form;
pub mod openapi;
pub mod upload;

pub use create::{create, create_complete};
pub use download::download;
pub use error::{ChunkedError, ChunkedResult, RequestError};
pub use upload::{abort, append, complete, detail, list};

use crate::engine::{EngineError, Upload};
use crate::protocol::kit::headers::parse_content_range;
use crate::protocol::kit::{base_url, AppState};
use actix_web::http::header::{self, CacheControl, CacheDirective, ContentDisposition};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;
use utoipa::ToSchema;

const FILENAME_REQUIRED: EngineError = EngineError::InvalidFilename("This field is required.");

/// An upload as drf-chunked-upload renders it.
#[derive(Serialize, ToSchema)]
struct UploadJson {
    id: String,
    url: String,
    file: String,
    filename: String,
    offset: u64,
    /// Where a chunk in flight has reached, past the offset (for progress
    /// bars: only `offset` is acknowledged); absent otherwise, so that the
    /// JSON is drf-chunked-upload's.
    #[serde(skip_serializing_if = "Option::is_none")]
    received: Option<u64>,
    /// null while a tus client deferred it.
    total: Option<u64>,
    created_at: String,
    expires_at: String,
    /// 1: in progress, 2: complete.
    #[schema(minimum = 1, maximum = 2)]
    status: u8,
    completed_at: Option<String>,
    user: Option<String>,
    // The checksum, under the name of its algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    md5: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    sha256: Option<Option<String>>,
    /// Why the upload cannot continue, when its stored bytes were lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn render(upload: &Upload, base: &str) -> UploadJson {
    let url = format!("{base}/upload/{}/", upload.id);
    let checksum = Some(upload.checksum.clone());
    // An upload that is not hashed says `"md5": null`.
    let is_md5 = upload.checksum_algo != "sha256";
    UploadJson {
        id: upload.id.to_string(),
        file: format!("{url}file"),
        url,
        filename: upload.filename.clone(),
        offset: upload.offset,
        received: upload.in_flight_to(),
        total: upload.total,
        created_at: timestamp(upload.created_at),
        expires_at: timestamp(upload.expires_at),
        status: if upload.complete { 2 } else { 1 },
        completed_at: upload.completed_at.map(timestamp),
        user: upload.owner.clone(),
        md5: if is_md5 { checksum.clone() } else { None },
        sha256: if is_md5 { None } else { checksum },
        error: upload
            .failed
            .then(|| "Upload data was lost; start a new upload".to_owned()),
    }
}

fn upload_response(req: &HttpRequest, state: &AppState, upload: &Upload) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .json(render(upload, &base_url(req, state.trust_proxy)))
}

/// Only the canonical hyphenated form: any other path is simply not found.
fn query(req: &HttpRequest) -> ChunkedResult<HashMap<String, String>> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|_| RequestError::InvalidQuery("malformed query string").into())
}

/// A chunk announced by a request: `len` bytes at `start` of a file of
/// `total` bytes (already checked: start + len <= total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkRange {
    start: u64,
    len: u64,
    total: u64,
}

fn chunk_range(req: &HttpRequest) -> ChunkedResult<ChunkRange> {
    let (start, end, total) = req
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range)
        .ok_or(RequestError::BadHeaders)?;
    if end >= total {
        return Err(RequestError::EndExceedsTotal { total }.into());
    }
    Ok(ChunkRange {
        start,
        len: end - start + 1,
        total,
    })
}

fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A raw body announces its length: a mismatch is refused before reading.
fn check_raw_length(req: &HttpRequest, declared: u64) -> ChunkedResult<()> {
    match content_length(req) {
        Some(actual) if actual != declared => {
            Err(EngineError::SizeMismatch { actual, declared }.into())
        }
        _ => Ok(()),
    }
}

/// The original name of a raw body: `Content-Disposition` (`filename*`
/// first), else `?filename=`.
fn raw_filename(req: &HttpRequest) -> ChunkedResult<Option<String>> {
    let from_header = req
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| ContentDisposition::from_raw(v).ok())
        .and_then(|cd| {
            cd.get_filename_ext()
                .and_then(|ext| String::from_utf8(ext.value.clone()).ok())
                .or_else(|| cd.get_filename().map(str::to_owned))
        });
    Ok(from_header.or(query(req)?.remove("filename")))
}

fn state_wait(state: &AppState) -> Duration {
    state.engine.settings().read_timeout
}
