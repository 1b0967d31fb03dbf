//! tus 1.0.0 (<https://tus.io/protocols/resumable-upload>) at `/files/`:
//! core, creation, creation-with-upload, expiration, checksum and
//! termination, on the same engine as the chunked protocol. A tus upload is
//! complete when its last byte is in; it is then an upload like any other
//! (listed under `/upload/`, downloaded from `/upload/{id}/file`).

use crate::engine::Upload;
use crate::engine::{
    BodyLength, BodyRules, Caller, ChecksumAlgo, Completion, EngineError, NewUpload, PARTIAL,
};
use crate::protocol::kit::auth::{caller, Appender};
use crate::protocol::kit::gate::GatedPayload;
use crate::protocol::kit::headers::{
    parse_tus_number, parse_upload_checksum, parse_upload_metadata,
};
use crate::protocol::kit::openapi::{RawBytes, UploadPath};
use crate::protocol::kit::{base_url, has_media_type, header_text, path_upload_id, AppState};
use actix_web::http::header::{self, CacheControl, CacheDirective, HttpDate};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use chrono::Utc;
use std::convert::Infallible;
use std::time::SystemTime;
use uuid::Uuid;

const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,\
                          expiration,checksum,termination,concatenation";
const CHECKSUM_ALGORITHMS: &str = "md5,sha1,sha256";
const OFFSET_STREAM: &str = "application/offset+octet-stream";

mod error;
pub mod openapi;

pub use error::TusError;
use error::TusResult;
use openapi::{BodyChecksum, TusRefusal, TusVersion};

fn tus_headers(response: &mut HttpResponseBuilder) {
    response.insert_header(("Tus-Resumable", TUS_VERSION));
}

/// The headers of tus whose value the server acts on.
const TUS_HEADERS: [&str; 6] = [
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Checksum",
    "Upload-Concat",
];

/// The largest `Upload-Metadata` kept with an upload.
const MAX_METADATA: usize = 4096;

/// Every request but OPTIONS names the protocol version it speaks, and
/// its tus headers are ASCII: one that is not would otherwise read as
/// absent (a checksum skipped, metadata dropped).
fn check_version(req: &HttpRequest) -> TusResult<()> {
    if header_text(req, "Tus-Resumable") != Some(TUS_VERSION) {
        return Err(TusError::UnsupportedVersion);
    }
    for name in TUS_HEADERS {
        if let Some(value) = req.headers().get(name) {
            if value.to_str().is_err() {
                return Err(TusError::BadRequest("A tus header is not ASCII"));
            }
        }
    }
    if header_text(req, "Upload-Metadata").is_some_and(|m| m.len() > MAX_METADATA) {
        return Err(TusError::BadRequest("Upload-Metadata is larger than 4 KiB"));
    }
    Ok(())
}

fn expires(upload: &Upload) -> Option<String> {
    (!upload.complete).then(|| {
        let time = SystemTime::from(upload.expires_at);
        HttpDate::from(time).to_string()
    })
}

/// The body's `Upload-Checksum`, checked against the algorithms offered.
fn body_checksum(req: &HttpRequest) -> TusResult<Option<(ChecksumAlgo, Vec<u8>)>> {
    let Some(value) = header_text(req, "Upload-Checksum") else {
        return Ok(None);
    };
    let (name, digest) =
        parse_upload_checksum(value).ok_or(TusError::BadRequest("Malformed Upload-Checksum"))?;
    let algo =
        ChecksumAlgo::parse(name).ok_or(TusError::BadRequest("Unsupported checksum algorithm"))?;
    Ok(Some((algo, digest)))
}

/// A body of at most `room` bytes. Without a checksum, what arrives before
/// the connection breaks is kept (tus clients resume from it); with one,
/// the body must be whole and match.
fn body_rules(req: &HttpRequest, room: u64) -> TusResult<BodyRules> {
    let check = body_checksum(req)?;
    Ok(BodyRules {
        length: BodyLength::UpTo(room),
        keep_partial: check.is_none(),
        check,
    })
}

fn is_offset_stream(req: &HttpRequest) -> bool {
    has_media_type(req, OFFSET_STREAM)
}

