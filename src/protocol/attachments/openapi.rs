//! What the OpenAPI document says of session attachments.

use utoipa::{IntoParams, ToResponse};

/// Every refusal, with its status (see docs/api-attachments.md).
#[derive(ToResponse)]
#[response(
    description = "Refused: the status and the message say why (docs/api-attachments.md)",
    content_type = "text/plain"
)]
pub struct AttachmentsRefusal(pub String);

/// A bundle.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BundlePath {
    /// The bundle's name (1 to 100 characters).
    pub bundle: String,
}

/// An attachment of a bundle.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilePath {
    /// The bundle's name.
    pub bundle: String,
    /// The attachment's name.
    pub name: String,
}
