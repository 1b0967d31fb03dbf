//! The FilePond server API (<https://pqina.nl/filepond/docs/api/server/>)
//! at `/filepond/`, as django-drf-filepond serves it, on the same engine as
//! the other protocols: process (a whole file, or the start of a chunked
//! upload), patch (a chunk, and `HEAD` for where to resume), revert, load
//! and restore. A FilePond upload is an upload like any other (listed
//! under `/upload/`). Its chunks are taken whole or not at all: FilePond
//! resumes at chunk boundaries, and would skip the rest of a chunk kept in
//! part.

mod error;
pub mod openapi;

use error::FilePondResult;
pub use error::{FilePondError, METHODS};
use openapi::{FilePondRefusal, OffsetQuery, PatchQuery, ReadQuery};

use crate::engine::{
    media_type_of, BodyLength, BodyRules, Caller, Completion, EngineError, Hashing, NewUpload,
};
use crate::protocol::kit::auth::{caller, Appender, AuthError};
use crate::protocol::kit::form::read_form;
use crate::protocol::kit::gate::GatedPayload;
use crate::protocol::kit::headers::disposition;
use crate::protocol::kit::openapi::RawBytes;
use crate::protocol::kit::{body_length, has_media_type, stored_file_headers, AppState};
use actix_multipart::Multipart;
use actix_web::body::SizedStream;
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::convert::Infallible;
use uuid::Uuid;

const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// The form field of the file, unless the form names another in
/// `fp_upload_field` (django-drf-filepond's way).
const FILE_FIELD: &str = "filepond";
/// The name of a chunked upload until a chunk tells it.
const UNNAMED: &str = "upload";
/// Longest revert body: an upload id, and room for whitespace.
const REVERT_LIMIT: usize = 1024;

fn query(req: &HttpRequest) -> FilePondResult<HashMap<String, String>> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|_| FilePondError::BadRequest("Malformed query string"))
}

/// The upload a query parameter names; an id that is not one of ours is
/// an unknown upload.
fn upload_in(text: &str) -> FilePondResult<Uuid> {
    Uuid::try_parse(text.trim()).map_err(|_| EngineError::NotFound.into())
}

fn header_number(req: &HttpRequest, name: &str) -> FilePondResult<Option<u64>> {
    let Some(value) = req.headers().get(name) else {
        return Ok(None);
    };
    let number = value.to_str().ok().and_then(|v| v.trim().parse().ok());
    number.map(Some).ok_or(FilePondError::BadRequest(
        "Invalid Upload-Offset or Upload-Length",
    ))
}

/// FilePond's answer to process and patch: the upload's id, as text.
fn id_response(id: Uuid) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(id.to_string())
}