fn content_length(req: &HttpRequest) -> Option<u64> {
    header_text(req, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

/// `OPTIONS /files/`: what this server speaks.
#[utoipa::path(
    options,
    path = "/files/",
    operation_id = "tus_options",
    tag = "tus",
    responses(
        (status = 204, description = "What this server speaks",
            headers(
                ("Tus-Version" = String),
                ("Tus-Extension" = String),
                ("Tus-Checksum-Algorithm" = String),
                ("Tus-Max-Size" = Option<u64>, description = "With `--max-bytes`")
            ))
    ),
    security(())
)]
pub async fn options(state: web::Data<AppState>) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    tus_headers(&mut response);
    response
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", EXTENSIONS))
        .insert_header(("Tus-Checksum-Algorithm", CHECKSUM_ALGORITHMS));
    if let Some(max) = state.engine.settings().max_bytes {
        response.insert_header(("Tus-Max-Size", max.to_string()));
    }
    response.finish()
}

/// `POST /files/`: creates an upload, with its first bytes if the body has
/// any; or, with `Upload-Concat: final;…`, joins partial uploads.
#[utoipa::path(
    post,
    path = "/files/",
    operation_id = "tus_create",
    tag = "tus",
    params(
        TusVersion,
        ("Upload-Length" = Option<u64>, Header, description = "The file's size"),
        ("Upload-Defer-Length" = Option<u8>, Header, description = "`1`: told later"),
        ("Upload-Metadata" = Option<String>, Header, description = "`key base64,…`; `filename` names the file"),
        ("Upload-Concat" = Option<String>, Header, description = "`partial`, or `final;` and the parts' URLs"),
        BodyChecksum
    ),
    request_body(content = Option<RawBytes>, content_type = "application/offset+octet-stream",
        description = "The first bytes (creation-with-upload), or nothing"),
    responses(
        (status = 201, description = "Created",
            headers(
                ("Location" = String, description = "The upload's URL"),
                ("Upload-Offset" = u64),
                ("Upload-Expires" = String)
            )),
        (status = "default", response = TusRefusal)
    )
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> TusResult<HttpResponse> {
    check_version(&req)?;
    let caller = caller(&req, &state).await?;
    let engine = &state.engine;

    let raw_metadata = header_text(&req, "Upload-Metadata").map(str::to_owned);
    let metadata = match raw_metadata.as_deref() {
        Some(text) => {
            parse_upload_metadata(text).ok_or(TusError::BadRequest("Invalid Upload-Metadata"))?
        }
        None => Vec::new(),
    };
    let filename = metadata
        .iter()
        .find(|(key, _)| key == "filename" || key == "name")
        .and_then(|(_, value)| String::from_utf8(value.clone()?).ok())
        .unwrap_or_else(|| "upload".to_owned());
    let concat = match header_text(&req, "Upload-Concat") {
        None => None,
        Some(PARTIAL) => Some(PARTIAL.to_owned()),
        Some(value) => {
            let parts = parse_final(value).ok_or(TusError::BadRequest("Invalid Upload-Concat"))?;
            let new = NewUpload {
                filename,
                metadata: raw_metadata,
                concat: Some(final_concat(&parts)),
                ..NewUpload::default()
            };
            let upload = engine
                .concat(&caller, &parts, state.tus_hashing, new)
                .await?;
            return Ok(created(&req, &state, &upload, false));
        }
    };
    let length = header_text(&req, "Upload-Length");
    let total = match (length, header_text(&req, "Upload-Defer-Length")) {
        (Some(length), None) => {
            let total =
                parse_tus_number(length).ok_or(TusError::BadRequest("Invalid Upload-Length"))?;
            engine.check_total(total)?;
            Some(total)
        }
        (None, Some("1")) => None,
        (None, Some(_)) => return Err(TusError::BadRequest("Upload-Defer-Length must be 1")),
        (None, None) => return Err(TusError::BadRequest("Missing Upload-Length")),
        (Some(_), Some(_)) => {
            return Err(TusError::BadRequest(
                "Upload-Length and Upload-Defer-Length exclude each other",
            ))
        }
    };
    engine.check_filename(&filename)?;
    engine
        .check_owner_limits(&caller, total.unwrap_or(0), true)
        .await?;
    let with_body = is_offset_stream(&req);
    let staged = if with_body {
        if let Some(len) = content_length(&req) {
            engine.check_chunk_len(len)?;
        }
        let room = total.unwrap_or(engine.size_limit());
        engine
            .receive_new(
                state.tus_hashing,
                body_rules(&req, room)?,
                GatedPayload::new(&req, payload),
            )
            .await?
    } else {
        let nothing = futures_util::stream::empty::<Result<Bytes, Infallible>>();
        engine
            .receive_new(state.tus_hashing, BodyRules::exact(0), nothing)
            .await?
    };
    let new = NewUpload {
        filename,
        total,
        metadata: raw_metadata,
        concat,
        named_later: false,
    };
    let upload = engine
        .create(staged, &caller, new, Completion::LastByte)
        .await?;
    Ok(created(&req, &state, &upload, with_body))
}

