//! The chunked-upload protocol of drf-chunked-upload (`/upload/`): parses
//! requests, calls the engine, renders the upload JSON. No storage or
//! database code here.

mod error;
mod form;
pub mod openapi;

use openapi::{ChunkForm, ChunkHeaders, ChunkedRefusal, CompletionForm, RawName, WholeFileForm};

pub use error::{ChunkedError, ChunkedResult, RequestError};

use form::{body, read_form, read_small_form, Body};

use crate::engine::{
    BodyRules, Caller, Completion, EngineError, Hashing, NewUpload, Staged, Upload,
};
use crate::protocol::kit::auth::{caller, Appender};
use crate::protocol::kit::headers::{attachment, parse_content_range, parse_range, ByteRange};
use crate::protocol::kit::openapi::{RawBytes, UploadPath};
use crate::protocol::kit::{base_url, AppState};
use actix_multipart::Multipart;
use actix_web::body::SizedStream;
use actix_web::http::header::{self, CacheControl, CacheDirective, ContentDisposition};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

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
fn upload_id(req: &HttpRequest) -> ChunkedResult<Uuid> {
    req.match_info()
        .get("id")
        .filter(|id| id.len() == 36)
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or_else(|| EngineError::NotFound.into())
}

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

/// The file of a creation form, staged, with its filename and the other
/// fields. A filename sent before the file is checked before any byte is
/// stored.
async fn receive_form(
    state: &AppState,
    form: Multipart,
    rules: BodyRules,
) -> ChunkedResult<(Staged, String, HashMap<String, String>)> {
    let engine = &state.engine;
    let mut form = read_form(form, state_wait(state), |fields, field| {
        let rules = rules.clone();
        async move {
            if let Some(name) = fields.get("filename") {
                engine.check_filename(name)?;
            }
            Ok(engine.receive_new(Hashing::Whole, rules, field).await?)
        }
    })
    .await?;
    let staged = form.file.ok_or(RequestError::NoChunk)?;
    let filename = form.fields.remove("filename").ok_or(FILENAME_REQUIRED)?;
    Ok((staged, filename, form.fields))
}

/// `PUT /upload/`: creates an upload with its first chunk.
#[utoipa::path(
    put,
    path = "/upload/",
    operation_id = "chunked_create",
    tag = "chunked",
    params(ChunkHeaders, RawName),
    request_body(content(
        (ChunkForm = "multipart/form-data", example = json!({"filename": "hello.txt", "file": "hello"})),
        (RawBytes = "application/octet-stream", example = json!("hello"))
    )),
    responses(
        (status = 200, description = "Created, with its first chunk", body = UploadJson,
            links(
                ("detail" = (operation_id = "chunked_detail", parameters(("id" = "$response.body#/id")))),
                ("append" = (operation_id = "chunked_append", parameters(("id" = "$response.body#/id")))),
                ("complete" = (operation_id = "chunked_complete", parameters(("id" = "$response.body#/id")))),
                ("abort" = (operation_id = "chunked_abort", parameters(("id" = "$response.body#/id")))),
                ("download" = (operation_id = "chunked_download", parameters(("id" = "$response.body#/id")))),
                ("tus_head" = (operation_id = "tus_head", parameters(("id" = "$response.body#/id")))),
                ("tus_patch" = (operation_id = "tus_patch", parameters(("id" = "$response.body#/id")))),
                ("tus_delete" = (operation_id = "tus_delete", parameters(("id" = "$response.body#/id"))))
            )),
        (status = "default", response = ChunkedRefusal)
    )
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> ChunkedResult<HttpResponse> {
    let caller = caller(&req, &state).await?;
    let engine = &state.engine;
    let range = chunk_range(&req)?;
    engine.check_total(range.total)?;
    engine
        .check_owner_limits(&caller, range.total, true)
        .await?;
    if range.start != 0 {
        return Err(EngineError::OffsetMismatch {
            expected: 0,
            provided: range.start,
        }
        .into());
    }
    engine.check_chunk_len(range.len)?;
    let (staged, filename) = match body(&req, payload)? {
        Body::Raw(payload) => {
            check_raw_length(&req, range.len)?;
            let filename = raw_filename(&req)?.ok_or(FILENAME_REQUIRED)?;
            engine.check_filename(&filename)?;
            (
                engine
                    .receive_new(Hashing::Whole, BodyRules::exact(range.len), payload)
                    .await?,
                filename,
            )
        }
        Body::Multipart(form) => {
            let (staged, filename, _) =
                receive_form(&state, form, BodyRules::exact(range.len)).await?;
            (staged, filename)
        }
        Body::Form { .. } => return Err(RequestError::NoChunk.into()),
    };
    let upload = engine
        .create(
            staged,
            &caller,
            NewUpload {
                filename,
                total: Some(range.total),
                ..NewUpload::default()
            },
            Completion::Request,
        )
        .await?;
    Ok(upload_response(&req, &state, &upload))
}

