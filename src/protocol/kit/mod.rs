//! The shared adapter toolkit: what every protocol adapter needs besides
//! the engine (the server's state, URLs, callers, the read gate, header
//! parsing). Adapters import the engine and this, nothing above them.

pub mod auth;
pub mod fields;
pub mod form;
pub mod gate;
pub mod headers;
pub mod jwt;
pub mod openapi;
pub mod session;

use crate::engine::{Engine, EngineError, EngineResult, Hashing};
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{HttpRequest, HttpResponseBuilder};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use uuid::Uuid;

/// The server's settings and engine, shared by every request.
pub struct AppState {
    pub engine: Engine,
    pub anonymous: bool,
    pub trust_proxy: bool,
    /// Whether tus uploads are hashed whole.
    pub tus_hashing: Hashing,
    pub max_requests: usize,
    /// Requests being served, across workers.
    pub active: Arc<AtomicUsize>,
    pub known_tokens: auth::KnownTokens,
    /// The key of the application's upload tokens, when it issues any.
    pub jwt: Option<jwt::JwtKeys>,
    /// FilePond's fetch, when it is on: the hosts that may be fetched at
    /// any address (others only at public ones).
    pub fetch_hosts: Option<Arc<Vec<String>>>,
}

/// A request header's value, if it is text.
pub fn header_text<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The upload a path names (`{id}`); an id that is not one of chunkd's
/// is an unknown upload.
pub fn path_upload_id(req: &HttpRequest) -> EngineResult<Uuid> {
    req.match_info()
        .get("id")
        .filter(|id| id.len() == 36)
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or(EngineError::NotFound)
}

/// The headers of a stored file served to a browser with its own media
/// type: it is not sniffed, runs no script in this origin (a page among
/// the uploads), and is cached only by the caller.
pub fn stored_file_headers(
    response: &mut HttpResponseBuilder,
    media_type: &str,
    disposition: String,
) {
    response
        .insert_header((header::CONTENT_TYPE, media_type))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"))
        .insert_header(CacheControl(vec![
            CacheDirective::Private,
            CacheDirective::NoCache,
        ]));
}

/// Whether the request's `Content-Type` is `essence` (parameters aside).
pub fn has_media_type(req: &HttpRequest, essence: &str) -> bool {
    let value = req.headers().get(header::CONTENT_TYPE);
    value.and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(essence))
    })
}

/// A request body's length: `Content-Length`, or 0 for a request with
/// neither it nor a chunked body. None when it streams unannounced.
pub fn body_length(req: &HttpRequest) -> Option<u64> {
    match req.headers().get(header::CONTENT_LENGTH) {
        Some(value) => value.to_str().ok().and_then(|v| v.trim().parse().ok()),
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => None,
        None => Some(0),
    }
}

/// The address the server listens on, for the URLs of clients that send no
/// Host header.
pub struct ListenAddr(pub std::net::SocketAddr);

/// `scheme://host` of the URLs in responses. The forwarded headers are used
/// only when the proxy in front is trusted to set them.
pub fn base_url(req: &HttpRequest, trust_proxy: bool) -> String {
    let header_value = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| valid_authority(v))
    };
    let forwarded = |name: &str| header_value(name).filter(|_| trust_proxy);
    let scheme = forwarded("x-forwarded-proto")
        .filter(|s| s == "http" || s == "https")
        .unwrap_or_else(|| "http".to_owned());
    let host = forwarded("x-forwarded-host")
        .or_else(|| header_value(header::HOST.as_str()))
        .or_else(|| {
            req.app_data::<ListenAddr>()
                .map(|listen| listen.0.to_string())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{scheme}://{host}")
}

/// A host[:port] that can go into a URL unchanged.
fn valid_authority(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}
