//! Session attachments at `/attachments/`, django-session-attachments' API
//! over the engine: files grouped in bundles, private to whoever attached
//! them (a token's owner, or a visitor's session, in a cookie chunkd
//! issues), replaced by name, removed on request or once older than
//! `--attachment-expiration`. Beyond it: a complete upload that came by
//! any protocol (so resumed) can be attached by its id.

mod error;
pub mod openapi;

pub use error::AttachmentsError;
use error::AttachmentsResult;
use openapi::{AttachmentsRefusal, BundlePath, FilePath};

use crate::engine::{media_type_of, AttachmentKey, AttachmentRecord, BodyRules, Caller, Hashing};
use crate::protocol::kit::auth::{caller, AuthError};
use crate::protocol::kit::form::read_form;
use crate::protocol::kit::gate::GatedPayload;
use crate::protocol::kit::headers::attachment;
use crate::protocol::kit::openapi::RawBytes;
use crate::protocol::kit::session::session;
use crate::protocol::kit::{base_url, stored_file_headers, AppState};
use actix_multipart::Multipart;
use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// The longest bundle name.
const MAX_BUNDLE: usize = 100;

/// Whose attachments a request reaches, and the cookie of a visitor's new
/// session.
struct Holder {
    caller: Caller,
    key: String,
    issued: Option<String>,
}

async fn holder(req: &HttpRequest, state: &AppState) -> AttachmentsResult<Holder> {
    let caller = caller(req, state).await?;
    let owner = caller.owner().map(|name| format!("owner:{name}"));
    if let Some(key) = owner {
        return Ok(Holder {
            caller,
            key,
            issued: None,
        });
    }
    if !state.anonymous {
        return Err(AuthError::Unauthenticated.into());
    }
    let secure = base_url(req, state.trust_proxy).starts_with("https://");
    let lifetime = state.engine.settings().attachment_expiration;
    let visitor = session(req, secure, lifetime);
    Ok(Holder {
        caller,
        key: visitor.holder,
        issued: visitor.issued,
    })
}

fn bundle(req: &HttpRequest) -> AttachmentsResult<String> {
    let bundle = req.match_info().get("bundle").unwrap_or("");
    let valid = !bundle.is_empty()
        && bundle.chars().count() <= MAX_BUNDLE
        && !bundle.chars().any(char::is_control);
    valid
        .then(|| bundle.to_owned())
        .ok_or(AttachmentsError::BadRequest("Invalid bundle name"))
}

fn key(holder: &Holder, bundle: &str, name: &str) -> AttachmentKey {
    AttachmentKey {
        holder: holder.key.clone(),
        bundle: bundle.to_owned(),
        name: name.to_owned(),
    }
}

/// django-session-attachments' JSON: text, for iframe transports, ending
/// with a line break; with the cookie of a new session.
fn answer(holder: &Holder, value: &Value) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    issue(&mut response, holder);
    response
        .content_type("text/plain; charset=utf-8")
        .body(format!("{value}\r\n"))
}

fn issue(response: &mut HttpResponseBuilder, holder: &Holder) {
    if let Some(cookie) = &holder.issued {
        response.append_header((header::SET_COOKIE, cookie.as_str()));
    }
}

fn item(attached: &AttachmentRecord) -> Value {
    json!({
        "created": attached.created_at.format("%Y-%m-%d %H:%M").to_string(),
        "name": attached.key.name,
        "size": attached.size,
        "mimetype": attached.media_type,
    })
}