/// `POST /upload/`: a whole file and its checksum in one request.
#[utoipa::path(
    post,
    path = "/upload/",
    operation_id = "chunked_create_complete",
    tag = "chunked",
    params(
        RawName,
        ("md5" = Option<String>, Query, description = "The file's checksum, for a raw body",
            example = "5d41402abc4b2a76b9719d911017c592")
    ),
    request_body(content(
        (WholeFileForm = "multipart/form-data", example = json!({"filename": "hello.txt",
            "file": "hello", "md5": "5d41402abc4b2a76b9719d911017c592"})),
        (RawBytes = "application/octet-stream", example = json!("hello"))
    )),
    responses(
        (status = 200, description = "Created complete, its checksum verified", body = UploadJson),
        (status = "default", response = ChunkedRefusal)
    )
)]
pub async fn create_complete(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> ChunkedResult<HttpResponse> {
    let caller = caller(&req, &state).await?;
    let engine = &state.engine;
    let declared = content_length(&req).unwrap_or(0);
    engine.check_owner_limits(&caller, declared, true).await?;
    let algo = engine.settings().checksum.name();
    let (staged, filename, checksum): (Staged, _, _) = match body(&req, payload)? {
        Body::Raw(payload) => {
            let mut params = query(&req)?;
            let checksum = params
                .remove(algo)
                .ok_or(EngineError::ChecksumRequired { algo })?;
            let filename = raw_filename(&req)?.ok_or(FILENAME_REQUIRED)?;
            engine.check_filename(&filename)?;
            if let Some(len) = content_length(&req) {
                engine.check_total(len)?;
                engine.check_chunk_len(len)?;
            }
            let staged = engine
                .receive_new(Hashing::Whole, BodyRules::unlimited(), payload)
                .await?;
            (staged, filename, Some(checksum))
        }
        Body::Multipart(form) => {
            let (staged, filename, mut fields) =
                receive_form(&state, form, BodyRules::unlimited()).await?;
            (staged, filename, fields.remove(algo))
        }
        Body::Form { .. } => return Err(RequestError::NoChunk.into()),
    };
    let upload = engine
        .create_complete(staged, &caller, filename, checksum.as_deref())
        .await?;
    Ok(upload_response(&req, &state, &upload))
}

/// `PUT /upload/{id}/`: appends a chunk at the upload's offset.
#[utoipa::path(
    put,
    path = "/upload/{id}/",
    operation_id = "chunked_append",
    tag = "chunked",
    params(UploadPath, ChunkHeaders),
    request_body(content(
        (ChunkForm = "multipart/form-data", example = json!({"file": "world"})),
        (RawBytes = "application/octet-stream", example = json!("world"))
    )),
    responses(
        (status = 200, description = "The chunk is stored and acknowledged", body = UploadJson),
        (status = "default", response = ChunkedRefusal)
    )
)]
pub async fn append(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> ChunkedResult<HttpResponse> {
    let id = upload_id(&req)?;
    let appender = Appender::of(&req, &state).await?;
    let appended = append_as(&appender.caller, id, &req, payload, &state).await;
    appender.confirm(&state, appended).await
}

/// `append`, once the caller is known.
async fn append_as(
    caller: &Caller,
    id: Uuid,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> ChunkedResult<HttpResponse> {
    let engine = &state.engine;
    let range = chunk_range(req)?;
    engine.check_total(range.total)?;
    engine.check_chunk_len(range.len)?;
    let rules = BodyRules::exact(range.len);
    let body = body(req, payload)?;
    match &body {
        Body::Raw(_) => check_raw_length(req, range.len)?,
        Body::Form { .. } => return Err(RequestError::NoChunk.into()),
        Body::Multipart(_) => {}
    }
    let session = engine
        .begin_append(caller, id, range.start, Some(range.total))
        .await?;
    let upload = match body {
        Body::Raw(payload) => session.write(rules, payload, Completion::Request).await?,
        Body::Multipart(form) => {
            let mut session = Some(session);
            let form = read_form(form, state_wait(state), |_, field| {
                let session = session.take();
                let rules = rules.clone();
                async move {
                    let session = session
                        .ok_or_else(|| EngineError::Internal("second chunk in one form".into()))?;
                    Ok(session.receive(rules, field, Completion::Request).await?)
                }
            })
            .await?;
            // Committed only once the whole form was read and accepted.
            form.file.ok_or(RequestError::NoChunk)?.commit().await?
        }
        Body::Form { .. } => return Err(RequestError::NoChunk.into()),
    };
    Ok(upload_response(req, state, &upload))
}

/// `POST /upload/{id}/`: completes an upload with its checksum.
#[utoipa::path(
    post,
    path = "/upload/{id}/",
    operation_id = "chunked_complete",
    tag = "chunked",
    params(UploadPath),
    request_body(content(
        (CompletionForm = "application/x-www-form-urlencoded"),
        (CompletionForm = "application/json"),
        (CompletionForm = "multipart/form-data")
    )),
    responses(
        (status = 200, description = "Complete, its checksum verified", body = UploadJson),
        (status = "default", response = ChunkedRefusal)
    )
)]
pub async fn complete(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> ChunkedResult<HttpResponse> {
    let id = upload_id(&req)?;
    let caller = caller(&req, &state).await?;
    let engine = &state.engine;
    let algo = engine.settings().checksum.name();
    let mut fields = read_small_form(&req, payload, state_wait(&state)).await?;
    let checksum = fields
        .remove(algo)
        .or_else(|| query(&req).ok()?.remove(algo));
    let upload = engine.complete(&caller, id, checksum.as_deref()).await?;
    Ok(upload_response(&req, &state, &upload))
}

/// `GET /upload/{id}/`: where to resume.
#[utoipa::path(
    get,
    path = "/upload/{id}/",
    operation_id = "chunked_detail",
    tag = "chunked",
    params(UploadPath),
    responses(
        (status = 200, description = "The upload, with its offset", body = UploadJson),
        (status = "default", response = ChunkedRefusal)
    )
)]
pub async fn detail(req: HttpRequest, state: web::Data<AppState>) -> ChunkedResult<HttpResponse> {
    let id = upload_id(&req)?;
    let caller = caller(&req, &state).await?;
    let upload = state.engine.get(&caller, id).await?;
    Ok(upload_response(&req, &state, &upload))
}

