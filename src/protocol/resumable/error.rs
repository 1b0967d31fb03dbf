//! Every error of the IETF draft's endpoints, and the one place where they
//! become statuses, and bodies in the form the client's interop version
//! knows: problem documents (RFC 9457) since -04, plain text before.

use super::version::Interop;
use crate::engine::{EngineError, OverLimit};
use crate::protocol::kit::auth::AuthError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

const PROBLEM_TYPES: &str = "https://iana.org/assignments/http-problem-types";

/// What draft requests get wrong, and the engine's and the toolkit's
/// errors in the draft's terms.
#[derive(Debug, thiserror::Error)]
pub enum ResumableError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("Content-Type must be application/partial-upload")]
    WrongContentType,
    #[error("Method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("inconsistent length values for upload")]
    InconsistentLength,
    #[error("upload is already completed")]
    Completed,
    #[error("Repr-Digest does not match the uploaded representation")]
    DigestMismatch,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type ResumableResult<T> = Result<T, ResumableError>;

/// A refusal, said in the request's interop version.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Refusal {
    pub interop: Interop,
    pub error: ResumableError,
}

/// How a refusal reads: its status, its problem type (a registered one, or
/// none), its title, and the fields that go with it.
struct Answer {
    status: u16,
    problem: Option<&'static str>,
    title: String,
    /// The offset to resume at, for a mismatch.
    offset: Option<(u64, u64)>,
    /// `Upload-Limit` of a refusal for size.
    limit: Option<String>,
}

impl Answer {
    fn plain(status: u16, title: impl Into<String>) -> Answer {
        Answer {
            status,
            problem: None,
            title: title.into(),
            offset: None,
            limit: None,
        }
    }

    fn typed(status: u16, problem: &'static str, title: impl Into<String>) -> Answer {
        Answer {
            problem: Some(problem),
            ..Answer::plain(status, title)
        }
    }
}

impl ResumableError {
    /// The one place where errors become answers.
    fn answer(&self) -> Answer {
        use EngineError as E;
        let engine = match self {
            ResumableError::BadRequest(reason) => return Answer::plain(400, *reason),
            ResumableError::WrongContentType => return Answer::plain(415, self.to_string()),
            ResumableError::MethodNotAllowed { .. } => return Answer::plain(405, self.to_string()),
            ResumableError::InconsistentLength => {
                return Answer::typed(400, "inconsistent-upload-length", self.to_string())
            }
            ResumableError::Completed => {
                return Answer::typed(400, "completed-upload", self.to_string())
            }
            ResumableError::DigestMismatch => return Answer::plain(400, self.to_string()),
            ResumableError::Auth(AuthError::Unauthenticated) => {
                return Answer::plain(401, "Authentication credentials were not provided")
            }
            ResumableError::Auth(AuthError::InvalidToken) => {
                return Answer::plain(401, "Invalid token")
            }
            ResumableError::Auth(AuthError::Engine(err)) | ResumableError::Engine(err) => err,
        };
        match engine {
            E::NotFound => Answer::plain(404, "Upload not found"),
            E::Expired => Answer::plain(410, "Upload has expired"),
            E::Lost(_) => Answer::plain(410, "Upload data was lost; start a new upload"),
            E::OffsetMismatch { expected, provided } => Answer {
                offset: Some((*expected, *provided)),
                ..Answer::typed(
                    409,
                    "mismatching-upload-offset",
                    "offset from request does not match offset of resource",
                )
            },
            E::AlreadyComplete => ResumableError::Completed.answer(),
            E::TotalMismatch { .. } | E::TotalBelowOffset { .. } | E::SizeMismatch { .. } => {
                ResumableError::InconsistentLength.answer()
            }
            E::TooLarge { limit } => Answer {
                limit: Some(format!("max-size={limit}")),
                ..Answer::plain(413, "Upload exceeds the size limit")
            },
            E::ChunkTooLarge { limit } => Answer {
                limit: Some(format!("max-append-size={limit}")),
                ..Answer::plain(413, "Request content exceeds the append limit")
            },
            E::OverLimit(over @ OverLimit::Bytes { .. }) => Answer::plain(413, over.to_string()),
            E::OverLimit(over @ OverLimit::UploadsInProgress { .. }) => {
                Answer::plain(429, over.to_string())
            }
            E::TooSmall { min } => {
                Answer::plain(400, format!("Upload is below the minimum of {min} bytes"))
            }
            E::ExtensionNotAllowed => Answer::plain(400, "File extension not allowed"),
            E::MediaTypeNotAllowed => Answer::plain(400, "File type not allowed"),
            E::InvalidFilename(reason) => Answer::plain(400, format!("Invalid filename: {reason}")),
            E::Body(_) => Answer::plain(400, "Error reading the request content"),
            E::ReadTimeout => Answer::plain(408, "Timed out waiting for the request content"),
            // Another process holds the upload: a 5xx, after which draft
            // clients retrieve the offset and resume.
            E::Busy { .. } | E::LeaseLost => {
                Answer::plain(503, "Upload is busy; retrieve the offset and resume")
            }
            E::DatabaseUnavailable(_) => Answer::plain(503, "Database unavailable"),
            E::NoSpace => Answer::plain(507, "Insufficient storage"),
            E::Forbidden(reason) => Answer::plain(403, format!("Forbidden: {reason}")),
            E::Refused { status, message } => Answer::plain(*status, message.clone()),
            // Checks of the other protocols, which the draft does not make.
            E::ChecksumRequired { .. }
            | E::ChecksumMismatch
            | E::BodyChecksumMismatch
            | E::Unhashed
            | E::Incomplete { .. }
            | E::NotConcatenable
            | E::BadConcat(_) => Answer::plain(400, engine.to_string()),
            E::Damaged(_) => Answer::plain(500, "Stored data of this upload is damaged"),
            E::Storage(_) | E::Meta(_) | E::Internal(_) => {
                Answer::plain(500, "Internal server error")
            }
        }
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.error.answer().status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let answer = self.error.answer();
        let status = self.status_code();
        if status.is_server_error() {
            log::error!("{}", self.error);
        }
        let mut response = HttpResponse::build(status);
        if let Some((expected, _)) = answer.offset {
            response.insert_header(("Upload-Offset", expected.to_string()));
        }
        match &self.error {
            ResumableError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, *allow));
            }
            ResumableError::Auth(AuthError::Unauthenticated | AuthError::InvalidToken) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Token"));
            }
            ResumableError::Engine(EngineError::ReadTimeout) => {
                response.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        if !self.interop.has_limits_and_problems() {
            return response
                .content_type("text/plain; charset=utf-8")
                .body(answer.title);
        }
        if let Some(limit) = answer.limit {
            response.insert_header(("Upload-Limit", limit));
        }
        let mut problem = json!({"title": answer.title, "status": status.as_u16()});
        let typed = answer
            .problem
            .filter(|p| *p != "inconsistent-upload-length" || self.interop.has_length_problem());
        if let Some(kind) = typed {
            problem["type"] = json!(format!("{PROBLEM_TYPES}#{kind}"));
        }
        if let Some((expected, provided)) = answer.offset {
            problem["expected-offset"] = json!(expected);
            problem["provided-offset"] = json!(provided);
        }
        response
            .content_type("application/problem+json")
            .body(problem.to_string())
    }
}