/// `POST /filepond/`: a whole file in the form's `filepond` field; or,
/// with `Upload-Length` and only FilePond's metadata in the form, the
/// start of a chunked upload. Answers the upload's id.
#[utoipa::path(
    post,
    path = "/filepond/",
    operation_id = "filepond_process",
    tag = "filepond",
    params(("Upload-Length" = Option<u64>, Header,
        description = "The file's size: starts a chunked upload, whose chunks come by PATCH")),
    request_body(content = Object, content_type = "multipart/form-data",
        description = "`filepond`: FilePond's metadata (JSON text), then the file (none when chunked)"),
    responses(
        (status = 200, description = "The upload's id", content_type = "text/plain", body = String),
        (status = "default", response = FilePondRefusal)
    )
)]
pub async fn process(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> FilePondResult<HttpResponse> {
    let caller = caller(&req, &state).await?;
    let engine = &state.engine;
    if !has_media_type(&req, "multipart/form-data") {
        return Err(FilePondError::BadRequest(
            "A multipart/form-data body is expected",
        ));
    }
    let form = Multipart::new(req.headers(), GatedPayload::new(&req, payload));
    let wait = engine.settings().read_timeout;
    if let Some(total) = header_number(&req, "Upload-Length")? {
        engine.check_total(total)?;
        engine.check_owner_limits(&caller, total, true).await?;
        let no_file = |_: HashMap<String, String>, _| async { Ok::<(), FilePondError>(()) };
        read_form(form, wait, |_, _, _, _| false, no_file).await?;
        let nothing = futures_util::stream::empty::<Result<Bytes, Infallible>>();
        let staged = engine
            .receive_new(Hashing::Whole, BodyRules::exact(0), nothing)
            .await?;
        let new = NewUpload {
            filename: UNNAMED.to_owned(),
            total: Some(total),
            named_later: true,
            ..NewUpload::default()
        };
        let upload = engine
            .create(staged, &caller, new, Completion::LastByte)
            .await?;
        return Ok(id_response(upload.id));
    }
    let is_file = |fields: &HashMap<String, String>, name: &str, has_filename, taken| {
        let field = fields
            .get("fp_upload_field")
            .map_or(FILE_FIELD, String::as_str);
        taken == 0 && has_filename && name == field
    };
    let mut form = read_form(form, wait, is_file, |_, field| async move {
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .unwrap_or_default()
            .to_owned();
        engine.check_filename(&filename)?;
        let staged = engine
            .receive_new(Hashing::Whole, BodyRules::unlimited(), field)
            .await?;
        Ok::<_, FilePondError>((staged, filename))
    })
    .await?;
    let (staged, filename) = form.files.pop().ok_or(FilePondError::BadRequest(
        "No file in the form's filepond field",
    ))?;
    let new = NewUpload {
        filename,
        total: Some(staged.received()),
        ..NewUpload::default()
    };
    let upload = engine
        .create(staged, &caller, new, Completion::LastByte)
        .await?;
    Ok(id_response(upload.id))
}

/// `PATCH /filepond/?patch=<id>`: a chunk at `Upload-Offset` of a file of
/// `Upload-Length` bytes named `Upload-Name` (raw UTF-8), kept whole or not
/// at all. The empty chunk FilePond sends when the size is a multiple of
/// its chunk size is accepted.
#[utoipa::path(
    patch,
    path = "/filepond/",
    operation_id = "filepond_patch",
    tag = "filepond",
    params(
        PatchQuery,
        ("Upload-Offset" = u64, Header, description = "Where the chunk goes: the upload's offset"),
        ("Upload-Length" = u64, Header, description = "The file's size"),
        ("Upload-Name" = String, Header, description = "The file's name, as UTF-8 bytes")
    ),
    request_body(content = RawBytes, content_type = "application/offset+octet-stream"),
    responses(
        (status = 200, description = "The chunk is stored: the upload's id", content_type = "text/plain", body = String),
        (status = "default", response = FilePondRefusal)
    )
)]
pub async fn patch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> FilePondResult<HttpResponse> {
    let query = query(&req)?;
    let id = upload_in(query.get("patch").map_or("", String::as_str))?;
    let appender = Appender::of(&req, &state).await?;
    let patched = patch_as(&appender, id, &req, payload, &state).await;
    appender.confirm(&state, patched).await
}

async fn patch_as(
    appender: &Appender,
    id: Uuid,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> FilePondResult<HttpResponse> {
    let caller = &appender.caller;
    let missing =
        FilePondError::BadRequest("Upload-Offset, Upload-Length and Upload-Name are required");
    let offset = header_number(req, "Upload-Offset")?;
    let total = header_number(req, "Upload-Length")?;
    let name = req.headers().get("Upload-Name").map(|v| v.as_bytes());
    let (Some(offset), Some(total), Some(name)) = (offset, total, name) else {
        return Err(missing);
    };
    // FilePond sends the name's UTF-8 bytes as they are.
    let name = std::str::from_utf8(name)
        .map_err(|_| FilePondError::BadRequest("Upload-Name is not UTF-8"))?;
    if !has_media_type(req, OFFSET_STREAM) {
        return Err(FilePondError::WrongContentType);
    }
    let engine = &state.engine;
    let len = body_length(req);
    if let Some(len) = len {
        engine.check_chunk_len(len)?;
    }
    engine.preempt(caller, id).await?;
    let mut session = match engine.begin_append(caller, id, offset, Some(total)).await {
        // The empty last chunk of a file whose last byte completed it.
        Err(EngineError::AlreadyComplete) if len == Some(0) && offset == total => {
            let upload = engine.get(caller, id).await?;
            if upload.offset == total {
                return Ok(id_response(id));
            }
            return Err(EngineError::AlreadyComplete.into());
        }
        other => other?,
    };
    session.rename(caller, name).await?;
    let room = session.room()?;
    let length = match len {
        Some(len) if len > room => return Err(EngineError::TooLarge { limit: total }.into()),
        Some(len) => BodyLength::Exact(len),
        None => BodyLength::UpTo(room),
    };
    let rules = BodyRules {
        length,
        keep_partial: false,
        check: None,
    };
    let body = GatedPayload::new(req, payload);
    session.write(rules, body, Completion::LastByte).await?;
    Ok(id_response(id))
}

/// `HEAD /filepond/?patch=<id>`: where a chunked upload resumes
/// (`Upload-Offset`), once no request writes to it any more (one still in
/// flight on it here is ended first). `HEAD ?fetch=<url>`: as `GET`.
#[utoipa::path(
    head,
    path = "/filepond/",
    operation_id = "filepond_offset",
    tag = "filepond",
    params(OffsetQuery),
    responses(
        (status = 200, description = "Where to resume; or the fetched file's headers",
            headers(("Upload-Offset" = Option<u64>), ("X-Content-Transfer-Id" = Option<String>))),
        (status = "default", response = FilePondRefusal)
    )
)]
pub async fn offset(req: HttpRequest, state: web::Data<AppState>) -> FilePondResult<HttpResponse> {
    let query = query(&req)?;
    if let Some(url) = query.get("fetch") {
        return fetch(&req, &state, url).await;
    }
    let Some(patch) = query.get("patch") else {
        return Err(FilePondError::BadRequest(
            "?patch=<id> or ?fetch=<url> is required",
        ));
    };
    let id = upload_in(patch)?;
    let caller = caller(&req, &state).await?;
    state.engine.preempt(&caller, id).await?;
    let upload = state.engine.settled(&caller, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Upload-Offset", upload.offset.to_string()))
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .content_type("text/plain; charset=utf-8")
        .body(id.to_string()))
}

