//! What can go wrong, sorted by what the caller can do about it.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network or the server failed in a way that a retry may mend:
    /// connection errors, timeouts, 5xx, a busy or locked upload.
    #[error("{0}")]
    Transient(String),
    /// A transient failure for which the server said how long to wait
    /// (`Retry-After` on a 503 or 429).
    #[error("{message} (the server asks to wait {}s)", after.as_secs())]
    Throttled {
        message: String,
        after: std::time::Duration,
    },
    /// The server refused the request, and asking again will not change that.
    #[error("the server refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The upload no longer exists on the server (expired or aborted).
    #[error("the upload is gone from the server ({status}): {message}")]
    Gone { status: u16, message: String },
    /// The server holds other bytes than the local file.
    #[error("checksum mismatch: {0}")]
    ChecksumMismatch(String),
    /// Retries ran out; `last` is the failure that ended them.
    #[error("gave up after {attempts} attempts in a row without progress: {last}")]
    RetriesExhausted { attempts: u32, last: Box<Error> },
    /// The server answered something the protocol does not allow.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The request cannot be made as asked (a wrong option, an unsupported feature).
    #[error("{0}")]
    Usage(String),
    /// Reading the local file, or the local resume state, failed.
    #[error("{context}: {source}")]
    Local { context: String, source: io::Error },
}

impl Error {
    pub fn local(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Local { context, source }
    }

    /// The HTTP status behind a server's refusal, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Rejected { status, .. } | Error::Gone { status, .. } => Some(*status),
            Error::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
