//! tus 1.0.0 (<https://tus.io/protocols/resumable-upload>) at `/files/`:
//! core, creation, creation-with-upload, expiration, checksum and
//! termination, on the same engine as the chunked protocol. A tus upload is
//! complete when its last byte is in; it is then an upload like any other
//! (listed under `/upload/`, downloaded from `/upload/{id}/file`).

use crate::engine::Upload;
use crate::engine::{
    BodyLength, BodyRules, Caller, ChecksumAlgo, Completion, EngineError, NewUpload, OverLimit,
    PARTIAL,
};
use crate::protocol::kit::auth::{caller, Appender, AuthError};
use crate::protocol::kit::gate::GatedPayload;
use crate::protocol::kit::headers::{
    parse_tus_number, parse_upload_checksum, parse_upload_metadata,
};
use crate::protocol::kit::{base_url, AppState};
use actix_web::http::header::{self, CacheControl, CacheDirective, HttpDate};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
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

/// What tus requests get wrong, and the engine's and the toolkit's errors
/// in tus terms.
#[derive(Debug, thiserror::Error)]
pub enum TusError {
    #[error("Unsupported version, this server speaks tus 1.0.0")]
    UnsupportedVersion,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("Content-Type must be application/offset+octet-stream")]
    WrongContentType,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("A final upload of a concatenation cannot be patched")]
    PatchOfFinal,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

type TusResult<T> = Result<T, TusError>;

impl TusError {
    /// The one place where tus errors become statuses and plain-text
    /// bodies.
    fn status_and_text(&self) -> (u16, String) {
        use EngineError as E;
        let text = |text: &str| text.to_owned();
        let engine = match self {
            TusError::UnsupportedVersion => return (412, self.to_string()),
            TusError::BadRequest(reason) => return (400, text(reason)),
            TusError::WrongContentType => return (415, self.to_string()),
            TusError::MethodNotAllowed => return (405, self.to_string()),
            TusError::PatchOfFinal => return (403, self.to_string()),
            TusError::Auth(AuthError::Unauthenticated) => {
                return (401, text("Authentication credentials were not provided"))
            }
            TusError::Auth(AuthError::InvalidToken) => return (401, text("Invalid token")),
            TusError::Auth(AuthError::Engine(err)) | TusError::Engine(err) => err,
        };
        match engine {
            E::NotFound => (404, text("Upload not found")),
            E::Expired => (410, text("Upload has expired")),
            E::Lost(_) => (410, text("Upload data was lost; start a new upload")),
            E::OffsetMismatch { .. } => (
                409,
                text("Upload-Offset does not match the upload's offset"),
            ),
            E::AlreadyComplete => (409, text("Upload is already complete")),
            E::TooLarge { .. } | E::ChunkTooLarge { .. } => {
                (413, text("Upload exceeds the size limit"))
            }
            E::TooSmall { min } => (400, format!("Upload is below the minimum of {min} bytes")),
            E::ExtensionNotAllowed => (400, text("File extension not allowed")),
            E::MediaTypeNotAllowed => (400, text("File type not allowed")),
            E::InvalidFilename(reason) => (400, format!("Invalid filename: {reason}")),
            E::SizeMismatch { .. } => (400, text("Body length differs from the one declared")),
            E::BodyChecksumMismatch => (460, text("Checksum mismatch")),
            E::NotConcatenable => (
                400,
                text("Only complete partial uploads can be concatenated"),
            ),
            E::BadConcat(reason) => (400, format!("Invalid Upload-Concat: {reason}")),
            E::TotalMismatch { .. } => {
                (400, text("Upload-Length differs from the upload's length"))
            }
            E::TotalBelowOffset { .. } => (400, text("Upload-Length is below the upload's offset")),
            E::Busy { .. } => (423, text("Upload is locked by another request")),
            E::Body(_) => (400, text("Error reading the request body")),
            E::ReadTimeout => (408, text("Timed out waiting for the request body")),
            // The chunked protocol's completion, which tus does not have.
            E::ChecksumRequired { .. }
            | E::ChecksumMismatch
            | E::Unhashed
            | E::Incomplete { .. } => (409, text("Upload cannot be completed this way")),
            E::LeaseLost => (503, text("Lost the lock on the upload; retry the request")),
            E::DatabaseUnavailable(_) => (503, text("Database unavailable")),
            E::NoSpace => (507, text("Insufficient storage")),
            E::Forbidden(reason) => (403, format!("Forbidden: {reason}")),
            E::Refused { status, message } => (*status, message.clone()),
            E::OverLimit(over @ OverLimit::Bytes { .. }) => (413, over.to_string()),
            E::OverLimit(over @ OverLimit::UploadsInProgress { .. }) => (429, over.to_string()),
            E::Damaged(_) => (500, text("Stored data of this upload is damaged")),
            E::Storage(_) | E::Meta(_) | E::Internal(_) => (500, text("Internal server error")),
        }
    }
}

fn tus_headers(response: &mut HttpResponseBuilder) {
    response.insert_header(("Tus-Resumable", TUS_VERSION));
}

impl ResponseError for TusError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status_and_text().0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let (code, text) = self.status_and_text();
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            log::error!("{self}");
        }
        let mut builder = HttpResponse::build(status);
        tus_headers(&mut builder);
        match self {
            TusError::UnsupportedVersion => {
                builder.insert_header(("Tus-Version", TUS_VERSION));
            }
            TusError::Auth(AuthError::Unauthenticated | AuthError::InvalidToken) => {
                builder.insert_header((header::WWW_AUTHENTICATE, "Token"));
            }
            TusError::Engine(EngineError::ReadTimeout) => {
                builder.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        builder.content_type("text/plain; charset=utf-8").body(text)
    }
}

fn header_text<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
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

fn upload_id(req: &HttpRequest) -> TusResult<Uuid> {
    req.match_info()
        .get("id")
        .filter(|id| id.len() == 36)
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or(TusError::from(EngineError::NotFound))
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
    header_text(req, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case(OFFSET_STREAM)
    })
}

fn content_length(req: &HttpRequest) -> Option<u64> {
    header_text(req, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

/// `OPTIONS /files/`: what this server speaks.
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
pub async fn head(req: HttpRequest, state: web::Data<AppState>) -> TusResult<HttpResponse> {
    check_version(&req)?;
    let id = upload_id(&req)?;
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
pub async fn patch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> TusResult<HttpResponse> {
    check_version(&req)?;
    let id = upload_id(&req)?;
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
pub async fn delete(req: HttpRequest, state: web::Data<AppState>) -> TusResult<HttpResponse> {
    check_version(&req)?;
    let id = upload_id(&req)?;
    let caller = caller(&req, &state).await?;
    state.engine.abort(&caller, id).await?;
    let mut response = HttpResponse::NoContent();
    tus_headers(&mut response);
    Ok(response.finish())
}

/// `POST /files/{id}` with `X-HTTP-Method-Override`, for clients behind
/// proxies that only pass GET and POST.
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
        _ => Err(TusError::MethodNotAllowed),
    }
}

pub async fn not_allowed() -> TusResult<HttpResponse> {
    Err(TusError::MethodNotAllowed)
}