/// `DELETE /filepond/` with the upload's id as the body: revert, the
/// upload and its bytes go.
#[utoipa::path(
    delete,
    path = "/filepond/",
    operation_id = "filepond_revert",
    tag = "filepond",
    request_body(content = String, content_type = "text/plain", description = "The upload's id"),
    responses(
        (status = 204, description = "Removed, row and bytes"),
        (status = "default", response = FilePondRefusal)
    )
)]
pub async fn revert(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> FilePondResult<HttpResponse> {
    let caller = caller(&req, &state).await?;
    let wait = state.engine.settings().read_timeout;
    let body = tokio::time::timeout(wait, payload.to_bytes_limited(REVERT_LIMIT))
        .await
        .map_err(|_| EngineError::ReadTimeout)?
        .map_err(|_| FilePondError::BadRequest("The body must be an upload id"))?
        .map_err(|err| EngineError::Body(err.to_string()))?;
    let id = upload_in(std::str::from_utf8(&body).unwrap_or(""))?;
    state.engine.preempt(&caller, id).await?;
    state.engine.abort(&caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /filepond/?load=<id>` or `?restore=<id>`: the file of a complete
/// upload, inline, with its name, type and id (`X-Content-Transfer-Id`);
/// `?fetch=<url>`: a remote file, fetched into a new upload first.
#[utoipa::path(
    get,
    path = "/filepond/",
    operation_id = "filepond_load",
    tag = "filepond",
    params(ReadQuery),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = RawBytes,
            headers(("Content-Disposition" = String), ("X-Content-Transfer-Id" = String))),
        (status = "default", response = FilePondRefusal)
    )
)]
pub async fn load(req: HttpRequest, state: web::Data<AppState>) -> FilePondResult<HttpResponse> {
    let query = query(&req)?;
    if let Some(url) = query.get("fetch") {
        return fetch(&req, &state, url).await;
    }
    let asked = query.get("load").or_else(|| query.get("restore"));
    let Some(asked) = asked else {
        return Err(FilePondError::BadRequest(
            "?load=<id>, ?restore=<id> or ?fetch=<url> is required",
        ));
    };
    let id = upload_in(asked)?;
    let caller = caller(&req, &state).await?;
    stored_file(&state, &caller, id).await
}

/// `GET` or `HEAD /filepond/?fetch=<url>` (with `--filepond-fetch`): the
/// server downloads the remote file into a new upload of the caller's
/// (callers with a token only), and answers as load does.
async fn fetch(req: &HttpRequest, state: &AppState, url: &str) -> FilePondResult<HttpResponse> {
    let hosts = state.fetch_hosts.clone().ok_or(FilePondError::FetchOff)?;
    let caller = caller(req, state).await?;
    if matches!(caller, Caller::Anonymous) {
        return Err(AuthError::Unauthenticated.into());
    }
    let upload = state.engine.fetch(&caller, url, hosts).await?;
    stored_file(state, &caller, upload.id).await
}

/// A complete upload's file, inline, with its name, guessed type and id.
async fn stored_file(state: &AppState, caller: &Caller, id: Uuid) -> FilePondResult<HttpResponse> {
    let download = state.engine.open_download(caller, id).await?;
    let (name, len) = (download.upload.filename.clone(), download.size());
    let stream = download.bytes(0, len).map_err(FilePondError::from);
    let mut response = HttpResponse::Ok();
    stored_file_headers(
        &mut response,
        &media_type_of(&name),
        disposition("inline", &name),
    );
    Ok(response
        .insert_header(("X-Content-Transfer-Id", id.to_string()))
        .body(SizedStream::new(len, stream)))
}

/// 405 for any other method, naming those `/filepond/` serves.
pub async fn not_allowed() -> FilePondResult<HttpResponse> {
    Err(FilePondError::MethodNotAllowed)
}
