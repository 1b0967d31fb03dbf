//! What the OpenAPI document says of FilePond's requests and errors.

use utoipa::{IntoParams, ToResponse};

/// Every refusal, with its status (see docs/api-filepond.md) and a message.
#[derive(ToResponse)]
#[response(
    description = "Refused: the status and the message say why (docs/api-filepond.md)",
    content_type = "text/plain"
)]
pub struct FilePondRefusal(pub String);

/// The chunked upload a request is about.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatchQuery {
    /// The upload's id, as process answered it.
    pub patch: String,
}

/// The file asked for: a stored upload's, or a remote one.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// The upload's id (FilePond's `load`).
    pub load: Option<String>,
    /// The upload's id (FilePond's `restore`).
    pub restore: Option<String>,
    /// A remote file's URL, fetched into a new upload (`--filepond-fetch`).
    pub fetch: Option<String>,
}

/// Where a chunked upload resumes, or a remote file fetched.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OffsetQuery {
    /// The upload's id, as process answered it.
    pub patch: Option<String>,
    /// A remote file's URL, fetched into a new upload (`--filepond-fetch`).
    pub fetch: Option<String>,
}
