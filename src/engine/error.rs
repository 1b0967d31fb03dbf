use crate::meta::{MetaError, OverLimit};
use crate::storage::StorageError;

/// Everything the engine can refuse or fail with. Protocol-neutral: each
/// protocol adapter maps these to its own statuses and bodies in one place.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("upload not found")]
    NotFound,
    /// Refused with a status and message of its own: the application's
    /// pre-create hook said no (4xx) or did not answer (503); a remote
    /// file was not to be fetched (403) or could not be (502).
    #[error("refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("upload has expired")]
    Expired,
    #[error("upload is already complete")]
    AlreadyComplete,
    #[error("total {provided} differs from the upload's total {total}")]
    TotalMismatch { total: u64, provided: u64 },
    #[error("chunk starts at {provided}, upload is at {expected}")]
    OffsetMismatch { expected: u64, provided: u64 },
    #[error("file size over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("file size under the minimum of {min} bytes")]
    TooSmall { min: u64 },
    #[error("file extension not allowed")]
    ExtensionNotAllowed,
    #[error("media type not allowed")]
    MediaTypeNotAllowed,
    #[error("filename invalid: {0}")]
    InvalidFilename(&'static str),
    #[error("chunk over the limit of {limit} bytes")]
    ChunkTooLarge { limit: u64 },
    #[error("body has {actual} bytes, {declared} declared")]
    SizeMismatch { actual: u64, declared: u64 },
    #[error("checksum of type {algo} required")]
    ChecksumRequired { algo: &'static str },
    #[error("checksum does not match")]
    ChecksumMismatch,
    /// Created without a checksum of its whole (tus, `--hash-tus false`).
    #[error("the upload is not hashed, so no checksum can be checked")]
    Unhashed,
    #[error("only complete partial uploads can be concatenated")]
    NotConcatenable,
    #[error("invalid concatenation: {0}")]
    BadConcat(&'static str),
    #[error("the checksum of the request body does not match")]
    BodyChecksumMismatch,
    #[error("upload incomplete: {offset} of {total:?} bytes")]
    Incomplete { offset: u64, total: Option<u64> },
    #[error("total {total} below the offset {offset}")]
    TotalBelowOffset { total: u64, offset: u64 },
    #[error("upload busy at offset {offset}")]
    Busy { offset: u64 },
    #[error("reading the request body failed: {0}")]
    Body(String),
    #[error("the client sent nothing for the read timeout")]
    ReadTimeout,
    #[error("the stored bytes of the upload were lost: {0}")]
    Lost(String),
    #[error("the lock on the upload was lost")]
    LeaseLost,
    #[error("no space left for the upload's bytes")]
    NoSpace,
    /// The upload's stored bytes are not what was committed: missing, or
    /// shorter.
    #[error("stored data damaged: {0}")]
    Damaged(String),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// The caller's token does not allow this.
    #[error("not permitted: {0}")]
    Forbidden(&'static str),
    /// The caller's owner would pass `--quota-bytes` or
    /// `--max-uploads-in-progress`.
    #[error("{0}")]
    OverLimit(OverLimit),
    /// Any other failure of the storage.
    #[error(transparent)]
    Storage(StorageError),
    /// Any other failure of the database.
    #[error(transparent)]
    Meta(MetaError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type EngineResult<T> = Result<T, EngineError>;

impl From<StorageError> for EngineError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NoSpace => EngineError::NoSpace,
            StorageError::Damaged { .. } | StorageError::Missing => {
                EngineError::Damaged(err.to_string())
            }
            StorageError::Io(_) | StorageError::Remote(_) | StorageError::Unreadable => {
                EngineError::Storage(err)
            }
        }
    }
}

impl From<MetaError> for EngineError {
    fn from(err: MetaError) -> Self {
        match err {
            MetaError::Connection(reason) => EngineError::DatabaseUnavailable(reason),
            MetaError::OverLimit(over) => EngineError::OverLimit(over),
            other => EngineError::Meta(other),
        }
    }
}
