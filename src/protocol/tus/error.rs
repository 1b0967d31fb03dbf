//! Every error of tus at `/files/`, and the one place where they become
//! its statuses and plain-text bodies.

use super::{tus_headers, TUS_VERSION};
use crate::engine::{EngineError, OverLimit};
use crate::protocol::kit::auth::AuthError;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

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
    MethodNotAllowed {
        /// The methods the resource serves, for `Allow`.
        allow: &'static str,
    },
    #[error("A final upload of a concatenation cannot be patched")]
    PatchOfFinal,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type TusResult<T> = Result<T, TusError>;

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
            TusError::MethodNotAllowed { .. } => return (405, self.to_string()),
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
            TusError::MethodNotAllowed { allow } => {
                builder.insert_header((header::ALLOW, *allow));
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
