//! New uploads: `PUT /upload/` with a first chunk, and `POST /upload/`
//! with a whole file and its checksum.

use super::error::{ChunkedResult, RequestError};
use super::form::{body, read_form, Body};
use super::openapi::{ChunkForm, ChunkHeaders, ChunkedRefusal, RawName, WholeFileForm};
use super::{
    check_raw_length, chunk_range, content_length, query, raw_filename, state_wait,
    upload_response, UploadJson, FILENAME_REQUIRED,
};
use crate::engine::{BodyRules, Completion, EngineError, Hashing, NewUpload, Staged};
use crate::protocol::kit::auth::caller;
use crate::protocol::kit::openapi::RawBytes;
use crate::protocol::kit::AppState;
use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::HashMap;

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
    let staged = form.files.pop().ok_or(RequestError::NoChunk)?;
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
