//! What the OpenAPI document says of the draft's requests and errors.

use utoipa::{IntoParams, ToResponse, ToSchema};

/// A refusal as a problem document (RFC 9457). The draft's own kinds have
/// a `type`: mismatching-upload-offset (which adds `expected-offset` and
/// `provided-offset`), completed-upload, inconsistent-upload-length.
#[derive(ToSchema)]
pub struct Problem {
    pub title: String,
    pub status: u16,
    #[schema(rename = "type")]
    pub kind: Option<String>,
}

/// Every refusal, with its status (see docs/api-resumable.md): a problem
/// document since interop version 6, plain text before.
#[derive(ToResponse)]
#[response(description = "Refused: the status and the body say why (docs/api-resumable.md)")]
pub enum ResumableRefusal {
    Problem(
        #[content("application/problem+json")]
        #[to_schema]
        Problem,
    ),
    Text(#[content("text/plain")] String),
}

/// The draft's interop version the client speaks.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct InteropVersion {
    /// 3 to 9; another or none is answered as 9, with no 104.
    #[param(rename = "Upload-Draft-Interop-Version", example = 9)]
    pub upload_draft_interop_version: Option<u8>,
}