/// `201 Created` with the new upload's `Location`.
fn created(
    req: &HttpRequest,
    state: &AppState,
    upload: &Upload,
    with_offset: bool,
) -> HttpResponse {
    let mut response = HttpResponse::Created();
    tus_headers(&mut response);
    response.insert_header((
        header::LOCATION,
        format!("{}/files/{}", base_url(req, state.trust_proxy), upload.id),
    ));
    if with_offset {
        response.insert_header(("Upload-Offset", upload.offset.to_string()));
    }
    if let Some(expires) = expires(upload) {
        response.insert_header(("Upload-Expires", expires));
    }
    response.finish()
}

/// `final;/files/a /files/b` (URLs or paths): the parts' ids, in order.
fn parse_final(value: &str) -> Option<Vec<Uuid>> {
    let list = value.strip_prefix("final;")?;
    let parts: Option<Vec<Uuid>> = list
        .split_whitespace()
        .map(|url| {
            let id = url.trim_end_matches('/').rsplit('/').next()?;
            Uuid::try_parse(id).ok()
        })
        .collect();
    parts.filter(|p| !p.is_empty())
}

/// The `Upload-Concat` of a final upload, rebuilt from the parsed ids (what
/// the client sent is never echoed unchecked).
fn final_concat(parts: &[Uuid]) -> String {
    let urls: Vec<String> = parts.iter().map(|id| format!("/files/{id}")).collect();
    format!("final;{}", urls.join(" "))
}

/// `HEAD /files/{id}`: where to resume.
#[utoipa::path(
    head,
    path = "/files/{id}",
    operation_id = "tus_head",
    tag = "tus",
    params(UploadPath, TusVersion),
    responses(
        (status = 200, description = "Where to resume",
            headers(
                ("Upload-Offset" = u64),
                ("Upload-Length" = Option<u64>, description = "Absent while deferred"),
                ("Upload-Received" = Option<u64>, description = "Where a chunk in flight has reached"),
                ("Upload-Metadata" = Option<String>),
                ("Upload-Expires" = Option<String>)
            )),
        (status = "default", response = TusRefusal)
    )
)]
pub async fn head(req: HttpRequest, state: web::Data<AppState>) -> TusResult<HttpResponse> {
    check_version(&req)?;
    let id = path_upload_id(&req)?;
    let caller = caller(&req, &state).await?;
    let upload = state.engine.get(&caller, id).await?;
    if upload.failed {
        return Err(EngineError::Lost("marked failed earlier".into()).into());
    }
    if !upload.complete && upload.expires_at <= Utc::now() {
        return Err(EngineError::Expired.into());
    }
    let mut response = HttpResponse::Ok();
    tus_headers(&mut response);
    response
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .insert_header(("Upload-Offset", upload.offset.to_string()));
    if let Some(reached) = upload.in_flight_to() {
        response.insert_header(("Upload-Received", reached.to_string()));
    }
    match upload.total {
        Some(total) => response.insert_header(("Upload-Length", total.to_string())),
        None => response.insert_header(("Upload-Defer-Length", "1")),
    };
    if let Some(metadata) = upload.metadata.as_deref().filter(|m| !m.is_empty()) {
        response.insert_header(("Upload-Metadata", metadata.to_owned()));
    }
    if let Some(concat) = upload.concat.as_deref() {
        response.insert_header(("Upload-Concat", concat.to_owned()));
    }
    if let Some(expires) = expires(&upload) {
        response.insert_header(("Upload-Expires", expires));
    }
    Ok(response.finish())
}

/// `PATCH /files/{id}`: bytes at the upload's offset.
#[utoipa::path(
    patch,
    path = "/files/{id}",
    operation_id = "tus_patch",
    tag = "tus",
    params(
        UploadPath,
        TusVersion,
        ("Upload-Offset" = u64, Header, description = "Where the body goes: the upload's offset"),
        ("Upload-Length" = Option<u64>, Header, description = "The size, if it was deferred"),
        BodyChecksum
    ),
    request_body(content = RawBytes, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "The bytes are stored and acknowledged",
            headers(("Upload-Offset" = u64), ("Upload-Expires" = Option<String>))),
        (status = "default", response = TusRefusal)
    )
)]
pub async fn patch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> TusResult<HttpResponse> {
    check_version(&req)?;
    let id = path_upload_id(&req)?;
    let appender = Appender::of(&req, &state).await?;
    let patched = patch_as(&appender.caller, id, &req, payload, &state).await;
    appender.confirm(&state, patched).await
}

