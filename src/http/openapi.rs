//! `GET /openapi.json`: the OpenAPI 3.1 document of every endpoint, made
//! from the handlers' own annotations.

use super::{__path_health, __path_ready, metrics::__path_metrics};
use crate::protocol::attachments::{self, openapi::AttachmentsRefusal};
use crate::protocol::chunked::openapi::ChunkedRefusal;
use crate::protocol::chunked::{create, download, upload};
use crate::protocol::filepond::{self, openapi::FilePondRefusal};
use crate::protocol::resumable::{self, openapi::ResumableRefusal};
use crate::protocol::tus::{self, openapi::TusRefusal};
use actix_web::HttpResponse;
use std::sync::OnceLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chunkd",
        description = "Resumable chunked uploads: the drf-chunked-upload protocol at /upload/, \
                       tus 1.0 at /files/, the IETF resumable upload draft at /resumable/, the FilePond server API at /filepond/, session attachments at /attachments/. Errors and the differences from the peers: docs/."
    ),
    paths(
        upload::list, create::create, create::create_complete, upload::detail, upload::append,
        upload::complete, upload::abort, download::download,
        tus::options, tus::create, tus::head, tus::patch, tus::delete, tus::overridden,
        resumable::options, resumable::create, resumable::offset, resumable::append,
        resumable::cancel,
        filepond::process, filepond::patch, filepond::offset, filepond::revert, filepond::load,
        attachments::attach, attachments::list, attachments::download,
        attachments::remove_bundle, attachments::remove,
        health, ready, metrics, document
    ),
    components(responses(
        ChunkedRefusal, TusRefusal, ResumableRefusal, FilePondRefusal, AttachmentsRefusal
    )),
    modifiers(&TokenAuth),
    security(("token" = []))
)]
struct ApiDoc;

/// `Authorization: Token <token>` or `Bearer <token or JWT>`.
struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "`Token <token>` (chunkd's own, as DRF) or `Bearer <token or the application's JWT>`",
        )));
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("token", scheme);
    }
}

/// The document, made once.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document", body = Object)),
    security(())
)]
pub async fn document() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let json = DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json.as_str())
}
