//! Every error of the FilePond server API, and the one place where they
//! become statuses and plain-text bodies (FilePond shows a failed
//! request's status; it reads no body).

use crate::engine::{EngineError, OverLimit};
use crate::protocol::kit::auth::AuthError;
use crate::protocol::kit::form::FormError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

/// What FilePond requests get wrong, and the engine's and the toolkit's
/// errors in FilePond's terms.
#[derive(Debug, thiserror::Error)]
pub enum FilePondError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("Content-Type must be application/offset+octet-stream")]
    WrongContentType,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Fetching remote files is not enabled on this server")]
    FetchOff,
    #[error("{0}")]
    Form(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type FilePondResult<T> = Result<T, FilePondError>;

/// The methods `/filepond/` serves.
pub const METHODS: &str = "POST, PATCH, HEAD, GET, DELETE";

impl From<FormError> for FilePondError {
    fn from(err: FormError) -> Self {
        match err {
            FormError::Malformed(reason) => FilePondError::Form(reason),
            FormError::TooLarge => FilePondError::Form("form fields larger than allowed".into()),
            FormError::Engine(err) => err.into(),
        }
    }
}

impl FilePondError {
    /// The one place where errors become statuses and texts.
    fn status_and_text(&self) -> (u16, String) {
        use EngineError as E;
        let text = |text: &str| text.to_owned();
        let engine = match self {
            FilePondError::BadRequest(reason) => return (400, text(reason)),
            FilePondError::WrongContentType => return (415, self.to_string()),
            FilePondError::MethodNotAllowed => return (405, self.to_string()),
            FilePondError::FetchOff => return (403, self.to_string()),
            FilePondError::Form(reason) => return (400, format!("Malformed form: {reason}")),
            FilePondError::Auth(AuthError::Unauthenticated) => {
                return (401, text("Authentication credentials were not provided"))
            }
            FilePondError::Auth(AuthError::InvalidToken) => return (401, text("Invalid token")),
            FilePondError::Auth(AuthError::Engine(err)) | FilePondError::Engine(err) => err,
        };
        match engine {
            E::NotFound => (404, text("Upload not found")),
            E::Expired => (410, text("Upload has expired")),
            E::Lost(_) => (410, text("Upload data was lost; start a new upload")),
            E::OffsetMismatch { .. } => (409, text("Upload-Offset is not the upload's offset")),
            E::AlreadyComplete => (409, text("Upload is already complete")),
            E::Incomplete { .. } => (409, text("Upload is not complete")),
            E::TotalMismatch { .. } | E::TotalBelowOffset { .. } => {
                (400, text("Upload-Length differs from the upload's length"))
            }
            E::TooLarge { .. } | E::ChunkTooLarge { .. } => {
                (413, text("Upload exceeds the size limit"))
            }
            E::OverLimit(over @ OverLimit::Bytes { .. }) => (413, over.to_string()),
            E::OverLimit(over @ OverLimit::UploadsInProgress { .. }) => (429, over.to_string()),
            E::TooSmall { min } => (400, format!("Upload is below the minimum of {min} bytes")),
            E::ExtensionNotAllowed => (400, text("File extension not allowed")),
            E::MediaTypeNotAllowed => (400, text("File type not allowed")),
            E::InvalidFilename(reason) => (400, format!("Invalid filename: {reason}")),
            E::SizeMismatch { .. } => (400, text("Body length differs from the one declared")),
            E::Body(_) => (400, text("Error reading the request body")),
            E::ReadTimeout => (408, text("Timed out waiting for the request body")),
            E::Busy { .. } | E::LeaseLost => (503, text("Upload is busy; retry")),
            E::DatabaseUnavailable(_) => (503, text("Database unavailable")),
            E::NoSpace => (507, text("Insufficient storage")),
            E::Forbidden(reason) => (403, format!("Forbidden: {reason}")),
            E::Refused { status, message } => (*status, message.clone()),
            // The other protocols' checks, which FilePond does not make.
            E::ChecksumRequired { .. }
            | E::ChecksumMismatch
            | E::BodyChecksumMismatch
            | E::Unhashed
            | E::NotConcatenable
            | E::BadConcat(_) => (400, engine.to_string()),
            E::Damaged(_) => (500, text("Stored data of this upload is damaged")),
            E::Storage(_) | E::Meta(_) | E::Internal(_) => (500, text("Internal server error")),
        }
    }
}

impl ResponseError for FilePondError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status_and_text().0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let (_, text) = self.status_and_text();
        let status = self.status_code();
        if status.is_server_error() {
            log::error!("{self}");
        }
        let mut builder = HttpResponse::build(status);
        match self {
            FilePondError::MethodNotAllowed => {
                builder.insert_header((header::ALLOW, METHODS));
            }
            FilePondError::Engine(EngineError::OffsetMismatch { expected, .. }) => {
                builder.insert_header(("Upload-Offset", expected.to_string()));
            }
            FilePondError::Auth(AuthError::Unauthenticated | AuthError::InvalidToken) => {
                builder.insert_header((header::WWW_AUTHENTICATE, "Token"));
            }
            FilePondError::Engine(EngineError::ReadTimeout) => {
                builder.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        builder.content_type("text/plain; charset=utf-8").body(text)
    }
}
