//! Every error of the chunked protocol, and the one place where they become
//! its statuses and JSON bodies (drf-chunked-upload's). The wiring answers
//! requests outside any protocol (unknown paths, the request cap) with
//! these too.

use crate::engine::{EngineError, OverLimit};
use crate::protocol::kit::auth::AuthError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};
use std::fmt;

/// What a request itself got wrong, before the engine is asked.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("missing or malformed Content-Range")]
    BadHeaders,
    #[error("end of chunk past the total {total}")]
    EndExceedsTotal { total: u64 },
    #[error("no chunk in the request")]
    NoChunk,
    #[error("unsupported media type {0}")]
    UnsupportedMediaType(String),
    #[error("multipart parse error: {0}")]
    Multipart(String),
    #[error("malformed request body")]
    MalformedBody,
    #[error("form fields larger than allowed")]
    FormTooLarge,
    #[error("invalid query parameter {0}")]
    InvalidQuery(&'static str),
    #[error("method {method} not allowed")]
    MethodNotAllowed {
        method: Method,
        /// The methods the resource serves, for `Allow`.
        allow: &'static str,
    },
    #[error("range not satisfiable for {len} bytes")]
    RangeNotSatisfiable { len: u64 },
    #[error("too many requests at once")]
    Overloaded,
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkedError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type ChunkedResult<T> = Result<T, ChunkedError>;

fn detail(text: impl fmt::Display) -> Value {
    json!({ "detail": text.to_string() })
}

impl ChunkedError {
    fn status_and_body(&self) -> (StatusCode, Value) {
        use EngineError as E;
        use RequestError as R;
        let bad = StatusCode::BAD_REQUEST;
        match self {
            ChunkedError::Request(err) => match err {
                R::BadHeaders => (bad, detail("Error in request headers")),
                R::EndExceedsTotal { total } => (
                    bad,
                    detail(format!("End of chunk exceeds reported total ({total} bytes)")),
                ),
                R::NoChunk => (bad, detail("No chunk file was submitted")),
                R::UnsupportedMediaType(media) => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    detail(format!("Unsupported media type \"{media}\" in request.")),
                ),
                R::Multipart(msg) => (bad, detail(format!("Multipart form parse error - {msg}"))),
                R::MalformedBody => (bad, detail("Malformed request.")),
                R::FormTooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    detail("Form fields exceed 64 KiB together"),
                ),
                R::InvalidQuery(name) => (bad, detail(format!("Invalid query parameter: {name}"))),
                R::MethodNotAllowed { method, .. } => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    detail(format!("Method \"{method}\" not allowed.")),
                ),
                R::RangeNotSatisfiable { .. } => (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    detail("Requested range not satisfiable"),
                ),
                R::Overloaded => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    detail("Server busy, retry later"),
                ),
            },
            ChunkedError::Auth(AuthError::Unauthenticated) => (
                StatusCode::UNAUTHORIZED,
                detail("Authentication credentials were not provided."),
            ),
            ChunkedError::Auth(AuthError::InvalidToken) => {
                (StatusCode::UNAUTHORIZED, detail("Invalid token."))
            }
            ChunkedError::Auth(AuthError::Engine(err)) | ChunkedError::Engine(err) => match err {
                E::NotFound => (StatusCode::NOT_FOUND, detail("Not found.")),
                E::Refused { status, message } => (
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    detail(message.as_str()),
                ),
                E::Expired => (StatusCode::GONE, detail("Upload has expired")),
                E::AlreadyComplete => (
                    bad,
                    detail("Upload has already been marked as \"complete\""),
                ),
                E::TotalMismatch { total, .. } => (
                    bad,
                    detail(format!("Total size does not match the upload ({total} bytes)")),
                ),
                E::OffsetMismatch { expected, provided } => (
                    bad,
                    json!({"detail": "Offsets do not match",
                           "expected_offset": expected, "provided_offset": provided}),
                ),
                E::TooLarge { limit } => (
                    bad,
                    detail(format!("Size of file exceeds the limit ({limit} bytes)")),
                ),
                E::TooSmall { min } => (
                    bad,
                    detail(format!("Size of file is below the minimum ({min} bytes)")),
                ),
                E::ExtensionNotAllowed => (bad, detail("File extension not allowed")),
                E::MediaTypeNotAllowed => (bad, detail("File type not allowed")),
                E::InvalidFilename(msg) => (bad, json!({"detail": {"filename": [msg]}})),
                E::ChunkTooLarge { limit } => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    detail(format!("Chunk exceeds the limit ({limit} bytes)")),
                ),
                E::SizeMismatch { actual, declared } => (
                    bad,
                    detail(format!(
                        "File size doesn't match headers: file size is {actual} but {declared} reported"
                    )),
                ),
                E::ChecksumRequired { algo } => (
                    bad,
                    detail(format!("Checksum of type '{algo}' is required")),
                ),
                E::ChecksumMismatch => (bad, detail("checksum does not match")),
                E::Unhashed => (
                    StatusCode::CONFLICT,
                    detail("Upload was created without a checksum; complete it through tus"),
                ),
                E::TotalBelowOffset { total, offset } => (
                    bad,
                    detail(format!("Total size {total} is below the offset {offset}")),
                ),
                E::NotConcatenable => (
                    bad,
                    detail("Only complete partial uploads can be concatenated"),
                ),
                E::BadConcat(reason) => (bad, detail(format!("Invalid concatenation: {reason}"))),
                E::BodyChecksumMismatch => (
                    StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                    detail("Checksum mismatch"),
                ),
                E::Incomplete { offset, total } => (
                    bad,
                    json!({"detail": "Upload is incomplete", "offset": offset, "total": total}),
                ),
                E::Busy { offset } => (
                    StatusCode::CONFLICT,
                    json!({"detail": "Upload is busy", "offset": offset}),
                ),
                E::Body(_) => (bad, detail("Error reading the request body")),
                E::ReadTimeout => (
                    StatusCode::REQUEST_TIMEOUT,
                    detail("Timed out waiting for the request body"),
                ),
                E::Lost(_) => (
                    StatusCode::GONE,
                    detail("Upload data was lost; start a new upload"),
                ),
                E::LeaseLost => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    detail("Lost the lock on the upload; retry the request"),
                ),
                E::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, detail("Insufficient storage")),
                E::Forbidden(_) => (
                    StatusCode::FORBIDDEN,
                    detail("You do not have permission to perform this action."),
                ),
                E::OverLimit(over @ OverLimit::Bytes { .. }) => {
                    (StatusCode::PAYLOAD_TOO_LARGE, detail(over))
                }
                E::OverLimit(over @ OverLimit::UploadsInProgress { .. }) => {
                    (StatusCode::TOO_MANY_REQUESTS, detail(over))
                }
                E::Damaged(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    detail("Stored data of this upload is damaged"),
                ),
                E::DatabaseUnavailable(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    detail("Database unavailable"),
                ),
                E::Storage(_) | E::Meta(_) | E::Internal(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    detail("Internal server error"),
                ),
            },
        }
    }
}

impl ResponseError for ChunkedError {
    fn status_code(&self) -> StatusCode {
        self.status_and_body().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, body) = self.status_and_body();
        if status.is_server_error() {
            log::error!("{self}");
        } else if let ChunkedError::Engine(EngineError::Body(msg)) = self {
            log::info!("request body failed: {msg}");
        }
        let mut response = HttpResponse::build(status);
        match self {
            ChunkedError::Auth(AuthError::Unauthenticated | AuthError::InvalidToken) => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Token")));
            }
            ChunkedError::Request(RequestError::MethodNotAllowed { allow, .. }) => {
                response.insert_header((header::ALLOW, *allow));
            }
            ChunkedError::Request(RequestError::RangeNotSatisfiable { len }) => {
                response.insert_header((header::CONTENT_RANGE, format!("bytes */{len}")));
            }
            ChunkedError::Engine(EngineError::ReadTimeout) => {
                response.insert_header((header::CONNECTION, "close"));
            }
            ChunkedError::Request(RequestError::Overloaded) => {
                response.insert_header((header::RETRY_AFTER, "1"));
                response.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        response.json(body)
    }
}
