//! What the OpenAPI document says of tus's requests and errors.

use utoipa::{IntoParams, ToResponse};

/// Every refusal, with its status (see docs/api-tus.md) and a message.
#[derive(ToResponse)]
#[response(
    description = "Refused: the status and the message say why (docs/api-tus.md)",
    content_type = "text/plain"
)]
pub struct TusRefusal(pub String);

/// The protocol version every request but OPTIONS names.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TusVersion {
    /// `1.0.0`.
    #[param(rename = "Tus-Resumable", pattern = r"^1\.0\.0$", example = "1.0.0")]
    pub tus_resumable: String,
}

/// A body's checksum (the checksum extension).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct BodyChecksum {
    /// `<md5|sha1|sha256> <base64 digest>` of the body.
    #[param(rename = "Upload-Checksum")]
    pub upload_checksum: Option<String>,
}
