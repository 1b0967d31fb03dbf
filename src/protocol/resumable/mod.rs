//! Resumable Uploads for HTTP (draft-ietf-httpbis-resumable-upload, the
//! successor of tus) at `/resumable/`, interop versions 3 to 9, on the
//! same engine as the other protocols. What Apple's URLSession speaks by
//! itself. A creation request (`POST`) makes an upload resource at
//! `/resumable/{id}`, announced by a `104` before the body is read; `HEAD`
//! (or `GET`) tells its offset, `PATCH` appends, `DELETE` cancels. A new
//! request on an upload ends the one still in flight on it here (the
//! draft's zombie). docs/api-resumable.md says which draft each behaviour
//! follows.

mod error;
pub mod openapi;
mod version;

pub use error::Refusal;
use error::{ResumableError, ResumableResult};
use version::Interop;

use crate::engine::{
    BodyLength, BodyRules, Caller, ChecksumAlgo, Completion, EngineError, Hashing, NewUpload,
    ReceivedChunk, Upload,
};
use crate::protocol::kit::auth::{caller, Appender};
use crate::protocol::kit::gate::{GatedPayload, Interim};
use crate::protocol::kit::headers::parse_upload_metadata;
use crate::protocol::kit::openapi::{RawBytes, UploadPath};
use crate::protocol::kit::{base_url, fields, AppState};
use actix_web::guard::GuardContext;
use actix_web::http::header::{self, CacheControl, CacheDirective, ContentDisposition};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use chrono::Utc;
use openapi::{InteropVersion, ResumableRefusal};
use serde_json::json;
use std::convert::Infallible;
use uuid::Uuid;

const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// The methods `/resumable/` serves.
pub const TARGET_METHODS: &str = "POST, OPTIONS";
/// The methods `/resumable/{id}` serves.
pub const UPLOAD_METHODS: &str = "HEAD, GET, PATCH, DELETE, OPTIONS";

/// Whether a request to `/files/` speaks the draft rather than tus: it
/// names an interop version, or says whether it completes an upload
/// without naming tus.
pub fn speaks_draft(ctx: &GuardContext) -> bool {
    let headers = ctx.head().headers();
    headers.contains_key("Upload-Draft-Interop-Version")
        || (!headers.contains_key("Tus-Resumable")
            && (headers.contains_key("Upload-Complete")
                || headers.contains_key("Upload-Incomplete")))
}

fn header_text<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A Structured Field integer header; one that does not parse is ignored,
/// as the draft says.
fn integer_header(req: &HttpRequest, name: &str) -> Option<u64> {
    header_text(req, name).and_then(fields::integer)
}

/// The request content's length: `Content-Length`, or 0 for a request
/// with neither it nor a chunked body. None when it streams unannounced.
fn content_length(req: &HttpRequest) -> Option<u64> {
    match header_text(req, header::CONTENT_LENGTH.as_str()) {
        Some(value) => value.trim().parse().ok(),
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => None,
        None => Some(0),
    }
}

/// The upload's length, as far as a request starting at `offset` tells
/// it: `Upload-Length`, and, on a request that completes the upload, where
/// its content ends. The two must agree.
fn told_total(req: &HttpRequest, offset: u64, completes: bool) -> ResumableResult<Option<u64>> {
    let declared = integer_header(req, "Upload-Length");
    let implied = content_length(req)
        .filter(|_| completes)
        .and_then(|len| offset.checked_add(len));
    match (declared, implied) {
        (Some(declared), Some(implied)) if declared != implied => {
            Err(ResumableError::InconsistentLength)
        }
        (declared, implied) => Ok(declared.or(implied)),
    }
}

/// The representation's name: `Content-Disposition`'s filename (the
/// draft's way), else tus-js-client's `Upload-Metadata` one.
fn filename(req: &HttpRequest) -> String {
    let disposition = req
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| ContentDisposition::from_raw(v).ok());
    let from_disposition = disposition.and_then(|d| {
        d.get_filename_ext()
            .and_then(|ext| String::from_utf8(ext.value.clone()).ok())
            .or_else(|| d.get_filename().map(str::to_owned))
    });
    let from_metadata = || {
        let pairs = parse_upload_metadata(header_text(req, "Upload-Metadata")?)?;
        let (_, value) = pairs
            .into_iter()
            .find(|(key, _)| key == "filename" || key == "name")?;
        String::from_utf8(value?).ok()
    };
    from_disposition
        .or_else(from_metadata)
        .unwrap_or_else(|| "upload".to_owned())
}

