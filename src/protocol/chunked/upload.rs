//! An upload once created: its chunks, its completion, where it stands,
//! the caller's list, and its removal.

use super::error::{ChunkedResult, RequestError};
use super::form::{body, read_form, read_small_form, Body};
use super::openapi::{ChunkForm, ChunkHeaders, ChunkedRefusal, CompletionForm};
use super::{
    check_raw_length, chunk_range, query, render, state_wait, upload_response, UploadJson,
};
use crate::engine::{BodyRules, Caller, Completion, EngineError};
use crate::protocol::kit::auth::{caller, Appender};
use crate::protocol::kit::openapi::{RawBytes, UploadPath};
use crate::protocol::kit::{base_url, path_upload_id, AppState};
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

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
    let id = path_upload_id(&req)?;
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
            let mut form = read_form(form, state_wait(state), |_, field| {
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
            form.files
                .pop()
                .ok_or(RequestError::NoChunk)?
                .commit()
                .await?
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
    let id = path_upload_id(&req)?;
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
    let id = path_upload_id(&req)?;
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
    let id = path_upload_id(&req)?;
    let caller = caller(&req, &state).await?;
    state.engine.abort(&caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
