//! Every error of session attachments, and the one place where they
//! become statuses and plain-text bodies.

use crate::engine::{EngineError, OverLimit};
use crate::protocol::kit::auth::AuthError;
use crate::protocol::kit::form::FormError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum AttachmentsError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Malformed form: {0}")]
    Form(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type AttachmentsResult<T> = Result<T, AttachmentsError>;

impl From<FormError> for AttachmentsError {
    fn from(err: FormError) -> Self {
        match err {
            FormError::Engine(err) => err.into(),
            other => AttachmentsError::Form(other.to_string()),
        }
    }
}

impl AttachmentsError {
    /// The one place where errors become statuses and texts.
    fn status_and_text(&self) -> (u16, String) {
        use EngineError as E;
        let engine = match self {
            AttachmentsError::BadRequest(_) | AttachmentsError::Form(_) => {
                return (400, self.to_string())
            }
            AttachmentsError::MethodNotAllowed => return (405, self.to_string()),
            AttachmentsError::Auth(AuthError::Unauthenticated) => {
                return (401, "Authentication credentials were not provided".into())
            }
            AttachmentsError::Auth(AuthError::InvalidToken) => {
                return (401, "Invalid token".into())
            }
            AttachmentsError::Auth(AuthError::Engine(err)) | AttachmentsError::Engine(err) => err,
        };
        let status = match engine {
            E::NotFound => 404,
            E::Incomplete { .. } => 409,
            E::TooLarge { .. }
            | E::ChunkTooLarge { .. }
            | E::OverLimit(OverLimit::Bytes { .. }) => 413,
            E::OverLimit(OverLimit::UploadsInProgress { .. }) => 429,
            E::TooSmall { .. }
            | E::ExtensionNotAllowed
            | E::MediaTypeNotAllowed
            | E::InvalidFilename(_)
            | E::Body(_)
            | E::SizeMismatch { .. } => 400,
            E::ReadTimeout => 408,
            E::Forbidden(_) => 403,
            E::Refused { status, .. } => *status,
            E::Busy { .. } | E::LeaseLost | E::DatabaseUnavailable(_) => 503,
            E::NoSpace => 507,
            E::Expired | E::Lost(_) => 410,
            _ => 500,
        };
        let text = match engine {
            E::Refused { message, .. } => message.clone(),
            _ if status >= 500 => "Internal server error".to_owned(),
            other => other.to_string(),
        };
        (status, text)
    }
}

impl ResponseError for AttachmentsError {
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
            AttachmentsError::MethodNotAllowed => {
                builder.insert_header((header::ALLOW, "GET, POST"));
            }
            AttachmentsError::Auth(AuthError::Unauthenticated | AuthError::InvalidToken) => {
                builder.insert_header((header::WWW_AUTHENTICATE, "Token"));
            }
            _ => {}
        }
        builder.content_type("text/plain; charset=utf-8").body(text)
    }
}