/// `GET /upload/`: the caller's uploads, newest first.
#[utoipa::path(
    get,
    path = "/upload/",
    operation_id = "chunked_list",
    tag = "chunked",
    params(
        ("status" = Option<u8>, Query, minimum = 1, maximum = 2, description = "1: in progress, 2: complete"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many (100)")
    ),
    responses(
        (status = 200, description = "The caller's uploads, newest first", body = [UploadJson]),
        (status = "default", response = ChunkedRefusal)
    )
)]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> ChunkedResult<HttpResponse> {
    let caller = caller(&req, &state).await?;
    let params = query(&req)?;
    let complete = match params.get("status").map(String::as_str) {
        None | Some("") => None,
        Some("1") => Some(false),
        Some("2") => Some(true),
        Some(_) => return Err(RequestError::InvalidQuery("status must be 1 or 2").into()),
    };
    let limit = match params.get("limit") {
        None => 100,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or(RequestError::InvalidQuery("limit must be 1 to 1000"))?,
    };
    let uploads = state.engine.list(&caller, complete, limit).await?;
    let base = base_url(&req, state.trust_proxy);
    let rendered: Vec<UploadJson> = uploads.iter().map(|u| render(u, &base)).collect();
    Ok(HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .json(rendered))
}

/// `DELETE /upload/{id}/`: aborts an upload.
#[utoipa::path(
    delete,
    path = "/upload/{id}/",
    operation_id = "chunked_abort",
    tag = "chunked",
    params(UploadPath),
    responses(
        (status = 204, description = "Removed, row and bytes"),
        (status = "default", response = ChunkedRefusal)
    )
)]
pub async fn abort(req: HttpRequest, state: web::Data<AppState>) -> ChunkedResult<HttpResponse> {
    let id = upload_id(&req)?;
    let caller = caller(&req, &state).await?;
    state.engine.abort(&caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

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
    let id = upload_id(&req)?;
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