/// `POST /attachments/<bundle>/`: each file of the form (any field name)
/// attached under its name, replacing one of the same name; a field
/// `upload` attaches that complete upload instead (under `name`, or its
/// own). Answers what was attached.
#[utoipa::path(
    post,
    path = "/attachments/{bundle}/",
    operation_id = "attachments_attach",
    tag = "attachments",
    params(BundlePath),
    request_body(content = Object, content_type = "multipart/form-data",
        description = "Files (any field names); or `upload`: the id of a complete upload, and `name`"),
    responses(
        (status = 200, description = "What was attached: JSON as text/plain", content_type = "text/plain", body = String),
        (status = "default", response = AttachmentsRefusal)
    )
)]
pub async fn attach(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> AttachmentsResult<HttpResponse> {
    let holder = holder(&req, &state).await?;
    let bundle = bundle(&req)?;
    let engine = &state.engine;
    let form = Multipart::new(req.headers(), GatedPayload::new(&req, payload));
    let wait = engine.settings().read_timeout;
    let any_file = |_: &HashMap<String, String>, _: &str, has_filename, _| has_filename;
    let form = read_form(form, wait, any_file, |_, field| {
        let (holder, bundle) = (&holder, &bundle);
        async move {
            let name = field
                .content_disposition()
                .and_then(|cd| cd.get_filename())
                .unwrap_or_default()
                .to_owned();
            engine.check_filename(&name)?;
            let media_type = field
                .content_type()
                .map(|m| m.essence_str().to_owned())
                .unwrap_or_else(|| media_type_of(&name));
            let staged = engine
                .receive_new(Hashing::Whole, BodyRules::unlimited(), field)
                .await?;
            let key = key(holder, bundle, &name);
            Ok::<_, AttachmentsError>(
                engine
                    .attach(&holder.caller, key, media_type, staged)
                    .await?,
            )
        }
    })
    .await?;
    let mut attached = form.files;
    if let Some(id) = form.fields.get("upload") {
        let id = Uuid::try_parse(id.trim())
            .map_err(|_| AttachmentsError::BadRequest("Invalid upload id"))?;
        let upload = engine.get(&holder.caller, id).await?;
        let name = form.fields.get("name").cloned().unwrap_or(upload.filename);
        let key = key(&holder, &bundle, &name);
        attached.push(engine.attach_upload(&holder.caller, key, id).await?);
    }
    if attached.is_empty() {
        return Err(AttachmentsError::BadRequest("No file in the form"));
    }
    attached.sort_by(|a, b| a.key.name.cmp(&b.key.name));
    Ok(answer(&holder, &attached.iter().map(item).collect()))
}

/// `GET /attachments/<bundle>/`: the bundle's attachments, by name.
#[utoipa::path(
    get,
    path = "/attachments/{bundle}/",
    operation_id = "attachments_list",
    tag = "attachments",
    params(BundlePath),
    responses(
        (status = 200, description = "The bundle's attachments: JSON as text/plain", content_type = "text/plain", body = String),
        (status = "default", response = AttachmentsRefusal)
    )
)]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> AttachmentsResult<HttpResponse> {
    let holder = holder(&req, &state).await?;
    let bundle = bundle(&req)?;
    let listed = state.engine.attachments(&holder.key, &bundle).await?;
    Ok(answer(&holder, &listed.iter().map(item).collect()))
}

/// `GET /attachments/<bundle>/<name>/`: the file; `POST
/// /attachments/<bundle>/delete/` (the same path, named `delete`): the
/// whole bundle removed.
#[utoipa::path(
    get,
    path = "/attachments/{bundle}/{name}/",
    operation_id = "attachments_download",
    tag = "attachments",
    params(FilePath),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = RawBytes),
        (status = "default", response = AttachmentsRefusal)
    )
)]
pub async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> AttachmentsResult<HttpResponse> {
    let holder = holder(&req, &state).await?;
    let bundle = bundle(&req)?;
    let name = req.match_info().get("name").unwrap_or("");
    let (attached, download) = state
        .engine
        .open_attachment(&holder.caller, &key(&holder, &bundle, name))
        .await?;
    let len = download.size();
    let stream = download.bytes(0, len).map_err(AttachmentsError::from);
    let mut response = HttpResponse::Ok();
    issue(&mut response, &holder);
    let disposition = attachment(&attached.key.name);
    stored_file_headers(&mut response, &attached.media_type, disposition);
    Ok(response.body(SizedStream::new(len, stream)))
}

/// `POST /attachments/<bundle>/delete/`: every attachment of the bundle
/// removed; `[[true], …]`, one per attachment.
#[utoipa::path(
    post,
    path = "/attachments/{bundle}/{name}/",
    operation_id = "attachments_remove_bundle",
    tag = "attachments",
    params(FilePath),
    responses(
        (status = 200, description = "With `name` = `delete`: `[[true], …]` as text/plain", content_type = "text/plain", body = String),
        (status = "default", response = AttachmentsRefusal)
    )
)]
pub async fn remove_bundle(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> AttachmentsResult<HttpResponse> {
    if req.match_info().get("name") != Some("delete") {
        return Err(AttachmentsError::MethodNotAllowed);
    }
    let holder = holder(&req, &state).await?;
    let bundle = bundle(&req)?;
    let removed = state.engine.detach(&holder.key, &bundle, None).await?;
    Ok(answer(&holder, &json!(vec![[true]; removed])))
}

/// `POST /attachments/<bundle>/<name>/delete/`: `[true]`, or `[false]`
/// when there was no such attachment.
#[utoipa::path(
    post,
    path = "/attachments/{bundle}/{name}/delete/",
    operation_id = "attachments_remove",
    tag = "attachments",
    params(FilePath),
    responses(
        (status = 200, description = "`[true]`, or `[false]` if there was none", content_type = "text/plain", body = String),
        (status = "default", response = AttachmentsRefusal)
    )
)]
pub async fn remove(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> AttachmentsResult<HttpResponse> {
    let holder = holder(&req, &state).await?;
    let bundle = bundle(&req)?;
    let name = req.match_info().get("name").unwrap_or("");
    let removed = state
        .engine
        .detach(&holder.key, &bundle, Some(name))
        .await?;
    Ok(answer(&holder, &json!([removed > 0])))
}

/// 405 for any other method.
pub async fn not_allowed() -> AttachmentsResult<HttpResponse> {
    Err(AttachmentsError::MethodNotAllowed)
}