fn upload_id(req: &HttpRequest) -> ResumableResult<Uuid> {
    req.match_info()
        .get("id")
        .filter(|id| id.len() == 36)
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or(ResumableError::Engine(EngineError::NotFound))
}

fn upload_url(req: &HttpRequest, state: &AppState, id: Uuid) -> String {
    format!("{}/resumable/{id}", base_url(req, state.trust_proxy))
}

/// `Upload-Limit`: the server's limits, and the upload's remaining
/// lifetime in seconds (a new upload's whole lifetime when there is none
/// yet).
fn upload_limit(state: &AppState, interop: Interop, upload: Option<&Upload>) -> String {
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
fn state_headers(
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
fn completed(
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
fn answer(
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
fn interim_head(state: &AppState, interop: Interop, location: &str) -> String {
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

/// `Repr-Digest` digests this server can check, by RFC 9530's names.
fn offered_digests(req: &HttpRequest) -> ResumableResult<Vec<(ChecksumAlgo, Vec<u8>)>> {
    let Some(value) = header_text(req, "Repr-Digest") else {
        return Ok(Vec::new());
    };
    let members =
        fields::byte_sequences(value).ok_or(ResumableError::BadRequest("Malformed Repr-Digest"))?;
    let known = members.into_iter().filter_map(|(name, digest)| {
        let algo = match name.as_str() {
            "md5" => ChecksumAlgo::Md5,
            "sha" => ChecksumAlgo::Sha1,
            "sha-256" => ChecksumAlgo::Sha256,
            _ => return None,
        };
        Some((algo, digest))
    });
    Ok(known.collect())
}

/// Checks the digests of the whole representation that the request
/// completing it offered; on a mismatch the chunk is not committed.
async fn check_digests(
    offered: &[(ChecksumAlgo, Vec<u8>)],
    chunk: &ReceivedChunk<'_>,
) -> ResumableResult<()> {
    for (algo, digest) in offered {
        if let Some(hex) = chunk.whole_digest(*algo).await? {
            if hex != crate::engine::checksum::to_hex(digest) {
                return Err(ResumableError::DigestMismatch);
            }
        }
    }
    Ok(())
}

/// Takes a request's content into an upload at `offset`, committing what
/// arrived even if it breaks off; with `completes`, its end is the upload's.
async fn append_content(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    offset: u64,
    completes: bool,
) -> ResumableResult<Upload> {
    let engine = &state.engine;
    let total = told_total(req, offset, completes)?;
    let offered = offered_digests(req)?;
    if let Some(len) = content_length(req) {
        engine.check_chunk_len(len)?;
    }
    let session = engine.begin_append(caller, id, offset, total).await?;
    let room = session.room()?;
    if content_length(req).is_some_and(|len| len > room) {
        let limit = session.upload().total.unwrap_or(engine.size_limit());
        return Err(EngineError::TooLarge { limit }.into());
    }
    let rules = BodyRules {
        length: BodyLength::UpTo(room),
        keep_partial: true,
        check: None,
    };
    let completion = if completes {
        Completion::EndOfBody
    } else {
        Completion::LastByte
    };
    let body = GatedPayload::new(req, payload);
    let chunk = session.receive(rules, body, completion).await?;
    check_digests(&offered, &chunk).await?;
    Ok(chunk.commit().await?)
}

/// `OPTIONS`: the limits of uploads made here (-12), and that appends
/// are `application/partial-upload` (-10 and -11).
#[utoipa::path(
    options,
    path = "/resumable/",
    operation_id = "resumable_options",
    tag = "resumable",
    responses((status = 204, description = "What uploads here may be",
        headers(("Upload-Limit" = String), ("Accept-Patch" = String)))),
    security(())
)]
pub async fn options(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let interop = Interop::of(&req);
    HttpResponse::NoContent()
        .insert_header(("Upload-Limit", upload_limit(&state, interop, None)))
        .insert_header(("Accept-Patch", PARTIAL_UPLOAD))
        .finish()
}

/// `POST /resumable/`: creates an upload resource, announced with a `104`
/// before the content is read, and takes the content in.
#[utoipa::path(
    post,
    path = "/resumable/",
    operation_id = "resumable_create",
    tag = "resumable",
    params(
        InteropVersion,
        ("Upload-Complete" = String, Header, description = "`?1`: the content is the whole representation; `?0`: more follows"),
        ("Upload-Length" = Option<u64>, Header, description = "The representation's length"),
        ("Content-Disposition" = Option<String>, Header, description = "`inline; filename=…`: the file's name"),
        ("Repr-Digest" = Option<String>, Header, description = "`md5=:…:`, `sha=:…:` or `sha-256=:…:` of the whole representation")
    ),
    request_body(content = Option<RawBytes>, content_type = "application/octet-stream",
        description = "The representation, or its beginning"),
    responses(
        (status = 201, description = "Created (complete or not: see Upload-Complete)",
            headers(
                ("Location" = String, description = "The upload resource"),
                ("Upload-Offset" = u64),
                ("Upload-Complete" = String),
                ("Upload-Limit" = String)
            )),
        (status = "default", response = ResumableRefusal)
    )
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Refusal> {
    let interop = Interop::of(&req);
    create_as(&req, payload, &state, interop)
        .await
        .map_err(|error| Refusal { interop, error })
}

async fn create_as(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    interop: Interop,
) -> ResumableResult<HttpResponse> {
    let completes = interop
        .completes(req)
        .ok_or(ResumableError::BadRequest("Upload-Complete is required"))?;
    let total = told_total(req, 0, completes)?;
    let engine = &state.engine;
    if let Some(total) = total {
        engine.check_total(total)?;
    }
    let filename = filename(req);
    engine.check_filename(&filename)?;
    offered_digests(req)?;
    let caller = caller(req, state).await?;
    engine
        .check_owner_limits(&caller, total.unwrap_or(0), true)
        .await?;
    let nothing = futures_util::stream::empty::<Result<Bytes, Infallible>>();
    let staged = engine
        .receive_new(Hashing::Whole, BodyRules::exact(0), nothing)
        .await?;
    let new = NewUpload {
        filename,
        total,
        ..NewUpload::default()
    };
    let upload = engine
        .create(staged, &caller, new, Completion::LastByte)
        .await?;
    if upload.complete || content_length(req) == Some(0) {
        return Ok(answer(req, state, interop, &upload, true));
    }
    // The upload exists before its content is read: a client cut off from
    // here on resumes at the location the 104 gave it.
    let location = upload_url(req, state, upload.id);
    let _interim = interop
        .named
        .then(|| Interim::send(req, interim_head(state, interop, &location)));
    let upload = append_content(req, payload, state, &caller, upload.id, 0, completes).await?;
    Ok(answer(req, state, interop, &upload, true))
}

/// `HEAD` (or `GET`) `/resumable/{id}`: the offset to resume at. A request
/// still in flight on the upload here is ended first, so that the offset
/// told is the one the next append must start at.
#[utoipa::path(
    head,
    path = "/resumable/{id}",
    operation_id = "resumable_offset",
    tag = "resumable",
    params(UploadPath, InteropVersion),
    responses(
        (status = 204, description = "Where to resume",
            headers(
                ("Upload-Offset" = u64),
                ("Upload-Complete" = String),
                ("Upload-Length" = Option<u64>),
                ("Upload-Limit" = String)
            )),
        (status = "default", response = ResumableRefusal)
    )
)]
pub async fn offset(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Refusal> {
    let interop = Interop::of(&req);
    offset_as(&req, &state, interop)
        .await
        .map_err(|error| Refusal { interop, error })
}

async fn offset_as(
    req: &HttpRequest,
    state: &AppState,
    interop: Interop,
) -> ResumableResult<HttpResponse> {
    let id = upload_id(req)?;
    let caller = caller(req, state).await?;
    state.engine.preempt(&caller, id).await?;
    let upload = state.engine.settled(&caller, id).await?;
    if upload.failed {
        return Err(EngineError::Lost("marked failed earlier".into()).into());
    }
    if !upload.complete && upload.expires_at <= Utc::now() {
        return Err(EngineError::Expired.into());
    }
    let mut response = HttpResponse::NoContent();
    response.insert_header(CacheControl(vec![CacheDirective::NoStore]));
    state_headers(&mut response, state, interop, &upload);
    Ok(response.finish())
}

/// `PATCH /resumable/{id}`: content appended at the upload's offset.
#[utoipa::path(
    patch,
    path = "/resumable/{id}",
    operation_id = "resumable_append",
    tag = "resumable",
    params(
        UploadPath,
        InteropVersion,
        ("Upload-Offset" = u64, Header, description = "Where the content goes: the upload's offset"),
        ("Upload-Complete" = String, Header, description = "`?1`: the content ends the representation"),
        ("Upload-Length" = Option<u64>, Header),
        ("Repr-Digest" = Option<String>, Header, description = "Of the whole representation, checked when it completes")
    ),
    request_body(content = RawBytes, content_type = "application/partial-upload"),
    responses(
        (status = 204, description = "Appended; not complete",
            headers(("Upload-Offset" = u64), ("Upload-Complete" = String))),
        (status = 200, description = "Appended and complete: the stored file", body = Object),
        (status = "default", response = ResumableRefusal)
    )
)]
pub async fn append(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Refusal> {
    let interop = Interop::of(&req);
    let appended = async {
        let id = upload_id(&req)?;
        let appender = Appender::of(&req, &state).await?;
        let appended = append_as(&appender.caller, id, &req, payload, &state, interop).await;
        appender.confirm(&state, appended).await
    };
    appended.await.map_err(|error| Refusal { interop, error })
}

async fn append_as(
    caller: &Caller,
    id: Uuid,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    interop: Interop,
) -> ResumableResult<HttpResponse> {
    let offset = integer_header(req, "Upload-Offset").ok_or(ResumableError::BadRequest(
        "Upload-Offset is missing or invalid",
    ))?;
    let completes = interop
        .completes(req)
        .ok_or(ResumableError::BadRequest("Upload-Complete is required"))?;
    let partial_upload = header_text(req, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(PARTIAL_UPLOAD))
    });
    if interop.requires_partial_upload_type() && !partial_upload {
        return Err(ResumableError::WrongContentType);
    }
    state.engine.preempt(caller, id).await?;
    match append_content(req, payload, state, caller, id, offset, completes).await {
        Ok(upload) => Ok(answer(req, state, interop, &upload, false)),
        Err(ResumableError::Engine(EngineError::AlreadyComplete)) => {
            let upload = state.engine.get(caller, id).await?;
            let empty = content_length(req) == Some(0);
            match (empty, completes) {
                // It completed with its last byte; the empty request that
                // says so is answered as if it had completed it.
                (true, true) if offset == upload.offset => {
                    Ok(answer(req, state, interop, &upload, false))
                }
                (true, _) => Err(ResumableError::Completed),
                (false, _) => Err(ResumableError::InconsistentLength),
            }
        }
        Err(err) => Err(err),
    }
}

/// `DELETE /resumable/{id}`: cancellation, after ending a request in
/// flight on it here.
#[utoipa::path(
    delete,
    path = "/resumable/{id}",
    operation_id = "resumable_cancel",
    tag = "resumable",
    params(UploadPath, InteropVersion),
    responses(
        (status = 204, description = "Removed, row and bytes"),
        (status = "default", response = ResumableRefusal)
    )
)]
pub async fn cancel(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Refusal> {
    let interop = Interop::of(&req);
    let cancelled = async {
        let id = upload_id(&req)?;
        let caller = caller(&req, &state).await?;
        state.engine.preempt(&caller, id).await?;
        state.engine.abort(&caller, id).await?;
        Ok::<_, ResumableError>(HttpResponse::NoContent().finish())
    };
    cancelled.await.map_err(|error| Refusal { interop, error })
}

/// 405 for any other method, naming those the resource serves.
pub async fn not_allowed(req: HttpRequest, allow: &'static str) -> Result<HttpResponse, Refusal> {
    Err(Refusal {
        interop: Interop::of(&req),
        error: ResumableError::MethodNotAllowed { allow },
    })
}
