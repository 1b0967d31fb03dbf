//! Resumable Uploads for HTTP (draft-ietf-httpbis-resumable-upload, the
//! successor of tus) at `/resumable/`, interop versions 3 to 9, on the
//! same engine as the other protocols. What Apple's URLSession speaks by
//! itself. A creation request (`POST`) makes an upload resource at
//! `/resumable/{id}`, announced by a `104` before the body is read; `HEAD`
//! (or `GET`) tells its offset, `PATCH` appends, `DELETE` cancels. A new
//! request on an upload ends the one still in flight on it here (the
//! draft's zombie). docs/api-resumable.md says which draft each behaviour
//! follows.

mod answers;
mod error;
pub mod openapi;
mod request;
mod version;

use answers::{answer, interim_head, state_headers, upload_limit, upload_url};
pub use error::Refusal;
use error::{ResumableError, ResumableResult};
use request::{filename, integer_header, offered_digests, told_total};
use version::Interop;

use crate::engine::{
    BodyLength, BodyRules, Caller, ChecksumAlgo, Completion, EngineError, Hashing, NewUpload,
    ReceivedChunk, Upload,
};
use crate::protocol::kit::auth::{caller, Appender};
use crate::protocol::kit::gate::{GatedPayload, Interim};
use crate::protocol::kit::openapi::{RawBytes, UploadPath};
use crate::protocol::kit::{body_length, has_media_type, path_upload_id, AppState};
use actix_web::guard::GuardContext;
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use chrono::Utc;
use openapi::{InteropVersion, ResumableRefusal};
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
    if let Some(len) = body_length(req) {
        engine.check_chunk_len(len)?;
    }
    let session = engine.begin_append(caller, id, offset, total).await?;
    let room = session.room()?;
    if body_length(req).is_some_and(|len| len > room) {
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
    if upload.complete || body_length(req) == Some(0) {
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
    let id = path_upload_id(req)?;
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
        let id = path_upload_id(&req)?;
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
    if interop.requires_partial_upload_type() && !has_media_type(req, PARTIAL_UPLOAD) {
        return Err(ResumableError::WrongContentType);
    }
    state.engine.preempt(caller, id).await?;
    match append_content(req, payload, state, caller, id, offset, completes).await {
        Ok(upload) => Ok(answer(req, state, interop, &upload, false)),
        Err(ResumableError::Engine(EngineError::AlreadyComplete)) => {
            let upload = state.engine.get(caller, id).await?;
            let empty = body_length(req) == Some(0);
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
        let id = path_upload_id(&req)?;
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