/// `patch`, once the caller is known.
async fn patch_as(
    caller: &Caller,
    id: Uuid,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> TusResult<HttpResponse> {
    if !is_offset_stream(req) {
        return Err(TusError::WrongContentType);
    }
    let offset = header_text(req, "Upload-Offset")
        .and_then(parse_tus_number)
        .ok_or(TusError::BadRequest("Missing or invalid Upload-Offset"))?;
    body_checksum(req)?;
    // A deferred length is told with a later PATCH.
    let total = match header_text(req, "Upload-Length") {
        Some(length) => {
            Some(parse_tus_number(length).ok_or(TusError::BadRequest("Invalid Upload-Length"))?)
        }
        None => None,
    };
    let engine = &state.engine;
    if let Some(len) = content_length(req) {
        engine.check_chunk_len(len)?;
    }
    let session = match engine.begin_append(caller, id, offset, total).await {
        Err(EngineError::AlreadyComplete) => {
            let upload = engine.get(caller, id).await?;
            if upload.concat.as_deref().is_some_and(|c| c != PARTIAL) {
                return Err(TusError::PatchOfFinal);
            }
            return Err(EngineError::AlreadyComplete.into());
        }
        other => other?,
    };
    let room = session.room()?;
    if content_length(req).is_some_and(|len| len > room) {
        let limit = session.upload().total.unwrap_or(engine.size_limit());
        return Err(EngineError::TooLarge { limit }.into());
    }
    let body = GatedPayload::new(req, payload);
    let upload = session
        .write(body_rules(req, room)?, body, Completion::LastByte)
        .await?;
    let mut response = HttpResponse::NoContent();
    tus_headers(&mut response);
    response.insert_header(("Upload-Offset", upload.offset.to_string()));
    if let Some(expires) = expires(&upload) {
        response.insert_header(("Upload-Expires", expires));
    }
    Ok(response.finish())
}

/// `DELETE /files/{id}`: termination.
#[utoipa::path(
    delete,
    path = "/files/{id}",
    operation_id = "tus_delete",
    tag = "tus",
    params(UploadPath, TusVersion),
    responses(
        (status = 204, description = "Removed, row and bytes"),
        (status = "default", response = TusRefusal)
    )
)]
pub async fn delete(req: HttpRequest, state: web::Data<AppState>) -> TusResult<HttpResponse> {
    check_version(&req)?;
    let id = path_upload_id(&req)?;
    let caller = caller(&req, &state).await?;
    state.engine.abort(&caller, id).await?;
    let mut response = HttpResponse::NoContent();
    tus_headers(&mut response);
    Ok(response.finish())
}

/// `POST /files/{id}` with `X-HTTP-Method-Override`, for clients behind
/// proxies that only pass GET and POST.
#[utoipa::path(
    post,
    path = "/files/{id}",
    operation_id = "tus_overridden",
    tag = "tus",
    params(
        UploadPath,
        TusVersion,
        ("X-HTTP-Method-Override" = String, Header, description = "`PATCH` or `DELETE`, which this POST stands for"),
        ("Upload-Offset" = Option<u64>, Header, description = "For `PATCH`")
    ),
    request_body(content = Option<RawBytes>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "As the PATCH or DELETE it stands for"),
        (status = "default", response = TusRefusal)
    )
)]
pub async fn overridden(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> TusResult<HttpResponse> {
    let method = header_text(&req, "X-HTTP-Method-Override")
        .and_then(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).ok());
    match method {
        Some(Method::PATCH) => patch(req, payload, state).await,
        Some(Method::DELETE) => delete(req, state).await,
        Some(Method::HEAD) => head(req, state).await,
        _ => Err(TusError::MethodNotAllowed {
            allow: UPLOAD_METHODS,
        }),
    }
}

/// The methods `/files/` serves.
pub const COLLECTION_METHODS: &str = "POST, OPTIONS";
/// The methods `/files/{id}` serves.
pub const UPLOAD_METHODS: &str = "HEAD, PATCH, DELETE, POST, OPTIONS";

/// 405 for any other method, naming those the resource serves.
pub async fn not_allowed(allow: &'static str) -> TusResult<HttpResponse> {
    Err(TusError::MethodNotAllowed { allow })
}
